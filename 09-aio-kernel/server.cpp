// 09-aio-kernel/server.cpp: an echo server on kernel AIO's poll request
// (IOCB_CMD_POLL, Linux 4.18; document 004 mentions it as "aio-poll").
//
// Kernel AIO cannot read a socket asynchronously (an IOCB_CMD_PREAD on it
// blocks inside io_submit), but it can *wait*: a poll request completes,
// once, when its socket is ready, with the ready events in io_event.res.
// The copy is then an ordinary non-blocking recv()/send(), as in 03 to 06.
// SIGINT and SIGTERM get through only inside io_pgetevents, as in ppoll (04).
//
// usage: server [PORT] [--host ADDR] [--quiet] [--max-events N]   (PORT 8009; 0: any free port)
//
// strace: strace -e trace=io_setup,io_submit,io_pgetevents,accept4,recvfrom,sendto ./build/09-aio-kernel/server 0
//   io_submit(ctx, 2, [{aio_lio_opcode=IOCB_CMD_POLL, aio_fildes=3, aio_buf=POLLIN}, ...]) = 2,
//   io_pgetevents(...) = 1 with [{data=..., obj=..., res=POLLIN}], then accept4 until EAGAIN.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "aio_abi.hpp"
#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/pending_output.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

// A poll request and what it watches. Its address is the iocb's aio_data,
// handed back in the io_event.
struct Watch {
    iocb request{};
    enum class Kind { listening, connection } kind;
};

struct Connection : Watch {
    unique_fd fd;
    std::string peer;
    PendingOutput pending;
    bool peer_finished = false;
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t submit_calls = 0;
    std::uint64_t getevents_calls = 0;
    std::uint64_t completions = 0;

    // In the order of the summary line.
    [[nodiscard]] std::array<Count, 5> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed, "bytes echoed"},
                 {submit_calls, "io_submit calls"},
                 {getevents_calls, "io_pgetevents calls"},
                 {completions, "completions"}}};
    }
};

struct Server {
    unsigned max_events = 0;
    const EventLog& log;
    std::unordered_map<int, std::unique_ptr<Connection>> connections{};
    std::vector<iocb*> to_submit{};  // poll requests of this round, submitted together
    Counters counters{};
    // Declared after `connections`, so destroyed before them: io_destroy
    // cancels their poll requests before their sockets close.
    unique_aio_context context{};
};

// Prepares a one-shot poll request for `fd`; submitted at the end of the round.
void watch(Server& server, Watch& watch, int fd, short events) {
    // Lab: fill watch.request: IOCB_CMD_POLL on fd, the events in aio_buf, &watch in aio_data (handed back in
    // Lab: the io_event); add it to server.to_submit.
    // Lab stub: static_cast<void>(server), static_cast<void>(watch), static_cast<void>(fd), static_cast<void>(events);
    watch.request = iocb{};
    watch.request.aio_lio_opcode = IOCB_CMD_POLL;
    watch.request.aio_fildes = static_cast<std::uint32_t>(fd);
    watch.request.aio_buf = static_cast<std::uint16_t>(events);  // for IOCB_CMD_POLL: the events, not a buffer
    watch.request.aio_data = reinterpret_cast<std::uint64_t>(&watch);
    server.to_submit.push_back(&watch.request);
    // Lab end.
}

// The events a connection waits for, given its state (as in 05's interest()).
short interest(const Connection& connection) {
    short events = 0;
    if (!connection.peer_finished && connection.pending.room() > 0) {
        events |= POLLIN | POLLRDHUP;
    }
    if (!connection.pending.empty()) {
        events |= POLLOUT;
    }
    return events;
}

// Sends what is pending (02-nonblocking writes this loop out). False: close the connection.
bool flush(Server& server, Connection& connection) {
    return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                           server.counters.bytes_echoed, server.log) != PendingOutput::FlushStatus::error;
}

// At most 16 reads per completion: if more is waiting, the next poll
// request completes at once. False: close the connection.
bool receive(Server& server, Connection& connection) {
    std::array<std::byte, 64 * 1024> buffer;
    for (int reads = 0; reads < 16 && connection.pending.room() > 0; ++reads) {
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
            return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        server.log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
        return false;
    }
    return true;
}

// A connection's poll request completed with `ready` (its revents). False: close it.
bool serve(Server& server, Connection& connection, short ready) {
    if ((ready & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0 && !connection.peer_finished &&
        connection.pending.room() > 0 && !receive(server, connection)) {
        return false;
    }
    if ((ready & (POLLOUT | POLLHUP | POLLERR)) != 0 && !connection.pending.empty() && !flush(server, connection)) {
        return false;
    }
    return !(connection.peer_finished && connection.pending.empty());
}

void accept_new_clients(Server& server, int listen_fd, DescriptorReserve& reserve) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fd = reserve.accept_or_refuse(listen_fd, peer, server.log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            // EAGAIN: all accepted. EMFILE: one refused; the listening
            // socket's next poll request completes at once for the next.
            if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE) {
                server.log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        // Each connection has one poll request in flight, and the
        // listening socket has one: the context must hold them all.
        if (server.connections.size() + 2 >= server.max_events) {
            server.log("refused %s: %u poll requests in flight is the context's size (--max-events)",
                       format_address(peer).c_str(), server.max_events);
            continue;  // fd closes: the client sees the connection closed
        }
        ++server.counters.connections;
        server.log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
        auto connection = std::make_unique<Connection>();
        connection->kind = Watch::Kind::connection;
        connection->peer = format_address(peer);
        connection->fd = std::move(fd);
        const int number = connection->fd.get();
        watch(server, *connection, number, POLLIN | POLLRDHUP);
        server.connections.emplace(number, std::move(connection));
    }
}

