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

}  // namespace iomodels
