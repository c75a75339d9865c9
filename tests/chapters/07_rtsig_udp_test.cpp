// 07-rtsig-udp: the UDP echo contract on both signal-driven servers, the
// real-time queue overflow and its SIGIO fallback, what strace shows, and
// the client's loss report.

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/net.hpp"
#include "common/server.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

// Both servers keep the same UDP contract; their tests run on each.
const std::vector<std::string> servers{RTSIG_UDP_SERVER, RTSIG_UDP_SERVER_SIGIO};

std::string name_of(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// What the I/O signal's handler of the "not blocked" test saw. The handler
// interrupts the test's own thread, the process's only one, so volatile
// sig_atomic_t is enough here.
volatile sig_atomic_t work_done = 0;           // the loop's progress, counted by the test
volatile sig_atomic_t work_done_at_signal = -1;  // its value when the handler ran
volatile sig_atomic_t signal_fd = -1;          // si_fd: which descriptor is ready
volatile sig_atomic_t signals_handled = 0;

void on_io_signal(int, siginfo_t* info, void*) {
    work_done_at_signal = work_done;
    signal_fd = info->si_fd;
    signals_handled = signals_handled + 1;
}

// Where each server sleeps between signals: asleep there, it has read its
// socket until EAGAIN and no signal is pending, so every echo is sent.
std::string wait_call_of(const std::string& path) {
    return path == RTSIG_UDP_SERVER ? "sigtimedwait" : "sigsuspend";
}

// Datagram `number` of burst client `client`: a header that names it, then
// 100 to 1499 pseudo-random bytes, NULs included.
std::string burst_datagram(int client, int number) {
    const std::string header = std::to_string(client) + "/" + std::to_string(number) + ":";
    return header + random_bytes(100 + static_cast<std::size_t>(number * 7 % 1400),
                                 static_cast<std::uint32_t>(client * 100000 + number));
}

// What one burst client saw. Counted in its thread, checked by the test.
struct BurstClient {
    unique_fd socket;
    int sent = 0;
    int echoed = 0;      // echoes identical to a datagram this client sent
    int wrong = 0;       // anything else: changed bytes, another's datagram
    int duplicates = 0;  // an echo of the same datagram twice
    std::uint64_t dropped = 0;  // echoes the kernel dropped at this socket (queue full)
};

}  // namespace

// Datagrams of every size, and 1000 from 10 clients at once, each to its
// sender: the UDP conformance suite (tests/grade/udp_cases.cpp), which
// tests/CMakeLists.txt runs against both servers.

