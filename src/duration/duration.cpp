#include <array>
#include <cstdint>

#include <tpt/duration.hpp>

namespace tpt::duration {

namespace {

// 100 Gregorian years; every accepted total is at most this, so sums and products of a few
// durations stay far inside the range of std::chrono::milliseconds.
constexpr std::int64_t max_ms =
    std::chrono::duration_cast<Duration>(std::chrono::years{100}).count();

struct Unit {
    std::string_view suffix;
    std::int64_t ms;
};

// Largest first: the order in which parts must appear and in which format() writes them.
constexpr std::array<Unit, 4> units{{
    {"h", 3'600'000},
    {"m", 60'000},
    {"s", 1'000},
    {"ms", 1},
}};

constexpr bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

// Reads the digits at text[pos...] into value, refusing anything above limit so a long run
// of digits can never overflow. Returns false when there is no digit or the number is too big.
bool read_number(std::string_view text, std::size_t& pos, std::int64_t limit, std::int64_t& value) {
    const std::size_t start = pos;
    value = 0;
    while (pos < text.size() && is_digit(text[pos])) {
        const std::int64_t digit = text[pos] - '0';
        if (value > (limit - digit) / 10) {
            return false;
        }
        value = value * 10 + digit;
        ++pos;
    }
    return pos != start;
}

Error error(std::string_view text, std::string_view why) {
    return Error{"invalid duration \"" + std::string(text) + "\": " + std::string(why)};
}

}  // namespace

Result<Duration> parse(std::string_view text) {
    if (text.empty()) {
        return error(text, "empty");
    }
    std::size_t pos = 0;
    std::int64_t total = 0;
    std::size_t next_unit = 0;  // units before this index are used or skipped
    while (pos < text.size()) {
        std::int64_t n = 0;
        if (!read_number(text, pos, max_ms, n)) {
            if (pos < text.size() && is_digit(text[pos])) {
                return error(text, "above 100 years");
            }
            return error(text, "expected a non-negative integer followed by ms, s, m or h");
        }
        if (pos == text.size()) {
            if (next_unit != 0) {
                return error(text, "number without a unit after the first part");
            }
            // A bare integer is seconds.
            if (n > max_ms / 1000) {
                return error(text, "above 100 years");
            }
            return Duration{n * 1000};
        }
        // "ms" before "m": the longest suffix that matches wins.
        std::size_t unit = units.size();
        for (std::size_t i = 0; i < units.size(); ++i) {
            const auto& u = units[i];
            if (text.substr(pos, u.suffix.size()) == u.suffix &&
                (unit == units.size() || u.suffix.size() > units[unit].suffix.size())) {
                unit = i;
            }
        }
        if (unit == units.size()) {
            return error(text, "unknown unit (use ms, s, m or h)");
        }
        if (unit < next_unit) {
            return error(text, "units must appear at most once, largest first (e.g. 1h30m)");
        }
        pos += units[unit].suffix.size();
        next_unit = unit + 1;
        const std::int64_t per = units[unit].ms;
        if (n > (max_ms - total) / per) {
            return error(text, "above 100 years");
        }
        total += n * per;
    }
    return Duration{total};
}

std::string format(Duration d) {
    // Parse rejects signs; a negative value is written with a leading '-' so that it is at
    // least readable in a log line. Unsigned arithmetic keeps milliseconds::min() defined.
    const std::int64_t count = d.count();
    std::string out;
    auto rest = static_cast<std::uint64_t>(count);
    if (count < 0) {
        out.push_back('-');
        rest = 0 - rest;
    }
    if (rest == 0) {
        return "0s";
    }
    for (const auto& u : units) {
        const auto per = static_cast<std::uint64_t>(u.ms);
        const std::uint64_t n = rest / per;
        rest %= per;
        if (n != 0) {
            out += std::to_string(n);
            out += u.suffix;
        }
    }
    return out;
}

}  // namespace tpt::duration
