// The test harness every chapter's tests use: start a real program, read its
// ready line, drive it with real clients, look at it through /proc, stop it
// and check what it said.
//
// Nothing here sleeps and hopes: every wait has a deadline and fails with a
// message that says what did not happen.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"

namespace harness {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using iomodels::unique_fd;

// How a program ended.
struct ExitStatus {
    bool exited = false;  // true: exit code in `code`; false: killed by `signal`
    int code = -1;
    int signal = 0;
    [[nodiscard]] std::string describe() const;  // "exit 0", "killed by SIGSEGV"
};

struct StartOptions {
    std::string stdin_data;           // run() only: written to the program's stdin, then closed
    std::vector<std::string> env;     // extra "NAME=value" entries, in place of the test's own of that name
    int rlimit_nofile = 0;            // >0: the program's RLIMIT_NOFILE (soft and hard)
    int rlimit_sigpending = 0;        // >0: its RLIMIT_SIGPENDING: how many signals can be queued
    long long rlimit_fsize = 0;       // >0: its RLIMIT_FSIZE: the largest file it may write
    std::vector<int> blocked_signals;  // its signal mask at exec (a mask is inherited; by default empty)
};

struct Completed;

// A program started by a test. Its stdout is a pipe we read lines from (the
// ready line), its stderr goes to a temporary file (log lines and the
// summary), so it never blocks on a pipe nobody reads and ctest never waits
// for an inherited descriptor. SIGPIPE and the signal mask are at their
// defaults in the child, so a server that forgets MSG_NOSIGNAL dies visibly.
// The destructor kills (SIGKILL) and reaps it if it is still running.
class Process {
public:
    static Process start(const std::vector<std::string>& argv, const StartOptions& options = {});

    Process(Process&& other) noexcept;
    Process& operator=(Process&&) = delete;
    Process(const Process&) = delete;
    ~Process();

    [[nodiscard]] pid_t pid() const { return pid_; }

    // The next line of stdout (without '\n'), or nullopt at EOF or deadline.
    std::optional<std::string> read_stdout_line(std::chrono::milliseconds timeout);
    // Everything on stdout until EOF (or the deadline).
    std::string read_stdout_all(std::chrono::milliseconds timeout);

    // Waits for the program to end by itself.
    std::optional<ExitStatus> wait(std::chrono::milliseconds timeout);
    // Sends `signal`, then waits. nullopt: still running at the deadline.
    std::optional<ExitStatus> stop(int signal = SIGTERM, std::chrono::milliseconds timeout = 10s);
    // Sends `signal` and does not wait.
    void signal(int signal) const;

