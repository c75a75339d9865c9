// Every program that is not a server, given wrong arguments: what a user
// sees. CONTRACT.md, "Errors (all programs)":
//   --help                        the usage on stdout, exit 0;
//   wrong arguments               a line saying what is wrong, then the usage,
//                                 on stderr, exit 2;
//   a system call that fails      one line "PROGRAM: CALL ARGS: strerror(errno)
//   during setup                  [ERRNO_NAME]" on stderr, exit 1.
// (The servers' arguments are the conformance suite's.)
//
// Each table row is one case: a program, its arguments, and what it must
// say. The programs come from CMake (argument_programs.inc: every chapter
// program whose name does not contain "server"), so a new program is in
// the --help and unknown-option claims at once, and the last test case
// fails until it has rows of its own here.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "catch.hpp"
#include "common/net.hpp"
#include "harness/harness.hpp"

using namespace harness;

namespace {

// "09-aio-kernel/aio_read" -> the built program.
const std::map<std::string, std::string> programs = {
#include "argument_programs.inc"
};

const std::vector<std::string> clients = {
    "01-blocking/client", "02-nonblocking/client", "03-select/client", "07-rtsig-udp/client"};
const std::vector<std::string> tcp_clients = {"01-blocking/client", "02-nonblocking/client", "03-select/client"};

// Wrong arguments: exit 2, nothing on stdout; on stderr "NAME: MESSAGE",
// then the usage.
struct UsageError {
    std::string program;  // "09-aio-kernel/aio_read"
    std::vector<std::string> args;
    std::string message;  // "bad value '0' for --blocks N"
};

// A program that cannot start its work: exit 1, and stderr is exactly
// "NAME: LINE\n". LINE is the contract's "CALL ARGS: strerror [ERRNO_NAME]"
// for a failed call, or the program's own check ("PATH: not a regular file").
struct SetupFailure {
    std::string program;
    std::vector<std::string> args;
    std::string line;
    bool nothing_on_stdout = true;  // false: it goes on with its other work and reports it
    std::string not_created = {};   // a path that must still not exist afterwards
};

// "aio_read" for "09-aio-kernel/aio_read": the name in its messages.
std::string short_name(const std::string& program) { return program.substr(program.rfind('/') + 1); }

// The command line as a user would type it, for failure messages.
std::string command_line(const std::string& program, const std::vector<std::string>& args) {
    std::string text = program;
    for (const std::string& arg : args) {
        text += arg.empty() ? " ''" : " " + arg;
    }
    return text;
}

Completed run_program(const std::string& program, const std::vector<std::string>& args) {
    const auto found = programs.find(program);
    INFO("program: " << program);
    REQUIRE(found != programs.end());  // a row names a program CMake did not build
    std::vector<std::string> argv{found->second};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, {}, 10s);
}

void check(const UsageError& row) {
    const Completed result = run_program(row.program, row.args);
    const std::string name = short_name(row.program);
    INFO("$ " << command_line(row.program, row.args) << "\nstdout: " << result.out << "\nstderr: " << result.err);
    CHECK(result.status.describe() == "exit 2");
    CHECK(result.out.empty());
    const std::size_t end_of_message = result.err.find('\n');  // npos: one line, no usage
    CHECK(result.err.substr(0, end_of_message) == name + ": " + row.message);
    CHECK(result.err.substr(end_of_message + 1).starts_with("usage: " + name + " "));  // the next line
}

void check(const SetupFailure& row) {
    const Completed result = run_program(row.program, row.args);
    INFO("$ " << command_line(row.program, row.args) << "\nstdout: " << result.out << "\nstderr: " << result.err);
    CHECK(result.status.describe() == "exit 1");
    CHECK(result.err == short_name(row.program) + ": " + row.line + "\n");
    if (row.nothing_on_stdout) {
        CHECK(result.out.empty());
    }
    if (!row.not_created.empty()) {
        CHECK(::access(row.not_created.c_str(), F_OK) == -1);
    }
}

// ---- the tables -------------------------------------------------------------

