// capture: `tpt capture`'s options checked, and the nft script they give (SPEC §11).
#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <optional>
#include <sstream>

#include <tpt/capture.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

namespace tpt::capture {
namespace {

// A whole decimal number (no sign, no spaces) up to max.
template <class T>
std::optional<T> parse_decimal(std::string_view text, T max) {
    unsigned long long value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end || value > max) {
        return std::nullopt;
    }
    return static_cast<T>(value);
}

std::vector<std::string_view> split_commas(std::string_view text) {
    std::vector<std::string_view> parts;
    for (std::size_t start = 0;;) {
        const std::size_t comma = text.find(',', start);
        parts.push_back(text.substr(start, comma - start));
        if (comma == std::string_view::npos) {
            return parts;
        }
        start = comma + 1;
    }
}

// True when any bit of addr after the first `prefix` bits is set.
bool has_host_bits(const std::array<unsigned char, 16>& addr, std::size_t bytes, unsigned prefix) {
    for (std::size_t i = 0; i < bytes; ++i) {
        const unsigned first_bit = static_cast<unsigned>(i) * 8;
        const unsigned keep = prefix > first_bit ? std::min(prefix - first_bit, 8U) : 0U;
        const auto host_mask = static_cast<unsigned char>(0xFFU >> keep);
        if ((addr[i] & host_mask) != 0) {
            return true;
        }
    }
    return false;
}

Error option_error(std::string_view option, const Error& e) {
    return Error{std::string(option) + ": " + e.message};
}

// The table of one family (ip or ip6), with its one chain.
void write_table(std::ostream& out, const Rules& rules, bool ipv6) {
    const std::string_view family = ipv6 ? "ip6" : "ip";
    out << "table " << family << " " << table_name << " {\n"
        << "\tchain output {\n"
        // dstnat: where iptables' nat OUTPUT and Istio's rules run, before routing.
        << "\t\ttype nat hook output priority -100; policy accept;\n"
        << "\t\tmeta skuid " << rules.uid << " return\n"
        << "\t\t" << family << " daddr " << (ipv6 ? "::1" : "127.0.0.1") << " return\n";
    for (const Cidr& c : rules.exclude) {
        if (c.ipv6 == ipv6) {
            out << "\t\t" << family << " daddr " << c.to_string() << " return\n";
        }
    }
    out << "\t\ttcp dport { ";
    for (std::size_t i = 0; i < rules.ports.size(); ++i) {
        out << (i == 0 ? "" : ", ") << rules.ports[i];
    }
    out << " } redirect to :" << rules.to << "\n"
        << "\t}\n"
        << "}\n";
}

// `add` first makes `delete` succeed whether or not the table exists (nft 1.0.6 has no
// `destroy`).
void write_delete(std::ostream& out, std::string_view family) {
    out << "add table " << family << " " << table_name << "\n"
        << "delete table " << family << " " << table_name << "\n";
}

}  // namespace

std::string Cidr::to_string() const {
    return network + "/" + std::to_string(prefix);
}

Result<std::uint16_t> parse_port(std::string_view text) {
    const auto port = parse_decimal<std::uint16_t>(text, std::numeric_limits<std::uint16_t>::max());
    if (!port || *port == 0) {
        return Error{"\"" + std::string(text) + "\" is not a TCP port (1-65535)"};
    }
    return *port;
}

Result<std::vector<std::uint16_t>> parse_ports(std::string_view text) {
    std::vector<std::uint16_t> ports;
    for (const std::string_view part : split_commas(text)) {
        auto port = parse_port(part);
        if (!port) {
            return port.error();
        }
        if (std::find(ports.begin(), ports.end(), *port) != ports.end()) {
            return Error{"port " + std::to_string(*port) + " is listed twice"};
        }
        ports.push_back(*port);
    }
    return ports;
}

