#include "grade/fingerprint.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "catch.hpp"
#include "harness/harness.hpp"

using namespace harness;

namespace grade {

namespace {

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// The first argument of a call, as strace prints it: "5" of "5, ...".
std::string first_argument(const Syscall& call) { return call.args.substr(0, call.args.find(',')); }

// The descriptor an epoll_ctl adds, changes or removes: "6" of
// "4, EPOLL_CTL_ADD, 6, {events=..., data=...}".
std::string epoll_ctl_descriptor(const Syscall& call) {
    const std::size_t first = call.args.find(", ");
    const std::size_t second = call.args.find(", ", first + 2);
    return call.args.substr(second + 2, call.args.find(',', second + 2) - second - 2);
}

// "recvfrom(5, "one", 65536, 0, NULL, NULL) = 3", cut to a readable length.
std::string shown(const Syscall& call) {
    const std::string args = call.args.size() > 70 ? call.args.substr(0, 70) + "..." : call.args;
    return call.name + "(" + args + ") = " + call.result;
}

bool is_client(const Session& session, const Syscall& call) { return session.clients.count(first_argument(call)) != 0; }

bool is_read(const Syscall& call) {
    return call.name == "read" || call.name == "recvfrom" || call.name == "recvmsg" || call.name == "readv";
}

bool is_accept(const Syscall& call) { return call.name == "accept" || call.name == "accept4"; }

int count_named(const Session& session, std::initializer_list<std::string_view> names) {
    return static_cast<int>(
        std::count_if(session.trace.calls.begin(), session.trace.calls.end(),
                      [&](const Syscall& c) { return std::find(names.begin(), names.end(), c.name) != names.end(); }));
}

// True if a client socket was made non-blocking: accept4 with SOCK_NONBLOCK,
// fcntl F_SETFL with O_NONBLOCK, or ioctl FIONBIO.
bool made_nonblocking(const Session& session, const std::string& fd) {
    return std::any_of(session.trace.calls.begin(), session.trace.calls.end(), [&](const Syscall& call) {
        return (call.name == "accept4" && std::to_string(call.value()) == fd && contains(call.args, "SOCK_NONBLOCK")) ||
               (first_argument(call) == fd &&
                ((call.name == "fcntl" && contains(call.args, "F_SETFL") && contains(call.args, "O_NONBLOCK")) ||
                 (call.name == "ioctl" && contains(call.args, "FIONBIO"))));
    });
}

// Processes created (fork, or clone without CLONE_THREAD), threads created
// (clone or clone3 with CLONE_THREAD).
int processes_created(const Session& session) {
    return static_cast<int>(std::count_if(session.trace.calls.begin(), session.trace.calls.end(), [](const Syscall& c) {
        const bool creates = c.name == "fork" || c.name == "vfork" || c.name == "clone" || c.name == "clone3";
        return creates && c.value() > 0 && !contains(c.args, "CLONE_THREAD");
    }));
}

int threads_created(const Session& session) {
    return static_cast<int>(std::count_if(session.trace.calls.begin(), session.trace.calls.end(), [](const Syscall& c) {
        return (c.name == "clone" || c.name == "clone3") && c.value() > 0 && contains(c.args, "CLONE_THREAD");
    }));
}

// True if this epoll wait may sleep: any timeout but 0. (A server that has
// work of its own left, such as 06's still_readable queue, looks for new
// events with timeout 0 and goes on reading.)
bool epoll_wait_may_sleep(const Syscall& call) {
    if (call.name == "epoll_wait") {
        return call.args.substr(call.args.rfind(", ") + 2) != "0";
    }
    if (call.name == "epoll_pwait") {  // epfd, events, maxevents, timeout, sigmask, sigsetsize
        std::string rest = call.args.substr(0, call.args.rfind(", "));
        rest = rest.substr(0, rest.rfind(", "));
        return rest.substr(rest.rfind(", ") + 2) != "0";
    }
    return call.name == "epoll_pwait2" && !contains(call.args, "{tv_sec=0, tv_nsec=0}");
}

Findings at_least(int count, int wanted, const std::string& what) {
    if (count >= wanted) {
        return {};
    }
    return {what + ": " + std::to_string(count) + ", expected at least " + std::to_string(wanted)};
}

Findings operator+(Findings first, const Findings& second) {
    first.insert(first.end(), second.begin(), second.end());
    return first;
}

}  // namespace

namespace {

// `strace -f ... SERVER` as the conformance suite starts the server.
std::vector<std::string> traced_command(const conformance::ServerUnderTest& server, const TraceFile& trace_file) {
    std::vector<std::string> argv = strace_command(trace_file.path(), "all");
    argv.push_back(server.path);
    if (server.contract) {
        argv.push_back("0");
        argv.push_back("--quiet");
    }
    argv.insert(argv.end(), server.options.begin(), server.options.end());
    return argv;
}

// SIGTERM to the server (strace's child), then strace ends with it; the
// trace read, and kept in `keep_trace_in` if given.
Trace stop_and_read(Server& running, const TraceFile& trace_file, const std::string& keep_trace_in) {
    ::kill(traced_pid(running.process.pid()), SIGTERM);
    REQUIRE(running.process.wait(10s).has_value());
    if (!keep_trace_in.empty()) {
        std::error_code ignored;
        std::filesystem::copy_file(trace_file.path(), keep_trace_in + "/strace.txt",
                                   std::filesystem::copy_options::overwrite_existing, ignored);
    }
    return Trace::read(trace_file.path());
}

}  // namespace

namespace {

// The sockets among `pid`'s descriptors (/proc/PID/fd links "socket:[...]").
std::set<std::string> sockets_of(pid_t pid) {
    std::set<std::string> sockets;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ignored)) {
        if (std::filesystem::read_symlink(entry.path(), ignored).string().rfind("socket:", 0) == 0) {
            sockets.insert(entry.path().filename().string());
        }
    }
    return sockets;
}

}  // namespace

