// What every echo server prints and how it stops (CONTRACT.md):
// - the ready line on stdout: "listening on 127.0.0.1:PORT";
// - per-event log lines on stderr, silenced by --quiet;
// - SIGINT/SIGTERM: stop, then one summary line on stderr, exit 0;
// - SIGUSR1: one status line on stderr (the summary's counts so far), go on.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>

#include "common/unique_fd.hpp"

namespace iomodels {

// Prints "listening on ADDR:PORT" (the port really bound, found with
// getsockname, so port 0 shows the kernel's choice) on stdout and flushes.
// Pass "udp " as `kind` for "listening on udp ADDR:PORT". Returns false if
// getsockname failed (reported).
bool print_ready_line(int listen_fd, std::string_view kind = "");

// Per-event log lines: "server: accepted 127.0.0.1:40278 on fd 4".
class EventLog {
public:
    explicit EventLog(bool quiet) : quiet_(quiet) {}
    // printf-style; one fprintf per line, so lines from threads do not mix.
    [[gnu::format(printf, 2, 3)]] void operator()(const char* format, ...) const;
    [[nodiscard]] bool quiet() const noexcept { return quiet_; }

private:
    bool quiet_;
};

// One counter of the summary line.
struct Count {
    std::uint64_t value;
    std::string_view what;  // "connections", "bytes echoed", "epoll_wait calls"
};

// "server: summary: 3 connections, 1536 bytes echoed, 3 children forked"
// A server keeps its counters in a struct whose list() returns them as
// Counts, and passes that here and to print_status.
void print_summary(std::span<const Count> counts);
void print_summary(std::initializer_list<Count> counts);

// "server: status: 3 connections, 1536 bytes echoed, 3 children forked":
// the same counts, printed while the server runs (on SIGUSR1).
void print_status(std::span<const Count> counts);
void print_status(std::initializer_list<Count> counts);

// A spare descriptor for when the process runs out of descriptors. Without
// it, accept() fails with EMFILE at once, again and again, while the client
// stays queued: a busy loop. With it, the server closes the spare, accepts
// the client in its place, and closes that connection at once (the client
// is refused, and told so by the closed connection). libev and libuv do the
// same.
class DescriptorReserve {
public:
    DescriptorReserve();  // opens /dev/null

    // Call after accept() failed with EMFILE or ENFILE. Accepts the next
    // client (waiting for one if `listen_fd` is blocking) in the spare's
    // place. If descriptors were freed meanwhile, returns the connection to
    // be served; otherwise logs, refuses it and returns an invalid unique_fd
    // with errno kept (EMFILE or ENFILE; or accept's own error).
    // `accept_flags` are accept4's (SOCK_NONBLOCK for an event loop).
    unique_fd accept_or_refuse(int listen_fd, sockaddr_in& peer, const EventLog& log,
                               int accept_flags = SOCK_CLOEXEC);

    // False if the spare could not be (re)opened (the system's file table
    // is full: ENFILE): accept_or_refuse cannot take a client off the queue.
    [[nodiscard]] bool available() const noexcept { return spare_.valid(); }

private:
    unique_fd spare_;
};

// SIGINT and SIGTERM ask the program to stop. The handler only sets a flag
// (and, if `listen_fd` >= 0, shuts that socket down so that a blocked
// accept() returns at once: shutdown is async-signal-safe). It is installed
// without SA_RESTART, so a blocking call the signal interrupts fails with
// EINTR and the loop around it can look at stop_requested(). It also
// unblocks them: a signal mask is inherited, and a parent may have them
// blocked. (A server that keeps them blocked outside pselect or ppoll
// blocks them after this call.) Called during setup: a failed sigaction or
// sigprocmask is reported and the program exits 1.
void install_stop_handlers(int listen_fd = -1);

// Also shut this connected socket down (SHUT_RDWR) when a stop signal
// arrives, so that a recv() blocked on it returns 0 at once; -1: none. For a
// server with one connection at a time; set it back to -1 before closing.
void shut_down_on_stop(int connection_fd) noexcept;

bool stop_requested() noexcept;

// SIGUSR1 asks for a status line, as `kill -USR1` asks dd(1) for its
// progress. The handler only sets a flag, and is installed without
// SA_RESTART like the stop handler: whatever blocking call it interrupts
// (accept, recv, send, epoll_wait, sigwaitinfo ...) fails with EINTR, and
// the code around that call must retry it without losing a byte. The loop
// prints the line when it next comes round; a request that arrives just
// before it goes to sleep waits for the next event. Install it before the
// ready line: SIGUSR1's default action is to terminate the process. A
// failed call is reported and the program exits 1, as above.
void install_status_handler();

// True if SIGUSR1 came since the last call, and clears the flag: several
// requests before one look give one status line.
bool status_requested() noexcept;

// True if SIGUSR1 came and status_requested() has not taken it yet, without
// clearing it: for a loop that polls memory instead of sleeping in a
// system call (09's uring_server --sqpoll), to know when to go round.
bool status_request_pending() noexcept;

// For a server that waits in pselect, ppoll or io_pgetevents, which take a
// signal mask for the time they wait: installs the stop and status handlers,
// then blocks SIGINT and SIGTERM everywhere but in that wait, and returns the
// mask to give it (the one before, the stop signals unblocked). A stop
// signal that comes after the loop looked at stop_requested() and before it
// sleeps stays pending; the wait unblocks it as it starts, the handler runs
// and the wait returns EINTR. SIGUSR1 stays unblocked. Called during setup:
// a failed call is reported and the program exits 1.
sigset_t block_stop_signals_outside_the_wait();

// True if SIGINT or SIGTERM is pending while blocked. A server that keeps
// the stop signals blocked except inside pselect/ppoll needs this too: Linux
// delivers the signal in such a call only when it would sleep, so while some
// descriptor is ready at every call the signal stays pending and the
// handler never runs.
bool stop_signal_pending() noexcept;

// The signal set {SIGINT, SIGTERM}, for sigprocmask/ppoll/epoll_pwait/signalfd.
sigset_t stop_signals();

// Takes every pending instance of `signal` (blocked, queued) off the queue
// without waiting: sigtimedwait() with a zero timeout, until it says EAGAIN.
// Returns how many there were. After a real-time signal queue overflow
// (07, 08), the queued signals are stale and are thrown away this way.
std::uint64_t discard_pending(int signal);

// For an event loop that waits in epoll_wait: blocks SIGINT and SIGTERM and
// returns a signalfd (non-blocking, close-on-exec) that becomes readable
// when one of them arrives. The stop request is then one more descriptor in
// the interest list, and cannot be lost between a check and the wait: a
// blocked signal stays pending, and the signalfd stays readable, until it is
// read. Invalid (and reported) if a call failed.
unique_fd open_stop_signal_fd();

}  // namespace iomodels