// The same wrong --port and --host for every client.
std::vector<UsageError> client_errors() {
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"--port", "70000"}, "bad value '70000' for --port PORT"},      // out of range
        {{"--port", "-1"}, "bad value '-1' for --port PORT"},            // negative
        {{"--port", "eighty"}, "bad value 'eighty' for --port PORT"},    // not a number
        {{"--port=8001x"}, "bad value '8001x' for --port PORT"},         // trailing junk
        {{"--port", "0"}, "bad value '0' for --port PORT"},              // nothing to connect to
        {{"--port"}, "option '--port' needs a value (PORT)"},
        {{"--host", "999.1.1.1"}, "bad value '999.1.1.1' for --host ADDR"},
        {{"--host", "localhost"}, "bad value 'localhost' for --host ADDR"},  // IPv4 addresses only
        {{"--host", ""}, "bad value '' for --host ADDR"},
        {{"--host"}, "option '--host' needs a value (ADDR)"},
    };
    std::vector<UsageError> rows;
    for (const std::string& client : clients) {
        for (const auto& [args, message] : cases) {
            rows.push_back({client, args, message});
        }
    }
    return rows;
}

// The file programs without the paths they need, or with an empty one.
std::vector<UsageError> path_errors(const TemporaryDirectory& directory) {
    const std::string a = directory / "a";
    const std::string b = directory / "b";
    return {
        {"09-aio-kernel/aio_read", {}, "FILE is missing"},
        {"09-aio-kernel/aio_read", {""}, "bad FILE '' (one file)"},
        {"09-aio-kernel/aio_read", {a, b}, "bad FILE '" + b + "' (one file)"},
        {"09-aio-kernel/aio_write", {}, "FILE is missing"},
        {"09-aio-kernel/aio_write", {""}, "bad FILE ''"},
        {"09-aio-kernel/aio_copy", {}, "SRC and DST are needed"},
        {"09-aio-kernel/aio_copy", {a}, "SRC and DST are needed"},
        {"09-aio-kernel/aio_copy", {"", b}, "bad SRC DST '' (two paths)"},
        {"09-aio-kernel/aio_copy", {a, b, "extra"}, "bad SRC DST 'extra' (two paths)"},
        {"09-aio-kernel/uring_copy", {}, "SRC and DST are needed"},
        {"09-aio-kernel/uring_copy", {a}, "SRC and DST are needed"},
        {"09-aio-kernel/uring_copy", {"", b}, "bad SRC DST '' (two paths)"},
        {"09-aio-kernel/uring_copy", {a, b, "extra"}, "bad SRC DST 'extra' (two paths)"},
        {"10-aio-posix/aio_copy", {}, "SRC and DST are needed"},
        {"10-aio-posix/aio_copy", {a}, "SRC and DST are needed"},
        {"10-aio-posix/aio_copy", {a, ""}, "bad SRC DST '' (two paths)"},
        {"10-aio-posix/aio_copy", {a, b, "extra"}, "bad SRC DST 'extra' (two paths)"},
        {"10-aio-posix/aio_read_files", {}, "no FILE"},
        {"10-aio-posix/aio_read_files", {"--threads", "2"}, "no FILE"},
        {"10-aio-posix/aio_read_files", {a, ""}, "bad FILE ''"},
    };
}

