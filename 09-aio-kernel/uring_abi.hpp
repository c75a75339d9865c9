// 09-aio-kernel/uring_abi.hpp: io_uring's three system calls, by number,
// and the rings they share with the kernel.
//
// glibc has no wrappers for them (liburing has, with its own names; this
// chapter does without it, as aio_abi.hpp does without libaio). Each
// function below is one syscall(2), named like the system call, so the
// program reads as the strace output does; they return -1 and set errno.
//
// Then `Ring`: what io_uring_setup returns is a descriptor, and three
// regions of memory the program maps from it (see the chapter README's
// diagram):
//
//   SQ ring    head (kernel writes), tail (we write), array of SQE indexes
//   SQEs       the submission queue entries themselves: requests we fill in
//   CQ ring    head (we write), tail (kernel writes), the CQEs: completions
//
// Each side writes one index of each ring and only reads the other's. A
// write to the ring is published by a store-release of the index and seen
// by a load-acquire of it (std::atomic_ref): the SQE's bytes are written
// before the tail that says "it is there", and a CQE is read only after
// the tail that says it is complete.
#pragma once

#include <errno.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "common/errors.hpp"
#include "common/unique_fd.hpp"

// Creates an io_uring instance with `entries` SQEs (a power of two; the
// kernel rounds up) and returns its descriptor. `params` in: flags
// (IORING_SETUP_*); out: the sizes, features and the rings' offsets.
inline int io_uring_setup(unsigned entries, io_uring_params* params) {
    return static_cast<int>(::syscall(__NR_io_uring_setup, entries, params));
}

// Submits `to_submit` SQEs from the SQ ring, then, with
// IORING_ENTER_GETEVENTS, waits until at least `min_complete` CQEs are in
// the CQ ring. `mask` (if not null) is the signal mask while it waits, as
// in ppoll. Returns the number of SQEs consumed.
inline int io_uring_enter(int ring_fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                          const sigset_t* mask) {
    return static_cast<int>(
        ::syscall(__NR_io_uring_enter, ring_fd, to_submit, min_complete, flags, mask, _NSIG / 8));
}

// Registers resources with the ring: buffers, files, a provided buffer
// ring (IORING_REGISTER_PBUF_RING)...
inline int io_uring_register(int ring_fd, unsigned opcode, void* argument, unsigned count) {
    return static_cast<int>(::syscall(__NR_io_uring_register, ring_fd, opcode, argument, count));
}

// One mmap(2)ed region, unmapped once (as unique_fd closes once).
class unique_mapping {
public:
    unique_mapping() noexcept = default;
    unique_mapping(void* address, std::size_t length) noexcept : address_(address), length_(length) {}
    unique_mapping(unique_mapping&& other) noexcept
        : address_(std::exchange(other.address_, nullptr)), length_(std::exchange(other.length_, 0)) {}
    unique_mapping& operator=(unique_mapping&& other) noexcept {
        std::swap(address_, other.address_);
        std::swap(length_, other.length_);
        return *this;
    }
    ~unique_mapping() {
        if (address_ != nullptr) {
            ::munmap(address_, length_);
        }
    }
    [[nodiscard]] std::byte* get() const noexcept { return static_cast<std::byte*>(address_); }
    explicit operator bool() const noexcept { return address_ != nullptr; }

private:
    void* address_ = nullptr;
    std::size_t length_ = 0;
};

// mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | extra_flags) of `fd` at
// `offset` (a ring's region), or private anonymous memory (fd -1). An invalid mapping (errno set) on failure.
inline unique_mapping map_memory(std::size_t length, int fd, off_t offset, int extra_flags = 0) {
    void* address = ::mmap(nullptr, length, PROT_READ | PROT_WRITE,
                           (fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED) | extra_flags, fd, offset);
    return address == MAP_FAILED ? unique_mapping() : unique_mapping(address, length);
}

// Reads an index the other side writes (acquire: what it wrote before is visible).
inline unsigned load_acquire(const unsigned* index) {
    return std::atomic_ref<const unsigned>(*index).load(std::memory_order_acquire);
}
// Writes an index the other side reads (release: what we wrote before goes first).
inline void store_release(unsigned* index, unsigned value) {
    std::atomic_ref<unsigned>(*index).store(value, std::memory_order_release);
}

// One io_uring instance: its descriptor and the three mapped regions.
class Ring {
public:
    // io_uring_setup, then the three mmaps. On failure the Ring is invalid,
    // `failed_call` names what failed ("io_uring_setup 256", "mmap SQ ring")
    // and errno says why.
    Ring(unsigned entries, io_uring_params& params, std::string& failed_call) {
        fd_.reset(io_uring_setup(entries, &params));
        if (!fd_) {
            const int error = errno;  // building the string may allocate
            failed_call = "io_uring_setup " + std::to_string(entries);
            errno = error;
            return;
        }
        const io_sqring_offsets& sq = params.sq_off;
        const io_cqring_offsets& cq = params.cq_off;
        sq_ring_ = map_memory(sq.array + params.sq_entries * sizeof(unsigned), fd_.get(), IORING_OFF_SQ_RING,
                              MAP_POPULATE);
        sqes_ = map_memory(params.sq_entries * sizeof(io_uring_sqe), fd_.get(), IORING_OFF_SQES, MAP_POPULATE);
        cq_ring_ = map_memory(cq.cqes + params.cq_entries * sizeof(io_uring_cqe), fd_.get(), IORING_OFF_CQ_RING,
                              MAP_POPULATE);
        if (!sq_ring_ || !sqes_ || !cq_ring_) {
            const int error = errno;  // close may change it
            failed_call = !sq_ring_ ? "mmap SQ ring" : !sqes_ ? "mmap SQEs" : "mmap CQ ring";
            fd_.reset();
            errno = error;
            return;
        }
        std::byte* base = sq_ring_.get();
        sq_head_ = reinterpret_cast<unsigned*>(base + sq.head);
        sq_tail_ = reinterpret_cast<unsigned*>(base + sq.tail);
        sq_mask_ = *reinterpret_cast<unsigned*>(base + sq.ring_mask);
        sq_entries_ = *reinterpret_cast<unsigned*>(base + sq.ring_entries);
        sq_flags_ = reinterpret_cast<unsigned*>(base + sq.flags);
        sq_array_ = reinterpret_cast<unsigned*>(base + sq.array);
        base = cq_ring_.get();
        cq_head_ = reinterpret_cast<unsigned*>(base + cq.head);
        cq_tail_ = reinterpret_cast<unsigned*>(base + cq.tail);
        cq_mask_ = *reinterpret_cast<unsigned*>(base + cq.ring_mask);
        cqes_ = reinterpret_cast<io_uring_cqe*>(base + cq.cqes);
        sq_local_tail_ = *sq_tail_;  // 0 for a new ring
    }

