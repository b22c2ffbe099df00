// log: one spdlog logger (the default one) with a sink of ours that renders each record as a
// txt or json line (SPEC §5). Lines are built by the sink, not by an spdlog pattern, so that
// structured fields and raw spdlog::info() calls from anywhere come out in the same format
// and every byte that reaches stderr has been escaped.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <tpt/log.hpp>
#include <tpt/outcome.hpp>

namespace tpt::log {
namespace {

using config::LogFormat;
using config::LogLevel;

struct Field {
    std::string_view key;
    std::string_view value;
    bool number = false;  // json: written bare (the value is a decimal we produced)
};

// The fields of the record being logged on this thread. The logger is synchronous, so the
// sink runs on the thread that called write() and sees them; a raw spdlog call sees none.
thread_local const std::vector<Field>* t_fields = nullptr;

class FieldsScope {
public:
    explicit FieldsScope(const std::vector<Field>& f) noexcept { t_fields = &f; }
    ~FieldsScope() { t_fields = nullptr; }
    FieldsScope(const FieldsScope&) = delete;
    FieldsScope& operator=(const FieldsScope&) = delete;
};

// spdlog's level of each LogLevel, in the order of LogLevel.
constexpr std::array<spdlog::level::level_enum, 6> spdlog_levels{
    spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
    spdlog::level::warn,  spdlog::level::err,   spdlog::level::off};

spdlog::level::level_enum to_spdlog(LogLevel l) noexcept {
    const auto i = static_cast<std::size_t>(l);
    return i < spdlog_levels.size() ? spdlog_levels[i] : spdlog::level::info;
}

// The names of spdlog's levels, in their order (trace .. off); raw spdlog calls may use
// `critical`, which tpt's own lines never do.
std::string_view level_name(spdlog::level::level_enum l) noexcept {
    static constexpr std::array<std::string_view, 7> names{"trace", "debug",    "info", "warn",
                                                           "error", "critical", "off"};
    return enum_name(names, l, "off");
}

// Length of the well-formed UTF-8 sequence starting at s[i] (2..4), or 0 when the bytes there
// are not one (RFC 3629 §4: no overlongs, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t& cp) noexcept {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b0 = byte(i);
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        lo = b0 == 0xE0 ? 0xA0 : 0x80;
        hi = b0 == 0xED ? 0x9F : 0xBF;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        lo = b0 == 0xF0 ? 0x90 : 0x80;
        hi = b0 == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (s.size() - i < len) {
        return 0;
    }
    const unsigned char b1 = byte(i + 1);
    if (b1 < lo || b1 > hi) {
        return 0;
    }
    cp = static_cast<char32_t>(b0 & (0xFF >> (len + 1)));
    cp = (cp << 6) | (b1 & 0x3Fu);
    for (std::size_t k = 2; k < len; ++k) {
        const unsigned char b = byte(i + k);
        if (b < 0x80 || b > 0xBF) {
            return 0;
        }
        cp = (cp << 6) | (b & 0x3Fu);
    }
    return len;
}

constexpr std::string_view hex_digits = "0123456789abcdef";

void append_hex2(std::string& out, unsigned v) {
    out += hex_digits[(v >> 4) & 0xF];
    out += hex_digits[v & 0xF];
}

// The two ways a value is escaped. Both: \" \\ \n \r \t, C1 code points as \u00XX. Other
// control bytes (C0, DEL): \u00XX in JSON, \xHH in txt. Bytes that are not UTF-8: U+FFFD in
// JSON (RFC 8259 §8.1: the line must parse), \xHH in txt (the reader sees what came).
enum class Escape : std::uint8_t { json, txt };

// The escape of one byte below 0x80, or an empty view when it stands for itself.
std::string_view short_escape(unsigned char c) {
    switch (c) {
        case '"':
            return "\\\"";
        case '\\':
            return "\\\\";
        case '\n':
            return "\\n";
        case '\r':
            return "\\r";
        case '\t':
            return "\\t";
        default:
            return {};
    }
}

// Appends `s` escaped as `style` says; returns whether anything was escaped.
bool append_escaped(std::string& out, std::string_view s, Escape style) {
    const std::string_view hex_prefix = style == Escape::json ? "\\u00" : "\\x";
    bool escaped = false;
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        char32_t cp = c;
        const std::size_t len = c >= 0x80 ? utf8_sequence(s, i, cp) : 1;
        if (len == 0) {
            out += style == Escape::json ? std::string_view("\\ufffd") : hex_prefix;
            if (style == Escape::txt) {
                append_hex2(out, c);
            }
            escaped = true;
            ++i;
            continue;
        }
        if (const auto e = short_escape(c); c < 0x80 && !e.empty()) {
            out += e;
            escaped = true;
        } else if (cp >= 0x80 && cp < 0xA0) {
            out += "\\u00";
            append_hex2(out, static_cast<unsigned>(cp));
            escaped = true;
        } else if (cp < 0x20 || cp == 0x7F) {
            out += hex_prefix;
            append_hex2(out, static_cast<unsigned>(cp));
            escaped = true;
        } else {
            out.append(s.substr(i, len));
        }
        i += len;
    }
    return escaped;
}

// JSON string (RFC 8259 §7), quoted.
void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    append_escaped(out, s, Escape::json);
    out += '"';
}

bool append_txt_escaped(std::string& out, std::string_view s) {
    return append_escaped(out, s, Escape::txt);
}

