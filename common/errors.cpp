#include "common/errors.hpp"

#include <errno.h>
#include <string.h>

#include <cstdio>

namespace iomodels {

std::string errno_name(int error) {
    // strerrorname_np (glibc 2.32+) returns "EADDRINUSE", or NULL when the
    // value has no name.
    if (const char* name = ::strerrorname_np(error)) {
        return name;
    }
    return "errno " + std::to_string(error);
}

std::string describe_failure(std::string_view call_and_args, int error) {
    std::string message(call_and_args);
    message += ": ";
    message += ::strerror(error);
    message += " [";
    message += errno_name(error);
    message += ']';
    return message;
}

void report_failure(std::string_view call_and_args, int error) {
    std::fprintf(stderr, "%s: %s\n", program_name(), describe_failure(call_and_args, error).c_str());
}

const char* program_name() {
    // Set by glibc from argv[0] before main runs: no global of our own.
    return program_invocation_short_name;
}

}  // namespace iomodels
