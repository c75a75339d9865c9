// tests/bench/bench.cpp: measures the I/O models side by side.
//
// This first part measures the cost of *dispatch*: how long one readiness
// mechanism takes to report one event when N descriptors are watched and
// A of them are active, with the method of libevent's test/bench.c:
// N socketpairs, A of them primed with one byte; every byte read from pair
// i writes one byte to pair i+1, until 1000 bytes have been chained. The
// time per event is what the readiness mechanism costs, plus two trivial
// system calls. Every run is repeated and reported as a median with its
// spread (min..max); every byte is counted, and a run that loses or
// invents one fails the program.
//
// Also a calibration, every run: the cost of one trivial system call, and
// the round trip of one 512-byte message through a socketpair within one
// thread (the ceiling of an echo: zero wake-ups).
//
// Still to come (issue 7): real-time signals and AIO poll in the dispatch
// table, the echo servers under load with idle connections, memory per
// connection, external servers, plots.
//
// usage: bench [--quick] [--runs N]
//   --quick: small sizes, one run each, for CI: checks correctness, prints figures without meaning

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void fail(const std::string& what, int error = 0) {
    if (error != 0) {
        report_failure(what, error);
    } else {
        std::fprintf(stderr, "%s: %s\n", program_name(), what.c_str());
    }
    std::exit(1);
}

struct Figure {
    double median, low, high;
};

Figure summarise(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    return {samples[samples.size() / 2], samples.front(), samples.back()};
}

std::string show(const Figure& figure) {
    char text[64];
    std::snprintf(text, sizeof text, "%.3f (%.3f..%.3f)", figure.median, figure.low, figure.high);
    return text;
}

// ---------------------------------------------------------------- calibration

// Nanoseconds per getppid(): a system call that does nothing.
double trivial_syscall_ns(int calls) {
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i) {
        ::getppid();
    }
    return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / calls;
}

// Microseconds per 512-byte round trip through a socketpair, in one thread:
// write on one end, read it on the other, write it back, read it back.
double in_thread_round_trip_us(int round_trips) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == -1) {
        fail("socketpair", errno);
    }
    const unique_fd a(pair[0]), b(pair[1]);
    char message[512] = {}, buffer[512];
    const auto start = Clock::now();
    for (int i = 0; i < round_trips; ++i) {
        message[0] = static_cast<char>(i);
        if (::write(a.get(), message, sizeof message) != sizeof message ||
            ::read(b.get(), buffer, sizeof buffer) != sizeof buffer ||
            ::write(b.get(), buffer, sizeof buffer) != sizeof buffer ||
            ::read(a.get(), buffer, sizeof buffer) != sizeof buffer || buffer[0] != message[0]) {
            fail("in-thread round trip: a message was lost or changed");
        }
    }
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / round_trips;
}

// ------------------------------------------------------------ dispatch cost

enum class Mechanism { select, poll, epoll_lt, epoll_et };

const char* name_of(Mechanism mechanism) {
    switch (mechanism) {
        case Mechanism::select: return "select";
        case Mechanism::poll: return "poll";
        case Mechanism::epoll_lt: return "epoll LT";
        case Mechanism::epoll_et: return "epoll ET";
    }
    return "?";
}

struct Pairs {
    std::vector<unique_fd> readers, writers;
};

Pairs make_pairs(int count) {
    Pairs pairs;
    for (int i = 0; i < count; ++i) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == -1) {
            fail("socketpair (pair " + std::to_string(i) + ")", errno);
        }
        pairs.readers.emplace_back(pair[0]);
        pairs.writers.emplace_back(pair[1]);
    }
    return pairs;
}

