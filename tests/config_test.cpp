// Tests of config::load(), to_json() and sha256_hex() (SPEC §3).
#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include <boost/json.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tpt/config.hpp>

namespace {

using namespace tpt;
using namespace std::chrono_literals;
using config::Config;
using config::ConfigError;
using testing::HasSubstr;
using testing::Not;

using Vars = std::map<std::string, std::string, std::less<>>;

env::Lookup lookup_of(Vars vars) {
    return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
        const auto it = vars.find(name);
        if (it == vars.end()) {
            return std::nullopt;
        }
        return it->second;
    };
}

const Vars default_vars{{"ENCODED_PW", "dXNlcjpwdw=="},
                        {"HOP_TOKEN", "t0k3n"},
                        {"SQUID_AUTH", "c3F1aWQ6cHc="},
                        {"PROXY_HOST", "proxy.internal"}};

std::string read_fixture(const std::string& name) {
    std::ifstream in(std::string(TPT_TEST_DATA) + "/config/" + name, std::ios::binary);
    EXPECT_TRUE(in) << name;
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::string joined(const std::vector<ConfigError>& errors) {
    std::string out;
    for (const auto& e : errors) {
        out += e.to_string();
        out += '\n';
    }
    return out;
}

Config load_ok(std::string_view yaml, const Vars& vars = default_vars,
               std::string_view file = "test.yaml") {
    auto r = config::load(yaml, file, lookup_of(vars));
    if (!r) {
        ADD_FAILURE() << "expected the config to load, got:\n" << joined(r.error());
        return Config{};
    }
    return std::move(r).value();
}

std::vector<ConfigError> load_errors(std::string_view yaml, const Vars& vars = default_vars) {
    auto r = config::load(yaml, "test.yaml", lookup_of(vars));
    if (r) {
        ADD_FAILURE() << "expected errors, but the config loaded:\n" << yaml;
        return {};
    }
    return std::move(r).error();
}

// True when some error has exactly this path and line and a message containing `text`.
testing::AssertionResult has_error(const std::vector<ConfigError>& errors, std::string_view path,
                                   int line, std::string_view text) {
    for (const auto& e : errors) {
        if (e.yaml_path == path && e.line == line && e.message.find(text) != std::string::npos) {
            return testing::AssertionSuccess();
        }
    }
    return testing::AssertionFailure()
           << "no error at " << path << " line " << line << " containing \"" << text << "\"; got:\n"
           << joined(errors);
}

// Expects exactly one error, at path and line, mentioning text.
void expect_one_error(std::string_view yaml, std::string_view path, int line, std::string_view text,
                      const Vars& vars = default_vars) {
    const auto errors = load_errors(yaml, vars);
    EXPECT_EQ(errors.size(), 1U) << joined(errors);
    EXPECT_TRUE(has_error(errors, path, line, text));
}

const config::Server& server(const Config& c, std::string_view name) {
    for (const auto& s : c.servers) {
        if (s.name == name) {
            return s;
        }
    }
    throw std::runtime_error("no server " + std::string(name));
}

const config::SniRoute& route(const config::Server& s, std::string_view key) {
    for (const auto& r : s.sni) {
        if (r.key == key) {
            return r;
        }
    }
    throw std::runtime_error("no sni route " + std::string(key));
}

// ---------------------------------------------------------------------------------------
// Defaults

TEST(ConfigDefaults, MinimalServerGetsEveryDefault) {
    const Config c = load_ok(read_fixture("tpt-minimal.yaml"));
    EXPECT_EQ(c.version, 1);
    EXPECT_EQ(c.log, config::LogLevel::info);
    EXPECT_EQ(c.log_format, config::LogFormat::text);
    ASSERT_TRUE(c.admin.listen.has_value());
    EXPECT_EQ(c.admin.listen->to_string(), "0.0.0.0:9901");
    EXPECT_EQ(c.admin.control_from, config::ControlFrom::loopback);
    EXPECT_TRUE(c.reload.watch);
    EXPECT_EQ(c.reload.poll_interval, 30s);
    EXPECT_EQ(c.shutdown.delay, 0s);
    EXPECT_EQ(c.shutdown.drain_timeout, 30s);
    EXPECT_EQ(c.resolve_interval, 60s);
    EXPECT_TRUE(c.upstreams.empty());
    ASSERT_EQ(c.servers.size(), 1U);
    const auto& s = c.servers[0];
    EXPECT_EQ(s.name, "only");
    ASSERT_EQ(s.listen.size(), 1U);
    EXPECT_EQ(s.listen[0].to_string(), "127.0.0.1:0");
    EXPECT_EQ(s.protocol, address::Family::any);
    EXPECT_FALSE(s.tls);
    EXPECT_TRUE(s.sni.empty());
    EXPECT_EQ(s.default_upstream, "ban");
    EXPECT_EQ(s.maxclients, 100U);
    EXPECT_EQ(s.client_hello_timeout, 10s);
    EXPECT_EQ(s.idle_timeout, 0s);
    EXPECT_FALSE(s.via.has_value());
    EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
}

TEST(ConfigDefaults, EmptyViaHasEveryViaDefault) {
    const Config c = load_ok(R"(
servers:
  s:
    listen: ["127.0.0.1:1000"]
    via: {}
)");
    const auto& via = server(c, "s").via;
    ASSERT_TRUE(via.has_value());
    EXPECT_TRUE(via->is_direct());
    EXPECT_FALSE(via->target.has_value());
    EXPECT_FALSE(via->use_sni_as_target);
    EXPECT_FALSE(via->target_port.has_value());
    // SPEC §12, §11: 443 for TLS, 80 for HTTP, the original port when transparent.
    EXPECT_EQ(via->port_for(false, std::nullopt), 443);
    EXPECT_EQ(via->port_for(true, std::nullopt), 80);
    EXPECT_EQ(via->port_for(true, std::uint16_t{8080}), 8080);
    EXPECT_EQ(via->connect_timeout, 30s);
    EXPECT_EQ(via->stats_interval, 0s);
    EXPECT_TRUE(via->headers.empty());
}

TEST(ConfigDefaults, NullValuesMeanAbsent) {
    const Config c = load_ok(R"(
version:
log: ~
admin:
reload:
  watch:
servers:
  s:
    listen: ["127.0.0.1:1000"]
    default:
    via:
)");
    EXPECT_EQ(c.version, 1);
    EXPECT_EQ(c.log, config::LogLevel::info);
    EXPECT_TRUE(c.admin.listen.has_value());
    EXPECT_TRUE(c.reload.watch);
    EXPECT_EQ(server(c, "s").default_upstream, "ban");
    EXPECT_FALSE(server(c, "s").via.has_value());
}

TEST(ConfigDefaults, EveryKeySetIsRead) {
    const Config c = load_ok(read_fixture("tpt-full.yaml"));
    EXPECT_EQ(c.version, 2);
    EXPECT_EQ(c.log, config::LogLevel::trace);
    EXPECT_EQ(c.log_format, config::LogFormat::text);
    ASSERT_TRUE(c.admin.listen.has_value());
    EXPECT_EQ(c.admin.listen->to_string(), "127.0.0.1:19901");
    EXPECT_EQ(c.admin.control_from, config::ControlFrom::any);
    EXPECT_FALSE(c.reload.watch);
    EXPECT_EQ(c.reload.poll_interval, 5s);
    EXPECT_EQ(c.shutdown.delay, 3s);
    EXPECT_EQ(c.shutdown.drain_timeout, 90s);
    EXPECT_EQ(c.resolve_interval, 10min);

    const auto& s = server(c, "egress");
    ASSERT_EQ(s.listen.size(), 1U);
    EXPECT_EQ(s.listen[0].host, "::1");
    EXPECT_TRUE(s.listen[0].is_ipv6_literal);
    EXPECT_EQ(s.listen[0].port, 19443);
    EXPECT_EQ(s.protocol, address::Family::v6);
    EXPECT_TRUE(s.tls);
    EXPECT_EQ(s.default_upstream, "health");
    EXPECT_EQ(s.maxclients, 7U);
    EXPECT_EQ(s.client_hello_timeout, 2500ms);
    EXPECT_EQ(s.idle_timeout, 1h);
    ASSERT_TRUE(s.via.has_value());
    ASSERT_TRUE(s.via->target.has_value());
    EXPECT_EQ(s.via->target->to_string(), "connect.example.net:3128");  // the ${:-} default
    EXPECT_EQ(s.via->target_port, 8443);
    EXPECT_EQ(s.via->connect_timeout, 45s);
    EXPECT_EQ(s.via->stats_interval, 10s);
    ASSERT_EQ(s.via->headers.size(), 2U);
    EXPECT_EQ(s.via->headers[0].name, "Proxy-Authorization");
    EXPECT_EQ(s.via->headers[0].value, "Basic dXNlcjpwdw==");
    EXPECT_EQ(s.via->headers[1].name, "X-Cost-Center");
    EXPECT_EQ(s.via->headers[1].value, "4711");

    ASSERT_EQ(s.sni.size(), 4U);
    EXPECT_EQ(s.sni[0].key, "www.Example.com");
    EXPECT_EQ(s.sni[0].pattern, "www.example.com");
    EXPECT_FALSE(s.sni[0].wildcard);
    EXPECT_FALSE(s.sni[0].via.has_value());
    EXPECT_EQ(s.sni[1].pattern, "*.example.org");
    EXPECT_TRUE(s.sni[1].wildcard);
    EXPECT_EQ(s.sni[2].upstream, "direct_api");
    ASSERT_TRUE(s.sni[2].via.has_value());
    EXPECT_TRUE(s.sni[2].via->is_direct());
    ASSERT_TRUE(s.sni[3].via.has_value());
    EXPECT_EQ(s.sni[3].via->connect_timeout, 2s);

    ASSERT_EQ(c.upstreams.size(), 2U);
    EXPECT_EQ(c.upstreams[0].name, "corp");
    EXPECT_EQ(c.upstreams[0].url, "tcp://proxy.internal:3128");
    EXPECT_EQ(c.upstreams[0].address.to_string(), "proxy.internal:3128");
    EXPECT_EQ(c.upstreams[1].family, address::Family::v4);
    ASSERT_NE(c.find_upstream("direct_api"), nullptr);
    EXPECT_EQ(c.find_upstream("direct_api")->address.port, 19080);
    EXPECT_EQ(c.find_upstream("ban"), nullptr);
    EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
}

TEST(ConfigDefaults, AdminListenEmptyDisablesTheAdminServer) {
    const Config c = load_ok(R"(
admin: { listen: "" }
servers: { s: { listen: "127.0.0.1:1" } }
)");
    EXPECT_FALSE(c.admin.listen.has_value());
}

TEST(ConfigDefaults, ListenAcceptsOneStringOrAList) {
    const Config c = load_ok(R"(
servers:
  one: { listen: "127.0.0.1:1" }
  many: { listen: ["127.0.0.1:2", "[::1]:2"] }
)");
    EXPECT_EQ(server(c, "one").listen.size(), 1U);
    ASSERT_EQ(server(c, "many").listen.size(), 2U);
    EXPECT_EQ(server(c, "many").listen[1].to_string(), "[::1]:2");
}

TEST(ConfigDefaults, LogLevelsAndFormatsAreCaseInsensitive) {
    const std::vector<std::pair<std::string, config::LogLevel>> cases = {
        {"off", config::LogLevel::off},     {"error", config::LogLevel::error},
        {"warn", config::LogLevel::warn},   {"INFO", config::LogLevel::info},
        {"Debug", config::LogLevel::debug}, {"trace", config::LogLevel::trace},
        {"disable", config::LogLevel::off}, {"DISABLE", config::LogLevel::off},
    };
    for (const auto& [text, level] : cases) {
        SCOPED_TRACE(text);
        const Config c = load_ok("log: " + text + "\nservers: {s: {listen: \"127.0.0.1:1\"}}\n");
        EXPECT_EQ(c.log, level);
        EXPECT_EQ(config::parse_log_level(text), level);
    }
    for (const auto& [key, value, expected] :
         std::vector<std::tuple<std::string, std::string, config::LogFormat>>{
             {"log_format", "txt", config::LogFormat::text},
             {"log_format", "text", config::LogFormat::text},
             {"log-format", "json", config::LogFormat::json},
             {"log-format", "JSON", config::LogFormat::json},
         }) {
        SCOPED_TRACE(key + ": " + value);
        const Config c =
            load_ok(key + ": " + value + "\nservers: {s: {listen: \"127.0.0.1:1\"}}\n");
        EXPECT_EQ(c.log_format, expected);
    }
}

TEST(ConfigDefaults, BoolsAndScalarsMayBeAnyYamlScalar) {
    const Config c = load_ok(R"(
reload: { watch: "no" }
servers:
  s:
    listen: "127.0.0.1:1"
    tls: yes
    maxclients: "12"
    client_hello_timeout: 3
    via:
      headers:
        X-Number: 42
        X-Bool: false
        X-Empty:
)");
    EXPECT_FALSE(c.reload.watch);
    const auto& s = server(c, "s");
    EXPECT_TRUE(s.tls);
    EXPECT_EQ(s.maxclients, 12U);
    EXPECT_EQ(s.client_hello_timeout, 3s);  // bare integers are seconds
    ASSERT_EQ(s.via->headers.size(), 3U);
    EXPECT_EQ(s.via->headers[0].value, "42");
    EXPECT_EQ(s.via->headers[1].value, "false");
    EXPECT_EQ(s.via->headers[2].value, "");
}

TEST(ConfigDefaults, TopLevelViaIsOnlyAnAnchor) {
    // Not validated on its own: unknown keys and unset variables in it do not matter
    // unless a server uses it.
    const Config c = load_ok(R"(
via: &v
  nonsense: 1
  target: ${UNSET_BUT_UNUSED}
servers: { s: { listen: "127.0.0.1:1" } }
)");
    EXPECT_FALSE(server(c, "s").via.has_value());
}

TEST(ConfigDefaults, ListenAddressesAreNormalised) {
    const Config c = load_ok(R"(
servers: { s: { listen: ["[0:0:0:0:0:0:0:1]:5", "[2001:DB8::1]:5"] } }
)");
    EXPECT_EQ(server(c, "s").listen[0].to_string(), "[::1]:5");
    EXPECT_EQ(server(c, "s").listen[1].to_string(), "[2001:db8::1]:5");
}

// ---------------------------------------------------------------------------------------
// Seed compatibility

TEST(ConfigSeed, ReadmeExampleFailsOnlyForItsDuplicateListenAddress) {
    const auto errors = load_errors(read_fixture("seed-readme.yaml"));
    ASSERT_EQ(errors.size(), 1U) << joined(errors);
    EXPECT_TRUE(has_error(errors, "servers.health-server.listen[0]", 20,
                          "duplicate listen address 127.0.0.1:8081"));
    EXPECT_THAT(errors[0].message, HasSubstr("servers.proxy_server.listen[0]"));
    EXPECT_EQ(errors[0].file, "test.yaml");
    EXPECT_EQ(errors[0].to_string(),
              "test.yaml:20: servers.health-server.listen[0]: " + errors[0].message);
}

TEST(ConfigSeed, ReadmeExampleWithDistinctPortsLoadsAndMeansTheSame) {
    const Config c = load_ok(read_fixture("seed-readme-fixed.yaml"), default_vars, "readme.yaml");
    EXPECT_EQ(c.version, 1);
    EXPECT_EQ(c.log, config::LogLevel::info);
    ASSERT_EQ(c.servers.size(), 2U);
    const auto& proxy = c.servers[0];
    EXPECT_EQ(proxy.name, "proxy_server");
    EXPECT_EQ(proxy.listen[0].to_string(), "127.0.0.1:8081");
    EXPECT_EQ(proxy.default_upstream, "remote");
    EXPECT_EQ(proxy.maxclients, 3U);
    ASSERT_TRUE(proxy.via.has_value());
    // The seed wrote no port; CONNECT needs one, so target_port completes it (with a warning).
    ASSERT_TRUE(proxy.via->target.has_value());
    EXPECT_EQ(proxy.via->target->to_string(), "www.test1.com:443");
    ASSERT_EQ(proxy.via->headers.size(), 3U);
    EXPECT_EQ(proxy.via->headers[0].name, "Host");
    EXPECT_EQ(proxy.via->headers[1].value, "Basic dXNlcjpwdw==");
    EXPECT_EQ(proxy.via->headers[2].name, "Proxy-KeepAlive");
    EXPECT_EQ(proxy.via->headers[2].value, "true");

    const auto& health = c.servers[1];
    EXPECT_EQ(health.name, "health-server");
    EXPECT_EQ(health.listen[0].to_string(), "127.0.0.1:8082");
    EXPECT_EQ(health.default_upstream, "health");
    EXPECT_EQ(health.maxclients, 2U);
    EXPECT_EQ(health.via, proxy.via);  // the same anchor

    ASSERT_EQ(c.upstreams.size(), 1U);
    EXPECT_EQ(c.upstreams[0].address.to_string(), "www.remote.example.com:8082");
    EXPECT_TRUE(has_error(c.warnings, "servers.proxy_server.via.target", 5, "no port"));
}

TEST(ConfigSeed, SidecarShapeLoads) {
    const Config c = load_ok(read_fixture("seed-sidecar.yaml"));
    const auto& edge = server(c, "edge");
    EXPECT_TRUE(edge.tls);
    ASSERT_EQ(edge.sni.size(), 1U);
    EXPECT_EQ(edge.sni[0].upstream, "hop-proxy");
    EXPECT_EQ(edge.default_upstream, "echo");
    EXPECT_EQ(edge.maxclients, 25U);
    ASSERT_TRUE(edge.via && edge.via->target);
    EXPECT_EQ(edge.via->target->to_string(), "egress.corp.test:8443");
    EXPECT_EQ(edge.via->headers[0].value, "Bearer t0k3n");
    EXPECT_EQ(edge.via->headers[1].value, "true");
    EXPECT_EQ(server(c, "probe").default_upstream, "health");
    EXPECT_EQ(server(c, "probe").via, edge.via);
    EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
}

TEST(ConfigSeed, PlainShapeLoads) {
    const Config c = load_ok(read_fixture("seed-plain.yaml"));
    EXPECT_EQ(c.log, config::LogLevel::off);
    ASSERT_EQ(c.servers.size(), 3U);
    const auto& front = server(c, "tls_front");
    ASSERT_EQ(front.listen.size(), 2U);
    EXPECT_EQ(front.listen[0].to_string(), "0.0.0.0:28443");
    EXPECT_EQ(front.listen[1].to_string(), "[::]:28443");
    EXPECT_EQ(route(front, "mail.example.net").upstream, "imap");
    EXPECT_EQ(server(c, "forwarder").default_upstream, "backend");
    EXPECT_EQ(server(c, "reflector").default_upstream, "echo");
    EXPECT_EQ(c.upstreams.size(), 3U);
    EXPECT_EQ(c.find_upstream("imap")->address.to_string(), "imap.example.net:993");
}

TEST(ConfigSeed, ExtendedShapesLoadAndMeanTheSame) {
    const Config c = load_ok(read_fixture("seed-extended.yaml"));
    EXPECT_EQ(c.version, 2);
    EXPECT_EQ(c.log_format, config::LogFormat::json);
    EXPECT_EQ(c.find_upstream("squid4")->family, address::Family::v4);
    EXPECT_EQ(c.find_upstream("squid6")->family, address::Family::v6);
    EXPECT_EQ(c.find_upstream("squid6")->address.to_string(), "[2001:db8::10]:3128");

    EXPECT_FALSE(server(c, "only_default").via.has_value());
    EXPECT_EQ(server(c, "v4_only").protocol, address::Family::v4);
    EXPECT_EQ(server(c, "v4_only").via->connect_timeout, 20s);
    EXPECT_EQ(server(c, "v6_only").protocol, address::Family::v6);

    const auto& auth = server(c, "static_auth");
    EXPECT_EQ(auth.via->target->to_string(), "outside.example.com:443");
    EXPECT_EQ(auth.via->stats_interval, 30s);
    EXPECT_EQ(auth.via->headers[0].value, "Basic c3F1aWQ6cHc=");
    EXPECT_EQ(auth.via->headers[1].value, "on");

    const auto& sni = server(c, "sni_as_target");
    EXPECT_TRUE(sni.via->use_sni_as_target);
    EXPECT_EQ(sni.via->stats_interval, 60s);
    EXPECT_EQ(sni.maxclients, 200U);
    EXPECT_FALSE(route(sni, "one.example.com").via.has_value());  // inherits
    EXPECT_FALSE(route(sni, "two.example.com").via.has_value());  // inherits
    const auto& three = route(sni, "three.example.com");
    ASSERT_TRUE(three.via.has_value());
    EXPECT_TRUE(three.via->is_direct());  // via: {} overrides with direct
    EXPECT_EQ(three.upstream, "local_alt");
    const auto& four = route(sni, "four.example.com");
    EXPECT_TRUE(four.via->use_sni_as_target);
    EXPECT_EQ(four.via->target_port, 8443);
    EXPECT_EQ(four.via->connect_timeout, 60s);
    EXPECT_EQ(four.via->stats_interval, 120s);
    const auto& five = route(sni, "five.example.com");
    EXPECT_EQ(five.via->target->to_string(), "five.example.com:443");
    EXPECT_EQ(five.via->connect_timeout, 5s);
    EXPECT_EQ(five.via->headers[0].value, "Basic c3F1aWQ6cHc=");
    EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
}

TEST(ConfigSeed, UnusedUpstreamIsOnlyAWarning) {
    const Config c = load_ok(R"(
servers: { s: { listen: "127.0.0.1:1", default: echo } }
upstream:
  spare: "tcp://127.0.0.1:2"
)");
    EXPECT_TRUE(has_error(c.warnings, "upstream.spare", 0, "not used"));
}

TEST(ConfigSeed, SniWithoutTlsLoadsWithAWarning) {
    const Config c = load_ok(R"(
servers:
  s:
    listen: "127.0.0.1:1"
    sni:
      a.example: echo
)");
    EXPECT_EQ(server(c, "s").sni.size(), 1U);
    EXPECT_TRUE(has_error(c.warnings, "servers.s.sni", 5, "tls: true"));
}

// ---------------------------------------------------------------------------------------
// Errors: one test per class of SPEC §3, each checking the YAML path and the line.

TEST(ConfigErrors, YamlSyntaxErrorGivesOneErrorWithItsLine) {
    const auto errors = load_errors("version: 1\nservers:\n  s: [unclosed\n  t: 2\n");
    ASSERT_EQ(errors.size(), 1U) << joined(errors);
    EXPECT_EQ(errors[0].yaml_path, "");
    EXPECT_GE(errors[0].line, 3);
    EXPECT_THAT(errors[0].message, HasSubstr("YAML syntax error"));

    const auto tab = load_errors("servers:\n\t s: 1\n");
    ASSERT_EQ(tab.size(), 1U) << joined(tab);
    EXPECT_EQ(tab[0].line, 2);
}

TEST(ConfigErrors, UnknownKeysAreErrorsWithTheirLine) {
    const auto errors = load_errors(R"(version: 1
lgo: info
servers:
  s:
    listen: "127.0.0.1:1"
    maxclient: 5
    via:
      conect_timeout: 5s
    sni:
      a.example: { upstream: echo, vai: {} }
admin: { port: 1 }
)");
    EXPECT_TRUE(has_error(errors, "lgo", 2, "did you mean \"log\""));
    EXPECT_TRUE(has_error(errors, "servers.s.maxclient", 6, "did you mean \"maxclients\""));
    EXPECT_TRUE(has_error(errors, "servers.s.via.conect_timeout", 8, "unknown key"));
    EXPECT_TRUE(has_error(errors, "servers.s.sni.\"a.example\".vai", 10, "unknown key"));
    EXPECT_TRUE(has_error(errors, "admin.port", 11, "unknown key"));
    EXPECT_EQ(errors.size(), 5U) << joined(errors);
}

TEST(ConfigErrors, VersionMustBeOneOrTwo) {
    for (const std::string v : {"0", "3", "1.0", "one", "-1"}) {
        SCOPED_TRACE(v);
        expect_one_error("\nversion: " + v + "\nservers: {s: {listen: \"127.0.0.1:1\"}}\n",
                         "version", 2, v == "one" || v == "1.0" ? "integer" : "must be 1 or 2");
    }
}

TEST(ConfigErrors, LogLevelAndFormatMustBeKnown) {
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nlog: verbose\n", "log", 2,
                     "unknown log level \"verbose\"");
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nlog_format: xml\n", "log_format", 2,
                     "unknown log format \"xml\"");
    expect_one_error(
        "servers: {s: {listen: \"127.0.0.1:1\"}}\nlog_format: json\n"
        "log-format: txt\n",
        "log-format", 3, "given twice");
}

