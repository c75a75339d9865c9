#include "harness/harness.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>

#include "catch.hpp"
#include "common/errors.hpp"
#include "common/io.hpp"
#include "common/net.hpp"

extern char** environ;

namespace harness {

namespace {

int remaining_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

ExitStatus decode(int raw) {
    ExitStatus status;
    if (WIFEXITED(raw)) {
        status.exited = true;
        status.code = WEXITSTATUS(raw);
    } else if (WIFSIGNALED(raw)) {
        status.signal = WTERMSIG(raw);
    }
    return status;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

std::string ExitStatus::describe() const {
    if (exited) {
        return "exit " + std::to_string(code);
    }
    const char* name = ::sigabbrev_np(signal);
    return std::string("killed by SIG") + (name ? name : std::to_string(signal).c_str());
}

// ---- Process -------------------------------------------------------------

Process Process::start(const std::vector<std::string>& argv, const StartOptions& options) {
    REQUIRE(!argv.empty());
    Process process;

    std::array<int, 2> out{};
    REQUIRE(::pipe2(out.data(), O_CLOEXEC) == 0);
    process.stdout_.reset(out[0]);
    unique_fd out_write(out[1]);

    std::array<int, 2> in{-1, -1};
    unique_fd in_read;
    if (!options.stdin_data.empty()) {
        REQUIRE(::pipe2(in.data(), O_CLOEXEC) == 0);
        in_read.reset(in[0]);
        process.stdin_.reset(in[1]);
    } else {
        in_read.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    REQUIRE(in_read.valid());

    std::string err_template = "/tmp/iomodels-stderr-XXXXXX";
    unique_fd err(::mkostemp(err_template.data(), O_CLOEXEC));
    REQUIRE(err.valid());
    process.stderr_path_ = err_template;

    // Everything the child needs is built before fork(): between fork and
    // exec a child of a multi-threaded test may only make async-signal-safe calls.
    std::vector<char*> child_argv;
    for (const std::string& arg : argv) {
        child_argv.push_back(const_cast<char*>(arg.c_str()));
    }
    child_argv.push_back(nullptr);
    // The test's environment, with options.env's entries in place of any
    // of the same name (getenv would find the first of two).
    std::vector<std::string> env_strings;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        const std::string_view name = std::string_view(*entry).substr(0, std::string_view(*entry).find('='));
        const bool replaced = std::any_of(options.env.begin(), options.env.end(), [name](const std::string& extra) {
            return extra.size() > name.size() && extra.compare(0, name.size(), name) == 0 && extra[name.size()] == '=';
        });
        if (!replaced) {
            env_strings.emplace_back(*entry);
        }
    }
    env_strings.insert(env_strings.end(), options.env.begin(), options.env.end());
    std::vector<char*> child_env;
    for (std::string& entry : env_strings) {
        child_env.push_back(entry.data());
    }
    child_env.push_back(nullptr);
    const rlimit nofile{static_cast<rlim_t>(options.rlimit_nofile), static_cast<rlim_t>(options.rlimit_nofile)};
    const rlimit sigpending{static_cast<rlim_t>(options.rlimit_sigpending),
                            static_cast<rlim_t>(options.rlimit_sigpending)};
    const rlimit fsize{static_cast<rlim_t>(options.rlimit_fsize), static_cast<rlim_t>(options.rlimit_fsize)};

    const pid_t test = ::getpid();
    const pid_t pid = ::fork();
    REQUIRE(pid != -1);
    if (pid == 0) {
        // Should the test die before it stops the program (a crash, ctest's
        // timeout), the program is killed too. Tests start programs from
        // their main thread only: the signal comes when the forking thread ends.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != test) {
            ::_exit(127);  // the test died before prctl
        }
        ::dup2(in_read.get(), STDIN_FILENO);
        ::dup2(out_write.get(), STDOUT_FILENO);
        ::dup2(err.get(), STDERR_FILENO);
        ::close_range(3, ~0U, 0);  // no test descriptor leaks into the program
        // Default signal dispositions and an empty mask, whatever the test
        // runner had: SIGPIPE must kill a server that forgets MSG_NOSIGNAL.
        for (int signal = 1; signal < NSIG; ++signal) {
            ::signal(signal, SIG_DFL);
        }
        sigset_t mask;
        sigemptyset(&mask);
        for (const int signal : options.blocked_signals) {
            sigaddset(&mask, signal);
        }
        ::sigprocmask(SIG_SETMASK, &mask, nullptr);
        if (options.rlimit_nofile > 0) {
            ::setrlimit(RLIMIT_NOFILE, &nofile);
        }
        if (options.rlimit_sigpending > 0) {
            ::setrlimit(RLIMIT_SIGPENDING, &sigpending);
        }
        if (options.rlimit_fsize > 0) {
            ::setrlimit(RLIMIT_FSIZE, &fsize);
        }
        ::execve(child_argv[0], child_argv.data(), child_env.data());
        ::execvpe(child_argv[0], child_argv.data(), child_env.data());  // "strace": search PATH
        ::_exit(127);
    }
    process.pid_ = pid;
    return process;
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdin_(std::move(other.stdin_)),
      stdout_(std::move(other.stdout_)),
      stdout_buffer_(std::move(other.stdout_buffer_)),
      stderr_path_(std::move(other.stderr_path_)),
      status_(other.status_) {
    other.stderr_path_.clear();
    other.status_ = ExitStatus{};
}

Process::~Process() {
    if (pid_ > 0 && !status_) {
        // Its children first: a server traced by strace is strace's child,
        // and killing strace alone would leave it running, detached.
        std::ifstream children("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children");
        for (pid_t child; children >> child;) {
            ::kill(child, SIGKILL);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (!stderr_path_.empty()) {
        ::unlink(stderr_path_.c_str());
    }
}

std::optional<std::string> Process::read_stdout_line(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (const auto newline = stdout_buffer_.find('\n'); newline != std::string::npos) {
            std::string line = stdout_buffer_.substr(0, newline);
            stdout_buffer_.erase(0, newline + 1);
            return line;
        }
        pollfd readable{stdout_.get(), POLLIN, 0};
        const int ready = ::poll(&readable, 1, remaining_ms(deadline));
        if (ready == 0) {
            return std::nullopt;  // deadline
        }
        if (ready == -1) {
            if (errno == EINTR) {
                continue;
            }
            return std::nullopt;
        }
        char chunk[4096];
        const ssize_t got = ::read(stdout_.get(), chunk, sizeof chunk);
        if (got <= 0) {
            return std::nullopt;  // EOF: the program closed stdout (or exited)
        }
        stdout_buffer_.append(chunk, static_cast<std::size_t>(got));
    }
}

std::string Process::read_stdout_all(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (remaining_ms(deadline) > 0) {
        pollfd readable{stdout_.get(), POLLIN, 0};
        if (::poll(&readable, 1, remaining_ms(deadline)) <= 0) {
            continue;
        }
        char chunk[65536];
        const ssize_t got = ::read(stdout_.get(), chunk, sizeof chunk);
        if (got <= 0) {
            break;
        }
        stdout_buffer_.append(chunk, static_cast<std::size_t>(got));
    }
    return std::exchange(stdout_buffer_, {});
}

std::optional<ExitStatus> Process::wait(std::chrono::milliseconds timeout) {
    if (status_) {
        return status_;
    }
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        int raw = 0;
        const pid_t result = ::waitpid(pid_, &raw, WNOHANG);
        if (result == pid_) {
            status_ = decode(raw);
            return status_;
        }
        if (Clock::now() >= deadline) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(2ms);  // polling with a deadline, not a hope
    }
}

void Process::signal(int signal) const {
    if (!status_) {
        ::kill(pid_, signal);
    }
}

std::optional<ExitStatus> Process::stop(int signal, std::chrono::milliseconds timeout) {
    this->signal(signal);
    return wait(timeout);
}

std::string Process::stderr_text() const { return read_file(stderr_path_); }

Completed run(const std::vector<std::string>& argv, const StartOptions& options, std::chrono::milliseconds timeout) {
    Process process = Process::start(argv, options);
    const auto deadline = Clock::now() + timeout;
    std::string_view to_write = options.stdin_data;
    std::string out;
    // Feed stdin and drain stdout together: a program that echoes its input
    // would block on a full stdout pipe while we block on a full stdin pipe.
    while (process.stdout_.valid() && remaining_ms(deadline) > 0) {
        std::array<pollfd, 2> fds{{{process.stdout_.get(), POLLIN, 0}, {process.stdin_.get(), POLLOUT, 0}}};
        const nfds_t count = process.stdin_.valid() ? 2 : 1;
        if (::poll(fds.data(), count, remaining_ms(deadline)) <= 0) {
            continue;
        }
        if (count == 2 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            const ssize_t written = ::write(process.stdin_.get(), to_write.data(), std::min<std::size_t>(to_write.size(), 65536));
            if (written > 0) {
                to_write.remove_prefix(static_cast<std::size_t>(written));
            }
            if (written <= 0 || to_write.empty()) {
                process.stdin_.reset();  // EOF for the program (or it stopped reading)
            }
        }
        if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char chunk[65536];
            const ssize_t got = ::read(process.stdout_.get(), chunk, sizeof chunk);
            if (got <= 0) {
                process.stdout_.reset();
            } else {
                out.append(chunk, static_cast<std::size_t>(got));
            }
        }
    }
    const auto status = process.wait(std::chrono::milliseconds(std::max(remaining_ms(deadline), 100)));
    INFO("command: " << argv[0]);
    REQUIRE(status.has_value());  // it ended before the deadline
    return {*status, out, process.stderr_text()};
}

// ---- servers -------------------------------------------------------------

namespace {

// The end of what a server said, for a failure message: at most 4000
// characters. (A server that floods its stderr writes up to 64 MiB, and
// Catch2 takes minutes to lay out a message of that size.)
std::string last_lines(const std::string& text) {
    return text.size() <= 4000 ? text : "[...]" + text.substr(text.size() - 4000);
}

// The ready line "listening on [udp ]127.0.0.1:PORT" of a just started
// server, REQUIREd within 10 s.
std::pair<std::uint16_t, std::string> read_ready_line(Process& process, const std::string& path) {
    const auto line = process.read_stdout_line(10s);
    INFO("server: " << path << "\nstderr:\n" << last_lines(process.stderr_text()));
    REQUIRE(line.has_value());  // the ready line came within 10 s
    const std::string prefix =
        line->rfind("listening on udp ", 0) == 0 ? "listening on udp 127.0.0.1:" : "listening on 127.0.0.1:";
    REQUIRE(line->rfind(prefix, 0) == 0);
    const auto port = iomodels::parse_port(std::string_view(*line).substr(prefix.size()));
    REQUIRE(port.has_value());
    REQUIRE(*port != 0);
    return {*port, *line};
}

// A port nothing listens on now: the kernel's choice for port 0, released.
std::uint16_t free_port() {
    const unique_fd probe = iomodels::listen_tcp("127.0.0.1", 0, SOCK_CLOEXEC);
    REQUIRE(probe.valid());
    const auto address = iomodels::local_address(probe.get());
    REQUIRE(address.has_value());
    return ntohs(address->sin_port);
}

// True if a connection to 127.0.0.1:port is accepted (and closes it).
bool connects(std::uint16_t port) {
    const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return fd.valid() && ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
}

}  // namespace

Server start_server(const std::string& path, const std::vector<std::string>& args, const StartOptions& options,
                    const std::vector<std::string>& wrapper) {
    std::vector<std::string> argv = wrapper;
    argv.push_back(path);
    argv.push_back("0");
    argv.insert(argv.end(), args.begin(), args.end());
    Process process = Process::start(argv, options);
    auto [port, line] = read_ready_line(process, path);
    return Server{std::move(process), port, line};
}

Server start_command(std::vector<std::string> argv, const StartOptions& options) {
    REQUIRE_FALSE(argv.empty());
    std::uint16_t port = 0;
    for (std::string& arg : argv) {
        for (std::size_t at; (at = arg.find("{port}")) != std::string::npos;) {
            port = port != 0 ? port : free_port();
            arg.replace(at, 6, std::to_string(port));
        }
    }
    Process process = Process::start(argv, options);
    if (port == 0) {
        auto [ready_port, line] = read_ready_line(process, argv[0]);
        return Server{std::move(process), ready_port, line};
    }
    bool accepted = false;  // until it accepts, or ends (a wrong command, a port in use), or 10 s pass
    eventually([&] { return process.wait(0ms).has_value() || (accepted = connects(port)); }, 10s);
    INFO("server: " << argv[0] << " on port " << port << "\nstderr:\n" << last_lines(process.stderr_text()));
    REQUIRE(process.running());  // it did not end (a wrong command, a port in use)
    REQUIRE(accepted);           // it accepted a connection on 127.0.0.1:{port} within 10 s
    return Server{std::move(process), port, ""};
}

Server start_udp_command(std::vector<std::string> argv, const StartOptions& options) {
    REQUIRE_FALSE(argv.empty());
    std::uint16_t port = 0;
    for (std::string& arg : argv) {
        for (std::size_t at; (at = arg.find("{port}")) != std::string::npos;) {
            if (port == 0) {
                const unique_fd probe = iomodels::bind_udp("127.0.0.1", 0, SOCK_CLOEXEC);
                REQUIRE(probe.valid());
                port = ntohs(iomodels::local_address(probe.get())->sin_port);
            }
            arg.replace(at, 6, std::to_string(port));
        }
    }
    Process process = Process::start(argv, options);
    if (port == 0) {
        auto [ready_port, line] = read_ready_line(process, argv[0]);
        return Server{std::move(process), ready_port, line};
    }
    const unique_fd probe = udp_socket_to(port);
    bool echoing = false;  // until it echoes, or ends, or 10 s pass
    eventually([&] { return process.wait(0ms).has_value() || (echoing = udp_echo(probe.get(), "p", 100ms) == "p"); },
               10s);
    INFO("server: " << argv[0] << " on UDP port " << port << "\nstderr:\n" << last_lines(process.stderr_text()));
    REQUIRE(process.running());  // it did not end (a wrong command, a port in use)
    REQUIRE(echoing);            // it echoed a datagram sent to 127.0.0.1:{port} within 10 s
    return Server{std::move(process), port, ""};
}

std::string stop_server(Server& server) {
    const auto status = server.process.stop(SIGTERM, 10s);
    const std::string err = server.process.stderr_text();
    INFO("stderr:\n" << err);
    REQUIRE(status.has_value());  // it stopped within 10 s of SIGTERM
    INFO("status: " << status->describe());
    REQUIRE(status->exited);
    REQUIRE(status->code == 0);
    std::istringstream lines(err);
    std::string line;
    std::string summary;
    int summaries = 0;
    while (std::getline(lines, line)) {
        if (line.find(": summary: ") != std::string::npos) {
            summary = line;
            ++summaries;
        }
    }
    REQUIRE(summaries == 1);
    return summary;
}

std::optional<std::uint64_t> summary_count(std::string_view summary, std::string_view what) {
    // "..., 12 bytes echoed, ..." : find " what" preceded by a number
    const std::string needle = " " + std::string(what);
    std::size_t at = summary.find(needle);
    while (at != std::string_view::npos) {
        const std::size_t after = at + needle.size();
        const bool whole = after == summary.size() || summary[after] == ',';
        std::size_t begin = at;
        while (begin > 0 && summary[begin - 1] >= '0' && summary[begin - 1] <= '9') {
            --begin;
        }
        if (whole && begin < at) {
            return std::stoull(std::string(summary.substr(begin, at - begin)));
        }
        at = summary.find(needle, at + 1);
    }
    return std::nullopt;
}

// ---- clients -------------------------------------------------------------

unique_fd connect_to(std::uint16_t port, int receive_buffer) {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        return fd;
    }
    // Set before connect: the window a socket advertises cannot shrink later.
    if (receive_buffer > 0 &&
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer) == -1) {
        return unique_fd{};
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        return unique_fd{};
    }
    return fd;
}