// One run: prime `active` pairs, chain `chained` writes; returns
// microseconds per event (per byte read). Fails if any byte is lost.
double dispatch_run(Mechanism mechanism, Pairs& pairs, int active, int chained) {
    const int count = static_cast<int>(pairs.readers.size());
    unique_fd epoll_fd;
    std::vector<pollfd> poll_fds;
    if (mechanism == Mechanism::epoll_lt || mechanism == Mechanism::epoll_et) {
        epoll_fd.reset(::epoll_create1(EPOLL_CLOEXEC));
        for (int i = 0; i < count; ++i) {
            epoll_event event{};
            event.events = EPOLLIN | (mechanism == Mechanism::epoll_et ? EPOLLET : 0u);
            event.data.u32 = static_cast<std::uint32_t>(i);
            if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, pairs.readers[static_cast<std::size_t>(i)].get(), &event) == -1) {
                fail("epoll_ctl", errno);
            }
        }
    } else if (mechanism == Mechanism::poll) {
        for (const unique_fd& reader : pairs.readers) {
            poll_fds.push_back({reader.get(), POLLIN, 0});
        }
    }

    long long written = 0, read_bytes = 0;
    const auto write_to = [&](int index) {
        if (::write(pairs.writers[static_cast<std::size_t>(index % count)].get(), "x", 1) != 1) {
            fail("write", errno);
        }
        ++written;
    };
    for (int i = 0; i < active; ++i) {
        write_to(i * (count / active));
    }
    int chained_left = chained;
    // Reads what pair i has; each byte chains one write to pair i+1.
    const auto drain = [&](int index) {
        char buffer[64];
        for (;;) {
            const ssize_t n = ::read(pairs.readers[static_cast<std::size_t>(index)].get(), buffer, sizeof buffer);
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
            fail("read", n == 0 ? EPIPE : errno);
        }
    };

    const long long expected = active + chained;
    std::vector<epoll_event> events(128);
    const auto start = Clock::now();
    while (read_bytes < expected) {
        if (mechanism == Mechanism::select) {
            fd_set readable;
            FD_ZERO(&readable);  // select's sets are rebuilt every call, as a select server must
            int highest = 0;
            for (const unique_fd& reader : pairs.readers) {
                FD_SET(reader.get(), &readable);
                highest = std::max(highest, reader.get());
            }
            if (::select(highest + 1, &readable, nullptr, nullptr, nullptr) == -1) {
                fail("select", errno);
            }
            for (int i = 0; i < count; ++i) {
                if (FD_ISSET(pairs.readers[static_cast<std::size_t>(i)].get(), &readable)) {
                    drain(i);
                }
            }
        } else if (mechanism == Mechanism::poll) {
            if (::poll(poll_fds.data(), poll_fds.size(), -1) == -1) {
                fail("poll", errno);
            }
            for (int i = 0; i < count; ++i) {
                if ((poll_fds[static_cast<std::size_t>(i)].revents & POLLIN) != 0) {
                    drain(i);
                }
            }
        } else {
            const int ready = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), -1);
            if (ready == -1) {
                fail("epoll_wait", errno);
            }
            for (int e = 0; e < ready; ++e) {
                drain(static_cast<int>(events[static_cast<std::size_t>(e)].data.u32));
            }
        }
    }
    const double elapsed = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    if (read_bytes != expected || written != expected) {
        fail("dispatch run lost or invented bytes: wrote " + std::to_string(written) + ", read " +
             std::to_string(read_bytes) + ", expected " + std::to_string(expected));
    }
    return elapsed / static_cast<double>(read_bytes);
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false;
    int runs = 5;
    const CommandLine command{
        "[--quick] [--runs N]",
        "Measures the I/O models side by side (so far: calibration and the dispatch cost of select, poll, epoll).",
        {{"--quick", "", "small sizes and one run each: checks that every byte arrives (for CI)",
          [&quick](std::string_view) { return quick = true; }},
         {"--runs", "N", "runs per figure, reported as median (min..max); default 5",
          [&runs](std::string_view value) {
              runs = std::atoi(std::string(value).c_str());
              return runs >= 1 && runs <= 101;
          }}},
        {},
        "argument",
        "",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (quick) {
        runs = 1;
    }

    // Up to 9000 pairs: 18000 descriptors.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    const rlim_t wanted = quick ? 1024 : 18200;
    if (limit.rlim_cur < wanted) {
        limit.rlim_cur = std::min(wanted, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    const int most_pairs = static_cast<int>((limit.rlim_cur - 100) / 2);

    std::printf("# I/O models: benchmark%s\n\n", quick ? " (--quick: correctness only, figures without meaning)" : "");
#ifndef NDEBUG
    std::printf("Built without NDEBUG (a debug build): for figures that mean something, build the release preset.\n\n");
#endif
    std::printf("## Calibration\n\n| what | median (min..max) |\n|---|---|\n");
    {
        std::vector<double> syscall_ns, round_trip_us;
        for (int run = 0; run < runs; ++run) {
            syscall_ns.push_back(trivial_syscall_ns(quick ? 10000 : 1000000));
            round_trip_us.push_back(in_thread_round_trip_us(quick ? 1000 : 100000));
        }
        const Figure round_trip = summarise(round_trip_us);
        std::printf("| one trivial system call (getppid), ns | %s |\n", show(summarise(syscall_ns)).c_str());
        std::printf("| 512-byte round trip through a socketpair in one thread, µs | %s |\n", show(round_trip).c_str());
        std::printf("| two-core ceiling, echoes/s (2 / the round trip) | %.0f |\n\n", 2e6 / round_trip.median);
    }

    std::printf("## Dispatch cost (libevent's method)\n\n");
    std::printf("µs per event, median (min..max) of %d run%s; N socketpairs watched, A active, 1000 chained writes.\n\n",
                runs, runs == 1 ? "" : "s");
    const std::vector<int> sizes = quick ? std::vector<int>{16, 100} : std::vector<int>{16, 100, 500, 1000, 4000, 9000};
    const int chained = 1000;
    for (const int active : {1, 100}) {
        std::printf("### A = %d\n\n| N |", active);
        const Mechanism mechanisms[] = {Mechanism::select, Mechanism::poll, Mechanism::epoll_lt, Mechanism::epoll_et};
        for (const Mechanism mechanism : mechanisms) {
            std::printf(" %s |", name_of(mechanism));
        }
        std::printf("\n|---|---|---|---|---|\n");
        std::vector<std::vector<double>> medians(4);
        std::vector<int> measured_sizes;
        for (const int count : sizes) {
            if (count > most_pairs || active > count) {
                continue;
            }
            Pairs pairs = make_pairs(count);
            measured_sizes.push_back(count);
            std::printf("| %d |", count);
            for (std::size_t m = 0; m < 4; ++m) {
                // select: descriptors must stay below FD_SETSIZE (1024).
                if (mechanisms[m] == Mechanism::select && pairs.readers.back().get() >= FD_SETSIZE) {
                    std::printf(" — |");
                    continue;
                }
                std::vector<double> samples;
                for (int run = 0; run < runs; ++run) {
                    samples.push_back(dispatch_run(mechanisms[m], pairs, active, chained));
                }
                const Figure figure = summarise(samples);
                medians[m].push_back(figure.median);
                std::printf(" %s |", show(figure).c_str());
            }
            std::printf("\n");
        }
        // Each mechanism's largest N over its smallest (select stops at FD_SETSIZE).
        std::printf("\nCost at the largest N over the cost at N = %d:", measured_sizes.empty() ? 0 : measured_sizes.front());
        for (std::size_t m = 0; m < 4; ++m) {
            if (medians[m].size() >= 2) {
                std::printf(" %s %.1f (N = %d);", name_of(mechanisms[m]), medians[m].back() / medians[m].front(),
                            measured_sizes[medians[m].size() - 1]);
            }
        }
        std::printf("\n\n");
    }
    std::printf("Every byte written was read back in every run.\n");
    return 0;
}
