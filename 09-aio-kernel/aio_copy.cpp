// 09-aio-kernel/aio_copy.cpp: copies a file with several kernel AIO
// requests in flight at once.
//
//   io_setup(depth)                  one context
//   io_submit(context, n, iocbs)     several requests in one call: reads (IOCB_CMD_PREAD),
//                                    then the writes (IOCB_CMD_PWRITE) of the blocks read
//   io_getevents(context, 1, depth)  every completion that is ready; each res checked
//
// Each of up to --depth blocks has its own aligned buffer, for O_DIRECT.
// Short transfers are finished, an unaligned tail goes through a buffered
// descriptor, a failed request removes DST; --eventfd sleeps in epoll_wait.
//
// usage: aio_copy SRC DST [--depth N] [--block-size N] [--eventfd] [--quiet]
//
// strace: strace -e trace=io_setup,io_submit,io_getevents,io_destroy ./build/09-aio-kernel/aio_copy SRC DST --depth 4
//   io_submit(..., 4, [...]) = 4: four reads at once; io_getevents returning several
//   events; writes submitted from the completed buffers; no pread64/pwrite64.
//
// Read `main` first, a table of contents; its loop is `Copy::run`, just
// above it, and the functions above that are the loop's steps. How the
// files are opened, and DST removed, is in copy_files.hpp (uring_copy's too).

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aio_abi.hpp"
#include "copy_files.hpp"
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
    bool eventfd = false;
    bool quiet = false;
};

// One block's journey: read into `buffer`, then written from it.
struct Slot {
    std::unique_ptr<unsigned char, decltype(&std::free)> buffer{nullptr, &std::free};
    iocb request{};
    enum class State { idle, reading, writing } state = State::idle;
    long long offset = 0;    // of the block in both files
    std::size_t length = 0;  // bytes of the block (less than block_size for the last one)
    std::size_t done = 0;    // bytes read (while reading) or written (while writing) so far
};

// aio_copy's command line; the values go into `settings`.
CommandLine command_line(Settings& settings) {
    return {
        "SRC DST [--depth N] [--block-size N] [--eventfd] [--quiet]",
        "Copies SRC to DST with up to N kernel AIO requests in flight (O_DIRECT where the file systems allow it).",
        {{"--depth", "N", "requests in flight at most (1 to 1000000, default 8)",
          number(settings.depth, 1u, 1000000u)},
         {"--block-size", "N", "bytes per request, a multiple of 4096 (default 1048576)",
          number(settings.block_size, std::size_t{4096}, std::size_t{64} << 20)},
         {"--eventfd", "", "completions signalled on an eventfd watched by epoll (IOCB_FLAG_RESFD)",
          [&settings](std::string_view) { return settings.eventfd = true; }},
         {"--quiet", "", "do not report each request",
          [&settings](std::string_view) { return settings.quiet = true; }}},
        two_paths(settings.source, settings.destination),
        "SRC DST",
        "(two paths)",
    };
}

// io_setup failed with `error`. EAGAIN: more than /proc/sys/fs/aio-max-nr
// requests in all contexts together; then that limit and its use, both
// system-wide, are printed too.
void report_no_context(const Settings& settings, int error) {
    report_failure("io_setup " + std::to_string(settings.depth), error);
    if (error == EAGAIN) {
        unsigned long limit = 0, used = 0;
        if (std::FILE* file = std::fopen("/proc/sys/fs/aio-max-nr", "r")) {
            (void)std::fscanf(file, "%lu", &limit);
            std::fclose(file);
        }
        if (std::FILE* file = std::fopen("/proc/sys/fs/aio-nr", "r")) {
            (void)std::fscanf(file, "%lu", &used);
            std::fclose(file);
        }
        std::fprintf(stderr, "%s: the system allows %lu requests in all AIO contexts together "
                             "(/proc/sys/fs/aio-max-nr), %lu are taken (/proc/sys/fs/aio-nr)\n",
                     program_name(), limit, used);
    }
    std::fprintf(stderr, "%s: no AIO context: nothing copied, %s not touched\n", program_name(),
                 settings.destination.c_str());
}

