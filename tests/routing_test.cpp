// Tests of routing::Table (SPEC §4.3-4.4) and routing::diff().
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include <tpt/config.hpp>
#include <tpt/routing.hpp>

namespace {

using namespace tpt;
using config::Config;

Config load(const std::string& yaml) {
    auto r = config::load(yaml, "routing.yaml", [](std::string_view name) {
        return name == "AUTH" ? std::optional<std::string>("secret") : std::nullopt;
    });
    if (!r) {
        throw std::runtime_error("config did not load:\n" + config::to_string(r.error()));
    }
    return std::move(r).value();
}

const config::Server& server(const Config& c, std::string_view name) {
    for (const auto& s : c.servers) {
        if (s.name == name) {
            return s;
        }
    }
    throw std::runtime_error("no server " + std::string(name));
}

const std::string routes_yaml = R"(
servers:
  edge:
    listen: "127.0.0.1:1"
    tls: true
    sni:
      www.example.org: exact_up
      "*.example.org": wild_up
      "*.deep.example.org": { upstream: deeper_up, via: {} }
      "*.org": { upstream: echo, via: { target: "tld.proxy:3128" } }
      api.deep.example.org: { upstream: health }
    default: ban
    via:
      target: "server.proxy:3128"
      headers:
        Proxy-Authorization: "Basic ${AUTH}"
  plain:
    listen: "127.0.0.1:2"
    sni:
      www.example.org: exact_up
    default: exact_up
upstream:
  exact_up: "tcp://10.0.0.1:443"
  wild_up: "tcp://10.0.0.2:443"
  deeper_up: "tcp://10.0.0.3:443"
)";

TEST(RoutingTable, ExactMatchWinsOverWildcards) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "edge"), c);
    const auto& r = t.match("www.example.org");
    EXPECT_EQ(r.key, "www.example.org");
    EXPECT_EQ(r.upstream, "exact_up");
    ASSERT_NE(r.target, nullptr);
    EXPECT_EQ(r.target->address.to_string(), "10.0.0.1:443");
    EXPECT_EQ(t.match("api.deep.example.org").upstream, "health");
}

TEST(RoutingTable, LongestWildcardSuffixWins) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "edge"), c);
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"a.example.org", "*.example.org"},
        {"a.b.example.org", "*.example.org"},
        {"deep.example.org", "*.example.org"},
        {"x.deep.example.org", "*.deep.example.org"},
        {"y.x.deep.example.org", "*.deep.example.org"},
        {"example.org", "*.org"},
        {"other.org", "*.org"},
        {"org", "default"},
        {"example.com", "default"},
        {"www.example.org.evil.com", "default"},
        {"xexample.org", "*.org"},
    };
    for (const auto& [sni, key] : cases) {
        SCOPED_TRACE(sni);
        EXPECT_EQ(t.match(sni).key, key);
    }
}

TEST(RoutingTable, WildcardNeedsAtLeastOneLabel) {
    const Config c = load(R"(
servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    sni: { "*.example.org": echo }
)");
    const routing::Table t(server(c, "s"), c);
    EXPECT_EQ(t.match("a.example.org").key, "*.example.org");
    EXPECT_EQ(t.match("a.b.example.org").key, "*.example.org");
    EXPECT_EQ(t.match("example.org").key, "default");
    EXPECT_EQ(t.match(".example.org").key, "*.example.org");  // never valid SNI; no crash
    EXPECT_EQ(t.match("example.org.").key, "default");
}

TEST(RoutingTable, NoSniOrEmptySniTakesTheDefault) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "edge"), c);
    EXPECT_EQ(&t.match(std::nullopt), &t.default_route());
    EXPECT_EQ(&t.match(""), &t.default_route());
    EXPECT_EQ(t.default_route().key, "default");
    EXPECT_EQ(t.default_route().upstream, "ban");
    EXPECT_EQ(t.default_route().target, nullptr);
}

