// Tests for tpt::capture: `tpt capture`'s option checks (ports, CIDRs, UID), the nft script
// they give, and how a libnftables error is reported. The kernel side (the script installed,
// traffic redirected) is e2e/test_capture.py.
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/capture.hpp>

namespace {

using tpt::capture::Cidr;
using tpt::capture::Exit;
using tpt::capture::Rules;
using tpt::cli::CaptureArgs;
using tpt::cli::CaptureMode;

CaptureArgs args(std::optional<std::string> ports, std::optional<std::string> to) {
    CaptureArgs a;
    a.ports = std::move(ports);
    a.to = std::move(to);
    return a;
}

// Each text fails to parse with an error containing its message.
template <class Parse>
void expect_errors(Parse parse, const std::vector<std::pair<std::string, std::string>>& bad) {
    for (const auto& [text, message] : bad) {
        SCOPED_TRACE(text);
        const auto r = parse(text);
        ASSERT_FALSE(r);
        EXPECT_NE(r.error().message.find(message), std::string::npos) << r.error().message;
    }
}

TEST(Capture, PortsAreDistinctDecimalsFrom1To65535InTheOrderGiven) {
    EXPECT_EQ(tpt::capture::parse_ports("443,80").value(), (std::vector<std::uint16_t>{443, 80}));
    EXPECT_EQ(tpt::capture::parse_ports("65535").value(), (std::vector<std::uint16_t>{65535}));
    const std::vector<std::pair<std::string, std::string>> bad{
        {"", "\"\" is not a TCP port"},
        {"0", "\"0\" is not a TCP port (1-65535)"},
        {"65536", "\"65536\" is not a TCP port"},
        {"443,", "\"\" is not a TCP port"},
        {",443", "\"\" is not a TCP port"},
        {"443 ,80", "\"443 \" is not a TCP port"},
        {"+443", "\"+443\" is not a TCP port"},
        {"-1", "\"-1\" is not a TCP port"},
        {"https", "\"https\" is not a TCP port"},
        {"99999999999999999999999", "is not a TCP port"},
        {"443,80,443", "port 443 is listed twice"},
    };
    expect_errors(tpt::capture::parse_ports, bad);
}

TEST(Capture, CidrsAreNetworksOfEitherFamilyWrittenAsNftWritesThem) {
    struct Case {
        std::string text;
        bool ipv6;
        std::string canonical;
    };
    const std::vector<Case> good{
        {"10.0.0.0/8", false, "10.0.0.0/8"},      {"10.96.0.0/12", false, "10.96.0.0/12"},
        {"192.168.1.7", false, "192.168.1.7/32"}, {"0.0.0.0/0", false, "0.0.0.0/0"},
        {"fd00::/8", true, "fd00::/8"},           {"FD00:0:0::/64", true, "fd00::/64"},
        {"2001:db8::1", true, "2001:db8::1/128"}, {"::/0", true, "::/0"},
        {"10.1.2.3/32", false, "10.1.2.3/32"},
    };
    for (const Case& c : good) {
        SCOPED_TRACE(c.text);
        const auto r = tpt::capture::parse_cidr(c.text);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_EQ(r->ipv6, c.ipv6);
        EXPECT_EQ(r->to_string(), c.canonical);
    }
    const std::vector<std::pair<std::string, std::string>> bad{
        {"", "is not a CIDR"},
        {"10.0.0/8", "is not a CIDR"},
        {"10.0.0.256/32", "is not a CIDR"},
        {"example.com/8", "is not a CIDR"},
        {"fe80::1%eth0/128", "is not a CIDR"},
        {"10.0.0.0/33", "the prefix length must be 0-32"},
        {"fd00::/129", "the prefix length must be 0-128"},
        {"10.0.0.0/", "the prefix length must be 0-32"},
        {"10.0.0.0/8/8", "the prefix length"},
        {"10.0.0.0/-8", "the prefix length"},
        {"10.0.0.1/8", "has bits set after the /8 prefix"},
        {"10.96.0.1/12", "has bits set after the /12 prefix"},
        {"fd00::1/64", "has bits set after the /64 prefix"},
        {"0.0.0.1/0", "has bits set after the /0 prefix"},
    };
    expect_errors(tpt::capture::parse_cidr, bad);
}

TEST(Capture, RulesFromOptionsNameTheBadOption) {
    CaptureArgs a = args("443,80", "15001");
    a.uid = "1337";
    a.exclude_cidrs = {"10.0.0.0/8,fd00::/8", "172.16.0.0/12"};
    const auto r = tpt::capture::rules_from(a);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->ports, (std::vector<std::uint16_t>{443, 80}));
    EXPECT_EQ(r->to, 15001);
    EXPECT_EQ(r->uid, 1337U);
    ASSERT_EQ(r->exclude.size(), 3U);
    EXPECT_EQ(r->exclude[1], (Cidr{true, "fd00::", 8}));
    EXPECT_TRUE(r->ipv6);
    EXPECT_EQ(tpt::capture::rules_from(args("443", "15001"))->uid, 65532U);

