// 09-aio-kernel/uring_copy.cpp: aio_copy's pipeline on io_uring, the
// interface that replaced kernel AIO: several reads and writes in flight,
// one system call per round.
//
//   io_uring_setup(entries)         the ring: requests (SQEs) and completions
//                                   (CQEs) in memory shared with the kernel
//   SQE IORING_OP_READ, _WRITE      one request, written into the SQ ring, offset explicit
//   io_uring_enter(fd, n, 1, IORING_ENTER_GETEVENTS)
//                                   submits the n SQEs prepared, waits for one CQE
//   CQE res                         bytes transferred, or -errno; every CQE is handled
//
// Each of up to --depth blocks has its own aligned buffer: read, then
// written from the same buffer. Short transfers are resubmitted for the
// rest; a failed request removes DST once nothing is in flight. Buffered by
// default; --direct opens both files with O_DIRECT (an unaligned tail is
// written through a buffered descriptor).
//
// usage: uring_copy SRC DST [--depth N] [--block-size N] [--direct] [--quiet]
//
// strace: strace -e trace=io_uring_enter,pread64,pwrite64 ./build/09-aio-kernel/uring_copy SRC DST --depth 4
//   io_uring_enter(4, 4, 1, IORING_ENTER_GETEVENTS, NULL, 8) = 4: four reads in one call.
//   No pread64/pwrite64; and no requests either: they are in the shared ring, not in the call.
//
// Read `main` first, a table of contents; its loop is `Copy::run`, just
// above it, and the functions above that are the loop's steps. The ring is
// uring_abi.hpp's `Ring`; the files are opened by copy_files.hpp.

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "copy_files.hpp"
#include "uring_abi.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"

using namespace iomodels;

namespace {

struct Settings {
    std::string source, destination;
    unsigned depth = 8;
    std::size_t block_size = 1 << 20;
    bool direct = false;
    bool quiet = false;
};

// One block's journey: read into `buffer`, then written from it.
struct Slot {
    std::unique_ptr<unsigned char, decltype(&std::free)> buffer{nullptr, &std::free};
    enum class State { idle, reading, writing } state = State::idle;
    long long offset = 0;    // of the block in both files
    std::size_t length = 0;  // bytes of the block (less than block_size for the last one)
    std::size_t done = 0;    // bytes read (while reading) or written (while writing) so far
};

// uring_copy's command line; the values go into `settings`.
CommandLine command_line(Settings& settings) {
    return {
        "SRC DST [--depth N] [--block-size N] [--direct] [--quiet]",
        "Copies SRC to DST with up to N io_uring requests in flight (buffered, or O_DIRECT with --direct).",
        {{"--depth", "N", "requests in flight at most (1 to 32768, default 8)", number(settings.depth, 1u, 32768u)},
         {"--block-size", "N", "bytes per request, a multiple of 4096 (default 1048576)",
          number(settings.block_size, std::size_t{4096}, std::size_t{64} << 20)},
         {"--direct", "", "open both files with O_DIRECT (buffered where a file system refuses it)",
          [&settings](std::string_view) { return settings.direct = true; }},
         {"--quiet", "", "do not report each request",
          [&settings](std::string_view) { return settings.quiet = true; }}},
        two_paths(settings.source, settings.destination),
        "SRC DST",
        "(two paths)",
    };
}

// What the summary line reports.
struct Counters {
    unsigned long long reads = 0;
    unsigned long long writes = 0;
    unsigned long long buffered_writes = 0;  // with O_DIRECT: through the buffered descriptor
    unsigned long long enter_calls = 0;
    unsigned most_in_flight = 0;
};

class Copy {
public:
    Copy(const Settings& settings, const CopyFiles& files, long long size, Ring& ring)
        : settings_(settings), files_(files), size_(size), ring_(ring) {}

    // Runs the copy: its counts, or nullopt after the first failure
    // (reported), once no request is in flight any more.
    std::optional<Counters> run();

private:
    bool allocate_buffers();
    void start_reads();
    void prepare(std::size_t index, bool write);
    void submit_and_wait();
    void complete(const io_uring_cqe& completion);
    void finish_read(std::size_t index, std::size_t transferred);
    void finish_write(std::size_t index, std::size_t transferred);
    void wait_for_requests_in_flight();

