// Tests for tpt::log: txt and json line formats, escaping, level filtering, the access line.
#include <chrono>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <tpt/log.hpp>

namespace {

using tpt::config::LogFormat;
using tpt::config::LogLevel;
namespace json = boost::json;

class Log : public ::testing::Test {
protected:
    void SetUp() override {
        tpt::log::configure(LogLevel::info, LogFormat::text);
        tpt::log::set_line_hook_for_tests([this](std::string_view l) { lines_.emplace_back(l); });
    }
    void TearDown() override {
        tpt::log::set_line_hook_for_tests({});
        tpt::log::configure(LogLevel::info, LogFormat::text);
    }

    // The single line logged so far, or a test failure.
    std::string only_line() {
        EXPECT_EQ(lines_.size(), 1u);
        return lines_.empty() ? std::string{} : lines_.front();
    }
    // The part of a txt line after "TIMESTAMP LEVEL ".
    static std::string txt_tail(const std::string& line) {
        const auto first = line.find(' ');
        const auto second = line.find(' ', first + 1);
        return second == std::string::npos ? std::string{} : line.substr(second + 1);
    }
    static json::object parse_object(const std::string& line) {
        boost::system::error_code ec;
        json::value v = json::parse(line, ec);
        EXPECT_FALSE(ec) << ec.message() << " in: " << line;
        EXPECT_TRUE(v.is_object()) << line;
        return v.is_object() ? v.as_object() : json::object{};
    }

