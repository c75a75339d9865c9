// 04-poll/server.cpp: an echo server that waits for every socket at once
// with poll (here ppoll, poll with a signal mask).
//
// The one thread sleeps in ppoll() over an array of struct pollfd {fd,
// events, revents}, one entry per socket. The kernel writes its answer into
// `revents` and never touches `fd` or `events`, so the array is kept from one
// call to the next (select's sets must be copied every round). Phase 1 (wait
// for data) blocks in ppoll(); phase 2 (copy data) is recv(), which never
// waits. What this fixes in document 000's poll template: README, "Pitfalls".
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8004; 0: any free port)
//
// strace -e trace=ppoll,accept4,recvfrom,sendto ./build/04-poll/server 0
//   each round is one ppoll() with the whole array it was given and, after
//   "=", the entries that are ready with their revents; accept4() until
//   EAGAIN; recvfrom() until EAGAIN (or 0: end of file); sendto() of the echo.
//
// Read `main`'s loop first; the functions above it are its steps.

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
#include <unordered_map>
#include <utility>
#include <vector>

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
    PendingOutput pending{};     // received, not yet sent back
    bool peer_finished = false;  // recv returned 0: send what is pending, then close
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t poll_calls = 0;

    // In the order the summary and the status line print them.
    [[nodiscard]] std::array<Count, 3> list() const {
        return {{{connections, "connections"}, {bytes_echoed, "bytes echoed"}, {poll_calls, "poll calls"}}};
    }
};

// What to ask poll() about a connection, given its state. This is the
// `events` field of its pollfd; it changes only when the state does.
short interest(const Connection& connection) {
    short events = 0;
    // Read only while there is room to keep what is read: a peer that does
    // not read its echo fills `pending`, and then we stop asking for POLLIN
    // until it has taken some bytes. After end of file, stop asking too: a
    // half-closed socket stays readable (recv returns 0) for ever.
    if (!connection.peer_finished && connection.pending.room() > 0) {
        // POLLRDHUP (Linux, needs _GNU_SOURCE; g++ defines it): the peer has
        // shut down its writing side (FIN). Without it a half-close shows up
        // as a plain POLLIN; with it, revents says so by name. It does NOT
        // mean "close now": data may still be queued before the FIN, and the
        // peer still reads our echo. So it is handled like POLLIN: read
        // until recv() returns 0, send what is pending, then close.
        events |= POLLIN | POLLRDHUP;
    }
    // "Writable" only while bytes wait that send() could not take.
    if (!connection.pending.empty()) {
        events |= POLLOUT;
    }
    return events;  // POLLERR, POLLHUP and POLLNVAL are reported whether asked or not
}

// ppoll said the listening socket is readable: at least one client is
// queued, maybe several. Accept until accept4() says EAGAIN. Each new
// connection gets a pollfd at the end of the array and a Connection.
void accept_new_clients(int listen_fd, DescriptorReserve& reserve, std::vector<pollfd>& fds,
                        std::unordered_map<int, Connection>& connections, Counters& counters,
                        const EventLog& log) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        // SOCK_NONBLOCK: the connection is non-blocking from the start, so
        // the recv() loop below ends with EAGAIN instead of sleeping.
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            // Out of descriptors: the client stays queued and the listening
            // socket stays readable, so ppoll would wake us for it again and
            // again. Accept it with the spare descriptor and refuse it
            // (logged with [EMFILE]), or serve it if descriptors were freed.
            fd = reserve.accept_or_refuse(listen_fd, peer, log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            // EAGAIN: nobody else is waiting, the expected end of this loop.
            // ECONNABORTED (a client gave up while queued), EINTR: harmless too.
            // EMFILE/ENFILE: one client refused; ppoll reports the next one.
            if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        ++counters.connections;
        log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        // Lab: append the connection's pollfd (POLLIN | POLLRDHUP) to the array: ppoll watches it from now on.
        // Lab stub: static_cast<void>(fds);
        fds.push_back({fd.get(), POLLIN | POLLRDHUP, 0});  // the array grows: no fixed limit
        // Lab end.
        const int number = fd.get();
        connections.emplace(number, Connection{.fd = std::move(fd), .peer = format_address(peer)});
    }
}

// Sends what is pending until done or EAGAIN (the send loop 02-nonblocking
// writes out); after EAGAIN the rest goes when ppoll reports POLLOUT.
// False if the connection failed (EPIPE, ECONNRESET): close it.
bool flush(Connection& connection, Counters& counters, const EventLog& log) {
    return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                           counters.bytes_echoed, log) != PendingOutput::FlushStatus::error;
}

// Data, end of file or an error is waiting. recv() (phase 2: the copy)
// until EAGAIN, end of file or no room left, sending each piece straight
// back. At most `reads_per_round` reads: poll is level-triggered, so what is
// left is reported again by the next ppoll, and meanwhile the other
// connections get their turn. False: close the connection.
bool receive(Connection& connection, short revents, Counters& counters, const EventLog& log) {
    constexpr int reads_per_round = 16;  // 16 x 64 KiB = 1 MiB
    std::array<std::byte, 64 * 1024> buffer;
    bool peer_takes_more = true;  // false once send() said EAGAIN: wait for POLLOUT
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
            // End of file: the peer shut down its writing side, which
            // ppoll announced as POLLRDHUP. Send what is pending, then close.
            log("end of file from %s (revents %s)", connection.peer.c_str(), poll_event_names(revents).c_str());
            connection.peer_finished = true;
            return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return true;  // everything that had arrived is read: back to ppoll
        }
        if (errno == EINTR) {
            continue;  // a signal handler ran (SIGINT/SIGTERM are blocked here, but be safe)
        }
        // ECONNRESET and friends: this connection is over, the server is not.
        log("recv from %s: %s (revents %s)", connection.peer.c_str(), describe_failure("recv", errno).c_str(),
            poll_event_names(revents).c_str());
        return false;
    }
    return true;  // more may be waiting (level-triggered: ppoll says so again), or no room
}

