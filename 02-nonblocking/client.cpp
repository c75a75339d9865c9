// 02-nonblocking/client.cpp: a non-blocking echo client.
//
// Its socket is non-blocking from the start (SOCK_NONBLOCK), so connect()
// returns -1 EINPROGRESS at once (the client waits until the socket is
// writable, then reads the handshake's result with getsockopt(SO_ERROR)),
// and recv() returns -1 EAGAIN until the echo has arrived: the client counts
// those returns. It sends its arguments (like echo(1)) or standard input,
// sending and receiving in one loop so that neither side's buffers fill up,
// then half-closes with shutdown(SHUT_WR) and reads until the server closes.
//
// usage: client [--host ADDR] [--port PORT] [MESSAGE...]   (PORT 8002)
//
// strace: strace -e trace=connect,poll,getsockopt,sendto,recvfrom,shutdown ./build/02-nonblocking/client --port PORT hi
//   connect() = -1 EINPROGRESS, poll() until writable, getsockopt(SO_ERROR)
//   = [0], sendto(), a run of recvfrom() = -1 EAGAIN, then the echo.
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/io.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

// Everything on standard input (a blocking read: input is not the lesson).
bool read_stdin(std::string& input) {
    std::array<char, 64 * 1024> chunk;
    for (;;) {
        const ssize_t got = ::read(STDIN_FILENO, chunk.data(), chunk.size());
        if (got > 0) {
            input.append(chunk.data(), static_cast<std::size_t>(got));
        } else if (got == 0) {
            return true;
        } else if (errno != EINTR) {
            report_failure("read stdin", errno);
            return false;
        }
    }
}

// Non-blocking connect: start the handshake, wait for it, read its result.
// Returns 0 or the errno value of the failure.
int connect_nonblocking(int fd, const sockaddr_in& address) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
        return 0;  // done at once (possible, rare)
    }
    if (errno != EINPROGRESS) {
        return errno;  // refused or failed at once
    }
    // EINPROGRESS: the handshake goes on without us. The socket becomes
    // writable when it is over, either way. (Waiting for that is what
    // select/poll are for: chapters 03 and 04. Polling connect() itself would
    // answer EALREADY until then.)
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
    return error;  // 0: connected; ECONNREFUSED, ETIMEDOUT, ...: not
}

}  // namespace

int main(int argc, char** argv) {
    const ClientOptions options = parse_client_options_or_exit(
        argc, argv, "Non-blocking echo client: counts the EAGAIN answers before the echo arrives.", 8002);
    const std::string& host = options.host;
    const std::uint16_t port = options.port;
    const std::vector<std::string>& words = options.words;  // MESSAGE...

    std::string message;
    if (words.empty()) {
        if (!read_stdin(message)) {
            return 1;
        }
    } else {
        message = options.message();
    }

    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr = *parse_ipv4(host);  // checked by the option parser
    const unique_fd connection(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!connection) {
        report_failure("socket AF_INET SOCK_STREAM", errno);
        return 1;
    }
    if (const int error = connect_nonblocking(connection.get(), address); error != 0) {
        report_failure("connect " + format_address(address), error);
        return 1;
    }

    // One loop sends what is left and receives what has come, never
    // waiting: a "not yet" (EAGAIN) is counted and the loop goes round.
    std::string_view unsent = message;
    std::string echo;
    std::uint64_t eagain = 0;
    bool half_closed = false;
    for (;;) {
        if (!unsent.empty()) {
            const ssize_t sent = ::send(connection.get(), unsent.data(), unsent.size(), MSG_NOSIGNAL);
            if (sent >= 0) {
                unsent.remove_prefix(static_cast<std::size_t>(sent));  // maybe only part of it
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ++eagain;  // the send buffer is full: try again next time round
            } else if (errno != EINTR) {
                report_failure("send", errno);
                return 1;
            }
        } else if (!half_closed) {
            // All sent: "no more data from me". The server sends the rest
            // of the echo, then closes, and recv() returns 0.
            if (::shutdown(connection.get(), SHUT_WR) == -1) {
                report_failure("shutdown SHUT_WR", errno);
                return 1;
            }
            half_closed = true;
        }
        std::array<char, 64 * 1024> buffer;
        const ssize_t received = ::recv(connection.get(), buffer.data(), buffer.size(), 0);
        if (received > 0) {
            echo.append(buffer.data(), static_cast<std::size_t>(received));
        } else if (received == 0) {
            break;  // the server closed: every echo is in
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            ++eagain;  // the echo is not there yet: ask again
        } else if (errno != EINTR) {
            report_failure("recv", errno);
            return 1;
        }
    }

    if (!write_all(STDOUT_FILENO, std::as_bytes(std::span(echo)))) {
        report_failure("write stdout", errno);
        return 1;
    }
    std::fprintf(stderr, "%s: %zu bytes sent, %zu bytes echoed back, %llu EAGAIN returns on the way\n",
                 program_name(), message.size(), echo.size(), static_cast<unsigned long long>(eagain));
    if (echo.size() != message.size()) {
        std::fprintf(stderr, "%s: the server closed the connection before echoing everything\n", program_name());
        return 1;
    }
    return 0;
}
