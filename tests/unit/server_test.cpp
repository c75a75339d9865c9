// What every echo server prints (ready line, event log, summary) and how it
// stops (SIGINT/SIGTERM). Printed text is captured by pointing the process's
// stdout or stderr at a pipe for the duration of one call.
//
// stop_requested() is a process-wide flag that cannot be reset: the signal
// tests come last and no test depends on the flag being false.
#include "common/server.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;
using harness::output_of;

namespace {

std::string port_text(int fd) {
    const auto address = local_address(fd);
    REQUIRE(address.has_value());
    return std::to_string(ntohs(address->sin_port));
}

// Puts back the SIGINT and SIGTERM actions that were in place before a test
// installed the servers' stop handler.
class SavedStopActions {
public:
    SavedStopActions() {
        ::sigaction(SIGINT, nullptr, &interrupt_);
        ::sigaction(SIGTERM, nullptr, &terminate_);
    }
    ~SavedStopActions() {
        ::sigaction(SIGINT, &interrupt_, nullptr);
        ::sigaction(SIGTERM, &terminate_, nullptr);
    }
    SavedStopActions(const SavedStopActions&) = delete;
    SavedStopActions& operator=(const SavedStopActions&) = delete;

private:
    struct sigaction interrupt_ {};
    struct sigaction terminate_ {};
};

}  // namespace

TEST_CASE("stop_signals holds SIGINT and SIGTERM and nothing else") {
    const sigset_t set = stop_signals();
    CHECK(sigismember(&set, SIGINT) == 1);
    CHECK(sigismember(&set, SIGTERM) == 1);
    int members = 0;
    for (int signal = 1; signal < NSIG; ++signal) {
        members += sigismember(&set, signal) == 1 ? 1 : 0;
    }
    CHECK(members == 2);
}

TEST_CASE("print_ready_line prints the address and the real port of a port-0 listener on stdout") {
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0);
    REQUIRE(listen_fd.valid());
    bool printed = false;
    const std::string out = output_of(stdout, [&] { printed = print_ready_line(listen_fd.get()); });
    CHECK(printed);
    CHECK(out == "listening on 127.0.0.1:" + port_text(listen_fd.get()) + "\n");
}

TEST_CASE("print_ready_line with kind udp prints the UDP ready line") {
    const unique_fd socket_fd = bind_udp("127.0.0.1", 0);
    REQUIRE(socket_fd.valid());
    bool printed = false;
    const std::string out = output_of(stdout, [&] { printed = print_ready_line(socket_fd.get(), "udp "); });
    CHECK(printed);
    CHECK(out == "listening on udp 127.0.0.1:" + port_text(socket_fd.get()) + "\n");
}

TEST_CASE("print_ready_line on a descriptor that is not a socket reports ENOTSOCK and prints no ready line") {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    bool printed = true;
    std::string out;
    const std::string err =
        output_of(stderr, [&] { out = output_of(stdout, [&] { printed = print_ready_line(read_end.get()); }); });
    CHECK_FALSE(printed);
    CHECK(out.empty());
    CHECK(err == std::string(program_name()) + ": getsockname: Socket operation on non-socket [ENOTSOCK]\n");
}

TEST_CASE("EventLog prints one line on stderr that starts with the program name") {
    const EventLog log(false);
    CHECK_FALSE(log.quiet());
    const std::string err = output_of(stderr, [&] { log("accepted %s on fd %d", "127.0.0.1:40278", 4); });
    CHECK(err == std::string(program_name()) + ": accepted 127.0.0.1:40278 on fd 4\n");
}

TEST_CASE("EventLog made quiet prints nothing") {
    const EventLog log(true);
    CHECK(log.quiet());
    const std::string err = output_of(stderr, [&] { log("accepted %s on fd %d", "127.0.0.1:40278", 4); });
    CHECK(err.empty());
}

TEST_CASE("EventLog cuts a line longer than its 512-byte buffer instead of overflowing it") {
    const EventLog log(false);
    const std::string long_text(1000, 'x');
    const std::string err = output_of(stderr, [&] { log("%s", long_text.c_str()); });
    const std::string prefix = std::string(program_name()) + ": ";
    CHECK(err == prefix + std::string(511 - prefix.size(), 'x') + "\n");
}

TEST_CASE("print_summary prints one line on stderr with every count and what it counts") {
    const std::string err = output_of(stderr, [] {
        print_summary({{3, "connections"}, {1536, "bytes echoed"}, {7, "epoll_wait calls"}});
    });
    CHECK(err == std::string(program_name()) + ": summary: 3 connections, 1536 bytes echoed, 7 epoll_wait calls\n");
}

TEST_CASE("print_summary with no counts prints the bare summary label") {
    const std::string err = output_of(stderr, [] { print_summary({}); });
    CHECK(err == std::string(program_name()) + ": summary:\n");
}

TEST_CASE("print_summary and print_status take a server's counters as a list of counts") {
    const std::array<Count, 2> counts{{{3, "connections"}, {1536, "bytes echoed"}}};
    CHECK(output_of(stderr, [&] { print_summary(counts); }) ==
          std::string(program_name()) + ": summary: 3 connections, 1536 bytes echoed\n");
    CHECK(output_of(stderr, [&] { print_status(counts); }) ==
          std::string(program_name()) + ": status: 3 connections, 1536 bytes echoed\n");
}

