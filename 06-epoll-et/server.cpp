// 06-epoll-et/server.cpp: an echo server on epoll, edge-triggered (EPOLLET).
//
// epoll_wait reports a descriptor when something happens to it (data
// arrives, room to send appears), not while it is ready. So every descriptor
// is non-blocking and every handler goes on until EAGAIN: accept4() on the
// listening socket, recv() and send() on a connection. A connection reads at
// most --read-budget bytes per turn and then waits on `still_readable`, a
// ready list of our own. The rules, --short-read-drains and the --no-drain
// bug are explained in README.md.
//
// usage: server [PORT] [--host ADDR] [--quiet] [--read-budget BYTES] [--short-read-drains] [--no-drain]
//        (PORT 8006; 0: any free port)
//
// strace: strace -e trace=epoll_ctl,epoll_wait,accept4,recvfrom,sendto ./build/06-epoll-et/server 0
//   every EPOLL_CTL_ADD and EPOLL_CTL_MOD carries EPOLLET; accept4() and
//   each connection's recvfrom() run of calls end with -1 EAGAIN.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/errors.hpp"
#include "common/event_names.hpp"
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
    PendingOutput pending{};         // received, not yet sent back
    bool peer_finished = false;      // recv returned 0: send what is pending, then close
    bool unread_input = false;       // we stopped reading before EAGAIN: input may be waiting
    bool end_announced = false;      // an event said EPOLLRDHUP, EPOLLHUP or EPOLLERR: read to the end
    bool queued = false;             // on the still_readable queue
    bool asked_for_output = false;   // EPOLLOUT is in its interest list
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t epoll_wait_calls = 0;
    std::uint64_t events = 0;
    std::uint64_t turns_yielded = 0;  // reads stopped by the budget, resumed from still_readable

    // In the order the status and summary lines print them.
    [[nodiscard]] std::array<Count, 5> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed, "bytes echoed"},
                 {epoll_wait_calls, "epoll_wait calls"},
                 {events, "events"},
                 {turns_yielded, "turns yielded"}}};
    }
};

struct Settings {
    std::size_t read_budget = 256 * 1024;  // bytes per connection per turn
    bool drain = true;                     // false: --no-drain, the bug
    bool short_read_drains = false;        // --short-read-drains: a short recv ends the run, no EAGAIN call
};

// Everything the loop works on.
struct Server {
    int epoll_fd;
    Settings settings;
    const EventLog& log;
    std::unordered_map<int, Connection> connections{};  // elements never move: &Connection is data.ptr
    std::deque<Connection*> still_readable{};           // our own ready list: input the kernel will not report again
    Counters counters{};
};

constexpr std::uint32_t input_events = EPOLLIN | EPOLLRDHUP | EPOLLET;

// EPOLL_CTL_MOD when EPOLLOUT must be added or removed. Every MOD keeps
// EPOLLET. (A MOD also re-checks the descriptor: if it is ready now, an
// event is queued at once, as if an edge had happened.) False on failure.
bool ask_for_output(Server& server, Connection& connection, bool wanted) {
    if (connection.asked_for_output == wanted) {
        return true;
    }
    epoll_event event{};
    event.events = input_events | (wanted ? EPOLLOUT : 0u);
    event.data.ptr = &connection;
    if (::epoll_ctl(server.epoll_fd, EPOLL_CTL_MOD, connection.fd.get(), &event) == -1) {
        server.log("%s", describe_failure("epoll_ctl EPOLL_CTL_MOD", errno).c_str());
        return false;
    }
    connection.asked_for_output = wanted;
    return true;
}

// Puts a connection on still_readable if it has input we have not read and
// room to keep it. The kernel will not report that input again.
void queue_if_unread(Server& server, Connection& connection) {
    if (connection.unread_input && !connection.peer_finished && connection.pending.room() > 0 &&
        !connection.queued) {
        server.still_readable.push_back(&connection);
        connection.queued = true;
    }
}

