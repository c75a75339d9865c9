// 07-rtsig-udp/udp_echo.hpp: phase 2 of both servers of the chapter:
// read every datagram waiting on a non-blocking UDP socket and send each
// back to its sender. Both servers call it when a signal says "ready".
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/server.hpp"

struct EchoCounts {
    std::uint64_t datagrams = 0;  // echoed
    std::uint64_t bytes = 0;      // echoed
    std::uint64_t lost = 0;       // sendto failed: the echo is lost, and counted
};

// recvfrom() until EAGAIN, sending each datagram back to its sender.
// Returns how many datagrams were read.
inline std::uint64_t echo_until_eagain(int fd, EchoCounts& counts, const iomodels::EventLog& log) {
    using namespace iomodels;
    // Larger than the largest UDP payload over IPv4 (65507 bytes), so no
    // datagram is cut short. (Static: 64 KiB is much for a stack frame.)
    static std::array<std::byte, 65536> buffer;
    std::uint64_t read_count = 0;
    for (;;) {
        sockaddr_in sender{};
        socklen_t sender_length = sizeof sender;
        const ssize_t received = ::recvfrom(fd, buffer.data(), buffer.size(), 0,
                                            reinterpret_cast<sockaddr*>(&sender), &sender_length);
        if (received == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return read_count;  // the socket is empty: wait for the next signal
            }
            if (errno == EINTR) {
                continue;  // a handler ran (server_sigio's); read on
            }
            log("%s", describe_failure("recvfrom", errno).c_str());
            return read_count;
        }
        ++read_count;
        // A datagram is sent whole or not at all: no partial writes in UDP.
        const ssize_t sent = ::sendto(fd, buffer.data(), static_cast<std::size_t>(received), 0,
                                      reinterpret_cast<const sockaddr*>(&sender), sender_length);
        if (sent == received) {
            ++counts.datagrams;
            counts.bytes += static_cast<std::uint64_t>(sent);
        } else {
            // EAGAIN: the socket's send buffer is full; UDP has no way to
            // wait for the peer, so this echo is lost, and said so.
            ++counts.lost;
            log("echo of %zd bytes to %s lost: %s", received, format_address(sender).c_str(),
                describe_failure("sendto", errno).c_str());
        }
    }
}