// Numbers that are not numbers, zero, negative or too large; flags given a
// value; words where a program takes none.
std::vector<UsageError> option_errors(const TemporaryDirectory& directory) {
    const std::string src = directory / "src";
    const std::string dst = directory / "dst";
    return {
        {"07-rtsig-udp/client", {"--timeout-ms", "0"}, "bad value '0' for --timeout-ms N"},
        {"07-rtsig-udp/client", {"--timeout-ms", "-5"}, "bad value '-5' for --timeout-ms N"},
        {"07-rtsig-udp/client", {"--timeout-ms", "soon"}, "bad value 'soon' for --timeout-ms N"},
        {"07-rtsig-udp/client", {"--timeout-ms", "99999999999"}, "bad value '99999999999' for --timeout-ms N"},

        {"06-epoll-et/lt_vs_et", {"--bytes", "0"}, "bad value '0' for --bytes K"},
        {"06-epoll-et/lt_vs_et", {"--bytes", "-1"}, "bad value '-1' for --bytes K"},
        {"06-epoll-et/lt_vs_et", {"--bytes", "1001"}, "bad value '1001' for --bytes K"},
        {"06-epoll-et/lt_vs_et", {"--bytes", "five"}, "bad value 'five' for --bytes K"},
        {"06-epoll-et/lt_vs_et", {"--bytes"}, "option '--bytes' needs a value (K)"},
        {"06-epoll-et/lt_vs_et", {"extra"}, "unexpected argument 'extra'"},

        {"09-aio-kernel/aio_read", {src, "--blocks", "0"}, "bad value '0' for --blocks N"},
        {"09-aio-kernel/aio_read", {src, "--blocks", "-1"}, "bad value '-1' for --blocks N"},
        {"09-aio-kernel/aio_read", {src, "--blocks", "1025"}, "bad value '1025' for --blocks N"},
        {"09-aio-kernel/aio_read", {src, "--blocks", "4294967297"}, "bad value '4294967297' for --blocks N"},
        {"09-aio-kernel/aio_read", {src, "--blocks", "one"}, "bad value 'one' for --blocks N"},
        {"09-aio-kernel/aio_read", {src, "--offset", "-1"}, "bad value '-1' for --offset N"},
        {"09-aio-kernel/aio_read", {src, "--offset", "start"}, "bad value 'start' for --offset N"},
        {"09-aio-kernel/aio_read", {src, "--offset"}, "option '--offset' needs a value (N)"},
        {"09-aio-kernel/aio_read", {src, "--unaligned-buffer=yes"}, "option '--unaligned-buffer' takes no value"},

        {"09-aio-kernel/aio_copy", {src, dst, "--depth", "0"}, "bad value '0' for --depth N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--depth", "-1"}, "bad value '-1' for --depth N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--depth", "1000001"}, "bad value '1000001' for --depth N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--depth", "eight"}, "bad value 'eight' for --depth N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--block-size", "0"}, "bad value '0' for --block-size N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--block-size", "-4096"}, "bad value '-4096' for --block-size N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--block-size", "1M"}, "bad value '1M' for --block-size N"},
        {"09-aio-kernel/aio_copy", {src, dst, "--block-size", "6000"}, "--block-size must be a multiple of 4096"},
        {"09-aio-kernel/aio_copy", {src, dst, "--eventfd=1"}, "option '--eventfd' takes no value"},
        {"09-aio-kernel/aio_copy", {src, dst, "--quiet=yes"}, "option '--quiet' takes no value"},

        {"09-aio-kernel/uring_copy", {src, dst, "--depth", "0"}, "bad value '0' for --depth N"},
        {"09-aio-kernel/uring_copy", {src, dst, "--depth", "32769"}, "bad value '32769' for --depth N"},
        {"09-aio-kernel/uring_copy", {src, dst, "--depth", "eight"}, "bad value 'eight' for --depth N"},
        {"09-aio-kernel/uring_copy", {src, dst, "--block-size", "0"}, "bad value '0' for --block-size N"},
        {"09-aio-kernel/uring_copy", {src, dst, "--block-size", "1M"}, "bad value '1M' for --block-size N"},
        {"09-aio-kernel/uring_copy", {src, dst, "--block-size", "6000"}, "--block-size must be a multiple of 4096"},
        {"09-aio-kernel/uring_copy", {src, dst, "--direct=yes"}, "option '--direct' takes no value"},
        {"09-aio-kernel/uring_copy", {src, dst, "--quiet=yes"}, "option '--quiet' takes no value"},

        {"10-aio-posix/aio_copy", {src, dst, "--depth", "0"}, "bad value '0' for --depth N"},
        {"10-aio-posix/aio_copy", {src, dst, "--depth", "-1"}, "bad value '-1' for --depth N"},
        {"10-aio-posix/aio_copy", {src, dst, "--depth", "1025"}, "bad value '1025' for --depth N"},
        {"10-aio-posix/aio_copy", {src, dst, "--depth", "eight"}, "bad value 'eight' for --depth N"},
        {"10-aio-posix/aio_copy", {src, dst, "--block-size", "0"}, "bad value '0' for --block-size N"},
        {"10-aio-posix/aio_copy", {src, dst, "--block-size", "-1"}, "bad value '-1' for --block-size N"},
        {"10-aio-posix/aio_copy", {src, dst, "--block-size", "1M"}, "bad value '1M' for --block-size N"},
        {"10-aio-posix/aio_copy", {src, dst, "--block-size", "67108865"}, "bad value '67108865' for --block-size N"},
        {"10-aio-posix/aio_copy", {src, dst, "--notify", "poll"}, "bad value 'poll' for --notify HOW"},
        {"10-aio-posix/aio_copy", {src, dst, "--quiet=yes"}, "option '--quiet' takes no value"},

        {"10-aio-posix/aio_read_files", {src, "--threads", "0"}, "bad value '0' for --threads N"},
        {"10-aio-posix/aio_read_files", {src, "--threads", "-1"}, "bad value '-1' for --threads N"},
        {"10-aio-posix/aio_read_files", {src, "--threads", "1001"}, "bad value '1001' for --threads N"},
        {"10-aio-posix/aio_read_files", {src, "--threads", "many"}, "bad value 'many' for --threads N"},
    };
}

