// 10-aio-posix/server.cpp: an echo server on POSIX AIO (document 004's
// server_aio.c, done right: the README says what it got wrong). Each
// connection is a chain of requests on one aiocb: aio_read, then aio_write
// of exactly the bytes read, then the next aio_read. Completions are
// SIGEV_THREAD: glibc calls on_read_done or on_write_done in a thread of its
// own, which queues the next request. The main thread only accepts. glibc
// runs each request as a blocking read() or write() in a helper thread;
// --threads sizes that pool (aio_init), and a connection beyond it is refused.
//
// usage: server [PORT] [--host ADDR] [--quiet] [--threads N]   (PORT 8010; 0: any free port)
//
// strace: strace -f -e trace=accept4,pread64,read,write,clone3 ./build/10-aio-posix/server 0
//   the main thread's accept4; in a helper thread pread64(...) = -1 ESPIPE then
//   read(...) that blocks until the client sends; clone3 for notification threads.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <aio.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

struct Server;

// One connection's state, on the heap: its requests point into it.
struct Connection {
    Server* server = nullptr;
    unique_fd fd;
    std::string peer;
    std::vector<char> buffer = std::vector<char>(64 * 1024);
    std::unique_ptr<aiocb> request = std::make_unique<aiocb>();  // apart: aiocb ends in a zero-size array
    std::size_t to_write = 0;  // bytes the last read returned
    std::size_t written = 0;   // of those, written back so far
    std::uint64_t echoed = 0;
};

// What the summary and status lines count.
struct Counters {
    std::atomic<std::uint64_t> accepted{0}, bytes_echoed{0}, reads{0}, writes{0};  // from any thread
    std::uint64_t refused = 0;                                                       // main thread only

    [[nodiscard]] std::array<Count, 5> list() const {
        return {{{accepted.load(), "connections"},
                 {bytes_echoed.load(), "bytes echoed"},
                 {reads.load(), "aio_read calls"},
                 {writes.load(), "aio_write calls"},
                 {refused, "refused connections"}}};
    }
};

struct Server {
    const EventLog& log;
    std::mutex mutex{};                    // guards `connections`
    std::condition_variable all_closed{};  // signalled when `connections` becomes empty
    std::unordered_map<Connection*, std::unique_ptr<Connection>> connections{};
    Counters counters{};
};

void on_read_done(sigval value);
void on_write_done(sigval value);

// Called first in each notification. glibc's helper thread notifies us
// while the finished request is still in its queue, and takes it out right
// after, under its lock, reading the aiocb. aio_cancel takes the same lock:
// on a finished request it only answers AIO_ALLDONE, and once it has
// answered, glibc is done with the aiocb, which may be reused or freed.
void wait_for_glibc_to_let_go(Connection& connection) {
    ::aio_cancel(connection.fd.get(), connection.request.get());
}

// The connection's next request, with SIGEV_THREAD notification.
bool queue(Connection& connection, bool write) {
    aiocb& request = *connection.request;
    request = aiocb{};
    request.aio_fildes = connection.fd.get();
    request.aio_offset = 0;  // ignored for a socket
    request.aio_sigevent.sigev_notify = SIGEV_THREAD;
    request.aio_sigevent.sigev_notify_function = write ? on_write_done : on_read_done;
    request.aio_sigevent.sigev_value.sival_ptr = &connection;
    // Lab: a write: the bytes read and not yet written, by aio_write; a read: the whole buffer, by aio_read.
    // Lab: Count it in connection.server->counters; true once it is queued.
    // Lab stub: errno = ENOSYS;  // not written yet: no request queued, the connection is closed
    if (write) {
        request.aio_buf = connection.buffer.data() + connection.written;
        request.aio_nbytes = connection.to_write - connection.written;  // exactly the bytes read, not strlen
        ++connection.server->counters.writes;
        if (::aio_write(&request) == 0) {
            return true;
        }
    } else {
        request.aio_buf = connection.buffer.data();
        request.aio_nbytes = connection.buffer.size();
        ++connection.server->counters.reads;
        if (::aio_read(&request) == 0) {
            return true;
        }
    }
    // Lab end.
    // EAGAIN: glibc could not queue it (out of memory or threads).
    connection.server->log("%s: %s", connection.peer.c_str(),
                           describe_failure(write ? "aio_write" : "aio_read", errno).c_str());
    return false;
}

// The connection's last request is over: forget it (closes the socket).
void finish(Connection& connection) {
    Server& server = *connection.server;
    server.log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
               static_cast<unsigned long long>(connection.echoed));
    const std::lock_guard lock(server.mutex);
    server.connections.erase(&connection);  // destroys it
    if (server.connections.empty()) {
        server.all_closed.notify_all();
    }
}

// In a notification thread: the read is over.
void on_read_done(sigval value) {
    Connection& connection = *static_cast<Connection*>(value.sival_ptr);
    wait_for_glibc_to_let_go(connection);
    // Lab: aio_error and aio_return (once) say how the read ended: an error or end of file finishes the
    // Lab: connection; else queue the write of exactly the bytes read.
    // Lab stub: finish(connection);
    const int error = ::aio_error(connection.request.get());
    const ssize_t result = ::aio_return(connection.request.get());  // once per request
    if (error != 0 || result <= 0) {
        if (error != 0 && error != ECANCELED) {
            connection.server->log("read from %s: %s", connection.peer.c_str(),
                                   describe_failure("aio_read", error).c_str());
        } else if (result == 0) {
            connection.server->log("end of file from %s", connection.peer.c_str());
        }
        finish(connection);
        return;
    }
    connection.to_write = static_cast<std::size_t>(result);
    connection.written = 0;
    if (!queue(connection, true)) {
        finish(connection);
    }
    // Lab end.
}

