// 03-select/server.cpp: an echo server that waits for every socket at once
// in select (here pselect, select with a signal mask).
//
// The sockets are non-blocking, and the one thread sleeps in pselect(),
// which watches all of them and returns the sets of those that are ready:
// phase 1 (wait for data) blocks there, for every connection together;
// phase 2 (copy data) is a recv() that never waits. This is document 000's
// select template, corrected (README, "Pitfalls"); its three caveats are
// marked "caveat 1/2/3" below.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8003; 0: any free port)
//
// strace -e trace=pselect6,accept4,recvfrom,sendto ./build/03-select/server 0
//   each round is one pselect6() with the sets it was given and the sets it
//   returns ("[3 5]" in, "in [5]" out); accept4() until EAGAIN; recvfrom()
//   only on a socket pselect6 reported; sendto() of the echo.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>

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
    PendingOutput pending{};     // received, not yet sent back
    bool peer_finished = false;  // recv returned 0: send what is pending, then close
    bool reading = true;         // in the read set (false while `pending` is full)
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t select_calls = 0;
    std::uint64_t refused = 0;

    // In the order the summary and the status line print them.
    [[nodiscard]] std::array<Count, 4> list() const {
        return {{{connections, "connections"}, {bytes_echoed, "bytes echoed"},
                 {select_calls, "select calls"}, {refused, "refused connections"}}};
    }
};

// The master sets: what the server wants to hear about. pselect() never
// sees them, only copies (caveat 2).
struct Interest {
    fd_set read;
    fd_set write;
    int max_fd;  // the highest descriptor in either set: pselect's nfds is max_fd + 1
};

// Accepts until accept4() says EAGAIN: pselect reported the listening socket
// readable once, but several clients may be queued behind it. Out of
// descriptors, it refuses one client and returns to pselect.
void accept_new_clients(int listen_fd, DescriptorReserve& reserve, std::map<int, Connection>& connections,
                        Interest& interest, Counters& counters, const EventLog& log) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        // SOCK_NONBLOCK: the connection is non-blocking from the start, so a
        // recv() or send() that pselect did not vouch for cannot hang the loop.
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            // Out of descriptors: the client stays queued and the listening
            // socket stays readable, so pselect would report it again and
            // again, a busy loop. Accept it with the spare descriptor and
            // refuse it (logged with [EMFILE]), or serve it if descriptors
            // were freed meanwhile.
            fd = reserve.accept_or_refuse(listen_fd, peer, log, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (!fd && (errno == EMFILE || errno == ENFILE)) {
                ++counters.refused;
                return;  // one refused; level-triggered, pselect reports the next one (as in 04 and 05)
            }
        }
        if (!fd) {
            // EAGAIN: nobody else is waiting, the expected end of this loop.
            // ECONNABORTED (a client gave up while queued), EINTR: harmless too.
            if (!accept_failed_harmlessly(errno)) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        // Caveat 3: an fd_set is a bitmap of FD_SETSIZE (1024) bits. FD_SET
        // with a larger number writes past its end and corrupts memory, so a
        // descriptor that large cannot be watched: refuse the client.
        if (fd.get() >= FD_SETSIZE) {
            log("refused %s: fd %d >= FD_SETSIZE (%d), select cannot watch it", format_address(peer).c_str(),
                fd.get(), FD_SETSIZE);
            ++counters.refused;
            continue;  // `fd` closes here: the client sees the connection end
        }
        ++counters.connections;
        log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        FD_SET(fd.get(), &interest.read);
        interest.max_fd = std::max(interest.max_fd, fd.get());
        const int number = fd.get();
        connections.emplace(number, Connection{.fd = std::move(fd), .peer = format_address(peer)});
    }
}

// Sends what is pending until done or EAGAIN (the send loop 02-nonblocking
// writes out); after EAGAIN the rest goes when pselect says "writable".
// False if the connection failed (reset, EPIPE): close it.
bool flush(Connection& connection, Counters& counters, const EventLog& log) {
    return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                           counters.bytes_echoed, log) != PendingOutput::FlushStatus::error;
}

// pselect said `connection` is readable: data, end of file, or an error is
// waiting. One recv() (phase 2: the copy; it does not wait), then an
// attempt to send the bytes straight back. False: close the connection.
bool on_readable(Connection& connection, Counters& counters, const EventLog& log) {
    std::array<std::byte, 64 * 1024> buffer;
    const std::size_t room = std::min(buffer.size(), connection.pending.room());
    const ssize_t received = ::recv(connection.fd.get(), buffer.data(), room, 0);
    if (received > 0) {
        connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
        return flush(connection, counters, log);
    }
    if (received == 0) {
        connection.peer_finished = true;  // end of file: finish sending, then close
        return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return true;  // a readiness that went away again: nothing lost, wait for the next
    }
    log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
    return false;  // ECONNRESET and friends: this connection is over, the server is not
}

