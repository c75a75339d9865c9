// 09-aio-kernel/aio_read.cpp: an O_DIRECT read through kernel AIO, into a
// buffer aligned as statx(STATX_DIOALIGN) says (document 001's example
// misspelt O_DIRECT and used sizes that were not aligned).
//
// With O_DIRECT, io_submit() returns at once and the device fills the
// buffer later: kernel AIO at its most asynchronous. --offset 1 and
// --unaligned-buffer break the alignment rules (the README shows what comes
// back); where open(O_DIRECT) fails with EINVAL, it reads buffered and says so.
//
// usage: aio_read FILE [--blocks N] [--offset N] [--unaligned-buffer]
//   reads N (default 1) aligned blocks from offset 0 and prints them
//
// strace: strace -e trace=statx,openat,io_setup,io_submit,io_getevents,io_destroy ./build/09-aio-kernel/aio_read FILE
//   openat(..., O_RDONLY|O_DIRECT), io_submit(...) = 1, io_getevents(...) = 1
//   with {res=N}; and no pread64 or read: the kernel filled the buffer.
//
// No loop here: read `main` top to bottom; the two functions above it are its steps.

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <string_view>

#include "aio_abi.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

struct Alignment {
    std::size_t memory;  // the buffer's address
    std::size_t offset;  // file offsets and lengths
    bool from_statx;
};

Alignment direct_io_alignment(const std::string& path) {
    struct statx info {};
    if (::statx(AT_FDCWD, path.c_str(), 0, STATX_DIOALIGN, &info) == 0 && (info.stx_mask & STATX_DIOALIGN) != 0 &&
        info.stx_dio_offset_align != 0) {
        return {info.stx_dio_mem_align, info.stx_dio_offset_align, true};
    }
    return {4096, 4096, false};  // not reported: a value every device accepts
}

// The bytes as text a terminal can show: printable ASCII as is, the rest
// escaped. (Never %s on bytes read: a NUL would end the string.)
std::string printable(const unsigned char* bytes, std::size_t size, std::size_t limit) {
    std::string text;
    for (std::size_t i = 0; i < size && i < limit; ++i) {
        const unsigned char byte = bytes[i];
        if (byte == '\n') {
            text += "\\n";
        } else if (byte >= 0x20 && byte < 0x7f) {
            text += static_cast<char>(byte);
        } else {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", byte);
            text += escaped;
        }
    }
    return size > limit ? text + "..." : text;
}

}  // namespace

