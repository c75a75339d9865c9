// tests/bench/servers.cpp: starting, watching and stopping the servers under test.
#include "servers.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"
#include "support.hpp"

namespace bench {

using iomodels::unique_fd;

Placement choose_placement() {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (::sched_getaffinity(0, sizeof cpus, &cpus) == -1 || CPU_COUNT(&cpus) < 2) {
        return {};
    }
    Placement placement;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &cpus)) {
            (placement.server_cpu < 0 ? placement.server_cpu : placement.load_cpu) = cpu;
            if (placement.load_cpu >= 0) {
                break;
            }
        }
    }
    return placement;
}

void pin_this_thread(int cpu) {
    if (cpu < 0) {
        return;
    }
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(cpu, &cpus);
    if (::sched_setaffinity(0, sizeof cpus, &cpus) == -1) {
        fail("sched_setaffinity CPU " + std::to_string(cpu), errno);
    }
}

CpuTicks cpu_ticks(int cpu) {
    CpuTicks ticks;
    if (cpu < 0) {
        return ticks;
    }
    std::ifstream stat("/proc/stat");
    const std::string name = "cpu" + std::to_string(cpu);
    for (std::string line; std::getline(stat, line);) {
        std::istringstream fields(line);
        std::string first;
        fields >> first;
        if (first != name) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is in user already)
        std::uint64_t value[8] = {};
        for (std::uint64_t& v : value) {
            fields >> v;
        }
        for (int i = 0; i < 8; ++i) {
            ticks.all += value[i];
            ticks.busy += (i == 3 || i == 4) ? 0 : value[i];
        }
        break;
    }
    return ticks;
}

double busy_share(const CpuTicks& before, const CpuTicks& after) {
    if (after.all <= before.all) {
        return -1;
    }
    return static_cast<double>(after.busy - before.busy) / static_cast<double>(after.all - before.all);
}

