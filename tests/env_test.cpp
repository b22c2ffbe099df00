#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/env.hpp>

namespace {

tpt::env::Lookup fixed(std::map<std::string, std::string, std::less<>> vars) {
    return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
        const auto it = vars.find(name);
        if (it == vars.end()) {
            return std::nullopt;
        }
        return it->second;
    };
}

const tpt::env::Lookup vars = fixed({
    {"A", "alpha"},
    {"B", "beta"},
    {"EMPTY", ""},
    {"DOLLAR", "$B ${B} $$"},
    {"_x9", "under"},
    {"PW", "dXNlcjpwYXNz"},
});

TEST(Env, ExpandsEveryForm) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", ""},
        {"plain text", "plain text"},
        {"${A}", "alpha"},
        {"$A", "alpha"},
        {"Basic ${PW}", "Basic dXNlcjpwYXNz"},
        {"x${A}y", "xalphay"},
        {"$A$B", "alphabeta"},
        {"$A.$B", "alpha.beta"},
        {"$A-x", "alpha-x"},
        {"$_x9", "under"},
        {"${_x9}", "under"},
        {"${EMPTY}", ""},
        {"$EMPTY", ""},
        {"${A:-dflt}", "alpha"},
        {"${UNSET:-dflt}", "dflt"},
        {"${EMPTY:-dflt}", "dflt"},
        {"${UNSET:-}", ""},
        {"${UNSET:-a b:c-d}", "a b:c-d"},
        {"${UNSET:-$A}", "$A"},    // defaults are literal
        {"${UNSET:-${A}", "${A"},  // the default ends at the first '}'
        {"${UNSET:-x}y}", "xy}"},  // ... so a '}' after it is literal text
        {"${A:-x}y}", "alphay}"},
        {"${DOLLAR}", "$B ${B} $$"},  // expanded text is not expanded again
        {"$$", "$"},
        {"$$A", "$A"},
        {"$$$A", "$alpha"},
        {"$$$$", "$$"},
        {"$${A}", "${A}"},
        {"$", "$"},
        {"a$", "a$"},
        {"$ ", "$ "},
        {"$1", "$1"},
        {"$-", "$-"},
        {"$}", "$}"},
        {"100$", "100$"},
        {"\xC3\xA9$A\xC3\xA9", "\303\251alpha\303\251"},
        {std::string("a\0$A", 4), std::string("a\0alpha", 7)},
    };
    for (const auto& [in, out] : cases) {
        SCOPED_TRACE(in);
        const auto got = tpt::env::expand(in, vars);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(*got, out);
    }
}

TEST(Env, RejectsBadReferencesAndUnsetVariables) {
    struct Case {
        std::string text;
        std::string error_mentions;
    };
    const std::vector<Case> cases = {
        {"${UNSET}", "UNSET"},      {"$UNSET", "UNSET"},    {"x $UNSET_2 y", "UNSET_2"},
        {"${A}${UNSET}", "UNSET"},  {"${", "unterminated"}, {"abc${A", "unterminated"},
        {"${A:-x", "unterminated"}, {"${}", "invalid"},     {"${:-x}", "invalid"},
        {"${A${B}}", "invalid"},    {"${1A}", "invalid"},   {"${A B}", "invalid"},
        {"${A:x}", "invalid"},      {"${A-x}", "invalid"},  {"${A:=x}", "invalid"},
        {"${ A}", "invalid"},       {"${$A}", "invalid"},   {"${\xC3\xA9}", "invalid"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        const auto got = tpt::env::expand(c.text, vars);
        ASSERT_FALSE(got.has_value()) << *got;
        EXPECT_NE(got.error().message.find(c.error_mentions), std::string::npos)
            << got.error().message;
    }
}

TEST(Env, StopsAtTheFirstError) {
    int calls = 0;
    const tpt::env::Lookup counting = [&calls](std::string_view) -> std::optional<std::string> {
        ++calls;
        return std::nullopt;
    };
    EXPECT_FALSE(tpt::env::expand("$A $B $C", counting).has_value());
    EXPECT_EQ(calls, 1);
}

TEST(Env, EscapingEveryDollarGivesTheTextBack) {
    const std::vector<std::string> cases = {"", "$", "$$", "${A}", "$A", "${A:-x}y}", "a$b$$c${"};
    for (const auto& text : cases) {
        SCOPED_TRACE(text);
        std::string escaped;
        for (const char c : text) {
            escaped += c;
            if (c == '$') {
                escaped += '$';
            }
        }
        const auto got = tpt::env::expand(escaped, vars);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(*got, text);
    }
}

TEST(Env, ReadsTheProcessEnvironment) {
    ASSERT_EQ(setenv("TPT_ENV_TEST_SET", "from-env", 1), 0);
    ASSERT_EQ(setenv("TPT_ENV_TEST_EMPTY", "", 1), 0);
    ASSERT_EQ(unsetenv("TPT_ENV_TEST_UNSET"), 0);
    const auto lookup = tpt::env::process_environment();
    EXPECT_EQ(lookup("TPT_ENV_TEST_SET"), std::optional<std::string>("from-env"));
    EXPECT_EQ(lookup("TPT_ENV_TEST_EMPTY"), std::optional<std::string>(""));
    EXPECT_EQ(lookup("TPT_ENV_TEST_UNSET"), std::nullopt);
    EXPECT_EQ(lookup(std::string_view("TPT_ENV_TEST_SET\0x", 18)), std::nullopt);

    const auto got = tpt::env::expand("${TPT_ENV_TEST_SET}/${TPT_ENV_TEST_EMPTY:-d}", lookup);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(*got, "from-env/d");
    EXPECT_FALSE(tpt::env::expand("$TPT_ENV_TEST_UNSET", lookup).has_value());
    unsetenv("TPT_ENV_TEST_SET");
    unsetenv("TPT_ENV_TEST_EMPTY");
}

}  // namespace
