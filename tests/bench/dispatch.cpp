// tests/bench/dispatch.cpp: the calibration, and what one readiness
// mechanism costs per event with N descriptors watched (libevent's
// test/bench.c method: N socketpairs, A of them primed with one byte, every
// byte read from pair i writes one byte to pair i+1 until 1000 writes are
// chained). The time per event is the mechanism's cost plus one read() and
// one write(). io_uring's POLL_ADD is timed as kernel AIO's IOCB_CMD_POLL:
// the requests are submitted before the clock starts, and every one that
// completes is submitted again (in the same io_uring_enter that waits for
// the next CQE: one system call per round where AIO needs two).
#include "dispatch.hpp"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <climits>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>

#include "09-aio-kernel/aio_abi.hpp"
#include "09-aio-kernel/uring_abi.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"
#include "support.hpp"

namespace bench {

using iomodels::unique_fd;

double trivial_syscall_ns(int calls) {
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i) {
        ::getppid();
    }
    return seconds_since(start) * 1e9 / calls;
}

namespace {

// Reads exactly `size` bytes (blocking); false at EOF or error.
bool read_fully(int fd, char* buffer, std::size_t size) {
    for (std::size_t done = 0; done < size;) {
        const ssize_t n = ::read(fd, buffer + done, size - done);
        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                continue;
            }
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool write_fully(int fd, const char* data, std::size_t size) {
    for (std::size_t done = 0; done < size;) {
        const ssize_t n = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

double in_thread_round_trip_us(int round_trips) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == -1) {
        fail("socketpair", errno);
    }
    const unique_fd a(pair[0]), b(pair[1]);
    char message[512], buffer[512];
    std::memset(message, 'm', sizeof message);
    const auto start = Clock::now();
    for (int i = 0; i < round_trips; ++i) {
        message[i % 512] = static_cast<char>(i);
        if (!write_fully(a.get(), message, sizeof message) || !read_fully(b.get(), buffer, sizeof buffer) ||
            !write_fully(b.get(), buffer, sizeof buffer) || !read_fully(a.get(), buffer, sizeof buffer) ||
            std::memcmp(buffer, message, sizeof message) != 0) {
            fail("in-thread round trip: a message was lost or changed");
        }
    }
    return seconds_since(start) * 1e6 / round_trips;
}

double ping_pong_round_trip_us(int round_trips, int server_cpu) {
    unique_fd listener = iomodels::listen_tcp("127.0.0.1", 0, SOCK_CLOEXEC);
    if (!listener) {
        fail("ping-pong: listen on 127.0.0.1", errno);
    }
    const auto address = iomodels::local_address(listener.get());
    const pid_t child = ::fork();
    if (child == -1) {
        fail("ping-pong: fork", errno);
    }
    if (child == 0) {
        if (server_cpu >= 0) {
            cpu_set_t cpus;
            CPU_ZERO(&cpus);
            CPU_SET(server_cpu, &cpus);
            ::sched_setaffinity(0, sizeof cpus, &cpus);
        }
        const unique_fd peer(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        char buffer[512];
        while (peer && read_fully(peer.get(), buffer, sizeof buffer) && write_fully(peer.get(), buffer, sizeof buffer)) {
        }
        ::_exit(0);
    }
    started(child);
    listener.reset();
    unique_fd client = iomodels::connect_tcp("127.0.0.1", ntohs(address->sin_port));
    if (!client) {
        fail("ping-pong: connect", errno);
    }
    // The parent waits for each echo in epoll_wait on a non-blocking
    // socket, as the load generator does, so that the floor and the
    // servers' round trips are measured the same way.
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    epoll_event interest{};
    interest.events = EPOLLIN;
    if (::fcntl(client.get(), F_SETFL, O_NONBLOCK) == -1 ||
        ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, client.get(), &interest) == -1) {
        fail("ping-pong: epoll_ctl", errno);
    }
    char message[512], buffer[512];
    std::memset(message, 'p', sizeof message);
    const auto one = [&](int i) {
        message[i % 512] = static_cast<char>(i);
        if (::send(client.get(), message, sizeof message, MSG_NOSIGNAL) != sizeof message) {
            fail("ping-pong: send", errno);
        }
        for (std::size_t got = 0; got < sizeof buffer;) {
            epoll_event event;
            if (::epoll_wait(epoll_fd.get(), &event, 1, -1) == -1 && errno != EINTR) {
                fail("ping-pong: epoll_wait", errno);
            }
            const ssize_t n = ::recv(client.get(), buffer + got, sizeof buffer - got, 0);
            if (n == 0 || (n == -1 && errno != EAGAIN)) {
                fail("ping-pong: the echo was lost", n == 0 ? EPIPE : errno);
            }
            got += n > 0 ? static_cast<std::size_t>(n) : 0;
        }
        if (std::memcmp(buffer, message, sizeof message) != 0) {
            fail("ping-pong: a message was changed");
        }
    };
    for (int i = 0; i < 100; ++i) {  // the first round trips set up the connection's state
        one(i);
    }
    const auto start = Clock::now();
    for (int i = 0; i < round_trips; ++i) {
        one(i);
    }
    const double us = seconds_since(start) * 1e6 / round_trips;
    client.reset();
    int status = 0;
    ::waitpid(child, &status, 0);
    reaped(child);
    return us;
}

pid_t start_cheapest_echo(int server_cpu, std::uint16_t& port) {
    unique_fd listener = iomodels::listen_tcp("127.0.0.1", 0, SOCK_CLOEXEC);
    if (!listener) {
        fail("cheapest echo: listen on 127.0.0.1", errno);
    }
    port = ntohs(iomodels::local_address(listener.get())->sin_port);
    const pid_t child = ::fork();
    if (child == -1) {
        fail("cheapest echo: fork", errno);
    }
    if (child != 0) {
        started(child);
        return child;
    }
    if (server_cpu >= 0) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(server_cpu, &cpus);
        ::sched_setaffinity(0, sizeof cpus, &cpus);
    }
    ::signal(SIGTERM, SIG_DFL);
    const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event interest{};
    interest.events = EPOLLIN;
    interest.data.fd = listener.get();
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener.get(), &interest);
    std::vector<char> buffer(65536);
    epoll_event events[256];
    for (;;) {
        const int ready = ::epoll_wait(epoll_fd, events, 256, -1);
        for (int e = 0; e < ready; ++e) {
            const int fd = events[e].data.fd;
            if (fd == listener.get()) {
                // Blocking sockets: a send of one message (512 bytes, one
                // in flight) never waits for room; recv does not block
                // (MSG_DONTWAIT) and epoll says when to call it.
                const int connection = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
                if (connection >= 0) {
                    epoll_event event{};
                    event.events = EPOLLIN;
                    event.data.fd = connection;
                    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, connection, &event);
                }
                continue;
            }
            const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
            if (n > 0 && write_fully(fd, buffer.data(), static_cast<std::size_t>(n))) {
                continue;
            }
            if (n == -1 && errno == EAGAIN) {
                continue;
            }
            ::close(fd);  // end of file, or an error: the load generator closed it
        }
    }
}

