// 01-blocking/server_thread.cpp: a blocking echo server, one thread per
// connection.
//
// The same blocking calls as server.cpp (accept, recv, send all sleep until
// they can finish), but each connection gets a thread instead of a process
// (document 003 "阻塞式I/O模型": threads cost less than processes and share
// memory, so a counter needs an atomic instead of a shared mapping). The
// main thread only accepts; each thread echoes one client and ends, and is
// joined.
//
// usage: server_thread [PORT] [--host ADDR] [--quiet]   (PORT 8001; 0: any free port)
//
// strace: strace -f -e trace=accept4,clone,clone3,recvfrom,sendto ./build/01-blocking/server_thread 0
//   each connection adds one clone3() with CLONE_THREAD in its flags (a new
//   thread, not a process; compare server.cpp), and the recvfrom() calls
//   carry the new thread's id.

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "echo_connection.hpp"

using namespace iomodels;

namespace {

// The threads serving connections. No thread may outlive main, so each one
// is joined: main joins the finished ones after each accept (so their
// stacks do not pile up), and a stop shuts every connection down (a blocked
// recv() then returns 0, a blocked send() fails) and joins them all.
//
// The mutex guards the open descriptors and the finished threads. A thread
// closes its connection under the mutex, so stop_all() never shuts down a
// descriptor number that the kernel has since given to a new connection.
class Workers {
public:
    // Starts a thread that runs serve(fd), then closes the connection.
    // Throws std::system_error if no thread can be started (EAGAIN); the
    // connection is closed then too.
    template <typename Serve>
    void start(unique_fd connection, Serve serve) {
        const std::lock_guard lock(mutex_);  // the thread's last step waits until it is listed
        const int fd = connection.get();
        // A new thread starts with the signal mask of the thread that
        // creates it. With SIGUSR1 blocked in every worker, a status request
        // goes to the main thread, interrupts its accept(), and is printed.
        sigset_t status_signal;
        sigemptyset(&status_signal);
        sigaddset(&status_signal, SIGUSR1);
        sigset_t before;
        ::pthread_sigmask(SIG_BLOCK, &status_signal, &before);
        const struct RestoreMask {
            const sigset_t& mask;
            ~RestoreMask() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }  // also if std::thread throws
        } restore{before};
        std::thread thread([this, connection = std::move(connection), serve]() mutable {
            serve(connection.get());
            const std::lock_guard last_step(mutex_);
            open_fds_.erase(connection.get());
            connection.reset();
            finished_.push_back(std::this_thread::get_id());
        });
        open_fds_.insert(fd);
        threads_.emplace(thread.get_id(), std::move(thread));
    }

    void join_finished() {
        std::vector<std::thread> done;
        {
            const std::lock_guard lock(mutex_);
            for (const std::thread::id id : finished_) {
                done.push_back(std::move(threads_.at(id)));
                threads_.erase(id);
            }
            finished_.clear();
        }
        for (std::thread& thread : done) {
            thread.join();  // it has finished, or is returning: a short wait
        }
    }

    void stop_all() {
        std::map<std::thread::id, std::thread> all;
        {
            const std::lock_guard lock(mutex_);
            for (const int fd : open_fds_) {
                ::shutdown(fd, SHUT_RDWR);
            }
            all.swap(threads_);
            finished_.clear();
        }
        for (auto& [id, thread] : all) {
            thread.join();
        }
    }

private:
    std::mutex mutex_;
    std::set<int> open_fds_;
    std::map<std::thread::id, std::thread> threads_;  // started, not yet joined
    std::vector<std::thread::id> finished_;           // their last step is done
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
    install_status_handler();  // SIGUSR1: a status line (see Workers::start)
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Workers workers;
    std::atomic<std::uint64_t> bytes_echoed{0};
    std::uint64_t accepted = 0;
    std::uint64_t threads_started = 0;
    const auto print_counts = [&](void (*print)(std::initializer_list<Count>)) {
        print({{accepted, "connections"}, {bytes_echoed.load(), "bytes echoed"}, {threads_started, "threads started"}});
    };
    while (!stop_requested()) {
        if (status_requested()) {
            print_counts(print_status);
        }
        sockaddr_in peer{};
        unique_fd connection = accept_client(listen_fd.get(), peer, reserve, log);  // blocks
        workers.join_finished();
        if (!connection) {
            continue;  // interrupted, refused or failed: see accept_client
        }
        ++accepted;
        const std::string peer_name = format_address(peer);
        log("accepted %s on fd %d, new thread", peer_name.c_str(), connection.get());
        try {
            // The thread owns the connection from here on.
            workers.start(std::move(connection), [&log, &bytes_echoed, peer_name](int fd) {
                const std::uint64_t echoed = echo_until_eof(fd, log, bytes_echoed);
                log("closed %s (%llu bytes echoed)", peer_name.c_str(), static_cast<unsigned long long>(echoed));
            });
            ++threads_started;
        } catch (const std::system_error& error) {
            log("cannot start a thread for %s (%s): refused", peer_name.c_str(), error.what());
        }
    }

    // Stop: no new connections; end the ones in progress and join their threads.
    workers.stop_all();
    print_counts(print_summary);
    return 0;
}
