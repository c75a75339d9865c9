// 07-rtsig-udp/server_sigio.cpp: the classic signal-driven UDP echo server,
// with plain SIGIO and a signal handler (document 004 信号驱动IO; UNP's
// dgecho01 has the same shape).
//
// No F_SETSIG: the socket raises SIGIO, a standard signal. Standard signals
// do not queue: ten datagrams arriving while SIGIO is pending make one
// SIGIO, and it carries nothing useful (no si_fd). So the handler only
// records that *something* happened, and the main loop reads until EAGAIN.
//
// Why the handler does no more: it runs between any two instructions of
// the main program, maybe inside printf() or malloc() holding their locks.
// Calling printf() there can deadlock or corrupt the stdio buffer; only
// async-signal-safe functions (signal-safety(7)) may be called. Setting a
// `volatile sig_atomic_t` is the simplest safe thing.
//
// The wait without a race: SIGIO is blocked while the loop checks the flag,
// and sigsuspend() unblocks it and sleeps in one atomic step. Checking the
// flag and then calling pause() would sleep for ever if SIGIO came between
// the two.
//
// Compare server.cpp: a real-time signal, waited for with sigwaitinfo(),
// no handler at all, and the siginfo (si_fd, si_band) in hand.
//
// usage: server_sigio [PORT] [--host ADDR] [--quiet]   (PORT 8007; 0: any free port)
//
// strace: strace -e trace=fcntl,rt_sigaction,rt_sigsuspend,recvfrom,sendto ./build/07-rtsig-udp/server_sigio 0
//   fcntl(F_SETOWN), F_GETFL/F_SETFL with O_ASYNC (no F_SETSIG); each
//   rt_sigsuspend() returns -1 EINTR after "--- SIGIO {si_signo=SIGIO,
//   si_code=POLL_IN, si_band=...} ---", then recvfrom() until EAGAIN.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "udp_echo.hpp"

using namespace iomodels;

namespace {

volatile sig_atomic_t io_ready = 0;  // set by the handler, cleared by the main loop

void on_sigio(int) { io_ready = 1; }  // async-signal-safe: a flag, nothing else

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "UDP echo server driven by SIGIO: the handler sets a flag, the main loop reads.", 8007);
    const EventLog log(options.quiet);

    // SIGIO, SIGINT, SIGTERM and SIGUSR1 (a status line) are blocked
    // except inside sigsuspend(). Every handler only sets a flag.
    install_stop_handlers(-1);  // (these unblock their signals: call them before blocking)
    install_status_handler();
    sigset_t blocked = stop_signals();
    ::sigaddset(&blocked, SIGIO);
    ::sigaddset(&blocked, SIGUSR1);
    sigset_t while_waiting;
    if (::sigprocmask(SIG_BLOCK, &blocked, &while_waiting) == -1) {
        report_failure("sigprocmask SIG_BLOCK", errno);
        return 1;
    }
    ::sigdelset(&while_waiting, SIGIO);  // even if our parent had them blocked
    ::sigdelset(&while_waiting, SIGINT);
    ::sigdelset(&while_waiting, SIGTERM);
    ::sigdelset(&while_waiting, SIGUSR1);
    struct sigaction action {};
    action.sa_handler = on_sigio;
    ::sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    if (::sigaction(SIGIO, &action, nullptr) == -1) {
        report_failure("sigaction SIGIO", errno);
        return 1;
    }

    const unique_fd socket_fd = bind_udp(options.host, options.port, SOCK_CLOEXEC);
    if (!socket_fd) {
        return 1;
    }
    if (::fcntl(socket_fd.get(), F_SETOWN, ::getpid()) == -1) {
        report_failure("fcntl F_SETOWN", errno);
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

    EchoCounts counts;
    std::uint64_t wakeups = 0;
    echo_until_eagain(socket_fd.get(), counts, log);  // what arrived before O_ASYNC raised nothing
    const auto print_counts = [&](void (*print)(std::initializer_list<Count>)) {
        print({{counts.datagrams, "datagrams echoed"},
               {counts.bytes, "bytes echoed"},
               {counts.lost, "echoes lost"},
               {datagrams_dropped(socket_fd.get()).value_or(0), "datagrams dropped on arrival"},
               {wakeups, "SIGIO wakeups"}});
    };
    for (;;) {
        while (io_ready == 0 && !stop_requested()) {
            ::sigsuspend(&while_waiting);  // always -1 EINTR: a handler ran
            if (status_requested()) {
                print_counts(print_status);
            }
        }
        if (stop_requested()) {
            break;
        }
        io_ready = 0;  // cleared before reading: a datagram arriving during the drain sets it again
        ++wakeups;
        const std::uint64_t read_count = echo_until_eagain(socket_fd.get(), counts, log);
        log("SIGIO: %llu datagrams echoed", static_cast<unsigned long long>(read_count));
    }

    print_counts(print_summary);
    return 0;
}
