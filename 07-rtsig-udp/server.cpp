// 07-rtsig-udp/server.cpp: a UDP echo server driven by a real-time signal
// (document 000 §4 and §4.1; the README explains each step).
//
// Three fcntl() calls arm the socket: F_SETOWN (whom to signal), F_SETSIG
// SIGRTMIN+1 (a real-time signal: it queues, and its siginfo names the
// socket), F_SETFL O_ASYNC (after F_GETFL). The signal stays blocked and
// sigwaitinfo() takes it (phase 1); recvfrom() until EAGAIN copies the data
// (phase 2). A full signal queue makes plain SIGIO: flush the queue, drain.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8007; 0: any free port)
//
// strace -e trace=fcntl,rt_sigprocmask,rt_sigtimedwait,recvfrom,sendto ./build/07-rtsig-udp/server 0
//   shows F_SETOWN, F_SETSIG SIGRT_3, F_GETFL, F_SETFL ...|FASYNC, then per signal an rt_sigtimedwait()
//   whose siginfo holds fd 3 (strace prints si_fd as si_int), and recvfrom() until EAGAIN.
//
// Read `main`'s loop first; the setup above the loop arms the socket, and
// echo_until_eagain() (udp_echo.hpp) is the loop's one step.

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
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

    // The counts of the summary and status lines. The datagrams lost before
    // we could read them are counted by the kernel: getsockopt on the socket
    // (datagrams_dropped, net.hpp) asks for them each time.
    [[nodiscard]] std::array<Count, 8> list(int socket_fd) const {
        return {{{echo.datagrams, "datagrams echoed"},
                 {echo.bytes, "bytes echoed"},
                 {echo.lost, "echoes lost"},
                 {datagrams_dropped(socket_fd).value_or(0), "datagrams dropped on arrival"},
                 {io_signals, "real-time signals"},
                 {empty_signals, "signals that found nothing to read"},
                 {overflows, "queue overflows (SIGIO)"},
                 {stale_signals, "queued signals flushed"}}};
    }
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
    // Lab: F_SETOWN getpid() (whose signals), F_SETSIG io_signal (a queued real-time signal with a siginfo,
    // Lab: instead of SIGIO), then F_SETFL: the flags F_GETFL gives, plus O_ASYNC and O_NONBLOCK. Check each.
    // Lab stub: static_cast<void>(::fcntl(socket_fd.get(), F_SETFL, O_NONBLOCK));  // not armed: no signal comes
    if (::fcntl(socket_fd.get(), F_SETOWN, ::getpid()) == -1) {
        report_failure("fcntl F_SETOWN", errno);
        return 1;
    }
    if (::fcntl(socket_fd.get(), F_SETSIG, io_signal) == -1) {
        report_failure("fcntl F_SETSIG SIGRTMIN+1", errno);
        return 1;
    }
    const int flags = ::fcntl(socket_fd.get(), F_GETFL);  // F_SETFL replaces them all: keep what is set
    if (flags == -1) {
        report_failure("fcntl F_GETFL", errno);
        return 1;
    }
    if (::fcntl(socket_fd.get(), F_SETFL, flags | O_ASYNC | O_NONBLOCK) == -1) {
        report_failure("fcntl F_SETFL O_ASYNC|O_NONBLOCK", errno);
        return 1;
    }
    // Lab end.
    if (!print_ready_line(socket_fd.get(), "udp ")) {
        return 1;
    }

    Counters counters;
    // Datagrams that arrived before O_ASYNC was set raised no signal: read
    // them now, or they would wait for the next datagram's signal.
    echo_until_eagain(socket_fd.get(), counters.echo, log);

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
            print_status(counters.list(socket_fd.get()));
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

    print_summary(counters.list(socket_fd.get()));
    return 0;
}
