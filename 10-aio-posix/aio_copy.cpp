// 10-aio-posix/aio_copy.cpp: copies a file with POSIX AIO, up to --depth
// blocks in flight: each round queues a batch of reads and writes with
// lio_listio(LIO_NOWAIT), sleeps in aio_suspend until one of them is done
// (with --notify thread, until a SIGEV_THREAD function says so), takes the
// results with aio_error/aio_return, and an aio_fsync ends the copy.
// Compare 09-aio-kernel/aio_copy: here glibc runs each request as an ordinary
// pread/pwrite in a helper thread, so any block size works.
//
// usage: aio_copy SRC DST [--depth N] [--block-size N] [--notify suspend|thread] [--quiet]
//   (depth 8, block size 1 MiB by default)
//
// strace: strace -f -e trace=pread64,pwrite64,fsync,fdatasync,clone3 ./build/10-aio-posix/aio_copy SRC DST
//   clone3 for glibc's helper threads; pread64/pwrite64 in those threads,
//   not in the main one; an fsync at the end, also in a helper thread.
//
// Read `main` first, then `Copy::run`'s loop just above it; the functions above that are its steps.

#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.hpp"
#include "common/files.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"

using namespace iomodels;

namespace {

struct Settings {
    std::string source, destination;
    unsigned depth = 8;
    std::size_t block_size = 1 << 20;
    bool notify_thread = false;
    bool quiet = false;
};

// The command line; --help: usage, exit 0; bad arguments: usage, exit 2.
Settings parse_settings_or_exit(int argc, char** argv) {
    Settings settings;
    const CommandLine command{
        "SRC DST [--depth N] [--block-size N] [--notify suspend|thread] [--quiet]",
        "Copies SRC to DST with up to N POSIX AIO requests in flight (lio_listio, aio_suspend, aio_fsync).",
        {{"--depth", "N", "requests in flight at most (1 to 1024, default 8)", number(settings.depth, 1u, 1024u)},
         {"--block-size", "N", "bytes per request (1 to 67108864, default 1048576)",
          number(settings.block_size, std::size_t{1}, std::size_t{64} << 20)},
         {"--notify", "HOW", "suspend (aio_suspend, the default) or thread (SIGEV_THREAD)",
          [&settings](std::string_view value) {
              settings.notify_thread = value == "thread";
              return value == "thread" || value == "suspend";
          }},
         {"--quiet", "", "do not report each request",
          [&settings](std::string_view) { return settings.quiet = true; }}},
        two_paths(settings.source, settings.destination),
        "SRC DST",
        "(two paths)",
    };
    parse_command_line_or_exit(command, argc, argv);
    if (settings.destination.empty()) {
        std::fprintf(stderr, "%s: SRC and DST are needed\n%s", program_name(),
                     usage_text(program_name(), command).c_str());
        std::exit(2);
    }
    return settings;
}

// --notify thread: completions counted by glibc's notification threads.
struct Notifications {
    std::mutex mutex;
    std::condition_variable done;
    unsigned long long count = 0;
};

void on_request_done(sigval value) {
    auto& notifications = *static_cast<Notifications*>(value.sival_ptr);
    {
        const std::lock_guard lock(notifications.mutex);
        ++notifications.count;
    }
    notifications.done.notify_one();
}

struct Slot {
    std::vector<char> buffer;
    // Allocated apart: glibc's aiocb ends in a zero-size array.
    std::unique_ptr<aiocb> request = std::make_unique<aiocb>();
    enum class State { idle, reading, writing } state = State::idle;
    long long offset = 0;    // of the block
    std::size_t length = 0;  // its bytes
    std::size_t done = 0;    // read or written so far
};

class Copy {
public:
    Copy(const Settings& settings, int source, int destination, long long size)
        : settings_(settings), source_(source), destination_(destination), size_(size) {}

    bool run();
    // --notify thread: returns once every request's notification has run,
    // so that none touches notifications_ after the copy is gone.
    void wait_for_notifications();
    bool sync();
    void abandon();  // after a failure: cancel, and wait for what cannot be cancelled

    // What the summary line counts.
    struct Counters {
        unsigned long long reads = 0, writes = 0, batches = 0;  // batches: lio_listio calls
        unsigned most_in_flight = 0;
    } counters;

private:
    void prepare(Slot& slot, bool write);
    bool submit();
    bool wait(std::vector<aiocb*> watched);
    bool complete(Slot& slot);

