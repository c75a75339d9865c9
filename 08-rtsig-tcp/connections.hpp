// 08-rtsig-tcp/connections.hpp: what both servers of the chapter do once
// they know which descriptor a signal is about: arm a socket for
// signal-driven I/O, accept, read, write, close, and resynchronise
// everything after the signal queue overflowed. How they learn of events
// differs (sigwaitinfo in server.cpp, a handler in server_handler.cpp);
// that is each file's lesson.
//
// A signal per event works like an edge-triggered epoll (06-epoll-et): a
// signal says "something happened on fd N" once, so every handler goes on
// until EAGAIN, and what it leaves is not announced again.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/net.hpp"
#include "common/pending_output.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

namespace rtsig {

using namespace iomodels;

struct Connection {
    unique_fd fd;
    std::string peer;
    PendingOutput pending{};     // received, not yet sent back
    bool peer_finished = false;  // recv returned 0: send what is pending, then close
    bool unread_input = false;   // reading stopped at 4 MiB pending: read again once it drains
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t io_signals = 0;        // real-time signals taken
    std::uint64_t closed_fd_signals = 0;  // ... about a descriptor already closed (queued before the close)
    std::uint64_t overflows = 0;         // plain SIGIO: the real-time queue was full
    std::uint64_t stale_signals = 0;     // real-time signals thrown away after an overflow

    // The counts of the summary line, and of the status line SIGUSR1 asks for.
    [[nodiscard]] std::array<Count, 6> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed, "bytes echoed"},
                 {io_signals, "real-time signals"},
                 {closed_fd_signals, "signals for closed descriptors"},
                 {overflows, "queue overflows (SIGIO)"},
                 {stale_signals, "queued signals flushed"}}};
    }
};

struct Server {
    int listen_fd;
    int io_signal;
    DescriptorReserve& reserve;
    const EventLog& log;
    std::map<int, Connection> connections{};  // by descriptor: si_fd finds the connection
    Counters counters{};
};

// Signal-driven I/O for `fd`: signals go to this process (F_SETOWN), as
// `io_signal` with a siginfo (F_SETSIG), once O_ASYNC is on. F_GETFL first,
// so the flags the socket has keep (document 000's example sets O_ASYNC |
// O_NONBLOCK | O_RDWR over them, and arms new sockets for getpid() + 1, a
// process that is not us). The same calls as 07-rtsig-udp. False: a call
// failed, and is logged ("fcntl fd 5 F_SETSIG: ...").
inline bool arm(int fd, int io_signal, const EventLog& log) {
    const auto failed = [&](const char* call) {
        const int error = errno;
        log("%s", describe_failure("fcntl fd " + std::to_string(fd) + " " + call, error).c_str());
        return false;
    };
    if (::fcntl(fd, F_SETOWN, ::getpid()) == -1) {
        return failed("F_SETOWN");
    }
    if (::fcntl(fd, F_SETSIG, io_signal) == -1) {
        return failed("F_SETSIG SIGRTMIN+1");
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags == -1) {
        return failed("F_GETFL");
    }
    if (::fcntl(fd, F_SETFL, flags | O_ASYNC | O_NONBLOCK) == -1) {
        return failed("F_SETFL O_ASYNC|O_NONBLOCK");
    }
    return true;
}

// send() what is pending until done or EAGAIN (02-nonblocking writes that
// loop out), counting and logging (flush_and_count). When send() says
// EAGAIN, the kernel raises POLL_OUT once the peer has read some of it.
// False: the connection failed (EPIPE, ECONNRESET).
inline bool flush(Server& server, Connection& connection) {
    return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                           server.counters.bytes_echoed, server.log) != PendingOutput::FlushStatus::error;
}

// recv() until EAGAIN, end of file, or 4 MiB pending, sending each piece
// straight back. False: close the connection.
inline bool receive(Server& server, Connection& connection) {
    std::array<std::byte, 64 * 1024> buffer;
    while (!connection.peer_finished) {
        if (connection.pending.room() == 0) {
            connection.unread_input = true;  // no signal will repeat it: remember
            return true;
        }
        const ssize_t received =
            ::recv(connection.fd.get(), buffer.data(), std::min(buffer.size(), connection.pending.room()), 0);
        if (received > 0) {
            connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
            if (!flush(server, connection)) {
                return false;
            }
            continue;
        }
        if (received == 0) {
            server.log("end of file from %s", connection.peer.c_str());
            connection.peer_finished = true;
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;  // all read: the next arrival raises the next signal
        }
        if (errno == EINTR) {
            continue;
        }
        server.log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
        return false;
    }
    connection.unread_input = false;
    return true;
}