void stop_cheapest_echo(pid_t pid) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    reaped(pid);
}

const char* name_of(Mechanism mechanism) {
    switch (mechanism) {
        case Mechanism::none: return "read+write only";
        case Mechanism::select: return "select";
        case Mechanism::poll: return "poll";
        case Mechanism::epoll_lt: return "epoll LT";
        case Mechanism::epoll_et: return "epoll ET";
        case Mechanism::rtsig: return "RT signals";
        case Mechanism::aio_poll: return "AIO poll";
        case Mechanism::uring_poll: return "io_uring POLL_ADD";
        case Mechanism::uring_poll_multishot: return "io_uring POLL_ADD multishot";
    }
    return "?";
}

const std::string& io_uring_unavailable() {
    static const std::string reason = [] {
        io_uring_params params{};
        std::string failed_call;
        const Ring ring(8, params, failed_call);
        return ring ? std::string() : iomodels::describe_failure(failed_call, errno);
    }();
    return reason;
}

Pairs::Pairs(int count, int lowest_descriptor) {
    readers_.reserve(static_cast<std::size_t>(count));
    writers_.reserve(static_cast<std::size_t>(count));
    const auto renumber = [lowest_descriptor](int fd) {
        if (fd >= lowest_descriptor) {
            return fd;
        }
        const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, lowest_descriptor);
        if (moved == -1) {
            fail("fcntl F_DUPFD_CLOEXEC " + std::to_string(lowest_descriptor), errno);
        }
        ::close(fd);
        return moved;
    };
    for (int i = 0; i < count; ++i) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == -1) {
            fail("socketpair (pair " + std::to_string(i) + " of " + std::to_string(count) + ")", errno);
        }
        readers_.push_back(renumber(pair[0]));
        writers_.push_back(renumber(pair[1]));
    }
}

