// The benchmark's own test: its figures are worth something only if it
// notices an echo that is wrong. faulty_echo changes one byte, or closes a
// connection early; the benchmark must end with exit 1, say which byte of
// which message on which connection, write no report, and stop the server.
// And where io_uring is switched off, its rows are skipped, saying why.

#include <cstdlib>
#include <string>

#include "catch.hpp"
#include "harness/harness.hpp"

using namespace harness;

namespace {

// Every process the bench starts inherits BENCH_TEST_RUN=<output directory>
// from it: processes_with_environment finds what it left running.
std::string marker(const TemporaryDirectory& output) { return "BENCH_TEST_RUN=" + output.path(); }

// `bench --quick` with only the idle-connections workload, measuring
// faulty_echo (as the external server `name`) with `options`.
Completed bench_against(const TemporaryDirectory& output, const std::string& name, const std::string& options) {
    StartOptions marked;
    marked.env = {marker(output)};
    return run({BENCH, "--quick", "--workloads", "idle", "--servers", "none", "--external",
                name + "=" + FAULTY_ECHO + " {port}" + options, "--output", output.path()},
               marked, 60s);
}

bool exists(const std::string& path) { return file_content(path).has_value(); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a byte echoed wrong ends the benchmark with exit 1, says where, writes no report and stops the server") {
    TemporaryDirectory output;
    // Offset 0 of each connection is the one-byte echo that proves it is
    // served; offset 101 is byte 100 of the first 512-byte message.
    const Completed bench = bench_against(output, "liar", " --flip-at 101");
    CHECK(bench.status.describe() == "exit 1");
    CHECK(contains(bench.err,
                   "bench: liar: echoed byte differs at byte 100 of a 512-byte message on active connection 1"));
    CHECK_FALSE(exists(output / "report.md"));
    CHECK(processes_with_environment(marker(output)).empty());  // faulty_echo was stopped
}

TEST_CASE("a connection the server closes with bytes not echoed ends the benchmark with exit 1 and stops the server") {
    TemporaryDirectory output;
    const Completed bench = bench_against(output, "quitter", " --close-at 301");
    CHECK(bench.status.describe() == "exit 1");
    // 300 bytes of the first message came back, 212 did not.
    CHECK(contains(bench.err, "bench: quitter: active connection 1 closed by the server with 212 bytes of message"));
    CHECK_FALSE(exists(output / "report.md"));
    CHECK(processes_with_environment(marker(output)).empty());
}

TEST_CASE("an honest external server is measured beside ours and the report is written") {
    TemporaryDirectory output;
    const Completed bench = bench_against(output, "honest", "");
    REQUIRE(bench.status.describe() == "exit 0");
    const auto report = file_content(output / "report.md");
    REQUIRE(report.has_value());
    CHECK(contains(*report, "| honest | 0 | 1 | "));
    CHECK(contains(*report, "| honest | 20 | 5 | "));
    CHECK(exists(output / "echo_idle.csv"));
}

TEST_CASE("an external server's wildcard bind becomes 127.0.0.1 under libloopback_only.so, which the bench preloads") {
    // Bound without listening: nothing can connect, with or without it.
    const Completed plain = run({FAULTY_ECHO, "--show-wildcard-bind"});
    REQUIRE(plain.status.describe() == "exit 0");
    CHECK(plain.out == "0.0.0.0\n");
    StartOptions preloaded;
    // (verify_asan_link_order=0: under the asan preset faulty_echo would
    // refuse a library loaded before ASan's runtime; the bench does the same.)
    const char* asan = std::getenv("ASAN_OPTIONS");
    preloaded.env = {std::string("LD_PRELOAD=") + LOOPBACK_ONLY,
                     "ASAN_OPTIONS=" + (asan != nullptr && *asan != '\0' ? std::string(asan) + ":" : std::string()) +
                         "verify_asan_link_order=0"};
    const Completed shimmed = run({FAULTY_ECHO, "--show-wildcard-bind"}, preloaded);
    REQUIRE(shimmed.status.describe() == "exit 0");
    CHECK(shimmed.out == "127.0.0.1\n");
}

TEST_CASE("where io_uring is switched off, its rows say why and the benchmark still succeeds") {
    TemporaryDirectory output;
    StartOptions marked;
    marked.env = {marker(output)};
    // A seccomp filter fails io_uring_setup with EPERM, in the bench and in
    // every server it starts, as a container's profile does.
    const Completed bench = run({DENY_IO_URING, BENCH, "--quick", "--workloads", "dispatch,idle,concurrency",
                                 "--servers", "09-aio-kernel/uring_server --multishot", "--output", output.path()},
                                marked, 60s);
    REQUIRE(bench.status.describe() == "exit 0");
    const auto report = file_content(output / "report.md");
    REQUIRE(report.has_value());
    const std::string reason = "io_uring_setup 8: Operation not permitted [EPERM]";
    CHECK(contains(*report, "**io_uring rows skipped**: " + reason));
    CHECK(contains(*report, "| 09-aio-kernel/uring_server --multishot | 0 | 1 | — | | | | | | | | | skipped: " + reason));
    CHECK(contains(*report, "— (skipped: " + reason + ")"));
    CHECK(contains(*report, "| `uring_server --multishot`, C = 5, 64 B: the io_uring targets | — (skipped: " + reason));
    // The dispatch rows keep io_uring's columns, empty.
    CHECK(contains(*report, " | — | — |\n| 100 | "));
    // The baseline column, and one descriptor moved up in number (select's
    // cost by number, poll's by count).
    CHECK(contains(*report, "| N | read+write only | select | poll | epoll LT |"));
    CHECK(contains(*report, "### One descriptor, numbered D\n"));
    CHECK(contains(*report, "\n| 1000 | "));
    CHECK(contains(*report, "| one descriptor, select: D = "));
    CHECK(contains(*report, "| one descriptor, poll: D = "));
    CHECK(exists(output / "sparse.csv"));
    CHECK(processes_with_environment(marker(output)).empty());
}
