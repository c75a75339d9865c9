// tests/bench/support.hpp: what every part of the benchmark shares: failing
// loudly without leaving a process behind, and a figure as a median with its
// spread.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/errors.hpp"

namespace bench {

using Clock = std::chrono::steady_clock;

// The processes the benchmark has started and not yet reaped: servers (by
// process group, a negative number, so that a fork server's children are
// included), perf, strace, the ping-pong peer. fail() stops them all. The
// benchmark has one thread.
inline std::vector<pid_t>& started_processes() {
    static std::vector<pid_t> started;
    return started;
}
inline void started(pid_t pid_or_group) { started_processes().push_back(pid_or_group); }
inline void reaped(pid_t pid_or_group) { std::erase(started_processes(), pid_or_group); }

// Ends the benchmark with exit 1 and one line on stderr, after killing and
// reaping every process it started. Used when a figure would be wrong: a
// byte lost or changed, a system call that must not fail.
[[noreturn]] inline void fail(const std::string& what, int error = 0) {
    if (error != 0) {
        iomodels::report_failure(what, error);
    } else {
        std::fprintf(stderr, "%s: %s\n", iomodels::program_name(), what.c_str());
    }
    for (const pid_t pid : started_processes()) {
        ::kill(pid, SIGKILL);
    }
    for (const pid_t pid : started_processes()) {
        ::waitpid(pid < 0 ? -pid : pid, nullptr, 0);
    }
    std::exit(1);
}

// Progress on stderr, so that a ten-minute run shows where it is and how
// long each part takes.
inline Clock::time_point program_start() {
    static const auto start = Clock::now();
    return start;
}

template <typename... Args>
void progress(const char* format, Args... args) {
    std::fprintf(stderr, "[%6.1f s] ", std::chrono::duration<double>(Clock::now() - program_start()).count());
    std::fprintf(stderr, format, args...);
    std::fputc('\n', stderr);
}

// A figure measured several times: the median and the spread.
struct Figure {
    double median = 0, low = 0, high = 0;
    [[nodiscard]] bool valid() const { return high > 0; }
};

inline Figure summarise(std::vector<double> samples) {
    if (samples.empty()) {
        return {};
    }
    std::sort(samples.begin(), samples.end());
    return {samples[samples.size() / 2], samples.front(), samples.back()};
}

// "12.3 (11.9..13.0)", with `digits` after the point.
inline std::string show(const Figure& figure, int digits = 3) {
    char text[96];
    std::snprintf(text, sizeof text, "%.*f (%.*f..%.*f)", digits, figure.median, digits, figure.low, digits,
                  figure.high);
    return text;
}

inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace bench