Session traced_session(const conformance::ServerUnderTest& server, const std::string& keep_trace_in) {
    skip_unless_strace_available();
    TraceFile trace_file("fingerprint");
    Server running = start_command(traced_command(server, trace_file));
    // io_uring's ACCEPT makes client sockets that no accept call in the
    // trace returns: they are the sockets the server holds while its
    // clients are connected, the listening one aside.
    std::set<std::string> held_while_connected;

    Session session;
    const auto check = [&](const Exchange& echo, std::string_view expected, bool half_closed) {
        session.wrong_echoes += echo.received != expected || (half_closed && !echo.eof);
    };
    const auto talk = [&](int fd, const std::string& message) {
        check(exchange(fd, message, {}, false, 3s), message, false);
    };
    if (server.model == conformance::Model::one_at_a_time) {
        for (int i = 0; i < 2; ++i) {
            unique_fd client = connect_to(running.port);
            for (const char* message : {"one", "two", "three"}) {
                talk(client.get(), message);
            }
            check(exchange(client.get(), "", {}, true, 3s), "", true);
        }
    } else {
        unique_fd first = connect_to(running.port);
        unique_fd second = connect_to(running.port);
        for (const char* message : {"one", "two", "three"}) {
            talk(first.get(), message);
            talk(second.get(), message);
        }
        held_while_connected = sockets_of(traced_pid(running.process.pid()));
        check(exchange(first.get(), "", {}, true, 3s), "", true);
        check(exchange(second.get(), "", {}, true, 3s), "", true);
    }
    const std::string payload = random_bytes(256 * 1024, server.seed + 41);
    const std::vector<std::size_t> chunks = random_chunks(payload.size(), 16384, server.seed + 42);
    unique_fd big = connect_to(running.port);
    check(exchange(big.get(), payload, chunks, true, 3s), payload, true);
    big.reset();
    // A client with a small receive buffer that sends 6 MiB before it reads:
    // more than the socket buffers hold, so the server's sends find no room,
    // and its waiting to write (EPOLLOUT, POLLOUT, a write set) shows in the
    // trace too.
    // A blocking server stops reading once its send blocks: the client then
    // stops sending after 300 ms without room, and sends the rest while it
    // reads.
    // (io_uring: its SENDs complete short, and the rest must follow.)
    const std::string late = random_bytes(6 << 20, server.seed + 43);
    unique_fd late_reader = connect_to(running.port, 4096);
    std::size_t sent = 0;
    if (late_reader) {
        const int flags = ::fcntl(late_reader.get(), F_GETFL);
        ::fcntl(late_reader.get(), F_SETFL, flags | O_NONBLOCK);
        pollfd room{late_reader.get(), POLLOUT, 0};
        while (sent < late.size() && ::poll(&room, 1, 300) == 1) {
            const ssize_t n = ::send(late_reader.get(), late.data() + sent, late.size() - sent, MSG_NOSIGNAL);
            if (n <= 0 && errno != EAGAIN) {
                break;
            }
            sent += n > 0 ? static_cast<std::size_t>(n) : 0;
        }
        ::fcntl(late_reader.get(), F_SETFL, flags);
    }
    const std::string rest = late.substr(sent);
    const std::vector<std::size_t> rest_chunks =
        rest.empty() ? std::vector<std::size_t>{} : random_chunks(rest.size(), 65536, server.seed + 44);
    if (late_reader) {
        const Exchange echo = exchange(late_reader.get(), rest, rest_chunks, true, 10s);
        session.wrong_echoes += echo.received != late || !echo.eof;
        late_reader.reset();
    }

    session.trace = stop_and_read(running, trace_file, keep_trace_in);
    for (const Syscall& call : session.trace.calls) {
        if (is_accept(call) && call.value() >= 0) {
            session.clients.insert(std::to_string(call.value()));
        }
    }
    for (const Syscall& call : session.trace.calls_named("listen")) {
        held_while_connected.erase(first_argument(call));
    }
    session.clients.insert(held_while_connected.begin(), held_while_connected.end());
    REQUIRE_FALSE(session.clients.empty());  // it accepted the clients
    return session;
}

