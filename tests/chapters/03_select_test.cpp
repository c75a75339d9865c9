// 03-select: what the chapter's README claims, checked on the real
// programs. (The echo contract itself is the conformance suite's job.)

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <optional>
#include <thread>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "common/net.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// One pselect6 line of strace, e.g.
//   pselect6(6, [3 5], [], NULL, NULL, {sigmask=[], sigsetsize=8}) = 1 (in [5])
// as the sets the program asked about and the sets that came back ready.
struct SelectCall {
    std::set<int> read;
    std::set<int> write;
    std::set<int> readable;
    std::set<int> writable;
    std::string wait_mask;  // "{sigmask=[]": the signal mask while pselect waits; "NULL": unchanged
};

std::set<int> numbers(const std::string& text) {
    std::set<int> result;
    std::istringstream stream(text);
    for (int fd = 0; stream >> fd;) {
        result.insert(fd);
    }
    return result;
}

// The descriptors listed after `label` ("in [" or "out [") in a result.
std::set<int> listed_after(const std::string& text, const std::string& label) {
    const auto at = text.find(label);
    if (at == std::string::npos) {
        return {};
    }
    const auto begin = at + label.size();
    return numbers(text.substr(begin, text.find(']', begin) - begin));
}

std::optional<SelectCall> parse_select(const Syscall& call) {
    // The sixth argument: NULL from select(), {sigmask=..., ...} from pselect().
    static const std::regex pattern(R"(^\d+, \[([0-9 ]*)\], \[([0-9 ]*)\], NULL, NULL, (NULL|\{sigmask=[^,]*))");
    std::smatch match;
    if (!std::regex_search(call.args, match, pattern)) {
        return std::nullopt;
    }
    return SelectCall{numbers(match[1]), numbers(match[2]), listed_after(call.result, "in ["),
                      listed_after(call.result, "out ["), match[3]};
}

// A port that was just free: bind it, note it, close it.
std::string free_port() {
    const iomodels::unique_fd probe = iomodels::listen_tcp("127.0.0.1", 0);
    REQUIRE(probe.valid());
    return std::to_string(ntohs(iomodels::local_address(probe.get())->sin_port));
}

// The test itself needs more than 1024 descriptors for the FD_SETSIZE test.
bool raise_own_descriptor_limit(rlim_t wanted) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == -1) {
        return false;
    }
    if (limit.rlim_cur >= wanted) {
        return true;
    }
    if (limit.rlim_max < wanted) {
        return false;
    }
    limit.rlim_cur = wanted;
    return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

// True if thread `tid` of this process sleeps in select: harness's
// sleeping_in() reads a process's wchan, a thread's is under
// /proc/self/task. do_select sleeps in poll_schedule_timeout (as poll
// does); a kernel built without that function apart shows do_select.
bool thread_sleeping_in_select(pid_t tid) {
    std::ifstream wchan("/proc/self/task/" + std::to_string(tid) + "/wchan");
    std::string where;
    wchan >> where;
    return where.find("poll_schedule_timeout") != std::string::npos || where.find("do_select") != std::string::npos;
}

}  // namespace

TEST_CASE("the server sleeps in pselect6, reads only what it reported, and accepts until EAGAIN") {
    skip_unless_strace_available();
    TraceFile trace_file("select-server");
    Server server = start_server(SELECT_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "rt_sigprocmask,pselect6,accept4,recvfrom,sendto"));
    for (const char* message : {"first", "second", "third"}) {
        REQUIRE(echo_once(server.port, message).received == message);
    }
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "connections") == 3);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto selects = trace.calls_named("pselect6");
    REQUIRE(selects.size() >= 3);
    CHECK(summary_count(summary, "select calls") == selects.size());  // the last one ended by SIGTERM (EINTR)
    // Outside pselect the stop signals are blocked; pselect unblocks them
    // while it waits (its mask, below), so none is lost between the
    // stop_requested() check and the wait.
    bool stop_signals_blocked = false;
    for (const Syscall& call : trace.calls_named("rt_sigprocmask")) {
        stop_signals_blocked = stop_signals_blocked || call.args.rfind("SIG_BLOCK, [INT TERM]", 0) == 0;
    }
    CHECK(stop_signals_blocked);
    std::optional<SelectCall> last_select;
    bool accepting = false;  // an accept4 succeeded and no EAGAIN followed yet
    for (const Syscall& call : trace.calls) {
        if (call.name == "pselect6") {
            CHECK_FALSE(accepting);  // accept4 was called again until EAGAIN before waiting
            last_select = parse_select(call);
            REQUIRE(last_select.has_value());
            CHECK(last_select->wait_mask == "{sigmask=[]");  // nothing blocked while it waits
            CHECK(last_select->write.empty());  // small echoes never wait: nobody asks for "writable"
        } else if (call.name == "accept4") {
            accepting = call.value() >= 0;
            if (!accepting) {
                CHECK(call.error() == "EAGAIN");
            }
        } else if (call.name == "recvfrom") {
            REQUIRE(last_select.has_value());
            const int fd = std::stoi(call.args);
            CHECK(last_select->readable.count(fd) == 1);  // recv only where pselect said "readable"
        }
    }
}

