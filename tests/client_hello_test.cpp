#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/client_hello.hpp>

namespace {

using tpt::client_hello::ClientHelloParser;
using tpt::client_hello::HelloResult;
using tpt::client_hello::HelloStatus;
using tpt::client_hello::parse_client_hello;
using Bytes = std::vector<std::uint8_t>;

constexpr std::size_t default_limit = std::size_t{16} * 1024;

const char* name_of(HelloStatus s) {
    switch (s) {
        case HelloStatus::need_more:
            return "need_more";
        case HelloStatus::done:
            return "done";
        case HelloStatus::not_tls:
            return "not_tls";
        case HelloStatus::malformed:
            return "malformed";
        case HelloStatus::too_large:
            return "too_large";
    }
    return "?";
}

}  // namespace

namespace tpt::client_hello {
// Readable failure messages; GoogleTest looks up this name.
void PrintTo(HelloStatus s, std::ostream* os) {  // NOLINT(readability-identifier-naming)
    *os << name_of(s);
}
}  // namespace tpt::client_hello

namespace {

Bytes read_capture(const std::string& name) {
    const std::string path = std::string{TPT_TEST_DATA} + "/hello/" + name + ".bin";
    std::ifstream in{path, std::ios::binary};
    return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

Bytes to_bytes(std::string_view text) {
    return {text.begin(), text.end()};
}

// ---------------------------------------------------------------------------------------------
// Builder for ClientHellos (the idea of Envoy's tls_utility): writes the structures of RFC 8446
// §4.1.2 and RFC 6066 §3 and remembers where every length field is, so tests can make each of
// them lie.

struct LengthField {
    std::string name;
    std::size_t offset;  // of the field's first byte
    std::size_t width;   // 1, 2 or 3 bytes, big-endian
};

class Writer {
public:
    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v) {
        u8(static_cast<std::uint8_t>(v >> 8));
        u8(static_cast<std::uint8_t>(v & 0xFF));
    }
    void bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    void text(std::string_view t) { out_.insert(out_.end(), t.begin(), t.end()); }

    // A length-prefixed vector: open() writes a placeholder, close() fills in the length.
    void open(std::size_t width, std::string name) {
        open_.push_back({std::move(name), out_.size(), width});
        out_.insert(out_.end(), width, 0);
    }
    void close() {
        LengthField f = open_.back();
        open_.pop_back();
        std::size_t len = out_.size() - f.offset - f.width;
        for (std::size_t i = f.width; i-- > 0;) {
            out_[f.offset + i] = static_cast<std::uint8_t>(len & 0xFF);
            len >>= 8;
        }
        fields_.push_back(std::move(f));
    }
    void vec(std::size_t width, std::string name, std::span<const std::uint8_t> b) {
        open(width, std::move(name));
        bytes(b);
        close();
    }

    Bytes out_;
    std::vector<LengthField> fields_;

private:
    std::vector<LengthField> open_;
};

struct Built {
    Bytes bytes;
    std::vector<LengthField> fields;
};

Bytes filler(std::size_t n, std::uint8_t seed) {
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) {
        b[i] = static_cast<std::uint8_t>((i * 31 + seed) & 0xFF);
    }
    return b;
}

class HelloBuilder {
public:
    HelloBuilder() {
        session_id_ = filler(32, 7);
        cipher_suites_ = {0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xC0, 0x2B, 0xC0, 0x2F};
    }

    HelloBuilder& handshake_type(std::uint8_t t) {
        handshake_type_ = t;
        return *this;
    }
    HelloBuilder& session_id(Bytes b) {
        session_id_ = std::move(b);
        return *this;
    }
    HelloBuilder& cipher_suites(Bytes b) {
        cipher_suites_ = std::move(b);
        return *this;
    }
    HelloBuilder& compression(Bytes b) {
        compression_ = std::move(b);
        return *this;
    }
    HelloBuilder& no_extensions() {
        no_extensions_ = true;
        return *this;
    }
    HelloBuilder& trailing(Bytes b) {
        trailing_ = std::move(b);
        return *this;
    }
    HelloBuilder& extension(std::uint16_t type, Bytes data) {
        extensions_.emplace_back([type, data = std::move(data)](Writer& w) {
            w.u16(type);
            w.vec(2, "extension " + std::to_string(type), data);
        });
        return *this;
    }
    // Bytes written as they are inside the extensions block.
    HelloBuilder& raw(Bytes b) {
        extensions_.emplace_back([b = std::move(b)](Writer& w) { w.bytes(b); });
        return *this;
    }
    // server_name with the given (name_type, name) entries, in order.
    HelloBuilder& server_name(std::vector<std::pair<std::uint8_t, std::string>> entries) {
        extensions_.emplace_back([entries = std::move(entries)](Writer& w) {
            w.u16(0);
            w.open(2, "server_name extension");
            w.open(2, "server_name_list");
            for (const auto& [type, name] : entries) {
                w.u8(type);
                w.open(2, "server_name entry");
                w.text(name);
                w.close();
            }
            w.close();
            w.close();
        });
        return *this;
    }
    HelloBuilder& sni(std::string name) { return server_name({{0, std::move(name)}}); }

