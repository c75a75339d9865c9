// 01-blocking: what the chapter's README claims, checked on the real
// programs. (The echo contract itself is the conformance suite's job.)

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

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

// The threads of `pid` asleep in accept() (wchan inet_csk_accept), each with
// its count of voluntary context switches: how many times it has gone to
// sleep. A thread woken from accept() and put back to sleep counts one more.
std::map<pid_t, long> asleep_in_accept(pid_t pid) {
    std::map<pid_t, long> sleepers;
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
        const pid_t tid = std::stoi(task.path().filename().string());
        if (!sleeping_in(tid, "inet_csk_accept")) {
            continue;
        }
        std::ifstream status(task.path() / "status");
        for (std::string line; std::getline(status, line);) {
            if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
                sleepers[tid] = std::stol(line.substr(line.find(':') + 1));
            }
        }
    }
    return sleepers;
}

// A client of the server on `port` that has had `message` echoed: a worker
// is serving it now.
unique_fd served_client(std::uint16_t port, std::string_view message) {
    unique_fd client = connect_to(port);
    REQUIRE(client.valid());
    REQUIRE(exchange(client.get(), message, {}, false).received == message);
    return client;
}

// How many completed connections wait in the accept queue of the socket
// listening on 127.0.0.1:port: for a listening socket, /proc/net/tcp's
// rx_queue is that count (what `ss -tln` shows as Recv-Q). -1: not found.
int accept_queue_length(std::uint16_t port) {
    std::ifstream table("/proc/net/tcp");
    std::string line;
    std::getline(table, line);  // the header
    char wanted[32];
    std::snprintf(wanted, sizeof wanted, "0100007F:%04X", static_cast<unsigned>(port));
    while (std::getline(table, line)) {
        std::istringstream fields(line);
        std::string slot, local, remote, state, queues;
        fields >> slot >> local >> remote >> state >> queues;
        if (local == wanted && state == "0A") {  // 0A: TCP_LISTEN
            return std::stoi(queues.substr(queues.find(':') + 1), nullptr, 16);
        }
    }
    return -1;
}

}  // namespace

TEST_CASE("the fork server forks one child per connection and reaps each on SIGCHLD") {
    skip_unless_strace_available();
    TraceFile trace_file("fork-server");
    Server server = start_server(BLOCKING_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "accept4,clone,clone3,fork,recvfrom,wait4"));
    // Each child exits while the parent sleeps in accept4: the SIGCHLD
    // handler reaps it. The next client waits until it has, so that no exit
    // falls while the main loop's forget_reaped() looks (with SIGCHLD
    // blocked), which would reap it with wait4(pid) instead.
    const pid_t server_pid = traced_pid(server.process.pid());
    for (const char* message : {"first", "second", "third"}) {
        REQUIRE(echo_once(server.port, message).received == message);
        const bool reaped = eventually([&] {
            const Resources now = resources_of(server_pid);
            return now.children == 0 && now.zombies == 0;
        });
        INFO("children " << resources_of(server_pid).children << ", zombies " << resources_of(server_pid).zombies);
        REQUIRE(reaped);
    }
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
    // ... in the handler: wait4(-1, ...), any child, until none is left.
    // (The main loop's forget_reaped() asks for one pid at a time.)
    std::set<pid_t> reaped;
    for (const Syscall& call : trace.calls_named("wait4")) {
        if (call.value() > 0) {
            reaped.insert(static_cast<pid_t>(call.value()));
            CHECK(call.args.starts_with("-1, "));
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

TEST_CASE("the pool server makes its threads once, at start, and none per client") {
    skip_unless_strace_available();
    TraceFile trace_file("pool-server");
    Server server = start_server(BLOCKING_SERVER_POOL, {"--threads", "3", "--quiet"}, {},
                                 strace_command(trace_file.path(), "accept4,clone,clone3"));
    const pid_t server_pid = traced_pid(server.process.pid());
    CHECK(resources_of(server_pid).threads == 1 + 3 + sanitizer_threads);  // main and 3 workers, before any client
    for (int i = 0; i < 6; ++i) {
        const std::string message = "client " + std::to_string(i);
        REQUIRE(echo_once(server.port, message).received == message);
    }
    // Six connections open at once, twice the pool: three are served, three
    // wait in the queue, and no thread is made for any of them.
    std::vector<unique_fd> open;
    for (int i = 0; i < 3; ++i) {
        open.push_back(served_client(server.port, "held"));
    }
    for (int i = 0; i < 3; ++i) {
        open.push_back(connect_to(server.port));
        REQUIRE(open.back().valid());
    }
    REQUIRE(eventually([&] { return accept_queue_length(server.port) == 3; }));
    CHECK(resources_of(server_pid).threads == 1 + 3 + sanitizer_threads);
    open.clear();
    // The queue is first in, first out: once this client is echoed, the six
    // before it have been accepted.
    REQUIRE(echo_once(server.port, "last").received == "last");
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "threads started") == 3);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto threads = clones(trace, true);
    CHECK(threads.size() == 3 + sanitizer_threads);  // 13 connections, 3 threads
    CHECK(clones(trace, false).empty());
    for (const Syscall& clone : threads) {
        CHECK(clone.pid == server_pid);  // all made by main
    }
    std::size_t accepted = 0;
    for (const Syscall& call : trace.calls_named("accept4")) {
        CHECK(call.pid != server_pid);  // main never accepts: the workers do
        accepted += call.value() >= 0;
    }
    CHECK(accepted == 13);
}