// Paths that do not exist, or are a directory where a file is wanted.
// `directory` holds "src" (a file) and "subdirectory"; nothing else.
std::vector<SetupFailure> path_failures(const TemporaryDirectory& directory) {
    const std::string src = directory / "src";
    const std::string dst = directory / "dst";
    const std::string missing = directory / "missing";
    const std::string nowhere = directory / "no/such/directory/out";
    const std::string subdirectory = directory / "subdirectory";
    const std::string no_such_file = ": No such file or directory [ENOENT]";
    return {
        {"09-aio-kernel/aio_read", {missing}, "open " + missing + no_such_file},
        {"09-aio-kernel/aio_read", {subdirectory}, subdirectory + ": is a directory"},
        {"09-aio-kernel/aio_write", {nowhere}, "open " + nowhere + no_such_file},
        {"09-aio-kernel/aio_write", {subdirectory}, "open " + subdirectory + ": Is a directory [EISDIR]"},

        {"09-aio-kernel/aio_copy", {missing, dst}, "open " + missing + no_such_file, true, dst},
        {"09-aio-kernel/aio_copy", {subdirectory, dst}, subdirectory + ": not a regular file", true, dst},
        {"09-aio-kernel/aio_copy", {src, nowhere}, "open " + nowhere + no_such_file},
        {"09-aio-kernel/aio_copy", {src, subdirectory}, "open " + subdirectory + ": Is a directory [EISDIR]"},
        // (Its DST rows need io_uring: the ring comes before DST. They are in 09_uring_copy_test.cpp.)
        {"09-aio-kernel/uring_copy", {missing, dst}, "open " + missing + no_such_file, true, dst},
        {"09-aio-kernel/uring_copy", {subdirectory, dst}, subdirectory + ": not a regular file", true, dst},

        {"10-aio-posix/aio_copy", {missing, dst}, "open " + missing + no_such_file, true, dst},
        {"10-aio-posix/aio_copy", {subdirectory, dst}, subdirectory + ": not a regular file", true, dst},
        {"10-aio-posix/aio_copy", {src, nowhere}, "open " + nowhere + no_such_file},
        {"10-aio-posix/aio_copy", {src, subdirectory}, "open " + subdirectory + ": Is a directory [EISDIR]"},

        // It reads the other files and prints its summary, then exits 1.
        {"10-aio-posix/aio_read_files", {missing}, "open " + missing + no_such_file, false},
    };
}

// A connection refused: the port of a socket that is bound but does not
// listen, so that nobody else takes it meanwhile.
std::vector<SetupFailure> connect_failures(std::uint16_t closed_port) {
    const std::string port = std::to_string(closed_port);
    std::vector<SetupFailure> rows;
    for (const std::string& client : tcp_clients) {
        rows.push_back({client, {"--port", port, "hello"},
                        "connect 127.0.0.1:" + port + ": Connection refused [ECONNREFUSED]"});
    }
    return rows;
}

