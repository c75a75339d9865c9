// 09-aio-kernel, io_uring: the rings of uring_abi.hpp, and what
// uring_server's modes do, seen the ways the chapter shows it: strace
// (which goes quiet), /proc/PID/fdinfo of the ring (which shows the
// requests), and the server's own counts. Its echo contract, in four
// modes, is the conformance suite's job.

#include <arpa/inet.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"
#include "uring_abi.hpp"

using namespace harness;

namespace {

// The server's arguments: `first`, then the mode's option, if any ("": the default mode).
std::vector<std::string> with_mode(std::vector<std::string> first, const char* mode) {
    if (*mode != '\0') {
        first.emplace_back(mode);
    }
    return first;
}

// `clients` clients at once, each `rounds` round trips of 512 bytes.
// Returns the echoes that came back whole.
int ping_pong(std::uint16_t port, int clients, int rounds) {
    std::atomic<int> echoed{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            const unique_fd fd = connect_to(port);
            const std::string message = random_bytes(512, static_cast<std::uint32_t>(c));
            for (int r = 0; r < rounds && fd.valid(); ++r) {
                if (exchange(fd.get(), message, {}, false, 5s).received != message) {
                    return;
                }
                ++echoed;
            }
        });
    }
    for (std::thread& thread : threads) {
        thread.join();
    }
    return echoed.load();
}

// The last "status:" line on the server's stderr, once there are `count`.
std::string status_line(const Server& server, std::size_t count) {
    std::string last;
    const bool printed = eventually([&] {
        std::istringstream lines(server.process.stderr_text());
        std::size_t seen = 0;
        for (std::string line; std::getline(lines, line);) {
            if (line.find(": status: ") != std::string::npos) {
                ++seen;
                last = line;
            }
        }
        return seen >= count;
    });
    REQUIRE(printed);
    return last;
}

// The ring's descriptor in `pid` (its /proc/PID/fd link is "anon_inode:[io_uring]").
std::string ring_descriptor(pid_t pid) {
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ignored)) {
        if (std::filesystem::read_symlink(entry.path(), ignored).string() == "anon_inode:[io_uring]") {
            return entry.path().filename().string();
        }
    }
    return "";
}

// /proc/PID/fdinfo/RINGFD, and the requests waiting in it (its "PollList":
// "op=27" is a RECV waiting for data), counted by opcode.
struct RingInfo {
    std::string text;
    std::map<int, int> waiting;  // opcode -> requests
};

RingInfo ring_info(pid_t pid) {
    RingInfo info;
    std::ifstream file("/proc/" + std::to_string(pid) + "/fdinfo/" + ring_descriptor(pid));
    std::ostringstream text;
    text << file.rdbuf();
    info.text = text.str();
    std::istringstream lines(info.text);
    for (std::string line; std::getline(lines, line);) {
        if (const auto at = line.find("op="); at != std::string::npos && line.find("task_works") != std::string::npos) {
            ++info.waiting[std::stoi(line.substr(at + 3))];
        }
    }
    return info;
}

}  // namespace

TEST_CASE("uring_abi.hpp's Ring: SQEs published together come back as CQEs with their user_data, and a full "
          "SQ ring hands out no SQE") {
    skip_unless_io_uring_available();
    io_uring_params params{};
    std::string failed_call;
    Ring ring(8, params, failed_call);
    REQUIRE(ring);
    CHECK(params.sq_entries == 8);
    CHECK(params.cq_entries == 16);  // twice as many by default
    for (std::uint64_t i = 0; i < 8; ++i) {
        io_uring_sqe* sqe = ring.get_sqe();
        REQUIRE(sqe != nullptr);
        sqe->opcode = IORING_OP_NOP;
        sqe->user_data = 100 + i;
    }
    CHECK(ring.get_sqe() == nullptr);  // 8 handed out, none taken by the kernel yet
    const unsigned waiting = ring.publish();
    CHECK(waiting == 8);
    CHECK(io_uring_enter(ring.fd(), waiting, 8, IORING_ENTER_GETEVENTS, nullptr) == 8);
    CHECK(ring.publish() == 0);  // the kernel's SQ head caught up
    CHECK(ring.completions_ready() == 8);
    std::vector<std::uint64_t> seen;
    CHECK(ring.for_each_completion([&](const io_uring_cqe& cqe) {
        CHECK(cqe.res == 0);
        seen.push_back(cqe.user_data);
    }) == 8);
    CHECK(seen == std::vector<std::uint64_t>{100, 101, 102, 103, 104, 105, 106, 107});
    CHECK(ring.completions_ready() == 0);
    CHECK(ring.get_sqe() != nullptr);  // the SQ ring has room again
}

