// The echo conformance suite: what CONTRACT.md promises of every TCP echo
// server, checked with real clients against the real program. A chapter
// registers a server with one line in tests/CMakeLists.txt:
//
//   add_echo_conformance(epoll_lt_server event_loop)

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/net.hpp"
#include "conformance/server_under_test.hpp"
#include "harness/harness.hpp"

using namespace harness;
using conformance::Model;
using conformance::server_under_test;

namespace {

// The server's own options under test, followed by `more`.
std::vector<std::string> arguments(std::vector<std::string> more = {}) {
    more.insert(more.begin(), server_under_test.options.begin(), server_under_test.options.end());
    return more;
}

bool uses_sigev_thread() { return server_under_test.sigev_thread; }

// Starts the server as CONTRACT.md says (`path 0 --quiet options...`, then
// its ready line), or, at the grader's core level, as the grader was given it.
Server start(const StartOptions& options = {}) {
    if (uses_sigev_thread()) {
        skip_if_sigev_thread_under_thread_sanitizer();
    }
    if (server_under_test.io_uring) {
        skip_unless_io_uring_available();
    }
    if (!server_under_test.contract) {
        std::vector<std::string> argv{server_under_test.path};
        argv.insert(argv.end(), server_under_test.options.begin(), server_under_test.options.end());
        // Its stderr goes to a temporary file: a server that floods it is
        // stopped at 64 MiB (EFBIG, or SIGXFSZ) instead of filling /tmp.
        StartOptions bounded = options;
        bounded.rlimit_fsize = bounded.rlimit_fsize > 0 ? bounded.rlimit_fsize : 64LL << 20;
        return start_command(argv, bounded);
    }
    return start_server(server_under_test.path, arguments({"--quiet"}), options);
}

// Stops the server with SIGTERM. With the contract: REQUIREs exit 0 and one
// summary line, and returns that line. At the core level: REQUIREs only that
// it ends within 10 s, and returns nullopt (there is no summary to check).
std::optional<std::string> finish(Server& server) {
    if (server_under_test.contract) {
        return stop_server(server);
    }
    const auto status = server.process.stop(SIGTERM, 10s);
    INFO("stderr:\n" << server.process.stderr_text());
    REQUIRE(status.has_value());  // it ended within 10 s of SIGTERM
    return std::nullopt;
}

// A case about what only CONTRACT.md promises (tagged [contract]) skips
// itself at the grader's core level.
void contract_only() {
    if (!server_under_test.contract) {
        skip_test("checks CONTRACT.md only (grade --level contract)");
    }
}

// The seed of a random payload: `n`, moved by grade --seed.
std::uint32_t seed(std::uint32_t n) { return n + server_under_test.seed; }

// Makes `fd` non-blocking and sends as much of `payload` as the buffers
// between us and the server take, without reading the echo.
void send_until_full(int fd, std::string_view payload) {
    REQUIRE(::fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    for (std::size_t sent = 0; sent < payload.size();) {
        const ssize_t n = ::send(fd, payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            return;  // EAGAIN: the buffers are full, which is what we wanted
        }
        sent += static_cast<std::size_t>(n);
    }
}

// The server closes a connection after it reads our EOF, a moment after we
// see its FIN: waits (with a deadline) for descriptors, threads (fewer are
// fine when `fewer_threads_ok`: idle pool threads exit) and children to
// come back to `before`, and checks that no zombie is left. (Under
// ThreadSanitizer, its own thread may have started since `before`.)
void check_back_to_baseline(pid_t pid, const Resources& before, bool fewer_threads_ok) {
    Resources after;
    const bool back_to_baseline = eventually([&] {
        after = resources_of(pid);
        const int most = before.threads + sanitizer_threads;
        const bool threads_back = fewer_threads_ok ? after.threads <= most
                                                   : after.threads >= before.threads && after.threads <= most;
        // Fewer descriptors are fine too: at the core level, the probe
        // connection of start_command() may still have been open in the
        // server when `before` was read. A leak shows as more.
        return after.descriptors <= before.descriptors && threads_back && after.children == 0;
    });
    INFO("descriptors " << before.descriptors << " -> " << after.descriptors << ", threads " << before.threads
                        << " -> " << after.threads << ", children " << after.children << " (zombies "
                        << after.zombies << ")");
    CHECK(back_to_baseline);
    CHECK(after.zombies == 0);
}

std::string program() {
    const std::string path = server_under_test.path;
    return path.substr(path.rfind('/') + 1);
}

}  // namespace

TEST_CASE("prints the ready line with the port the kernel chose", "[contract]") {
    contract_only();
    Server server = start();
    CHECK(server.ready_line == "listening on 127.0.0.1:" + std::to_string(server.port));
    finish(server);
}

TEST_CASE("echoes one message and closes the connection after the client's end of file") {
    Server server = start();
    const Exchange echo = echo_once(server.port, "hello\n");
    CHECK(echo.received == "hello\n");
    CHECK(echo.eof);
    finish(server);
}

TEST_CASE("echoes NUL bytes and every other byte value unchanged") {
    Server server = start();
    std::string payload("a\0b\0\0c\n", 7);
    for (int value = 0; value < 256; ++value) {
        payload += static_cast<char>(value);
    }
    const Exchange echo = echo_once(server.port, payload);
    CHECK(echo.error == 0);
    CHECK(echo.received.size() == payload.size());
    CHECK(echo.received == payload);
    finish(server);
}

TEST_CASE("echoes 1 MiB of random bytes sent in random chunks, in order") {
    Server server = start();
    const std::string payload = random_bytes(1 << 20, seed(1));
    unique_fd client = connect_to(server.port);
    REQUIRE(client.valid());
    const Exchange echo = exchange(client.get(), payload, random_chunks(payload.size(), 20000, seed(2)), true);
    CHECK_FALSE(echo.timed_out);
    CHECK(echo.error == 0);
    CHECK(echo.received.size() == payload.size());
    CHECK(echo.received == payload);  // byte for byte
    finish(server);
}

TEST_CASE("serves 50 concurrent clients sending 64 KiB each") {
    Server server = start();
    constexpr int client_count = 50;
    std::vector<std::string> payloads;
    for (int i = 0; i < client_count; ++i) {
        payloads.push_back(random_bytes(64 * 1024, seed(100 + static_cast<std::uint32_t>(i))));
    }
    const std::vector<Exchange> results = echo_concurrently(server.port, payloads, 8192);
    for (int i = 0; i < client_count; ++i) {
        INFO("client " << i);
        CHECK(results[i].error == 0);
        CHECK_FALSE(results[i].timed_out);
        CHECK(results[i].received == payloads[i]);
    }
    if (const auto summary = finish(server)) {
        CHECK(summary_count(*summary, "connections") == client_count);
        CHECK(summary_count(*summary, "bytes echoed") == client_count * 64 * 1024);
    }
}

TEST_CASE("a client that half-closes still gets every byte back") {
    Server server = start();
    const std::string payload = random_bytes(200 * 1000, seed(3));
    unique_fd client = connect_to(server.port);
    REQUIRE(client.valid());
    // Everything is sent and shutdown(SHUT_WR) follows before a single echo
    // is read: the server reads EOF while it still owes us bytes.
    REQUIRE(::send(client.get(), payload.data(), payload.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(payload.size()));
    REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
    const Exchange echo = exchange(client.get(), "", {}, true);
    CHECK(echo.eof);  // and then the server closed
    CHECK(echo.received.size() == payload.size());
    CHECK(echo.received == payload);
    finish(server);
}

// True if the process ignores `signal` (its bit in /proc/PID/status SigIgn).
bool ignores(pid_t pid, int signal) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("SigIgn:", 0) == 0) {
            return ((std::stoull(line.substr(7), nullptr, 16) >> (signal - 1)) & 1) != 0;
        }
    }
    FAIL("no SigIgn line in /proc/" << pid << "/status");
    return false;
}