TEST_CASE("a peer that never reads is dropped from the read set and put in the write set") {
    skip_unless_strace_available();
    TraceFile trace_file("select-greedy");
    Server server = start_server(SELECT_SERVER, {}, {}, strace_command(trace_file.path(), "pselect6"));
    unique_fd greedy = connect_to(server.port);
    REQUIRE(greedy.valid());
    REQUIRE(::fcntl(greedy.get(), F_SETFL, O_NONBLOCK) == 0);
    // Send without reading until every buffer on the way is full.
    const std::string block = random_bytes(64 * 1024, 11);
    std::size_t sent = 0;
    for (int full_in_a_row = 0; full_in_a_row < 20 && sent < (64u << 20);) {
        const ssize_t n = ::send(greedy.get(), block.data(), block.size(), MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            full_in_a_row = 0;
        } else {
            REQUIRE(errno == EAGAIN);
            ++full_in_a_row;
            pollfd writable{greedy.get(), POLLOUT, 0};
            ::poll(&writable, 1, 10);
        }
    }
    REQUIRE(eventually([&] {
        return server.process.stderr_text().find("not reading until the peer reads") != std::string::npos;
    }));
    // Now read everything back: every byte arrives, and the server reads again.
    REQUIRE(::fcntl(greedy.get(), F_SETFL, 0) == 0);
    REQUIRE(::shutdown(greedy.get(), SHUT_WR) == 0);
    const Exchange echo = exchange(greedy.get(), "", {}, true);
    CHECK(echo.eof);
    CHECK(echo.received.size() == sent);
    CHECK(server.process.stderr_text().find("reading again") != std::string::npos);
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    const auto selects = trace.calls_named("pselect6");
    bool dropped = false;  // a round with the connection only in the write set
    for (const Syscall& call : selects) {
        const auto sets = parse_select(call);
        REQUIRE(sets.has_value());
        for (const int fd : sets->write) {
            dropped = dropped || sets->read.count(fd) == 0;
        }
    }
    CHECK(dropped);
    // Once everything was sent, nobody asks for "writable" any more.
    REQUIRE_FALSE(selects.empty());
    CHECK(parse_select(selects.back())->write.empty());
}

TEST_CASE("a descriptor >= FD_SETSIZE is refused, and the server goes on serving") {
    constexpr int clients_wanted = FD_SETSIZE + 6;  // more than an fd_set can hold
    REQUIRE(raise_own_descriptor_limit(clients_wanted + 64));
    StartOptions options;
    options.rlimit_nofile = 4096;  // EMFILE is not the limit here: FD_SETSIZE is
    Server server = start_server(SELECT_SERVER, {}, options);

    std::vector<unique_fd> clients;
    for (int i = 0; i < clients_wanted; ++i) {
        clients.push_back(connect_to(server.port));  // the kernel completes the handshake
        REQUIRE(clients.back().valid());
    }
    REQUIRE(eventually([&] { return server.process.stderr_text().find(">= FD_SETSIZE") != std::string::npos; }));
    const std::string err = server.process.stderr_text();
    INFO(err.substr(std::min(err.size(), err.find("refused"))));
    CHECK(err.find("refused 127.0.0.1:") != std::string::npos);
    CHECK(err.find("fd 1024 >= FD_SETSIZE (1024)") != std::string::npos);
    // The last client was refused: its connection ends (EOF) ...
    REQUIRE(readable_within(clients.back().get(), 5s));
    char byte = 0;
    CHECK(::recv(clients.back().get(), &byte, 1, 0) <= 0);
    // ... while the first one is served as before.
    CHECK(exchange(clients.front().get(), "still here", {}, false, 5s).received == "still here");

    // Everybody leaves; once the server has closed their descriptors (it
    // reads each end of file in its own time), the numbers are free again,
    // and a new client is served.
    clients.clear();
    INFO("the server still has " << resources_of(server.process.pid()).descriptors << " descriptors open");
    REQUIRE(eventually([&] { return resources_of(server.process.pid()).descriptors < 100; }, 10s));
    const Exchange echo = echo_once(server.port, "room again", 10s);
    CHECK(echo.received == "room again");
    const std::string summary = stop_server(server);
    const auto connections = summary_count(summary, "connections");
    const auto refused = summary_count(summary, "refused connections");
    REQUIRE(connections.has_value());
    REQUIRE(refused.has_value());
    CHECK(*refused >= 1);
    CHECK(*connections + *refused == clients_wanted + 1);
}