TEST_CASE("uring_abi.hpp's Ring: io_uring_setup's failure is reported with the call, errno kept") {
    io_uring_params params{};
    params.flags = ~0u;  // no kernel knows every flag: EINVAL
    std::string failed_call;
    errno = 0;
    Ring ring(8, params, failed_call);
    CHECK_FALSE(ring);
    CHECK(failed_call == "io_uring_setup 8");
    CHECK((errno == EINVAL || errno == EPERM || errno == ENOSYS));
}

TEST_CASE(
    "strace: uring_server by default and with --multishot: the ring copies: no accept4, recvfrom or sendto, "
    "and fewer io_uring_enter calls than echoes") {
    skip_unless_io_uring_available();
    skip_unless_strace_available();
    for (const char* mode : {"", "--multishot"}) {
        INFO("mode " << mode);
        TraceFile trace_file("uring-server");
        Server server = start_server(
            URING_SERVER, with_mode({"--quiet"}, mode), {},
            strace_command(trace_file.path(), "io_uring_setup,io_uring_enter,accept4,recvfrom,sendto,recvmsg,sendmsg"));
        const int echoes = ping_pong(server.port, 20, 50);
        CHECK(echoes == 1000);
        const std::string summary = stop_traced_server(server);

        const Trace trace = Trace::read(trace_file.path());
        INFO(summary);
        CHECK(trace.calls_named("io_uring_setup").size() == 1);
        for (const char* copy : {"accept4", "recvfrom", "sendto", "recvmsg", "sendmsg"}) {
            CHECK(trace.calls_named(copy).empty());
        }
        const auto enters = trace.calls_named("io_uring_enter");
        CHECK(enters.size() < static_cast<std::size_t>(echoes));
        CHECK(summary_count(summary, "io_uring_enter calls") == enters.size());
        REQUIRE_FALSE(enters.empty());
        CHECK(enters.front().args.find("IORING_ENTER_GETEVENTS") != std::string::npos);
        CHECK(summary_count(summary, "bytes echoed") == 1000u * 512u);
    }
}

TEST_CASE("strace: uring_server --poll: the ring only waits: the copies are recvfrom and sendto system calls") {
    skip_unless_io_uring_available();
    skip_unless_strace_available();
    TraceFile trace_file("uring-server-poll");
    Server server = start_server(URING_SERVER, {"--quiet", "--poll"}, {},
                                 strace_command(trace_file.path(), "io_uring_enter,accept4,recvfrom,sendto"));
    CHECK(ping_pong(server.port, 2, 20) == 40);
    stop_traced_server(server);
    const Trace trace = Trace::read(trace_file.path());
    CHECK(trace.calls_named("accept4").size() >= 2);
    CHECK(trace.calls_named("recvfrom").size() >= 40);
    CHECK(trace.calls_named("sendto").size() >= 40);
    CHECK_FALSE(trace.calls_named("io_uring_enter").empty());
}

TEST_CASE(
    "uring_server: /proc/PID/fdinfo of the ring shows the requests waiting: RECV and ACCEPT, or POLL_ADD "
    "with --poll") {
    skip_unless_io_uring_available();
    struct Expected {
        const char* mode;
        int opcode;  // of each idle connection's request
    };
    for (const Expected expected : {Expected{"", IORING_OP_RECV}, Expected{"--multishot", IORING_OP_RECV},
                                    Expected{"--poll", IORING_OP_POLL_ADD}}) {
        INFO("mode " << expected.mode);
        Server server = start_server(URING_SERVER, with_mode({"--quiet"}, expected.mode));
        std::vector<unique_fd> clients;
        for (int i = 0; i < 3; ++i) {
            clients.push_back(connect_to(server.port));
            REQUIRE(exchange(clients.back().get(), "hi", {}, false, 5s).received == "hi");
        }
        const int listening_opcode = expected.opcode == IORING_OP_POLL_ADD ? IORING_OP_POLL_ADD : IORING_OP_ACCEPT;
        RingInfo info;
        const bool seen = eventually([&] {
            info = ring_info(server.process.pid());
            std::map<int, int> wanted{{expected.opcode, 3}};
            wanted[listening_opcode] += 1;
            return info.waiting == wanted;
        });
        INFO(info.text);
        CHECK(seen);
        // Nothing left unsubmitted: the kernel's SQ head has caught up with our tail.
        CHECK(info.text.find("SQEs:\t0") != std::string::npos);
        clients.clear();
        stop_server(server);
    }
}