// io_submit everything prepared this round. False: a fatal error.
bool submit(Server& server) {
    // Lab: io_submit server.to_submit (again on EINTR; the rest if it took fewer), then clear it. False: failed.
    // Lab stub: static_cast<void>(server);
    // Lab stub: return true;
    std::size_t offset = 0;
    while (offset < server.to_submit.size()) {
        ++server.counters.submit_calls;
        const int queued = io_submit(server.context.get(), static_cast<long>(server.to_submit.size() - offset),
                                     server.to_submit.data() + offset);
        if (queued == -1) {
            if (errno == EINTR) {
                continue;
            }
            // EINVAL for a poll request: a kernel older than 4.18, or one
            // built without it.
            report_failure("io_submit IOCB_CMD_POLL", errno);
            if (errno == EINVAL) {
                std::fprintf(stderr, "%s: this kernel refuses AIO poll requests (IOCB_CMD_POLL needs Linux 4.18)\n",
                             program_name());
            }
            return false;
        }
        offset += static_cast<std::size_t>(queued);
    }
    server.to_submit.clear();
    return true;
    // Lab end.
}

}  // namespace

int main(int argc, char** argv) {
    unsigned max_events = 4096;
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "echo server on kernel AIO poll requests (IOCB_CMD_POLL): io_submit, io_getevents.", 8009,
        {{"--max-events", "N", "the AIO context's size: sockets watched at once (16 to 65536, default 4096)",
          number(max_events, 16u, 65536u)}});
    const EventLog log(options.quiet);

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // The stop signals: blocked, except inside io_pgetevents, which takes a
    // mask as pselect does (see above).
    const sigset_t mask_while_waiting = block_stop_signals_outside_the_wait();
    aio_context_t new_context = 0;  // must be 0 before io_setup
    if (io_setup(max_events, &new_context) == -1) {
        // EAGAIN: all AIO contexts together may hold /proc/sys/fs/aio-max-nr requests.
        report_failure("io_setup " + std::to_string(max_events), errno);
        return 1;
    }
    Server server{.max_events = max_events, .log = log, .context = unique_aio_context(new_context)};
    DescriptorReserve reserve;
    Watch listening{.kind = Watch::Kind::listening};
    watch(server, listening, listen_fd.get(), POLLIN);
    // submit() fails here if the kernel has no AIO poll.
    if (!submit(server) || !print_ready_line(listen_fd.get())) {
        return 1;
    }

    std::vector<io_event> events(128);
    bool failed = false;
    // stop_signal_pending(): as with ppoll, a stop signal is delivered in
    // io_pgetevents only when it would sleep (see common/server.hpp).
    while (!stop_requested() && !stop_signal_pending()) {
        if (status_requested()) {
            print_status(server.counters.list());
        }
        ++server.counters.getevents_calls;
        // Sleeps (phase 1) until at least one poll request has completed.
        const int completed = io_pgetevents(server.context.get(), 1, static_cast<long>(events.size()), events.data(),
                                            nullptr, &mask_while_waiting);
        if (completed == -1) {
            if (errno == EINTR) {
                continue;  // a stop signal or SIGUSR1: the loop looks at both flags
            }
            report_failure("io_pgetevents", errno);
            failed = true;
            break;
        }
        server.counters.completions += static_cast<std::uint64_t>(completed);
        bool clients_waiting = false;
        for (const io_event& event : std::span(events).first(static_cast<std::size_t>(completed))) {
            Watch& watched = *reinterpret_cast<Watch*>(event.data);
            if (event.res < 0) {
                // The request itself failed (-EINVAL...): nothing to serve.
                log("poll request failed: res %lld", static_cast<long long>(event.res));
            }
            if (watched.kind == Watch::Kind::listening) {
                clients_waiting = true;
                continue;
            }
            auto& connection = static_cast<Connection&>(watched);
            const auto ready = static_cast<short>(event.res < 0 ? POLLERR : event.res);
            if (serve(server, connection, ready)) {
                watch(server, connection, connection.fd.get(), interest(connection));  // the next one-shot request
                continue;
            }
            // No request of ours is in flight for it now: closing is safe.
            log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
                static_cast<unsigned long long>(connection.echoed));
            server.connections.erase(connection.fd.get());
        }
        if (clients_waiting) {
            accept_new_clients(server, listen_fd.get(), reserve);
            watch(server, listening, listen_fd.get(), POLLIN);
        }
        if (!submit(server)) {
            failed = true;
            break;
        }
    }
    // io_destroy now: it cancels the poll requests still in flight, before
    // their sockets close and the summary is printed.
    server.context.reset();
    server.connections.clear();
    print_summary(server.counters.list());
    return failed ? 1 : 0;
}
