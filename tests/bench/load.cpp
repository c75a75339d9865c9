// tests/bench/load.cpp: the load generator (see load.hpp).
#include "load.hpp"

#include <errno.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "support.hpp"

namespace bench {

using iomodels::unique_fd;

namespace {

constexpr auto stall_limit = std::chrono::seconds(5);

// 1 MiB of random bytes; every message is a slice of it, at an offset that
// depends on the connection and the message number, so a byte echoed on
// the wrong connection or out of order is seen as well as a changed one.
const std::vector<char>& pattern() {
    static const std::vector<char> bytes = [] {
        std::vector<char> random(1 << 20);
        std::mt19937 generator(20261123);
        for (char& byte : random) {
            byte = static_cast<char>(generator());
        }
        return random;
    }();
    return bytes;
}

std::size_t message_offset(std::size_t connection, std::uint64_t message, std::size_t size) {
    return static_cast<std::size_t>((connection * 7919 + message * 104729) % (pattern().size() - size));
}

std::string hex(char byte) {
    char text[8];
    std::snprintf(text, sizeof text, "0x%02x", static_cast<unsigned char>(byte));
    return text;
}

unique_fd new_socket() {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        fail("socket", errno);
    }
    return fd;
}

// Opens `count` connections to `port`, each proven by a one-byte echo,
// 256 at a time. False with `error` set if one is refused or the server
// stops answering for 5 s.
bool open_proven(std::uint16_t port, int count, std::vector<unique_fd>& into, const std::string& server,
                 std::string& error) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const unique_fd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
    for (int opened = 0; opened < count;) {
        const int batch = std::min(256, count - opened);
        std::vector<unique_fd> fds;
        std::vector<int> state(static_cast<std::size_t>(batch), 0);  // 0 connecting, 1 sent, 2 proven
        for (int i = 0; i < batch; ++i) {
            unique_fd fd = new_socket();
            if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1 &&
                errno != EINPROGRESS) {
                error = server + ": connect (connection " + std::to_string(opened + i + 1) + ")" + ": " +
                        std::strerror(errno);
                return false;
            }
            epoll_event event{};
            event.events = EPOLLOUT | EPOLLIN;
            event.data.u32 = static_cast<std::uint32_t>(i);
            ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, fd.get(), &event);
            fds.push_back(std::move(fd));
        }
        int proven = 0;
        auto last_progress = Clock::now();
        epoll_event events[256];
        while (proven < batch) {
            const int n = ::epoll_wait(epoll_fd.get(), events, 256, 100);
            if (n == -1 && errno != EINTR) {
                fail("epoll_wait", errno);
            }
            if (n <= 0) {
                if (Clock::now() - last_progress > stall_limit) {
                    error = server + " served " + std::to_string(opened + proven) + " connections, then no more for " +
                            std::to_string(stall_limit.count()) + " s";
                    return false;
                }
                continue;
            }
            for (int e = 0; e < n; ++e) {
                const auto i = static_cast<std::size_t>(events[e].data.u32);
                const int fd = fds[i].get();
                if (state[i] == 0) {
                    int socket_error = 0;
                    socklen_t length = sizeof socket_error;
                    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
                    if (socket_error != 0 || ::send(fd, "k", 1, MSG_NOSIGNAL) != 1) {
                        error = server + " refused connection " + std::to_string(opened + static_cast<int>(i) + 1) +
                                ": " + std::strerror(socket_error != 0 ? socket_error : errno);
                        return false;
                    }
                    state[i] = 1;
                    epoll_event event{};
                    event.events = EPOLLIN;
                    event.data.u32 = static_cast<std::uint32_t>(i);
                    ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_MOD, fd, &event);
                } else if (state[i] == 1) {
                    char byte = 0;
                    const ssize_t got = ::recv(fd, &byte, 1, 0);
                    if (got == -1 && errno == EAGAIN) {
                        continue;
                    }
                    if (got != 1) {
                        error = server + " closed connection " + std::to_string(opened + static_cast<int>(i) + 1) +
                                " without answering (" + (got == 0 ? "EOF" : std::strerror(errno)) + ")";
                        return false;
                    }
                    if (byte != 'k') {
                        fail(server + ": echoed byte differs at byte 0 of connection " +
                             std::to_string(opened + static_cast<int>(i) + 1) + ": sent 0x6b, got " + hex(byte));
                    }
                    state[i] = 2;
                    ++proven;
                    last_progress = Clock::now();
                    ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_DEL, fd, nullptr);
                }
            }
        }
        for (unique_fd& fd : fds) {
            into.push_back(std::move(fd));
        }
        opened += batch;
    }
    return true;
}

}  // namespace

