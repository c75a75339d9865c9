// 10-aio-posix: the file programs' results, cancellation of a request
// that is really pending, glibc's thread pool limit on the socket server,
// and what strace -f shows. (The server's echo contract is the
// conformance suite's job.)

#include <aio.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "catch.hpp"
#include "harness/harness.hpp"
#include "harness/strace.hpp"

using namespace harness;

namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Reads the program's stdout until a line containing `text` (10 s at most).
std::string read_until(Process& process, std::string_view text) {
    std::string seen;
    while (auto line = process.read_stdout_line(10s)) {
        seen += *line + "\n";
        if (line->find(text) != std::string::npos) {
            break;
        }
    }
    return seen;
}

// glibc takes aio_init's numbers only before the process's first request
// (it then makes its pool of requests and keeps it). Each in-process test
// below asks for the same (one helper thread) before its first request,
// so they pass in either order, in one process or each in its own.
void use_one_aio_thread() {
    aioinit init{};
    init.aio_threads = 1;
    init.aio_num = 4;
    ::aio_init(&init);
}

// True if a thread of this process sleeps in a kernel function whose name
// contains `function` (harness's sleeping_in() reads the main thread's).
bool some_thread_sleeping_in(std::string_view function) {
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream wchan(task.path() / "wchan");
        std::string where;
        wchan >> where;
        if (where.find(function) != std::string::npos) {
            return true;
        }
    }
    return false;
}

// A read of all of `buffer` at offset 0, no notification: for lio_listio,
// aio_read and aio_suspend.
aiocb read_request(int fd, std::span<char> buffer) {
    aiocb request{};
    request.aio_fildes = fd;
    request.aio_buf = buffer.data();
    request.aio_nbytes = buffer.size();
    request.aio_offset = 0;
    request.aio_lio_opcode = LIO_READ;
    request.aio_sigevent.sigev_notify = SIGEV_NONE;  // a zeroed sigevent would be SIGEV_SIGNAL
    return request;
}

}  // namespace

