// cli: command line (SPEC §2, and `tpt capture` of §11) and the config search order. ◇
// Thread affinity: main thread, at start.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/env.hpp>

namespace tpt::cli {

// `tpt capture` (SPEC §11): which options were given, as written; tpt::capture checks the
// values (ports, CIDRs, UID) and says what is wrong with them.
enum class CaptureMode : std::uint8_t { print, apply, remove };

struct CaptureArgs {
    CaptureMode mode = CaptureMode::print;   // --print (default) | --apply | --remove
    std::optional<std::string> ports;        // --ports 443,80
    std::optional<std::string> to;           // --to 15001
    std::optional<std::string> uid;          // --uid 65532
    std::vector<std::string> exclude_cidrs;  // --exclude-cidr, repeated or comma-separated
    bool ipv6 = true;                        // --no-ipv6 turns it off
    bool help = false;
};

struct Options {
    std::optional<CaptureArgs> capture;      // argv[1] == "capture": the subcommand's options
    std::optional<std::string> config_path;  // -c/--config
    bool check_config = false;               // -t/--check-config
    bool version = false;
    bool help = false;
    bool no_arguments = false;  // argv had nothing after the program name
};

struct ParseResult {
    std::optional<Options> options;  // nullopt: usage error, see error
    std::string error;
    bool capture = false;  // the command line is `tpt capture ...` (which help fits an error)
};

// Usage errors (unknown option, missing value, a stray argument, two modes) leave options
// empty and say why in error.
ParseResult parse(int argc, const char* const* argv);
std::string help_text(std::string_view program);
std::string capture_help_text(std::string_view program);

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
