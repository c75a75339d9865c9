// 07-rtsig-udp/server.cpp: a UDP echo server driven by a real-time signal.
//
// Signal-driven I/O (document 000 §4 and §4.1, document 002 信号驱动 I/O,
// document 003 信号驱动式I/O): the process asks the kernel to send it a
// signal when a socket becomes ready, instead of sleeping in recvfrom()
// (01) or in select/poll/epoll (03-06). Three fcntl() calls arm a socket:
//   F_SETOWN, getpid()   whom to signal;
//   F_SETSIG, SIGRTMIN+1 which signal: a real-time one, so signals queue
//                        (one per event) and carry a siginfo_t with si_fd
//                        (which socket), si_band (its poll bits) and si_code
//                        (POLL_IN, POLL_ERR...);
//   F_SETFL, flags | O_ASYNC | O_NONBLOCK   switch it on (F_GETFL first:
//                        document 000 sets the flags without reading them,
//                        which clears every other flag).
// Phase 1 (wait for data) is then the signal; this server waits for it
// synchronously, with the signal blocked, in sigwaitinfo(): no handler, no
// async-signal-safety problem, and the siginfo in hand. Phase 2 (copy
// data) is recvfrom(), which finds the datagram waiting.
//
// A signal is raised per arrival, but by the time it is handled several
// datagrams may be queued: each signal leads to recvfrom() until EAGAIN.
//
// The part every example leaves out: the real-time signal queue is bounded
// (RLIMIT_SIGPENDING, `ulimit -i`). When it is full the kernel cannot queue
// SIGRTMIN+1 and sends a plain SIGIO instead, which says only "something
// happened, maybe many things". So SIGIO is waited for too. On SIGIO the
// server throws away the queued real-time signals (they may be stale) and
// then drains the socket until EAGAIN: every datagram that arrived is in
// the socket, so nothing is lost. Datagrams arriving after that raise new
// signals. The summary counts these overflows.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8007; 0: any free port)
//
// strace: strace -e trace=fcntl,rt_sigprocmask,rt_sigtimedwait,recvfrom,sendto ./build/07-rtsig-udp/server 0
//   fcntl(3, F_SETOWN, PID), fcntl(3, F_SETSIG, SIGRT_2) (glibc's SIGRTMIN
//   is the kernel's SIGRT_1 + 1), F_GETFL then F_SETFL with O_ASYNC added to
//   the flags; each rt_sigtimedwait() returns the signal with si_fd=3,
//   followed by recvfrom() until EAGAIN.

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "udp_echo.hpp"

using namespace iomodels;