    // The handshake message (RFC 8446 §4: type, uint24 length, body).
    Built message() const {
        Writer w;
        w.u8(handshake_type_);
        w.open(3, "handshake");
        w.u16(0x0303);
        w.bytes(filler(32, 1));
        w.vec(1, "session_id", session_id_);
        w.vec(2, "cipher_suites", cipher_suites_);
        w.vec(1, "compression_methods", compression_);
        if (!no_extensions_) {
            w.open(2, "extensions");
            for (const auto& write : extensions_) {
                write(w);
            }
            w.close();
        }
        w.bytes(trailing_);
        w.close();
        return {std::move(w.out_), std::move(w.fields_)};
    }

    // The message in one handshake record (RFC 8446 §5.1).
    Built record() const {
        Built m = message();
        Writer w;
        w.u8(22);
        w.u16(0x0301);
        w.vec(2, "record", m.bytes);
        for (auto& f : m.fields) {
            f.offset += 5;
            w.fields_.push_back(f);
        }
        return {std::move(w.out_), std::move(w.fields_)};
    }

private:
    std::uint8_t handshake_type_ = 1;
    Bytes session_id_;
    Bytes cipher_suites_;
    Bytes compression_ = {0};
    bool no_extensions_ = false;
    Bytes trailing_;
    std::vector<std::function<void(Writer&)>> extensions_;
};

// Cut a handshake message into records of at most `fragment` payload bytes.
Bytes records(std::span<const std::uint8_t> message, std::size_t fragment,
              std::uint16_t version = 0x0301) {
    Bytes out;
    for (std::size_t pos = 0; pos < message.size(); pos += fragment) {
        const std::size_t n = std::min(fragment, message.size() - pos);
        out.push_back(22);
        out.push_back(static_cast<std::uint8_t>(version >> 8));
        out.push_back(static_cast<std::uint8_t>(version & 0xFF));
        out.push_back(static_cast<std::uint8_t>(n >> 8));
        out.push_back(static_cast<std::uint8_t>(n & 0xFF));
        out.insert(out.end(), message.begin() + static_cast<std::ptrdiff_t>(pos),
                   message.begin() + static_cast<std::ptrdiff_t>(pos + n));
    }
    return out;
}

Bytes u16_list(std::initializer_list<std::uint16_t> values, std::size_t prefix) {
    Writer w;
    w.open(prefix, "list");
    for (auto v : values) {
        w.u16(v);
    }
    w.close();
    return w.out_;
}

// A hello shaped like a post-quantum Chrome hello: GREASE values, an X25519MLKEM768 key share
// (group 0x11EC: 1184-byte ML-KEM-768 encapsulation key + 32-byte X25519 share = 1216 bytes,
// draft-kwiatkowski-tls-ecdhe-mlkem) beside an X25519 share, and a GREASE ECH extension.
HelloBuilder chrome_pq_hello(std::string sni) {
    HelloBuilder b;
    b.cipher_suites(u16_list({0x0A0A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030,
                              0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035},
                             0));
    Writer key_share;
    key_share.open(2, "client_shares");
    key_share.u16(0x1A1A);  // GREASE
    key_share.vec(2, "grease share", Bytes{0});
    key_share.u16(0x11EC);  // X25519MLKEM768
    key_share.vec(2, "mlkem share", filler(1216, 3));
    key_share.u16(0x001D);  // X25519
    key_share.vec(2, "x25519 share", filler(32, 5));
    key_share.close();

    Writer alpn;
    alpn.open(2, "protocols");
    alpn.vec(1, "h2", to_bytes("h2"));
    alpn.vec(1, "http/1.1", to_bytes("http/1.1"));
    alpn.close();

    b.extension(0x2A2A, {})  // GREASE
        .sni(std::move(sni))
        .extension(0x0017, {})   // extended_master_secret
        .extension(0xFF01, {0})  // renegotiation_info
        .extension(0x000A, u16_list({0x1A1A, 0x11EC, 0x001D, 0x0017, 0x0018}, 2))
        .extension(0x000B, {1, 0})           // ec_point_formats
        .extension(0x0023, {})               // session_ticket
        .extension(0x0010, alpn.out_)        // ALPN
        .extension(0x0005, {1, 0, 0, 0, 0})  // status_request
        .extension(0x000D,
                   u16_list({0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601},
                            2))                                      // signature_algorithms
        .extension(0x0012, {})                                       // signed_certificate_timestamp
        .extension(0x0033, key_share.out_)                           // key_share
        .extension(0x002D, {1, 1})                                   // psk_key_exchange_modes
        .extension(0x002B, {6, 0x3A, 0x3A, 0x03, 0x04, 0x03, 0x03})  // supported_versions
        .extension(0x001B, {2, 0, 2})                                // compress_certificate: brotli
        .extension(0x4469, {0, 3, 2, 'h', '2'})                      // application_settings
        .extension(0xFE0D, filler(218, 9))  // GREASE encrypted_client_hello
        .extension(0x4A4A, {0});            // GREASE
    return b;
}

