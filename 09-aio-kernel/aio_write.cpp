// 09-aio-kernel/aio_write.cpp: one write through kernel AIO, its result
// checked (document 000 §5.2.1's example never looks at it).
//
//   io_setup(1, &context)            a context for one request in flight
//   io_submit(context, 1, [iocb])    the request: IOCB_CMD_PWRITE, fd, buffer, length, offset
//   io_getevents(context, 1, 1, ...) wait for its completion: io_event.res, bytes or -errno
//   io_destroy(context)              at the end, by unique_aio_context (aio_abi.hpp)
//
// usage: aio_write FILE [MESSAGE...]   (writes MESSAGE and a newline at offset 0 of FILE;
//                                       default "hello from kernel AIO")
//
// strace: strace -e trace=openat,io_setup,io_submit,io_getevents,io_destroy ./build/09-aio-kernel/aio_write out.txt
//   io_submit(...) = 1 with the iocb decoded (aio_lio_opcode=IOCB_CMD_PWRITE),
//   then io_getevents(...) = 1 with {res=22, res2=0}: 22 bytes written. Without
//   O_DIRECT, io_submit did the write itself (aio_read shows O_DIRECT).
//
// No loop here: read `main` top to bottom, one request and its completion.

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "aio_abi.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

int main(int argc, char** argv) {
    std::string path;
    std::vector<std::string> words;
    const CommandLine command{
        "FILE [MESSAGE...]",
        "Writes MESSAGE (default \"hello from kernel AIO\") and a newline at offset 0 of FILE with one kernel AIO "
        "request, and reports its result.",
        {},
        [&](std::string_view operand) {
            if (path.empty()) {
                path = operand;
                return !path.empty();  // an empty FILE; an empty MESSAGE word is a word, as for echo(1)
            }
            words.emplace_back(operand);
            return true;
        },
        "FILE",
        "",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (path.empty()) {
        std::fprintf(stderr, "%s: FILE is missing\n%s", program_name(), usage_text(program_name(), command).c_str());
        return 2;
    }
    std::string message;
    for (const std::string& word : words) {
        message += (message.empty() ? "" : " ") + word;
    }
    message = (words.empty() ? "hello from kernel AIO" : message) + "\n";

    const unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) {
        report_failure("open " + path, errno);
        return 1;
    }
    aio_context_t new_context = 0;  // must be 0 before io_setup
    if (io_setup(1, &new_context) == -1) {
        // EAGAIN: the system-wide limit /proc/sys/fs/aio-max-nr is reached.
        report_failure("io_setup 1", errno);
        return 1;
    }
    // Declared after `message` and `fd`: destroyed first (see unique_aio_context).
    const unique_aio_context context(new_context);

    iocb request{};
    request.aio_lio_opcode = IOCB_CMD_PWRITE;
    request.aio_fildes = static_cast<std::uint32_t>(fd.get());
    request.aio_buf = reinterpret_cast<std::uint64_t>(message.data());
    request.aio_nbytes = message.size();
    request.aio_offset = 0;
    request.aio_data = 1;  // ours, handed back in io_event.data
    iocb* requests[] = {&request};
    const int queued = io_submit(context.get(), 1, requests);
    if (queued != 1) {
        // -1: the request was refused as a whole (EINVAL, EBADF, EAGAIN...).
        report_failure("io_submit IOCB_CMD_PWRITE " + path, queued == -1 ? errno : EAGAIN);
        return 1;
    }
    std::printf("io_submit: 1 request queued (IOCB_CMD_PWRITE, %zu bytes at offset 0 of %s)\n", message.size(),
                path.c_str());
    io_event event{};
    int completed = 0;
    do {
        completed = io_getevents(context.get(), 1, 1, &event, nullptr);  // EINTR: a signal; wait again
    } while (completed == -1 && errno == EINTR);
    if (completed != 1) {
        report_failure("io_getevents", errno);
        return 1;
    }
    if (event.res < 0) {
        // The request ran and failed: res is -errno.
        std::printf("io_getevents: res %lld: %s [%s]\n", static_cast<long long>(event.res),
                    ::strerror(static_cast<int>(-event.res)), errno_name(static_cast<int>(-event.res)).c_str());
        return 1;
    }
    if (static_cast<std::size_t>(event.res) != message.size()) {
        std::printf("io_getevents: res %lld: a short write, %zu bytes were asked for\n",
                    static_cast<long long>(event.res), message.size());
        return 1;
    }
    std::printf("io_getevents: res %lld: %lld bytes written at offset 0\n", static_cast<long long>(event.res),
                static_cast<long long>(event.res));
    return 0;
}
