// 09-aio-kernel: the file programs' results checked byte for byte, their
// errors as a user sees them, and the system calls strace shows. (The aio
// poll server's echo contract is the conformance suite's job.)

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Skips the test where /tmp's file system refuses O_DIRECT (the programs
// then fall back to buffered I/O, and the O_DIRECT claims do not apply).
void skip_unless_direct_io(const TemporaryDirectory& directory) {
    const std::string probe = directory / "probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
    if (fd == -1) {
        skip_test("/tmp does not support O_DIRECT here");
    }
    ::close(fd);
    ::unlink(probe.c_str());
}

}  // namespace

TEST_CASE("aio_write writes the message with one request and reports io_event.res as the bytes written") {
    TemporaryDirectory directory;
    const std::string path = directory / "out.txt";
    const Completed result = run({AIO_KERNEL_WRITE, path, "one", "request"});
    INFO(result.out << result.err);
    CHECK(result.status.describe() == "exit 0");
    CHECK(file_content(path) == "one request\n");
    CHECK(result.out.find("io_getevents: res 12: 12 bytes written at offset 0") != std::string::npos);

    const Completed missing = run({AIO_KERNEL_WRITE, directory / "no/such/dir/out.txt"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.find("[ENOENT]") != std::string::npos);
    CHECK(run({AIO_KERNEL_WRITE}).status.describe() == "exit 2");
}

TEST_CASE("aio_read reads with O_DIRECT into an aligned buffer, and a misaligned offset comes back as res -EINVAL") {
    TemporaryDirectory directory;
    skip_unless_direct_io(directory);
    const std::string path = directory / "data";
    write_file(path, std::string("Hello, direct I/O\n") + random_bytes(100000, 5));

    const Completed aligned = run({AIO_KERNEL_READ, path});
    INFO(aligned.out << aligned.err);
    CHECK(aligned.status.describe() == "exit 0");
    CHECK(aligned.out.find(", O_DIRECT") != std::string::npos);
    CHECK(aligned.out.find("bytes read at offset 0") != std::string::npos);
    CHECK(aligned.out.find("\nHello, direct I/O\\n") != std::string::npos);  // printed escaped, never as %s
    // The buffer is aligned as statx says, whether or not this file system
    // would refuse less (ext4 here takes a misaligned buffer and reads it
    // buffered): "buffer N" in the first line, the address in the second.
    const std::size_t alignment_at = aligned.out.find("alignment of " + path + ": buffer ");
    const std::size_t address_at = aligned.out.find("into a buffer at 0x");
    REQUIRE(alignment_at != std::string::npos);
    REQUIRE(address_at != std::string::npos);
    const unsigned long alignment = std::stoul(aligned.out.substr(alignment_at + path.size() + 22));
    const unsigned long address = std::stoul(aligned.out.substr(address_at + 19), nullptr, 16);
    INFO("buffer at 0x" << std::hex << address << std::dec << ", alignment " << alignment);
    CHECK(alignment >= 1);
    CHECK(address % alignment == 0);

    // io_submit accepts the request; the error arrives in its completion.
    const Completed misaligned = run({AIO_KERNEL_READ, path, "--offset", "1"});
    INFO(misaligned.out << misaligned.err);
    CHECK(misaligned.status.describe() == "exit 1");
    CHECK(misaligned.out.find("io_getevents: res -22: the request failed: Invalid argument [EINVAL] "
                              "(not aligned for O_DIRECT)") != std::string::npos);

    const Completed missing = run({AIO_KERNEL_READ, directory / "missing"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.find("open " + (directory / "missing") + ": No such file or directory [ENOENT]") !=
          std::string::npos);
}

TEST_CASE("aio_copy copies files of 0, 1, 4095, 4096, 1 MiB + 3 and 64 MiB byte for byte, at depths 1 and 32") {
    TemporaryDirectory directory;
    for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
                                   std::size_t{(1 << 20) + 3}, std::size_t{64} << 20}) {
        const std::string source = directory / ("source." + std::to_string(size));
        const std::string content = random_bytes(size, static_cast<std::uint32_t>(size));
        write_file(source, content);
        for (const char* depth : {"1", "32"}) {
            for (const bool eventfd : {false, true}) {
                if (eventfd && size < (1u << 20)) {
                    continue;  // the eventfd path on the two larger files
                }
                INFO(size << " bytes, depth " << depth << (eventfd ? ", --eventfd" : ""));
                const std::string destination = directory / "copy";
                std::vector<std::string> argv{AIO_KERNEL_COPY, source, destination, "--depth", depth, "--quiet"};
                if (eventfd) {
                    argv.push_back("--eventfd");
                }
                const Completed copy = run(argv, {}, 60s);
                INFO(copy.out << copy.err);
                REQUIRE(copy.status.describe() == "exit 0");
                CHECK(copy.out.find(std::to_string(size) + " bytes copied") != std::string::npos);
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

TEST_CASE("aio_copy reports each request and keeps up to --depth of them in flight") {
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes((4 << 20) + 3, 8));
    const Completed copy =
        run({AIO_KERNEL_COPY, directory / "source", directory / "copy", "--depth", "4", "--block-size", "1048576"});
    INFO(copy.out << copy.err);
    REQUIRE(copy.status.describe() == "exit 0");
    // 5 blocks: offsets 0 .. 4 MiB; the last one, 3 bytes, read short and
    // written through the buffered descriptor.
    CHECK(copy.out.find("read  offset 4194304: res 3\n") != std::string::npos);
    CHECK(copy.out.find("write offset 4194304: res 3\n") != std::string::npos);
    CHECK(copy.out.find("5 reads and 5 writes (1 buffered)") != std::string::npos);
    CHECK(copy.out.find("at most 4 in flight (depth 4)") != std::string::npos);
}

TEST_CASE("aio_copy failures: a clear message, exit 1, and no partial destination left") {
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 9));

    const Completed missing = run({AIO_KERNEL_COPY, directory / "nothing", directory / "copy"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.find("open " + (directory / "nothing") + ": No such file or directory [ENOENT]") !=
          std::string::npos);
    CHECK_FALSE(exists(directory / "copy"));

    const Completed unwritable = run({AIO_KERNEL_COPY, directory / "source", directory.path()});
    CHECK(unwritable.status.describe() == "exit 1");
    CHECK(unwritable.err.find("[EISDIR]") != std::string::npos);

    // A write that fails in the middle (the file size limit is 1 MiB): the
    // error comes back in io_event.res, and the incomplete copy is removed.
    StartOptions limited;
    limited.rlimit_fsize = 1 << 20;
    const Completed too_large = run({AIO_KERNEL_COPY, directory / "source", directory / "copy", "--quiet"}, limited);
    INFO(too_large.err);
    CHECK(too_large.status.describe() == "exit 1");
    CHECK(too_large.err.find("res -27: File too large [EFBIG]") != std::string::npos);
    CHECK(too_large.err.find("the copy failed; " + (directory / "copy") + " removed") != std::string::npos);
    CHECK_FALSE(exists(directory / "copy"));

    // More requests than the whole system may have in flight.
    const Completed too_deep = run({AIO_KERNEL_COPY, directory / "source", directory / "copy", "--depth", "1000000"});
    CHECK(too_deep.status.describe() == "exit 1");
    CHECK(too_deep.err.find("io_setup 1000000: Resource temporarily unavailable [EAGAIN]") != std::string::npos);
    CHECK(too_deep.err.find("/proc/sys/fs/aio-max-nr") != std::string::npos);
    CHECK_FALSE(exists(directory / "copy"));
    // A destination that exists is not even opened when there is no context.
    write_file(directory / "copy", "keep me");
    CHECK(run({AIO_KERNEL_COPY, directory / "source", directory / "copy", "--depth", "1000000"}).status.describe() ==
          "exit 1");
    CHECK(file_content(directory / "copy") == "keep me");
}

TEST_CASE("aio_copy finishes a short write: under a file size limit inside the last block, the rest is written "
          "again, fails with EFBIG, and DST is removed") {
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 13));
    // The last block starts at 3 MiB; the limit lets 1 MiB - 1024 bytes of
    // it in. Taken for a whole block, that short write would end a "copy"
    // 1024 bytes short with exit 0.
    StartOptions limited;
    limited.rlimit_fsize = (4 << 20) - 1024;
    const std::string destination = directory / "copy";
    const Completed copy = run({AIO_KERNEL_COPY, directory / "source", destination, "--depth", "4"}, limited);
    INFO(copy.out << copy.err);
    CHECK(copy.status.describe() == "exit 1");  // not killed by SIGXFSZ
    CHECK(copy.out.find("write offset 3145728: res 1047552\n") != std::string::npos);  // short ...
    CHECK(copy.out.find("write offset 4193280: res -27\n") != std::string::npos);      // ... the rest, again
    CHECK(copy.err.find("aio_copy: write " + destination + " at offset 4193280: res -27: File too large [EFBIG]\n") !=
          std::string::npos);
    CHECK(copy.err.find("aio_copy: the copy failed; " + destination + " removed\n") != std::string::npos);
    CHECK_FALSE(exists(destination));
}