// Feeding helpers: the status after the last piece and the SNI.
HelloResult feed_pieces(std::span<const std::uint8_t> bytes, std::span<const std::size_t> cuts,
                        std::size_t limit = default_limit) {
    ClientHelloParser p{limit};
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        p.feed(bytes.subspan(pos, cut - pos));
        pos = cut;
    }
    p.feed(bytes.subspan(pos));
    return {p.status(), p.sni()};
}

HelloResult feed_split(std::span<const std::uint8_t> bytes, std::size_t at,
                       std::size_t limit = default_limit) {
    const std::array<std::size_t, 1> cuts = {at};
    return feed_pieces(bytes, cuts, limit);
}

HelloResult feed_bytewise(std::span<const std::uint8_t> bytes, std::size_t limit = default_limit) {
    ClientHelloParser p{limit};
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        p.feed(bytes.subspan(i, 1));
    }
    return {p.status(), p.sni()};
}

void expect_same(const HelloResult& got, const HelloResult& want) {
    EXPECT_EQ(got.status, want.status);
    EXPECT_EQ(got.sni, want.sni);
}

// ---------------------------------------------------------------------------------------------
// Real captures (tests/data/hello/capture.py).

struct Capture {
    const char* file;
    HelloStatus status;
    std::optional<std::string> sni;
};

const std::vector<Capture>& captures() {
    static const std::vector<Capture> all = {
        {"openssl_tls12_sni", HelloStatus::done, "tls12.example.com"},
        {"openssl_tls13_sni", HelloStatus::done, "tls13.example.com"},  // sent mixed-case
        {"openssl_tls12_nosni", HelloStatus::done, std::nullopt},
        {"openssl_tls13_nosni", HelloStatus::done, std::nullopt},
        {"python_sni", HelloStatus::done, "python.example.org"},
        {"python_nosni", HelloStatus::done, std::nullopt},
        {"curl_sni", HelloStatus::done, "curl.example.net"},
        {"openssl_large_alpn", HelloStatus::done, "large.example.com"},
        {"openssl_multi_record", HelloStatus::done, "records.example.com"},
        {"openssl_too_large", HelloStatus::too_large, std::nullopt},
    };
    return all;
}

TEST(ClientHello, RealCapturesGiveTheirSni) {
    for (const auto& c : captures()) {
        SCOPED_TRACE(c.file);
        const Bytes hello = read_capture(c.file);
        ASSERT_FALSE(hello.empty());
        const HelloResult r = parse_client_hello(hello);
        EXPECT_EQ(r.status, c.status);
        EXPECT_EQ(r.sni, c.sni);
    }
}

TEST(ClientHello, RealLargeCapturesSpanMoreThanOneMtuAndSeveralRecords) {
    const Bytes large = read_capture("openssl_large_alpn");
    EXPECT_GT(large.size(), 1500U);
    const Bytes multi = read_capture("openssl_multi_record");
    ASSERT_GT(multi.size(), 5U);
    EXPECT_EQ((std::size_t{multi[3]} << 8) | multi[4], 512U);  // OpenSSL's -max_send_frag 512
    EXPECT_GT(multi.size(), 4 * 512U);
    const Bytes huge = read_capture("openssl_too_large");
    EXPECT_GT(huge.size(), default_limit);
}

