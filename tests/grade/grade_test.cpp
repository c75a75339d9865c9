// Tests that keep the grader honest: servers with a known bug fail, on the
// case or rule that names it (coals); each model's fingerprint holds for its
// own server and for no other (the matrix); a Python server passes on
// behaviour and fingerprint; and the grader's output and exit codes are
// what a student is told they are. (Gold, every chapter server passing its
// own model at the contract level, is one ctest test a model:
// tests/grade/CMakeLists.txt.)
#include <cstdlib>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "grade/fingerprint.hpp"
#include "grade/models.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

struct Reference {
    const char* model;
    const char* path;
};

// Each model's server in the chapters, as tests/grade/CMakeLists.txt passes them.
const std::vector<Reference> references{
    {"blocking-iterative", BLOCKING_SERVER_ITERATIVE},
    {"fork", BLOCKING_SERVER},
    {"thread", BLOCKING_SERVER_THREAD},
    {"nonblocking", NONBLOCKING_SERVER},
    {"select", SELECT_SERVER},
    {"poll", POLL_SERVER},
    {"epoll-lt", EPOLL_LT_SERVER},
    {"epoll-et", EPOLL_ET_SERVER},
    {"rtsig-tcp", RTSIG_TCP_SERVER},
    {"aio-kernel", AIO_KERNEL_SERVER},
    {"aio-posix", AIO_POSIX_SERVER},
    {"io-uring", URING_SERVER},
};

Completed run_grade(const std::vector<std::string>& arguments) {
    std::vector<std::string> argv{GRADE};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return run(argv, {}, 110s);
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        lines.push_back(line);
    }
    return lines;
}

// The line of the case whose name contains `name`, e.g. "FAIL    3.1 s  epoll-et: ...".
std::string case_line(const Completed& graded, const std::string& name) {
    for (const std::string& line : lines_of(graded.out)) {
        if (line.size() > 16 && line.find(name) != std::string::npos) {
            return line;
        }
    }
    return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The Python cases need python3 (Debian: apt-get install python3).
void skip_unless_python3_available() {
    if (std::system("command -v python3 >/dev/null 2>&1") != 0) {
        skip_test("python3 is not installed (apt-get install python3)");
    }
}

// Every line a case line, a failure's detail, the first line or the last.
void check_format(const Completed& graded) {
    const std::vector<std::string> lines = lines_of(graded.out);
    REQUIRE(lines.size() >= 3);
    CHECK(std::regex_match(lines.front(), std::regex("grade [a-z-]+ at the (core|contract) level, seed [0-9]+: .+")));
    CHECK(std::regex_match(lines.back(), std::regex("[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?")));
    const std::regex case_line("(PASS|FAIL|SKIP) +[0-9]+\\.[0-9] s  .+");
    for (std::size_t i = 1; i + 1 < lines.size(); ++i) {
        INFO(lines[i]);
        CHECK((std::regex_match(lines[i], case_line) || lines[i].rfind("      ", 0) == 0 ||
               lines[i].rfind("grade: ", 0) == 0));
    }
}

// The matrix row of one server: which models' rules all hold for its trace.
std::vector<std::string> models_whose_rules_hold(const Reference& reference) {
    const grade::ModelInfo& model_info = *grade::find_model(reference.model);
    conformance::ServerUnderTest server;
    server.path = reference.path;
    server.name = reference.model;
    server.model = model_info.serves;
    const grade::Session session = model_info.udp ? grade::traced_udp_session(server) : grade::traced_session(server);
    std::vector<std::string> holding;
    for (const grade::ModelInfo& model : grade::models) {
        bool all_hold = true;
        for (const grade::Rule& rule : grade::rules()) {
            if (rule.model == model.name && !rule.check(session).empty()) {
                all_hold = false;
            }
        }
        if (all_hold) {
            holding.emplace_back(model.name);
        }
    }
    return holding;
}

}  // namespace

