// connect_head: the HTTP CONNECT request we send and the response head we read back. ◇
// Thread affinity: none; one parser per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/config.hpp>
#include <tpt/outcome.hpp>

namespace tpt::connect_head {

// "CONNECT t HTTP/1.1\r\nHost: t\r\n" + headers + "\r\n". A configured Host header
// replaces the default one. Names and values are trusted (validated at config load).
std::string build_request(std::string_view target, const std::vector<config::Header>& headers);

enum class HeadStatus : std::uint8_t {
    need_more,  // feed more bytes
    done,       // the whole head arrived: see status_code(), reason(), leftover
    malformed,  // not an HTTP/1.x response head
    too_large,  // no end of head within the limit
};

// Incremental response-head parser (Beast's response_parser<empty_body>, skip(true), put()).
// RFC 9110 §9.3.6: any 2xx ends a CONNECT exchange and its Content-Length or
// Transfer-Encoding are ignored, so bytes after the head belong to the tunnel.
class ResponseHeadParser {
public:
    explicit ResponseHeadParser(std::size_t limit = max_head_bytes);
    ~ResponseHeadParser();
    ResponseHeadParser(ResponseHeadParser&&) noexcept;
    ResponseHeadParser& operator=(ResponseHeadParser&&) noexcept;

    // Returns the new status. When it becomes done, the bytes of `bytes` after the head are
    // appended to leftover().
    HeadStatus feed(std::span<const std::uint8_t> bytes);
    HeadStatus status() const noexcept { return status_; }

    unsigned status_code() const noexcept { return code_; }
    const std::string& status_line() const noexcept { return status_line_; }  // "HTTP/1.1 407 ..."
    // The auth scheme of Proxy-Authenticate ("Basic", "Negotiate"), never its parameters.
    const std::string& proxy_authenticate_scheme() const noexcept { return auth_scheme_; }
    const std::vector<std::uint8_t>& leftover() const noexcept { return leftover_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::size_t limit_;
    HeadStatus status_ = HeadStatus::need_more;
    unsigned code_ = 0;
    std::string status_line_;
    std::string auth_scheme_;
    std::vector<std::uint8_t> leftover_;
};

}  // namespace tpt::connect_head
