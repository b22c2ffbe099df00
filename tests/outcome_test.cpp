#include <set>
#include <string>

#include <gtest/gtest.h>

#include <tpt/outcome.hpp>

namespace {

using tpt::Outcome;

struct Case {
    Outcome outcome;
    const char* name;
    bool route_error;
};

constexpr Case cases[] = {
    {Outcome::ok, "ok", false},
    {Outcome::ban, "ban", false},
    {Outcome::client_hello_timeout, "client_hello_timeout", true},
    {Outcome::no_target, "no_target", false},
    {Outcome::dns, "dns", true},
    {Outcome::connect_refused, "connect_refused", true},
    {Outcome::connect_timeout, "connect_timeout", true},
    {Outcome::proxy_status, "proxy_status", true},
    {Outcome::proxy_protocol, "proxy_protocol", true},
    {Outcome::idle_timeout, "idle_timeout", false},
    {Outcome::client_reset, "client_reset", false},
    {Outcome::upstream_reset, "upstream_reset", false},
    {Outcome::shutdown, "shutdown", false},
    {Outcome::client_closed, "client_closed", false},
};

TEST(Outcome, NamesEveryOutcomeAfterItsEnumerator) {
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(tpt::to_string(c.outcome), c.name);
    }
}

TEST(Outcome, TableCoversEveryEnumeratorWithDistinctNames) {
    std::set<std::string> names;
    for (const auto& c : cases) {
        names.emplace(tpt::to_string(c.outcome));
    }
    EXPECT_EQ(names.size(), std::size(cases));
    EXPECT_EQ(static_cast<int>(Outcome::client_closed) + 1, static_cast<int>(std::size(cases)));
}

TEST(Outcome, RouteErrorsAreExactlyTheSpecReasons) {
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(tpt::is_route_error(c.outcome), c.route_error);
    }
}

TEST(Result, HoldsValueOrError) {
    tpt::Result<int> good = 7;
    ASSERT_TRUE(good.ok());
    EXPECT_TRUE(static_cast<bool>(good));
    EXPECT_EQ(*good, 7);

    tpt::Result<int> bad = tpt::Error{"nope"};
    EXPECT_FALSE(bad.ok());
    EXPECT_EQ(bad.error(), "nope");
    EXPECT_THROW((void)bad.value(), std::bad_variant_access);
}

TEST(Result, MovesTheValueOut) {
    tpt::Result<std::string> r = std::string(100, 'x');
    std::string s = std::move(r).value();
    EXPECT_EQ(s.size(), 100U);
}

}  // namespace
