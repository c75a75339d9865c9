// tests/grade/grade.cpp: grades an echo server, yours, in any language,
// against one of the chapters' models.
//
//   grade MODEL [--level core|contract] [--case TEXT]... [--seed N] [--logs DIR] [--json FILE] -- COMMAND...
//   grade --list [MODEL]
//
// COMMAND is how to start the server; a "{port}" in it becomes a free port
// and the grader connects until the server accepts. Without "{port}" the
// server must print the contract's ready line, "listening on 127.0.0.1:PORT".
// --level contract (this project's own servers) starts `COMMAND 0 --quiet`
// and checks CONTRACT.md too: the ready line, SIGUSR1, SIGTERM's summary.
//
// Each case runs in grade_cases, a Catch2 program built from the
// conformance suite (tests/conformance) and the fingerprint rules
// (fingerprint.cpp), one process a case, with the server described in its
// environment (graded_server.cpp). So the grader and the suite cannot drift.
// The output is one line a case, PASS/FAIL/SKIP with its time, a hint under
// every FAIL, and last "N passed, N failed". Exit 0: all passed; 1: a case
// failed; 2: wrong arguments.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.hpp"
#include "common/unique_fd.hpp"
#include "grade/models.hpp"

extern char** environ;

using iomodels::unique_fd;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto case_deadline = std::chrono::seconds(120);  // one case, then it is killed
constexpr std::size_t output_limit = 1 << 20;              // what a case may print before it is cut