namespace {

bool installed(const std::string& program) {
    for (const char* directory : {"/usr/bin/", "/bin/", "/usr/local/bin/", "/usr/sbin/"}) {
        if (::access((directory + program).c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

}  // namespace

SyscallCounter choose_syscall_counter(int server_cpu) {
    // perf must be able to count a tracepoint on every CPU (root, or
    // kernel.perf_event_paranoid allowing it).
    if (server_cpu >= 0 && installed("perf") &&
        std::system("perf stat -a -C 0 -e raw_syscalls:sys_enter -- true >/dev/null 2>&1") == 0) {
        return SyscallCounter::perf;
    }
    return installed("strace") ? SyscallCounter::strace : SyscallCounter::none;
}

const char* name_of(SyscallCounter counter) {
    switch (counter) {
        case SyscallCounter::perf: return "perf stat (in the kernel, the server at full speed)";
        case SyscallCounter::strace: return "strace -c -f (the server slowed down by every stop)";
        case SyscallCounter::none: return "nothing (neither perf nor strace)";
    }
    return "?";
}

namespace {

// Waits for `fd` to become readable; false at the deadline.
bool wait_readable(int fd, Clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            return false;
        }
        pollfd entry{fd, POLLIN, 0};
        const int n = ::poll(&entry, 1, static_cast<int>(left));
        if (n > 0) {
            return true;
        }
        if (n == -1 && errno != EINTR) {
            return false;
        }
    }
}

// A port nobody listens on now (for an external server's {port}).
std::uint16_t free_port() {
    const unique_fd probe = iomodels::listen_tcp("127.0.0.1", 0, SOCK_CLOEXEC);
    const auto address = probe ? iomodels::local_address(probe.get()) : std::nullopt;
    if (!address) {
        fail("listen on 127.0.0.1 to find a free port", errno);
    }
    return ntohs(address->sin_port);
}

// argv as execvp wants it: pointers into `argv`, then a null pointer.
std::vector<char*> exec_arguments(std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (std::string& arg : argv) {
        args.push_back(arg.data());
    }
    args.push_back(nullptr);
    return args;
}

std::string read_all(int fd) {
    std::string text;
    char buffer[4096];
    ssize_t n;
    off_t offset = 0;
    while ((n = ::pread(fd, buffer, sizeof buffer, offset)) > 0) {
        text.append(buffer, static_cast<std::size_t>(n));
        offset += n;
    }
    return text;
}

std::string read_file(const std::string& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

std::optional<pid_t> number(const char* name) {
    char* end = nullptr;
    const long value = std::strtol(name, &end, 10);
    if (end == name || *end != '\0' || value <= 0) {
        return std::nullopt;
    }
    return static_cast<pid_t>(value);
}

// Pins every thread of `pid` to `cpu`. A thread inherits its creator's
// CPUs, but the kernel may place one of its own elsewhere: io_uring's SQ
// polling thread (iou-sqp-PID) is a thread of the server's process, and on
// some kernels it may run on every CPU, the load generator's too.
void pin_threads(pid_t pid, int cpu) {
    DIR* tasks = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
    if (tasks == nullptr) {
        return;
    }
    while (const dirent* entry = ::readdir(tasks)) {
        const auto tid = number(entry->d_name);
        cpu_set_t cpus;
        if (!tid || ::sched_getaffinity(*tid, sizeof cpus, &cpus) == -1 ||
            (CPU_COUNT(&cpus) == 1 && CPU_ISSET(cpu, &cpus))) {
            continue;
        }
        CPU_ZERO(&cpus);
        CPU_SET(cpu, &cpus);
        if (::sched_setaffinity(*tid, sizeof cpus, &cpus) == -1) {
            const std::string comm = read_file("/proc/" + std::to_string(pid) + "/task/" + entry->d_name + "/comm");
            progress("  thread %d (%s) of the server could not be pinned to CPU %d: %s", *tid,
                     comm.substr(0, comm.find('\n')).c_str(), cpu, std::strerror(errno));
        }
    }
    ::closedir(tasks);
}

int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Waits up to `timeout` for the child `pid` to end; its status, or nullopt.
std::optional<int> wait_child(pid_t pid, std::chrono::milliseconds timeout) {
    const unique_fd pidfd(open_pidfd(pid));
    if (pidfd) {
        wait_readable(pidfd.get(), Clock::now() + timeout);
    }
    int status = 0;
    if (::waitpid(pid, &status, pidfd ? WNOHANG : 0) == pid) {
        return status;
    }
    return std::nullopt;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) {
        return "exit " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        return std::string("killed by SIG") + (name != nullptr ? name : "?");
    }
    return "status " + std::to_string(status);
}

}  // namespace

std::optional<RunningServer> RunningServer::start(const ServerSpec& spec, int cpu, std::string& error) {
    std::vector<std::string> argv = spec.argv;
    std::uint16_t port = 0;
    if (spec.external()) {
        port = free_port();
        std::string command = spec.command;
        for (std::size_t at; (at = command.find("{port}")) != std::string::npos;) {
            command.replace(at, 6, std::to_string(port));
        }
        argv = {"/bin/sh", "-c", "exec " + command};
    }
    int out[2];
    if (::pipe2(out, O_CLOEXEC) == -1) {
        fail("pipe2", errno);
    }
    unique_fd out_read(out[0]), out_write(out[1]);
    const int err = static_cast<int>(::memfd_create("server-stderr", MFD_CLOEXEC));
    if (err == -1) {
        fail("memfd_create", errno);
    }
    std::vector<char*> args = exec_arguments(argv);
    const pid_t pid = ::fork();
    if (pid == -1) {
        fail("fork", errno);
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        if (cpu >= 0) {
            cpu_set_t cpus;
            CPU_ZERO(&cpus);
            CPU_SET(cpu, &cpus);
            ::sched_setaffinity(0, sizeof cpus, &cpus);
        }
        const int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, 0);
        ::dup2(spec.external() ? null : out_write.get(), 1);
        ::dup2(err, 2);
        ::signal(SIGPIPE, SIG_DFL);
        if (spec.external()) {
            ::setenv("LD_PRELOAD", LOOPBACK_ONLY, 1);  // a wildcard bind becomes 127.0.0.1
            // A server built with AddressSanitizer (the tests' faulty_echo
            // under the asan preset) refuses to start when a library is
            // loaded before ASan's runtime. This one wraps bind() only.
            const char* asan = ::getenv("ASAN_OPTIONS");
            const std::string options = (asan != nullptr && *asan != '\0' ? std::string(asan) + ":" : std::string()) +
                                        "verify_asan_link_order=0";
            ::setenv("ASAN_OPTIONS", options.c_str(), 1);
        }
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    started(-pid);
    out_write.reset();
    RunningServer server;
    server.pid_ = pid;
    server.cpu_ = cpu;
    server.stderr_fd_ = err;
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    const auto said = [&server] {
        std::string text = read_all(server.stderr_fd_);
        return text.empty() ? std::string() : ": " + text.substr(0, text.find('\n'));
    };
    if (!spec.external()) {
        // The ready line: "listening on 127.0.0.1:PORT".
        std::string line;
        char c;
        while (line.find('\n') == std::string::npos && wait_readable(out_read.get(), deadline) &&
               ::read(out_read.get(), &c, 1) == 1) {
            line += c;
        }
        const std::string prefix = "listening on 127.0.0.1:";
        if (line.rfind(prefix, 0) != 0) {
            error = spec.name + " printed no ready line within 10 s" + said();
            return std::nullopt;
        }
        port = static_cast<std::uint16_t>(std::atoi(line.c_str() + prefix.size()));
    } else {
        // Connect until it answers, or it ends, or 10 s pass.
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (;;) {
            const unique_fd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
                break;
            }
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                server.stopped_ = true;
                reaped(-pid);
                error = spec.name + " ended (" + describe_status(status) + ") before accepting" + said();
                return std::nullopt;
            }
            if (Clock::now() > deadline) {
                error = spec.name + " did not accept on 127.0.0.1:" + std::to_string(port) + " within 10 s" + said();
                return std::nullopt;
            }
            ::poll(nullptr, 0, 10);  // next attempt in 10 ms, until the deadline
        }
    }
    server.port_ = port;
    if (cpu >= 0 && !spec.external()) {
        pin_threads(pid, cpu);
    }
    return server;
}

