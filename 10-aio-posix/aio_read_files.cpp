// 10-aio-posix/aio_read_files.cpp: one POSIX AIO read per file, completion
// by signal, cancellation on SIGQUIT (document 000 §5.2.2's example, which
// is aio(7)'s, done right: see the README).
//
// aio_read() queues each read and returns at once; its completion sends
// SIGUSR1 (SIGEV_SIGNAL), whose handler only counts. main sleeps in
// sigsuspend() and after each wake-up asks aio_error() about every request
// still in progress; aio_return() gives a finished one's result. SIGQUIT
// asks aio_cancel() to cancel the rest. --threads N sizes glibc's pool of
// helper threads (aio_init), which run the reads.
//
// --listio-wait queues every read with one lio_listio(LIO_WAIT) instead
// (document 001's lio_listio, 000 §5.3's limit on its list): the call
// returns only when every read is over, so there is no signal to wait for.
//
// usage: aio_read_files FILE... [--threads N] [--listio-wait]
//        (SIGQUIT, Ctrl-\, cancels what is still in progress)
//
// strace: strace -f -e trace=openat,pread64,rt_sigsuspend,clone3 ./build/10-aio-posix/aio_read_files a b
//   clone3 for the helper threads, one pread64 per file in a thread, the
//   main thread's rt_sigsuspend returning after "--- SIGUSR1 {si_code=SI_ASYNCIO} ---".
//
// Read `main`'s loop first; the functions above it are its steps.

#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

// The handlers' only state. volatile sig_atomic_t is enough: they run only
// in the main thread, inside sigsuspend (glibc's helpers block every signal).
volatile sig_atomic_t completion_signals = 0;
volatile sig_atomic_t quit_requested = 0;

void on_completion(int) { completion_signals = completion_signals + 1; }
void on_quit(int) { quit_requested = 1; }

constexpr std::size_t buffer_size = 4096;

// One file's request. On the heap and never moved: the aiocb and its
// buffer must stay where they are until the request is over.
struct Request {
    std::string path;
    unique_fd fd;
    std::vector<char> buffer = std::vector<char>(buffer_size);
    // (Allocated apart: glibc's aiocb ends in an array of size zero, which
    // may not be a member of another struct in ISO C++.)
    std::unique_ptr<aiocb> control_block = std::make_unique<aiocb>();
    aiocb& control = *control_block;
    bool finished = false;
};

std::string printable(const char* bytes, std::size_t size) {
    std::string text;
    for (std::size_t i = 0; i < size && i < 64; ++i) {
        const auto byte = static_cast<unsigned char>(bytes[i]);
        if (byte >= 0x20 && byte < 0x7f) {
            text += static_cast<char>(byte);
        } else {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, byte == '\n' ? "\\n" : "\\x%02x", byte);
            text += escaped;
        }
    }
    return size > 64 ? text + "..." : text;
}

const char* cancel_result_name(int result) {
    switch (result) {
        case AIO_CANCELED: return "AIO_CANCELED (it had not started: it never will)";
        case AIO_NOTCANCELED: return "AIO_NOTCANCELED (it is running: wait for it)";
        case AIO_ALLDONE: return "AIO_ALLDONE (it had finished)";
        default: return "-1";
    }
}

// Looks at every request still in progress; reports those that are done.
// Returns how many are still in progress.
int collect(std::vector<std::unique_ptr<Request>>& requests) {
    int in_progress = 0;
    for (auto& request : requests) {
        if (request->finished) {
            continue;
        }
        const int error = ::aio_error(&request->control);
        if (error == EINPROGRESS) {
            ++in_progress;
            continue;
        }
        request->finished = true;
        const ssize_t result = ::aio_return(&request->control);  // once, and only when done
        if (error == 0) {
            std::printf("%s: aio_error 0, aio_return %zd: \"%s\"\n", request->path.c_str(), result,
                        printable(request->buffer.data(), static_cast<std::size_t>(result)).c_str());
        } else if (error == ECANCELED) {
            std::printf("%s: aio_error ECANCELED: cancelled before it ran\n", request->path.c_str());
        } else {
            std::printf("%s: aio_error %s, aio_return %zd\n", request->path.c_str(),
                        describe_failure("read", error).c_str(), result);
        }
    }
    return in_progress;
}

