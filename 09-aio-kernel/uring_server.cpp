// 09-aio-kernel/uring_server.cpp: an echo server on io_uring, the interface
// that replaced kernel AIO (Linux 5.1), in the three steps of the lesson:
//
//   --poll       IORING_OP_POLL_ADD, then recv()/send() system calls:
//                readiness, as server.cpp's IOCB_CMD_POLL (phase 2 is ours)
//   (default)    IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND: the kernel
//                waits *and* copies; a CQE says "done, N bytes"
//   --multishot  one ACCEPT and one RECV per connection that keep completing
//                (IORING_CQE_F_MORE), into buffers the kernel takes from a
//                ring we give it (IORING_REGISTER_PBUF_RING)
//   --sqpoll     with any of them: a kernel thread takes the SQEs from the
//                ring, so submitting needs no system call at all
//
// One io_uring_enter per round submits every SQE prepared and sleeps until
// a CQE comes; then every CQE in the ring is handled.
//
// The ring is set up with IORING_SETUP_DEFER_TASKRUN (Linux 6.1; with
// SINGLE_ISSUER: one thread submits): the kernel finishes a completion's
// work in our io_uring_enter, instead of interrupting this thread for each
// one (an inter-processor interrupt, which the CPU of whoever sent the data
// pays). --no-defer-taskrun puts the old way back, to compare; --sqpoll
// cannot have it.
//
// usage: uring_server [PORT] [--host ADDR] [--quiet] [--poll | --multishot] [--sqpoll] [--no-defer-taskrun]
//        (PORT 8009)
//
// strace: strace -e trace=io_uring_setup,io_uring_enter,accept4,recvfrom,sendto ./build/09-aio-kernel/uring_server 0
//   io_uring_setup(256, {...}) = 4, then only io_uring_enter(4, N, 1, IORING_ENTER_GETEVENTS, ...):
//   no accept4, recvfrom or sendto at all (with --poll, recvfrom and sendto come back).
//
// Read `main`'s loop first; the functions above it are its steps.

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/errors.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/pending_output.hpp"
#include "common/server.hpp"
#include "common/unique_fd.hpp"
#include "uring_abi.hpp"

using namespace iomodels;

namespace {

enum class Mode { poll, completion, multishot };

// --sqpoll: how long the kernel's thread polls the SQ ring before it
// sleeps (IORING_SQ_NEED_WAKEUP), and how long we poll the CQ ring before
// we sleep in io_uring_enter. Two threads busy while there is work, so that
// neither side needs a system call; both asleep when there is none.
constexpr std::chrono::milliseconds sqpoll_idle{10};

struct Settings {
    Mode mode = Mode::completion;
    bool sqpoll = false;
    bool defer_taskrun = true;  // not with --sqpoll
    unsigned entries = 256;  // SQ ring size; the CQ ring has 4 times as many
    // --sqpoll: how long we poll the CQ ring. 0 where this process may run
    // on one CPU only: the SQ thread shares it, and our polling would keep
    // it off that CPU until the scheduler preempts us (8 ms round trips).
    std::chrono::milliseconds cq_polling = sqpoll_idle;
};

// What a request is for: the low 3 bits of its user_data. The other bits
// are the address of its Connection (nullptr: the listening socket), which
// lives until no request of its own is in flight.
enum class Purpose : std::uint64_t { accept = 1, poll = 2, receive = 3, send = 4, cancel = 5 };
constexpr std::uint64_t purpose_bits = 7;

// Bytes received and not yet sent back: in a buffer of the connection's
// own, or (--multishot) in a buffer of the ring, which goes back to the
// ring once its bytes are sent, not before.
struct Chunk {
    std::unique_ptr<std::byte[]> own;  // null for a ring buffer
    std::byte* data = nullptr;
    std::size_t length = 0;
    std::size_t sent = 0;
    int ring_buffer = -1;  // the buffer's id in the ring; -1: own
};

struct alignas(purpose_bits + 1) Connection {
    unique_fd fd;
    std::string peer;
    std::deque<Chunk> outgoing;  // the front one is being sent
    std::size_t held = 0;        // bytes in `outgoing` not sent yet
    std::size_t held_in_ring = 0;
    PendingOutput pending;  // --poll: what recv() got and send() has not taken
    std::unique_ptr<std::byte[]> spare;  // a sent chunk's buffer, for the next single-shot RECV
    bool receiving = false;  // a RECV (or, --poll, a POLL_ADD) in flight
    bool multishot = false;  // ... and it is a multishot RECV
    bool ring_was_empty = false;  // the last multishot RECV ended with -ENOBUFS: the next is single-shot
    bool sending = false;    // a SEND in flight: one at a time keeps the bytes in order
    bool peer_finished = false;
    bool failed = false;           // an error: cancel what is in flight, then close
    bool cancelled_all = false;    // the cancel for `failed` is submitted
    bool ending_multishot = false;  // the cancel of the multishot RECV is in flight
    int requests = 0;              // requests of its own in flight, cancels included: it lives until 0
    std::uint64_t echoed = 0;
};

struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t bytes_echoed = 0;
    std::uint64_t sqes = 0;
    std::uint64_t cqes = 0;
    std::uint64_t enter_calls = 0;
    std::uint64_t short_sends = 0;  // SENDs that took fewer bytes than asked: the rest sent again
    std::uint64_t wakeups = 0;  // --sqpoll: io_uring_enter(IORING_ENTER_SQ_WAKEUP)
    std::uint64_t no_buffer = 0;  // --multishot: receives that found the buffer ring empty
    std::uint64_t cq_overflows = 0;  // rounds that found the CQ ring overflowed (IORING_SQ_CQ_OVERFLOW)

