// Event bits as names, the way strace prints them ("EPOLLIN|EPOLLRDHUP"),
// so that a server's log line can be read beside its trace.
#pragma once

#include <cstdint>
#include <string>

namespace iomodels {

// poll(2)'s events/revents: "POLLIN|POLLRDHUP"; "0" for none.
std::string poll_event_names(short events);

// epoll(7)'s events, including the flags EPOLLET, EPOLLONESHOT and
// EPOLLEXCLUSIVE: "EPOLLIN|EPOLLRDHUP|EPOLLET"; "0" for none. Unknown bits
// are shown in hex.
std::string epoll_event_names(std::uint32_t events);

// The si_code of a signal raised by signal-driven I/O (O_ASYNC): "POLL_IN",
// "POLL_OUT", "POLL_ERR", "POLL_HUP"...; "SI_KERNEL" for the plain SIGIO the
// kernel sends when a real-time signal could not be queued.
std::string sigpoll_code_name(int code);

}  // namespace iomodels