namespace {

struct Counters {
    EchoCounts echo;                   // datagrams and bytes echoed, echoes lost
    std::uint64_t io_signals = 0;      // SIGRTMIN+1 received
    std::uint64_t empty_signals = 0;   // ... whose datagrams an earlier drain had read
    std::uint64_t overflows = 0;       // plain SIGIO: the queue was full
    std::uint64_t stale_signals = 0;   // queued real-time signals discarded after an overflow
};

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "UDP echo server driven by a real-time signal (F_SETSIG, O_ASYNC, sigwaitinfo).", 8007);
    const EventLog log(options.quiet);
    const int io_signal = SIGRTMIN + 1;  // glibc's SIGRTMIN is a function: it keeps a few for threads

    // Block the signals before arming the socket: from then on they stay
    // pending until sigwaitinfo() takes them, and none is lost in between.
    // Blocked, the I/O signal never interrupts anything and needs no
    // handler; SIGIO too (its default action would kill the process).
    // SIGUSR1 (a status line) is taken the same way, as one more event.
    sigset_t waited_for = stop_signals();
    ::sigaddset(&waited_for, io_signal);
    ::sigaddset(&waited_for, SIGIO);
    ::sigaddset(&waited_for, SIGUSR1);
    if (::sigprocmask(SIG_BLOCK, &waited_for, nullptr) == -1) {
        report_failure("sigprocmask SIG_BLOCK", errno);
        return 1;
    }

    const unique_fd socket_fd = bind_udp(options.host, options.port, SOCK_CLOEXEC);
    if (!socket_fd) {
        return 1;
    }
    // Arm the socket: owner, signal, then O_ASYNC (and O_NONBLOCK, so the
    // drain loop ends with EAGAIN instead of sleeping).
    if (::fcntl(socket_fd.get(), F_SETOWN, ::getpid()) == -1) {
        report_failure("fcntl F_SETOWN", errno);
        return 1;
    }
    if (::fcntl(socket_fd.get(), F_SETSIG, io_signal) == -1) {
        report_failure("fcntl F_SETSIG SIGRTMIN+1", errno);
        return 1;
    }
    const int flags = ::fcntl(socket_fd.get(), F_GETFL);
    if (flags == -1 || ::fcntl(socket_fd.get(), F_SETFL, flags | O_ASYNC | O_NONBLOCK) == -1) {
        report_failure("fcntl F_GETFL/F_SETFL O_ASYNC|O_NONBLOCK", errno);
        return 1;
    }
    if (!print_ready_line(socket_fd.get(), "udp ")) {
        return 1;
    }

    Counters counters;
    // Datagrams that arrived before O_ASYNC was set raised no signal: read
    // them now, or they would wait for the next datagram's signal.
    echo_until_eagain(socket_fd.get(), counters.echo, log);

    const auto print_counts = [&](void (*print)(std::initializer_list<Count>)) {
        print({{counters.echo.datagrams, "datagrams echoed"},
               {counters.echo.bytes, "bytes echoed"},
               {counters.echo.lost, "echoes lost"},
               // Lost before we could read them; the kernel counts them (see net.hpp).
               {datagrams_dropped(socket_fd.get()).value_or(0), "datagrams dropped on arrival"},
               {counters.io_signals, "real-time signals"},
               {counters.empty_signals, "signals that found nothing to read"},
               {counters.overflows, "queue overflows (SIGIO)"},
               {counters.stale_signals, "queued signals flushed"}});
    };
    for (;;) {
        siginfo_t info{};
        // Sleeps (phase 1) until one of the signals is pending, and takes
        // it off the queue with its siginfo. EINTR: a signal we did not
        // block (SIGCONT after a SIGSTOP, a debugger); just wait again.
        const int signal = ::sigwaitinfo(&waited_for, &info);
        if (signal == -1) {
            if (errno == EINTR) {
                continue;
            }
            report_failure("sigwaitinfo", errno);
            return 1;
        }
        if (signal == SIGINT || signal == SIGTERM) {
            log("SIG%s: stopping", ::sigabbrev_np(signal));
            break;
        }
        if (signal == SIGUSR1) {
            print_counts(print_status);
            continue;
        }
        if (signal == SIGIO) {
            // The real-time queue overflowed: some events have no signal.
            // First throw away the real-time signals still queued
            // (discard_pending: sigtimedwait with a zero timeout until it
            // says EAGAIN), then read everything: a datagram arriving after
            // the flush raises a fresh signal, so flush-then-drain loses nothing.
            ++counters.overflows;
            const std::uint64_t flushed = discard_pending(io_signal);
            counters.stale_signals += flushed;
            const std::uint64_t drained = echo_until_eagain(socket_fd.get(), counters.echo, log);
            log("SIGIO (si_code %s): the real-time signal queue overflowed; %llu queued signals flushed, "
                "%llu datagrams read by draining the socket",
                sigpoll_code_name(info.si_code).c_str(), static_cast<unsigned long long>(flushed),
                static_cast<unsigned long long>(drained));
            continue;
        }
        // The I/O signal: si_fd says which socket (there is one here, but
        // 08 has many), si_band its poll bits, si_code why.
        ++counters.io_signals;
        if (info.si_fd != socket_fd.get()) {
            log("SIGRTMIN+1 for fd %d, which is not ours: ignored", info.si_fd);
            continue;
        }
        const std::uint64_t read_count = echo_until_eagain(info.si_fd, counters.echo, log);
        counters.empty_signals += read_count == 0;
        log("SIGRTMIN+1: si_fd %d, si_band %s, si_code %s: %llu datagrams echoed", info.si_fd,
            poll_event_names(static_cast<short>(info.si_band)).c_str(), sigpoll_code_name(info.si_code).c_str(),
            static_cast<unsigned long long>(read_count));
    }

    print_counts(print_summary);
    return 0;
}