TEST(ClientHello, EverySplitPointOfARealHelloGivesTheOneShotAnswer) {
    for (const auto& c : captures()) {
        SCOPED_TRACE(c.file);
        const Bytes hello = read_capture(c.file);
        const HelloResult whole = parse_client_hello(hello);
        for (std::size_t at = 0; at <= hello.size(); ++at) {
            const HelloResult r = feed_split(hello, at);
            if (r.status != whole.status || r.sni != whole.sni) {
                ADD_FAILURE() << "split at " << at << " gives " << name_of(r.status);
                break;
            }
        }
    }
}

TEST(ClientHello, ByteAtATimeGivesTheOneShotAnswer) {
    for (const auto& c : captures()) {
        SCOPED_TRACE(c.file);
        const Bytes hello = read_capture(c.file);
        expect_same(feed_bytewise(hello), {c.status, c.sni});
    }
}

TEST(ClientHello, EveryTruncationOfAWholeHelloNeedsMore) {
    for (const auto& c : captures()) {
        if (c.status != HelloStatus::done) {
            continue;
        }
        SCOPED_TRACE(c.file);
        const Bytes hello = read_capture(c.file);
        for (std::size_t n = 0; n < hello.size(); ++n) {
            const HelloResult r = parse_client_hello(std::span{hello}.first(n));
            if (r.status != HelloStatus::need_more || r.sni) {
                ADD_FAILURE() << "prefix of " << n << " bytes gives " << name_of(r.status);
                break;
            }
        }
    }
}

TEST(ClientHello, FinalStatusStaysAfterMoreBytes) {
    const Bytes hello = read_capture("openssl_tls13_sni");
    ClientHelloParser p;
    ASSERT_EQ(p.feed(hello), HelloStatus::done);
    // Bytes after the hello (say early data) are not the parser's: the answer stays.
    EXPECT_EQ(p.feed(to_bytes("GET / HTTP/1.1\r\n")), HelloStatus::done);
    EXPECT_EQ(p.feed(hello), HelloStatus::done);
    EXPECT_EQ(p.sni(), "tls13.example.com");

    ClientHelloParser q;
    ASSERT_EQ(q.feed(to_bytes("GET")), HelloStatus::not_tls);
    EXPECT_EQ(q.feed(hello), HelloStatus::not_tls);
    EXPECT_EQ(q.sni(), std::nullopt);
}

TEST(ClientHello, EmptyFeedNeedsMore) {
    ClientHelloParser p;
    EXPECT_EQ(p.feed({}), HelloStatus::need_more);
    EXPECT_EQ(p.status(), HelloStatus::need_more);
    EXPECT_EQ(p.sni(), std::nullopt);
}

TEST(ClientHello, BytesAfterTheHelloInTheSameReadAreIgnored) {
    Bytes hello = read_capture("curl_sni");
    const Bytes tail = to_bytes("\x17\x03\x03\x00\x05hello");
    hello.insert(hello.end(), tail.begin(), tail.end());
    expect_same(parse_client_hello(hello), {HelloStatus::done, "curl.example.net"});
}

// ---------------------------------------------------------------------------------------------
// Records.

TEST(ClientHello, RoutesHelloSplitAcrossTwoRecords) {
    const Built m = HelloBuilder{}.sni("two.example.com").message();
    const Bytes two = records(m.bytes, m.bytes.size() / 2 + 1);
    ASSERT_EQ(two.size(), m.bytes.size() + 10);
    expect_same(parse_client_hello(two), {HelloStatus::done, "two.example.com"});
    for (std::size_t at = 0; at <= two.size(); ++at) {
        SCOPED_TRACE(at);
        expect_same(feed_split(two, at), {HelloStatus::done, "two.example.com"});
    }
}

TEST(ClientHello, RoutesHelloSplitAcrossManyRecords) {
    const Built m = HelloBuilder{}.sni("many.example.com").message();
    // Fragments of 1 byte cut even the 4-byte handshake header over four records.
    for (std::size_t fragment : std::initializer_list<std::size_t>{1, 2, 3, 5, 7, 64}) {
        SCOPED_TRACE(fragment);
        const Bytes many = records(m.bytes, fragment);
        expect_same(parse_client_hello(many), {HelloStatus::done, "many.example.com"});
        expect_same(feed_bytewise(many), {HelloStatus::done, "many.example.com"});
        for (std::size_t n = 0; n < many.size(); ++n) {
            if (parse_client_hello(std::span{many}.first(n)).status != HelloStatus::need_more) {
                ADD_FAILURE() << "prefix of " << n << " bytes is final";
                break;
            }
        }
    }
}

