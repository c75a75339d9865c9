// 02-nonblocking: what the chapter's README claims, checked on the real
// programs. (The echo contract itself is the conformance suite's job.)

#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "catch.hpp"
#include "common/net.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// CPU time an idle server uses during one second of wall time. (This sleep
// measures; it waits for nothing to happen.)
std::chrono::milliseconds idle_cpu_per_second(const std::vector<std::string>& args) {
    Server server = start_server(NONBLOCKING_SERVER, args);
    const auto before = cpu_time(server.process.pid());
    std::this_thread::sleep_for(1s);
    const auto used = cpu_time(server.process.pid()) - before;
    stop_server(server);
    return used;
}

bool has_failure(const std::vector<Syscall>& calls, std::string_view error) {
    for (const Syscall& call : calls) {
        if (call.error() == error) {
            return true;
        }
    }
    return false;
}

}  // namespace

TEST_CASE("the server's recv on an idle connection returns EAGAIN instead of sleeping") {
    skip_unless_strace_available();
    TraceFile trace_file("nonblocking-server");
    Server server = start_server(NONBLOCKING_SERVER, {"--quiet", "--interval-ms", "20"}, {},
                                 strace_command(trace_file.path(), "accept4,recvfrom,sendto"));
    unique_fd client = connect_to(server.port);
    REQUIRE(client.valid());
    // Idle for a while: about fifteen rounds, each asking our socket for data.
    CHECK_FALSE(readable_within(client.get(), 300ms));
    REQUIRE(exchange(client.get(), "now", {}, true).received == "now");
    client.reset();
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "EAGAIN returns") > 10);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 4000));
    CHECK(has_failure(trace.calls_named("recvfrom"), "EAGAIN"));  // no data yet
    CHECK(has_failure(trace.calls_named("accept4"), "EAGAIN"));   // nobody waiting to connect
    // The summary counts every one of them: accept4, recvfrom and sendto.
    std::uint64_t eagains = 0;
    for (const Syscall& call : trace.calls) {
        eagains += call.error() == "EAGAIN";
    }
    CHECK(summary_count(summary, "EAGAIN returns") == eagains);
    bool echoed = false;
    for (const Syscall& call : trace.calls_named("sendto")) {
        echoed = echoed || call.args.find("\"now\"") != std::string::npos;
    }
    CHECK(echoed);
}

TEST_CASE("an idle server burns CPU without --interval-ms and almost none with --interval-ms 10") {
    const auto busy = idle_cpu_per_second({"--quiet"});
    const auto sleepy = idle_cpu_per_second({"--quiet", "--interval-ms", "10"});
    INFO("CPU time in one second: " << busy.count() << " ms busy, " << sleepy.count() << " ms with --interval-ms 10");
    // A quiet machine gives about 1000 ms and 0 ms; the bounds leave room
    // for the other tests that ctest runs on the same two cores.
    CHECK(busy >= 150ms);
    CHECK(sleepy <= 60ms);
}

TEST_CASE("the client's connect returns EINPROGRESS and its recv EAGAIN before the echo") {
    skip_unless_strace_available();
    Server server = start_server(NONBLOCKING_SERVER, {"--quiet", "--interval-ms", "10"});
    TraceFile trace_file("nonblocking-client");
    std::vector<std::string> argv = strace_command(trace_file.path(), "connect,poll,getsockopt,recvfrom,shutdown");
    argv.insert(argv.end(), {NONBLOCKING_CLIENT, "--port", std::to_string(server.port), "hello"});
    const Completed client = run(argv);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out == "hello\n");
    CHECK(client.err.find("client: 6 bytes sent, 6 bytes echoed back, ") != std::string::npos);
    stop_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 4000));
    const auto connects = trace.calls_named("connect");
    REQUIRE(connects.size() == 1);
    CHECK(connects[0].error() == "EINPROGRESS");
    const auto getsockopts = trace.calls_named("getsockopt");
    REQUIRE(getsockopts.size() == 1);
    CHECK(getsockopts[0].args.find("SO_ERROR, [0]") != std::string::npos);  // the handshake succeeded
    CHECK(has_failure(trace.calls_named("recvfrom"), "EAGAIN"));
    const auto reads = trace.calls_named("recvfrom");
    REQUIRE_FALSE(reads.empty());
    CHECK(reads.back().value() == 0);  // and the last one is end of file
}

TEST_CASE("the client echoes standard input byte for byte") {
    Server server = start_server(NONBLOCKING_SERVER, {"--quiet"});
    StartOptions input;
    input.stdin_data = random_bytes(2 * 1024 * 1024 + 3, 11);
    const Completed client = run({NONBLOCKING_CLIENT, "--port", std::to_string(server.port)}, input);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out.size() == input.stdin_data.size());
    CHECK(client.out == input.stdin_data);
    stop_server(server);
}

TEST_CASE("the client reports a refused connection and exits 1") {
    std::string port;
    {
        const iomodels::unique_fd probe = iomodels::listen_tcp("127.0.0.1", 0);
        REQUIRE(probe.valid());
        port = std::to_string(ntohs(iomodels::local_address(probe.get())->sin_port));
    }
    const Completed client = run({NONBLOCKING_CLIENT, "--port", port, "hello"});
    CHECK(client.status.describe() == "exit 1");
    CHECK(client.out.empty());
    CHECK(client.err == "client: connect 127.0.0.1:" + port + ": Connection refused [ECONNREFUSED]\n");
}

TEST_CASE("the server rejects a bad --interval-ms with exit 2") {
    for (const char* value : {"-1", "ten", "10x", "60001"}) {
        const Completed server = run({NONBLOCKING_SERVER, "0", "--interval-ms", value});
        INFO(value);
        CHECK(server.status.describe() == "exit 2");
        CHECK(server.err.find("usage: server") != std::string::npos);
    }
}
