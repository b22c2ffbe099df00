// client_hello: incremental, bounded TLS ClientHello parser that extracts the SNI host name. ◇
// Thread affinity: none; one parser per connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <tpt/outcome.hpp>

namespace tpt::client_hello {

enum class HelloStatus : std::uint8_t {
    need_more,  // feed more bytes
    done,       // a whole ClientHello arrived; sni() may hold a host name
    not_tls,    // the first bytes are not a TLS handshake record
    malformed,  // lengths lie, wrong types, truncated structures
    too_large,  // the hello would exceed the limit
};

// Feed the bytes as they arrive from the client (RFC 8446 §5.1 records of content type 22,
// possibly many, each with a fragment of the handshake message; RFC 8446 §4.1.2 ClientHello;
// RFC 6066 §3 server_name). Memory: at most `limit` bytes of handshake message are kept.
// After a final status (anything but need_more) further feeds return the same status.
class ClientHelloParser {
public:
    explicit ClientHelloParser(std::size_t limit = max_head_bytes);

    HelloStatus feed(std::span<const std::uint8_t> bytes);
    HelloStatus status() const noexcept { return status_; }

    // The host_name from server_name, lower-cased, when status() == done and it was present
    // and valid per hostname::is_valid. Invalid or absent -> nullopt.
    const std::optional<std::string>& sni() const noexcept { return sni_; }

private:
    HelloStatus parse_message();

    std::size_t limit_;
    HelloStatus status_ = HelloStatus::need_more;
    std::array<std::uint8_t, 5> record_header_ = {};
    std::size_t record_header_len_ = 0;
    std::size_t record_remaining_ = 0;   // payload bytes left in the current record
    std::size_t consumed_ = 0;           // total bytes fed so far
    std::vector<std::uint8_t> message_;  // handshake message bytes gathered so far
    std::optional<std::string> sni_;
};

// One-shot convenience: status and SNI of a complete byte string.
struct HelloResult {
    HelloStatus status;
    std::optional<std::string> sni;
};
HelloResult parse_client_hello(std::span<const std::uint8_t> bytes,
                               std::size_t limit = max_head_bytes);

}  // namespace tpt::client_hello
