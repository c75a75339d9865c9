// tests/bench/dispatch.hpp: the calibration and the dispatch cost of each
// readiness mechanism (libevent's test/bench.c method).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

// Nanoseconds per getppid(): a system call that does nothing.
double trivial_syscall_ns(int calls);

// Microseconds per 512-byte round trip through a socketpair in one thread:
// write on one end, read on the other, write back, read back. No process
// ever sleeps: the ceiling of an echo on one core.
double in_thread_round_trip_us(int round_trips);

// Microseconds per 512-byte round trip between two processes over loopback
// TCP: the floor of one connection's round trip. The child, the simplest
// echo server (blocking read and write), runs on `server_cpu`; the caller
// stays where it is (-1: no pinning) and waits for each echo in
// epoll_wait, as the load generator does.
double ping_pong_round_trip_us(int round_trips, int server_cpu);

// The cheapest TCP echo server the load generator can meet, for the measured
// ceiling: a child process on `server_cpu` (-1: not pinned), one thread,
// epoll, one recv() and one send() per message, nothing logged or counted.
// Returns its pid (registered, so that fail() stops it) and sets `port`;
// stop it with stop_cheapest_echo.
pid_t start_cheapest_echo(int server_cpu, std::uint16_t& port);
void stop_cheapest_echo(pid_t pid);

// none: no readiness mechanism at all. The program keeps a queue of the
// pairs it has written to and reads them in that order, so the column is
// what the read() and write() of each event cost by themselves, on the same
// sockets in the same order: the baseline the other columns sit on.
// uring_poll: one-shot IORING_OP_POLL_ADD requests, each re-armed after
// its CQE as aio_poll re-arms IOCB_CMD_POLL (09's uring_server --poll);
// uring_poll_multishot: IORING_POLL_ADD_MULTI, armed once, which is fairer
// to io_uring (no re-arming at all), shown as a row of its own.
enum class Mechanism { none, select, poll, epoll_lt, epoll_et, rtsig, aio_poll, uring_poll, uring_poll_multishot };
inline constexpr Mechanism all_mechanisms[] = {Mechanism::none,     Mechanism::select,     Mechanism::poll,
                                               Mechanism::epoll_lt, Mechanism::epoll_et,   Mechanism::rtsig,
                                               Mechanism::aio_poll, Mechanism::uring_poll, Mechanism::uring_poll_multishot};
const char* name_of(Mechanism mechanism);
inline bool uses_io_uring(Mechanism mechanism) {
    return mechanism == Mechanism::uring_poll || mechanism == Mechanism::uring_poll_multishot;
}

// Why io_uring cannot be used here ("io_uring_setup 8: Operation not
// permitted [EPERM]", switched off by sysctl kernel.io_uring_disabled or a
// seccomp profile), or empty where it can. Asked once; the io_uring rows
// of the report are skipped with this reason, never failed.
const std::string& io_uring_unavailable();

// N socketpairs that every mechanism watches in turn.
class Pairs {
public:
    // Every descriptor is numbered `lowest_descriptor` or above (moved
    // there with F_DUPFD): the sparse set that select pays for by number.
    explicit Pairs(int count, int lowest_descriptor = 0);
    Pairs(const Pairs&) = delete;
    Pairs& operator=(const Pairs&) = delete;
    ~Pairs();
    [[nodiscard]] int count() const { return static_cast<int>(readers_.size()); }
    [[nodiscard]] int highest_descriptor() const;
    [[nodiscard]] int lowest_descriptor() const;

    // One run: `active` pairs primed with one byte; every byte read from
    // pair i writes one to pair i+1 until `chained` writes are done.
    // Returns microseconds per event (per byte read); fails the benchmark if
    // a byte is lost or invented.
    double run(Mechanism mechanism, int active, int chained);

    // Microseconds per call of select, poll or epoll_wait (level-triggered)
    // watching only the first pair's reader, which holds one byte that is
    // never read: every call finds it ready and returns at once. What is
    // left is the mechanism alone, for one descriptor numbered as it is.
    // select gets a bitmap of its own, as long as nfds says, so it can go
    // past FD_SETSIZE (the kernel takes any nfds up to RLIMIT_NOFILE).
    double ready_call(Mechanism mechanism, int calls);

private:
    std::vector<int> readers_, writers_;
};

}  // namespace bench
