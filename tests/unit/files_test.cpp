// The copy programs' checks on their two paths.
#include "common/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "catch.hpp"
#include "common/options.hpp"
#include "common/unique_fd.hpp"
#include "harness/harness.hpp"

using namespace iomodels;

TEST_CASE("stat_regular_file accepts a file and refuses a directory or a device, saying which") {
    harness::TemporaryDirectory directory;
    harness::write_file(directory / "file", "12345");
    struct stat info {};
    const unique_fd file(::open((directory / "file").c_str(), O_RDONLY | O_CLOEXEC));
    CHECK(stat_regular_file(file.get(), "file", info));
    CHECK(info.st_size == 5);
    const unique_fd device(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    std::string said = harness::output_of(stderr, [&] { CHECK_FALSE(stat_regular_file(device.get(), "/dev/null", info)); });
    CHECK(said.find("/dev/null: not a regular file") != std::string::npos);
}

TEST_CASE("different_files refuses a destination that is the source itself, even by another name") {
    harness::TemporaryDirectory directory;
    harness::write_file(directory / "file", "x");
    REQUIRE(::link((directory / "file").c_str(), (directory / "other name").c_str()) == 0);
    struct stat info {};
    REQUIRE(::stat((directory / "file").c_str(), &info) == 0);
    CHECK(different_files("file", info, directory / "new"));  // does not exist yet
    std::string said;
    said = harness::output_of(stderr, [&] { CHECK_FALSE(different_files("file", info, directory / "other name")); });
    CHECK(said.find("are the same file") != std::string::npos);
}

TEST_CASE("two_paths takes SRC then DST, and refuses a third or an empty one") {
    std::string first, second;
    const auto operand = two_paths(first, second);
    CHECK(operand("a"));
    CHECK(operand("b"));
    CHECK(first == "a");
    CHECK(second == "b");
    CHECK_FALSE(operand("c"));
    std::string x, y;
    CHECK_FALSE(two_paths(x, y)(""));
}
