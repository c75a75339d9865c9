// 08-rtsig-tcp/server.cpp: a TCP echo server driven by one real-time
// signal for every socket (document 000 §4.2, its example 1).
//
// The listening socket and every connection are armed as 07-rtsig-udp's
// socket is (F_SETOWN, F_SETSIG SIGRTMIN+1, O_ASYNC): one signal number
// stands for all of them, and the siginfo that sigwaitinfo() returns tells
// them apart (si_fd: which socket; si_band: its poll bits). A full signal
// queue makes plain SIGIO: one poll() resynchronises every socket.
//
// usage: server [PORT] [--host ADDR] [--quiet]      (PORT 8008; 0: any free port)
//
// strace -e trace=fcntl,rt_sigtimedwait,accept4,recvfrom,sendto ./build/08-rtsig-tcp/server 0
//   shows the listening socket armed (F_SETOWN, F_SETSIG, F_GETFL, F_SETFL ...|FASYNC), then per
//   signal an rt_sigtimedwait() whose siginfo names the socket, and accept4() until EAGAIN (each
//   new connection armed the same way) or recvfrom() until EAGAIN.
//
// Read `main`'s loop first; its steps are in connections.hpp.

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "connections.hpp"

using namespace iomodels;

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "TCP echo server driven by one real-time signal for every socket (sigwaitinfo, si_fd).", 8008);
    const EventLog log(options.quiet);
    const int io_signal = SIGRTMIN + 1;

    // Blocked before anything is armed: the signals wait for sigwaitinfo.
    // SIGUSR1 (a status line) is taken the same way, as one more event.
    sigset_t waited_for = stop_signals();
    ::sigaddset(&waited_for, io_signal);
    ::sigaddset(&waited_for, SIGIO);
    ::sigaddset(&waited_for, SIGUSR1);
    if (::sigprocmask(SIG_BLOCK, &waited_for, nullptr) == -1) {
        report_failure("sigprocmask SIG_BLOCK", errno);
        return 1;
    }
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    // Lab: arm the listening socket for io_signal (rtsig::arm: F_SETOWN, F_SETSIG, O_ASYNC): a client raises it.
    if (!rtsig::arm(listen_fd.get(), io_signal, EventLog(false))) {  // said even with --quiet: setup failed
        return 1;
    }
    // Lab end.
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    rtsig::Server server{.listen_fd = listen_fd.get(), .io_signal = io_signal, .reserve = reserve, .log = log};
    rtsig::accept_new_clients(server);  // clients that connected before O_ASYNC raised no signal
    for (;;) {
        siginfo_t info{};
        // Sleeps (phase 1) until a signal is pending; takes it with its siginfo.
        const int signal = ::sigwaitinfo(&waited_for, &info);
        if (signal == -1) {
            if (errno == EINTR) {
                continue;  // SIGCONT after SIGSTOP, a debugger
            }
            report_failure("sigwaitinfo", errno);
            return 1;
        }
        if (signal == SIGINT || signal == SIGTERM) {
            log("SIG%s: stopping", ::sigabbrev_np(signal));
            break;
        }
        if (signal == SIGUSR1) {
            print_status(server.counters.list());
            continue;
        }
        // Lab: SIGIO: the queue overflowed: flush queued signals, then poll every socket (rtsig::resynchronise).
        // Lab: io_signal: si_fd names its socket (listening: accept, arm; a connection: serve as si_band says).
        if (signal == SIGIO) {
            // Overflow: throw the queued real-time signals away first, then
            // look at every socket: an event after the flush raises a new
            // signal, so flush-then-poll misses nothing.
            ++server.counters.overflows;
            const std::uint64_t flushed = discard_pending(io_signal);  // sigtimedwait, timeout 0, until EAGAIN
            server.counters.stale_signals += flushed;
            log("SIGIO (si_code %s): the real-time signal queue overflowed; %llu queued signals flushed, "
                "resynchronising %zu connections with poll",
                sigpoll_code_name(info.si_code).c_str(), static_cast<unsigned long long>(flushed),
                server.connections.size());
            rtsig::resynchronise(server);
            continue;
        }
        log("SIGRTMIN+1: si_fd %d, si_band %s, si_code %s", info.si_fd,
            poll_event_names(static_cast<short>(info.si_band)).c_str(), sigpoll_code_name(info.si_code).c_str());
        rtsig::dispatch(server, info.si_fd, info.si_band);
        // Lab end.
    }

    server.connections.clear();
    print_summary(server.counters.list());
    return 0;
}
