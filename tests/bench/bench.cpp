// tests/bench/bench.cpp: measures the I/O models side by side, on the
// reader's own machine, and checks the documents' claims with numbers.
//
//   1. Calibration: one trivial system call; a 512-byte round trip through a
//      socketpair in one thread (nobody sleeps); a ping-pong between two
//      processes over loopback TCP (the floor of one connection's round
//      trip); the measured ceiling: the load generator against the cheapest
//      echo server there is.
//   2. Dispatch cost (libevent's method): µs per event for select, poll,
//      epoll LT/ET, real-time signals, kernel-AIO poll and io_uring's
//      POLL_ADD (one-shot and multishot), N watched, A active, beside the
//      same reads and writes with no mechanism; and one ready descriptor
//      numbered D for select, poll and epoll.
//   3. Echo with K idle connections and C active ones, for every TCP echo
//      server of the suite: echoes/s, round trips, CPU per echo of the
//      server and of the load generator, how busy each CPU was and so which
//      one was the limit, and, in a separate pass, system calls per echo
//      (counted by perf stat on the server's CPU, or by strace -c -f where
//      perf is missing).
//   4. Concurrency × message size, each cell marked with its limit.
//   5. Memory per connection at 1000 idle connections: the server's PSS,
//      threads and processes, and the kernel's slab memory.
//   6. io_uring against epoll at C = 100, 512 B: CPU per echo on each side,
//      system calls and io_uring_enter calls per echo, and where the
//      server's CPU goes (perf record).
//   7. The servers a user would pick instead, where installed: socat and
//      Boost.Asio's example echo server; and any other given with
//      --external NAME='COMMAND {port}'. All run with libloopback_only.so
//      preloaded, so that none listens beyond 127.0.0.1.
//
// The echo workloads run in interleaved rounds: every server once, then
// every server again, so that a slow minute of the machine falls on all of
// them rather than on one.
//
// io_uring's rows (uring_server's modes, the POLL_ADD dispatch rows) are
// skipped, saying why, where io_uring_setup fails (kernel.io_uring_disabled,
// a container's seccomp profile).
//
// The load generator (load.cpp) runs in this thread on one CPU, the server
// on the other. Every figure is a median of several runs with its spread;
// every byte echoed is checked, and a byte that differs ends the benchmark
// with exit 1 and no report.
//
// The report is Markdown (stdout, and report.md with CSV files and gnuplot
// plots when --output DIR is given).

#include <gnu/libc-version.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <time.h>

#include "common/options.hpp"
#include "dispatch.hpp"
#include "load.hpp"
#include "servers.hpp"
#include "support.hpp"

#ifndef IOMODELS_BUILD_DIR
#define IOMODELS_BUILD_DIR "build"
#endif

using namespace bench;
using iomodels::CommandLine;
using iomodels::parse_command_line_or_exit;

