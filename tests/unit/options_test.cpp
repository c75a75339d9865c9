// The echo servers' command line, `server [PORT] [--host ADDR] [--quiet]`,
// parsed with parse_command_line (the _or_exit variant would end the test
// program). Every rejected argument must be named in the error text, so the
// reader sees what was wrong.
#include "common/options.hpp"

#include <string>
#include <string_view>
#include <vector>

#include "catch.hpp"

using namespace iomodels;

namespace {

constexpr std::uint16_t default_port = 8005;

struct Parsed {
    ParseStatus status;
    ServerOptions options;
    std::string error;
};

// Parses `args` (argv without argv[0]) as an echo server of chapter 05 would.
Parsed parse(std::vector<std::string> args, std::vector<Option> extra = {}) {
    Parsed parsed{ParseStatus::run, {}, {}};
    const CommandLine command = server_command_line(parsed.options, "echo server", default_port, std::move(extra));
    std::vector<char*> argv;
    for (std::string& arg : args) {
        argv.push_back(arg.data());
    }
    parsed.status = parse_command_line(command, argv, parsed.error);
    return parsed;
}

bool mentions(const std::string& text, std::string_view word) { return text.find(word) != std::string::npos; }

}  // namespace

TEST_CASE("parse_command_line with no arguments gives the default port on 127.0.0.1 with logging on") {
    const Parsed parsed = parse({});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(parsed.options.port == default_port);
    CHECK(parsed.options.host == "127.0.0.1");
    CHECK_FALSE(parsed.options.quiet);
    CHECK(parsed.error.empty());
}

TEST_CASE("parse_command_line accepts PORT 0 which lets the kernel choose") {
    const Parsed parsed = parse({"0"});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(parsed.options.port == 0);
}

TEST_CASE("parse_command_line takes the --host value from the next argument") {
    const Parsed parsed = parse({"--host", "0.0.0.0", "8001"});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(parsed.options.host == "0.0.0.0");
    CHECK(parsed.options.port == 8001);
}

TEST_CASE("parse_command_line takes the --host value after an equals sign") {
    const Parsed parsed = parse({"--host=10.0.0.1"});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(parsed.options.host == "10.0.0.1");
}

TEST_CASE("parse_command_line turns the event log off for --quiet") {
    const Parsed parsed = parse({"--quiet"});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(parsed.options.quiet);
}

TEST_CASE("parse_command_line asks for the usage on --help or -h even after other arguments") {
    CHECK(parse({"--help"}).status == ParseStatus::help);
    CHECK(parse({"-h"}).status == ParseStatus::help);
    CHECK(parse({"8001", "--help"}).status == ParseStatus::help);
}

TEST_CASE("parse_command_line rejects a wrong argument with an error text that names it") {
    struct Case {
        std::vector<std::string> args;
        std::string_view named;
    };
    const Case cases[] = {
        {{"70000"}, "70000"},                // out of range
        {{"abc"}, "abc"},                    // not a number
        {{"1", "2"}, "'2'"},                 // a second port
        {{"--bogus"}, "--bogus"},            // unknown option
        {{"--host"}, "--host"},              // value missing
        {{"--host", "nothere"}, "nothere"},  // not an IPv4 address
        {{"--quiet=1"}, "--quiet"},          // a flag given a value
    };
    for (const Case& wrong : cases) {
        const Parsed parsed = parse(wrong.args);
        CAPTURE(wrong.named, parsed.error);
        CHECK(parsed.status == ParseStatus::error);
        CHECK(mentions(parsed.error, wrong.named));
    }
}

TEST_CASE("parse_command_line error texts say what is wrong with the argument") {
    CHECK(parse({"70000"}).error == "bad PORT '70000' (expected one number from 0 to 65535)");
    CHECK(parse({"--bogus"}).error == "unknown option '--bogus'");
    CHECK(parse({"--host"}).error == "option '--host' needs a value (ADDR)");
    CHECK(parse({"--host", "nothere"}).error == "bad value 'nothere' for --host ADDR");
    CHECK(parse({"--quiet=1"}).error == "option '--quiet' takes no value");
}

TEST_CASE("parse_command_line parses a chapter's extra option with its own setter") {
    int interval_ms = 0;
    const Option interval{"--interval-ms", "N", "sleep N ms between rounds", number(interval_ms, 0, 60000)};
    const Parsed parsed = parse({"--interval-ms", "250", "--quiet"}, {interval});
    CHECK(parsed.status == ParseStatus::run);
    CHECK(interval_ms == 250);
    CHECK(parsed.options.quiet);

    const Parsed wrong = parse({"--interval-ms=soon"}, {interval});
    CHECK(wrong.status == ParseStatus::error);
    CHECK(mentions(wrong.error, "soon"));
}

TEST_CASE("number takes a whole decimal number within its bounds and leaves the target alone otherwise") {
    unsigned depth = 8;
    const auto set_depth = number(depth, 1u, 4096u);
    CHECK(set_depth("1"));
    CHECK(depth == 1);
    CHECK(set_depth("4096"));
    CHECK(depth == 4096);
    for (const std::string_view bad : {"", "0", "4097", "-1", "8x", " 8", "99999999999"}) {
        CAPTURE(bad);
        CHECK_FALSE(set_depth(bad));
        CHECK(depth == 4096);
    }
}

TEST_CASE("usage_text shows the synopsis and the purpose and every option") {
    ServerOptions options;
    const Option interval{"--interval-ms", "N", "sleep N ms between rounds", [](std::string_view) { return true; }};
    const std::string usage = usage_text("server", server_command_line(options, "echo server", 8005, {interval}));
    CAPTURE(usage);
    CHECK(usage.rfind("usage: server [PORT] [--host ADDR] [--quiet] [--interval-ms N]\n", 0) == 0);
    CHECK(mentions(usage, "echo server"));
    CHECK(mentions(usage, "--host ADDR"));
    CHECK(mentions(usage, "--quiet"));
    CHECK(mentions(usage, "--interval-ms N"));
    CHECK(mentions(usage, "sleep N ms between rounds"));
    CHECK(mentions(usage, "--help"));
}

TEST_CASE("parse_client_options_or_exit takes a chapter's extra option beside the messages") {
    int timeout_ms = 1000;
    std::vector<std::string> words{"client", "--port", "9000", "--timeout-ms", "250", "one", "two"};
    std::vector<char*> argv;
    for (std::string& word : words) {
        argv.push_back(word.data());
    }
    const ClientOptions options = parse_client_options_or_exit(
        static_cast<int>(argv.size()), argv.data(), "test client", 8007,
        {{"--timeout-ms", "N", "wait", [&timeout_ms](std::string_view value) {
              return std::from_chars(value.data(), value.data() + value.size(), timeout_ms).ec == std::errc{};
          }}});
    CHECK(options.port == 9000);
    CHECK(timeout_ms == 250);
    CHECK(options.words == std::vector<std::string>{"one", "two"});
}