// --eventfd: an eventfd that the kernel increments at each completion
// (IOCB_FLAG_RESFD), in an epoll instance's interest list, the way a server
// mixes file AIO into its socket event loop. False (reported) if a call failed.
bool watch_completions(unique_fd& completion_fd, unique_fd& epoll_fd) {
    completion_fd.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!completion_fd) {
        report_failure("eventfd", errno);
        return false;
    }
    epoll_fd.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd) {
        report_failure("epoll_create1", errno);
        return false;
    }
    epoll_event watch{};
    watch.events = EPOLLIN;
    if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, completion_fd.get(), &watch) == -1) {
        report_failure("epoll_ctl EPOLL_CTL_ADD eventfd " + std::to_string(completion_fd.get()), errno);
        return false;
    }
    return true;
}

// What the summary line reports.
struct Counters {
    unsigned long long reads = 0;
    unsigned long long writes = 0;
    unsigned long long buffered_writes = 0;  // through the buffered descriptor: an unaligned rest
    unsigned long long submit_calls = 0;
    unsigned most_in_flight = 0;
};

class Copy {
public:
    // completion_fd: the eventfd every request signals (IOCB_FLAG_RESFD), or -1.
    Copy(const Settings& settings, const CopyFiles& files, long long size, unique_aio_context context,
         int completion_fd)
        : settings_(settings), files_(files), size_(size), completion_fd_(completion_fd),
          context_(std::move(context)) {}

    // Runs the copy: its counts, or nullopt (reported) on the first failure.
    std::optional<Counters> run(int epoll_fd);

private:
    void prepare(Slot& slot, bool write);
    bool submit_queued();
    bool complete(const io_event& event);
    bool collect(int epoll_fd);

    const Settings& settings_;
    const CopyFiles& files_;
    long long size_;
    int completion_fd_;
    std::vector<Slot> slots_;
    std::deque<iocb*> to_submit_;  // prepared, not yet accepted by io_submit
    long long next_read_ = 0;      // offset of the next block to read
    long long copied_ = 0;
    unsigned in_flight_ = 0;
    Counters counters_;
    // Declared after slots_, so destroyed before them: io_destroy waits for
    // the requests still in flight (after a failure), which read into or
    // write from the slots' buffers, before the buffers are freed.
    unique_aio_context context_;
};

// Fills the slot's iocb for the rest of its block: a read, or a write.
// The direct descriptor when offset and length are aligned, else the
// buffered one (the last block's tail, or the rest after a short transfer).
void Copy::prepare(Slot& slot, bool write) {
    const long long offset = slot.offset + static_cast<long long>(slot.done);
    const std::size_t length =
        write ? slot.length - slot.done : (slot.done == 0 ? settings_.block_size : slot.length - slot.done);
    const bool aligned = direct_allows(files_, offset, length, slot.done);
    int fd = 0;
    if (write) {
        fd = aligned ? files_.destination_direct.get() : files_.destination_buffered.get();
        counters_.buffered_writes += !aligned;
    } else {
        fd = aligned ? files_.source_direct.get() : files_.source_buffered.get();
    }
    slot.request = iocb{};
    slot.request.aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
    slot.request.aio_fildes = static_cast<std::uint32_t>(fd);
    slot.request.aio_buf = reinterpret_cast<std::uint64_t>(slot.buffer.get() + slot.done);
    slot.request.aio_nbytes = length;  // a read asks for a whole block: the file decides how much comes
    slot.request.aio_offset = offset;
    slot.request.aio_data = reinterpret_cast<std::uint64_t>(&slot);  // handed back in io_event.data
    if (completion_fd_ >= 0) {
        slot.request.aio_flags = IOCB_FLAG_RESFD;  // at completion, the kernel adds 1 to this eventfd
        slot.request.aio_resfd = static_cast<std::uint32_t>(completion_fd_);
    }
    slot.state = write ? Slot::State::writing : Slot::State::reading;
    to_submit_.push_back(&slot.request);
}