namespace {

// ------------------------------------------------------------------ options

struct Settings {
    bool quick = false;
    int runs = 3;
    double window = 0.3;  // seconds per echo run, after a warm-up of a third of it
    std::set<std::string> workloads = {"dispatch", "idle", "concurrency", "syscalls"};
    std::optional<std::set<std::string>> servers;  // nullopt: all of ours
    std::vector<std::pair<std::string, std::string>> external;  // name, command
    bool alternatives = true;  // socat and Boost.Asio's example, where installed (not with --quick)
    std::string output;
    std::string build_dir = IOMODELS_BUILD_DIR;
};

std::set<std::string> split(std::string_view list) {
    std::set<std::string> items;
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        items.emplace(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    }
    return items;
}

// The cell of the io_uring targets (section 6): C = 100, 512 B (--quick:
// C = 5, 64 B, to run the same code).
int target_active(const Settings& settings) { return settings.quick ? 5 : 100; }
std::size_t target_size(const Settings& settings) { return settings.quick ? 64 : 512; }

// ------------------------------------------------------------------ servers

// The name the benchmark gives Boost.Asio's example.
const char* const asio_name = "Boost.Asio async_tcp_echo_server";

bool on_path(const std::string& program) {
    for (const char* directory : {"/usr/bin/", "/bin/", "/usr/local/bin/"}) {
        if (::access((directory + program).c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

// The echo servers a user would pick instead of writing one, measured beside
// ours when they are here (the full benchmark, all servers): socat, one
// process per connection (fork), with a listen backlog of 4096 (its default,
// 5, stalls a burst of connections); Boost.Asio's async_tcp_echo_server,
// built from Debian's example (tests/bench/CMakeLists.txt). Each is started
// with libloopback_only.so preloaded. Why one is missing goes on stderr.
std::vector<std::pair<std::string, std::string>> alternatives(const Settings& settings) {
    std::vector<std::pair<std::string, std::string>> found;
    // All servers (not --quick), or those --servers names.
    const auto wanted = [&settings](const std::string& name) {
        return settings.alternatives && (settings.servers ? settings.servers->count(name) != 0 : !settings.quick);
    };
    if (wanted("socat")) {
        if (on_path("socat")) {
            found.emplace_back("socat", "socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096 PIPE");
        } else {
            progress("socat not measured: not installed (Debian: apt-get install socat)");
        }
    }
    if (wanted(asio_name)) {
        if (::access(ASIO_ECHO, X_OK) == 0) {
            found.emplace_back(asio_name, std::string("'") + ASIO_ECHO + "' {port}");
        } else {
            progress("%s not measured: %s", asio_name,
                     std::string_view(ASIO_ECHO_NOTE).empty()
                         ? "not built (cmake --build BUILD_DIR --target asio_echo_example; the bench target builds it)"
                         : ASIO_ECHO_NOTE);
        }
    }
    return found;
}

std::vector<ServerSpec> our_servers(const Settings& settings) {
    const auto spec = [&](std::string name, std::vector<std::string> extra = {}) {
        ServerSpec server;
        server.argv = {settings.build_dir + "/" + name, "0", "--quiet"};
        server.argv.insert(server.argv.end(), extra.begin(), extra.end());
        server.name = std::move(name);
        return server;
    };
    std::vector<ServerSpec> servers;
    servers.push_back(spec("01-blocking/server_iterative"));
    servers.back().one_at_a_time = true;
    servers.push_back(spec("01-blocking/server"));
    servers.push_back(spec("01-blocking/server_thread"));
    servers.push_back(spec("02-nonblocking/server"));
    servers.push_back(spec("03-select/server"));
    // Descriptors 0 to 1023 only; stdio, the listener and a spare take 5.
    servers.back().most_connections = FD_SETSIZE - 8;
    servers.push_back(spec("04-poll/server"));
    servers.push_back(spec("05-epoll-lt/server"));
    servers.push_back(spec("06-epoll-et/server"));
    // The same, ending a run of reads at a short read: no EAGAIN call.
    servers.push_back(spec("06-epoll-et/server", {"--short-read-drains"}));
    servers.back().name += " --short-read-drains";
    servers.push_back(spec("08-rtsig-tcp/server"));
    servers.push_back(spec("08-rtsig-tcp/server_handler"));
    // One IOCB_CMD_POLL per connection in flight: the context must hold 8050.
    servers.push_back(spec("09-aio-kernel/server", {"--max-events", "16384"}));
    // io_uring: readiness (--poll), completion (default), multishot, and the
    // kernel's SQ polling thread, which runs on the server's CPU too.
    for (const std::vector<std::string>& options : std::vector<std::vector<std::string>>{
             {}, {"--poll"}, {"--multishot"}, {"--sqpoll"}, {"--multishot", "--sqpoll"}}) {
        servers.push_back(spec("09-aio-kernel/uring_server", options));
        for (const std::string& option : options) {
            servers.back().name += " " + option;
        }
        servers.back().io_uring = true;
    }
    // A pending aio_read holds one of glibc's threads: one per connection.
    servers.push_back(spec("10-aio-posix/server", {"--threads", settings.quick ? "64" : "8300"}));
    if (settings.quick) {
        servers.back().most_connections = 64;
    }
    std::vector<ServerSpec> chosen;
    for (ServerSpec& server : servers) {
        if (!settings.servers || settings.servers->count(server.name) != 0) {
            chosen.push_back(std::move(server));
        }
    }
    for (const auto& [name, command] : alternatives(settings)) {
        ServerSpec server;
        server.name = name;
        server.command = command;
        chosen.push_back(std::move(server));
    }
    for (const auto& [name, command] : settings.external) {
        ServerSpec server;
        server.name = name;
        server.command = command;
        chosen.push_back(std::move(server));
    }
    return chosen;
}

// ------------------------------------------------------------------ results

struct Calibration {
    Figure syscall_ns, in_thread_us, ping_pong_us;
    // The measured ceiling: the load generator against the cheapest echo
    // server (start_cheapest_echo), C = 50, 512 B; echoes/s, how busy each
    // CPU was, and each side's CPU per echo (-1: unknown).
    Figure ceiling;
    double ceiling_server_busy = -1, ceiling_load_busy = -1, ceiling_server_cpu_us = -1, ceiling_load_cpu_us = -1;
    // What the rounds add up (one run each).
    std::vector<double> ceiling_samples;
    std::uint64_t ceiling_echoes = 0;
    double ceiling_load_cpu_ns = 0, ceiling_server_cpu_ns = 0;
    CpuTicks ceiling_server_ticks, ceiling_load_ticks;
};

struct DispatchRow {
    int active, count;
    std::map<Mechanism, Figure> cost;  // missing: not measured (select past FD_SETSIZE)
};

// One ready descriptor numbered `descriptor`: what a sparse set costs
// select (by the highest number, 003 says) and poll (by the count).
struct SparseRow {
    int descriptor;
    std::map<Mechanism, Figure> cost;
};
inline constexpr Mechanism sparse_mechanisms[] = {Mechanism::select, Mechanism::poll, Mechanism::epoll_lt};

struct EchoCell {
    std::string server;
    int idle = 0, active = 0;
    std::size_t size = 512;
    Figure rate;  // echoes/s
    double p50_us = 0, p99_us = 0, cpu_us = 0;
    double syscalls = -1;  // per echo; < 0: not counted
    std::string top_calls;  // "read 1.00, write 1.00, epoll_wait 0.12"
    std::string missing;    // why there is no figure
    double load_cpu_us = 0;  // the load generator's thread, per echo
    double server_busy = -1, load_busy = -1;  // share of the server's and the generator's CPU busy (/proc/stat)
    // io_uring servers, per echo, from the server's own counters (SIGUSR1
    // status lines before and after the timed runs); < 0: not an io_uring server.
    double enters = -1, sqes = -1, cqes = -1;
    // The syscall pass: io_uring_enter per echo counted by perf (or strace)
    // and by the server's counters over the same pass.
    double enters_counted = -1, enters_by_server = -1;
    std::uint64_t pass_echoes = 0;  // echoes in the syscall pass
    [[nodiscard]] bool generator_bound() const { return load_busy >= busy_limit; }
    [[nodiscard]] bool server_bound() const { return server_busy >= busy_limit; }
    static constexpr double busy_limit = 0.9;  // a CPU this busy is the limit of the cell
    // "server", "generator", "both" (each CPU ≥ 90% busy) or "neither" (a
    // round trip's latency is the limit: C = 1); "" if unknown.
    [[nodiscard]] std::string limit() const {
        if (server_busy < 0 || load_busy < 0) {
            return "";
        }
        return server_bound() ? (generator_bound() ? "both" : "server") : (generator_bound() ? "generator" : "neither");
    }
    // The most echoes/s the load generator could drive in this cell with its
    // whole CPU: 1 ÷ its CPU per echo.
    [[nodiscard]] double generator_capacity() const { return load_cpu_us > 0 ? 1e6 / load_cpu_us : -1; }

    // What the rounds add up (one timed run each; the summary fields above
    // are computed from these after every round).
    std::vector<double> rate_samples;
    std::vector<float> round_trip_samples;
    double server_cpu_ns = 0, load_cpu_ns = 0;
    std::uint64_t echoes = 0;
    CpuTicks server_ticks, load_ticks;  // busy and all, summed over the runs
    std::map<std::string, std::uint64_t> counter_growth;  // an io_uring server's counters
    bool counters_complete = true;
};

// perf record on the server's CPU during one cell (section 6).
struct ProfiledCell {
    std::string server;
    int cpu = -1;  // the CPU recorded: the server's, or the load generator's
    Profile profile;
    std::uint64_t echoes = 0;
    double seconds = 0;
};

struct MemoryRow {
    std::string server;
    int idle = 0;
    TreeStats before, after;
    std::string missing;
    // The kernel's memory in TCP sockets, their inodes and their files
    // (/proc/slabinfo) before and at K: both ends of each connection, the
    // load generator's and the server's, are on this machine. NaN: unknown
    // (/proc/slabinfo is readable by root only).
    double slab_before_kib = std::nan(""), slab_after_kib = std::nan("");
};

// KiB in the slab caches of a TCP connection's kernel objects: the socket
// ("TCP", struct tcp_sock), its inode ("sock_inode_cache") and its file
// ("filp"), active objects × object size (/proc/slabinfo). Caches merged
// with others (epoll's items) and the dentry cache, which other activity
// churns, are left out. NaN if /proc/slabinfo cannot be read (not root).
double slab_kib() {
    std::ifstream slabinfo("/proc/slabinfo");
    if (!slabinfo) {
        return std::nan("");
    }
    double kib = 0;
    int found = 0;
    for (std::string line; std::getline(slabinfo, line);) {
        std::istringstream fields(line);
        std::string name;
        double active = 0, all = 0, size = 0;
        if (fields >> name >> active >> all >> size && (name == "TCP" || name == "sock_inode_cache" || name == "filp")) {
            kib += active * size / 1024;
            ++found;
        }
    }
    return found == 3 ? kib : std::nan("");
}

struct Results {
    Calibration calibration;
    std::vector<DispatchRow> dispatch;
    std::vector<SparseRow> sparse;
    std::vector<EchoCell> idle, concurrency;
    std::vector<MemoryRow> memory;
    std::vector<ProfiledCell> profiles;
    std::vector<std::string> external_names;
    SyscallCounter syscall_counter = SyscallCounter::none;
};

// ------------------------------------------------------------ the workloads

Calibration calibrate(const Settings& settings, const Placement& placement) {
    progress("calibration");
    std::vector<double> syscall_ns, in_thread_us, ping_pong_us;
    for (int run = 0; run < settings.runs; ++run) {
        syscall_ns.push_back(trivial_syscall_ns(settings.quick ? 10000 : 1000000));
        in_thread_us.push_back(in_thread_round_trip_us(settings.quick ? 1000 : 100000));
        ping_pong_us.push_back(ping_pong_round_trip_us(settings.quick ? 1000 : 20000, placement.server_cpu));
    }
    Calibration calibration;
    calibration.syscall_ns = summarise(syscall_ns);
    calibration.in_thread_us = summarise(in_thread_us);
    calibration.ping_pong_us = summarise(ping_pong_us);
    return calibration;
}

std::vector<DispatchRow> measure_dispatch(const Settings& settings) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    const int most_pairs = static_cast<int>((limit.rlim_cur - 100) / 2);
    const std::vector<int> sizes = settings.quick ? std::vector<int>{16, 100}
                                                  : std::vector<int>{16, 100, 500, 1000, 4000, 9000};
    if (!io_uring_unavailable().empty()) {
        progress("dispatch: io_uring skipped: %s", io_uring_unavailable().c_str());
    }
    std::vector<DispatchRow> rows;
    for (const int active : {1, 100}) {
        for (const int count : sizes) {
            if (count > most_pairs || active > count) {
                continue;
            }
            progress("dispatch: A = %d, N = %d", active, count);
            Pairs pairs(count);
            DispatchRow row{active, count, {}};
            for (const Mechanism mechanism : all_mechanisms) {
                if (mechanism == Mechanism::select && pairs.highest_descriptor() >= FD_SETSIZE) {
                    continue;  // an fd_set has no bit for it
                }
                if (uses_io_uring(mechanism) && !io_uring_unavailable().empty()) {
                    continue;  // switched off here: the report says why
                }
                std::vector<double> samples;
                for (int run = 0; run < settings.runs; ++run) {
                    samples.push_back(pairs.run(mechanism, active, 1000));
                }
                row.cost[mechanism] = summarise(samples);
            }
            rows.push_back(std::move(row));
        }
    }
    return rows;
}

// One descriptor watched, moved up to 3 (as low as it goes), then to 100,
// 1000, 4000 and 16000, as far as RLIMIT_NOFILE lets it.
std::vector<SparseRow> measure_sparse(const Settings& settings) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    std::vector<SparseRow> rows;
    for (const int descriptor : {3, 100, 1000, 4000, 16000}) {
        if (static_cast<rlim_t>(descriptor) + 2 > limit.rlim_cur) {
            break;
        }
        progress("dispatch: one descriptor numbered %d", descriptor);
        Pairs pair(1, descriptor);
        SparseRow row{pair.lowest_descriptor(), {}};
        for (const Mechanism mechanism : sparse_mechanisms) {
            std::vector<double> samples;
            for (int run = 0; run < settings.runs; ++run) {
                samples.push_back(pair.ready_call(mechanism, settings.quick ? 1000 : 200000));
            }
            row.cost[mechanism] = summarise(samples);
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

double thread_cpu_ns() {
    timespec used{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &used);
    return static_cast<double>(used.tv_sec) * 1e9 + static_cast<double>(used.tv_nsec);
}

// An io_uring server's counters now (SIGUSR1); nullopt for the others, or
// if it did not answer (said on stderr: the figures are left out, not wrong).
std::optional<std::map<std::string, std::uint64_t>> uring_counters(const ServerSpec& spec,
                                                                   const RunningServer& server) {
    if (!spec.io_uring) {
        return std::nullopt;
    }
    std::string error;
    auto counts = server.status(error);
    if (!counts) {
        progress("  %s: %s", spec.name.c_str(), error.c_str());
    }
    return counts;
}

// `name`'s growth between two status lines, per echo; -1 if either is missing.
double per_echo(const std::optional<std::map<std::string, std::uint64_t>>& before,
                const std::optional<std::map<std::string, std::uint64_t>>& after, const std::string& name,
                std::uint64_t echoes) {
    if (!before || !after || before->count(name) == 0 || after->count(name) == 0 || echoes == 0) {
        return -1;
    }
    return static_cast<double>(after->at(name) - before->at(name)) / static_cast<double>(echoes);
}

// One timed run on the open active connections (this round's), added to
// `cell`, whose figures are then computed again from every run so far:
// echoes/s (the median of the runs), round trips, CPU per echo on each side
// (the server's process clock covers every thread, io_uring's SQ thread
// included; the generator is this thread), how busy each CPU was, and an
// io_uring server's own counters per echo.
void measure_cell(const Settings& settings, const Placement& placement, const ServerSpec& spec,
                  const RunningServer& server, Load& load, EchoCell& cell) {
    const auto counters_before = uring_counters(spec, server);
    const TreeStats before = server.stats();
    const double generator_before = thread_cpu_ns();
    const CpuTicks server_ticks = cpu_ticks(placement.server_cpu), load_ticks = cpu_ticks(placement.load_cpu);
    RunResult result;
    std::string error;
    if (!load.run(cell.size, settings.window / 3, settings.window, result, error)) {
        cell.missing = error;
        return;
    }
    const double generator_after = thread_cpu_ns();
    const CpuTicks server_ticks_after = cpu_ticks(placement.server_cpu), load_ticks_after = cpu_ticks(placement.load_cpu);
    const TreeStats after = server.stats();
    const auto counters_after = uring_counters(spec, server);

    cell.rate_samples.push_back(result.echoes_per_second());
    cell.round_trip_samples.insert(cell.round_trip_samples.end(), result.round_trips_us.begin(),
                                   result.round_trips_us.end());
    cell.echoes += result.all_echoes;
    cell.server_cpu_ns += after.cpu_ns - before.cpu_ns;
    cell.load_cpu_ns += generator_after - generator_before;
    const auto add_ticks = [](CpuTicks& sum, const CpuTicks& from, const CpuTicks& to) {
        sum.busy += to.busy - from.busy;
        sum.all += to.all - from.all;
    };
    add_ticks(cell.server_ticks, server_ticks, server_ticks_after);
    add_ticks(cell.load_ticks, load_ticks, load_ticks_after);
    if (counters_before && counters_after) {
        for (const auto& [name, value] : *counters_after) {
            if (counters_before->count(name) != 0) {
                cell.counter_growth[name] += value - counters_before->at(name);
            }
        }
    } else {
        cell.counters_complete = false;
    }

    cell.rate = summarise(cell.rate_samples);
    RunResult all;
    all.round_trips_us = cell.round_trip_samples;
    cell.p50_us = all.percentile_us(50);
    cell.p99_us = all.percentile_us(99);
    const auto per = static_cast<double>(std::max<std::uint64_t>(cell.echoes, 1));
    cell.cpu_us = cell.server_cpu_ns / 1e3 / per;
    cell.load_cpu_us = cell.load_cpu_ns / 1e3 / per;
    cell.server_busy = busy_share(CpuTicks{}, cell.server_ticks);
    cell.load_busy = busy_share(CpuTicks{}, cell.load_ticks);
    const auto counter_per_echo = [&](const char* name) {
        const auto it = cell.counter_growth.find(name);
        return spec.io_uring && cell.counters_complete && it != cell.counter_growth.end()
                   ? static_cast<double>(it->second) / per
                   : -1.0;
    };
    cell.enters = counter_per_echo("io_uring_enter calls");
    cell.sqes = counter_per_echo("SQEs submitted");
    cell.cqes = counter_per_echo("CQEs reaped");
}

// The ceiling of an echo cell on this machine with this load generator: the
// generator against the cheapest echo server there is (one epoll thread, a
// recv and a send per message), pinned as ours are, C = 50 (--quick: 5),
// 512 B. Measured once a round, before the servers of that round, so that
// it drifts with them; each call adds one run to `calibration`.
void measure_ceiling(const Settings& settings, const Placement& placement, Calibration& calibration) {
    progress("the cheapest echo server: the measured ceiling");
    std::uint16_t port = 0;
    const pid_t server = start_cheapest_echo(placement.server_cpu, port);
    Load load("the cheapest echo server", port);
    std::string error;
    if (!load.open_active(settings.quick ? 5 : 50, error)) {
        fail(error);
    }
    const double generator_before = thread_cpu_ns(), server_before = process_cpu_ns(server);
    const CpuTicks server_ticks = cpu_ticks(placement.server_cpu), load_ticks = cpu_ticks(placement.load_cpu);
    RunResult result;
    if (!load.run(512, settings.window / 3, settings.window, result, error)) {
        fail(error);
    }
    calibration.ceiling_samples.push_back(result.echoes_per_second());
    calibration.ceiling_echoes += result.all_echoes;
    calibration.ceiling_load_cpu_ns += thread_cpu_ns() - generator_before;
    calibration.ceiling_server_cpu_ns += process_cpu_ns(server) - server_before;
    const CpuTicks server_after = cpu_ticks(placement.server_cpu), load_after = cpu_ticks(placement.load_cpu);
    calibration.ceiling_server_ticks.busy += server_after.busy - server_ticks.busy;
    calibration.ceiling_server_ticks.all += server_after.all - server_ticks.all;
    calibration.ceiling_load_ticks.busy += load_after.busy - load_ticks.busy;
    calibration.ceiling_load_ticks.all += load_after.all - load_ticks.all;
    load = Load("the cheapest echo server", 0);
    stop_cheapest_echo(server);

    const auto per = static_cast<double>(std::max<std::uint64_t>(calibration.ceiling_echoes, 1));
    calibration.ceiling = summarise(calibration.ceiling_samples);
    calibration.ceiling_load_cpu_us = calibration.ceiling_load_cpu_ns / 1e3 / per;
    calibration.ceiling_server_cpu_us = calibration.ceiling_server_cpu_ns / 1e3 / per;
    calibration.ceiling_server_busy = busy_share(CpuTicks{}, calibration.ceiling_server_ticks);
    calibration.ceiling_load_busy = busy_share(CpuTicks{}, calibration.ceiling_load_ticks);
}

// The same connections again, a fixed number of echoes, while perf (or
// strace) counts system calls. An io_uring server's own count of its
// io_uring_enter calls over the same pass goes beside perf's.
void count_syscalls(const Settings& settings, SyscallCounter counter, const ServerSpec& spec,
                    const RunningServer& server, Load& load, EchoCell& cell) {
    std::uint64_t echoes = 0;
    std::string error;
    const auto counters_before = uring_counters(spec, server);
    const auto counts = server.count_syscalls(
        counter,
        [&] {
            RunResult result;
            const bool worked = load.run_count(cell.size, settings.quick ? 4 : 40, result, error);
            echoes = result.all_echoes;
            return worked;
        },
        error);
    const auto counters_after = uring_counters(spec, server);
    if (!counts || echoes == 0) {
        progress("  syscalls not counted: %s", error.c_str());
        return;
    }
    std::uint64_t total = 0, enters = 0;
    for (const auto& [name, calls] : *counts) {
        total += calls;
        enters += name == "io_uring_enter" ? calls : 0;
    }
    cell.syscalls = static_cast<double>(total) / static_cast<double>(echoes);
    cell.pass_echoes = echoes;
    cell.top_calls.clear();
    for (std::size_t i = 0; i < counts->size() && i < 4; ++i) {
        char part[96];
        std::snprintf(part, sizeof part, "%s%s %.2f", i == 0 ? "" : ", ", (*counts)[i].first.c_str(),
                      static_cast<double>((*counts)[i].second) / static_cast<double>(echoes));
        cell.top_calls += part;
    }
    if (spec.io_uring) {
        cell.enters_counted = static_cast<double>(enters) / static_cast<double>(echoes);
        cell.enters_by_server = per_echo(counters_before, counters_after, "io_uring_enter calls", echoes);
    }
}

// The servers whose cell at C = 100, 512 B section 6 profiles.
bool profiled(const std::string& name) {
    return name == "06-epoll-et/server" || name == "09-aio-kernel/uring_server --multishot";
}

// perf record on the server's CPU during one more timed run of the cell.
void profile_cell(const Settings& settings, const RunningServer& server, Load& load, const EchoCell& cell,
                  Results& results, int cpu, const std::string& what) {
    std::string error;
    RunResult result;
    double seconds = 0;
    const auto profile = server.profile(
        [&] {
            const auto start = Clock::now();
            const bool worked = load.run(cell.size, settings.window / 3, settings.window * 3, result, error);
            seconds = seconds_since(start);
            return worked;
        },
        error, cpu);
    if (!profile) {
        progress("  not profiled: %s", error.c_str());
        return;
    }
    results.profiles.push_back({what, cpu, *profile, result.all_echoes, seconds});
}

// Starts the server, or says why an io_uring server cannot run here
// (`skipped`): io_uring switched off, or a feature its mode needs missing
// (the server's own message names the io_uring call that failed).
std::optional<RunningServer> start_or_skip(const ServerSpec& spec, const Placement& placement, std::string& skipped) {
    skipped = spec.io_uring ? io_uring_unavailable() : std::string();
    if (skipped.empty()) {
        std::string error;
        auto server = RunningServer::start(spec, placement.server_cpu, error);
        if (server) {
            return server;
        }
        if (!spec.io_uring || error.find("io_uring") == std::string::npos) {
            fail(error);
        }
        skipped = error;
    }
    skipped = "skipped: " + skipped;
    progress("%s: %s", spec.name.c_str(), skipped.c_str());
    return std::nullopt;
}

// The cell of `cells` for (server, K, C, size), made on its first round.
// Its index: cells grows while others are looked up.
std::size_t cell_index(std::vector<EchoCell>& cells, const std::string& server, int idle, int active,
                       std::size_t size) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
        if (cells[i].server == server && cells[i].idle == idle && cells[i].active == active && cells[i].size == size) {
            return i;
        }
    }
    EchoCell cell;
    cell.server = server;
    cell.idle = idle;
    cell.active = active;
    cell.size = size;
    cells.push_back(std::move(cell));
    return cells.size() - 1;
}

// Section 3 and 5, one round of one server: K idle connections growing, C
// active; one timed run per cell. The rounds are interleaved (every server
// once, then every server again), so that a slow minute of the machine
// falls on all of them. Memory and system calls are measured in round 0.
void measure_idle(const Settings& settings, const ServerSpec& spec, const Placement& placement, Results& results,
                  SyscallCounter syscalls, int round) {
    const std::vector<int> idle_levels = settings.quick ? std::vector<int>{0, 20} : std::vector<int>{0, 1000, 4000, 8000};
    const std::vector<int> active_levels = settings.quick ? std::vector<int>{1, 5} : std::vector<int>{1, 50};
    const int memory_level = settings.quick ? 20 : 1000;
    std::string error, skipped;
    auto server = start_or_skip(spec, placement, skipped);
    Load load(spec.name, server ? server->port() : 0);
    MemoryRow memory{spec.name, 0, server ? server->stats() : TreeStats{}, {}, {}};
    memory.slab_before_kib = slab_kib();
    std::string refused = skipped;  // set once the server could hold no more
    int previous = -1;
    for (const int wanted : idle_levels) {
        int idle = wanted;
        if (spec.most_connections > 0) {
            idle = std::min(idle, spec.most_connections - active_levels.back());
        }
        if (idle == previous || (spec.one_at_a_time && idle > 0)) {
            continue;
        }
        previous = idle;
        if (server) {
            progress("%s: %d idle (round %d of %d)", spec.name.c_str(), idle, round + 1, settings.runs);
        }
        if (refused.empty() && !load.open_idle(idle, error)) {
            refused = error;
        }
        if (round == 0 && (wanted == memory_level || (idle < wanted && memory.idle == 0))) {
            memory.idle = idle;
            memory.after = server ? server->stats() : TreeStats{};
            memory.slab_after_kib = slab_kib();
            memory.missing = refused;
        }
        for (const int active : active_levels) {
            if (spec.one_at_a_time && active > 1) {
                continue;
            }
            EchoCell& cell = results.idle[cell_index(results.idle, spec.name, idle, active, 512)];
            if (cell.missing.empty()) {
                cell.missing = refused;
            }
            if (cell.missing.empty()) {
                if (!load.open_active(active, error)) {
                    cell.missing = error;
                } else {
                    measure_cell(settings, placement, spec, *server, load, cell);
                    // (--quick counts them for one server: perf's start costs a second.)
                    if (round == 0 && syscalls != SyscallCounter::none && cell.missing.empty() &&
                        active == active_levels.back() && (!settings.quick || spec.name == "06-epoll-et/server")) {
                        count_syscalls(settings, syscalls, spec, *server, load, cell);
                    }
                }
                load.close_active();
            }
        }
    }
    if (round == 0) {
        if (spec.one_at_a_time) {
            memory.missing = "one connection at a time";
        }
        results.memory.push_back(memory);
    }
    if (!server) {
        return;
    }
    load = Load(spec.name, 0);  // closes every connection before the server stops
    const std::string how = server->stop();
    if (how != "exit 0" && !spec.external()) {
        fail(spec.name + " did not stop cleanly after SIGTERM: " + how);
    }
}

// Section 4, one round of one server: K = 0, C × size, one timed run per
// cell, interleaved as section 3's. In round 0, at C = 100, 512 B (section
// 6), epoll ET's and the io_uring servers' system calls are counted too,
// and the two servers of the targets are profiled.
void measure_concurrency(const Settings& settings, const ServerSpec& spec, const Placement& placement,
                         Results& results, SyscallCounter syscalls, int round) {
    const std::vector<int> active_levels = settings.quick ? std::vector<int>{1, 5} : std::vector<int>{1, 10, 100, 1000};
    const std::vector<std::size_t> sizes = settings.quick ? std::vector<std::size_t>{64, 4096}
                                                          : std::vector<std::size_t>{64, 512, 4096};
    std::string error, skipped;
    auto server = start_or_skip(spec, placement, skipped);
    for (const int active : active_levels) {
        Load load(spec.name, server ? server->port() : 0);
        std::string missing;
        if (!server) {
            missing = skipped;
        } else if (spec.one_at_a_time && active > 1) {
            missing = "one connection at a time";
        } else if (spec.most_connections > 0 && active > spec.most_connections) {
            missing = "holds at most " + std::to_string(spec.most_connections);
        } else {
            progress("%s: %d active (round %d of %d)", spec.name.c_str(), active, round + 1, settings.runs);
            if (!load.open_active(active, error)) {
                missing = error;
            }
        }
        for (const std::size_t size : sizes) {
            EchoCell& cell = results.concurrency[cell_index(results.concurrency, spec.name, 0, active, size)];
            if (cell.missing.empty()) {
                cell.missing = missing;
            }
            if (!cell.missing.empty()) {
                continue;
            }
            measure_cell(settings, placement, spec, *server, load, cell);
            if (round == 0 && cell.missing.empty() && active == target_active(settings) &&
                size == target_size(settings) && (spec.io_uring || spec.name == "06-epoll-et/server")) {
                if (syscalls != SyscallCounter::none) {
                    count_syscalls(settings, syscalls, spec, *server, load, cell);
                }
                if (profiled(spec.name)) {
                    profile_cell(settings, *server, load, cell, results, placement.server_cpu, spec.name);
                }
                if (profiled(spec.name)) {  // and the generator's CPU, the other limit
                    profile_cell(settings, *server, load, cell, results, placement.load_cpu,
                                 "the load generator, against " + spec.name);
                }
            }
        }
    }
    if (!server) {
        return;
    }
    const std::string how = server->stop();
    if (how != "exit 0" && !spec.external()) {
        fail(spec.name + " did not stop cleanly after SIGTERM: " + how);
    }
}

// ------------------------------------------------------------------ report

std::string format(const char* format, double value) {
    char text[64];
    std::snprintf(text, sizeof text, format, value);
    return text;
}

const EchoCell* find(const std::vector<EchoCell>& cells, const std::string& server, int idle, int active,
                     std::size_t size = 512) {
    for (const EchoCell& cell : cells) {
        if (cell.server == server && cell.idle == idle && cell.active == active && cell.size == size &&
            cell.missing.empty()) {
            return &cell;
        }
    }
    return nullptr;
}

const Figure* dispatch_cost(const Results& results, int active, int count, Mechanism mechanism) {
    for (const DispatchRow& row : results.dispatch) {
        if (row.active == active && row.count == count && row.cost.count(mechanism) != 0) {
            return &row.cost.at(mechanism);
        }
    }
    return nullptr;
}

// The largest N at which `mechanism` was measured, with A = `active`.
int largest_count(const Results& results, int active, Mechanism mechanism) {
    int largest = 0;
    for (const DispatchRow& row : results.dispatch) {
        if (row.active == active && row.cost.count(mechanism) != 0) {
            largest = std::max(largest, row.count);
        }
    }
    return largest;
}

// The smallest N measured with A = `active` (16, or 100 when A = 100).
int smallest_count(const Results& results, int active) {
    int smallest = 0;
    for (const DispatchRow& row : results.dispatch) {
        if (row.active == active && (smallest == 0 || row.count < smallest)) {
            smallest = row.count;
        }
    }
    return smallest;
}

std::string machine_facts(const Placement& placement) {
    std::string cpu = "unknown";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
        if (line.rfind("model name", 0) == 0) {
            cpu = line.substr(line.find(':') + 2);
            break;
        }
    }
    utsname name{};
    ::uname(&name);
    std::string facts = "| CPU | " + cpu + " |\n| CPUs online | " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) +
                        " |\n| kernel | Linux " + name.release + " " + name.machine + " |\n| glibc | " +
                        ::gnu_get_libc_version() + " |\n";
    facts += "| placement | " +
             (placement.server_cpu < 0
                  ? std::string("one CPU: server and load generator share it")
                  : "server on CPU " + std::to_string(placement.server_cpu) + ", load generator on CPU " +
                        std::to_string(placement.load_cpu)) +
             " |\n";
#ifdef NDEBUG
    facts += "| build | optimised (NDEBUG) |\n";
#else
    facts += "| build | **debug (no NDEBUG): figures are slower than a release build's** |\n";
#endif
    return facts;
}

std::string verdict(bool met) { return met ? "**met**" : "**missed**"; }

// "97%", or "" when unknown.
std::string percent(double share) { return share < 0 ? std::string() : format("%.0f%%", share * 100); }

// A per-echo figure, or "" when unknown (< 0).
std::string figure(double value, const char* how = "%.2f") { return value < 0 ? std::string() : format(how, value); }

// The CSV columns every echo cell adds: CPU on each side, and an io_uring
// server's counters per echo (-1: not measured).
std::string cpu_and_counters_csv(const EchoCell& cell) {
    return format("%.3f", cell.load_cpu_us) + "," + format("%.2f", cell.server_busy) + "," +
           format("%.2f", cell.load_busy) + "," + format("%.3f", cell.enters) + "," + format("%.3f", cell.sqes) + "," +
           format("%.3f", cell.cqes);
}

const char* short_name(SyscallCounter counter) {
    return counter == SyscallCounter::perf ? "perf" : counter == SyscallCounter::strace ? "strace" : "nothing";
}

// Section 3's io_uring servers: io_uring_enter calls per echo, from the
// server's counters and, in the syscall pass, also from perf (or strace).
void uring_enters_table(std::ostringstream& md, const std::vector<EchoCell>& cells, SyscallCounter counter) {
    std::string rows;
    for (const EchoCell& cell : cells) {
        if (cell.enters < 0 && cell.enters_counted < 0) {
            continue;
        }
        std::string agree;
        if (cell.enters_counted >= 0 && cell.enters_by_server >= 0) {
            // In calls: the SIGUSR1 before the pass interrupts one
            // io_uring_enter, which the server counts and enters again.
            const double echoes = static_cast<double>(cell.pass_echoes);
            const double difference = std::abs(cell.enters_counted - cell.enters_by_server) * echoes;
            agree = difference <= 2 + 0.02 * std::max(cell.enters_counted, cell.enters_by_server) * echoes ? "yes"
                                                                                                       : "**no**";
        }
        rows += "| " + cell.server + " | " + std::to_string(cell.idle) + " | " + std::to_string(cell.active) + " | " +
                figure(cell.enters, "%.3f") + " | " + figure(cell.sqes) + " | " + figure(cell.cqes) + " | " +
                figure(cell.enters_counted, "%.3f") + " | " + figure(cell.enters_by_server, "%.3f") + " | " + agree +
                " |\n";
    }
    if (rows.empty()) {
        return;
    }
    md << "io_uring servers: `io_uring_enter` calls, SQEs and CQEs per echo, from the server's own counters "
          "(SIGUSR1 status lines before and after the timed runs). In the syscall pass (C = the larger value) "
       << short_name(counter)
       << " counts `io_uring_enter` too, beside the server's counters over the same pass: the two must agree.\n\n"
          "| server | K idle | C active | io_uring_enter/echo | SQEs/echo | CQEs/echo | syscall pass: io_uring_enter/echo, "
       << short_name(counter) << " | the same, server's counter | agree |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
       << rows << "\n";
}

// Section 4: CPU per echo on each side, and how busy each CPU was, at one size.
// "| server | C = 1 | C = 10 | ...|" and its alignment row: the head of a
// table with one column per number of active connections.
void concurrency_header(std::ostringstream& md, const std::vector<int>& actives) {
    md << "| server |";
    for (const int active : actives) {
        md << " C = " << active << " |";
    }
    md << "\n|---|";
    for (std::size_t i = 0; i < actives.size(); ++i) {
        md << "---:|";
    }
    md << "\n";
}

// The CPU that limited a cell, after its figure in section 4: " [s]" the
// server's, " [g]" the load generator's, " [s g]" both; "" neither or unknown.
std::string limit_mark(const EchoCell& cell) {
    const std::string limit = cell.limit();
    return limit == "server" ? " [s]" : limit == "generator" ? " [g]" : limit == "both" ? " [s g]" : "";
}

void cpu_table(std::ostringstream& md, const std::vector<EchoCell>& cells, const std::vector<std::string>& names,
               const std::vector<int>& actives, std::size_t size) {
    md << "### CPU per echo, " << size
       << "-byte messages\n\nµs of CPU per echo, the server's / the load generator's, and in brackets how busy the "
          "server's CPU / the generator's CPU was (/proc/stat). A CPU busy ≥ "
       << format("%.0f", EchoCell::busy_limit * 100)
       << "% is the limit: where it is the generator's, the server could go faster than measured.\n\n";
    concurrency_header(md, actives);
    for (const std::string& name : names) {
        md << "| " << name << " |";
        for (const int active : actives) {
            const EchoCell* cell = find(cells, name, 0, active, size);
            md << " "
               << (cell == nullptr ? std::string("—")
                                   : format("%.2f", cell->cpu_us) + " / " + format("%.2f", cell->load_cpu_us) + " (" +
                                         percent(cell->server_busy) + " / " + percent(cell->load_busy) + ")")
               << " |";
        }
        md << "\n";
    }
    md << "\n";
}

bool is_uring(const std::string& name) { return name.rfind("09-aio-kernel/uring_server", 0) == 0; }

// 06-epoll-et/server against Boost.Asio's example: CPU per echo ≤ 0.85 of
// Asio's, and echoes/s ≥ 1.2 of Asio's where Asio's own CPU is a limit, at
// C = 50 (section 3, K = 0) and C = 100 (section 4), 512 B.
void asio_targets(std::ostringstream& md, const Settings& settings, const Results& results) {
    if (settings.quick) {
        return;
    }
    const auto cells = [&](int active) -> std::pair<const EchoCell*, const EchoCell*> {
        const std::vector<EchoCell>& from = active == 50 ? results.idle : results.concurrency;
        return {find(from, "06-epoll-et/server", 0, active), find(from, asio_name, 0, active)};
    };
    for (const int active : {50, 100}) {
        const auto [et, asio] = cells(active);
        if (et == nullptr || asio == nullptr) {
            md << "| `06-epoll-et/server` against " << asio_name << ", C = " << active << ", 512 B | — | | not "
               << "measured: " << (asio == nullptr ? "Asio's example was not run (see stderr)" : "no figure of 06") << " |\n";
            continue;
        }
        const double cpu = et->cpu_us / asio->cpu_us;
        md << "| `06-epoll-et/server`, C = " << active << ", 512 B: server CPU per echo over Asio's example's | "
           << format("%.2f", cpu) << " (" << format("%.2f", et->cpu_us) << " over " << format("%.2f", asio->cpu_us)
           << " µs) | ≤ 0.85 | " << verdict(cpu <= 0.85) << " |\n";
        const double rate = et->rate.median / asio->rate.median;
        md << "| `06-epoll-et/server`, C = " << active << ", 512 B: echoes/s over Asio's example's | "
           << format("%.2f", rate) << " (" << format("%.0f", et->rate.median) << " over "
           << format("%.0f", asio->rate.median) << "; limits: " << et->limit() << " / " << asio->limit()
           << ") | ≥ 1.2 where Asio's CPU is a limit | "
           << (asio->server_bound() ? verdict(rate >= 1.2) : std::string("not judged: Asio's CPU is not the limit"))
           << " |\n";
    }
}

// Section 6: io_uring's servers beside epoll ET in the cell of the targets.
void uring_section(std::ostringstream& md, const Settings& settings, const Placement& placement,
                   const Results& results) {
    const int active = target_active(settings);
    const std::size_t size = target_size(settings);
    std::vector<const EchoCell*> rows;
    for (const EchoCell& cell : results.concurrency) {
        if (cell.active == active && cell.size == size &&
            (cell.server == "06-epoll-et/server" || is_uring(cell.server))) {
            rows.push_back(&cell);
        }
    }
    if (rows.empty()) {
        return;
    }
    const std::string server_cpu = placement.server_cpu < 0 ? "the one CPU" : "CPU " + std::to_string(placement.server_cpu);
    const std::string load_cpu = placement.load_cpu < 0 ? "the same CPU" : "CPU " + std::to_string(placement.load_cpu);
    md << "## 6. io_uring against epoll ET, C = " << active << ", " << size << " B\n\n"
       << "The cell of the io_uring targets, from section 4 (no idle connections). CPU per echo: the server's process "
          "clock (every thread; --sqpoll's SQ thread is one, pinned with the rest to "
       << server_cpu << ") and the load generator's thread (" << load_cpu
       << "). Busy: the share of each CPU's time that was not idle (/proc/stat) over the timed runs. System calls per "
          "echo: a separate pass of "
       << (settings.quick ? 4 : 40) << " echoes per connection, counted by " << name_of(results.syscall_counter)
       << ". io_uring_enter, SQEs and CQEs per echo: the server's own counters over the timed runs. With --sqpoll "
          "the SQ thread shares the server's CPU with the server's own thread, which therefore does not poll the "
          "CQ ring (it would keep the SQ thread off that CPU) but sleeps in io_uring_enter when no CQE is there.\n\n"
       << "| server | echoes/s | server CPU µs/echo | generator CPU µs/echo | server CPU busy | generator CPU busy | "
          "syscalls/echo | most frequent, per echo | io_uring_enter/echo | SQEs/echo | CQEs/echo |\n"
          "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
    for (const EchoCell* cell : rows) {
        md << "| " << cell->server << " | ";
        if (!cell->missing.empty()) {
            md << "— | | | | | | " << cell->missing << " | | | |\n";
            continue;
        }
        md << show(cell->rate, 0) << " | " << format("%.2f", cell->cpu_us) << " | " << format("%.2f", cell->load_cpu_us)
           << " | " << percent(cell->server_busy) << " | " << percent(cell->load_busy) << " | " << figure(cell->syscalls)
           << " | " << cell->top_calls << " | " << figure(cell->enters, "%.3f") << " | " << figure(cell->sqes) << " | "
           << figure(cell->cqes) << " |\n";
    }
    md << "\n";
    if (results.profiles.empty()) {
        return;
    }
    md << "### Where the CPUs went\n\n`perf record -e cpu-clock -C CPU` (a software clock: no hardware counters "
          "needed) during one more run of the cell ("
       << format("%.1f", settings.window / 3 + settings.window * 3)
       << " s), on the server's CPU (" << placement.server_cpu << ") and on the load generator's ("
       << placement.load_cpu
       << "). Every sample is of that CPU, whoever ran there: µs per echo = share of the samples × the time "
          "recorded ÷ the echoes. `swapper` is the CPU idle. Over loopback the kernel's receive work for a segment "
          "runs on the CPU that sent it (softirq), so each side's kernel time includes the other's receives.\n\n";
    for (const ProfiledCell& cell : results.profiles) {
        const double us_per_percent =
            cell.echoes == 0 ? 0 : cell.seconds * 1e6 / static_cast<double>(cell.echoes) / 100;
        md << "**" << cell.server << "**: " << cell.echoes << " echoes in " << format("%.2f", cell.seconds) << " s, "
           << format("%.0f", cell.profile.samples) << " samples.\n\n| on CPU " << cell.cpu
           << " | kernel, µs/echo | user, µs/echo | share |\n|---|---:|---:|---:|\n";
        for (const Profile::Share& share : cell.profile.commands) {
            md << "| " << share.command << " | " << format("%.2f", share.kernel * us_per_percent) << " | "
               << format("%.2f", share.user * us_per_percent) << " | " << format("%.1f%%", share.kernel + share.user)
               << " |\n";
        }
        md << "\nMost frequent symbols (share of all samples): ";
        for (std::size_t i = 0; i < cell.profile.symbols.size(); ++i) {
            md << (i == 0 ? "" : ", ") << "`" << cell.profile.symbols[i].first << "` "
               << format("%.1f%%", cell.profile.symbols[i].second);
        }
        md << ".\n\n";
    }
}

// The io_uring targets: ratios within this run, in the cell of section 6.
void uring_targets(std::ostringstream& md, const Settings& settings, const Results& results) {
    if (results.concurrency.empty()) {
        return;
    }
    const int active = target_active(settings);
    const std::size_t size = target_size(settings);
    const std::string epoll = "06-epoll-et/server", uring = "09-aio-kernel/uring_server --multishot";
    const std::string where = ", C = " + std::to_string(active) + ", " + std::to_string(size) + " B";
    const EchoCell* e = find(results.concurrency, epoll, 0, active, size);
    const EchoCell* u = find(results.concurrency, uring, 0, active, size);
    if (u == nullptr) {
        for (const EchoCell& cell : results.concurrency) {
            if (cell.server == uring && !cell.missing.empty()) {  // skipped, or it failed: say why
                md << "| `uring_server --multishot`" << where << ": the io_uring targets | — (" << cell.missing
                   << ") | ≤ 0.75 × CPU, ≤ 0.25 io_uring_enter, ≥ 1.15 × echoes/s | not judged |\n";
                break;
            }
        }
        return;
    }
    if (e == nullptr) {
        return;
    }
    const std::string see = " (section 6)";
    const double cpu = u->cpu_us / e->cpu_us;
    md << "| `uring_server --multishot`" << where << ": server CPU per echo over `" << epoll << "`'s | "
       << format("%.2f", cpu) << " (" << format("%.2f", u->cpu_us) << " µs over " << format("%.2f", e->cpu_us)
       << " µs) | ≤ 0.75 | " << verdict(cpu <= 0.75) << (cpu <= 0.75 ? "" : see) << " |\n";
    md << "| `uring_server --multishot`" << where << ": io_uring_enter calls per echo | ";
    if (u->enters < 0) {
        md << "— (no status line) | ≤ 0.25 | not judged |\n";
    } else {
        md << format("%.3f", u->enters) << " (the server's counters"
           << (u->enters_counted >= 0 ? "; " + std::string(short_name(results.syscall_counter)) + " counted " +
                                            format("%.3f", u->enters_counted) + " in the syscall pass"
                                      : std::string())
           << ") | ≤ 0.25 | " << verdict(u->enters <= 0.25) << (u->enters <= 0.25 ? "" : see) << " |\n";
    }
    const double rate = u->rate.median / e->rate.median;
    md << "| `uring_server --multishot`" << where << ": echoes/s over `" << epoll << "`'s | " << format("%.2f", rate)
       << " (" << format("%.0f", u->rate.median) << " over " << format("%.0f", e->rate.median)
       << "; generator's CPU busy " << percent(u->load_busy) << " / " << percent(e->load_busy) << ", "
       << format("%.2f", u->load_cpu_us) << " / " << format("%.2f", e->load_cpu_us) << " µs/echo) | ≥ 1.15 | ";
    if (u->load_busy < 0 || e->load_busy < 0) {
        md << "cannot tell: the load generator's CPU was not measured (no CPU of its own) |\n";
    } else if (u->generator_bound() || e->generator_bound()) {
        md << "not judged: the load generator is the limit (its CPU ≥ "
           << format("%.0f", EchoCell::busy_limit * 100) << "% busy) |\n";
    } else {
        md << verdict(rate >= 1.15) << (rate >= 1.15 ? "" : see) << " |\n";
    }
    // Every other cell of section 4 where the generator is not the limit.
    int cells = 0, judged = 0, met = 0;
    std::string judged_cells;
    for (const EchoCell& cell : results.concurrency) {
        if (cell.server != uring || !cell.missing.empty()) {
            continue;
        }
        const EchoCell* other = find(results.concurrency, epoll, 0, cell.active, cell.size);
        if (other == nullptr) {
            continue;
        }
        ++cells;
        if (cell.load_busy < 0 || other->load_busy < 0 || cell.generator_bound() || other->generator_bound()) {
            continue;
        }
        const double ratio = cell.rate.median / other->rate.median;
        ++judged;
        met += ratio >= 1.15 ? 1 : 0;
        judged_cells += (judged_cells.empty() ? "" : ", ") + std::string("C = ") + std::to_string(cell.active) + " " +
                        std::to_string(cell.size) + " B " + format("%.2f", ratio);
    }
    md << "| `uring_server --multishot`: echoes/s over `" << epoll
       << "`'s in the cells of section 4 where the load generator is not the limit | ";
    if (judged == 0) {
        md << "— (the generator is the limit in all " << cells << " cells) | ≥ 1.15 | not judged |\n";
    } else {
        md << judged << " of " << cells << " cells: " << judged_cells << " | ≥ 1.15 in each | "
           << verdict(met == judged) << (met == judged ? "" : " in " + std::to_string(judged - met)) << " |\n";
    }
}

struct Report {
    std::string markdown;
    std::map<std::string, std::string> files;  // name -> content (CSV, .dat, plots.gp)
};

Report write_report(const Settings& settings, const Placement& placement, const Results& results,
                    const std::string& command_line) {
    std::ostringstream md;
    Report report;
    const Calibration& cal = results.calibration;
    md << "# I/O models: benchmark report\n\n";
    if (settings.quick) {
        md << "**--quick: small sizes, correctness only. These figures mean nothing.**\n\n";
    }
    md << "Command: `" << command_line << "`. Every figure is the median of " << settings.runs
       << " run" << (settings.runs == 1 ? "" : "s") << " with the spread (min..max) beside it; every echoed byte "
       << "was checked. The echo runs are interleaved: every server once, then every server again, so that a slow "
          "minute of the machine falls on all of them.\n\n";
    md << "| machine | |\n|---|---|\n" << machine_facts(placement) << "\n";

    // 1. Calibration.
    md << "## 1. Calibration\n\n| what | median (min..max) |\n|---|---|\n";
    md << "| one trivial system call (getppid), ns | " << show(cal.syscall_ns, 1) << " |\n";
    md << "| 512-byte round trip through a socketpair in one thread, µs | " << show(cal.in_thread_us, 2) << " |\n";
    md << "| 512-byte ping-pong between two processes over loopback TCP, µs (the one-connection floor) | "
       << show(cal.ping_pong_us, 2) << " |\n";
    if (!cal.ceiling.valid()) {
        md << "\n";  // no echo workload: no ceiling
    } else {
        md << "| the measured ceiling: echoes/s of the load generator against the cheapest echo server (one epoll "
              "thread, a recv and a send per message), C = " << (settings.quick ? 5 : 50) << ", 512 B, one run "
              "before each round of section 3 | " << show(cal.ceiling, 0) << " |\n\n";
        md << "At the measured ceiling the server's CPU was " << percent(cal.ceiling_server_busy)
           << " busy and the load generator's " << percent(cal.ceiling_load_busy) << ", at "
           << figure(cal.ceiling_server_cpu_us) << " and " << figure(cal.ceiling_load_cpu_us)
           << " µs of CPU per echo. Over loopback, the kernel's TCP work for a segment is done on the CPU of the "
              "process that sends it, receiving side included, so the generator's CPU per echo is about the "
              "server's: with one CPU each, a cell is limited by whichever is busier, and no server can go past "
              "this ceiling while the generator stays as it is, unless it spares the generator work: 02's server, "
              "which never sleeps, is never woken, and the generator's sends cost less. Sections 3 and 4 say, cell "
              "by cell, which CPU was the limit (≥ 90% busy).\n\n";
    }
    report.files["calibration.csv"] =
        "what,median,min,max\nsyscall_ns," + format("%.2f", cal.syscall_ns.median) + "," +
        format("%.2f", cal.syscall_ns.low) + "," + format("%.2f", cal.syscall_ns.high) + "\nin_thread_round_trip_us," +
        format("%.3f", cal.in_thread_us.median) + "," + format("%.3f", cal.in_thread_us.low) + "," +
        format("%.3f", cal.in_thread_us.high) + "\nping_pong_round_trip_us," + format("%.3f", cal.ping_pong_us.median) +
        "," + format("%.3f", cal.ping_pong_us.low) + "," + format("%.3f", cal.ping_pong_us.high) + "\n" +
        (cal.ceiling.valid() ? "measured_ceiling_echoes_per_s," + format("%.0f", cal.ceiling.median) + "," +
                                   format("%.0f", cal.ceiling.low) + "," + format("%.0f", cal.ceiling.high) + "\n"
                             : std::string());

    // 2. Dispatch.
    std::string plots;
    if (!results.dispatch.empty()) {
        md << "## 2. Dispatch cost (libevent's method)\n\n"
           << "µs per event: N socketpairs watched, A of them active, 1000 chained writes; each event also costs "
              "one read() and one write(). select stops where a descriptor reaches FD_SETSIZE (1024). AIO poll and "
              "io_uring POLL_ADD submit a one-shot poll again after each completion (AIO in io_submit, io_uring in "
              "the io_uring_enter that also waits); io_uring POLL_ADD multishot (IORING_POLL_ADD_MULTI) is armed "
              "once and keeps completing, which is fairer to io_uring, so it is a row of its own.\n\n";
        if (!io_uring_unavailable().empty()) {
            md << "**io_uring rows skipped**: " << io_uring_unavailable()
               << " (io_uring is switched off here: sysctl kernel.io_uring_disabled, or a container's seccomp "
                  "profile).\n\n";
        }
        std::string csv = "active,n,mechanism,median_us,min_us,max_us\n";
        for (const int active : {1, 100}) {
            md << "### A = " << active << "\n\n| N |";
            for (const Mechanism mechanism : all_mechanisms) {
                md << " " << name_of(mechanism) << " |";
            }
            md << "\n|---:|";
            for (std::size_t i = 0; i < std::size(all_mechanisms); ++i) {
                md << "---:|";
            }
            md << "\n";
            std::string dat = "N";
            for (const Mechanism mechanism : all_mechanisms) {
                dat += std::string(" \"") + name_of(mechanism) + "\"";
            }
            dat += "\n";
            for (const DispatchRow& row : results.dispatch) {
                if (row.active != active) {
                    continue;
                }
                md << "| " << row.count << " |";
                dat += std::to_string(row.count);
                for (const Mechanism mechanism : all_mechanisms) {
                    const auto it = row.cost.find(mechanism);
                    if (it == row.cost.end()) {
                        md << " — |";
                        dat += " NaN";
                        continue;
                    }
                    md << " " << show(it->second, 2) << " |";
                    dat += " " + format("%.4f", it->second.median);
                    csv += std::to_string(active) + "," + std::to_string(row.count) + "," + name_of(mechanism) + "," +
                           format("%.4f", it->second.median) + "," + format("%.4f", it->second.low) + "," +
                           format("%.4f", it->second.high) + "\n";
                }
                md << "\n";
                dat += "\n";
            }
            const int smallest = smallest_count(results, active);
            md << "\nCost at the largest N over the cost at N = " << smallest << ":";
            for (const Mechanism mechanism : all_mechanisms) {
                const int largest = largest_count(results, active, mechanism);
                const Figure* small = dispatch_cost(results, active, smallest, mechanism);
                const Figure* large = dispatch_cost(results, active, largest, mechanism);
                if (small != nullptr && large != nullptr && largest > smallest) {
                    md << " " << name_of(mechanism) << " " << format("%.1f", large->median / small->median)
                       << " (N = " << largest << ");";
                }
            }
            const std::string file = "dispatch_a" + std::to_string(active);
            if (largest_count(results, active, Mechanism::epoll_lt) <= smallest) {
                md << "\n\n";
                continue;  // one N: nothing to plot
            }
            md << "\n\n![dispatch cost against N, A = " << active << "](" << file << ".svg)\n\n";
            report.files[file + ".dat"] = dat;
            plots += "set output '" + file + ".svg'\nset title 'Dispatch cost, A = " + std::to_string(active) +
                     " active of N'\nset xlabel 'N (socketpairs watched)'\nset ylabel 'µs per event'\n"
                     "set logscale xy\nplot for [i=2:" + std::to_string(std::size(all_mechanisms) + 1) + "] '" + file +
                     ".dat' using 1:i with linespoints title columnhead(i)\n";
        }
        report.files["dispatch.csv"] = csv;
    }
    if (!results.sparse.empty()) {
        md << "### One descriptor, numbered D\n\n"
           << "µs per call watching one descriptor, moved up to number D (F_DUPFD), that holds a byte never "
              "read, so every call returns at once: the mechanism alone. select is given nfds = D + 1 and a "
              "bitmap of that many bits (past FD_SETSIZE too: the kernel takes any nfds up to RLIMIT_NOFILE), "
              "poll one pollfd, epoll_wait one ready item (level-triggered).\n\n| D |";
        std::string csv = "descriptor,mechanism,median_us,min_us,max_us\n";
        for (const Mechanism mechanism : sparse_mechanisms) {
            md << " " << name_of(mechanism) << " |";
        }
        md << "\n|---:|";
        for (std::size_t i = 0; i < std::size(sparse_mechanisms); ++i) {
            md << "---:|";
        }
        md << "\n";
        for (const SparseRow& row : results.sparse) {
            md << "| " << row.descriptor << " |";
            for (const Mechanism mechanism : sparse_mechanisms) {
                const Figure& cost = row.cost.at(mechanism);
                md << " " << show(cost, 2) << " |";
                csv += std::to_string(row.descriptor) + "," + name_of(mechanism) + "," + format("%.4f", cost.median) +
                       "," + format("%.4f", cost.low) + "," + format("%.4f", cost.high) + "\n";
            }
            md << "\n";
        }
        md << "\n";
        report.files["sparse.csv"] = csv;
    }

    // 3. Echo with idle connections.
    if (!results.idle.empty()) {
        md << "## 3. Echo with idle connections\n\n"
           << "512-byte messages, one in flight per active connection; K idle connections held open (each proven "
              "served by a one-byte echo first). Round trips are over every echo of every run; CPU is the server's "
              "(every thread and process: io_uring's SQ thread is one of them), per echo, and so is the load "
              "generator's (its thread). ";
        if (results.syscall_counter == SyscallCounter::none) {
            md << "System calls were not counted in this run.\n\n";
        } else {
            md << "System calls per echo come from a separate pass of " << (settings.quick ? 4 : 40)
               << " echoes per connection (C = the larger value), counted by " << name_of(results.syscall_counter)
               << ", with the most frequent calls.\n\n";
        }
        md << "The CPUs busy are the server's / the load generator's (/proc/stat); the limit is the CPU ≥ "
           << format("%.0f", EchoCell::busy_limit * 100)
           << "% busy (both, neither: then one connection's round trip is). Generator capacity: 1 ÷ its CPU per "
              "echo, the most echoes/s it could drive in that cell with its whole CPU.\n\n";
        md << "| server | K idle | C active | echoes/s | p50 µs | p99 µs | server CPU µs/echo | generator CPU µs/echo | "
              "CPUs busy | limit | generator capacity | syscalls/echo | most frequent, per echo |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
        std::string csv = "server,idle,active,size,echoes_per_s,min,max,p50_us,p99_us,cpu_us_per_echo,syscalls_per_echo,"
                          "load_cpu_us_per_echo,server_cpu_busy,load_cpu_busy,io_uring_enter_per_echo,sqes_per_echo,"
                          "cqes_per_echo,missing\n";
        for (const EchoCell& cell : results.idle) {
            md << "| " << cell.server << " | " << cell.idle << " | " << cell.active << " | ";
            if (!cell.missing.empty()) {
                md << "— | | | | | | | | | " << cell.missing << " |\n";
            } else {
                md << show(cell.rate, 0) << " | " << format("%.1f", cell.p50_us) << " | " << format("%.1f", cell.p99_us)
                   << " | " << format("%.2f", cell.cpu_us) << " | " << format("%.2f", cell.load_cpu_us) << " | "
                   << percent(cell.server_busy) << " / " << percent(cell.load_busy) << " | " << cell.limit() << " | "
                   << figure(cell.generator_capacity(), "%.0f") << " | "
                   << (cell.syscalls < 0 ? std::string("") : format("%.2f", cell.syscalls)) << " | " << cell.top_calls
                   << " |\n";
            }
            csv += cell.server + "," + std::to_string(cell.idle) + "," + std::to_string(cell.active) + ",512," +
                   format("%.0f", cell.rate.median) + "," + format("%.0f", cell.rate.low) + "," +
                   format("%.0f", cell.rate.high) + "," + format("%.1f", cell.p50_us) + "," + format("%.1f", cell.p99_us) +
                   "," + format("%.3f", cell.cpu_us) + "," + format("%.2f", cell.syscalls) + "," + cpu_and_counters_csv(cell) +
                   ",\"" + cell.missing + "\"\n";
        }
        report.files["echo_idle.csv"] = csv;
        uring_enters_table(md, results.idle, results.syscall_counter);
        // The plot: echoes/s against K, C = the larger value, one line per server.
        const int active = results.idle.back().active > 1 ? (settings.quick ? 5 : 50) : 1;
        std::vector<std::string> names;
        std::set<int> levels;
        for (const EchoCell& cell : results.idle) {
            if (std::find(names.begin(), names.end(), cell.server) == names.end() && !cell.server.empty() &&
                cell.active == active) {
                names.push_back(cell.server);
            }
            if (cell.missing.empty()) {
                levels.insert(cell.idle);
            }
        }
        std::string dat = "K";
        for (const std::string& name : names) {
            dat += " \"" + name + "\"";
        }
        dat += "\n";
        for (const int level : levels) {
            dat += std::to_string(level);
            for (const std::string& name : names) {
                const EchoCell* cell = find(results.idle, name, level, active);
                dat += cell != nullptr ? " " + format("%.0f", cell->rate.median) : " NaN";
            }
            dat += "\n";
        }
        report.files["echo_idle.dat"] = dat;
        md << "\n![echoes/s against idle connections, C = " << active << "](echo_idle.svg)\n\n";
        plots += "set output 'echo_idle.svg'\nset title 'Echoes/s with K idle connections, C = " + std::to_string(active) +
                 " active, 512 B'\nset xlabel 'K (idle connections)'\nset ylabel 'echoes/s'\nunset logscale\n"
                 "set logscale y\nset key outside right\nplot for [i=2:" + std::to_string(names.size() + 1) +
                 "] 'echo_idle.dat' using 1:i with linespoints title columnhead(i)\n";
    }

    // 4. Concurrency × size.
    if (!results.concurrency.empty()) {
        md << "## 4. Concurrency × message size\n\nNo idle connections; echoes/s (median of " << settings.runs
           << ") for C active connections. After each figure, the CPU that was the limit (≥ "
           << format("%.0f", EchoCell::busy_limit * 100)
           << "% busy): [s] the server's, [g] the load generator's, [s g] both; no mark, neither (one connection "
              "waits for each round trip). Where the generator's CPU is a limit, the server might do more.\n\n";
        std::set<std::size_t> sizes;
        std::vector<int> actives;
        std::vector<std::string> names;
        for (const EchoCell& cell : results.concurrency) {
            sizes.insert(cell.size);
            if (std::find(actives.begin(), actives.end(), cell.active) == actives.end()) {
                actives.push_back(cell.active);
            }
            if (std::find(names.begin(), names.end(), cell.server) == names.end()) {
                names.push_back(cell.server);
            }
        }
        std::string csv = "server,active,size,echoes_per_s,min,max,p50_us,p99_us,cpu_us_per_echo,syscalls_per_echo,"
                          "load_cpu_us_per_echo,server_cpu_busy,load_cpu_busy,io_uring_enter_per_echo,sqes_per_echo,"
                          "cqes_per_echo,missing\n";
        for (const std::size_t size : sizes) {
            md << "### " << size << "-byte messages\n\n";
            concurrency_header(md, actives);
            for (const std::string& name : names) {
                md << "| " << name << " |";
                for (const int active : actives) {
                    const EchoCell* cell = nullptr;
                    for (const EchoCell& c : results.concurrency) {
                        if (c.server == name && c.active == active && c.size == size) {
                            cell = &c;
                        }
                    }
                    if (cell == nullptr) {
                        md << " |";
                        continue;
                    }
                    md << " " << (cell->missing.empty() ? show(cell->rate, 0) + limit_mark(*cell) : "— (" + cell->missing + ")")
                       << " |";
                    csv += name + "," + std::to_string(active) + "," + std::to_string(size) + "," +
                           format("%.0f", cell->rate.median) + "," + format("%.0f", cell->rate.low) + "," +
                           format("%.0f", cell->rate.high) + "," + format("%.1f", cell->p50_us) + "," +
                           format("%.1f", cell->p99_us) + "," + format("%.3f", cell->cpu_us) + "," +
                           format("%.2f", cell->syscalls) + "," + cpu_and_counters_csv(*cell) + ",\"" + cell->missing +
                           "\"\n";
                }
                md << "\n";
            }
            md << "\n";
        }
        report.files["concurrency.csv"] = csv;
        cpu_table(md, results.concurrency, names, actives, settings.quick ? 64 : 512);
    }

    // 5. Memory.
    if (!results.memory.empty()) {
        md << "## 5. Memory per connection\n\nProportional set size (PSS: a page shared by n processes counts 1/n "
              "in each) of the server's processes, before any connection and with K idle connections. The kernel's "
              "side is apart: the kernel objects of a TCP connection's two sockets (both ends, the load "
              "generator's and the server's, are on this machine), each a `struct tcp_sock`, an inode and a "
              "file, counted in /proc/slabinfo (readable by root only). Not counted: epoll's items (in caches "
              "shared with other objects), the dentries, the socket buffers (empty on an idle connection), and a "
              "thread's or a process's own kernel memory.\n\n| server | K | PSS before, MiB | PSS at K, MiB | per "
              "connection, KiB | kernel sockets per connection, both ends, KiB | processes at K | threads at K |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|\n";
        std::string csv = "server,idle,pss_before_kib,pss_after_kib,per_connection_kib,slab_per_connection_kib,"
                          "processes,threads,missing\n";
        for (const MemoryRow& row : results.memory) {
            if (!row.missing.empty() || row.idle == 0) {
                md << "| " << row.server << " | — | " << format("%.1f", row.before.pss_kib / 1024) << " | | | | | "
                   << (row.missing.empty() ? "not measured" : row.missing) << " |\n";
                continue;
            }
            const double per = (row.after.pss_kib - row.before.pss_kib) / row.idle;
            const double slab = (row.slab_after_kib - row.slab_before_kib) / row.idle;  // NaN if unknown
            md << "| " << row.server << " | " << row.idle << " | " << format("%.1f", row.before.pss_kib / 1024) << " | "
               << format("%.1f", row.after.pss_kib / 1024) << " | " << format("%.1f", per) << " | "
               << (std::isnan(slab) ? std::string() : format("%.1f", slab)) << " | " << row.after.processes << " | " << row.after.threads << " |\n";
            csv += row.server + "," + std::to_string(row.idle) + "," + format("%.0f", row.before.pss_kib) + "," +
                   format("%.0f", row.after.pss_kib) + "," + format("%.2f", per) + "," + format("%.2f", slab) + "," +
                   std::to_string(row.after.processes) + "," + std::to_string(row.after.threads) + ",\n";
        }
        md << "\n";
        report.files["memory.csv"] = csv;
    }

    // 6. io_uring against epoll ET.
    uring_section(md, settings, placement, results);

    // The claims and the targets.
    md << "## The claims and our targets\n\n| figure | measured | target | |\n|---|---|---|---|\n";
    if (!results.dispatch.empty()) {
        for (const int active : {1, 100}) {
            const int smallest = smallest_count(results, active);
            for (const Mechanism mechanism : all_mechanisms) {
                const int largest = largest_count(results, active, mechanism);
                const Figure* small = dispatch_cost(results, active, smallest, mechanism);
                const Figure* large = dispatch_cost(results, active, largest, mechanism);
                if (small == nullptr || large == nullptr || largest <= smallest) {
                    continue;
                }
                const double ratio = large->median / small->median;
                const bool grows = mechanism == Mechanism::select || mechanism == Mechanism::poll;
                md << "| dispatch cost, " << name_of(mechanism) << ", A = " << active << ": N = " << largest
                   << " over N = " << smallest << " | " << format("%.1f", ratio) << " | "
                   << (grows ? "large (the claim)" : "none (shown)") << " | "
                   << (grows ? (ratio > 3 ? "the claim holds" : "the claim does not show") : "") << " |\n";
            }
            // The flat-cost claim, net of the sockets' own read() and
            // write(), which cost more as N grows whatever watches them
            // (the read+write only column).
            const Figure* base_small = dispatch_cost(results, active, smallest, Mechanism::none);
            const int base_largest = largest_count(results, active, Mechanism::none);
            const Figure* base_large = dispatch_cost(results, active, base_largest, Mechanism::none);
            for (const Mechanism mechanism : {Mechanism::epoll_lt, Mechanism::epoll_et, Mechanism::rtsig}) {
                const Figure* small = dispatch_cost(results, active, smallest, mechanism);
                const Figure* large = dispatch_cost(results, active, base_largest, mechanism);
                if (base_small == nullptr || base_large == nullptr || small == nullptr || large == nullptr ||
                    base_largest <= smallest) {
                    continue;
                }
                const double ratio = (large->median / base_large->median) / (small->median / base_small->median);
                md << "| dispatch cost over read+write only, " << name_of(mechanism) << ", A = " << active
                   << ": at N = " << base_largest << " over at N = " << smallest << " | " << format("%.2f", ratio)
                   << " | ≤ 1.5 | " << verdict(ratio <= 1.5) << " |\n";
            }
        }
    }
    if (results.sparse.size() > 1) {
        const SparseRow& low = results.sparse.front();
        const SparseRow& high = results.sparse.back();
        for (const Mechanism mechanism : {Mechanism::select, Mechanism::poll}) {
            const double ratio = high.cost.at(mechanism).median / low.cost.at(mechanism).median;
            const bool select = mechanism == Mechanism::select;
            md << "| one descriptor, " << name_of(mechanism) << ": D = " << high.descriptor << " over D = " << low.descriptor
               << " | " << format("%.2f", ratio) << " | "
               << (select ? "> 1.5 (the claim: by number)" : "≤ 1.5 (the claim: by count)") << " | "
               << ((select ? ratio > 1.5 : ratio <= 1.5) ? "the claim holds" : "the claim does not show") << " |\n";
        }
    }
    const int idle_big = settings.quick ? 20 : 8000;
    const int busy = settings.quick ? 5 : 50;
    for (const char* name :
         {"05-epoll-lt/server", "06-epoll-et/server", "06-epoll-et/server --short-read-drains", "04-poll/server"}) {
        const EchoCell* none = find(results.idle, name, 0, busy);
        const EchoCell* many = find(results.idle, name, idle_big, busy);
        if (none != nullptr && many != nullptr) {
            const double ratio = many->rate.median / none->rate.median;
            const bool poll = std::string_view(name) == "04-poll/server";
            md << "| " << name << ": echoes/s with " << idle_big << " idle over 0 idle, C = " << busy << " | "
               << format("%.2f", ratio) << " | " << (poll ? "none (beside epoll's)" : "≥ 0.85") << " | "
               << (poll ? "" : verdict(ratio >= 0.85)) << " |\n";
        }
    }
    for (const std::string name : {"06-epoll-et/server", "06-epoll-et/server --short-read-drains"}) {
        const EchoCell* et = find(results.idle, name, 0, busy);
        if (et == nullptr) {
            continue;
        }
        if (et->syscalls >= 0) {
            md << "| " << name << ", C = " << busy << ": system calls per echo | " << format("%.2f", et->syscalls)
               << " (" << et->top_calls << ") | ≤ 2.2 | " << verdict(et->syscalls <= 2.2) << " |\n";
        }
    }
    // The measured ceiling: the event loops (one thread asleep in select,
    // poll, epoll_wait, sigwaitinfo, io_getevents or io_uring_enter), where
    // their own CPU is a limit of the cell. Where only the generator's is,
    // the cell cannot tell a server from the ceiling.
    if (cal.ceiling.valid()) {
        for (const char* name : {"03-select/server", "04-poll/server", "05-epoll-lt/server", "06-epoll-et/server",
                                 "06-epoll-et/server --short-read-drains", "08-rtsig-tcp/server", "09-aio-kernel/server",
                                 "09-aio-kernel/uring_server", "09-aio-kernel/uring_server --poll",
                                 "09-aio-kernel/uring_server --multishot"}) {
            const EchoCell* cell = find(results.idle, name, 0, busy);
            if (cell == nullptr) {
                continue;
            }
            const double share = cell->rate.median / cal.ceiling.median;
            md << "| " << name << ", K = 0, C = " << busy << ", 512 B: echoes/s over the measured ceiling ("
               << format("%.0f", cal.ceiling.median) << "); limit: " << (cell->limit().empty() ? "unknown" : cell->limit())
               << " | " << format("%.2f", share) << " (CPU per echo: server " << format("%.2f", cell->cpu_us)
               << " µs, generator " << format("%.2f", cell->load_cpu_us) << " µs) | ≥ 0.80 where the server's CPU is a limit | ";
            if (cell->server_bound()) {
                md << verdict(share >= 0.8);
            } else if (cell->generator_bound()) {
                md << "not judged: only the load generator's CPU is the limit";
            } else {
                md << "not judged: neither CPU is the limit";
            }
            md << " |\n";
        }
    }
    asio_targets(md, settings, results);
    for (const char* name : {"05-epoll-lt/server", "06-epoll-et/server", "06-epoll-et/server --short-read-drains",
                             "04-poll/server", "03-select/server",
                             "01-blocking/server", "01-blocking/server_thread", "01-blocking/server_iterative"}) {
        if (const EchoCell* one = find(results.idle, name, 0, 1)) {
            // Both means: the floor is time / round trips, so is this.
            const double mean_us = 1e6 / one->rate.median;
            const double ratio = mean_us / cal.ping_pong_us.median;
            md << "| " << name << ": one connection's mean round trip (" << format("%.1f", mean_us)
               << " µs) over the ping-pong floor (" << format("%.1f", cal.ping_pong_us.median) << " µs) | "
               << format("%.2f", ratio) << " | ≤ 1.25 | " << verdict(ratio <= 1.25) << " |\n";
        }
    }
    // The event loops that multiplex in one thread and sleep between rounds
    // (select, poll, epoll), at K = 0 and C = 50, against the fastest of
    // them. (02's server, which never sleeps, is left out: it spares the
    // load generator the wake-ups, and pays with a whole CPU when idle.)
    const std::vector<std::string> event_loops = {"03-select/server", "04-poll/server", "05-epoll-lt/server",
                                                  "06-epoll-et/server", "06-epoll-et/server --short-read-drains"};
    double fastest = 0;
    std::string fastest_name;
    for (const EchoCell& cell : results.idle) {
        if (cell.idle == 0 && cell.active == busy && cell.missing.empty() &&
            std::find(event_loops.begin(), event_loops.end(), cell.server) != event_loops.end() &&
            cell.rate.median > fastest) {
            fastest = cell.rate.median;
            fastest_name = cell.server;
        }
    }
    if (fastest > 0) {
        for (const std::string& name : event_loops) {
            if (const EchoCell* cell = find(results.idle, name, 0, busy)) {
                const double ratio = cell->rate.median / fastest;
                md << "| " << name << ": echoes/s over the fastest of the event loops (" << fastest_name << "), K = 0, C = " << busy
                   << " | " << format("%.2f", ratio) << " | ≥ 0.90 | " << verdict(ratio >= 0.9) << " |\n";
            }
        }
        for (const std::string& name : results.external_names) {
            if (const EchoCell* cell = find(results.idle, name, 0, busy)) {
                const double ratio = fastest / cell->rate.median;
                md << "| fastest of the event loops over external `" << name << "`, K = 0, C = " << busy << " | "
                   << format("%.2f", ratio) << " | > 1 | " << verdict(ratio > 1) << " |\n";
            }
        }
    }
    uring_targets(md, settings, results);
    md << "\n";

    // Plots.
    if (!plots.empty()) {
        report.files["plots.gp"] = "# gnuplot plots.gp (in this directory) draws the report's plots.\n"
                                   "set terminal svg size 800,500 dynamic font 'sans,12'\nset grid\nset key left top\n" +
                                   plots;
    }
    md << "Files beside this report: CSV files of every table, and `plots.gp`, which gnuplot (Debian: `apt-get install "
          "gnuplot-nox`) turns into the SVG plots above: `gnuplot plots.gp` in this directory.\n";
    report.markdown = md.str();
    return report;
}

bool gnuplot_available() {
    for (const char* directory : {"/usr/bin/", "/bin/", "/usr/local/bin/"}) {
        if (::access((std::string(directory) + "gnuplot").c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    std::string error;
    const CommandLine command{
        "[--quick] [--runs N] [--window SECONDS] [--workloads LIST] [--servers LIST] [--external NAME=COMMAND]... "
        "[--output DIR] [--build-dir DIR]",
        "Measures the I/O models side by side: calibration, dispatch cost, echo servers under load, memory.",
        {{"--quick", "", "small sizes, one run each: checks that every byte arrives (for CI); figures mean nothing",
          [&](std::string_view) { return settings.quick = true; }},
         {"--runs", "N", "runs per figure, reported as median (min..max); default 3",
          [&](std::string_view value) {
              const auto [end, failed] = std::from_chars(value.data(), value.data() + value.size(), settings.runs);
              return failed == std::errc{} && end == value.data() + value.size() && settings.runs >= 1 &&
                     settings.runs <= 101;
          }},
         {"--window", "SECONDS", "length of one echo run (after a warm-up of a third of it); default 0.3",
          [&](std::string_view value) {
              settings.window = std::atof(std::string(value).c_str());
              return settings.window >= 0.01 && settings.window <= 60;
          }},
         {"--workloads", "LIST", "comma-separated: dispatch,idle,concurrency,syscalls (default all; calibration always)",
          [&](std::string_view value) {
              settings.workloads = split(value);
              return std::all_of(settings.workloads.begin(), settings.workloads.end(), [](const std::string& w) {
                  return w == "dispatch" || w == "idle" || w == "concurrency" || w == "syscalls";
              });
          }},
         {"--servers", "LIST", "comma-separated servers of ours, e.g. 05-epoll-lt/server; 'none' for external only",
          [&](std::string_view value) {
              settings.servers = split(value);
              return true;
          }},
         {"--external", "NAME=COMMAND", "also measure an echo server of your own: COMMAND has {port} in it",
          [&](std::string_view value) {
              const std::size_t equals = value.find('=');
              if (equals == 0 || equals == std::string_view::npos ||
                  value.find("{port}") == std::string_view::npos) {
                  return false;
              }
              settings.external.emplace_back(value.substr(0, equals), value.substr(equals + 1));
              return true;
          }},
         {"--no-alternatives", "", "leave out socat and Boost.Asio's example (measured by default where installed)",
          [&](std::string_view) {
              settings.alternatives = false;
              return true;
          }},
         {"--output", "DIR", "write report.md, CSV files and the plots there",
          [&](std::string_view value) { return !(settings.output = value).empty(); }},
         {"--build-dir", "DIR", "where the chapters' programs are (default: this build)",
          [&](std::string_view value) { return !(settings.build_dir = value).empty(); }}},
        {},
        "argument",
        "",
    };
    parse_command_line_or_exit(command, argc, argv);
    std::string command_line = "bench";
    for (int i = 1; i < argc; ++i) {
        command_line += std::string(" ") + argv[i];
    }
    if (settings.quick) {
        settings.runs = 1;
        settings.window = 0.05;
    }
    ::signal(SIGPIPE, SIG_IGN);

    // Up to 9000 socketpairs (18000 descriptors), or 8000 idle connections
    // and 1000 active ones; the servers inherit the limit.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    const rlim_t wanted = settings.quick ? 1024 : 18200;
    if (limit.rlim_cur < wanted) {
        limit.rlim_cur = std::min(wanted, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    const Placement placement = choose_placement();
    pin_this_thread(placement.load_cpu);

    Results results;
    results.calibration = calibrate(settings, placement);
    if (settings.workloads.count("dispatch") != 0) {
        results.dispatch = measure_dispatch(settings);
        results.sparse = measure_sparse(settings);
    }
    const SyscallCounter syscalls = settings.workloads.count("syscalls") != 0
                                        ? choose_syscall_counter(placement.server_cpu)
                                        : SyscallCounter::none;
    results.syscall_counter = syscalls;
    if (settings.workloads.count("syscalls") != 0 && syscalls == SyscallCounter::none) {
        progress("neither perf nor strace found: system calls per echo are not counted (Debian: apt-get install "
                 "linux-perf or strace)");
    }
    const std::vector<ServerSpec> servers = our_servers(settings);
    for (const ServerSpec& spec : servers) {
        if (spec.external()) {
            results.external_names.push_back(spec.name);
        }
    }
    // Interleaved rounds: every server once, then every server again; the
    // measured ceiling first in each.
    for (int round = 0; round < settings.runs && settings.workloads.count("idle") != 0; ++round) {
        measure_ceiling(settings, placement, results.calibration);
        for (const ServerSpec& spec : servers) {
            measure_idle(settings, spec, placement, results, syscalls, round);
        }
    }
    for (int round = 0; round < settings.runs && settings.workloads.count("concurrency") != 0; ++round) {
        for (const ServerSpec& spec : servers) {
            measure_concurrency(settings, spec, placement, results, syscalls, round);
        }
    }

    const Report report = write_report(settings, placement, results, command_line);
    if (settings.output.empty()) {
        std::fputs(report.markdown.c_str(), stdout);
        std::printf("\nEvery byte written was read back in every run.\n");
    } else {
        std::filesystem::create_directories(settings.output);
        std::ofstream(settings.output + "/report.md") << report.markdown;
        for (const auto& [name, content] : report.files) {
            std::ofstream(settings.output + "/" + name) << content;
        }
        if (report.files.count("plots.gp") != 0) {
            if (gnuplot_available()) {
                const std::string run = "cd '" + settings.output + "' && gnuplot plots.gp";
                if (std::system(run.c_str()) != 0) {
                    progress("gnuplot failed: the plots were not drawn (%s)", run.c_str());
                }
            } else {
                progress("gnuplot not found: the plots were not drawn (Debian: apt-get install gnuplot-nox, then "
                         "gnuplot plots.gp in %s)", settings.output.c_str());
            }
        }
        std::printf("Every byte written was read back in every run. Report: %s/report.md\n", settings.output.c_str());
    }
    return 0;
}