    std::vector<std::string> lines_;
};

// Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS.mmmZ", or -1 when it does not parse.
std::time_t parse_ts(const std::string& ts) {
    std::tm tm{};
    int ms = 0;
    if (std::sscanf(ts.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

void expect_ts_is_now(const std::string& ts) {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    const std::time_t t = parse_ts(ts);
    ASSERT_NE(t, -1) << ts;
    EXPECT_LE(t, now) << ts;
    EXPECT_GE(t, now - 60) << ts;
}

// "2026-11-25T10:00:00.123Z": RFC 3339, UTC, milliseconds. (No std::regex: GCC 12 warns
// inside it at -O2.)
bool is_rfc3339_ms(std::string_view ts) {
    constexpr std::string_view shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (ts.size() != shape.size()) {
        return false;
    }
    for (std::size_t i = 0; i < ts.size(); ++i) {
        const bool ok = shape[i] == 'd' ? (ts[i] >= '0' && ts[i] <= '9') : ts[i] == shape[i];
        if (!ok) {
            return false;
        }
    }
    return true;
}

TEST_F(Log, TxtLineHasUtcTimestampLevelMessageAndFields) {
    tpt::log::info("hello", {{"key", "value"}, {"key2", "quoted value"}});
    const std::string line = only_line();
    const std::string ts = line.substr(0, line.find(' '));
    EXPECT_TRUE(is_rfc3339_ms(ts)) << line;
    expect_ts_is_now(ts);
    EXPECT_EQ(line.substr(ts.size()), R"( info hello key=value key2="quoted value")");
}

TEST_F(Log, TxtQuotesEmptyValuesAndValuesWithEqualsSign) {
    tpt::log::info("m", {{"a", ""}, {"b", "x=y"}, {"c", "plain"}});
    EXPECT_EQ(txt_tail(only_line()), R"(m a="" b="x=y" c=plain)");
}

TEST_F(Log, TxtEscapesControlBytesQuotesAndBackslashes) {
    constexpr char raw[] = "a\r\nb\"c\\d\0e\tf\x1b[31m\x7f";
    const std::string nasty(raw, sizeof raw - 1);
    tpt::log::warn("m", {{"v", nasty}});
    const std::string line = only_line();
    EXPECT_EQ(txt_tail(line), R"(m v="a\r\nb\"c\\d\x00e\tf\x1b[31m\x7f")");
    for (char c : line) {
        const auto u = static_cast<unsigned char>(c);
        EXPECT_TRUE(u >= 0x20 && u != 0x7f) << "raw control byte " << int{u} << " in " << line;
    }
}

TEST_F(Log, TxtEscapesInvalidUtf8AndC1ButKeepsValidUtf8) {
    tpt::log::info("m", {{"bad", "\xff\xc3"}, {"c1", "\xc2\x9b"}, {"ok", "caf\xc3\xa9"}});
    EXPECT_EQ(txt_tail(only_line()), "m bad=\"\\xff\\xc3\" c1=\"\\u009b\" ok=caf\xc3\xa9");
}

TEST_F(Log, TxtEscapesTheMessageToo) {
    tpt::log::error("line1\nline2\r\0x", {});
    EXPECT_EQ(txt_tail(only_line()), R"(line1\nline2\r)");
    lines_.clear();
    tpt::log::error(std::string_view("a\nb\0c", 5));
    EXPECT_EQ(txt_tail(only_line()), R"(a\nb\x00c)");
}

TEST_F(Log, LevelNamesInTxt) {
    tpt::log::configure(LogLevel::trace, LogFormat::text);
    tpt::log::write(LogLevel::trace, "t");
    tpt::log::debug("d");
    tpt::log::info("i");
    tpt::log::warn("w");
    tpt::log::error("e");
    ASSERT_EQ(lines_.size(), 5u);
    const std::vector<std::string> want{"trace t", "debug d", "info i", "warn w", "error e"};
    for (std::size_t i = 0; i < want.size(); ++i) {
        const std::string& l = lines_[i];
        EXPECT_EQ(l.substr(l.find(' ') + 1), want[i]);
    }
}

TEST_F(Log, JsonLineIsOneObjectWithTsLevelMsgThenFieldsInOrder) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    tpt::log::info("hello", {{"key", "value"}, {"key2", "quoted value"}});
    const std::string line = only_line();
    EXPECT_EQ(line.find('\n'), std::string::npos);
    const json::object o = parse_object(line);
    ASSERT_EQ(o.size(), 5u);
    std::vector<std::string> keys;
    for (const auto& kv : o) {
        keys.emplace_back(kv.key());
    }
    EXPECT_EQ(keys, (std::vector<std::string>{"ts", "level", "msg", "key", "key2"}));
    const std::string ts(o.at("ts").as_string());
    EXPECT_TRUE(is_rfc3339_ms(ts)) << ts;
    expect_ts_is_now(ts);
    EXPECT_EQ(o.at("level").as_string(), "info");
    EXPECT_EQ(o.at("msg").as_string(), "hello");
    EXPECT_EQ(o.at("key").as_string(), "value");
    EXPECT_EQ(o.at("key2").as_string(), "quoted value");
}

TEST_F(Log, JsonEscapesEveryControlByteAndRoundTrips) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    std::string all;
    for (int c = 0; c < 0x20; ++c) {
        all += static_cast<char>(c);
    }
    all += "\"\\/\x7f end";
    tpt::log::info("m\r\n\"", {{"v", all}, {"k\n", "x"}});
    const std::string line = only_line();
    for (char c : line) {
        const auto u = static_cast<unsigned char>(c);
        EXPECT_TRUE(u >= 0x20 && u != 0x7f) << "raw control byte " << int{u};
    }
    EXPECT_NE(line.find(R"(\u0000)"), std::string::npos);
    EXPECT_NE(line.find(R"(\r\n)"), std::string::npos);
    const json::object o = parse_object(line);
    EXPECT_EQ(o.at("msg").as_string(), "m\r\n\"");
    EXPECT_EQ(std::string(o.at("v").as_string()), all);
    EXPECT_EQ(o.at("k\n").as_string(), "x");
}

TEST_F(Log, JsonReplacesInvalidUtf8SoTheLineStillParses) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    // Lone continuation, truncated sequence, overlong '/', a UTF-16 surrogate, then valid é.
    tpt::log::info("m", {{"v", "\x80|\xe2\x82|\xc0\xaf|\xed\xa0\x80|\xc3\xa9"}});
    const json::object o = parse_object(only_line());
    const std::string r = "\xef\xbf\xbd";
    EXPECT_EQ(std::string(o.at("v").as_string()),
              r + "|" + r + r + "|" + r + r + "|" + r + r + r + "|\xc3\xa9");
}

TEST_F(Log, LevelFilteringDropsLinesBelowTheConfiguredLevel) {
    tpt::log::configure(LogLevel::warn, LogFormat::text);
    EXPECT_FALSE(tpt::log::enabled(LogLevel::info));
    EXPECT_TRUE(tpt::log::enabled(LogLevel::warn));
    EXPECT_TRUE(tpt::log::enabled(LogLevel::error));
    tpt::log::debug("d");
    tpt::log::info("i");
    tpt::log::warn("w");
    tpt::log::error("e");
    tpt::log::access({});
    ASSERT_EQ(lines_.size(), 2u);
    EXPECT_EQ(txt_tail(lines_[0]), "w");
    EXPECT_EQ(txt_tail(lines_[1]), "e");

    tpt::log::configure(LogLevel::debug, LogFormat::text);
    EXPECT_TRUE(tpt::log::enabled(LogLevel::debug));
    EXPECT_FALSE(tpt::log::enabled(LogLevel::trace));
    tpt::log::write(LogLevel::trace, "t");
    tpt::log::debug("d2");
    ASSERT_EQ(lines_.size(), 3u);
    EXPECT_EQ(txt_tail(lines_[2]), "d2");
}

TEST_F(Log, OffDisablesEveryLevelIncludingRawSpdlogCalls) {
    tpt::log::configure(LogLevel::off, LogFormat::json);
    for (LogLevel l : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn,
                       LogLevel::error, LogLevel::off}) {
        EXPECT_FALSE(tpt::log::enabled(l));
        tpt::log::write(l, "x", {{"k", "v"}});
    }
    tpt::log::access({});
    spdlog::critical("raw");
    EXPECT_TRUE(lines_.empty());
}