// io_submit() what is prepared. It may take fewer than offered (EAGAIN:
// the context is full): the rest stays queued for the next round.
bool Copy::submit_queued() {
    while (!to_submit_.empty()) {
        std::vector<iocb*> batch(to_submit_.begin(), to_submit_.end());
        ++counters_.submit_calls;
        const int queued = io_submit(context_.get(), static_cast<long>(batch.size()), batch.data());
        if (queued == -1) {
            if (errno == EAGAIN && in_flight_ > 0) {
                return true;  // no room now: after some completions
            }
            if (errno == EINTR) {
                continue;
            }
            report_failure("io_submit " + std::to_string(batch.size()) + " requests", errno);
            return false;
        }
        to_submit_.erase(to_submit_.begin(), to_submit_.begin() + queued);
        in_flight_ += static_cast<unsigned>(queued);
        counters_.most_in_flight = std::max(counters_.most_in_flight, in_flight_);
        if (queued < static_cast<int>(batch.size())) {
            return true;  // a partial submit: the rest later
        }
    }
    return true;
}

// One completion. False (reported): the copy has failed.
bool Copy::complete(const io_event& event) {
    --in_flight_;
    Slot& slot = *reinterpret_cast<Slot*>(event.data);
    const bool reading = slot.state == Slot::State::reading;
    const long long offset = static_cast<long long>(reinterpret_cast<const iocb*>(event.obj)->aio_offset);
    if (!settings_.quiet) {
        std::printf("%s offset %lld: res %lld\n", reading ? "read " : "write", offset,
                    static_cast<long long>(event.res));
    }
    if (event.res < 0) {
        const int error = static_cast<int>(-event.res);
        std::fprintf(stderr, "%s: %s %s at offset %lld: res %lld: %s [%s]\n", program_name(),
                     reading ? "read" : "write", reading ? settings_.source.c_str() : settings_.destination.c_str(),
                     offset, static_cast<long long>(event.res), ::strerror(error), errno_name(error).c_str());
        return false;
    }
    const auto transferred = static_cast<std::size_t>(event.res);
    if (reading) {
        ++counters_.reads;
        if (slot.done == 0) {
            slot.length = static_cast<std::size_t>(std::min<long long>(settings_.block_size, size_ - slot.offset));
        }
        slot.done += transferred;
        if (transferred == 0 && slot.done < slot.length) {
            std::fprintf(stderr, "%s: %s ends at %lld, before its size %lld: it changed during the copy\n",
                         program_name(), settings_.source.c_str(), offset, size_);
            return false;
        }
        if (slot.done < slot.length) {
            prepare(slot, false);  // a short read before the end: read the rest
            return true;
        }
        slot.done = 0;  // read whole (a read past the end returns less: expected)
        prepare(slot, true);
        return true;
    }
    ++counters_.writes;
    slot.done += transferred;
    if (transferred == 0) {
        std::fprintf(stderr, "%s: write %s at offset %lld wrote nothing\n", program_name(),
                     settings_.destination.c_str(), offset);
        return false;
    }
    if (slot.done < slot.length) {
        prepare(slot, true);  // a short write: write the rest
        return true;
    }
    copied_ += static_cast<long long>(slot.length);
    slot.state = Slot::State::idle;
    return true;
}

// Waits for completions and handles every one that is ready.
bool Copy::collect(int epoll_fd) {
    std::vector<io_event> events(slots_.size());
    long wanted = 1;                                  // at least one ...
    auto most = static_cast<long>(events.size());  // ... and all that are ready
    if (completion_fd_ >= 0) {
        // --eventfd: sleep in epoll_wait until the kernel has counted some
        // completions on the eventfd; reading it returns (and resets) the count.
        epoll_event ready{};
        while (::epoll_wait(epoll_fd, &ready, 1, -1) == -1) {
            if (errno != EINTR) {
                report_failure("epoll_wait", errno);
                return false;
            }
        }
        std::uint64_t count = 0;
        if (::read(completion_fd_, &count, sizeof count) != sizeof count) {
            report_failure("read eventfd", errno);
            return false;
        }
        // Exactly that many: one more, already counted by the next eventfd
        // read, would be collected twice over.
        wanted = most = static_cast<long>(count);
    }
    int completed = 0;
    do {
        completed = io_getevents(context_.get(), wanted, most, events.data(), nullptr);
    } while (completed == -1 && errno == EINTR);
    if (completed == -1) {
        report_failure("io_getevents", errno);
        return false;
    }
    for (const io_event& event : std::span(events).first(static_cast<std::size_t>(completed))) {
        if (!complete(event)) {
            return false;
        }
    }
    return true;
}

