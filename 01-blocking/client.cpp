// 01-blocking/client.cpp: a blocking echo client.
//
// Sends its arguments (joined by spaces, ending in a newline, like echo(1)),
// or else standard input, to an echo server and writes what comes back to
// standard output. Every call blocks: connect() through the TCP handshake,
// send() until the kernel has taken the bytes, recv() until the echo
// arrives. It works in lock step (send a chunk, read back that many bytes),
// so a large input cannot deadlock, and half-closes with shutdown(SHUT_WR).
//
// usage: client [--host ADDR] [--port PORT] [MESSAGE...]   (PORT 8001)
//
// strace: strace -e trace=connect,sendto,read,shutdown ./build/01-blocking/client --port PORT hello
//   (the first read()s are the dynamic loader reading libraries) connect()
//   = 0, sendto() of the message, read() that returns its echo (read_exact
//   uses read), shutdown(SHUT_WR), and a last read() = 0: the server closed.
//
// Read `main` first; echo_chunk above it is one step of its loop.

#include <errno.h>
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

struct Totals {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
};

// Sends `chunk`, then reads back exactly as many bytes and writes them to
// standard output. False (reported) if the server closed or failed first.
bool echo_chunk(int fd, std::span<const std::byte> chunk, Totals& totals) {
    if (!send_all(fd, chunk)) {
        report_failure("send", errno);
        return false;
    }
    totals.sent += chunk.size();
    std::vector<std::byte> echo(chunk.size());
    const ssize_t got = read_exact(fd, echo);  // recv may return the echo in several pieces
    if (got == -1) {
        report_failure("recv", errno);
        return false;
    }
    totals.received += static_cast<std::size_t>(got);
    if (!write_all(STDOUT_FILENO, std::span(echo).first(static_cast<std::size_t>(got)))) {
        report_failure("write stdout", errno);
        return false;
    }
    if (static_cast<std::size_t>(got) < chunk.size()) {
        std::fprintf(stderr, "%s: the server closed the connection after echoing %zd of %zu bytes\n",
                     program_name(), got, chunk.size());
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const ClientOptions options = parse_client_options_or_exit(
        argc, argv, "Blocking echo client: sends MESSAGE (or standard input) and prints the echo.", 8001);
    const std::string& host = options.host;
    const std::uint16_t port = options.port;
    const std::vector<std::string>& words = options.words;  // MESSAGE...

    const unique_fd connection = connect_tcp(host, port);  // blocks through the TCP handshake
    if (!connection) {
        return 1;
    }

    Totals totals;
    if (!words.empty()) {
        const std::string message = options.message();
        if (!echo_chunk(connection.get(), std::as_bytes(std::span(message)), totals)) {
            return 1;
        }
    } else {
        std::array<std::byte, 64 * 1024> chunk;
        for (;;) {
            const ssize_t got = ::read(STDIN_FILENO, chunk.data(), chunk.size());  // blocks for input
            if (got == -1) {
                if (errno == EINTR) {
                    continue;
                }
                report_failure("read stdin", errno);
                return 1;
            }
            if (got == 0) {
                break;  // end of input
            }
            if (!echo_chunk(connection.get(), std::span(chunk).first(static_cast<std::size_t>(got)), totals)) {
                return 1;
            }
        }
    }

    // Half-close: "no more data from me". The server sees end of file,
    // closes, and our recv() returns 0.
    if (::shutdown(connection.get(), SHUT_WR) == -1) {
        report_failure("shutdown SHUT_WR", errno);
        return 1;
    }
    std::array<std::byte, 1> extra;
    const ssize_t after_eof = read_exact(connection.get(), extra);
    if (after_eof != 0) {
        std::fprintf(stderr, "%s: %s\n", program_name(),
                     after_eof == -1 ? describe_failure("recv", errno).c_str()
                                     : "the server sent more bytes than it was sent");
        return 1;
    }
    std::fprintf(stderr, "%s: %llu bytes sent, %llu bytes echoed back\n", program_name(),
                 static_cast<unsigned long long>(totals.sent), static_cast<unsigned long long>(totals.received));
    return 0;
}
