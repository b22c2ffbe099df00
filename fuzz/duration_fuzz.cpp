// Fuzzes duration::parse and format. Properties: an accepted text is at most 100 years,
// format() of it reads back to the same value, and format() is a fixed point of
// parse-then-format, never longer than the longest in-range form. Any value in range, taken from
// the first 8 bytes, also round-trips.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <tpt/duration.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

constexpr auto max_duration =
    std::chrono::duration_cast<tpt::duration::Duration>(std::chrono::years{100});

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto parsed = tpt::duration::parse(text);
    if (parsed) {
        check(parsed->count() >= 0 && *parsed <= max_duration);
        const std::string formatted = tpt::duration::format(*parsed);
        const auto again = tpt::duration::parse(formatted);
        check(again.has_value() && *again == *parsed);
        check(tpt::duration::format(*again) == formatted);
        check(formatted.size() <= std::string_view("876599h59m59s999ms").size());
    } else {
        check(!parsed.error().message.empty());
    }

    if (size >= sizeof(std::int64_t)) {
        std::int64_t raw = 0;
        std::memcpy(&raw, data, sizeof raw);
        const tpt::duration::Duration d{raw};
        const std::string formatted = tpt::duration::format(d);
        const auto back = tpt::duration::parse(formatted);
        const bool in_range = raw >= 0 && d <= max_duration;
        check(back.has_value() == in_range);
        check(!in_range || *back == d);
    }
    return 0;
}
