// 01-blocking/server_thread.cpp: a blocking echo server, one thread per
// connection.
//
// The same blocking calls as server.cpp (accept4, recv, send all sleep until
// they can finish), but each connection gets a thread instead of a process:
// threads share memory, so a counter needs an atomic instead of a shared
// mapping. The main thread only accepts; each thread echoes one client
// (echo_until_eof in echo_connection.hpp), ends, and is joined.
//
// usage: server_thread [PORT] [--host ADDR] [--quiet]   (PORT 8001; 0: any free port)
//
// strace: strace -f -e trace=accept4,clone,clone3,recvfrom,sendto ./build/01-blocking/server_thread 0
//   each connection adds one clone3() with CLONE_THREAD in its flags (a new
//   thread, not a process; compare server.cpp), and the recvfrom() calls
//   carry the new thread's id.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
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
    // Throws std::system_error if no thread can be started (EAGAIN, or
    // pthread_sigmask failed); the connection is closed then too.
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
        if (const int error = ::pthread_sigmask(SIG_BLOCK, &status_signal, &before); error != 0) {
            throw std::system_error(error, std::generic_category(), "pthread_sigmask SIG_BLOCK");
        }
        const struct RestoreMask {
            const sigset_t& mask;
            // Also if std::thread throws. (It cannot fail: the mask is one pthread_sigmask returned.)
            ~RestoreMask() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
        } restore{before};
        // Lab: a thread that owns the connection runs serve(fd), then, under the mutex, drops fd from
        // Lab: open_fds_, closes it and adds its id to finished_ (for join_finished); list fd in open_fds_
        // Lab: and the thread in threads_.
        // Lab stub: serve(fd);  // until it is written: no thread, the caller serves
        std::thread thread([this, connection = std::move(connection), serve]() mutable {
            serve(connection.get());
            const std::lock_guard last_step(mutex_);
            open_fds_.erase(connection.get());
            connection.reset();
            finished_.push_back(std::this_thread::get_id());
        });
        open_fds_.insert(fd);
        threads_.emplace(thread.get_id(), std::move(thread));
        // Lab end.
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
                ::shutdown(fd, SHUT_RDWR);  // ENOTCONN if the peer has reset it: nobody sleeps on it then
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

struct Counters {
    std::uint64_t connections = 0;
    std::atomic<std::uint64_t> bytes_echoed{0};  // added to by every thread
    std::uint64_t threads_started = 0;

    [[nodiscard]] std::array<Count, 3> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed.load(), "bytes echoed"},
                 {threads_started, "threads started"}}};
    }
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
    Counters counters;
    while (!stop_requested()) {
        if (status_requested()) {
            print_status(counters.list());
        }
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        // Sleeps until the kernel has completed a TCP handshake for us.
        unique_fd connection(
            ::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
        if (!connection && (errno == EMFILE || errno == ENFILE)) {
            connection = reserve.accept_or_refuse(listen_fd.get(), peer, log);  // refuse it: no busy loop
        }
        workers.join_finished();
        if (!connection) {
            // EINTR: a signal (SIGUSR1, a stop) ended the sleep; EINVAL: the stop handler shut the
            // listening socket down; EMFILE/ENFILE: refused and logged just above.
            if (!accept_failed_harmlessly(errno) && errno != EINVAL && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            continue;
        }
        ++counters.connections;
        const std::string peer_name = format_address(peer);
        log("accepted %s on fd %d, new thread", peer_name.c_str(), connection.get());
        try {
            // The thread owns the connection from here on.
            workers.start(std::move(connection), [&log, &counters, peer_name](int fd) {
                const std::uint64_t echoed = echo_until_eof(fd, log, counters.bytes_echoed);
                log("closed %s (%llu bytes echoed)", peer_name.c_str(), static_cast<unsigned long long>(echoed));
            });
            ++counters.threads_started;
        } catch (const std::system_error& error) {
            log("cannot start a thread for %s (%s): refused", peer_name.c_str(), error.what());
        }
    }

    // Stop: no new connections; end the ones in progress and join their threads.
    workers.stop_all();
    print_summary(counters.list());
    return 0;
}