// The io_uring_enter calls the server made during 2000 round trips of one
// client, by its own count (SIGUSR1's status line before and after).
std::uint64_t enters_during_round_trips(const char* mode) {
    Server server = start_server(URING_SERVER, with_mode({}, mode));
    const unique_fd client = connect_to(server.port);
    REQUIRE(exchange(client.get(), "warm up", {}, false, 5s).received == "warm up");
    server.process.signal(SIGUSR1);
    const std::string before = status_line(server, 1);
    const std::string message = random_bytes(512, 3);
    int echoed = 0;
    for (int round = 0; round < 2000; ++round) {
        echoed += exchange(client.get(), message, {}, false, 5s).received == message;
    }
    server.process.signal(SIGUSR1);
    const std::string after = status_line(server, 2);
    CHECK(echoed == 2000);
    stop_server(server);
    INFO(before << "\n" << after);
    return *summary_count(after, "io_uring_enter calls") - *summary_count(before, "io_uring_enter calls");
}

TEST_CASE("uring_server --sqpoll: steady load makes (almost) no io_uring_enter calls") {
    skip_unless_io_uring_available();
    // Without SQPOLL, at least one per round trip: the server sleeps in
    // io_uring_enter for each message. With it, zero on a quiet machine:
    // both threads poll while echoes keep coming. A client descheduled for
    // longer than the 10 ms idle time (other tests running) lets the server
    // sleep once: the test allows one such pause in ten echoes.
    const std::uint64_t entering = enters_during_round_trips("");
    const std::uint64_t polling = enters_during_round_trips("--sqpoll");
    INFO("default: " << entering << " io_uring_enter calls; --sqpoll: " << polling);
    CHECK(entering >= 2000);
    CHECK(polling <= 200);
}

TEST_CASE("uring_server --sqpoll: SQEs published while the SQ thread sleeps are followed by "
          "io_uring_enter(IORING_ENTER_SQ_WAKEUP)") {
    skip_unless_io_uring_available();
    skip_unless_strace_available();
    // Every SQE here follows a CQE, which the SQ thread posted, so it is
    // awake for another 10 ms: the flag is rare. strace makes it certain by
    // holding each io_uring_enter 50 ms on its way out: meanwhile the
    // thread falls asleep, and the SEND prepared after it must wake it.
    TraceFile trace_file("uring-sqpoll-wakeup");
    std::vector<std::string> strace = strace_command(trace_file.path(), "io_uring_enter");
    strace.insert(strace.end(), {"-e", "inject=io_uring_enter:delay_exit=50000"});
    Server server = start_server(URING_SERVER, {"--quiet", "--sqpoll"}, {}, strace);
    const pid_t pid = traced_pid(server.process.pid());
    const unique_fd client = connect_to(server.port);
    for (const char* message : {"one", "two", "three"}) {
        // Each message finds the server asleep in io_uring_enter (after its
        // 10 ms of looking at the CQ ring), so that the call is delayed.
        REQUIRE(eventually([&] { return sleeping_in(pid, "io_cqring_wait"); }));
        REQUIRE(exchange(client.get(), message, {}, false, 5s).received == message);
    }
    const std::string summary = stop_traced_server(server);
    const Trace trace = Trace::read(trace_file.path());
    std::size_t woken = 0;
    for (const Syscall& call : trace.calls_named("io_uring_enter")) {
        woken += call.args.find("IORING_ENTER_SQ_WAKEUP") != std::string::npos;
    }
    INFO(summary << "\n" << trace.text);
    CHECK(woken >= 3);  // one for each echo's SEND at least
    CHECK(summary_count(summary, "SQ thread wakeups") == woken);
}

TEST_CASE(
    "uring_server --multishot: when the buffer ring runs dry, receives go on in buffers of their own, "
    "and every byte comes back") {
    skip_unless_io_uring_available();
    Server server = start_server(URING_SERVER, {"--quiet", "--multishot"});
    // 24 clients that do not read take 256 KiB of the ring each (their
    // share): 16 of them hold all 4 MiB.
    const std::string block = random_bytes(64 * 1024, 5);
    std::vector<unique_fd> greedy;
    std::vector<std::size_t> sent;
    for (int i = 0; i < 24; ++i) {
        greedy.push_back(connect_to(server.port));
        sent.push_back(send_without_reading(greedy.back().get(), block, 300ms, 1 << 20));
    }
    CHECK(echo_once(server.port, "still served", 5s).received == "still served");
    for (std::size_t i = 0; i < greedy.size(); ++i) {
        INFO("client " << i);
        CHECK(receive_up_to(greedy[i].get(), sent[i], 2s, 20s) == repeated(block, sent[i]));
    }
    greedy.clear();
    const std::string summary = stop_server(server);
    INFO(summary);
    CHECK(summary_count(summary, "receives without a free buffer") >= 1u);
}

