// tests/bench/faulty_echo.cpp: an echo server that lies, for the test that
// the benchmark notices. It echoes every connection in its own thread, but
//   --flip-at N   changes the byte at offset N of each connection's stream
//                 (its lowest bit), and
//   --close-at N  closes each connection after echoing its first N bytes.
// Without either it is an honest echo server. Test code only: it listens on
// 127.0.0.1:PORT, the port the benchmark chose for an --external server.
//   --show-wildcard-bind  instead binds a TCP socket to 0.0.0.0, port 0,
//                 prints the address it got and exits, without listening:
//                 what libloopback_only.so makes of a wildcard bind.
//
// usage: faulty_echo PORT [--flip-at N] [--close-at N] | faulty_echo --show-wildcard-bind

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdint>
#include <string>
#include <thread>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

constexpr std::uint64_t never = UINT64_MAX;

std::function<bool(std::string_view)> number_into(std::uint64_t& target) {
    return [&target](std::string_view value) {
        const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), target);
        return error == std::errc{} && end == value.data() + value.size();
    };
}

void echo(unique_fd connection, std::uint64_t flip_at, std::uint64_t close_at) {
    char buffer[4096];
    std::uint64_t offset = 0;
    for (;;) {
        const std::uint64_t left = close_at - offset;
        if (left == 0) {
            return;  // closes with bytes not echoed
        }
        const ssize_t n = ::recv(connection.get(), buffer, std::min<std::uint64_t>(sizeof buffer, left), 0);
        if (n <= 0) {
            return;
        }
        if (flip_at >= offset && flip_at < offset + static_cast<std::uint64_t>(n)) {
            buffer[flip_at - offset] ^= 1;
        }
        offset += static_cast<std::uint64_t>(n);
        for (ssize_t sent = 0; sent < n;) {
            const ssize_t m = ::send(connection.get(), buffer + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
            if (m == -1) {
                return;
            }
            sent += m;
        }
    }
}

// Binds to 0.0.0.0:0 (no listen: nothing can connect) and prints what
// getsockname says, "127.0.0.1" under libloopback_only.so.
int show_wildcard_bind() {
    const unique_fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t length = sizeof address;
    if (!socket || ::bind(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1 ||
        ::getsockname(socket.get(), reinterpret_cast<sockaddr*>(&address), &length) == -1) {
        report_failure("bind 0.0.0.0:0", errno);
        return 1;
    }
    char text[INET_ADDRSTRLEN];
    std::printf("%s\n", ::inet_ntop(AF_INET, &address.sin_addr, text, sizeof text));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint16_t port = 0;
    std::uint64_t flip_at = never, close_at = never;
    bool wildcard = false;
    const CommandLine command{
        "PORT [--flip-at N] [--close-at N] | --show-wildcard-bind",
        "An echo server that changes one byte or closes early, for the benchmark's own test.",
        {{"--flip-at", "N", "change the byte at offset N of each connection", number_into(flip_at)},
         {"--close-at", "N", "close each connection after echoing N bytes", number_into(close_at)},
         {"--show-wildcard-bind", "", "bind 0.0.0.0:0 without listening, print the address got, exit",
          [&wildcard](std::string_view) { return wildcard = true; }}},
        [&port](std::string_view operand) { return (port = parse_port(operand).value_or(0)) != 0; },
        "PORT",
        "(1 to 65535)",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (wildcard) {
        return show_wildcard_bind();
    }
    const unique_fd listener = listen_tcp("127.0.0.1", port, SOCK_CLOEXEC);
    if (!listener) {
        report_failure("listen 127.0.0.1:" + std::to_string(port), errno);
        return 1;
    }
    for (;;) {
        unique_fd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (connection) {
            std::thread(echo, std::move(connection), flip_at, close_at).detach();
        }
    }
}