Session traced_udp_session(const conformance::ServerUnderTest& server, const std::string& keep_trace_in) {
    skip_unless_strace_available();
    TraceFile trace_file("fingerprint-udp");
    Server running = start_udp_command(traced_command(server, trace_file));
    Session session;
    const unique_fd first = udp_socket_to(running.port);
    const unique_fd second = udp_socket_to(running.port);
    const pid_t server_pid = traced_pid(running.process.pid());
    for (int i = 0; i < 5; ++i) {
        const std::string datagram = "datagram " + std::to_string(i);
        session.wrong_echoes += udp_echo(first.get(), datagram, 3s) != datagram;
        session.wrong_echoes += udp_echo(second.get(), datagram, 3s) != datagram;
        // Under strace the server is slow: the next datagram would always be
        // queued before it looks again, and it would never wait. So the
        // next pair goes once it sleeps in sigwaitinfo, or 200 ms have
        // passed (a server that waits elsewhere is not of this model).
        eventually([&] { return sleeping_in(server_pid, "sigtimedwait"); }, 200ms);
    }
    session.trace = stop_and_read(running, trace_file, keep_trace_in);
    for (const Syscall& call : session.trace.calls_named("socket")) {
        if (contains(call.args, "SOCK_DGRAM") && call.value() >= 0) {
            session.clients.insert(std::to_string(call.value()));
        }
    }
    REQUIRE_FALSE(session.clients.empty());  // it made a UDP socket
    return session;
}

// ---------------------------------------------------------------- epoll-et

Findings every_epoll_ctl_of_a_client_carries_epollet(const Session& session) {
    Findings found;
    int client_adds = 0;
    for (const Syscall& call : session.trace.calls_named("epoll_ctl")) {
        if (session.clients.count(epoll_ctl_descriptor(call)) == 0 || contains(call.args, "EPOLL_CTL_DEL")) {
            continue;
        }
        client_adds += contains(call.args, "EPOLL_CTL_ADD");
        if (!contains(call.args, "EPOLLET")) {
            found.push_back(shown(call) + ": no EPOLLET");
        }
    }
    return found + at_least(client_adds, 3, "EPOLL_CTL_ADD of a client socket");
}

