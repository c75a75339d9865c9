// 05-epoll-lt/server.cpp: an echo server on epoll, level-triggered (the
// default mode).
//
// epoll_ctl() edits an interest list kept in the kernel, only when something
// changes; epoll_wait() sleeps (phase 1: wait for data) until some of the
// watched sockets are ready, and returns only those. Level-triggered: data
// left unread is reported again by the next epoll_wait, as poll would report
// it. Phase 2 (copy data) is recv() on non-blocking sockets, as in 03 and 04.
// SIGINT and SIGTERM arrive through a signalfd in the interest list.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8005; 0: any free port)
//
// strace -e trace=epoll_create1,epoll_ctl,epoll_wait,accept4,recvfrom,sendto,close ./build/05-epoll-lt/server 0
//   epoll_ctl(ADD) once per connection (no EPOLLET: level-triggered); each
//   epoll_wait() returns only the ready entries, with the data.u64 the server
//   gave them (the address of its Connection); EPOLL_CTL_DEL right before close().
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
#include <span>
#include <string>
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
    PendingOutput pending{};       // received, not yet sent back
    bool peer_finished = false;    // recv returned 0: send what is pending, then close
    std::uint32_t registered = 0;  // the events the interest list has for it now
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t epoll_wait_calls = 0;
    std::uint64_t events = 0;

    // In the order the summary and the status line print them.
    [[nodiscard]] std::array<Count, 4> list() const {
        return {{{connections, "connections"}, {bytes_echoed, "bytes echoed"},
                 {epoll_wait_calls, "epoll_wait calls"}, {events, "events"}}};
    }
};

// The events to ask for, given a connection's state (compare 04's interest()).
std::uint32_t interest(const Connection& connection) {
    std::uint32_t events = 0;
    // Read only while there is room for what is read (a peer that does not
    // read its echo fills `pending`), and not after end of file: a
    // half-closed socket stays readable (recv returns 0) for ever, and in
    // level-triggered mode that would be reported by every epoll_wait.
    if (!connection.peer_finished && connection.pending.room() > 0) {
        // EPOLLRDHUP: the peer shut down its writing side (FIN). Like
        // POLLRDHUP in 04 it names a half-close; it is handled like EPOLLIN
        // (read until recv returns 0), since data may still be queued.
        events |= EPOLLIN | EPOLLRDHUP;
    }
    if (!connection.pending.empty()) {
        events |= EPOLLOUT;  // only while bytes wait that send() could not take
    }
    return events;  // EPOLLERR and EPOLLHUP are always reported, asked or not
}

// Brings the interest list in line with the connection's state: one
// EPOLL_CTL_MOD, only when the events change (a MOD is a system call; most
// rounds change nothing). False if epoll_ctl failed.
bool update_interest(int epoll_fd, Connection& connection, const EventLog& log) {
    const std::uint32_t wanted = interest(connection);
    // Lab: if `wanted` differs from connection.registered, EPOLL_CTL_MOD the socket to it (data.ptr again: a MOD
    // Lab: replaces the whole event) and remember it; log when EPOLLIN comes or goes. False if epoll_ctl fails.
    // Lab stub: static_cast<void>(epoll_fd), static_cast<void>(wanted), static_cast<void>(log);
    // Lab stub: return true;
    if (wanted == connection.registered) {
        return true;
    }
    epoll_event event{};
    event.events = wanted;
    event.data.ptr = &connection;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, connection.fd.get(), &event) == -1) {
        log("%s", describe_failure("epoll_ctl EPOLL_CTL_MOD", errno).c_str());
        return false;
    }
    if (((wanted ^ connection.registered) & EPOLLIN) != 0 && !connection.peer_finished) {
        log((wanted & EPOLLIN) != 0 ? "fd %d: %zu bytes pending, reading again"
                                    : "fd %d: %zu bytes pending, not reading until the peer reads",
            connection.fd.get(), connection.pending.size());
    }
    connection.registered = wanted;
    return true;
    // Lab end.
}

