// 09-aio-kernel, uring_copy: its copies checked byte for byte, its short
// transfers finished, its errors as a user sees them (also where io_uring
// is switched off), and what strace shows: the data moves without a read
// or write call, in far fewer io_uring_enter calls than requests.

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// False where /tmp's file system refuses O_DIRECT: uring_copy --direct then
// copies buffered, and the O_DIRECT claims do not apply.
bool direct_io_supported(const TemporaryDirectory& directory) {
    const std::string probe = directory / "probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
    if (fd == -1) {
        return false;
    }
    ::close(fd);
    ::unlink(probe.c_str());
    return true;
}

std::vector<std::string> copy_command(const std::string& source, const std::string& destination,
                                      const std::vector<std::string>& options) {
    std::vector<std::string> argv{URING_COPY, source, destination};
    argv.insert(argv.end(), options.begin(), options.end());
    return argv;
}

// What read(2) returns from `path` until end of file (file_content trusts
// the size, which a sysfs file does not keep); nullopt if it cannot be read.
std::optional<std::string> read_to_end(const std::string& path) {
    const unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return std::nullopt;
    }
    std::string content;
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::read(fd.get(), buffer, sizeof buffer)) > 0) {
        content.append(buffer, static_cast<std::size_t>(got));
    }
    return got == 0 ? std::optional(content) : std::nullopt;
}

// How many lines of `text` start with `prefix`.
std::size_t lines_starting_with(const std::string& text, const std::string& prefix) {
    std::size_t count = 0;
    for (std::size_t at = 0; at < text.size();) {
        count += text.compare(at, prefix.size(), prefix) == 0;
        const std::size_t end = text.find('\n', at);
        at = end == std::string::npos ? text.size() : end + 1;
    }
    return count;
}

// A tmpfs of `size` at `path`, mounted in a mount namespace of this test
// process's own (so nobody else sees it, and it goes with the process),
// unmounted by the destructor. Skips the test where that is not permitted.
class SmallFileSystem {
public:
    SmallFileSystem(const std::string& path, const std::string& size) : path_(path) {
        REQUIRE(::mkdir(path.c_str(), 0755) == 0);
        if (::unshare(CLONE_NEWNS) == -1) {
            skip_test(std::string("unshare CLONE_NEWNS: ") + ::strerror(errno) + ": cannot mount a small tmpfs here");
        }
        // Mounts made from now on stay in this namespace.
        REQUIRE(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0);
        const std::string options = "size=" + size;
        if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) == -1) {
            skip_test(std::string("mount tmpfs: ") + ::strerror(errno) + ": cannot mount a small tmpfs here");
        }
    }
    ~SmallFileSystem() { ::umount2(path_.c_str(), MNT_DETACH); }
    SmallFileSystem(const SmallFileSystem&) = delete;
    SmallFileSystem& operator=(const SmallFileSystem&) = delete;

private:
    std::string path_;
};

}  // namespace

TEST_CASE("uring_copy copies files of 0, 1, 4095, 4096, 1 MiB + 3 and 64 MiB byte for byte, buffered and "
          "with --direct, at depths 1 and 32") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    const bool direct_io = direct_io_supported(directory);
    if (!direct_io) {
        WARN("/tmp does not support O_DIRECT here: the --direct copies are left out");
    }
    for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
                                   std::size_t{(1 << 20) + 3}, std::size_t{64} << 20}) {
        const std::string source = directory / ("source." + std::to_string(size));
        const std::string content = random_bytes(size, static_cast<std::uint32_t>(size));
        write_file(source, content);
        for (const char* depth : {"1", "32"}) {
            for (const bool direct : {false, true}) {
                if (direct && !direct_io) {
                    continue;
                }
                INFO(size << " bytes, depth " << depth << (direct ? ", --direct" : ""));
                const std::string destination = directory / "copy";
                std::vector<std::string> options{"--depth", depth, "--quiet"};
                if (direct) {
                    options.push_back("--direct");
                }
                const Completed copy = run(copy_command(source, destination, options), {}, 60s);
                INFO(copy.out << copy.err);
                REQUIRE(copy.status.describe() == "exit 0");
                CHECK(contains(copy.out, std::to_string(size) + " bytes copied"));
                CHECK(contains(copy.out,
                               direct ? ", O_DIRECT, block 1048576, alignment " : ", buffered, block 1048576"));
                const auto copied = file_content(destination);
                REQUIRE(copied.has_value());
                CHECK(copied->size() == size);
                CHECK((*copied == content));  // (not printed: 64 MiB)
                ::unlink(destination.c_str());
            }
        }
        ::unlink(source.c_str());
    }
}