std::string random_bytes(std::size_t size, std::uint32_t seed) {
    // Four bytes from each 32-bit draw: tests ask for up to 64 MiB, and this
    // harness is built without optimisation.
    std::mt19937 generator(seed);
    std::string bytes(size, '\0');
    for (std::size_t i = 0; i < size; i += 4) {
        const std::uint32_t draw = generator();
        for (std::size_t j = 0; j < 4 && i + j < size; ++j) {
            bytes[i + j] = static_cast<char>((draw >> (8 * j)) & 0xff);
        }
    }
    return bytes;
}

std::vector<std::size_t> random_chunks(std::size_t total, std::size_t max_chunk, std::uint32_t seed) {
    std::mt19937 generator(seed);
    std::uniform_int_distribution<std::size_t> size(1, max_chunk);
    std::vector<std::size_t> chunks;
    while (total > 0) {
        const std::size_t chunk = std::min(total, size(generator));
        chunks.push_back(chunk);
        total -= chunk;
    }
    return chunks;
}

Exchange exchange(int fd, std::string_view payload, const std::vector<std::size_t>& chunks, bool half_close,
                  std::chrono::milliseconds timeout) {
    Exchange result;
    const auto deadline = Clock::now() + timeout;
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);

    std::size_t sent = 0;
    std::size_t chunk_index = 0;
    std::size_t chunk_left = chunks.empty() ? payload.size() : chunks[0];
    bool shut = false;
    for (;;) {
        const bool sending = sent < payload.size();
        if (!sending && half_close && !shut) {
            ::shutdown(fd, SHUT_WR);
            shut = true;
        }
        const bool done = half_close ? result.eof : result.received.size() >= payload.size();
        if (done) {
            break;
        }
        if (remaining_ms(deadline) == 0) {
            result.timed_out = true;
            break;
        }
        pollfd events{fd, static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
        if (::poll(&events, 1, std::min(remaining_ms(deadline), 1000)) <= 0) {
            continue;
        }
        if (sending && (events.revents & POLLOUT) != 0) {
            const ssize_t n = ::send(fd, payload.data() + sent, chunk_left, MSG_NOSIGNAL);
            if (n > 0) {
                sent += static_cast<std::size_t>(n);
                chunk_left -= static_cast<std::size_t>(n);
                if (chunk_left == 0 && sent < payload.size()) {
                    ++chunk_index;
                    chunk_left = chunk_index < chunks.size() ? chunks[chunk_index] : payload.size() - sent;
                }
            } else if (n == -1 && errno != EAGAIN && errno != EINTR) {
                result.error = errno;
                break;
            }
        }
        if ((events.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buffer[65536];
            const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
            if (n > 0) {
                result.received.append(buffer, static_cast<std::size_t>(n));
            } else if (n == 0) {
                result.eof = true;
                if (!half_close || sending) {
                    break;  // closed before we were done
                }
            } else if (errno != EAGAIN && errno != EINTR) {
                result.error = errno;
                break;
            }
        }
    }
    ::fcntl(fd, F_SETFL, flags);
    return result;
}

Exchange echo_once(std::uint16_t port, std::string_view payload, std::chrono::milliseconds timeout) {
    unique_fd fd = connect_to(port);
    if (!fd) {
        Exchange failed;
        failed.error = errno;
        return failed;
    }
    return exchange(fd.get(), payload, {}, true, timeout);
}

std::vector<Exchange> echo_concurrently(std::uint16_t port, const std::vector<std::string>& payloads,
                                        std::size_t max_chunk, std::chrono::milliseconds timeout) {
    std::vector<Exchange> results(payloads.size());
    std::vector<std::thread> clients;
    for (std::size_t i = 0; i < payloads.size(); ++i) {
        clients.emplace_back([&, i] {
            unique_fd fd = connect_to(port);
            if (!fd) {
                results[i].error = errno;
                return;
            }
            const auto seed = static_cast<std::uint32_t>(i);
            results[i] = exchange(fd.get(), payloads[i], random_chunks(payloads[i].size(), max_chunk, seed), true, timeout);
        });
    }
    for (std::thread& client : clients) {
        client.join();
    }
    return results;
}

unique_fd udp_socket_to(std::uint16_t port) {
    unique_fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    return fd;
}

std::optional<std::string> receive_datagram(int fd, std::chrono::milliseconds timeout) {
    if (!readable_within(fd, timeout)) {
        return std::nullopt;
    }
    std::string datagram(65536, '\0');
    const ssize_t received = ::recv(fd, datagram.data(), datagram.size(), 0);
    if (received < 0) {
        return std::nullopt;
    }
    datagram.resize(static_cast<std::size_t>(received));
    return datagram;
}

std::optional<std::string> udp_echo(int fd, std::string_view datagram, std::chrono::milliseconds timeout) {
    if (::send(fd, datagram.data(), datagram.size(), 0) != static_cast<ssize_t>(datagram.size())) {
        return std::nullopt;
    }
    return receive_datagram(fd, timeout);
}

std::size_t send_without_reading(int fd, std::string_view block, std::chrono::milliseconds no_progress,
                                 std::size_t limit) {
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    std::size_t sent = 0;
    auto last_progress = Clock::now();
    while (Clock::now() - last_progress < no_progress && sent < limit) {
        const std::size_t offset = sent % block.size();  // after a partial send, go on where it stopped
        const ssize_t n = ::send(fd, block.data() + offset, std::min(block.size() - offset, limit - sent), MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            last_progress = Clock::now();
        } else {
            readable_within(fd, 10ms);  // a short pause: the server may still be reading
        }
    }
    ::fcntl(fd, F_SETFL, flags);
    return sent;
}

std::string repeated(std::string_view block, std::size_t size) {
    std::string bytes;
    bytes.reserve(size);
    while (bytes.size() < size) {
        bytes.append(block.substr(0, size - bytes.size()));
    }
    return bytes;
}

std::string receive_up_to(int fd, std::size_t size, std::chrono::milliseconds quiet,
                          std::chrono::milliseconds deadline) {
    std::string received;
    std::string buffer(256 * 1024, '\0');
    const auto end = Clock::now() + deadline;
    while (received.size() < size && Clock::now() < end && readable_within(fd, quiet)) {
        const ssize_t n = ::recv(fd, buffer.data(), std::min(buffer.size(), size - received.size()), 0);
        if (n <= 0) {
            break;
        }
        received.append(buffer, 0, static_cast<std::size_t>(n));
    }
    return received;
}

void reset_connection(unique_fd& fd) {
    const linger abort_on_close{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
    fd.reset();
}

// ---- /proc ---------------------------------------------------------------

Resources resources_of(pid_t pid) {
    Resources resources;
    const std::string base = "/proc/" + std::to_string(pid);
    if (DIR* fds = ::opendir((base + "/fd").c_str())) {
        while (const dirent* entry = ::readdir(fds)) {
            if (entry->d_name[0] != '.') {
                ++resources.descriptors;
            }
        }
        ::closedir(fds);
    }
    const auto resident_kib = [](const std::string& status_path) {
        std::ifstream status(status_path);
        for (std::string line; std::getline(status, line);) {
            if (line.rfind("VmRSS:", 0) == 0) {
                return std::stol(line.substr(6));
            }
        }
        return 0L;
    };
    std::ifstream status(base + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("Threads:", 0) == 0) {
            resources.threads = std::stoi(line.substr(8));
        }
    }
    resources.resident_kib = resident_kib(base + "/status");
    // Children: every process whose parent is `pid` (/proc/N/stat field 4);
    // state Z (field 3) is a zombie. The name in field 2 may hold spaces and
    // parentheses, so parse after the last ')'.
    if (DIR* proc = ::opendir("/proc")) {
        while (const dirent* entry = ::readdir(proc)) {
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9') {
                continue;
            }
            const std::string stat = read_file(std::string("/proc/") + entry->d_name + "/stat");
            const auto close_paren = stat.rfind(')');
            if (close_paren == std::string::npos) {
                continue;
            }
            std::istringstream fields(stat.substr(close_paren + 1));
            char state = 0;
            pid_t parent = 0;
            fields >> state >> parent;
            if (parent == pid) {
                ++resources.children;
                if (state == 'Z') {
                    ++resources.zombies;
                } else {
                    resources.resident_kib += resident_kib(std::string("/proc/") + entry->d_name + "/status");
                }
            }
        }
        ::closedir(proc);
    }
    return resources;
}