    [[nodiscard]] std::vector<Count> list(const Settings& settings) const {
        std::vector<Count> counts{{connections, "connections"},
                                  {bytes_echoed, "bytes echoed"},
                                  {sqes, "SQEs submitted"},
                                  {cqes, "CQEs reaped"},
                                  {enter_calls, "io_uring_enter calls"}};
        if (settings.mode != Mode::poll) {
            counts.push_back({short_sends, "short sends"});
        }
        if (settings.sqpoll) {
            counts.push_back({wakeups, "SQ thread wakeups"});
        }
        if (settings.mode == Mode::multishot) {
            counts.push_back({no_buffer, "receives without a free buffer"});
        }
        counts.push_back({cq_overflows, "CQ overflows"});
        return counts;
    }
};

// --multishot's provided buffer ring (IORING_REGISTER_PBUF_RING, Linux
// 5.19): `count` buffers that the kernel picks from, one per CQE of a
// multishot RECV, naming it by id in the CQE's flags. The ring is ours to
// write (its tail) and the kernel's to read, like the SQ ring.
class BufferRing {
public:
    static constexpr unsigned count = 256;               // a power of two
    static constexpr std::size_t buffer_size = 16 * 1024;  // 4 MiB in all
    static constexpr std::uint16_t group = 0;              // sqe->buf_group

    // Maps the ring and the buffers (populated now: their memory is taken
    // once, at start), registers the ring, and gives it every buffer.
    bool setup(int ring_fd, std::string& failed_call) {
        ring_ = map_memory(count * sizeof(io_uring_buf), -1, 0);
        memory_ = map_memory(count * buffer_size, -1, 0, MAP_POPULATE);
        if (!ring_ || !memory_) {
            failed_call = "mmap buffer ring";
            return false;
        }
        io_uring_buf_reg registration{};
        registration.ring_addr = reinterpret_cast<std::uint64_t>(ring_.get());
        registration.ring_entries = count;
        registration.bgid = group;
        if (io_uring_register(ring_fd, IORING_REGISTER_PBUF_RING, &registration, 1) == -1) {
            failed_call = "io_uring_register IORING_REGISTER_PBUF_RING";
            return false;
        }
        for (unsigned id = 0; id < count; ++id) {
            put(id);
        }
        return true;
    }

    [[nodiscard]] std::byte* buffer(unsigned id) const { return memory_.get() + id * buffer_size; }

    // A CQE named buffer `id`: it is ours until we give it back, which puts
    // it at the ring's tail; the store-release of the tail hands it to the
    // kernel again.
    void give_back(unsigned id) { put(id); }

private:
    void put(unsigned id) {
        auto* bufs = reinterpret_cast<io_uring_buf*>(ring_.get());
        io_uring_buf& slot = bufs[tail_ & (count - 1)];
        slot.addr = reinterpret_cast<std::uint64_t>(buffer(id));
        slot.len = buffer_size;
        slot.bid = static_cast<std::uint16_t>(id);
        ++tail_;
        std::atomic_ref<std::uint16_t>(reinterpret_cast<io_uring_buf_ring*>(ring_.get())->tail)
            .store(tail_, std::memory_order_release);
    }

    unique_mapping ring_, memory_;
    std::uint16_t tail_ = 0;  // the ring's tail as we last wrote it (16 bits wide, and wraps)
};

