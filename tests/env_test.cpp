#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <unistd.h>
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

// --- ${file:PATH} (SPEC §13) ----------------------------------------------------------------

namespace file_refs {

// A reader over fixed files: a path not in the map is missing; every read is counted.
struct FakeFiles {
    std::map<std::string, std::string, std::less<>> files;
    int reads = 0;
    tpt::env::FileReader reader() {
        return [this](std::string_view path) -> tpt::Result<std::string> {
            ++reads;
            const auto it = files.find(path);
            if (it == files.end()) {
                return tpt::Error{"${file:" + std::string(path) + "}: cannot read: missing"};
            }
            return tpt::Result<std::string>{boost::system::in_place_value, it->second};
        };
    }
};

TEST(EnvFile, ExpandsFileContentWithOneTrailingNewlineStripped) {
    FakeFiles fs{{{"/s/pw", "hunter2\n"},
                  {"/s/crlf", "hunter2\r\n"},
                  {"/s/two", "hunter2\n\n"},
                  {"/s/none", "hunter2"},
                  {"/s/empty", ""},
                  {"/s/only_newline", "\n"},
                  {"/s/dollars", "$A ${B} ${file:/s/pw}"},
                  {"/creds/pw", "from-dir"}}};
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"${file:/s/pw}", "hunter2"},
        {"${file:/s/crlf}", "hunter2"},
        {"${file:/s/two}", "hunter2\n"},  // one newline only
        {"${file:/s/none}", "hunter2"},
        {"${file:/s/empty}", ""},
        {"${file:/s/only_newline}", ""},
        {"Basic ${file:/s/pw}!", "Basic hunter2!"},
        {"${file:/s/dollars}", "$A ${B} ${file:/s/pw}"},  // content is never expanded again
        {"$${file:/s/pw}", "${file:/s/pw}"},              // $$ escapes it
        // Nested: the path may use the variable forms, a default included.
        {"${file:${DIR:-/creds}/pw}", "from-dir"},
        {"${file:/${S_DIR}/pw}", "hunter2"},
        {"${file:$ROOT/pw}", "hunter2"},
        // A default stays literal, as it always was (compatibility): no file is read.
        {"${UNSET:-${file:/s/pw}}", "${file:/s/pw}"},
        {"${A:-${file:/s/pw}}", "alpha}"},
    };
    const auto env = fixed({{"A", "alpha"}, {"S_DIR", "s"}, {"ROOT", "/s"}});
    for (const auto& [in, out] : cases) {
        SCOPED_TRACE(in);
        const auto got = tpt::env::expand(in, env, fs.reader());
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->value, out);
    }
}

TEST(EnvFile, ListsEveryFileReadOnce) {
    FakeFiles fs{{{"/a", "1"}, {"/b", "2"}}};
    const auto got = tpt::env::expand("${file:/b}${file:/a}${file:/b}", vars, fs.reader());
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(got->value, "212");
    EXPECT_EQ(got->files, (std::vector<std::string>{"/b", "/a"}));
    const auto none = tpt::env::expand("${A}", vars, fs.reader());
    ASSERT_TRUE(none.has_value());
    EXPECT_TRUE(none->files.empty());
}

TEST(EnvFile, ErrorsNameThePathNeverTheContent) {
    FakeFiles fs{{{"/s/pw", "s3cr3t-content"}}};
    struct Case {
        std::string text;
        std::string mentions;
    };
    const std::vector<Case> cases = {
        {"${file:/s/missing}", "/s/missing"}, {"${file:relative/pw}", "must be absolute"},
        {"${file:}", "must be absolute"},     {"${file:/s/pw", "unterminated"},
        {"${file:${DIR}/pw}", "DIR"},  // an unset variable in the path
        {"${file:${DIR/pw}", "unterminated"}, {"${file:/s/pw} ${file:/s/missing}", "/s/missing"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        const auto got = tpt::env::expand(c.text, vars, fs.reader());
        ASSERT_FALSE(got.has_value()) << got->value;
        EXPECT_NE(got.error().message.find(c.mentions), std::string::npos) << got.error().message;
        EXPECT_EQ(got.error().message.find("s3cr3t"), std::string::npos) << got.error().message;
    }
}

TEST(EnvFile, WithoutAReaderAFileReferenceIsAnError) {
    const auto got = tpt::env::expand("${file:/etc/passwd}", vars);
    ASSERT_FALSE(got.has_value());
    EXPECT_NE(got.error().message.find("not available"), std::string::npos);
}

// The real reader, on a kubelet-style Secret volume: the file is a symlink through ..data.
TEST(EnvFile, FileSystemReaderFollowsTheSecretVolumeLayout) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("tpt-env-test-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "..2026_12_05_00_00_00.1");
    std::ofstream(dir / "..2026_12_05_00_00_00.1" / "password") << "pw-one\n";
    fs::create_directory_symlink("..2026_12_05_00_00_00.1", dir / "..data");
    fs::create_symlink("..data/password", dir / "password");
    std::ofstream(dir / "big") << std::string(tpt::env::max_file_bytes + 1, 'x');
    const auto read = tpt::env::file_system();

    const auto got = tpt::env::expand("${file:" + (dir / "password").string() + "}", vars, read);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(got->value, "pw-one");
    for (const auto& bad : {dir / "missing", dir, dir / "big"}) {
        SCOPED_TRACE(bad.string());
        const auto r = read(bad.string());
        ASSERT_FALSE(r.has_value());
        EXPECT_NE(r.error().message.find(bad.string()), std::string::npos) << r.error().message;
        EXPECT_EQ(r.error().message.find("xxxx"), std::string::npos);
    }
    fs::remove_all(dir);
}

}  // namespace file_refs

}  // namespace
