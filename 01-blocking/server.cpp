// 01-blocking/server.cpp: a blocking echo server, one process per connection.
//
// Every call sleeps until it can finish: accept4() until a client connects,
// recv() through both phases of a read (wait for data, copy it). While one
// call sleeps the process can do nothing else, so the parent only accepts
// and fork()s, each child echoes one client (echo_until_eof in
// echo_connection.hpp) and exits, and the parent reaps children on SIGCHLD.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8001; 0: any free port)
//
// strace: strace -f -e trace=accept4,clone,clone3,recvfrom,sendto,wait4,kill ./build/01-blocking/server 0
//   the parent blocks in accept4(); each connection adds a clone() (glibc's
//   fork); the child blocks in recvfrom() and sends with sendto(); its exit
//   shows up in the parent as "--- SIGCHLD" followed by wait4().
//
// Read `main`'s loop first; the functions above it are its steps.

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <new>
#include <set>
#include <string>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "echo_connection.hpp"

using namespace iomodels;

namespace {

// Counted by the SIGCHLD handler, read by main: a signal handler may only
// touch lock-free atomics.
std::atomic<int> children_reaped{0};
// Of those, the children a signal killed (a SIGPIPE from a send without
// MSG_NOSIGNAL, a crash): the parent lives on, so only this count tells.
std::atomic<int> children_killed{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only use lock-free atomics");

void count_reaped(int status) {
    ++children_reaped;
    if (WIFSIGNALED(status)) {
        ++children_killed;
    }
}

// SIGCHLD: a child has exited. Reap every child that has exited so far, not
// just one: signals do not queue, and two children exiting together raise
// SIGCHLD once (UNP 5.10). Without this, each child stays a zombie.
void on_sigchld(int) {
    // Lab: waitpid(-1, WNOHANG) until no exited child is left, count_reaped for each; errno as it was.
    const int saved_errno = errno;
    int status = 0;
    while (::waitpid(-1, &status, WNOHANG) > 0) {
        count_reaped(status);
    }
    errno = saved_errno;
    // Lab end.
}

// No SA_RESTART: a SIGCHLD that arrives during accept() makes it return
// EINTR, the loop goes round, nothing is lost.
bool install_sigchld_handler() {
    struct sigaction action {};
    action.sa_handler = on_sigchld;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGCHLD, &action, nullptr) == -1) {
        report_failure("sigaction SIGCHLD", errno);
        return false;
    }
    return true;
}

// sigprocmask(`how`, `signals`). It fails only on a bad argument (EINVAL,
// EFAULT), which would be a bug here: reported, exit 1.
void block_signals(int how, std::initializer_list<int> signals) {
    sigset_t set;
    sigemptyset(&set);
    for (const int signal : signals) {
        sigaddset(&set, signal);
    }
    if (::sigprocmask(how, &set, nullptr) == -1) {
        report_failure(how == SIG_BLOCK ? "sigprocmask SIG_BLOCK" : "sigprocmask SIG_UNBLOCK", errno);
        std::exit(1);
    }
}

// The children still running, so that a stop can end them. A pid is
// removed once it is reaped; SIGCHLD is blocked while the set is checked,
// so the handler cannot reap a child between our check and our kill() (its
// pid could then be reused by an unrelated process).
class Children {
public:
    void add(pid_t pid) { pids_.insert(pid); }

    // Forgets the children that have exited.
    void forget_reaped() {
        block_signals(SIG_BLOCK, {SIGCHLD});
        std::erase_if(pids_, [](pid_t pid) { return reap_if_exited(pid); });
        block_signals(SIG_UNBLOCK, {SIGCHLD});
    }

    // SIGTERM to every child still running (each then ends its
    // connection and exits), then waits for each.
    void terminate_all(const EventLog& log) {
        block_signals(SIG_BLOCK, {SIGCHLD});
        for (const pid_t pid : pids_) {
            if (!reap_if_exited(pid)) {
                if (::kill(pid, SIGTERM) == -1) {
                    log("%s", describe_failure("kill " + std::to_string(pid) + " SIGTERM", errno).c_str());
                }
                int status = 0;
                while (::waitpid(pid, &status, 0) == -1 && errno == EINTR) {
                }
                count_reaped(status);  // (our SIGTERM ends a child with exit 0: its stop handler)
            }
        }
        pids_.clear();
    }

private:
    // True if `pid` is no longer running: reaped now, or already by the handler.
    static bool reap_if_exited(pid_t pid) {
        int status = 0;
        const pid_t result = ::waitpid(pid, &status, WNOHANG);
        if (result == pid) {
            count_reaped(status);
        }
        return result != 0;  // 0: still running; -1 ECHILD: reaped earlier
    }

    std::set<pid_t> pids_;
};

