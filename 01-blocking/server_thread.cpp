// 01-blocking/server_thread.cpp: a blocking echo server, one thread per
// connection.
//
// The same blocking calls as server.cpp (accept, recv, send all sleep until
// they can finish), but each connection gets a thread instead of a process
// (document 003 "阻塞式I/O模型": threads cost less than processes and share
// memory, so a counter needs an atomic instead of a shared mapping). The
// main thread only accepts; each thread echoes one client and ends.
//
// usage: server_thread [PORT] [--host ADDR] [--quiet]   (PORT 8001; 0: any free port)
//
// strace: strace -f -e trace=accept4,clone,clone3,recvfrom,sendto ./build/01-blocking/server_thread 0
//   each connection adds one clone3() with CLONE_THREAD in its flags (a new
//   thread, not a process; compare server.cpp), and the recvfrom() calls
//   carry the new thread's id.

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "echo_connection.hpp"

using namespace iomodels;

namespace {

// The connections being served, so that a stop can end them: shutdown()
// makes a thread's blocked recv() return 0 and its send() fail, and the
// thread then finishes by itself. A thread removes its descriptor before
// closing it, so we never shut down a number the kernel has handed to a new
// connection.
class Connections {
public:
    void add(int fd) {
        const std::lock_guard lock(mutex_);
        fds_.insert(fd);
    }

    void remove(int fd) {
        const std::lock_guard lock(mutex_);
        fds_.erase(fd);
        if (fds_.empty()) {
            none_left_.notify_all();
        }
    }

    void shut_down_all() {
        const std::lock_guard lock(mutex_);
        for (const int fd : fds_) {
            ::shutdown(fd, SHUT_RDWR);
        }
    }

    void wait_until_none_left() {
        std::unique_lock lock(mutex_);
        none_left_.wait(lock, [this] { return fds_.empty(); });
    }

private:
    std::mutex mutex_;
    std::condition_variable none_left_;
    std::set<int> fds_;
};

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "Blocking echo server: one thread per connection.", 8001);
    const EventLog log(options.quiet);

    // The same socket, bind and listen that server.cpp writes out by hand.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    install_stop_handlers(listen_fd.get());
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Connections connections;
    std::atomic<std::uint64_t> bytes_echoed{0};
    std::uint64_t accepted = 0;
    std::uint64_t threads_started = 0;
    while (!stop_requested()) {
        sockaddr_in peer{};
        unique_fd connection = accept_client(listen_fd.get(), peer, reserve, log);  // blocks
        if (!connection) {
            continue;  // interrupted, refused or failed: see accept_client
        }
        ++accepted;
        const std::string peer_name = format_address(peer);
        const int fd = connection.get();
        connections.add(fd);
        try {
            // The thread owns the connection from here on. Detached: it ends
            // by itself, and `connections` tells main when all have ended.
            std::thread([&connections, &bytes_echoed, &log, connection = std::move(connection), peer_name]() mutable {
                const std::uint64_t echoed = echo_until_eof(connection.get(), log, bytes_echoed);
                log("closed %s (%llu bytes echoed)", peer_name.c_str(), static_cast<unsigned long long>(echoed));
                connections.remove(connection.get());
                connection.reset();  // after remove(): see Connections
            }).detach();
            ++threads_started;
            log("accepted %s on fd %d, new thread", peer_name.c_str(), fd);
        } catch (const std::system_error& error) {
            // No thread (EAGAIN: the thread limit or memory). The lambda
            // was never run, so `connection` was destroyed with it.
            connections.remove(fd);
            log("cannot start a thread for %s (%s): refused", peer_name.c_str(), error.what());
        }
    }

    // Stop: no new connections, end the ones in progress, wait for their threads.
    connections.shut_down_all();
    connections.wait_until_none_left();
    print_summary({{accepted, "connections"}, {bytes_echoed.load(), "bytes echoed"}, {threads_started, "threads started"}});
    return 0;
}
