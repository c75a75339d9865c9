#include "common/server.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/errors.hpp"
#include "common/net.hpp"

namespace iomodels {

namespace {

// The only mutable globals: what the signal handlers must touch. A
// volatile sig_atomic_t is enough for a handler that runs in the thread
// that reads the flag; in a threaded server (01's server_thread, 10's) the
// handler may run in another thread, and only a lock-free atomic is both
// safe in a handler and free of data races between threads.
std::atomic<int> stop_flag{0};
std::atomic<int> listen_fd_to_shut{-1};
std::atomic<int> connection_fd_to_shut{-1};
std::atomic<int> status_flag{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only use lock-free atomics");

void on_stop_signal(int) {
    const int saved_errno = errno;  // a handler must not change errno under the code it interrupted
    stop_flag = 1;
    if (const int fd = listen_fd_to_shut; fd >= 0) {
        ::shutdown(fd, SHUT_RD);  // wakes a blocked accept() with EINVAL
    }
    if (const int fd = connection_fd_to_shut; fd >= 0) {
        ::shutdown(fd, SHUT_RDWR);  // a blocked recv() returns 0
    }
    errno = saved_errno;
}

void on_status_signal(int) { status_flag = 1; }

// A setup call's result: -1 is reported in the CONTRACT.md format and ends
// the program with exit 1, before it prints its ready line.
void setup_or_exit(int result, const char* call) {
    if (result == -1) {
        report_failure(call, errno);
        std::exit(1);
    }
}

void print_counts(std::string_view label, std::span<const Count> counts) {
    std::string line = std::string(program_name()) + ": " + std::string(label) + ":";
    const char* separator = " ";
    for (const Count& count : counts) {
        line += separator;
        line += std::to_string(count.value);
        line += ' ';
        line += count.what;
        separator = ", ";
    }
    std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace

bool print_ready_line(int listen_fd, std::string_view kind) {
    const auto address = local_address(listen_fd);
    if (!address) {
        report_failure("getsockname", errno);
        return false;
    }
    std::printf("listening on %.*s%s\n", static_cast<int>(kind.size()), kind.data(),
                format_address(*address).c_str());
    std::fflush(stdout);  // stdout may be a pipe to a test: do not keep the line in a buffer
    return true;
}

void EventLog::operator()(const char* format, ...) const {
    if (quiet_) {
        return;
    }
    char line[512];
    // snprintf returns the length it wanted, which may exceed the buffer.
    const auto prefix = std::min<std::size_t>(
        static_cast<std::size_t>(std::max(std::snprintf(line, sizeof line, "%s: ", program_name()), 0)),
        sizeof line - 1);
    va_list args;
    va_start(args, format);
    std::vsnprintf(line + prefix, sizeof line - prefix, format, args);
    va_end(args);
    std::fprintf(stderr, "%s\n", line);
}

void print_summary(std::span<const Count> counts) { print_counts("summary", counts); }
void print_summary(std::initializer_list<Count> counts) { print_counts("summary", {counts.begin(), counts.size()}); }

void print_status(std::span<const Count> counts) { print_counts("status", counts); }
void print_status(std::initializer_list<Count> counts) { print_counts("status", {counts.begin(), counts.size()}); }

DescriptorReserve::DescriptorReserve() : spare_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

unique_fd DescriptorReserve::accept_or_refuse(int listen_fd, sockaddr_in& peer, const EventLog& log,
                                              int accept_flags) {
    const int out_of_descriptors = errno;
    spare_.reset();  // one free descriptor number, which accept takes next
    socklen_t peer_length = sizeof peer;
    unique_fd connection(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length, accept_flags));
    const int accept_error = errno;
    spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!connection) {
        errno = accept_error;  // EAGAIN (nobody waiting), EINTR, EINVAL (stop) ...
        return connection;
    }
    if (spare_) {
        return connection;  // room again: both fit, serve this client
    }
    log("%s: refused %s", describe_failure("accept", out_of_descriptors).c_str(), format_address(peer).c_str());
    connection.reset();  // first close it: the spare needs its descriptor number
    spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    errno = out_of_descriptors;
    return connection;
}

void install_stop_handlers(int listen_fd) {
    listen_fd_to_shut = listen_fd;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: interrupted blocking calls return EINTR
    setup_or_exit(::sigaction(SIGINT, &action, nullptr), "sigaction SIGINT");
    setup_or_exit(::sigaction(SIGTERM, &action, nullptr), "sigaction SIGTERM");
    const sigset_t stop = stop_signals();
    // Even if our parent had them blocked.
    setup_or_exit(::sigprocmask(SIG_UNBLOCK, &stop, nullptr), "sigprocmask SIG_UNBLOCK SIGINT SIGTERM");
}

void shut_down_on_stop(int connection_fd) noexcept { connection_fd_to_shut = connection_fd; }

bool stop_requested() noexcept { return stop_flag != 0; }

void install_status_handler() {
    struct sigaction action {};
    action.sa_handler = on_status_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART, as for the stop signals
    setup_or_exit(::sigaction(SIGUSR1, &action, nullptr), "sigaction SIGUSR1");
    sigset_t status_signal;
    sigemptyset(&status_signal);
    sigaddset(&status_signal, SIGUSR1);
    // Even if our parent had it blocked.
    setup_or_exit(::sigprocmask(SIG_UNBLOCK, &status_signal, nullptr), "sigprocmask SIG_UNBLOCK SIGUSR1");
}

sigset_t block_stop_signals_outside_the_wait() {
    install_stop_handlers(-1);
    install_status_handler();
    const sigset_t stop = stop_signals();
    sigset_t mask_while_waiting;
    setup_or_exit(::sigprocmask(SIG_BLOCK, &stop, &mask_while_waiting), "sigprocmask SIG_BLOCK SIGINT SIGTERM");
    ::sigdelset(&mask_while_waiting, SIGINT);  // (install_stop_handlers unblocked them already)
    ::sigdelset(&mask_while_waiting, SIGTERM);
    return mask_while_waiting;
}

bool status_requested() noexcept {
    return status_flag.exchange(0) != 0;  // cleared: requests before this look are one line
}

bool status_request_pending() noexcept { return status_flag.load() != 0; }

bool stop_signal_pending() noexcept {
    sigset_t pending;
    if (::sigpending(&pending) == -1) {
        return false;  // cannot happen with a valid set (EFAULT only)
    }
    return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
}

sigset_t stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

std::uint64_t discard_pending(int signal) {
    sigset_t only;
    ::sigemptyset(&only);
    ::sigaddset(&only, signal);
    const timespec no_wait{0, 0};
    std::uint64_t discarded = 0;
    while (::sigtimedwait(&only, nullptr, &no_wait) == signal) {
        ++discarded;
    }
    return discarded;
}

unique_fd open_stop_signal_fd() {
    const sigset_t stop = stop_signals();
    // Blocked first: otherwise the default action (terminate) would still
    // run before anyone reads the signalfd.
    if (::sigprocmask(SIG_BLOCK, &stop, nullptr) == -1) {
        report_failure("sigprocmask SIG_BLOCK SIGINT SIGTERM", errno);
        return unique_fd();
    }
    unique_fd fd(::signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd) {
        report_failure("signalfd SIGINT SIGTERM", errno);
    }
    return fd;
}

}  // namespace iomodels