std::chrono::milliseconds cpu_time(pid_t pid) {
    // Fields 14 and 15 (utime, stime), in clock ticks; counted after the
    // name in field 2, which may hold spaces.
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int index = 3; fields >> field && index <= 15; ++index) {
        if (index == 14 || index == 15) {
            ticks += std::stol(field);
        }
    }
    return std::chrono::milliseconds(ticks * 1000 / ::sysconf(_SC_CLK_TCK));
}

bool readable_within(int fd, std::chrono::milliseconds timeout) {
    pollfd readable{fd, POLLIN, 0};
    return ::poll(&readable, 1, static_cast<int>(timeout.count())) == 1;
}

std::string output_of(std::FILE* stream, const std::function<void()>& action) {
    std::array<int, 2> ends{};
    REQUIRE(::pipe2(ends.data(), O_NONBLOCK | O_CLOEXEC) == 0);
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
    while ((got = ::read(read_end.get(), buffer, sizeof buffer)) > 0) {  // then -1 EAGAIN: all read
        text.append(buffer, static_cast<std::size_t>(got));
    }
    return text;
}

TemporaryDirectory::TemporaryDirectory() {
    std::string path_template = "/tmp/iomodels-test-XXXXXX";
    REQUIRE(::mkdtemp(path_template.data()) != nullptr);
    path_ = path_template;
}