Pairs::~Pairs() {
    for (std::size_t i = 0; i < readers_.size(); ++i) {
        ::close(readers_[i]);
        ::close(writers_[i]);
    }
}

int Pairs::highest_descriptor() const {
    int highest = -1;
    for (std::size_t i = 0; i < readers_.size(); ++i) {
        highest = std::max({highest, readers_[i], writers_[i]});
    }
    return highest;
}

int Pairs::lowest_descriptor() const {
    int lowest = INT_MAX;
    for (std::size_t i = 0; i < readers_.size(); ++i) {
        lowest = std::min({lowest, readers_[i], writers_[i]});
    }
    return lowest;
}

namespace {

// The signal each reader raises when it becomes readable (F_SETSIG).
int dispatch_signal() { return SIGRTMIN + 2; }

// Sets or clears O_ASYNC with F_SETOWN/F_SETSIG on every reader.
void arm_signals(const std::vector<int>& readers, bool on) {
    for (const int fd : readers) {
        const int flags = ::fcntl(fd, F_GETFL);
        if (on && (::fcntl(fd, F_SETOWN, ::getpid()) == -1 || ::fcntl(fd, F_SETSIG, dispatch_signal()) == -1)) {
            fail("fcntl F_SETOWN/F_SETSIG", errno);
        }
        if (flags == -1 || ::fcntl(fd, F_SETFL, on ? flags | O_ASYNC : flags & ~O_ASYNC) == -1) {
            fail("fcntl F_SETFL O_ASYNC", errno);
        }
    }
}

sigset_t dispatch_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, dispatch_signal());
    sigaddset(&set, SIGIO);  // what the kernel sends instead when the queue is full
    return set;
}

}  // namespace