struct Server {
    const Settings& settings;
    const EventLog& log;
    Ring& ring;
    BufferRing buffers{};
    int listen_fd = -1;
    bool accepting = false;  // an ACCEPT (or POLL_ADD) on the listening socket is in flight
    sockaddr_in accepted_peer{};  // filled in by a single-shot ACCEPT
    socklen_t accepted_peer_length = sizeof accepted_peer;
    std::unordered_map<Connection*, std::unique_ptr<Connection>> connections{};
    std::uint64_t in_flight = 0;  // requests submitted and not yet finished (their last CQE)
    Counters counters{};
};

// The buffer of a single-shot RECV. A connection keeps one spare for the
// next (Connection::spare): a new one per RECV costs a malloc and a free,
// and zeroing 64 KiB for every message of 512 bytes tripled the CPU per echo.
constexpr std::size_t own_buffer_size = 64 * 1024;

// A per-connection share of the buffer ring: a peer that never reads can
// hold 16 buffers, and no more, so that the other connections find some.
constexpr std::size_t ring_share = 16 * BufferRing::buffer_size;

std::uint64_t user_data(Connection* connection, Purpose purpose) {
    return reinterpret_cast<std::uint64_t>(connection) | static_cast<std::uint64_t>(purpose);
}

// The next SQE to fill in, for a request of `connection` (nullptr: of the
// listening socket, or the final cancel). If the SQ ring is full, what is
// in it is submitted first (with --sqpoll, waited for: the kernel's thread
// takes it).
io_uring_sqe& next_sqe(Server& server, Connection* connection, Purpose purpose) {
    for (;;) {
        if (io_uring_sqe* sqe = server.ring.get_sqe()) {
            ++server.counters.sqes;
            ++server.in_flight;
            if (connection != nullptr) {
                ++connection->requests;
            }
            sqe->user_data = user_data(connection, purpose);
            return *sqe;
        }
        const unsigned waiting = server.ring.publish();
        ++server.counters.enter_calls;
        if (io_uring_enter(server.ring.fd(), server.settings.sqpoll ? 0 : waiting, 0,
                           server.settings.sqpoll ? IORING_ENTER_SQ_WAKEUP | IORING_ENTER_SQ_WAIT : 0,
                           nullptr) == -1 &&
            errno != EINTR && errno != EAGAIN) {  // EAGAIN: no memory for a request now; again
            report_failure("io_uring_enter", errno);
            std::exit(1);  // the ring itself is broken: nothing can be submitted or cancelled
        }
    }
}

// Asks for the next client: an ACCEPT (multishot: one for all of them), or,
// --poll or `readiness_only`, a POLL_ADD on the listening socket.
void arm_accept(Server& server, bool readiness_only = false) {
    const bool poll = server.settings.mode == Mode::poll || readiness_only;
    io_uring_sqe& sqe = next_sqe(server, nullptr, poll ? Purpose::poll : Purpose::accept);
    sqe.fd = server.listen_fd;
    if (poll) {
        sqe.opcode = IORING_OP_POLL_ADD;
        sqe.poll32_events = POLLIN;
    } else {
        sqe.opcode = IORING_OP_ACCEPT;
        sqe.accept_flags = SOCK_CLOEXEC;
        if (server.settings.mode == Mode::multishot) {
            sqe.ioprio = IORING_ACCEPT_MULTISHOT;  // no address: one buffer cannot serve many CQEs
        } else {
            server.accepted_peer_length = sizeof server.accepted_peer;
            sqe.addr = reinterpret_cast<std::uint64_t>(&server.accepted_peer);
            sqe.addr2 = reinterpret_cast<std::uint64_t>(&server.accepted_peer_length);
        }
    }
    server.accepting = true;
}

// --poll: a one-shot POLL_ADD for what the connection can take now (as
// server.cpp's interest()).
void arm_poll(Server& server, Connection& connection) {
    std::uint32_t events = 0;
    if (!connection.peer_finished && connection.pending.room() > 0) {
        events |= POLLIN | POLLRDHUP;
    }
    if (!connection.pending.empty()) {
        events |= POLLOUT;
    }
    io_uring_sqe& sqe = next_sqe(server, &connection, Purpose::poll);
    sqe.opcode = IORING_OP_POLL_ADD;
    sqe.fd = connection.fd.get();
    sqe.poll32_events = events;
    connection.receiving = true;
}