TEST_CASE("aio_read_files reads each file with one request and reports aio_error and aio_return") {
    TemporaryDirectory directory;
    write_file(directory / "a", "first file\n");
    write_file(directory / "b", std::string("with a NUL\0byte\n", 16));
    const Completed result = run({AIO_POSIX_READ_FILES, directory / "a", directory / "b"});
    INFO(result.out << result.err);
    CHECK(result.status.describe() == "exit 0");
    CHECK(result.out.find((directory / "a") + ": aio_error 0, aio_return 11: \"first file\\n\"") != std::string::npos);
    CHECK(result.out.find((directory / "b") + ": aio_error 0, aio_return 16: \"with a NUL\\x00byte\\n\"") !=
          std::string::npos);

    const Completed missing = run({AIO_POSIX_READ_FILES, directory / "a", directory / "missing"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.find("open " + (directory / "missing") + ": No such file or directory [ENOENT]") !=
          std::string::npos);
    CHECK(run({AIO_POSIX_READ_FILES}).status.describe() == "exit 2");
}

TEST_CASE("SIGQUIT: aio_cancel cannot cancel a read blocked on a pipe, and cancels the one queued behind it") {
    TemporaryDirectory directory;
    const std::string fifo = directory / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // We hold the FIFO open for writing (O_RDWR does not wait for a
    // reader): the program's open succeeds and its read blocks for data.
    const unique_fd writer(::open(fifo.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(writer.valid());
    write_file(directory / "file", "regular\n");

    // One glibc thread: the FIFO's read runs (and blocks), the file's waits in the queue.
    Process program = Process::start({AIO_POSIX_READ_FILES, fifo, directory / "file", "--threads", "1"});
    const std::string queued = read_until(program, (directory / "file") + ": aio_read queued");
    INFO(queued);
    REQUIRE(queued.find((directory / "file") + ": aio_read queued") != std::string::npos);
    // Both still in progress, no matter how long we wait.
    CHECK_FALSE(program.wait(300ms).has_value());

    program.signal(SIGQUIT);
    const std::string cancelled = read_until(program, (directory / "file") + ": aio_cancel");
    INFO(cancelled);
    CHECK(cancelled.find(fifo + ": aio_cancel: AIO_NOTCANCELED") != std::string::npos);
    CHECK(cancelled.find((directory / "file") + ": aio_cancel: AIO_CANCELED") != std::string::npos);
    CHECK_FALSE(program.wait(300ms).has_value());  // the FIFO's read still runs

    REQUIRE(::write(writer.get(), "late data\n", 10) == 10);  // now it completes
    const auto status = program.wait(10s);
    REQUIRE(status.has_value());
    CHECK(status->describe() == "exit 1");  // a request was cancelled: not a full success
    const std::string rest = program.read_stdout_all(5s);
    INFO(rest);
    CHECK(rest.find((directory / "file") + ": aio_error ECANCELED") != std::string::npos);
    CHECK(rest.find(fifo + ": aio_error 0, aio_return 10: \"late data\\n\"") != std::string::npos);
}

TEST_CASE("lio_listio(LIO_WAIT) returns only when every read is over, -1 with EIO if one failed, and glibc sets no limit on the list") {
    TemporaryDirectory directory;
    const std::string fifo = directory / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const unique_fd writer(::open(fifo.c_str(), O_RDWR | O_CLOEXEC));  // as above: the read blocks for data
    REQUIRE(writer.valid());
    write_file(directory / "file", "regular\n");

    SECTION("the call waits for the slowest read: a FIFO's, which blocks until we write") {
        Process program = Process::start({AIO_POSIX_READ_FILES, fifo, directory / "file", "--listio-wait"});
        const std::string limit = read_until(program, "sysconf(_SC_AIO_LISTIO_MAX)");
        INFO(limit);
        // (glibc declares no limit: -1 and errno left alone, POSIX's "no
        // definite limit"; document 000 §5.3 says to fall back on
        // AIO_LISTIO_MAX, which glibc does not define.)
        CHECK(limit == "sysconf(_SC_AIO_LISTIO_MAX): -1, errno unchanged: no definite limit on a list\n");
        // The main thread sleeps in lio_listio (a futex, glibc's condition
        // variable) while a helper thread's read waits for the FIFO.
        CHECK(eventually([&] { return sleeping_in(program.pid(), "futex"); }));
        CHECK_FALSE(program.wait(300ms).has_value());
        REQUIRE(::write(writer.get(), "late data\n", 10) == 10);
        const auto status = program.wait(10s);
        REQUIRE(status.has_value());
        CHECK(status->describe() == "exit 0");
        const std::string rest = program.read_stdout_all(5s);
        INFO(rest);
        CHECK(rest.find("lio_listio(LIO_WAIT, 2 reads): 0, every one done\n" + fifo +
                        ": aio_error 0, aio_return 10: \"late data\\n\"") != std::string::npos);
        CHECK(rest.find((directory / "file") + ": aio_error 0, aio_return 8: \"regular\\n\"") != std::string::npos);
    }
    SECTION("one read fails (a directory): -1 and EIO, and each request's aio_error says which") {
        const Completed result = run({AIO_POSIX_READ_FILES, directory / "file", directory.path(), "--listio-wait"});
        INFO(result.out << result.err);
        CHECK(result.status.describe() == "exit 1");
        CHECK(result.out.find("lio_listio(LIO_WAIT, 2 reads): -1, EIO: every one is over, and one or more failed\n") !=
              std::string::npos);
        CHECK(result.out.find((directory / "file") + ": aio_error 0, aio_return 8") != std::string::npos);
        CHECK(result.out.find(directory.path() + ": aio_error read: Is a directory [EISDIR], aio_return -1") !=
              std::string::npos);
    }
    SECTION("600 reads in one list (POSIX asks for 2 at least, _POSIX_AIO_LISTIO_MAX)") {
        std::vector<std::string> argv = {AIO_POSIX_READ_FILES, "--listio-wait"};
        argv.insert(argv.end(), 600, directory / "file");
        const Completed result = run(argv, {}, 30s);
        INFO(result.out.substr(0, 2000) << result.err);
        CHECK(result.status.describe() == "exit 0");
        CHECK(result.out.find("lio_listio(LIO_WAIT, 600 reads): 0, every one done\n") != std::string::npos);
        std::size_t done = 0;
        for (std::size_t at = 0; (at = result.out.find(": aio_error 0, aio_return 8", at)) != std::string::npos; ++at) {
            ++done;
        }
        CHECK(done == 600);
    }
}

TEST_CASE("aio_copy with lio_listio copies files of 0, 1, 4095, 4096, 1 MiB + 3 and 64 MiB byte for byte, at depths 1 and 32") {
    TemporaryDirectory directory;
    for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
                                   std::size_t{(1 << 20) + 3}, std::size_t{64} << 20}) {
        const std::string source = directory / ("source." + std::to_string(size));
        const std::string content = random_bytes(size, static_cast<std::uint32_t>(size) + 1);
        write_file(source, content);
        for (const char* depth : {"1", "32"}) {
            for (const char* notify : {"suspend", "thread"}) {
                if (std::string_view(notify) == "thread" && (size < (1u << 20) || thread_sanitizer)) {
                    continue;  // SIGEV_THREAD on the two larger files (see skip_if_sigev_thread_under_thread_sanitizer)
                }
                INFO(size << " bytes, depth " << depth << ", --notify " << notify);
                const std::string destination = directory / "copy";
                const Completed copy = run(
                    {AIO_POSIX_COPY, source, destination, "--depth", depth, "--notify", notify, "--quiet"}, {}, 60s);
                INFO(copy.out << copy.err);
                REQUIRE(copy.status.describe() == "exit 0");
                CHECK(copy.out.find(std::to_string(size) + " bytes copied") != std::string::npos);
                CHECK(copy.out.find("aio_fsync done") != std::string::npos);
                const auto copied = file_content(destination);
                REQUIRE(copied.has_value());
                CHECK(copied->size() == size);
                CHECK((*copied == content));
                ::unlink(destination.c_str());
            }
        }
        ::unlink(source.c_str());
    }
}

TEST_CASE("aio_copy with lio_listio fails cleanly: a clear message, exit 1, and no partial destination") {
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 12));

    const Completed missing = run({AIO_POSIX_COPY, directory / "nothing", directory / "copy"});
    CHECK(missing.status.describe() == "exit 1");
    CHECK(missing.err.find("[ENOENT]") != std::string::npos);
    CHECK_FALSE(exists(directory / "copy"));

    const Completed unwritable = run({AIO_POSIX_COPY, directory / "source", directory.path()});
    CHECK(unwritable.status.describe() == "exit 1");
    CHECK(unwritable.err.find("[EISDIR]") != std::string::npos);

    StartOptions limited;
    limited.rlimit_fsize = 1 << 20;
    const Completed too_large = run({AIO_POSIX_COPY, directory / "source", directory / "copy", "--quiet"}, limited);
    INFO(too_large.err);
    CHECK(too_large.status.describe() == "exit 1");
    CHECK(too_large.err.find("aio_error: File too large [EFBIG]") != std::string::npos);
    CHECK(too_large.err.find("the copy failed; " + (directory / "copy") + " removed") != std::string::npos);
    CHECK_FALSE(exists(directory / "copy"));
}