double Pairs::run(Mechanism mechanism, int active, int chained) {
    const int count = this->count();
    long long written = 0, read_bytes = 0;
    std::deque<int> written_to;  // none: the pairs that were given a byte, in order
    const auto write_to = [&](int index) {
        if (::write(writers_[static_cast<std::size_t>(index % count)], "x", 1) != 1) {
            fail("write to a socketpair", errno);
        }
        ++written;
        if (mechanism == Mechanism::none) {
            written_to.push_back(index % count);
        }
    };
    int chained_left = chained;
    // Reads what pair i has; each byte read chains one write to pair i+1.
    const auto drain = [&](int index) {
        char buffer[64];
        for (;;) {
            const ssize_t n = ::read(readers_[static_cast<std::size_t>(index)], buffer, sizeof buffer);
            if (n > 0) {
                read_bytes += n;
                for (ssize_t b = 0; b < n && chained_left > 0; ++b, --chained_left) {
                    write_to(index + 1);
                }
                continue;
            }
            if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return;
            }
            fail("read from a socketpair", n == 0 ? EPIPE : errno);
        }
    };

    // Set up the mechanism (not timed): register every reader once.
    unique_fd epoll_fd;
    std::vector<pollfd> poll_fds;
    aio_context_t context = 0;
    std::vector<iocb> requests;
    std::vector<iocb*> to_submit;
    std::vector<int> index_of;  // rtsig: descriptor -> pair
    std::unique_ptr<Ring> ring;
    const bool multishot = mechanism == Mechanism::uring_poll_multishot;
    const sigset_t signals = dispatch_signals();
    sigset_t saved_mask;
    const auto submit = [&] {
        for (std::size_t done = 0; done < to_submit.size();) {
            const int n = io_submit(context, static_cast<long>(to_submit.size() - done), to_submit.data() + done);
            if (n <= 0) {
                fail("io_submit (IOCB_CMD_POLL)", n == 0 ? EAGAIN : errno);
            }
            done += static_cast<std::size_t>(n);
        }
        to_submit.clear();
    };
    // io_uring: submits the SQEs prepared and, if `wait`, sleeps until a CQE
    // is there, in one io_uring_enter.
    const auto enter = [&](bool wait) {
        const unsigned prepared = ring->publish();
        if (io_uring_enter(ring->fd(), prepared, wait ? 1 : 0, wait ? IORING_ENTER_GETEVENTS : 0, nullptr) == -1 &&
            errno != EINTR) {
            fail("io_uring_enter", errno);
        }
    };
    const auto arm = [&](int index) {
        io_uring_sqe* sqe = ring->get_sqe();
        while (sqe == nullptr) {  // the SQ ring is full: hand it to the kernel first
            enter(false);
            sqe = ring->get_sqe();
        }
        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->fd = readers_[static_cast<std::size_t>(index)];
        sqe->poll32_events = POLLIN;
        sqe->len = multishot ? IORING_POLL_ADD_MULTI : 0;
        sqe->user_data = static_cast<std::uint64_t>(index);
    };
    switch (mechanism) {
        case Mechanism::epoll_lt:
        case Mechanism::epoll_et:
            epoll_fd.reset(::epoll_create1(EPOLL_CLOEXEC));
            for (int i = 0; i < count; ++i) {
                epoll_event event{};
                event.events = EPOLLIN | (mechanism == Mechanism::epoll_et ? EPOLLET : 0U);
                event.data.u32 = static_cast<std::uint32_t>(i);
                if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, readers_[static_cast<std::size_t>(i)], &event) == -1) {
                    fail("epoll_ctl ADD", errno);
                }
            }
            break;
        case Mechanism::poll:
            for (const int fd : readers_) {
                poll_fds.push_back({fd, POLLIN, 0});
            }
            break;
        case Mechanism::rtsig:
            index_of.assign(static_cast<std::size_t>(highest_descriptor()) + 1, -1);
            for (int i = 0; i < count; ++i) {
                index_of[static_cast<std::size_t>(readers_[static_cast<std::size_t>(i)])] = i;
            }
            ::pthread_sigmask(SIG_BLOCK, &signals, &saved_mask);
            arm_signals(readers_, true);
            break;
        case Mechanism::aio_poll:
            if (io_setup(static_cast<unsigned>(count), &context) == -1) {
                fail("io_setup " + std::to_string(count), errno);
            }
            requests.resize(static_cast<std::size_t>(count));
            for (int i = 0; i < count; ++i) {
                iocb& request = requests[static_cast<std::size_t>(i)];
                request = iocb{};
                request.aio_lio_opcode = IOCB_CMD_POLL;
                request.aio_fildes = static_cast<std::uint32_t>(readers_[static_cast<std::size_t>(i)]);
                request.aio_buf = POLLIN;
                request.aio_data = static_cast<std::uint64_t>(i);
                to_submit.push_back(&request);
            }
            submit();
            break;
        case Mechanism::uring_poll:
        case Mechanism::uring_poll_multishot: {
            // A CQ ring with room for a CQE of every request: it cannot
            // overflow (the kernel wants at least as many as SQEs).
            io_uring_params params{};
            params.flags = IORING_SETUP_CQSIZE;
            params.cq_entries = std::max(2048U, 2 * static_cast<unsigned>(count));
            std::string failed_call;
            ring = std::make_unique<Ring>(1024, params, failed_call);
            if (!*ring) {
                fail(failed_call, errno);  // the caller asked io_uring_unavailable() first
            }
            for (int i = 0; i < count; ++i) {
                arm(i);
            }
            while (ring->publish() > 0) {
                enter(false);
            }
            break;
        }
        case Mechanism::none:
        case Mechanism::select: break;
    }

    const long long expected = active + chained;
    std::vector<epoll_event> events(256);
    std::vector<io_event> completions(256);
    for (int i = 0; i < active; ++i) {
        write_to(i * (count / active));
    }
    const auto start = Clock::now();
    while (read_bytes < expected) {
        switch (mechanism) {
            case Mechanism::none: {
                // No system call asks which pair is ready: the queue knows.
                // A pair given two bytes is drained at its first turn and
                // reads nothing (EAGAIN) at its second.
                const int index = written_to.front();
                written_to.pop_front();
                drain(index);
                break;
            }
            case Mechanism::select: {
                fd_set readable;
                FD_ZERO(&readable);  // rebuilt every call, as a select server must
                int highest = 0;
                for (const int fd : readers_) {
                    FD_SET(fd, &readable);
                    highest = std::max(highest, fd);
                }
                if (::select(highest + 1, &readable, nullptr, nullptr, nullptr) == -1) {
                    fail("select", errno);
                }
                for (int i = 0; i < count; ++i) {
                    if (FD_ISSET(readers_[static_cast<std::size_t>(i)], &readable)) {
                        drain(i);
                    }
                }
                break;
            }
            case Mechanism::poll:
                if (::poll(poll_fds.data(), poll_fds.size(), -1) == -1) {
                    fail("poll", errno);
                }
                for (int i = 0; i < count; ++i) {
                    if ((poll_fds[static_cast<std::size_t>(i)].revents & POLLIN) != 0) {
                        drain(i);
                    }
                }
                break;
            case Mechanism::epoll_lt:
            case Mechanism::epoll_et: {
                const int ready = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), -1);
                if (ready == -1) {
                    fail("epoll_wait", errno);
                }
                for (int e = 0; e < ready; ++e) {
                    drain(static_cast<int>(events[static_cast<std::size_t>(e)].data.u32));
                }
                break;
            }
            case Mechanism::rtsig: {
                // One signal per readiness change: si_fd names the socket.
                // Queued signals cannot be fetched in a batch.
                siginfo_t info;
                if (::sigwaitinfo(&signals, &info) == -1) {
                    fail("sigwaitinfo", errno);
                }
                if (info.si_signo == SIGIO) {
                    fail("the real-time signal queue overflowed (SIGIO): raise RLIMIT_SIGPENDING");
                }
                if (info.si_fd >= 0 && static_cast<std::size_t>(info.si_fd) < index_of.size() &&
                    index_of[static_cast<std::size_t>(info.si_fd)] >= 0) {
                    drain(index_of[static_cast<std::size_t>(info.si_fd)]);
                }
                break;
            }
            case Mechanism::aio_poll: {
                // Each IOCB_CMD_POLL completes once; the ones that did are
                // submitted again, in one io_submit.
                const int n = io_getevents(context, 1, static_cast<long>(completions.size()), completions.data(),
                                           nullptr);
                if (n == -1) {
                    fail("io_getevents", errno);
                }
                for (int e = 0; e < n; ++e) {
                    const io_event& completion = completions[static_cast<std::size_t>(e)];
                    if (completion.res < 0) {
                        fail("IOCB_CMD_POLL", static_cast<int>(-completion.res));
                    }
                    const auto index = static_cast<std::size_t>(completion.data);
                    drain(static_cast<int>(index));
                    to_submit.push_back(&requests[index]);
                }
                submit();
                break;
            }
            case Mechanism::uring_poll:
            case Mechanism::uring_poll_multishot:
                // One system call: the re-armed POLL_ADDs go in, and it
                // sleeps until a CQE is there.
                enter(true);
                ring->for_each_completion([&](const io_uring_cqe& completion) {
                    if (completion.res < 0) {
                        fail("IORING_OP_POLL_ADD", -completion.res);
                    }
                    const auto index = static_cast<int>(completion.user_data);
                    drain(index);
                    // One-shot: it is done. Multishot: it goes on while
                    // IORING_CQE_F_MORE says so.
                    if (!multishot || (completion.flags & IORING_CQE_F_MORE) == 0) {
                        arm(index);
                    }
                });
                break;
        }
    }
    const double elapsed = seconds_since(start) * 1e6;

    // Tear down (not timed).
    if (mechanism == Mechanism::rtsig) {
        arm_signals(readers_, false);
        const timespec zero{};
        while (::sigtimedwait(&signals, nullptr, &zero) > 0) {  // signals for bytes already read
        }
        ::pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
    } else if (mechanism == Mechanism::aio_poll) {
        io_destroy(context);  // cancels the polls still waiting
    } else if (ring) {
        ring.reset();  // closing the ring cancels the polls still waiting
    }
    if (read_bytes != expected || written != expected) {
        fail(std::string(name_of(mechanism)) + " dispatch run lost or invented bytes: wrote " +
             std::to_string(written) + ", read " + std::to_string(read_bytes) + ", expected " +
             std::to_string(expected));
    }
    return elapsed / static_cast<double>(read_bytes);
}

