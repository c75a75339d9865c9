// 09-aio-kernel/aio_abi.hpp: the five kernel AIO system calls, by number.
//
// glibc has no wrappers for them (libaio has, with its own names and
// types; this chapter does without it, as document 000 §5.2.1 does). Each
// function below is one syscall(2) and nothing else, named like the system
// call, so that the program reads as the strace output does. Like the raw
// system calls, they return -1 and set errno on failure.
//
// The types come from <linux/aio_abi.h>: aio_context_t (an opaque handle),
// struct iocb (one request) and struct io_event (one completion). Last,
// unique_aio_context owns a context as unique_fd owns a descriptor.
#pragma once

#include <linux/aio_abi.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <utility>

// Creates a context able to hold `max_events` requests in flight.
inline int io_setup(unsigned max_events, aio_context_t* context) {
    return static_cast<int>(::syscall(SYS_io_setup, max_events, context));
}

// Frees the context; requests still in flight are cancelled or waited for.
inline int io_destroy(aio_context_t context) { return static_cast<int>(::syscall(SYS_io_destroy, context)); }

// Queues `count` requests; returns how many were queued (maybe fewer).
inline int io_submit(aio_context_t context, long count, iocb** requests) {
    return static_cast<int>(::syscall(SYS_io_submit, context, count, requests));
}

// Waits until at least `min` requests have completed (or `timeout`, if not
// null) and copies at most `max` completions into `events`.
inline int io_getevents(aio_context_t context, long min, long max, io_event* events, timespec* timeout) {
    return static_cast<int>(::syscall(SYS_io_getevents, context, min, max, events, timeout));
}

// io_getevents with a signal mask installed while it waits (Linux 4.18),
// as ppoll is to poll: a signal blocked elsewhere can interrupt only this
// wait, so it cannot slip in between a check and the wait.
inline int io_pgetevents(aio_context_t context, long min, long max, io_event* events, timespec* timeout,
                         const sigset_t* mask) {
    struct {
        const sigset_t* mask;
        unsigned long size;
    } mask_argument{mask, _NSIG / 8};  // the kernel's sigset size, not glibc's 128 bytes
    return static_cast<int>(::syscall(SYS_io_pgetevents, context, min, max, events, timeout, &mask_argument));
}

// Cancels a request still in flight (few kinds of request can be).
inline int io_cancel(aio_context_t context, iocb* request, io_event* result) {
    return static_cast<int>(::syscall(SYS_io_cancel, context, request, result));
}

// Owns one AIO context and io_destroys it exactly once, as unique_fd
// (common/unique_fd.hpp) owns a descriptor: explicit from the aio_context_t
// that io_setup filled in, move-only, get(), and no conversion to
// aio_context_t, so a context cannot be destroyed twice by hand.
//
// io_destroy waits for the requests still in flight (it cancels the few
// that can be: poll requests). The buffers they read into or write from
// must outlive it, so an owner is declared *after* those buffers: C++
// destroys in reverse order of declaration, so io_destroy comes first and
// the buffers are freed once nothing can touch them. (The descriptors may
// close in either order: a request in flight holds its own reference to
// the file.)
class unique_aio_context {
public:
    unique_aio_context() noexcept = default;
    explicit unique_aio_context(aio_context_t context) noexcept : context_(context) {}

    unique_aio_context(const unique_aio_context&) = delete;
    unique_aio_context& operator=(const unique_aio_context&) = delete;

    unique_aio_context(unique_aio_context&& other) noexcept : context_(std::exchange(other.context_, 0)) {}
    unique_aio_context& operator=(unique_aio_context&& other) noexcept {
        reset(std::exchange(other.context_, 0));
        return *this;
    }

    ~unique_aio_context() { reset(); }

    [[nodiscard]] aio_context_t get() const noexcept { return context_; }
    explicit operator bool() const noexcept { return context_ != 0; }

    // io_destroys the context held (if any) and takes `context`. Its result
    // is not looked at: io_destroy fails only for what is not a context
    // (EINVAL, EFAULT), and this one came from io_setup.
    void reset(aio_context_t context = 0) noexcept {
        if (context_ != 0 && context_ != context) {
            io_destroy(context_);
        }
        context_ = context;
    }

private:
    aio_context_t context_ = 0;  // 0: none (and what io_setup wants to find)
};