// The listening socket had an edge: one or many clients are queued. Accept
// until EAGAIN; stopping earlier would strand the rest until the next
// client connects (document 000's note on ET).
void accept_new_clients(Server& server, int listen_fd, DescriptorReserve& reserve) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            if (!reserve.available()) {
                server.log("%s: clients stay queued", describe_failure("accept", errno).c_str());
                return;  // no spare descriptor to refuse them with (cannot happen unless ENFILE)
            }
            // Refuse the client with the spare descriptor (or serve it if
            // descriptors were freed), then go on: the others queued behind
            // it get no new edge either.
            fd = reserve.accept_or_refuse(listen_fd, peer, server.log, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (!fd && (errno == EMFILE || errno == ENFILE)) {
                continue;  // refused; each refusal takes one client off the queue
            }
        }
        if (!fd) {
            if (errno == ECONNABORTED || errno == EINTR) {
                continue;  // a client gave up while queued; try the next
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                // ENOBUFS, ENOMEM...: clients still queued wait for the next edge.
                server.log("%s", describe_failure("accept", errno).c_str());
            }
            return;  // EAGAIN: the queue is empty, the edge is consumed
        }
        const int number = fd.get();
        auto [position, inserted] =
            server.connections.emplace(number, Connection{.fd = std::move(fd), .peer = format_address(peer)});
        Connection& connection = position->second;
        epoll_event event{};
        event.events = input_events;
        event.data.ptr = &connection;
        if (::epoll_ctl(server.epoll_fd, EPOLL_CTL_ADD, number, &event) == -1) {
            server.log("%s: refused %s", describe_failure("epoll_ctl EPOLL_CTL_ADD", errno).c_str(),
                       connection.peer.c_str());
            server.connections.erase(position);
            continue;
        }
        ++server.counters.connections;
        server.log("accepted %s on fd %d", connection.peer.c_str(), number);
        // Data the client sent before the ADD raised its edge before we
        // were listening for it. epoll_ctl(ADD) checks the descriptor's
        // state and reports it if ready, so nothing is missed here.
    }
}

// send() until done or EAGAIN (02-nonblocking writes that loop out; here
// flush_and_count runs it); on EAGAIN, ask for EPOLLOUT (edge: "the peer
// has read, there is room now"). False: close the connection.
bool flush(Server& server, Connection& connection) {
    const PendingOutput::FlushStatus status =
        flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                        server.counters.bytes_echoed, server.log);
    if (status == PendingOutput::FlushStatus::error) {
        return false;
    }
    return ask_for_output(server, connection, status == PendingOutput::FlushStatus::would_block);
}

