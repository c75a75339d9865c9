// 01-blocking/server_iterative.cpp: a blocking echo server that serves one
// connection at a time.
//
// The plainest blocking server: accept4() a client, echo it until it leaves
// (echo_until_eof in echo_connection.hpp), only then accept the next. While
// it sleeps in recv() for the first client, a second client's connection
// waits, complete but unaccepted, in the listening socket's queue: that wait
// is why server.cpp and server_thread.cpp give each connection a process or
// a thread of its own.
//
// usage: server_iterative [PORT] [--host ADDR] [--quiet]   (PORT 8001; 0: any free port)
//
// strace: strace -e trace=accept4,recvfrom,sendto,close ./build/01-blocking/server_iterative 0
//   one accept4(), that client's recvfrom()/sendto() pairs, its close(),
//   and only then the next accept4(), in one process.
//
// Read `main`'s loop first.

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "echo_connection.hpp"

using namespace iomodels;

namespace {

struct Counters {
    std::uint64_t connections = 0;
    std::atomic<std::uint64_t> bytes_echoed{0};  // atomic only because echo_until_eof takes one

    [[nodiscard]] std::array<Count, 2> list() const {
        return {{{connections, "connections"}, {bytes_echoed.load(), "bytes echoed"}}};
    }
};

}  // namespace

int main(int argc, char** argv) {
    const ServerOptions options =
        parse_server_options_or_exit(argc, argv, "Blocking echo server: one connection at a time.", 8001);
    const EventLog log(options.quiet);
    // The same socket, bind and listen that server.cpp writes out by hand.
    const unique_fd listen_fd = listen_tcp(options.host, options.port, SOCK_CLOEXEC);
    if (!listen_fd) {
        return 1;
    }
    install_stop_handlers(listen_fd.get());
    install_status_handler();  // SIGUSR1: a status line, also while a client is served
    DescriptorReserve reserve;
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    Counters counters;
    // Called whenever SIGUSR1 interrupted accept() or recv().
    const auto print_status_if_requested = [&counters] {
        if (status_requested()) {
            print_status(counters.list());
        }
    };
    while (!stop_requested()) {
        print_status_if_requested();
        // Lab: accept4 the next client, asleep until one connects (EINTR, or EINVAL after a stop: go round;
        // Lab: EMFILE, ENFILE: reserve.accept_or_refuse), then serve it here to its end with echo_until_eof
        // Lab: (shut_down_on_stop lets a stop end it) and close it: only then is the next client accepted.
        // Lab stub: ::pause();  // until it is written: sleep until a signal, serving no one
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        // Sleeps until the kernel has completed a TCP handshake for us.
        unique_fd connection(
            ::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
        if (!connection && (errno == EMFILE || errno == ENFILE)) {
            connection = reserve.accept_or_refuse(listen_fd.get(), peer, log);  // refuse it: no busy loop
        }
        if (!connection) {
            // EINTR: a signal (SIGUSR1, a stop) ended the sleep; EINVAL: the stop handler shut the
            // listening socket down; EMFILE/ENFILE: refused and logged just above.
            if (!accept_failed_harmlessly(errno) && errno != EINVAL && errno != EMFILE && errno != ENFILE) {
                log("%s", describe_failure("accept", errno).c_str());
            }
            continue;
        }
        ++counters.connections;
        const std::string peer_name = format_address(peer);
        log("accepted %s on fd %d", peer_name.c_str(), connection.get());

        // A stop signal shuts this connection down too, so that a recv()
        // sleeping for this client returns at once.
        shut_down_on_stop(connection.get());
        if (!stop_requested()) {
            const std::uint64_t echoed =
                echo_until_eof(connection.get(), log, counters.bytes_echoed, print_status_if_requested);
            log("closed %s (%llu bytes echoed)", peer_name.c_str(), static_cast<unsigned long long>(echoed));
        }
        shut_down_on_stop(-1);  // before the descriptor is closed and its number reused
        // Lab end.
    }

    print_summary(counters.list());
    return 0;
}