TEST(RoutingTable, EffectiveViaIsTheRoutesElseTheServers) {
    const Config c = load(routes_yaml);
    const auto& edge = server(c, "edge");
    const routing::Table t(edge, c);

    const auto& inherit = t.match("www.example.org");
    ASSERT_NE(inherit.via, nullptr);
    EXPECT_EQ(inherit.via, &*edge.via);
    EXPECT_EQ(inherit.via->target->to_string(), "server.proxy:3128");
    EXPECT_EQ(inherit.via->headers.at(0).value, "Basic secret");

    const auto& direct = t.match("x.deep.example.org");
    ASSERT_NE(direct.via, nullptr);
    EXPECT_TRUE(direct.via->is_direct());

    const auto& own = t.match("other.org");
    ASSERT_NE(own.via, nullptr);
    EXPECT_EQ(own.via->target->to_string(), "tld.proxy:3128");
    EXPECT_TRUE(own.via->headers.empty());

    EXPECT_EQ(t.default_route().via, &*edge.via);
}

TEST(RoutingTable, ServerWithoutViaIsDirect) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "plain"), c);
    EXPECT_EQ(t.default_route().via, nullptr);
}

TEST(RoutingTable, BuiltinsHaveNoTarget) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "edge"), c);
    EXPECT_EQ(t.match("other.org").upstream, "echo");
    EXPECT_EQ(t.match("other.org").target, nullptr);
    EXPECT_EQ(t.match("api.deep.example.org").target, nullptr);
    ASSERT_NE(t.match("a.example.org").target, nullptr);
    EXPECT_EQ(t.match("a.example.org").target->name, "wild_up");
}

TEST(RoutingTable, SniRoutesAreIgnoredWithoutTls) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "plain"), c);
    EXPECT_EQ(t.match("www.example.org").key, "default");
    EXPECT_EQ(t.match("www.example.org").upstream, "exact_up");
    ASSERT_EQ(t.routes().size(), 1U);
}

TEST(RoutingTable, StarMatchesEveryNameAfterTheWildcardsButNotNoName) {
    const Config c = load(R"(
servers:
  egress:
    listen: "127.0.0.1:1"
    http: true
    sni:
      "*": star_up
      "*.example.org": wild_up
      www.example.org: exact_up
    default: ban
upstream:
  exact_up: "tcp://10.0.0.1:443"
  wild_up: "tcp://10.0.0.2:443"
  star_up: "tcp://10.0.0.3:443"
)");
    const routing::Table t(server(c, "egress"), c);
    EXPECT_EQ(t.match("www.example.org").upstream, "exact_up");
    EXPECT_EQ(t.match("a.example.org").upstream, "wild_up");
    EXPECT_EQ(t.match("example.org").upstream, "star_up");
    EXPECT_EQ(t.match("other.net").upstream, "star_up");
    EXPECT_EQ(t.match("localhost").upstream, "star_up");
    EXPECT_EQ(t.match(std::nullopt).upstream, "ban");  // "*" is for names; no name: default
    EXPECT_EQ(t.match("").upstream, "ban");
}

TEST(RoutingTable, HttpAndConnectServersRouteByName) {
    for (const std::string mode : {"http", "accept_connect"}) {
        SCOPED_TRACE(mode);
        const Config c = load("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    " + mode +
                              ": true\n    sni:\n      a.example: echo\n    default: ban\n");
        const routing::Table t(server(c, "s"), c);
        EXPECT_EQ(t.match("a.example").upstream, "echo");
        EXPECT_EQ(t.match("b.example").upstream, "ban");
    }
}

TEST(RoutingTable, RoutesAreInConfigOrderWithDefaultLast) {
    const Config c = load(routes_yaml);
    const routing::Table t(server(c, "edge"), c);
    const std::vector<std::string> keys = {"www.example.org",      "*.example.org",
                                           "*.deep.example.org",   "*.org",
                                           "api.deep.example.org", "default"};
    ASSERT_EQ(t.routes().size(), keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        EXPECT_EQ(t.routes()[i].key, keys[i]);
    }
}

TEST(RoutingTable, KeysAreMatchedLowerCasedButReportedAsWritten) {
    const Config c = load(R"(
servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    sni:
      WWW.Example.COM: echo
      "*.Example.NET": echo
)");
    const routing::Table t(server(c, "s"), c);
    EXPECT_EQ(t.match("www.example.com").key, "WWW.Example.COM");
    EXPECT_EQ(t.match("a.example.net").key, "*.Example.NET");
}

