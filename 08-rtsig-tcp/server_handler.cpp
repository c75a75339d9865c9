// 08-rtsig-tcp/server_handler.cpp: the same TCP echo server with one
// signal handler instead of sigwaitinfo (document 000 §4.2, its example 2).
//
// The SA_SIGINFO handler may call only async-signal-safe functions, so it
// does not accept, read, send or log: it write()s the event {si_fd, si_band}
// to a non-blocking pipe, and the main loop, sleeping in read() on the other
// end, does the I/O. SIGIO, SIGINT/SIGTERM and SIGUSR1 become records too;
// a full pipe sets a flag, and the main loop resynchronises as for SIGIO.
//
// usage: server_handler [PORT] [--host ADDR] [--quiet]   (PORT 8008; 0: any free port)
//
// strace -e trace=fcntl,read,write,accept4,recvfrom,sendto ./build/08-rtsig-tcp/server_handler 0
//   shows "--- SIGRT_3 {si_signo=SIGRT_3, ...} ---", then the handler's write() of 16 bytes to the
//   pipe, and the main loop's read() of that record before the accept4() or recvfrom().
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "connections.hpp"

using namespace iomodels;

namespace {

// One event, as the handler records it.
struct Record {
    int fd;     // si_fd; or one of the markers below
    long band;  // si_band
};
constexpr int overflow_marker = -1;  // plain SIGIO: resynchronise
constexpr int stop_marker = -2;      // SIGINT or SIGTERM
constexpr int status_marker = -3;    // SIGUSR1

// What the handlers may touch: the pipe's write end (set once before they
// are installed) and a flag.
volatile sig_atomic_t record_write_fd = -1;
volatile sig_atomic_t records_lost = 0;
// A stop request is also a flag: when the pipe is full its record is lost,
// and the main loop, busy resynchronising, must still see it.
volatile sig_atomic_t stop_was_requested = 0;

void record(Record event) {
    const int saved_errno = errno;  // the interrupted code may be about to read errno
    // Non-blocking: a full pipe fails with EAGAIN instead of blocking the
    // handler (and with it the whole process) for ever.
    if (::write(record_write_fd, &event, sizeof event) != static_cast<ssize_t>(sizeof event)) {
        records_lost = 1;
    }
    errno = saved_errno;
}

void on_io_signal(int, siginfo_t* info, void*) { record({info->si_fd, info->si_band}); }
void on_sigio(int) { record({overflow_marker, 0}); }
void on_stop(int) {
    stop_was_requested = 1;
    record({stop_marker, 0});  // wakes the main loop (if the pipe has room; if not, it is awake anyway)
}
// A status request is a flag too, recorded only when the flag was clear: a
// storm of SIGUSR1 puts at most one record in the pipe, never fills it.
volatile sig_atomic_t status_was_requested = 0;
void on_status(int) {
    if (status_was_requested == 0) {
        status_was_requested = 1;
        record({status_marker, 0});
    }
}

bool install(int signal, struct sigaction action) {
    // While a handler runs, the others wait: records never interleave.
    ::sigemptyset(&action.sa_mask);
    ::sigaddset(&action.sa_mask, SIGRTMIN + 1);
    ::sigaddset(&action.sa_mask, SIGIO);
    ::sigaddset(&action.sa_mask, SIGINT);
    ::sigaddset(&action.sa_mask, SIGTERM);
    ::sigaddset(&action.sa_mask, SIGUSR1);
    // SA_RESTART: a read() or send() the signal interrupts is restarted,
    // so the main loop never sees EINTR from these handlers.
    action.sa_flags |= SA_RESTART;
    if (::sigaction(signal, &action, nullptr) == -1) {
        const char* name = ::sigabbrev_np(signal);  // "INT"; none for a real-time signal
        report_failure(name != nullptr ? "sigaction SIG" + std::string(name) : "sigaction SIGRTMIN+1", errno);
        return false;
    }
    return true;
}

// One handler per signal, each of which only records. Then they are
// unblocked: a signal mask is inherited, and our parent may have had them
// blocked. False: a call failed (reported).
bool install_handlers(int io_signal) {
    struct sigaction with_info {};
    with_info.sa_sigaction = on_io_signal;
    with_info.sa_flags = SA_SIGINFO;  // the handler gets the siginfo: si_fd, si_band
    struct sigaction plain_sigio {};
    plain_sigio.sa_handler = on_sigio;
    struct sigaction stop {};
    stop.sa_handler = on_stop;
    struct sigaction status {};
    status.sa_handler = on_status;
    if (!install(io_signal, with_info) || !install(SIGIO, plain_sigio) || !install(SIGINT, stop) ||
        !install(SIGTERM, stop) || !install(SIGUSR1, status)) {
        return false;
    }
    sigset_t handled;
    ::sigemptyset(&handled);
    for (const int signal : {io_signal, SIGIO, SIGINT, SIGTERM, SIGUSR1}) {
        ::sigaddset(&handled, signal);
    }
    if (::sigprocmask(SIG_UNBLOCK, &handled, nullptr) == -1) {
        report_failure("sigprocmask SIG_UNBLOCK", errno);
        return false;
    }
    return true;
}

// F_GETFL, then F_SETFL with O_NONBLOCK set or cleared and the other flags
// kept. False: a call failed (reported).
bool set_o_nonblock(int fd, bool nonblocking) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags == -1) {
        report_failure("fcntl fd " + std::to_string(fd) + " F_GETFL", errno);
        return false;
    }
    if (::fcntl(fd, F_SETFL, nonblocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) == -1) {
        const char* change = nonblocking ? " F_SETFL O_NONBLOCK" : " F_SETFL ~O_NONBLOCK";
        report_failure("fcntl fd " + std::to_string(fd) + change, errno);
        return false;
    }
    return true;
}