RunningServer::RunningServer(RunningServer&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      cpu_(other.cpu_),
      port_(other.port_),
      stderr_fd_(std::exchange(other.stderr_fd_, -1)),
      stopped_(other.stopped_) {}

RunningServer::~RunningServer() {
    if (pid_ > 0 && !stopped_) {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        reaped(-pid_);
    }
    if (stderr_fd_ >= 0) {
        ::close(stderr_fd_);
    }
}

std::vector<pid_t> RunningServer::processes() const {
    std::vector<pid_t> found;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) {
        fail("opendir /proc", errno);
    }
    while (const dirent* entry = ::readdir(proc)) {
        const auto pid = number(entry->d_name);
        if (!pid) {
            continue;
        }
        const std::string stat = read_file("/proc/" + std::string(entry->d_name) + "/stat");
        const std::size_t close = stat.rfind(')');
        if (close == std::string::npos) {
            continue;  // it ended while we looked
        }
        // After "pid (comm)": state ppid pgrp ...
        std::istringstream fields(stat.substr(close + 1));
        std::string state;
        long ppid = 0, pgrp = 0;
        fields >> state >> ppid >> pgrp;
        if (pgrp == pid_ && state != "Z") {
            found.push_back(*pid);
        }
    }
    ::closedir(proc);
    return found;
}

double process_cpu_ns(pid_t pid) {
    // The process's CPU-time clock: every thread, also those that ended.
    clockid_t clock{};
    timespec used{};
    if (::clock_getcpuclockid(pid, &clock) == 0 && ::clock_gettime(clock, &used) == 0) {
        return static_cast<double>(used.tv_sec) * 1e9 + static_cast<double>(used.tv_nsec);
    }
    return 0;
}

