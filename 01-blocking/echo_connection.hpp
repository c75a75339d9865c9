// 01-blocking/echo_connection.hpp: the echo loop of one connection, which
// the four servers of this chapter share (echo_until_eof). What differs
// between them is who runs it, and each writes that out with its own
// blocking accept4(): a child process (server.cpp), a thread
// (server_thread.cpp), the one and only thread, one client after another
// (server_iterative.cpp), or one of a pool of threads made at start
// (server_pool.cpp).
#pragma once

#include <errno.h>
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
