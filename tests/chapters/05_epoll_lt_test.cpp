// 05-epoll-lt: what the chapter's README claims, checked on the real server.
// (The echo contract itself is the conformance suite's job.)

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

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

namespace {
void on_wake(int) {}
}  // namespace

TEST_CASE("SA_RESTART does not restart select, poll or epoll_wait: a handled signal makes them fail with EINTR") {
    // signal(7), "Interruption of system calls and library functions by
    // signal handlers": these waits are never restarted, whatever the
    // handler's flags. So every event loop must handle EINTR.
    struct sigaction action {};
    action.sa_handler = on_wake;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    struct sigaction before {};
    REQUIRE(::sigaction(SIGUSR2, &action, &before) == 0);
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);  // never written: the waits can only end by the signal
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    REQUIRE(epoll_fd.valid());
    epoll_event watch{};
    watch.events = EPOLLIN;
    REQUIRE(::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, read_end.get(), &watch) == 0);

    const pthread_t waiter = ::pthread_self();
    const auto interrupted = [&](const std::function<int()>& wait) {
        // SIGUSR2 to this thread every 10 ms until the wait has returned: one
        // that comes before the wait starts only runs the handler, the next
        // finds it asleep. Nothing else can end the wait within its 5 s.
        std::atomic<bool> returned{false};
        std::thread signaller([&] {
            while (!returned) {
                ::pthread_kill(waiter, SIGUSR2);
                std::this_thread::sleep_for(10ms);  // the pace of the signals, not a wait for anything
            }
        });
        errno = 0;
        const int result = wait();
        const int error = errno;
        returned = true;
        signaller.join();
        INFO("result " << result << ", errno " << error);
        return result == -1 && error == EINTR;
    };
    CHECK(interrupted([&] {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(read_end.get(), &readable);
        timeval timeout{5, 0};
        return ::select(read_end.get() + 1, &readable, nullptr, nullptr, &timeout);
    }));
    CHECK(interrupted([&] {
        pollfd watched{read_end.get(), POLLIN, 0};
        return ::poll(&watched, 1, 5000);
    }));
    CHECK(interrupted([&] {
        epoll_event event{};
        return ::epoll_wait(epoll_fd.get(), &event, 1, 5000);
    }));
    REQUIRE(::sigaction(SIGUSR2, &before, nullptr) == 0);
}

TEST_CASE("epoll_create's size is ignored: an instance made with epoll_create(1) reports 100 ready descriptors in one "
          "epoll_wait") {
    // Document 000 §3.3 says the instance watches at most `size`
    // descriptors (003 has it right: not a limit, ignored since Linux
    // 2.6.8). The kernel only checks that size > 0.
    const unique_fd epoll_fd(::epoll_create(1));
    REQUIRE(epoll_fd.valid());
    constexpr int watched = 100;
    std::vector<unique_fd> read_ends, write_ends;
    std::set<int> expected;
    for (int i = 0; i < watched; ++i) {
        int ends[2];
        REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
        read_ends.emplace_back(ends[0]);
        write_ends.emplace_back(ends[1]);
        REQUIRE(::write(ends[1], "x", 1) == 1);  // readable from now on
        epoll_event watch{};
        watch.events = EPOLLIN;
        watch.data.fd = ends[0];
        REQUIRE(::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, ends[0], &watch) == 0);
        expected.insert(ends[0]);
    }
    std::vector<epoll_event> events(128);
    const int ready = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), 0);
    CHECK(ready == watched);
    std::set<int> reported;
    for (int i = 0; i < std::max(ready, 0); ++i) {
        CHECK(events[i].events == EPOLLIN);
        reported.insert(events[i].data.fd);
    }
    CHECK(reported == expected);  // each of the 100 once
}