TemporaryDirectory::~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::string& path, std::string_view bytes) {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    file.close();
    INFO("writing " << path);
    REQUIRE(file.good());
}

std::optional<std::string> file_content(const std::string& path) {
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (!file) {
        return std::nullopt;
    }
    std::string content(static_cast<std::size_t>(file.tellg()), '\0');  // one read: files here reach 64 MiB
    file.seekg(0);
    file.read(content.data(), static_cast<std::streamsize>(content.size()));
    return content;
}

namespace {

// The state letter of /proc/PID/stat ('R', 'S', 'T', 't', 'Z'...).
char process_state(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto end_of_name = text.rfind(") ");
    return end_of_name == std::string::npos || end_of_name + 2 >= text.size() ? '?' : text[end_of_name + 2];
}

}  // namespace

std::vector<pid_t> processes_with_environment(std::string_view entry) {
    std::vector<pid_t> found;
    for (const auto& process : std::filesystem::directory_iterator("/proc")) {
        const std::string name = process.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        // NUL-separated NAME=value entries; unreadable once the process has ended.
        std::ifstream environ(process.path() / "environ");
        for (std::string variable; std::getline(environ, variable, '\0');) {
            if (variable == entry) {
                found.push_back(std::stoi(name));
                break;
            }
        }
    }
    return found;
}

