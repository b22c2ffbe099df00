#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/outcome.hpp>

namespace {

using tpt::Outcome;

struct Case {
    const char* name;
    Outcome outcome;
    bool route_error;
};

const std::vector<Case> cases = {
    {"ok", Outcome::ok, false},
    {"ban", Outcome::ban, false},
    {"client_hello_timeout", Outcome::client_hello_timeout, true},
    {"no_target", Outcome::no_target, false},
    {"dns", Outcome::dns, true},
    {"connect_refused", Outcome::connect_refused, true},
    {"connect_timeout", Outcome::connect_timeout, true},
    {"proxy_status", Outcome::proxy_status, true},
    {"proxy_protocol", Outcome::proxy_protocol, true},
    {"idle_timeout", Outcome::idle_timeout, false},
    {"client_reset", Outcome::client_reset, false},
    {"upstream_reset", Outcome::upstream_reset, false},
    {"shutdown", Outcome::shutdown, false},
    {"client_closed", Outcome::client_closed, false},
    {"no_original_dst", Outcome::no_original_dst, true},
    {"loop", Outcome::loop, true},
    {"sni_mismatch", Outcome::sni_mismatch, true},
    {"bad_request", Outcome::bad_request, false},
    {"method_not_allowed", Outcome::method_not_allowed, false},
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
    EXPECT_EQ(names.size(), cases.size());
    EXPECT_EQ(tpt::outcome_count, cases.size());
}

TEST(Outcome, RouteErrorsAreExactlyTheSpecReasons) {
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(tpt::is_route_error(c.outcome), c.route_error);
    }
}

TEST(Result, HoldsValueOrError) {
    tpt::Result<int> good = 7;
    ASSERT_TRUE(good.has_value());
    EXPECT_TRUE(static_cast<bool>(good));
    EXPECT_EQ(*good, 7);

    tpt::Result<int> bad = tpt::Error{"nope"};
    EXPECT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().message, "nope");
    // value() on an error throws the message (tpt::throw_exception_from_error).
    try {
        (void)bad.value();
        ADD_FAILURE() << "value() of an error must throw";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "nope");
    }
}

TEST(Result, MovesTheValueOut) {
    // A string result is made with the value tag: an Error is constructible from a string.
    tpt::Result<std::string> r{boost::system::in_place_value, std::string(100, 'x')};
    std::string s = std::move(r).value();
    EXPECT_EQ(s.size(), 100U);
}

}  // namespace
