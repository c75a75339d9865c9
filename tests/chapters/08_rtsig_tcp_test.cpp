// 08-rtsig-tcp: what the chapter's README claims, checked on both servers.
// (The echo contract itself is the conformance suite's job.)

#include <sys/socket.h>

#include <string>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

struct Variant {
    const char* path;
    const char* sleeps_in;  // where it waits for the next event (/proc/PID/wchan)
};
const std::vector<Variant> variants{{RTSIG_TCP_SERVER, "sigtimedwait"}, {RTSIG_TCP_SERVER_HANDLER, "pipe_read"}};

}  // namespace

TEST_CASE("TCP: a full real-time signal queue falls back to SIGIO, one poll resynchronises, nothing is lost") {
    for (const Variant& variant : variants) {
        INFO(variant.path);
        // RLIMIT_SIGPENDING 8, and 20 clients that send twice each while
        // the server is stopped: 40 events for at most 8 queued signals.
        StartOptions options;
        options.rlimit_sigpending = 8;
        Server server = start_server(variant.path, {}, options);
        const pid_t pid = server.process.pid();
        const int idle_descriptors = resources_of(pid).descriptors;
        std::vector<unique_fd> clients;
        for (int i = 0; i < 20; ++i) {
            clients.push_back(connect_to(server.port));
        }
        REQUIRE(eventually([&] { return resources_of(pid).descriptors == idle_descriptors + 20; }));
        REQUIRE(eventually([&] { return sleeping_in(pid, variant.sleeps_in); }));
        suspend_process(pid);
        std::vector<std::string> sent(clients.size());
        for (std::size_t i = 0; i < clients.size(); ++i) {
            for (const std::uint32_t part : {0u, 1u}) {
                const std::string bytes = random_bytes(1000, static_cast<std::uint32_t>(10 * i + part));
                REQUIRE(::send(clients[i].get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == 1000);
                sent[i] += bytes;
            }
        }
        resume_process(pid);
        for (std::size_t i = 0; i < clients.size(); ++i) {
            INFO("client " << i);
            CHECK(receive_up_to(clients[i].get(), sent[i].size(), 5s) == sent[i]);
        }
        clients.clear();
        REQUIRE(eventually([&] { return resources_of(pid).descriptors == idle_descriptors; }));
        const std::string summary = stop_server(server);
        const std::string log = server.process.stderr_text();
        INFO(log);
        CHECK(log.find("resynchronising") != std::string::npos);
        CHECK(summary_count(summary, "queue overflows (SIGIO)") >= 1);
        CHECK(summary_count(summary, "bytes echoed") == 20 * 2000);
    }
}

TEST_CASE("TCP: strace shows every socket armed with its flags kept, and sigwaitinfo naming the socket") {
    skip_unless_strace_available();
    TraceFile trace_file("rtsig-tcp");
    Server server = start_server(RTSIG_TCP_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "fcntl,rt_sigtimedwait,accept4,recvfrom"));
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return sleeping_in(server_pid, "sigtimedwait"); }));
    unique_fd client = connect_to(server.port);
    REQUIRE(exchange(client.get(), "hello", {}, false).received == "hello");
    client.reset();
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == 5; }));
    REQUIRE(eventually([&] { return sleeping_in(server_pid, "sigtimedwait"); }));
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    // Two sockets armed, in the same four calls: the listening socket (3)
    // and the connection (5; 4 is the spare descriptor).
    std::vector<std::string> armed;
    for (const Syscall& call : trace.calls_named("fcntl")) {
        armed.push_back(call.args + " = " + call.result);
    }
    REQUIRE(armed.size() == 8);
    const std::string pid = std::to_string(server_pid);
    CHECK(armed[0] == "3, F_SETOWN, " + pid + " = 0");
    CHECK(armed[1].find("3, F_SETSIG, SIGRT_") == 0);
    CHECK(armed[2] == "3, F_GETFL = 0x802 (flags O_RDWR|O_NONBLOCK)");
    CHECK((armed[3] == "3, F_SETFL, O_RDWR|O_NONBLOCK|FASYNC = 0" ||
           armed[3] == "3, F_SETFL, O_RDWR|O_NONBLOCK|O_ASYNC = 0"));
    CHECK(armed[4] == "5, F_SETOWN, " + pid + " = 0");
    CHECK(armed[6] == "5, F_GETFL = 0x802 (flags O_RDWR|O_NONBLOCK)");
    CHECK((armed[7] == "5, F_SETFL, O_RDWR|O_NONBLOCK|FASYNC = 0" ||
           armed[7] == "5, F_SETFL, O_RDWR|O_NONBLOCK|O_ASYNC = 0"));
    // The listening socket's signal led to accept4 until EAGAIN; a signal
    // for fd 5 to recvfrom. (strace 5 shows si_fd as "si_int": see 07.)
    bool listening_signal = false, connection_signal = false;
    for (const Syscall& call : trace.calls_named("rt_sigtimedwait")) {
        listening_signal = listening_signal || call.args.find("si_int=3,") != std::string::npos ||
                           call.args.find("si_fd=3") != std::string::npos;
        connection_signal = connection_signal || call.args.find("si_int=5,") != std::string::npos ||
                            call.args.find("si_fd=5") != std::string::npos;
    }
    CHECK(listening_signal);
    CHECK(connection_signal);
    const auto accepts = trace.calls_named("accept4");
    REQUIRE(accepts.size() >= 2);
    CHECK(accepts.back().error() == "EAGAIN");
    const auto reads = trace.calls_named("recvfrom");
    REQUIRE_FALSE(reads.empty());
    CHECK(reads.back().value() == 0);  // end of file, then closed
}

TEST_CASE("TCP: the handler only records events, and the main loop does the I/O") {
    skip_unless_strace_available();
    TraceFile trace_file("rtsig-tcp-handler");
    Server server = start_server(RTSIG_TCP_SERVER_HANDLER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "write,read,accept4,recvfrom,sendto"));
    const pid_t server_pid = traced_pid(server.process.pid());
    REQUIRE(eventually([&] { return sleeping_in(server_pid, "pipe_read"); }));
    {
        // Connected, accepted and armed first, so that the data raises a signal of its own.
        unique_fd client = connect_to(server.port);
        REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == 8; }));
        REQUIRE(eventually([&] { return sleeping_in(server_pid, "pipe_read"); }));
        REQUIRE(exchange(client.get(), "hello", {}, false).received == "hello");
    }
    REQUIRE(eventually([&] { return resources_of(server_pid).descriptors == 7; }));  // + the pipe's two ends
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    // Descriptors: the pipe's read end is 3, its write end 4. Each signal
    // makes the handler write one 16-byte record to fd 4: as many records
    // as signals. The main loop read()s them from fd 3 and does the
    // accept4, recvfrom and sendto.
    std::vector<Syscall> records;
    for (const Syscall& call : trace.calls_named("write")) {
        if (call.args.find("4, ") == 0) {
            records.push_back(call);
            CHECK(call.result == "16");
        }
    }
    CHECK(records.size() >= 3);  // the listening socket, the connection, SIGTERM
    CHECK(trace.signals.size() == records.size());
    // (A signal may come while the main loop is between two calls; the
    // handler then writes its record there, and the loop goes on.)
    CHECK(trace.calls_named("accept4").size() >= 2);
    CHECK(trace.calls_named("recvfrom").size() >= 2);
    INFO(summary);
    CHECK(summary_count(summary, "real-time signals") >= 2);
}
