// Tests for tpt::cli: argument parsing (SPEC §2), help text and the config search order.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tpt/cli.hpp>

namespace {

using tpt::cli::find_config;
using tpt::cli::parse;
using tpt::cli::ParseResult;

ParseResult parse_args(std::vector<const char*> args) {
    args.insert(args.begin(), "tpt");
    return parse(static_cast<int>(args.size()), args.data());
}

TEST(Cli, NoArgumentsIsRecorded) {
    const ParseResult r = parse_args({});
    ASSERT_TRUE(r.options) << r.error;
    EXPECT_TRUE(r.options->no_arguments);
    EXPECT_FALSE(r.options->config_path);
    EXPECT_FALSE(r.options->check_config);
    EXPECT_FALSE(r.options->version);
    EXPECT_FALSE(r.options->help);
}

TEST(Cli, EverySpellingOfEveryOption) {
    struct Case {
        std::vector<const char*> args;
        std::optional<std::string> config;
        bool check, version, help;
    };
    const std::vector<Case> cases{
        {{"-c", "a.yaml"}, "a.yaml", false, false, false},
        {{"-ca.yaml"}, "a.yaml", false, false, false},
        {{"--config", "/etc/x.yaml"}, "/etc/x.yaml", false, false, false},
        {{"--config=/etc/x.yaml"}, "/etc/x.yaml", false, false, false},
        {{"-t"}, std::nullopt, true, false, false},
        {{"--check-config", "-c", "b.yaml"}, "b.yaml", true, false, false},
        {{"-t", "--config=c.yaml"}, "c.yaml", true, false, false},
        {{"--version"}, std::nullopt, false, true, false},
        {{"-h"}, std::nullopt, false, false, true},
        {{"--help", "--version"}, std::nullopt, false, true, true},
        {{"-th"}, std::nullopt, true, false, true},
    };
    for (const Case& c : cases) {
        std::string label;
        for (const char* a : c.args) {
            label += std::string(a) + " ";
        }
        SCOPED_TRACE(label);
        const ParseResult r = parse_args(c.args);
        ASSERT_TRUE(r.options) << r.error;
        EXPECT_EQ(r.options->config_path, c.config);
        EXPECT_EQ(r.options->check_config, c.check);
        EXPECT_EQ(r.options->version, c.version);
        EXPECT_EQ(r.options->help, c.help);
        EXPECT_FALSE(r.options->no_arguments);
    }
}

TEST(Cli, UsageErrorsNameTheProblem) {
    struct Case {
        std::vector<const char*> args;
        const char* mention;
    };
    const std::vector<Case> cases{
        {{"--frobnicate"}, "--frobnicate"},
        {{"-x"}, "-x"},
        {{"--conf", "a.yaml"}, "--conf"},  // no abbreviations
        {{"--check"}, "--check"},
        {{"-c"}, "config"},  // missing value
        {{"--config"}, "config"},
        {{"--config="}, "config"},  // empty value
        {{"-c", "a.yaml", "-c", "b.yaml"}, "config"},
        {{"stray.yaml"}, "stray.yaml"},
        {{"--version=1"}, "version"},
        {{"capture", "--apply", "--remove"}, "choose one of --print, --apply and --remove"},
        {{"capture", "--print", "--apply"}, "choose one of"},
        {{"capture", "--ipv6", "--no-ipv6"}, "--ipv6 and --no-ipv6"},
        {{"capture", "--ports"}, "ports"},
        {{"capture", "--port", "443"}, "--port"},  // no abbreviations
        {{"capture", "--to", "1", "--to", "2"}, "to"},
        {{"capture", "--config", "a.yaml"}, "--config"},
        {{"capture", "443"}, "unexpected argument '443'"},
    };
    for (const Case& c : cases) {
        std::string label;
        for (const char* a : c.args) {
            label += std::string(a) + " ";
        }
        SCOPED_TRACE(label);
        const ParseResult r = parse_args(c.args);
        EXPECT_FALSE(r.options);
        EXPECT_NE(r.error.find(c.mention), std::string::npos) << r.error;
        // A capture error is followed by capture's help, any other by tpt's.
        EXPECT_EQ(r.capture, std::string_view(c.args.front()) == "capture");
    }
}

TEST(Cli, CaptureSubcommandKeepsItsOptionsAsWritten) {
    const ParseResult r =
        parse_args({"capture", "--ports", "443,80", "--to=15001", "--uid", "1337", "--exclude-cidr",
                    "10.0.0.0/8", "--exclude-cidr=fd00::/8,172.16.0.0/12", "--no-ipv6", "--apply"});
    ASSERT_TRUE(r.options) << r.error;
    ASSERT_TRUE(r.options->capture);
    const tpt::cli::CaptureArgs& c = *r.options->capture;
    EXPECT_EQ(c.mode, tpt::cli::CaptureMode::apply);
    EXPECT_EQ(c.ports, "443,80");
    EXPECT_EQ(c.to, "15001");
    EXPECT_EQ(c.uid, "1337");
    EXPECT_EQ(c.exclude_cidrs, (std::vector<std::string>{"10.0.0.0/8", "fd00::/8,172.16.0.0/12"}));
    EXPECT_FALSE(c.ipv6);
    EXPECT_FALSE(c.help);
    EXPECT_FALSE(r.options->config_path);

    const ParseResult defaults = parse_args({"capture"});
    ASSERT_TRUE(defaults.options && defaults.options->capture) << defaults.error;
    EXPECT_EQ(defaults.options->capture->mode, tpt::cli::CaptureMode::print);
    EXPECT_TRUE(defaults.options->capture->ipv6);
    EXPECT_FALSE(defaults.options->capture->uid);
    EXPECT_EQ(parse_args({"capture", "--remove"}).options->capture->mode,
              tpt::cli::CaptureMode::remove);
    EXPECT_TRUE(parse_args({"capture", "-h"}).options->capture->help);
    // Only the first word selects the subcommand: elsewhere it is a stray argument.
    EXPECT_FALSE(parse_args({"-t", "capture"}).options);
}

TEST(Cli, CaptureHelpListsEveryOptionAndTheExitStatus) {
    const std::string h = tpt::cli::capture_help_text("tpt");
    for (const char* option :
         {"--ports", "--to", "--uid", "--exclude-cidr", "--ipv6", "--no-ipv6", "--print", "--apply",
          "--remove", "CAP_NET_ADMIN", "Exit status", "3 no CAP_NET_ADMIN"}) {
        EXPECT_NE(h.find(option), std::string::npos) << option;
    }
    EXPECT_NE(tpt::cli::help_text("tpt").find("tpt capture --ports"), std::string::npos);
}

TEST(Cli, HelpTextShowsUsageOptionsAndSearchOrder) {
    const std::string h = tpt::cli::help_text("tpt-test");
    EXPECT_EQ(
        h.rfind("Usage: tpt-test [-c|--config PATH] [-t|--check-config] [--version] [-h|--help]\n",
                0),
        0u)
        << h;
    for (const char* s : {"-c [ --config ] PATH", "-t [ --check-config ]", "--version",
                          "-h [ --help ]", "$TPT_CONFIG, $tpt_CONFIG, /etc/tpt/tpt.yaml",
                          "/etc/tpt/config.yaml", "./tpt.yaml", "./config.yaml", "TPT_LOG"}) {
        EXPECT_NE(h.find(s), std::string::npos) << s << " missing from:\n" << h;
    }
    EXPECT_EQ(h.back(), '\n');
}

// A fake environment and file system for find_config.
struct World {
    std::map<std::string, std::string, std::less<>> env;
    std::set<std::string> files;
    mutable std::vector<std::string> asked;