Findings client_sockets_nonblocking_before_reading(const Session& session) {
    Findings found;
    for (const std::string& fd : session.clients) {
        if (!made_nonblocking(session, fd)) {
            found.push_back("client socket " + fd + ": never made non-blocking (accept4 SOCK_NONBLOCK, or O_NONBLOCK)");
        }
    }
    return found;
}

Findings reads_until_eagain_before_sleeping(const Session& session) {
    Findings found;
    std::map<std::string, Syscall> last_read;  // socket -> its last read since the last wait that may sleep
    int runs = 0;
    const auto end_runs = [&](const Syscall* wait) {
        for (const auto& [fd, call] : last_read) {
            ++runs;
            if (call.error() != "EAGAIN" && call.value() != 0) {
                found.push_back(shown(call) + ", then " + (wait != nullptr ? shown(*wait) : "the end") +
                                " without reading fd " + fd + " until EAGAIN");
            }
        }
        last_read.clear();
    };
    for (const Syscall& call : session.trace.calls) {
        if (epoll_wait_may_sleep(call)) {
            end_runs(&call);
        } else if (is_read(call) && is_client(session, call)) {
            last_read[first_argument(call)] = call;
        }
    }
    end_runs(nullptr);
    return found + at_least(runs, 3, "runs of reads on client sockets");
}

// ---------------------------------------------------------------- epoll-lt

Findings waits_in_epoll_level_triggered(const Session& session) {
    Findings found = at_least(count_named(session, {"epoll_wait", "epoll_pwait", "epoll_pwait2"}), 3, "epoll waits");
    int client_adds = 0;
    for (const Syscall& call : session.trace.calls_named("epoll_ctl")) {
        if (contains(call.args, "EPOLL_CTL_ADD") && session.clients.count(epoll_ctl_descriptor(call)) != 0) {
            ++client_adds;
            if (contains(call.args, "EPOLLET")) {
                found.push_back(shown(call) + ": EPOLLET, edge-triggered");
            }
        }
    }
    return found + at_least(client_adds, 3, "EPOLL_CTL_ADD of a client socket");
}

// ---------------------------------------------------------------- select and poll

Findings waits_in_select_on_the_clients(const Session& session) {
    std::set<std::string> watched;
    for (const Syscall& call : session.trace.calls) {
        if (call.name == "select" || call.name == "pselect6") {
            // "7, [3 5 6], [], NULL, NULL": the read set comes first.
            const std::size_t open = call.args.find('['), close = call.args.find(']');
            std::istringstream fds(call.args.substr(open + 1, close - open - 1));
            for (std::string fd; fds >> fd;) {
                watched.insert(fd);
            }
        }
    }
    Findings found;
    for (const std::string& fd : session.clients) {
        if (watched.count(fd) == 0) {
            found.push_back("client socket " + fd + ": in no read set of a select or pselect6");
        }
    }
    return found;
}

Findings waits_in_poll_on_the_clients(const Session& session) {
    std::set<std::string> watched;
    for (const Syscall& call : session.trace.calls) {
        if (call.name == "poll" || call.name == "ppoll") {
            for (std::size_t at = 0; (at = call.args.find("fd=", at)) != std::string::npos; at += 3) {
                watched.insert(call.args.substr(at + 3, call.args.find(',', at) - at - 3));
            }
        }
    }
    Findings found;
    for (const std::string& fd : session.clients) {
        if (watched.count(fd) == 0) {
            found.push_back("client socket " + fd + ": in no pollfd array of a poll or ppoll");
        }
    }
    return found;
}

// ---------------------------------------------------------------- nonblocking

Findings polls_nonblocking_sockets(const Session& session) {
    // The model asks again instead of waiting to be told: its reads of
    // client sockets say EAGAIN ("not yet"), and it never sleeps in a call
    // that waits for readiness. (How often it asks depends on the CPU it
    // gets, so no count of EAGAINs is a rule.)
    int eagain = 0;
    for (const Syscall& call : session.trace.calls) {
        eagain += is_read(call) && is_client(session, call) && call.error() == "EAGAIN";
    }
    Findings found = client_sockets_nonblocking_before_reading(session) +
                     at_least(eagain, 1, "reads of client sockets that said EAGAIN");
    for (const Syscall& call : session.trace.calls) {
        for (const char* wait : {"select", "pselect6", "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_pwait2",
                                 "rt_sigtimedwait", "rt_sigsuspend", "pause", "io_getevents", "io_pgetevents"}) {
            if (call.name == wait) {
                found.push_back(shown(call) + ": a wait for readiness; this model asks again instead");
                return found;
            }
        }
    }
    return found;
}