TEST_CASE("with --threads 2, a third client connects at once but is echoed only after one of the first two leaves") {
    Server server = start_server(BLOCKING_SERVER_POOL, {"--threads", "2", "--quiet"});
    unique_fd first = served_client(server.port, "first");    // a worker serves it
    unique_fd second = served_client(server.port, "second");  // the other worker

    // connect() succeeds: the kernel completes the handshake and queues the
    // connection on the listening socket, whoever accepts it. Its bytes are
    // sent too, but both workers sleep in recv() for their clients.
    unique_fd third = connect_to(server.port);
    REQUIRE(third.valid());
    REQUIRE(::send(third.get(), "third", 5, MSG_NOSIGNAL) == 5);
    REQUIRE(eventually([&] { return accept_queue_length(server.port) == 1; }));  // connected, not accepted
    CHECK_FALSE(readable_within(third.get(), 500ms));
    CHECK(resources_of(server.process.pid()).threads == 1 + 2 + sanitizer_threads);  // no thread made for it

    first.reset();  // the first client leaves, its worker accepts again...
    REQUIRE(readable_within(third.get(), 10s));  // ...and takes the third
    char echo[5];
    CHECK(::recv(third.get(), echo, sizeof echo, MSG_WAITALL) == 5);
    CHECK(std::string(echo, 5) == "third");
    CHECK(accept_queue_length(server.port) == 0);
    CHECK(exchange(second.get(), "still served", {}, false).received == "still served");
    second.reset();
    third.reset();
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == 3);
}

TEST_CASE("each connection to the pool server returns exactly one worker's accept4, and none fails with EAGAIN") {
    skip_unless_strace_available();
    TraceFile trace_file("pool-accept");
    Server server = start_server(BLOCKING_SERVER_POOL, {"--quiet"}, {}, strace_command(trace_file.path(), "accept4"));
    const pid_t server_pid = traced_pid(server.process.pid());
    for (int i = 0; i < 8; ++i) {
        const std::string message = "client " + std::to_string(i);
        REQUIRE(echo_once(server.port, message).received == message);
    }
    const std::string summary = stop_traced_server(server);
    CHECK(summary_count(summary, "connections") == 8);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    std::size_t accepted = 0;
    std::set<pid_t> stopped_workers;
    for (const Syscall& call : trace.calls_named("accept4")) {
        CHECK(call.error() != "EAGAIN");  // no worker was woken to find the queue empty
        if (call.value() >= 0) {
            ++accepted;
        } else {
            CHECK(call.error() == "EINVAL");  // only at the stop: the listening socket was shut down
            stopped_workers.insert(call.pid);
        }
    }
    CHECK(accepted == 8);                  // one return per connection
    CHECK(stopped_workers.size() == 4);    // every worker was asleep in accept4 when the stop came
    CHECK(stopped_workers.count(server_pid) == 0);
}

