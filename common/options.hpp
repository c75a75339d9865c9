// Command-line parsing, the same for every program:
//
//   server [PORT] [--host ADDR] [--quiet] [--help]   (+ a chapter's own options)
//
// --help prints the usage on stdout and exits 0; anything wrong prints one
// line saying what, then the usage, on stderr and exits 2 (CONTRACT.md).
#pragma once

#include <charconv>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace iomodels {

// One option, e.g. {"--interval-ms", "N", "sleep N ms between rounds", setter}.
struct Option {
    std::string_view name;        // "--interval-ms"
    std::string_view value_name;  // "N"; empty for a flag that takes no value
    std::string_view help;
    // Called with the value ("" for a flag); returns false if it is not valid.
    std::function<bool(std::string_view value)> set;
};

struct CommandLine {
    std::string synopsis;  // "[PORT] [--host ADDR] [--quiet]"
    std::string_view purpose;   // one line
    std::vector<Option> options;
    // Called for each argument that is not an option; returns false if it is
    // not valid. Empty: the program takes no operands.
    std::function<bool(std::string_view operand)> operand{};
    std::string_view operand_name = "argument";  // "PORT", for the error message
    std::string_view operand_hint{};             // "(one number from 0 to 65535)"
};

enum class ParseStatus { run, help, error };

// Parses `args` (argv without argv[0]). On error, `error` says what was wrong.
ParseStatus parse_command_line(const CommandLine& command, std::span<char* const> args, std::string& error);

// "usage: server [PORT] ...\n<purpose>\n\noptions:\n  --host ADDR  ...\n"
std::string usage_text(std::string_view program, const CommandLine& command);

// parse_command_line, then --help: usage on stdout, exit 0; error: message
// and usage on stderr, exit 2. Returns only when the program should run.
void parse_command_line_or_exit(const CommandLine& command, int argc, char** argv);

// The operand handler of a program that takes two paths, SRC and DST
// (09's and 10's aio_copy): fills `first`, then `second`; a third or an
// empty path is an error.
std::function<bool(std::string_view operand)> two_paths(std::string& first, std::string& second);

// The Option::set of an option that takes a whole decimal number from `low`
// to `high` into `target`, e.g.
//   {"--depth", "N", "requests in flight (1 to 4096)", number(settings.depth, 1u, 4096u)}
// Anything else ("", "8x", "-1", too large) is a bad value.
template <typename Number>
std::function<bool(std::string_view)> number(Number& target, Number low, Number high) {
    return [&target, low, high](std::string_view value) {
        Number parsed{};
        const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
        if (error != std::errc{} || end != value.data() + value.size() || parsed < low || parsed > high) {
            return false;
        }
        target = parsed;
        return true;
    };
}

// The options every TCP or UDP echo server has.
struct ServerOptions {
    std::string host = "127.0.0.1";  // loopback unless the reader asks
    std::uint16_t port = 0;
    bool quiet = false;
};

// The CommandLine of an echo server: [PORT] (default `default_port`),
// --host ADDR, --quiet, plus `extra` options of the chapter.
CommandLine server_command_line(ServerOptions& options, std::string_view purpose,
                                std::uint16_t default_port, std::vector<Option> extra = {});

// server_command_line + parse_command_line_or_exit.
ServerOptions parse_server_options_or_exit(int argc, char** argv, std::string_view purpose,
                                           std::uint16_t default_port, std::vector<Option> extra = {});

// The options every echo client has: [--host ADDR] [--port PORT] [MESSAGE...].
struct ClientOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::vector<std::string> words;  // MESSAGE...; empty: the client reads standard input

    // The words joined by spaces and ending in a newline, like echo(1).
    [[nodiscard]] std::string message() const;
};

// Parses a client's command line (--help: exit 0; bad arguments: exit 2),
// with the chapter's `extra` options.
ClientOptions parse_client_options_or_exit(int argc, char** argv, std::string_view purpose,
                                           std::uint16_t default_port, std::vector<Option> extra = {});

}  // namespace iomodels