TEST_CASE("the client echoes a file on standard input byte for byte, NUL bytes included") {
    Server server = start_server(SELECT_SERVER, {"--quiet"});
    StartOptions input;
    input.stdin_data = random_bytes(3 * 1024 * 1024 + 17, 3);  // larger than every socket buffer
    const Completed client = run({SELECT_CLIENT, "--port", std::to_string(server.port)}, input);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out.size() == input.stdin_data.size());
    CHECK(client.out == input.stdin_data);
    CHECK(client.err == "client: 3145745 bytes sent, 3145745 bytes echoed back\n");
    stop_server(server);
}

TEST_CASE("the client waits for standard input and the socket in one select, then half-closes") {
    skip_unless_strace_available();
    Server server = start_server(SELECT_SERVER, {"--quiet"});
    TraceFile trace_file("select-client");
    std::vector<std::string> argv = strace_command(trace_file.path(), "pselect6,select,shutdown");
    for (const std::string& arg : {std::string(SELECT_CLIENT), std::string("--port"), std::to_string(server.port)}) {
        argv.push_back(arg);
    }
    StartOptions input;
    input.stdin_data = "one line\n";
    const Completed client = run(argv, input);
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out == "one line\n");
    stop_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    bool both = false;  // stdin (0) and the socket in the same read set
    for (const Syscall& call : trace.calls) {
        if (call.name == "pselect6" || call.name == "select") {
            const auto sets = parse_select(call);
            both = both || (sets && sets->read.count(0) == 1 && sets->read.size() == 2);
        }
    }
    CHECK(both);
    const auto shutdowns = trace.calls_named("shutdown");
    REQUIRE(shutdowns.size() == 1);
    CHECK(shutdowns[0].args.find("SHUT_WR") != std::string::npos);
}

TEST_CASE("the client sends its arguments as one line and prints the echo") {
    Server server = start_server(SELECT_SERVER, {"--quiet"});
    const Completed client = run({SELECT_CLIENT, "--port", std::to_string(server.port), "hello", "world"});
    CHECK(client.status.describe() == "exit 0");
    CHECK(client.out == "hello world\n");
    CHECK(client.err == "client: 12 bytes sent, 12 bytes echoed back\n");
    stop_server(server);
}

TEST_CASE("the client reports a refused connection and exits 1") {
    const std::string port = free_port();
    const Completed client = run({SELECT_CLIENT, "--port", port, "hello"});
    CHECK(client.status.describe() == "exit 1");
    CHECK(client.out.empty());
    CHECK(client.err == "client: connect 127.0.0.1:" + port + ": Connection refused [ECONNREFUSED]\n");
}

TEST_CASE("the client rejects bad arguments with exit 2") {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"--port"}, {"--port", "0"}, {"--port", "99999"}, {"--host", "nowhere"}, {"--verbose"}}) {
        std::vector<std::string> argv{SELECT_CLIENT};
        argv.insert(argv.end(), args.begin(), args.end());
        const Completed client = run(argv);
        INFO(args[0]);
        CHECK(client.status.describe() == "exit 2");
        CHECK(client.err.find("usage: client") != std::string::npos);
    }
}

TEST_CASE("the kernel's select takes descriptors past FD_SETSIZE: pselect6 on descriptor 1500 with a bitmap of 2048 "
          "bits") {
    // FD_SETSIZE (1024) is glibc's fd_set, not a limit of the kernel's
    // select (document 003 says it takes recompiling the kernel). A bitmap
    // of our own, and the raw system call, since glibc's macros stop at 1024.
    raise_descriptor_limit_or_skip(2048);
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    const int high = 1500;
    REQUIRE(::dup3(read_end.get(), high, O_CLOEXEC) == high);
    const unique_fd high_end(high);
    REQUIRE(::write(write_end.get(), "x", 1) == 1);

    constexpr std::size_t bits_per_word = 8 * sizeof(unsigned long);
    std::array<unsigned long, 2048 / bits_per_word> readable{};
    readable[high / bits_per_word] |= 1UL << (high % bits_per_word);
    timespec no_wait{0, 0};
    const long ready = ::syscall(SYS_pselect6, high + 1, readable.data(), nullptr, nullptr, &no_wait, nullptr);
    CHECK(ready == 1);
    CHECK((readable[high / bits_per_word] & (1UL << (high % bits_per_word))) != 0);
}

