// PendingOutput: the bytes a non-blocking server has received on a
// connection but could not send back yet, because send() took only part of
// them (a partial write) or none (EAGAIN).
//
// It also holds the contract's bound on memory: a peer that never reads
// must not make the server buffer without limit. While room() is 0 the server
// stops reading from that peer (and stops asking to be told it is readable);
// once flush_to() has sent some bytes, room() grows again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/server.hpp"

namespace iomodels {

class PendingOutput {
public:
    static constexpr std::size_t default_limit = 4 * 1024 * 1024;  // CONTRACT.md

    explicit PendingOutput(std::size_t limit = default_limit) : limit_(limit) {}

    enum class FlushStatus {
        done,         // everything was sent; empty() is now true
        would_block,  // the socket's send buffer is full (EAGAIN): wait for "writable"
        error,        // send failed; `error` has errno (EPIPE, ECONNRESET, ...)
    };
    struct FlushResult {
        FlushStatus status;
        std::size_t bytes_sent;  // sent by this call, also when status is not done
        int error;               // errno when status == error, else 0
    };

    // Queues bytes after those already waiting. Appending more than room()
    // is allowed (the caller sized its read with room()), never required.
    void append(std::span<const std::byte> bytes);

    // send(2)s waiting bytes (MSG_NOSIGNAL) until done, EAGAIN or an error.
    // EINTR is retried. Meant for a non-blocking socket.
    FlushResult flush_to(int fd);

    [[nodiscard]] std::size_t size() const noexcept { return bytes_.size() - sent_; }
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }
    // How many more bytes may be read for this peer before the limit is reached.
    [[nodiscard]] std::size_t room() const noexcept { return size() >= limit_ ? 0 : limit_ - size(); }
    [[nodiscard]] std::size_t limit() const noexcept { return limit_; }

private:
    std::vector<std::byte> bytes_;
    std::size_t sent_ = 0;  // bytes_[0, sent_) are already sent
    std::size_t limit_;
};

// flush_to for an echo server's connection, as 03 to 09 call it: the bytes
// sent are added to `echoed` (the connection's count) and `total_echoed`
// (the summary's), and a failed send is logged as
// "send to PEER: send: Broken pipe [EPIPE]". On error, close the connection.
// (02-nonblocking writes this loop out: there it is the lesson.)
PendingOutput::FlushStatus flush_and_count(PendingOutput& pending, int fd, std::string_view peer,
                                           std::uint64_t& echoed, std::uint64_t& total_echoed,
                                           const EventLog& log);

}  // namespace iomodels