TEST_CASE("aio_copy finishes a short write: under a file size limit inside the last block, the rest is written "
          "again, fails with EFBIG, and DST is removed") {
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 14));
    // The last block starts at 3 MiB; the limit lets 1 MiB - 1024 bytes of
    // it in. aio_return says 1047552: taken for a whole block, that would end
    // a "copy" 1024 bytes short with exit 0.
    StartOptions limited;
    limited.rlimit_fsize = (4 << 20) - 1024;
    const std::string destination = directory / "copy";
    const Completed copy = run({AIO_POSIX_COPY, directory / "source", destination, "--depth", "4"}, limited);
    INFO(copy.out << copy.err);
    CHECK(copy.status.describe() == "exit 1");  // not killed by SIGXFSZ
    CHECK(copy.out.find("write offset 3145728: aio_return 1047552\n") != std::string::npos);  // short ...
    CHECK(copy.out.find("write offset 4193280: aio_return -1\n") != std::string::npos);       // ... the rest, again
    CHECK(copy.err.find("aio_copy: write " + destination + " at offset 4193280: aio_error: File too large [EFBIG]\n") !=
          std::string::npos);
    CHECK(copy.err.find("aio_copy: the copy failed; " + destination + " removed\n") != std::string::npos);
    CHECK_FALSE(exists(destination));
}

TEST_CASE("strace -f: glibc's helper threads do the pread64 and pwrite64, not the main thread") {
    skip_unless_strace_available();
    TemporaryDirectory directory;
    write_file(directory / "source", random_bytes(4 << 20, 13));
    TraceFile trace_file("aio-posix-copy");
    std::vector<std::string> argv = strace_command(trace_file.path(), "pread64,pwrite64,fsync,clone,clone3");
    for (const std::string& word : {std::string(AIO_POSIX_COPY), directory / "source", directory / "copy",
                                    std::string("--depth"), std::string("4"), std::string("--quiet")}) {
        argv.push_back(word);
    }
    const Completed copy = run(argv, {}, 60s);
    REQUIRE(copy.status.describe() == "exit 0");

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 8000));
    const pid_t main_thread = trace.calls.front().pid;
    const auto threads_created = trace.calls_named("clone3").size() + trace.calls_named("clone").size();
    CHECK(threads_created >= 1);
    // (Before the first thread, the dynamic loader's own pread64 calls.)
    int reads = 0, writes = 0;
    bool threads_started = false;
    for (const Syscall& call : trace.calls) {
        threads_started = threads_started || call.name == "clone3" || call.name == "clone";
        if (threads_started && (call.name == "pread64" || call.name == "pwrite64" || call.name == "fsync")) {
            CHECK(call.pid != main_thread);  // in a helper thread
            reads += call.name == "pread64" && call.value() > 0;
            writes += call.name == "pwrite64";
        }
    }
    CHECK(reads == 4);
    CHECK(writes == 4);
    CHECK(trace.calls_named("fsync").size() == 1);  // aio_fsync(O_SYNC)
}

