// Address parsing and printing, and the socket helpers on 127.0.0.1 with
// port 0 (the kernel picks a free port, so tests never collide). A helper
// that fails reports it on stderr; the tests capture that line and check it.
#include "common/net.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "common/errors.hpp"

using namespace iomodels;
using harness::output_of;
using harness::readable_within;
using namespace std::chrono_literals;

namespace {

std::uint16_t port_of(int fd) {
    const auto address = local_address(fd);
    REQUIRE(address.has_value());
    return ntohs(address->sin_port);
}

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

}  // namespace

TEST_CASE("parse_ipv4 accepts dotted-quad IPv4 addresses") {
    const auto loopback_address = parse_ipv4("127.0.0.1");
    REQUIRE(loopback_address.has_value());
    CHECK(ntohl(loopback_address->s_addr) == 0x7f000001u);
    const auto any = parse_ipv4("0.0.0.0");
    REQUIRE(any.has_value());
    CHECK(any->s_addr == htonl(INADDR_ANY));
    const auto broadcast = parse_ipv4("255.255.255.255");
    REQUIRE(broadcast.has_value());
    CHECK(broadcast->s_addr == 0xffffffffu);
}

TEST_CASE("parse_ipv4 rejects anything that is not a dotted-quad IPv4 address") {
    for (const char* text : {"", "localhost", "256.0.0.1", "1.2.3", "1.2.3.4.5", "::1", " 127.0.0.1", "127.0.0.1 "}) {
        CAPTURE(text);
        CHECK_FALSE(parse_ipv4(text).has_value());
    }
}

TEST_CASE("parse_port accepts 0 and 8001 and 65535") {
    CHECK(parse_port("0") == std::uint16_t{0});
    CHECK(parse_port("8001") == std::uint16_t{8001});
    CHECK(parse_port("65535") == std::uint16_t{65535});
}

TEST_CASE("parse_port rejects empty text and out-of-range numbers and signs and junk") {
    for (const char* text : {"", "65536", "99999999999999999999", "-1", "+1", "80x", " 1", "1 ", "0x10"}) {
        CAPTURE(text);
        CHECK_FALSE(parse_port(text).has_value());
    }
}

TEST_CASE("format_address prints the address then a colon then the port") {
    CHECK(format_address(loopback(8001)) == "127.0.0.1:8001");
    CHECK(format_address(loopback(0)) == "127.0.0.1:0");
}

TEST_CASE("listen_tcp on port 0 listens on 127.0.0.1 at a port the kernel chose") {
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0);
    REQUIRE(listen_fd.valid());
    const auto address = local_address(listen_fd.get());
    REQUIRE(address.has_value());
    CHECK(ntohl(address->sin_addr.s_addr) == INADDR_LOOPBACK);
    CHECK(ntohs(address->sin_port) != 0);
    int listening = 0;
    socklen_t length = sizeof listening;
    REQUIRE(::getsockopt(listen_fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0);
    CHECK(listening == 1);
}