TEST_CASE("uring_copy reports each request and keeps up to --depth of them in flight") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes((4 << 20) + 3, 8));
    const Completed copy = run(copy_command(directory / "source", directory / "copy", {"--depth", "4"}));
    INFO(copy.out << copy.err);
    REQUIRE(copy.status.describe() == "exit 0");
    // 5 blocks: offsets 0 .. 4 MiB; the last one, 3 bytes, read short.
    CHECK(lines_starting_with(copy.out, "read  offset ") == 5);
    CHECK(lines_starting_with(copy.out, "write offset ") == 5);
    CHECK(contains(copy.out, "read  offset 4194304: res 3\n"));
    CHECK(contains(copy.out, "write offset 4194304: res 3\n"));
    CHECK(contains(copy.out, "5 reads and 5 writes in "));
    CHECK(contains(copy.out, "at most 4 in flight (depth 4), buffered, block 1048576\n"));

    // 64 blocks at depth 32: the first io_uring_enter alone takes 32 reads.
    write_file(directory / "large", random_bytes(64 << 20, 9));
    const Completed deep =
        run(copy_command(directory / "large", directory / "copy", {"--depth", "32", "--quiet"}), {}, 60s);
    INFO(deep.out << deep.err);
    REQUIRE(deep.status.describe() == "exit 0");
    CHECK(contains(deep.out, "64 reads and 64 writes in "));
    CHECK(contains(deep.out, "at most 32 in flight (depth 32)"));

    if (direct_io_supported(directory)) {
        // The 3-byte tail cannot go through O_DIRECT: it is written buffered.
        const Completed direct =
            run(copy_command(directory / "source", directory / "copy", {"--depth", "4", "--direct", "--quiet"}));
        INFO(direct.out << direct.err);
        REQUIRE(direct.status.describe() == "exit 0");
        CHECK(contains(direct.out, "5 reads and 5 writes (1 buffered) in "));
        CHECK(contains(direct.out, "at most 4 in flight (depth 4), O_DIRECT, block 1048576"));
    }
}

TEST_CASE("uring_copy finishes a short write: under a file size limit inside the last block, the rest is "
          "written again, fails with EFBIG, and DST is removed") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 10));
    // The last block starts at 3 MiB; the limit lets 1 MiB - 1024 bytes of it in.
    StartOptions limited;
    limited.rlimit_fsize = (4 << 20) - 1024;
    const std::string destination = directory / "copy";
    const Completed copy = run(copy_command(directory / "source", destination, {"--depth", "4"}), limited);
    INFO(copy.out << copy.err);
    CHECK(copy.status.describe() == "exit 1");  // not killed by SIGXFSZ
    CHECK(contains(copy.out, "write offset 3145728: res 1047552\n"));  // short ...
    CHECK(contains(copy.out, "write offset 4193280: res -27\n"));      // ... the rest, again
    CHECK(contains(copy.err,
                   "uring_copy: write " + destination + " at offset 4193280: res -27: File too large [EFBIG]\n"));
    CHECK(contains(copy.err, "uring_copy: the copy failed; " + destination + " removed\n"));
    CHECK_FALSE(exists(destination));
}

