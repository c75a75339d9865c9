// The fingerprint rules (fingerprint.hpp) as test cases of grade_cases, one
// a rule, tagged [fingerprint] and the model's name: the grader runs the
// rules of the model it grades (grade --list MODEL shows them), each on a
// traced session of its own. And the grader's first case, [preflight].
#include <cstdlib>
#include <string>

#include "catch.hpp"
#include "grade/fingerprint.hpp"
#include "harness/harness.hpp"

using namespace harness;
using conformance::server_under_test;

namespace {

// Runs the server under strace and reports what `rule` found, one failure a
// finding. With IOMODELS_GRADE_LOGS set (grade --logs), the trace is kept.
void judge(grade::Findings (*rule)(const grade::Session&), bool udp = false) {
    const char* logs = std::getenv("IOMODELS_GRADE_LOGS");
    const std::string keep_trace_in = logs != nullptr ? logs : "";
    const grade::Session session = udp ? grade::traced_udp_session(server_under_test, keep_trace_in)
                                       : grade::traced_session(server_under_test, keep_trace_in);
    if (session.wrong_echoes > 0) {
        WARN(session.wrong_echoes << " exchanges of the traced workload did not come back whole within 3 s");
    }
    for (const std::string& finding : rule(session)) {
        FAIL_CHECK(finding);
    }
}

}  // namespace

TEST_CASE("the server starts, accepts a connection and echoes one byte", "[preflight]") {
    if (server_under_test.io_uring) {
        skip_unless_io_uring_available();  // then nothing is graded, and the grader says why
    }
    std::vector<std::string> argv{server_under_test.path};
    if (server_under_test.contract) {
        argv.push_back("0");
        argv.push_back("--quiet");
    }
    argv.insert(argv.end(), server_under_test.options.begin(), server_under_test.options.end());
    StartOptions bounded;
    bounded.rlimit_fsize = 64LL << 20;  // a server that floods its stderr stops at 64 MiB
    Server server = start_command(argv, bounded);
    const unique_fd client = connect_to(server.port);
    CHECK(exchange(client.get(), "x", {}, false, 5s).received == "x");
}

TEST_CASE("epoll-et: every EPOLL_CTL_ADD and EPOLL_CTL_MOD of a client socket carries EPOLLET",
          "[fingerprint][epoll-et]") {
    judge(grade::every_epoll_ctl_of_a_client_carries_epollet);
}

TEST_CASE("epoll-et: every client socket is non-blocking before its first read", "[fingerprint][epoll-et]") {
    judge(grade::client_sockets_nonblocking_before_reading);
}

TEST_CASE(
    "epoll-et: before each epoll_wait that may sleep, every client socket read since the last has been read "
    "until EAGAIN or end of file",
    "[fingerprint][epoll-et]") {
    judge(grade::reads_until_eagain_before_sleeping);
}

TEST_CASE("epoll-lt: waits in epoll_wait, with the client sockets added level-triggered (no EPOLLET)",
          "[fingerprint][epoll-lt]") {
    judge(grade::waits_in_epoll_level_triggered);
}

TEST_CASE("select: waits in select or pselect6 with the client sockets in its read set", "[fingerprint][select]") {
    judge(grade::waits_in_select_on_the_clients);
}

TEST_CASE("poll: waits in poll or ppoll with the client sockets in its array", "[fingerprint][poll]") {
    judge(grade::waits_in_poll_on_the_clients);
}

TEST_CASE("nonblocking: non-blocking client sockets whose reads say EAGAIN, asked again without waiting for readiness",
          "[fingerprint][nonblocking]") {
    judge(grade::polls_nonblocking_sockets);
}

TEST_CASE("blocking-iterative: blocking client sockets, served by the one process and thread that accepts them",
          "[fingerprint][blocking-iterative]") {
    judge(grade::serves_one_client_at_a_time_blocking);
}

TEST_CASE("fork: one child process per connection, and every child reaped", "[fingerprint][fork]") {
    judge(grade::forks_a_child_per_connection);
}

TEST_CASE("thread: one thread per connection, which reads its socket with read or recv", "[fingerprint][thread]") {
    judge(grade::starts_a_thread_per_connection);
}

TEST_CASE("rtsig-udp: F_SETOWN, F_SETSIG and O_ASYNC on the UDP socket, signals taken in rt_sigtimedwait",
          "[fingerprint][rtsig-udp]") {
    judge(grade::arms_the_udp_socket_for_real_time_signals, true);
}

TEST_CASE("rtsig-tcp: F_SETOWN, F_SETSIG and O_ASYNC on every client socket, signals taken in rt_sigtimedwait",
          "[fingerprint][rtsig-tcp]") {
    judge(grade::arms_every_client_for_real_time_signals);
}

TEST_CASE("aio-kernel: client sockets are watched by IOCB_CMD_POLL requests, completions taken with io_getevents",
          "[fingerprint][aio-kernel]") {
    judge(grade::submits_aio_poll_requests);
}

TEST_CASE(
    "aio-posix: glibc's AIO threads read the client sockets (pread64, then read on ESPIPE), not the one that "
    "accepts",
    "[fingerprint][aio-posix]") {
    judge(grade::glibc_aio_threads_read_the_clients);
}

TEST_CASE("io-uring: an io_uring instance, and no recv or send system calls on client sockets",
          "[fingerprint][io-uring]") {
    judge(grade::the_ring_does_the_copying);
}
