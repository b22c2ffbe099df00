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

spdlog::level::level_enum to_spdlog(LogLevel l) noexcept {
    switch (l) {
        case LogLevel::trace:
            return spdlog::level::trace;
        case LogLevel::debug:
            return spdlog::level::debug;
        case LogLevel::info:
            return spdlog::level::info;
        case LogLevel::warn:
            return spdlog::level::warn;
        case LogLevel::error:
            return spdlog::level::err;
        case LogLevel::off:
            return spdlog::level::off;
    }
    return spdlog::level::info;
}

std::string_view level_name(spdlog::level::level_enum l) noexcept {
    switch (l) {
        case spdlog::level::trace:
            return "trace";
        case spdlog::level::debug:
            return "debug";
        case spdlog::level::info:
            return "info";
        case spdlog::level::warn:
            return "warn";
        case spdlog::level::err:
            return "error";
        case spdlog::level::critical:
            return "critical";
        default:
            return "off";
    }
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

// JSON string body (RFC 8259 §7). Control bytes (C0, DEL) and C1 code points become \u00XX;
// bytes that are not UTF-8 become U+FFFD, so the line always parses.
void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            char32_t cp = 0;
            const std::size_t len = utf8_sequence(s, i, cp);
            if (len == 0) {
                out += "\\ufffd";
                ++i;
            } else if (cp < 0xA0) {
                out += "\\u00";
                append_hex2(out, static_cast<unsigned>(cp));
                i += len;
            } else {
                out.append(s.substr(i, len));
                i += len;
            }
            continue;
        }
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    out += "\\u00";
                    append_hex2(out, c);
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
    out += '"';
}

// txt escaping: \" \\ \n \r \t, other control bytes and non-UTF-8 bytes as \xHH, C1 code
// points as \u00XX. Returns whether anything was escaped.
bool append_txt_escaped(std::string& out, std::string_view s) {
    bool escaped = false;
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            char32_t cp = 0;
            const std::size_t len = utf8_sequence(s, i, cp);
            if (len == 0) {
                out += "\\x";
                append_hex2(out, c);
                escaped = true;
                ++i;
            } else if (cp < 0xA0) {
                out += "\\u00";
                append_hex2(out, static_cast<unsigned>(cp));
                escaped = true;
                i += len;
            } else {
                out.append(s.substr(i, len));
                i += len;
            }
            continue;
        }
        switch (c) {
            case '"':
                out += "\\\"";
                escaped = true;
                break;
            case '\\':
                out += "\\\\";
                escaped = true;
                break;
            case '\n':
                out += "\\n";
                escaped = true;
                break;
            case '\r':
                out += "\\r";
                escaped = true;
                break;
            case '\t':
                out += "\\t";
                escaped = true;
                break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    out += "\\x";
                    append_hex2(out, c);
                    escaped = true;
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
    return escaped;
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

void format_line(std::string& out, const spdlog::details::log_msg& msg, LogFormat format,
                 const std::vector<Field>* fields) {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    if (format == LogFormat::json) {
        out += "{\"ts\":\"";
        append_timestamp(out, msg.time);
        out += "\",\"level\":\"";
        out += level_name(msg.level);
        out += "\",\"msg\":";
        append_json_string(out, text);
        if (fields != nullptr) {
            for (const Field& f : *fields) {
                out += ',';
                append_json_string(out, f.key);
                out += ':';
                if (f.number) {
                    out += f.value;
                } else {
                    append_json_string(out, f.value);
                }
            }
        }
        out += '}';
        return;
    }
    append_timestamp(out, msg.time);
    out += ' ';
    out += level_name(msg.level);
    out += ' ';
    append_txt_escaped(out, text);
    if (fields != nullptr) {
        for (const Field& f : *fields) {
            out += ' ';
            append_txt_escaped(out, f.key);
            out += '=';
            append_txt_value(out, f.value);
        }
    }
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