// The listening socket is readable: accept until accept4() says EAGAIN,
// adding each connection to the interest list. (Level-triggered, accepting
// one per wake-up as document 000's template does would also work, at the
// cost of one epoll_wait per client; in 06-epoll-et it would not.)
void accept_new_clients(int epoll_fd, int listen_fd, DescriptorReserve& reserve,
                        std::unordered_map<int, Connection>& connections, Counters& counters,
                        const EventLog& log) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            // Out of descriptors: refuse this client with the spare
            // descriptor (logged with [EMFILE]), or serve it if some were
            // freed. Without this, the listening socket would stay readable
            // and every epoll_wait would report it at once: a busy loop.
            fd = reserve.accept_or_refuse(listen_fd, peer, log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            // EAGAIN: nobody else is waiting, the expected end of this loop.
            // ECONNABORTED (a client gave up while queued), EINTR: harmless too.
            // EMFILE/ENFILE: one refused; level-triggered, the next one is
            // reported again.
            if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        const int number = fd.get();
        // unordered_map never moves its elements, so the address of a
        // Connection is stable for its whole life: it goes into data.ptr.
        auto [position, inserted] =
            connections.emplace(number, Connection{.fd = std::move(fd), .peer = format_address(peer)});
        Connection& connection = position->second;
        // Lab: EPOLL_CTL_ADD the socket, level-triggered (EPOLLIN | EPOLLRDHUP, no EPOLLET), data.ptr pointing
        // Lab: at the connection; keep the events in connection.registered. If epoll_ctl fails, drop the client.
        // Lab stub: static_cast<void>(epoll_fd);
        epoll_event event{};
        event.events = EPOLLIN | EPOLLRDHUP;  // no EPOLLET: level-triggered
        // data is a union the kernel hands back untouched with each event:
        // data.fd would say which descriptor is ready; data.ptr says which
        // connection, with no lookup. (Not both: it is a union.)
        event.data.ptr = &connection;
        if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, number, &event) == -1) {
            log("%s: refused %s", describe_failure("epoll_ctl EPOLL_CTL_ADD", errno).c_str(),
                connection.peer.c_str());  // ENOMEM, ENOSPC (max_user_watches)
            connections.erase(position);
            continue;
        }
        connection.registered = event.events;
        // Lab end.
        ++counters.connections;
        log("accepted %s on fd %d", connection.peer.c_str(), number);
    }
}

// Sends what is pending until done or EAGAIN (the send loop 02-nonblocking
// writes out); after EAGAIN the rest goes when epoll_wait reports EPOLLOUT.
// False if the connection failed (EPIPE, ECONNRESET): close it.
bool flush(Connection& connection, Counters& counters, const EventLog& log) {
    return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                           counters.bytes_echoed, log) != PendingOutput::FlushStatus::error;
}

// recv() (phase 2) until EAGAIN, end of file, no room, or 16 reads: the
// rest, if any, is reported again by the next epoll_wait (level-triggered),
// and meanwhile the other connections get their turn. Each piece is sent
// straight back. False: close the connection.
bool receive(Connection& connection, std::uint32_t events, Counters& counters, const EventLog& log) {
    constexpr int reads_per_round = 16;  // 16 x 64 KiB = 1 MiB
    std::array<std::byte, 64 * 1024> buffer;
    bool peer_takes_more = true;  // false once send() said EAGAIN: wait for EPOLLOUT
    for (int reads = 0; reads < reads_per_round && connection.pending.room() > 0; ++reads) {
        const std::size_t room = std::min(buffer.size(), connection.pending.room());
        const ssize_t received = ::recv(connection.fd.get(), buffer.data(), room, 0);
        if (received > 0) {
            connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
            if (peer_takes_more) {
                if (!flush(connection, counters, log)) {
                    return false;
                }
                peer_takes_more = connection.pending.empty();
            }
            continue;
        }
        if (received == 0) {
            log("end of file from %s (events %s)", connection.peer.c_str(), epoll_event_names(events).c_str());
            connection.peer_finished = true;
            return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return true;  // all that had arrived is read: back to epoll_wait
        }
        if (errno == EINTR) {
            continue;  // no handler runs here (the stop signals are blocked), but be safe
        }
        // ECONNRESET and friends: this connection is over, the server is not.
        log("recv from %s: %s (events %s)", connection.peer.c_str(), describe_failure("recv", errno).c_str(),
            epoll_event_names(events).c_str());
        return false;
    }
    return true;
}

// Acts on one event of a connection. False: close it.
bool serve(Connection& connection, std::uint32_t events, Counters& counters, const EventLog& log) {
    // EPOLLHUP and EPOLLERR are no reason to close at once: input that
    // arrived before the hang-up is still queued, and recv() returns it
    // first, then 0 or the error. So they lead to a read too (TLPI's
    // epoll_input.c makes the same point).
    const std::uint32_t readable = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
    if ((events & readable) != 0 && !connection.peer_finished && connection.pending.room() > 0) {
        if (!receive(connection, events, counters, log)) {
            return false;
        }
    }
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0 && !connection.pending.empty()) {
        // EPOLLOUT: the peer read some of its echo. EPOLLERR/EPOLLHUP with
        // output pending: send() fails and we close, instead of being told
        // about the error again by every epoll_wait.
        if (!flush(connection, counters, log)) {
            return false;
        }
    }
    return !(connection.peer_finished && connection.pending.empty());  // half-closed and all sent: done
}

