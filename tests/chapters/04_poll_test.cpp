// 04-poll: what the chapter's README claims, checked on the real server.
// (The echo contract itself is the conformance suite's job.)

#include <fcntl.h>
#include <poll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// CPU time the server uses while the test does nothing for `idle`.
std::chrono::milliseconds cpu_used_while_idle(pid_t pid, std::chrono::milliseconds idle) {
    const auto before = cpu_time(pid);
    std::this_thread::sleep_for(idle);  // this sleep measures, it does not wait for anything
    return cpu_time(pid) - before;
}

}  // namespace

TEST_CASE("the server sleeps in ppoll over a pollfd array that grows and shrinks with the connections") {
    skip_unless_strace_available();
    TraceFile trace_file("poll-server");
    Server server = start_server(POLL_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "ppoll,poll,accept4,recvfrom"));
    const pid_t server_pid = traced_pid(server.process.pid());
    {
        const unique_fd client = connect_to(server.port);
        REQUIRE(exchange(client.get(), "hello", {}, false, 5s).received == "hello");
        // The end of file comes alone, once the server sleeps again, so that
        // its ppoll reports it (POLLIN|POLLRDHUP). Sent with the data, it is
        // often read by the same recv loop, and no ppoll ever shows it.
        REQUIRE(eventually([&] { return sleeping_in(server_pid, "poll"); }));
        REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
        REQUIRE(readable_within(client.get(), 5s));  // the server's end of file
    }
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == 5; }));  // the connection is closed
    // ...and the server is asleep in its next ppoll (the kernel's wait
    // function shows in /proc/PID/wchan), so that the trace ends with it.
    REQUIRE(eventually([&] { return sleeping_in(server_pid, "poll"); }));
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    CHECK(trace.calls_named("poll").empty());  // ppoll, not poll: see the lost-signal pitfall
    const auto polls = trace.calls_named("ppoll");
    REQUIRE(polls.size() >= 3);  // the listening socket, the data (and end of file), the stop
    CHECK(summary_count(summary, "poll calls") == polls.size());
    // Sleeping with the listening socket alone, then with the connection
    // added, then with the closed connection gone (no POLLNVAL).
    CHECK(polls.front().args.find("[{fd=3, events=POLLIN}], 1,") == 0);
    CHECK(polls[1].args.find("{fd=5, events=POLLIN|POLLRDHUP}], 2,") != std::string::npos);
    CHECK(polls.back().args.find("[{fd=3, events=POLLIN}], 1,") == 0);
    bool rdhup = false;
    for (const Syscall& call : polls) {
        rdhup = rdhup || call.result.find("revents=POLLIN|POLLRDHUP") != std::string::npos;
        CHECK(call.args.find("POLLOUT") == std::string::npos);  // nothing was ever pending
        CHECK(call.result.find("POLLNVAL") == std::string::npos);
    }
    CHECK(rdhup);
    // accept4 until EAGAIN; recv until EAGAIN or end of file.
    const auto accepts = trace.calls_named("accept4");
    REQUIRE(accepts.size() >= 2);
    CHECK(accepts[0].value() == 5);
    CHECK(accepts[1].error() == "EAGAIN");
    const auto receives = trace.calls_named("recvfrom");
    REQUIRE_FALSE(receives.empty());
    CHECK(receives.back().value() == 0);
}

TEST_CASE("serves 2000 connections at once, more than select's FD_SETSIZE") {
    // The test holds 2000 descriptors itself, the server as many again.
    raise_descriptor_limit_or_skip(4096);
    StartOptions options;
    options.rlimit_nofile = 4096;
    Server server = start_server(POLL_SERVER, {"--quiet"}, options);

    constexpr int client_count = 2000;
    static_assert(client_count > FD_SETSIZE);
    std::vector<unique_fd> clients;
    for (int i = 0; i < client_count; ++i) {
        clients.push_back(connect_to(server.port));
        REQUIRE(clients.back().valid());
    }
    // Every client sends first, so all 2000 requests are outstanding at once...
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string message = "#" + std::to_string(i);
        REQUIRE(::send(clients[i].get(), message.data(), message.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(message.size()));
    }
    CHECK(eventually([&] { return resources_of(server.process.pid()).descriptors >= client_count + 5; }));
    // ...then each reads its own echo.
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string message = "#" + std::to_string(i);
        std::string received;
        char buffer[16];
        while (received.size() < message.size() && readable_within(clients[i].get(), 10s)) {
            const ssize_t n = ::recv(clients[i].get(), buffer, sizeof buffer, 0);
            if (n <= 0) {
                break;
            }
            received.append(buffer, static_cast<std::size_t>(n));
        }
        INFO("client " << i);
        REQUIRE(received == message);
    }
    clients.clear();
    CHECK(eventually([&] { return resources_of(server.process.pid()).descriptors == 5; }));
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == client_count);
}

TEST_CASE("a peer that leaves while output is pending does not make it spin") {
    Server server = start_server(POLL_SERVER, {"--quiet"});
    const pid_t pid = server.process.pid();
    {
        // Send and read nothing: the server holds 4 MiB of echo it cannot
        // send (more than was sent minus what the socket buffers hold), and
        // stops reading from us.
        unique_fd greedy = connect_to(server.port);
        REQUIRE(greedy.valid());
        const std::size_t sent = send_without_reading(greedy.get(), random_bytes(64 * 1024, 9));
        INFO("sent " << sent);
        REQUIRE(sent > (4u << 20));
        REQUIRE(sent < (64u << 20));  // it did stop reading

        SECTION("the peer closes with its echo unread (a reset)") {
            greedy.reset();  // unread data in our receive buffer: close() sends a RST
        }
        SECTION("the peer half-closes, idles, then resets") {
            REQUIRE(::shutdown(greedy.get(), SHUT_WR) == 0);
            // Output pending, peer half-closed and not reading: the server
            // asks only for POLLOUT, which does not come. It must sleep.
            CHECK(cpu_used_while_idle(pid, 500ms) < 150ms);
            reset_connection(greedy);
        }
    }
    // The server closed that connection (stdin, stdout, stderr, the
    // listening socket and the spare are left)...
    CHECK(eventually([&] { return resources_of(pid).descriptors == 5; }));
    // ...and idles without burning CPU: no POLLNVAL, POLLERR or POLLOUT loop.
    CHECK(cpu_used_while_idle(pid, 1s) < 300ms);
    CHECK(echo_once(server.port, "next").received == "next");
    stop_server(server);
}

TEST_CASE("an idle connection costs no CPU time: POLLOUT is asked for only while output is pending") {
    Server server = start_server(POLL_SERVER, {"--quiet"});
    unique_fd idle = connect_to(server.port);
    REQUIRE(idle.valid());
    REQUIRE(exchange(idle.get(), "still here", {}, false).received == "still here");  // served, then idle
    CHECK(cpu_used_while_idle(server.process.pid(), 500ms) < 150ms);
    idle.reset();
    stop_server(server);
}

TEST_CASE("poll returns 0 on a timeout, with revents 0, and its array is otherwise as it was given") {
    // Document 003: poll and select return 0 when the time runs out.
    // Unlike select's sets, poll's `events` are never written.
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    pollfd watched{read_end.get(), POLLIN, 0};
    CHECK(::poll(&watched, 1, 20) == 0);
    CHECK(watched.revents == 0);
    CHECK(watched.events == POLLIN);
    CHECK(watched.fd == read_end.get());
}