TEST_CASE("uring_copy reads the rest after a short read, and a file that ends before its size is an error") {
    skip_unless_io_uring_available();
    // A sysfs attribute: a regular file whose size (4096) is a page, not its
    // content ("0-1\n"): the only regular file whose reads come back short
    // on demand. (io_uring itself reads the rest of a short read of an
    // ordinary file before it posts the CQE.)
    const std::string source = "/sys/devices/system/cpu/online";
    struct stat info {};
    const auto content = read_to_end(source);
    if (::stat(source.c_str(), &info) == -1 || !S_ISREG(info.st_mode) || !content ||
        content->size() >= static_cast<std::size_t>(info.st_size)) {
        skip_test(source + " is not a regular file shorter than its size here");
    }
    TemporaryDirectory directory;
    const std::string destination = directory / "copy";
    const Completed copy = run(copy_command(source, destination, {"--block-size", "4096"}));
    INFO(copy.out << copy.err);
    const std::string end = std::to_string(content->size());
    CHECK(copy.status.describe() == "exit 1");
    CHECK(copy.out == "read  offset 0: res " + end + "\nread  offset " + end + ": res 0\n");
    CHECK(contains(copy.err, "uring_copy: " + source + " ends at " + end + ", before its size " +
                                 std::to_string(info.st_size) + ": it changed during the copy\n"));
    CHECK(contains(copy.err, "the copy failed; " + destination + " removed\n"));
    CHECK_FALSE(exists(destination));
}

TEST_CASE("uring_copy --direct on a file that refuses O_DIRECT copies buffered and says so") {
    skip_unless_io_uring_available();
    // /sys/kernel/notes: a sysfs file of exact size whose file system refuses O_DIRECT (EINVAL).
    const std::string source = "/sys/kernel/notes";
    const auto content = file_content(source);
    if (!content || content->empty()) {
        skip_test(source + " cannot be read here");
    }
    TemporaryDirectory directory;
    const Completed copy = run(copy_command(source, directory / "copy", {"--direct", "--quiet"}));
    INFO(copy.out << copy.err);
    REQUIRE(copy.status.describe() == "exit 0");
    CHECK(contains(copy.out, std::to_string(content->size()) + " bytes copied"));
    CHECK(contains(copy.out, ", buffered (O_DIRECT refused), block 1048576\n"));
    CHECK(file_content(directory / "copy") == content);
}

TEST_CASE("uring_copy failures: a clear message, exit 1, and DST not created or left as it was") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    const std::string source = directory / "source";
    const std::string copy = directory / "copy";
    write_file(source, random_bytes(1 << 20, 11));

    const Completed missing = run(copy_command(directory / "nothing", copy, {}));
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err == "uring_copy: open " + (directory / "nothing") + ": No such file or directory [ENOENT]\n");
    CHECK_FALSE(exists(copy));

    const std::string nowhere = directory / "no/such/directory/copy";
    const Completed no_directory = run(copy_command(source, nowhere, {}));
    CHECK(no_directory.status.describe() == "exit 1");
    CHECK(no_directory.err == "uring_copy: open " + nowhere + ": No such file or directory [ENOENT]\n");

    for (const char* mode : {"--quiet", "--direct"}) {
        INFO(mode);
        const Completed to_directory = run(copy_command(source, directory.path(), {mode}));
        CHECK(to_directory.status.describe() == "exit 1");
        CHECK(to_directory.err == "uring_copy: open " + directory.path() + ": Is a directory [EISDIR]\n");
    }

    // The same file, also by another name: refused before DST is opened
    // (which would truncate the source).
    REQUIRE(::symlink(source.c_str(), (directory / "link").c_str()) == 0);
    for (const std::string& same : {source, directory / "link"}) {
        const Completed itself = run(copy_command(source, same, {}));
        CHECK(itself.status.describe() == "exit 1");
        CHECK(itself.err == "uring_copy: " + source + " and " + same + " are the same file\n");
    }
    CHECK(file_content(source) == random_bytes(1 << 20, 11));
}