TEST_F(Log, OffIsNeverAMessageLevel) {
    tpt::log::configure(LogLevel::trace, LogFormat::text);
    EXPECT_FALSE(tpt::log::enabled(LogLevel::off));
    tpt::log::write(LogLevel::off, "x");
    EXPECT_TRUE(lines_.empty());
}

tpt::log::AccessRecord sample_access() {
    tpt::log::AccessRecord r;
    r.server = "proxy";
    r.listen = "0.0.0.0:8443";
    r.client = "127.0.0.1:40000";
    r.sni = "a.example.com";
    r.route = "*.example.com";
    r.upstream = "corp_proxy";
    r.connect_target = "a.example.com:443";
    r.bytes_to_upstream = 517;
    r.bytes_to_client = 18446744073709551615ull;
    r.duration_ms = 1234;
    r.result = "ok";
    return r;
}

TEST_F(Log, AccessTxtLineHasEverySpecField) {
    tpt::log::access(sample_access());
    const std::string line = only_line();
    EXPECT_EQ(line.substr(line.find(' ') + 1),
              "info access server=proxy listen=0.0.0.0:8443 client=127.0.0.1:40000 "
              "sni=a.example.com route=*.example.com upstream=corp_proxy "
              "connect_target=a.example.com:443 original_dst=\"\" bytes_to_upstream=517 "
              "bytes_to_client=18446744073709551615 duration_ms=1234 result=ok");
}

TEST_F(Log, AccessTxtQuotesEmptySni) {
    tpt::log::AccessRecord r = sample_access();
    r.sni.clear();
    r.connect_target.clear();
    r.result = "proxy_status";
    tpt::log::access(r);
    const std::string tail = txt_tail(only_line());
    EXPECT_NE(tail.find(R"( sni="" )"), std::string::npos) << tail;
    EXPECT_NE(tail.find(R"( connect_target="" )"), std::string::npos) << tail;
    EXPECT_NE(tail.find(" result=proxy_status"), std::string::npos) << tail;
}

TEST_F(Log, AccessJsonHasNumbersForBytesAndDuration) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    tpt::log::access(sample_access());
    const json::object o = parse_object(only_line());
    std::vector<std::string> keys;
    for (const auto& kv : o) {
        keys.emplace_back(kv.key());
    }
    EXPECT_EQ(keys, (std::vector<std::string>{"ts", "level", "msg", "server", "listen", "client",
                                              "sni", "route", "upstream", "connect_target",
                                              "original_dst", "bytes_to_upstream",
                                              "bytes_to_client", "duration_ms", "result"}));
    EXPECT_EQ(o.at("level").as_string(), "info");
    EXPECT_EQ(o.at("msg").as_string(), "access");
    EXPECT_EQ(o.at("server").as_string(), "proxy");
    EXPECT_EQ(o.at("listen").as_string(), "0.0.0.0:8443");
    EXPECT_EQ(o.at("client").as_string(), "127.0.0.1:40000");
    EXPECT_EQ(o.at("sni").as_string(), "a.example.com");
    EXPECT_EQ(o.at("route").as_string(), "*.example.com");
    EXPECT_EQ(o.at("upstream").as_string(), "corp_proxy");
    EXPECT_EQ(o.at("connect_target").as_string(), "a.example.com:443");
    ASSERT_TRUE(o.at("bytes_to_upstream").is_int64());
    EXPECT_EQ(o.at("bytes_to_upstream").as_int64(), 517);
    ASSERT_TRUE(o.at("bytes_to_client").is_uint64());
    EXPECT_EQ(o.at("bytes_to_client").as_uint64(), 18446744073709551615ull);
    ASSERT_TRUE(o.at("duration_ms").is_int64());
    EXPECT_EQ(o.at("duration_ms").as_int64(), 1234);
    EXPECT_EQ(o.at("result").as_string(), "ok");
}

