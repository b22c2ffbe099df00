// client_hello: the record layer (RFC 8446 §5.1) is unwrapped byte by byte as the bytes arrive;
// the handshake message is gathered into message_ (bounded by limit_) and parsed once whole.
// Every decision depends only on the bytes seen so far, so any split of the input gives the
// answer of the whole input (Beast's basic_parser::put property).
#include <algorithm>
#include <string_view>

#include <tpt/client_hello.hpp>
#include <tpt/hostname.hpp>

namespace tpt::client_hello {
namespace {

constexpr std::uint8_t content_type_handshake = 22;  // RFC 8446 §5.1
constexpr std::uint8_t handshake_client_hello = 1;   // RFC 8446 §4
constexpr std::uint16_t extension_server_name = 0;   // RFC 6066 §3
constexpr std::uint8_t name_type_host_name = 0;      // RFC 6066 §3
constexpr std::size_t record_header_size = 5;
constexpr std::size_t handshake_header_size = 4;
// RFC 8446 §5.1: a TLSPlaintext fragment MUST NOT exceed 2^14 bytes.
constexpr std::size_t max_record_payload = std::size_t{1} << 14;

// The length of the whole handshake message, from its 4-byte header (RFC 8446 §4: a type byte
// and a 24-bit length). Only called once the header is complete.
std::size_t handshake_total(const std::vector<std::uint8_t>& message) {
    return handshake_header_size + ((std::size_t{message[1]} << 16) |
                                    (std::size_t{message[2]} << 8) | std::size_t{message[3]});
}

// A bounds-checked reader over a span: every read states the length it needs and fails
// instead of running past the end of its container.
class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

    std::size_t remaining() const noexcept { return bytes_.size(); }
    bool empty() const noexcept { return bytes_.empty(); }

    bool skip(std::size_t n) noexcept {
        if (n > bytes_.size()) {
            return false;
        }
        bytes_ = bytes_.subspan(n);
        return true;
    }
    bool u8(std::uint8_t& out) noexcept {
        if (bytes_.empty()) {
            return false;
        }
        out = bytes_[0];
        bytes_ = bytes_.subspan(1);
        return true;
    }
    bool u16(std::uint16_t& out) noexcept {
        if (bytes_.size() < 2) {
            return false;
        }
        out = static_cast<std::uint16_t>((bytes_[0] << 8) | bytes_[1]);
        bytes_ = bytes_.subspan(2);
        return true;
    }
    // A vector<floor..ceiling> with a length prefix of prefix_len bytes (RFC 8446 §3.4).
    bool vec(std::size_t prefix_len, Reader& out) noexcept {
        std::size_t n = 0;
        if (prefix_len == 1) {
            std::uint8_t len = 0;
            if (!u8(len)) {
                return false;
            }
            n = len;
        } else {
            std::uint16_t len = 0;
            if (!u16(len)) {
                return false;
            }
            n = len;
        }
        if (n > bytes_.size()) {
            return false;
        }
        out = Reader{bytes_.first(n)};
        bytes_ = bytes_.subspan(n);
        return true;
    }
    std::string_view text() const noexcept {
        return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
    }

private:
    std::span<const std::uint8_t> bytes_;
};

// What the server_name extension yields: the structure is broken, or it held no usable name,
// or it held exactly one host_name.
enum class NameResult : std::uint8_t { malformed, no_name, name };

// RFC 6066 §3: ServerNameList server_name_list<1..2^16-1>; each ServerName is a name_type byte
// and, for every type ("all future data structures ... MUST begin with a 16-bit length"), a
// 2-byte length and that many bytes. "The ServerNameList MUST NOT contain more than one name of
// the same name_type": with two host_names it is unclear which one the server will use, so
// neither is used for routing.
NameResult parse_server_name(Reader ext, std::string_view& name) {
    Reader list{{}};
    if (!ext.vec(2, list) || !ext.empty()) {
        return NameResult::malformed;
    }
    int host_names = 0;
    while (!list.empty()) {
        std::uint8_t type = 0;
        Reader entry{{}};
        if (!list.u8(type) || !list.vec(2, entry)) {
            return NameResult::malformed;
        }
        if (type == name_type_host_name) {
            ++host_names;
            name = entry.text();
        }
    }
    return host_names == 1 ? NameResult::name : NameResult::no_name;
}

}  // namespace

ClientHelloParser::ClientHelloParser(std::size_t limit) : limit_(limit) {}