TEST(ConfigErrors, DuplicateListenAcrossServersNamesBoth) {
    const auto errors = load_errors(R"(servers:
  a:
    listen: ["127.0.0.1:7000", "[::1]:7001"]
  b:
    listen:
      - "127.0.0.2:7000"
      - "[0::1]:7001"
)");
    ASSERT_EQ(errors.size(), 1U) << joined(errors);
    EXPECT_TRUE(has_error(errors, "servers.b.listen[1]", 7,
                          "duplicate listen address [::1]:7001 (already used by "
                          "servers.a.listen[1] on line 3)"));
}

TEST(ConfigErrors, DuplicateListenWithinOneServerAndWithAdmin) {
    const auto errors = load_errors(R"(admin:
  listen: "127.0.0.1:7000"
servers:
  a:
    listen: ["127.0.0.1:7000", "127.0.0.1:7000"]
)");
    EXPECT_TRUE(has_error(errors, "servers.a.listen[1]", 5, "duplicate listen address"));
    EXPECT_TRUE(has_error(errors, "admin.listen", 2, "servers.a.listen[0]"));
    EXPECT_EQ(errors.size(), 2U) << joined(errors);
}

TEST(ConfigErrors, PortZeroNeverCollides) {
    const Config c = load_ok(R"(
admin: { listen: "127.0.0.1:0" }
servers:
  a: { listen: ["127.0.0.1:0", "127.0.0.1:0"] }
)");
    EXPECT_EQ(server(c, "a").listen.size(), 2U);
}