struct ClosedPort {
    unique_fd socket;
    std::uint16_t port = 0;
};

ClosedPort closed_port() {
    ClosedPort closed{unique_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0))};
    REQUIRE(closed.socket.valid());
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(closed.socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    const auto bound = iomodels::local_address(closed.socket.get());
    REQUIRE(bound.has_value());
    closed.port = ntohs(bound->sin_port);
    return closed;
}

// The files path_failures and the option rows expect.
void make_files(const TemporaryDirectory& directory) {
    write_file(directory / "src", "some bytes\n");
    REQUIRE(::mkdir((directory / "subdirectory").c_str(), 0755) == 0);
}

}  // namespace

TEST_CASE("every program prints its usage on stdout and exits 0 for --help") {
    for (const auto& [program, path] : programs) {
        const Completed result = run_program(program, {"--help"});
        const std::string name = short_name(program);
        INFO("$ " << program << " --help\nstdout: " << result.out << "\nstderr: " << result.err);
        CHECK(result.status.describe() == "exit 0");
        CHECK(result.out.starts_with("usage: " + name + " "));
        CHECK(result.out.find("  --help ") != std::string::npos);
        CHECK(result.err.empty());
    }
}

TEST_CASE("every program rejects an unknown option with a message and its usage on stderr and exits 2") {
    for (const auto& [program, path] : programs) {
        check(UsageError{program, {"--frobnicate"}, "unknown option '--frobnicate'"});
    }
}

TEST_CASE("the clients reject a port out of range or not a number and a host that is not an IPv4 address") {
    for (const UsageError& row : client_errors()) {
        check(row);
    }
}

TEST_CASE("the TCP clients report a refused connection as one contract line and exit 1") {
    const ClosedPort closed = closed_port();
    for (const SetupFailure& row : connect_failures(closed.port)) {
        check(row);
    }
}

TEST_CASE("the file programs reject missing or empty paths with their usage and exit 2") {
    TemporaryDirectory directory;
    for (const UsageError& row : path_errors(directory)) {
        check(row);
    }
    // An empty FILE is wrong; an empty MESSAGE word is a word, as for echo ''.
    const Completed empty_word = run_program("09-aio-kernel/aio_write", {directory / "out", ""});
    INFO("stderr: " << empty_word.err);
    CHECK(empty_word.status.describe() == "exit 0");
    CHECK(file_content(directory / "out") == "\n");
}

TEST_CASE("bad option values are rejected with their usage and exit 2") {
    TemporaryDirectory directory;
    make_files(directory);
    for (const UsageError& row : option_errors(directory)) {
        check(row);
    }
    CHECK(::access((directory / "dst").c_str(), F_OK) == -1);  // nothing was copied
}

TEST_CASE("a missing file or a directory is one line naming the call and the path and exit 1") {
    TemporaryDirectory directory;
    make_files(directory);
    for (const SetupFailure& row : path_failures(directory)) {
        check(row);
    }
}

TEST_CASE("every program that is not a server has rows of its own in these tables") {
    TemporaryDirectory directory;
    std::set<std::string> covered;
    for (const UsageError& row : client_errors()) {
        covered.insert(row.program);
    }
    for (const UsageError& row : path_errors(directory)) {
        covered.insert(row.program);
    }
    for (const UsageError& row : option_errors(directory)) {
        covered.insert(row.program);
    }
    for (const SetupFailure& row : path_failures(directory)) {
        covered.insert(row.program);
    }
    for (const SetupFailure& row : connect_failures(1)) {
        covered.insert(row.program);
    }
    for (const auto& [program, path] : programs) {
        INFO("no rows for " << program);
        CHECK(covered.count(program) == 1);
    }
    // And the other way round: CMake found every program the rows name.
    for (const std::string& program : covered) {
        INFO("not built: " << program);
        CHECK(programs.count(program) == 1);
    }
}
