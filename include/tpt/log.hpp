// log: spdlog set-up (txt|json), the access-log line and secret-free formatting helpers.
// Thread affinity: configure() on the control thread; the log functions from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tpt/config.hpp>

namespace tpt::log {

// Sets the default logger: stderr, level and format. The caller decides the level (the app
// lets TPT_LOG win over the config's `log`). Safe to call again at reload.
void configure(config::LogLevel level, config::LogFormat format);

// A structured line: msg plus key/value fields. txt: `msg key=value key="va lue"`;
// json: {"ts":"2026-…Z","level":"info","msg":…,"key":"value",…} on one line.
// Values are escaped (control bytes never reach the terminal raw); callers never pass
// secrets (header values) here.
using Fields = std::vector<std::pair<std::string_view, std::string>>;
void write(config::LogLevel level, std::string_view msg, const Fields& fields = {});

inline void info(std::string_view msg, const Fields& f = {}) {
    write(config::LogLevel::info, msg, f);
}
inline void warn(std::string_view msg, const Fields& f = {}) {
    write(config::LogLevel::warn, msg, f);
}
inline void error(std::string_view msg, const Fields& f = {}) {
    write(config::LogLevel::error, msg, f);
}
inline void debug(std::string_view msg, const Fields& f = {}) {
    write(config::LogLevel::debug, msg, f);
}
bool enabled(config::LogLevel level) noexcept;

// SPEC §5: one line per finished tunnel (msg "access"). `sni` is the name the route was
// chosen by: the ClientHello's SNI, an HTTP Host or a CONNECT host (SPEC §12); original_dst
// is a redirected connection's original destination (SPEC §11), empty otherwise.
struct AccessRecord {
    std::string server, listen, client, sni, route, upstream, connect_target, original_dst;
    std::uint64_t bytes_to_upstream = 0, bytes_to_client = 0;
    std::uint64_t duration_ms = 0;
    std::string_view result;  // to_string(Outcome)
};
void access(const AccessRecord& r);

// Test-only: while set, every finished line (without its trailing newline) goes to `hook`
// instead of stderr; an empty function restores stderr. Called under the sink's lock, so
// the hook must not log.
void set_line_hook_for_tests(std::function<void(std::string_view)> hook);

// Lets one line about a recurring event through per period (accept failing with EMFILE, …),
// so a persistent condition cannot flood the log. Not thread-safe: one per loop.
class Throttle {
public:
    explicit Throttle(std::chrono::steady_clock::duration period) : period_(period) {}

    // Counts the event; returns how many were held back since the last line when it is time
    // to write one, else nullopt.
    std::optional<std::uint64_t> pass(std::chrono::steady_clock::time_point now) {
        ++held_;
        if (logged_once_ && now - last_ < period_) {
            return std::nullopt;
        }
        logged_once_ = true;
        last_ = now;
        const auto held = held_ - 1;
        held_ = 0;
        return held;
    }

private:
    std::chrono::steady_clock::duration period_;
    std::chrono::steady_clock::time_point last_{};
    std::uint64_t held_ = 0;
    bool logged_once_ = false;
};

}  // namespace tpt::log