// A RECV for the connection, if it may take more bytes: a multishot one
// into the buffer ring while its share of the ring allows (--multishot),
// else a single-shot one into a buffer of its own.
void arm_receive(Server& server, Connection& connection) {
    if (connection.receiving || connection.peer_finished || connection.failed ||
        connection.held >= PendingOutput::default_limit) {
        return;  // a peer that never reads: its reads stop here, until it reads
    }
    io_uring_sqe& sqe = next_sqe(server, &connection, Purpose::receive);
    sqe.opcode = IORING_OP_RECV;
    sqe.fd = connection.fd.get();
    connection.receiving = true;
    connection.multishot = server.settings.mode == Mode::multishot && connection.held_in_ring < ring_share &&
                           !connection.ring_was_empty;
    connection.ring_was_empty = false;
    if (connection.multishot) {
        sqe.ioprio = IORING_RECV_MULTISHOT;
        sqe.flags = IOSQE_BUFFER_SELECT;  // the kernel picks a buffer per CQE
        sqe.buf_group = BufferRing::group;
        return;
    }
    // Lab: a single-shot RECV: queue a Chunk at the back of connection.outgoing whose buffer (own, and data) is
    // Lab: connection.spare if there is one, else a new one of own_buffer_size bytes; point the SQE's addr at it
    // Lab: and its len at what the 4 MiB limit leaves (PendingOutput::default_limit - connection.held), at most
    // Lab: own_buffer_size. Its CQE says how many bytes the kernel put there (received() fills in length).
    // Lab stub: static_cast<void>(sqe);
    Chunk& chunk = connection.outgoing.emplace_back();  // filled by the CQE; sent once it is
    chunk.own = connection.spare ? std::move(connection.spare)
                                 : std::make_unique_for_overwrite<std::byte[]>(own_buffer_size);
    chunk.data = chunk.own.get();
    sqe.addr = reinterpret_cast<std::uint64_t>(chunk.data);
    sqe.len = static_cast<std::uint32_t>(std::min(own_buffer_size, PendingOutput::default_limit - connection.held));
    // Lab end.
}

// A SEND of the front chunk's unsent bytes, if none is in flight.
void arm_send(Server& server, Connection& connection) {
    if (connection.sending || connection.failed || connection.outgoing.empty()) {
        return;
    }
    Chunk& chunk = connection.outgoing.front();
    if (chunk.length == 0) {
        return;  // the buffer of a RECV still in flight: nothing in it yet
    }
    // Lab: take an SQE (next_sqe, Purpose::send) and fill a SEND of the chunk's unsent bytes, from
    // Lab: chunk.data + chunk.sent, with MSG_NOSIGNAL; then mark the connection as sending (one SEND at a time).
    // Lab stub: static_cast<void>(server), static_cast<void>(chunk);
    io_uring_sqe& sqe = next_sqe(server, &connection, Purpose::send);
    sqe.opcode = IORING_OP_SEND;
    sqe.fd = connection.fd.get();
    sqe.addr = reinterpret_cast<std::uint64_t>(chunk.data + chunk.sent);
    sqe.len = static_cast<std::uint32_t>(chunk.length - chunk.sent);
    sqe.msg_flags = MSG_NOSIGNAL;  // a peer gone: -EPIPE in the CQE, not a SIGPIPE
    connection.sending = true;
    // Lab end.
}

// After an error: cancels every request in flight on the connection's
// socket (IORING_OP_ASYNC_CANCEL keyed by descriptor, all of them). Each
// completes with -ECANCELED, and the connection closes after the last.
void cancel_all(Server& server, Connection& connection) {
    if (connection.cancelled_all || connection.requests == 0) {
        return;
    }
    io_uring_sqe& sqe = next_sqe(server, &connection, Purpose::cancel);
    sqe.opcode = IORING_OP_ASYNC_CANCEL;
    sqe.fd = connection.fd.get();
    sqe.cancel_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    connection.cancelled_all = true;
}

// Ends the connection's multishot RECV (IORING_OP_ASYNC_CANCEL keyed by
// its user_data), and that one only: a SEND in flight goes on.
void end_multishot(Server& server, Connection& connection) {
    if (connection.ending_multishot) {
        return;
    }
    io_uring_sqe& sqe = next_sqe(server, &connection, Purpose::cancel);
    sqe.opcode = IORING_OP_ASYNC_CANCEL;
    sqe.addr = user_data(&connection, Purpose::receive);
    connection.ending_multishot = true;
}