double RunResult::percentile_us(double p) const {
    if (round_trips_us.empty()) {
        return 0;
    }
    std::vector<float> sorted = round_trips_us;
    const auto at = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1));
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(at), sorted.end());
    return sorted[at];
}

Load::Load(std::string server, std::uint16_t port) : server_(std::move(server)), port_(port) {}

bool Load::open_idle(int count, std::string& error) {
    return count <= idle() || open_proven(port_, count - idle(), idle_, server_, error);
}

bool Load::open_active(int count, std::string& error) {
    close_active();
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!open_proven(port_, count, active_, server_, error)) {
        return false;
    }
    for (std::size_t i = 0; i < active_.size(); ++i) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u32 = static_cast<std::uint32_t>(i);
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, active_[i].get(), &event) == -1) {
            fail("epoll_ctl ADD", errno);
        }
    }
    return true;
}

void Load::close_active() {
    active_.clear();
    epoll_.reset();
}

bool Load::run(std::size_t size, double warmup, double window, RunResult& result, std::string& error) {
    return drive(size, warmup, window, 0, result, error);
}

bool Load::run_count(std::size_t size, int per_connection, RunResult& result, std::string& error) {
    return drive(size, 0, 0, per_connection, result, error);
}

bool Load::drive(std::size_t size, double warmup, double window, int per_connection, RunResult& result,
                 std::string& error) {
    struct Flight {
        std::uint64_t number = 0;  // which message, for its content
        std::size_t offset = 0;    // where it starts in pattern()
        std::size_t sent = 0, received = 0;
        int done = 0;  // messages completed in this run
        bool writing = false;
        bool finished = false;
        Clock::time_point started;
    };
    const std::vector<char>& bytes = pattern();
    std::vector<Flight> flights(active_.size());
    result = RunResult{};
    result.window_seconds = window;
    const auto start = Clock::now();
    const auto window_start = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup));
    const auto window_end =
        window_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(window));
    std::size_t finished = 0;

    const auto watch = [this](std::size_t i, bool writing) {
        epoll_event event{};
        event.events = EPOLLIN | (writing ? EPOLLOUT : 0U);
        event.data.u32 = static_cast<std::uint32_t>(i);
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, active_[i].get(), &event);
    };
    // Writes what is left of the message; EPOLLOUT only while some is left.
    const auto send_more = [&](std::size_t i) {
        Flight& flight = flights[i];
        while (flight.sent < size) {
            const ssize_t n = ::send(active_[i].get(), bytes.data() + flight.offset + flight.sent, size - flight.sent,
                                     MSG_NOSIGNAL);
            if (n == -1) {
                if (errno == EAGAIN) {
                    break;
                }
                fail(server_ + ": send on active connection " + std::to_string(i + 1), errno);
            }
            flight.sent += static_cast<std::size_t>(n);
        }
        const bool writing = flight.sent < size;
        if (writing != flight.writing) {
            flight.writing = writing;
            watch(i, writing);
        }
    };
    const auto begin = [&](std::size_t i, Clock::time_point now) {
        Flight& flight = flights[i];
        flight.number = messages_sent_++;
        flight.offset = message_offset(i, flight.number, size);
        flight.sent = flight.received = 0;
        flight.started = now;
        send_more(i);
    };
    const auto now0 = Clock::now();
    for (std::size_t i = 0; i < flights.size(); ++i) {
        begin(i, now0);
    }
    std::vector<char> buffer(std::max<std::size_t>(size, 65536));
    std::vector<epoll_event> events(std::max<std::size_t>(flights.size(), 1));
    auto last_progress = Clock::now();
    while (finished < flights.size()) {
        const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 100);
        if (n == -1 && errno != EINTR) {
            fail("epoll_wait", errno);
        }
        const auto now = Clock::now();
        if (n <= 0) {
            if (now - last_progress > stall_limit) {
                error = server_ + " stalled: no echo for " + std::to_string(stall_limit.count()) + " s with " +
                        std::to_string(flights.size() - finished) + " messages in flight";
                return false;
            }
            continue;
        }
        for (int e = 0; e < n; ++e) {
            const auto i = static_cast<std::size_t>(events[static_cast<std::size_t>(e)].data.u32);
            Flight& flight = flights[i];
            if ((events[static_cast<std::size_t>(e)].events & EPOLLOUT) != 0) {
                send_more(i);
            }
            if ((events[static_cast<std::size_t>(e)].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) == 0) {
                continue;
            }
            // Read what has come back, never more than the message: a byte
            // too many stays in the socket and is caught below or by the
            // next message.
            const ssize_t got = ::recv(active_[i].get(), buffer.data(), size - flight.received, 0);
            if (got == -1 && errno == EAGAIN) {
                continue;
            }
            if (flight.finished && got > 0) {
                fail(server_ + ": active connection " + std::to_string(i + 1) + " received bytes that were never sent");
            }
            if (got <= 0) {
                fail(server_ + ": active connection " + std::to_string(i + 1) + " closed by the server with " +
                     std::to_string(size - flight.received) + " bytes of message " + std::to_string(flight.number) +
                     " not echoed (" + (got == 0 ? std::string("EOF") : std::strerror(errno)) + ")");
            }
            const char* expected = bytes.data() + flight.offset + flight.received;
            if (std::memcmp(buffer.data(), expected, static_cast<std::size_t>(got)) != 0) {
                std::size_t at = 0;
                while (buffer[at] == expected[at]) {
                    ++at;
                }
                fail(server_ + ": echoed byte differs at byte " + std::to_string(flight.received + at) + " of a " +
                     std::to_string(size) + "-byte message on active connection " + std::to_string(i + 1) +
                     ": sent " + hex(expected[at]) + ", got " + hex(buffer[at]));
            }
            flight.received += static_cast<std::size_t>(got);
            if (flight.received < size) {
                continue;
            }
            // One echo, complete and checked.
            last_progress = now;
            ++result.all_echoes;
            ++flight.done;
            if (per_connection == 0 && now >= window_start && now < window_end) {
                ++result.window_echoes;
                result.round_trips_us.push_back(
                    static_cast<float>(std::chrono::duration<double, std::micro>(now - flight.started).count()));
            }
            const bool more = per_connection > 0 ? flight.done < per_connection : now < window_end;
            if (more) {
                begin(i, now);
            } else {
                flight.finished = true;
                ++finished;
            }
        }
    }
    // Nothing more may come back: every byte sent has been echoed.
    for (std::size_t i = 0; i < active_.size(); ++i) {
        char byte;
        const ssize_t extra = ::recv(active_[i].get(), &byte, 1, MSG_DONTWAIT);
        if (extra != -1 || errno != EAGAIN) {
            fail(server_ + ": active connection " + std::to_string(i + 1) +
                 (extra > 0 ? " received a byte that was never sent" : " was closed by the server after a run"));
        }
    }
    if (per_connection > 0) {
        result.window_seconds = seconds_since(start);
    }
    return true;
}

}  // namespace bench
