#include "harness/strace.hpp"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "catch.hpp"

namespace harness {

void skip_unless_strace_available() {
    if (::access("/usr/bin/strace", X_OK) == 0 || std::system("command -v strace >/dev/null 2>&1") == 0) {
        return;
    }
    skip_test("strace is not installed (apt-get install strace)");
}

TraceFile::TraceFile(std::string_view name) {
    std::string path_template = "/tmp/iomodels-trace-" + std::string(name) + "-XXXXXX";
    const int fd = ::mkstemp(path_template.data());
    REQUIRE(fd != -1);
    ::close(fd);
    path_ = path_template;
}

TraceFile::~TraceFile() { ::unlink(path_.c_str()); }

std::vector<std::string> strace_command(const std::string& output, std::string_view calls) {
    // LeakSanitizer cannot run under ptrace: in the asan build, a traced
    // program would fail at exit for that reason alone.
    return {"strace", "-f", "-qq", "-o", output, "-E", "ASAN_OPTIONS=detect_leaks=0", "-e", "trace=" + std::string(calls)};
}

pid_t traced_pid(pid_t strace_pid) {
    pid_t found = -1;
    // strace forks the program once; until then there is no child.
    REQUIRE(eventually([&] {
        std::ifstream children("/proc/" + std::to_string(strace_pid) + "/task/" + std::to_string(strace_pid) +
                               "/children");
        return static_cast<bool>(children >> found);
    }));
    return found;
}

std::string stop_traced_server(Server& server) {
    ::kill(traced_pid(server.process.pid()), SIGTERM);
    // strace exits with the traced program's exit status once it has ended.
    const auto status = server.process.wait(10s);
    const std::string err = server.process.stderr_text();
    INFO("stderr:\n" << err);
    REQUIRE(status.has_value());
    INFO("status: " << status->describe());
    REQUIRE((status->exited && status->code == 0));
    const auto at = err.find(": summary: ");
    REQUIRE(at != std::string::npos);
    const auto begin = err.rfind('\n', at);
    const auto end = err.find('\n', at);
    return err.substr(begin == std::string::npos ? 0 : begin + 1, end - (begin == std::string::npos ? 0 : begin + 1));
}

long Syscall::value() const {
    try {
        return std::stol(result);
    } catch (const std::exception&) {
        return -1;  // "?" (the call never returned) counts as a failure
    }
}

std::string Syscall::error() const {
    std::istringstream words(result);
    std::string number;
    std::string name;
    words >> number >> name;
    return number == "-1" || number == "?" ? name : "";
}

Trace Trace::read(const std::string& path) {
    Trace trace;
    std::ifstream in(path);
    std::ostringstream all;
    all << in.rdbuf();
    trace.text = all.str();

    // With -f every line starts with the pid. A call that blocks while
    // another process runs is split in two:
    //   123 accept4(3, <unfinished ...>
    //   123 <... accept4 resumed>{sa_family=AF_INET, ...}, [16], SOCK_CLOEXEC) = 5
    std::map<pid_t, std::string> unfinished;
    std::istringstream lines(trace.text);
    for (std::string line; std::getline(lines, line);) {
        std::size_t space = line.find(' ');
        if (space == std::string::npos) {
            continue;
        }
        const pid_t pid = std::atoi(line.c_str());
        std::string rest = line.substr(line.find_first_not_of(' ', space));
        if (rest.rfind("---", 0) == 0) {
            trace.signals.push_back(std::to_string(pid) + " " + rest);
            continue;
        }
        if (rest.rfind("+++", 0) == 0) {
            continue;
        }
        const std::string unfinished_mark = " <unfinished ...>";
        if (rest.size() > unfinished_mark.size() &&
            rest.compare(rest.size() - unfinished_mark.size(), unfinished_mark.size(), unfinished_mark) == 0) {
            unfinished[pid] = rest.substr(0, rest.size() - unfinished_mark.size());
            continue;
        }
        if (rest.rfind("<... ", 0) == 0) {
            const auto resumed = rest.find(" resumed>");
            if (resumed == std::string::npos) {
                continue;
            }
            rest = unfinished[pid] + rest.substr(resumed + 9);
            unfinished.erase(pid);
        }
        // "name(args)   = result": strace pads before " = " to line results up.
        const auto open = rest.find('(');
        const auto equals = rest.rfind(" = ");
        const auto close = equals == std::string::npos ? std::string::npos : rest.find_last_not_of(' ', equals);
        if (open == std::string::npos || close == std::string::npos || close <= open || rest[close] != ')') {
            continue;
        }
        Syscall call;
        call.pid = pid;
        call.name = rest.substr(0, open);
        call.args = rest.substr(open + 1, close - open - 1);
        call.result = rest.substr(equals + 3);
        trace.calls.push_back(std::move(call));
    }
    return trace;
}

std::vector<Syscall> Trace::calls_named(std::string_view name) const {
    std::vector<Syscall> found;
    for (const Syscall& call : calls) {
        if (call.name == name) {
            found.push_back(call);
        }
    }
    return found;
}

std::vector<Syscall> Trace::calls_by(pid_t pid) const {
    std::vector<Syscall> found;
    for (const Syscall& call : calls) {
        if (call.pid == pid) {
            found.push_back(call);
        }
    }
    return found;
}

void check_no_file_data_calls_after(const Trace& trace, std::string_view first) {
    bool started = false;
    for (const Syscall& call : trace.calls) {
        started = started || call.name == first;
        if (started) {
            INFO(call.name << "(" << call.args << ")");
            CHECK((call.name != "pread64" && call.name != "pwrite64" && call.name != "read"));
            CHECK((call.name != "write" || call.args.find("1, ") == 0));
        }
    }
}

}  // namespace harness
