#include "common/event_names.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>

#include <cstdio>
#include <initializer_list>
#include <utility>

namespace iomodels {

namespace {

using BitName = std::pair<std::uint32_t, const char*>;

std::string names_of(std::uint32_t events, std::initializer_list<BitName> names) {
    std::string text;
    std::uint32_t known = 0;
    for (const auto& [bit, name] : names) {
        known |= bit;
        if ((events & bit) != 0) {
            text += text.empty() ? "" : "|";
            text += name;
        }
    }
    if (const std::uint32_t unknown = events & ~known; unknown != 0) {
        char hex[16];
        std::snprintf(hex, sizeof hex, "%#x", unknown);
        text += text.empty() ? "" : "|";
        text += hex;
    }
    return text.empty() ? "0" : text;
}

}  // namespace

std::string poll_event_names(short events) {
    return names_of(static_cast<unsigned short>(events), {
                                                             {POLLIN, "POLLIN"},
                                                             {POLLPRI, "POLLPRI"},
                                                             {POLLOUT, "POLLOUT"},
                                                             {POLLRDHUP, "POLLRDHUP"},
                                                             {POLLERR, "POLLERR"},
                                                             {POLLHUP, "POLLHUP"},
                                                             {POLLNVAL, "POLLNVAL"},
                                                             {POLLRDNORM, "POLLRDNORM"},
                                                             {POLLRDBAND, "POLLRDBAND"},
                                                             {POLLWRNORM, "POLLWRNORM"},
                                                             {POLLWRBAND, "POLLWRBAND"},
                                                             {POLLMSG, "POLLMSG"},
                                                         });
}

std::string epoll_event_names(std::uint32_t events) {
    return names_of(events, {
                                {EPOLLIN, "EPOLLIN"},
                                {EPOLLPRI, "EPOLLPRI"},
                                {EPOLLOUT, "EPOLLOUT"},
                                {EPOLLRDHUP, "EPOLLRDHUP"},
                                {EPOLLERR, "EPOLLERR"},
                                {EPOLLHUP, "EPOLLHUP"},
                                {EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"},
                                {EPOLLWAKEUP, "EPOLLWAKEUP"},
                                {EPOLLONESHOT, "EPOLLONESHOT"},
                                {EPOLLET, "EPOLLET"},
                            });
}

std::string sigpoll_code_name(int code) {
    switch (code) {
        case POLL_IN: return "POLL_IN";
        case POLL_OUT: return "POLL_OUT";
        case POLL_MSG: return "POLL_MSG";
        case POLL_ERR: return "POLL_ERR";
        case POLL_PRI: return "POLL_PRI";
        case POLL_HUP: return "POLL_HUP";
        case SI_KERNEL: return "SI_KERNEL";
        case SI_USER: return "SI_USER";
        case SI_QUEUE: return "SI_QUEUE";
        default: return std::to_string(code);
    }
}

}  // namespace iomodels