    const Settings& settings_;
    const CopyFiles& files_;
    long long size_;
    Ring& ring_;
    std::vector<Slot> slots_;
    long long next_read_ = 0;  // offset of the next block to read
    long long copied_ = 0;
    unsigned in_flight_ = 0;  // submitted, and their CQE not handled yet
    bool failed_ = false;     // reported; from then on a CQE is only printed and counted
    Counters counters_;
};

// One aligned buffer per slot; at most one slot per block.
bool Copy::allocate_buffers() {
    const long long blocks = (size_ + static_cast<long long>(settings_.block_size) - 1) /
                             static_cast<long long>(settings_.block_size);
    slots_.resize(static_cast<std::size_t>(std::min<long long>(settings_.depth, blocks)));
    for (Slot& slot : slots_) {
        slot.buffer.reset(static_cast<unsigned char*>(std::aligned_alloc(files_.alignment, settings_.block_size)));
        if (!slot.buffer) {
            report_failure("aligned_alloc " + std::to_string(settings_.block_size), ENOMEM);
            return false;
        }
    }
    return true;
}

// Every idle slot takes the next block to read.
void Copy::start_reads() {
    for (std::size_t index = 0; index < slots_.size() && next_read_ < size_ && !failed_; ++index) {
        Slot& slot = slots_[index];
        if (slot.state == Slot::State::idle) {
            slot.offset = next_read_;
            slot.done = 0;
            slot.length = 0;
            next_read_ += static_cast<long long>(settings_.block_size);
            prepare(index, false);
        }
    }
}

// Fills an SQE for the rest of the slot's block: a read, or a write. The
// direct descriptor where O_DIRECT allows it, else the buffered one (the
// last block's tail, the rest after a short transfer, or all without
// --direct). The kernel sees the SQE at the next io_uring_enter.
void Copy::prepare(std::size_t index, bool write) {
    io_uring_sqe* sqe = ring_.get_sqe();
    if (sqe == nullptr) {
        // Not expected: the SQ ring has at least --depth entries, and each
        // slot has one request at most, in the ring or in flight.
        std::fprintf(stderr, "%s: no free SQE for slot %zu\n", program_name(), index);
        failed_ = true;
        return;
    }
    Slot& slot = slots_[index];
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
    sqe->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = reinterpret_cast<std::uint64_t>(slot.buffer.get() + slot.done);
    sqe->len = static_cast<std::uint32_t>(length);  // a read asks for a whole block: the file decides how much comes
    // Always explicit: an offset of -1 would mean "at the file position, and
    // advance it", one position shared by every request in flight.
    sqe->off = static_cast<std::uint64_t>(offset);
    sqe->user_data = index;  // handed back in the CQE
    slot.state = write ? Slot::State::writing : Slot::State::reading;
}

// One io_uring_enter: hands the kernel every SQE prepared since the last
// call and waits until the CQ ring holds at least one CQE.
void Copy::submit_and_wait() {
    const unsigned to_submit = ring_.publish();
    if (to_submit == 0 && in_flight_ == 0) {
        std::fprintf(stderr, "%s: nothing in flight and %lld bytes left to copy\n", program_name(), size_ - copied_);
        failed_ = true;
        return;
    }
    int submitted = 0;
    do {
        ++counters_.enter_calls;
        submitted = io_uring_enter(ring_.fd(), to_submit, 1, IORING_ENTER_GETEVENTS, nullptr);
        // EINTR: a signal came while it waited, before it took any SQE (once
        // it has taken some, it returns their count, not an error).
    } while (submitted == -1 && errno == EINTR);
    if (submitted == -1) {
        report_failure("io_uring_enter " + std::to_string(to_submit) + " SQEs", errno);
        failed_ = true;
        return;
    }
    // It may take fewer than offered (short of memory); then it returns
    // without waiting, and the rest stays in the SQ ring for the next call.
    in_flight_ += static_cast<unsigned>(submitted);
    counters_.most_in_flight = std::max(counters_.most_in_flight, in_flight_);
}

// A read whose CQE said `transferred` bytes: the rest of the block read
// again, or the block written.
void Copy::finish_read(std::size_t index, std::size_t transferred) {
    Slot& slot = slots_[index];
    ++counters_.reads;
    if (slot.done == 0) {
        slot.length = static_cast<std::size_t>(
            std::min(static_cast<long long>(settings_.block_size), size_ - slot.offset));
    }
    slot.done += transferred;
    if (transferred == 0 && slot.done < slot.length) {
        std::fprintf(stderr, "%s: %s ends at %lld, before its size %lld: it changed during the copy\n",
                     program_name(), settings_.source.c_str(), slot.offset + static_cast<long long>(slot.done),
                     size_);
        failed_ = true;
        return;
    }
    if (slot.done < slot.length) {
        prepare(index, false);  // a short read before the end: read the rest
        return;
    }
    slot.done = 0;  // read whole (a read past the end returns less: expected)
    prepare(index, true);
}

// A write whose CQE said `transferred` bytes: the rest written again, or
// the slot free for the next block.
void Copy::finish_write(std::size_t index, std::size_t transferred) {
    Slot& slot = slots_[index];
    ++counters_.writes;
    if (transferred == 0) {
        std::fprintf(stderr, "%s: write %s at offset %lld wrote nothing\n", program_name(),
                     settings_.destination.c_str(), slot.offset + static_cast<long long>(slot.done));
        failed_ = true;
        return;
    }
    slot.done += transferred;
    if (slot.done < slot.length) {
        prepare(index, true);  // a short write: write the rest
        return;
    }
    copied_ += static_cast<long long>(slot.length);
    slot.state = Slot::State::idle;
}

// One CQE: user_data is the slot's index, res what its request did.
void Copy::complete(const io_uring_cqe& completion) {
    --in_flight_;
    const auto index = static_cast<std::size_t>(completion.user_data);
    const Slot& slot = slots_[index];
    const bool reading = slot.state == Slot::State::reading;
    const long long offset = slot.offset + static_cast<long long>(slot.done);  // where the request started
    if (!settings_.quiet) {
        std::printf("%s offset %lld: res %d\n", reading ? "read " : "write", offset, completion.res);
    }
    if (failed_) {
        return;  // after a failure, only counted
    }
    if (completion.res < 0) {
        const int error = -completion.res;
        std::fprintf(stderr, "%s: %s %s at offset %lld: res %d: %s [%s]\n", program_name(),
                     reading ? "read" : "write", reading ? settings_.source.c_str() : settings_.destination.c_str(),
                     offset, completion.res, ::strerror(error), errno_name(error).c_str());
        failed_ = true;
        return;
    }
    const auto transferred = static_cast<std::size_t>(completion.res);
    if (reading) {
        finish_read(index, transferred);
    } else {
        finish_write(index, transferred);
    }
}

// After a failure: the requests still in flight read into or write from the
// slots' buffers, so their CQEs are awaited before the buffers are freed.
// (SQEs prepared and not yet submitted never will be.)
void Copy::wait_for_requests_in_flight() {
    while (in_flight_ > 0) {
        ++counters_.enter_calls;
        if (io_uring_enter(ring_.fd(), 0, 1, IORING_ENTER_GETEVENTS, nullptr) == -1 && errno != EINTR) {
            report_failure("io_uring_enter 0 SQEs", errno);
            // Cannot wait: the buffers are never freed, the kernel may still use them.
            for (Slot& slot : slots_) {
                static_cast<void>(slot.buffer.release());
            }
            return;
        }
        ring_.for_each_completion([this](const io_uring_cqe& completion) { complete(completion); });
    }
}

// The copy's loop: reads prepared for idle slots, one io_uring_enter, then
// every CQE in the CQ ring handled (turning reads into writes), until all
// is written. The CQ ring has twice the SQ ring's entries, and no more than
// --depth requests are ever in flight: it cannot overflow.
std::optional<Counters> Copy::run() {
    if (!allocate_buffers()) {
        return std::nullopt;
    }
    while (copied_ < size_ && !failed_) {
        start_reads();
        if (!failed_) {
            submit_and_wait();
        }
        ring_.for_each_completion([this](const io_uring_cqe& completion) { complete(completion); });
    }
    if (failed_) {
        wait_for_requests_in_flight();
        return std::nullopt;
    }
    return counters_;
}

// The summary line on stdout.
void print_summary(const Settings& settings, const CopyFiles& files, long long size, const Counters& counters) {
    std::string writes = std::to_string(counters.writes) + " writes";
    std::string mode = "buffered";
    if (files.direct) {
        writes += " (" + std::to_string(counters.buffered_writes) + " buffered)";
        mode = "O_DIRECT, block " + std::to_string(settings.block_size) + ", alignment " +
               std::to_string(files.alignment);
    } else {
        mode = std::string(settings.direct ? "buffered (O_DIRECT refused)" : "buffered") + ", block " +
               std::to_string(settings.block_size);
    }
    std::printf("%s: %lld bytes copied from %s to %s: %llu reads and %s in %llu io_uring_enter calls, "
                "at most %u in flight (depth %u), %s\n",
                program_name(), size, settings.source.c_str(), settings.destination.c_str(), counters.reads,
                writes.c_str(), counters.enter_calls, counters.most_in_flight, settings.depth, mode.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    const CommandLine command = command_line(settings);
    parse_command_line_or_exit(command, argc, argv);
    require_operands_or_exit(settings.destination, settings.block_size, command);
    ignore_file_size_signal_or_exit();  // a write past RLIMIT_FSIZE: EFBIG, reported, DST removed

    CopyFiles files;
    struct stat source_info {};
    if (!open_source(settings.source, settings.destination, settings.direct, files, source_info)) {
        return 1;
    }
    // The ring first: where io_uring is switched off, DST (which may exist
    // and hold something) is not even opened. SQ entries: --depth, rounded
    // up to a power of two; no flags, so the CQ ring gets twice as many.
    io_uring_params params{};
    std::string failed_call;
    Ring ring(std::bit_ceil(settings.depth), params, failed_call);
    if (!ring) {
        report_ring_failure(failed_call, errno);
        std::fprintf(stderr, "%s: no io_uring: nothing copied, %s not touched\n", program_name(),
                     settings.destination.c_str());
        return 1;
    }
    if (const int status = open_destination(settings.destination, settings.block_size, settings.direct, files);
        status != 0) {
        return status;
    }

    // run() returns once nothing is in flight, also after a failure: only
    // then may DST be removed, and the buffers freed (with the Copy, a
    // temporary that ends with this statement).
    const std::optional<Counters> counters = Copy(settings, files, source_info.st_size, ring).run();
    if (!counters) {
        return remove_destination(settings.destination, "the copy failed");
    }
    print_summary(settings, files, source_info.st_size, *counters);
    return 0;
}
