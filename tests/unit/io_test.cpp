// write_all, send_all, read_exact and set_nonblocking on socketpairs, pipes
// and a temporary file.
//
// On Linux a blocking write to a stream socket waits until every byte is
// copied, unless a signal interrupts it: then it returns the count copied so
// far (a partial write), or fails with EINTR if none were. The transfer
// tests therefore keep interrupting the writer with a signal whose handler
// is installed without SA_RESTART, while another thread reads; whatever the
// timing, every byte must arrive, in order.
#include "common/io.hpp"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

struct SocketPair {
    unique_fd first;
    unique_fd second;
};

SocketPair make_socketpair(int type = SOCK_STREAM) {
    int ends[2];
    REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, ends) == 0);
    return {unique_fd(ends[0]), unique_fd(ends[1])};
}

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text)); }

// 0, 1, ... 250, 0, 1, ...: 251 is prime, so a shifted or repeated chunk
// shows up as a mismatch.
std::vector<std::byte> pattern(std::size_t size) {
    std::vector<std::byte> bytes(size);
    for (std::size_t i = 0; i < size; ++i) {
        bytes[i] = static_cast<std::byte>(i % 251);
    }
    return bytes;
}

volatile sig_atomic_t signals_caught = 0;
void count_signal(int) { signals_caught = signals_caught + 1; }  // no ++: deprecated on volatile

// SIGUSR1 interrupts blocking calls (no SA_RESTART) while this object lives.
// The destructor drains a SIGUSR1 still pending before it puts the old
// action back, so a late signal cannot kill the test program.
class InterruptingSignal {
public:
    InterruptingSignal() {
        struct sigaction action {};
        action.sa_handler = count_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = 0;
        ::sigaction(SIGUSR1, &action, &saved_);
    }
    ~InterruptingSignal() {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        ::pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
        const timespec no_wait{};
        while (::sigtimedwait(&usr1, nullptr, &no_wait) == SIGUSR1) {
        }
        ::sigaction(SIGUSR1, &saved_, nullptr);
        ::pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
    }
    InterruptingSignal(const InterruptingSignal&) = delete;
    InterruptingSignal& operator=(const InterruptingSignal&) = delete;

private:
    struct sigaction saved_ {};
};

struct Transfer {
    bool sent;
    int send_errno;
    std::vector<std::byte> received;
};

// Sends `data` with `send_bytes` from this thread through a socketpair whose
// sending side has a small buffer, while a reader thread reads everything and
// sends this thread SIGUSR1 after each read.
Transfer transfer_interrupted(const std::vector<std::byte>& data, bool (*send_bytes)(int, std::span<const std::byte>)) {
    SocketPair pair = make_socketpair();
    const int small = 4096;  // the kernel doubles it; still far below 1 MiB
    REQUIRE(::setsockopt(pair.first.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);

    const InterruptingSignal interrupting;
    const pthread_t writer = ::pthread_self();
    Transfer transfer{};
    std::thread reader([&transfer, &pair, writer] {
        std::byte buffer[8192];
        ssize_t got = 0;
        while ((got = ::read(pair.second.get(), buffer, sizeof buffer)) != 0) {
            if (got == -1) {
                if (errno == EINTR) {
                    continue;
                }
                break;
            }
            transfer.received.insert(transfer.received.end(), buffer, buffer + got);
            ::pthread_kill(writer, SIGUSR1);
        }
    });
    transfer.sent = send_bytes(pair.first.get(), data);
    transfer.send_errno = errno;
    pair.first.reset();  // EOF for the reader, also when sending failed
    reader.join();
    return transfer;
}

// Index of the first byte that differs, or the common size if none does;
// Catch2 would otherwise print a mismatch as a million "{?}".
std::size_t first_difference(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    std::size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) {
        ++i;
    }
    return i;
}

}  // namespace

TEST_CASE("write_all finishes writes that a signal cut short on a socketpair with a small send buffer") {
    const std::vector<std::byte> data = pattern(1024 * 1024);
    const Transfer transfer = transfer_interrupted(data, write_all);
    INFO("errno " << transfer.send_errno << ", SIGUSR1 caught " << signals_caught << " times so far");
    CHECK(transfer.sent);
    CHECK(transfer.received.size() == data.size());
    CHECK(first_difference(transfer.received, data) == data.size());
}

TEST_CASE("send_all finishes sends that a signal cut short on a socketpair with a small send buffer") {
    const std::vector<std::byte> data = pattern(1024 * 1024);
    const Transfer transfer = transfer_interrupted(data, send_all);
    INFO("errno " << transfer.send_errno << ", SIGUSR1 caught " << signals_caught << " times so far");
    CHECK(transfer.sent);
    CHECK(transfer.received.size() == data.size());
    CHECK(first_difference(transfer.received, data) == data.size());
}

