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

}  // namespace iomodels