TEST_CASE("uring_copy on a full file system: ENOSPC from the CQE, exit 1, DST removed") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 12));
    const SmallFileSystem small(directory / "small", "1m");
    const std::string destination = directory / "small/copy";
    const Completed copy = run(copy_command(directory / "source", destination, {"--quiet"}));
    INFO(copy.out << copy.err);
    CHECK(copy.status.describe() == "exit 1");
    CHECK(contains(copy.err, ": res -28: No space left on device [ENOSPC]\n"));
    CHECK(contains(copy.err, "uring_copy: the copy failed; " + destination + " removed\n"));
    CHECK_FALSE(exists(destination));
}

TEST_CASE("uring_copy: bad arguments give the usage on stderr and exit 2, --help gives it on stdout") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    write_file(directory / "source", "some bytes\n");
    const std::string source = directory / "source";
    const std::string copy = directory / "copy";
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{}, "SRC and DST are needed"},
        {{source}, "SRC and DST are needed"},
        {{source, copy, "extra"}, "bad SRC DST 'extra' (two paths)"},
        {{source, copy, "--depth", "0"}, "bad value '0' for --depth N"},
        {{source, copy, "--depth", "32769"}, "bad value '32769' for --depth N"},
        {{source, copy, "--block-size", "6000"}, "--block-size must be a multiple of 4096"},
        {{source, copy, "--direct=yes"}, "option '--direct' takes no value"},
        {{source, copy, "--frobnicate"}, "unknown option '--frobnicate'"},
    };
    for (const auto& [args, message] : cases) {
        std::vector<std::string> argv{URING_COPY};
        argv.insert(argv.end(), args.begin(), args.end());
        const Completed result = run(argv);
        INFO(message << "\n" << result.err);
        CHECK(result.status.describe() == "exit 2");
        CHECK(result.out.empty());
        CHECK(result.err.starts_with("uring_copy: " + message + "\nusage: uring_copy SRC DST "));
    }
    CHECK_FALSE(exists(copy));
    const Completed help = run({URING_COPY, "--help"});
    CHECK(help.status.describe() == "exit 0");
    CHECK(help.out.starts_with("usage: uring_copy SRC DST [--depth N] [--block-size N] [--direct] [--quiet]\n"));
}

TEST_CASE("where a seccomp filter switches io_uring off, uring_copy says so and where to look, exits 1, and "
          "leaves DST as it was") {
    skip_unless_io_uring_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(1 << 20, 13));
    const std::string kept = directory / "kept";
    write_file(kept, "keep me");

    // --depth 5: the SQ ring gets 8 entries, the next power of two.
    const Completed denied = run({DENY_IO_URING, URING_COPY, directory / "source", kept, "--depth", "5"});
    INFO(denied.out << denied.err);
    CHECK(denied.status.describe() == "exit 1");
    CHECK(denied.err.starts_with("uring_copy: io_uring_setup 8: Operation not permitted [EPERM]\n"
                                 "uring_copy: io_uring is switched off here: see sysctl kernel.io_uring_disabled"));
    CHECK(contains(denied.err, "seccomp"));
    CHECK(contains(denied.err, "uring_copy: no io_uring: nothing copied, " + kept + " not touched\n"));
    CHECK(denied.out.empty());
    CHECK(file_content(kept) == "keep me");

    // A kernel without io_uring (ENOSYS): the same, and a new DST is not even created.
    const std::string fresh = directory / "fresh";
    const Completed missing = run({DENY_IO_URING, "--enosys", URING_COPY, directory / "source", fresh});
    INFO(missing.err);
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.starts_with("uring_copy: io_uring_setup 8: Function not implemented [ENOSYS]\n"
                                  "uring_copy: io_uring is switched off here"));
    CHECK_FALSE(exists(fresh));

    // The filter takes nothing else away: kernel AIO still works under it.
    const Completed aio = run({DENY_IO_URING, AIO_KERNEL_COPY, directory / "source", fresh, "--quiet"});
    INFO(aio.err);
    CHECK(aio.status.describe() == "exit 0");
    CHECK(file_content(fresh) == random_bytes(1 << 20, 13));
}