TEST_CASE("UDP: a burst of 10000 datagrams from 20 clients: echoes are byte-identical and every loss is counted") {
    constexpr int client_count = 20, per_client = 500;
    for (const std::string& path : servers) {
        // Sent while the server is stopped (SIGSTOP), the burst overflows
        // its receive queue for certain; sent while it runs, it may.
        for (const bool stopped : {true, false}) {
            INFO(name_of(path) << (stopped ? ", burst sent while the server is stopped" : ", burst sent while it runs"));
            Server server = start_server(path, {"--quiet"});
            std::vector<BurstClient> clients(client_count);
            for (BurstClient& client : clients) {
                client.socket = udp_socket_to(server.port);
            }
            REQUIRE(eventually([&] { return sleeping_in(server.process.pid(), wait_call_of(path)); }));
            if (stopped) {
                suspend_process(server.process.pid());
            }
            std::vector<std::thread> senders;
            for (int c = 0; c < client_count; ++c) {
                senders.emplace_back([&clients, c] {
                    for (int n = 0; n < per_client; ++n) {
                        const std::string datagram = burst_datagram(c, n);
                        clients[c].sent += ::send(clients[c].socket.get(), datagram.data(), datagram.size(), 0) ==
                                           static_cast<ssize_t>(datagram.size());
                    }
                });
            }
            for (std::thread& sender : senders) {
                sender.join();
            }
            if (stopped) {
                resume_process(server.process.pid());
            }
            // Asleep again: the server has read everything it was given and
            // sent every echo it could. Now collect them.
            REQUIRE(eventually([&] { return sleeping_in(server.process.pid(), wait_call_of(path)); }, 20s));
            int sent = 0, echoed = 0, wrong = 0, duplicates = 0;
            std::uint64_t client_drops = 0;
            for (int c = 0; c < client_count; ++c) {
                BurstClient& client = clients[c];
                std::set<int> seen;
                std::string echo(65536, '\0');
                for (;;) {
                    const ssize_t got = ::recv(client.socket.get(), echo.data(), echo.size(), MSG_DONTWAIT);
                    if (got < 0) {
                        break;  // EAGAIN: this client's queue is empty
                    }
                    const std::string datagram = echo.substr(0, static_cast<std::size_t>(got));
                    const std::size_t slash = datagram.find('/');
                    const int number = slash == std::string::npos ? -1 : std::atoi(datagram.c_str() + slash + 1);
                    if (number < 0 || number >= per_client || datagram != burst_datagram(c, number)) {
                        ++client.wrong;
                    } else if (!seen.insert(number).second) {
                        ++client.duplicates;
                    } else {
                        ++client.echoed;
                    }
                }
                client.dropped = iomodels::datagrams_dropped(client.socket.get()).value_or(0);
                sent += client.sent;
                echoed += client.echoed;
                wrong += client.wrong;
                duplicates += client.duplicates;
                client_drops += client.dropped;
            }
            const std::string summary = stop_server(server);
            const std::uint64_t server_drops = summary_count(summary, "datagrams dropped on arrival").value_or(99999);
            const std::uint64_t echoes_lost = summary_count(summary, "echoes lost").value_or(99999);
            INFO(summary);
            INFO(sent << " sent, " << echoed << " echoes received, " << server_drops
                      << " dropped at the server's socket, " << echoes_lost << " echoes the server could not send, "
                      << client_drops << " echoes dropped at the clients' sockets");
            CHECK(sent == client_count * per_client);
            CHECK(wrong == 0);
            CHECK(duplicates == 0);
            CHECK(echoed > 0);
            // Nothing vanished: each datagram was echoed and received, or
            // its loss was counted where it happened.
            CHECK(static_cast<std::uint64_t>(sent) ==
                  static_cast<std::uint64_t>(echoed) + server_drops + echoes_lost + client_drops);
            CHECK(summary_count(summary, "datagrams echoed") == static_cast<std::uint64_t>(echoed) + client_drops);
            if (stopped) {
                CHECK(server_drops > 0);  // a stopped server's queue holds far fewer than 10000
            }
        }
    }
}

TEST_CASE("UDP: a storm of SIGUSR1 status requests loses no datagram") {
    for (const std::string& path : servers) {
        INFO(name_of(path));
        Server server = start_server(path, {"--quiet"});
        unique_fd client = udp_socket_to(server.port);
        std::atomic<bool> done{false};
        std::thread storm([&] {
            while (!done) {
                server.process.signal(SIGUSR1);
                std::this_thread::sleep_for(20us);
            }
        });
        int echoed = 0;
        for (int i = 0; i < 2000; ++i) {
            const std::string datagram = random_bytes(1 + static_cast<std::size_t>(i), static_cast<std::uint32_t>(i));
            echoed += udp_echo(client.get(), datagram) == datagram;
        }
        done = true;
        storm.join();
        CHECK(echoed == 2000);
        REQUIRE(server.process.running());
        const std::string summary = stop_server(server);
        CHECK(summary_count(summary, "datagrams echoed") == 2000);
        CHECK(server.process.stderr_text().find(name_of(path) + ": status: ") != std::string::npos);
    }
}

