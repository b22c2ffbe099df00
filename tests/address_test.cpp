#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/address.hpp>

namespace {

using tpt::address::Family;
using tpt::address::HostPort;

TEST(Address, FamiliesRoundTripThroughTheirNames) {
    for (const Family f : {Family::any, Family::v4, Family::v6}) {
        const auto name = tpt::address::to_string(f);
        SCOPED_TRACE(name);
        const auto back = tpt::address::parse_family(name);
        ASSERT_TRUE(back.has_value()) << back.error().message;
        EXPECT_EQ(*back, f);
    }
    EXPECT_EQ(tpt::address::to_string(Family::any), "tcp");
    EXPECT_EQ(tpt::address::to_string(Family::v4), "tcp4");
    EXPECT_EQ(tpt::address::to_string(Family::v6), "tcp6");
}

TEST(Address, RejectsUnknownFamilies) {
    for (const char* text : {"", "TCP", "udp", "tcp5", "tcp46", " tcp", "tcp "}) {
        SCOPED_TRACE(text);
        EXPECT_FALSE(tpt::address::parse_family(text).has_value());
    }
}

TEST(Address, ParsesHostPort) {
    const std::vector<std::pair<std::string, HostPort>> cases = {
        {"1.2.3.4:80", {"1.2.3.4", 80, false}},
        {"0.0.0.0:8443", {"0.0.0.0", 8443, false}},
        {"127.0.0.1:65535", {"127.0.0.1", 65535, false}},
        {"[::1]:80", {"::1", 80, true}},
        {"[::]:8443", {"::", 8443, true}},
        {"[2001:db8::1]:443", {"2001:db8::1", 443, true}},
        {"[::ffff:1.2.3.4]:1", {"::ffff:1.2.3.4", 1, true}},
        {"example.com:443", {"example.com", 443, false}},
        {"Proxy.Internal:3128", {"Proxy.Internal", 3128, false}},
        {"localhost:1", {"localhost", 1, false}},
        {"my_svc.ns.svc.cluster.local:9000", {"my_svc.ns.svc.cluster.local", 9000, false}},
        {"example.com:00080", {"example.com", 80, false}},
        {"1a.example:80", {"1a.example", 80, false}},
        {std::string(63, 'a') + ".com:1", {std::string(63, 'a') + ".com", 1, false}},
    };
    for (const auto& [text, want] : cases) {
        SCOPED_TRACE(text);
        const auto got = tpt::address::parse_host_port(text);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(*got, want);
    }
}

TEST(Address, RejectsBadHostPort) {
    const std::string long_name = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                                  std::string(63, 'c') + "." + std::string(62, 'd');  // 254
    const std::vector<std::string> cases = {
        "",
        ":",
        ":80",
        "example.com",
        "example.com:",
        "1.2.3.4",
        "::1:80",
        "::1",
        "2001:db8::1:443",
        "[::1]",
        "[::1]80",
        "[::1]:",
        "[::1:80",
        "::1]:80",
        "[]:80",
        "[1.2.3.4]:80",
        "[example.com]:80",
        "[fe80::1%eth0]:80",
        "[fe80::1%25eth0]:80",
        "[::1]:80:80",
        "[[::1]]:80",
        "example.com:0",
        "example.com:65536",
        "example.com:99999",
        "example.com:99999999999",
        "example.com:184467440737095516170",
        "example.com:-1",
        "example.com:+80",
        "example.com:8 0",
        "example.com:80 ",
        " example.com:80",
        "example.com:0x50",
        "example.com:http",
        "1.2.3.256:80",
        "1.2.3:80",
        "01.2.3.4:80",
        "10:80",
        "example..com:80",
        ".example.com:80",
        "example.com.:80",
        "*.example.com:80",
        "exa mple.com:80",
        "b\303\274cher.example:80",
        std::string("1.2.3.4\0junk:80", 15),
        std::string("[::1\0junk]:80", 13),
        std::string(64, 'a') + ".com:80",
        long_name + ":80",
        "tcp://example.com:80",
    };
    for (const auto& text : cases) {
        SCOPED_TRACE(text.size() > 80 ? std::to_string(text.size()) + " bytes" : text);
        const auto got = tpt::address::parse_host_port(text);
        ASSERT_FALSE(got.has_value()) << got->to_string();
        EXPECT_FALSE(got.error().message.empty());
    }
}

TEST(Address, AcceptsTheLongestValidName) {
    const std::string name = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                             std::string(63, 'c') + "." + std::string(61, 'd');
    ASSERT_EQ(name.size(), 253U);
    const auto got = tpt::address::parse_host_port(name + ":443");
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(got->host, name);
}

TEST(Address, PortZeroOnlyWhenAllowed) {
    const std::vector<std::pair<std::string, bool>> cases = {
        {"127.0.0.1:0", true},      {"[::1]:0", true},     {"localhost:00000", true},
        {"127.0.0.1:65536", false}, {"127.0.0.1:", false},
    };
    for (const auto& [text, ok] : cases) {
        SCOPED_TRACE(text);
        EXPECT_FALSE(tpt::address::parse_host_port(text).has_value());
        const auto got = tpt::address::parse_host_port(text, true);
        EXPECT_EQ(got.has_value(), ok);
        if (got.has_value()) {
            EXPECT_EQ(got->port, 0);
        }
    }
}

TEST(Address, HostPortPrintsBackToItsInput) {
    for (const char* text : {"1.2.3.4:80", "[::1]:443", "[2001:db8::1]:65535", "a.example:1"}) {
        SCOPED_TRACE(text);
        const auto got = tpt::address::parse_host_port(text);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->to_string(), text);
    }
}

