// 07-rtsig-udp/server_sigio.cpp: the classic signal-driven UDP echo server,
// with plain SIGIO and a signal handler (document 004 信号驱动IO; UNP's
// dgecho01 has the same shape). Compare server.cpp.
//
// No F_SETSIG: the socket raises SIGIO, which does not queue and names no
// socket. So the handler only sets a flag, and the main loop reads until
// EAGAIN. SIGIO is blocked while the loop looks at the flag; sigsuspend()
// unblocks it and sleeps in one atomic step (pause() after the check would
// sleep for ever if SIGIO came in between).
//
// usage: server_sigio [PORT] [--host ADDR] [--quiet]   (PORT 8007; 0: any free port)
//
// strace -e trace=fcntl,rt_sigaction,rt_sigsuspend,recvfrom,sendto ./build/07-rtsig-udp/server_sigio 0
//   shows F_SETOWN, F_GETFL/F_SETFL with O_ASYNC (no F_SETSIG); each rt_sigsuspend() ends with
//   "--- SIGIO {si_signo=SIGIO, si_code=SI_KERNEL} ---", then recvfrom() until EAGAIN.
//
// Read `main`'s loop first; the handler above it only sets a flag.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
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

struct Counters {
    EchoCounts echo;             // datagrams and bytes echoed, echoes lost
    std::uint64_t wakeups = 0;   // SIGIO handled: sigsuspend returned with io_ready set

    // The counts of the summary and status lines; the datagrams the kernel
    // dropped on arrival are asked of the socket each time (net.hpp).
    [[nodiscard]] std::array<Count, 5> list(int socket_fd) const {
        return {{{echo.datagrams, "datagrams echoed"},
                 {echo.bytes, "bytes echoed"},
                 {echo.lost, "echoes lost"},
                 {datagrams_dropped(socket_fd).value_or(0), "datagrams dropped on arrival"},
                 {wakeups, "SIGIO wakeups"}}};
    }
};

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
    const int flags = ::fcntl(socket_fd.get(), F_GETFL);  // F_SETFL replaces them all: keep what is set
    if (flags == -1) {
        report_failure("fcntl F_GETFL", errno);
        return 1;
    }
    if (::fcntl(socket_fd.get(), F_SETFL, flags | O_ASYNC | O_NONBLOCK) == -1) {
        report_failure("fcntl F_SETFL O_ASYNC|O_NONBLOCK", errno);
        return 1;
    }
    if (!print_ready_line(socket_fd.get(), "udp ")) {
        return 1;
    }

    Counters counters;
    echo_until_eagain(socket_fd.get(), counters.echo, log);  // what arrived before O_ASYNC raised nothing
    for (;;) {
        while (io_ready == 0 && !stop_requested()) {
            ::sigsuspend(&while_waiting);  // always -1 EINTR: a handler ran
            if (status_requested()) {
                print_status(counters.list(socket_fd.get()));
            }
        }
        if (stop_requested()) {
            break;
        }
        io_ready = 0;  // cleared before reading: a datagram arriving during the drain sets it again
        ++counters.wakeups;
        const std::uint64_t read_count = echo_until_eagain(socket_fd.get(), counters.echo, log);
        log("SIGIO: %llu datagrams echoed", static_cast<unsigned long long>(read_count));
    }

    print_summary(counters.list(socket_fd.get()));
    return 0;
}