TEST_CASE("UDP: started with SIGINT, SIGTERM and SIGUSR1 blocked by its parent, SIGUSR1 and SIGINT still work") {
    for (const std::string& path : servers) {
        INFO(name_of(path));
        StartOptions blocked;
        blocked.blocked_signals = {SIGINT, SIGTERM, SIGUSR1};
        Server server = start_server(path, {"--quiet"}, blocked);
        unique_fd client = udp_socket_to(server.port);
        CHECK(udp_echo(client.get(), "hello") == "hello");
        const std::string status = name_of(path) + ": status: 1 datagrams echoed, 5 bytes echoed";
        CHECK(eventually([&] {
            server.process.signal(SIGUSR1);
            return server.process.stderr_text().find(status) != std::string::npos;
        }));
        const auto stopped = server.process.stop(SIGINT);
        REQUIRE(stopped.has_value());
        CHECK(stopped->describe() == "exit 0");
        CHECK(server.process.stderr_text().find(name_of(path) + ": summary: 1 datagrams echoed") != std::string::npos);
    }
}

TEST_CASE("UDP: a full real-time signal queue falls back to SIGIO, and no datagram is lost") {
    // RLIMIT_SIGPENDING 8: at most 8 signals queued. The server is stopped
    // while 200 datagrams arrive: 200 events, 8 queued signals, then the
    // kernel sends plain SIGIO instead.
    StartOptions options;
    options.rlimit_sigpending = 8;
    Server server = start_server(RTSIG_UDP_SERVER, {}, options);
    unique_fd client = udp_socket_to(server.port);
    REQUIRE(eventually([&] { return sleeping_in(server.process.pid(), "sigtimedwait"); }));
    suspend_process(server.process.pid());
    std::vector<std::string> sent;
    for (int i = 0; i < 200; ++i) {
        sent.push_back("datagram " + std::to_string(i));
        REQUIRE(::send(client.get(), sent.back().data(), sent.back().size(), 0) ==
                static_cast<ssize_t>(sent.back().size()));
    }
    resume_process(server.process.pid());
    for (const std::string& datagram : sent) {
        CHECK(receive_datagram(client.get(), 5s) == datagram);  // all of them, in order
    }
    const std::string summary = stop_server(server);
    const std::string log = server.process.stderr_text();
    INFO(log);
    // (RLIMIT_SIGPENDING counts the signals pending for all of the user's
    // processes, so other programs running meanwhile may leave fewer than
    // 8 places for ours.)
    CHECK(log.find("SIGIO (si_code SI_KERNEL): the real-time signal queue overflowed; ") != std::string::npos);
    CHECK(summary_count(summary, "queued signals flushed") <= 8);
    CHECK(summary_count(summary, "queue overflows (SIGIO)") >= 1);
    CHECK(summary_count(summary, "datagrams echoed") == 200);
}

TEST_CASE("UDP: plain SIGIO does not queue: many datagrams, one signal, one drain") {
    Server server = start_server(RTSIG_UDP_SERVER_SIGIO, {});
    unique_fd client = udp_socket_to(server.port);
    // In its loop (past the drain it does once at start), asleep.
    REQUIRE(eventually([&] { return sleeping_in(server.process.pid(), "sigsuspend"); }));
    suspend_process(server.process.pid());
    for (int i = 0; i < 50; ++i) {
        REQUIRE(::send(client.get(), "x", 1, 0) == 1);
    }
    resume_process(server.process.pid());
    for (int i = 0; i < 50; ++i) {
        REQUIRE(receive_datagram(client.get(), 5s) == "x");
    }
    const std::string summary = stop_server(server);
    const std::string log = server.process.stderr_text();
    INFO(log);
    // 50 arrivals while SIGIO was pending made one pending SIGIO: its
    // handler ran once, and the drain read all 50.
    CHECK(log.find("SIGIO: 50 datagrams echoed") != std::string::npos);
    CHECK(summary_count(summary, "SIGIO wakeups") == 1);
}