    struct Case {
        CaptureArgs args;
        std::string message;
    };
    CaptureArgs bad_uid = args("443", "15001");
    bad_uid.uid = "nonroot";
    CaptureArgs minus_one = args("443", "15001");
    minus_one.uid = "4294967295";
    CaptureArgs bad_cidr = args("443", "15001");
    bad_cidr.exclude_cidrs = {"10.0.0.0/8,10.0.0.1/8"};
    const std::vector<Case> cases{
        {args(std::nullopt, "15001"), "--ports P,P... is required"},
        {args("443", std::nullopt), "--to PORT is required"},
        {args("443,0", "15001"), "--ports: \"0\" is not a TCP port"},
        {args("443", "70000"), "--to: \"70000\" is not a TCP port"},
        {bad_uid, "--uid: \"nonroot\" is not a numeric UID"},
        {minus_one, "--uid: \"4294967295\" is not a numeric UID"},
        {bad_cidr, "--exclude-cidr: \"10.0.0.1/8\" has bits set"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.message);
        const auto bad = tpt::capture::rules_from(c.args);
        ASSERT_FALSE(bad);
        EXPECT_NE(bad.error().message.find(c.message), std::string::npos) << bad.error().message;
    }
}

TEST(Capture, RemoveNeedsNoPortsButStillChecksWhatIsGiven) {
    CaptureArgs a;
    a.mode = CaptureMode::remove;
    EXPECT_TRUE(tpt::capture::rules_from(a));
    a.exclude_cidrs = {"nonsense"};
    EXPECT_FALSE(tpt::capture::rules_from(a));
}

TEST(Capture, ApplyScriptReplacesBothTablesInOneTransaction) {
    Rules r;
    r.ports = {443, 80};
    r.to = 15001;
    r.exclude = {Cidr{false, "10.0.0.0", 8}, Cidr{true, "fd00::", 8}};
    EXPECT_EQ(tpt::capture::apply_script(r),
              "# tpt capture (SPEC 11): TCP to ports 443,80 -> local port 15001, except UID "
              "65532\n"
              "add table ip tpt_capture\n"
              "delete table ip tpt_capture\n"
              "add table ip6 tpt_capture\n"
              "delete table ip6 tpt_capture\n"
              "table ip tpt_capture {\n"
              "\tchain output {\n"
              "\t\ttype nat hook output priority -100; policy accept;\n"
              "\t\tmeta skuid 65532 return\n"
              "\t\tip daddr 127.0.0.1 return\n"
              "\t\tip daddr 10.0.0.0/8 return\n"
              "\t\ttcp dport { 443, 80 } redirect to :15001\n"
              "\t}\n"
              "}\n"
              "table ip6 tpt_capture {\n"
              "\tchain output {\n"
              "\t\ttype nat hook output priority -100; policy accept;\n"
              "\t\tmeta skuid 65532 return\n"
              "\t\tip6 daddr ::1 return\n"
              "\t\tip6 daddr fd00::/8 return\n"
              "\t\ttcp dport { 443, 80 } redirect to :15001\n"
              "\t}\n"
              "}\n");
}

TEST(Capture, WithoutIpv6TheIpv6TableIsOnlyDeleted) {
    Rules r;
    r.ports = {443};
    r.to = 15001;
    r.uid = 1000;
    r.ipv6 = false;
    r.exclude = {Cidr{true, "fd00::", 8}};
    const std::string script = tpt::capture::apply_script(r);
    EXPECT_NE(script.find("delete table ip6 tpt_capture\n"), std::string::npos);
    EXPECT_EQ(script.find("table ip6 tpt_capture {"), std::string::npos);
    EXPECT_EQ(script.find("fd00::"), std::string::npos);
    EXPECT_NE(script.find("\t\tmeta skuid 1000 return\n"), std::string::npos);
    EXPECT_NE(script.find("\t\ttcp dport { 443 } redirect to :15001\n"), std::string::npos);
}

TEST(Capture, RemoveScriptDeletesOnlyTptTablesPresentOrNot) {
    EXPECT_EQ(tpt::capture::remove_script(),
              "add table ip tpt_capture\n"
              "delete table ip tpt_capture\n"
              "add table ip6 tpt_capture\n"
              "delete table ip6 tpt_capture\n");
}

TEST(Capture, KernelErrorsAreToldApart) {
    // Texts as libnftables 1.0.6 reports them (the first captured as a non-root user).
    const std::vector<std::pair<std::string, Exit>> cases{
        {"Error: Could not process rule: Operation not permitted\nadd table ip tpt_capture\n",
         Exit::no_permission},
        {"Error: Could not process rule: No such file or directory\n"
         "table ip tpt_capture {\n",
         Exit::no_nat},
        {"Error: Could not process rule: Operation not supported\n", Exit::no_nat},
        {"netlink: Error: cache initialization failed: Protocol not supported\n", Exit::no_nat},
        {"Error: Could not process rule: Address family not supported by protocol\n", Exit::no_nat},
        {"Error: Could not process rule: Device or resource busy\n", Exit::failed},
        {"", Exit::failed},
    };
    for (const auto& [text, exit] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(tpt::capture::classify_failure(text), exit);
    }
}

TEST(Capture, PrintWritesTheApplyScriptAndUsageErrorsExit2) {
    std::ostringstream out;
    std::ostringstream err;
    CaptureArgs a = args("443", "15001");
    EXPECT_EQ(tpt::capture::run(a, out, err), Exit::ok);
    EXPECT_EQ(out.str(), tpt::capture::apply_script(*tpt::capture::rules_from(a)));
    EXPECT_EQ(err.str(), "");

    std::ostringstream out2;
    std::ostringstream err2;
    a.mode = CaptureMode::apply;
    a.ports = "443,443";
    EXPECT_EQ(tpt::capture::run(a, out2, err2), Exit::usage);
    EXPECT_EQ(out2.str(), "");
    EXPECT_EQ(err2.str(), "tpt capture: --ports: port 443 is listed twice\n");
}

}  // namespace