TEST(ClientHello, AcceptsRecordVersionsOf03x) {
    const Built m = HelloBuilder{}.sni("v.example.com").message();
    for (std::uint16_t version :
         std::initializer_list<std::uint16_t>{0x0300, 0x0301, 0x0302, 0x0303, 0x030F}) {
        SCOPED_TRACE(version);
        expect_same(parse_client_hello(records(m.bytes, 16384, version)),
                    {HelloStatus::done, "v.example.com"});
    }
}

TEST(ClientHello, OtherRecordVersionsAreNotTls) {
    const Built m = HelloBuilder{}.sni("v.example.com").message();
    for (std::uint16_t version :
         std::initializer_list<std::uint16_t>{0x0203, 0x0401, 0x0310, 0x0000, 0xFEFD}) {
        SCOPED_TRACE(version);
        EXPECT_EQ(parse_client_hello(records(m.bytes, 16384, version)).status,
                  HelloStatus::not_tls);
    }
}

TEST(ClientHello, BadVersionInALaterRecordIsMalformed) {
    const Built m = HelloBuilder{}.sni("v.example.com").message();
    Bytes two = records(m.bytes, 40);
    two[45 + 1] = 0x04;  // second record's major version
    EXPECT_EQ(parse_client_hello(two).status, HelloStatus::malformed);
}

TEST(ClientHello, InterleavedNonHandshakeRecordIsMalformed) {
    const Built m = HelloBuilder{}.sni("x.example.com").message();
    const Bytes first = records(std::span{m.bytes}.first(40), 16384);
    const Bytes rest = records(std::span{m.bytes}.subspan(40), 16384);
    for (std::uint8_t type : std::initializer_list<std::uint8_t>{
             20, 21, 23, 24, 0}) {  // CCS, alert, application data, heartbeat
        SCOPED_TRACE(int{type});
        Bytes stream = first;
        const Bytes other = {type, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00};
        stream.insert(stream.end(), other.begin(), other.end());
        stream.insert(stream.end(), rest.begin(), rest.end());
        EXPECT_EQ(parse_client_hello(stream).status, HelloStatus::malformed);
    }
}

TEST(ClientHello, ZeroLengthAndOverlongRecordsAreMalformed) {
    const Built m = HelloBuilder{}.sni("x.example.com").message();
    Bytes empty_first = {22, 3, 1, 0, 0};
    const Bytes whole = records(m.bytes, 16384);
    empty_first.insert(empty_first.end(), whole.begin(), whole.end());
    EXPECT_EQ(parse_client_hello(empty_first).status, HelloStatus::malformed);

    // RFC 8446 §5.1: a fragment of more than 2^14 bytes.
    const Bytes overlong = {22, 3, 1, 0x40, 0x01, 1, 0, 0, 10};
    EXPECT_EQ(parse_client_hello(overlong).status, HelloStatus::malformed);
    const Bytes max = {22, 3, 1, 0x40, 0x00, 1, 0, 0, 10};
    EXPECT_EQ(parse_client_hello(max).status, HelloStatus::need_more);
}

TEST(ClientHello, OtherHandshakeMessagesAreMalformed) {
    for (std::uint8_t type : std::initializer_list<std::uint8_t>{0, 2, 11, 16, 20}) {
        SCOPED_TRACE(int{type});
        const Built r = HelloBuilder{}.handshake_type(type).sni("x.example.com").record();
        EXPECT_EQ(parse_client_hello(r.bytes).status, HelloStatus::malformed);
        // Known from the first handshake byte on.
        EXPECT_EQ(parse_client_hello(std::span{r.bytes}.first(6)).status, HelloStatus::malformed);
    }
}

// ---------------------------------------------------------------------------------------------
// Large and oversized hellos.

TEST(ClientHello, RoutesLargePostQuantumHello) {
    const Built r = chrome_pq_hello("pq.example.com").record();
    ASSERT_GT(r.bytes.size(), 1500U);
    expect_same(parse_client_hello(r.bytes), {HelloStatus::done, "pq.example.com"});

    // As it arrives over Ethernet: TCP segments of 1460 bytes.
    ClientHelloParser p;
    std::size_t pos = 0;
    while (pos < r.bytes.size()) {
        const std::size_t n = std::min<std::size_t>(1460, r.bytes.size() - pos);
        const HelloStatus st = p.feed(std::span{r.bytes}.subspan(pos, n));
        pos += n;
        EXPECT_EQ(st, pos < r.bytes.size() ? HelloStatus::need_more : HelloStatus::done);
    }
    EXPECT_EQ(p.sni(), "pq.example.com");

    // And in small records, as some stacks send it.
    const Built m = chrome_pq_hello("pq.example.com").message();
    expect_same(parse_client_hello(records(m.bytes, 700)), {HelloStatus::done, "pq.example.com"});
}