// ---------------------------------------------------------------- blocking: iterative, fork, thread

Findings serves_one_client_at_a_time_blocking(const Session& session) {
    Findings found;
    for (const std::string& fd : session.clients) {
        if (made_nonblocking(session, fd)) {
            found.push_back("client socket " + fd + ": made non-blocking");
        }
    }
    if (const int created = processes_created(session) + threads_created(session); created > 0) {
        found.push_back(std::to_string(created) + " processes or threads created: one serves them all here");
    }
    int reads = 0;
    for (const Syscall& call : session.trace.calls) {
        reads += is_read(call) && is_client(session, call);
    }
    return found + at_least(reads, 1, "reads of client sockets (read, recv, recvfrom)");
}

Findings forks_a_child_per_connection(const Session& session) {
    const int children = processes_created(session);
    int reaped = 0;
    for (const Syscall& call : session.trace.calls) {
        reaped += (call.name == "wait4" || call.name == "waitid") && call.value() > 0;
    }
    Findings found = at_least(children, static_cast<int>(session.clients.size()), "child processes");
    if (reaped != children) {
        found.push_back(std::to_string(children) + " children, " + std::to_string(reaped) + " reaped (wait4, waitid)");
    }
    return found;
}

Findings starts_a_thread_per_connection(const Session& session) {
    Findings found = at_least(threads_created(session), static_cast<int>(session.clients.size()), "threads created");
    if (const int processes = processes_created(session); processes > 0) {
        found.push_back(std::to_string(processes) + " child processes: threads serve the connections here");
    }
    for (const Syscall& call : session.trace.calls_named("pread64")) {
        if (is_client(session, call)) {
            found.push_back(shown(call) + ": pread64 on a socket is POSIX AIO's helper thread, not a thread of yours");
            break;
        }
    }
    return found;
}

// ---------------------------------------------------------------- rtsig-tcp

namespace {

// F_SETOWN, F_SETSIG and O_ASYNC on each of `sockets`, and the signals
// taken with rt_sigtimedwait.
Findings armed_for_real_time_signals(const Session& session, const std::set<std::string>& sockets) {
    Findings found;
    for (const std::string& fd : sockets) {
        bool owner = false, signal = false, async = false;
        for (const Syscall& call : session.trace.calls_named("fcntl")) {
            if (first_argument(call) == fd) {
                owner = owner || contains(call.args, "F_SETOWN");
                signal = signal || contains(call.args, "F_SETSIG");
                // strace names O_ASYNC by its old name, FASYNC.
                async = async || (contains(call.args, "F_SETFL") &&
                                  (contains(call.args, "O_ASYNC") || contains(call.args, "FASYNC")));
            }
        }
        if (!(owner && signal && async)) {
            found.push_back("socket " + fd + ":" + (owner ? "" : " no F_SETOWN") + (signal ? "" : " no F_SETSIG") +
                            (async ? "" : " no O_ASYNC"));
        }
    }
    int io_signals_taken = 0;  // rt_sigtimedwait calls that returned a real-time signal
    for (const Syscall& call : session.trace.calls_named("rt_sigtimedwait")) {
        io_signals_taken += contains(call.result, "(SIGRT");
    }
    return found + at_least(io_signals_taken, 3, "real-time signals taken with rt_sigtimedwait (sigwaitinfo)");
}

}  // namespace

Findings arms_every_client_for_real_time_signals(const Session& session) {
    const int accepted =
        static_cast<int>(std::count_if(session.trace.calls.begin(), session.trace.calls.end(),
                                       [](const Syscall& c) { return is_accept(c) && c.value() >= 0; }));
    return at_least(accepted, 3, "TCP connections accepted") + armed_for_real_time_signals(session, session.clients);
}