TEST_CASE("UDP: strace shows the socket armed with F_SETOWN, F_SETSIG and O_ASYNC, and sigwaitinfo taking the signal") {
    skip_unless_strace_available();
    TraceFile trace_file("rtsig-udp");
    Server server = start_server(RTSIG_UDP_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "fcntl,rt_sigtimedwait,recvfrom"));
    const pid_t server_pid = traced_pid(server.process.pid());
    // Past its first drain, waiting for a signal: each datagram now raises one.
    REQUIRE(eventually([&] { return sleeping_in(server_pid, "sigtimedwait"); }));
    unique_fd client = udp_socket_to(server.port);
    for (const char* datagram : {"hello", "again"}) {
        REQUIRE(udp_echo(client.get(), datagram) == datagram);
        // Its signal taken and the server asleep again (a signal still
        // queued would otherwise come after SIGTERM: lower numbers first).
        REQUIRE(eventually([&] { return sleeping_in(server_pid, "sigtimedwait"); }));
    }
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto fcntls = trace.calls_named("fcntl");
    REQUIRE(fcntls.size() == 4);
    CHECK(fcntls[0].args == "3, F_SETOWN, " + std::to_string(server_pid));  // the server's own pid, not pid + 1
    CHECK(fcntls[1].args.find("3, F_SETSIG, SIGRT_") == 0);
    CHECK(fcntls[2].args == "3, F_GETFL");
    CHECK(fcntls[2].result.find("O_RDWR") != std::string::npos);
    // F_SETFL keeps what F_GETFL returned (O_RDWR) and adds the two flags.
    // (strace calls O_ASYNC by its old name, FASYNC.)
    CHECK((fcntls[3].args == "3, F_SETFL, O_RDWR|O_NONBLOCK|FASYNC" ||
           fcntls[3].args == "3, F_SETFL, O_RDWR|O_NONBLOCK|O_ASYNC"));
    // Each datagram: rt_sigtimedwait (sigwaitinfo) returns the I/O signal,
    // whose siginfo names the socket, then recvfrom until EAGAIN. strace 5
    // does not know that POLL_IN (si_code 1) on a real-time signal means a
    // sigpoll siginfo: it prints si_band as "si_pid=65" (POLLIN|POLLRDNORM)
    // and si_fd as "si_int=3".
    const std::string io_signal = trace.calls_named("fcntl")[1].args.substr(std::string("3, F_SETSIG, ").size());
    int io_signals = 0;
    for (const Syscall& call : trace.calls_named("rt_sigtimedwait")) {
        if (call.args.find("si_signo=" + io_signal + ",") != std::string::npos) {
            ++io_signals;
            CHECK(call.result.find("(" + io_signal + ")") != std::string::npos);
            CHECK((call.args.find("si_fd=3") != std::string::npos || call.args.find("si_int=3,") != std::string::npos));
        }
    }
    CHECK(io_signals == 2);
    const auto reads = trace.calls_named("recvfrom");
    REQUIRE_FALSE(reads.empty());
    CHECK(reads.front().error() == "EAGAIN");  // the read right after arming: nothing yet
    CHECK(reads.back().error() == "EAGAIN");
}

