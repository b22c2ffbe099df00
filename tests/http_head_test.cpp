// Tests for tpt::http_head: first-byte detection and the request-head reader (SPEC §12).
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/http_head.hpp>

#include "parsegrind.hpp"

namespace tpt::http_head {

// Readable failure messages; GoogleTest looks these names up.
void PrintTo(HeadStatus s, std::ostream* os) {  // NOLINT(readability-identifier-naming)
    *os << to_string(s);
}

void PrintTo(const RequestHead& h, std::ostream* os) {  // NOLINT(readability-identifier-naming)
    *os << "{" << h.method << " " << h.target << " " << h.version << ", form "
        << static_cast<int>(h.form) << ", ";
    if (h.authority) {
        *os << "host \"" << h.authority->host << "\" kind " << static_cast<int>(h.authority->kind)
            << " port " << (h.authority->port ? std::to_string(*h.authority->port) : "-");
    } else {
        *os << "no name";
    }
    *os << (h.proxy_authorization ? ", Proxy-Authorization}" : "}");
}

}  // namespace tpt::http_head

namespace {

using tpt::http_head::Authority;
using tpt::http_head::detect_protocol;
using tpt::http_head::HeadStatus;
using tpt::http_head::HostKind;
using tpt::http_head::Protocol;
using tpt::http_head::RequestHead;
using tpt::http_head::RequestHeadParser;
using tpt::http_head::TargetForm;

constexpr std::size_t default_limit = std::size_t{16} * 1024;

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// What a caller sees once it stops feeding: the status, the head, and every byte after the
// head (leftover() plus the pieces it did not feed, which it reads from the socket itself).
struct Seen {
    HeadStatus status = HeadStatus::need_more;
    RequestHead head;
    std::string after;

