// Error messages in the one format every program uses (CONTRACT.md):
//
//   PROGRAM: CALL ARGS: strerror(errno) [ERRNO_NAME]
//   server: bind 127.0.0.1:8001: Address already in use [EADDRINUSE]
//
// so that a message sits beside the strace line of the call that failed.
#pragma once

#include <string>
#include <string_view>

namespace iomodels {

// "EADDRINUSE" for EADDRINUSE; "errno 4242" for a value glibc does not name.
std::string errno_name(int error);

// "bind 127.0.0.1:8001: Address already in use [EADDRINUSE]"
std::string describe_failure(std::string_view call_and_args, int error);

// Prints "PROGRAM: " + describe_failure(...) to stderr.
void report_failure(std::string_view call_and_args, int error);

// The program's short name (basename of argv[0]), for messages.
const char* program_name();

}  // namespace iomodels
