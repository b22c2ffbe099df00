// cli: command line (SPEC §2) and the config search order. ◇
// Thread affinity: main thread, at start.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/env.hpp>

namespace tpt::cli {

struct Options {
    std::optional<std::string> config_path;  // -c/--config
    bool check_config = false;               // -t/--check-config
    bool version = false;
    bool help = false;
    bool no_arguments = false;  // argv had nothing after the program name
};

struct ParseResult {
    std::optional<Options> options;  // nullopt: usage error, see error
    std::string error;
};

ParseResult parse(int argc, const char* const* argv);
std::string help_text(std::string_view program);

// SPEC §2 search order when --config is absent: $TPT_CONFIG, $tpt_CONFIG,
// /etc/tpt/tpt.yaml, /etc/tpt/config.yaml, ./tpt.yaml, ./config.yaml.
// `exists` tells whether a path names an existing file.
struct Search {
    std::optional<std::string> found;
    std::vector<std::string> tried;
};
Search find_config(const env::Lookup& lookup,
                   const std::function<bool(const std::string&)>& exists);

}  // namespace tpt::cli
