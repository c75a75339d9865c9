// 07-rtsig-udp/client.cpp: a UDP echo client that notices lost datagrams.
//
// Each MESSAGE (or each line of standard input, without its newline) is one
// datagram: send it, wait for its echo at most --timeout-ms with poll(), and
// check that the echo is the same bytes. UDP promises nothing, so a lost
// datagram or echo is reported instead of awaited for ever. Echoes go to
// stdout, one per line; "client: 3 datagrams sent, 3 echoed, 0 lost" to
// stderr; exit 0 if every datagram came back, 1 if any was lost.
//
// usage: client [--host ADDR] [--port PORT] [--timeout-ms N] [MESSAGE...]   (PORT 8007)
//
// strace -e trace=connect,sendto,poll,recvfrom ./build/07-rtsig-udp/client --port PORT one two
//   shows connect() (no packet: it fixes the peer), then per datagram sendto(), poll() with the
//   timeout, recvfrom() of the echo.
//
// Read `main` first; send_and_wait() above it is one datagram's round trip.

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

enum class Outcome { echoed, lost, wrong, failed };

// Sends one datagram and waits for its echo. Prints the echo on stdout.
Outcome send_and_wait(int fd, std::string_view datagram, std::size_t number, int timeout_ms) {
    if (::send(fd, datagram.data(), datagram.size(), 0) != static_cast<ssize_t>(datagram.size())) {
        report_failure("send datagram " + std::to_string(number), errno);
        return errno == ECONNREFUSED ? Outcome::lost : Outcome::failed;  // ECONNREFUSED: an earlier one bounced
    }
    std::string echo(65536, '\0');
    for (;;) {
        pollfd entry{fd, POLLIN, 0};
        const int ready = ::poll(&entry, 1, timeout_ms);
        if (ready == -1 && errno == EINTR) {
            continue;
        }
        if (ready == 0) {
            std::fprintf(stderr, "%s: datagram %zu (%zu bytes): no echo within %d ms: lost\n", program_name(), number,
                         datagram.size(), timeout_ms);
            return Outcome::lost;
        }
        const ssize_t received = ::recv(fd, echo.data(), echo.size(), 0);
        if (received == -1) {
            // ECONNREFUSED: nothing listens on that port (ICMP port unreachable).
            report_failure("recv echo of datagram " + std::to_string(number), errno);
            return errno == ECONNREFUSED ? Outcome::lost : Outcome::failed;
        }
        echo.resize(static_cast<std::size_t>(received));
        if (echo != datagram) {
            // A late echo of an earlier datagram that we had given up on,
            // or a corrupted one: either way, not this datagram's echo.
            std::fprintf(stderr, "%s: datagram %zu: got %zd bytes that are not its echo\n", program_name(), number,
                         received);
            return Outcome::wrong;
        }
        std::fwrite(echo.data(), 1, echo.size(), stdout);  // bytes, not %s: NUL is allowed
        std::fputc('\n', stdout);
        return Outcome::echoed;
    }
}

}  // namespace

int main(int argc, char** argv) {
    int timeout_ms = 1000;
    const ClientOptions options = parse_client_options_or_exit(
        argc, argv, "UDP echo client: one datagram per MESSAGE (or per line of standard input), loss reported.",
        8007,
        {{"--timeout-ms", "N", "how long to wait for each echo (default 1000)",
          number(timeout_ms, 1, std::numeric_limits<int>::max())}});

    std::vector<std::string> datagrams = options.words;
    if (datagrams.empty()) {
        for (std::string line; std::getline(std::cin, line);) {
            datagrams.push_back(line);
        }
    }
    const auto server = parse_ipv4(options.host);  // checked by the option parser
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(options.port);
    address.sin_addr = *server;
    const unique_fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        report_failure("socket AF_INET SOCK_DGRAM", errno);
        return 1;
    }
    // No packet is sent: connect() on UDP only fixes the peer address.
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == -1) {
        report_failure("connect udp " + format_address(address), errno);
        return 1;
    }

    std::size_t echoed = 0, lost = 0, wrong = 0;
    for (std::size_t i = 0; i < datagrams.size(); ++i) {
        switch (send_and_wait(fd.get(), datagrams[i], i + 1, timeout_ms)) {
            case Outcome::echoed: ++echoed; break;
            case Outcome::lost: ++lost; break;
            case Outcome::wrong: ++wrong; break;
            case Outcome::failed: return 1;
        }
    }
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %zu datagrams sent, %zu echoed, %zu lost%s\n", program_name(), datagrams.size(), echoed,
                 lost, wrong > 0 ? (", " + std::to_string(wrong) + " wrong").c_str() : "");
    return echoed == datagrams.size() ? 0 : 1;
}
