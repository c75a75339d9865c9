// tests/grade/make_starter.cpp: makes a lab's starter from a chapter's
// server, so that one source is maintained. The server marks what the
// student writes with comment lines that a reader takes for ordinary ones:
//
//     // Lab: read until recv says EAGAIN, appending to connection.pending.
//     // Lab: (more lines of the same task)
//     // Lab stub: return true;
//     ...the code the student writes...
//     // Lab end.
//
// In the starter, the region becomes its task as TODO comments followed by
// the stub lines (uncommented), which keep the starter compiling:
//
//     // TODO (lab): read until recv says EAGAIN, appending to connection.pending.
//     return true;
//
// The header gets one line saying it is a starter and where it came from.
//
// usage: make_starter [--if-absent] SOURCE OUTPUT
//   --if-absent: leave OUTPUT alone if it exists (it holds a student's work)
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::string_view trimmed(std::string_view line) {
    const std::size_t start = line.find_first_not_of(" \t");
    return start == std::string_view::npos ? std::string_view() : line.substr(start);
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    const bool if_absent = !args.empty() && args.front() == "--if-absent";
    if (if_absent) {
        args.erase(args.begin());
    }
    if (args.size() != 2) {
        std::fprintf(stderr, "usage: make_starter [--if-absent] SOURCE OUTPUT\n");
        return 2;
    }
    const std::string source(args[0]), output(args[1]);
    if (if_absent && std::filesystem::exists(output)) {
        std::printf("%s exists: your work is kept (remove it to start again from the starter)\n", output.c_str());
        return 0;
    }
    std::ifstream in(source);
    if (!in) {
        std::fprintf(stderr, "make_starter: cannot read %s\n", source.c_str());
        return 1;
    }
    std::ostringstream starter;
    int regions = 0, line_number = 0, region_start = 0;
    bool in_region = false, header_noted = false;
    for (std::string line; std::getline(in, line);) {
        ++line_number;
        const std::string_view text = trimmed(line);
        const std::string indent = line.substr(0, line.size() - text.size());
        if (!header_noted && !starts_with(text, "//")) {
            starter << "//\n// The lab's starter, made from " << std::filesystem::path(source).filename().string()
                    << " by tests/grade/make_starter: write what each TODO (lab) says.\n";
            header_noted = true;
        }
        if (starts_with(text, "// Lab end.")) {
            if (!in_region) {
                std::fprintf(stderr, "make_starter: %s:%d: \"// Lab end.\" outside a region\n", source.c_str(),
                             line_number);
                return 1;
            }
            in_region = false;
        } else if (starts_with(text, "// Lab stub: ")) {
            starter << indent << text.substr(13) << "\n";
        } else if (starts_with(text, "// Lab: ")) {
            if (!in_region) {
                in_region = true;
                region_start = line_number;
                ++regions;
            }
            starter << indent << "// TODO (lab): " << text.substr(8) << "\n";
        } else if (!in_region) {
            starter << line << "\n";
        }
    }
    if (in_region) {
        std::fprintf(stderr, "make_starter: %s:%d: a region without \"// Lab end.\"\n", source.c_str(), region_start);
        return 1;
    }
    if (regions == 0) {
        std::fprintf(stderr, "make_starter: %s has no \"// Lab:\" region\n", source.c_str());
        return 1;
    }
    std::filesystem::create_directories(std::filesystem::path(output).parent_path());
    std::ofstream out(output);
    out << starter.str();
    if (!out) {
        std::fprintf(stderr, "make_starter: cannot write %s\n", output.c_str());
        return 1;
    }
    if (if_absent) {
        std::printf("%s: the starter, %d TODO (lab) regions to write\n", output.c_str(), regions);
    }
    return 0;
}
