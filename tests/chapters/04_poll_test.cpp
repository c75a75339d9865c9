// 04-poll: what the chapter's README claims, checked on the real server.
// (The echo contract itself is the conformance suite's job.)

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// User plus system CPU time the process has used (/proc/PID/stat fields 14, 15).
std::chrono::milliseconds cpu_time(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int index = 3; fields >> field && index <= 15; ++index) {
        if (index == 14 || index == 15) {
            ticks += std::stol(field);
        }
    }
    return std::chrono::milliseconds(ticks * 1000 / ::sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST_CASE("the server sleeps in ppoll and learns of a half-close from POLLRDHUP") {
    skip_unless_strace_available();
    TraceFile trace_file("poll-server");
    Server server = start_server(POLL_SERVER, {"--quiet"}, {}, strace_command(trace_file.path(), "ppoll,poll"));
    REQUIRE(echo_once(server.port, "hello").received == "hello");
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto polls = trace.calls_named("ppoll");
    REQUIRE(polls.size() >= 3);  // the listening socket, the data, the end of file
    CHECK(summary_count(summary, "poll calls") == polls.size());
    bool rdhup = false;
    for (const Syscall& call : polls) {
        rdhup = rdhup || call.result.find("revents=POLLIN|POLLRDHUP") != std::string::npos;
    }
    CHECK(rdhup);
    // Nothing was pending when idle: no call asked for POLLOUT without output.
    CHECK(polls.front().args.find("POLLOUT") == std::string::npos);
}

TEST_CASE("serves 2000 connections at once, more than select could") {
    // The test holds 2000 descriptors itself, the server as many again.
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    if (limit.rlim_cur < 4096 && limit.rlim_max >= 4096) {
        limit.rlim_cur = 4096;
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
    }
    REQUIRE(limit.rlim_cur >= 4096);
    StartOptions options;
    options.rlimit_nofile = 4096;
    Server server = start_server(POLL_SERVER, {"--quiet"}, options);
    std::vector<unique_fd> clients;
    for (int i = 0; i < 2000; ++i) {
        clients.push_back(connect_to(server.port));
        REQUIRE(clients.back().valid());
    }
    // Every connection is open at once; each gets its own echo.
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string message = "#" + std::to_string(i);
        const Exchange echo = exchange(clients[i].get(), message, {}, false, 10s);
        INFO("client " << i);
        REQUIRE(echo.received == message);
    }
    CHECK(resources_of(server.process.pid()).descriptors >= 2000);
    clients.clear();
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == 2000);
}

TEST_CASE("a peer that leaves while output is pending does not make it spin") {
    Server server = start_server(POLL_SERVER, {"--quiet"});
    {
        // Send 8 MiB and read nothing: the server holds echoes it cannot
        // send. Then close with unread data, which resets the connection.
        unique_fd greedy = connect_to(server.port);
        REQUIRE(greedy.valid());
        REQUIRE(::fcntl(greedy.get(), F_SETFL, O_NONBLOCK) == 0);
        const std::string block = random_bytes(64 * 1024, 9);
        std::size_t sent = 0;
        for (int full = 0; full < 20 && sent < (8u << 20);) {
            const ssize_t n = ::send(greedy.get(), block.data(), block.size(), MSG_NOSIGNAL);
            if (n > 0) {
                sent += static_cast<std::size_t>(n);
                full = 0;
            } else {
                ++full;
                readable_within(greedy.get(), 10ms);  // the server may still be reading: a short pause
            }
        }
        INFO("sent " << sent);
        REQUIRE(sent > (1u << 20));
    }
    // The server closed that connection (its descriptor count is back)...
    const int baseline = 5;  // stdin, stdout, stderr, the listening socket, the spare
    CHECK(eventually([&] { return resources_of(server.process.pid()).descriptors == baseline; }));
    // ...and idles without burning CPU. (This sleep measures.)
    const auto before = cpu_time(server.process.pid());
    std::this_thread::sleep_for(1s);
    CHECK(cpu_time(server.process.pid()) - before < 200ms);
    CHECK(echo_once(server.port, "next").received == "next");
    stop_server(server);
}