// Reads (phase 2) until EAGAIN, end of file, no room, or the budget is
// spent, sending each piece straight back. False: close the connection.
bool receive(Server& server, Connection& connection) {
    // Lab: recv until it says EAGAIN (the edge is used up) or 0 (end of file: peer_finished), appending
    // Lab: each piece to connection.pending and sending it back (flush). Stop early, with unread_input
    // Lab: left true, when pending has no room or the read budget is spent. Return false on an error.
    // Lab stub: std::array<std::byte, 4096> buffer;  // until then, the bug: one recv per event (README, "The bug")
    // Lab stub: const ssize_t received = ::recv(connection.fd.get(), buffer.data(), buffer.size(), 0);
    // Lab stub: connection.peer_finished = received == 0;
    // Lab stub: connection.pending.append(std::span(buffer).first(received > 0 ? std::size_t(received) : 0));
    // Lab stub: return (received >= 0 || errno == EAGAIN) && flush(server, connection);
    std::array<std::byte, 64 * 1024> buffer;
    // --no-drain: the bug. One read of at most 4096 bytes, whatever is left.
    std::size_t budget = server.settings.drain ? server.settings.read_budget : 4096;
    connection.unread_input = true;  // until a recv says EAGAIN or end of file
    while (budget > 0 && connection.pending.room() > 0) {
        const std::size_t size = std::min({buffer.size(), connection.pending.room(), budget});
        const ssize_t received = ::recv(connection.fd.get(), buffer.data(), size, 0);
        if (received > 0) {
            budget -= static_cast<std::size_t>(received);
            connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
            if (!connection.asked_for_output && !flush(server, connection)) {
                return false;  // (while EPOLLOUT is asked for, the peer is not taking more: just keep)
            }
            if (!server.settings.drain) {
                server.log("fd %d: read %zd bytes once (--no-drain), not reading again until a new edge",
                           connection.fd.get(), received);
                connection.unread_input = false;  // the bug: pretend that was all
                return true;
            }
            // --short-read-drains: TCP's recv returns less than asked only
            // when its receive queue is empty, and a byte arriving after
            // that makes a new edge. So a short read proves what EAGAIN
            // would, one system call earlier. Not once the peer's FIN may
            // be queued behind the data: no new edge would announce it.
            if (server.settings.short_read_drains && static_cast<std::size_t>(received) < size &&
                !connection.end_announced) {
                connection.unread_input = false;
                return true;
            }
            continue;
        }
        if (received == 0) {
            server.log("end of file from %s", connection.peer.c_str());
            connection.peer_finished = true;
            connection.unread_input = false;
            return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            connection.unread_input = false;  // drained: the next edge will tell us about more
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        server.log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
        return false;
    }
    if (budget == 0) {
        ++server.counters.turns_yielded;  // more may wait: a turn for the others first
    }
    return true;
    // Lab end.
}

// Acts on an event, or on a turn from still_readable (events == 0). With
// `read_now` false it only sends: a queued connection reads on its turn.
// False: close the connection.
bool serve(Server& server, Connection& connection, std::uint32_t events, bool read_now) {
    if (read_now && !connection.peer_finished) {
        if (connection.pending.room() == 0) {
            connection.unread_input = true;  // remember the edge; read once output drains
        } else if (!receive(server, connection)) {
            return false;
        }
    }
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0 && !connection.pending.empty()) {
        if (!flush(server, connection)) {
            return false;
        }
    }
    queue_if_unread(server, connection);  // budget spent, or room again after a flush
    return !(connection.peer_finished && connection.pending.empty());
}

void close_connection(Server& server, Connection& connection) {
    if (connection.queued) {
        std::erase(server.still_readable, &connection);
    }
    if (::epoll_ctl(server.epoll_fd, EPOLL_CTL_DEL, connection.fd.get(), nullptr) == -1) {
        server.log("%s", describe_failure("epoll_ctl EPOLL_CTL_DEL", errno).c_str());
    }
    server.log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
               static_cast<unsigned long long>(connection.echoed));
    server.connections.erase(connection.fd.get());
}