// Once no request of its own is in flight: the connection is closed if
// it failed, or is finished (end of file, everything echoed). Its ring
// buffers go back to the ring.
void close_if_done(Server& server, Connection& connection) {
    const bool finished = connection.peer_finished && connection.held == 0 && connection.pending.empty();
    if (connection.requests > 0 || !(connection.failed || finished)) {
        return;
    }
    for (const Chunk& chunk : connection.outgoing) {
        if (chunk.ring_buffer >= 0) {
            server.buffers.give_back(static_cast<unsigned>(chunk.ring_buffer));
        }
    }
    server.log("closed %s (%llu bytes echoed)", connection.peer.c_str(),
               static_cast<unsigned long long>(connection.echoed));
    server.connections.erase(&connection);
}

void fail(Server& server, Connection& connection, const char* call, int error) {
    if (error != ECANCELED) {
        server.log("%s from %s: %s", call, connection.peer.c_str(), describe_failure(call, error).c_str());
    }
    connection.failed = true;
    cancel_all(server, connection);
}

// A new connection: its first request is a RECV (or a POLL_ADD).
void add_connection(Server& server, unique_fd fd, std::string peer) {
    ++server.counters.connections;
    server.log("accepted %s on fd %d", peer.c_str(), fd.get());
    auto connection = std::make_unique<Connection>();
    connection->fd = std::move(fd);
    connection->peer = std::move(peer);
    Connection& added = *connection;
    server.connections.emplace(&added, std::move(connection));
    if (server.settings.mode == Mode::poll) {
        arm_poll(server, added);
    } else {
        arm_receive(server, added);
    }
}

// The ACCEPT's CQE: res is the new socket, or -errno. Returns true if the
// next request on the listening socket must be a POLL_ADD.
//
// Out of descriptors: an ACCEPT takes its descriptor *before* it looks for
// a client, so it fails with EMFILE at once, client or not. The spare
// descriptor takes a waiting client and refuses it; if none is waiting,
// a POLL_ADD waits for one, and the ACCEPT that follows it finds one.
bool accepted(Server& server, const io_uring_cqe& cqe, DescriptorReserve& reserve) {
    if (cqe.res >= 0) {
        std::string peer;
        if (server.settings.mode == Mode::multishot) {
            const auto address = server.log.quiet() ? std::nullopt : peer_address(cqe.res);
            peer = address ? format_address(*address) : "fd " + std::to_string(cqe.res);
        } else {
            peer = format_address(server.accepted_peer);
        }
        add_connection(server, unique_fd(cqe.res), std::move(peer));
        return false;
    }
    errno = -cqe.res;
    if (errno == EMFILE || errno == ENFILE) {
        sockaddr_in peer{};
        unique_fd fd = reserve.accept_or_refuse(server.listen_fd, peer, server.log, SOCK_CLOEXEC);
        if (fd) {
            add_connection(server, std::move(fd), format_address(peer));
        }
        return !fd && (errno == EAGAIN || errno == EWOULDBLOCK);  // nobody was waiting
    }
    if (!accept_failed_harmlessly(errno) && errno != ECANCELED && !(stop_requested() && errno == EINVAL)) {
        server.log("%s", describe_failure("accept", errno).c_str());
    }
    return false;
}