TEST_CASE("listen_tcp passes socket_flags such as SOCK_NONBLOCK and SOCK_CLOEXEC to socket") {
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
    REQUIRE(listen_fd.valid());
    CHECK((::fcntl(listen_fd.get(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(listen_fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("listen_tcp sets SO_REUSEADDR so a restarted server can bind beside connections in TIME_WAIT") {
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0);
    REQUIRE(listen_fd.valid());
    int reuse = 0;
    socklen_t length = sizeof reuse;
    REQUIRE(::getsockopt(listen_fd.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, &length) == 0);
    CHECK(reuse == 1);
}

TEST_CASE("connect_tcp reaches a listen_tcp socket and accept returns that connection") {
    // Non-blocking listening socket: a missing connection fails the test
    // instead of hanging it.
    const unique_fd listen_fd = listen_tcp("127.0.0.1", 0, SOCK_NONBLOCK);
    REQUIRE(listen_fd.valid());
    const unique_fd client = connect_tcp("127.0.0.1", port_of(listen_fd.get()));
    REQUIRE(client.valid());
    const auto peer = peer_address(client.get());
    REQUIRE(peer.has_value());
    CHECK(format_address(*peer) == format_address(*local_address(listen_fd.get())));

    REQUIRE(readable_within(listen_fd.get(), 5s));
    const unique_fd accepted(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(accepted.valid());
    CHECK(format_address(*peer_address(accepted.get())) == format_address(*local_address(client.get())));
}

TEST_CASE("listen_tcp on a port that is already listening reports EADDRINUSE and returns an invalid fd") {
    const unique_fd first = listen_tcp("127.0.0.1", 0);
    REQUIRE(first.valid());
    const std::uint16_t port = port_of(first.get());
    unique_fd second;
    const std::string message = output_of(stderr, [&] { second = listen_tcp("127.0.0.1", port); });
    CHECK_FALSE(second.valid());
    CHECK(message == std::string(program_name()) + ": bind 127.0.0.1:" + std::to_string(port) +
                         ": Address already in use [EADDRINUSE]\n");
}

TEST_CASE("connect_tcp to a port with no listener reports ECONNREFUSED and returns an invalid fd") {
    // A bound socket that never listens holds the port, so no other process
    // can start listening there while the test runs.
    const unique_fd holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(holder.valid());
    const sockaddr_in any_port = loopback(0);
    REQUIRE(::bind(holder.get(), reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
    const std::uint16_t port = port_of(holder.get());
    unique_fd client;
    const std::string message = output_of(stderr, [&] { client = connect_tcp("127.0.0.1", port); });
    CHECK_FALSE(client.valid());
    CHECK(message == std::string(program_name()) + ": connect 127.0.0.1:" + std::to_string(port) +
                         ": Connection refused [ECONNREFUSED]\n");
}

TEST_CASE("listen_tcp with a host that is not an IPv4 address reports EINVAL and returns an invalid fd") {
    unique_fd listen_fd;
    const std::string message = output_of(stderr, [&] { listen_fd = listen_tcp("nothere", 0); });
    CHECK_FALSE(listen_fd.valid());
    CHECK(message == std::string(program_name()) + ": inet_pton nothere: Invalid argument [EINVAL]\n");
}

TEST_CASE("bind_udp gives a socket that receives a datagram sent to its own address") {
    const unique_fd socket_fd = bind_udp("127.0.0.1", 0, SOCK_NONBLOCK);
    REQUIRE(socket_fd.valid());
    const auto address = local_address(socket_fd.get());
    REQUIRE(address.has_value());
    CHECK(ntohs(address->sin_port) != 0);

    const char datagram[] = {'p', 'i', '\0', 'g'};  // a NUL inside: datagrams are bytes, not strings
    REQUIRE(::sendto(socket_fd.get(), datagram, sizeof datagram, 0, reinterpret_cast<const sockaddr*>(&*address),
                     sizeof *address) == static_cast<ssize_t>(sizeof datagram));
    REQUIRE(readable_within(socket_fd.get(), 5s));
    char received[16] = {};
    CHECK(::recv(socket_fd.get(), received, sizeof received, 0) == static_cast<ssize_t>(sizeof datagram));
    CHECK(std::string(received, sizeof datagram) == std::string(datagram, sizeof datagram));
}

TEST_CASE("datagrams_dropped counts the datagrams a full receive queue turned away") {
    const unique_fd receiver = bind_udp("127.0.0.1", 0, SOCK_NONBLOCK);
    REQUIRE(receiver.valid());
    CHECK(datagrams_dropped(receiver.get()) == 0u);
    const int small = 4096;  // the kernel doubles it; a few datagrams fill it
    REQUIRE(::setsockopt(receiver.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    const auto address = local_address(receiver.get());
    REQUIRE(address.has_value());
    const unique_fd sender = bind_udp("127.0.0.1", 0);
    const std::string datagram(1000, 'd');
    constexpr int sent = 100;
    for (int i = 0; i < sent; ++i) {
        // Loopback delivers (or drops) in sendto itself: no datagram is in flight after it.
        REQUIRE(::sendto(sender.get(), datagram.data(), datagram.size(), 0,
                         reinterpret_cast<const sockaddr*>(&*address), sizeof *address) == 1000);
    }
    int received = 0;
    char buffer[2000];
    while (::recv(receiver.get(), buffer, sizeof buffer, 0) == 1000) {
        ++received;
    }
    CHECK(received > 0);
    CHECK(received < sent);
    CHECK(datagrams_dropped(receiver.get()) == static_cast<std::uint64_t>(sent - received));
}

TEST_CASE("accept_failed_harmlessly is true for a client that gave up, a signal and an empty queue only") {
    for (const int error : {ECONNABORTED, EINTR, EAGAIN, EWOULDBLOCK}) {
        CHECK(accept_failed_harmlessly(error));
    }
    for (const int error : {EMFILE, ENFILE, ENOBUFS, ENOMEM, EINVAL, EBADF}) {
        CHECK_FALSE(accept_failed_harmlessly(error));
    }
}
