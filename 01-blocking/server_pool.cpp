// 01-blocking/server_pool.cpp: a blocking echo server with a pool of threads
// created once, at start (UNP's prethreaded server; 003's "thread pool").
//
// The main thread makes the listening socket and starts N worker threads
// (--threads, default 4), then only waits for signals. Every worker loops:
// a blocking accept4() on the one shared listening socket, the connection
// served to its end (echo_until_eof in echo_connection.hpp), close, accept4()
// again. No thread is made per connection, so threads, stacks and
// descriptors stay bounded by N; client N+1 is connected by the kernel but
// waits in the listen queue until a worker is free.
//
// usage: server_pool [PORT] [--host ADDR] [--quiet] [--threads N]   (PORT 8001; 0: any free port; N 4)
//
// strace: strace -f -e trace=clone3,accept4,recvfrom ./build/01-blocking/server_pool 0
//   N clone3() with CLONE_THREAD before the ready line and none after it;
//   N accept4() left unfinished, one per worker, and each connection
//   returns exactly one of them (the others sleep on).
//
// Read `Pool::work` first: it is the model's loop. `main` starts the pool,
// then sleeps in sigsuspend until a signal comes.

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
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

constexpr unsigned default_threads = 4;
constexpr unsigned most_threads = 1024;  // each reserves an 8 MiB stack (virtual memory)
// stdin, stdout, stderr, the listening socket and DescriptorReserve's spare.
constexpr unsigned own_descriptors = 5;

struct Counters {
    std::atomic<std::uint64_t> connections{0};   // added to by every worker
    std::atomic<std::uint64_t> bytes_echoed{0};  // likewise
    std::uint64_t threads_started = 0;           // by main, once

    [[nodiscard]] std::array<Count, 3> list() const {
        return {{{connections.load(), "connections"},
                 {bytes_echoed.load(), "bytes echoed"},
                 {threads_started, "threads started"}}};
    }
};

// The workers, and the connection each one is serving. No worker may
// outlive main: stop() ends them all and joins them.
//
// The mutex guards `serving_` and `stopping_`. A worker lists its connection,
// and later closes it, under the mutex, so stop() never shuts down a
// descriptor number the kernel has since given to another file; and a worker
// that accepted a client just as the stop began sees `stopping_` and closes
// that connection unserved.
class Pool {
public:
    Pool(int listen_fd, const EventLog& log, Counters& counters)
        : listen_fd_(listen_fd), log_(log), counters_(counters) {}
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    ~Pool() { stop(); }  // also after a failed start

    // Starts `count` workers. A new thread starts with the signal mask of the
    // thread that creates it: main blocks its signals first, so no worker
    // ever runs a handler and no worker's call is interrupted (no EINTR).
    // False if a thread could not be made (reported; ~Pool stops the others).
    bool start(unsigned count) {
        serving_.assign(count, -1);
        threads_.reserve(count);
        for (unsigned worker = 0; worker < count; ++worker) {
            try {
                threads_.emplace_back(&Pool::work, this, worker);  // clone3() with CLONE_THREAD in strace
            } catch (const std::system_error& error) {
                report_failure("pthread_create worker " + std::to_string(worker + 1) + " of " + std::to_string(count),
                               error.code().value());  // EAGAIN: a limit on threads (RLIMIT_NPROC, pids.max)
                return false;
            }
        }
        return true;
    }