// After an overflow of the real-time signal queue or of the pipe, events
// are missing and nothing says which. Throw away what is queued (pending
// real-time signals, then records), then look at every socket with one
// poll() (rtsig::resynchronise). A stop record among those thrown away sets
// `stopping`: a stop request is never lost. False: a call failed (reported).
bool resynchronise_after_loss(rtsig::Server& server, int record_read_fd, std::span<Record> records, bool& stopping) {
    records_lost = 0;
    sigset_t io_only;
    ::sigemptyset(&io_only);
    ::sigaddset(&io_only, server.io_signal);
    if (::sigprocmask(SIG_BLOCK, &io_only, nullptr) == -1) {  // none may be recorded after the drain below
        report_failure("sigprocmask SIG_BLOCK SIGRTMIN+1", errno);
        return false;
    }
    std::uint64_t flushed = discard_pending(server.io_signal);
    if (!set_o_nonblock(record_read_fd, true)) {
        return false;
    }
    ssize_t got = 0;
    while ((got = ::read(record_read_fd, records.data(), records.size_bytes())) > 0) {
        for (const Record& event : records.first(static_cast<std::size_t>(got) / sizeof(Record))) {
            stopping = stopping || event.fd == stop_marker;
            flushed += event.fd >= 0;
        }
    }
    if (got == -1 && errno != EAGAIN) {  // EAGAIN: the pipe is empty, the expected end
        report_failure("read (event pipe)", errno);
        return false;
    }
    if (!set_o_nonblock(record_read_fd, false)) {
        return false;
    }
    server.counters.stale_signals += flushed;
    server.log("SIGIO: events were lost (signal queue or pipe full); resynchronising %zu connections with poll",
               server.connections.size());
    rtsig::resynchronise(server);
    if (::sigprocmask(SIG_UNBLOCK, &io_only, nullptr) == -1) {
        report_failure("sigprocmask SIG_UNBLOCK SIGRTMIN+1", errno);
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "TCP echo server driven by a real-time signal handler that only records the event.", 8008);
    const EventLog log(options.quiet);
    const int io_signal = SIGRTMIN + 1;

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == -1) {
        report_failure("pipe2", errno);
        return 1;
    }
    const unique_fd record_read(pipe_fds[0]), record_write(pipe_fds[1]);
    // The write end non-blocking: a handler must never block on a full pipe (see record()).
    if (!set_o_nonblock(record_write.get(), true)) {
        return 1;
    }
    record_write_fd = record_write.get();
    if (!install_handlers(io_signal)) {
        return 1;
    }

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    // A failure to arm is said even with --quiet: setup failed.
    if (!listen_fd || !rtsig::arm(listen_fd.get(), io_signal, EventLog(false))) {
        return 1;
    }
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    rtsig::Server server{.listen_fd = listen_fd.get(), .io_signal = io_signal, .reserve = reserve, .log = log};
    rtsig::accept_new_clients(server);  // clients that connected before O_ASYNC raised no signal
    std::array<Record, 256> records;
    bool stopping = false;
    while (!stopping) {
        // Sleeps (phase 1) until a handler has recorded something.
        const ssize_t got = ::read(record_read.get(), records.data(), sizeof records);
        if (got == -1) {
            if (errno == EINTR) {
                continue;  // SIGCONT after SIGSTOP; our own handlers restart the read
            }
            report_failure("read (event pipe)", errno);
            return 1;
        }
        bool resynchronise = records_lost != 0;
        stopping = stop_was_requested != 0;
        if (status_was_requested != 0) {
            status_was_requested = 0;  // its record, in this read or a later one, is only a wake-up
            print_status(server.counters.list());
        }
        for (const Record& event : std::span(records).first(static_cast<std::size_t>(got) / sizeof(Record))) {
            if (event.fd == stop_marker) {
                stopping = true;
            } else if (event.fd == status_marker) {
                continue;  // printed above, from the flag
            } else if (event.fd == overflow_marker) {
                ++server.counters.overflows;
                resynchronise = true;
            } else if (!resynchronise) {
                log("SIGRTMIN+1: si_fd %d, si_band %s (recorded by the handler)", event.fd,
                    poll_event_names(static_cast<short>(event.band)).c_str());
                rtsig::dispatch(server, event.fd, event.band);
            }
        }
        stopping = stopping || stop_was_requested != 0;
        if (resynchronise && !stopping && !resynchronise_after_loss(server, record_read.get(), records, stopping)) {
            return 1;
        }
    }

    log("stopping");
    server.connections.clear();
    print_summary(server.counters.list());
    return 0;
}
