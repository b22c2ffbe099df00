// http_head: an incremental HTTP/1.x request-head reader on top of Beast's request_parser, and
// the routing name of a request (SPEC §12).
//
// The answer depends only on the bytes, never on how they were split: bytes are buffered
// until the first CRLFCRLF within `limit` bytes, and only then handed to Beast in one put()
// holding exactly the head (Beast, fed in pieces, reports some errors only once the head has
// ended and does not count the request line in its limit; see connect_head.cpp). What Beast
// cannot say early is whether a partial request line is already wrong: a client that speaks
// another protocol (or sends binary noise) would then hold its connection until the limit or
// the timeout. The request-line check below says it at the first bad byte; it looks only at
// bytes within the limit and never changes its mind, so it keeps the split property.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>

#include <tpt/address.hpp>
#include <tpt/hostname.hpp>
#include <tpt/http_head.hpp>

namespace tpt::http_head {
namespace {

namespace http = boost::beast::http;

// RFC 9112 §2.3, and Beast takes only these two: "HTTP/1.0" or "HTTP/1.1", then CRLF.
constexpr std::string_view version_and_eol = "HTTP/1.?\r\n";
constexpr std::size_t minor_digit = 7;

// Beast's request-target bytes (its is_pathchar): no control byte, no SP, no DEL.
constexpr bool is_target_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7F;
}

bool is_version_char(std::size_t at, char c) noexcept {
    if (at == minor_digit) {
        return c == '0' || c == '1';
    }
    return c == version_and_eol[at];
}

// RFC 3986 §3.2.3: port = *DIGIT; here 1..65535, as a connection can only go to those.
std::optional<std::uint16_t> parse_port(std::string_view digits) {
    if (digits.empty() || digits.size() > 5) {
        return std::nullopt;
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc{} || end != digits.data() + digits.size() || value == 0 ||
        value > std::numeric_limits<std::uint16_t>::max()) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

// RFC 3986 §3.2.2 host [ ":" port ] as a routing name (see RequestHeadParser in the header):
// "[v6]" for an IPv6 literal (no zone id: inet_pton refuses one), else a name validated like
// an SNI after losing one trailing dot. Userinfo fails as a host ('@' is no name byte).
std::optional<Authority> parse_authority(std::string_view text, bool port_required) {
    Authority a;
    std::string_view host;
    std::string_view rest;
    if (text.starts_with('[')) {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) {
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        rest = text.substr(close + 1);
        // An IPv4 literal has no ':', so this takes IPv6 only.
        if (host.find(':') == std::string_view::npos || !address::is_ip_literal(host)) {
            return std::nullopt;
        }
        a.kind = HostKind::ipv6;
    } else {
        const std::size_t colon = text.find(':');
        host = text.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view{} : text.substr(colon);
        if (host.ends_with('.')) {
            host.remove_suffix(1);
        }
        if (!hostname::is_valid(host)) {
            return std::nullopt;
        }
        a.kind = address::is_ip_literal(host) ? HostKind::ipv4 : HostKind::name;
    }
    if (!rest.empty()) {
        if (!rest.starts_with(':')) {
            return std::nullopt;
        }
        a.port = parse_port(rest.substr(1));
        if (!a.port) {
            return std::nullopt;
        }
    }
    if (port_required && !a.port) {
        return std::nullopt;
    }
    a.host = hostname::to_lower(host);
    return a;
}

// RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ':'.
std::size_t scheme_size(std::string_view target) noexcept {
    const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (target.empty() || !alpha(target[0])) {
        return 0;
    }
    std::size_t i = 1;
    while (i < target.size() && (alpha(target[i]) || (target[i] >= '0' && target[i] <= '9') ||
                                 target[i] == '+' || target[i] == '-' || target[i] == '.')) {
        ++i;
    }
    return i < target.size() && target[i] == ':' ? i : 0;
}

TargetForm form_of(std::string_view target) noexcept {
    if (target == "*") {
        return TargetForm::asterisk;
    }
    if (target.starts_with('/')) {
        return TargetForm::origin;
    }
    return scheme_size(target) != 0 ? TargetForm::absolute : TargetForm::other;
}

// RFC 3986 §3: absolute-URI = scheme ":" "//" authority path-abempty [ "?" query ]. No
// "//" means no authority, hence no name; userinfo is an error (RFC 9110 §4.2.4).
std::optional<Authority> absolute_form_authority(std::string_view target) {
    const std::string_view after = target.substr(scheme_size(target) + 1);
    if (!after.starts_with("//")) {
        return std::nullopt;
    }
    const std::string_view authority = after.substr(2, after.find_first_of("/?#", 2) - 2);
    if (authority.find('@') != std::string_view::npos) {
        return std::nullopt;
    }
    return parse_authority(authority, false);
}

// RFC 9112 §3.2: one Host field; none or several (or an invalid value) give no name.
std::optional<Authority> host_field_authority(const http::request<http::empty_body>& req) {
    if (req.count(http::field::host) != 1) {
        return std::nullopt;
    }
    return parse_authority(req[http::field::host], false);
}

// RFC 9112 §5.2: obs-fold is a CRLF followed by SP or HTAB inside the head.
bool has_obs_fold(std::string_view head) noexcept {
    return head.find("\r\n ") != std::string_view::npos ||
           head.find("\r\n\t") != std::string_view::npos;
}

}  // namespace

// In the order of the enumeration.
constexpr std::array<std::string_view, 4> status_names{"need_more", "done", "malformed",
                                                       "too_large"};

std::string_view to_string(HeadStatus s) noexcept {
    return enum_name(status_names, s, "?");
}

RequestHeadParser::RequestHeadParser(std::size_t limit) : limit_(limit) {}

// The request line's state machine: method SP target SP "HTTP/1.x" CRLF (RFC 9112 §3), over
// the bytes not checked yet. True at the first byte that no request line can have there.
bool RequestHeadParser::request_line_fails(std::string_view window) {
    for (; line_checked_ < window.size() && line_ != LineState::done; ++line_checked_) {
        const char c = window[line_checked_];
        switch (line_) {
            case LineState::method:
            case LineState::target: {
                if (c == ' ' && part_ > 0) {
                    line_ = line_ == LineState::method ? LineState::target : LineState::version;
                    part_ = 0;
                } else if (line_ == LineState::method ? hostname::is_token_char(c)
                                                      : is_target_char(c)) {
                    ++part_;
                } else {
                    return true;
                }
                break;
            }
            case LineState::version:
                if (!is_version_char(part_, c)) {
                    return true;
                }
                if (++part_ == version_and_eol.size()) {
                    line_ = LineState::done;
                }
                break;
            case LineState::done:
                break;
        }
    }
    return false;
}

HeadStatus RequestHeadParser::feed(std::span<const std::uint8_t> bytes) {
    if (status_ != HeadStatus::need_more) {
        return status_;
    }
    // The head must end within limit_ bytes, so no more are kept; what a final feed brings
    // beyond them is leftover or never looked at.
    const std::size_t take = std::min(bytes.size(), limit_ - buf_.size());
    buf_.append(reinterpret_cast<const char*>(bytes.data()), take);
    if (request_line_fails(buf_)) {
        buf_ = std::string();
        return status_ = HeadStatus::malformed;
    }
    const std::size_t eoh = std::string_view(buf_).find(end_of_head, searched_);
    if (eoh == std::string_view::npos) {
        if (buf_.size() >= limit_) {
            buf_ = std::string();
            return status_ = HeadStatus::too_large;
        }
        searched_ = buf_.size() < 3 ? 0 : buf_.size() - 3;
        return status_;
    }
    const std::size_t head_size = eoh + end_of_head.size();
    status_ = finish(std::string_view(buf_).substr(0, head_size), bytes.subspan(take));
    buf_ = std::string();
    return status_;
}

HeadStatus RequestHeadParser::finish(std::string_view head, std::span<const std::uint8_t> rest) {
    if (has_obs_fold(head)) {
        return HeadStatus::malformed;
    }
    http::request_parser<http::empty_body> parser;
    // Only the head is parsed: a body (Content-Length, chunked) is the upstream's business and
    // arrives as leftover.
    parser.skip(true);
    // The whole head is in hand and within limit_; Beast's own limit (8 KiB) must not cut it.
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(head.size(), std::numeric_limits<std::uint32_t>::max())));
    boost::beast::error_code ec;
    const std::size_t used = parser.put(boost::asio::const_buffer(head.data(), head.size()), ec);
    if (ec || !parser.is_done() || used != head.size()) {
        return HeadStatus::malformed;
    }
    const auto& req = parser.get();
    RequestHead h;
    h.method = std::string(req.method_string());
    h.target = std::string(req.target());
    h.version = req.version();
    h.proxy_authorization = req.count(http::field::proxy_authorization) != 0;
    if (h.is_connect()) {
        h.form = TargetForm::authority;
        h.authority = parse_authority(h.target, true);
        if (!h.authority) {
            return HeadStatus::malformed;  // RFC 9110 §9.3.6: reject an invalid CONNECT target
        }
    } else {
        h.form = form_of(h.target);
        if (h.form == TargetForm::absolute) {
            h.authority = absolute_form_authority(h.target);
        } else if (h.form == TargetForm::origin || h.form == TargetForm::asterisk) {
            h.authority = host_field_authority(req);
        }
    }
    head_ = std::move(h);
    const std::string_view after = std::string_view(buf_).substr(head.size());
    leftover_.assign(after.begin(), after.end());
    leftover_.insert(leftover_.end(), rest.begin(), rest.end());
    return HeadStatus::done;
}

}  // namespace tpt::http_head