// Acts on what si_band (or poll's revents, after an overflow) says about a
// connection. False: close it.
inline bool serve(Server& server, Connection& connection, long band) {
    // POLLHUP and POLLERR lead to a read too: data queued before them
    // comes first, then recv's 0 or error.
    if ((band & (POLLIN | POLLRDNORM | POLLPRI | POLLHUP | POLLERR)) != 0 && !receive(server, connection)) {
        return false;
    }
    if ((band & (POLLOUT | POLLWRNORM | POLLHUP | POLLERR)) != 0 && !connection.pending.empty()) {
        if (!flush(server, connection)) {
            return false;
        }
        if (connection.unread_input && !receive(server, connection)) {  // room again: read what waited
            return false;
        }
    }
    return !(connection.peer_finished && connection.pending.empty());
}

inline void close_connection(Server& server, int fd) {
    Connection& connection = server.connections.at(fd);
    server.log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
               static_cast<unsigned long long>(connection.echoed));
    // Signals already queued for this descriptor stay queued: they will
    // name a descriptor we no longer have (or, once accept4 reuses the
    // number, a new connection: a read that finds EAGAIN, harmless).
    server.connections.erase(fd);
}

// The listening socket's signal: accept until EAGAIN (one signal may
// stand for several clients), arm each new connection, and read it once:
// what a client sent before O_ASYNC was on raised no signal.
inline void accept_new_clients(Server& server) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(server.listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            if (!server.reserve.available()) {
                server.log("%s: clients stay queued", describe_failure("accept", errno).c_str());
                return;
            }
            // Refuse it with the spare descriptor and go on: the clients
            // queued behind it raise no new signal.
            fd = server.reserve.accept_or_refuse(server.listen_fd, peer, server.log, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (!fd && (errno == EMFILE || errno == ENFILE)) {
                continue;
            }
        }
        if (!fd) {
            if (!accept_failed_harmlessly(errno)) {
                server.log("%s", describe_failure("accept", errno).c_str());
                return;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;  // every queued client taken: the next one raises a new signal
            }
            continue;  // ECONNABORTED (it gave up while queued), EINTR: take the next
        }
        const int number = fd.get();
        if (!arm(number, server.io_signal, server.log)) {
            continue;  // closes it: a connection we would never hear about
        }
        ++server.counters.connections;
        server.log("accepted %s on fd %d", format_address(peer).c_str(), number);
        auto [position, inserted] =
            server.connections.emplace(number, Connection{.fd = std::move(fd), .peer = format_address(peer)});
        if (!serve(server, position->second, POLLIN)) {
            close_connection(server, number);
        }
    }
}

// One signal taken: dispatch on si_fd, act on si_band.
inline void dispatch(Server& server, int fd, long band) {
    ++server.counters.io_signals;
    if (fd == server.listen_fd) {
        accept_new_clients(server);
        return;
    }
    const auto found = server.connections.find(fd);
    if (found == server.connections.end()) {
        ++server.counters.closed_fd_signals;  // queued before we closed it
        return;
    }
    if (!serve(server, found->second, band)) {
        close_connection(server, fd);
    }
}

// After an overflow some events have no signal, and nothing says which.
// One poll() over every descriptor, without waiting, finds what is ready
// now; serving it catches up. (Call after the queued real-time signals
// were thrown away, so that no event can fall between the two.)
inline void resynchronise(Server& server) {
    std::vector<pollfd> fds{{server.listen_fd, POLLIN, 0}};
    for (const auto& [fd, connection] : server.connections) {
        short events = connection.peer_finished ? 0 : POLLIN;
        events |= connection.pending.empty() ? 0 : POLLOUT;
        fds.push_back({fd, events, 0});
    }
    // Even without a timeout to sleep through, poll fails with EINTR if a
    // handled signal is pending when it looks (08's server_handler: a stop or
    // a status request). Skipping the resynchronisation then would lose the
    // events it is for: ask again.
    int ready = 0;
    while ((ready = ::poll(fds.data(), fds.size(), 0)) == -1 && errno == EINTR) {
    }
    if (ready == -1) {
        server.log("%s", describe_failure("poll", errno).c_str());
        return;
    }
    for (const pollfd& entry : std::span(fds).subspan(1)) {
        Connection& connection = server.connections.at(entry.fd);
        // Unread input left by a full buffer is served by the POLLOUT path.
        if (entry.revents != 0 && !serve(server, connection, entry.revents)) {
            close_connection(server, entry.fd);
        }
    }
    if ((fds[0].revents & POLLIN) != 0) {
        accept_new_clients(server);
    }
}

}  // namespace rtsig
