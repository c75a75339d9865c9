#include "common/files.hpp"

#include <errno.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>

#include "common/errors.hpp"

namespace iomodels {

bool stat_regular_file(int fd, const std::string& path, struct stat& info) {
    if (::fstat(fd, &info) == -1) {
        report_failure("fstat " + path, errno);
        return false;
    }
    if (!S_ISREG(info.st_mode)) {
        std::fprintf(stderr, "%s: %s: not a regular file\n", program_name(), path.c_str());
        return false;
    }
    return true;
}

bool different_files(const std::string& source, const struct stat& source_info, const std::string& destination) {
    struct stat existing {};
    if (::stat(destination.c_str(), &existing) == 0 && existing.st_dev == source_info.st_dev &&
        existing.st_ino == source_info.st_ino) {
        std::fprintf(stderr, "%s: %s and %s are the same file\n", program_name(), source.c_str(), destination.c_str());
        return false;
    }
    return true;
}

void ignore_file_size_signal_or_exit() {
    if (::signal(SIGXFSZ, SIG_IGN) == SIG_ERR) {
        report_failure("signal SIGXFSZ SIG_IGN", errno);
        std::exit(1);
    }
}

}  // namespace iomodels
