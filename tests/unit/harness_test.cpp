// The harness stops what a test starts: when the test case ends by a failed
// assertion (REQUIRE throws) as much as by returning, and when the test
// process dies without unwinding at all (a crash, ctest's timeout). Each
// case marks the program it starts with an environment entry of its own and
// looks for that entry in /proc afterwards, as tests/no_strays.sh does (it
// is there once the program has called execve: a forked child shows its
// parent's environment until then).
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "catch.hpp"
#include "harness/harness.hpp"

using namespace harness;

namespace {

StartOptions marked(const std::string& marker) {
    StartOptions options;
    options.env = {marker};
    return options;
}

}  // namespace

TEST_CASE("a program is killed when an exception, as a failed REQUIRE throws, ends its test case") {
    const std::string marker = "HARNESS_TEST=exception-" + std::to_string(::getpid());
    CHECK_THROWS_AS(
        [&] {
            const Process sleeper = Process::start({"/bin/sleep", "60"}, marked(marker));
            REQUIRE(eventually([&] { return processes_with_environment(marker).size() == 1; }));
            throw std::runtime_error("the test case failed");
        }(),
        std::runtime_error);
    CHECK(processes_with_environment(marker).empty());
}

TEST_CASE("a program is killed when its test process dies without cleaning up") {
    const std::string marker = "HARNESS_TEST=death-" + std::to_string(::getpid());
    // The child stands for a test process: it starts the program, then ends
    // with _exit, so no destructor runs, as if it had crashed.
    const pid_t test = ::fork();
    REQUIRE(test != -1);
    if (test == 0) {
        try {
            const Process sleeper = Process::start({"/bin/sleep", "60"}, marked(marker));
            const bool seen = eventually([&] { return processes_with_environment(marker).size() == 1; });
            ::_exit(seen ? 0 : 3);
        } catch (...) {
            ::_exit(4);
        }
    }
    int status = 0;
    REQUIRE(::waitpid(test, &status, 0) == test);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);  // the program was running when the test died
    CHECK(eventually([&] { return processes_with_environment(marker).empty(); }));
}
