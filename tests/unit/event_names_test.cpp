// Event bits printed as names, the way strace prints them.
#include "common/event_names.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>

#include "catch.hpp"

using iomodels::epoll_event_names;
using iomodels::poll_event_names;

TEST_CASE("epoll events are named in strace's order, flags included") {
    CHECK(epoll_event_names(EPOLLIN) == "EPOLLIN");
    CHECK(epoll_event_names(EPOLLIN | EPOLLRDHUP | EPOLLET) == "EPOLLIN|EPOLLRDHUP|EPOLLET");
    CHECK(epoll_event_names(EPOLLOUT | EPOLLERR | EPOLLHUP) == "EPOLLOUT|EPOLLERR|EPOLLHUP");
    CHECK(epoll_event_names(EPOLLIN | EPOLLONESHOT) == "EPOLLIN|EPOLLONESHOT");
}

TEST_CASE("no event is \"0\" and unknown bits are shown in hex, not dropped") {
    CHECK(epoll_event_names(0) == "0");
    CHECK(poll_event_names(0) == "0");
    CHECK(epoll_event_names(EPOLLIN | 0x00100000u) == "EPOLLIN|0x100000");
    CHECK(poll_event_names(static_cast<short>(POLLOUT | 0x4000)) == "POLLOUT|0x4000");
}

TEST_CASE("poll events are named, the ones poll reports unasked included") {
    CHECK(poll_event_names(POLLIN | POLLRDHUP) == "POLLIN|POLLRDHUP");
    CHECK(poll_event_names(POLLERR | POLLHUP | POLLNVAL) == "POLLERR|POLLHUP|POLLNVAL");
}

TEST_CASE("the si_code of signal-driven I/O is named, and the overflow SIGIO's too") {
    CHECK(iomodels::sigpoll_code_name(POLL_IN) == "POLL_IN");
    CHECK(iomodels::sigpoll_code_name(POLL_OUT) == "POLL_OUT");
    CHECK(iomodels::sigpoll_code_name(POLL_HUP) == "POLL_HUP");
    CHECK(iomodels::sigpoll_code_name(SI_KERNEL) == "SI_KERNEL");
    CHECK(iomodels::sigpoll_code_name(12345) == "12345");
}
