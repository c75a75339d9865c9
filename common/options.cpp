#include "common/options.hpp"

#include <cstdio>
#include <cstdlib>

#include "common/errors.hpp"
#include "common/net.hpp"

namespace iomodels {

namespace {

const Option* find_option(const CommandLine& command, std::string_view name) {
    for (const Option& option : command.options) {
        if (option.name == name) {
            return &option;
        }
    }
    return nullptr;
}

}  // namespace

ParseStatus parse_command_line(const CommandLine& command, std::span<char* const> args, std::string& error) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view arg = args[i];
        if (arg == "--help" || arg == "-h") {
            return ParseStatus::help;
        }
        if (arg.size() > 1 && arg[0] == '-') {
            // "--name value" or "--name=value"
            std::string_view name = arg;
            std::string_view value;
            bool value_given = false;
            if (const auto equals = arg.find('='); equals != std::string_view::npos) {
                name = arg.substr(0, equals);
                value = arg.substr(equals + 1);
                value_given = true;
            }
            const Option* option = find_option(command, name);
            if (option == nullptr) {
                error = "unknown option '" + std::string(arg) + "'";
                return ParseStatus::error;
            }
            if (option->value_name.empty()) {
                if (value_given) {
                    error = "option '" + std::string(name) + "' takes no value";
                    return ParseStatus::error;
                }
            } else if (!value_given) {
                if (i + 1 == args.size()) {
                    const std::string value_name(option->value_name);
                    error = "option '" + std::string(name) + "' needs a value (" + value_name + ")";
                    return ParseStatus::error;
                }
                value = args[++i];
            }
            if (!option->set(value)) {
                error = "bad value '" + std::string(value) + "' for " + std::string(name) + " " +
                        std::string(option->value_name);
                return ParseStatus::error;
            }
            continue;
        }
        if (!command.operand || !command.operand(arg)) {
            error = command.operand ? "bad " + std::string(command.operand_name) + " '" + std::string(arg) + "'"
                                    : "unexpected argument '" + std::string(arg) + "'";
            if (command.operand && !command.operand_hint.empty()) {
                error += " " + std::string(command.operand_hint);
            }
            return ParseStatus::error;
        }
    }
    return ParseStatus::run;
}

std::string usage_text(std::string_view program, const CommandLine& command) {
    std::string text = "usage: " + std::string(program) + " " + std::string(command.synopsis) + "\n" +
                       std::string(command.purpose) + "\n\noptions:\n";
    for (const Option& option : command.options) {
        std::string left = "  " + std::string(option.name);
        if (!option.value_name.empty()) {
            left += " " + std::string(option.value_name);
        }
        left.resize(std::max<std::size_t>(left.size() + 2, 22), ' ');
        text += left + std::string(option.help) + "\n";
    }
    text += "  --help              print this help and exit\n";
    return text;
}

void parse_command_line_or_exit(const CommandLine& command, int argc, char** argv) {
    std::string error;
    const auto args = std::span<char* const>(argv, static_cast<std::size_t>(argc)).subspan(1);
    switch (parse_command_line(command, args, error)) {
    case ParseStatus::run:
        return;
    case ParseStatus::help:
        std::fputs(usage_text(program_name(), command).c_str(), stdout);
        std::exit(0);
    case ParseStatus::error:
        std::fprintf(stderr, "%s: %s\n%s", program_name(), error.c_str(), usage_text(program_name(), command).c_str());
        std::exit(2);
    }
}

namespace {

// A chapter's own options: into the synopsis and the list.
void append_options(CommandLine& command, std::vector<Option> extra) {
    for (Option& option : extra) {
        command.synopsis += " [" + std::string(option.name);
        command.synopsis += option.value_name.empty() ? "]" : " " + std::string(option.value_name) + "]";
        command.options.push_back(std::move(option));
    }
}

}  // namespace

CommandLine server_command_line(ServerOptions& options, std::string_view purpose, std::uint16_t default_port,
                                std::vector<Option> extra) {
    options.port = default_port;
    CommandLine command{
        .synopsis = "[PORT] [--host ADDR] [--quiet]",
        .purpose = purpose,
        .options =
            {
                {"--host", "ADDR", "IPv4 address to listen on (default 127.0.0.1)",
                 [&options](std::string_view value) {
                     if (!parse_ipv4(value)) {
                         return false;
                     }
                     options.host = value;
                     return true;
                 }},
                {"--quiet", "", "no per-event log lines on stderr",
                 [&options](std::string_view) {
                     options.quiet = true;
                     return true;
                 }},
            },
        .operand =
            [&options, port_seen = false](std::string_view value) mutable {
                const auto port = parse_port(value);
                if (port_seen || !port) {
                    return false;
                }
                port_seen = true;
                options.port = *port;
                return true;
            },
        .operand_name = "PORT",
        .operand_hint = "(expected one number from 0 to 65535)",
    };
    append_options(command, std::move(extra));
    return command;
}

std::function<bool(std::string_view operand)> two_paths(std::string& first, std::string& second) {
    return [&first, &second](std::string_view operand) {
        if (operand.empty()) {
            return false;
        }
        if (first.empty()) {
            first = operand;
        } else if (second.empty()) {
            second = operand;
        } else {
            return false;
        }
        return true;
    };
}

ServerOptions parse_server_options_or_exit(int argc, char** argv, std::string_view purpose,
                                           std::uint16_t default_port, std::vector<Option> extra) {
    ServerOptions options;
    const std::string synopsis_purpose =
        std::string(purpose) + "\nPORT defaults to " + std::to_string(default_port) + "; 0 lets the kernel choose.";
    const CommandLine command = server_command_line(options, synopsis_purpose, default_port, std::move(extra));
    parse_command_line_or_exit(command, argc, argv);
    return options;
}

std::string ClientOptions::message() const {
    std::string text;
    for (const std::string& word : words) {
        text += (text.empty() ? "" : " ") + word;
    }
    return text + '\n';
}

ClientOptions parse_client_options_or_exit(int argc, char** argv, std::string_view purpose,
                                           std::uint16_t default_port, std::vector<Option> extra) {
    ClientOptions options;
    options.port = default_port;
    const std::string port_help = "server's port (default " + std::to_string(default_port) + ")";
    CommandLine command{
        .synopsis = "[--host ADDR] [--port PORT]",
        .purpose = purpose,
        .options =
            {
                {"--host", "ADDR", "server's IPv4 address (default 127.0.0.1)",
                 [&options](std::string_view value) {
                     options.host = value;
                     return parse_ipv4(value).has_value();
                 }},
                {"--port", "PORT", port_help,
                 [&options](std::string_view value) {
                     const auto parsed = parse_port(value);
                     options.port = parsed.value_or(0);
                     return parsed.has_value() && *parsed != 0;
                 }},
            },
        .operand =
            [&options](std::string_view word) {
                options.words.emplace_back(word);
                return true;
            },
        .operand_name = "MESSAGE",
        .operand_hint = "",
    };
    append_options(command, std::move(extra));
    command.synopsis += " [MESSAGE...]";
    parse_command_line_or_exit(command, argc, argv);
    return options;
}

}  // namespace iomodels