TEST(ConfigErrors, UnknownUpstreamInDefaultAndSni) {
    const auto errors = load_errors(R"(servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    default: nowhere
    sni:
      a.example: missing_a
      b.example:
        upstream: missing_b
upstream:
  there: "tcp://127.0.0.1:2"
)");
    EXPECT_TRUE(has_error(errors, "servers.s.default", 5, "unknown upstream \"nowhere\""));
    EXPECT_TRUE(has_error(errors, "servers.s.sni.\"a.example\"", 7, "unknown upstream"));
    EXPECT_TRUE(has_error(errors, "servers.s.sni.\"b.example\".upstream", 9, "missing_b"));
    EXPECT_EQ(errors.size(), 3U) << joined(errors);
}

TEST(ConfigErrors, UpstreamNameIsCaseSensitiveAndBuiltinsAreLowerCase) {
    expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    default: Echo\n",
                     "servers.s.default", 4, "unknown upstream \"Echo\"");
}

TEST(ConfigErrors, BadUpstreamUrls) {
    const std::vector<std::string> bad = {"http://example.com:80",
                                          "tcp://example.com",
                                          "tcp://example.com:0",
                                          "tcp://example.com:70000",
                                          "tcp://:80",
                                          "not-a-url",
                                          "tcp://user@h:1",
                                          "tcp://h:1/path",
                                          "tcp4://[::1]:80",
                                          "\"\""};
    for (const auto& url : bad) {
        SCOPED_TRACE(url);
        expect_one_error(
            "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\nupstream:\n"
            "  u: " +
                url + "\n",
            "upstream.u", 3, "invalid upstream URL");
    }
}