TEST_CASE("the matrix: each model's fingerprint holds for its own server and for no other") {
    const Reference& reference = GENERATE(from_range(references));
    INFO("the server of " << reference.model << ": " << reference.path);
    CHECK(models_whose_rules_hold(reference) == std::vector<std::string>{reference.model});
}

TEST_CASE(
    "the matrix, UDP: rtsig-udp's fingerprint holds for 07's server and no other model's, and not for plain SIGIO") {
    CHECK(models_whose_rules_hold({"rtsig-udp", RTSIG_UDP_SERVER}) == std::vector<std::string>{"rtsig-udp"});
    CHECK(models_whose_rules_hold({"rtsig-udp", RTSIG_UDP_SERVER_SIGIO}).empty());  // SIGIO, no F_SETSIG
}

TEST_CASE("coal: 06's server with --no-drain fails epoll-et on reading until EAGAIN, and says so with a hint") {
    const Completed graded = run_grade(
        {"epoll-et", "--case", "epoll-et:", "--seed", "1", "--", EPOLL_ET_SERVER, "{port}", "--quiet", "--no-drain"});
    INFO(graded.out);
    CHECK(graded.status.describe() == "exit 1");
    check_format(graded);
    CHECK(case_line(graded, "until EAGAIN or end of file").rfind("FAIL", 0) == 0);
    CHECK(case_line(graded, "carries EPOLLET").rfind("PASS", 0) == 0);
    CHECK(contains(graded.out, "recvfrom("));
    CHECK(contains(graded.out, "hint: an edge is reported once: read until EAGAIN"));
    CHECK(lines_of(graded.out).back() == "3 passed, 1 failed");
}

TEST_CASE("coal: 05's level-triggered server fails epoll-et on EPOLLET") {
    const Completed graded = run_grade({"epoll-et", "--case", "epoll-et:", "--", EPOLL_LT_SERVER, "{port}", "--quiet"});
    INFO(graded.out);
    CHECK(graded.status.describe() == "exit 1");
    CHECK(case_line(graded, "carries EPOLLET").rfind("FAIL", 0) == 0);
    CHECK(contains(graded.out, ": no EPOLLET"));
}

TEST_CASE("coal: 01's thread-per-connection server fails select on waiting in select") {
    const Completed graded =
        run_grade({"select", "--case", "select:", "--", BLOCKING_SERVER_THREAD, "{port}", "--quiet"});
    INFO(graded.out);
    CHECK(graded.status.describe() == "exit 1");
    CHECK(case_line(graded, "select: waits in select").rfind("FAIL", 0) == 0);
    CHECK(contains(graded.out, "in no read set of a select or pselect6"));
}

TEST_CASE("coal: an echo with a flipped byte fails the byte-values case, one that closes early the half-close case") {
    const Completed flipped =
        run_grade({"thread", "--case", "NUL bytes", "--", FAULTY_ECHO, "{port}", "--flip-at", "101"});
    INFO(flipped.out);
    CHECK(flipped.status.describe() == "exit 1");
    CHECK(case_line(flipped, "echoes NUL bytes").rfind("FAIL", 0) == 0);
    CHECK(contains(flipped.out, "hint: send exactly the bytes"));

    const Completed closing =
        run_grade({"thread", "--case", "half-closes still", "--", FAULTY_ECHO, "{port}", "--close-at", "1000"});
    INFO(closing.out);
    CHECK(closing.status.describe() == "exit 1");
    CHECK(case_line(closing, "a client that half-closes still gets every byte back").rfind("FAIL", 0) == 0);
}