TEST(ClientHello, EverySplitPointOfThePostQuantumHelloGivesTheOneShotAnswer) {
    const Bytes hello = records(chrome_pq_hello("pq.example.com").message().bytes, 1000);
    for (std::size_t at = 0; at <= hello.size(); ++at) {
        const HelloResult r = feed_split(hello, at);
        if (r.status != HelloStatus::done || r.sni != "pq.example.com") {
            ADD_FAILURE() << "split at " << at << " gives " << name_of(r.status);
            break;
        }
    }
    const std::array<std::size_t, 10> ten = {1, 5, 6, 9, 300, 1004, 1005, 1010, 1500, 2000};
    expect_same(feed_pieces(hello, ten), {HelloStatus::done, "pq.example.com"});
}

TEST(ClientHello, HelloOverTheLimitIsTooLarge) {
    // Padding (RFC 7685, type 21) grows the message to exactly limit + 1 bytes.
    const std::size_t base = HelloBuilder{}.sni("big.example.com").message().bytes.size();
    const std::size_t pad = default_limit + 1 - base - 4;
    const Built over = HelloBuilder{}.sni("big.example.com").extension(21, Bytes(pad)).message();
    ASSERT_EQ(over.bytes.size(), default_limit + 1);
    const Bytes stream = records(over.bytes, 16384);
    EXPECT_EQ(parse_client_hello(stream).status, HelloStatus::too_large);
    // Decided from the handshake header, before the body is gathered.
    EXPECT_EQ(parse_client_hello(std::span{stream}.first(9)).status, HelloStatus::too_large);
    EXPECT_EQ(feed_bytewise(stream).status, HelloStatus::too_large);

    // Exactly at the limit it is whole.
    const Built at = HelloBuilder{}.sni("big.example.com").extension(21, Bytes(pad - 1)).message();
    ASSERT_EQ(at.bytes.size(), default_limit);
    expect_same(parse_client_hello(records(at.bytes, 16384)),
                {HelloStatus::done, "big.example.com"});
    expect_same(parse_client_hello(records(at.bytes, 1000)),
                {HelloStatus::done, "big.example.com"});
}

TEST(ClientHello, HandshakeLengthClaimingMegabytesIsTooLargeAtOnce) {
    const Bytes claim = {22, 3, 1, 0x40, 0x00, 1, 0xFF, 0xFF, 0xFF};
    EXPECT_EQ(parse_client_hello(claim).status, HelloStatus::too_large);
}

TEST(ClientHello, SmallLimitIsHonoured) {
    const Bytes hello = read_capture("openssl_tls12_sni");
    const std::size_t message = hello.size() - 5;
    EXPECT_EQ(parse_client_hello(hello, message).status, HelloStatus::done);
    EXPECT_EQ(parse_client_hello(hello, message - 1).status, HelloStatus::too_large);
    EXPECT_EQ(parse_client_hello(hello, 3).status, HelloStatus::too_large);
    EXPECT_EQ(parse_client_hello(hello, 0).status, HelloStatus::too_large);
}

// ---------------------------------------------------------------------------------------------
// Hostile hellos.

TEST(ClientHello, LengthsThatLieAreNeverDone) {
    struct Case {
        HelloBuilder builder;
        const char* what;
    };
    const std::vector<Case> cases = {
        {HelloBuilder{}.sni("lie.example.com"), "sni only"},
        {HelloBuilder{}
             .extension(10, u16_list({0x1D, 0x17}, 2))
             .sni("lie.example.com")
             .extension(16, {0, 3, 2, 'h', '2'}),
         "sni between extensions"},
        {HelloBuilder{}.session_id({}).server_name({{0, "lie.example.com"}, {7, "other"}}),
         "two entries"},
    };
    for (const auto& c : cases) {
        const Built r = c.builder.record();
        ASSERT_EQ(parse_client_hello(r.bytes).sni, "lie.example.com");
        for (const auto& f : r.fields) {
            for (int delta : {+1, -1}) {
                SCOPED_TRACE(std::string{c.what} + ": " + f.name + (delta > 0 ? " +1" : " -1"));
                Bytes lie = r.bytes;
                std::size_t v = 0;
                for (std::size_t i = 0; i < f.width; ++i) {
                    v = (v << 8) | lie[f.offset + i];
                }
                v = v + static_cast<std::size_t>(delta);
                for (std::size_t i = f.width; i-- > 0;) {
                    lie[f.offset + i] = static_cast<std::uint8_t>(v & 0xFF);
                    v >>= 8;
                }
                const HelloResult got = parse_client_hello(lie);
                expect_same(feed_bytewise(lie), got);
                if (f.name == "record" && delta > 0) {
                    // The record promises one byte more than the hello uses: the hello is
                    // whole all the same, and what follows it is not the parser's business.
                    expect_same(got, {HelloStatus::done, "lie.example.com"});
                } else if (f.name == "handshake" && delta > 0) {
                    // Waits for a byte that a real client would send in a next record.
                    expect_same(got, {HelloStatus::need_more, std::nullopt});
                } else {
                    expect_same(got, {HelloStatus::malformed, std::nullopt});
                }
            }
        }
    }
}