// In a notification thread: the write is over.
void on_write_done(sigval value) {
    Connection& connection = *static_cast<Connection*>(value.sival_ptr);
    wait_for_glibc_to_let_go(connection);
    // Lab: how the write ended: an error finishes the connection; else count the bytes written, and queue
    // Lab: the rest of a short write, or the next read.
    // Lab stub: finish(connection);
    const int error = ::aio_error(connection.request.get());
    const ssize_t result = ::aio_return(connection.request.get());
    if (error != 0) {
        // EPIPE, ECONNRESET: the peer is gone (SIGPIPE is ignored, see start_helper_threads).
        connection.server->log("write to %s: %s", connection.peer.c_str(),
                               describe_failure("aio_write", error).c_str());
        finish(connection);
        return;
    }
    connection.written += static_cast<std::size_t>(result);
    connection.echoed += static_cast<std::uint64_t>(result);
    connection.server->counters.bytes_echoed += static_cast<std::uint64_t>(result);
    // A short write: the rest. All written: the next read.
    if (!queue(connection, connection.written < connection.to_write)) {
        finish(connection);
    }
    // Lab end.
}

// Sizes glibc's pool before the first request, and ignores SIGPIPE.
// False (reported): signal() failed.
bool start_helper_threads(int threads) {
    // glibc runs each request in one of its threads, and an idle
    // connection's read holds its thread: as many threads as connections to
    // serve at once (glibc's default is 20). Idle threads exit after 1 s.
    aioinit settings{};
    settings.aio_threads = threads;
    settings.aio_num = threads;
    settings.aio_idle_time = 1;
    ::aio_init(&settings);  // void: nothing to check
    // glibc writes to a socket with write(), in a helper thread that blocks
    // every signal, so a peer that has gone gives EPIPE and the SIGPIPE
    // stays pending there. Ignored anyway: nothing in this process should
    // depend on which thread happens to write.
    if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        report_failure("signal SIGPIPE SIG_IGN", errno);
        return false;
    }
    return true;
}

// A connection just accepted: its state on the heap, and its first aio_read.
void add_connection(Server& server, unique_fd fd, const sockaddr_in& peer) {
    server.log("accepted %s on fd %d", format_address(peer).c_str(), fd.get());
    auto connection = std::make_unique<Connection>();
    connection->server = &server;
    connection->fd = std::move(fd);
    connection->peer = format_address(peer);
    Connection& added = *connection;
    {
        const std::lock_guard lock(server.mutex);
        server.connections.emplace(&added, std::move(connection));
    }
    if (!queue(added, false)) {
        finish(added);
    }
}

// Stop: a read blocked in a glibc thread cannot be cancelled (aio_cancel
// answers AIO_NOTCANCELED), but shutting the socket down ends it: read()
// returns 0, and the connection finishes as at end of file. Returns when
// every connection has finished.
void close_all_connections(Server& server) {
    std::unique_lock lock(server.mutex);
    for (const auto& [address, connection] : server.connections) {
        ::shutdown(connection->fd.get(), SHUT_RDWR);
    }
    server.all_closed.wait(lock, [&server] { return server.connections.empty(); });
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 1024;
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "echo server on POSIX AIO: aio_read, aio_write, SIGEV_THREAD completions.", 8010,
        {{"--threads", "N",
          "glibc's AIO threads, the most connections served at once; more are refused (aio_init; default 1024)",
          number(threads, 1, 16384)}});
    const EventLog log(options.quiet);
    if (!start_helper_threads(threads)) {
        return 1;
    }

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // The handler shuts the listening socket down, so the blocked accept4
    // returns. (glibc's helper threads block every signal, but its
    // SIGEV_THREAD notification threads do not: the handler may run in
    // one of them, and shutdown() works from any thread.)
    install_stop_handlers(listen_fd.get());
    install_status_handler();  // SIGUSR1: a status line, printed when accept4 returns EINTR
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Server server{.log = log};
    while (!stop_requested()) {
        if (status_requested()) {
            print_status(server.counters.list());
        }
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fd = reserve.accept_or_refuse(listen_fd.get(), peer, log);
        }
        if (!fd) {
            // EINVAL: a stop signal shut the listening socket down. EMFILE,
            // ENFILE: the reserve refused the client and logged it.
            if (!accept_failed_harmlessly(errno) && errno != EINVAL && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            continue;  // EINTR/EINVAL: a stop signal or SIGUSR1; the loop looks at both flags
        }
        ++server.counters.accepted;
        // Each connection's request holds one of glibc's threads, for as
        // long as its client is silent. With every thread held, the next
        // connection's aio_read would wait in glibc's queue and its client
        // would not be served at all. Refuse it instead, as a server out of
        // descriptors does: the client sees the connection closed at once.
        std::size_t open_connections = 0;
        {
            const std::lock_guard lock(server.mutex);
            open_connections = server.connections.size();
        }
        if (open_connections >= static_cast<std::size_t>(threads)) {
            ++server.counters.refused;
            log("refused %s: %zu connections hold all %d AIO threads (--threads)", format_address(peer).c_str(),
                open_connections, threads);
            continue;  // `fd` closes here
        }
        add_connection(server, std::move(fd), peer);
    }

    close_all_connections(server);
    print_summary(server.counters.list());
    return 0;
}
