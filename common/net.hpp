// Socket setup that is not the lesson of any chapter after 01-blocking:
// address parsing and printing, a listening TCP socket, a connected TCP
// socket, a bound UDP socket.
//
// Every helper reports a failed call in the CONTRACT.md format
// ("server: bind 127.0.0.1:8001: Address already in use [EADDRINUSE]") and
// returns an invalid unique_fd; the caller decides to exit(1).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/unique_fd.hpp"

namespace iomodels {

// "127.0.0.1" -> the address; anything that is not a dotted-quad IPv4
// address -> nullopt.
std::optional<in_addr> parse_ipv4(std::string_view text);

// "8001" -> 8001; "0" -> 0; "", "65536", "-1", "80x" -> nullopt.
std::optional<std::uint16_t> parse_port(std::string_view text);

// "127.0.0.1:8001"
std::string format_address(const sockaddr_in& address);

// The address a socket is bound to (getsockname), e.g. to learn the port the
// kernel chose for port 0.
std::optional<sockaddr_in> local_address(int fd);

// The address of the peer of a connected socket (getpeername).
std::optional<sockaddr_in> peer_address(int fd);

// socket + SO_REUSEADDR + bind + listen. `socket_flags` is or-ed into the
// socket type (SOCK_NONBLOCK, SOCK_CLOEXEC).
unique_fd listen_tcp(std::string_view host, std::uint16_t port, int socket_flags = 0);

// True for the accept() failures that are nobody's fault and need no log
// line: a client gave up while it was queued (ECONNABORTED), a signal
// interrupted the call (EINTR), or no client is waiting on a non-blocking
// socket (EAGAIN, EWOULDBLOCK). The caller takes the next client, or waits
// for one. EMFILE and ENFILE are not among them: see DescriptorReserve.
bool accept_failed_harmlessly(int error) noexcept;

// socket + connect (blocking).
unique_fd connect_tcp(std::string_view host, std::uint16_t port);

// socket(SOCK_DGRAM) + bind.
unique_fd bind_udp(std::string_view host, std::uint16_t port, int socket_flags = 0);

// How many datagrams the kernel has dropped on arrival at this socket
// because its receive queue was full (getsockopt SO_MEMINFO, the count that
// `ss -uam` shows as "d"). UDP loses them silently: the sender is not told,
// and the receiver only learns it by asking. nullopt: getsockopt failed.
std::optional<std::uint64_t> datagrams_dropped(int fd);

}  // namespace iomodels