int main(int argc, char** argv) {
    std::string path;
    unsigned blocks = 1;
    long long offset = 0;
    bool misalign = false;
    const CommandLine command{
        "FILE [--blocks N] [--offset N] [--unaligned-buffer]",
        "Reads the first N aligned blocks of FILE with O_DIRECT and one kernel AIO request, and prints them.",
        {{"--blocks", "N", "how many blocks to read (1 to 1024, default 1)", number(blocks, 1u, 1024u)},
         {"--offset", "N", "file offset to read at (default 0; 1 breaks O_DIRECT's alignment rule)",
          number(offset, 0LL, std::numeric_limits<long long>::max())},
         {"--unaligned-buffer", "", "read into a buffer one byte past an aligned address",
          [&misalign](std::string_view) {
              misalign = true;
              return true;
          }}},
        [&path](std::string_view operand) {
            if (!path.empty() || operand.empty()) {
                return false;  // a second FILE, or an empty one
            }
            path = operand;
            return true;
        },
        "FILE",
        "(one file)",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (path.empty()) {
        std::fprintf(stderr, "%s: FILE is missing\n%s", program_name(), usage_text(program_name(), command).c_str());
        return 2;
    }

    const Alignment alignment = direct_io_alignment(path);
    bool direct = true;
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    if (!fd && errno == EINVAL) {
        // EINVAL: no direct I/O here (or FILE is a directory: the fstat
        // below tells). Read buffered.
        direct = false;
        fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    }
    if (!fd) {
        report_failure("open " + path, errno);
        return 1;
    }
    // A directory opens without O_DIRECT but cannot be read: say so, rather
    // than blame the file system and let io_submit fail with EINVAL.
    struct stat info {};
    if (::fstat(fd.get(), &info) == -1) {
        report_failure("fstat " + path, errno);
        return 1;
    }
    if (S_ISDIR(info.st_mode)) {
        std::fprintf(stderr, "%s: %s: is a directory\n", program_name(), path.c_str());
        return 1;
    }
    // FILE can be read: now what statx and open told.
    std::printf("direct I/O alignment of %s: buffer %zu, offset and length %zu (%s)\n", path.c_str(),
                alignment.memory, alignment.offset, alignment.from_statx ? "statx STATX_DIOALIGN" : "assumed");
    if (!direct) {
        std::printf("open %s with O_DIRECT: %s: this file system does not do direct I/O; reading buffered, so "
                    "io_submit will do the read itself, synchronously\n",
                    path.c_str(), describe_failure("open", EINVAL).c_str());
    }

    // Aligned memory: aligned_alloc wants the size to be a multiple of the
    // alignment; one extra block leaves room for --unaligned-buffer's shift.
    const std::size_t length = blocks * alignment.offset;
    const std::size_t buffer_alignment = std::max(alignment.memory, alignment.offset);
    const std::size_t allocated = (length / buffer_alignment + 2) * buffer_alignment;
    const std::unique_ptr<unsigned char, decltype(&std::free)> buffer(
        static_cast<unsigned char*>(std::aligned_alloc(buffer_alignment, allocated)), &std::free);
    if (!buffer) {
        report_failure("aligned_alloc", ENOMEM);
        return 1;
    }
    unsigned char* const target = buffer.get() + (misalign ? 1 : 0);

    aio_context_t new_context = 0;  // must be 0 before io_setup
    if (io_setup(1, &new_context) == -1) {
        report_failure("io_setup 1", errno);  // EAGAIN: /proc/sys/fs/aio-max-nr reached
        return 1;
    }
    // Declared after `buffer`: destroyed first, so no request can be left
    // writing into freed memory (see unique_aio_context).
    const unique_aio_context context(new_context);
    iocb request{};
    request.aio_lio_opcode = IOCB_CMD_PREAD;
    request.aio_fildes = static_cast<std::uint32_t>(fd.get());
    request.aio_buf = reinterpret_cast<std::uint64_t>(target);
    request.aio_nbytes = length;
    request.aio_offset = offset;
    iocb* requests[] = {&request};
    std::printf("io_submit: IOCB_CMD_PREAD of %zu bytes at offset %lld into a buffer at %p (%s)%s\n", length, offset,
                static_cast<void*>(target), misalign ? "1 byte past an aligned address" : "aligned",
                direct ? ", O_DIRECT" : "");
    if (io_submit(context.get(), 1, requests) != 1) {
        // Refused at once: the request never ran.
        std::printf("io_submit refused the request: %s\n", describe_failure("io_submit", errno).c_str());
        return 1;
    }
    io_event event{};
    int completed = 0;
    do {
        completed = io_getevents(context.get(), 1, 1, &event, nullptr);
    } while (completed == -1 && errno == EINTR);
    if (completed != 1) {
        report_failure("io_getevents", errno);
        return 1;
    }
    if (event.res < 0) {
        // Accepted, then failed: the error comes in the completion.
        const int error = static_cast<int>(-event.res);
        const bool unaligned = misalign || offset % static_cast<long long>(alignment.offset) != 0;
        std::printf("io_getevents: res %lld: the request failed: %s [%s]%s\n", static_cast<long long>(event.res),
                    ::strerror(error), errno_name(error).c_str(),
                    error == EINVAL && unaligned ? " (not aligned for O_DIRECT)" : "");
        return 1;
    }
    const auto got = static_cast<std::size_t>(event.res);
    std::printf("io_getevents: res %zu: %zu bytes read at offset %lld%s\n", got, got, offset,
                got < length ? " (less than asked: the file ends there)" : "");
    std::printf("%s\n", printable(target, got, 256).c_str());
    return 0;
}