TEST(ConfigErrors, BuiltinUpstreamsCannotBeRedefined) {
    for (const std::string name : {"ban", "echo", "health"}) {
        SCOPED_TRACE(name);
        expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nupstream:\n  " + name +
                             ": \"tcp://127.0.0.1:2\"\n",
                         "upstream." + name, 3, "built-in");
    }
}

TEST(ConfigErrors, BadListenAddresses) {
    const std::vector<std::string> bad = {
        "127.0.0.1",       "localhost:80", ":80",         "::1:80", "\"[::1]\"",
        "127.0.0.1:99999", "999.1.1.1:80", "\"[::1]:x\"", "\"\"",   "example.com:443"};
    for (const auto& addr : bad) {
        SCOPED_TRACE(addr);
        expect_one_error(
            "servers:\n  s:\n    listen:\n      - \"127.0.0.1:1\"\n      - " + addr + "\n",
            "servers.s.listen[1]", 5, "listen address");
    }
    expect_one_error("servers:\n  s:\n    listen:\n", "servers.s.listen", 2, "missing");
    expect_one_error("servers:\n  s:\n    listen: {a: 1}\n", "servers.s.listen", 3,
                     "expected a listen address");
}

TEST(ConfigErrors, ProtocolMustMatchListenFamily) {
    expect_one_error(R"(servers:
  s:
    listen: ["127.0.0.1:1", "[::1]:1"]
    protocol: tcp4
)",
                     "servers.s.listen[1]", 3, "IPv6 but the protocol is tcp4");
    expect_one_error(R"(servers:
  s:
    protocol: tcp6
    listen:
      - "127.0.0.1:1"
)",
                     "servers.s.listen[0]", 5, "IPv4 but the protocol is tcp6");
    expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    protocol: udp\n",
                     "servers.s.protocol", 4, "unknown protocol \"udp\"");
}

TEST(ConfigErrors, DuplicateSniKeyAfterLowerCasingNamesBoth) {
    const auto errors = load_errors(R"(servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    sni:
      www.example.com: echo
      "*.Example.org": echo
      WWW.Example.COM: ban
      "*.example.ORG": ban
)");
    EXPECT_TRUE(has_error(errors, "servers.s.sni.\"WWW.Example.COM\"", 8,
                          "same as \"www.example.com\" on line 6"));
    EXPECT_TRUE(has_error(errors, "servers.s.sni.\"*.example.ORG\"", 9,
                          "same as \"*.Example.org\" on line 7"));
    EXPECT_EQ(errors.size(), 2U) << joined(errors);
}

TEST(ConfigErrors, InvalidWildcards) {
    for (const std::string key :
         {"a.*.b", "*x.org", "**.x", "*.", "*.*.x", "x.*", "*.a..b", "a*.org"}) {
        SCOPED_TRACE(key);
        expect_one_error(
            "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni:\n"
            "      \"" +
                key + "\": echo\n",
            "servers.s.sni.\"" + key + "\"", 6, "wildcard");
    }
}

TEST(ConfigErrors, SniKeysMustBeHostNames) {
    for (const std::string key : {"a..b", ".a", "a b", "a/b", "a:443", "a.", "a%b"}) {
        SCOPED_TRACE(key);
        const auto errors = load_errors(
            "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni:\n"
            "      \"" +
            key + "\": echo\n");
        ASSERT_EQ(errors.size(), 1U) << joined(errors);
        EXPECT_EQ(errors[0].line, 6);
        EXPECT_THAT(errors[0].message, HasSubstr("not a valid host name"));
    }
}

TEST(ConfigErrors, SniValueShapes) {
    expect_one_error(R"(servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    sni:
      a.example: [echo]
)",
                     "servers.s.sni.\"a.example\"", 6, "expected an upstream name or a map");
    expect_one_error(R"(servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    sni:
      a.example:
        via: {}
)",
                     "servers.s.sni.\"a.example\".upstream", 6, "needs an upstream");
}

TEST(ConfigErrors, HeaderNameMustBeAToken) {
    for (const std::string name : {"Bad Name", "X(1)", "\"\"", "Ümlaut", "a:b", "X/Y"}) {
        SCOPED_TRACE(name);
        const auto errors = load_errors(
            "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    via:\n      headers:\n"
            "        " +
            name + ": v\n");
        ASSERT_EQ(errors.size(), 1U) << joined(errors);
        EXPECT_EQ(errors[0].line, 6);
        EXPECT_THAT(errors[0].yaml_path, testing::StartsWith("servers.s.via.headers."));
        EXPECT_THAT(errors[0].message, HasSubstr("not an HTTP token"));
    }
}

TEST(ConfigErrors, HeaderValueMustNotContainCrLfNul) {
    const std::string yaml = R"(servers:
  s:
    listen: "127.0.0.1:1"
    via:
      headers:
        X-From-Env: "a ${INJECT}"
        X-Literal: "a\r\nInjected: 1"
        X-Nul: "a\0b"
)";
    const auto errors = load_errors(yaml, Vars{{"INJECT", "x\nEvil: 1"}});
    EXPECT_TRUE(has_error(errors, "servers.s.via.headers.X-From-Env", 6, "CR, LF or NUL"));
    EXPECT_TRUE(has_error(errors, "servers.s.via.headers.X-Literal", 7, "CR, LF or NUL"));
    EXPECT_TRUE(has_error(errors, "servers.s.via.headers.X-Nul", 8, "CR, LF or NUL"));
    EXPECT_EQ(errors.size(), 3U) << joined(errors);
    for (const auto& e : errors) {
        EXPECT_THAT(e.message, Not(HasSubstr("Evil"))) << "a header value leaked";
    }
}

TEST(ConfigErrors, UseSniAsTargetWithTargetIsAnError) {
    expect_one_error(R"(servers:
  s:
    listen: "127.0.0.1:1"
    tls: true
    via:
      use_sni_as_target: true
      target: "proxy.example:3128"
)",
                     "servers.s.via.target", 7, "both set");
}

TEST(ConfigErrors, MaxclientsMustBePositive) {
    for (const std::string n : {"0", "-3", "4294967296"}) {
        SCOPED_TRACE(n);
        expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    maxclients: " + n + "\n",
                         "servers.s.maxclients", 4, "maxclients must be between 1");
    }
    expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    maxclients: lots\n",
                     "servers.s.maxclients", 4, "expected an integer");
}

TEST(ConfigErrors, UnsetVariableIsNamedAtItsPath) {
    const auto errors = load_errors(R"(servers:
  s:
    listen: "127.0.0.1:1"
    default: u
    via:
      target: "${NO_TARGET}"
      headers:
        Proxy-Authorization: "Basic $NO_SECRET"
upstream:
  u: "tcp://${NO_HOST}:3128"
)",
                                    Vars{});
    EXPECT_TRUE(has_error(errors, "servers.s.via.target", 6, "NO_TARGET"));
    EXPECT_TRUE(has_error(errors, "servers.s.via.headers.Proxy-Authorization", 8, "NO_SECRET"));
    EXPECT_TRUE(has_error(errors, "upstream.u", 10, "NO_HOST"));
    EXPECT_EQ(errors.size(), 3U) << joined(errors);
}

