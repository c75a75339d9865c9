#include "common/net.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <sys/socket.h>

#include <charconv>

#include "common/errors.hpp"

namespace iomodels {

std::optional<in_addr> parse_ipv4(std::string_view text) {
    const std::string copy(text);  // inet_pton wants a NUL-terminated string
    in_addr address{};
    if (copy.find('\0') != std::string::npos || ::inet_pton(AF_INET, copy.c_str(), &address) != 1) {
        return std::nullopt;
    }
    return address;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
    unsigned value = 0;
    const char* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc{} || stop != end || value > 65535) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

std::string format_address(const sockaddr_in& address) {
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &address.sin_addr, text, sizeof text);
    return std::string(text) + ':' + std::to_string(ntohs(address.sin_port));
}

std::optional<sockaddr_in> local_address(int fd) {
    sockaddr_in address{};
    socklen_t length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == -1) {
        return std::nullopt;
    }
    return address;
}

std::optional<sockaddr_in> peer_address(int fd) {
    sockaddr_in address{};
    socklen_t length = sizeof address;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) == -1) {
        return std::nullopt;
    }
    return address;
}

namespace {

// Fills `address` or reports the bad host the way the failing call would.
bool make_address(std::string_view host, std::uint16_t port, sockaddr_in& address) {
    const auto parsed = parse_ipv4(host);
    if (!parsed) {
        report_failure("inet_pton " + std::string(host), EINVAL);
        return false;
    }
    address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr = *parsed;
    return true;
}

// The result of a connect that EINTR interrupted: 0 or an errno value.
int finish_interrupted_connect(int fd) {
    pollfd writable{fd, POLLOUT, 0};
    while (::poll(&writable, 1, -1) == -1) {
        if (errno != EINTR) {
            return errno;
        }
    }
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == -1) {
        return errno;
    }
    return error;
}

}  // namespace

unique_fd listen_tcp(std::string_view host, std::uint16_t port, int socket_flags) {
    sockaddr_in address{};
    if (!make_address(host, port, address)) {
        return unique_fd{};
    }
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | socket_flags, 0));
    if (!fd) {
        report_failure("socket AF_INET SOCK_STREAM", errno);
        return unique_fd{};
    }
    // Lets a restarted server bind while old connections are in TIME_WAIT.
    const int on = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1) {
        report_failure("setsockopt SO_REUSEADDR", errno);
        return unique_fd{};
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        report_failure("bind " + format_address(address), errno);
        return unique_fd{};
    }
    if (::listen(fd.get(), SOMAXCONN) == -1) {
        report_failure("listen " + format_address(address), errno);
        return unique_fd{};
    }
    return fd;
}

bool accept_failed_harmlessly(int error) noexcept {
    return error == ECONNABORTED || error == EINTR || error == EAGAIN || error == EWOULDBLOCK;
}

unique_fd connect_tcp(std::string_view host, std::uint16_t port) {
    sockaddr_in address{};
    if (!make_address(host, port, address)) {
        return unique_fd{};
    }
    unique_fd fd(::socket(AF_INET, SOCK_STREAM, 0));
    if (!fd) {
        report_failure("socket AF_INET SOCK_STREAM", errno);
        return unique_fd{};
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        int error = errno;
        // EINTR: a signal handler ran, but the connection attempt goes on in
        // the kernel; calling connect again would fail with EALREADY. Wait
        // until the socket is writable and ask for the attempt's result.
        if (error == EINTR) {
            error = finish_interrupted_connect(fd.get());
        }
        if (error != 0) {
            report_failure("connect " + format_address(address), error);
            return unique_fd{};
        }
    }
    return fd;
}

unique_fd bind_udp(std::string_view host, std::uint16_t port, int socket_flags) {
    sockaddr_in address{};
    if (!make_address(host, port, address)) {
        return unique_fd{};
    }
    unique_fd fd(::socket(AF_INET, SOCK_DGRAM | socket_flags, 0));
    if (!fd) {
        report_failure("socket AF_INET SOCK_DGRAM", errno);
        return unique_fd{};
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        report_failure("bind udp " + format_address(address), errno);
        return unique_fd{};
    }
    return fd;
}

std::optional<std::uint64_t> datagrams_dropped(int fd) {
    std::uint32_t memory_info[SK_MEMINFO_VARS] = {};
    socklen_t length = sizeof memory_info;
    if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, memory_info, &length) == -1 ||
        length <= SK_MEMINFO_DROPS * sizeof memory_info[0]) {
        return std::nullopt;
    }
    return memory_info[SK_MEMINFO_DROPS];
}

}  // namespace iomodels
