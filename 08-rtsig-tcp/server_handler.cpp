// 08-rtsig-tcp/server_handler.cpp: the same TCP echo server, with a signal
// handler instead of sigwaitinfo (document 000 §4.2, its example 2: "one
// sighandler").
//
// One SA_SIGINFO handler receives the real-time signal with its siginfo.
// What may it do? Only what is async-signal-safe (signal-safety(7)): the
// handler can run between any two instructions of the main loop, in the
// middle of a std::map insertion or a printf. So it does NOT accept, read,
// send or log. It records the event: it write()s {si_fd, si_band} into a
// pipe (write is async-signal-safe, and a write of at most PIPE_BUF bytes
// is atomic), and the main loop, sleeping in read() on the other end, does
// the I/O. The pipe is the queue between the two.
//
// Every other signal the server cares about becomes a record too: plain
// SIGIO (the real-time queue overflowed), SIGINT/SIGTERM (stop) and SIGUSR1
// (a status line). If the
// pipe itself is full, the handler cannot record the event: it sets a flag,
// and the main loop resynchronises as for an overflow.
//
// usage: server_handler [PORT] [--host ADDR] [--quiet]   (PORT 8008; 0: any free port)
//
// strace: strace -e trace=fcntl,read,write,accept4,recvfrom,sendto ./build/08-rtsig-tcp/server_handler 0
//   "--- SIGRT_3 {si_signo=SIGRT_3, ...} ---" then the handler's write() of 16
//   bytes to the pipe, rt_sigreturn, and the main loop's read() of the record.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <span>
#include <string>

#include "common/errors.hpp"
#include "common/event_names.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "connections.hpp"

using namespace iomodels;