TEST(ConfigErrors, BadTargetAndTargetPort) {
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    via:\n"
        "      target: \"bad host:80\"\n",
        "servers.s.via.target", 5, "bad CONNECT target");
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    via:\n"
        "      target_port: 0\n",
        "servers.s.via.target_port", 5, "between 1 and 65535");
}

TEST(ConfigErrors, BadDurations) {
    const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
        {"reload:\n  poll_interval: soon\n", "reload.poll_interval", "soon"},
        {"shutdown:\n  delay: -1s\n", "shutdown.delay", "-1s"},
        {"shutdown:\n  drain_timeout: 1.5s\n", "shutdown.drain_timeout", "1.5s"},
        {"resolve_interval: 0s\n", "resolve_interval", "greater than 0s"},
    };
    for (const auto& [yaml, path, text] : cases) {
        SCOPED_TRACE(yaml);
        expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\n" + yaml, path,
                         yaml.find('\n') + 1 == yaml.size() ? 2 : 3, text);
    }
    expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    client_hello_timeout: 0\n",
                     "servers.s.client_hello_timeout", 4, "greater than 0s");
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    via:\n"
        "      connect_timeout: 0ms\n",
        "servers.s.via.connect_timeout", 5, "greater than 0s");
}

TEST(ConfigErrors, AdminSettings) {
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nadmin:\n  control_from: world\n",
                     "admin.control_from", 3, "loopback or any");
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nadmin:\n  listen: nowhere\n",
                     "admin.listen", 3, "listen address");
}

TEST(ConfigErrors, WrongTypes) {
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\", tls: [true]}}\n", "servers.s.tls", 1,
                     "expected true or false");
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\", tls: maybe}}\n", "servers.s.tls", 1,
                     "expected true or false");
    expect_one_error("servers: [a, b]\n", "servers", 1, "expected a map");
    expect_one_error("servers:\n  s: 5\n", "servers.s", 2, "expected a map");
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\", via: yes}}\n", "servers.s.via", 1,
                     "expected a map");
    expect_one_error("servers: {s: {listen: \"127.0.0.1:1\"}}\nupstream:\n  u: [a]\n", "upstream.u",
                     3, "expected a URL");
}

TEST(ConfigErrors, DuplicateYamlKeys) {
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n"
        "    tls: false\n",
        "servers.s.tls", 5, "duplicate key (first on line 4)");
}

TEST(ConfigErrors, ServersAreRequired) {
    expect_one_error("version: 1\nlog: info\n", "servers", 1, "needs a `servers` map");
}

TEST(ConfigErrors, NonScalarKeysAreRejected) {
    expect_one_error("servers:\n  ? [a, b]\n  : {listen: \"127.0.0.1:1\"}\n", "servers", 2,
                     "a key must be a scalar");
}

TEST(ConfigErrors, AllErrorsAreCollectedInLineOrder) {
    const auto errors = load_errors(R"(version: 9
log: loud
servers:
  a:
    listen: "127.0.0.1:1"
    maxclients: 0
    default: ghost
  b:
    listen: "127.0.0.1:1"
upstream:
  echo: "tcp://127.0.0.1:2"
)");
    ASSERT_EQ(errors.size(), 6U) << joined(errors);
    const std::vector<int> lines = {1, 2, 6, 7, 9, 11};
    for (std::size_t i = 0; i < lines.size(); ++i) {
        EXPECT_EQ(errors[i].line, lines[i]) << joined(errors);
    }
}

TEST(ConfigErrors, ManyErrorsAreCapped) {
    std::string yaml = "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni:\n";
    for (int i = 0; i < 1000; ++i) {
        yaml += "      h" + std::to_string(i) + ".example: nowhere\n";
    }
    const auto errors = load_errors(yaml);
    ASSERT_GT(errors.size(), 10U);
    EXPECT_LE(errors.size(), 201U);
    EXPECT_THAT(errors.back().message, HasSubstr("more errors not shown"));
}