// What a student can do when a case fails: the README section or the flag
// that shows the bug. Keyed by the case's name; every case has one (a test
// checks it: grade --list).
const std::map<std::string_view, std::string_view> hints{
    {"the server starts, accepts a connection and echoes one byte",
     "run the command by hand and talk to it (./build/01-blocking/client --port PORT hello): it must accept on "
     "127.0.0.1 (on {port}, or print its ready line) and echo"},
    {"the server starts and echoes one datagram",
     "run the command by hand and send it a datagram (./build/07-rtsig-udp/client --port PORT hello): it must bind "
     "127.0.0.1 (on {port}, or print its ready line) and echo"},
    {"UDP: echoes datagrams of 0, 1, 1400 and 65507 bytes unchanged, each to its sender",
     "recvfrom gives the sender's address and the datagram's length (0 too): sendto that address, that length"},
    {"UDP: 10 clients sending 100 datagrams each, each waiting for its echo, all get them back",
     "on each signal, read until EAGAIN: one signal may stand for many datagrams (07-rtsig-udp README)"},
    {"UDP: prints the ready line, and SIGTERM stops it with exit 0 and a summary",
     "print \"listening on udp 127.0.0.1:PORT\", and on SIGTERM the summary line, exit 0 (CONTRACT.md)"},
    {"rtsig-udp: F_SETOWN, F_SETSIG and O_ASYNC on the UDP socket, signals taken in rt_sigtimedwait",
     "arm the socket: F_SETOWN, F_SETSIG SIGRTMIN+n, then O_ASYNC; block the signal and take it with sigwaitinfo "
     "(07-rtsig-udp README)"},
    {"prints the ready line with the port the kernel chose",
     "print \"listening on 127.0.0.1:PORT\" with the port getsockname returns, then flush (CONTRACT.md)"},
    {"echoes one message and closes the connection after the client's end of file",
     "echo what recv returns, then close when recv returns 0 (01-blocking README, the echo loop)"},
    {"echoes NUL bytes and every other byte value unchanged",
     "send exactly the bytes and the count recv returned: no strlen, no %s (README, the documents' defects)"},
    {"echoes 1 MiB of random bytes sent in random chunks, in order",
     "a send may take fewer bytes than asked: send the rest (a partial write; 02-nonblocking README, send_pending)"},
    {"serves 50 concurrent clients sending 64 KiB each",
     "every client is served at once: a loop over ready descriptors (03-select README), or a child or thread each"},
    {"a client that half-closes still gets every byte back",
     "recv returning 0 means the client sends no more, not that it reads no more: send what is pending, then close"},
    {"a client that resets the connection does not stop the server",
     "send with MSG_NOSIGNAL (or ignore SIGPIPE), and close only that connection on ECONNRESET or EPIPE"},
    {"a client that never reads does not stop the others",
     "serve each client apart: a child or a thread each (01-blocking), or, in an event loop, keep its bytes and wait "
     "for it to be writable (05-epoll-lt README)"},
    {"a client that sends 64 MiB and reads nothing for 2 s gets it all back, memory stays bounded",
     "stop reading from a peer while 4 MiB wait for it (CONTRACT.md, PendingOutput::room)"},
    {"2000 sequential sessions leave descriptors, threads and children at their baseline",
     "close every accepted socket, join or detach every thread, reap every child (waitpid; 01-blocking README)"},
    {"a client that half-closes and then resets while the server writes does not stop it",
     "a send may fail with EPIPE or ECONNRESET after the peer's FIN: close that connection, go on"},
    {"a storm of SIGUSR1 status requests while it echoes 8 MiB loses no byte",
     "a call a signal interrupts fails with EINTR, or returns a partial count: retry it (common/server.hpp)"},
    {"started with SIGINT, SIGTERM and SIGUSR1 blocked by its parent, it still answers them",
     "a signal mask is inherited: unblock SIGINT, SIGTERM and SIGUSR1 at start (install_stop_handlers)"},
    {"500 idle peers that sent one byte each do not hold up an active client",
     "never wait in recv for one client while others are ready: wait for readiness first"},
    {"leaves no descriptors, threads or child processes behind",
     "close every accepted socket, join or detach every thread, reap every child"},
    {"SIGTERM and SIGINT stop it with exit 0 and a summary, even with a client connected",
     "on SIGINT or SIGTERM: stop, close, print the summary line, exit 0 (CONTRACT.md)"},
    {"a port in use gives the contract's bind error and exit 1",
     "report \"PROGRAM: bind ADDR:PORT: strerror [ERRNO]\" and exit 1 (CONTRACT.md, Errors)"},
    {"bad arguments give the usage on stderr and exit 2, --help gives it on stdout",
     "wrong arguments: usage on stderr, exit 2; --help: usage on stdout, exit 0 (CONTRACT.md)"},
    {"out of descriptors, it refuses clients cleanly, does not spin, and recovers",
     "on EMFILE, accept with a spare descriptor and close at once (DescriptorReserve), or the loop spins"},
    {"epoll-et: every EPOLL_CTL_ADD and EPOLL_CTL_MOD of a client socket carries EPOLLET",
     "add each client socket with EPOLLIN|EPOLLET, and keep EPOLLET in every EPOLL_CTL_MOD: a MOD replaces all the "
     "flags (06-epoll-et README)"},
    {"epoll-et: every client socket is non-blocking before its first read",
     "accept4 with SOCK_NONBLOCK: a read until EAGAIN must not block on the last read (06-epoll-et README)"},
    {"epoll-et: before each epoll_wait that may sleep, every client socket read since the last has been read until "
     "EAGAIN or end of file",
     "an edge is reported once: read until EAGAIN (06-epoll-et README; run its server with --no-drain to see the bug)"},
    {"epoll-lt: waits in epoll_wait, with the client sockets added level-triggered (no EPOLLET)",
     "EPOLL_CTL_ADD with EPOLLIN alone, and wait in epoll_wait (05-epoll-lt README)"},
    {"select: waits in select or pselect6 with the client sockets in its read set",
     "FD_SET every client socket in the set you pass to select (03-select README)"},
    {"poll: waits in poll or ppoll with the client sockets in its array",
     "one pollfd per client socket, events POLLIN, in the array you pass to poll (04-poll README)"},
    {"nonblocking: non-blocking client sockets whose reads say EAGAIN, asked again without waiting for readiness",
     "O_NONBLOCK on every socket, and a loop that asks each one again: recv answers EAGAIN (02-nonblocking README)"},
    {"blocking-iterative: blocking client sockets, served by the one process and thread that accepts them",
     "accept, then serve that client to its end in the same loop, with blocking calls (01-blocking README)"},
    {"fork: one child process per connection, and every child reaped",
     "fork after accept, the child serves and exits, the parent reaps it (SIGCHLD, waitpid; 01-blocking README)"},
    {"thread: one thread per connection, which reads its socket with read or recv",
     "start a thread after accept that serves the connection with blocking calls (01-blocking README)"},
    {"rtsig-tcp: F_SETOWN, F_SETSIG and O_ASYNC on every client socket, signals taken in rt_sigtimedwait",
     "arm every accepted socket: F_SETOWN, F_SETSIG, then O_ASYNC; take the signals with sigwaitinfo (08 README)"},
    {"aio-kernel: client sockets are watched by IOCB_CMD_POLL requests, completions taken with io_getevents",
     "submit an IOCB_CMD_POLL request per socket with io_submit, then io_getevents (09-aio-kernel README)"},
    {"aio-posix: glibc's AIO threads read the client sockets (pread64, then read on ESPIPE), not the one that accepts",
     "read with aio_read and write with aio_write: glibc's threads do it (10-aio-posix README)"},
    {"io-uring: an io_uring instance, and no recv or send system calls on client sockets",
     "submit RECV and SEND requests: the kernel waits and copies, not a system call of yours (09-aio-kernel README, "
     "uring_server)"},
};