void close_connection(int epoll_fd, std::unordered_map<int, Connection>& connections, Connection& connection,
                      const EventLog& log) {
    // Out of the interest list first. close() alone removes it only when no
    // other descriptor refers to the same open socket (after dup or fork
    // there could be one, and epoll would go on reporting a descriptor
    // number we no longer have). DEL makes it certain, and shows in strace.
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, connection.fd.get(), nullptr) == -1) {
        log("%s", describe_failure("epoll_ctl EPOLL_CTL_DEL", errno).c_str());
    }
    log("closed %s (%llu bytes echoed)", connection.peer.c_str(), static_cast<unsigned long long>(connection.echoed));
    connections.erase(connection.fd.get());  // destroys its unique_fd: close()
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "level-triggered epoll echo server: one thread, an interest list, epoll_wait.", 8005);
    const EventLog log(options.quiet);

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // SIGINT and SIGTERM become readable data on this descriptor.
    const unique_fd stop_fd = open_stop_signal_fd();
    if (!stop_fd) {
        return 1;
    }
    // SIGUSR1 (a status line) stays an ordinary handler: it interrupts
    // epoll_wait (EINTR) or any other call. If it comes just before
    // epoll_wait, the line waits for the next event.
    install_status_handler();
    // The epoll instance is itself a descriptor. (epoll_create's size
    // argument, still in document 000, is ignored since Linux 2.6.8;
    // epoll_create1 takes flags instead.)
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd) {
        report_failure("epoll_create1 EPOLL_CLOEXEC", errno);
        return 1;
    }
    // The listening socket and the signalfd have no Connection: data.ptr
    // holds a marker that no Connection can have.
    static char listening_marker, stop_marker;
    for (auto [fd, marker, name] : {std::tuple{listen_fd.get(), &listening_marker, "listening socket"},
                                    std::tuple{stop_fd.get(), &stop_marker, "signalfd"}}) {
        epoll_event event{};
        event.events = EPOLLIN;
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

    std::unordered_map<int, Connection> connections;
    Counters counters;
    // At most this many events per call. More ready descriptors are not
    // lost: they stay on the ready list for the next call.
    std::array<epoll_event, 128> events;
    bool stopping = false;
    while (!stopping) {
        if (status_requested()) {
            print_status(counters.list());
        }
        ++counters.epoll_wait_calls;
        // Sleeps (phase 1) until the ready list is not empty. -1: no
        // timeout, nothing else to do meanwhile.
        const int ready_count = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), -1);
        if (ready_count == -1) {
            if (errno == EINTR) {
                continue;  // SIGUSR1, or SIGSTOP/SIGCONT under a debugger: signals we do not block
            }
            report_failure("epoll_wait", errno);
            return 1;
        }
        counters.events += static_cast<std::uint64_t>(ready_count);
        bool clients_waiting = false;
        // Only the ready entries: no scan over every connection (04 looked
        // at every pollfd after each call).
        for (const epoll_event& event : std::span(events).first(static_cast<std::size_t>(ready_count))) {
            if (event.data.ptr == &stop_marker) {
                stopping = true;  // SIGINT or SIGTERM: finish this round, then stop
                continue;
            }
            if (event.data.ptr == &listening_marker) {
                clients_waiting = true;  // accepted after the round, as in 04
                continue;
            }
            Connection& connection = *static_cast<Connection*>(event.data.ptr);
            if (!serve(connection, event.events, counters, log) ||
                !update_interest(epoll_fd.get(), connection, log)) {
                // Safe to free now: one call returns at most one event per
                // descriptor, so no later entry of `events` points here.
                close_connection(epoll_fd.get(), connections, connection, log);
            }
        }
        if (clients_waiting && !stopping) {
            accept_new_clients(epoll_fd.get(), listen_fd.get(), reserve, connections, counters, log);
        }
    }

    signalfd_siginfo signal_info{};
    if (::read(stop_fd.get(), &signal_info, sizeof signal_info) == sizeof signal_info) {
        log("SIG%s: stopping", ::sigabbrev_np(static_cast<int>(signal_info.ssi_signo)));
    }
    connections.clear();  // closes every connection (closing the epoll instance empties its list)
    print_summary(counters.list());
    return 0;
}
