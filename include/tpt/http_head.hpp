// http_head: the first bytes of a plain-HTTP or explicit-proxy connection (SPEC §12): which
// protocol they open, and an incremental reader of an HTTP/1.x request head that finds the
// name to route by. ◇
// Thread affinity: none; one parser per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/outcome.hpp>

namespace tpt::http_head {

// SPEC §12, a server with both `tls: true` and `http: true`: the first byte decides.
// 0x16 is the content type of a TLS handshake record (RFC 8446 §5.1), with which every
// ClientHello opens; an HTTP/1.x request opens with its method, a token (RFC 9110 §9.1), and
// no token byte is 0x16. Any other byte goes to the HTTP reader, which calls what is not HTTP
// malformed (the connection then has no name and takes `default`, as a non-TLS connection
// does on a TLS server). SSLv2-style hellos (first byte >= 0x80) are not TLS here: no client
// of this decade sends one.
enum class Protocol : std::uint8_t { tls, http };
constexpr Protocol detect_protocol(std::uint8_t first_byte) noexcept {
    return first_byte == 0x16 ? Protocol::tls : Protocol::http;
}

enum class HeadStatus : std::uint8_t {
    need_more,  // feed more bytes
    done,       // the whole head arrived: see head(), leftover()
    malformed,  // not an HTTP/1.0 or 1.1 request head, or a CONNECT without a valid host:port
    too_large,  // no end of head within the limit
};
std::string_view to_string(HeadStatus s) noexcept;

// How the request line names its target (RFC 9112 §3.2).
enum class TargetForm : std::uint8_t {
    origin,     // "/path?query": the name comes from the Host header
    absolute,   // "scheme:...": the name comes from its authority; Host is ignored (§3.2.2)
    authority,  // "host:port", CONNECT only (§3.2.3)
    asterisk,   // "*" (OPTIONS): the name comes from the Host header
    other,      // anything else: no name
};

enum class HostKind : std::uint8_t {
    name,  // a DNS name (hostname::is_valid)
    ipv4,  // a dotted quad; also a hostname::is_valid string
    ipv6,  // an IPv6 literal, given in brackets, kept without them; not is_valid
};

// The name a request is routed by, as the `sni:` table matches it.
struct Authority {
    std::string host;  // lower-case, no trailing dot; IPv6 without brackets
    HostKind kind = HostKind::name;
    std::optional<std::uint16_t> port;  // 1..65535 when the request gave one

    friend bool operator==(const Authority&, const Authority&) = default;
};

struct RequestHead {
    std::string method;  // as sent; methods are case-sensitive (RFC 9110 §9.1)
    // As sent. An absolute-form target may carry userinfo ("http://user:pw@host/"), a
    // credential: log `authority`, never this.
    std::string target;
    unsigned version = 0;  // 10 or 11
    TargetForm form = TargetForm::other;
    // The routing name; nullopt = no name (the `default` route). A CONNECT head is `done` only
    // with a name and a port.
    std::optional<Authority> authority;
    // A Proxy-Authorization field was present. Only the fact is kept: the credential is the
    // application's and is never forwarded, logged or stored here (SPEC §12).
    bool proxy_authorization = false;

    bool is_connect() const noexcept { return method == "CONNECT"; }
    friend bool operator==(const RequestHead&, const RequestHead&) = default;
};

// Incremental request-head reader: bytes are buffered until the first CRLFCRLF, and the head
// up to it goes to Beast's request_parser<empty_body> in one put(), as connect_head does. The
// answer depends only on the bytes, never on how they were split. What the name is:
//  - absolute-form: the URI's authority (RFC 9112 §3.2.2), whatever Host says; userinfo or an
//    empty host there means no name (RFC 9110 §4.2.4, §4.2.1);
//  - CONNECT: the authority-form target, which must be host:port with a port of 1..65535 and
//    no userinfo, else the head is malformed (RFC 9110 §9.3.6: a server MUST reject it).
//    Host is not needed (an HTTP/1.0 CONNECT from Python's http.client has none) and not used;
//  - otherwise: the one Host field; none, two or more, or an invalid one means no name.
// A host is lower-cased and loses one trailing dot ("example.com." is the name example.com, so
// a rule for it cannot be bypassed by the dot); a port, when given, is 1..65535; otherwise no
// name. A line folded with obs-fold makes the head malformed (RFC 9112 §5.2 lets a server
// reject it; a fold could hide a Host field from one reader and not another).
// A request line that has gone wrong is malformed as soon as its first bad byte arrives,
// without waiting for the end of the head. Memory: at most `limit` bytes are buffered.
// After a final status (anything but need_more) further feeds return it and change nothing.
class RequestHeadParser {
public:
    explicit RequestHeadParser(std::size_t limit = max_head_bytes);

    // Returns the new status. When it becomes done, the bytes of `bytes` after the head are
    // appended to leftover() (a CONNECT client's early ClientHello; a request's body).
    HeadStatus feed(std::span<const std::uint8_t> bytes);
    HeadStatus status() const noexcept { return status_; }

    const RequestHead& head() const noexcept { return head_; }  // filled when done
    const std::vector<std::uint8_t>& leftover() const noexcept { return leftover_; }
    std::size_t buffered() const noexcept { return buf_.size(); }  // <= limit

private:
    // Where the request line stands while bytes arrive.
    enum class LineState : std::uint8_t { method, target, version, done };

    bool request_line_fails(std::string_view window);
    HeadStatus finish(std::string_view head, std::span<const std::uint8_t> rest);

    std::size_t limit_;
    HeadStatus status_ = HeadStatus::need_more;
    std::string buf_;               // the bytes fed while the head is incomplete
    std::size_t searched_ = 0;      // "\r\n\r\n" does not start before this offset
    std::size_t line_checked_ = 0;  // bytes of the request line checked so far
    std::size_t part_ = 0;          // bytes of the current part of the request line
    LineState line_ = LineState::method;
    RequestHead head_;
    std::vector<std::uint8_t> leftover_;
};

}  // namespace tpt::http_head
