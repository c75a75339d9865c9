// 06-epoll-et: what the chapter's README claims, checked on the real
// programs: the edge-triggered server, its --no-drain bug, and lt_vs_et.
// (The echo contract itself is the conformance suite's job.)

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "catch.hpp"
#include "common/event_names.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// stdin, stdout, stderr, the listening socket, the signalfd, the epoll
// instance and the spare /dev/null.
constexpr int idle_descriptors = 7;

void send_whole(int fd, const std::string& bytes) {
    REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// The descriptor a recvfrom/epoll_ctl call is about: its first argument.
std::string first_argument(const Syscall& call) { return call.args.substr(0, call.args.find(',')); }

}  // namespace

TEST_CASE("lt_vs_et: level-triggered reports K times, edge-triggered once, one-shot once until re-armed") {
    for (const int bytes : {5, 3}) {
        const Completed demo = run({EPOLL_LT_VS_ET, "--bytes", std::to_string(bytes)});
        INFO(demo.out << demo.err);
        REQUIRE(demo.status.describe() == "exit 0");
        const std::string k = std::to_string(bytes);
        CHECK(demo.out.find("\nlevel-triggered: " + k + " wakeups for " + k + " bytes") != std::string::npos);
        CHECK(demo.out.find("\nedge-triggered: 1 wakeup for " + k + " bytes") != std::string::npos);
        CHECK(demo.out.find("\nedge-triggered: 1 more wakeup after new data") != std::string::npos);
        CHECK(demo.out.find("\none-shot: 1 wakeup, then disarmed") != std::string::npos);
        CHECK(demo.out.find("\none-shot: 1 more wakeup after re-arming") != std::string::npos);
        // ET: the bytes are still there when epoll_wait says nothing.
        CHECK(demo.out.find("  epoll_wait #2: 0 events (" + std::to_string(bytes - 1)) != std::string::npos);
    }
    CHECK(run({EPOLL_LT_VS_ET, "--bytes", "0"}).status.describe() == "exit 2");
    CHECK(run({EPOLL_LT_VS_ET, "--help"}).status.describe() == "exit 0");
}

// The same claim on return values, as the kernel's selftest checks it
// (tools/testing/selftests/filesystems/epoll/epoll_wakeup_test.c): a
// socketpair, one byte written and never read, epoll_wait with timeout 0 so
// that nothing can hang. The three modes differ in one flag and one number.
TEST_CASE("one unread byte: level-triggered reports it at every epoll_wait, EPOLLET once until new data arrives, "
          "EPOLLONESHOT once until EPOLL_CTL_MOD re-arms it") {
    const auto [flag, reported_again] = GENERATE(table<std::uint32_t, int>({
        {0, 1},             // level-triggered: still readable, so reported again
        {EPOLLET, 0},       // no new data, no new edge
        {EPOLLONESHOT, 0},  // disarmed by its one report
    }));
    INFO(iomodels::epoll_event_names(EPOLLIN | flag));
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    const unique_fd writer(pair[0]);
    const unique_fd reader(pair[1]);
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    REQUIRE(epoll_fd);
    epoll_event interest{};
    interest.events = EPOLLIN | flag;
    interest.data.fd = reader.get();
    REQUIRE(::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, reader.get(), &interest) == 0);
    REQUIRE(::write(writer.get(), "a", 1) == 1);

    epoll_event ready{};
    CHECK(::epoll_wait(epoll_fd.get(), &ready, 1, 0) == 1);
    CHECK(::epoll_wait(epoll_fd.get(), &ready, 1, 0) == reported_again);  // nothing was read in between
    if (flag == EPOLLET) {
        REQUIRE(::write(writer.get(), "b", 1) == 1);  // new data: a new edge, though "a" is still unread
        CHECK(::epoll_wait(epoll_fd.get(), &ready, 1, 0) == 1);
    }
    if (flag == EPOLLONESHOT) {
        REQUIRE(::epoll_ctl(epoll_fd.get(), EPOLL_CTL_MOD, reader.get(), &interest) == 0);  // re-armed
        CHECK(::epoll_wait(epoll_fd.get(), &ready, 1, 0) == 1);
    }
}

