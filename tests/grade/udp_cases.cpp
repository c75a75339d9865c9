// The UDP echo conformance suite, tagged [udp]: what CONTRACT.md promises
// of a UDP echo server, run against 07-rtsig-udp's two servers (registered
// with add_udp_conformance in tests/CMakeLists.txt) and, by the grader,
// against a student's server of the rtsig-udp model instead of the TCP
// suite. At the grader's core level the summary is not read, and the cases
// tagged [contract] skip themselves.
#include <signal.h>

#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "conformance/server_under_test.hpp"
#include "harness/harness.hpp"

using namespace harness;
using conformance::server_under_test;

namespace {

// As the conformance suite starts a server (`path 0 --quiet options`, or,
// at the core level, the grader's command as it is), for UDP.
Server start() {
    std::vector<std::string> argv{server_under_test.path};
    StartOptions bounded;
    if (server_under_test.contract) {
        argv.push_back("0");
        argv.push_back("--quiet");
    } else {
        bounded.rlimit_fsize = 64LL << 20;  // a server that floods its stderr stops at 64 MiB
    }
    argv.insert(argv.end(), server_under_test.options.begin(), server_under_test.options.end());
    return start_udp_command(argv, bounded);
}

// SIGTERM, then, with the contract, exit 0 and the summary line, returned;
// at the core level only that it ends within 10 s.
std::optional<std::string> finish(Server& server) {
    if (server_under_test.contract) {
        return stop_server(server);
    }
    REQUIRE(server.process.stop(SIGTERM, 10s).has_value());  // it ended within 10 s of SIGTERM
    return std::nullopt;
}

void contract_only() {
    if (!server_under_test.contract) {
        skip_test("checks CONTRACT.md only (grade --level contract)");
    }
}

}  // namespace

TEST_CASE("the server starts and echoes one datagram", "[udp][preflight]") {
    Server server = start();
    const unique_fd client = udp_socket_to(server.port);
    CHECK(udp_echo(client.get(), "x", 5s) == "x");
}

TEST_CASE("UDP: echoes datagrams of 0, 1, 1400 and 65507 bytes unchanged, each to its sender", "[udp]") {
    Server server = start();
    const unique_fd first = udp_socket_to(server.port);
    const unique_fd second = udp_socket_to(server.port);
    std::uint64_t bytes = 0;
    for (const std::size_t size : {0, 1, 1400, 65507}) {
        INFO(size << " bytes");
        const std::string datagram = random_bytes(size, server_under_test.seed + static_cast<std::uint32_t>(size));
        CHECK(udp_echo(first.get(), datagram) == datagram);
        CHECK(udp_echo(second.get(), datagram) == datagram);  // each sender gets its own echo
        bytes += 2 * size;
    }
    CHECK_FALSE(readable_within(first.get(), 100ms));  // one echo a datagram, no more
    if (const auto summary = finish(server)) {
        CHECK(summary_count(*summary, "datagrams echoed") == 8);
        CHECK(summary_count(*summary, "bytes echoed") == bytes);
        CHECK(summary_count(*summary, "echoes lost") == 0);
    }
}

TEST_CASE("UDP: 10 clients sending 100 datagrams each, each waiting for its echo, all get them back", "[udp]") {
    Server server = start();
    constexpr int clients = 10, per_client = 100;
    std::vector<unique_fd> sockets;
    for (int c = 0; c < clients; ++c) {
        sockets.push_back(udp_socket_to(server.port));
    }
    std::vector<int> echoed(clients, 0);
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
        // (No assertion in a thread: Catch2 is not thread-safe. Count, check after.)
        threads.emplace_back([&, c] {
            for (int i = 0; i < per_client; ++i) {
                const std::string datagram =
                    random_bytes(100 + static_cast<std::size_t>(i),
                                 server_under_test.seed + static_cast<std::uint32_t>(1000 * c + i));
                echoed[c] += udp_echo(sockets[c].get(), datagram, 5s) == datagram;
            }
        });
    }
    for (std::thread& thread : threads) {
        thread.join();
    }
    for (int c = 0; c < clients; ++c) {
        INFO("client " << c);
        CHECK(echoed[c] == per_client);
    }
    if (const auto summary = finish(server)) {
        CHECK(summary_count(*summary, "datagrams echoed") == clients * per_client);
    }
}

TEST_CASE("UDP: prints the ready line, and SIGTERM stops it with exit 0 and a summary", "[udp][contract]") {
    contract_only();
    Server server = start();
    CHECK(server.ready_line == "listening on udp 127.0.0.1:" + std::to_string(server.port));
    const unique_fd client = udp_socket_to(server.port);
    REQUIRE(udp_echo(client.get(), "hello") == "hello");
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "datagrams echoed") == 1u);
}
