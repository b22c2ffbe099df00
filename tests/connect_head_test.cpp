// Tests for tpt::connect: the CONNECT request we send and the response head parser.
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

// GCC 12 at -O2 warns inside Beast's parser (content_length_unchecked's boost::optional)
// about storage that is only read when engaged: a false positive in a system header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <gtest/gtest.h>

#include <tpt/connect_head.hpp>

#include "parsegrind.hpp"

namespace {

using tpt::connect_head::build_request;
using tpt::connect_head::HeadStatus;
using tpt::connect_head::ResponseHeadParser;

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string text_of(const std::vector<std::uint8_t>& v) {
    return {v.begin(), v.end()};
}

const char* name(HeadStatus s) {
    switch (s) {
        case HeadStatus::need_more:
            return "need_more";
        case HeadStatus::done:
            return "done";
        case HeadStatus::malformed:
            return "malformed";
        case HeadStatus::too_large:
            return "too_large";
    }
    return "?";
}

// Everything a parser reports once its input has been fed.
struct Answer {
    HeadStatus status = HeadStatus::need_more;
    unsigned code = 0;
    std::string status_line;
    std::string scheme;
    std::string leftover;

    bool operator==(const Answer&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Answer& a) {
    return os << "{" << name(a.status) << ", " << a.code << ", \"" << a.status_line << "\", \""
              << a.scheme << "\", " << a.leftover.size() << " leftover bytes}";
}

Answer answer_of(const ResponseHeadParser& p) {
    return {p.status(), p.status_code(), p.status_line(), p.proxy_authenticate_scheme(),
            text_of(p.leftover())};
}

// Feeds the pieces in order, stopping at the first final status as a caller would. The
// caller then forwards leftover() and reads the rest from the socket, so the pieces not fed
// count as leftover too.
Answer feed_pieces(const std::vector<std::string_view>& pieces, std::size_t limit) {
    ResponseHeadParser p{limit};
    std::size_t i = 0;
    while (i < pieces.size()) {
        const HeadStatus st = p.feed(bytes_of(pieces[i++]));
        EXPECT_EQ(st, p.status());
        if (st != HeadStatus::need_more) {
            break;
        }
    }
    Answer a = answer_of(p);
    if (a.status == HeadStatus::done) {
        for (; i < pieces.size(); ++i) {
            a.leftover += pieces[i];
        }
    }
    return a;
}

Answer one_shot(std::string_view in, std::size_t limit = 16 * 1024) {
    return feed_pieces({in}, limit);
}

void expect_split_invariant(std::string_view in, std::size_t limit = 16 * 1024) {
    tpt::test::expect_split_invariant(in, [limit](const std::vector<std::string_view>& pieces) {
        return feed_pieces(pieces, limit);
    });
}

// The answer of a parser that has no head: only its status.
Answer only(HeadStatus s) {
    return {s, 0, "", "", ""};
}

struct Case {
    const char* label;
    std::string input;
    Answer want;
};

std::vector<Case> cases() {
    const std::string tls_bytes("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    const std::string tunnel("\x00\x01\x02\r\n\r\nHTTP/1.1 500 x\r\n\r\n\xff", 26);
    return {
        {"200 HTTP/1.1",
         "HTTP/1.1 200 Connection established\r\n\r\n",
         {HeadStatus::done, 200, "HTTP/1.1 200 Connection established", "", ""}},
        {"200 HTTP/1.0",
         "HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n",
         {HeadStatus::done, 200, "HTTP/1.0 200 OK", "", ""}},
        {"200 with tunnel bytes",
         "HTTP/1.1 200 OK\r\n\r\n" + tunnel,
         {HeadStatus::done, 200, "HTTP/1.1 200 OK", "", tunnel}},
        {"200 with Content-Length is not a body",
         "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
         {HeadStatus::done, 200, "HTTP/1.1 200 OK", "", "abc"}},
        {"200 with chunked is not a body",
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
         {HeadStatus::done, 200, "HTTP/1.1 200 OK", "", "5\r\nhello"}},
        {"407 scheme only",
         "HTTP/1.1 407 Proxy Authentication Required\r\n"
         "Proxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n",
         {HeadStatus::done, 407, "HTTP/1.1 407 Proxy Authentication Required", "Basic", ""}},
        {"407 first challenge wins, any case",
         "HTTP/1.1 407 Auth\r\nproxy-authenticate:   Negotiate\r\n"
         "Proxy-Authenticate: Basic realm=\"r\"\r\n\r\n",
         {HeadStatus::done, 407, "HTTP/1.1 407 Auth", "Negotiate", ""}},
        {"407 token68 challenge",
         "HTTP/1.1 407 A\r\nProxy-Authenticate: Bearer abc==\r\n\r\n",
         {HeadStatus::done, 407, "HTTP/1.1 407 A", "Bearer", ""}},
        {"502",
         "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\nerror",
         {HeadStatus::done, 502, "HTTP/1.1 502 Bad Gateway", "", "error"}},
        {"no reason phrase",
         "HTTP/1.1 200 \r\n\r\n",
         {HeadStatus::done, 200, "HTTP/1.1 200", "", ""}},
        {"no SP after status code",
         "HTTP/1.1 200\r\n\r\nx",
         {HeadStatus::done, 200, "HTTP/1.1 200", "", "x"}},
        {"reason sanitised",
         "HTTP/1.1 403 No\tway \xff\x80\r\n\r\n",
         {HeadStatus::done, 403, "HTTP/1.1 403 No?way ??", "", ""}},
        {"no end of head", "HTTP/1.1 200 OK\r\nVia: x\r\n", only(HeadStatus::need_more)},
        {"empty", "", only(HeadStatus::need_more)},
        {"partial version", "HTTP/1", only(HeadStatus::need_more)},
        {"garbage", "SSH-2.0-OpenSSH_9.2\r\n", only(HeadStatus::malformed)},
        {"TLS bytes", tls_bytes, only(HeadStatus::malformed)},
        {"lower-case version", "http/1.1 200 OK\r\n\r\n", only(HeadStatus::malformed)},
        {"HTTP/2", "HTTP/2 200\r\n\r\n", only(HeadStatus::malformed)},
        {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", only(HeadStatus::malformed)},
        {"status below 100", "HTTP/1.1 099 x\r\n\r\n", only(HeadStatus::malformed)},
        {"status above 599", "HTTP/1.1 600 x\r\n\r\n", only(HeadStatus::malformed)},
        {"status 599", "HTTP/1.1 599 x\r\n\r\n", {HeadStatus::done, 599, "HTTP/1.1 599 x", "", ""}},
        {"status not digits", "HTTP/1.1 2x0 OK\r\n\r\n", only(HeadStatus::malformed)},
        {"bad field", "HTTP/1.1 200 OK\r\nBad Field\r\n\r\n", only(HeadStatus::malformed)},
        {"bad field, head unfinished", "HTTP/1.1 200 OK\r\nBad Field\r\n",
         only(HeadStatus::need_more)},
        {"bare LF", "HTTP/1.1 200 OK\nVia: x\r\n\r\n", only(HeadStatus::malformed)},
        {"NUL in field", std::string("HTTP/1.1 200 OK\r\nA: \0\r\n\r\n", 25),
         only(HeadStatus::malformed)},
    };
}

TEST(ConnectHead, TableOneShotAndEverySplitAgree) {
    for (const Case& c : cases()) {
        SCOPED_TRACE(c.label);
        EXPECT_EQ(one_shot(c.input), c.want);
        expect_split_invariant(c.input);
    }
}

TEST(ConnectHead, StatusLineNeverHoldsTheChallengeParameters) {
    const Answer a = one_shot(
        "HTTP/1.1 407 Proxy Authentication Required\r\n"
        "Proxy-Authenticate: Digest realm=\"corp\", nonce=\"s3cr3t\"\r\n\r\n");
    EXPECT_EQ(a.scheme, "Digest");
    EXPECT_EQ(a.status_line.find("s3cr3t"), std::string::npos);
    EXPECT_EQ(a.scheme.find("realm"), std::string::npos);
}

TEST(ConnectHead, LimitCountsTheWholeHead) {
    const std::string head = "HTTP/1.1 200 OK\r\nX: " + std::string(40, 'a') + "\r\n\r\n";
    const std::string after = "tunnel";
    SCOPED_TRACE(head.size());
    // A head of exactly `limit` bytes is accepted, whatever follows it.
    EXPECT_EQ(one_shot(head + after, head.size()).status, HeadStatus::done);
    EXPECT_EQ(one_shot(head + after, head.size()).leftover, after);
    expect_split_invariant(head + after, head.size());
    // One byte more is too large, as soon as `limit` bytes without an end have arrived.
    EXPECT_EQ(one_shot(head + after, head.size() - 1).status, HeadStatus::too_large);
    expect_split_invariant(head + after, head.size() - 1);
    EXPECT_EQ(one_shot(head.substr(0, head.size() - 1), head.size() - 1).status,
              HeadStatus::too_large);
    EXPECT_EQ(one_shot(head.substr(0, head.size() - 2), head.size() - 1).status,
              HeadStatus::need_more);
}

TEST(ConnectHead, OversizedHeadIsTooLargeAtTheDefaultLimit) {
    std::string head = "HTTP/1.1 200 OK\r\n";
    while (head.size() <= 16 * 1024) {
        head += "X-Padding: " + std::string(100, 'p') + "\r\n";
    }
    EXPECT_EQ(one_shot(head + "\r\n").status, HeadStatus::too_large);
    EXPECT_EQ(one_shot(head).status, HeadStatus::too_large);
    // Beast's own 8 KiB default does not apply: a 12 KiB head is fine.
    std::string big = "HTTP/1.1 200 OK\r\n";
    while (big.size() < 12 * 1024) {
        big += "X-Padding: " + std::string(100, 'p') + "\r\n";
    }
    EXPECT_EQ(one_shot(big + "\r\n").status, HeadStatus::done);
}

TEST(ConnectHead, FinalStatusIgnoresLaterBytes) {
    ResponseHeadParser p;
    ASSERT_EQ(p.feed(bytes_of("HTTP/1.1 200 OK\r\n\r\nab")), HeadStatus::done);
    EXPECT_EQ(p.feed(bytes_of("cd")), HeadStatus::done);
    EXPECT_EQ(text_of(p.leftover()), "ab");

    ResponseHeadParser bad;
    ASSERT_EQ(bad.feed(bytes_of("XYZ")), HeadStatus::malformed);
    EXPECT_EQ(bad.feed(bytes_of("HTTP/1.1 200 OK\r\n\r\n")), HeadStatus::malformed);
    EXPECT_EQ(bad.status_code(), 0u);
}

TEST(ConnectHead, MovedParserContinues) {
    ResponseHeadParser a;
    ASSERT_EQ(a.feed(bytes_of("HTTP/1.1 20")), HeadStatus::need_more);
    ResponseHeadParser b = std::move(a);
    ASSERT_EQ(b.feed(bytes_of("0 OK\r\n\r\nz")), HeadStatus::done);
    EXPECT_EQ(b.status_code(), 200u);
    EXPECT_EQ(text_of(b.leftover()), "z");
}

TEST(ConnectHead, RequestHasHostAndHeadersInOrder) {
    EXPECT_EQ(build_request("example.com:443", {}),
              "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    EXPECT_EQ(build_request("[2001:db8::1]:8443",
                            {{"Proxy-Authorization", "Basic dTpw"}, {"X-Trace", "1"}}),
              "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n"
              "Proxy-Authorization: Basic dTpw\r\nX-Trace: 1\r\n\r\n");
}

TEST(ConnectHead, ConfiguredHostReplacesTheDefaultOne) {
    EXPECT_EQ(build_request("a.example:443", {{"X-A", "1"}, {"hOsT", "proxy.example"}}),
              "CONNECT a.example:443 HTTP/1.1\r\nhOsT: proxy.example\r\nX-A: 1\r\n\r\n");
}

TEST(ConnectHead, RequestIsAWellFormedConnectHead) {
    namespace http = boost::beast::http;
    const std::string req = build_request("h.example:1", {{"A", "b"}});
    http::request_parser<http::empty_body> parser;
    boost::beast::error_code ec;
    const std::size_t used = parser.put(boost::asio::buffer(req), ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(parser.is_done());
    EXPECT_EQ(used, req.size());
    EXPECT_EQ(parser.get().method(), http::verb::connect);
    EXPECT_EQ(parser.get().target(), "h.example:1");
    EXPECT_EQ(parser.get().version(), 11u);
    EXPECT_EQ(parser.get()[http::field::host], "h.example:1");
    EXPECT_EQ(parser.get()["A"], "b");
}

}  // namespace