TEST_CASE("every epoll_ctl ADD and MOD carries EPOLLET, and every run of reads ends with EAGAIN") {
    skip_unless_strace_available();
    TraceFile trace_file("epoll-et");
    // A read budget larger than anything sent: here a run of reads ends
    // only with EAGAIN, end of file, or 4 MiB pending for a peer that does
    // not read (the budget has its own test below).
    Server server =
        start_server(EPOLL_ET_SERVER, {"--quiet", "--read-budget", "268435456"}, {},
                     strace_command(trace_file.path(), "epoll_ctl,epoll_wait,accept4,recvfrom,sendto"));
    {
        // Two clients that exchange a few messages and stay connected.
        unique_fd first = connect_to(server.port);
        unique_fd second = connect_to(server.port);
        for (const char* message : {"one", "two", "three"}) {
            REQUIRE(exchange(first.get(), message, {}, false).received == message);
            REQUIRE(exchange(second.get(), message, {}, false).received == message);
        }
        // Then the first does not read its echo for a while: the server's
        // send() says EAGAIN, so it asks for EPOLLOUT with EPOLL_CTL_MOD;
        // once 4 MiB are pending it stops reading; as we read, it goes on.
        const std::string block = random_bytes(64 * 1024, 3);
        // (2 s without progress: under strace the server can pause for long.)
        const std::size_t sent = send_without_reading(first.get(), block, 2s);
        REQUIRE(sent > (4u << 20));
        REQUIRE(receive_up_to(first.get(), sent) == repeated(block, sent));
    }
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == idle_descriptors; }));
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 20000));
    int adds = 0, mods_with_output = 0;
    for (const Syscall& call : trace.calls_named("epoll_ctl")) {
        if (call.args.find("EPOLL_CTL_DEL") != std::string::npos) {
            continue;
        }
        INFO("epoll_ctl(" << call.args << ")");
        CHECK(call.args.find("EPOLLET") != std::string::npos);
        adds += call.args.find("EPOLL_CTL_ADD") != std::string::npos;
        mods_with_output += call.args.find("EPOLL_CTL_MOD") != std::string::npos &&
                            call.args.find("EPOLLOUT") != std::string::npos;
    }
    CHECK(adds == 4);  // the listening socket, the signalfd, two connections
    CHECK(mods_with_output >= 1);

    // Between two epoll_waits, the last accept4 and each connection's last
    // recvfrom say EAGAIN, or 0 (end of file), or that read left the
    // connection with 4 MiB pending (received minus sent, counted from the
    // trace; the same round may send some of it afterwards, on EPOLLOUT).
    // Nothing is left waiting for an edge that will not come.
    std::map<std::string, long long> pending;  // descriptor -> bytes received, not yet sent
    std::map<std::string, Syscall> last_read;  // descriptor -> its last recvfrom of this round
    std::map<std::string, long long> pending_after_last_read;
    std::vector<Syscall> accepts;
    int runs_ended_by_eagain = 0;
    const auto end_round = [&] {
        for (const auto& [fd, call] : last_read) {
            INFO("fd " << fd << ": recvfrom(" << call.args << ") = " << call.result << ", pending after it "
                        << pending_after_last_read[fd]);
            CHECK((call.error() == "EAGAIN" || call.value() == 0 || pending_after_last_read[fd] >= (4 << 20)));
            runs_ended_by_eagain += call.error() == "EAGAIN";
        }
        if (!accepts.empty()) {
            INFO("accept4(" << accepts.back().args << ") = " << accepts.back().result);
            CHECK(accepts.back().error() == "EAGAIN");
        }
        last_read.clear();
        accepts.clear();
    };
    for (const Syscall& call : trace.calls) {
        if (call.name == "epoll_wait") {
            end_round();
        } else if (call.name == "recvfrom") {
            last_read[first_argument(call)] = call;
            pending[first_argument(call)] += std::max(call.value(), 0L);
            pending_after_last_read[first_argument(call)] = pending[first_argument(call)];
        } else if (call.name == "sendto") {
            pending[first_argument(call)] -= std::max(call.value(), 0L);
        } else if (call.name == "accept4") {
            accepts.push_back(call);
        }
    }
    end_round();
    CHECK(runs_ended_by_eagain >= 6);
}

TEST_CASE("reading once per notification (--no-drain) stalls a client, and each new edge releases one read") {
    // 60000 bytes in one send(): one segment on loopback, one edge. The
    // correct server echoes all of it; --no-drain reads 4096 and waits for
    // an edge that does not come.
    const std::string message = random_bytes(60000, 11);
    {
        Server server = start_server(EPOLL_ET_SERVER, {"--quiet"});
        unique_fd client = connect_to(server.port);
        send_whole(client.get(), message);
        CHECK(receive_up_to(client.get(), message.size(), 2s) == message);
        client.reset();
        stop_server(server);
    }
    Server server = start_server(EPOLL_ET_SERVER, {"--no-drain"});
    unique_fd client = connect_to(server.port);
    send_whole(client.get(), message);
    // The stall: well past the time a full echo takes, part of it is missing.
    const std::string first = receive_up_to(client.get(), message.size(), 1s);
    INFO("echoed " << first.size() << " of " << message.size() << " bytes");
    CHECK(first.size() < message.size());
    CHECK(first.size() % 4096 == 0);  // one read of 4096 per edge
    CHECK(first == message.substr(0, first.size()));
    // One more byte is a new edge: exactly one more read of 4096 bytes
    // (of what was waiting, in order), and again nothing after it.
    send_whole(client.get(), "!");
    const std::string more = receive_up_to(client.get(), 4096, 1s);
    CHECK(more == message.substr(first.size(), 4096));
    CHECK_FALSE(readable_within(client.get(), 300ms));
    // Stopped while the client is still connected (its close would be one
    // more edge, and one more read).
    const std::string summary = stop_server(server);
    CHECK(server.process.stderr_text().find("read 4096 bytes once (--no-drain), not reading again until a new edge") !=
          std::string::npos);
    CHECK(summary_count(summary, "bytes echoed") == first.size() + more.size());
}

