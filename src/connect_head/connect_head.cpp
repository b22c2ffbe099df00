// connect_head: the CONNECT request (RFC 9110 §9.3.6) and an incremental parser of the
// proxy's response head on top of Beast's response_parser.
//
// The answer depends only on the bytes, never on how they were split: bytes are buffered
// until the first CRLFCRLF within `limit` bytes, and only then handed to Beast in one put()
// holding exactly the candidate head. (Beast's put() is incremental too, but it reports some
// malformed fields at once in one piece and only after the end of the head when split, and
// its header limit does not count the start line once that has been consumed.)
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

// GCC 12 at -O2 warns inside Beast's parser (content_length_unchecked's boost::optional)
// about storage that is only read when engaged: a false positive in a system header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <tpt/connect_head.hpp>
#include <tpt/hostname.hpp>

namespace tpt::connect_head {
namespace {

namespace http = boost::beast::http;

// RFC 9112 §2.3: HTTP-version is case-sensitive; Beast only takes 1.0 and 1.1 anyway.
constexpr std::string_view version_prefix = "HTTP/1.";
// What we keep of peer-chosen text for logs: enough to read, bounded whatever the peer sends.
// "HTTP/1.1 200": a start line that stops after the status code.
constexpr std::size_t status_line_without_reason = 12;
constexpr std::size_t reason_offset = status_line_without_reason + 1;
constexpr std::size_t max_reason = 256;
constexpr std::size_t max_scheme = 64;

// Printable ASCII only: the reason phrase goes to logs, where control bytes must not go.
std::string sanitise_reason(std::string_view reason) {
    std::string out;
    const std::size_t n = std::min(reason.size(), max_reason);
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const char c = reason[i];
        out += (c >= 0x20 && c <= 0x7E) ? c : '?';
    }
    return out;
}

// RFC 9110 §11.6.1 / §11.3: challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ].
// Only the scheme is kept: the parameters (realm, nonce, ...) are the proxy's business.
std::string auth_scheme(std::string_view value) {
    std::size_t i = 0;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) {
        ++i;
    }
    std::size_t j = i;
    while (j < value.size() && j - i < max_scheme && hostname::is_token_char(value[j])) {
        ++j;
    }
    return std::string(value.substr(i, j - i));
}

}  // namespace

std::string build_request(std::string_view target, const std::vector<config::Header>& headers) {
    // RFC 9112 §3.2: Host comes first. A configured Host takes the default's place.
    const auto host = std::find_if(headers.begin(), headers.end(), [](const auto& h) {
        return boost::beast::iequals(h.name, "host");
    });
    std::string out;
    out.reserve(64 + 2 * target.size());
    out += "CONNECT ";
    out += target;
    out += " HTTP/1.1\r\n";
    if (host == headers.end()) {
        out += "Host: ";
        out += target;
    } else {
        out += host->name;
        out += ": ";
        out += host->value;
    }
    out += "\r\n";
    for (auto it = headers.begin(); it != headers.end(); ++it) {
        if (it == host) {
            continue;
        }
        out += it->name;
        out += ": ";
        out += it->value;
        out += "\r\n";
    }
    out += "\r\n";
    return out;
}

struct ResponseHeadParser::Impl {
    std::string buf;           // every byte fed while the head is incomplete (< limit bytes)
    std::size_t searched = 0;  // end_of_head is not in buf[0, searched + 3)
};

ResponseHeadParser::ResponseHeadParser(std::size_t limit)
    : impl_(std::make_unique<Impl>()), limit_(limit) {}
ResponseHeadParser::~ResponseHeadParser() = default;
ResponseHeadParser::ResponseHeadParser(ResponseHeadParser&&) noexcept = default;
ResponseHeadParser& ResponseHeadParser::operator=(ResponseHeadParser&&) noexcept = default;