// Blocks SIGUSR1 and SIGQUIT, installs their handlers, and fills
// `while_waiting` with the mask for sigsuspend: the same, with both
// unblocked. Blocked except inside sigsuspend(), a completion cannot slip
// in between "anything left?" and the wait. False (reported): a call failed.
bool install_handlers(sigset_t& while_waiting) {
    sigset_t blocked;
    ::sigemptyset(&blocked);
    ::sigaddset(&blocked, SIGUSR1);
    ::sigaddset(&blocked, SIGQUIT);
    if (::sigprocmask(SIG_BLOCK, &blocked, &while_waiting) == -1) {
        report_failure("sigprocmask SIG_BLOCK SIGUSR1 SIGQUIT", errno);
        return false;
    }
    ::sigdelset(&while_waiting, SIGUSR1);
    ::sigdelset(&while_waiting, SIGQUIT);
    struct sigaction action {};
    ::sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    action.sa_handler = on_completion;
    if (::sigaction(SIGUSR1, &action, nullptr) == -1) {
        report_failure("sigaction SIGUSR1", errno);
        return false;
    }
    action.sa_handler = on_quit;
    if (::sigaction(SIGQUIT, &action, nullptr) == -1) {
        report_failure("sigaction SIGQUIT", errno);
        return false;
    }
    return true;
}

// Opens `path` and fills in a read of its first bytes, not queued yet.
// nullptr (reported): open failed.
std::unique_ptr<Request> prepare_read(const std::string& path) {
    auto request = std::make_unique<Request>();
    request->path = path;
    request->fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!request->fd) {
        report_failure("open " + path, errno);
        return nullptr;
    }
    aiocb& control = request->control;
    control.aio_fildes = request->fd.get();
    control.aio_buf = request->buffer.data();
    control.aio_nbytes = request->buffer.size();
    control.aio_offset = 0;
    control.aio_lio_opcode = LIO_READ;  // for lio_listio; aio_read ignores it
    control.aio_sigevent.sigev_notify = SIGEV_NONE;
    return request;
}

// Opens `path` and queues one aio_read of its first bytes, SIGEV_SIGNAL.
// nullptr (reported): open or aio_read failed.
std::unique_ptr<Request> queue_read(const std::string& path) {
    auto request = prepare_read(path);
    if (!request) {
        return nullptr;
    }
    aiocb& control = request->control;
    control.aio_sigevent.sigev_notify = SIGEV_SIGNAL;  // at completion: SIGUSR1
    control.aio_sigevent.sigev_signo = SIGUSR1;
    control.aio_sigevent.sigev_value.sival_ptr = request.get();
    if (::aio_read(&control) == -1) {
        report_failure("aio_read " + path, errno);  // EAGAIN: glibc's queue is full
        return nullptr;
    }
    std::printf("%s: aio_read queued on fd %d\n", path.c_str(), request->fd.get());
    return request;
}