Result<Cidr> parse_cidr(std::string_view text) {
    const std::size_t slash = text.find('/');
    const std::string address(text.substr(0, slash));
    Cidr cidr;
    cidr.ipv6 = address.find(':') != std::string::npos;
    const unsigned max_prefix = cidr.ipv6 ? 128 : 32;
    std::array<unsigned char, 16> bytes{};
    const Error bad{"\"" + std::string(text) + "\" is not a CIDR (an IPv4 or IPv6 address" +
                    ", optionally /prefix)"};
    if (inet_pton(cidr.ipv6 ? AF_INET6 : AF_INET, address.c_str(), bytes.data()) != 1) {
        return bad;
    }
    cidr.prefix = max_prefix;
    if (slash != std::string_view::npos) {
        const auto prefix = parse_decimal<unsigned>(text.substr(slash + 1), max_prefix);
        if (!prefix) {
            return Error{"\"" + std::string(text) + "\": the prefix length must be 0-" +
                         std::to_string(max_prefix)};
        }
        cidr.prefix = *prefix;
    }
    if (has_host_bits(bytes, max_prefix / 8, cidr.prefix)) {
        return Error{"\"" + std::string(text) + "\" has bits set after the /" +
                     std::to_string(cidr.prefix) + " prefix: write the network address"};
    }
    std::array<char, INET6_ADDRSTRLEN> buf{};
    inet_ntop(cidr.ipv6 ? AF_INET6 : AF_INET, bytes.data(), buf.data(), buf.size());
    cidr.network = buf.data();
    return cidr;
}

Result<Rules> rules_from(const cli::CaptureArgs& args) {
    Rules rules;
    rules.ipv6 = args.ipv6;
    if (args.mode != cli::CaptureMode::remove) {
        if (!args.ports || !args.to) {
            return Error{args.ports ? "--to PORT is required (the transparent listener's port)"
                                    : "--ports P,P... is required (the ports to capture)"};
        }
        auto ports = parse_ports(*args.ports);
        if (!ports) {
            return option_error("--ports", ports.error());
        }
        rules.ports = std::move(*ports);
        auto to = parse_port(*args.to);
        if (!to) {
            return option_error("--to", to.error());
        }
        rules.to = *to;
    }
    if (args.uid) {
        const auto uid = parse_decimal<std::uint32_t>(*args.uid, 4294967294U);  // -1 is no UID
        if (!uid) {
            return Error{"--uid: \"" + *args.uid + "\" is not a numeric UID"};
        }
        rules.uid = *uid;
    }
    for (const std::string& option : args.exclude_cidrs) {
        for (const std::string_view text : split_commas(option)) {
            auto cidr = parse_cidr(text);
            if (!cidr) {
                return option_error("--exclude-cidr", cidr.error());
            }
            rules.exclude.push_back(std::move(*cidr));
        }
    }
    return rules;
}

std::string apply_script(const Rules& rules) {
    std::ostringstream out;
    out << "# tpt capture (SPEC 11): TCP to ports ";
    for (std::size_t i = 0; i < rules.ports.size(); ++i) {
        out << (i == 0 ? "" : ",") << rules.ports[i];
    }
    out << " -> local port " << rules.to << ", except UID " << rules.uid << "\n";
    write_delete(out, "ip");
    write_delete(out, "ip6");  // also with --no-ipv6: an earlier run's IPv6 rules go
    write_table(out, rules, false);
    if (rules.ipv6) {
        write_table(out, rules, true);
    }
    return out.str();
}

std::string remove_script() {
    std::ostringstream out;
    write_delete(out, "ip");
    write_delete(out, "ip6");
    return out.str();
}

Exit classify_failure(std::string_view nft_error) {
    const auto says = [nft_error](std::string_view what) {
        return nft_error.find(what) != std::string_view::npos;
    };
    if (says("Operation not permitted") || says("Permission denied")) {
        return Exit::no_permission;
    }
    // ENOENT for an unknown chain type or expression (nft_chain_nat, nft_redir missing),
    // EOPNOTSUPP, EPROTONOSUPPORT (no nf_tables at all), EAFNOSUPPORT (no IPv6 in the kernel).
    for (const std::string_view missing :
         {"No such file or directory", "Operation not supported", "Protocol not supported",
          "Address family not supported"}) {
        if (says(missing)) {
            return Exit::no_nat;
        }
    }
    return Exit::failed;
}

}  // namespace tpt::capture