TEST(ConfigErrors, PathsQuoteSpecialKeys) {
    const auto errors = load_errors(R"(servers:
  "my server":
    listen: "127.0.0.1:1"
    "we\"ird": 1
)");
    EXPECT_TRUE(has_error(errors, R"(servers."my server"."we\"ird")", 4, "unknown key"));
}

TEST(ConfigErrors, NamesMustBeUtf8AndMessagesAlwaysAre) {
    const auto errors = load_errors(
        "servers:\n  \"bad\xff\\x01name\":\n    listen: \"127.0.0.1:1\"\n"
        "upstream:\n  \"up\xc3\":  \"tcp://h:1\"\n");
    EXPECT_TRUE(has_error(errors, R"(servers."bad\xff\x01name")", 2, "UTF-8"));
    EXPECT_TRUE(has_error(errors, R"(upstream."up\xc3")", 5, "UTF-8"));
    EXPECT_EQ(errors.size(), 2U) << joined(errors);

    const Config c = load_ok("servers:\n  prüfung:\n    listen: \"127.0.0.1:1\"\n");
    EXPECT_EQ(c.servers.at(0).name, "prüfung");
    const auto root = boost::json::parse(config::to_json(c)).as_object();
    EXPECT_TRUE(root.at("servers").as_object().contains("prüfung"));
}

TEST(ConfigErrors, ToStringFormats) {
    EXPECT_EQ((ConfigError{"f.yaml", "a.b", 3, "bad"}).to_string(), "f.yaml:3: a.b: bad");
    EXPECT_EQ((ConfigError{"f.yaml", "", 3, "bad"}).to_string(), "f.yaml:3: bad");
    EXPECT_EQ((ConfigError{"f.yaml", "a", 0, "bad"}).to_string(), "f.yaml: a: bad");
}

// ---------------------------------------------------------------------------------------
// Hostile input: load() returns errors, never throws or crashes.

void expect_rejected_quietly(const std::string& yaml) {
    config::LoadResult r = Config{};
    ASSERT_NO_THROW(r = config::load(yaml, "hostile.yaml", lookup_of({})));
    ASSERT_TRUE(r.has_error());
    EXPECT_FALSE(r.error().empty());
}

TEST(ConfigHostile, EmptyAndNonMapDocuments) {
    for (const std::string yaml : {"", "\n\n", "# only a comment\n", "---\n", "just a scalar", "42",
                                   "- a\n- b\n", "[]", "{}", "~",
                                   "---\nservers: {}\n---\n"
                                   "servers: {}\n"}) {
        SCOPED_TRACE(yaml);
        expect_rejected_quietly(yaml);
    }
}

TEST(ConfigHostile, OversizedTextIsRefusedBeforeParsing) {
    const auto errors = load_errors(std::string(17 * 1024 * 1024, '#'));
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_THAT(errors[0].message, HasSubstr("larger than"));
}

// yaml-cpp 0.7's LoadAll() loops forever (allocating) on these; load() must not.
TEST(ConfigHostile, StrayCommaAtDocumentLevelIsAnErrorNotAHang) {
    for (const std::string yaml : {",", ",## Sh#", " ,", "\"x\",", "[a],", "!x ,", "---\n,",
                                   "servers: {s: {listen: \"127.0.0.1:1\"}}\n---\n,\n"}) {
        SCOPED_TRACE(yaml);
        const auto errors = load_errors(yaml);
        ASSERT_EQ(errors.size(), 1U) << joined(errors);
        EXPECT_THAT(errors[0].message, HasSubstr("content after the first YAML document"));
    }
}

// A block map root whose column-0 lines are all its keys is loaded with one parse; any
// other column-0 line (`---`, `...`, a stray `,`) still takes the full document count.
TEST(ConfigHostile, ASecondDocumentAfterABlockMapIsStillFound) {
    for (const std::string yaml :
         {"servers: {}\n...\nservers: {}\n", "servers: {}\n--- \nservers: {}\n",
          "version: 1\nservers: {}\n...\n,\n", "version: 1\n# c\nservers: {}\n---\n"}) {
        SCOPED_TRACE(yaml);
        const auto errors = load_errors(yaml);
        ASSERT_EQ(errors.size(), 1U) << joined(errors);
        EXPECT_THAT(errors[0].message, HasSubstr("content after the first YAML document"));
    }
}

TEST(ConfigHostile, DeepNesting) {
    expect_rejected_quietly(std::string(100000, '['));
    expect_rejected_quietly(std::string(100000, '[') + std::string(100000, ']'));
    expect_rejected_quietly("servers: " + std::string(50000, '{'));
    std::string nested_maps = "servers:\n";
    for (int i = 0; i < 3000; ++i) {
        nested_maps += std::string(static_cast<std::size_t>(2 * (i + 1)), ' ') + "k:\n";
    }
    expect_rejected_quietly(nested_maps);
}

TEST(ConfigHostile, HugeScalars) {
    const std::string big(1024 * 1024, 'a');
    expect_rejected_quietly("servers:\n  s:\n    listen: \"" + big + "\"\n");
    expect_rejected_quietly("servers:\n  " + big + ": 1\n");
    expect_rejected_quietly(big);
    const auto errors =
        load_errors("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    " + big + ": 1\n");
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_LT(errors[0].to_string().size(), 2000U) << "messages quote a bounded excerpt";
}

TEST(ConfigHostile, AliasCyclesAndFanOut) {
    for (const std::string yaml : {
             "servers: &s\n  a: *s\n",
             "servers:\n  a: &a\n    listen: *a\n",
             "servers:\n  a:\n    listen: &l [*l]\n",
             "servers:\n  a: &a\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni: *a\n",
             "servers:\n  a: &a\n    listen: \"127.0.0.1:1\"\n    via: &v\n      headers: *v\n",
             "a: &a [*a, *a, *a]\nservers: *a\n",
         }) {
        SCOPED_TRACE(yaml);
        expect_rejected_quietly(yaml);
    }
    // Billion laughs: aliases share nodes, and the schema-driven walk never expands them.
    std::string laughs = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 30; ++i) {
        const auto prev = "*l" + std::to_string(i - 1);
        laughs += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [" + prev + ", " + prev +
                  ", " + prev + ", " + prev + ", " + prev + "]\n";
    }
    laughs += "servers:\n  s:\n    listen: *l29\n";
    expect_rejected_quietly(laughs);
}

TEST(ConfigHostile, BinaryGarbage) {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    for (int round = 0; round < 200; ++round) {
        std::string junk(static_cast<std::size_t>(1 + round * 37 % 4096), '\0');
        for (auto& c : junk) {
            c = static_cast<char>(byte(rng));
        }
        SCOPED_TRACE(round);
        config::LoadResult r = Config{};
        ASSERT_NO_THROW(r = config::load(junk, "junk.yaml", lookup_of({})));
        if (r) {
            EXPECT_NO_THROW((void)config::to_json(*r));
        }
    }
}

// A NUL byte reaches the YAML parser, which rejects it: the loader never cuts the text at it
// (a cut "servers:\0<rest>" would read as just "servers:").
TEST(ConfigHostile, NulBytesAreSyntaxErrorsNotEndsOfText) {
    using namespace std::string_literals;
    for (const std::string& yaml : {"servers:\0\n  s: {}\n"s, "\xef\xbb\xbf\xff\xfe\x00servers"s}) {
        SCOPED_TRACE(testing::PrintToString(yaml));
        ASSERT_NE(yaml.find('\0'), std::string::npos);
        expect_rejected_quietly(yaml);
        const auto errors = load_errors(yaml);
        ASSERT_EQ(errors.size(), 1U) << joined(errors);
        EXPECT_NE(errors[0].message.find("YAML syntax error"), std::string::npos) << joined(errors);
    }
}

// ---------------------------------------------------------------------------------------
// to_json and sha256_hex

TEST(ConfigJson, EffectiveConfigHasEveryKeyAndRedactsHeaderValues) {
    const Config c = load_ok(read_fixture("tpt-full.yaml"));
    const std::string text = config::to_json(c);
    EXPECT_EQ(text.find("dXNlcjpwdw=="), std::string::npos) << "a header value leaked";
    const auto root = boost::json::parse(text).as_object();
    EXPECT_EQ(root.at("version").as_int64(), 2);
    EXPECT_EQ(root.at("log").as_string(), "trace");
    EXPECT_EQ(root.at("log_format").as_string(), "text");
    EXPECT_EQ(root.at("admin").at("listen").as_string(), "127.0.0.1:19901");
    EXPECT_EQ(root.at("admin").at("control_from").as_string(), "any");
    EXPECT_EQ(root.at("reload").at("watch").as_bool(), false);
    EXPECT_EQ(root.at("reload").at("poll_interval").as_string(), "5s");
    EXPECT_EQ(root.at("shutdown").at("delay").as_string(), "3s");
    EXPECT_EQ(root.at("shutdown").at("drain_timeout").as_string(), "1m30s");
    EXPECT_EQ(root.at("resolve_interval").as_string(), "10m");

    const auto& s = root.at("servers").at("egress").as_object();
    EXPECT_EQ(s.at("listen").as_array().at(0).as_string(), "[::1]:19443");
    EXPECT_EQ(s.at("protocol").as_string(), "tcp6");
    EXPECT_EQ(s.at("tls").as_bool(), true);
    EXPECT_EQ(s.at("default").as_string(), "health");
    EXPECT_EQ(s.at("maxclients").as_int64(), 7);
    EXPECT_EQ(s.at("client_hello_timeout").as_string(), "2s500ms");
    EXPECT_EQ(s.at("idle_timeout").as_string(), "1h");
    const auto& via = s.at("via").as_object();
    EXPECT_EQ(via.at("target").as_string(), "connect.example.net:3128");
    EXPECT_EQ(via.at("use_sni_as_target").as_bool(), false);
    EXPECT_EQ(via.at("target_port").as_int64(), 8443);
    EXPECT_EQ(via.at("connect_timeout").as_string(), "45s");
    EXPECT_EQ(via.at("stats_interval").as_string(), "10s");
    EXPECT_EQ(via.at("headers").at("Proxy-Authorization").as_string(), "<redacted>");
    EXPECT_EQ(via.at("headers").at("X-Cost-Center").as_string(), "<redacted>");

    const auto& sni = s.at("sni").as_object();
    EXPECT_EQ(sni.size(), 4U);
    EXPECT_EQ(sni.at("www.Example.com").at("upstream").as_string(), "corp");
    EXPECT_TRUE(sni.at("www.Example.com").at("via").is_null());
    EXPECT_EQ(sni.at("*.example.org").at("wildcard").as_bool(), true);
    EXPECT_TRUE(sni.at("*.deep.example.org").at("via").at("target").is_null());

    EXPECT_EQ(root.at("upstream").at("corp").as_string(), "tcp://proxy.internal:3128");
}

TEST(ConfigJson, DisabledAdminAndDirectServer) {
    const Config c = load_ok("admin: {listen: \"\"}\nservers: {s: {listen: \"127.0.0.1:1\"}}\n");
    const auto root = boost::json::parse(config::to_json(c)).as_object();
    EXPECT_EQ(root.at("admin").at("listen").as_string(), "");
    EXPECT_TRUE(root.at("servers").at("s").at("via").is_null());
    EXPECT_TRUE(root.at("upstream").as_object().empty());
}

TEST(ConfigJson, Sha256MatchesKnownVectors) {
    EXPECT_EQ(config::sha256_hex(""),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(config::sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(config::sha256_hex(std::string_view("a\0b", 3)).size(), 64U);
}

TEST(ConfigJson, ReloadingTheSameTextGivesAnEqualConfig) {
    const std::string text = read_fixture("seed-extended.yaml");
    EXPECT_EQ(load_ok(text, default_vars, "a.yaml"), load_ok(text, default_vars, "b.yaml"));
    EXPECT_NE(load_ok(text), load_ok(read_fixture("seed-plain.yaml")));
}

// SPEC §11, §12: transparent, http, accept_connect, sni_must_match, `original`, "*"

constexpr std::string_view egress_example = R"(
servers:
  egress:
    listen: ["127.0.0.1:15001", "[::1]:15001"]
    transparent: true
    tls: true
    http: true
    via: { use_sni_as_target: true }
    default: corp_proxy
    sni:
      "*.corp.example": { upstream: original, via: {} }
      "*": corp_proxy
  explicit:
    listen: ["127.0.0.1:3128"]
    accept_connect: true
    sni_must_match: true
    default: original
    sni:
      "*.internal": corp_proxy
upstream:
  corp_proxy: "tcp://proxy.internal:3128"
)";

TEST(ConfigCapture, SpecExamplesLoadWithTheirModes) {
    const Config c = load_ok(egress_example);
    EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
    const auto& egress = server(c, "egress");
    EXPECT_TRUE(egress.transparent);
    EXPECT_TRUE(egress.tls);
    EXPECT_TRUE(egress.http);
    EXPECT_FALSE(egress.accept_connect);
    EXPECT_EQ(route(egress, "*.corp.example").upstream, "original");
    EXPECT_TRUE(route(egress, "*").wildcard);
    EXPECT_FALSE(egress.via->target_port.has_value());  // the original port, per connection
    const auto& proxy = server(c, "explicit");
    EXPECT_TRUE(proxy.accept_connect);
    EXPECT_TRUE(proxy.sni_must_match);
    EXPECT_EQ(proxy.default_upstream, "original");
}

TEST(ConfigCapture, TargetPortOriginalOnlyInATransparentServer) {
    const Config c = load_ok(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    transparent: true\n"
        "    via: {use_sni_as_target: true, target_port: original}\n    default: u\n"
        "upstream: {u: \"tcp://p:3128\"}\n");
    EXPECT_FALSE(server(c, "s").via->target_port.has_value());
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n"
        "    via: {use_sni_as_target: true, target_port: original}\n    default: u\n"
        "upstream: {u: \"tcp://p:3128\"}\n",
        "servers.s.via.target_port", 5, "needs a transparent server");
}

TEST(ConfigCapture, OriginalNeedsATransparentOrConnectServer) {
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni:\n"
        "      a.example: original\n",
        "servers.s.sni.\"a.example\"", 6, "needs a transparent server or one that accepts CONNECT");
    expect_one_error("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    default: original\n",
                     "servers.s.default", 4, "transparent");
}

