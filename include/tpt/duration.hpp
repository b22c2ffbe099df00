// duration: the config's duration syntax ("500ms", "10s", "5m", "1h", "1h30m", bare seconds). ◇
// Thread affinity: none (pure functions).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <tpt/outcome.hpp>

namespace tpt::duration {

using Duration = std::chrono::milliseconds;

// Accepts one or more <integer><unit> parts, units ms|s|m|h (each unit at most once, in
// decreasing order: "1h30m", "2m500ms"), or a bare non-negative integer meaning seconds.
// Rejects empty text, signs, fractions, spaces inside, unknown units and any total above
// 100 years (so arithmetic on durations can never overflow).
Result<Duration> parse(std::string_view text);

// Canonical form that parse() reads back to the same value: largest units first, zero parts
// left out ("0s", "500ms", "1s500ms", "1h30m"). A negative value (never produced by parse())
// is written with a leading '-'.
std::string format(Duration d);

}  // namespace tpt::duration