// Brings the master sets in line with the connection's state.
void update_interest(Connection& connection, Interest& interest, const EventLog& log) {
    // Lab: FD_SET the connection in interest.read while it reads (no end of file yet, pending has room()), else
    // Lab: FD_CLR it; log a change of connection.reading. In interest.write only while pending is not empty.
    // Lab stub: static_cast<void>(connection), static_cast<void>(interest), static_cast<void>(log);
    const int fd = connection.fd.get();
    // Read only while there is room to keep what we read: a peer that does
    // not read its echo makes `pending` fill up, and then it is dropped from
    // the read set until it has taken some bytes.
    const bool want_read = !connection.peer_finished && connection.pending.room() > 0;
    if (want_read != connection.reading && !connection.peer_finished) {
        log(want_read ? "fd %d: %zu bytes pending, reading again"
                      : "fd %d: %zu bytes pending, not reading until the peer reads",
            fd, connection.pending.size());
    }
    connection.reading = want_read;
    if (want_read) {
        FD_SET(fd, &interest.read);
    } else {
        FD_CLR(fd, &interest.read);
    }
    // "Writable" only while bytes wait to be sent. A socket with room in its
    // send buffer is always writable: asking for it with nothing to send
    // would make pselect return at once, every round, a busy loop.
    if (!connection.pending.empty()) {
        FD_SET(fd, &interest.write);
    } else {
        FD_CLR(fd, &interest.write);
    }
    // Lab end.
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "select echo server: one thread waits for every socket in pselect.",
                                     8003);
    const EventLog log(options.quiet);

    // Non-blocking, like every socket here: accept4() with nobody waiting
    // returns EAGAIN, which ends the accept loop.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // SIGINT and SIGTERM blocked everywhere but in pselect, which installs
    // its last argument as the mask while it waits, atomically: a stop
    // signal that comes between the loop's look at stop_requested() and
    // the wait runs its handler as the wait starts, and pselect returns
    // EINTR. That is why pselect exists (document 000 §3.1:
    // "pselect允许指定信号掩码"); with select, the signal's flag could sit
    // unseen while select sleeps on.
    const sigset_t mask_while_waiting = block_stop_signals_outside_the_wait();
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Interest interest{};
    FD_ZERO(&interest.read);
    FD_ZERO(&interest.write);
    FD_SET(listen_fd.get(), &interest.read);
    interest.max_fd = listen_fd.get();
    std::map<int, Connection> connections;  // by descriptor, in the order select's sets list them
    Counters counters;

    while (!stop_requested() && !stop_signal_pending()) {
        if (status_requested()) {
            print_status(counters.list());
        }
        // Lab: sleep in pselect until a socket in the master sets is ready (copies of them, nfds max_fd + 1,
        // Lab: no timeout, mask_while_waiting); count select_calls. EINTR: loop again; else report, return 1.
        // Lab stub: fd_set readable = interest.read;  // until it is written: all are "ready", 02's polling
        // Lab stub: fd_set writable = interest.write;
        // Lab stub: static_cast<void>(mask_while_waiting);
        // Caveat 2: pselect overwrites the sets it is given with the sets of
        // ready descriptors. Hand it copies and keep the master sets intact.
        fd_set readable = interest.read;
        fd_set writable = interest.write;
        // Caveat 1: select() may change its timeout to the time left, so a
        // loop must set it again before each call. pselect's timeout is
        // const and is never changed; here it is NULL anyway: wait until
        // something is ready or a signal arrives.
        const int ready_count =
            ::pselect(interest.max_fd + 1, &readable, &writable, nullptr, nullptr, &mask_while_waiting);
        ++counters.select_calls;
        if (ready_count == -1) {
            if (errno == EINTR) {
                continue;  // a stop signal or SIGUSR1: the loop looks at both flags
            }
            report_failure("pselect", errno);  // EBADF would be a bug here: a closed fd left in a set
            return 1;
        }
        // Lab end.

        if (FD_ISSET(listen_fd.get(), &readable)) {
            accept_new_clients(listen_fd.get(), reserve, connections, interest, counters, log);
        }

        // Visit the connections we have (not every number from sock+1 up to
        // max_fd, as document 000 does). New ones were not in this round's
        // sets: FD_ISSET is false for them.
        for (auto it = connections.begin(); it != connections.end();) {
            Connection& connection = it->second;
            const int fd = it->first;
            bool open = true;
            if (FD_ISSET(fd, &readable)) {
                open = on_readable(connection, counters, log);
            }
            if (open && FD_ISSET(fd, &writable) && !connection.pending.empty()) {
                open = flush(connection, counters, log);
            }
            if (open && connection.peer_finished && connection.pending.empty()) {
                open = false;  // half-closed by the peer, and every byte sent back
            }
            if (open) {
                update_interest(connection, interest, log);
                ++it;
                continue;
            }
            // Remove the closed descriptor from the master sets. Left there,
            // pselect would fail with EBADF, or, once the number is reused by
            // the next accept, report for the wrong connection.
            FD_CLR(fd, &interest.read);
            FD_CLR(fd, &interest.write);
            log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
                static_cast<unsigned long long>(connection.echoed));
            it = connections.erase(it);  // destroys its unique_fd: close()
        }
        // nfds must cover the highest descriptor still watched, and no more.
        interest.max_fd =
            connections.empty() ? listen_fd.get() : std::max(listen_fd.get(), connections.rbegin()->first);
    }

    connections.clear();  // closes every connection
    print_summary(counters.list());
    return 0;
}
