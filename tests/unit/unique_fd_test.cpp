// unique_fd owns one descriptor: it is move-only, never converts to int, and
// closes exactly once. "Closed" is checked the way the kernel sees it:
// fcntl(F_GETFD) on a closed descriptor fails with EBADF.
#include "common/unique_fd.hpp"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <type_traits>
#include <utility>

#include "catch.hpp"

using iomodels::unique_fd;

namespace {

// Android had to ban `close(ufd)` after allowing an implicit conversion to
// int: here it must not compile at all.
template <typename T>
concept closable_as_int = requires(T fd) { ::close(fd); };

static_assert(!std::is_copy_constructible_v<unique_fd>);
static_assert(!std::is_copy_assignable_v<unique_fd>);
static_assert(std::is_nothrow_move_constructible_v<unique_fd>);
static_assert(std::is_nothrow_move_assignable_v<unique_fd>);
static_assert(std::is_nothrow_destructible_v<unique_fd>);
static_assert(!std::is_convertible_v<unique_fd, int>);
static_assert(!std::is_constructible_v<int, unique_fd>);
static_assert(!std::is_convertible_v<int, unique_fd>);  // explicit from int
static_assert(std::is_constructible_v<unique_fd, int>);
static_assert(!closable_as_int<unique_fd>);
static_assert(closable_as_int<int>);

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

bool is_closed(int fd) {
    errno = 0;
    return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

// A fresh pipe; both ends owned.
struct Pipe {
    unique_fd read_end;
    unique_fd write_end;
};

Pipe make_pipe() {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    return {unique_fd(ends[0]), unique_fd(ends[1])};
}

}  // namespace

TEST_CASE("unique_fd default-constructed holds -1 and is not valid") {
    const unique_fd fd;
    CHECK(fd.get() == -1);
    CHECK_FALSE(fd.valid());
    CHECK_FALSE(static_cast<bool>(fd));
}

TEST_CASE("unique_fd closes its descriptor when destroyed") {
    int raw = -1;
    {
        Pipe pipe = make_pipe();
        raw = pipe.read_end.get();
        REQUIRE(is_open(raw));
    }
    CHECK(is_closed(raw));
}

TEST_CASE("unique_fd move construction transfers the descriptor and empties the source") {
    Pipe pipe = make_pipe();
    const int raw = pipe.read_end.get();
    const unique_fd moved(std::move(pipe.read_end));
    CHECK(moved.get() == raw);
    CHECK(pipe.read_end.get() == -1);  // a moved-from unique_fd owns nothing
    CHECK(is_open(raw));
}

TEST_CASE("unique_fd move assignment closes the target's old descriptor and takes the new one") {
    Pipe pipe = make_pipe();
    const int old_raw = pipe.read_end.get();
    const int new_raw = pipe.write_end.get();
    pipe.read_end = std::move(pipe.write_end);
    CHECK(pipe.read_end.get() == new_raw);
    CHECK(pipe.write_end.get() == -1);  // a moved-from unique_fd owns nothing
    CHECK(is_closed(old_raw));
    CHECK(is_open(new_raw));
}

TEST_CASE("unique_fd self-move-assignment keeps the descriptor open") {
    Pipe pipe = make_pipe();
    const int raw = pipe.read_end.get();
    unique_fd& alias = pipe.read_end;  // through a reference, as generic code would do it
    pipe.read_end = std::move(alias);
    CHECK(pipe.read_end.get() == raw);
    CHECK(is_open(raw));
}

TEST_CASE("unique_fd release gives up ownership without closing") {
    Pipe pipe = make_pipe();
    const int raw = pipe.read_end.get();
    const int released = pipe.read_end.release();
    CHECK(released == raw);
    CHECK(pipe.read_end.get() == -1);
    CHECK(is_open(raw));
    const unique_fd owner_again(released);  // closed here, not leaked
}

TEST_CASE("unique_fd reset closes the old descriptor and takes the new one") {
    Pipe pipe = make_pipe();
    const int old_raw = pipe.read_end.get();
    const int new_raw = pipe.write_end.release();
    pipe.read_end.reset(new_raw);
    CHECK(is_closed(old_raw));
    CHECK(pipe.read_end.get() == new_raw);
    CHECK(is_open(new_raw));
}

TEST_CASE("unique_fd reset without argument closes and leaves -1") {
    Pipe pipe = make_pipe();
    const int raw = pipe.read_end.get();
    pipe.read_end.reset();
    CHECK(pipe.read_end.get() == -1);
    CHECK(is_closed(raw));
}

TEST_CASE("unique_fd reset to the descriptor it already owns does not close it") {
    Pipe pipe = make_pipe();
    const int raw = pipe.read_end.get();
    pipe.read_end.reset(raw);
    CHECK(pipe.read_end.get() == raw);
    CHECK(is_open(raw));
}
