// capture: the netfilter rules of transparent egress capture (SPEC §11): `tpt capture`'s
// options checked and turned into one nft script; ◇ except run(), the module's one I/O
// function (src/capture/nftables.cpp), which submits the script through libnftables.
// Thread affinity: the main thread of `tpt capture` (a run of its own, never beside the proxy).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/cli.hpp>
#include <tpt/outcome.hpp>

namespace tpt::capture {

// tpt's tables, one per family: `table ip tpt_capture` and `table ip6 tpt_capture`. Nothing
// else in the ruleset is ever touched.
inline constexpr std::string_view table_name = "tpt_capture";
// The image's user (Dockerfile USER): tpt's own upstream connections are never captured.
inline constexpr std::uint32_t default_uid = 65532;

// An address range, as nft writes it: the network address (inet_ntop form) and its prefix.
struct Cidr {
    bool ipv6 = false;
    std::string network;
    unsigned prefix = 0;

    std::string to_string() const;  // "10.0.0.0/8", "fd00::/8"
    friend bool operator==(const Cidr&, const Cidr&) = default;
};

struct Rules {
    std::vector<std::uint16_t> ports;  // distinct, in the order given
    std::uint16_t to = 0;              // the transparent listener's port
    std::uint32_t uid = default_uid;   // sockets of this user are never captured
    std::vector<Cidr> exclude;         // never captured (besides 127.0.0.1/32 and ::1/128)
    bool ipv6 = true;                  // false: no ip6 table (IPv6 ranges in exclude unused)

    friend bool operator==(const Rules&, const Rules&) = default;
};

// A TCP port, 1..65535, in decimal without sign or spaces.
Result<std::uint16_t> parse_port(std::string_view text);
// "443,80": one or more distinct ports separated by commas.
Result<std::vector<std::uint16_t>> parse_ports(std::string_view text);
// "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128 range). Rejects bits set beyond
// the prefix ("10.0.0.1/8" is a typo for a host or a network, and nft would not say which),
// zone ids, and prefixes longer than the family allows.
Result<Cidr> parse_cidr(std::string_view text);

// The checked rules of `tpt capture`. --ports and --to are required but for --remove (which
// removes tpt's tables whatever they hold). Each --exclude-cidr may hold several CIDRs
// separated by commas. The error names the option.
Result<Rules> rules_from(const cli::CaptureArgs& args);

// The nft script --apply submits and --print prints: one transaction that deletes tpt's
// tables (creating them first, so that deleting never fails) and creates them anew with the
// rules. The kernel applies it atomically: never two copies, never a moment without rules.
std::string apply_script(const Rules& rules);
// Deletes both tpt tables, present or not.
std::string remove_script();

// How `tpt capture` ends; the values are its exit status.
enum class Exit : std::uint8_t {
    ok = 0,
    failed = 1,         // the kernel refused the script for another reason
    usage = 2,          // a bad option, port, CIDR or UID
    no_permission = 3,  // no CAP_NET_ADMIN in this network namespace
    no_nat = 4,         // the kernel lacks nf_tables, its NAT chains or REDIRECT
};

// What a libnftables error text means (permission, missing kernel support, other).
Exit classify_failure(std::string_view nft_error);

// Runs `tpt capture` (I/O): prints the script, or applies or removes it in the calling
// thread's network namespace, reporting to out and err.
Exit run(const cli::CaptureArgs& args, std::ostream& out, std::ostream& err);

}  // namespace tpt::capture