// A finished status (done, malformed, too_large) is final: later bytes are ignored, so the
// caller reads any tunnel data from leftover() and the rest from the socket.
// A parser's state machine in one function, over the 60-line rule on purpose: every state
// and its way out stay in view, as in Beast's basic_parser::put.
HeadStatus ResponseHeadParser::feed(std::span<const std::uint8_t> bytes) {
    if (status_ != HeadStatus::need_more) {
        return status_;
    }
    if (!impl_) {  // moved from: start afresh rather than dereference null
        impl_ = std::make_unique<Impl>();
    }
    std::string& buf = impl_->buf;
    buf.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());

    // Not "HTTP/1." from the first byte: not an HTTP/1.x response; say so without waiting.
    const std::size_t prefix = std::min(buf.size(), version_prefix.size());
    if (std::string_view(buf).substr(0, prefix) != version_prefix.substr(0, prefix)) {
        buf = {};
        return status_ = HeadStatus::malformed;
    }

    // The head must end within the first limit_ bytes.
    const std::string_view window = std::string_view(buf).substr(0, limit_);
    const std::size_t eoh = window.find(end_of_head, impl_->searched);
    if (eoh == std::string_view::npos) {
        if (buf.size() >= limit_) {
            buf = {};
            return status_ = HeadStatus::too_large;
        }
        impl_->searched = window.size() < 3 ? 0 : window.size() - 3;
        return status_;
    }
    const std::size_t head_size = eoh + end_of_head.size();

    http::response_parser<http::empty_body> parser;
    // RFC 9110 §9.3.6: no body follows a CONNECT response head, whatever Content-Length or
    // Transfer-Encoding say; the bytes after it are tunnel data.
    parser.skip(true);
    boost::beast::error_code ec;
    // RFC 9112 §4 requires the SP before an empty reason-phrase, and Beast insists on it, but
    // "HTTP/1.1 200\r\n" is seen in the wild and is unambiguous: supply the SP.
    std::string_view head(buf.data(), head_size);
    std::string patched;
    if (head.find("\r\n") == status_line_without_reason) {
        patched.reserve(head_size + 1);
        patched.append(head.substr(0, status_line_without_reason));
        patched += ' ';
        patched.append(head.substr(status_line_without_reason));
        head = patched;
    }
    // The whole head is in hand and within limit_; Beast's own limit (8 KiB by default) must
    // not cut it shorter.
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(head.size(), std::numeric_limits<std::uint32_t>::max())));
    const std::size_t used = parser.put(boost::asio::const_buffer(head.data(), head.size()), ec);
    if (ec == http::error::header_limit) {
        status_ = HeadStatus::too_large;
    } else if (ec || !parser.is_done() || used != head.size() || parser.get().result_int() < 100 ||
               parser.get().result_int() > 599) {
        // RFC 9110 §15: every valid status code is within 100..599.
        status_ = HeadStatus::malformed;
    } else {
        const auto& res = parser.get();
        code_ = res.result_int();
        const unsigned version = res.version();
        status_line_ = "HTTP/" + std::to_string(version / 10) + "." + std::to_string(version % 10) +
                       " " + std::to_string(code_);
        // The reason as sent: Beast's reason() makes one up ("OK") when it is empty. Beast
        // has checked the start line: "HTTP/1.x DDD " then the reason up to CRLF.
        const std::string_view start_line = head.substr(0, head.find("\r\n"));
        const std::string reason =
            sanitise_reason(start_line.substr(std::min(start_line.size(), reason_offset)));
        if (!reason.empty()) {
            status_line_ += ' ';
            status_line_ += reason;
        }
        const auto challenge = res.find(http::field::proxy_authenticate);
        if (challenge != res.end()) {
            auth_scheme_ = auth_scheme(challenge->value());
        }
        leftover_.insert(leftover_.end(), buf.begin() + static_cast<std::ptrdiff_t>(head_size),
                         buf.end());
        status_ = HeadStatus::done;
    }
    buf = {};
    return status_;
}

}  // namespace tpt::connect_head
