// 04-poll/server.cpp: an echo server that waits for many sockets at once
// with poll().
//
// I/O multiplexing (document 000 §3.2, document 003 "poll"): instead of asking
// every socket in turn (02-nonblocking), the server hands the kernel a list
// of descriptors and the events it cares about, and sleeps in one call,
// ppoll(), until at least one of them is ready. Phase 1 (wait for data) now
// happens inside ppoll(), for all sockets together; phase 2 (the copy) inside
// recv(), which no longer has to wait.
//
// Unlike select, poll takes an array of struct pollfd: no FD_SETSIZE limit,
// and the kernel writes its answer into `revents`, so the array need not be
// rebuilt each round. Unlike document 000's template, this array
// - grows and shrinks with the connections (closed descriptors are removed:
//   a closed fd left in the array makes poll answer POLLNVAL at once, for
//   ever: a busy loop);
// - asks for POLLOUT only while output is pending (a socket is nearly always
//   writable: asking always would wake poll at once, for ever);
// - asks for POLLIN and POLLRDHUP only while there is room to keep what is
//   read, and until the peer has half-closed.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8004; 0: any free port)
//
// strace: strace -e trace=ppoll,accept4,recvfrom,sendto ./build/04-poll/server 0
//   each ppoll() shows the array it was given and, after "=", the entries
//   that are ready with their revents.

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
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
    PendingOutput pending;       // received, not yet sent back
    bool peer_finished = false;  // end of file read: send what is pending, then close
    bool closed = false;         // to be removed after this round's scan
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t poll_calls = 0;
};

// What to ask poll() about this connection, given its state.
short interest(const Connection& connection) {
    short events = 0;
    if (!connection.peer_finished && connection.pending.room() > 0) {
        // POLLRDHUP (Linux): "the peer has shut down its writing side". We
        // still read until recv() returns 0, but it names the event in the
        // trace. After end of file we stop asking: a half-closed socket
        // stays readable for ever, and poll would return at once every time.
        events |= POLLIN | POLLRDHUP;
    }
    if (!connection.pending.empty()) {
        events |= POLLOUT;  // only while there is something send() could not take
    }
    return events;  // POLLERR and POLLHUP are always reported, asked or not
}

void accept_new_clients(int listen_fd, DescriptorReserve& reserve, std::vector<Connection>& connections,
                        Counters& counters, const EventLog& log) {
    for (;;) {  // there may be several clients queued: accept until EAGAIN
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fd = reserve.accept_or_refuse(listen_fd, peer, log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED &&
                errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        ++counters.connections;
        log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        connections.push_back(Connection{std::move(fd), format_address(peer), PendingOutput{}});
    }
}

// Acts on what poll() reported for one connection. recv() and send() do not
// wait: poll said they can go ahead.
void serve(Connection& connection, short revents, Counters& counters, const EventLog& log) {
    const bool can_read = (revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0;
    if (can_read && !connection.peer_finished && connection.pending.room() > 0) {
        // Read before looking at POLLHUP/POLLERR: data that arrived before
        // the hang-up is still there to be echoed (TLPI 63.2.3).
        std::array<std::byte, 64 * 1024> buffer;
        const std::size_t room = std::min(buffer.size(), connection.pending.room());
        const ssize_t received = ::recv(connection.fd.get(), buffer.data(), room, 0);
        if (received > 0) {
            connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
        } else if (received == 0) {
            connection.peer_finished = true;  // end of file (POLLRDHUP was set)
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
            connection.closed = true;  // ECONNRESET and friends
            return;
        }
    }
    // Send at once whatever is pending: usually the socket takes it all, and
    // POLLOUT is asked for only when send() said EAGAIN. This also runs on
    // POLLERR/POLLHUP: a peer that reset while we held output makes send()
    // fail, and we close, instead of being woken by POLLERR again and again.
    if (!connection.pending.empty()) {
        const auto result = connection.pending.flush_to(connection.fd.get());  // until EAGAIN
        counters.bytes_echoed += result.bytes_sent;
        if (result.status == PendingOutput::FlushStatus::error) {
            log("send to %s: %s", connection.peer.c_str(), describe_failure("send", result.error).c_str());
            connection.closed = true;
            return;
        }
    }
    if (connection.peer_finished && connection.pending.empty()) {
        connection.closed = true;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "Echo server: poll() waits for every socket at once.", 8004);
    const EventLog log(options.quiet);

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // SIGINT/SIGTERM stay blocked except inside ppoll(), which unblocks them
    // atomically for the wait. A signal that came after the stop_requested()
    // check is held pending and ends the ppoll() at once (EINTR) instead of
    // being handled just before a poll() that would then sleep on.
    install_stop_handlers();
    const sigset_t stop = stop_signals();
    sigset_t wait_mask;
    ::sigprocmask(SIG_BLOCK, &stop, &wait_mask);  // wait_mask: the mask before, stop signals open
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    std::vector<Connection> connections;
    std::vector<pollfd> fds;  // fds[0]: the listening socket; fds[i + 1]: connections[i]
    Counters counters;
    while (!stop_requested()) {
        fds.clear();  // refilled from the connections' state: it grows and shrinks with them
        fds.push_back({listen_fd.get(), POLLIN, 0});
        for (const Connection& connection : connections) {
            fds.push_back({connection.fd.get(), interest(connection), 0});
        }

        ++counters.poll_calls;
        const int ready = ::ppoll(fds.data(), fds.size(), nullptr, &wait_mask);  // sleeps: phase 1
        if (ready == -1) {
            if (errno != EINTR) {  // EINTR: a stop signal; the loop condition sees it
                report_failure("ppoll", errno);
                return 1;
            }
            continue;
        }

        // Connections first, with the revents that belong to them; new
        // clients are appended afterwards and polled from the next round.
        for (std::size_t i = 0; i < connections.size(); ++i) {
            if (fds[i + 1].revents != 0) {
                serve(connections[i], fds[i + 1].revents, counters, log);
            }
        }
        if ((fds[0].revents & POLLIN) != 0) {
            accept_new_clients(listen_fd.get(), reserve, connections, counters, log);
        }
        // Removing while scanning would shift the indexes that pair
        // connections[i] with fds[i + 1]: remove after the scan.
        std::erase_if(connections, [&log](const Connection& connection) {
            if (connection.closed) {
                log("closed %s", connection.peer.c_str());
            }
            return connection.closed;  // destroying its unique_fd closes it
        });
    }

    connections.clear();
    print_summary({{counters.connections, "connections"},
                   {counters.bytes_echoed, "bytes echoed"},
                   {counters.poll_calls, "poll calls"}});
    return 0;
}