// 01's fork server counts the children a signal killed (a SIGPIPE kills a
// child, not the server): none may be.
void check_no_child_killed(const std::optional<std::string>& summary) {
    if (const auto killed = summary ? summary_count(*summary, "killed by a signal") : std::nullopt) {
        CHECK(*killed == 0u);
    }
}

TEST_CASE("a client that resets the connection does not stop the server") {
    Server server = start();
    // The harness starts it with SIGPIPE at its default action (terminate),
    // and the server keeps it so: a send without MSG_NOSIGNAL to a peer
    // that has gone would kill it here. (10's server is the exception: the
    // writes are glibc's write() calls, which take no flags, and it ignores
    // SIGPIPE, see its README.)
    if (server_under_test.contract) {
        CHECK(ignores(server.process.pid(), SIGPIPE) == uses_sigev_thread());
    }
    {
        // Reset right after connecting.
        unique_fd client = connect_to(server.port);
        REQUIRE(client.valid());
        reset_connection(client);
    }
    {
        // Reset while the server is busy echoing 1 MiB we never read.
        unique_fd client = connect_to(server.port);
        REQUIRE(client.valid());
        send_until_full(client.get(), random_bytes(1 << 20, seed(4)));
        reset_connection(client);
    }
    const Exchange echo = echo_once(server.port, "still there?");
    CHECK(echo.received == "still there?");
    CHECK(server.process.running());
    check_no_child_killed(finish(server));
}