// socket, bind, listen: written out here, once, as in document 004. (The
// other servers call listen_tcp() from common/, which does the same.)
unique_fd listen_by_hand(const ServerOptions& options) {
    unique_fd listen_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listen_fd) {
        report_failure("socket AF_INET SOCK_STREAM", errno);
        return unique_fd{};
    }
    // Lets a restarted server bind its port while old connections are in TIME_WAIT.
    const int on = 1;
    if (::setsockopt(listen_fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1) {
        report_failure("setsockopt SO_REUSEADDR", errno);
        return unique_fd{};
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(options.port);
    address.sin_addr = *parse_ipv4(options.host);  // checked by the option parser
    if (::bind(listen_fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        report_failure("bind " + format_address(address), errno);
        return unique_fd{};
    }
    // SOMAXCONN, not document 004's 10: clients that arrive together wait in
    // the kernel's queue instead of having their SYNs dropped.
    if (::listen(listen_fd.get(), SOMAXCONN) == -1) {
        report_failure("listen " + format_address(address), errno);
        return unique_fd{};
    }
    return listen_fd;
}

// The bytes echoed, counted by the children: after fork() a child's memory
// is a copy, so a plain counter's increments would stay in the child. An
// anonymous MAP_SHARED mapping stays shared across fork(), and a lock-free
// atomic works between processes. nullptr (reported) if mmap failed.
std::atomic<std::uint64_t>* map_shared_counter() {
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
    void* shared = ::mmap(nullptr, sizeof(std::atomic<std::uint64_t>), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        report_failure("mmap MAP_SHARED", errno);
        return nullptr;
    }
    return new (shared) std::atomic<std::uint64_t>(0);
}

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t children_forked = 0;
    const std::atomic<std::uint64_t>* bytes_echoed = nullptr;  // in the shared mapping

    [[nodiscard]] std::array<Count, 5> list() const {
        return {{{connections, "connections"},
                 {bytes_echoed->load(), "bytes echoed"},
                 {children_forked, "children forked"},
                 {static_cast<std::uint64_t>(children_reaped.load()), "children reaped"},
                 {static_cast<std::uint64_t>(children_killed.load()), "killed by a signal"}}};
    }
};

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "Blocking echo server: one process per connection.", 8001);
    const EventLog log(options.quiet);
    unique_fd listen_fd = listen_by_hand(options);
    if (!listen_fd) {
        return 1;
    }
    std::atomic<std::uint64_t>* const bytes_echoed = map_shared_counter();
    if (bytes_echoed == nullptr || !install_sigchld_handler()) {
        return 1;
    }
    install_stop_handlers(listen_fd.get());
    install_status_handler();  // SIGUSR1: a status line; it interrupts accept() like SIGCHLD
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Children children;
    Counters counters{.bytes_echoed = bytes_echoed};
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
            // Out of descriptors: refuse this client rather than fail again at once, in a busy loop.
            connection = reserve.accept_or_refuse(listen_fd.get(), peer, log);
        }
        if (!connection) {
            // EINTR: a signal (SIGCHLD, SIGUSR1, a stop) ended the sleep; EINVAL: the stop handler
            // shut the listening socket down; EMFILE/ENFILE: refused and logged just above.
            if (!accept_failed_harmlessly(errno) && errno != EINVAL && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            children.forget_reaped();  // a SIGCHLD may have interrupted accept
            continue;
        }
        ++counters.connections;
        const std::string peer_name = format_address(peer);

        // Stop signals stay blocked across fork() until the child has its
        // own stop handling: a SIGTERM meant for the child must not run the
        // parent's handler in it, which would shut down the listening
        // socket the two processes share.
        // Lab: fork: the child closes the listening socket, serves this client (echo_until_eof) and _Exits;
        // Lab: the parent lists the child (children.add), closes its copy of the connection, accepts again.
        // Lab stub: echo_until_eof(connection.get(), log, *bytes_echoed);  // until it is written: no child
        block_signals(SIG_BLOCK, {SIGINT, SIGTERM});
        const pid_t pid = ::fork();
        const int fork_error = errno;
        if (pid == 0) {
            // Child: serve this one client, then exit. A stop signal shuts
            // the connection down, so a recv() sleeping for the client
            // returns 0 and the child finishes like any other.
            if (::signal(SIGCHLD, SIG_DFL) == SIG_ERR) {
                report_failure("signal SIGCHLD SIG_DFL", errno);
                std::_Exit(1);
            }
            install_stop_handlers(-1);
            shut_down_on_stop(connection.get());
            block_signals(SIG_UNBLOCK, {SIGINT, SIGTERM});
            listen_fd.reset();  // the parent keeps listening; the child only needs its connection
            const std::uint64_t echoed = echo_until_eof(connection.get(), log, *bytes_echoed);
            log("closed %s (pid %d, %llu bytes echoed)", peer_name.c_str(), static_cast<int>(::getpid()),
                static_cast<unsigned long long>(echoed));
            connection.reset();
            std::_Exit(0);  // not exit(): the parent's atexit handlers and stdio buffers are not ours
        }
        block_signals(SIG_UNBLOCK, {SIGINT, SIGTERM});
        if (pid == -1) {
            log("%s: refusing %s", describe_failure("fork", fork_error).c_str(), peer_name.c_str());
            continue;  // `connection` closes here: the client sees EOF
        }
        children.add(pid);
        ++counters.children_forked;
        log("accepted %s on fd %d, child pid %d", peer_name.c_str(), connection.get(), static_cast<int>(pid));
        // The parent closes its copy; the child's copy keeps the connection open.
        connection.reset();
        children.forget_reaped();
        // Lab end.
    }

    listen_fd.reset();
    children.terminate_all(log);
    print_summary(counters.list());
    if (::munmap(bytes_echoed, sizeof(std::atomic<std::uint64_t>)) == -1) {
        report_failure("munmap", errno);
    }
    return 0;
}