TEST_CASE("UDP client: each datagram's echo is printed, and with no server it reports the loss and exits 1") {
    Server server = start_server(RTSIG_UDP_SERVER, {"--quiet"});
    const std::string port = std::to_string(server.port);
    const Completed ok = run({RTSIG_UDP_CLIENT, "--port", port, "one", "two words", ""});
    CHECK(ok.status.describe() == "exit 0");
    CHECK(ok.out == "one\ntwo words\n\n");
    CHECK(ok.err.find("3 datagrams sent, 3 echoed, 0 lost") != std::string::npos);

    StartOptions lines;
    lines.stdin_data = "first line\nsecond line\n";
    CHECK(run({RTSIG_UDP_CLIENT, "--port", port}, lines).out == "first line\nsecond line\n");

    // A stopped server does not answer: the client waits --timeout-ms, then says so.
    suspend_process(server.process.pid());
    const Completed silent = run({RTSIG_UDP_CLIENT, "--port", port, "--timeout-ms", "200", "anyone?"});
    resume_process(server.process.pid());
    CHECK(silent.status.describe() == "exit 1");
    CHECK(silent.err.find("datagram 1 (7 bytes): no echo within 200 ms: lost") != std::string::npos);
    stop_server(server);

    // Nobody on the port at all: the ICMP "port unreachable" is ECONNREFUSED.
    const Completed refused = run({RTSIG_UDP_CLIENT, "--port", port, "hello"});
    CHECK(refused.status.describe() == "exit 1");
    CHECK(refused.err.find("[ECONNREFUSED]") != std::string::npos);
    CHECK(refused.err.find("1 datagrams sent, 0 echoed, 1 lost") != std::string::npos);
}

TEST_CASE("UDP: a port in use gives the bind error and exit 1, bad arguments exit 2") {
    Server server = start_server(RTSIG_UDP_SERVER, {"--quiet"});
    for (const std::string& path : servers) {
        INFO(name_of(path));
        const Completed taken = run({path, std::to_string(server.port)});
        CHECK(taken.status.describe() == "exit 1");
        CHECK(taken.err == name_of(path) + ": bind udp 127.0.0.1:" + std::to_string(server.port) +
                               ": Address already in use [EADDRINUSE]\n");
        for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
                 {"70000"}, {"port"}, {"--bogus"}, {"--host", "300.1.1.1"}, {"--quiet=yes"}}) {
            std::vector<std::string> argv{path};
            argv.insert(argv.end(), bad.begin(), bad.end());
            const Completed result = run(argv);
            INFO(bad.front() << ": " << result.err);
            CHECK(result.status.describe() == "exit 2");
            CHECK(result.out.empty());
            CHECK(result.err.find("usage: " + name_of(path)) != std::string::npos);
        }
        const Completed help = run({path, "--help"});
        CHECK(help.status.describe() == "exit 0");
        CHECK(help.out.find("usage: " + name_of(path)) != std::string::npos);
    }
    CHECK(run({RTSIG_UDP_CLIENT, "--timeout-ms", "0"}).status.describe() == "exit 2");
    stop_server(server);
}