TEST_CASE("a client that never reads does not stop the others") {
    Server server = start();
    // The greedy client sends until every buffer between it and the server
    // is full, and never reads a byte of the echo.
    unique_fd greedy = connect_to(server.port);
    REQUIRE(greedy.valid());
    REQUIRE(::fcntl(greedy.get(), F_SETFL, O_NONBLOCK) == 0);
    const std::string block = random_bytes(64 * 1024, seed(5));
    std::size_t greedy_sent = 0;
    int full_in_a_row = 0;
    while (full_in_a_row < 20 && greedy_sent < (64u << 20)) {
        const ssize_t n = ::send(greedy.get(), block.data(), block.size(), MSG_NOSIGNAL);
        if (n > 0) {
            greedy_sent += static_cast<std::size_t>(n);
            full_in_a_row = 0;
        } else {
            REQUIRE(errno == EAGAIN);
            ++full_in_a_row;  // the server may still be draining: look again shortly
            pollfd writable{greedy.get(), POLLOUT, 0};
            ::poll(&writable, 1, 10);
        }
    }
    INFO("the greedy client got " << greedy_sent << " bytes in before the buffers filled");

    unique_fd other = connect_to(server.port);
    REQUIRE(other.valid());
    if (server_under_test.model == Model::one_at_a_time) {
        // The documented exception: one connection at a time. The other
        // client waits, unserved, until the greedy one leaves.
        REQUIRE(::send(other.get(), "next", 4, MSG_NOSIGNAL) == 4);
        CHECK_FALSE(readable_within(other.get(), 500ms));
        reset_connection(greedy);
        char back[4];
        REQUIRE(readable_within(other.get(), 10s));
        CHECK(::recv(other.get(), back, sizeof back, MSG_WAITALL) == 4);
        CHECK(std::string(back, 4) == "next");
    } else {
        const Exchange echo = exchange(other.get(), "not starved", {}, true, 5s);
        CHECK_FALSE(echo.timed_out);
        CHECK(echo.received == "not starved");
        reset_connection(greedy);
    }
    finish(server);
}

