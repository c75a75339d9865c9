// PendingOutput on a non-blocking socketpair: what a server does with the
// bytes it could not send yet. A small send buffer makes "full" (EAGAIN)
// happen after a few KiB, so every test is exact and none can block.
#include "common/pending_output.hpp"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "catch.hpp"
#include "common/unique_fd.hpp"
#include "harness/harness.hpp"

using iomodels::PendingOutput;
using iomodels::unique_fd;
using FlushStatus = PendingOutput::FlushStatus;

namespace {

struct SocketPair {
    unique_fd sender;
    unique_fd receiver;
};

SocketPair make_nonblocking_socketpair() {
    int ends[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
    return {unique_fd(ends[0]), unique_fd(ends[1])};
}

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text)); }

std::vector<std::byte> pattern(std::size_t size) {
    std::vector<std::byte> bytes(size);
    for (std::size_t i = 0; i < size; ++i) {
        bytes[i] = static_cast<std::byte>(i % 251);  // prime: a shifted chunk shows
    }
    return bytes;
}

// Reads everything the peer has received so far (until EAGAIN).
std::vector<std::byte> drain(int fd) {
    std::vector<std::byte> received;
    std::byte buffer[16384];
    ssize_t got = 0;
    while ((got = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) {
        received.insert(received.end(), buffer, buffer + got);
    }
    return received;
}

}  // namespace

TEST_CASE("PendingOutput starts empty with room for its whole limit") {
    const PendingOutput bounded(10);
    CHECK(bounded.empty());
    CHECK(bounded.size() == 0);
    CHECK(bounded.limit() == 10);
    CHECK(bounded.room() == 10);
    const PendingOutput contract_bound;
    CHECK(contract_bound.limit() == 4 * 1024 * 1024);
    CHECK(contract_bound.room() == 4 * 1024 * 1024);
}

TEST_CASE("PendingOutput room is the limit minus what waits and 0 at or over the limit") {
    PendingOutput output(10);
    output.append(bytes_of("abcd"));
    CHECK(output.size() == 4);
    CHECK(output.room() == 6);
    output.append(bytes_of("efghij"));
    CHECK(output.size() == 10);
    CHECK(output.room() == 0);
    output.append(bytes_of("klmno"));  // over the limit is allowed, never required
    CHECK(output.size() == 15);
    CHECK(output.room() == 0);
}

TEST_CASE("flush_to with nothing waiting reports done with 0 bytes sent") {
    const SocketPair pair = make_nonblocking_socketpair();
    PendingOutput output;
    const auto result = output.flush_to(pair.sender.get());
    CHECK(result.status == FlushStatus::done);
    CHECK(result.bytes_sent == 0);
    CHECK(result.error == 0);
}

TEST_CASE("flush_to a socket with room sends everything and reports done with the exact count") {
    const SocketPair pair = make_nonblocking_socketpair();
    PendingOutput output;
    const std::string_view message("hello\0world", 11);  // a NUL inside: bytes, not a C string
    output.append(bytes_of(message));
    const auto result = output.flush_to(pair.sender.get());
    CHECK(result.status == FlushStatus::done);
    CHECK(result.bytes_sent == 11);
    CHECK(result.error == 0);
    CHECK(output.empty());
    const std::vector<std::byte> received = drain(pair.receiver.get());
    REQUIRE(received.size() == 11);
    CHECK(std::string_view(reinterpret_cast<const char*>(received.data()), received.size()) == message);
}

TEST_CASE("flush_to a full socket reports would_block with a partial count and later flushes deliver all in order") {
    const SocketPair pair = make_nonblocking_socketpair();
    const int small = 4096;  // the kernel doubles it: about 8 KiB in flight
    REQUIRE(::setsockopt(pair.sender.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    const std::vector<std::byte> first = pattern(1024 * 1024);
    PendingOutput output;
    output.append(first);

    const auto partial = output.flush_to(pair.sender.get());
    CHECK(partial.status == FlushStatus::would_block);
    CHECK(partial.error == 0);
    CHECK(partial.bytes_sent > 0);
    CHECK(partial.bytes_sent < first.size());
    CHECK(output.size() == first.size() - partial.bytes_sent);
    CHECK(output.room() == output.limit() - output.size());

    // Bytes appended while some wait must go out after them.
    const std::string_view second = "and then the tail";
    output.append(bytes_of(second));
    std::vector<std::byte> expected = first;
    expected.insert(expected.end(), bytes_of(second).begin(), bytes_of(second).end());

    std::vector<std::byte> received;
    PendingOutput::FlushResult result = partial;
    std::size_t sent_total = partial.bytes_sent;
    while (result.status == FlushStatus::would_block) {
        // The send buffer is full, so the peer has something to read; reading
        // it frees room for the next flush. Each round must make progress.
        const std::vector<std::byte> chunk = drain(pair.receiver.get());
        REQUIRE_FALSE(chunk.empty());
        received.insert(received.end(), chunk.begin(), chunk.end());
        result = output.flush_to(pair.sender.get());
        REQUIRE(result.status != FlushStatus::error);
        sent_total += result.bytes_sent;
    }
    const std::vector<std::byte> rest = drain(pair.receiver.get());
    received.insert(received.end(), rest.begin(), rest.end());

    CHECK(output.empty());
    CHECK(sent_total == expected.size());
    CHECK(received.size() == expected.size());
    const bool same_bytes_in_order = received == expected;  // a plain bool: Catch2 cannot print bytes
    CHECK(same_bytes_in_order);
}

TEST_CASE("flush_to a closed peer reports error EPIPE without SIGPIPE and keeps the bytes") {
    // SIGPIPE at its default action kills the process: if flush_to let the
    // kernel raise it, this test program would die here.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    struct sigaction saved {};
    REQUIRE(::sigaction(SIGPIPE, &default_action, &saved) == 0);

    SocketPair pair = make_nonblocking_socketpair();
    pair.receiver.reset();
    PendingOutput output;
    output.append(bytes_of("hello"));
    const auto result = output.flush_to(pair.sender.get());
    ::sigaction(SIGPIPE, &saved, nullptr);

    CHECK(result.status == FlushStatus::error);
    CHECK(result.error == EPIPE);
    CHECK(result.bytes_sent == 0);
    CHECK(output.size() == 5);
}

TEST_CASE("flush_and_count adds what it sent to both counts and logs a failed send with the peer") {
    SocketPair pair = make_nonblocking_socketpair();
    PendingOutput pending;
    pending.append(bytes_of("echo"));
    std::uint64_t echoed = 10, total = 100;
    const iomodels::EventLog log(false);
    CHECK(iomodels::flush_and_count(pending, pair.sender.get(), "127.0.0.1:40000", echoed, total, log) ==
          FlushStatus::done);
    CHECK(echoed == 14);
    CHECK(total == 104);

    pair.receiver.reset();
    pending.append(bytes_of("lost"));
    const std::string err = harness::output_of(stderr, [&] {
        CHECK(iomodels::flush_and_count(pending, pair.sender.get(), "127.0.0.1:40000", echoed, total, log) ==
              FlushStatus::error);
    });
    CHECK(echoed == 14);
    CHECK(total == 104);
    CHECK(err.find("send to 127.0.0.1:40000: send: ") != std::string::npos);
    CHECK(err.find("[EPIPE]") != std::string::npos);
}