TEST_CASE(
    "uring_server finishes short SENDs: a client with a small receive buffer gets every byte, and the "
    "summary counts them") {
    skip_unless_io_uring_available();
    for (const char* mode : {"", "--multishot"}) {
        INFO("mode " << mode);
        Server server = start_server(URING_SERVER, with_mode({"--quiet"}, mode));
        // A small receive buffer, set before connect (the window it
        // advertises cannot shrink later): the server's SENDs find little room.
        const unique_fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        const int small = 4096;
        REQUIRE(::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(server.port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(client.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
        const std::string payload = random_bytes(8 << 20, 7);
        const Exchange echo = exchange(client.get(), payload, random_chunks(payload.size(), 256 * 1024, 8), true, 30s);
        INFO("received " << echo.received.size() << " of " << payload.size() << " bytes, error " << echo.error
                          << (echo.timed_out ? ", timed out" : "") << (echo.eof ? ", end of file" : ""));
        REQUIRE(echo.received.size() == payload.size());
        CHECK((echo.received == payload));
        const std::string summary = stop_server(server);
        INFO(summary);
        CHECK(summary_count(summary, "short sends") >= 1u);
    }
}

TEST_CASE("uring_server: more completions than its CQ ring holds (--entries 8: 32 CQEs) lose no echo, and leave "
          "no spin behind") {
    skip_unless_io_uring_available();
    raise_descriptor_limit_or_skip(1024);
    for (const char* mode : {"", "--multishot", "--sqpoll"}) {
        INFO("mode " << mode);
        Server server = start_server(URING_SERVER, with_mode({"--quiet", "--entries", "8"}, mode));
        // 200 clients at once: 200 RECVs (and their SENDs) complete in bursts.
        CHECK(ping_pong(server.port, 200, 10) == 2000);
        // Then idle. CQEs left in the kernel's overflow list reach the ring
        // only through io_uring_enter(GETEVENTS): a --sqpoll loop that
        // waited for them in the ring alone would spin here for ever.
        const auto cpu_before = cpu_time(server.process.pid());
        std::this_thread::sleep_for(500ms);  // the idle window measured: it waits for nothing
        CHECK(cpu_time(server.process.pid()) - cpu_before < 150ms);
        const std::string summary = stop_server(server);
        INFO(summary);
        CHECK(summary_count(summary, "bytes echoed") == 2000u * 512u);
        CHECK(summary_count(summary, "CQ overflows") >= 1u);
    }
}

TEST_CASE(
    "uring_server: SIGTERM cancels the requests in flight, a SEND to a client that never reads among "
    "them, and exits 0") {
    skip_unless_io_uring_available();
    for (const char* mode : {"", "--multishot", "--poll", "--sqpoll"}) {
        INFO("mode " << mode);
        Server server = start_server(URING_SERVER, with_mode({}, mode));
        const unique_fd idle = connect_to(server.port);
        REQUIRE(exchange(idle.get(), "x", {}, false, 5s).received == "x");
        const unique_fd greedy = connect_to(server.port);
        send_without_reading(greedy.get(), random_bytes(64 * 1024, 9), 300ms, 64 << 20);
        const auto status = server.process.stop(SIGTERM, 3s);
        REQUIRE(status.has_value());
        CHECK(status->exited);
        CHECK(status->code == 0);
        const std::string err = server.process.stderr_text();
        INFO(err);
        CHECK(err.find("requests in flight cancelled") != std::string::npos);
        CHECK(err.find("summary: 2 connections") != std::string::npos);
    }
}

TEST_CASE(
    "uring_server with io_uring switched off: the contract's error line, a hint naming the sysctl and "
    "seccomp, exit 1") {
    const Completed denied = run({DENY_IO_URING, URING_SERVER, "0"});
    INFO(denied.err);
    CHECK(denied.status.exited);
    CHECK(denied.status.code == 1);
    CHECK(denied.err.find("uring_server: io_uring_setup 256: Operation not permitted [EPERM]\n") == 0);
    CHECK(denied.err.find("kernel.io_uring_disabled") != std::string::npos);
    CHECK(denied.err.find("seccomp") != std::string::npos);
    CHECK(denied.out.empty());  // no ready line: nothing listens
}
