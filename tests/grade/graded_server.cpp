// The server under test of grade_cases, the grader's case runner: read from
// the environment the grader sets (tests/grade/grade.cpp). The cases are the
// conformance suite's own (tests/conformance/echo_conformance.cpp) and the
// fingerprint rules (fingerprint.cpp), so the suite and the grader cannot
// drift apart.
//
//   IOMODELS_GRADE_ARGV   the server's command line, arguments separated by \x1f
//   IOMODELS_GRADE_MODEL  the grader's model: epoll-et, fork, ... (grade --list)
//   IOMODELS_GRADE_LEVEL  core or contract
//   IOMODELS_GRADE_SEED   added to every random payload's seed
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "conformance/server_under_test.hpp"
#include "grade/models.hpp"

namespace {

std::string variable(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr ? value : "";
}

conformance::ServerUnderTest from_environment() {
    conformance::ServerUnderTest server;
    std::vector<std::string> words;
    const std::string argv = variable("IOMODELS_GRADE_ARGV");
    for (std::size_t start = 0;;) {
        const std::size_t end = argv.find('\x1f', start);
        words.push_back(argv.substr(start, end == std::string::npos ? std::string::npos : end - start));
        if (end == std::string::npos) {
            break;
        }
        start = end + 1;
    }
    server.path = words.front();
    server.options.assign(words.begin() + 1, words.end());
    const grade::ModelInfo* model = grade::find_model(variable("IOMODELS_GRADE_MODEL"));
    server.name = model != nullptr ? "the " + std::string(model->name) + " server" : "the server";
    server.model = model != nullptr ? model->serves : conformance::Model::event_loop;
    server.contract = variable("IOMODELS_GRADE_LEVEL") == "contract";
    server.sigev_thread = model != nullptr && model->name == "aio-posix";
    server.io_uring = model != nullptr && model->name == "io-uring";
    server.seed = static_cast<std::uint32_t>(std::strtoul(variable("IOMODELS_GRADE_SEED").c_str(), nullptr, 10));
    return server;
}

}  // namespace

const conformance::ServerUnderTest conformance::server_under_test = from_environment();
