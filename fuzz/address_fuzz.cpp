// Fuzzes address parsing. Properties: an accepted host:port prints back (HostPort::to_string)
// to text that parses to the same value; a bracketed host is an IPv6 literal and an
// unbracketed one never contains ':'; refusing port 0 only ever removes answers; an accepted
// upstream URL rebuilt from its family name and address parses to the same URL; families
// round-trip through their names.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tpt/address.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace address = tpt::address;
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    const auto with_zero = address::parse_host_port(text, true);
    const auto strict = address::parse_host_port(text);
    check(!strict.has_value() ||
          (with_zero.has_value() && *strict == *with_zero && strict->port != 0));
    if (with_zero) {
        const auto& hp = *with_zero;
        check(!hp.host.empty());
        check(hp.is_ipv6_literal == (hp.host.find(':') != std::string::npos));
        check(!hp.is_ipv6_literal || address::is_ip_literal(hp.host));
        const auto again = address::parse_host_port(hp.to_string(), true);
        check(again.has_value() && *again == hp);
    } else {
        check(!with_zero.error().message.empty());
    }

    const auto url = address::parse_upstream_url(text);
    if (url) {
        check(url->address.port != 0);
        const std::string rebuilt =
            std::string(address::to_string(url->family)) + "://" + url->address.to_string();
        const auto again = address::parse_upstream_url(rebuilt);
        check(again.has_value() && again->family == url->family && again->address == url->address);
    }

    const auto family = address::parse_family(text);
    check(!family.has_value() || address::to_string(*family) == text);
    return 0;
}
