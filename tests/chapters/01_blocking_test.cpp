// 01-blocking: what the chapter's README claims, checked on the real
// programs. (The echo contract itself is the conformance suite's job.)

#include <poll.h>
#include <sys/socket.h>

#include <set>
#include <string>

#include "catch.hpp"
#include "common/net.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

bool is_thread_clone(const Syscall& call) { return call.args.find("CLONE_THREAD") != std::string::npos; }

// clone() and clone3() calls that made a new process (fork) or a new thread.
std::vector<Syscall> clones(const Trace& trace, bool threads) {
    std::vector<Syscall> found;
    for (const Syscall& call : trace.calls) {
        if ((call.name == "clone" || call.name == "clone3") && call.value() > 0 && is_thread_clone(call) == threads) {
            found.push_back(call);
        }
    }
    return found;
}

}  // namespace

TEST_CASE("the fork server forks one child per connection and reaps each on SIGCHLD") {
    skip_unless_strace_available();
    TraceFile trace_file("fork-server");
    Server server = start_server(BLOCKING_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "accept4,clone,clone3,fork,recvfrom,wait4"));
    for (const char* message : {"first", "second", "third"}) {
        REQUIRE(echo_once(server.port, message).received == message);
    }
    // Wait until all three children have been reaped before stopping, so
    // that the trace shows the SIGCHLD path, not the stop's cleanup.
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return resources_of(server_pid).children == 0; }));
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "children forked") == 3);
    CHECK(summary_count(summary, "children reaped") == 3);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto children = clones(trace, false);
    REQUIRE(children.size() == 3);  // one process per connection
    CHECK(clones(trace, true).empty());  // and no threads
    std::set<pid_t> child_pids;
    for (const Syscall& clone : children) {
        CHECK(clone.pid == server_pid);  // forked by the parent
        child_pids.insert(static_cast<pid_t>(clone.value()));
    }
    // Each child read its client's bytes with recvfrom: the parent never did.
    for (const Syscall& call : trace.calls_named("recvfrom")) {
        CHECK(child_pids.count(call.pid) == 1);
    }
    // The parent saw SIGCHLD and reaped every child with wait4.
    std::size_t sigchld_in_parent = 0;
    for (const std::string& signal : trace.signals) {
        if (signal.find("--- SIGCHLD") != std::string::npos && std::stoi(signal) == server_pid) {
            ++sigchld_in_parent;
        }
    }
    CHECK(sigchld_in_parent >= 1);
    std::set<pid_t> reaped;
    for (const Syscall& call : trace.calls_named("wait4")) {
        if (call.value() > 0) {
            reaped.insert(static_cast<pid_t>(call.value()));
        }
    }
    CHECK(reaped == child_pids);
}

TEST_CASE("the thread server starts one thread per connection, in one process") {
    skip_unless_strace_available();
    TraceFile trace_file("thread-server");
    Server server = start_server(BLOCKING_SERVER_THREAD, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "accept4,clone,clone3,recvfrom"));
    for (const char* message : {"first", "second", "third"}) {
        REQUIRE(echo_once(server.port, message).received == message);
    }
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "threads started") == 3);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    CHECK(clones(trace, true).size() == 3 + sanitizer_threads);  // one thread per connection
    CHECK(clones(trace, false).empty());     // and no processes
    CHECK(trace.calls_named("accept4").size() >= 3);
}

TEST_CASE("the iterative server makes a second client wait until the first leaves") {
    Server server = start_server(BLOCKING_SERVER_ITERATIVE, {"--quiet"});
    unique_fd first = connect_to(server.port);
    REQUIRE(first.valid());
    REQUIRE(exchange(first.get(), "first", {}, false).received == "first");  // being served

    // The second connection completes (the kernel queues it) and its bytes
    // are sent, but nobody reads them while the server sleeps in recv() for
    // the first client.
    unique_fd second = connect_to(server.port);
    REQUIRE(second.valid());
    REQUIRE(::send(second.get(), "second", 6, MSG_NOSIGNAL) == 6);
    CHECK_FALSE(readable_within(second.get(), 500ms));

    first.reset();  // the first client leaves...
    REQUIRE(readable_within(second.get(), 10s));  // ...and the second is served
    char echo[6];
    CHECK(::recv(second.get(), echo, sizeof echo, MSG_WAITALL) == 6);
    CHECK(std::string(echo, 6) == "second");
    second.reset();
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == 2);
}

TEST_CASE("the client sends its arguments as one line and prints the echo") {
    Server server = start_server(BLOCKING_SERVER, {"--quiet"});
    const Completed client = run({BLOCKING_CLIENT, "--port", std::to_string(server.port), "hello", "world"});
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out == "hello world\n");
    CHECK(client.err == "client: 12 bytes sent, 12 bytes echoed back\n");
    stop_server(server);
}

TEST_CASE("the client echoes standard input byte for byte, NUL bytes included") {
    Server server = start_server(BLOCKING_SERVER_THREAD, {"--quiet"});
    StartOptions input;
    input.stdin_data = random_bytes(3 * 1024 * 1024 + 17, 7);  // larger than every socket buffer
    const Completed client = run({BLOCKING_CLIENT, "--port", std::to_string(server.port)}, input);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out.size() == input.stdin_data.size());
    CHECK(client.out == input.stdin_data);
    stop_server(server);
}

TEST_CASE("the client half-closes with shutdown and reads until the server closes") {
    skip_unless_strace_available();
    Server server = start_server(BLOCKING_SERVER, {"--quiet"});
    TraceFile trace_file("client");
    std::vector<std::string> argv = strace_command(trace_file.path(), "connect,sendto,read,recvfrom,shutdown");
    for (const std::string& arg : {std::string(BLOCKING_CLIENT), std::string("--port"), std::to_string(server.port),
                                  std::string("ping")}) {
        argv.push_back(arg);
    }
    const Completed client = run(argv);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out == "ping\n");
    stop_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto shutdowns = trace.calls_named("shutdown");
    REQUIRE(shutdowns.size() == 1);
    CHECK(shutdowns[0].args.find("SHUT_WR") != std::string::npos);
    CHECK(shutdowns[0].value() == 0);
    // After the shutdown, the last read on the socket returns 0: end of file.
    const auto reads = trace.calls_named("read");
    REQUIRE_FALSE(reads.empty());
    CHECK(reads.back().value() == 0);
}

TEST_CASE("the client reports a refused connection and exits 1") {
    // A port that was just free: bind it, note it, close it.
    std::string port;
    {
        const iomodels::unique_fd probe = iomodels::listen_tcp("127.0.0.1", 0);
        REQUIRE(probe.valid());
        port = std::to_string(ntohs(iomodels::local_address(probe.get())->sin_port));
    }
    const Completed client = run({BLOCKING_CLIENT, "--port", port, "hello"});
    CHECK(client.status.describe() == "exit 1");
    CHECK(client.out.empty());
    CHECK(client.err == "client: connect 127.0.0.1:" + port + ": Connection refused [ECONNREFUSED]\n");
}

TEST_CASE("the client rejects bad arguments with exit 2") {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"--port"}, {"--port", "0"}, {"--port", "99999"}, {"--host", "nowhere"}, {"--verbose"}}) {
        std::vector<std::string> argv{BLOCKING_CLIENT};
        argv.insert(argv.end(), args.begin(), args.end());
        const Completed client = run(argv);
        INFO(args[0]);
        CHECK(client.status.describe() == "exit 2");
        CHECK(client.err.find("usage: client") != std::string::npos);
    }
}