TEST(Address, RecognisesIpLiterals) {
    const std::vector<std::pair<std::string, bool>> cases = {
        {"1.2.3.4", true},
        {"255.255.255.255", true},
        {"::", true},
        {"::1", true},
        {"2001:db8::1", true},
        {"::ffff:10.0.0.1", true},
        {"", false},
        {"1.2.3", false},
        {"1.2.3.4.5", false},
        {"256.1.1.1", false},
        {"01.2.3.4", false},
        {"[::1]", false},
        {"fe80::1%eth0", false},
        {"example.com", false},
        {"1.2.3.4 ", false},
        {std::string("1.2.3.4\0", 8), false},
        {std::string(200, '1'), false},
    };
    for (const auto& [text, want] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(tpt::address::is_ip_literal(text), want);
    }
}

TEST(Address, ParsesUpstreamUrls) {
    struct Case {
        std::string text;
        Family family;
        HostPort address;
    };
    const std::vector<Case> cases = {
        {"tcp://proxy.internal:3128", Family::any, {"proxy.internal", 3128, false}},
        {"tcp://1.2.3.4:80", Family::any, {"1.2.3.4", 80, false}},
        {"tcp://[::1]:9000", Family::any, {"::1", 9000, true}},
        {"tcp4://1.2.3.4:80", Family::v4, {"1.2.3.4", 80, false}},
        {"tcp4://proxy:80", Family::v4, {"proxy", 80, false}},
        {"tcp6://[::1]:9000", Family::v6, {"::1", 9000, true}},
        {"tcp6://proxy:80", Family::v6, {"proxy", 80, false}},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        const auto got = tpt::address::parse_upstream_url(c.text);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->family, c.family);
        EXPECT_EQ(got->address, c.address);
    }
}

TEST(Address, RejectsBadUpstreamUrls) {
    const std::vector<std::string> cases = {
        "",
        "tcp://",
        "tcp://host",
        "tcp://host:",
        "tcp://:80",
        "tcp://host:0",
        "tcp://host:65536",
        "tcp://host:99999999999",
        "http://x:1",
        "https://x:1",
        "udp://x:1",
        "TCP://x:1",
        "tcp:/x:1",
        "tcp:x:1",
        "//x:1",
        "x:1",
        "tcp://u@h:1",
        "tcp://u:p@h:1",
        "tcp://h:1/",
        "tcp://h:1/path",
        "tcp://h:1?q=1",
        "tcp://h:1#frag",
        "tcp://::1:80",
        "tcp://[fe80::1%eth0]:80",
        "tcp4://[::1]:80",
        "tcp6://1.2.3.4:80",
        " tcp://h:1",
        "tcp://h:1 ",
        "tcp://tcp://h:1",
    };
    for (const auto& text : cases) {
        SCOPED_TRACE(text);
        const auto got = tpt::address::parse_upstream_url(text);
        ASSERT_FALSE(got.has_value()) << got->address.to_string();
        EXPECT_NE(got.error().message.find("upstream URL"), std::string::npos)
            << got.error().message;
    }
}

}  // namespace
