// 02-nonblocking/server.cpp: a non-blocking echo server that polls every
// socket in one loop.
//
// The non-blocking I/O model (document 000 §2, document 004 "同步非阻塞 I/O",
// document 003 "非阻塞式I/O模型"): every socket has O_NONBLOCK, so a call that
// would have to sleep returns at once with EAGAIN (also spelled EWOULDBLOCK)
// instead. Phase 1 (wait for data) no longer blocks; the process asks again
// and again, "polling". Phase 2 (the copy) still happens inside recv().
//
// One thread serves every client, which is what document 004's TODO asks
// for: each round tries accept() once, then recv() and send() on every
// connection in turn, and counts the EAGAIN answers. With the default
// --interval-ms 0 the loop never sleeps: it answers at once and burns a CPU
// core even when nobody is connected. --interval-ms N sleeps N ms between
// rounds: almost no CPU, but up to N ms more latency. The README measures
// both.
//
// usage: server [PORT] [--host ADDR] [--quiet] [--interval-ms N]   (PORT 8002; 0: any free port)
//
// strace: strace -e trace=accept4,recvfrom,sendto ./build/02-nonblocking/server 0 --interval-ms 100
//   every round: accept4() = -1 EAGAIN, and recvfrom() = -1 EAGAIN on each
//   idle connection. (Without --interval-ms, strace prints these lines as
//   fast as it can.)

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/pending_output.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

struct Connection {
    unique_fd fd;
    std::string peer;
    PendingOutput pending;        // received, not yet sent back
    bool peer_finished = false;   // recv returned 0: send what is pending, then close
    bool closed = false;          // to be removed after this round
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t rounds = 0;
    std::uint64_t eagain = 0;  // "not yet" answers from accept, recv and send
};

// Tries accept4() until it says EAGAIN: there may be several clients queued,
// or none. SOCK_NONBLOCK makes the new connection non-blocking too.
void accept_new_clients(int listen_fd, DescriptorReserve& reserve, std::vector<Connection>& connections,
                        Counters& counters, const EventLog& log) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fd = reserve.accept_or_refuse(listen_fd, peer, log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ++counters.eagain;  // nobody is waiting to connect: not yet
            } else if (errno != EINTR && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        ++counters.connections;
        log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        connections.push_back(Connection{std::move(fd), format_address(peer), PendingOutput{}});
    }
}

// One visit to one connection: read what has arrived (if there is room to
// keep it), then send back what is pending. Never sleeps.
void serve(Connection& connection, Counters& counters, const EventLog& log) {
    std::array<std::byte, 64 * 1024> buffer;
    // A peer that does not read makes `pending` fill up; then we stop
    // reading from it until it has taken some bytes (room() > 0).
    const std::size_t room = std::min(buffer.size(), connection.pending.room());
    if (!connection.peer_finished && room > 0) {
        const ssize_t received = ::recv(connection.fd.get(), buffer.data(), room, 0);
        if (received > 0) {
            connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
        } else if (received == 0) {
            connection.peer_finished = true;  // end of file: finish sending, then close
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            ++counters.eagain;  // no data yet: phase 1 is not over, ask again next round
        } else if (errno != EINTR) {
            log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
            connection.closed = true;  // ECONNRESET and friends
            return;
        }
    }
    if (!connection.pending.empty()) {
        const auto result = connection.pending.flush_to(connection.fd.get());  // sends until EAGAIN
        connection.echoed += result.bytes_sent;
        counters.bytes_echoed += result.bytes_sent;
        if (result.status == PendingOutput::FlushStatus::would_block) {
            ++counters.eagain;  // the peer's buffers are full: the rest next round
        } else if (result.status == PendingOutput::FlushStatus::error) {
            log("send to %s: %s", connection.peer.c_str(), describe_failure("send", result.error).c_str());
            connection.closed = true;
            return;
        }
    }
    if (connection.peer_finished && connection.pending.empty()) {
        connection.closed = true;
    }
}

void sleep_ms(unsigned milliseconds) {
    timespec interval{static_cast<time_t>(milliseconds / 1000), static_cast<long>(milliseconds % 1000) * 1'000'000};
    ::nanosleep(&interval, nullptr);  // EINTR (a stop signal) just ends the nap early
}

}  // namespace

int main(int argc, char** argv) {
    unsigned interval_ms = 0;
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "Non-blocking echo server: one thread polls every socket in turn.", 8002,
        {{"--interval-ms", "N", "sleep N ms between rounds (default 0: never sleep)",
          [&interval_ms](std::string_view value) {
              const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), interval_ms);
              return error == std::errc{} && end == value.data() + value.size() && interval_ms <= 60'000;
          }}});
    const EventLog log(options.quiet);

    // The listening socket is non-blocking too: accept() with nobody
    // waiting returns EAGAIN instead of sleeping.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    install_stop_handlers();  // the loop never sleeps long: it sees the flag within a round
    install_status_handler();  // SIGUSR1: a status line, printed in the next round
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    std::vector<Connection> connections;
    Counters counters;
    Counters logged;  // what the last once-a-second log line said
    timespec last_log{};
    ::clock_gettime(CLOCK_MONOTONIC, &last_log);
    const auto print_counts = [&](void (*print)(std::initializer_list<Count>)) {
        print({{counters.connections, "connections"},
               {counters.bytes_echoed, "bytes echoed"},
               {counters.rounds, "rounds"},
               {counters.eagain, "EAGAIN returns"}});
    };
    while (!stop_requested()) {
        if (status_requested()) {
            print_counts(print_status);
        }
        ++counters.rounds;
        accept_new_clients(listen_fd.get(), reserve, connections, counters, log);
        for (Connection& connection : connections) {
            serve(connection, counters, log);
        }
        std::erase_if(connections, [&log](const Connection& connection) {
            if (connection.closed) {
                log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
                    static_cast<unsigned long long>(connection.echoed));
            }
            return connection.closed;  // erasing destroys its unique_fd: close()
        });

        // Once a second: how hard the loop worked for how little.
        timespec now{};
        ::clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > last_log.tv_sec && !log.quiet()) {
            log("%llu rounds, %llu EAGAIN returns in the last second, %zu connections",
                static_cast<unsigned long long>(counters.rounds - logged.rounds),
                static_cast<unsigned long long>(counters.eagain - logged.eagain), connections.size());
            logged = counters;
            last_log = now;
        }
        if (interval_ms > 0) {
            sleep_ms(interval_ms);
        }
    }

    connections.clear();  // closes every connection
    print_counts(print_summary);
    return 0;
}