Findings arms_the_udp_socket_for_real_time_signals(const Session& session) {
    std::set<std::string> udp_sockets;
    for (const Syscall& call : session.trace.calls_named("socket")) {
        if (contains(call.args, "SOCK_DGRAM") && call.value() >= 0) {
            udp_sockets.insert(std::to_string(call.value()));
        }
    }
    if (udp_sockets.empty()) {
        return {"no UDP socket (socket with SOCK_DGRAM)"};
    }
    return armed_for_real_time_signals(session, udp_sockets);
}

// ---------------------------------------------------------------- aio-kernel and aio-posix

Findings submits_aio_poll_requests(const Session& session) {
    int polls = 0;
    for (const Syscall& call : session.trace.calls_named("io_submit")) {
        polls += contains(call.args, "IOCB_CMD_POLL");
    }
    return at_least(polls, 3, "io_submit calls with IOCB_CMD_POLL") +
           at_least(count_named(session, {"io_getevents", "io_pgetevents"}), 3, "io_getevents or io_pgetevents calls");
}

Findings glibc_aio_threads_read_the_clients(const Session& session) {
    std::set<pid_t> accepting;
    for (const Syscall& call : session.trace.calls) {
        if (is_accept(call) && call.value() >= 0) {
            accepting.insert(call.pid);
        }
    }
    Findings found;
    int pread_on_sockets = 0;
    for (const Syscall& call : session.trace.calls_named("pread64")) {
        if (is_client(session, call) && call.error() == "ESPIPE") {
            ++pread_on_sockets;  // aio_read tries pread first; a socket has no offset
            if (accepting.count(call.pid) != 0) {
                found.push_back(shown(call) + ": in the thread that accepts");
            }
        }
    }
    return found + at_least(pread_on_sockets, 3, "pread64 calls on client sockets that said ESPIPE (aio_read)");
}

// ---------------------------------------------------------------- io-uring

Findings the_ring_does_the_copying(const Session& session) {
    int rings = 0;
    for (const Syscall& call : session.trace.calls_named("io_uring_setup")) {
        rings += call.value() >= 0;
    }
    Findings found = at_least(rings, 1, "io_uring instances set up (io_uring_setup)");
    for (const Syscall& call : session.trace.calls) {
        const bool copies = call.name == "recvfrom" || call.name == "sendto" || call.name == "recvmsg" ||
                            call.name == "sendmsg" || call.name == "read" || call.name == "write" ||
                            call.name == "readv" || call.name == "writev";
        if (copies && is_client(session, call)) {
            found.push_back(shown(call) + ": the process copies; in this model RECV and SEND requests do");
            break;
        }
    }
    // No count of io_uring_enter calls is a rule: with this workload's
    // messages, one at a time, a server that reaps each CQE as it comes
    // enters as often as one that submits one request per call, and on a
    // loaded machine that is what a batching server does too.
    return found + at_least(count_named(session, {"io_uring_enter"}), 1, "io_uring_enter calls");
}

const std::vector<Rule>& rules() {
    static const std::vector<Rule> all{
        {"epoll-et", every_epoll_ctl_of_a_client_carries_epollet},
        {"epoll-et", client_sockets_nonblocking_before_reading},
        {"epoll-et", reads_until_eagain_before_sleeping},
        {"epoll-lt", waits_in_epoll_level_triggered},
        {"select", waits_in_select_on_the_clients},
        {"poll", waits_in_poll_on_the_clients},
        {"nonblocking", polls_nonblocking_sockets},
        {"blocking-iterative", serves_one_client_at_a_time_blocking},
        {"fork", forks_a_child_per_connection},
        {"thread", starts_a_thread_per_connection},
        {"rtsig-udp", arms_the_udp_socket_for_real_time_signals},
        {"rtsig-tcp", arms_every_client_for_real_time_signals},
        {"aio-kernel", submits_aio_poll_requests},
        {"aio-posix", glibc_aio_threads_read_the_clients},
        {"io-uring", the_ring_does_the_copying},
    };
    return all;
}

}  // namespace grade