TEST_CASE("O_ASYNC works on a pipe and a pseudo-terminal too: a write queues the real-time signal with si_fd and "
          "POLL_IN") {
    // Document 000 §4 says signal-driven I/O works on sockets only. This
    // thread arms a pipe's read end and a pty's master as 07's server arms
    // its socket (owner: this thread, F_SETSIG, O_ASYNC), writes to the
    // other end, and takes the signal with sigtimedwait.
    const int signal_number = SIGRTMIN + 1;
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, signal_number);
    sigset_t before;
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &blocked, &before) == 0);

    const auto arm = [&](int fd) {
        const f_owner_ex owner{F_OWNER_TID, static_cast<pid_t>(::gettid())};
        REQUIRE(::fcntl(fd, F_SETOWN_EX, &owner) == 0);
        REQUIRE(::fcntl(fd, F_SETSIG, signal_number) == 0);
        const int flags = ::fcntl(fd, F_GETFL);
        REQUIRE(flags != -1);
        REQUIRE(::fcntl(fd, F_SETFL, flags | O_ASYNC | O_NONBLOCK) == 0);
    };
    const auto take_signal = [&](int expected_fd) {
        siginfo_t info{};
        const timespec timeout{5, 0};
        const int taken = ::sigtimedwait(&blocked, &info, &timeout);
        CHECK(taken == signal_number);
        CHECK(info.si_fd == expected_fd);
        CHECK(info.si_code == POLL_IN);
    };

    SECTION("a pipe") {
        int ends[2];
        REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
        const unique_fd read_end(ends[0]);
        const unique_fd write_end(ends[1]);
        arm(read_end.get());
        REQUIRE(::write(write_end.get(), "x", 1) == 1);
        take_signal(read_end.get());
    }
    SECTION("a pseudo-terminal") {
        const unique_fd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
        REQUIRE(master.valid());
        REQUIRE(::grantpt(master.get()) == 0);
        REQUIRE(::unlockpt(master.get()) == 0);
        const unique_fd terminal(::open(::ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
        REQUIRE(terminal.valid());
        arm(master.get());
        REQUIRE(::write(terminal.get(), "x\n", 2) == 2);
        take_signal(master.get());
    }
    // One write may raise the signal more than once (the pipe signals as
    // it wakes its readers and again when the write ends): what is still
    // queued goes, before the signal is unblocked and its default action,
    // to end the process, could run.
    iomodels::discard_pending(signal_number);
    REQUIRE(::pthread_sigmask(SIG_SETMASK, &before, nullptr) == 0);
}

TEST_CASE("signal-driven I/O does not block the process: the I/O signal's handler runs in the middle of a loop of work, "
          "which then goes on to its end") {
    // Documents 002 and 003: while it waits for data the process is not
    // blocked. This thread arms a UDP socket (owner: this process, F_SETSIG,
    // O_ASYNC), counts to `end`, sends itself a datagram a quarter of the
    // way, and counts on. The kernel interrupts the loop to run the handler.
    const int io_signal = SIGRTMIN + 2;
    sigset_t mask;
    REQUIRE(::pthread_sigmask(SIG_SETMASK, nullptr, &mask) == 0);
    REQUIRE_FALSE(::sigismember(&mask, io_signal));  // delivered as it comes, not left pending

    const unique_fd socket = iomodels::bind_udp("127.0.0.1", 0);
    REQUIRE(socket.valid());
    const auto address = iomodels::local_address(socket.get());
    REQUIRE(address.has_value());
    const unique_fd sender = udp_socket_to(ntohs(address->sin_port));

    struct sigaction action {};
    action.sa_sigaction = on_io_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO;
    struct sigaction before {};
    REQUIRE(::sigaction(io_signal, &action, &before) == 0);
    REQUIRE(::fcntl(socket.get(), F_SETOWN, ::getpid()) == 0);
    REQUIRE(::fcntl(socket.get(), F_SETSIG, io_signal) == 0);
    const int flags = ::fcntl(socket.get(), F_GETFL);  // first: F_SETFL replaces them all
    REQUIRE(flags != -1);
    REQUIRE(::fcntl(socket.get(), F_SETFL, flags | O_ASYNC | O_NONBLOCK) == 0);

    constexpr sig_atomic_t end = 20'000'000;
    constexpr sig_atomic_t send_at = end / 4;
    signals_handled = 0;
    ssize_t sent = 0;
    work_done = 0;
    while (work_done < end) {
        if (work_done == send_at) {
            sent = ::send(sender.get(), "ping", 4, 0);
        }
        work_done = work_done + 1;
    }
    const sig_atomic_t finished = work_done;
    // The handler only noted the signal: the datagram still waits for its
    // recv (phase 2 is the program's).
    char datagram[16];
    const ssize_t received = ::recv(socket.get(), datagram, sizeof datagram, 0);

    REQUIRE(::fcntl(socket.get(), F_SETFL, flags) == 0);  // disarmed before the default action is back
    REQUIRE(::sigaction(io_signal, &before, nullptr) == 0);
    CHECK(sent == 4);
    REQUIRE(signals_handled >= 1);
    CHECK(signal_fd == socket.get());
    INFO("the handler ran at " << work_done_at_signal << " of " << end << ", the datagram was sent at " << send_at);
    CHECK(work_done_at_signal >= send_at);  // in the loop, once the datagram was sent...
    CHECK(work_done_at_signal < end);       // ...and before the loop's end
    CHECK(finished == end);
    CHECK(received == 4);
}
