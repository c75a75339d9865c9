// 02-nonblocking/server.cpp: a non-blocking echo server that polls every
// socket in one loop.
//
// Every socket has O_NONBLOCK, so a call that would have to sleep returns at
// once with EAGAIN ("not yet") instead. One thread serves every client: each
// round tries accept4() until EAGAIN, then recv() and send() on every
// connection in turn, and counts the EAGAIN answers. By default the loop
// never sleeps and burns a CPU core; --interval-ms N naps N ms between rounds.
//
// usage: server [PORT] [--host ADDR] [--quiet] [--interval-ms N]   (PORT 8002; 0: any free port)
//
// strace: strace -e trace=accept4,recvfrom,sendto ./build/02-nonblocking/server 0 --interval-ms 100
//   every round: accept4() = -1 EAGAIN, and recvfrom() = -1 EAGAIN on each
//   idle connection; sendto() = -1 EAGAIN when a peer reads too slowly.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

// The contract's bound: while this much waits for a peer that does not
// read, the server stops reading from that peer.
constexpr std::size_t pending_limit = 4 * 1024 * 1024;

struct Connection {
    unique_fd fd;
    std::string peer;
    std::vector<std::byte> pending{};  // received, not yet sent back, in order
    bool peer_finished = false;        // recv returned 0: send what is pending, then close
    bool closed = false;               // to be removed after this round
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t rounds = 0;
    std::uint64_t eagain = 0;  // "not yet" answers from accept, recv and send

    [[nodiscard]] std::array<Count, 4> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed, "bytes echoed"},
                 {rounds, "rounds"},
                 {eagain, "EAGAIN returns"}}};
    }
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
            } else if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        ++counters.connections;
        log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        connections.push_back(Connection{.fd = std::move(fd), .peer = format_address(peer)});
    }
}

// Sends what is pending until all of it is sent or send() says EAGAIN.
// Never sleeps. What is sent leaves the front of `pending`; the rest waits,
// in order, for the next round: a non-blocking send can be partial, or take
// nothing, and dropping the rest would break the echo.
void send_pending(Connection& connection, Counters& counters, const EventLog& log) {
    // Lab: send() with MSG_NOSIGNAL until pending has all gone or send says EAGAIN (count it: the rest waits).
    // Lab: Erase what went from the front, add it to the echoed counts. EINTR: send again; other errors: closed.
    // Lab stub: static_cast<void>(counters), static_cast<void>(log);
    // Lab stub: connection.closed = true;  // until it is written: close instead of sending
    std::vector<std::byte>& pending = connection.pending;
    std::size_t sent_now = 0;
    while (sent_now < pending.size()) {
        // MSG_NOSIGNAL: a peer that has gone gives EPIPE, not a SIGPIPE that kills the server.
        const ssize_t sent =
            ::send(connection.fd.get(), pending.data() + sent_now, pending.size() - sent_now, MSG_NOSIGNAL);
        if (sent >= 0) {
            sent_now += static_cast<std::size_t>(sent);  // perhaps only part: send the rest at once
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            ++counters.eagain;  // the peer's buffers are full: not yet, the rest next round
            break;
        } else if (errno != EINTR) {  // EINTR: a signal came before any byte went: send again
            log("send to %s: %s", connection.peer.c_str(), describe_failure("send", errno).c_str());
            connection.closed = true;  // EPIPE, ECONNRESET: the peer has gone
            break;
        }
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(sent_now));
    connection.echoed += sent_now;
    counters.bytes_echoed += sent_now;
    // Lab end.
}

// One visit to one connection: read what has arrived (if there is room to
// keep it), then send back what is pending. Never sleeps.
void serve(Connection& connection, Counters& counters, const EventLog& log) {
    // Lab: unless the peer has finished, one recv() of at most the room below pending_limit, added to pending.
    // Lab: 0: peer_finished. EAGAIN: no data yet, count it, ask again next round (EINTR too). Else: log, closed.
    // Lab stub: connection.peer_finished = true;  // until it is written: as if each peer had finished at once
    std::array<std::byte, 64 * 1024> buffer;
    // A peer that does not read makes `pending` fill up; then we stop
    // reading from it until it has taken some bytes. (`pending` never
    // holds more than pending_limit: each recv asks for at most the room left.)
    const std::size_t room = std::min(buffer.size(), pending_limit - connection.pending.size());
    if (!connection.peer_finished && room > 0) {
        const ssize_t received = ::recv(connection.fd.get(), buffer.data(), room, 0);
        if (received > 0) {
            connection.pending.insert(connection.pending.end(), buffer.begin(), buffer.begin() + received);
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
    // Lab end.
    if (!connection.pending.empty()) {
        send_pending(connection, counters, log);
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
          number(interval_ms, 0u, 60'000u)}});
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
    if (::clock_gettime(CLOCK_MONOTONIC, &last_log) == -1) {
        report_failure("clock_gettime CLOCK_MONOTONIC", errno);
        return 1;
    }
    while (!stop_requested()) {
        if (status_requested()) {
            print_status(counters.list());
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
        if (::clock_gettime(CLOCK_MONOTONIC, &now) == 0 && now.tv_sec > last_log.tv_sec && !log.quiet()) {
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
    print_summary(counters.list());
    return 0;
}