// A parser's state machine in one function (record header, record payload, message), over
// the 60-line rule on purpose: every transition and its bound stay in view.
HelloStatus ClientHelloParser::feed(std::span<const std::uint8_t> bytes) {
    while (status_ == HelloStatus::need_more && !bytes.empty()) {
        if (record_remaining_ == 0) {
            // Gather a record header, judging each byte as soon as it is known.
            const std::uint8_t b = bytes[0];
            bytes = bytes.subspan(1);
            ++consumed_;
            record_header_[record_header_len_++] = b;
            const bool first_record = consumed_ <= record_header_size;
            // The first record decides whether this is TLS at all: content type 22 and a version
            // 0x03 0x0X. An SSLv2-compatible hello starts with a byte >= 0x80 and ends here.
            // Later records that break the framing are a broken TLS stream instead.
            const HelloStatus bad = first_record ? HelloStatus::not_tls : HelloStatus::malformed;
            const bool wrong = (record_header_len_ == 1 && b != content_type_handshake) ||
                               (record_header_len_ == 2 && b != 0x03) ||
                               (record_header_len_ == 3 && (b & 0xF0) != 0);
            if (wrong) {
                status_ = bad;
            } else if (record_header_len_ == record_header_size) {
                record_header_len_ = 0;
                const std::size_t len =
                    (std::size_t{record_header_[3]} << 8) | std::size_t{record_header_[4]};
                // RFC 8446 §5.1: no zero-length handshake fragments, none above 2^14.
                if (len == 0 || len > max_record_payload) {
                    status_ = HelloStatus::malformed;
                } else {
                    record_remaining_ = len;
                }
            }
            continue;
        }

        // Inside a record payload: append what belongs to the handshake message, first its
        // 4-byte header, then up to the length that header announced.
        const bool had_header = message_.size() >= handshake_header_size;
        const std::size_t want = had_header ? handshake_total(message_) : handshake_header_size;
        const std::size_t take =
            std::min({bytes.size(), record_remaining_, want - message_.size()});
        if (message_.size() + take > limit_) {
            status_ = HelloStatus::too_large;
            break;
        }
        message_.insert(message_.end(), bytes.begin(),
                        bytes.begin() + static_cast<std::ptrdiff_t>(take));
        bytes = bytes.subspan(take);
        record_remaining_ -= take;
        consumed_ += take;

        if (message_[0] != handshake_client_hello) {
            status_ = HelloStatus::malformed;
        } else if (message_.size() >= handshake_header_size) {
            const std::size_t total = handshake_total(message_);
            if (!had_header) {
                // Refuse before gathering, so the memory kept never exceeds limit_.
                if (total > limit_) {
                    status_ = HelloStatus::too_large;
                    continue;
                }
                message_.reserve(total);
            }
            if (message_.size() == total) {
                status_ = parse_message();
            }
        }
    }
    if (status_ != HelloStatus::need_more) {
        // The gathered bytes are no longer needed; give the memory back at once.
        std::vector<std::uint8_t>().swap(message_);
    }
    return status_;
}

// RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2, where extensions may be absent):
//   ProtocolVersion legacy_version; Random random; opaque legacy_session_id<0..32>;
//   CipherSuite cipher_suites<2..2^16-2>; opaque legacy_compression_methods<1..2^8-1>;
//   Extension extensions<8..2^16-1>;
// Every length must fit its container and the extensions must end exactly where the message
// ends. Extensions other than server_name are skipped by their length.
HelloStatus ClientHelloParser::parse_message() {
    Reader msg{std::span<const std::uint8_t>{message_}.subspan(handshake_header_size)};
    Reader session_id{{}};
    Reader suites{{}};
    Reader compression{{}};
    if (!msg.skip(2 + 32) || !msg.vec(1, session_id) || session_id.remaining() > 32 ||
        !msg.vec(2, suites) || suites.remaining() < 2 || suites.remaining() % 2 != 0 ||
        !msg.vec(1, compression) || compression.empty()) {
        return HelloStatus::malformed;
    }
    if (msg.empty()) {
        return HelloStatus::done;  // a hello without extensions (TLS 1.2 and older)
    }
    Reader extensions{{}};
    if (!msg.vec(2, extensions) || !msg.empty()) {
        return HelloStatus::malformed;
    }
    std::string_view name;
    int server_names = 0;
    bool have_name = false;
    while (!extensions.empty()) {
        std::uint16_t type = 0;
        Reader data{{}};
        if (!extensions.u16(type) || !extensions.vec(2, data)) {
            return HelloStatus::malformed;
        }
        if (type != extension_server_name) {
            continue;
        }
        // RFC 8446 §4.2: no two extensions of one type; a second server_name makes the name
        // ambiguous, so none is used.
        ++server_names;
        switch (parse_server_name(data, name)) {
            case NameResult::malformed:
                return HelloStatus::malformed;
            case NameResult::no_name:
                have_name = false;
                break;
            case NameResult::name:
                have_name = true;
                break;
        }
    }
    if (have_name && server_names == 1 && hostname::is_valid(name)) {
        sni_ = hostname::to_lower(name);
    }
    return HelloStatus::done;
}

HelloResult parse_client_hello(std::span<const std::uint8_t> bytes, std::size_t limit) {
    ClientHelloParser parser{limit};
    const HelloStatus status = parser.feed(bytes);
    return {status, parser.sni()};
}

}  // namespace tpt::client_hello
