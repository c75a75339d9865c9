// unique_fd: owns one file descriptor and closes it exactly once.
//
// Modelled on Android's android::base::unique_fd and on C++ Core Guidelines
// R.1 (manage resources with RAII): explicit from int, move-only, get(),
// release(), reset(). There is deliberately no conversion to int, so
// `::close(fd)` on a unique_fd does not compile and cannot close it twice.
#pragma once

#include <unistd.h>

#include <utility>

namespace iomodels {

class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}

    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;

    unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        reset(other.release());
        return *this;
    }

    ~unique_fd() { reset(); }

    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }

    // Gives up ownership without closing.
    [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

    // Closes the current descriptor (if any) and takes `fd`.
    // close() is never retried on EINTR: on Linux the descriptor is already
    // released when close returns, and a retry could close a descriptor that
    // another thread has just been given (see close(2), "Dealing with error
    // returns from close()").
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0 && fd_ != fd) {
            ::close(fd_);
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace iomodels