TEST_CASE("with --short-read-drains, one recvfrom per message and no EAGAIN call, and the peer's FIN still ends it") {
    skip_unless_strace_available();
    TraceFile trace_file("epoll-et-short-reads");
    Server server = start_server(EPOLL_ET_SERVER, {"--quiet", "--short-read-drains"}, {},
                                 strace_command(trace_file.path(), "recvfrom"));
    {
        unique_fd client = connect_to(server.port);
        for (const char* message : {"one", "two", "three"}) {
            REQUIRE(exchange(client.get(), message, {}, false).received == message);
        }
        // The last message and the FIN: echoed, then the server closes.
        const Exchange last = exchange(client.get(), "last", {}, true);
        CHECK(last.received == "last");
        CHECK(last.eof);
    }
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == idle_descriptors; }));
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    std::vector<std::string> results;
    for (const Syscall& call : trace.calls_named("recvfrom")) {
        results.push_back(call.error().empty() ? std::to_string(call.value()) : call.error());
    }
    // "one" "two" "three" "last", each in one read that asked for more
    // than it got, then 0: the end of file. (Without the option, each
    // message would be followed by a recvfrom that says EAGAIN.)
    CHECK(results == std::vector<std::string>{"3", "3", "5", "4", "0"});
}

TEST_CASE("fairness: with a read budget, two connections with data waiting take turns") {
    skip_unless_strace_available();
    TraceFile trace_file("epoll-et-fairness");
    Server server = start_server(EPOLL_ET_SERVER, {"--quiet", "--read-budget", "4096"}, {},
                                 strace_command(trace_file.path(), "epoll_wait,recvfrom"));
    const pid_t server_pid = traced_pid(server.process.pid());
    unique_fd first = connect_to(server.port);
    unique_fd second = connect_to(server.port);
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == idle_descriptors + 2; }));
    // Stop the server, so that both connections' data is waiting before it
    // reads any: 40000 bytes each (fits in the socket buffers).
    suspend_process(server_pid);
    const std::string first_message = random_bytes(40000, 21), second_message = random_bytes(40000, 22);
    send_whole(first.get(), first_message);
    send_whole(second.get(), second_message);
    resume_process(server_pid);
    CHECK(receive_up_to(first.get(), first_message.size(), 5s) == first_message);
    CHECK(receive_up_to(second.get(), second_message.size(), 5s) == second_message);
    first.reset();
    second.reset();
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == idle_descriptors; }));
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    // Without the budget, one connection would be read to EAGAIN (10 reads)
    // before the other. With it, the reads alternate, and epoll_wait is
    // called with timeout 0 in between: connections are still waiting.
    std::string previous;
    int switches = 0, reads_with_data = 0;
    for (const Syscall& call : trace.calls_named("recvfrom")) {
        if (call.value() <= 0) {
            continue;
        }
        ++reads_with_data;
        const std::string fd = first_argument(call);
        switches += !previous.empty() && fd != previous;
        previous = fd;
    }
    CHECK(reads_with_data >= 20);
    CHECK(switches >= 10);
    bool zero_timeout = false;
    for (const Syscall& call : trace.calls_named("epoll_wait")) {
        zero_timeout = zero_timeout || call.args.substr(call.args.rfind(',')) == ", 0";
    }
    CHECK(zero_timeout);
    CHECK(summary_count(summary, "turns yielded") >= 18);
}

TEST_CASE("serves 50 active clients while 10000 idle connections are open") {
    constexpr int idle_count = 10000, active_count = 50;
    raise_descriptor_limit_or_skip(idle_count + 200);  // our ends of the connections
    StartOptions options;
    options.rlimit_nofile = idle_count + active_count + 100;  // the server's ends
    Server server = start_server(EPOLL_ET_SERVER, {"--quiet"}, options);

    std::vector<unique_fd> idle;
    idle.reserve(idle_count);
    for (int i = 0; i < idle_count; ++i) {
        idle.push_back(connect_to(server.port));
    }
    REQUIRE(eventually([&] { return resources_of(server.process.pid()).descriptors == idle_descriptors + idle_count; },
                       20s));
    std::vector<std::string> payloads;
    for (int i = 0; i < active_count; ++i) {
        payloads.push_back(random_bytes(64 * 1024, static_cast<std::uint32_t>(100 + i)));
    }
    const auto results = echo_concurrently(server.port, payloads, 4096);
    for (int i = 0; i < active_count; ++i) {
        INFO("active client " << i << ": error " << results[i].error);
        CHECK(results[i].received == payloads[i]);
    }
    // The idle ones were served all along: a few of them still echo.
    for (const int i : {0, idle_count / 2, idle_count - 1}) {
        CHECK(exchange(idle[i].get(), "idle " + std::to_string(i), {}, false).received == "idle " + std::to_string(i));
    }
    idle.clear();
    REQUIRE(eventually([&] { return resources_of(server.process.pid()).descriptors == idle_descriptors; }, 20s));
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == idle_count + active_count);
}