// --poll: the listening socket is readable; accept4() every waiting client.
void accept_ready_clients(Server& server, DescriptorReserve& reserve) {
    for (;;) {
        sockaddr_in peer{};
        socklen_t peer_length = sizeof peer;
        unique_fd fd(::accept4(server.listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fd = reserve.accept_or_refuse(server.listen_fd, peer, server.log, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (!fd) {
            if (!accept_failed_harmlessly(errno) && errno != EMFILE && errno != ENFILE &&
                !(stop_requested() && errno == EINVAL)) {
                server.log("%s", describe_failure("accept", errno).c_str());
            }
            return;
        }
        add_connection(server, std::move(fd), format_address(peer));
    }
}

// --poll: the POLL_ADD completed with `ready` (revents). The copy is ours:
// recv() and send() system calls, as in server.cpp.
void ready(Server& server, Connection& connection, int ready) {
    std::array<std::byte, 64 * 1024> buffer;
    const auto flush = [&] {
        return flush_and_count(connection.pending, connection.fd.get(), connection.peer, connection.echoed,
                               server.counters.bytes_echoed, server.log) != PendingOutput::FlushStatus::error;
    };
    bool ok = true;
    if ((ready & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        // At most 16 reads: if more is waiting, the next POLL_ADD completes at once.
        for (int reads = 0; ok && reads < 16 && !connection.peer_finished && connection.pending.room() > 0; ++reads) {
            const ssize_t received = ::recv(connection.fd.get(), buffer.data(),
                                            std::min(buffer.size(), connection.pending.room()), 0);
            if (received > 0) {
                connection.pending.append(std::span(buffer).first(static_cast<std::size_t>(received)));
                ok = flush();
            } else if (received == 0) {
                server.log("end of file from %s", connection.peer.c_str());
                connection.peer_finished = true;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno != EINTR) {
                server.log("recv from %s: %s", connection.peer.c_str(), describe_failure("recv", errno).c_str());
                ok = false;
            }
        }
    }
    if (ok && (ready & (POLLOUT | POLLHUP | POLLERR)) != 0 && !connection.pending.empty()) {
        ok = flush();
    }
    connection.failed = !ok;
    if (ok && !(connection.peer_finished && connection.pending.empty())) {
        arm_poll(server, connection);
    }
}

// A RECV's CQE: res bytes arrived (in the chunk of the RECV, or in the ring
// buffer the CQE names), 0 is the end of file, < 0 an error.
void received(Server& server, Connection& connection, const io_uring_cqe& cqe) {
    const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;  // a multishot RECV goes on
    connection.receiving = more;
    if ((cqe.flags & IORING_CQE_F_BUFFER) != 0) {
        const unsigned id = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe.res <= 0) {
            server.buffers.give_back(id);
        } else {
            Chunk& chunk = connection.outgoing.emplace_back();
            chunk.data = server.buffers.buffer(id);
            chunk.ring_buffer = static_cast<int>(id);
            chunk.length = static_cast<std::size_t>(cqe.res);
            connection.held_in_ring += BufferRing::buffer_size;
        }
    } else if (!connection.multishot) {
        // The single-shot RECV's own chunk, the last one queued.
        Chunk& chunk = connection.outgoing.back();
        chunk.length = static_cast<std::size_t>(std::max(cqe.res, 0));
        if (chunk.length == 0) {
            connection.spare = std::move(chunk.own);
            connection.outgoing.pop_back();
        }
    }
    if (cqe.res > 0) {
        connection.held += static_cast<std::size_t>(cqe.res);
        arm_send(server, connection);
        if (more && connection.held_in_ring >= ring_share) {
            end_multishot(server, connection);  // its share of the ring is used up
        } else if (!more) {
            arm_receive(server, connection);
        }
        return;
    }
    if (cqe.res == 0) {
        server.log("end of file from %s", connection.peer.c_str());
        connection.peer_finished = true;
    } else if (cqe.res == -ENOBUFS) {
        ++server.counters.no_buffer;  // the ring is empty: the next RECV uses a buffer of its own
        connection.ring_was_empty = true;
        arm_receive(server, connection);
    } else if (cqe.res == -ECANCELED && !connection.failed) {
        arm_receive(server, connection);  // ended for the ring's share: go on in single-shot RECVs
    } else {
        fail(server, connection, "recv", -cqe.res);
    }
}

// A SEND's CQE: res bytes of the front chunk went out. A short send (fewer
// than asked) leaves the rest in the chunk, and the next SEND takes it.
void sent(Server& server, Connection& connection, const io_uring_cqe& cqe) {
    connection.sending = false;
    if (cqe.res == -ECANCELED && !connection.failed) {
        // Nobody asked: we cancel a connection's SEND only once it has
        // failed. Seen with DEFER_TASKRUN on Linux 6.18, about once in 30
        // SENDs that follow a short one, during a storm of signals. No byte
        // of it went out (a partial SEND reports its count), so it goes again.
        server.log("SEND to %s cancelled by the kernel, not by this server: sent again", connection.peer.c_str());
        arm_send(server, connection);
        return;
    }
    if (cqe.res < 0) {
        fail(server, connection, "send", -cqe.res);
        return;
    }
    const auto bytes = static_cast<std::size_t>(cqe.res);
    Chunk& chunk = connection.outgoing.front();
    server.counters.short_sends += bytes < chunk.length - chunk.sent;
    chunk.sent += bytes;
    connection.held -= bytes;
    connection.echoed += bytes;
    server.counters.bytes_echoed += bytes;
    if (chunk.sent == chunk.length) {
        if (chunk.ring_buffer >= 0) {
            server.buffers.give_back(static_cast<unsigned>(chunk.ring_buffer));  // only now
            connection.held_in_ring -= BufferRing::buffer_size;
        } else if (!connection.spare) {
            connection.spare = std::move(chunk.own);  // for the next RECV
        }
        connection.outgoing.pop_front();
    }
    arm_send(server, connection);
    arm_receive(server, connection);  // if the peer's reads had stopped, they go on
}

// One CQE: the request it finishes, by the purpose in its user_data.
void complete(Server& server, const io_uring_cqe& cqe, DescriptorReserve& reserve) {
    ++server.counters.cqes;
    if ((cqe.flags & IORING_CQE_F_MORE) == 0) {
        --server.in_flight;  // its last CQE
    }
    const auto purpose = static_cast<Purpose>(cqe.user_data & purpose_bits);
    auto* connection = reinterpret_cast<Connection*>(cqe.user_data & ~purpose_bits);
    if (connection == nullptr) {
        if (purpose == Purpose::cancel) {
            return;  // the final cancel: its targets complete on their own
        }
        server.accepting = (cqe.flags & IORING_CQE_F_MORE) != 0;
        bool wait_for_a_client = false;
        if (purpose == Purpose::accept) {
            wait_for_a_client = accepted(server, cqe, reserve);
        } else if (server.settings.mode == Mode::poll && cqe.res > 0) {
            accept_ready_clients(server, reserve);
        }
        if (!server.accepting && !stop_requested()) {
            arm_accept(server, wait_for_a_client);
        }
        return;
    }
    if ((cqe.flags & IORING_CQE_F_MORE) == 0) {
        --connection->requests;
    }
    switch (purpose) {
    case Purpose::poll:
        connection->receiving = false;
        if (cqe.res < 0) {
            fail(server, *connection, "poll", -cqe.res);
        } else {
            ready(server, *connection, cqe.res);
        }
        break;
    case Purpose::receive:
        received(server, *connection, cqe);
        break;
    case Purpose::send:
        sent(server, *connection, cqe);
        break;
    case Purpose::cancel:
        connection->ending_multishot = false;
        break;
    default:
        break;
    }
    close_if_done(server, *connection);
}

// --sqpoll: the kernel's thread submits; we look at the CQ ring without a
// system call for up to `spin`, and sleep in io_uring_enter only if
// nothing came. A signal's flag also ends the look (false).
bool completion_within(const Ring& ring, std::chrono::milliseconds spin) {
    const auto until = std::chrono::steady_clock::now() + spin;
    while (ring.completions_ready() == 0) {
        if (stop_requested() || status_request_pending() || std::chrono::steady_clock::now() >= until) {
            return false;
        }
    }
    return true;
}

// One round's system call: submit what is prepared and wait for a CQE.
// --sqpoll: wake the kernel's thread if it sleeps, and enter only to
// sleep when no CQE comes. False: a fatal error (reported).
bool submit_and_wait(Server& server) {
    const unsigned waiting = server.ring.publish();
    unsigned flags = IORING_ENTER_GETEVENTS;
    unsigned to_submit = waiting;
    if (server.settings.sqpoll) {
        to_submit = 0;  // the kernel's thread takes them
        if (waiting > 0 && server.ring.sq_needs_wakeup()) {
            flags |= IORING_ENTER_SQ_WAKEUP;  // SQEs are there, and the thread sleeps
            ++server.counters.wakeups;
        } else if (server.ring.cq_overflowed()) {
            // CQEs wait in the kernel's overflow list: only io_uring_enter
            // with IORING_ENTER_GETEVENTS moves them into the ring.
        } else if (completion_within(server.ring, server.settings.cq_polling) || stop_requested() ||
                   status_request_pending()) {
            return true;  // a CQE to reap, or a signal's flag to look at: no system call
        }
    }
    ++server.counters.enter_calls;
    if (io_uring_enter(server.ring.fd(), to_submit, 1, flags, nullptr) == -1 && errno != EINTR) {
        if (errno == EBUSY || errno == EAGAIN) {
            return true;  // the CQ ring overflowed: reap, then enter again
        }
        report_failure("io_uring_enter", errno);
        return false;
    }
    return true;
}

// The clean stop: one IORING_OP_ASYNC_CANCEL for every request in flight
// (IORING_ASYNC_CANCEL_ANY), then the CQEs reaped until none is left, so
// no request can touch a buffer after it is freed.
void cancel_everything(Server& server, DescriptorReserve& reserve) {
    if (server.in_flight == 0) {
        return;
    }
    server.log("%llu requests in flight cancelled", static_cast<unsigned long long>(server.in_flight));
    for (auto& [key, connection] : server.connections) {
        connection->failed = true;  // no new request for anyone
        connection->cancelled_all = true;
    }
    io_uring_sqe& sqe = next_sqe(server, nullptr, Purpose::cancel);
    sqe.opcode = IORING_OP_ASYNC_CANCEL;
    sqe.cancel_flags = IORING_ASYNC_CANCEL_ANY;
    while (server.in_flight > 0 && submit_and_wait(server)) {
        server.ring.for_each_completion([&](const io_uring_cqe& cqe) { complete(server, cqe, reserve); });
    }
}

// uring_server's options; the values go into `settings`.
std::vector<Option> options(Settings& settings) {
    return {{"--poll", "", "readiness: IORING_OP_POLL_ADD, then recv() and send() system calls",
             [&settings](std::string_view) { return settings.mode = Mode::poll, true; }},
            {"--multishot", "", "multishot ACCEPT and RECV into a provided buffer ring",
             [&settings](std::string_view) { return settings.mode = Mode::multishot, true; }},
            {"--sqpoll", "", "a kernel thread polls the SQ ring (IORING_SETUP_SQPOLL)",
             [&settings](std::string_view) { return settings.sqpoll = true; }},
            {"--no-defer-taskrun", "", "completions' work run at once, waking this thread for each (no DEFER_TASKRUN)",
             [&settings](std::string_view) { return settings.defer_taskrun = false, true; }},
            {"--entries", "N", "SQ ring size (8 to 4096, default 256; the CQ ring has 4 times as many)",
             number(settings.entries, 8u, 4096u)}};
}

// io_uring_setup with the flags `settings` ask for. On failure the Ring is
// invalid and `failed_call` says which call. A kernel older than 6.1 says
// EINVAL to DEFER_TASKRUN: then the ring is made without it.
Ring set_up_ring(const Settings& settings, std::string& failed_call) {
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;  // multishot requests make many CQEs per SQE
    params.cq_entries = settings.entries * 4;
    if (settings.sqpoll) {
        params.flags |= IORING_SETUP_SQPOLL;
        params.sq_thread_idle = static_cast<std::uint32_t>(sqpoll_idle.count());  // ms, then IORING_SQ_NEED_WAKEUP
    } else if (settings.defer_taskrun) {
        io_uring_params deferred = params;
        deferred.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        Ring ring(settings.entries, deferred, failed_call);
        if (ring || errno != EINVAL) {
            return ring;
        }
    }
    return Ring(settings.entries, params, failed_call);
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    const ServerOptions options_given = parse_server_options_or_exit(
        argc, argv, "echo server on io_uring: ACCEPT, RECV and SEND requests (or --poll, --multishot).", 8009,
        options(settings));
    const EventLog log(options_given.quiet);
    if (cpu_set_t cpus; ::sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) == 1) {
        settings.cq_polling = std::chrono::milliseconds(0);  // taskset -c N, or a benchmark's pinning
    }

    // Non-blocking: --poll's accept4() loop and the spare descriptor's
    // accept4() must not wait. (An ACCEPT request waits all the same.)
    const unique_fd listen_fd = listen_tcp(options_given.host, options_given.port,
                                           SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (!listen_fd) {
        return 1;
    }
    // A stop signal also shuts the listening socket down: the ACCEPT (or
    // POLL_ADD) in flight on it completes, so io_uring_enter returns even
    // if the signal came just before it went to sleep.
    install_stop_handlers(listen_fd.get());
    install_status_handler();
    std::string failed_call;
    Ring ring = set_up_ring(settings, failed_call);
    if (!ring) {
        report_ring_failure(failed_call, errno);
        return 1;
    }
    // Declared after `ring`: destroyed before it, while it still holds
    // the buffer ring's registration (closing the ring drops it).
    Server server{.settings = settings, .log = log, .ring = ring, .listen_fd = listen_fd.get()};
    if (settings.mode == Mode::multishot && !server.buffers.setup(ring.fd(), failed_call)) {
        report_ring_failure(failed_call, errno);
        return 1;
    }
    DescriptorReserve reserve;
    arm_accept(server);
    if (!print_ready_line(listen_fd.get())) {
        return 1;
    }

    bool failed = false;
    while (!stop_requested()) {
        if (status_requested()) {
            print_status(server.counters.list(settings));
        }
        if (!submit_and_wait(server)) {
            failed = true;
            break;
        }
        server.ring.for_each_completion([&](const io_uring_cqe& cqe) { complete(server, cqe, reserve); });
        // More CQEs came than the CQ ring holds: the kernel keeps them
        // aside (IORING_FEAT_NODROP), and the next io_uring_enter with
        // IORING_ENTER_GETEVENTS moves them in.
        server.counters.cq_overflows += server.ring.cq_overflowed();
    }
    cancel_everything(server, reserve);
    server.connections.clear();
    print_summary(server.counters.list(settings));
    return failed ? 1 : 0;
}