struct Settings {
    const grade::ModelInfo* model = nullptr;
    bool contract = false;
    unsigned long seed = 0;
    std::string logs;               // --logs DIR: the failed cases' output and traces
    std::string json;               // --json FILE
    std::vector<std::string> only;  // --case TEXT: only the cases whose name contains one of these
    std::vector<std::string> command;
};

struct Outcome {
    std::string name;
    std::string kind;    // "behaviour", "fingerprint", "start"
    std::string result;  // "PASS", "FAIL", "SKIP"
    double seconds = 0;
    std::string output;  // what the case printed
};

[[noreturn]] void usage(const std::string& problem) {
    if (!problem.empty()) {
        std::fprintf(stderr, "grade: %s\n", problem.c_str());
    }
    std::fprintf(
        problem.empty() ? stdout : stderr,
        "usage: grade MODEL [--level core|contract] [--case TEXT]... [--seed N] [--logs DIR] [--json FILE]\n"
        "             -- COMMAND...\n"
        "       grade --list [MODEL]\n"
        "Grades the echo server COMMAND starts against one of the chapters' models: the conformance\n"
        "cases (behaviour) and the model's fingerprint (its system calls, under strace).\n"
        "A \"{port}\" in COMMAND becomes a free port; without it the server prints\n"
        "\"listening on 127.0.0.1:PORT\". --level contract starts COMMAND 0 --quiet and checks CONTRACT.md too.\n"
        "--case TEXT grades only the cases whose name contains TEXT (\"epoll-et:\": the fingerprint).\n");
    std::exit(problem.empty() ? 0 : 2);
}

Settings parse(int argc, char** argv) {
    Settings settings;
    settings.seed = static_cast<unsigned long>(std::time(nullptr)) % 100000;
    int i = 1;
    for (; i < argc && std::string_view(argv[i]) != "--"; ++i) {
        const std::string_view arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc || std::string_view(argv[i + 1]) == "--") {
                usage("option " + std::string(arg) + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage("");
        } else if (arg == "--level") {
            const std::string level = value();
            if (level != "core" && level != "contract") {
                usage("--level is core or contract, not '" + level + "'");
            }
            settings.contract = level == "contract";
        } else if (arg == "--seed") {
            const std::string text = value();
            char* end = nullptr;
            settings.seed = std::strtoul(text.c_str(), &end, 10);
            if (text.empty() || *end != '\0' || settings.seed > 1000000000) {
                usage("--seed takes a number from 0 to 1000000000, not '" + text + "'");
            }
        } else if (arg == "--logs") {
            settings.logs = value();
        } else if (arg == "--json") {
            settings.json = value();
        } else if (arg == "--case") {
            settings.only.push_back(value());
        } else if (!arg.empty() && arg[0] == '-') {
            usage("unknown option '" + std::string(arg) + "'");
        } else if (settings.model == nullptr) {
            settings.model = grade::find_model(arg);
            if (settings.model == nullptr) {
                usage("no model '" + std::string(arg) + "' (grade --list names them)");
            }
        } else {
            usage("one MODEL only; COMMAND goes after --");
        }
    }
    if (settings.model == nullptr) {
        usage("which MODEL? (grade --list names them)");
    }
    for (++i; i < argc; ++i) {
        settings.command.emplace_back(argv[i]);
    }
    if (settings.command.empty()) {
        usage("no COMMAND after --");
    }
    return settings;
}

