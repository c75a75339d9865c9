// 06-epoll-et/lt_vs_et.cpp: what epoll_wait reports, level-triggered,
// edge-triggered and one-shot, for the same bytes.
//
// A socketpair, K bytes written into one end, the other end watched by an
// epoll instance; then epoll_wait with timeout 0 (nothing can hang), and one
// byte read per wakeup. The three runs differ in one flag of epoll_ctl:
// level-triggered gives K wakeups, EPOLLET 1 until new data arrives,
// EPOLLONESHOT 1 until EPOLL_CTL_MOD arms it again (why: README.md).
//
// usage: lt_vs_et [--bytes K]      (K from 1 to 1000, default 5)
//
// strace: strace -e trace=epoll_ctl,epoll_wait,read,write ./build/06-epoll-et/lt_vs_et
//   the three epoll_ctl(EPOLL_CTL_ADD) differ only in EPOLLET/EPOLLONESHOT;
//   each epoll_wait(..., 0) = 1 is followed by a read(..., 1) = 1.
//
// Read `main` first, one block per mode; the functions above it are its steps.

#include <errno.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

const char* plural(int count, const char* one, const char* many) { return count == 1 ? one : many; }

// Bytes waiting to be read on a socket (FIONREAD), to show what is left.
int unread_bytes(int fd) {
    int count = 0;
    if (::ioctl(fd, FIONREAD, &count) == -1) {
        report_failure("ioctl FIONREAD", errno);
        std::exit(1);
    }
    return count;
}

void write_bytes(int fd, std::string_view bytes) {
    // A few bytes into an empty socketpair: written whole, at once.
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        report_failure("write", errno);
        std::exit(1);
    }
}

// One epoll_wait with timeout 0; if the socket is reported, read one byte.
// Prints the line and returns whether there was a wakeup.
bool wait_and_read_one(int epoll_fd, int reader, int& call_number) {
    epoll_event event{};
    const int ready_count = ::epoll_wait(epoll_fd, &event, 1, 0);  // 0: only look, never sleep
    if (ready_count == -1) {
        report_failure("epoll_wait", errno);
        std::exit(1);
    }
    ++call_number;
    if (ready_count == 0) {
        const int left = unread_bytes(reader);
        std::printf("  epoll_wait #%d: 0 events (%d %s unread)\n", call_number, left, plural(left, "byte", "bytes"));
        return false;
    }
    char byte = 0;
    if (::read(reader, &byte, 1) != 1) {
        report_failure("read", errno);
        std::exit(1);
    }
    const int left = unread_bytes(reader);
    std::printf("  epoll_wait #%d: 1 event %s; read '%c', %d %s left\n", call_number,
                epoll_event_names(event.events).c_str(), byte, left, plural(left, "byte", "bytes"));
    return true;
}

// Polls until the socket is not reported any more (at most `limit` calls);
// returns the number of wakeups.
int wakeups_until_quiet(int epoll_fd, int reader, int& call_number, int limit) {
    int wakeups = 0;
    for (int i = 0; i < limit && wait_and_read_one(epoll_fd, reader, call_number); ++i) {
        ++wakeups;
    }
    return wakeups;
}

struct Demo {
    unique_fd writer, reader, epoll_fd;
    std::string letters;
};

// A fresh socketpair with `bytes` letters written, its reading end
// registered with `flags`.
Demo set_up(int bytes, std::uint32_t flags, const char* title) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == -1) {
        report_failure("socketpair AF_UNIX SOCK_STREAM", errno);
        std::exit(1);
    }
    Demo demo{unique_fd(pair[0]), unique_fd(pair[1]), unique_fd(::epoll_create1(EPOLL_CLOEXEC)), {}};
    if (!demo.epoll_fd) {
        report_failure("epoll_create1", errno);
        std::exit(1);
    }
    epoll_event event{};
    event.events = EPOLLIN | flags;
    event.data.fd = demo.reader.get();
    if (::epoll_ctl(demo.epoll_fd.get(), EPOLL_CTL_ADD, demo.reader.get(), &event) == -1) {
        report_failure("epoll_ctl EPOLL_CTL_ADD " + epoll_event_names(event.events), errno);
        std::exit(1);
    }
    for (int i = 0; i < bytes; ++i) {
        demo.letters += static_cast<char>('a' + i % 26);
    }
    std::printf("\n%s (events %s): %d %s written, then 1 byte read per wakeup\n", title,
                epoll_event_names(event.events).c_str(), bytes, plural(bytes, "byte", "bytes"));
    write_bytes(demo.writer.get(), demo.letters);
    return demo;
}

}  // namespace

int main(int argc, char** argv) {
    int bytes = 5;
    const CommandLine command{
        "[--bytes K]",
        "epoll_wait reports level-triggered, edge-triggered (EPOLLET) and one-shot (EPOLLONESHOT) readiness.",
        {{"--bytes", "K", "bytes written before reading them one per wakeup (1 to 1000, default 5)",
          number(bytes, 1, 1000)}},
        {},
        "argument",
        "",
    };
    parse_command_line_or_exit(command, argc, argv);
    const int limit = bytes + 1;  // a bound, so that a surprise cannot loop for ever
    int call = 0;

    {
        Demo demo = set_up(bytes, 0, "level-triggered");
        const int wakeups = wakeups_until_quiet(demo.epoll_fd.get(), demo.reader.get(), call, limit);
        std::printf("level-triggered: %d %s for %d bytes: reported as long as data is unread\n", wakeups,
                    plural(wakeups, "wakeup", "wakeups"), bytes);
    }

    call = 0;
    {
        Demo demo = set_up(bytes, EPOLLET, "edge-triggered");
        const int wakeups = wakeups_until_quiet(demo.epoll_fd.get(), demo.reader.get(), call, limit);
        std::printf("edge-triggered: %d %s for %d bytes: reported when data arrives, not while it is unread\n",
                    wakeups, plural(wakeups, "wakeup", "wakeups"), bytes);
        // New data is a new edge, even though old data is still unread:
        // for a socket, every arrival wakes the waiters.
        std::printf("  1 more byte written: a new edge\n");
        write_bytes(demo.writer.get(), "!");
        const int more = wakeups_until_quiet(demo.epoll_fd.get(), demo.reader.get(), call, limit);
        std::printf("edge-triggered: %d more %s after new data\n", more, plural(more, "wakeup", "wakeups"));
    }

    call = 0;
    {
        Demo demo = set_up(bytes, EPOLLONESHOT, "one-shot");
        const int wakeups = wakeups_until_quiet(demo.epoll_fd.get(), demo.reader.get(), call, limit);
        std::printf("one-shot: %d %s, then disarmed although data is unread\n", wakeups,
                    plural(wakeups, "wakeup", "wakeups"));
        // Re-arm: MOD with the events again (EPOLLONESHOT included, or it
        // would become an ordinary level-triggered entry).
        epoll_event event{};
        event.events = EPOLLIN | EPOLLONESHOT;
        event.data.fd = demo.reader.get();
        if (::epoll_ctl(demo.epoll_fd.get(), EPOLL_CTL_MOD, demo.reader.get(), &event) == -1) {
            report_failure("epoll_ctl EPOLL_CTL_MOD", errno);
            return 1;
        }
        std::printf("  epoll_ctl(EPOLL_CTL_MOD, %s): re-armed\n", epoll_event_names(event.events).c_str());
        const int rearmed = wakeups_until_quiet(demo.epoll_fd.get(), demo.reader.get(), call, limit);
        std::printf("one-shot: %d more %s after re-arming\n", rearmed, plural(rearmed, "wakeup", "wakeups"));
    }
    return 0;
}