TEST_CASE("server: with glibc's 20 threads a 21st connection is refused, not starved, and --threads lifts it") {
    skip_if_sigev_thread_under_thread_sanitizer();
    // 20 idle connections: each one's aio_read blocks a glibc thread.
    Server full = start_server(AIO_POSIX_SERVER, {"--threads", "20"});
    const pid_t pid = full.process.pid();
    std::vector<unique_fd> idle;
    for (int i = 0; i < 20; ++i) {
        idle.push_back(connect_to(full.port));
    }
    REQUIRE(eventually([&] { return resources_of(pid).threads >= 21; }));  // main + 20 busy in read()
    // A 21st connection's read would wait for a thread for as long as the
    // others are silent: the server closes it at once instead, and says so.
    unique_fd refused = connect_to(full.port);
    REQUIRE(readable_within(refused.get(), 5s));
    char byte = 0;
    CHECK(::recv(refused.get(), &byte, 1, 0) <= 0);  // closed (EOF, or a reset), nothing echoed
    CHECK(full.process.stderr_text().find("connections hold all 20 AIO threads (--threads)") != std::string::npos);
    // One idle client leaves: its connection closes, and a new client is served.
    idle.front().reset();
    REQUIRE(eventually([&] { return full.process.stderr_text().find("end of file from") != std::string::npos; }));
    CHECK(echo_once(full.port, "hello", 5s).received == "hello");
    idle.clear();
    const std::string full_summary = stop_server(full);
    CHECK(summary_count(full_summary, "refused connections") == 1);
    CHECK(summary_count(full_summary, "connections") == 22);

    // The default, 1024 threads: 50 idle connections and the active one is served at once.
    Server server = start_server(AIO_POSIX_SERVER, {"--quiet"});
    for (int i = 0; i < 50; ++i) {
        idle.push_back(connect_to(server.port));
    }
    REQUIRE(eventually([&] { return resources_of(server.process.pid()).threads >= 51; }));
    CHECK(echo_once(server.port, "hello", 5s).received == "hello");
    idle.clear();
    const std::string summary = stop_server(server);
    CHECK(summary_count(summary, "connections") == 51);
}

TEST_CASE("strace -f: on a socket, glibc tries pread64, gets ESPIPE, and reads with read()") {
    skip_if_sigev_thread_under_thread_sanitizer();
    skip_unless_strace_available();
    TraceFile trace_file("aio-posix-server");
    Server server = start_server(AIO_POSIX_SERVER, {"--quiet"}, {}, strace_command(trace_file.path(), "pread64,read,pwrite64,write"));
    REQUIRE(echo_once(server.port, "hello").received == "hello");
    stop_traced_server(server);

    const Trace trace = Trace::read(trace_file.path());
    INFO(trace.text.substr(0, 8000));
    bool espipe_then_read = false;
    const auto& calls = trace.calls;
    for (std::size_t i = 0; i + 1 < calls.size(); ++i) {
        if (calls[i].name == "pread64" && calls[i].error() == "ESPIPE") {
            for (std::size_t j = i + 1; j < calls.size(); ++j) {
                if (calls[j].pid == calls[i].pid) {
                    espipe_then_read = espipe_then_read || (calls[j].name == "read" && calls[j].value() == 5);
                    break;
                }
            }
        }
    }
    CHECK(espipe_then_read);
}