TEST_CASE("a client that sends 64 MiB and reads nothing for 2 s gets it all back, memory stays bounded", "[contract]") {
    contract_only();
    Server server = start();
    const Resources baseline = resources_of(server.process.pid());
    unique_fd greedy = connect_to(server.port);
    REQUIRE(greedy.valid());
    const std::string block = random_bytes(64 * 1024, seed(6));
    const std::size_t total = 64u << 20;
    // The sender blocks once every buffer is full; this thread is the
    // client that does not read, for 2 s, then reads everything.
    std::size_t sent = 0;
    std::thread sender([&] {
        while (sent < total) {
            const ssize_t n = ::send(greedy.get(), block.data(), std::min(block.size(), total - sent), MSG_NOSIGNAL);
            if (n <= 0) {
                return;
            }
            sent += static_cast<std::size_t>(n);
        }
    });
    long peak_kib = 0;
    int others_served = 0;
    const auto until = Clock::now() + 2s;  // the case: 2 s without reading
    while (Clock::now() < until) {
        peak_kib = std::max(peak_kib, resources_of(server.process.pid()).resident_kib);
        if (server_under_test.model != Model::one_at_a_time) {
            others_served += echo_once(server.port, "meanwhile", 2s).received == "meanwhile";
        } else {
            std::this_thread::sleep_for(20ms);  // paces the memory samples, it does not wait for anything
        }
    }
    const std::string back = receive_up_to(greedy.get(), total, 5s, 60s);
    sender.join();
    CHECK(sent == total);
    CHECK(back.size() == total);
    CHECK(back == repeated(block, total));
    // At most 4 MiB pending (CONTRACT.md), plus a few MiB: a fork child's
    // own pages, a thread's stack, allocator slack.
    INFO("resident " << baseline.resident_kib << " KiB before, at most " << peak_kib << " KiB while not reading");
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(peak_kib - baseline.resident_kib < 12 * 1024);
#endif  // (AddressSanitizer keeps freed memory in a quarantine of 256 MiB before reusing it: no bound holds)
    if (server_under_test.model != Model::one_at_a_time) {
        CHECK(others_served >= 3);  // round trips of other clients went on meanwhile
    }
    finish(server);
}

TEST_CASE("2000 sequential sessions leave descriptors, threads and children at their baseline") {
    Server server = start();
    // One session first: a lazily created resource (a thread pool, the
    // spare descriptor) belongs to the baseline.
    REQUIRE(echo_once(server.port, "first").received == "first");
    Resources before;
    REQUIRE(eventually([&] {
        before = resources_of(server.process.pid());
        return before.children == 0;
    }));
    for (int i = 0; i < 2000; ++i) {
        const std::string message = "session " + std::to_string(i);
        const Exchange echo = echo_once(server.port, message, 5s);
        REQUIRE(echo.received == message);
        REQUIRE(echo.eof);
    }
    check_back_to_baseline(server.process.pid(), before, true);
    if (const auto summary = finish(server)) {
        CHECK(summary_count(*summary, "connections") == 2001);
    }
}

TEST_CASE("a client that half-closes and then resets while the server writes does not stop it") {
    Server server = start();
    for (int round = 0; round < 3; ++round) {
        unique_fd client = connect_to(server.port);
        REQUIRE(client.valid());
        // 1 MiB in, then the FIN: the server is still sending the echo
        // back (we read none of it) when the RST comes.
        send_until_full(client.get(), random_bytes(1 << 20, seed(7 + static_cast<std::uint32_t>(round))));
        REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
        REQUIRE(readable_within(client.get(), 5s));  // the echo is coming back: the server is writing
        reset_connection(client);
    }
    const Exchange echo = echo_once(server.port, "still there?");
    CHECK(echo.received == "still there?");
    CHECK(server.process.running());
    check_no_child_killed(finish(server));
}

// The last "PROGRAM: status: ..." line the server printed, or "".
std::string last_status_line(const Server& server) {
    const std::string text = server.process.stderr_text();
    const std::size_t at = text.rfind(program() + ": status: ");
    return at == std::string::npos ? std::string() : text.substr(at, text.find('\n', at) - at);
}