    bool operator==(const Seen&) const = default;
};

void PrintTo(const Seen& s, std::ostream* os) {  // NOLINT(readability-identifier-naming)
    *os << tpt::http_head::to_string(s.status) << " ";
    tpt::http_head::PrintTo(s.head, os);
    *os << " + " << s.after.size() << " bytes after";
}

// Feeds the pieces in order and stops at the first final status, as a session would.
Seen feed_pieces(const std::vector<std::string_view>& pieces, std::size_t limit) {
    RequestHeadParser p{limit};
    std::size_t i = 0;
    while (i < pieces.size() && p.status() == HeadStatus::need_more) {
        const HeadStatus st = p.feed(bytes_of(pieces[i++]));
        EXPECT_EQ(st, p.status());
        EXPECT_LE(p.buffered(), limit);
    }
    Seen s{p.status(), p.head(), {p.leftover().begin(), p.leftover().end()}};
    if (s.status == HeadStatus::done) {
        for (; i < pieces.size(); ++i) {
            s.after += pieces[i];
        }
    } else {
        EXPECT_TRUE(p.leftover().empty());
    }
    if (s.status != HeadStatus::need_more) {
        EXPECT_EQ(p.buffered(), 0u) << "a final status frees the buffer";
    }
    return s;
}

Seen one_shot(std::string_view in, std::size_t limit = default_limit) {
    return feed_pieces({in}, limit);
}

void expect_split_invariant(std::string_view in, std::size_t limit = default_limit) {
    tpt::test::expect_split_invariant(in, [limit](const std::vector<std::string_view>& pieces) {
        return feed_pieces(pieces, limit);
    });
}

Authority name(std::string host, std::optional<std::uint16_t> port = std::nullopt,
               HostKind kind = HostKind::name) {
    return {std::move(host), kind, port};
}

RequestHead head(std::string method, std::string target, unsigned version, TargetForm form,
                 std::optional<Authority> authority, bool proxy_authorization = false) {
    return {std::move(method),    std::move(target),  version, form,
            std::move(authority), proxy_authorization};
}

// A GET of "/" with these header lines (each ending in CRLF).
std::string get(std::string_view fields, std::string_view version = "HTTP/1.1") {
    return "GET / " + std::string(version) + "\r\n" + std::string(fields) + "\r\n";
}

RequestHead origin(std::optional<Authority> authority, unsigned version = 11) {
    return head("GET", "/", version, TargetForm::origin, std::move(authority));
}

struct Case {
    const char* label;
    std::string input;
    HeadStatus status;
    RequestHead want = {};  // when done
    std::string after = {};
};

Case nameless(const char* label, std::string input) {
    return {label, std::move(input), HeadStatus::done, origin(std::nullopt)};
}

Case failing(const char* label, std::string input, HeadStatus status = HeadStatus::malformed) {
    return {label, std::move(input), status};
}

std::vector<Case> host_cases() {
    const std::string long_label(63, 'a');
    const std::string name_253 = long_label + "." + long_label + "." + long_label + "." +
                                 std::string(61, 'b');  // 4 labels, 253 bytes
    return {
        {"origin-form + Host", get("Host: example.com\r\n"), HeadStatus::done,
         origin(name("example.com"))},
        {"Host with port", get("Host: example.com:8080\r\n"), HeadStatus::done,
         origin(name("example.com", 8080))},
        {"Host port 65535", get("Host: a.example:65535\r\n"), HeadStatus::done,
         origin(name("a.example", 65535))},
        {"Host port with leading zeros", get("Host: a.example:0080\r\n"), HeadStatus::done,
         origin(name("a.example", 80))},
        {"upper-case Host is lower-cased", get("Host: WWW.Example.COM\r\n"), HeadStatus::done,
         origin(name("www.example.com"))},
        {"any case of the field name", get("hOST: a.example\r\n"), HeadStatus::done,
         origin(name("a.example"))},
        {"whitespace around the value", get("Host: \t a.example \t\r\n"), HeadStatus::done,
         origin(name("a.example"))},
        {"one trailing dot is dropped", get("Host: Example.com.\r\n"), HeadStatus::done,
         origin(name("example.com"))},
        {"trailing dot before a port", get("Host: example.com.:80\r\n"), HeadStatus::done,
         origin(name("example.com", 80))},
        {"IPv4 literal", get("Host: 10.1.2.3:8080\r\n"), HeadStatus::done,
         origin(name("10.1.2.3", 8080, HostKind::ipv4))},
        {"IPv6 literal with port", get("Host: [2001:DB8::1]:8443\r\n"), HeadStatus::done,
         origin(name("2001:db8::1", 8443, HostKind::ipv6))},
        {"IPv6 literal without port", get("Host: [::1]\r\n"), HeadStatus::done,
         origin(name("::1", std::nullopt, HostKind::ipv6))},
        {"name of 253 bytes", get("Host: " + name_253 + "\r\n"), HeadStatus::done,
         origin(name(name_253))},
        {"HTTP/1.0 with Host", get("Host: a.example\r\n", "HTTP/1.0"), HeadStatus::done,
         origin(name("a.example"), 10)},
        {"HTTP/1.0 without Host", get("", "HTTP/1.0"), HeadStatus::done, origin(std::nullopt, 10)},
        nameless("missing Host", get("Accept: */*\r\n")),
        nameless("two Host fields", get("Host: a.example\r\nHost: a.example\r\n")),
        nameless("two Host fields, other case", get("Host: a.example\r\nHOST: b.example\r\n")),
        nameless("empty Host", get("Host:\r\n")),
        nameless("two dots at the end", get("Host: example.com..\r\n")),
        nameless("only a dot", get("Host: .\r\n")),
        nameless("empty label", get("Host: a..example\r\n")),
        nameless("space inside", get("Host: a example\r\n")),
        nameless("a list", get("Host: a.example, b.example\r\n")),
        nameless("punctuation", get("Host: ex!ample.com\r\n")),
        nameless("percent-encoded", get("Host: ex%61mple.com\r\n")),
        nameless("non-ASCII", get("Host: \xc3\xa9t\xc3\xa9.example\r\n")),
        nameless("userinfo", get("Host: user@a.example\r\n")),
        nameless("name over 253 bytes", get("Host: " + name_253 + "b\r\n")),
        nameless("label over 63 bytes", get("Host: " + long_label + "a.example\r\n")),
        nameless("port 0", get("Host: a.example:0\r\n")),
        nameless("port 65536", get("Host: a.example:65536\r\n")),
        nameless("port of six digits", get("Host: a.example:000080\r\n")),
        nameless("empty port", get("Host: a.example:\r\n")),
        nameless("port not digits", get("Host: a.example:8o\r\n")),
        nameless("signed port", get("Host: a.example:+80\r\n")),
        nameless("two ports", get("Host: a.example:80:81\r\n")),
        nameless("IPv6 without brackets", get("Host: 2001:db8::1\r\n")),
        nameless("IPv6 unclosed", get("Host: [2001:db8::1\r\n")),
        nameless("IPv6 zone id", get("Host: [fe80::1%25eth0]:80\r\n")),
        nameless("IPv4 in brackets", get("Host: [10.0.0.1]:80\r\n")),
        nameless("name in brackets", get("Host: [a.example]\r\n")),
        nameless("junk after brackets", get("Host: [::1]x80\r\n")),
    };
}

RequestHead absolute(std::string target, std::optional<Authority> authority) {
    return head("GET", std::move(target), 11, TargetForm::absolute, std::move(authority));
}

std::vector<Case> target_cases() {
    const std::string host_b = "Host: b.example\r\n\r\n";
    return {
        {"absolute-form wins over Host", "GET http://a.example/x HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("http://a.example/x", name("a.example"))},
        {"absolute-form without Host", "GET http://a.example HTTP/1.1\r\n\r\n", HeadStatus::done,
         absolute("http://a.example", name("a.example"))},
        {"absolute-form port, query, case", "GET HTTP://A.Example:8080?q=1 HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("HTTP://A.Example:8080?q=1", name("a.example", 8080))},
        {"absolute-form fragment ends it", "GET https://a.example#f HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("https://a.example#f", name("a.example"))},
        {"absolute-form IPv6", "GET http://[::1]:8080/ HTTP/1.1\r\n" + host_b, HeadStatus::done,
         absolute("http://[::1]:8080/", name("::1", 8080, HostKind::ipv6))},
        {"absolute-form userinfo: no name", "GET http://u:pw@a.example/ HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("http://u:pw@a.example/", std::nullopt)},
        {"absolute-form empty host: no name", "GET http:///x HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("http:///x", std::nullopt)},
        {"absolute-form bad host: no Host fallback", "GET http://a_b!/ HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("http://a_b!/", std::nullopt)},
        {"absolute-URI without authority", "GET urn:a.example HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("urn:a.example", std::nullopt)},
        {"authority-form outside CONNECT", "GET a.example:80 HTTP/1.1\r\n" + host_b,
         HeadStatus::done, absolute("a.example:80", std::nullopt)},
        {"asterisk-form uses Host", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
         HeadStatus::done, head("OPTIONS", "*", 11, TargetForm::asterisk, name("a.example"))},
        {"other form: no name", "GET a.example HTTP/1.1\r\n" + host_b, HeadStatus::done,
         head("GET", "a.example", 11, TargetForm::other, std::nullopt)},
        {"methods are case-sensitive", "get / HTTP/1.1\r\nHost: a.example\r\n\r\n",
         HeadStatus::done, head("get", "/", 11, TargetForm::origin, name("a.example"))},
        {"Proxy-Authorization is noticed",
         "POST /x HTTP/1.1\r\nHost: a.example\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
         HeadStatus::done, head("POST", "/x", 11, TargetForm::origin, name("a.example"), true)},
        {"body after the head", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
         HeadStatus::done, head("POST", "/", 11, TargetForm::origin, name("a")), "hello"},
        {"chunked body after the head",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
         HeadStatus::done, head("POST", "/", 11, TargetForm::origin, name("a")), "5\r\nhello\r\n"},
        {"a body over Beast's body limit", get("Host: a\r\nContent-Length: 4000000000\r\n"),
         HeadStatus::done, origin(name("a"))},
    };
}

RequestHead connect(std::string target, Authority authority, unsigned version = 11,
                    bool proxy_authorization = false) {
    return head("CONNECT", std::move(target), version, TargetForm::authority, std::move(authority),
                proxy_authorization);
}

std::vector<Case> connect_cases() {
    const std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    return {
        {"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
         HeadStatus::done, connect("example.com:443", name("example.com", 443))},
        {"CONNECT HTTP/1.0 without Host", "CONNECT a.example:443 HTTP/1.0\r\n\r\n",
         HeadStatus::done, connect("a.example:443", name("a.example", 443), 10)},
        {"CONNECT target wins over Host",
         "CONNECT A.Example.:8443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n", HeadStatus::done,
         connect("A.Example.:8443", name("a.example", 8443))},
        {"CONNECT IPv6", "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", HeadStatus::done,
         connect("[2001:db8::1]:443", name("2001:db8::1", 443, HostKind::ipv6))},
        {"CONNECT IPv4", "CONNECT 192.0.2.1:65535 HTTP/1.1\r\n\r\n", HeadStatus::done,
         connect("192.0.2.1:65535", name("192.0.2.1", 65535, HostKind::ipv4))},
        {"CONNECT with Proxy-Authorization and an early hello",
         "CONNECT a.example:443 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n" + hello,
         HeadStatus::done, connect("a.example:443", name("a.example", 443), 11, true), hello},
        failing("CONNECT missing port", "CONNECT a.example HTTP/1.1\r\n\r\n"),
        failing("CONNECT empty port", "CONNECT a.example: HTTP/1.1\r\n\r\n"),
        failing("CONNECT port 0", "CONNECT a.example:0 HTTP/1.1\r\n\r\n"),
        failing("CONNECT port 65536", "CONNECT a.example:65536 HTTP/1.1\r\n\r\n"),
        failing("CONNECT userinfo", "CONNECT user@a.example:443 HTTP/1.1\r\n\r\n"),
        failing("CONNECT userinfo with password", "CONNECT u:p@a.example:443 HTTP/1.1\r\n\r\n"),
        failing("CONNECT IPv6 without brackets", "CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n"),
        failing("CONNECT IPv6 without port", "CONNECT [2001:db8::1] HTTP/1.1\r\n\r\n"),
        failing("CONNECT invalid name", "CONNECT a..example:443 HTTP/1.1\r\n\r\n"),
        failing("CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
        failing("CONNECT absolute-form", "CONNECT http://a.example:443/ HTTP/1.1\r\n\r\n"),
    };
}

std::vector<Case> malformed_cases() {
    const std::string tls("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    return {
        failing("empty", "", HeadStatus::need_more),
        failing("method only", "GET", HeadStatus::need_more),
        failing("head not finished", "GET / HTTP/1.1\r\nHost: a\r\n", HeadStatus::need_more),
        failing("bad field, head not finished", "GET / HTTP/1.1\r\nBad Field\r\n",
                HeadStatus::need_more),
        failing("TLS bytes", tls),
        failing("binary", std::string("\x00\x01\x02\x03", 4)),
        failing("SSH banner", "SSH-2.0-OpenSSH_9.2\r\n"),
        failing("leading CRLF", "\r\nGET / HTTP/1.1\r\n\r\n"),
        failing("two spaces", "GET  / HTTP/1.1\r\n\r\n"),
        failing("no target", "GET HTTP/1.1\r\n\r\n"),
        failing("tab in target", "GET /a\tb HTTP/1.1\r\n\r\n"),
        failing("lower-case version", "GET / http/1.1\r\n\r\n"),
        failing("HTTP/1.2", "GET / HTTP/1.2\r\n\r\n"),
        failing("HTTP/2.0", "GET / HTTP/2.0\r\n\r\n"),
        failing("HTTP/0.9 request", "GET /\r\n\r\n"),
        failing("bare LF after the version", "GET / HTTP/1.1\nHost: a\n\n"),
        failing("space before CRLF", "GET / HTTP/1.1 \r\n\r\n"),
        failing("bad field", get("Bad Field\r\n")),
        failing("NUL in a value", get(std::string("Host: a\0b\r\n", 11))),
        failing("bare LF in the fields", get("Host: a\nX: y\r\n")),
        failing("obs-fold in Host", get("Host: a.example\r\n b.example\r\n")),
        failing("obs-fold elsewhere", get("Host: a.example\r\nX-A: 1\r\n\t2\r\n")),
        failing("bad Content-Length", get("Host: a\r\nContent-Length: five\r\n")),
        failing("two Content-Lengths",
                get("Host: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n")),
    };
}

void expect_cases(const std::vector<Case>& cases) {
    for (const Case& c : cases) {
        SCOPED_TRACE(c.label);
        const Seen seen = one_shot(c.input);
        EXPECT_EQ(seen.status, c.status);
        EXPECT_EQ(seen.head, c.status == HeadStatus::done ? c.want : RequestHead{});
        EXPECT_EQ(seen.after, c.after);
        expect_split_invariant(c.input);
    }
}

TEST(HttpHead, NameFromTheHostField) {
    expect_cases(host_cases());
}

TEST(HttpHead, NameFromTheRequestTarget) {
    expect_cases(target_cases());
}

TEST(HttpHead, ConnectNeedsHostAndPortInTheTarget) {
    expect_cases(connect_cases());
}

TEST(HttpHead, WhatIsNotAnHttp1RequestHeadIsMalformed) {
    expect_cases(malformed_cases());
}

TEST(HttpHead, NonHttpIsRejectedAtItsFirstByte) {
    for (const std::uint8_t first : std::array<std::uint8_t, 5>{0x16, 0x00, 0x20, 0x0d, 0x80}) {
        SCOPED_TRACE(static_cast<int>(first));
        RequestHeadParser p;
        EXPECT_EQ(p.feed({&first, 1}), HeadStatus::malformed);
    }
    RequestHeadParser p;
    EXPECT_EQ(p.feed(bytes_of("GET /")), HeadStatus::need_more);
    EXPECT_EQ(p.feed(bytes_of("\x01")), HeadStatus::malformed) << "a control byte in the target";
}

TEST(HttpHead, HeadMustEndWithinTheLimit) {
    const std::string request = get("Host: a.example\r\n");
    const std::size_t n = request.size();
    const std::string body = "body";
    struct Row {
        std::size_t limit;
        std::string input;
        HeadStatus want;
    };
    // The limit counts the whole head, request line and final CRLF included; what follows
    // the head does not count; `limit` bytes without an end are too large at once.
    for (const Row& r :
         {Row{n, request + body, HeadStatus::done}, Row{n + 1, request, HeadStatus::done},
          Row{n - 1, request + body, HeadStatus::too_large},
          Row{n - 1, request.substr(0, n - 1), HeadStatus::too_large},
          Row{n - 1, request.substr(0, n - 2), HeadStatus::need_more},
          Row{0, "G", HeadStatus::too_large}}) {
        SCOPED_TRACE("limit " + std::to_string(r.limit) + ", " + std::to_string(r.input.size()) +
                     " bytes");
        EXPECT_EQ(one_shot(r.input, r.limit).status, r.want);
        expect_split_invariant(r.input, r.limit);
    }
}

TEST(HttpHead, OversizedHeadIsTooLargeAtTheDefaultLimit) {
    std::string request = "GET / HTTP/1.1\r\nHost: a.example\r\n";
    while (request.size() <= default_limit) {
        request += "X-Padding: " + std::string(100, 'p') + "\r\n";
    }
    EXPECT_EQ(one_shot(request + "\r\n").status, HeadStatus::too_large);
    // Beast's own 8 KiB header limit does not apply: a 12 KiB head is fine.
    std::string big = "GET / HTTP/1.1\r\nHost: a.example\r\n";
    while (big.size() < std::size_t{12} * 1024) {
        big += "X-Padding: " + std::string(100, 'p') + "\r\n";
    }
    EXPECT_EQ(one_shot(big + "\r\n").head.authority, name("a.example"));
}

TEST(HttpHead, RequestLineLongerThanTheLimitIsTooLargeWhateverFollows) {
    // The bad byte after the limit is never looked at, however the bytes arrive.
    const std::string line = "GET /" + std::string(100, 'a') + std::string("\x01 HTTP/1.1\r\n\r\n");
    EXPECT_EQ(one_shot(line, 64).status, HeadStatus::too_large);
    expect_split_invariant(line, 64);
    EXPECT_EQ(one_shot(line, line.size()).status, HeadStatus::malformed);
}

TEST(HttpHead, LeftoverIsWhatFollowedTheHeadInTheLastFeed) {
    RequestHeadParser p;
    ASSERT_EQ(p.feed(bytes_of("CONNECT a.example:443 HTTP/1.1\r\n")), HeadStatus::need_more);
    ASSERT_EQ(p.feed(bytes_of("\r\n\x16\x03\x01")), HeadStatus::done);
    EXPECT_EQ(std::string(p.leftover().begin(), p.leftover().end()), "\x16\x03\x01");
    // A final status is final: later bytes are the caller's, not the parser's.
    EXPECT_EQ(p.feed(bytes_of("more")), HeadStatus::done);
    EXPECT_EQ(p.leftover().size(), 3u);
    EXPECT_EQ(p.head().authority, name("a.example", 443));

    // A large body in the completing feed lands in leftover whole; the buffer stays bounded.
    const std::string body(1 << 20, 'b');
    RequestHeadParser q{64};
    ASSERT_EQ(q.feed(bytes_of(get("Host: a\r\n") + body)), HeadStatus::done);
    EXPECT_EQ(q.leftover().size(), body.size());
    EXPECT_EQ(q.buffered(), 0u);
}

TEST(HttpHead, FinalStatusIgnoresLaterBytes) {
    RequestHeadParser bad;
    ASSERT_EQ(bad.feed(bytes_of("\x16\x03")), HeadStatus::malformed);
    EXPECT_EQ(bad.feed(bytes_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n")), HeadStatus::malformed);
    EXPECT_EQ(bad.head(), RequestHead{});
    EXPECT_TRUE(bad.leftover().empty());
}

TEST(HttpHead, MovedParserContinues) {
    RequestHeadParser a;
    ASSERT_EQ(a.feed(bytes_of("GET / HTTP/1.1\r\nHo")), HeadStatus::need_more);
    RequestHeadParser b = std::move(a);
    ASSERT_EQ(b.feed(bytes_of("st: a.example\r\n\r\nz")), HeadStatus::done);
    EXPECT_EQ(b.head().authority, name("a.example"));
    EXPECT_EQ(b.leftover().size(), 1u);
}

TEST(HttpHead, FirstByteTellsTlsFromHttp) {
    EXPECT_EQ(detect_protocol(0x16), Protocol::tls);
    for (const int b : std::array<int, 9>{'G', 'P', 'C', 'O', 0x00, 0x15, 0x17, 0x80, 0xff}) {
        SCOPED_TRACE(b);
        EXPECT_EQ(detect_protocol(static_cast<std::uint8_t>(b)), Protocol::http);
    }
}

TEST(HttpHead, StatusNames) {
    EXPECT_EQ(to_string(HeadStatus::need_more), "need_more");
    EXPECT_EQ(to_string(HeadStatus::done), "done");
    EXPECT_EQ(to_string(HeadStatus::malformed), "malformed");
    EXPECT_EQ(to_string(HeadStatus::too_large), "too_large");
    EXPECT_EQ(to_string(static_cast<HeadStatus>(9)), "?");
}

}  // namespace