// Catch2 reads a test name given on its command line as a pattern: a comma
// separates two names and brackets start a tag, so both are escaped.
std::string catch2_name(std::string_view name) {
    std::string escaped;
    for (const char c : name) {
        if (c == ',' || c == '[' || c == ']' || c == '\\') {
            escaped += '\\';
        }
        escaped += c;
    }
    return escaped;
}

struct Ran {
    int status = -1;  // the wait status; -1: killed at the deadline
    std::string output;
};

// Runs grade_cases with `args` and `extra_env`, in a process group of its
// own, collecting what it prints (stdout and stderr together) until it ends
// or the deadline passes; then the whole group is killed, so that nothing it
// started outlives it (the servers also die with it: PR_SET_PDEATHSIG).
Ran run_cases(const std::vector<std::string>& args, const std::vector<std::string>& extra_env) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == -1) {
        iomodels::report_failure("pipe2", errno);
        std::exit(1);
    }
    unique_fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    std::vector<std::string> argv_strings{GRADE_CASES};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& arg : argv_strings) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        env_strings.emplace_back(*entry);
    }
    env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> env;
    for (std::string& entry : env_strings) {
        env.push_back(entry.data());
    }
    env.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attributes, 0);
    pid_t pid = -1;
    const int error = ::posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
        iomodels::report_failure(std::string("posix_spawn ") + argv[0], error);
        std::exit(1);
    }
    write_end.reset();

    Ran ran;
    const auto deadline = Clock::now() + case_deadline;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd readable{read_end.get(), POLLIN, 0};
        const int ready = left > 0 ? ::poll(&readable, 1, static_cast<int>(left)) : 0;
        if (ready == -1 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            ran.output += "\n(grade: the case did not end within " + std::to_string(case_deadline.count()) +
                          " s and was killed)\n";
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            return ran;
        }
        char buffer[65536];
        const ssize_t got = ::read(read_end.get(), buffer, sizeof buffer);
        if (got <= 0) {
            break;  // every writer has closed: the case has ended (or closed its output)
        }
        if (ran.output.size() < output_limit) {
            ran.output.append(buffer, static_cast<std::size_t>(got));
        }
    }
    ::waitpid(pid, &ran.status, 0);
    ::kill(-pid, SIGKILL);  // whatever of its group is left
    return ran;
}

// The cases of the given Catch2 test spec, by name, in the runner's order.
std::vector<std::string> list_cases(const std::string& spec) {
#if IOMODELS_CATCH2_MAJOR >= 3
    const Ran ran = run_cases({"--list-tests", "--verbosity", "quiet", spec}, {});
#else
    const Ran ran = run_cases({"--list-test-names-only", spec}, {});
#endif
    std::vector<std::string> names;
    std::istringstream lines(ran.output);
    for (std::string line; std::getline(lines, line);) {
        if (!line.empty()) {
            names.push_back(line);
        }
    }
    return names;
}

// The lines of a failed case's output that say what went wrong: from the
// first "FAILED" (Catch2) or "SKIPPED" on, at most `most` lines.
std::string excerpt(const std::string& output, std::size_t most) {
    std::size_t at = output.find("FAILED");
    if (at == std::string::npos) {
        at = output.find("SKIPPED");
    }
    at = at == std::string::npos ? 0 : output.rfind('\n', at) + 1;
    std::istringstream lines(output.substr(at));
    std::string shown;
    std::size_t count = 0;
    for (std::string line; std::getline(lines, line) && count < most; ++count) {
        // A payload in an expansion is binary: shown as dots, cut at 160 columns.
        line = line.substr(0, 160);
        for (char& c : line) {
            c = (c >= 0x20 && c < 0x7f) ? c : '.';
        }
        shown += "      " + line + "\n";
    }
    return shown;
}