// The copy's loop: reads prepared for idle slots, one io_submit, then the
// completions collected (turning reads into writes), until all is written.
std::optional<Counters> Copy::run(int epoll_fd) {
    const long long blocks = (size_ + static_cast<long long>(settings_.block_size) - 1) /
                             static_cast<long long>(settings_.block_size);
    slots_.resize(static_cast<std::size_t>(std::min<long long>(settings_.depth, blocks)));
    for (Slot& slot : slots_) {
        slot.buffer.reset(static_cast<unsigned char*>(std::aligned_alloc(files_.alignment, settings_.block_size)));
        if (!slot.buffer) {
            report_failure("aligned_alloc " + std::to_string(settings_.block_size), ENOMEM);
            return std::nullopt;
        }
    }
    while (copied_ < size_) {
        // Every idle slot takes the next block to read.
        for (Slot& slot : slots_) {
            if (slot.state == Slot::State::idle && next_read_ < size_) {
                slot.offset = next_read_;
                slot.done = 0;
                slot.length = 0;
                next_read_ += static_cast<long long>(settings_.block_size);
                prepare(slot, false);
            }
        }
        if (!submit_queued()) {
            return std::nullopt;
        }
        if (in_flight_ == 0) {
            std::fprintf(stderr, "%s: nothing in flight and %lld bytes left to copy\n", program_name(),
                         size_ - copied_);
            return std::nullopt;
        }
        if (!collect(epoll_fd)) {
            return std::nullopt;
        }
    }
    return counters_;
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    const CommandLine command = command_line(settings);
    parse_command_line_or_exit(command, argc, argv);
    require_operands_or_exit(settings.destination, settings.block_size, command);
    ignore_file_size_signal_or_exit();  // a write past RLIMIT_FSIZE: EFBIG, reported, DST removed

    // SRC with O_DIRECT where its file system allows it, and buffered.
    CopyFiles files;
    struct stat source_info {};
    if (!open_source(settings.source, settings.destination, true, files, source_info)) {
        return 1;
    }
    // The AIO context first: if the system has none to give, DST (which
    // may exist and hold something) is not even opened.
    aio_context_t new_context = 0;  // must be 0 before io_setup
    if (io_setup(settings.depth, &new_context) == -1) {
        report_no_context(settings, errno);
        return 1;
    }
    unique_aio_context context(new_context);
    if (const int status = open_destination(settings.destination, settings.block_size, true, files); status != 0) {
        return status;
    }
    unique_fd completion_fd, epoll_fd;
    if (settings.eventfd && !watch_completions(completion_fd, epoll_fd)) {
        return remove_destination(settings.destination, "no eventfd");
    }

    // The Copy, which owns the context and the buffers, is a temporary: it
    // ends with this statement. io_destroy waits for whatever a failure left
    // in flight, then the buffers are freed, and only then is DST removed.
    const std::optional<Counters> counters =
        Copy(settings, files, source_info.st_size, std::move(context), completion_fd.get()).run(epoll_fd.get());
    if (!counters) {
        return remove_destination(settings.destination, "the copy failed");
    }
    std::printf("%s: %lld bytes copied from %s to %s: %llu reads and %llu writes (%llu buffered) in %llu io_submit "
                "calls, at most %u in flight (depth %u), %s, block %zu, alignment %zu\n",
                program_name(), static_cast<long long>(source_info.st_size), settings.source.c_str(),
                settings.destination.c_str(), counters->reads, counters->writes, counters->buffered_writes,
                counters->submit_calls, counters->most_in_flight, settings.depth,
                files.direct ? "O_DIRECT" : "buffered (O_DIRECT refused)", settings.block_size, files.alignment);
    return 0;
}