TEST_CASE("print_status prints the same counts with the status label") {
    const std::string err = output_of(stderr, [] { print_status({{3, "connections"}, {1536, "bytes echoed"}}); });
    CHECK(err == std::string(program_name()) + ": status: 3 connections, 1536 bytes echoed\n");
}

// The signal tests: last, see the comment at the top.

TEST_CASE("SIGUSR1 after install_status_handler sets the status flag once, and does not restart calls") {
    struct sigaction before {};
    REQUIRE(::sigaction(SIGUSR1, nullptr, &before) == 0);
    install_status_handler();
    struct sigaction installed {};
    REQUIRE(::sigaction(SIGUSR1, nullptr, &installed) == 0);
    CHECK(installed.sa_handler != SIG_DFL);
    CHECK((installed.sa_flags & SA_RESTART) == 0);  // so a blocked call returns EINTR
    CHECK_FALSE(status_requested());
    REQUIRE(::raise(SIGUSR1) == 0);
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(status_requested());
    CHECK_FALSE(status_requested());  // cleared: two requests before a look are one line
    ::sigaction(SIGUSR1, &before, nullptr);
}

TEST_CASE("SIGTERM after install_stop_handlers sets stop_requested and makes accept fail with EINVAL at once") {
    // Non-blocking: if the handler did not shut the socket down, accept
    // would say EAGAIN instead of hanging the test.
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
    REQUIRE(listen_fd.valid());
    const SavedStopActions saved;
    install_stop_handlers(listen_fd.get());

    struct sigaction installed {};
    REQUIRE(::sigaction(SIGTERM, nullptr, &installed) == 0);
    CHECK(installed.sa_handler != SIG_DFL);
    CHECK((installed.sa_flags & SA_RESTART) == 0);  // so a blocked call returns EINTR

    REQUIRE(::raise(SIGTERM) == 0);  // the handler has run when raise returns
    CHECK(stop_requested());
    const unique_fd accepted(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    const int accept_errno = errno;
    CHECK_FALSE(accepted.valid());
    CHECK(accept_errno == EINVAL);
}

TEST_CASE("SIGINT after shut_down_on_stop makes a recv on that connection return 0 at once") {
    int ends[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) == 0);
    const unique_fd connection(ends[0]);
    const unique_fd peer(ends[1]);
    const SavedStopActions saved;
    install_stop_handlers();
    shut_down_on_stop(connection.get());

    REQUIRE(::raise(SIGINT) == 0);
    shut_down_on_stop(-1);  // before the descriptor is closed, as the header asks
    CHECK(stop_requested());
    char byte = 0;
    // MSG_DONTWAIT: without the shutdown this would be -1 EAGAIN, not a hang.
    CHECK(::recv(connection.get(), &byte, 1, MSG_DONTWAIT) == 0);
    CHECK(::recv(peer.get(), &byte, 1, MSG_DONTWAIT) == 0);  // SHUT_RDWR: the peer sees EOF too
}

TEST_CASE("discard_pending takes every queued instance of a blocked real-time signal, without waiting") {
    const int signal = SIGRTMIN + 5;
    sigset_t only, before;
    sigemptyset(&only);
    sigaddset(&only, signal);
    REQUIRE(::sigprocmask(SIG_BLOCK, &only, &before) == 0);
    CHECK(discard_pending(signal) == 0);  // nothing queued: returns at once
    for (int i = 0; i < 3; ++i) {
        REQUIRE(::sigqueue(::getpid(), signal, sigval{i}) == 0);  // real-time signals queue: 3 of them
    }
    CHECK(discard_pending(signal) == 3);
    sigset_t pending;
    ::sigpending(&pending);
    CHECK(sigismember(&pending, signal) == 0);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
}

TEST_CASE("the stop signalfd becomes readable with the signal's number, and the signal does not kill") {
    sigset_t before;
    ::sigprocmask(SIG_SETMASK, nullptr, &before);
    {
        const unique_fd stop_fd = open_stop_signal_fd();
        REQUIRE(stop_fd.valid());
        signalfd_siginfo info{};
        CHECK(::read(stop_fd.get(), &info, sizeof info) == -1);  // non-blocking, nothing yet
        CHECK(errno == EAGAIN);
        REQUIRE(::raise(SIGTERM) == 0);  // blocked: stays pending, readable on the signalfd
        CHECK(::read(stop_fd.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info));
        CHECK(info.ssi_signo == static_cast<std::uint32_t>(SIGTERM));
    }
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
}

TEST_CASE("block_stop_signals_outside_the_wait blocks SIGINT and SIGTERM and returns the mask without them") {
    sigset_t blocked_by_parent;
    sigemptyset(&blocked_by_parent);
    sigaddset(&blocked_by_parent, SIGINT);
    sigaddset(&blocked_by_parent, SIGUSR2);
    REQUIRE(::sigprocmask(SIG_BLOCK, &blocked_by_parent, nullptr) == 0);

    const sigset_t while_waiting = block_stop_signals_outside_the_wait();
    CHECK(sigismember(&while_waiting, SIGINT) == 0);
    CHECK(sigismember(&while_waiting, SIGTERM) == 0);
    CHECK(sigismember(&while_waiting, SIGUSR2) == 1);  // the rest of the mask is kept
    sigset_t now;
    REQUIRE(::sigprocmask(SIG_SETMASK, nullptr, &now) == 0);
    CHECK(sigismember(&now, SIGINT) == 1);
    CHECK(sigismember(&now, SIGTERM) == 1);
    CHECK(sigismember(&now, SIGUSR1) == 0);  // a status request may interrupt any call
}

