#include <algorithm>
#include <array>
#include <cstddef>

#include <tpt/address.hpp>
#include <tpt/hostname.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

namespace tpt::address {

namespace {

// hostname::is_valid (SPEC §4.2), and RFC 1123 §2.1: a top-level label is never all-numeric,
// so "1.2.3.256" or "10" is a mistyped address, not a name to send to DNS.
bool is_dns_name(std::string_view name) noexcept {
    if (!hostname::is_valid(name)) {
        return false;
    }
    const auto last = name.substr(name.rfind('.') + 1);
    return !std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// inet_pton needs a NUL-terminated string: refuse an embedded NUL (it would cut the text)
// and anything longer than the longest literal.
bool pton(int family, std::string_view text) noexcept {
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN ||
        text.find('\0') != std::string_view::npos) {
        return false;
    }
    std::array<char, INET6_ADDRSTRLEN> buf{};
    text.copy(buf.data(), text.size());
    std::array<unsigned char, sizeof(in6_addr)> out{};
    return inet_pton(family, buf.data(), out.data()) == 1;
}

bool is_ipv4(std::string_view text) noexcept {
    return pton(AF_INET, text);
}
bool is_ipv6(std::string_view text) noexcept {
    return pton(AF_INET6, text);
}

Error error(std::string_view text, std::string_view why) {
    return Error{"invalid address \"" + std::string(text) + "\": " + std::string(why)};
}

}  // namespace

// In the order of the enumeration.
constexpr std::array<std::string_view, 3> family_names{"tcp", "tcp4", "tcp6"};

std::string_view to_string(Family f) noexcept {
    return enum_name(family_names, f, "tcp");
}

Result<Family> parse_family(std::string_view text) {
    const auto it = std::find(family_names.begin(), family_names.end(), text);
    if (it != family_names.end()) {
        return static_cast<Family>(it - family_names.begin());
    }
    return Error{"invalid protocol \"" + std::string(text) + "\": expected tcp, tcp4 or tcp6"};
}

std::string HostPort::to_string() const {
    return host_port_text(host, port, is_ipv6_literal);
}

std::string host_port_text(std::string_view host, std::uint16_t port, bool ipv6_literal) {
    std::string out;
    out.reserve(host.size() + 8);
    if (ipv6_literal) {
        out += '[';
    }
    out += host;
    if (ipv6_literal) {
        out += ']';
    }
    out += ':';
    out += std::to_string(port);
    return out;
}

bool is_ip_literal(std::string_view text) {
    return is_ipv4(text) || is_ipv6(text);
}

Result<HostPort> parse_host_port(std::string_view text, bool allow_port_zero) {
    HostPort hp;
    std::string_view port;
    if (text.starts_with('[')) {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) {
            return error(text, "missing ']'");
        }
        const std::string_view host = text.substr(1, close - 1);
        // Zone ids ("fe80::1%eth0") are refused: HostPort carries no scope id, and a
        // link-local upstream is not something a sidecar connects to.
        if (!is_ipv6(host)) {
            return error(text, "not an IPv6 literal inside [...]");
        }
        const std::string_view after = text.substr(close + 1);
        if (!after.starts_with(':')) {
            return error(text, "missing :port");
        }
        hp.host = std::string(host);
        hp.is_ipv6_literal = true;
        port = after.substr(1);
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return error(text, "missing :port");
        }
        const std::string_view host = text.substr(0, colon);
        if (host.empty()) {
            return error(text, "empty host");
        }
        if (host.find(':') != std::string_view::npos) {
            return error(text, "an IPv6 literal must be in brackets, e.g. [::1]:443");
        }
        if (!is_ipv4(host) && !is_dns_name(host)) {
            return error(text, "host is neither an IP address nor a valid DNS name");
        }
        hp.host = std::string(host);
        port = text.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5) {
        return error(text, "port must be a number from 1 to 65535");
    }
    unsigned value = 0;
    for (const char c : port) {
        if (c < '0' || c > '9') {
            return error(text, "port must be a number from 1 to 65535");
        }
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535 || (value == 0 && !allow_port_zero)) {
        return error(text, "port must be a number from 1 to 65535");
    }
    hp.port = static_cast<std::uint16_t>(value);
    return hp;
}

Result<UpstreamUrl> parse_upstream_url(std::string_view text) {
    const std::size_t sep = text.find("://");
    if (sep == std::string_view::npos) {
        return Error{"invalid upstream URL \"" + std::string(text) +
                     "\": expected tcp://host:port, tcp4://... or tcp6://..."};
    }
    auto family = parse_family(text.substr(0, sep));
    if (!family) {
        return Error{"invalid upstream URL \"" + std::string(text) +
                     "\": scheme must be tcp, tcp4 or tcp6"};
    }
    const std::string_view authority = text.substr(sep + 3);
    if (authority.find_first_of("/?#") != std::string_view::npos) {
        return Error{"invalid upstream URL \"" + std::string(text) +
                     "\": no path, query or fragment allowed"};
    }
    if (authority.find('@') != std::string_view::npos) {
        return Error{"invalid upstream URL \"" + std::string(text) + "\": no user info allowed"};
    }
    auto hp = parse_host_port(authority);
    if (!hp) {
        return Error{"invalid upstream URL \"" + std::string(text) + "\": " + hp.error().message};
    }
    UpstreamUrl url{*family, std::move(hp).value()};
    if (url.family == Family::v4 && url.address.is_ipv6_literal) {
        return Error{"invalid upstream URL \"" + std::string(text) +
                     "\": tcp4 with an IPv6 address"};
    }
    if (url.family == Family::v6 && is_ipv4(url.address.host)) {
        return Error{"invalid upstream URL \"" + std::string(text) +
                     "\": tcp6 with an IPv4 address"};
    }
    return url;
}

}  // namespace tpt::address