// key=value, or key="va lue" when the value is empty or holds a space, '=', or anything that
// had to be escaped: a reader splitting on spaces and '=' always gets the fields back.
void append_txt_value(std::string& out, std::string_view v) {
    std::string body;
    body.reserve(v.size());
    const bool escaped = append_txt_escaped(body, v);
    if (escaped || v.empty() || v.find_first_of(" =") != std::string_view::npos) {
        out += '"';
        out += body;
        out += '"';
    } else {
        out += body;
    }
}

// RFC 3339 UTC with milliseconds: 2026-11-25T10:00:00.123Z.
void append_timestamp(std::string& out, std::chrono::system_clock::time_point tp) {
    using namespace std::chrono;
    const auto secs = floor<seconds>(tp);
    const auto ms = duration_cast<milliseconds>(tp - secs).count();
    const std::time_t t = system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::array<char, 40> buf{};
    const int n = std::snprintf(buf.data(), buf.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                                tm.tm_sec, static_cast<int>(ms));
    if (n > 0) {
        out.append(buf.data(), std::min(static_cast<std::size_t>(n), buf.size() - 1));
    }
}

// json: {"ts":"…","level":"…","msg":"…","key":"value",…}; txt: `ts level msg key=value …`.
void format_line(std::string& out, const spdlog::details::log_msg& msg, LogFormat format,
                 const std::vector<Field>* fields) {
    const bool json = format == LogFormat::json;
    const std::string_view text(msg.payload.data(), msg.payload.size());
    out += json ? R"({"ts":")" : "";
    append_timestamp(out, msg.time);
    out += json ? R"(","level":")" : " ";
    out += level_name(msg.level);
    out += json ? R"(","msg":)" : " ";
    json ? append_json_string(out, text) : void(append_txt_escaped(out, text));
    static const std::vector<Field> none;
    for (const Field& f : fields != nullptr ? *fields : none) {
        out += json ? ',' : ' ';
        json ? append_json_string(out, f.key) : void(append_txt_escaped(out, f.key));
        out += json ? ':' : '=';
        if (!json) {
            append_txt_value(out, f.value);
        } else if (f.number) {
            out += f.value;
        } else {
            append_json_string(out, f.value);
        }
    }
    out += json ? "}" : "";
}

// Renders lines itself (any formatter set on it is ignored) and writes each with one fwrite
// to unbuffered stderr, under base_sink's mutex, so lines from threads never interleave.
class LineSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    void set_format(LogFormat f) noexcept { format_.store(f, std::memory_order_relaxed); }
    LogFormat format() const noexcept { return format_.load(std::memory_order_relaxed); }

    void set_hook(std::function<void(std::string_view)> hook) {
        const std::lock_guard lock(mutex_);
        hook_ = std::move(hook);
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        line_.clear();
        format_line(line_, msg, format(), t_fields);
        if (hook_) {
            hook_(line_);
            return;
        }
        line_ += '\n';
        std::fwrite(line_.data(), 1, line_.size(), stderr);
    }
    void flush_() override { std::fflush(stderr); }

private:
    std::atomic<LogFormat> format_{LogFormat::text};
    std::function<void(std::string_view)> hook_;
    std::string line_;
};

// Built on first use and never replaced: configure() only changes the level and the format,
// so threads that are logging during a reload never see a logger being swapped out.
struct State {
    std::shared_ptr<LineSink> sink = std::make_shared<LineSink>();
    std::shared_ptr<spdlog::logger> logger = std::make_shared<spdlog::logger>("tpt", sink);

    State() {
        logger->set_level(spdlog::level::info);
        spdlog::set_default_logger(logger);
    }
};

State& state() {
    static State s;
    return s;
}

void log_fields(LogLevel level, std::string_view msg, const std::vector<Field>& fields) {
    const FieldsScope scope(fields);
    state().logger->log(to_spdlog(level), spdlog::string_view_t(msg.data(), msg.size()));
}

}  // namespace

void configure(LogLevel level, LogFormat format) {
    State& s = state();
    s.sink->set_format(format);
    s.logger->set_level(to_spdlog(level));
}

bool enabled(LogLevel level) noexcept {
    // spdlog's should_log(off) is true at every level but off: `off` is never a message level.
    return level != LogLevel::off && state().logger->should_log(to_spdlog(level));
}

void write(LogLevel level, std::string_view msg, const Fields& fields) {
    if (!enabled(level)) {
        return;
    }
    std::vector<Field> view;
    view.reserve(fields.size());
    for (const auto& [key, value] : fields) {
        view.push_back(Field{key, value, false});
    }
    log_fields(level, msg, view);
}

void access(const AccessRecord& r) {
    if (!enabled(LogLevel::info)) {
        return;
    }
    const std::string up = std::to_string(r.bytes_to_upstream);
    const std::string down = std::to_string(r.bytes_to_client);
    const std::string ms = std::to_string(r.duration_ms);
    const std::vector<Field> fields{
        {"server", r.server},
        {"listen", r.listen},
        {"client", r.client},
        {"sni", r.sni},
        {"route", r.route},
        {"upstream", r.upstream},
        {"connect_target", r.connect_target},
        {"original_dst", r.original_dst},
        {"bytes_to_upstream", up, true},
        {"bytes_to_client", down, true},
        {"duration_ms", ms, true},
        {"result", r.result},
    };
    log_fields(LogLevel::info, "access", fields);
}

void set_line_hook_for_tests(std::function<void(std::string_view)> hook) {
    state().sink->set_hook(std::move(hook));
}

}  // namespace tpt::log