TEST_CASE("send_all to a closed peer returns false with EPIPE and raises no SIGPIPE") {
    // SIGPIPE at its default action kills the process: if send_all let the
    // kernel raise it, this test program would die here.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    struct sigaction saved {};
    REQUIRE(::sigaction(SIGPIPE, &default_action, &saved) == 0);

    SocketPair pair = make_socketpair();
    pair.second.reset();
    errno = 0;
    const bool sent = send_all(pair.first.get(), bytes_of("hello"));
    const int send_errno = errno;
    ::sigaction(SIGPIPE, &saved, nullptr);
    CHECK_FALSE(sent);
    CHECK(send_errno == EPIPE);
}

TEST_CASE("write_all of nothing returns true without writing") {
    const SocketPair pair = make_socketpair();
    CHECK(write_all(pair.first.get(), {}));
    CHECK(send_all(pair.first.get(), {}));
    char byte = 0;
    const ssize_t got = ::recv(pair.second.get(), &byte, 1, MSG_DONTWAIT);
    const int recv_errno = errno;
    CHECK(got == -1);
    CHECK(recv_errno == EAGAIN);
}

TEST_CASE("read_exact returns exactly the size of the buffer when more is available") {
    const SocketPair pair = make_socketpair();
    REQUIRE(write_all(pair.first.get(), bytes_of("0123456789abcdef")));
    std::byte buffer[10];
    CHECK(read_exact(pair.second.get(), buffer) == 10);
    CHECK(std::string_view(reinterpret_cast<const char*>(buffer), 10) == "0123456789");
    // The rest is still there for the next read.
    char rest[16] = {};
    CHECK(::recv(pair.second.get(), rest, sizeof rest, MSG_DONTWAIT) == 6);
    CHECK(std::string_view(rest, 6) == "abcdef");
}

TEST_CASE("read_exact returns fewer bytes at end of file and then 0") {
    SocketPair pair = make_socketpair();
    REQUIRE(write_all(pair.first.get(), bytes_of("abcde")));
    pair.first.reset();
    std::byte buffer[10];
    CHECK(read_exact(pair.second.get(), buffer) == 5);
    CHECK(read_exact(pair.second.get(), buffer) == 0);
}

TEST_CASE("read_exact gathers bytes that the writer sent in three pieces") {
    // SOCK_SEQPACKET: one read returns at most one record, so filling the
    // buffer takes three reads, as it would for a slow writer.
    SocketPair pair = make_socketpair(SOCK_SEQPACKET);
    REQUIRE(::send(pair.first.get(), "abc", 3, 0) == 3);
    REQUIRE(::send(pair.first.get(), "defg", 4, 0) == 4);
    REQUIRE(::send(pair.first.get(), "hijkl", 5, 0) == 5);
    pair.first.reset();
    std::byte buffer[12];
    CHECK(read_exact(pair.second.get(), buffer) == 12);
    CHECK(std::string_view(reinterpret_cast<const char*>(buffer), 12) == "abcdefghijkl");
}

TEST_CASE("read_exact on an empty non-blocking socket returns -1 with EAGAIN") {
    const SocketPair pair = make_socketpair(SOCK_STREAM | SOCK_NONBLOCK);
    std::byte buffer[4];
    const ssize_t got = read_exact(pair.second.get(), buffer);
    const int read_errno = errno;
    CHECK(got == -1);
    CHECK(read_errno == EAGAIN);
}

TEST_CASE("set_nonblocking adds O_NONBLOCK and keeps O_APPEND") {
    char path[] = "/tmp/io_test_XXXXXX";
    const unique_fd file(::mkostemp(path, O_APPEND | O_CLOEXEC));
    REQUIRE(file.valid());
    ::unlink(path);  // the descriptor keeps the file alive; nothing is left behind
    REQUIRE((::fcntl(file.get(), F_GETFL) & O_APPEND) != 0);
    REQUIRE((::fcntl(file.get(), F_GETFL) & O_NONBLOCK) == 0);

    CHECK(set_nonblocking(file.get()));
    const int flags = ::fcntl(file.get(), F_GETFL);
    CHECK((flags & O_NONBLOCK) != 0);
    CHECK((flags & O_APPEND) != 0);
}

TEST_CASE("set_nonblocking makes a read on an empty pipe fail with EAGAIN instead of blocking") {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    REQUIRE(set_nonblocking(read_end.get()));
    char byte = 0;
    const ssize_t got = ::read(read_end.get(), &byte, 1);
    const int read_errno = errno;
    CHECK(got == -1);
    CHECK(read_errno == EAGAIN);
}

TEST_CASE("set_nonblocking on an invalid descriptor returns false with EBADF") {
    const bool done = set_nonblocking(-1);
    const int fcntl_errno = errno;
    CHECK_FALSE(done);
    CHECK(fcntl_errno == EBADF);
}