TEST_CASE("a storm of SIGUSR1 status requests while it echoes 8 MiB loses no byte", "[contract]") {
    contract_only();
    Server server = start();
    const std::string payload = random_bytes(8 << 20, seed(31));
    unique_fd client = connect_to(server.port);
    REQUIRE(client.valid());
    // The storm: a SIGUSR1 every 20 us for as long as the echo runs. Each
    // one runs the server's handler and interrupts the call it is in
    // (accept, recv, send, epoll_wait ...) with EINTR, or is taken as an
    // event by the signal-driven servers.
    std::atomic<bool> echo_done{false};
    std::uint64_t signals_sent = 0;
    std::thread storm([&] {
        while (!echo_done) {
            server.process.signal(SIGUSR1);
            ++signals_sent;
            std::this_thread::sleep_for(20us);
        }
    });
    const Exchange echo = exchange(client.get(), payload, random_chunks(payload.size(), 60000, seed(32)), true);
    echo_done = true;
    storm.join();
    INFO(signals_sent << " SIGUSR1 sent during the echo");
    CHECK_FALSE(echo.timed_out);
    CHECK(echo.error == 0);
    CHECK(echo.received.size() == payload.size());
    CHECK(echo.received == payload);  // byte for byte
    CHECK(echo.eof);
    REQUIRE(server.process.running());
    CHECK(last_status_line(server) != "");

    // Idle now: one more request, and the status line shows every byte.
    client.reset();
    const bool counted = eventually([&] {
        server.process.signal(SIGUSR1);
        return summary_count(last_status_line(server), "bytes echoed") == payload.size();
    });
    INFO("last status line: " << last_status_line(server));
    CHECK(counted);
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "bytes echoed") == payload.size());
}

TEST_CASE("started with SIGINT, SIGTERM and SIGUSR1 blocked by its parent, it still answers them", "[contract]") {
    contract_only();
    if (uses_sigev_thread()) {
        skip_if_sigev_thread_under_thread_sanitizer();
    }
    // A signal mask is inherited across fork and exec: a shell script or a
    // supervisor may start the server with these blocked.
    StartOptions blocked;
    blocked.blocked_signals = {SIGINT, SIGTERM, SIGUSR1};
    Server server = start(blocked);
    CHECK(echo_once(server.port, "hello").received == "hello");
    const bool status_printed = eventually([&] {
        server.process.signal(SIGUSR1);
        return summary_count(last_status_line(server), "bytes echoed") == 5u;
    });
    CHECK(status_printed);
    const std::string summary = stop_server(server);  // SIGTERM: exit 0 with a summary, or the test fails
    CHECK(summary_count(summary, "bytes echoed") == 5u);
}

TEST_CASE("500 idle peers that sent one byte each do not hold up an active client") {
    raise_descriptor_limit_or_skip(2048);
    Server server = start();
    std::vector<unique_fd> slow;
    for (int i = 0; i < 500; ++i) {
        slow.push_back(connect_to(server.port));
        REQUIRE(slow.back().valid());
        REQUIRE(::send(slow.back().get(), "s", 1, MSG_NOSIGNAL) == 1);
    }
    unique_fd active = connect_to(server.port);
    REQUIRE(active.valid());
    // The documented exceptions: a server that serves one client at a time,
    // or a bounded pool (01's server_pool runs here with its default of 4
    // threads: a pool of 501 would pass, but would no longer be the bounded
    // pool its chapter teaches). The first slow peers hold the server or
    // every worker, each asleep in recv() for its peer's next byte; every
    // other client, the active one too, waits in the listen queue.
    if (server_under_test.model == Model::one_at_a_time || server_under_test.model == Model::bounded_pool) {
        char byte = 0;
        CHECK((readable_within(slow.front().get(), 5s) && ::recv(slow.front().get(), &byte, 1, 0) == 1));
        REQUIRE(::send(active.get(), "a", 1, MSG_NOSIGNAL) == 1);
        CHECK_FALSE(readable_within(active.get(), 500ms));
        slow.clear();
        active.reset();
        finish(server);
        return;
    }
    for (int i = 0; i < 20; ++i) {
        const std::string message = "active " + std::to_string(i);
        const Exchange echo = exchange(active.get(), message, {}, false, 5s);
        INFO("round trip " << i);
        REQUIRE_FALSE(echo.timed_out);
        REQUIRE(echo.received == message);
    }
    // And every slow peer got its byte back.
    int echoed = 0;
    for (unique_fd& peer : slow) {
        char byte = 0;
        echoed += readable_within(peer.get(), 5s) && ::recv(peer.get(), &byte, 1, 0) == 1 && byte == 's';
    }
    CHECK(echoed == 500);
    slow.clear();
    active.reset();
    finish(server);
}