TEST(ClientHello, MalformedBodies) {
    struct Case {
        const char* what;
        HelloBuilder builder;
    };
    const std::vector<Case> cases = {
        {"session id of 33 bytes", HelloBuilder{}.session_id(Bytes(33)).sni("a.example")},
        {"no cipher suite", HelloBuilder{}.cipher_suites({}).sni("a.example")},
        {"odd cipher suites", HelloBuilder{}.cipher_suites({0x13, 0x01, 0x13}).sni("a.example")},
        {"no compression method", HelloBuilder{}.compression({}).sni("a.example")},
        {"bytes after the extensions", HelloBuilder{}.sni("a.example").trailing({0})},
        {"one byte where extensions go", HelloBuilder{}.no_extensions().trailing({0})},
        {"truncated extension header", HelloBuilder{}.sni("a.example").raw({0x00, 0x05, 0x00})},
        {"extension longer than the block",
         HelloBuilder{}.sni("a.example").raw({0x00, 0x05, 0x00, 0x02, 0x00})},
        {"server_name list entry without length", HelloBuilder{}.extension(0, {0, 1, 0})},
        {"server_name with bytes after the list",
         HelloBuilder{}.extension(0, {0, 4, 0, 0, 1, 'a', 0})},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        const Built r = c.builder.record();
        EXPECT_EQ(parse_client_hello(r.bytes).status, HelloStatus::malformed);
        EXPECT_EQ(parse_client_hello(r.bytes).sni, std::nullopt);
    }
}

TEST(ClientHello, ShortestWellFormedHellos) {
    // TLS 1.2 allows a hello without extensions; an empty session id is allowed too.
    expect_same(parse_client_hello(HelloBuilder{}.no_extensions().record().bytes),
                {HelloStatus::done, std::nullopt});
    expect_same(parse_client_hello(HelloBuilder{}.record().bytes),
                {HelloStatus::done, std::nullopt});
    expect_same(parse_client_hello(HelloBuilder{}.session_id({}).sni("a.b").record().bytes),
                {HelloStatus::done, "a.b"});
}

TEST(ClientHello, InvalidHostNamesAreDoneWithoutSni) {
    const std::string label63(63, 'a');
    const std::string name253 =
        label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
    ASSERT_EQ(name253.size(), 253U);
    const std::vector<std::pair<std::string, std::optional<std::string>>> table = {
        {"ok.example.com", "ok.example.com"},
        {"MiXeD.Example.COM", "mixed.example.com"},
        {"under_score-1.example", "under_score-1.example"},
        {name253, name253},
        {name253 + "b", std::nullopt},  // 254 bytes
        {"a" + name253, std::nullopt},
        {std::string(64, 'a') + ".example", std::nullopt},  // 64-byte label
        {"evil.example\r\nHost: x", std::nullopt},
        {"evil.example\n", std::nullopt},
        {"evil.example\r", std::nullopt},
        {"a b.example", std::nullopt},
        {std::string("a\0b.example", 11), std::nullopt},
        {std::string("a.example\0", 10), std::nullopt},
        {"a..example", std::nullopt},
        {".a.example", std::nullopt},
        {"a.example.", std::nullopt},  // trailing dot: an empty last label
        {".", std::nullopt},
        {"", std::nullopt},
        {"a.example:443", std::nullopt},
        {"a/b", std::nullopt},
        {"caf\xC3\xA9.example", std::nullopt},
        {"*.example.com", std::nullopt},
        {"1.2.3.4", "1.2.3.4"},  // digits and dots are a valid name by SPEC §4.2
    };
    for (const auto& [name, want] : table) {
        SCOPED_TRACE(name);
        const Built r = HelloBuilder{}.sni(name).record();
        expect_same(parse_client_hello(r.bytes), {HelloStatus::done, want});
    }
}