std::chrono::nanoseconds time_misses(const routing::Table& t) {
    constexpr int lookups = 100000;
    const auto start = std::chrono::steady_clock::now();
    std::size_t defaults = 0;
    for (int i = 0; i < lookups; ++i) {
        defaults += &t.match("no.such.host.example.com") == &t.default_route() ? 1U : 0U;
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(defaults, static_cast<std::size_t>(lookups));
    return elapsed;
}

TEST(RoutingTable, TenThousandRules) {
    std::string yaml = "servers:\n  big:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni:\n";
    constexpr int n = 10000;
    for (int i = 0; i < n; ++i) {
        const auto id = std::to_string(i);
        if (i % 2 == 0) {
            yaml += "      host" + id + ".example.com: up\n";
        } else {
            yaml += "      \"*.zone" + id + ".example.com\": echo\n";
        }
    }
    yaml += "upstream:\n  up: \"tcp://127.0.0.1:9\"\n";
    const Config c = load(yaml);
    const routing::Table t(server(c, "big"), c);
    ASSERT_EQ(t.routes().size(), static_cast<std::size_t>(n + 1));

    for (int i = 0; i < n; ++i) {
        const auto id = std::to_string(i);
        if (i % 2 == 0) {
            ASSERT_EQ(t.match("host" + id + ".example.com").key, "host" + id + ".example.com");
        } else {
            ASSERT_EQ(t.match("a.b.zone" + id + ".example.com").key,
                      "*.zone" + id + ".example.com");
            ASSERT_EQ(t.match("zone" + id + ".example.com").key, "default");
        }
    }
    // One lookup per label, independent of the number of rules: misses against 10,000 rules
    // cost about what they cost against 2 (a scan would be ~5,000 times slower). The factor
    // is loose so that a busy CI machine does not make it flaky.
    const Config small_config = load(R"(
servers:
  small:
    listen: "127.0.0.1:1"
    tls: true
    sni: { host0.example.com: echo, "*.zone1.example.com": echo }
)");
    const routing::Table small(server(small_config, "small"), small_config);
    EXPECT_LT(time_misses(t), 20 * time_misses(small) + std::chrono::milliseconds(50));
}

TEST(RoutingTable, SurvivesAMoveOfTheTable) {
    const Config c = load(routes_yaml);
    routing::Table a(server(c, "edge"), c);
    const routing::Table b = std::move(a);
    EXPECT_EQ(b.match("a.example.org").key, "*.example.org");
    EXPECT_EQ(&b.default_route(), &b.routes().back());
}

// ---------------------------------------------------------------------------------------
// diff

const std::string before_yaml = R"(
servers:
  same:   { listen: "127.0.0.1:1", default: up }
  tuned:  { listen: "127.0.0.1:2", maxclients: 5 }
  gone:   { listen: ["127.0.0.1:3", "[::1]:3"] }
  moved_upstream: { listen: "127.0.0.1:4", default: far }
upstream:
  up: "tcp://127.0.0.1:10"
  far: "tcp://127.0.0.1:11"
)";

const std::string after_yaml = R"(
servers:
  same:   { listen: "127.0.0.1:1", default: up }
  tuned:  { listen: "127.0.0.1:2", maxclients: 6 }
  new:    { listen: ["127.0.0.1:5", "[::1]:3"] }
  moved_upstream: { listen: "127.0.0.1:4", default: far }
upstream:
  up: "tcp://127.0.0.1:10"
  far: "tcp://127.0.0.1:12"
)";

TEST(RoutingDiff, ReportsAddedRemovedAndChangedServers) {
    const Config before = load(before_yaml);
    const Config after = load(after_yaml);
    const auto d = routing::diff(before, after);
    using V = std::vector<std::string>;
    EXPECT_EQ(d.added_servers, V{"new"});
    EXPECT_EQ(d.removed_servers, V{"gone"});
    EXPECT_EQ(d.changed_servers, (V{"tuned", "moved_upstream"}));
}

TEST(RoutingDiff, IdenticalConfigsHaveNoChanges) {
    const Config a = load(before_yaml);
    const Config b = load(before_yaml);
    const auto d = routing::diff(a, b);
    EXPECT_TRUE(d.added_servers.empty());
    EXPECT_TRUE(d.removed_servers.empty());
    EXPECT_TRUE(d.changed_servers.empty());
}

}  // namespace