TEST_CASE("leaves no descriptors, threads or child processes behind") {
    Server server = start();
    const Resources before = resources_of(server.process.pid());
    for (int i = 0; i < 20; ++i) {
        REQUIRE(echo_once(server.port, "sequential " + std::to_string(i)).eof);
    }
    std::vector<std::string> messages;
    for (int i = 0; i < 10; ++i) {
        messages.push_back("concurrent " + std::to_string(i));
    }
    const std::vector<Exchange> results = echo_concurrently(server.port, messages, 4);
    for (std::size_t i = 0; i < messages.size(); ++i) {
        CHECK(results[i].received == messages[i]);
    }
    check_back_to_baseline(server.process.pid(), before, false);
    if (const auto summary = finish(server)) {
        CHECK(summary_count(*summary, "connections") == 30);
    }
}

TEST_CASE("SIGTERM and SIGINT stop it with exit 0 and a summary, even with a client connected", "[contract]") {
    contract_only();
    const int signal = GENERATE(SIGTERM, SIGINT);
    Server server = start();
    for (const char* message : {"one", "two", "three"}) {
        REQUIRE(echo_once(server.port, message).received == message);
    }
    // A client that has been served once and then stays connected and
    // silent: the server (or its child or thread) sleeps waiting for it.
    unique_fd idle = connect_to(server.port);
    REQUIRE(idle.valid());
    REQUIRE(exchange(idle.get(), "!", {}, false).received == "!");
    const auto status = server.process.stop(signal, 10s);
    const std::string err = server.process.stderr_text();
    INFO("signal " << signal << ", stderr:\n" << err);
    REQUIRE(status.has_value());  // it stopped within the deadline
    CHECK(status->describe() == "exit 0");
    const auto at = err.find(program() + ": summary: ");
    REQUIRE(at != std::string::npos);
    const std::string summary = err.substr(at, err.find('\n', at) - at);
    CHECK(summary_count(summary, "bytes echoed") == 12);  // "one" + "two" + "three" + "!"
    // And the server closed our idle connection on its way out.
    CHECK(readable_within(idle.get(), 5s));
    char byte;
    CHECK(::recv(idle.get(), &byte, 1, 0) <= 0);
}

TEST_CASE("a port in use gives the contract's bind error and exit 1", "[contract]") {
    contract_only();
    const iomodels::unique_fd taken = iomodels::listen_tcp("127.0.0.1", 0);
    REQUIRE(taken.valid());
    const auto port = std::to_string(ntohs(iomodels::local_address(taken.get())->sin_port));
    std::vector<std::string> argv{server_under_test.path, port};
    for (const std::string& option : arguments()) {
        argv.push_back(option);
    }
    const Completed result = run(argv);
    CHECK(result.status.describe() == "exit 1");
    CHECK(result.out.empty());  // no ready line
    CHECK(result.err == program() + ": bind 127.0.0.1:" + port + ": Address already in use [EADDRINUSE]\n");
}

TEST_CASE("bad arguments give the usage on stderr and exit 2, --help gives it on stdout", "[contract]") {
    contract_only();
    const std::vector<std::vector<std::string>> bad = {
        {"70000"}, {"-1"}, {"port"}, {"1", "2"}, {"--bogus"}, {"--host"}, {"--host", "localhost.invalid"},
        {"--host", "300.1.1.1"}, {"--quiet=yes"},
    };
    for (const auto& args : bad) {
        std::vector<std::string> argv{server_under_test.path};
        argv.insert(argv.end(), args.begin(), args.end());
        const Completed result = run(argv);
        INFO("arguments: " << args[0] << (args.size() > 1 ? " " + args[1] : ""));
        CHECK(result.status.describe() == "exit 2");
        CHECK(result.out.empty());
        CHECK(result.err.find("usage: " + program()) != std::string::npos);
    }
    const Completed help = run({server_under_test.path, "--help"});
    CHECK(help.status.describe() == "exit 0");
    CHECK(help.out.find("usage: " + program()) != std::string::npos);
    CHECK(help.err.empty());
}

