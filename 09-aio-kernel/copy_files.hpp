// 09-aio-kernel/copy_files.hpp: how aio_copy and uring_copy open their two
// files, and remove an incomplete copy. Both follow the same rules; neither
// is about them, so they are written once, here.
//
//   SRC  opened first: with O_DIRECT where asked for and its file system
//        allows it, and checked (a regular file, not DST itself)
//   DST  opened only after the kernel has given the program its AIO context
//        or ring, and truncated only once every check that comes before the
//        copy has passed: a failed setup leaves an existing DST as it was
//   a failed copy removes DST: no half-copied file that looks like a copy
//
// With O_DIRECT each file is opened twice: the direct descriptor for aligned
// blocks, a buffered one for what O_DIRECT cannot take (the last block's
// unaligned tail). Why and how: the chapter README, "O_DIRECT rules".
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/errors.hpp"
#include "common/files.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

// SRC and DST both given, and a --block-size that is a multiple of 4096;
// otherwise says which is wrong, with the usage, and exits 2.
inline void require_operands_or_exit(const std::string& destination, std::size_t block_size,
                                     const iomodels::CommandLine& command) {
    if (destination.empty() || block_size % 4096 != 0) {
        const char* problem =
            destination.empty() ? "SRC and DST are needed" : "--block-size must be a multiple of 4096";
        std::fprintf(stderr, "%s: %s\n%s", iomodels::program_name(), problem,
                     iomodels::usage_text(iomodels::program_name(), command).c_str());
        std::exit(2);
    }
}

struct CopyFiles {
    // Opened only when O_DIRECT is asked for (then with O_DIRECT where the
    // file system allows it); the *_buffered ones always.
    iomodels::unique_fd source_direct, source_buffered, destination_direct, destination_buffered;
    bool direct = false;           // O_DIRECT asked for and accepted by both files
    std::size_t alignment = 4096;  // direct I/O alignment of both files (with O_DIRECT)
};

// The direct I/O alignment of the open file `fd` (statx STATX_DIOALIGN,
// Linux 6.1): the larger of the buffer's and the offset's. 4096 where
// statx says nothing.
inline std::size_t dio_alignment(int fd) {
    struct statx info {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &info) == 0 && (info.stx_mask & STATX_DIOALIGN) != 0 &&
        info.stx_dio_offset_align != 0) {
        return std::max<std::size_t>(info.stx_dio_mem_align, info.stx_dio_offset_align);
    }
    return 4096;
}

// Opens `path` with O_DIRECT, or, where the file system refuses it
// (EINVAL), without. Sets `direct` to false in that case.
inline iomodels::unique_fd open_direct(const std::string& path, int flags, bool& direct) {
    iomodels::unique_fd fd(::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC, 0644));
    if (!fd && errno == EINVAL) {
        direct = false;
        fd.reset(::open(path.c_str(), flags | O_CLOEXEC, 0644));
    }
    return fd;
}

// True if a transfer of `length` bytes at file offset `offset`, from or into
// an aligned buffer plus `buffer_offset`, may use the O_DIRECT descriptors:
// O_DIRECT is in use and all three are multiples of the alignment.
inline bool direct_allows(const CopyFiles& files, long long offset, std::size_t length, std::size_t buffer_offset) {
    return files.direct && offset % static_cast<long long>(files.alignment) == 0 &&
           length % files.alignment == 0 && buffer_offset % files.alignment == 0;
}

// Opens SRC (twice with `direct`: O_DIRECT and buffered) and makes sure it
// is a regular file, and not DST. False (reported) if not.
inline bool open_source(const std::string& source, const std::string& destination, bool direct, CopyFiles& files,
                        struct stat& source_info) {
    files.direct = direct;
    if (direct) {
        files.source_direct = open_direct(source, O_RDONLY, files.direct);
        if (!files.source_direct) {
            iomodels::report_failure("open " + source, errno);
            return false;
        }
    }
    files.source_buffered.reset(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
    if (!files.source_buffered) {
        iomodels::report_failure("open " + source + (direct ? " (buffered)" : ""), errno);
        return false;
    }
    return iomodels::stat_regular_file(files.source_buffered.get(), source, source_info) &&
           iomodels::different_files(source, source_info, destination);
}

// Opens DST (twice with `direct`), with O_DIRECT finds the alignment of both
// files, and only then truncates DST: a --block-size that does not suit
// DST's file system must leave an existing DST as it was. Returns 0, or the
// exit status (reported): 2 for such a --block-size, else 1.
inline int open_destination(const std::string& destination, std::size_t block_size, bool direct,
                            CopyFiles& files) {
    const bool destination_existed = ::access(destination.c_str(), F_OK) == 0;
    // DST as it was: removed if this program created it (it is empty).
    const auto restore_destination = [&destination, destination_existed] {
        if (!destination_existed && ::unlink(destination.c_str()) == -1 && errno != ENOENT) {
            iomodels::report_failure("unlink " + destination, errno);
        }
    };
    if (direct) {
        files.destination_direct = open_direct(destination, O_WRONLY | O_CREAT, files.direct);
        if (!files.destination_direct) {
            iomodels::report_failure("open " + destination, errno);
            return 1;
        }
    }
    files.destination_buffered.reset(::open(destination.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!files.destination_buffered) {
        iomodels::report_failure("open " + destination + (direct ? " (buffered)" : ""), errno);
        restore_destination();
        return 1;
    }
    if (direct) {
        files.alignment =
            std::max(dio_alignment(files.source_direct.get()), dio_alignment(files.destination_direct.get()));
        if (block_size % files.alignment != 0) {
            std::fprintf(stderr, "%s: --block-size %zu is not a multiple of the direct I/O alignment %zu\n",
                         iomodels::program_name(), block_size, files.alignment);
            restore_destination();
            return 2;
        }
    }
    if (::ftruncate(files.destination_buffered.get(), 0) == -1) {  // now DST is replaced
        iomodels::report_failure("ftruncate " + destination, errno);
        return 1;
    }
    return 0;
}

// After a failure, once DST was truncated: no half-copied file that looks
// like a copy. `why` starts the message ("the copy failed"). Returns the
// exit status, 1.
inline int remove_destination(const std::string& destination, const char* why) {
    if (::unlink(destination.c_str()) == -1) {
        iomodels::report_failure("unlink " + destination, errno);
        std::fprintf(stderr, "%s: %s; %s is incomplete\n", iomodels::program_name(), why, destination.c_str());
        return 1;
    }
    std::fprintf(stderr, "%s: %s; %s removed\n", iomodels::program_name(), why, destination.c_str());
    return 1;
}