TEST_CASE("strace: aio_copy uses io_setup, io_submit, io_getevents and io_destroy, and never pread64 or pwrite64") {
    skip_unless_strace_available();
    TemporaryDirectory directory;
    skip_unless_direct_io(directory);
    write_file(directory / "source", random_bytes(8 << 20, 10));
    TraceFile trace_file("aio-copy");
    std::vector<std::string> argv =
        strace_command(trace_file.path(), "io_setup,io_submit,io_getevents,io_destroy,pread64,pwrite64,read,write");
    for (const std::string& word : {std::string(AIO_KERNEL_COPY), directory / "source", directory / "copy",
                                    std::string("--depth"), std::string("4"), std::string("--quiet")}) {
        argv.push_back(word);
    }
    const Completed copy = run(argv, {}, 60s);
    REQUIRE(copy.status.describe() == "exit 0");
    CHECK(file_content(directory / "copy")->size() == (8u << 20));

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 8000));
    REQUIRE(trace.calls_named("io_setup").size() == 1);
    CHECK(trace.calls_named("io_destroy").size() == 1);
    check_no_file_data_calls_after(trace, "io_setup");  // the kernel moves the file data
    // The first io_submit queues four reads at once.
    const auto submits = trace.calls_named("io_submit");
    REQUIRE_FALSE(submits.empty());
    CHECK(submits.front().value() == 4);
    CHECK(submits.front().args.find("IOCB_CMD_PREAD") != std::string::npos);
    CHECK(trace.calls_named("io_getevents").size() >= 2);
}

TEST_CASE("strace: the aio poll server waits with IOCB_CMD_POLL requests and io_pgetevents") {
    skip_unless_strace_available();
    TraceFile trace_file("aio-poll");
    Server server = start_server(AIO_KERNEL_SERVER, {"--quiet"}, {},
                                 strace_command(trace_file.path(), "io_setup,io_submit,io_pgetevents,accept4,recvfrom"));
    REQUIRE(echo_once(server.port, "hello").received == "hello");
    const std::string summary = stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text);
    const auto submits = trace.calls_named("io_submit");
    REQUIRE_FALSE(submits.empty());
    CHECK(submits.front().args.find("aio_lio_opcode=IOCB_CMD_POLL, aio_fildes=3") != std::string::npos);
    for (const Syscall& call : submits) {
        CHECK(call.args.find("IOCB_CMD_PREAD") == std::string::npos);  // the socket is read by recvfrom, not AIO
    }
    CHECK(summary_count(summary, "io_submit calls") == submits.size());
    CHECK(summary_count(summary, "io_pgetevents calls") >= trace.calls_named("io_pgetevents").size() - 1);
    const auto reads = trace.calls_named("recvfrom");
    REQUIRE_FALSE(reads.empty());
    CHECK(reads.back().value() == 0);
}