    explicit operator bool() const noexcept { return fd_.valid(); }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

    // The next free SQE, zeroed, to fill in; nullptr if the SQ ring is full
    // (submit what is there first). It is not the kernel's until publish().
    io_uring_sqe* get_sqe() {
        if (sq_local_tail_ - load_acquire(sq_head_) >= sq_entries_) {
            return nullptr;
        }
        const unsigned index = sq_local_tail_ & sq_mask_;
        io_uring_sqe* sqe = reinterpret_cast<io_uring_sqe*>(sqes_.get()) + index;
        std::memset(sqe, 0, sizeof *sqe);
        sq_array_[index] = index;  // the SQ ring holds indexes into the SQE array
        ++sq_local_tail_;
        return sqe;
    }

    // Publishes the SQEs filled in since the last call (one store-release
    // of the SQ tail) and returns how many the kernel has not consumed yet:
    // io_uring_enter's to_submit. (With SQPOLL the kernel's thread takes
    // them without a system call.)
    unsigned publish() {
        store_release(sq_tail_, sq_local_tail_);
        return sq_local_tail_ - load_acquire(sq_head_);
    }

    // SQPOLL: the kernel's polling thread has gone to sleep and needs an
    // io_uring_enter(IORING_ENTER_SQ_WAKEUP). The full fence orders our
    // store of the tail before this load of the flags; without it, the
    // thread could fall asleep without seeing the tail, and we without
    // seeing the flag (io_uring_setup(2), "SQPOLL").
    [[nodiscard]] bool sq_needs_wakeup() const {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return (std::atomic_ref<const unsigned>(*sq_flags_).load(std::memory_order_relaxed) &
                IORING_SQ_NEED_WAKEUP) != 0;
    }

    // The CQ ring was full and the kernel kept completions aside
    // (IORING_FEAT_NODROP): io_uring_enter(IORING_ENTER_GETEVENTS) moves
    // them into the ring once there is room.
    [[nodiscard]] bool cq_overflowed() const {
        return (std::atomic_ref<const unsigned>(*sq_flags_).load(std::memory_order_relaxed) &
                IORING_SQ_CQ_OVERFLOW) != 0;
    }

    // CQEs waiting in the CQ ring.
    [[nodiscard]] unsigned completions_ready() const { return load_acquire(cq_tail_) - *cq_head_; }

    // Calls `handle(const io_uring_cqe&)` for every CQE in the CQ ring, then
    // gives their slots back to the kernel (a store-release of the CQ head).
    // Returns how many there were.
    template <typename Handler>
    unsigned for_each_completion(Handler&& handle) {
        const unsigned tail = load_acquire(cq_tail_);
        unsigned head = *cq_head_;  // only we write it
        const unsigned count = tail - head;
        for (; head != tail; ++head) {
            handle(cqes_[head & cq_mask_]);
        }
        store_release(cq_head_, tail);
        return count;
    }

private:
    iomodels::unique_fd fd_;
    unique_mapping sq_ring_, sqes_, cq_ring_;
    unsigned* sq_head_ = nullptr;
    unsigned* sq_tail_ = nullptr;
    unsigned* sq_flags_ = nullptr;
    unsigned* sq_array_ = nullptr;
    unsigned sq_mask_ = 0, sq_entries_ = 0;
    unsigned sq_local_tail_ = 0;  // SQEs handed out by get_sqe; the shared tail catches up in publish()
    unsigned* cq_head_ = nullptr;
    unsigned* cq_tail_ = nullptr;
    unsigned cq_mask_ = 0;
    io_uring_cqe* cqes_ = nullptr;
};

// Reports a failed Ring setup in the contract's format, and where io_uring
// is switched off (EPERM, or ENOSYS from a seccomp filter), one more line
// saying where: "uring_server: io_uring_setup 256: Operation not permitted
// [EPERM]", then the hint.
inline void report_ring_failure(const std::string& failed_call, int error) {
    iomodels::report_failure(failed_call, error);
    if (error == EPERM || error == ENOSYS) {
        std::fprintf(stderr,
                     "%s: io_uring is switched off here: see sysctl kernel.io_uring_disabled (2: for everyone, "
                     "1: outside group kernel.io_uring_group) and the seccomp profile of a container\n",
                     iomodels::program_name());
    }
}
