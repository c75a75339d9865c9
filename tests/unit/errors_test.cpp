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
#include "harness/harness.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;
using harness::output_of;

namespace {

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
