// config: the YAML config (SPEC §3) parsed and validated into one immutable value. ◇
// Thread affinity: load() runs on the control thread; a Config is read-only once built.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

#include <tpt/address.hpp>
#include <tpt/duration.hpp>
#include <tpt/env.hpp>

namespace tpt::config {

using duration::Duration;

enum class LogLevel : std::uint8_t { trace, debug, info, warn, error, off };
enum class LogFormat : std::uint8_t { text, json };
enum class ControlFrom : std::uint8_t { loopback, any };

std::string_view to_string(LogLevel l) noexcept;
// "off" and "disable" both give off. Case-insensitive.
std::optional<LogLevel> parse_log_level(std::string_view text);

struct Admin {
    std::optional<address::HostPort> listen =
        address::HostPort{"0.0.0.0", 9901, false};  // nullopt: disabled
    ControlFrom control_from = ControlFrom::loopback;

    friend bool operator==(const Admin&, const Admin&) = default;
};

struct Reload {
    bool watch = true;
    Duration poll_interval = std::chrono::seconds{30};  // 0 = off

    friend bool operator==(const Reload&, const Reload&) = default;
};

struct Shutdown {
    Duration delay = std::chrono::seconds{0};
    Duration drain_timeout = std::chrono::seconds{30};  // 0 = wait forever

    friend bool operator==(const Shutdown&, const Shutdown&) = default;
};

struct Header {
    std::string name;   // an HTTP token (RFC 9110 §5.6.2), as written
    std::string value;  // after env expansion; no CR, LF or NUL

    friend bool operator==(const Header&, const Header&) = default;
};

// SPEC §13: `auth: { basic: { username | username_file, password_file } }`. The header it
// makes (Proxy-Authorization: Basic base64(user:password)) is in the owner's `headers`; what
// is kept here is for /config, which shows the files and redacts the user name.
struct BasicAuth {
    std::string username;                      // after expansion, or the file's content
    std::optional<std::string> username_file;  // engaged: the user name came from this file
    std::string password_file;

    friend bool operator==(const BasicAuth&, const BasicAuth&) = default;
};

// A direct connection's connect_timeout, and a via's when it sets none.
inline constexpr Duration default_connect_timeout = std::chrono::seconds{30};

// An upstream HTTP proxy hop. A Via with neither target nor use_sni_as_target is "direct".
struct Via {
    std::optional<address::HostPort> target;  // static CONNECT target, after env expansion
    bool use_sni_as_target = false;
    // The port of CONNECT {name}:{port} (use_sni_as_target): nullopt = the connection's
    // default (SPEC §12): the original port in a transparent server (also what
    // `target_port: original` says), else 80 for an HTTP connection, 443 for TLS.
    std::optional<std::uint16_t> target_port;
    Duration connect_timeout = default_connect_timeout;  // TCP connect + CONNECT response
    Duration stats_interval = std::chrono::seconds{0};   // 0 = off
    std::vector<Header> headers;
    std::optional<BasicAuth> auth;  // its header is in `headers`
    bool target_from_file = false;  // `target` used ${file:}: /config shows it redacted

    bool is_direct() const noexcept { return !target && !use_sni_as_target; }
    // target_port or the default above; `original` is the transparent connection's port.
    std::uint16_t port_for(bool http, std::optional<std::uint16_t> original) const noexcept {
        if (target_port) {
            return *target_port;
        }
        if (original) {
            return *original;
        }
        return http ? 80 : 443;
    }

    friend bool operator==(const Via&, const Via&) = default;
};

struct SniRoute {
    std::string key;      // as written in the config (the metrics' `route` label)
    std::string pattern;  // lower-cased key; "*.example.org" for wildcards; "*" matches all
    bool wildcard = false;
    std::string upstream;    // an upstream name or a built-in
    std::optional<Via> via;  // engaged = per-SNI override ({} = direct); else the server's

    friend bool operator==(const SniRoute&, const SniRoute&) = default;
};

struct Server {
    std::string name;
    std::vector<address::HostPort> listen;
    address::Family protocol = address::Family::any;
    bool tls = false;
    bool http = false;            // SPEC §12: an HTTP/1.x request head, routed by its host
    bool transparent = false;     // SPEC §11: redirected connections; SO_ORIGINAL_DST
    bool accept_connect = false;  // SPEC §12: an explicit proxy answering CONNECT
    bool sni_must_match = false;  // SPEC §12: a ClientHello must name the routed host
    std::vector<SniRoute> sni;    // in file order; matched against the SNI or the host
    std::string default_upstream = "ban";
    std::uint32_t maxclients = 100;
    Duration client_hello_timeout = std::chrono::seconds{10};
    Duration idle_timeout = std::chrono::seconds{0};  // 0 = never
    std::optional<Via> via;                           // nullopt or is_direct(): direct TCP

