// Running a program under strace and asserting on the system calls it made.
//
//   const auto trace_file = TraceFile("fork-server");
//   Server server = start_server(path, {}, {}, strace_command(trace_file.path(), "accept4,clone,clone3"));
//   ... drive it ...
//   stop_traced_server(server);
//   const Trace trace = Trace::read(trace_file.path());
//   CHECK(trace.calls_named("clone").size() == 3);
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "harness/harness.hpp"

namespace harness {

// Without strace, prints "SKIPPED: ..." and exits with 77, which ctest
// reports as skipped (SKIP_RETURN_CODE). Call it first in a strace test.
void skip_unless_strace_available();

// A temporary file for strace's output, removed by the destructor.
class TraceFile {
public:
    explicit TraceFile(std::string_view name);
    ~TraceFile();
    TraceFile(const TraceFile&) = delete;
    TraceFile& operator=(const TraceFile&) = delete;
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    std::string path_;
};

// {"strace", "-f", "-qq", "-o", output, ..., "-e", "trace=" + calls}: the
// wrapper for start_server() or a Process's argv.
std::vector<std::string> strace_command(const std::string& output, std::string_view calls);

// The program strace started (strace's only child).
pid_t traced_pid(pid_t strace_pid);

// For a server started under strace: SIGTERM to the server itself (not to
// strace), then the same checks as stop_server(); returns the summary line.
std::string stop_traced_server(Server& server);

// One system call from strace's output, with an unfinished call and its
// resumption joined into one.
struct Syscall {
    pid_t pid = 0;
    std::string name;    // "accept4"
    std::string args;    // what stands between the parentheses
    std::string result;  // "5", "-1 EAGAIN (Resource temporarily unavailable)", "?"
    [[nodiscard]] long value() const;       // the number before any errno name; -1 on error
    [[nodiscard]] std::string error() const;  // "EAGAIN", or "" on success
};

struct Trace {
    std::vector<Syscall> calls;
    std::vector<std::string> signals;  // "--- SIGCHLD {...} ---" lines, with their pid first
    std::string text;                  // the whole file, for failure messages

    static Trace read(const std::string& path);
    [[nodiscard]] std::vector<Syscall> calls_named(std::string_view name) const;
    [[nodiscard]] std::vector<Syscall> calls_by(pid_t pid) const;
};

// For the file-copying programs: from the first call named `first` on
// (before it, the dynamic loader and the sanitizers read files of their
// own), no pread64, pwrite64 or read, and write only to stdout (the summary
// line): the kernel moved the file data. CHECKs, naming the call.
void check_no_file_data_calls_after(const Trace& trace, std::string_view first);

}  // namespace harness
