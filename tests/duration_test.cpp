#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/duration.hpp>

namespace {

using namespace std::chrono_literals;
using tpt::duration::Duration;

constexpr Duration hundred_years = std::chrono::duration_cast<Duration>(std::chrono::years{100});

TEST(Duration, ParsesTheSpecSyntax) {
    const std::vector<std::pair<std::string, Duration>> cases = {
        {"500ms", 500ms},
        {"10s", 10s},
        {"5m", 5min},
        {"1h", 1h},
        {"1h30m", 90min},
        {"2m500ms", 2min + 500ms},
        {"1h2m3s4ms", 1h + 2min + 3s + 4ms},
        {"1h500ms", 1h + 500ms},
        {"0s", 0ms},
        {"0ms", 0ms},
        {"0", 0ms},
        {"10", 10s},
        {"007", 7s},
        {"90m", 90min},
        {"1500ms", 1500ms},
        {"1h0m", 1h},
        {"100000000ms", 100000s},
    };
    for (const auto& [text, want] : cases) {
        SCOPED_TRACE(text);
        const auto got = tpt::duration::parse(text);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(*got, want);
    }
}

TEST(Duration, RejectsMalformedText) {
    const std::vector<std::string> cases = {
        "",
        " ",
        "s",
        "ms",
        "h1",
        "-5s",
        "+5s",
        "1.5s",
        " 5s",
        "5s ",
        "5 s",
        "1h 30m",
        "1h1h",
        "30m1h",
        "1s1m",
        "1ms1s",
        "5S",
        "5sec",
        "5d",
        "5us",
        "1h30",
        "10 ",
        "5m5m",
        "5mss",
        "0x10",
        "1e3",
        std::string("5s\0", 3),
        "\xEF\xBC\x95s",  // fullwidth digit five
    };
    for (const auto& text : cases) {
        SCOPED_TRACE(text);
        const auto got = tpt::duration::parse(text);
        EXPECT_FALSE(got.has_value());
        if (!got.has_value()) {
            EXPECT_FALSE(got.error().message.empty());
        }
    }
}

TEST(Duration, AcceptsUpToHundredYearsAndRejectsMore) {
    const std::int64_t max_ms = hundred_years.count();
    const std::int64_t max_s = max_ms / 1000;
    const std::vector<std::pair<std::string, bool>> cases = {
        {std::to_string(max_ms) + "ms", true},
        {std::to_string(max_ms + 1) + "ms", false},
        {std::to_string(max_s), true},
        {std::to_string(max_s + 1), false},
        {"876000h", true},
        {"876600h", false},
        {"876000h60000m", false},
        {"99999999999999999999999999999999s", false},
        {"99999999999999999999999999999999", false},
        {"9223372036854775807ms", false},
        {"9223372036854775808ms", false},
        {"18446744073709551617ms", false},
        {"2562047788015h", false},  // overflows int64 milliseconds when multiplied naively
        {"1" + std::string(5000, '0') + "s", false},
        {std::string(5000, '0') + "1s", true},
    };
    for (const auto& [text, ok] : cases) {
        SCOPED_TRACE(text.substr(0, 60));
        const auto got = tpt::duration::parse(text);
        EXPECT_EQ(got.has_value(), ok)
            << (got.has_value() ? tpt::duration::format(*got) : got.error().message);
        if (got.has_value()) {
            EXPECT_LE(*got, hundred_years);
        }
    }
}

TEST(Duration, FormatsCanonically) {
    const std::vector<std::pair<Duration, std::string>> cases = {
        {0ms, "0s"},           {500ms, "500ms"}, {1s, "1s"},
        {1500ms, "1s500ms"},   {90min, "1h30m"}, {60min, "1h"},
        {1h + 1ms, "1h1ms"},   {25h, "25h"},     {1h + 2min + 3s + 4ms, "1h2m3s4ms"},
        {-1500ms, "-1s500ms"},
    };
    for (const auto& [d, text] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(tpt::duration::format(d), text);
    }
}

TEST(Duration, FormatOfExtremesIsDefined) {
    EXPECT_EQ(tpt::duration::format(Duration::max()), "2562047788015h12m55s807ms");
    EXPECT_EQ(tpt::duration::format(Duration::min()), "-2562047788015h12m55s808ms");
}

TEST(Duration, FormatReadsBackToTheSameValue) {
    const std::vector<Duration> cases = {0ms,         1ms,   999ms,         1s,
                                         59s,         60s,   61s,           3599s,
                                         3600s + 1ms, 90min, hundred_years, hundred_years - 1ms};
    for (const auto d : cases) {
        SCOPED_TRACE(d.count());
        const auto back = tpt::duration::parse(tpt::duration::format(d));
        ASSERT_TRUE(back.has_value()) << back.error().message;
        EXPECT_EQ(*back, d);
    }
}

}  // namespace