TEST_CASE("select writes the time left into its timeout and clears the sets it returns, while pselect leaves its timeout "
          "alone") {
    // Document 000 §3.1 and 003: Linux's select changes its timeval. Here
    // a pipe becomes readable after about 100 ms of a 2 s timeout.
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    ssize_t written = 0;
    const auto write_soon = [&] {
        return std::thread([&] {
            std::this_thread::sleep_for(100ms);  // the event select waits for, not a pause that hopes
            written = ::write(write_end.get(), "x", 1);  // checked after join: no CHECK in a thread
        });
    };
    SECTION("select: the timeval holds the time left, less than 2 s and more than 0") {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(read_end.get(), &readable);
        timeval timeout{2, 0};
        std::thread writer = write_soon();
        const int ready = ::select(read_end.get() + 1, &readable, nullptr, nullptr, &timeout);
        writer.join();
        CHECK(written == 1);
        CHECK(ready == 1);
        INFO("time left " << timeout.tv_sec << " s " << timeout.tv_usec << " µs");
        CHECK(timeout.tv_sec < 2);
        CHECK((timeout.tv_sec > 0 || timeout.tv_usec > 0));
    }
    SECTION("pselect: its timespec is const, and glibc hides the system call's update") {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(read_end.get(), &readable);
        const timespec timeout{2, 0};
        std::thread writer = write_soon();
        const int ready = ::pselect(read_end.get() + 1, &readable, nullptr, nullptr, &timeout, nullptr);
        writer.join();
        CHECK(written == 1);
        CHECK(ready == 1);
        CHECK(timeout.tv_sec == 2);
        CHECK(timeout.tv_nsec == 0);
    }
    SECTION("a timeout: select returns 0, and the set it was given comes back empty") {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(read_end.get(), &readable);  // nothing will be written
        timeval timeout{0, 20000};
        CHECK(::select(read_end.get() + 1, &readable, nullptr, nullptr, &timeout) == 0);
        CHECK_FALSE(FD_ISSET(read_end.get(), &readable));
        CHECK(timeout.tv_sec == 0);
        CHECK(timeout.tv_usec == 0);
    }
}

TEST_CASE("select counts a descriptor once per set it is in, poll once: readable and writable is 2 for select, 1 for "
          "poll") {
    // Document 003, select() and poll() return values. A connected socket
    // with a byte waiting and room to send is both readable and writable.
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    const unique_fd socket(pair[0]);
    const unique_fd peer(pair[1]);
    REQUIRE(::write(peer.get(), "x", 1) == 1);

    fd_set readable, writable;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_SET(socket.get(), &readable);
    FD_SET(socket.get(), &writable);
    timeval no_wait{0, 0};
    CHECK(::select(socket.get() + 1, &readable, &writable, nullptr, &no_wait) == 2);
    CHECK(FD_ISSET(socket.get(), &readable));
    CHECK(FD_ISSET(socket.get(), &writable));

    pollfd entry{socket.get(), POLLIN | POLLOUT, 0};
    CHECK(::poll(&entry, 1, 0) == 1);
    CHECK(entry.revents == (POLLIN | POLLOUT));
}

TEST_CASE("two threads wait in select on the same socket at once, each with its own fd_set, and one byte wakes both") {
    // Document 004 says select does not allow more than one thread to wait
    // on the same descriptor set. Linux has no such rule: each waiting
    // thread hangs its own entry on the socket's wait queue. What a thread
    // must not share is the fd_set itself, since select writes its result
    // into it.
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    const unique_fd socket(pair[0]);
    const unique_fd peer(pair[1]);
    struct Waiter {
        std::atomic<pid_t> tid{0};
        int ready = -1;  // select's result and the bit, checked after join: no CHECK in a thread
        bool readable = false;
        std::thread thread;
    };
    std::array<Waiter, 2> waiters;
    for (Waiter& waiter : waiters) {
        waiter.thread = std::thread([&socket, &waiter] {
            waiter.tid = static_cast<pid_t>(::gettid());
            fd_set readable;  // this thread's own
            FD_ZERO(&readable);
            FD_SET(socket.get(), &readable);
            timeval timeout{10, 0};  // only the byte ends the wait; a wake-up lost returns 0 instead of hanging
            waiter.ready = ::select(socket.get() + 1, &readable, nullptr, nullptr, &timeout);
            waiter.readable = FD_ISSET(socket.get(), &readable);
        });
    }
    // Both asleep in select before the byte is sent.
    const bool both_asleep = eventually([&] {
        return std::all_of(waiters.begin(), waiters.end(), [](const Waiter& waiter) {
            return waiter.tid != 0 && thread_sleeping_in_select(waiter.tid);
        });
    });
    const ssize_t written = ::write(peer.get(), "x", 1);  // sent in any case, so that the threads end
    for (Waiter& waiter : waiters) {
        waiter.thread.join();
    }
    REQUIRE(both_asleep);
    REQUIRE(written == 1);
    for (const Waiter& waiter : waiters) {
        CHECK(waiter.ready == 1);
        CHECK(waiter.readable);
    }
}
