// 09-aio-kernel/server.cpp: an echo server on kernel AIO's poll request
// (IOCB_CMD_POLL, Linux 4.18; document 004 mentions it as "aio-poll").
//
// Why not IOCB_CMD_PREAD on the socket? Kernel AIO is asynchronous only
// where the file's code supports it (O_DIRECT on block devices); a read
// on a socket submitted through io_submit just runs the ordinary read,
// blocking inside io_submit until data comes (document 000 §5.3). What
// kernel AIO can do for sockets is *wait*: an IOCB_CMD_POLL request
// completes when the socket is ready for the events in aio_buf, and its
// io_event.res holds the ready events, like poll's revents. The copy is
// then an ordinary non-blocking recv()/send(), as in 03-06.
//
// A poll request completes once (like EPOLLONESHOT): after handling it,
// the server submits a new one for that socket, asking for what its state
// needs (POLLIN while there is room, POLLOUT while output is pending). If
// the socket is already ready when submitted, it completes at once; so
// the server may read a bounded amount and let the next request report
// the rest. All the requests of a round go to the kernel in one io_submit.
//
// The listening socket is watched the same way. SIGINT and SIGTERM are
// blocked except while the server waits, in io_pgetevents(), which installs
// a signal mask for the wait as ppoll does (04-poll). (A signalfd cannot be
// watched by an AIO poll request: the kernel completes those in a worker
// thread, which does not see our process's pending signals.)
//
// usage: server [PORT] [--host ADDR] [--quiet] [--max-events N]   (PORT 8009; 0: any free port)
//        --max-events: the AIO context's size, the most sockets watched at once
//
// strace: strace -e trace=io_setup,io_submit,io_pgetevents,accept4,recvfrom,sendto ./build/09-aio-kernel/server 0
//   io_submit(ctx, 2, [{aio_lio_opcode=IOCB_CMD_POLL, aio_fildes=3, aio_buf=POLLIN}, ...]) = 2,
//   io_pgetevents(...) = 1 with [{data=..., obj=..., res=POLLIN}], then accept4 until EAGAIN.

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "aio_abi.hpp"
#include "common/errors.hpp"
#include "common/event_names.hpp"
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
};

struct Server {
    aio_context_t context;
    unsigned max_events;
    const EventLog& log;
    std::unordered_map<int, std::unique_ptr<Connection>> connections;
    std::vector<iocb*> to_submit;  // poll requests of this round, submitted together
    Counters counters;
};

// Prepares a one-shot poll request for `fd`; submitted at the end of the round.
void watch(Server& server, Watch& watch, int fd, short events) {
    watch.request = iocb{};
    watch.request.aio_lio_opcode = IOCB_CMD_POLL;
    watch.request.aio_fildes = static_cast<std::uint32_t>(fd);
    watch.request.aio_buf = static_cast<std::uint16_t>(events);  // for IOCB_CMD_POLL: the events, not a buffer
    watch.request.aio_data = reinterpret_cast<std::uint64_t>(&watch);
    server.to_submit.push_back(&watch.request);
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

bool flush(Server& server, Connection& connection) {
    const auto result = connection.pending.flush_to(connection.fd.get());
    connection.echoed += result.bytes_sent;
    server.counters.bytes_echoed += result.bytes_sent;
    if (result.status == PendingOutput::FlushStatus::error) {
        server.log("send to %s: %s", connection.peer.c_str(), describe_failure("send", result.error).c_str());
        return false;
    }
    return true;
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
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EMFILE && errno != ENFILE &&
                errno != ECONNABORTED && errno != EINTR) {
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
    std::size_t offset = 0;
    while (offset < server.to_submit.size()) {
        ++server.counters.submit_calls;
        const int queued = io_submit(server.context, static_cast<long>(server.to_submit.size() - offset),
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
}

}  // namespace

int main(int argc, char** argv) {
    unsigned max_events = 4096;
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "echo server on kernel AIO poll requests (IOCB_CMD_POLL): io_submit, io_getevents.", 8009,
        {{"--max-events", "N", "the AIO context's size: sockets watched at once (16 to 65536, default 4096)",
          [&max_events](std::string_view value) {
              const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), max_events);
              return error == std::errc{} && end == value.data() + value.size() && max_events >= 16 &&
                     max_events <= 65536;
          }}});
    const EventLog log(options.quiet);

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    install_stop_handlers(-1);  // the handler sets a flag; io_pgetevents returns EINTR
    // SIGUSR1 (a status line) is not blocked: it may interrupt any call, and
    // if it comes just before io_pgetevents, the line waits for the next event.
    install_status_handler();
    // The stop signals: blocked, except inside io_pgetevents (see above).
    const sigset_t stop_set = stop_signals();
    sigset_t mask_while_waiting;
    if (::sigprocmask(SIG_BLOCK, &stop_set, &mask_while_waiting) == -1) {
        report_failure("sigprocmask SIG_BLOCK SIGINT SIGTERM", errno);
        return 1;
    }
    ::sigdelset(&mask_while_waiting, SIGINT);
    ::sigdelset(&mask_while_waiting, SIGTERM);
    Server server{0, max_events, log, {}, {}, {}};
    if (io_setup(max_events, &server.context) == -1) {
        // EAGAIN: all AIO contexts together may hold /proc/sys/fs/aio-max-nr requests.
        report_failure("io_setup " + std::to_string(max_events), errno);
        return 1;
    }
    DescriptorReserve reserve;
    Watch listening{{}, Watch::Kind::listening};
    watch(server, listening, listen_fd.get(), POLLIN);
    if (!submit(server)) {  // refused here if the kernel has no AIO poll
        io_destroy(server.context);
        return 1;
    }
    if (!print_ready_line(listen_fd.get())) {
        io_destroy(server.context);
        return 1;
    }

    std::vector<io_event> events(128);
    bool failed = false;
    const auto print_counts = [&](void (*print)(std::initializer_list<Count>)) {
        print({{server.counters.connections, "connections"},
               {server.counters.bytes_echoed, "bytes echoed"},
               {server.counters.submit_calls, "io_submit calls"},
               {server.counters.getevents_calls, "io_pgetevents calls"},
               {server.counters.completions, "completions"}});
    };
    // stop_signal_pending(): as with ppoll, a stop signal is delivered in
    // io_pgetevents only when it would sleep (see common/server.hpp).
    while (!stop_requested() && !stop_signal_pending()) {
        if (status_requested()) {
            print_counts(print_status);
        }
        ++server.counters.getevents_calls;
        // Sleeps (phase 1) until at least one poll request has completed.
        const int completed = io_pgetevents(server.context, 1, static_cast<long>(events.size()), events.data(),
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
    // Cancels the poll requests still in flight, before their sockets close.
    io_destroy(server.context);
    server.connections.clear();
    print_counts(print_summary);
    return failed ? 1 : 0;
}