TEST_F(Log, RawSpdlogCallsUseTheSameFormat) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    spdlog::warn("raw {} \"{}\"", 42, "q");
    const json::object o = parse_object(only_line());
    EXPECT_EQ(o.size(), 3u);
    EXPECT_EQ(o.at("level").as_string(), "warn");
    EXPECT_EQ(o.at("msg").as_string(), "raw 42 \"q\"");

    tpt::log::configure(LogLevel::info, LogFormat::text);
    spdlog::info("plain {}", 1);
    ASSERT_EQ(lines_.size(), 2u);
    EXPECT_EQ(txt_tail(lines_[1]), "plain 1");
}

TEST_F(Log, WithoutHookLinesGoToStderrOnePerLine) {
    tpt::log::set_line_hook_for_tests({});
    tpt::log::configure(LogLevel::info, LogFormat::json);
    ::testing::internal::CaptureStderr();
    tpt::log::info("to stderr", {{"k", "a\nb"}});
    tpt::log::debug("filtered");
    const std::string out = ::testing::internal::GetCapturedStderr();
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out.back(), '\n');
    EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
    const json::object o = parse_object(out.substr(0, out.size() - 1));
    EXPECT_EQ(o.at("msg").as_string(), "to stderr");
    EXPECT_EQ(o.at("k").as_string(), "a\nb");
    EXPECT_TRUE(lines_.empty());
}

TEST_F(Log, ConcurrentWritersProduceWholeLines) {
    tpt::log::configure(LogLevel::info, LogFormat::json);
    constexpr int threads = 4;
    constexpr int per_thread = 200;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([t] {
            for (int i = 0; i < per_thread; ++i) {
                tpt::log::info("concurrent",
                               {{"thread", std::to_string(t)}, {"i", std::to_string(i)}});
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    ASSERT_EQ(lines_.size(), static_cast<std::size_t>(threads * per_thread));
    std::vector<int> next(threads, 0);
    for (const std::string& l : lines_) {
        const json::object o = parse_object(l);
        const int t = std::stoi(std::string(o.at("thread").as_string()));
        ASSERT_TRUE(t >= 0 && t < threads);
        // Each thread's lines arrive whole and in its own order.
        EXPECT_EQ(std::stoi(std::string(o.at("i").as_string())),
                  next[static_cast<std::size_t>(t)]++);
    }
}

TEST_F(Log, ReconfiguringWhileOthersLogGivesWholeLinesOfEitherFormat) {
    constexpr int lines_per_writer = 300;
    std::vector<std::thread> writers;
    for (int t = 0; t < 2; ++t) {
        writers.emplace_back([] {
            for (int i = 0; i < lines_per_writer; ++i) {
                tpt::log::info("reload race", {{"i", std::to_string(i)}});
            }
        });
    }
    for (int i = 0; i < 200; ++i) {
        tpt::log::configure(LogLevel::info, i % 2 == 0 ? LogFormat::json : LogFormat::text);
    }
    for (auto& th : writers) {
        th.join();
    }
    ASSERT_EQ(lines_.size(), 2u * lines_per_writer);
    for (const std::string& l : lines_) {
        if (l.front() == '{') {
            EXPECT_EQ(parse_object(l).at("msg").as_string(), "reload race");
        } else {
            EXPECT_EQ(txt_tail(l).rfind("reload race i=", 0), 0u) << l;
        }
    }
}

}  // namespace