    friend bool operator==(const Server&, const Server&) = default;
};

// SPEC §13: how a connection orders the healthy members of an upstream.
enum class Strategy : std::uint8_t { failover, round_robin, least_connections };
std::string_view to_string(Strategy s) noexcept;

// One server of an upstream.
struct Member {
    // After expansion: the `member` label of the metrics. A URL that used ${file:} is kept as
    // written instead (labels and /config never show what came from a file).
    std::string url;
    bool url_from_file = false;
    address::Family family = address::Family::any;
    address::HostPort address;

    friend bool operator==(const Member&, const Member&) = default;
};

// SPEC §13 `health:`. Passive checks always run (connections count failures and successes);
// active probes when interval > 0.
struct HealthCheck {
    Duration interval = std::chrono::seconds{0};    // 0 = passive only
    Duration timeout = std::chrono::seconds{2};     // one probe: connect (+ CONNECT answer)
    std::uint32_t fail_after = 3;                   // consecutive failures -> down
    std::uint32_t pass_after = 2;                   // consecutive successes -> up
    std::optional<address::HostPort> probe_target;  // CONNECT to it through the member
    bool probe_target_from_file = false;
    std::vector<Header> headers;  // of the probe's CONNECT request (auth's header included)
    std::optional<BasicAuth> auth;

    friend bool operator==(const HealthCheck&, const HealthCheck&) = default;
};

// Members per upstream at most: a pool is a handful of proxies, and a connection's walk over
// them is bounded by this.
inline constexpr std::size_t max_members = 32;

// A named upstream from the `upstream:` map (built-ins are not listed here): one URL, or a
// pool (`servers`, `strategy`, `health`).
struct Upstream {
    std::string name;
    // members.front(): the only member of a single URL.
    std::string url;
    address::Family family = address::Family::any;
    address::HostPort address;
    std::vector<Member> members;  // in file order; never empty
    bool pool = false;            // written as a map: /config shows it as one
    Strategy strategy = Strategy::failover;
    HealthCheck health;

    friend bool operator==(const Upstream&, const Upstream&) = default;
};

inline constexpr std::string_view builtin_ban = "ban";
inline constexpr std::string_view builtin_echo = "echo";
inline constexpr std::string_view builtin_health = "health";
// SPEC §11/§12: the connection's original destination (transparent) or its CONNECT host:port.
inline constexpr std::string_view builtin_original = "original";
bool is_builtin(std::string_view upstream_name) noexcept;

// One problem in a config file. line is 1-based, 0 when unknown.
struct ConfigError {
    std::string file;
    std::string yaml_path;  // e.g. servers.proxy.sni."a.example".upstream
    int line = 0;
    std::string message;

    // "FILE:LINE: YAML_PATH: MESSAGE" (":LINE" omitted when 0, "YAML_PATH: " when empty).
    std::string to_string() const;
    friend bool operator==(const ConfigError&, const ConfigError&) = default;
};

struct Config {
    int version = 1;
    LogLevel log = LogLevel::info;
    LogFormat log_format = LogFormat::text;
    Admin admin;
    Reload reload;
    Shutdown shutdown;
    Duration resolve_interval = std::chrono::seconds{60};
    std::vector<Server> servers;      // in file order
    std::vector<Upstream> upstreams;  // in file order
    // Every file that ${file:} or `auth` read (paths, each once, sorted): the reload watches
    // their directories and hashes their content with the config's.
    std::vector<std::string> files;
    // Non-fatal notes found while loading (e.g. `sni` on a server without `tls: true`, an
    // unused upstream); the caller logs them. Not part of the effective config.
    std::vector<ConfigError> warnings;

    const Upstream* find_upstream(std::string_view name) const noexcept;

    // Compares the effective config; warnings are not compared.
    friend bool operator==(const Config& a, const Config& b);
};

using ConfigErrors = std::vector<ConfigError>;
// One error per line, each as ConfigError::to_string() gives it.
std::string to_string(const ConfigErrors& errors);
// Called by LoadResult::value() on errors (found by argument-dependent lookup).
[[noreturn]] void throw_exception_from_error(const ConfigErrors& errors,
                                             const boost::source_location& where);
using LoadResult = boost::system::result<Config, ConfigErrors>;

// Parses and fully validates `text` (the content of `file`, used only in messages).
// Collects every error it can rather than stopping at the first. Never throws. Files
// referenced by ${file:} and `auth` are read with `read_file`; an error names the path and
// never the content.
LoadResult load(std::string_view text, std::string_view file, const env::Lookup& lookup,
                const env::FileReader& read_file);
// As above, reading no file: a reference to one is an error.
LoadResult load(std::string_view text, std::string_view file, const env::Lookup& lookup);

// The effective config as JSON (Boost.JSON text). Header values, auth user names and every
// value that came from a file are "<redacted>".
std::string to_json(const Config& config);

// Lower-case hex SHA-256 of bytes (the file content; used for change detection and
// tpt_config_info).
std::string sha256_hex(std::string_view bytes);

}  // namespace tpt::config