// --listio-wait: every read in one lio_listio(LIO_WAIT), which returns
// when all of them are over: 0 if every one succeeded, -1 with EIO if one
// or more failed (each request's aio_error says how). The list has no
// limit that glibc declares: sysconf(_SC_AIO_LISTIO_MAX) answers -1 and
// leaves errno alone (POSIX: no definite limit), and glibc defines no
// AIO_LISTIO_MAX for document 000 §5.3's fallback.
int read_with_one_listio(std::vector<std::unique_ptr<Request>>& requests) {
    errno = 0;
    const long listio_max = ::sysconf(_SC_AIO_LISTIO_MAX);
    if (listio_max == -1 && errno == 0) {
        std::printf("sysconf(_SC_AIO_LISTIO_MAX): -1, errno unchanged: no definite limit on a list\n");
    } else if (listio_max == -1) {
        std::printf("sysconf(_SC_AIO_LISTIO_MAX): %s\n", describe_failure("sysconf", errno).c_str());
    } else {
        std::printf("sysconf(_SC_AIO_LISTIO_MAX): %ld requests in one list at most\n", listio_max);
    }
    std::vector<aiocb*> list;
    for (auto& request : requests) {
        list.push_back(&request->control);
    }
    std::fflush(stdout);
    const int result = ::lio_listio(LIO_WAIT, list.data(), static_cast<int>(list.size()), nullptr);
    const int error = errno;
    if (result == 0) {
        std::printf("lio_listio(LIO_WAIT, %zu reads): 0, every one done\n", list.size());
    } else if (error == EIO) {
        std::printf("lio_listio(LIO_WAIT, %zu reads): -1, EIO: every one is over, and one or more failed\n",
                    list.size());
    } else {  // EAGAIN or EINVAL: nothing was queued (glibc checks before it queues)
        report_failure("lio_listio LIO_WAIT " + std::to_string(list.size()) + " reads", error);
        return 1;
    }
    const int in_progress = collect(requests);
    if (in_progress != 0) {  // LIO_WAIT returned early: it must not
        report_failure("lio_listio LIO_WAIT returned with " + std::to_string(in_progress) + " still in progress",
                       EINPROGRESS);
        return 1;
    }
    return result == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> paths;
    int threads = 0;
    bool listio_wait = false;
    const CommandLine command{
        "FILE... [--threads N] [--listio-wait]",
        "Reads the first 4096 bytes of each FILE with one POSIX AIO request each; SIGQUIT cancels what is left.",
        {{"--threads", "N", "glibc's AIO threads (aio_init; glibc's default is 20)", number(threads, 1, 1000)},
         {"--listio-wait", "", "queue every read with one lio_listio(LIO_WAIT), which returns when all are over",
          [&listio_wait](std::string_view) { return listio_wait = true; }}},
        [&paths](std::string_view operand) {
            paths.emplace_back(operand);
            return !operand.empty();
        },
        "FILE",
        "",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (paths.empty()) {
        std::fprintf(stderr, "%s: no FILE\n%s", program_name(), usage_text(program_name(), command).c_str());
        return 2;
    }
    if (threads > 0) {
        aioinit settings{};
        settings.aio_threads = threads;
        settings.aio_num = static_cast<int>(paths.size());
        settings.aio_idle_time = 1;
        ::aio_init(&settings);  // glibc only, returns nothing; before the first request
    }
    if (listio_wait) {
        std::vector<std::unique_ptr<Request>> requests;
        for (const std::string& path : paths) {
            auto request = prepare_read(path);
            if (!request) {
                return 1;  // reported; nothing was queued
            }
            requests.push_back(std::move(request));
        }
        return read_with_one_listio(requests);
    }
    sigset_t while_waiting;
    if (!install_handlers(while_waiting)) {
        return 1;
    }

    std::vector<std::unique_ptr<Request>> requests;
    int status = 0;
    for (const std::string& path : paths) {
        if (auto request = queue_read(path)) {
            requests.push_back(std::move(request));
        } else {
            status = 1;  // reported; the other files are read all the same
        }
    }
    std::fflush(stdout);

    while (collect(requests) > 0) {
        std::fflush(stdout);
        if (quit_requested != 0) {
            quit_requested = 0;
            std::printf("SIGQUIT: cancelling what is still in progress\n");
            for (auto& request : requests) {
                if (!request->finished && ::aio_error(&request->control) == EINPROGRESS) {
                    const int result = ::aio_cancel(request->fd.get(), &request->control);
                    std::printf("%s: aio_cancel: %s\n", request->path.c_str(), cancel_result_name(result));
                }
            }
            std::fflush(stdout);
            continue;  // look again: cancelled requests are done now
        }
        // Sleeps until SIGUSR1 or SIGQUIT, whose handlers have run when it
        // returns (always -1, EINTR: nothing else to check).
        ::sigsuspend(&while_waiting);
    }
    const int handled = completion_signals;
    std::printf("%zu requests done; the completion signal's handler ran %d time%s (a completion already seen "
                "leaves its signal pending, unhandled)\n",
                requests.size(), handled, handled == 1 ? "" : "s");
    for (const auto& request : requests) {
        status = status != 0 || ::aio_error(&request->control) != 0 ? 1 : 0;
    }
    return status;
}
