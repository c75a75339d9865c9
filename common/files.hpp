// What the file-copying programs (09's and 10's aio_copy) check before
// they start: not what they teach, so it lives here once.
#pragma once

#include <sys/stat.h>

#include <string>

namespace iomodels {

// fstat(fd): true if `path` is a regular file (its size is then in `info`);
// otherwise reports "PROGRAM: PATH: not a regular file" (or the fstat error).
bool stat_regular_file(int fd, const std::string& path, struct stat& info);

// True unless `destination` exists and is the very file `source_info`
// describes, which a copy would truncate before reading it; that case is
// reported "PROGRAM: SRC and DST are the same file".
bool different_files(const std::string& source, const struct stat& source_info, const std::string& destination);

// A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the
// process before it can remove an incomplete copy. Ignored, the write fails
// with EFBIG instead, which the copy reports like any error. If signal()
// fails, reports it and exits 1.
void ignore_file_size_signal_or_exit();

}  // namespace iomodels
