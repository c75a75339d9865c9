// The fingerprint rules: what makes a model the model, read from a short run
// of a server under `strace -f`. fingerprint_cases.cpp makes each rule a
// test case of grade_cases, which the grader runs; grade_test.cpp checks on
// the suite's own servers that each model's rules hold for its server and
// for no other (the matrix).
//
// A rule says what the server must do with its client sockets ("every
// EPOLL_CTL_ADD of a client socket carries EPOLLET") more than what it must
// never call: a language's runtime makes calls of its own (CPython's socket
// timeouts use poll, Go's runtime uses epoll). A client socket is a
// descriptor that accept or accept4 returned.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "conformance/server_under_test.hpp"
#include "harness/strace.hpp"

namespace grade {

// What a traced session left: the trace, and the client sockets in it.
struct Session {
    harness::Trace trace;
    // TCP: the descriptors that accept or accept4 returned, and the sockets
    // the server held while its clients were connected (io_uring's ACCEPT
    // returns them in a CQE, not in a system call strace can see). UDP: the
    // server's own UDP sockets (socket(..., SOCK_DGRAM, ...)).
    std::set<std::string> clients;
    int wrong_echoes = 0;  // exchanges of the workload that did not come back whole
};

// Starts `server` under strace -f (as the conformance suite starts it: with
// `0 --quiet` at the contract level), serves a short workload, stops it
// with SIGTERM and reads the trace. The workload: three clients with a few
// messages each (two of them at once, unless the server serves one at a
// time), then 256 KiB from one, each ending with a half-close. A wrong echo
// does not stop it: the rules judge what the server did, so that a broken
// server fails the rule that names its bug. Each exchange waits 3 s at most.
// Skips the test (exit 77) where strace is missing. `keep_trace_in`, if not
// empty, is a directory to copy the trace into.
Session traced_session(const conformance::ServerUnderTest& server, const std::string& keep_trace_in = "");

// The same for a UDP echo server: two clients, five datagrams each, then
// SIGTERM.
Session traced_udp_session(const conformance::ServerUnderTest& server, const std::string& keep_trace_in = "");

// What a rule found wrong, one line each; empty: the rule holds.
using Findings = std::vector<std::string>;

struct Rule {
    std::string_view model;             // "epoll-et", as grade::models names it
    Findings (*check)(const Session&);  // of a traced_session, or a traced_udp_session for a UDP model
};

// Every rule of every model, in the order fingerprint_cases.cpp lists them.
const std::vector<Rule>& rules();

// The rules, one function each (fingerprint_cases.cpp names them).
Findings every_epoll_ctl_of_a_client_carries_epollet(const Session& session);
Findings client_sockets_nonblocking_before_reading(const Session& session);
Findings reads_until_eagain_before_sleeping(const Session& session);
Findings waits_in_epoll_level_triggered(const Session& session);
Findings waits_in_select_on_the_clients(const Session& session);
Findings waits_in_poll_on_the_clients(const Session& session);
Findings polls_nonblocking_sockets(const Session& session);
Findings serves_one_client_at_a_time_blocking(const Session& session);
Findings forks_a_child_per_connection(const Session& session);
Findings starts_a_thread_per_connection(const Session& session);
Findings arms_every_client_for_real_time_signals(const Session& session);
Findings arms_the_udp_socket_for_real_time_signals(const Session& session);
Findings submits_aio_poll_requests(const Session& session);
Findings glibc_aio_threads_read_the_clients(const Session& session);
Findings the_ring_does_the_copying(const Session& session);

}  // namespace grade