    const Settings& settings_;
    int source_, destination_;
    long long size_;
    std::vector<Slot> slots_;
    std::vector<aiocb*> to_submit_;
    long long next_read_ = 0, copied_ = 0;
    unsigned in_flight_ = 0;
    Notifications notifications_;
    unsigned long long seen_ = 0;       // notifications already waited for
    unsigned long long submitted_ = 0;  // requests queued: each will notify once
};

void Copy::prepare(Slot& slot, bool write) {
    aiocb& request = *slot.request;
    request = aiocb{};
    request.aio_fildes = write ? destination_ : source_;
    request.aio_buf = slot.buffer.data() + slot.done;
    request.aio_nbytes = (write || slot.done > 0 ? slot.length : settings_.block_size) - slot.done;
    request.aio_offset = slot.offset + static_cast<off_t>(slot.done);
    request.aio_lio_opcode = write ? LIO_WRITE : LIO_READ;
    if (settings_.notify_thread) {
        request.aio_sigevent.sigev_notify = SIGEV_THREAD;  // glibc calls on_request_done in a thread
        request.aio_sigevent.sigev_notify_function = on_request_done;
        request.aio_sigevent.sigev_value.sival_ptr = &notifications_;
    } else {
        request.aio_sigevent.sigev_notify = SIGEV_NONE;  // we ask with aio_suspend/aio_error
    }
    slot.state = write ? Slot::State::writing : Slot::State::reading;
    to_submit_.push_back(&request);
}

// Queues everything prepared with one lio_listio(LIO_NOWAIT).
bool Copy::submit() {
    if (to_submit_.empty()) {
        return true;
    }
    ++counters.batches;
    const int result = ::lio_listio(LIO_NOWAIT, to_submit_.data(), static_cast<int>(to_submit_.size()), nullptr);
    if (result == -1) {
        // EIO: some request could not be queued; its aio_error says why.
        // EAGAIN: glibc is out of resources for the whole list.
        for (aiocb* request : to_submit_) {
            const int error = ::aio_error(request);
            if (error != EINPROGRESS && error != 0) {
                const char* opcode = request->aio_lio_opcode == LIO_READ ? "LIO_READ" : "LIO_WRITE";
                report_failure(std::string("lio_listio ") + opcode, error);
            }
        }
        report_failure("lio_listio LIO_NOWAIT " + std::to_string(to_submit_.size()) + " requests", errno);
        to_submit_.clear();
        return false;
    }
    in_flight_ += static_cast<unsigned>(to_submit_.size());
    submitted_ += to_submit_.size();
    counters.most_in_flight = std::max(counters.most_in_flight, in_flight_);
    to_submit_.clear();
    return true;
}

// Sleeps until at least one of `watched` is done.
bool Copy::wait(std::vector<aiocb*> watched) {
    if (settings_.notify_thread) {
        std::unique_lock lock(notifications_.mutex);
        notifications_.done.wait(lock, [this] { return notifications_.count > seen_; });
        seen_ = notifications_.count;
        return true;
    }
    // aio_suspend returns at once if one is already done; EINTR: a signal.
    while (::aio_suspend(watched.data(), static_cast<int>(watched.size()), nullptr) == -1) {
        if (errno != EINTR) {
            report_failure("aio_suspend", errno);
            return false;
        }
    }
    return true;
}

void Copy::wait_for_notifications() {
    if (settings_.notify_thread) {
        std::unique_lock lock(notifications_.mutex);
        notifications_.done.wait(lock, [this] { return notifications_.count >= submitted_; });
    }
}

// A request of `slot` is done: check it, then read or write what is left,
// or move on. False (reported): the copy failed.
bool Copy::complete(Slot& slot) {
    --in_flight_;
    aiocb& request = *slot.request;
    const int error = ::aio_error(&request);
    const ssize_t result = ::aio_return(&request);  // exactly once per request
    const bool reading = slot.state == Slot::State::reading;
    if (!settings_.quiet) {
        std::printf("%s offset %lld: aio_return %zd\n", reading ? "read " : "write",
                    static_cast<long long>(request.aio_offset), result);
    }
    if (error != 0) {
        std::fprintf(stderr, "%s: %s %s at offset %lld: %s\n", program_name(), reading ? "read" : "write",
                     reading ? settings_.source.c_str() : settings_.destination.c_str(),
                     static_cast<long long>(request.aio_offset), describe_failure("aio_error", error).c_str());
        return false;
    }
    if (reading) {
        ++counters.reads;
        if (slot.done == 0) {
            slot.length = static_cast<std::size_t>(std::min<long long>(settings_.block_size, size_ - slot.offset));
        }
        slot.done += static_cast<std::size_t>(result);
        if (result == 0 && slot.done < slot.length) {
            std::fprintf(stderr, "%s: %s ended early: it changed during the copy\n", program_name(),
                         settings_.source.c_str());
            return false;
        }
        if (slot.done < slot.length) {
            prepare(slot, false);  // short read: the rest
        } else {
            slot.done = 0;
            prepare(slot, true);
        }
        return true;
    }
    ++counters.writes;
    slot.done += static_cast<std::size_t>(result);
    if (result == 0) {
        std::fprintf(stderr, "%s: a write to %s wrote nothing\n", program_name(), settings_.destination.c_str());
        return false;
    }
    if (slot.done < slot.length) {
        prepare(slot, true);  // short write: the rest
        return true;
    }
    copied_ += static_cast<long long>(slot.length);
    slot.state = Slot::State::idle;
    return true;
}

// aio_fsync: the copy's data and metadata to the disk, itself a request.
bool Copy::sync() {
    auto request = std::make_unique<aiocb>();
    request->aio_fildes = destination_;
    request->aio_sigevent.sigev_notify = SIGEV_NONE;
    if (::aio_fsync(O_SYNC, request.get()) == -1) {
        report_failure("aio_fsync O_SYNC", errno);
        return false;
    }
    const aiocb* watched[] = {request.get()};
    while (::aio_error(request.get()) == EINPROGRESS) {
        ::aio_suspend(watched, 1, nullptr);
    }
    const int error = ::aio_error(request.get());
    ::aio_return(request.get());
    if (error != 0) {
        report_failure("aio_fsync", error);
        return false;
    }
    return true;
}

void Copy::abandon() {
    ::aio_cancel(source_, nullptr);  // all requests on the descriptor: those not started end at once
    ::aio_cancel(destination_, nullptr);
    for (Slot& slot : slots_) {
        if (slot.state == Slot::State::idle) {
            continue;
        }
        const aiocb* watched[] = {slot.request.get()};
        while (::aio_error(slot.request.get()) == EINPROGRESS) {
            ::aio_suspend(watched, 1, nullptr);  // a running one must finish before its buffer goes
        }
        ::aio_return(slot.request.get());
    }
    wait_for_notifications();
}

// The copy: each round queues what is ready, waits for one request to be
// done, and completes every request that is.
bool Copy::run() {
    const long long blocks = (size_ + static_cast<long long>(settings_.block_size) - 1) /
                             static_cast<long long>(settings_.block_size);
    slots_.resize(static_cast<std::size_t>(std::min<long long>(settings_.depth, blocks)));
    for (Slot& slot : slots_) {
        slot.buffer.resize(settings_.block_size);
    }
    while (copied_ < size_) {
        for (Slot& slot : slots_) {
            if (slot.state == Slot::State::idle && next_read_ < size_) {
                slot.offset = next_read_;
                slot.done = slot.length = 0;
                next_read_ += static_cast<long long>(settings_.block_size);
                prepare(slot, false);
            }
        }
        if (!submit()) {
            return false;
        }
        std::vector<aiocb*> watched;
        for (Slot& slot : slots_) {
            if (slot.state != Slot::State::idle) {
                watched.push_back(slot.request.get());
            }
        }
        if (!wait(watched)) {
            return false;
        }
        for (Slot& slot : slots_) {
            if (slot.state != Slot::State::idle && ::aio_error(slot.request.get()) != EINPROGRESS &&
                !complete(slot)) {
                return false;
            }
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const Settings settings = parse_settings_or_exit(argc, argv);
    ignore_file_size_signal_or_exit();  // a write past RLIMIT_FSIZE: EFBIG, reported, DST removed

    const unique_fd source(::open(settings.source.c_str(), O_RDONLY | O_CLOEXEC));
    if (!source) {
        report_failure("open " + settings.source, errno);
        return 1;
    }
    struct stat source_info {};
    if (!stat_regular_file(source.get(), settings.source, source_info) ||
        !different_files(settings.source, source_info, settings.destination)) {
        return 1;
    }
    const unique_fd destination(::open(settings.destination.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!destination) {
        report_failure("open " + settings.destination, errno);
        return 1;
    }

    Copy copy(settings, source.get(), destination.get(), source_info.st_size);
    const bool copied = copy.run();
    copy.wait_for_notifications();
    if (!copied || !copy.sync()) {
        copy.abandon();
        // No half copy that looks like a copy.
        if (::unlink(settings.destination.c_str()) == -1) {
            report_failure("unlink " + settings.destination, errno);
            return 1;
        }
        std::fprintf(stderr, "%s: the copy failed; %s removed\n", program_name(), settings.destination.c_str());
        return 1;
    }
    const Copy::Counters& counts = copy.counters;
    std::printf("%s: %lld bytes copied from %s to %s: %llu reads and %llu writes in %llu lio_listio calls, at most %u "
                "in flight (depth %u), completions by %s, aio_fsync done\n",
                program_name(), static_cast<long long>(source_info.st_size), settings.source.c_str(),
                settings.destination.c_str(), counts.reads, counts.writes, counts.batches, counts.most_in_flight,
                settings.depth, settings.notify_thread ? "SIGEV_THREAD" : "aio_suspend");
    return 0;
}