    tpt::cli::Search search() const {
        return find_config(
            [this](std::string_view name) -> std::optional<std::string> {
                const auto it = env.find(name);
                if (it == env.end()) {
                    return std::nullopt;
                }
                return it->second;
            },
            [this](const std::string& path) {
                asked.push_back(path);
                return files.count(path) != 0;
            });
    }
};

const std::vector<std::string> defaults{"/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml", "./tpt.yaml",
                                        "./config.yaml"};

TEST(Cli, SearchNothingFoundTriesEveryDefaultInOrder) {
    const World w;
    const auto s = w.search();
    EXPECT_FALSE(s.found);
    EXPECT_EQ(s.tried, defaults);
    EXPECT_EQ(w.asked, defaults);
}

TEST(Cli, SearchTakesTheFirstExistingInSpecOrder) {
    // Each row: the files that exist; the answer is the earliest of them in the order.
    const std::vector<std::string> order{"/env/upper.yaml",   "/env/lower.yaml",
                                         "/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml",
                                         "./tpt.yaml",        "./config.yaml"};
    for (std::size_t first = 0; first < order.size(); ++first) {
        SCOPED_TRACE(order[first]);
        World w;
        w.env = {{"TPT_CONFIG", "/env/upper.yaml"}, {"tpt_CONFIG", "/env/lower.yaml"}};
        for (std::size_t k = first; k < order.size(); ++k) {
            w.files.insert(order[k]);
        }
        const auto s = w.search();
        ASSERT_TRUE(s.found);
        EXPECT_EQ(*s.found, order[first]);
        // Tried: everything up to and including the one found, and nothing after it.
        EXPECT_EQ(s.tried, std::vector<std::string>(order.begin(),
                                                    order.begin() + static_cast<long>(first) + 1));
        EXPECT_EQ(w.asked, s.tried);
    }
}

TEST(Cli, SearchSkipsUnsetAndEmptyVariables) {
    World w;
    w.env = {{"TPT_CONFIG", ""}, {"tpt_CONFIG", "/run/lower.yaml"}};
    w.files = {"/run/lower.yaml", "/etc/tpt/tpt.yaml"};
    auto s = w.search();
    ASSERT_TRUE(s.found);
    EXPECT_EQ(*s.found, "/run/lower.yaml");
    EXPECT_EQ(s.tried, std::vector<std::string>{"/run/lower.yaml"});

    World only_upper;
    only_upper.env = {{"TPT_CONFIG", "/missing.yaml"}};
    only_upper.files = {"./config.yaml"};
    s = only_upper.search();
    ASSERT_TRUE(s.found);
    EXPECT_EQ(*s.found, "./config.yaml");
    std::vector<std::string> want{"/missing.yaml"};
    want.insert(want.end(), defaults.begin(), defaults.end());
    EXPECT_EQ(s.tried, want);
}

TEST(Cli, SearchVariableNamesAreCaseExact) {
    World w;
    w.env = {{"Tpt_Config", "/x.yaml"}};
    w.files = {"/x.yaml"};
    const auto s = w.search();
    EXPECT_FALSE(s.found);
    EXPECT_EQ(s.tried, defaults);
}

}  // namespace
