// tests/bench/load.hpp: the load generator. One thread, non-blocking
// sockets and epoll: it holds idle connections, drives active ones with
// fixed-size messages (one in flight per connection), and checks every
// byte that comes back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace bench {

struct RunResult {
    std::uint64_t window_echoes = 0;  // echoes completed inside the timed window
    std::uint64_t all_echoes = 0;     // with the warm-up and the drain at the end
    double window_seconds = 0;
    std::vector<float> round_trips_us;  // of the echoes inside the window
    [[nodiscard]] double echoes_per_second() const { return window_echoes / window_seconds; }
    [[nodiscard]] double percentile_us(double p) const;
};

class Load {
public:
    // `server` names the server in messages.
    Load(std::string server, std::uint16_t port);

    // Opens connections until `count` are idle, each proven served by a
    // one-byte echo. False, with `error` set, if the server refuses one or
    // does not answer within 5 s.
    bool open_idle(int count, std::string& error);
    [[nodiscard]] int idle() const { return static_cast<int>(idle_.size()); }

    // Opens `count` active connections (each proven), replacing any before.
    bool open_active(int count, std::string& error);
    void close_active();

    // Every active connection sends a `size`-byte message, waits for all of
    // it to come back, and sends the next, for `warmup` + `window` seconds.
    // A byte that differs, a byte too many or a connection the server
    // closes ends the benchmark (exit 1). False, with `error` set, if no
    // echo completes for 5 s (the server stalled).
    bool run(std::size_t size, double warmup, double window, RunResult& result, std::string& error);
    // The same, for exactly `per_connection` messages on each connection.
    bool run_count(std::size_t size, int per_connection, RunResult& result, std::string& error);

private:
    bool drive(std::size_t size, double warmup, double window, int per_connection, RunResult& result,
               std::string& error);
    std::string server_;
    std::uint16_t port_;
    std::vector<iomodels::unique_fd> idle_, active_;
    iomodels::unique_fd epoll_;  // the active connections
    std::uint64_t messages_sent_ = 0;
};

}  // namespace bench