TreeStats RunningServer::stats() const {
    TreeStats stats;
    for (const pid_t pid : processes()) {
        const std::string base = "/proc/" + std::to_string(pid);
        ++stats.processes;
        if (DIR* tasks = ::opendir((base + "/task").c_str())) {
            while (const dirent* entry = ::readdir(tasks)) {
                stats.threads += number(entry->d_name) ? 1 : 0;
            }
            ::closedir(tasks);
        }
        stats.cpu_ns += process_cpu_ns(pid);
        const std::string rollup = read_file(base + "/smaps_rollup");
        const std::size_t at = rollup.find("\nPss:");
        if (at != std::string::npos) {
            stats.pss_kib += std::strtod(rollup.c_str() + at + 5, nullptr);
        }
    }
    return stats;
}

std::optional<std::vector<std::pair<std::string, std::uint64_t>>> RunningServer::count_syscalls(
    SyscallCounter counter, const std::function<bool()>& workload, std::string& error) const {
    switch (counter) {
        case SyscallCounter::perf: return count_with_perf(workload, error);
        case SyscallCounter::strace: return count_with_strace(workload, error);
        case SyscallCounter::none: break;
    }
    error = "no way to count system calls";
    return std::nullopt;
}

namespace {

// Runs `perf SUBCOMMAND -D -1 --control ... ARGUMENTS` off the server's
// CPU `cpu`, turns its events on, runs `workload`, turns them off and ends
// perf (SIGINT: it writes its output). `directory` holds the control FIFOs.
// False, with `error` set, if perf did not answer or the workload failed.
bool perf_during(const std::string& subcommand, const std::vector<std::string>& arguments, int cpu,
                 const std::string& directory, const std::function<bool()>& workload, std::string& error) {
    const std::string control = directory + "/control", ack = directory + "/ack";
    if (::mkfifo(control.c_str(), 0600) == -1 || ::mkfifo(ack.c_str(), 0600) == -1) {
        fail("mkfifo " + control, errno);
    }
    // O_RDWR: opening a FIFO does not wait for the other end to open it.
    const unique_fd control_fd(::open(control.c_str(), O_RDWR | O_CLOEXEC));
    const unique_fd ack_fd(::open(ack.c_str(), O_RDWR | O_CLOEXEC));
    std::vector<std::string> argv = {"perf", subcommand, "-D", "-1", "--control", "fifo:" + control + "," + ack};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    std::vector<char*> args = exec_arguments(argv);
    const pid_t perf = ::fork();
    if (perf == -1) {
        fail("fork", errno);
    }
    if (perf == 0) {
        // perf itself stays off the CPU it watches.
        cpu_set_t cpus;
        ::sched_getaffinity(0, sizeof cpus, &cpus);
        CPU_CLR(cpu, &cpus);
        ::sched_setaffinity(0, sizeof cpus, &cpus);
        const int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, 1);
        ::dup2(null, 2);
        ::execvp("perf", args.data());
        ::_exit(127);
    }
    started(perf);
    // "enable" and "disable" go through the control FIFO; perf answers
    // "ack" on the other once the counters really are on (or off).
    const auto order = [&](const char* command) {
        const std::string line = std::string(command) + "\n";
        char answer[16] = {};
        return ::write(control_fd.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
               wait_readable(ack_fd.get(), Clock::now() + std::chrono::seconds(30)) &&
               ::read(ack_fd.get(), answer, sizeof answer - 1) > 0 && std::string_view(answer).rfind("ack", 0) == 0;
    };
    const auto end_perf = [&] {
        ::kill(perf, SIGINT);  // writes its output and ends
        ::waitpid(perf, nullptr, 0);
        reaped(perf);
        ::unlink(control.c_str());
        ::unlink(ack.c_str());
    };
    if (!order("enable")) {
        ::kill(perf, SIGKILL);
        end_perf();
        error = "perf " + subcommand + " did not start within 30 s";
        return false;
    }
    const bool worked = workload();
    const bool stopped = order("disable");
    end_perf();
    if (!worked || !stopped) {
        error = worked ? "perf " + subcommand + " did not stop" : "the workload failed while perf ran";
        return false;
    }
    return true;
}

// A temporary directory, removed with what is in it.
class TemporaryDirectory {
public:
    explicit TemporaryDirectory(const char* prefix) : path_(std::string("/tmp/") + prefix + "-XXXXXX") {
        if (::mkdtemp(path_.data()) == nullptr) {
            fail("mkdtemp " + path_, errno);
        }
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
    ~TemporaryDirectory() {
        if (DIR* directory = ::opendir(path_.c_str())) {
            while (const dirent* entry = ::readdir(directory)) {
                if (entry->d_name[0] != '.') {
                    ::unlink((path_ + "/" + entry->d_name).c_str());
                }
            }
            ::closedir(directory);
        }
        ::rmdir(path_.c_str());
    }
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    std::string path_;
};

// The standard output of a shell command (perf report).
std::string output_of(const std::string& command) {
    std::string text;
    if (FILE* pipe = ::popen(command.c_str(), "r")) {
        char buffer[4096];
        std::size_t n;
        while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
            text.append(buffer, n);
        }
        ::pclose(pipe);
    }
    return text;
}

}  // namespace

