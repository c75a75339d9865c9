// 03-select/client.cpp: an echo client that waits for its input and its
// socket at once, with select (UNP's str_cli, select version).
//
// It never blocks in a send or a recv: it sleeps in select(), which watches
// standard input, the socket for reading, and the socket for writing only
// while input waits to be sent, and it does whatever is ready. At the end of
// input it half-closes with shutdown(SHUT_WR) and reads on until the server's
// end of file, so a file piped in comes back whole (README, "The client").
//
// usage: client [--host ADDR] [--port PORT] [MESSAGE...]   (PORT 8003)
//   MESSAGE...: sent as one line, like echo(1), instead of standard input
//
// strace -e trace=select,pselect6,read,sendto,recvfrom,shutdown ./build/03-select/client --port PORT < file
//   pselect6() (glibc's select) with fds 0 and 3 in the read set; read(0)
//   of input; sendto(3); recvfrom(3) of the echo; shutdown(3, SHUT_WR);
//   a last recvfrom(3) = 0.
//
// Read `main`'s loop first; what comes before it is setup.

#include <errno.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>

#include "common/errors.hpp"
#include "common/io.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/pending_output.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

int main(int argc, char** argv) {
    const ClientOptions options = parse_client_options_or_exit(
        argc, argv,
        "select echo client: sends MESSAGE (or standard input) and prints the echo, "
        "waiting for input and socket at once.",
        8003);

    const unique_fd connection = connect_tcp(options.host, options.port);  // blocking: the handshake is not the lesson
    if (!connection) {
        return 1;
    }
    // From here on the socket is non-blocking: a send() that would wait
    // returns EAGAIN, and the loop asks select for "writable" instead.
    if (!set_nonblocking(connection.get())) {
        report_failure("fcntl F_SETFL O_NONBLOCK", errno);
        return 1;
    }
    const int socket_fd = connection.get();

    PendingOutput to_server;      // input read but not yet sent
    bool input_finished = false;  // end of input (or the MESSAGE was queued)
    bool shut_down = false;       // shutdown(SHUT_WR) done
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    if (!options.words.empty()) {
        const std::string message = options.message();
        to_server.append(std::as_bytes(std::span(message)));
        sent = message.size();
        input_finished = true;
    }

    std::array<std::byte, 64 * 1024> buffer;
    for (;;) {
        if (input_finished && to_server.empty() && !shut_down) {
            // Half-close: "no more data from me". The connection stays open
            // for reading; the server's FIN, after the last echo, ends it.
            if (::shutdown(socket_fd, SHUT_WR) == -1) {
                report_failure("shutdown SHUT_WR", errno);
                return 1;
            }
            shut_down = true;
        }

        // The sets are rebuilt every round: select overwrites them with the
        // ready descriptors.
        fd_set readable;
        fd_set writable;
        FD_ZERO(&readable);
        FD_ZERO(&writable);
        FD_SET(socket_fd, &readable);  // always: an echo, or the server's end of file
        // Read more input only when the last input has been sent: what
        // waits in `to_server` stays at most one buffer.
        if (!input_finished && to_server.empty()) {
            FD_SET(STDIN_FILENO, &readable);
        }
        if (!to_server.empty()) {
            FD_SET(socket_fd, &writable);
        }
        if (::select(socket_fd + 1, &readable, &writable, nullptr, nullptr) == -1) {  // sleeps: phase 1
            if (errno == EINTR) {
                continue;  // a signal handler ran (e.g. SIGWINCH): just wait again
            }
            report_failure("select", errno);
            return 1;
        }

        if (FD_ISSET(socket_fd, &readable)) {
            const ssize_t got = ::recv(socket_fd, buffer.data(), buffer.size(), 0);  // phase 2: the copy
            if (got > 0) {
                received += static_cast<std::size_t>(got);
                if (!write_all(STDOUT_FILENO, std::span(buffer).first(static_cast<std::size_t>(got)))) {
                    report_failure("write stdout", errno);
                    return 1;
                }
            } else if (got == 0) {
                if (!shut_down) {
                    std::fprintf(stderr, "%s: the server closed the connection before the end of input\n",
                                 program_name());
                    return 1;
                }
                break;  // the server's end of file after our half-close: every echo is in
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                report_failure("recv", errno);
                return 1;
            }
        }

        if (FD_ISSET(STDIN_FILENO, &readable)) {
            // Readable: read() returns what is there at once (or 0 at the end).
            const ssize_t got = ::read(STDIN_FILENO, buffer.data(), buffer.size());
            if (got > 0) {
                to_server.append(std::span(buffer).first(static_cast<std::size_t>(got)));
                sent += static_cast<std::size_t>(got);
            } else if (got == 0) {
                input_finished = true;
            } else if (errno != EINTR) {
                report_failure("read stdin", errno);
                return 1;
            }
        }

        // Send what waits: new input at once, or the rest once writable.
        // flush_to sends until done or EAGAIN (the socket's send buffer is full).
        if (!to_server.empty()) {
            const auto result = to_server.flush_to(socket_fd);
            if (result.status == PendingOutput::FlushStatus::error) {
                report_failure("send", result.error);
                return 1;
            }
        }
    }

    std::fprintf(stderr, "%s: %llu bytes sent, %llu bytes echoed back\n", program_name(),
                 static_cast<unsigned long long>(sent), static_cast<unsigned long long>(received));
    if (received != sent) {
        std::fprintf(stderr, "%s: the echo is %s than what was sent\n", program_name(),
                     received < sent ? "shorter" : "longer");
        return 1;
    }
    return 0;
}
