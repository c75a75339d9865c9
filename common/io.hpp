// Complete reads and writes: the loops every correct program needs and no
// chapter teaches. One read or write may move fewer bytes than asked (a
// "partial" transfer), and a signal handler may interrupt it (EINTR); these
// helpers finish the job or report why they could not.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>

namespace iomodels {

// write(2) until every byte is written. Returns true, or false with errno set
// (EINTR is retried, never returned). For files, pipes and terminals.
bool write_all(int fd, std::span<const std::byte> bytes);

// send(2) with MSG_NOSIGNAL until every byte is sent: a peer that has gone
// away yields EPIPE instead of a SIGPIPE that would kill the process.
// Returns true, or false with errno set. For blocking sockets.
bool send_all(int fd, std::span<const std::byte> bytes);

// read(2) until `buffer` is full or end of file. Returns the number of bytes
// read (less than buffer.size() only at end of file), or -1 with errno set;
// after an error, bytes read before it are in `buffer` but not counted, so
// use it where an error ends the exchange. For blocking descriptors.
ssize_t read_exact(int fd, std::span<std::byte> buffer);

// Adds O_NONBLOCK with F_GETFL then F_SETFL, keeping the descriptor's other
// status flags (F_SETFL with O_NONBLOCK alone would clear O_APPEND, O_ASYNC,
// ...). Returns false with errno set on failure.
bool set_nonblocking(int fd);

}  // namespace iomodels
