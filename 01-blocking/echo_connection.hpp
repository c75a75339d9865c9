// 01-blocking/echo_connection.hpp: the two blocking steps that all three
// servers of this chapter share: accept a client (accept_client), then echo
// its connection until it leaves (echo_until_eof). The servers differ only
// in who runs the echo loop: a child process (server.cpp), a thread
// (server_thread.cpp), or the one and only thread, one client after another
// (server_iterative.cpp).
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "common/errors.hpp"
#include "common/io.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

// Waits for the next client and accepts it: accept4() sleeps until the
// kernel has completed a TCP handshake for us. Returns an invalid unique_fd
// when there is nobody to serve this time round:
//   EINTR         a signal arrived (SIGCHLD, or a stop signal)
//   EINVAL        the stop handler shut the listening socket down
//   ECONNABORTED  the client gave up while it was queued
//   EMFILE/ENFILE out of descriptors: the client was refused (and logged)
// Any other failure is logged, and the server goes on.
inline iomodels::unique_fd accept_client(int listen_fd, sockaddr_in& peer, iomodels::DescriptorReserve& reserve,
                                         const iomodels::EventLog& log) {
    socklen_t peer_length = sizeof peer;
    iomodels::unique_fd connection(
        ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
    if (!connection && (errno == EMFILE || errno == ENFILE)) {
        // Refuse this client rather than fail again at once, in a busy loop.
        connection = reserve.accept_or_refuse(listen_fd, peer, log);
    }
    if (!connection && errno != EINTR && errno != EINVAL && errno != ECONNABORTED && errno != EMFILE &&
        errno != ENFILE) {
        log("%s", iomodels::describe_failure("accept", errno).c_str());
    }
    return connection;
}

// Echoes one connection until the client closes its sending side, then
// returns the number of bytes echoed. Each chunk is also added to
// `total_echoed` as soon as it is sent, so a server's summary counts the
// bytes of a connection that a stop cut short.
//
// Phase 1 of an input operation (wait for data) and phase 2 (copy it into
// `buffer`) both happen inside recv(): the caller sleeps there until the
// kernel has bytes for it, which is the whole of the blocking model.
//
// A signal handler may interrupt recv() before any byte arrived (EINTR: call
// `on_interrupted`, e.g. to print the status line SIGUSR1 asked for, and
// wait again) or send() (send_all goes on with the bytes not yet sent).
inline std::uint64_t echo_until_eof(int connection_fd, const iomodels::EventLog& log,
                                    std::atomic<std::uint64_t>& total_echoed,
                                    const std::function<void()>& on_interrupted = [] {}) {
    std::array<std::byte, 64 * 1024> buffer;
    std::uint64_t echoed = 0;
    for (;;) {
        const ssize_t received = ::recv(connection_fd, buffer.data(), buffer.size(), 0);
        if (received == 0) {
            break;  // end of file: the client shut down its sending side (or a stop did)
        }
        if (received == -1) {
            if (errno == EINTR) {
                on_interrupted();
                continue;  // a signal handler ran before any byte arrived: wait again
            }
            log("recv on fd %d: %s", connection_fd, iomodels::describe_failure("recv", errno).c_str());
            break;  // ECONNRESET and friends: this connection is over, the server is not
        }
        // recv returns what has arrived so far, perhaps a single byte: echo
        // exactly those bytes. send_all loops until every one is sent (a send
        // may be partial) and uses MSG_NOSIGNAL, so a client that has gone
        // away gives EPIPE here instead of a SIGPIPE that kills the server.
        const auto bytes = std::span(buffer).first(static_cast<std::size_t>(received));
        if (!iomodels::send_all(connection_fd, bytes)) {
            log("send on fd %d: %s", connection_fd, iomodels::describe_failure("send", errno).c_str());
            break;
        }
        echoed += bytes.size();
        total_echoed += bytes.size();
    }
    return echoed;
}