TEST_CASE("a connection wakes exactly one of the pool server's workers asleep in accept4, not all of them") {
    Server server = start_server(BLOCKING_SERVER_POOL, {"--threads", "4", "--quiet"});
    const pid_t pid = server.process.pid();
    for (int round = 0; round < 3; ++round) {
        // Every worker asleep in accept4: nothing else can wake them (they
        // block every signal), so a count that moves means a wakeup.
        std::map<pid_t, long> before;
        REQUIRE(eventually([&] {
            before = asleep_in_accept(pid);
            return before.size() == 4;
        }));
        const std::string message = "round " + std::to_string(round);
        REQUIRE(echo_once(server.port, message).received == message);
        std::map<pid_t, long> after;
        REQUIRE(eventually([&] {  // the worker that served it is back in accept4
            after = asleep_in_accept(pid);
            return after.size() == 4;
        }));
        int woken = 0;
        for (const auto& [tid, switches] : before) {
            INFO("thread " << tid << ": " << switches << " -> " << after[tid] << " voluntary context switches");
            CHECK(after.count(tid) == 1);
            woken += after[tid] != switches;
        }
        INFO("round " << round);
        CHECK(woken == 1);
    }
    stop_server(server);
}

TEST_CASE("the pool server rejects a --threads value that is not a number from 1 to 1024, with exit 2") {
    for (const char* value : {"0", "1025", "-1", "four", ""}) {
        const Completed result = run({BLOCKING_SERVER_POOL, "0", "--threads", value});
        INFO("--threads '" << value << "'");
        CHECK(result.status.describe() == "exit 2");
        CHECK(result.out.empty());
        CHECK(result.err.rfind("server_pool: bad value '" + std::string(value) + "' for --threads N\nusage: server_pool", 0) ==
              0);
    }
    CHECK(run({BLOCKING_SERVER_POOL, "--help"}).out.find("--threads N") != std::string::npos);
}

TEST_CASE("a pool server needs a descriptor per worker: too large a pool for RLIMIT_NOFILE is refused at start") {
    // 16 descriptors: stdin, stdout, stderr, the listening socket, the spare,
    // and 11 for the workers (a worker asleep in accept4 holds the number
    // that call took).
    StartOptions limited;
    limited.rlimit_nofile = 16;
    const Completed too_many = run({BLOCKING_SERVER_POOL, "0", "--threads", "12"}, limited);
    CHECK(too_many.status.describe() == "exit 1");
    CHECK(too_many.out.empty());  // no ready line
    CHECK(too_many.err ==
          "server_pool: --threads 12 with RLIMIT_NOFILE 16 (a descriptor per worker, 5 for the server): "
          "Too many open files [EMFILE]\n");

    // 11 fit: 11 clients are served at once, the 12th waits its turn, and
    // nobody is refused.
    Server server = start_server(BLOCKING_SERVER_POOL, {"--threads", "11"}, limited);
    std::vector<unique_fd> clients;
    for (int i = 0; i < 11; ++i) {
        clients.push_back(served_client(server.port, "x"));
    }
    unique_fd twelfth = connect_to(server.port);
    REQUIRE(twelfth.valid());
    REQUIRE(::send(twelfth.get(), "y", 1, MSG_NOSIGNAL) == 1);
    REQUIRE(eventually([&] { return accept_queue_length(server.port) == 1; }));
    clients.front().reset();
    char echo = 0;
    REQUIRE(readable_within(twelfth.get(), 10s));
    CHECK(::recv(twelfth.get(), &echo, 1, 0) == 1);
    CHECK(echo == 'y');
    CHECK(server.process.stderr_text().find("EMFILE") == std::string::npos);
    clients.clear();
    twelfth.reset();
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == 12);
}

TEST_CASE("SIGTERM gives the pool server's clients in progress end of file and resets the ones still queued") {
    Server server = start_server(BLOCKING_SERVER_POOL, {"--threads", "2", "--quiet"});
    unique_fd first = served_client(server.port, "first");
    unique_fd second = served_client(server.port, "second");
    unique_fd queued = connect_to(server.port);
    REQUIRE(queued.valid());
    REQUIRE(::send(queued.get(), "queued", 6, MSG_NOSIGNAL) == 6);
    REQUIRE(eventually([&] { return accept_queue_length(server.port) == 1; }));

    const std::string summary = stop_server(server);  // exit 0 with a summary, every worker joined
    CHECK(summary_count(summary, "connections") == 2);
    char byte = 0;
    for (unique_fd* served : {&first, &second}) {
        REQUIRE(readable_within(served->get(), 5s));
        CHECK(::recv(served->get(), &byte, 1, 0) == 0);  // end of file: the worker's connection was shut down
    }
    REQUIRE(readable_within(queued.get(), 5s));
    const ssize_t got = ::recv(queued.get(), &byte, 1, 0);
    const int error = errno;
    CHECK(got == -1);
    CHECK(error == ECONNRESET);  // never accepted: reset as the listening socket was shut down
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