TEST(ConfigCapture, OriginalIsABuiltInName) {
    expect_one_error(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    default: echo\n"
        "upstream:\n  original: \"tcp://a:1\"\n",
        "upstream.original", 6, "built-in upstream (ban, echo, health, original)");
}

TEST(ConfigCapture, AcceptConnectIsExclusiveWithTheOtherModes) {
    for (const std::string mode : {"tls", "http", "transparent"}) {
        SCOPED_TRACE(mode);
        expect_one_error(
            "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    accept_connect: true\n"
            "    " +
                mode + ": true\n",
            "servers.s.accept_connect", 4, "cannot be combined");
    }
}

TEST(ConfigCapture, SniMustMatchWithoutAHostOrConnectWarns) {
    const Config c = load_ok(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    tls: true\n    sni_must_match: true\n");
    EXPECT_TRUE(has_error(c.warnings, "servers.s.sni_must_match", 5, "has no effect"));
    const Config quiet = load_ok(
        "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    http: true\n    sni_must_match: true\n");
    EXPECT_TRUE(quiet.warnings.empty()) << joined(quiet.warnings);
}

TEST(ConfigCapture, SniRoutesOnAnHttpOrConnectServerAreNotIgnored) {
    for (const std::string mode : {"http", "accept_connect"}) {
        SCOPED_TRACE(mode);
        const Config c = load_ok("servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    " + mode +
                                 ": true\n    sni:\n      a.example: echo\n");
        EXPECT_TRUE(c.warnings.empty()) << joined(c.warnings);
    }
}

TEST(ConfigJson, ShowsTheCaptureAndProxyKeys) {
    const Config c = load_ok(egress_example);
    const auto root = boost::json::parse(config::to_json(c)).as_object();
    const auto& egress = root.at("servers").at("egress").as_object();
    EXPECT_TRUE(egress.at("transparent").as_bool());
    EXPECT_TRUE(egress.at("http").as_bool());
    EXPECT_FALSE(egress.at("accept_connect").as_bool());
    EXPECT_TRUE(egress.at("via").at("target_port").is_null());
    const auto& proxy = root.at("servers").at("explicit").as_object();
    EXPECT_TRUE(proxy.at("accept_connect").as_bool());
    EXPECT_TRUE(proxy.at("sni_must_match").as_bool());
}

// ---------------------------------------------------------------------------------------
// SPEC §13: upstream pools, ${file:} and via.auth

// Loads with fake files (path -> content); a path not in the map is missing.
using Files = std::map<std::string, std::string, std::less<>>;
config::LoadResult load_with_files(std::string_view yaml, const Files& files) {
    const env::FileReader read = [&files](std::string_view path) -> Result<std::string> {
        const auto it = files.find(path);
        if (it == files.end()) {
            return Error{"${file:" + std::string(path) + "}: cannot read: No such file"};
        }
        return Result<std::string>{boost::system::in_place_value, it->second};
    };
    return config::load(yaml, "test.yaml", lookup_of(default_vars), read);
}

const std::string pool_yaml = R"(servers:
  s: {listen: "127.0.0.1:1", default: corp}
  t: {listen: "127.0.0.1:2", default: simple}
upstream:
  corp:
    servers: ["tcp://proxy-a.internal:3128", "tcp4://10.0.0.2:3128", "tcp://${PROXY_HOST}:3129"]
    strategy: round_robin
    health:
      interval: 10s
      timeout: 2s
      fail_after: 4
      pass_after: 5
      probe_target: "probe.example.com:443"
  simple: "tcp://host.example:443"
)";

TEST(ConfigPools, ServersStrategyAndHealthAreRead) {
    const Config c = load_ok(pool_yaml);
    const auto* corp = c.find_upstream("corp");
    ASSERT_NE(corp, nullptr);
    EXPECT_TRUE(corp->pool);
    ASSERT_EQ(corp->members.size(), 3U);
    EXPECT_EQ(corp->members[0].url, "tcp://proxy-a.internal:3128");
    EXPECT_EQ(corp->members[1].family, address::Family::v4);
    EXPECT_EQ(corp->members[2].url, "tcp://proxy.internal:3129");  // expanded
    EXPECT_EQ(corp->members[2].address.port, 3129);
    EXPECT_EQ(corp->url, corp->members[0].url);  // the first member
    EXPECT_EQ(corp->strategy, config::Strategy::round_robin);
    EXPECT_EQ(corp->health.interval, 10s);
    EXPECT_EQ(corp->health.timeout, 2s);
    EXPECT_EQ(corp->health.fail_after, 4U);
    EXPECT_EQ(corp->health.pass_after, 5U);
    ASSERT_TRUE(corp->health.probe_target.has_value());
    EXPECT_EQ(corp->health.probe_target->to_string(), "probe.example.com:443");
    EXPECT_TRUE(c.files.empty());
}

TEST(ConfigPools, ASingleUrlIsAPoolOfOneWithDefaults) {
    const Config c = load_ok(pool_yaml);
    const auto* simple = c.find_upstream("simple");
    ASSERT_NE(simple, nullptr);
    EXPECT_FALSE(simple->pool);
    ASSERT_EQ(simple->members.size(), 1U);
    EXPECT_EQ(simple->members[0].url, "tcp://host.example:443");
    EXPECT_EQ(simple->strategy, config::Strategy::failover);
    EXPECT_EQ(simple->health, config::HealthCheck{});
    EXPECT_EQ(simple->health.interval, 0s);
    EXPECT_EQ(simple->health.fail_after, 3U);
    EXPECT_EQ(simple->health.pass_after, 2U);
}

TEST(ConfigPools, StrategiesAreCaseInsensitive) {
    for (const auto& [text, want] : std::vector<std::pair<std::string, config::Strategy>>{
             {"failover", config::Strategy::failover},
             {"Round_Robin", config::Strategy::round_robin},
             {"least_connections", config::Strategy::least_connections}}) {
        SCOPED_TRACE(text);
        const Config c = load_ok(
            "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\n"
            "upstream:\n  u: {servers: [\"tcp://a:1\"], strategy: " +
            text + "}\n");
        EXPECT_EQ(c.upstreams.at(0).strategy, want);
    }
}

TEST(ConfigPools, Errors) {
    const std::string head = "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\nupstream:\n";
    expect_one_error(head + "  u: {strategy: failover}\n", "upstream.u.servers", 3, "missing");
    expect_one_error(head + "  u: {servers: []}\n", "upstream.u.servers", 3, "non-empty list");
    expect_one_error(head + "  u: {servers: \"tcp://a:1\"}\n", "upstream.u.servers", 3,
                     "non-empty list");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\", \"http://b:1\"]}\n",
                     "upstream.u.servers[1]", 3, "invalid upstream URL");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\", \"tcp://a:1\"]}\n",
                     "upstream.u.servers[1]", 3, "listed twice");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], strategy: random}\n",
                     "upstream.u.strategy", 3, "unknown strategy");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], stratgy: failover}\n",
                     "upstream.u.stratgy", 3, "did you mean \"strategy\"");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], health: {fail_after: 0}}\n",
                     "upstream.u.health.fail_after", 3, "between 1 and 1000");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], health: {timeout: 0s}}\n",
                     "upstream.u.health.timeout", 3, "greater than 0s");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], health: {probe_target: x}}\n",
                     "upstream.u.health.probe_target", 3, "bad probe target");
    expect_one_error(head + "  u: {servers: [\"tcp://a:1\"], health: {intervall: 1s}}\n",
                     "upstream.u.health.intervall", 3, "did you mean \"interval\"");
    std::string many = head + "  u: {servers: [";
    for (std::size_t i = 0; i <= config::max_members; ++i) {
        many += (i == 0 ? "" : ", ") + std::string("\"tcp://h") + std::to_string(i) + ":1\"";
    }
    expect_one_error(many + "]}\n", "upstream.u.servers", 3, "at most 32 servers");
}

TEST(ConfigPools, ProbeSettingsWithoutProbesAreWarnings) {
    const Config c = load_ok(
        "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\nupstream:\n"
        "  u: {servers: [\"tcp://a:1\"], health: {probe_target: \"t:443\", headers: {X: y}}}\n");
    const auto joined_warnings = joined(c.warnings);
    EXPECT_THAT(joined_warnings, HasSubstr("probe_target is unused"));
}