std::optional<std::vector<std::pair<std::string, std::uint64_t>>> RunningServer::count_with_perf(
    const std::function<bool()>& workload, std::string& error) const {
    const TemporaryDirectory directory("bench-perf");
    const std::string output = directory.path() + "/counts";
    // Every system call (raw_syscalls), and by name the ones the servers
    // make: naming all 350 would take perf 13 s to set up.
    std::string events = "raw_syscalls:sys_enter";
    for (const char* name : {"recvfrom", "sendto", "read", "write", "epoll_wait", "epoll_ctl", "ppoll", "pselect6",
                             "rt_sigtimedwait", "rt_sigreturn", "io_submit", "io_pgetevents", "io_uring_enter",
                             "futex", "accept4", "clone3", "rt_sigprocmask"}) {
        events += std::string(",syscalls:sys_enter_") + name;
    }
    if (!perf_during("stat", {"-a", "-C", std::to_string(cpu_), "-e", events, "-x", ",", "-o", output}, cpu_,
                     directory.path(), workload, error)) {
        return std::nullopt;
    }
    const std::string table = read_file(output);
    // -x ,: "COUNT,UNIT,EVENT,..."; EVENT is syscalls:sys_enter_NAME or
    // raw_syscalls:sys_enter (all of them).
    std::vector<std::pair<std::string, std::uint64_t>> counts;
    std::uint64_t total = 0, named = 0;
    std::istringstream lines(table);
    const std::string prefix = "syscalls:sys_enter_";
    for (std::string line; std::getline(lines, line);) {
        const std::size_t first = line.find(','), second = line.find(',', first + 1);
        if (first == std::string::npos || second == std::string::npos) {
            continue;
        }
        const std::uint64_t count = std::strtoull(line.c_str(), nullptr, 10);
        const std::size_t end = line.find(',', second + 1);
        if (line.compare(second + 1, end - second - 1, "raw_syscalls:sys_enter") == 0) {
            total = count;
        } else if (count > 0 && line.compare(second + 1, prefix.size(), prefix) == 0) {
            counts.emplace_back(line.substr(second + 1 + prefix.size(), end - second - 1 - prefix.size()), count);
            named += count;
        }
    }
    if (total > named) {
        counts.emplace_back("others", total - named);
    }
    std::sort(counts.begin(), counts.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (counts.empty()) {
        error = "perf stat counted no system calls";
        return std::nullopt;
    }
    return counts;
}

std::optional<std::vector<std::pair<std::string, std::uint64_t>>> RunningServer::count_with_strace(
    const std::function<bool()>& workload, std::string& error) const {
    char path[] = "/tmp/bench-strace-XXXXXX";
    const unique_fd file(::mkstemp(path));
    if (!file) {
        fail("mkstemp", errno);
    }
    const std::vector<pid_t> traced = processes();
    std::vector<std::string> argv = {"strace", "-f", "-c", "-o", path};
    for (const pid_t pid : traced) {
        argv.push_back("-p");
        argv.push_back(std::to_string(pid));
    }
    std::vector<char*> args = exec_arguments(argv);
    // strace's messages go to a memfd, never a pipe: with thousands of
    // processes its "attached" and "detached" lines would fill a pipe and
    // stop strace, and with it the server.
    const unique_fd said_fd(static_cast<int>(::memfd_create("strace-stderr", MFD_CLOEXEC)));
    if (!said_fd) {
        fail("memfd_create", errno);
    }
    const pid_t strace = ::fork();
    if (strace == -1) {
        fail("fork", errno);
    }
    if (strace == 0) {
        ::dup2(said_fd.get(), 2);
        ::execvp("strace", args.data());
        ::_exit(127);
    }
    started(strace);
    // strace says "Process N attached" (", with K threads") once per -p.
    const auto attached = [&said_fd] {
        const std::string said = read_all(said_fd.get());
        std::size_t count = 0;
        for (std::size_t at = 0; (at = said.find("attached", at)) != std::string::npos; ++at) {
            ++count;
        }
        return count;
    };
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (attached() < traced.size() && Clock::now() < deadline && ::waitpid(strace, nullptr, WNOHANG) == 0) {
        ::poll(nullptr, 0, 5);  // look again in 5 ms, until the deadline
    }
    if (attached() < traced.size()) {
        ::kill(strace, SIGKILL);
        ::waitpid(strace, nullptr, 0);
        reaped(strace);
        ::unlink(path);
        error = "strace did not attach to " + std::to_string(traced.size()) + " processes: " + read_all(said_fd.get());
        return std::nullopt;
    }
    const bool worked = workload();
    ::kill(strace, SIGINT);  // detaches and writes the summary
    ::waitpid(strace, nullptr, 0);
    reaped(strace);
    const std::string table = read_file(path);
    ::unlink(path);
    if (!worked) {
        error = "the workload failed under strace";
        return std::nullopt;
    }
    // "% time     seconds  usecs/call     calls    errors syscall": calls is
    // the fourth column, the name the last; errors may be blank.
    std::vector<std::pair<std::string, std::uint64_t>> counts;
    std::istringstream lines(table);
    for (std::string line; std::getline(lines, line);) {
        std::istringstream fields(line);
        std::vector<std::string> words;
        for (std::string word; fields >> word;) {
            words.push_back(word);
        }
        if (words.size() < 5 || words.back() == "total" || !std::isdigit(static_cast<unsigned char>(words[0][0]))) {
            continue;
        }
        counts.emplace_back(words.back(), std::strtoull(words[3].c_str(), nullptr, 10));
    }
    std::sort(counts.begin(), counts.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (counts.empty()) {
        error = "strace counted no system calls";
        return std::nullopt;
    }
    return counts;
}

std::optional<Profile> RunningServer::profile(const std::function<bool()>& workload, std::string& error,
                                              int cpu) const {
    if (cpu_ < 0 || !installed("perf")) {
        error = cpu_ < 0 ? "the server is not pinned to a CPU of its own" : "perf is not installed";
        return std::nullopt;
    }
    const int recorded = cpu < 0 ? cpu_ : cpu;
    const TemporaryDirectory directory("bench-profile");
    const std::string data = directory.path() + "/perf.data";
    if (!perf_during("record", {"-e", "cpu-clock", "-C", std::to_string(recorded), "-q", "-o", data}, cpu_,
                     directory.path(), workload, error)) {
        return std::nullopt;
    }
    // "    63.45%          3042  uring_server" (-n: the samples too), or
    // "    12.10%           574  [k] tcp_sendmsg_locked".
    const auto report = [&](const char* sort) {
        std::vector<std::tuple<std::string, double, double>> rows;
        std::istringstream lines(output_of("perf report -i '" + data + "' --stdio -q -n --sort " + sort +
                                           " --percent-limit 0.5 2>/dev/null"));
        for (std::string line; std::getline(lines, line);) {
            std::istringstream fields(line);
            std::string percent, rest;
            double samples = 0;
            if (!(fields >> percent >> samples) || percent.empty() || percent.back() != '%') {
                continue;
            }
            std::getline(fields >> std::ws, rest);
            rows.emplace_back(rest, std::strtod(percent.c_str(), nullptr), samples);
        }
        return rows;
    };
    Profile profile;
    // "uring_server  [kernel.kallsyms]": the process name, then where the
    // sample was: the kernel, or the program or a library (user space).
    for (const auto& [where, percent, samples] : report("comm,dso")) {
        std::istringstream words(where);
        std::string command, dso, word;
        words >> command;
        while (words >> word) {
            dso = word;
        }
        // "iou-sqp-12345": the SQ thread, named after the process.
        const std::size_t dash = command.rfind('-');
        if (dash != std::string::npos && dash + 1 < command.size() &&
            std::all_of(command.begin() + static_cast<std::ptrdiff_t>(dash) + 1, command.end(),
                        [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
            command.resize(dash);
        }
        auto share = std::find_if(profile.commands.begin(), profile.commands.end(),
                                  [&](const Profile::Share& s) { return s.command == command; });
        if (share == profile.commands.end()) {
            share = profile.commands.insert(profile.commands.end(), {command, 0, 0});
        }
        (dso.rfind("[kernel", 0) == 0 ? share->kernel : share->user) += percent;
        if (profile.samples == 0 && percent > 0) {
            profile.samples = samples * 100 / percent;
        }
    }
    std::sort(profile.commands.begin(), profile.commands.end(), [](const auto& a, const auto& b) {
        return a.kernel + a.user > b.kernel + b.user;
    });
    for (const auto& [symbol, percent, samples] : report("sym")) {
        if (profile.symbols.size() < 12) {
            profile.symbols.emplace_back(symbol, percent);
        }
    }
    if (profile.commands.empty()) {
        error = "perf record took no sample";
        return std::nullopt;
    }
    return profile;
}

std::optional<std::map<std::string, std::uint64_t>> RunningServer::status(std::string& error) const {
    struct stat before{};
    ::fstat(stderr_fd_, &before);
    ::kill(pid_, SIGUSR1);
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    for (;;) {
        const std::string said = read_all(stderr_fd_).substr(static_cast<std::size_t>(before.st_size));
        const std::size_t at = said.find("status: ");
        const std::size_t end = at == std::string::npos ? at : said.find('\n', at);
        if (end != std::string::npos) {
            // "uring_server: status: 3 connections, 1536 bytes echoed, ..."
            std::map<std::string, std::uint64_t> counts;
            std::istringstream items(said.substr(at + 8, end - at - 8));
            for (std::string item; std::getline(items >> std::ws, item, ',');) {
                char* name = nullptr;
                const std::uint64_t value = std::strtoull(item.c_str(), &name, 10);
                if (name != item.c_str() && *name == ' ') {
                    counts[name + 1] = value;
                }
            }
            return counts;
        }
        if (Clock::now() > deadline) {
            error = "no status line within 5 s of SIGUSR1";
            return std::nullopt;
        }
        ::poll(nullptr, 0, 2);  // look again in 2 ms, until the deadline
    }
}

std::string RunningServer::stop() {
    if (stopped_) {
        return "already ended";
    }
    stopped_ = true;
    ::kill(pid_, SIGTERM);
    auto status = wait_child(pid_, std::chrono::seconds(20));
    std::string how;
    if (status) {
        how = describe_status(*status);
    } else {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        how = "killed by SIGKILL after 20 s";
    }
    ::kill(-pid_, SIGKILL);  // what is left of its group (an external server's children)
    reaped(-pid_);
    return how;
}

}  // namespace bench