TEST_CASE(
    "a server that accepts and never reads, floods its output, or never starts, ends the grade within seconds with one "
    "clear line") {
    skip_unless_python3_available();
    const auto start = Clock::now();
    const Completed silent = run_grade({"poll", "--", "python3", "-c",
                                        "import socket, sys, time\n"
                                        "listener = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
                                        "time.sleep(600)\n",
                                        "{port}"});
    INFO(silent.out);
    CHECK(silent.status.describe() == "exit 1");
    CHECK(case_line(silent, "the server starts").rfind("FAIL", 0) == 0);
    CHECK(contains(silent.out, "grade: the server did not start, or did not echo, so nothing else was graded"));
    CHECK(lines_of(silent.out).back() == "0 passed, 1 failed");

    const Completed flooding = run_grade({"poll", "--", "python3", "-c",
                                          "import sys\n"
                                          "while True:\n"
                                          "    sys.stderr.write('flood ' * 10000)\n",
                                          "{port}"});
    CHECK(flooding.status.describe() == "exit 1");
    CHECK(contains(flooding.out, "grade: the server did not start, or did not echo"));

    const Completed missing = run_grade({"poll", "--", "/nonexistent/server", "{port}"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(contains(missing.out, "grade: the server did not start, or did not echo"));
    CHECK(Clock::now() - start < 60s);
}

TEST_CASE("a Python server on selectors passes grade epoll-lt at the core level: behaviour and fingerprint") {
    skip_unless_python3_available();
    const Completed graded = run_grade({"epoll-lt", "--seed", "3", "--", "python3", PYTHON_ECHO, "{port}"});
    INFO(graded.out << graded.err);
    CHECK(graded.status.describe() == "exit 0");
    check_format(graded);
    CHECK(case_line(graded, "epoll-lt: waits in epoll_wait").rfind("PASS", 0) == 0);
    CHECK_FALSE(contains(graded.out, "prints the ready line"));  // the contract's cases are not graded at core
}

TEST_CASE("grade --list names every model and a hint for every case, and wrong arguments exit 2") {
    const Completed models = run_grade({"--list"});
    CHECK(models.status.describe() == "exit 0");
    CHECK(lines_of(models.out).size() == grade::models.size());
    for (const grade::ModelInfo& model : grade::models) {
        const Completed listed = run_grade({"--list", std::string(model.name)});
        INFO(listed.out);
        CHECK(listed.status.describe() == "exit 0");
        CHECK_FALSE(contains(listed.out, "(no hint)"));
        CHECK(contains(listed.out, "fingerprint (under strace -f):\n  " + std::string(model.name) + ": "));
    }
    for (const std::vector<std::string>& wrong :
         std::vector<std::vector<std::string>>{{},
                                               {"epoll-xx", "--", "x"},
                                               {"epoll-et"},
                                               {"epoll-et", "--"},
                                               {"epoll-et", "--level", "gold", "--", "x"},
                                               {"epoll-et", "--seed", "x", "--", "x"}}) {
        const Completed result = run_grade(wrong);
        INFO(result.err);
        CHECK(result.status.describe() == "exit 2");
        CHECK(contains(result.err, "usage: grade MODEL"));
    }
}

TEST_CASE("grade --json writes every case with its result, and --logs keeps a failed rule's trace") {
    TemporaryDirectory output;
    const Completed graded =
        run_grade({"epoll-et", "--case", "epoll-et:", "--seed", "9", "--json", output / "grade.json", "--logs",
                   output / "logs", "--", EPOLL_LT_SERVER, "{port}", "--quiet"});
    CHECK(graded.status.describe() == "exit 1");
    const auto json = file_content(output / "grade.json");
    REQUIRE(json.has_value());
    CHECK(contains(*json, "\"model\": \"epoll-et\""));
    CHECK(contains(*json, "\"seed\": 9"));
    CHECK(contains(*json, "\"result\": \"FAIL\""));
    CHECK(contains(*json, "\"passed\": 2,\n  \"failed\": 2,"));  // no EPOLLET, and reads left before a sleep
    CHECK(contains(graded.out, "logs: " + output / "logs/2"));
    const auto trace = file_content(output / "logs/2/strace.txt");
    REQUIRE(trace.has_value());
    CHECK(contains(*trace, "epoll_ctl("));
}
