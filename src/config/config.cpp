// The small value functions of config.hpp; the loader is in load.cpp, JSON in json.cpp.
#include <array>
#include <stdexcept>
#include <string>

#include <boost/beast/core/string.hpp>

#include <tpt/config.hpp>

namespace tpt::config {

namespace {

struct LevelName {
    std::string_view name;
    LogLevel level;
};

// "disable" is the seed's spelling of "off".
constexpr std::array<LevelName, 7> level_names{{
    {"trace", LogLevel::trace},
    {"debug", LogLevel::debug},
    {"info", LogLevel::info},
    {"warn", LogLevel::warn},
    {"error", LogLevel::error},
    {"off", LogLevel::off},
    {"disable", LogLevel::off},
}};

}  // namespace

std::string_view to_string(LogLevel l) noexcept {
    // The first six entries are in the order of the enumeration.
    const auto i = static_cast<std::size_t>(l);
    return i <= static_cast<std::size_t>(LogLevel::off) ? level_names[i].name : "off";
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
    for (const auto& entry : level_names) {
        if (boost::beast::iequals(entry.name, text)) {
            return entry.level;
        }
    }
    return std::nullopt;
}

std::string_view to_string(Strategy s) noexcept {
    // In the order of the enumeration.
    static constexpr std::array<std::string_view, 3> names{"failover", "round_robin",
                                                           "least_connections"};
    return enum_name(names, s, "failover");
}

bool is_builtin(std::string_view upstream_name) noexcept {
    return upstream_name == builtin_ban || upstream_name == builtin_echo ||
           upstream_name == builtin_health || upstream_name == builtin_original;
}

const Upstream* Config::find_upstream(std::string_view name) const noexcept {
    for (const auto& u : upstreams) {
        if (u.name == name) {
            return &u;
        }
    }
    return nullptr;
}

bool operator==(const Config& a, const Config& b) {
    return a.version == b.version && a.log == b.log && a.log_format == b.log_format &&
           a.admin == b.admin && a.reload == b.reload && a.shutdown == b.shutdown &&
           a.resolve_interval == b.resolve_interval && a.servers == b.servers &&
           a.upstreams == b.upstreams;
}

std::string ConfigError::to_string() const {
    std::string out = file;
    if (line > 0) {
        out += ':';
        out += std::to_string(line);
    }
    out += ": ";
    if (!yaml_path.empty()) {
        out += yaml_path;
        out += ": ";
    }
    out += message;
    return out;
}

std::string to_string(const ConfigErrors& errors) {
    std::string out;
    for (const auto& e : errors) {
        out += e.to_string();
        out += '\n';
    }
    return out;
}

void throw_exception_from_error(const ConfigErrors& errors,
                                const boost::source_location& /*where*/) {
    throw std::invalid_argument(to_string(errors));
}

}  // namespace tpt::config