// Acts on what ppoll reported for one connection. False: close it.
bool serve(Connection& connection, short revents, Counters& counters, const EventLog& log) {
    // POLLHUP and POLLERR are not a reason to close at once: data that
    // arrived before the hang-up is still in the socket (TLPI 63.2.3), and
    // recv() returns it first, then 0 or the error (ECONNRESET). So they
    // lead to a read too, which ends the connection when it is over.
    const short readable = POLLIN | POLLRDHUP | POLLHUP | POLLERR;
    if ((revents & readable) != 0 && !connection.peer_finished && connection.pending.room() > 0) {
        if (!receive(connection, revents, counters, log)) {
            return false;
        }
    }
    if ((revents & (POLLOUT | POLLERR | POLLHUP)) != 0 && !connection.pending.empty()) {
        // POLLOUT: the peer has read some of its echo, there is room again.
        // POLLERR/POLLHUP while output is pending: send() fails (EPIPE,
        // ECONNRESET) and we close, instead of being woken by POLLERR again
        // and again while we are not reading.
        if (!flush(connection, counters, log)) {
            return false;
        }
    }
    return !(connection.peer_finished && connection.pending.empty());  // half-closed and all sent: done
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "poll echo server: one thread waits for every socket in ppoll.", 8004);
    const EventLog log(options.quiet);

    // Non-blocking, like every socket here: accept4() with nobody waiting
    // returns EAGAIN, which ends the accept loop.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }

    // SIGINT and SIGTERM blocked everywhere but in ppoll, which installs its
    // last argument as the mask while it waits: ppoll is to poll what
    // pselect is to select (03-select).
    const sigset_t mask_while_waiting = block_stop_signals_outside_the_wait();
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    // The array handed to ppoll: fds[0] is the listening socket, then one
    // entry per connection, in the order they were accepted. It lives
    // across rounds; `events` is changed only when a connection's state
    // changes. The connections' own state is found by descriptor.
    std::vector<pollfd> fds{{listen_fd.get(), POLLIN, 0}};
    std::unordered_map<int, Connection> connections;
    Counters counters;
    // stop_signal_pending(): a stop signal that came while descriptors were
    // ready at every ppoll() is still pending (see common/server.hpp).
    while (!stop_requested() && !stop_signal_pending()) {
        if (status_requested()) {
            print_status(counters.list());
        }
        ++counters.poll_calls;
        // Sleeps (phase 1) until an entry is ready or a stop signal arrives.
        // No timeout (NULL): nothing else to do meanwhile.
        const int ready_count = ::ppoll(fds.data(), fds.size(), nullptr, &mask_while_waiting);
        if (ready_count == -1) {
            if (errno == EINTR) {
                continue;  // a stop signal or SIGUSR1: the loop looks at both flags
            }
            report_failure("ppoll", errno);
            return 1;
        }

        // poll returns how many entries are ready, not which: look at each
        // one (document 003: O(n) per call, whatever the number of ready
        // ones). A connection to close is closed here and its entry only
        // marked, with fd -1 (poll ignores negative descriptors): erasing
        // it now would shift the later entries under our index and skip
        // one, and cost a move of the array's tail for each removal.
        // Lab: for each entry with revents: serve its connection and recompute its events (interest), or close
        // Lab: it (erase its Connection) and mark the entry fd -1; after the scan, erase the marked entries.
        // Lab stub: static_cast<void>(&serve), static_cast<void>(&interest);  // the steps of each entry
        for (std::size_t i = 1; i < fds.size(); ++i) {
            pollfd& entry = fds[i];
            if (entry.revents == 0) {
                continue;
            }
            Connection& connection = connections.at(entry.fd);  // every open entry has one
            if (serve(connection, entry.revents, counters, log)) {
                const short before = entry.events;
                entry.events = interest(connection);
                if (((before ^ entry.events) & POLLIN) != 0 && !connection.peer_finished) {
                    log((entry.events & POLLIN) != 0 ? "fd %d: %zu bytes pending, reading again"
                                                     : "fd %d: %zu bytes pending, not reading until the peer reads",
                        entry.fd, connection.pending.size());
                }
                continue;
            }
            log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
                static_cast<unsigned long long>(connection.echoed));
            connections.erase(entry.fd);  // destroys its unique_fd: close()
            entry.fd = -1;                // marked: removed after the scan
        }
        // Compact: one pass over the array after the scan. An entry left
        // with its closed descriptor would make every later ppoll return at
        // once with POLLNVAL (or, once accept4 reuses the number, report
        // for the wrong connection).
        std::erase_if(fds, [](const pollfd& entry) { return entry.fd < 0; });
        // Lab end.

        // New clients last: their entries are appended and polled from the
        // next round on.
        if ((fds[0].revents & POLLIN) != 0) {
            accept_new_clients(listen_fd.get(), reserve, fds, connections, counters, log);
        }
    }

    connections.clear();  // closes every connection
    print_summary(counters.list());
    return 0;
}
