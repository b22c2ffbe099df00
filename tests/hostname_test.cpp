#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/hostname.hpp>

namespace {

struct Case {
    std::string name;
    bool valid;
};

std::string labels(int count, int size) {
    std::string out;
    for (int i = 0; i < count; ++i) {
        if (i != 0) {
            out += '.';
        }
        out += std::string(static_cast<std::size_t>(size), 'a');
    }
    return out;
}

TEST(Hostname, AcceptsAndRejectsPerSpec) {
    const std::string n253 = labels(3, 63) + "." + std::string(61, 'b');  // 63*3+3+61 = 253
    const std::string n254 = n253 + "c";
    ASSERT_EQ(n253.size(), 253U);
    ASSERT_EQ(n254.size(), 254U);
    const std::vector<Case> cases = {
        {"example.com", true},
        {"a", true},
        {"WWW.Example.COM", true},
        {"_acme-challenge.example.com", true},
        {"xn--bcher-kva.example", true},
        {"1.2.3.4", true},  // digits are letters of a name here; addresses decide elsewhere
        {"-leading-hyphen.example", true},
        {std::string(63, 'a') + ".com", true},
        {std::string(64, 'a') + ".com", false},
        {"com." + std::string(64, 'a'), false},
        {n253, true},
        {n254, false},
        {"", false},
        {".", false},
        {".example.com", false},
        {"example.com.", false},
        {"example..com", false},
        {"exa mple.com", false},
        {"example.com:443", false},
        {"*.example.com", false},
        {"b\303\274cher.example", false},
        {std::string("a\0b", 3), false},
        {"a/b", false},
        {"a\tb", false},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name.size() > 70 ? std::to_string(c.name.size()) + " bytes" : c.name);
        EXPECT_EQ(tpt::hostname::is_valid(c.name), c.valid);
    }
}

TEST(Hostname, RejectsEveryByteOutsideTheAlphabet) {
    for (int b = 0; b < 256; ++b) {
        const char c = static_cast<char>(b);
        const bool expected = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        SCOPED_TRACE(b);
        EXPECT_EQ(tpt::hostname::is_valid(std::string("a") + c + "b"), expected);
    }
}

TEST(Hostname, LowerCasesAsciiOnly) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", ""},
        {"WWW.Example.COM", "www.example.com"},
        {"already.lower", "already.lower"},
        {"@[`{", "@[`{"},  // the bytes around 'A'..'Z' and 'a'..'z' are untouched
        {"\303\234BER", "\303\234ber"},
        {"\x80\xFF", "\x80\xFF"},
        {std::string("A\0B", 3), std::string("a\0b", 3)},
    };
    for (const auto& [in, out] : cases) {
        SCOPED_TRACE(in);
        EXPECT_EQ(tpt::hostname::to_lower(in), out);
    }
}

}  // namespace
