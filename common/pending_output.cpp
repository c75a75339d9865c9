#include "common/pending_output.hpp"

#include <errno.h>
#include <sys/socket.h>

#include <string>

#include "common/errors.hpp"

namespace iomodels {

void PendingOutput::append(std::span<const std::byte> bytes) {
    // Drop the already-sent front once it is at least half of the vector:
    // the vector stays within twice what waits, and each byte is moved a
    // bounded number of times however small the appends.
    if (sent_ > 0 && sent_ >= bytes_.size() / 2) {
        bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(sent_));
        sent_ = 0;
    }
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
}

PendingOutput::FlushResult PendingOutput::flush_to(int fd) {
    std::size_t sent_now = 0;
    while (!empty()) {
        const ssize_t sent = ::send(fd, bytes_.data() + sent_, size(), MSG_NOSIGNAL);
        if (sent == -1) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return {FlushStatus::would_block, sent_now, 0};
            }
            return {FlushStatus::error, sent_now, errno};
        }
        sent_ += static_cast<std::size_t>(sent);  // maybe partial: loop for the rest
        sent_now += static_cast<std::size_t>(sent);
    }
    bytes_.clear();
    sent_ = 0;
    return {FlushStatus::done, sent_now, 0};
}

PendingOutput::FlushStatus flush_and_count(PendingOutput& pending, int fd, std::string_view peer,
                                           std::uint64_t& echoed, std::uint64_t& total_echoed,
                                           const EventLog& log) {
    const auto result = pending.flush_to(fd);
    echoed += result.bytes_sent;
    total_echoed += result.bytes_sent;
    if (result.status == PendingOutput::FlushStatus::error) {
        log("send to %.*s: %s", static_cast<int>(peer.size()), peer.data(),
            describe_failure("send", result.error).c_str());
    }
    return result.status;
}

}  // namespace iomodels