// PORT, --host and --quiet, and this chapter's options into `settings`.
ServerOptions parse_options_or_exit(int argc, char** argv, Settings& settings) {
    return parse_server_options_or_exit(
        argc, argv, "edge-triggered epoll echo server: every descriptor read and written until EAGAIN.", 8006,
        {{"--read-budget", "BYTES", "read at most BYTES per connection per turn (default 262144)",
          number(settings.read_budget, std::size_t{1}, std::numeric_limits<std::size_t>::max())},
         {"--short-read-drains", "", "end a run of reads at a short read too: one recv per message, no EAGAIN",
          [&settings](std::string_view) { return settings.short_read_drains = true; }},
         {"--no-drain", "", "the classic bug: read once per notification (at most 4096 bytes); clients stall",
          [&settings](std::string_view) {
              settings.drain = false;
              return true;
          }}});
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    const ServerOptions options = parse_options_or_exit(argc, argv, settings);
    const EventLog log(options.quiet);

    // Non-blocking: the accept loop ends with EAGAIN instead of sleeping.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    const unique_fd stop_fd = open_stop_signal_fd();  // SIGINT/SIGTERM as readable data
    if (!stop_fd) {
        return 1;
    }
    install_status_handler();  // SIGUSR1: an ordinary handler, as in 05
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd) {
        report_failure("epoll_create1 EPOLL_CLOEXEC", errno);
        return 1;
    }
    static char listening_marker, stop_marker;  // data.ptr of the two descriptors that are not connections
    for (auto [fd, marker, name] : {std::tuple{listen_fd.get(), &listening_marker, "listening socket"},
                                    std::tuple{stop_fd.get(), &stop_marker, "signalfd"}}) {
        epoll_event event{};
        event.events = EPOLLIN | EPOLLET;
        event.data.ptr = marker;
        if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, fd, &event) == -1) {
            report_failure(std::string("epoll_ctl EPOLL_CTL_ADD ") + name, errno);
            return 1;
        }
    }
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Server server{.epoll_fd = epoll_fd.get(), .settings = settings, .log = log};
    std::array<epoll_event, 128> events;
    bool stopping = false;
    while (!stopping) {
        if (status_requested()) {
            print_status(server.counters.list());
        }
        ++server.counters.epoll_wait_calls;
        // Sleep only when no connection is waiting for its turn: otherwise
        // just collect new events (timeout 0) and serve both.
        const int timeout = server.still_readable.empty() ? -1 : 0;
        const int ready_count = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), timeout);
        if (ready_count == -1) {
            if (errno == EINTR) {
                continue;  // SIGUSR1, or SIGSTOP/SIGCONT under a debugger; SIGINT/SIGTERM are blocked
            }
            report_failure("epoll_wait", errno);
            return 1;
        }
        server.counters.events += static_cast<std::uint64_t>(ready_count);
        // The connections queued before this round get one turn each, after
        // the new events. (Those queued during this round wait for the next.)
        std::size_t turns = server.still_readable.size();
        bool clients_waiting = false;
        for (const epoll_event& event : std::span(events).first(static_cast<std::size_t>(ready_count))) {
            if (event.data.ptr == &stop_marker) {
                stopping = true;
                continue;
            }
            if (event.data.ptr == &listening_marker) {
                clients_waiting = true;  // accepted last, after the turns below
                continue;
            }
            Connection& connection = *static_cast<Connection*>(event.data.ptr);
            if ((event.events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
                connection.end_announced = true;
            }
            // EPOLLHUP and EPOLLERR lead to a read too: the input queued
            // before them comes first, then recv's 0 or error (see 05).
            // A queued connection reads on its turn below, once per round.
            const bool read_now =
                (event.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 && !connection.queued;
            if (!serve(server, connection, event.events, read_now)) {
                close_connection(server, connection);
            }
        }
        while (turns-- > 0 && !server.still_readable.empty()) {
            Connection& connection = *server.still_readable.front();
            server.still_readable.pop_front();
            connection.queued = false;
            if (!serve(server, connection, 0, true)) {
                close_connection(server, connection);
            }
        }
        // New clients last, as in 05: once the whole array has been seen, a
        // stop signal anywhere in it (`stopping`) means nobody is accepted.
        // Waiting loses nothing: the accept loop still runs to EAGAIN, and
        // its epoll_ctl(ADD) reports what a new client has already sent.
        if (clients_waiting && !stopping) {
            accept_new_clients(server, listen_fd.get(), reserve);
        }
    }

    signalfd_siginfo signal_info{};
    if (::read(stop_fd.get(), &signal_info, sizeof signal_info) == sizeof signal_info) {
        log("SIG%s: stopping", ::sigabbrev_np(static_cast<int>(signal_info.ssi_signo)));
    }
    server.still_readable.clear();
    server.connections.clear();
    print_summary(server.counters.list());
    return 0;
}