TEST(ClientHello, ServerNameListVariants) {
    struct Case {
        const char* what;
        std::vector<std::pair<std::uint8_t, std::string>> entries;
        std::optional<std::string> want;
    };
    const std::vector<Case> cases = {
        // RFC 6066 §3: at most one name per name_type; two host_names are ambiguous.
        {"two host_names", {{0, "a.example"}, {0, "b.example"}}, std::nullopt},
        {"two equal host_names", {{0, "a.example"}, {0, "a.example"}}, std::nullopt},
        {"only another name_type", {{1, "a.example"}}, std::nullopt},
        {"host_name and another type", {{0, "a.example"}, {1, "b.example"}}, "a.example"},
        {"another type then host_name", {{255, "b.example"}, {0, "a.example"}}, "a.example"},
        {"empty list", {}, std::nullopt},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        const Built r = HelloBuilder{}.server_name(c.entries).record();
        expect_same(parse_client_hello(r.bytes), {HelloStatus::done, c.want});
    }
}

TEST(ClientHello, TwoServerNameExtensionsGiveNoSni) {
    const Built r = HelloBuilder{}.sni("a.example").sni("b.example").record();
    expect_same(parse_client_hello(r.bytes), {HelloStatus::done, std::nullopt});
    const Built same = HelloBuilder{}.sni("a.example").sni("a.example").record();
    expect_same(parse_client_hello(same.bytes), {HelloStatus::done, std::nullopt});
}

TEST(ClientHello, HttpRequestIsNotTls) {
    for (const char* text :
         {"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "CONNECT a.example:443 HTTP/1.1\r\n\r\n",
          "PRI * HTTP/2.0\r\n", "\r\n", "SSH-2.0-OpenSSH_9.2\r\n"}) {
        SCOPED_TRACE(text);
        const Bytes bytes = to_bytes(text);
        expect_same(parse_client_hello(bytes), {HelloStatus::not_tls, std::nullopt});
        // Known from the first byte.
        EXPECT_EQ(parse_client_hello(std::span{bytes}.first(1)).status, HelloStatus::not_tls);
    }
}

TEST(ClientHello, SslV2CompatibleHelloIsNotTls) {
    // An SSL 2.0 CLIENT-HELLO in a 2-byte record header (RFC 6101 Appendix E.1; what old
    // clients sent to negotiate TLS 1.0): msg length 0x8031, type 1, version 3.1.
    Bytes v2 = {0x80, 0x2E, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10};
    const Bytes specs = {0x00, 0x00, 0x39, 0x00, 0x00, 0x38, 0x00, 0x00, 0x35, 0x00, 0x00,
                         0x16, 0x00, 0x00, 0x13, 0x00, 0x00, 0x0A, 0x07, 0x00, 0xC0};
    v2.insert(v2.end(), specs.begin(), specs.end());
    const Bytes challenge = filler(16, 4);
    v2.insert(v2.end(), challenge.begin(), challenge.end());
    ASSERT_EQ(v2.size(), 0x2EU + 2);
    EXPECT_EQ(parse_client_hello(v2).status, HelloStatus::not_tls);
    EXPECT_EQ(feed_bytewise(v2).status, HelloStatus::not_tls);
}

TEST(ClientHello, NonHandshakeFirstRecordIsNotTls) {
    for (std::uint8_t type : std::initializer_list<std::uint8_t>{20, 21, 23, 0, 255}) {
        SCOPED_TRACE(int{type});
        const Bytes rec = {type, 3, 3, 0, 2, 1, 0};
        EXPECT_EQ(parse_client_hello(rec).status, HelloStatus::not_tls);
    }
}

TEST(ClientHello, GarbageIsNeverDoneWithSni) {
    // A cheap deterministic sweep beside the fuzzer: mutate each byte of a real hello.
    const Bytes hello = read_capture("openssl_tls13_sni");
    for (std::size_t i = 0; i < hello.size(); ++i) {
        Bytes mutated = hello;
        mutated[i] ^= 0xFF;
        const HelloResult r = parse_client_hello(mutated);
        const HelloResult split = feed_split(mutated, i);
        if (r.status != split.status || r.sni != split.sni) {
            ADD_FAILURE() << "byte " << i << ": split disagrees";
        }
        if (r.sni && *r.sni != "tls13.example.com") {
            // Flipping a byte of the name itself makes it invalid (0xFF-flips of [a-z.] are
            // >= 0x80), so no other name can come out.
            ADD_FAILURE() << "byte " << i << ": SNI " << *r.sni;
        }
    }
}

}  // namespace
