// The grader's models: one for each way a chapter serves its clients, with
// the chapter that teaches it. tests/grade/grade.cpp lists them (grade
// --list), graded_server.cpp maps a model to what the conformance suite
// expects of it, and fingerprint.cpp holds each model's rules.
#pragma once

#include <array>
#include <string_view>

#include "conformance/server_under_test.hpp"

namespace grade {

struct ModelInfo {
    std::string_view name;       // "epoll-et": the MODEL of `grade MODEL`
    std::string_view chapter;    // "06-epoll-et"
    std::string_view reference;  // the chapter's server that keeps it: "06-epoll-et/server"
    std::string_view summary;    // one line for --list
    conformance::Model serves;   // what the conformance cases expect of its clients
    bool udp = false;            // a UDP echo server: the [udp] cases instead of the TCP suite
};

inline constexpr std::array<ModelInfo, 13> models{{
    {"blocking-iterative", "01-blocking", "01-blocking/server_iterative",
     "blocking accept and recv, one client at a time", conformance::Model::one_at_a_time},
    {"fork", "01-blocking", "01-blocking/server", "blocking calls, one child process per connection",
     conformance::Model::process_per_connection},
    {"thread", "01-blocking", "01-blocking/server_thread", "blocking calls, one thread per connection",
     conformance::Model::thread_per_connection},
    {"nonblocking", "02-nonblocking", "02-nonblocking/server", "O_NONBLOCK sockets polled in one loop, EAGAIN answered",
     conformance::Model::busy_polling},
    {"select", "03-select", "03-select/server", "one thread waiting in select or pselect",
     conformance::Model::event_loop},
    {"poll", "04-poll", "04-poll/server", "one thread waiting in poll or ppoll", conformance::Model::event_loop},
    {"epoll-lt", "05-epoll-lt", "05-epoll-lt/server", "one thread waiting in epoll_wait, level-triggered",
     conformance::Model::event_loop},
    {"epoll-et", "06-epoll-et", "06-epoll-et/server",
     "one thread waiting in epoll_wait, edge-triggered: every socket drained to EAGAIN",
     conformance::Model::event_loop},
    {"rtsig-udp", "07-rtsig-udp", "07-rtsig-udp/server",
     "a UDP echo server: F_SETSIG and O_ASYNC on its socket, the real-time signals taken with sigwaitinfo",
     conformance::Model::event_loop, true},
    {"rtsig-tcp", "08-rtsig-tcp", "08-rtsig-tcp/server",
     "F_SETSIG and O_ASYNC on every socket, the real-time signals taken with sigwaitinfo",
     conformance::Model::event_loop},
    {"aio-kernel", "09-aio-kernel", "09-aio-kernel/server",
     "kernel AIO poll requests (IOCB_CMD_POLL) submitted with io_submit, completions from io_getevents",
     conformance::Model::event_loop},
    {"aio-posix", "10-aio-posix", "10-aio-posix/server", "POSIX AIO: aio_read and aio_write, done by glibc's threads",
     conformance::Model::thread_per_connection},
    {"io-uring", "09-aio-kernel", "09-aio-kernel/uring_server",
     "io_uring ACCEPT, RECV and SEND requests: the kernel waits and copies, completions from the CQ ring",
     conformance::Model::event_loop},
}};

inline const ModelInfo* find_model(std::string_view name) {
    for (const ModelInfo& model : models) {
        if (model.name == name) {
            return &model;
        }
    }
    return nullptr;
}

}  // namespace grade
