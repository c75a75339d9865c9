// Error messages in the CONTRACT.md format:
//   PROGRAM: CALL ARGS: strerror(errno) [ERRNO_NAME]
// The test never calls setlocale, so strerror speaks the "C" locale's English.
#include "common/errors.hpp"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "catch.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

// Runs `action` with `stream` (stdout or stderr) redirected into a pipe and
// returns what it printed. A pipe holds 64 KiB, far more than one line, so
// the action cannot block on it. No REQUIRE inside `action`: Catch2 would
// print its report into the pipe.
template <typename Action>
std::string output_of(std::FILE* stream, Action action) {
    int ends[2];
    REQUIRE(::pipe2(ends, O_NONBLOCK | O_CLOEXEC) == 0);
    const unique_fd read_end(ends[0]);
    const unique_fd write_end(ends[1]);
    const int stream_fd = ::fileno(stream);
    std::fflush(stream);
    const unique_fd saved(::dup(stream_fd));
    REQUIRE(saved.valid());
    REQUIRE(::dup2(write_end.get(), stream_fd) == stream_fd);
    action();
    std::fflush(stream);
    REQUIRE(::dup2(saved.get(), stream_fd) == stream_fd);
    std::string text;
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::read(read_end.get(), buffer, sizeof buffer)) > 0) {  // -1 EAGAIN: all read
        text.append(buffer, static_cast<std::size_t>(got));
    }
    return text;
}

}  // namespace

TEST_CASE("errno_name gives the symbolic name of an errno value") {
    CHECK(errno_name(EADDRINUSE) == "EADDRINUSE");
    CHECK(errno_name(ECONNRESET) == "ECONNRESET");
    CHECK(errno_name(EPIPE) == "EPIPE");
}

TEST_CASE("errno_name of EWOULDBLOCK is EAGAIN because Linux gives both one value") {
    CHECK(errno_name(EWOULDBLOCK) == "EAGAIN");
}

TEST_CASE("errno_name of a value glibc does not name is errno and the number") {
    CHECK(errno_name(4242) == "errno 4242");
    CHECK(errno_name(-1) == "errno -1");
}

TEST_CASE("describe_failure gives call and arguments then strerror then the errno name") {
    CHECK(describe_failure("bind 127.0.0.1:8001", EADDRINUSE) ==
          "bind 127.0.0.1:8001: Address already in use [EADDRINUSE]");
    CHECK(describe_failure("accept fd 3", EMFILE) == "accept fd 3: Too many open files [EMFILE]");
}

TEST_CASE("program_name is the name the program was started as without its directory") {
    const std::string name = program_name();
    CHECK_FALSE(name.empty());
    CHECK(name.find('/') == std::string::npos);
}

TEST_CASE("report_failure prints one line on stderr that starts with the program name") {
    const std::string text = output_of(stderr, [] { report_failure("bind 127.0.0.1:8001", EADDRINUSE); });
    CHECK(text == std::string(program_name()) + ": bind 127.0.0.1:8001: Address already in use [EADDRINUSE]\n");
}
