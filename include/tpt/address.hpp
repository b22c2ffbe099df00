// address: "host:port", "[v6]:port" and "tcp[46]://host:port" parsing. ◇
// Thread affinity: none (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <tpt/outcome.hpp>

namespace tpt::address {

// tcp = any family, tcp4 = IPv4 only, tcp6 = IPv6 only.
enum class Family : std::uint8_t { any, v4, v6 };

std::string_view to_string(Family f) noexcept;       // "tcp" | "tcp4" | "tcp6"
Result<Family> parse_family(std::string_view text);  // "tcp" | "tcp4" | "tcp6"

struct HostPort {
    std::string host;  // without brackets; an IPv4/IPv6 literal or a DNS name
    std::uint16_t port = 0;
    bool is_ipv6_literal = false;

    // "host:port", with brackets around an IPv6 literal: "[::1]:443".
    std::string to_string() const;
    friend bool operator==(const HostPort&, const HostPort&) = default;
};

// "host:port" without a HostPort to hold them, brackets around an IPv6 literal.
std::string host_port_text(std::string_view host, std::uint16_t port, bool ipv6_literal);

// "1.2.3.4:80", "[::1]:80", "example.com:443". Port 1..65535 (0 allowed only when
// allow_port_zero, for listen addresses in tests). Rejects a missing port, an unbracketed
// IPv6 literal, an empty host, a host that is neither an IP literal nor a valid DNS name
// (hostname::is_valid rules, and a last label that is not all digits, so "1.2.3.256" fails),
// IPv6 zone ids ("[fe80::1%eth0]:80"). The host is kept as written (no case folding).
Result<HostPort> parse_host_port(std::string_view text, bool allow_port_zero = false);

// True when text is an IPv4 dotted quad or an IPv6 literal (without brackets).
bool is_ip_literal(std::string_view text);

struct UpstreamUrl {
    Family family = Family::any;
    HostPort address;
};

// "tcp://host:port", "tcp4://1.2.3.4:80", "tcp6://[::1]:9000". Rejects other schemes,
// missing port, paths, user info, query strings, upper-case schemes, tcp4 with an IPv6
// literal and tcp6 with an IPv4 literal.
Result<UpstreamUrl> parse_upstream_url(std::string_view text);

}  // namespace tpt::address