TEST_CASE("out of descriptors, it refuses clients cleanly, does not spin, and recovers", "[contract]") {
    contract_only();
    // 32 descriptors: stdin, stdout, stderr, the listening socket and some
    // more. 100 clients are more than it can hold.
    StartOptions limited;
    limited.rlimit_nofile = 32;
    if (uses_sigev_thread()) {
        skip_if_sigev_thread_under_thread_sanitizer();
    }
    Server server = start_server(server_under_test.path, arguments(), limited);
    const auto cpu_before = cpu_time(server.process.pid());
    const Resources baseline = resources_of(server.process.pid());

    std::vector<unique_fd> clients;
    for (int i = 0; i < 100; ++i) {
        clients.push_back(connect_to(server.port));  // the kernel completes the handshake
        REQUIRE(clients.back().valid());
        REQUIRE(::send(clients.back().get(), "x", 1, MSG_NOSIGNAL) == 1);
    }
    // Each client is echoed, refused (the server closed it: EOF or reset),
    // or still waiting when the deadline passes.
    int echoed = 0;
    int refused = 0;
    std::vector<bool> answered(clients.size(), false);
    const auto deadline = Clock::now() + 2s;
    while (Clock::now() < deadline && echoed + refused < static_cast<int>(clients.size())) {
        for (std::size_t i = 0; i < clients.size(); ++i) {
            if (!answered[i] && readable_within(clients[i].get(), 0ms)) {
                char byte = 0;
                const ssize_t got = ::recv(clients[i].get(), &byte, 1, 0);
                answered[i] = true;
                (got == 1 && byte == 'x' ? echoed : refused) += 1;
            }
        }
        readable_within(clients.front().get(), 10ms);  // a short pause between rounds
    }
    const int waiting = static_cast<int>(clients.size()) - echoed - refused;
    INFO("echoed " << echoed << ", refused " << refused << ", waiting " << waiting << "\nstderr:\n"
                   << server.process.stderr_text());
    CHECK(echoed >= 1);
    if (server_under_test.model == Model::one_at_a_time) {
        CHECK(echoed == 1);  // the others wait their turn in the queue
    } else if (server_under_test.model == Model::bounded_pool) {
        // A pool of N uses at most N descriptors for clients (a worker holds
        // its connection, or, asleep in accept4, the descriptor number that
        // call took as it began): the default of 4 never comes near 32. It
        // refuses nobody; the clients beyond the pool wait their turn in the
        // queue. (A pool too large for the limit does not start: its chapter
        // tests that.)
        CHECK(refused == 0);
        CHECK(waiting >= 1);
    } else {
        CHECK(waiting == 0);  // nobody is left hanging
    }
    if (server_under_test.model == Model::thread_per_connection || server_under_test.model == Model::event_loop ||
        server_under_test.model == Model::busy_polling) {
        CHECK(refused >= 1);  // it did run out, and said no
        CHECK(server.process.stderr_text().find("[EMFILE]") != std::string::npos);
    }
    // Refusing must not become a busy loop: in ~2 s of wall time the server
    // used far less than a second of CPU time. (A busy-polling server spins
    // whatever happens; its chapter's own tests measure that.)
    if (server_under_test.model != Model::busy_polling) {
        CHECK(cpu_time(server.process.pid()) - cpu_before < 500ms);
    }

    // Everybody leaves. Once the server has closed their connections (it may
    // be waiting for the next client with its spare descriptor closed, so
    // one fewer than at the start)...
    clients.clear();
    CHECK(eventually([&] { return resources_of(server.process.pid()).descriptors <= baseline.descriptors; }));
    const Exchange echo = echo_once(server.port, "room again", 10s);  // ...a new client is served
    CHECK(echo.received == "room again");
    finish(server);
}