std::string json_string(std::string_view text) {
    std::string quoted = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            quoted += '\\';
            quoted += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char escape[8];
            std::snprintf(escape, sizeof escape, "\\u%04x", c);
            quoted += escape;
        } else {
            quoted += c;
        }
    }
    return quoted + "\"";
}

void write_json(const Settings& settings, const std::vector<Outcome>& outcomes, int passed, int failed, int skipped) {
    std::ofstream out(settings.json);
    out << "{\n  \"model\": " << json_string(settings.model->name)
        << ",\n  \"level\": " << json_string(settings.contract ? "contract" : "core")
        << ",\n  \"seed\": " << settings.seed << ",\n  \"command\": [";
    for (std::size_t i = 0; i < settings.command.size(); ++i) {
        out << (i > 0 ? ", " : "") << json_string(settings.command[i]);
    }
    out << "],\n  \"cases\": [\n";
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
        const Outcome& outcome = outcomes[i];
        out << "    {\"name\": " << json_string(outcome.name) << ", \"kind\": " << json_string(outcome.kind)
            << ", \"result\": " << json_string(outcome.result) << ", \"seconds\": " << outcome.seconds
            << ", \"output\": " << json_string(outcome.result == "PASS" ? "" : outcome.output) << "}"
            << (i + 1 < outcomes.size() ? "," : "") << "\n";
    }
    out << "  ],\n  \"passed\": " << passed << ",\n  \"failed\": " << failed << ",\n  \"skipped\": " << skipped
        << "\n}\n";
    if (!out) {
        iomodels::report_failure("write " + settings.json, errno);
    }
}

// The first case: if it fails, nothing else is graded.
std::string_view preflight_case(const grade::ModelInfo& model) {
    return model.udp ? "the server starts and echoes one datagram"
                     : "the server starts, accepts a connection and echoes one byte";
}

// The Catch2 test spec of a model's behaviour cases: the TCP conformance
// suite's, or the [udp] cases; without [contract] at the core level.
std::string behaviour_spec(const grade::ModelInfo& model, bool contract) {
    return std::string(model.udp ? "[udp]" : "~[udp]") + (contract ? "" : "~[contract]") + "~[fingerprint]~[preflight]";
}