TEST_CASE("lio_listio skips NULL entries and LIO_NOP entries: a read, NULL, a LIO_NOP and a read give 0 and both reads "
          "done") {
    // Document 001: lio_listio ignores an element that is NULL, and LIO_NOP
    // is the operation that does nothing. The LIO_NOP's descriptor is -1:
    // a read of it would fail (EBADF), and the call with it (-1, EIO).
    use_one_aio_thread();
    TemporaryDirectory directory;
    write_file(directory / "a", "first file\n");
    write_file(directory / "b", "second file\n");
    const unique_fd a(::open((directory / "a").c_str(), O_RDONLY | O_CLOEXEC));
    const unique_fd b(::open((directory / "b").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(a.valid());
    REQUIRE(b.valid());
    std::array<char, 64> a_buffer{}, b_buffer{}, nop_buffer{};
    nop_buffer.fill('.');
    aiocb read_a = read_request(a.get(), a_buffer);
    aiocb read_b = read_request(b.get(), b_buffer);
    aiocb nop = read_request(-1, nop_buffer);
    nop.aio_lio_opcode = LIO_NOP;
    std::array<std::byte, sizeof nop> nop_before;
    std::memcpy(nop_before.data(), &nop, sizeof nop);

    aiocb* list[] = {&read_a, nullptr, &nop, &read_b};
    errno = 0;
    const int result = ::lio_listio(LIO_WAIT, list, 4, nullptr);
    INFO("lio_listio: " << result << ", errno " << errno);
    CHECK(result == 0);
    CHECK(::aio_error(&read_a) == 0);
    CHECK(::aio_return(&read_a) == 11);
    CHECK(std::string(a_buffer.data(), 11) == "first file\n");
    CHECK(::aio_error(&read_b) == 0);
    CHECK(::aio_return(&read_b) == 12);
    CHECK(std::string(b_buffer.data(), 12) == "second file\n");
    // glibc never queues the LIO_NOP: its aiocb and buffer are as they were,
    // and aio_error, which only reads the aiocb's error field, says 0, the
    // value we zeroed it with (POSIX gives an aiocb never submitted no status).
    CHECK(std::memcmp(nop_before.data(), &nop, sizeof nop) == 0);
    CHECK(::aio_error(&nop) == 0);
    CHECK(std::string(nop_buffer.data(), nop_buffer.size()) == std::string(nop_buffer.size(), '.'));
}

TEST_CASE("aio_cancel(fd, NULL) answers for all of a descriptor's requests: AIO_CANCELED if none had started, "
          "AIO_NOTCANCELED while one runs, AIO_ALLDONE once all are over") {
    // Document 001, aio_cancel with aiocbp NULL. As in the SIGQUIT test
    // above: one glibc thread, a FIFO's read that blocks in it, and a
    // file's read queued behind it.
    use_one_aio_thread();
    TemporaryDirectory directory;
    const std::string fifo = directory / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // O_RDWR: we are the FIFO's writer too, so the read waits for data.
    const unique_fd fifo_fd(::open(fifo.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fifo_fd.valid());
    write_file(directory / "file", "regular\n");
    const unique_fd file_fd(::open((directory / "file").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(file_fd.valid());
    std::array<char, 64> fifo_buffer{}, file_buffer{};
    aiocb fifo_read = read_request(fifo_fd.get(), fifo_buffer);
    aiocb file_read = read_request(file_fd.get(), file_buffer);

    REQUIRE(::aio_read(&fifo_read) == 0);
    // The one helper thread runs it and sleeps in the FIFO's read(). (No
    // REQUIRE from here until the FIFO has its data: the read must end
    // before its buffer goes.)
    const bool fifo_read_blocked = eventually([] { return some_thread_sleeping_in("pipe_read"); });
    CHECK(fifo_read_blocked);
    CHECK(::aio_read(&file_read) == 0);  // no second thread: it waits in glibc's queue

    CHECK(::aio_cancel(file_fd.get(), nullptr) == AIO_CANCELED);
    CHECK(::aio_error(&file_read) == ECANCELED);
    CHECK(::aio_return(&file_read) == -1);
    CHECK(::aio_cancel(fifo_fd.get(), nullptr) == AIO_NOTCANCELED);
    CHECK(::aio_error(&fifo_read) == EINPROGRESS);

    const ssize_t written = ::write(fifo_fd.get(), "late data\n", 10);
    const aiocb* const waiting[] = {&fifo_read};
    const timespec timeout{10, 0};
    REQUIRE(written == 10);
    REQUIRE(::aio_suspend(waiting, 1, &timeout) == 0);
    CHECK(::aio_error(&fifo_read) == 0);
    CHECK(::aio_return(&fifo_read) == 10);
    CHECK(std::string(fifo_buffer.data(), 10) == "late data\n");
    CHECK(::aio_cancel(fifo_fd.get(), nullptr) == AIO_ALLDONE);
}