namespace {

// One event, as the handler records it.
struct Record {
    int fd;     // si_fd; or one of the markers below
    long band;  // si_band
};
constexpr int overflow_marker = -1;  // plain SIGIO: resynchronise
constexpr int stop_marker = -2;      // SIGINT or SIGTERM
constexpr int status_marker = -3;    // SIGUSR1

// What the handlers may touch: the pipe's write end (set once before they
// are installed) and a flag.
volatile sig_atomic_t record_write_fd = -1;
volatile sig_atomic_t records_lost = 0;
// A stop request is also a flag: when the pipe is full its record is lost,
// and the main loop, busy resynchronising, must still see it.
volatile sig_atomic_t stop_was_requested = 0;

void record(Record event) {
    const int saved_errno = errno;  // the interrupted code may be about to read errno
    // Non-blocking: a full pipe fails with EAGAIN instead of blocking the
    // handler (and with it the whole process) for ever.
    if (::write(record_write_fd, &event, sizeof event) != static_cast<ssize_t>(sizeof event)) {
        records_lost = 1;
    }
    errno = saved_errno;
}

void on_io_signal(int, siginfo_t* info, void*) { record({info->si_fd, info->si_band}); }
void on_sigio(int) { record({overflow_marker, 0}); }
void on_stop(int) {
    stop_was_requested = 1;
    record({stop_marker, 0});  // wakes the main loop (if the pipe has room; if not, it is awake anyway)
}
// A status request is a flag too, recorded only when the flag was clear: a
// storm of SIGUSR1 puts at most one record in the pipe, never fills it.
volatile sig_atomic_t status_was_requested = 0;
void on_status(int) {
    if (status_was_requested == 0) {
        status_was_requested = 1;
        record({status_marker, 0});
    }
}

bool install(int signal, struct sigaction action) {
    // While a handler runs, the others wait: records never interleave.
    ::sigemptyset(&action.sa_mask);
    ::sigaddset(&action.sa_mask, SIGRTMIN + 1);
    ::sigaddset(&action.sa_mask, SIGIO);
    ::sigaddset(&action.sa_mask, SIGINT);
    ::sigaddset(&action.sa_mask, SIGTERM);
    ::sigaddset(&action.sa_mask, SIGUSR1);
    // SA_RESTART: a read() or send() the signal interrupts is restarted,
    // so the main loop never sees EINTR from these handlers.
    action.sa_flags |= SA_RESTART;
    if (::sigaction(signal, &action, nullptr) == -1) {
        report_failure("sigaction " + std::string(::sigabbrev_np(signal) ? ::sigabbrev_np(signal) : "SIGRT"), errno);
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options = parse_server_options_or_exit(
        argc, argv, "TCP echo server driven by a real-time signal handler that only records the event.", 8008);
    const EventLog log(options.quiet);
    const int io_signal = SIGRTMIN + 1;

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == -1) {
        report_failure("pipe2", errno);
        return 1;
    }
    const unique_fd record_read(pipe_fds[0]), record_write(pipe_fds[1]);
    if (::fcntl(record_write.get(), F_SETFL, ::fcntl(record_write.get(), F_GETFL) | O_NONBLOCK) == -1) {
        report_failure("fcntl F_SETFL O_NONBLOCK (pipe)", errno);
        return 1;
    }
    record_write_fd = record_write.get();

    struct sigaction with_info {};
    with_info.sa_sigaction = on_io_signal;
    with_info.sa_flags = SA_SIGINFO;  // the handler gets the siginfo: si_fd, si_band
    struct sigaction plain_sigio {};
    plain_sigio.sa_handler = on_sigio;
    struct sigaction stop {};
    stop.sa_handler = on_stop;
    struct sigaction status {};
    status.sa_handler = on_status;
    if (!install(io_signal, with_info) || !install(SIGIO, plain_sigio) || !install(SIGINT, stop) ||
        !install(SIGTERM, stop) || !install(SIGUSR1, status)) {
        return 1;
    }
    // A signal mask is inherited: unblock them, even if our parent had them blocked.
    sigset_t handled;
    ::sigemptyset(&handled);
    for (const int signal : {io_signal, SIGIO, SIGINT, SIGTERM, SIGUSR1}) {
        ::sigaddset(&handled, signal);
    }
    ::sigprocmask(SIG_UNBLOCK, &handled, nullptr);

    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!listen_fd || !rtsig::arm(listen_fd.get(), io_signal, log)) {
        return 1;
    }
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    rtsig::Server server{listen_fd.get(), io_signal, reserve, log, {}, {}};
    rtsig::accept_new_clients(server);  // clients that connected before O_ASYNC raised no signal
    std::array<Record, 256> records;
    bool stopping = false;
    while (!stopping) {
        // Sleeps (phase 1) until a handler has recorded something.
        const ssize_t got = ::read(record_read.get(), records.data(), sizeof records);
        if (got == -1) {
            if (errno == EINTR) {
                continue;  // SIGCONT after SIGSTOP; our own handlers restart the read
            }
            report_failure("read (event pipe)", errno);
            return 1;
        }
        bool resynchronise = records_lost != 0;
        stopping = stop_was_requested != 0;
        if (status_was_requested != 0) {
            status_was_requested = 0;  // its record, in this read or a later one, is only a wake-up
            rtsig::print_counts(server.counters, print_status);
        }
        for (const Record& event : std::span(records).first(static_cast<std::size_t>(got) / sizeof(Record))) {
            if (event.fd == stop_marker) {
                stopping = true;
            } else if (event.fd == status_marker) {
                continue;  // printed above, from the flag
            } else if (event.fd == overflow_marker) {
                ++server.counters.overflows;
                resynchronise = true;
            } else if (!resynchronise) {
                log("SIGRTMIN+1: si_fd %d, si_band %s (recorded by the handler)", event.fd,
                    poll_event_names(static_cast<short>(event.band)).c_str());
                rtsig::dispatch(server, event.fd, event.band);
            }
        }
        stopping = stopping || stop_was_requested != 0;
        if (resynchronise && !stopping) {
            // The real-time queue or the pipe overflowed: events are
            // missing, and nothing says which. Throw away what is queued
            // (pending real-time signals, records), then look at everything.
            records_lost = 0;
            sigset_t io_only;
            ::sigemptyset(&io_only);
            ::sigaddset(&io_only, io_signal);
            ::sigprocmask(SIG_BLOCK, &io_only, nullptr);  // none may be recorded after the drain below
            std::uint64_t flushed = discard_pending(io_signal);
            ::fcntl(record_read.get(), F_SETFL, ::fcntl(record_read.get(), F_GETFL) | O_NONBLOCK);
            for (ssize_t more; (more = ::read(record_read.get(), records.data(), sizeof records)) > 0;) {
                for (const Record& event : std::span(records).first(static_cast<std::size_t>(more) / sizeof(Record))) {
                    stopping = stopping || event.fd == stop_marker;  // a stop request is never thrown away
                    flushed += event.fd >= 0;
                }
            }
            ::fcntl(record_read.get(), F_SETFL, ::fcntl(record_read.get(), F_GETFL) & ~O_NONBLOCK);
            server.counters.stale_signals += flushed;
            log("SIGIO: events were lost (signal queue or pipe full); resynchronising %zu connections with poll",
                server.connections.size());
            rtsig::resynchronise(server);
            ::sigprocmask(SIG_UNBLOCK, &io_only, nullptr);
        }
    }

    log("stopping");
    server.connections.clear();
    rtsig::print_counts(server.counters, print_summary);
    return 0;
}