int list(int argc, char** argv) {
    if (argc == 2) {
        for (const grade::ModelInfo& model : grade::models) {
            std::printf("%-19s %s (%s)\n", std::string(model.name).c_str(), std::string(model.summary).c_str(),
                        std::string(model.chapter).c_str());
        }
        return 0;
    }
    const grade::ModelInfo* model = grade::find_model(argv[2]);
    if (argc > 3 || model == nullptr) {
        usage(argc > 3 ? "--list takes one MODEL at most" : "no model '" + std::string(argv[2]) + "'");
    }
    std::printf("%s: %s (%s)\n", std::string(model->name).c_str(), std::string(model->summary).c_str(),
                std::string(model->chapter).c_str());
    int missing = 0;
    const auto show = [&](const char* heading, const std::string& spec) {
        std::printf("\n%s\n", heading);
        for (const std::string& name : list_cases(spec)) {
            const auto hint = hints.find(name);
            missing += hint == hints.end();
            std::printf("  %s\n      hint: %s\n", name.c_str(),
                        hint == hints.end() ? "(no hint)" : std::string(hint->second).c_str());
        }
    };
    std::printf("\nfirst, the server must start: %s\n", std::string(preflight_case(*model)).c_str());
    show("behaviour (every level):", behaviour_spec(*model, false));
    show("behaviour (--level contract adds):", std::string(model->udp ? "[udp]" : "~[udp]") + "[contract]");
    show("fingerprint (under strace -f):", "[fingerprint][" + std::string(model->name) + "]");
    return missing == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::string_view(argv[1]) == "--list") {
        return list(argc, argv);
    }
    const Settings settings = parse(argc, argv);
    if (!settings.logs.empty()) {
        std::error_code error;
        std::filesystem::create_directories(settings.logs, error);
        if (error) {
            std::fprintf(stderr, "grade: mkdir %s: %s\n", settings.logs.c_str(), error.message().c_str());
            return 1;
        }
    }
    std::string joined;
    for (const std::string& word : settings.command) {
        joined += (joined.empty() ? "" : "\x1f") + word;
    }
    std::printf("grade %s at the %s level, seed %lu: %s\n", std::string(settings.model->name).c_str(),
                settings.contract ? "contract" : "core", settings.seed, std::string(settings.model->summary).c_str());
    std::fflush(stdout);

    struct Case {
        std::string name, kind;
    };
    std::vector<Case> cases{{std::string(preflight_case(*settings.model)), "start"}};
    for (const std::string& name : list_cases(behaviour_spec(*settings.model, settings.contract))) {
        cases.push_back({name, "behaviour"});
    }
    for (const std::string& name : list_cases("[fingerprint][" + std::string(settings.model->name) + "]")) {
        cases.push_back({name, "fingerprint"});
    }
    if (!settings.only.empty()) {
        std::erase_if(cases, [&](const Case& test) {
            return test.kind != "start" &&
                   std::none_of(settings.only.begin(), settings.only.end(),
                                [&](const auto& text) { return test.name.find(text) != std::string::npos; });
        });
    }

    std::vector<Outcome> outcomes;
    int passed = 0, failed = 0, skipped = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const Case& test = cases[i];
        std::string logs_dir;
        if (!settings.logs.empty()) {
            logs_dir = settings.logs + "/" + std::to_string(i + 1);
            std::error_code ignored;
            std::filesystem::create_directories(logs_dir, ignored);
        }
        const auto start = Clock::now();
        const Ran ran =
            run_cases({catch2_name(test.name)},
                      {"IOMODELS_GRADE_ARGV=" + joined, "IOMODELS_GRADE_MODEL=" + std::string(settings.model->name),
                       std::string("IOMODELS_GRADE_LEVEL=") + (settings.contract ? "contract" : "core"),
                       "IOMODELS_GRADE_SEED=" + std::to_string(settings.seed), "IOMODELS_GRADE_LOGS=" + logs_dir});
        Outcome outcome{test.name, test.kind, "FAIL", std::chrono::duration<double>(Clock::now() - start).count(),
                        ran.output};
        if (ran.status != -1 && WIFEXITED(ran.status) && WEXITSTATUS(ran.status) == 0) {
            outcome.result = "PASS";
        } else if (ran.status != -1 && WIFEXITED(ran.status) && WEXITSTATUS(ran.status) == 77) {
            outcome.result = "SKIP";
        }
        std::printf("%s %6.1f s  %s\n", outcome.result.c_str(), outcome.seconds, test.name.c_str());
        if (outcome.result != "PASS") {
            std::printf("%s", excerpt(ran.output, outcome.result == "SKIP" ? 1 : 12).c_str());
        }
        if (outcome.result == "FAIL") {
            const auto hint = hints.find(test.name);
            std::printf("      hint: %s\n", hint != hints.end() ? std::string(hint->second).c_str() : "CONTRACT.md");
            if (!logs_dir.empty()) {
                std::ofstream(logs_dir + "/output.txt") << ran.output;
                std::printf("      logs: %s\n", logs_dir.c_str());
            }
        } else if (!logs_dir.empty()) {
            std::filesystem::remove_all(logs_dir);
        }
        std::fflush(stdout);
        (outcome.result == "PASS" ? passed : outcome.result == "SKIP" ? skipped : failed) += 1;
        outcomes.push_back(std::move(outcome));
        if (test.kind == "start" && outcomes.back().result == "SKIP") {
            std::printf("grade: the first case was skipped (the reason is above), so nothing else was graded\n");
            break;
        }
        if (test.kind == "start" && outcomes.back().result != "PASS") {
            std::printf("grade: the server did not start, or did not echo, so nothing else was graded\n");
            break;
        }
    }
    if (!settings.json.empty()) {
        write_json(settings, outcomes, passed, failed, skipped);
    }
    std::printf("%d passed, %d failed", passed, failed);
    if (skipped > 0) {
        std::printf(", %d skipped", skipped);
    }
    std::printf("\n");
    return failed == 0 ? 0 : 1;
}