bool sleeping_in(pid_t pid, std::string_view function) {
    std::ifstream wchan("/proc/" + std::to_string(pid) + "/wchan");
    std::string where;
    wchan >> where;
    return where.find(function) != std::string::npos;
}

void suspend_process(pid_t pid) {
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    INFO("process " << pid << " did not stop after SIGSTOP");
    REQUIRE(eventually([&] { return process_state(pid) == 'T' || process_state(pid) == 't'; }));
}

void resume_process(pid_t pid) { REQUIRE(::kill(pid, SIGCONT) == 0); }

void skip_if_sigev_thread_under_thread_sanitizer() {
    if (thread_sanitizer) {
        skip_test("glibc starts SIGEV_THREAD notification threads past ThreadSanitizer's pthread_create "
                  "interceptor, and they crash in its malloc (llvm/llvm-project issue 109742)");
    }
}

void skip_unless_io_uring_available() {
    io_uring_params params{};
    const int ring = static_cast<int>(::syscall(__NR_io_uring_setup, 1, &params));
    if (ring == -1) {
        skip_test(iomodels::describe_failure("io_uring_setup 1", errno) +
                  ": io_uring is switched off here (sysctl kernel.io_uring_disabled, or a seccomp profile)");
    }
    ::close(ring);
}

void skip_test(std::string_view why) {
    std::printf("SKIPPED: %.*s\n", static_cast<int>(why.size()), why.data());
    std::fflush(stdout);
    std::_Exit(77);
}

void raise_descriptor_limit_or_skip(unsigned long wanted) {
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    if (limit.rlim_cur >= wanted) {
        return;
    }
    if (limit.rlim_max < wanted) {
        skip_test("needs " + std::to_string(wanted) + " descriptors, the hard RLIMIT_NOFILE is " +
                  std::to_string(limit.rlim_max) + " (raise it with ulimit -Hn, as root)");
    }
    limit.rlim_cur = wanted;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (condition()) {
            return true;
        }
        if (Clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(5ms);
    }
}

}  // namespace harness