double Pairs::ready_call(Mechanism mechanism, int calls) {
    const int fd = readers_.front();
    if (::write(writers_.front(), "x", 1) != 1) {
        fail("write to a socketpair", errno);
    }
    unique_fd epoll_fd;
    if (mechanism == Mechanism::epoll_lt) {
        epoll_fd.reset(::epoll_create1(EPOLL_CLOEXEC));
        epoll_event event{};
        event.events = EPOLLIN;
        if (!epoll_fd || ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, fd, &event) == -1) {
            fail("epoll_ctl ADD", errno);
        }
    }
    constexpr int bits_per_long = 8 * sizeof(unsigned long);
    std::vector<unsigned long> bitmap(static_cast<std::size_t>(fd / bits_per_long + 1));
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i) {
        int ready = -1;
        switch (mechanism) {
            case Mechanism::select: {
                // The bitmap the kernel reads: nfds bits, in longs. An
                // fd_set is the same bitmap cut at FD_SETSIZE bits, which
                // the kernel does not know of; this one goes past it.
                std::fill(bitmap.begin(), bitmap.end(), 0UL);
                bitmap[static_cast<std::size_t>(fd) / bits_per_long] |= 1UL << (fd % bits_per_long);
                ready = ::select(fd + 1, reinterpret_cast<fd_set*>(bitmap.data()), nullptr, nullptr, nullptr);
                break;
            }
            case Mechanism::poll: {
                pollfd entry{fd, POLLIN, 0};
                ready = ::poll(&entry, 1, -1);
                break;
            }
            case Mechanism::epoll_lt: {
                epoll_event event;
                ready = ::epoll_wait(epoll_fd.get(), &event, 1, -1);
                break;
            }
            default: fail(std::string("ready_call: ") + name_of(mechanism) + " is not measured this way");
        }
        if (ready != 1) {
            fail(std::string(name_of(mechanism)) + " on a ready descriptor", ready == -1 ? errno : EAGAIN);
        }
    }
    const double us = seconds_since(start) * 1e6 / calls;
    char byte;
    if (::read(fd, &byte, 1) != 1) {  // as it was
        fail("read from a socketpair", errno);
    }
    return us;
}

}  // namespace bench