    // No new connections; the ones being served are ended (each client
    // reads end of file); every worker returns and is joined.
    void stop() {
        {
            const std::lock_guard lock(mutex_);
            stopping_ = true;
            if (!stop_requested()) {
                // The stop handler has done this already; after a failed
                // start nobody has. Every worker's accept4 returns EINVAL.
                ::shutdown(listen_fd_, SHUT_RD);
            }
            for (const int fd : serving_) {
                if (fd >= 0) {
                    ::shutdown(fd, SHUT_RDWR);  // a blocked recv() returns 0, a blocked send() fails (EPIPE)
                }
            }
        }
        for (std::thread& thread : threads_) {
            thread.join();
        }
        threads_.clear();
    }

private:
    // The model's loop, run by every worker: sleep in accept4() until the
    // kernel hands this worker a connection, serve it to its end, close it,
    // sleep again. While a worker serves, it accepts nobody: with every
    // worker busy, new clients wait, connected, in the listen queue.
    void work(unsigned worker) {
        for (;;) {
            sockaddr_in peer{};
            unique_fd connection = accept_next(peer);
            if (!connection) {
                if (errno == EINVAL) {
                    return;  // the listening socket was shut down: the stop; this worker is done
                }
                // ECONNABORTED: a client gave up while it was queued; EMFILE/ENFILE: refused
                // and logged in accept_next. (No EINTR: the workers block every signal.)
                if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE) {
                    log_("%s", describe_failure("accept", errno).c_str());
                }
                continue;
            }
            serve(worker, std::move(connection), peer);
        }
    }

    // All the idle workers sleep in accept4() on the same socket. A new
    // connection wakes one of them, not all: a blocking accept waits in an
    // exclusive wait queue (the README shows it), so there is no thundering
    // herd to tame.
    unique_fd accept_next(sockaddr_in& peer) {
        socklen_t peer_length = sizeof peer;
        unique_fd connection(
            ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
        if (!connection && (errno == EMFILE || errno == ENFILE)) {
            // The pool fits RLIMIT_NOFILE (checked at start), so only when the
            // system's file table is full (ENFILE) or the limit was lowered
            // since (prlimit). One spare for the whole pool: one worker at a
            // time uses it (and may sleep in its accept4 meanwhile), the
            // others wait for the mutex. No busy loop.
            const std::lock_guard lock(reserve_mutex_);
            connection = reserve_.accept_or_refuse(listen_fd_, peer, log_);
        }
        return connection;
    }

    // Serves one connection to its end, listed in serving_ meanwhile so that
    // a stop can end it.
    void serve(unsigned worker, unique_fd connection, const sockaddr_in& peer) {
        {
            const std::lock_guard lock(mutex_);
            if (stopping_) {
                return;  // accepted as the stop began: closed unserved
            }
            serving_[worker] = connection.get();
        }
        ++counters_.connections;
        const std::string peer_name = format_address(peer);
        log_("accepted %s on fd %d, worker %u", peer_name.c_str(), connection.get(), worker + 1);
        const std::uint64_t echoed = echo_until_eof(connection.get(), log_, counters_.bytes_echoed);
        log_("closed %s (worker %u, %llu bytes echoed)", peer_name.c_str(), worker + 1,
             static_cast<unsigned long long>(echoed));
        const std::lock_guard lock(mutex_);
        serving_[worker] = -1;
        connection.reset();  // closed under the mutex: see the class comment
    }

    const int listen_fd_;
    const EventLog& log_;
    Counters& counters_;
    std::mutex reserve_mutex_;
    DescriptorReserve reserve_;
    std::mutex mutex_;
    std::vector<int> serving_;  // serving_[w]: worker w's connection; -1 while it waits in accept4
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

// Every worker holds a descriptor number at all times: its connection, or,
// asleep in accept4(), the number that call took as it began. So a pool of N
// needs N numbers beside the server's own, below RLIMIT_NOFILE; the workers
// of a larger pool could only ever refuse clients. Checked once, at start
// (reported, false, if it does not fit).
bool descriptor_limit_fits(unsigned threads) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == -1) {
        report_failure("getrlimit RLIMIT_NOFILE", errno);
        return false;
    }
    if (limit.rlim_cur != RLIM_INFINITY && threads + own_descriptors > limit.rlim_cur) {
        report_failure("--threads " + std::to_string(threads) + " with RLIMIT_NOFILE " +
                           std::to_string(limit.rlim_cur) + " (a descriptor per worker, " +
                           std::to_string(own_descriptors) + " for the server)",
                       EMFILE);
        return false;
    }
    return true;
}

// {SIGINT, SIGTERM, SIGUSR1}: what the handlers answer.
sigset_t handled_signals() {
    sigset_t signals = stop_signals();
    sigaddset(&signals, SIGUSR1);
    return signals;
}

}  // namespace

int main(int argc, char** argv) {
    unsigned threads = default_threads;
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "Blocking echo server: a pool of threads made at start, each serving one connection at a time.",
        8001,
        {{"--threads", "N", "worker threads, the most clients served at once (1 to 1024; default 4)",
          number(threads, 1u, most_threads)}});
    const EventLog log(options.quiet);
    if (!descriptor_limit_fits(threads)) {
        return 1;
    }
    // The same socket, bind and listen that server.cpp writes out by hand.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    install_stop_handlers(listen_fd.get());  // the handler shuts listen_fd down: every accept4 returns
    install_status_handler();
    // Blocked here, in main, before any worker exists: the workers inherit
    // the mask and never take these signals; main unblocks them only while
    // it sleeps in sigsuspend below, so every handler runs in main.
    const sigset_t signals = handled_signals();
    sigset_t unblocked;
    if (const int error = ::pthread_sigmask(SIG_BLOCK, &signals, &unblocked); error != 0) {
        report_failure("pthread_sigmask SIG_BLOCK SIGINT SIGTERM SIGUSR1", error);
        return 1;
    }

    Counters counters;
    Pool pool(listen_fd.get(), log, counters);
    if (!pool.start(threads)) {
        return 1;
    }
    counters.threads_started = threads;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    // The workers do all the serving; main only waits for signals. UNP's
    // main calls pause() here. sigsuspend() is pause() with the signals
    // unblocked only while it sleeps: a signal that comes after the look at
    // the flags stays pending until then, instead of being missed.
    while (!stop_requested()) {
        if (status_requested()) {
            print_status(counters.list());
        }
        ::sigsuspend(&unblocked);  // always returns -1, EINTR: a handler ran
    }

    // Stop: the handler has shut the listening socket down; end the
    // connections in progress and join every worker.
    pool.stop();
    print_summary(counters.list());
    return 0;
}