    [[nodiscard]] bool running() const { return !status_.has_value(); }
    [[nodiscard]] std::string stderr_text() const;

private:
    friend Completed run(const std::vector<std::string>&, const StartOptions&, std::chrono::milliseconds);
    Process() = default;
    pid_t pid_ = -1;
    unique_fd stdin_;  // write end, only while stdin_data is being written
    unique_fd stdout_;
    std::string stdout_buffer_;
    std::string stderr_path_;
    std::optional<ExitStatus> status_;
};

// Runs a program to completion (argument errors, clients, demos), feeding
// it stdin_data and collecting stdout.
struct Completed {
    ExitStatus status;
    std::string out;
    std::string err;
};
Completed run(const std::vector<std::string>& argv, const StartOptions& options = {},
              std::chrono::milliseconds timeout = 20s);

// A server started on port 0 whose ready line has been read.
struct Server {
    Process process;
    std::uint16_t port;
    std::string ready_line;  // "listening on 127.0.0.1:PORT" or "listening on udp 127.0.0.1:PORT"
};

// Starts `path 0 args...`, reads "listening on [udp ]127.0.0.1:PORT" within 10 s
// (REQUIREs it), and returns the running server. `wrapper` goes in front of
// the command line (e.g. {"strace", "-f", "-o", file}).
Server start_server(const std::string& path, const std::vector<std::string>& args = {},
                    const StartOptions& options = {}, const std::vector<std::string>& wrapper = {});

// Starts `argv` as it is, for a server that need not keep CONTRACT.md (a
// student's, in any language; the grader's core level). Every "{port}" in it
// becomes a free port, and the server is connected to until it accepts
// (REQUIREd within 10 s; the probe connection is closed at once). Without
// "{port}", its ready line is read as start_server() reads it.
Server start_command(std::vector<std::string> argv, const StartOptions& options = {});

// The same for a UDP echo server: "{port}" becomes a free UDP port, and a
// probe datagram is sent every 100 ms until one comes back (REQUIREd within
// 10 s); without "{port}", its ready line is read.
Server start_udp_command(std::vector<std::string> argv, const StartOptions& options = {});

// SIGTERM, then REQUIREs exit 0 within the deadline and a summary line on
// stderr; returns that summary line.
std::string stop_server(Server& server);

// "server: summary: 3 connections, 12 bytes echoed" -> 12 for "bytes echoed".
std::optional<std::uint64_t> summary_count(std::string_view summary, std::string_view what);

// ---- clients -------------------------------------------------------------

// A blocking TCP connection to 127.0.0.1:port (REQUIREs success), with
// SO_RCVBUF set to `receive_buffer` bytes before connect if it is not 0:
// a small one makes the server's sends find little room.
unique_fd connect_to(std::uint16_t port, int receive_buffer = 0);

// Deterministic pseudo-random bytes (all 256 values, NUL included).
std::string random_bytes(std::size_t size, std::uint32_t seed);

// Chunk sizes for sending: every chunk between 1 and max_chunk bytes.
std::vector<std::size_t> random_chunks(std::size_t total, std::size_t max_chunk, std::uint32_t seed);

struct Exchange {
    std::string received;  // every byte received before EOF, the deadline or an error
    bool eof = false;      // the server closed the connection
    bool timed_out = false;
    int error = 0;         // errno of a failed send/recv
};

// Sends `payload` on `fd` in chunks of the given sizes (one send() each,
// interleaved with receiving, so neither side's buffers can fill up and
// deadlock), then, if `half_close`, shutdown(SHUT_WR). Receives until
// payload.size() bytes have arrived (or EOF when half_close), the deadline,
// or an error.
Exchange exchange(int fd, std::string_view payload, const std::vector<std::size_t>& chunks, bool half_close,
                  std::chrono::milliseconds timeout = 20s);

// Connect, send `payload` in one go, half-close, read to EOF: the bytes back.
Exchange echo_once(std::uint16_t port, std::string_view payload, std::chrono::milliseconds timeout = 20s);

// Many clients at once, one thread each: client i connects, sends
// payloads[i] in random chunks of at most max_chunk bytes, half-closes and
// reads to EOF. Returns each client's Exchange (error = errno of a failed
// connect). Check the results in the test's own thread: Catch2 assertions
// are not thread-safe.
std::vector<Exchange> echo_concurrently(std::uint16_t port, const std::vector<std::string>& payloads,
                                        std::size_t max_chunk, std::chrono::milliseconds timeout = 60s);

// ---- UDP clients ---------------------------------------------------------

// A UDP socket connect()ed to 127.0.0.1:port: send() needs no address and
// recv() takes only that server's datagrams.
unique_fd udp_socket_to(std::uint16_t port);

// The next datagram on `fd` within `timeout` (nullopt: none came).
std::optional<std::string> receive_datagram(int fd, std::chrono::milliseconds timeout);

// Sends one datagram and waits for one back (nullopt: lost or refused).
std::optional<std::string> udp_echo(int fd, std::string_view datagram, std::chrono::milliseconds timeout = 2s);

// A peer that does not read its echo: sends `block` again and again on
// `fd` (non-blocking meanwhile) without reading, until the server stops
// taking bytes (no progress for `no_progress`: its output buffer is full and
// it no longer reads from us) or `limit` bytes are sent. The stream sent is
// `block` repeated, cut at the returned size.
std::size_t send_without_reading(int fd, std::string_view block, std::chrono::milliseconds no_progress = 500ms,
                                 std::size_t limit = 64u << 20);

// `block` repeated up to `size` bytes: what send_without_reading sent.
std::string repeated(std::string_view block, std::size_t size);

// Receives until `size` bytes have arrived, end of file, an error, nothing
// for `quiet` (the server has stopped sending), or the deadline.
std::string receive_up_to(int fd, std::size_t size, std::chrono::milliseconds quiet = 1s,
                          std::chrono::milliseconds deadline = 20s);

// Closes `fd` with SO_LINGER 0, so the peer gets a RST instead of a FIN.
void reset_connection(unique_fd& fd);

// ---- files -----------------------------------------------------------------

// A fresh directory under /tmp for a test's files, removed with everything
// in it by the destructor.
class TemporaryDirectory {
public:
    TemporaryDirectory();
    ~TemporaryDirectory();
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
    [[nodiscard]] std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    std::string path_;
};

// Writes `bytes` to a new file at `path` (REQUIREs success).
void write_file(const std::string& path, std::string_view bytes);
// The whole content of the file at `path`; nullopt if it cannot be opened.
std::optional<std::string> file_content(const std::string& path);

// ---- the program seen from /proc -----------------------------------------

struct Resources {
    int descriptors = 0;  // entries of /proc/PID/fd
    int threads = 0;      // Threads: in /proc/PID/status
    int children = 0;     // live child processes
    int zombies = 0;      // children that exited and were not reaped
    long resident_kib = 0;  // VmRSS of the process and its live children, KiB
};
Resources resources_of(pid_t pid);

// The processes whose environment holds `entry` ("NAME=value"), inherited
// from a program a test started: what is still running of it.
std::vector<pid_t> processes_with_environment(std::string_view entry);

// True if the process sleeps in a kernel function whose name contains
// `function` (/proc/PID/wchan: "sigsuspend", "poll", "do_sigtimedwait"...):
// it has finished what it was doing and waits for the next event.
bool sleeping_in(pid_t pid, std::string_view function);

// SIGSTOP, then waits until the process is stopped (state T, or t under
// strace), so that what is sent to it meanwhile piles up unread.
void suspend_process(pid_t pid);
// SIGCONT.
void resume_process(pid_t pid);

// User plus system CPU time the process has used so far (/proc/PID/stat).
std::chrono::milliseconds cpu_time(pid_t pid);

// True if `fd` becomes readable (data, EOF or an error) within `timeout`.
bool readable_within(int fd, std::chrono::milliseconds timeout);

// Runs `action` with `stream` (stdout or stderr) redirected into a pipe and
// returns what it printed there. The pipe holds 64 KiB, far more than the
// lines an action prints, so it cannot block. No REQUIRE inside `action`:
// Catch2 would print its report into the pipe.
std::string output_of(std::FILE* stream, const std::function<void()>& action);

// Prints "SKIPPED: <why>" and exits with 77, which ctest reports as skipped
// (SKIP_RETURN_CODE): for what this machine cannot do, never for a failure.
[[noreturn]] void skip_test(std::string_view why);

// The tsan preset builds every program and test with ThreadSanitizer.
#if defined(__SANITIZE_THREAD__)
constexpr bool thread_sanitizer = true;
#else
constexpr bool thread_sanitizer = false;
#endif
// Threads the sanitizer adds to a program: ThreadSanitizer starts one
// background thread of its own with the program's first pthread_create
// (and in a forked child). Thread counts allow for it.
constexpr int sanitizer_threads = thread_sanitizer ? 1 : 0;
// glibc runs POSIX AIO requests, and calls their SIGEV_THREAD notification
// functions, in threads it creates internally, past ThreadSanitizer's
// pthread_create interceptor: the notification's malloc in such a thread
// finds no sanitizer state and crashes (upstream: llvm/llvm-project issue
// 109742). Under ThreadSanitizer, a test of a program that asks for
// SIGEV_THREAD is skipped, saying so.
void skip_if_sigev_thread_under_thread_sanitizer();

// io_uring can be switched off (sysctl kernel.io_uring_disabled, or a
// container's seccomp profile): then this skips the test, naming why, as the
// programs' own error says. Call it first in a test of an io_uring program.
void skip_unless_io_uring_available();

// Raises this process's soft RLIMIT_NOFILE to at least `wanted` (a test that
// holds thousands of connections); skips the test if the hard limit is lower.
void raise_descriptor_limit_or_skip(unsigned long wanted);

// Polls `condition` every few milliseconds until it holds or the deadline.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s);

}  // namespace harness
