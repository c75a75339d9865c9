// tests/bench/servers.hpp: the servers under test: started pinned to one
// CPU, looked at through /proc, their system calls counted with strace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bench {

// One echo server to measure.
struct ServerSpec {
    std::string name;               // "06-epoll-et/server", or the name given to --external
    std::vector<std::string> argv;  // ours: the program and its options, started with port 0
    std::string command;            // external: a shell command with {port} in it
    int most_connections = 0;       // > 0: the most it can hold at once (select: FD_SETSIZE)
    bool one_at_a_time = false;     // 01's iterative server: one connection at a time
    bool io_uring = false;          // 09's uring_server: skipped where io_uring is switched off
    [[nodiscard]] bool external() const { return !command.empty(); }
};

// What /proc says about a server and every process of its process group
// (01's fork server has one child per connection, socat too).
struct TreeStats {
    double cpu_ns = 0;         // time on a CPU, every thread of every process
    double pss_kib = 0;        // proportional set size: shared pages divided among sharers
    int processes = 0, threads = 0;
};

// CPU time of process `pid` so far (every thread), ns; 0 if unknown.
double process_cpu_ns(pid_t pid);

// Time a CPU spent busy (user, system, interrupts, softirqs, steal) and in
// all, from /proc/stat, in clock ticks: how busy the server's CPU and the
// load generator's CPU were during a cell.
struct CpuTicks {
    std::uint64_t busy = 0, all = 0;
};
CpuTicks cpu_ticks(int cpu);
// busy / all between two readings; -1 if unknown (no pinning, no /proc/stat).
double busy_share(const CpuTicks& before, const CpuTicks& after);

// Where the server's CPU time went during a cell: the most frequent symbols
// of `perf record -e cpu-clock -C CPU` (a software clock: it works in a
// virtual machine without hardware counters), and the share of samples in
// each process name (the server, its io_uring SQ thread, idle).
struct Profile {
    struct Share {
        std::string command;  // "uring_server", "iou-sqp" (the SQ thread), "swapper" (idle)
        double kernel = 0, user = 0;  // percent of the samples
    };
    std::vector<Share> commands;  // most first
    std::vector<std::pair<std::string, double>> symbols;  // "[k] tcp_sendmsg_locked", percent
    double samples = 0;
};

// How system calls are counted:
// - perf: `perf stat -a -C CPU -e 'syscalls:sys_enter_*'`, every system call
//   entered on the server's CPU, counted in the kernel: the server runs at
//   full speed. Needs perf and a server pinned to its own CPU.
// - strace: `strace -c -f -p PID...`. Every system call stops the server,
//   which then finds more data waiting at each read than it would at full
//   speed: reads that would have said EAGAIN are fewer. Used without perf.
enum class SyscallCounter { none, perf, strace };
SyscallCounter choose_syscall_counter(int server_cpu);
const char* name_of(SyscallCounter counter);

class RunningServer {
public:
    // Starts the server in its own process group, pinned to `cpu` (-1: not
    // pinned), and waits (10 s at most) for it to accept: ours print their
    // ready line, an external one is connected to until it answers.
    // nullopt and `error` set if it does not start.
    static std::optional<RunningServer> start(const ServerSpec& spec, int cpu, std::string& error);

    RunningServer(RunningServer&& other) noexcept;
    RunningServer& operator=(RunningServer&&) = delete;
    RunningServer(const RunningServer&) = delete;
    ~RunningServer();

    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] std::uint16_t port() const { return port_; }
    [[nodiscard]] TreeStats stats() const;

    // Runs `workload` while `counter` counts every system call of the
    // server's processes and threads. Returns the count per syscall name
    // (sorted, most first), or nullopt with `error` set.
    std::optional<std::vector<std::pair<std::string, std::uint64_t>>> count_syscalls(
        SyscallCounter counter, const std::function<bool()>& workload, std::string& error) const;

    // `perf record` on the server's CPU (or on `cpu`, e.g. the load
    // generator's) while `workload` runs. nullopt, with `error` set, without
    // perf or a pinned server.
    std::optional<Profile> profile(const std::function<bool()>& workload, std::string& error, int cpu = -1) const;

    // The server's counters so far: SIGUSR1, then its "status:" line
    // ("3 connections, 1536 bytes echoed, 12 io_uring_enter calls") read
    // back from its stderr, by name. nullopt, with `error` set, if no line
    // comes within 5 s.
    std::optional<std::map<std::string, std::uint64_t>> status(std::string& error) const;

    // SIGTERM, then up to 20 s to exit; SIGKILL to the group after that.
    // Returns what ended it ("exit 0", "killed by SIGKILL after 20 s").
    std::string stop();

private:
    RunningServer() = default;
    [[nodiscard]] std::vector<pid_t> processes() const;
    std::optional<std::vector<std::pair<std::string, std::uint64_t>>> count_with_perf(
        const std::function<bool()>& workload, std::string& error) const;
    std::optional<std::vector<std::pair<std::string, std::uint64_t>>> count_with_strace(
        const std::function<bool()>& workload, std::string& error) const;
    pid_t pid_ = -1;
    int cpu_ = -1;
    std::uint16_t port_ = 0;
    int stderr_fd_ = -1;  // a memfd: what the server said, shown when it fails to start, and its status lines
    bool stopped_ = false;
};

// Which CPU the servers run on and which the load generator runs on
// (-1 and -1 on a one-CPU machine: nothing pinned).
struct Placement {
    int server_cpu = -1, load_cpu = -1;
};
Placement choose_placement();
void pin_this_thread(int cpu);


}  // namespace bench