TEST(ConfigFiles, FileReferencesExpandWhereVariablesDo) {
    const Files files{{"/s/target", "connect.example.net:3128\n"},
                      {"/s/token", "t0k3n\n"},
                      {"/s/url", "tcp://file-proxy:3128\n"}};
    auto r = load_with_files(R"(servers:
  s:
    listen: "127.0.0.1:1"
    default: u
    via:
      target: "${file:/s/target}"
      headers: {X-Token: "Bearer ${file:/s/token}", X-Again: "${file:/s/token}"}
upstream:
  u: {servers: ["${file:/s/url}", "tcp://b:1"]}
)",
                             files);
    ASSERT_TRUE(r.has_value()) << joined(r.error());
    const Config& c = *r;
    const auto& via = *c.servers.at(0).via;
    EXPECT_EQ(via.target->to_string(), "connect.example.net:3128");
    EXPECT_TRUE(via.target_from_file);
    EXPECT_EQ(via.headers.at(0).value, "Bearer t0k3n");
    const auto& u = c.upstreams.at(0);
    EXPECT_EQ(u.members[0].address.host, "file-proxy");
    EXPECT_TRUE(u.members[0].url_from_file);
    EXPECT_EQ(u.members[0].url, "${file:/s/url}");  // the metrics label: as written
    EXPECT_EQ(c.files, (std::vector<std::string>{"/s/target", "/s/token", "/s/url"}));

    // /config shows none of what came from a file.
    const std::string json = config::to_json(c);
    for (const char* secret : {"connect.example.net", "t0k3n", "file-proxy"}) {
        EXPECT_EQ(json.find(secret), std::string::npos) << secret << " in " << json;
    }
    const auto root = boost::json::parse(json).as_object();
    EXPECT_EQ(root.at("servers").at("s").at("via").at("target").as_string(), "<redacted>");
    EXPECT_EQ(root.at("upstream").at("u").at("servers").at(0).as_string(), "<redacted>");
    EXPECT_EQ(root.at("upstream").at("u").at("servers").at(1).as_string(), "tcp://b:1");
}

TEST(ConfigFiles, AMissingFileIsAnErrorNamingThePathNotTheContent) {
    auto r = load_with_files(
        "servers: {s: {listen: \"127.0.0.1:1\", via: {headers: {A: \"${file:/s/nope}\"}}}}\n", {});
    ASSERT_FALSE(r.has_value());
    EXPECT_TRUE(has_error(r.error(), "servers.s.via.headers.A", 1, "/s/nope")) << joined(r.error());

    // A file whose content breaks a URL: the error does not quote it.
    auto bad = load_with_files(
        "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\n"
        "upstream: {u: \"${file:/s/url}\"}\n",
        {{"/s/url", "http://secret-host:1"}});
    ASSERT_FALSE(bad.has_value());
    EXPECT_TRUE(has_error(bad.error(), "upstream.u", 2, "read from a file"));
    EXPECT_THAT(joined(bad.error()), Not(HasSubstr("secret-host")));
}

TEST(ConfigFiles, WithoutAReaderFilesAreRefused) {
    const auto errors = load_errors(
        "servers: {s: {listen: \"127.0.0.1:1\", via: {headers: {A: "
        "\"${file:/etc/hostname}\"}}}}\n");
    EXPECT_TRUE(has_error(errors, "servers.s.via.headers.A", 1, "reads no file"));
}

const std::string auth_yaml = R"(servers:
  s:
    listen: "127.0.0.1:1"
    via:
      target: "t.example:443"
      auth:
        basic: {username: tpt, password_file: /creds/password}
)";

TEST(ConfigAuth, BasicAuthBuildsTheProxyAuthorizationHeader) {
    auto r = load_with_files(auth_yaml, {{"/creds/password", "S3cret-pw\n"}});
    ASSERT_TRUE(r.has_value()) << joined(r.error());
    const auto& via = *r->servers.at(0).via;
    ASSERT_EQ(via.headers.size(), 1U);
    EXPECT_EQ(via.headers[0].name, "Proxy-Authorization");
    // RFC 7617 §2: base64("tpt:S3cret-pw"), the newline stripped.
    EXPECT_EQ(via.headers[0].value, "Basic dHB0OlMzY3JldC1wdw==");
    ASSERT_TRUE(via.auth.has_value());
    EXPECT_EQ(via.auth->password_file, "/creds/password");
    EXPECT_EQ(r->files, (std::vector<std::string>{"/creds/password"}));

    const std::string json = config::to_json(*r);
    EXPECT_EQ(json.find("S3cret"), std::string::npos);
    EXPECT_EQ(json.find("dHB0"), std::string::npos);
    const auto root = boost::json::parse(json).as_object();
    const auto& basic = root.at("servers").at("s").at("via").at("auth").at("basic");
    EXPECT_EQ(basic.at("username").as_string(), "<redacted>");
    EXPECT_EQ(basic.at("password_file").as_string(), "/creds/password");
    EXPECT_TRUE(basic.at("username_file").is_null());
}

TEST(ConfigAuth, UsernameFromAFileAndPathsFromTheEnvironment) {
    auto r = load_with_files(R"(servers:
  s:
    listen: "127.0.0.1:1"
    via:
      target: "t.example:443"
      auth: {basic: {username_file: "${CREDS:-/creds}/username", password_file: /creds/password}}
)",
                             {{"/creds/username", "user\n"}, {"/creds/password", "pw"}});
    ASSERT_TRUE(r.has_value()) << joined(r.error());
    const auto& via = *r->servers.at(0).via;
    EXPECT_EQ(via.headers.at(0).value, "Basic dXNlcjpwdw==");  // user:pw
    EXPECT_EQ(via.auth->username_file, std::optional<std::string>("/creds/username"));
}

TEST(ConfigAuth, Errors) {
    const Files pw{{"/creds/password", "pw"}, {"/creds/ctl", "p\tw"}};
    const auto errors_of = [&](const std::string& basic, const std::string& extra = "") {
        auto r = load_with_files(
            "servers:\n  s:\n    listen: \"127.0.0.1:1\"\n    via:\n"
            "      target: \"t:1\"\n" +
                extra + "      auth: {basic: " + basic + "}\n",
            pw);
        return r ? std::vector<ConfigError>{} : r.error();
    };
    EXPECT_TRUE(
        has_error(errors_of("{username: u}"), "servers.s.via.auth.basic", 6, "needs `username`"));
    EXPECT_TRUE(
        has_error(errors_of("{username: u, username_file: /x, password_file: /creds/password}"),
                  "servers.s.via.auth.basic.username_file", 6, "both set"));
    EXPECT_TRUE(has_error(errors_of("{username: u, password_file: /creds/missing}"),
                          "servers.s.via.auth.basic.password_file", 6, "/creds/missing"));
    EXPECT_TRUE(has_error(errors_of("{username: u, password_file: creds/password}"),
                          "servers.s.via.auth.basic.password_file", 6, "not an absolute path"));
    EXPECT_TRUE(has_error(errors_of("{username: \"a:b\", password_file: /creds/password}"),
                          "servers.s.via.auth.basic.username", 6, "colon"));
    EXPECT_TRUE(has_error(errors_of("{username: u, password_file: /creds/ctl}"),
                          "servers.s.via.auth.basic.password_file", 6, "control character"));
    EXPECT_TRUE(has_error(errors_of("{username: u, password: pw}"),
                          "servers.s.via.auth.basic.password", 6, "unknown key"));
    EXPECT_TRUE(has_error(errors_of("{username: u, password_file: /creds/password}",
                                    "      headers: {proxy-authorization: x}\n"),
                          "servers.s.via.auth", 7, "both set"));
}

TEST(ConfigAuth, HealthProbesTakeAuthToo) {
    auto r = load_with_files(R"(servers: {s: {listen: "127.0.0.1:1", default: u}}
upstream:
  u:
    servers: ["tcp://a:1"]
    health:
      interval: 5s
      probe_target: "t.example:443"
      auth: {basic: {username: p, password_file: /creds/password}}
)",
                             {{"/creds/password", "q"}});
    ASSERT_TRUE(r.has_value()) << joined(r.error());
    const auto& h = r->upstreams.at(0).health;
    ASSERT_EQ(h.headers.size(), 1U);
    EXPECT_EQ(h.headers[0].value, "Basic cDpx");  // p:q
    const auto root = boost::json::parse(config::to_json(*r)).as_object();
    const auto& health = root.at("upstream").at("u").at("health");
    EXPECT_EQ(health.at("headers").at("Proxy-Authorization").as_string(), "<redacted>");
    EXPECT_EQ(health.at("auth").at("basic").at("username").as_string(), "<redacted>");
    EXPECT_EQ(health.at("interval").as_string(), "5s");
}

}  // namespace