TEST_CASE("strace: uring_copy moves the data without a read or write call, one io_uring_enter submitting "
          "many requests") {
    skip_unless_io_uring_available();
    skip_unless_strace_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(64 << 20, 14));
    TraceFile trace_file("uring-copy");
    std::vector<std::string> argv =
        strace_command(trace_file.path(), "io_uring_setup,io_uring_enter,pread64,pwrite64,read,write");
    const std::vector<std::string> command = copy_command(
        directory / "source", directory / "copy", {"--depth", "32", "--block-size", "1048576", "--quiet"});
    argv.insert(argv.end(), command.begin(), command.end());
    const Completed copy = run(argv, {}, 60s);
    INFO(copy.out << copy.err);
    REQUIRE(copy.status.describe() == "exit 0");
    CHECK(file_content(directory / "copy") == random_bytes(64 << 20, 14));
    CHECK(contains(copy.out, "64 reads and 64 writes in "));

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 8000));
    REQUIRE(trace.calls_named("io_uring_setup").size() == 1);
    check_no_file_data_calls_after(trace, "io_uring_setup");  // the kernel moves the file data
    // 128 requests; the first call submits 32 reads and waits for one CQE.
    // How many calls in all varies from run to run (8 to 83 seen here):
    // ext4 cannot do a buffered write without blocking, so io_uring hands
    // each to a worker thread, and each worker's CQE may wake the wait
    // alone. Still fewer calls than requests: each call both submits and waits.
    const auto enters = trace.calls_named("io_uring_enter");
    REQUIRE_FALSE(enters.empty());
    CHECK(enters.front().value() == 32);
    CHECK(contains(enters.front().args, ", 32, 1, IORING_ENTER_GETEVENTS"));
    CHECK(enters.size() < 128);
    CHECK(summary_count(copy.out, "io_uring_enter calls") == enters.size());
    long submitted = 0;
    for (const Syscall& call : enters) {
        submitted += call.value();
    }
    CHECK(submitted == 128);
}

TEST_CASE("strace: after a failed request, uring_copy waits for every request in flight before it removes DST") {
    skip_unless_io_uring_available();
    skip_unless_strace_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes((4 << 20) + 3, 15));
    TraceFile trace_file("uring-copy-failure");
    std::vector<std::string> argv = strace_command(trace_file.path(), "io_uring_enter,unlink");
    // With O_DIRECT the write of block 0 is usually still in flight when
    // the writes after it have failed: a last io_uring_enter submits nothing
    // and waits for it. (Buffered, from the page cache, every request tends
    // to complete inside the io_uring_enter that submits it.)
    std::vector<std::string> options{"--depth", "4"};
    if (direct_io_supported(directory)) {
        options.push_back("--direct");
    }
    const std::vector<std::string> command = copy_command(directory / "source", directory / "copy", options);
    argv.insert(argv.end(), command.begin(), command.end());
    StartOptions limited;
    limited.rlimit_fsize = 1 << 20;  // the writes from 1 MiB on fail with EFBIG
    const Completed copy = run(argv, limited, 60s);
    INFO(copy.out << copy.err);
    CHECK(copy.status.describe() == "exit 1");
    CHECK(contains(copy.err, "uring_copy: write " + (directory / "copy") + " at offset "));
    CHECK(contains(copy.err, ": res -27: File too large [EFBIG]\n"));
    CHECK_FALSE(exists(directory / "copy"));

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    // Each CQE prints one line: as many lines as SQEs the kernel took.
    long submitted = 0;
    for (const Syscall& call : trace.calls_named("io_uring_enter")) {
        submitted += call.value();
    }
    CHECK(lines_starting_with(copy.out, "read  offset ") + lines_starting_with(copy.out, "write offset ") ==
          static_cast<std::size_t>(submitted));
    REQUIRE_FALSE(trace.calls.empty());
    CHECK(trace.calls.back().name == "unlink");  // after the last io_uring_enter
}
