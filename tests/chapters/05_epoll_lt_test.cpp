// 05-epoll-lt: what the chapter's README claims, checked on the real server.
// (The echo contract itself is the conformance suite's job.)

#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <thread>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// Descriptors of an idle server: stdin, stdout, stderr, the listening
// socket, the signalfd, the epoll instance and the spare /dev/null.
constexpr int idle_descriptors = 7;

}  // namespace

TEST_CASE("the interest list is edited with epoll_ctl, level-triggered, and a connection leaves it before close") {
    skip_unless_strace_available();
    TraceFile trace_file("epoll-lt");
    Server server = start_server(EPOLL_LT_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "epoll_create1,epoll_ctl,epoll_wait,close"));
    REQUIRE(echo_once(server.port, "hello").received == "hello");
    REQUIRE(echo_once(server.port, "again").received == "again");
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == idle_descriptors; }));
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto creates = trace.calls_named("epoll_create1");
    REQUIRE(creates.size() == 1);
    CHECK(creates[0].args == "EPOLL_CLOEXEC");
    const std::string epoll_fd = std::to_string(creates[0].value());

    // Level-triggered: no EPOLLET anywhere. The listening socket (fd 3) and
    // the signalfd are added once; each connection is added with
    // EPOLLIN|EPOLLRDHUP and deleted before its close().
    int connections_added = 0;
    for (const Syscall& call : trace.calls_named("epoll_ctl")) {
        CHECK(call.args.find("EPOLLET") == std::string::npos);
        CHECK(call.args.find(epoll_fd + ", ") == 0);
        CHECK(call.value() == 0);
        if (call.args.find("EPOLL_CTL_ADD, 3, {events=EPOLLIN,") != std::string::npos) {
            continue;  // the listening socket
        }
        if (call.args.find("EPOLL_CTL_ADD") != std::string::npos &&
            call.args.find("events=EPOLLIN|EPOLLRDHUP,") != std::string::npos) {
            ++connections_added;
        }
    }
    CHECK(connections_added == 2);
    // For each connection: EPOLL_CTL_DEL of its descriptor, then close().
    int deletions_before_close = 0;
    for (std::size_t i = 0; i + 1 < trace.calls.size(); ++i) {
        const Syscall& call = trace.calls[i];
        if (call.name == "epoll_ctl" && call.args.find("EPOLL_CTL_DEL") != std::string::npos) {
            const std::string fd = call.args.substr(call.args.find("EPOLL_CTL_DEL, ") + 15);
            CHECK(trace.calls[i + 1].name == "close");
            CHECK(fd.find(trace.calls[i + 1].args + ",") == 0);
            ++deletions_before_close;
        }
    }
    CHECK(deletions_before_close == 2);

    // The summary counts what strace saw: every epoll_wait, and the events
    // they returned (the last one is the signalfd's: SIGTERM).
    const auto waits = trace.calls_named("epoll_wait");
    std::uint64_t events = 0;
    for (const Syscall& call : waits) {
        events += static_cast<std::uint64_t>(std::max(call.value(), 0L));
    }
    CHECK(summary_count(summary, "epoll_wait calls") == waits.size());
    CHECK(summary_count(summary, "events") == events);
}

TEST_CASE("EPOLLOUT is asked for only while output is pending, EPOLLIN only while there is room") {
    skip_unless_strace_available();
    TraceFile trace_file("epoll-lt-backpressure");
    Server server =
        start_server(EPOLL_LT_SERVER, {"--quiet"}, {}, strace_command(trace_file.path(), "epoll_ctl"));
    {
        unique_fd client = connect_to(server.port);
        REQUIRE(client.valid());
        // A peer that does not read: the server fills its 4 MiB of pending
        // output and stops reading...
        const std::string block = random_bytes(64 * 1024, 5);
        // (2 s without progress: under strace the server can pause for long.)
        const std::size_t sent = send_without_reading(client.get(), block, 2s);
        INFO("sent " << sent);
        REQUIRE(sent > (4u << 20));
        REQUIRE(sent < (64u << 20));
        // ...then reads everything: every byte comes back, in order.
        REQUIRE(receive_up_to(client.get(), sent) == repeated(block, sent));
        // Nothing pending any more: the server went back to EPOLLIN alone.
        REQUIRE(exchange(client.get(), "done", {}, false).received == "done");
    }
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    bool output_asked = false, input_dropped = false, output_dropped_again = false;
    for (const Syscall& call : trace.calls_named("epoll_ctl")) {
        if (call.args.find("EPOLL_CTL_MOD") == std::string::npos) {
            continue;
        }
        if (call.args.find("events=EPOLLIN|EPOLLOUT|EPOLLRDHUP,") != std::string::npos) {
            output_asked = true;  // send() said EAGAIN: tell me when the peer reads
        } else if (call.args.find("events=EPOLLOUT,") != std::string::npos) {
            input_dropped = output_asked;  // 4 MiB pending: stop reading this peer
        } else if (call.args.find("events=EPOLLIN|EPOLLRDHUP,") != std::string::npos) {
            output_dropped_again = output_asked;  // all sent: no more EPOLLOUT
        }
    }
    CHECK(output_asked);
    CHECK(input_dropped);
    CHECK(output_dropped_again);
}

TEST_CASE("an idle connection costs no CPU time: epoll_wait sleeps while nothing is ready") {
    Server server = start_server(EPOLL_LT_SERVER, {"--quiet"});
    unique_fd idle = connect_to(server.port);
    REQUIRE(idle.valid());
    REQUIRE(exchange(idle.get(), "still here", {}, false).received == "still here");
    const auto before = cpu_time(server.process.pid());
    std::this_thread::sleep_for(500ms);  // this sleep measures, it does not wait for anything
    CHECK(cpu_time(server.process.pid()) - before < 150ms);
    idle.reset();
    const std::string summary = stop_server(server);
    // Accept, the data, the end of file, the stop: a handful of calls, not a loop.
    CHECK(summary_count(summary, "epoll_wait calls") < 10);
}
