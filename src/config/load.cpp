// load(): YAML text -> validated Config (SPEC §3). The only file that sees yaml-cpp; no
// yaml-cpp type or exception leaves it.
//
// The walk is driven by the schema, never by the document's shape: it descends only into the
// maps and lists the schema names, so an alias cycle (`&a [*a]`), which yaml-cpp builds as a
// cyclic graph, is visited at most once per schema level, and the depth of the walk is
// bounded by the schema (yaml-cpp itself stops nesting at 2000 levels with DeepRecursion).
//
// Conventions:
// - A key whose value is YAML null (`key:` or `key: ~`) is treated as absent, except where
//   noted (a header value null is the empty value).
// - Scalars are taken as their text, so `Proxy-KeepAlive: true` is the header value "true"
//   and `maxclients: "10"` is 10.
// - Every problem is recorded with its YAML path and line and the walk goes on, so one run
//   reports them all (up to max_errors).
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <tpt/config.hpp>
#include <tpt/hostname.hpp>

#include "detail.hpp"

namespace tpt::config {

namespace {

// Beyond this many errors the rest are summarised in one line: a file with 10,000 broken
// SNI keys is better answered with its first errors than with 10,000 lines.
constexpr std::size_t max_errors = 200;

// A 10,000-route config is about 400 KB; anything far bigger is a mistake (or an attack on
// the reload path), and yaml-cpp needs about a second per 3 MB.
constexpr std::size_t max_text_bytes = 16U << 20U;

int line_of(const YAML::Node& node) {
    const YAML::Mark mark = node.Mark();
    return mark.is_null() ? 0 : mark.line + 1;
}

// RFC 9110 §5.6.2: token = 1*tchar.
bool is_token(std::string_view s) {
    if (s.empty()) {
        return false;
    }
    return std::all_of(s.begin(), s.end(), [](char c) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            return true;
        }
        return std::string_view{"!#$%&'*+-.^_`|~"}.find(c) != std::string_view::npos;
    });
}

bool has_control_char(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

// Edit distance for "did you mean" hints; keys longer than this are not worth comparing.
constexpr std::size_t max_hint_length = 40;

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
            diagonal = above;
        }
    }
    return row[b.size()];
}

using Keys = std::span<const std::string_view>;

bool contains(Keys keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

std::string unknown_key_message(std::string_view key, Keys known) {
    std::string msg = "unknown key \"" + printable(key) + "\"";
    if (key.size() <= max_hint_length) {
        std::string_view best;
        std::size_t best_distance = 3;  // suggest only close typos
        for (const auto k : known) {
            const std::size_t d = edit_distance(hostname::to_lower(key), k);
            if (d < best_distance) {
                best_distance = d;
                best = k;
            }
        }
        if (!best.empty()) {
            msg += " (did you mean \"" + std::string(best) + "\"?)";
        }
    }
    msg += "; allowed here:";
    for (const auto k : known) {
        msg += ' ';
        msg += k;
    }
    return msg;
}

// Records where each document starts; the events themselves are not needed.
class DocumentMarks final : public YAML::EventHandler {
public:
    std::vector<int> lines;  // 1-based line of each document's start

    void OnDocumentStart(const YAML::Mark& mark) override {
        lines.push_back(mark.is_null() ? 0 : mark.line + 1);
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& /*mark*/, YAML::anchor_t /*anchor*/) override {}
    void OnAlias(const YAML::Mark& /*mark*/, YAML::anchor_t /*anchor*/) override {}
    void OnScalar(const YAML::Mark& /*mark*/, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                  const std::string& /*value*/) override {}
    void OnSequenceStart(const YAML::Mark& /*mark*/, const std::string& /*tag*/,
                         YAML::anchor_t /*anchor*/, YAML::EmitterStyle::value /*style*/) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& /*mark*/, const std::string& /*tag*/,
                    YAML::anchor_t /*anchor*/, YAML::EmitterStyle::value /*style*/) override {}
    void OnMapEnd() override {}
};

struct DocumentCount {
    int count = 0;        // 0, 1, or 2 meaning "more than one"
    int second_line = 0;  // where the second document starts
};

// yaml-cpp 0.7's LoadAll() never returns on a stray `,` at document level (",", "\"x\","):
// its parser yields an empty document without consuming the token, again and again, until
// memory runs out. So the documents are counted with the event parser, stopping at the
// second, and only the first is loaded. Throws YAML::ParserException on a syntax error.
DocumentCount count_documents(const std::string& text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentMarks marks;
    DocumentCount out;
    while (out.count < 2 && parser.HandleNextDocument(marks)) {
        ++out.count;
    }
    if (out.count > 1 && marks.lines.size() > 1) {
        out.second_line = marks.lines[1];
    }
    return out;
}

struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
    std::string path;  // YAML path of the value
};

// A name used somewhere (default, sni) that must be a built-in or in `upstream:`.
struct UpstreamRef {
    std::string name;
    std::string path;
    int line;
};

struct ListenRef {
    std::string normalised;  // "host:port"
    std::string path;
    int line;
};

class Loader {
public:
    Loader(std::string_view file, const env::Lookup& lookup) : file_(file), lookup_(lookup) {}

    LoadResult run(std::string_view text);

private:
    void error(std::string path, int line, std::string message);
    void error(std::string path, const YAML::Node& at, std::string message) {
        error(std::move(path), line_of(at), std::move(message));
    }
    void warn(std::string path, int line, std::string message);

    // The entries of a map, in file order; a null node is an empty map. Records an error for
    // a node that is not a map, a key that is not a scalar, and a duplicate key.
    std::vector<Entry> entries(const YAML::Node& node, const std::string& path);
    void unknown_key(const Entry& e, Keys known) {
        error(e.path, e.key_node, unknown_key_message(e.key, known));
    }

    // Typed scalar readers. nullopt after recording an error.
    std::optional<std::string> text(const YAML::Node& node, const std::string& path,
                                    std::string_view what = "a scalar");
    std::optional<std::string> expanded(const YAML::Node& node, const std::string& path,
                                        std::string_view what = "a scalar");
    std::optional<bool> boolean(const Entry& e);
    std::optional<Duration> duration(const Entry& e, bool allow_zero);
    std::optional<std::int64_t> integer(const Entry& e, std::int64_t min, std::int64_t max,
                                        std::string_view range_message);

    void top_level(const YAML::Node& root);
    void admin(const Entry& e);
    void reload(const Entry& e);
    void shutdown(const Entry& e);
    void servers(const Entry& e);
    void server(const Entry& e);
    std::optional<Via> via(const YAML::Node& node, const std::string& path, bool tls);
    void headers(const Entry& e, std::vector<Header>& out);
    std::vector<SniRoute> sni(const Entry& e);
    void upstreams(const Entry& e);
    std::optional<address::HostPort> listen_address(const YAML::Node& node, const std::string& path,
                                                    address::Family protocol);
    void cross_checks();

    std::string file_;
    const env::Lookup& lookup_;
    Config config_;
    std::vector<ConfigError> errors_;
    std::size_t suppressed_errors_ = 0;
    std::vector<UpstreamRef> upstream_refs_;
    // Every name in `upstream:`, valid or not, so a broken URL is reported once and not
    // again as an unknown name at each use.
    std::set<std::string, std::less<>> defined_upstreams_;
    std::vector<ListenRef> listen_refs_;
    std::optional<ListenRef> admin_listen_ref_;
};

void Loader::error(std::string path, int line, std::string message) {
    if (errors_.size() >= max_errors) {
        ++suppressed_errors_;
        return;
    }
    errors_.push_back(ConfigError{file_, std::move(path), line, std::move(message)});
}

void Loader::warn(std::string path, int line, std::string message) {
    if (config_.warnings.size() < max_errors) {
        config_.warnings.push_back(ConfigError{file_, std::move(path), line, std::move(message)});
    }
}

std::vector<Entry> Loader::entries(const YAML::Node& node, const std::string& path) {
    std::vector<Entry> out;
    if (node.IsNull()) {
        return out;
    }
    if (!node.IsMap()) {
        error(path, node, "expected a map");
        return out;
    }
    std::unordered_map<std::string, int> seen;  // key -> line of its first occurrence
    for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node key_node = it->first;
        if (!key_node.IsScalar() && !key_node.IsNull()) {
            error(path, key_node, "a key must be a scalar, not a list or a map");
            continue;
        }
        std::string key = key_node.IsScalar() ? key_node.Scalar() : std::string{};
        std::string child_path = yaml_child(path, key);
        const int line = line_of(key_node);
        const auto [first, inserted] = seen.emplace(key, line);
        if (!inserted) {
            error(child_path, line,
                  "duplicate key (first on line " + std::to_string(first->second) + ")");
            continue;
        }
        out.push_back(Entry{std::move(key), key_node, it->second, std::move(child_path)});
    }
    return out;
}

std::optional<std::string> Loader::text(const YAML::Node& node, const std::string& path,
                                        std::string_view what) {
    if (!node.IsScalar()) {
        error(path, node, "expected " + std::string(what));
        return std::nullopt;
    }
    return node.Scalar();
}

std::optional<std::string> Loader::expanded(const YAML::Node& node, const std::string& path,
                                            std::string_view what) {
    auto raw = text(node, path, what);
    if (!raw) {
        return std::nullopt;
    }
    auto result = env::expand(*raw, lookup_);
    if (!result) {
        error(path, node, "environment expansion: " + printable(result.error()));
        return std::nullopt;
    }
    return std::move(result).value();
}

std::optional<bool> Loader::boolean(const Entry& e) {
    auto t = text(e.value, e.path, "true or false");
    if (!t) {
        return std::nullopt;
    }
    const std::string v = hostname::to_lower(*t);
    if (v == "true" || v == "yes" || v == "on") {
        return true;
    }
    if (v == "false" || v == "no" || v == "off") {
        return false;
    }
    error(e.path, e.value, "expected true or false, got \"" + printable(*t) + "\"");
    return std::nullopt;
}

std::optional<Duration> Loader::duration(const Entry& e, bool allow_zero) {
    auto t = text(e.value, e.path, "a duration");
    if (!t) {
        return std::nullopt;
    }
    auto d = duration::parse(*t);
    if (!d) {
        error(e.path, e.value, printable(d.error()));
        return std::nullopt;
    }
    if (!allow_zero && d.value() == Duration::zero()) {
        error(e.path, e.value, "must be greater than 0s");
        return std::nullopt;
    }
    return d.value();
}

std::optional<std::int64_t> Loader::integer(const Entry& e, std::int64_t min, std::int64_t max,
                                            std::string_view range_message) {
    auto t = text(e.value, e.path, "an integer");
    if (!t) {
        return std::nullopt;
    }
    std::int64_t v = 0;
    const char* first = t->data();
    const char* last = first + t->size();
    const auto [ptr, ec] = std::from_chars(first, last, v);
    if (ec == std::errc::result_out_of_range) {
        error(e.path, e.value, std::string(range_message));
        return std::nullopt;
    }
    if (ec != std::errc{} || ptr != last) {
        error(e.path, e.value, "expected an integer, got \"" + printable(*t) + "\"");
        return std::nullopt;
    }
    if (v < min || v > max) {
        error(e.path, e.value, std::string(range_message) + ", got " + std::to_string(v));
        return std::nullopt;
    }
    return v;
}

LoadResult Loader::run(std::string_view text_in) {
    if (text_in.size() > max_text_bytes) {
        return std::vector<ConfigError>{
            ConfigError{file_, "", 0,
                        "the file is larger than " + std::to_string(max_text_bytes >> 20U) +
                            " MiB; a config is never that big (yaml-cpp parses about 3 MB/s)"}};
    }
    try {
        const std::string text(text_in);
        const DocumentCount docs = count_documents(text);
        if (docs.count > 1) {
            error("", docs.second_line,
                  "content after the first YAML document (a second `---` document or a stray "
                  "`,`); a config is exactly one document");
        } else {
            const YAML::Node root = docs.count == 0 ? YAML::Node{} : YAML::Load(text);
            if (root.IsNull()) {
                error("", line_of(root),
                      "the config is empty; expected a map with at least `servers`");
            } else {
                top_level(root);
            }
        }
    } catch (const YAML::ParserException& ex) {
        // A syntax error: the partial tree means nothing, so it is the only error reported.
        errors_.clear();
        suppressed_errors_ = 0;
        errors_.push_back(ConfigError{file_, "", ex.mark.is_null() ? 0 : ex.mark.line + 1,
                                      "YAML syntax error: " + printable(ex.msg)});
    } catch (const std::exception& ex) {
        errors_.push_back(ConfigError{file_, "", 0, std::string("cannot load: ") + ex.what()});
    } catch (...) {
        errors_.push_back(ConfigError{file_, "", 0, "cannot load: unknown error"});
    }
    if (errors_.empty()) {
        return std::move(config_);
    }
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
    if (suppressed_errors_ > 0) {
        errors_.push_back(ConfigError{
            file_, "", 0, "and " + std::to_string(suppressed_errors_) + " more errors not shown"});
    }
    return std::move(errors_);
}

constexpr std::array<std::string_view, 11> top_keys{
    "version",          "log",     "log_format", "log-format", "admin", "reload", "shutdown",
    "resolve_interval", "servers", "upstream",   "via"};

void Loader::top_level(const YAML::Node& root) {
    if (!root.IsMap()) {
        error("", root, "the top level must be a map (version, log, servers, upstream, ...)");
        return;
    }
    bool have_servers = false;
    std::optional<std::string> log_format_key;
    for (const Entry& e : entries(root, "")) {
        if (e.key == "via") {
            // Only an anchor for `*alias` use (seed README); what it means is checked where
            // it is used.
            continue;
        }
        if (e.value.IsNull()) {
            if (!contains(top_keys, e.key)) {
                unknown_key(e, top_keys);
            }
            continue;
        }
        if (e.key == "version") {
            if (auto v = integer(e, 1, 2, "unsupported config version: must be 1 or 2")) {
                config_.version = static_cast<int>(*v);
            }
        } else if (e.key == "log") {
            if (auto t = text(e.value, e.path, "a log level")) {
                if (auto level = parse_log_level(*t)) {
                    config_.log = *level;
                } else {
                    error(e.path, e.value,
                          "unknown log level \"" + printable(*t) +
                              "\"; expected off, error, warn, info, debug, trace or disable");
                }
            }
        } else if (e.key == "log_format" || e.key == "log-format") {
            if (log_format_key) {
                error(e.path, e.key_node,
                      "log format given twice (also as " + *log_format_key + ")");
                continue;
            }
            log_format_key = e.key;
            if (auto t = text(e.value, e.path, "txt, text or json")) {
                const std::string v = hostname::to_lower(*t);
                if (v == "txt" || v == "text") {
                    config_.log_format = LogFormat::text;
                } else if (v == "json") {
                    config_.log_format = LogFormat::json;
                } else {
                    error(
                        e.path, e.value,
                        "unknown log format \"" + printable(*t) + "\"; expected txt, text or json");
                }
            }
        } else if (e.key == "admin") {
            admin(e);
        } else if (e.key == "reload") {
            reload(e);
        } else if (e.key == "shutdown") {
            shutdown(e);
        } else if (e.key == "resolve_interval") {
            if (auto d = duration(e, false)) {
                config_.resolve_interval = *d;
            }
        } else if (e.key == "servers") {
            have_servers = true;
            servers(e);
        } else if (e.key == "upstream") {
            upstreams(e);
        } else {
            unknown_key(e, top_keys);
        }
    }
    if (!have_servers) {
        error("servers", line_of(root), "missing or empty: a config needs a `servers` map");
    }
    cross_checks();
}

void Loader::admin(const Entry& e) {
    static constexpr std::array<std::string_view, 2> keys{"listen", "control_from"};
    for (const Entry& a : entries(e.value, e.path)) {
        if (a.key == "listen") {
            if (a.value.IsNull()) {
                continue;
            }
            auto t = text(a.value, a.path, "an address or \"\"");
            if (!t) {
                continue;
            }
            if (t->empty()) {
                config_.admin.listen.reset();
                continue;
            }
            if (auto hp = listen_address(a.value, a.path, address::Family::any)) {
                config_.admin.listen = *hp;
                admin_listen_ref_ = ListenRef{hp->to_string(), a.path, line_of(a.value)};
            }
        } else if (a.key == "control_from") {
            if (a.value.IsNull()) {
                continue;
            }
            if (auto t = text(a.value, a.path, "loopback or any")) {
                const std::string v = hostname::to_lower(*t);
                if (v == "loopback") {
                    config_.admin.control_from = ControlFrom::loopback;
                } else if (v == "any") {
                    config_.admin.control_from = ControlFrom::any;
                } else {
                    error(a.path, a.value,
                          "expected loopback or any, got \"" + printable(*t) + "\"");
                }
            }
        } else {
            unknown_key(a, keys);
        }
    }
}

void Loader::reload(const Entry& e) {
    static constexpr std::array<std::string_view, 2> keys{"watch", "poll_interval"};
    for (const Entry& r : entries(e.value, e.path)) {
        if (!contains(keys, r.key)) {
            unknown_key(r, keys);
        } else if (r.value.IsNull()) {
            continue;
        } else if (r.key == "watch") {
            if (auto b = boolean(r)) {
                config_.reload.watch = *b;
            }
        } else if (auto d = duration(r, true)) {
            config_.reload.poll_interval = *d;
        }
    }
}

void Loader::shutdown(const Entry& e) {
    static constexpr std::array<std::string_view, 2> keys{"delay", "drain_timeout"};
    for (const Entry& s : entries(e.value, e.path)) {
        if (!contains(keys, s.key)) {
            unknown_key(s, keys);
        } else if (s.value.IsNull()) {
            continue;
        } else if (auto d = duration(s, true)) {
            (s.key == "delay" ? config_.shutdown.delay : config_.shutdown.drain_timeout) = *d;
        }
    }
}

void Loader::servers(const Entry& e) {
    const auto list = entries(e.value, e.path);
    if (list.empty() && (e.value.IsNull() || e.value.IsMap())) {
        warn(e.path, line_of(e.value), "no servers: nothing will be proxied");
    }
    for (const Entry& s : list) {
        server(s);
    }
}

std::optional<address::HostPort> Loader::listen_address(const YAML::Node& node,
                                                        const std::string& path,
                                                        address::Family protocol) {
    auto t = text(node, path, "a listen address (\"host:port\")");
    if (!t) {
        return std::nullopt;
    }
    // Port 0 (an ephemeral port) is allowed for tests; such addresses never collide.
    auto hp = address::parse_host_port(*t, true);
    if (!hp) {
        error(path, node, "bad listen address: " + printable(hp.error()));
        return std::nullopt;
    }
    address::HostPort out = std::move(hp).value();
    if (!address::is_ip_literal(out.host)) {
        error(path, node,
              "bad listen address \"" + printable(*t) +
                  "\": the host must be an IP address (\"0.0.0.0\", \"[::]\", \"127.0.0.1\")");
        return std::nullopt;
    }
    if (protocol == address::Family::v4 && out.is_ipv6_literal) {
        error(path, node,
              "listen address \"" + printable(*t) + "\" is IPv6 but the protocol is tcp4");
        return std::nullopt;
    }
    if (protocol == address::Family::v6 && !out.is_ipv6_literal) {
        error(path, node,
              "listen address \"" + printable(*t) + "\" is IPv4 but the protocol is tcp6");
        return std::nullopt;
    }
    out.host = normalise_ip(out.host);
    return out;
}

constexpr std::array<std::string_view, 9> server_keys{
    "listen",       "protocol", "tls", "sni", "default", "maxclients", "client_hello_timeout",
    "idle_timeout", "via"};

void Loader::server(const Entry& e) {
    Server s;
    s.name = e.key;
    // Names become JSON keys (GET /config) and metric label values: UTF-8 text, one line.
    if (s.name.empty() || has_control_char(s.name) || !is_valid_utf8(s.name)) {
        error(e.path, e.key_node, "a server name must be non-empty, printable UTF-8");
    }
    if (!e.value.IsMap()) {
        error(e.path, e.value, "expected a map (listen, default, ...)");
        return;
    }
    std::optional<Entry> listen_entry;
    std::optional<Entry> sni_entry;
    std::optional<Entry> via_entry;
    for (const Entry& f : entries(e.value, e.path)) {
        if (!contains(server_keys, f.key)) {
            unknown_key(f, server_keys);
            continue;
        }
        if (f.value.IsNull()) {
            continue;
        }
        if (f.key == "listen") {
            listen_entry = f;
        } else if (f.key == "protocol") {
            if (auto t = text(f.value, f.path, "tcp, tcp4 or tcp6")) {
                auto fam = address::parse_family(*t);
                if (fam) {
                    s.protocol = fam.value();
                } else {
                    error(f.path, f.value,
                          "unknown protocol \"" + printable(*t) + "\"; expected tcp, tcp4 or tcp6");
                }
            }
        } else if (f.key == "tls") {
            if (auto b = boolean(f)) {
                s.tls = *b;
            }
        } else if (f.key == "sni") {
            sni_entry = f;
        } else if (f.key == "default") {
            if (auto t = text(f.value, f.path, "an upstream name")) {
                s.default_upstream = *t;
                upstream_refs_.push_back(UpstreamRef{*t, f.path, line_of(f.value)});
            }
        } else if (f.key == "maxclients") {
            constexpr auto max = std::numeric_limits<std::uint32_t>::max();
            if (auto n = integer(f, 1, max, "maxclients must be between 1 and 4294967295")) {
                s.maxclients = static_cast<std::uint32_t>(*n);
            }
        } else if (f.key == "client_hello_timeout") {
            if (auto d = duration(f, false)) {
                s.client_hello_timeout = *d;
            }
        } else if (f.key == "idle_timeout") {
            if (auto d = duration(f, true)) {
                s.idle_timeout = *d;
            }
        } else {
            via_entry = f;
        }
    }

    // Read after the loop: they depend on `protocol` and `tls`, which may come later.
    if (!listen_entry) {
        error(yaml_child(e.path, "listen"), line_of(e.key_node),
              "missing: a server needs at least one listen address");
    } else if (listen_entry->value.IsSequence()) {
        if (listen_entry->value.size() == 0) {
            warn(listen_entry->path, line_of(listen_entry->value),
                 "empty listen list: this server never accepts a connection");
        }
        std::size_t i = 0;
        for (auto it = listen_entry->value.begin(); it != listen_entry->value.end(); ++it, ++i) {
            const std::string path = yaml_index(listen_entry->path, i);
            if (auto hp = listen_address(*it, path, s.protocol)) {
                listen_refs_.push_back(ListenRef{hp->to_string(), path, line_of(*it)});
                s.listen.push_back(std::move(*hp));
            }
        }
    } else if (auto hp = listen_address(listen_entry->value, listen_entry->path, s.protocol)) {
        listen_refs_.push_back(
            ListenRef{hp->to_string(), listen_entry->path, line_of(listen_entry->value)});
        s.listen.push_back(std::move(*hp));
    }

    if (via_entry) {
        s.via = via(via_entry->value, via_entry->path, s.tls);
    }
    if (sni_entry) {
        s.sni = sni(*sni_entry);
        // The Rust seed accepts `sni` without `tls: true` and ignores it; so do we (old
        // configs keep loading), but the routes can never match, which is worth a warning.
        if (!s.tls && !s.sni.empty()) {
            warn(sni_entry->path, line_of(sni_entry->key_node),
                 "sni routes are ignored: this server does not have `tls: true`");
        }
    }
    config_.servers.push_back(std::move(s));
}

constexpr std::array<std::string_view, 6> via_keys{
    "target", "use_sni_as_target", "target_port", "connect_timeout", "stats_interval", "headers"};

std::optional<Via> Loader::via(const YAML::Node& node, const std::string& path, bool tls) {
    if (!node.IsMap()) {
        error(path, node, "expected a map (target, headers, ...)");
        return std::nullopt;
    }
    Via v;
    bool ok = true;
    std::optional<std::pair<std::string, Entry>> target;  // expanded text, entry
    std::optional<Entry> use_sni_entry;
    for (const Entry& f : entries(node, path)) {
        if (!contains(via_keys, f.key)) {
            unknown_key(f, via_keys);
            ok = false;
            continue;
        }
        if (f.value.IsNull()) {
            continue;
        }
        if (f.key == "target") {
            if (auto t = expanded(f.value, f.path, "a CONNECT target (\"host:port\")")) {
                // The seed's default target is "": no static CONNECT target.
                if (!t->empty()) {
                    target.emplace(std::move(*t), f);
                }
            } else {
                ok = false;
            }
        } else if (f.key == "use_sni_as_target") {
            if (auto b = boolean(f)) {
                v.use_sni_as_target = *b;
                use_sni_entry = f;
            } else {
                ok = false;
            }
        } else if (f.key == "target_port") {
            if (auto n = integer(f, 1, 65535, "target_port must be between 1 and 65535")) {
                v.target_port = static_cast<std::uint16_t>(*n);
            } else {
                ok = false;
            }
        } else if (f.key == "connect_timeout") {
            if (auto d = duration(f, false)) {
                v.connect_timeout = *d;
            } else {
                ok = false;
            }
        } else if (f.key == "stats_interval") {
            if (auto d = duration(f, true)) {
                v.stats_interval = *d;
            } else {
                ok = false;
            }
        } else {
            headers(f, v.headers);
        }
    }
    if (target) {
        const auto& [t, entry] = *target;
        if (v.use_sni_as_target) {
            error(entry.path, entry.value,
                  "`target` and `use_sni_as_target: true` are both set; use one of them");
            ok = false;
        } else {
            // The seed README's `target: www.test1.com` has no port, and the seed sent it
            // as written; RFC 9110 §9.3.6 requires "host:port" in CONNECT, so the port is
            // completed with target_port (default 443) and a warning says so.
            std::string with_port = t;
            const bool bracketed_only = t.front() == '[' && t.back() == ']';
            if (t.find(':') == std::string::npos || bracketed_only) {
                with_port += ':' + std::to_string(v.target_port);
                warn(entry.path, line_of(entry.value),
                     "target has no port; using target_port " + std::to_string(v.target_port));
            }
            auto hp = address::parse_host_port(with_port);
            if (hp) {
                v.target = std::move(hp).value();
            } else {
                error(entry.path, entry.value, "bad CONNECT target: " + printable(hp.error()));
                ok = false;
            }
        }
    }
    if (use_sni_entry && v.use_sni_as_target && !tls) {
        warn(use_sni_entry->path, line_of(use_sni_entry->value),
             "use_sni_as_target on a server without `tls: true`: there is never an SNI, so "
             "these connections are closed");
    }
    if (!ok) {
        return std::nullopt;
    }
    return v;
}

void Loader::headers(const Entry& e, std::vector<Header>& out) {
    std::set<std::string> seen_lower;
    for (const Entry& h : entries(e.value, e.path)) {
        if (!is_token(h.key)) {
            error(h.path, h.key_node,
                  "header name \"" + printable(h.key) +
                      "\" is not an HTTP token (RFC 9110 §5.6.2: letters, digits and "
                      "!#$%&'*+-.^_`|~)");
            continue;
        }
        if (!seen_lower.insert(hostname::to_lower(h.key)).second) {
            warn(h.path, line_of(h.key_node),
                 "header \"" + h.key + "\" is given more than once (names are case-insensitive)");
        }
        std::string value;
        if (!h.value.IsNull()) {
            auto t = expanded(h.value, h.path);
            if (!t) {
                continue;
            }
            value = std::move(*t);
        }
        // RFC 9110 §5.5: CR, LF and NUL would split or end the request head (the value is
        // never shown: it is typically a credential).
        if (value.find_first_of(std::string_view{"\r\n\0", 3}) != std::string::npos) {
            error(h.path, h.value,
                  "header value contains CR, LF or NUL after environment expansion");
            continue;
        }
        out.push_back(Header{h.key, std::move(value)});
    }
}

std::vector<SniRoute> Loader::sni(const Entry& e) {
    std::vector<SniRoute> routes;
    // pattern -> (key as written, line)
    std::unordered_map<std::string, std::pair<std::string, int>> seen;
    for (const Entry& r : entries(e.value, e.path)) {
        SniRoute route;
        route.key = r.key;
        route.pattern = hostname::to_lower(r.key);
        bool ok = true;
        const std::string& p = route.pattern;
        if (p.starts_with("*.")) {
            route.wildcard = true;
            const std::string_view suffix = std::string_view{p}.substr(2);
            if (suffix.find('*') != std::string_view::npos || !hostname::is_valid(suffix)) {
                error(r.path, r.key_node,
                      "invalid wildcard \"" + printable(r.key) +
                          "\": `*` is allowed only as a whole leading label before a valid "
                          "host name, as in \"*.example.org\"");
                ok = false;
            }
        } else if (p.find('*') != std::string::npos) {
            error(r.path, r.key_node,
                  "invalid wildcard \"" + printable(r.key) +
                      "\": `*` is allowed only as a whole leading label, as in "
                      "\"*.example.org\"");
            ok = false;
        } else if (!hostname::is_valid(p)) {
            error(r.path, r.key_node,
                  "\"" + printable(r.key) +
                      "\" is not a valid host name (letters, digits, '-', '_', '.'; no empty "
                      "label; at most 253 bytes)");
            ok = false;
        }
        if (ok) {
            const int line = line_of(r.key_node);
            const auto [first, inserted] = seen.emplace(p, std::pair{r.key, line});
            if (!inserted) {
                error(r.path, r.key_node,
                      "duplicate SNI key \"" + printable(r.key) + "\": same as \"" +
                          printable(first->second.first) + "\" on line " +
                          std::to_string(first->second.second) +
                          " (keys are compared case-insensitively)");
                ok = false;
            }
        }

        if (r.value.IsScalar()) {
            route.upstream = r.value.Scalar();
            upstream_refs_.push_back(UpstreamRef{route.upstream, r.path, line_of(r.value)});
        } else if (r.value.IsMap()) {
            static constexpr std::array<std::string_view, 2> keys{"upstream", "via"};
            bool have_upstream = false;
            for (const Entry& f : entries(r.value, r.path)) {
                if (f.key == "upstream") {
                    if (f.value.IsNull()) {
                        continue;
                    }
                    if (auto t = text(f.value, f.path, "an upstream name")) {
                        route.upstream = *t;
                        have_upstream = true;
                        upstream_refs_.push_back(
                            UpstreamRef{route.upstream, f.path, line_of(f.value)});
                    } else {
                        ok = false;
                    }
                } else if (f.key == "via") {
                    if (f.value.IsNull()) {
                        continue;  // inherit the server's via
                    }
                    route.via = via(f.value, f.path, true);
                    ok = ok && route.via.has_value();
                } else {
                    unknown_key(f, keys);
                    ok = false;
                }
            }
            if (!have_upstream && ok) {
                error(yaml_child(r.path, "upstream"), line_of(r.key_node),
                      "missing: an SNI route needs an upstream name");
                ok = false;
            }
        } else {
            error(r.path, r.value,
                  "expected an upstream name or a map {upstream: NAME, via: {...}}");
            ok = false;
        }
        if (ok) {
            routes.push_back(std::move(route));
        }
    }
    return routes;
}

void Loader::upstreams(const Entry& e) {
    for (const Entry& u : entries(e.value, e.path)) {
        if (u.key.empty() || has_control_char(u.key) || !is_valid_utf8(u.key)) {
            error(u.path, u.key_node, "an upstream name must be non-empty, printable UTF-8");
            continue;
        }
        defined_upstreams_.insert(u.key);
        if (is_builtin(u.key)) {
            error(u.path, u.key_node,
                  "\"" + u.key +
                      "\" is a built-in upstream (ban, echo, health) and cannot "
                      "be redefined");
            continue;
        }
        auto url = expanded(u.value, u.path, "a URL (tcp://host:port)");
        if (!url) {
            continue;
        }
        auto parsed = address::parse_upstream_url(*url);
        if (!parsed) {
            error(u.path, u.value, printable(parsed.error()));
            continue;
        }
        config_.upstreams.push_back(
            Upstream{u.key, std::move(*url), parsed->family, parsed->address});
    }
}

void Loader::cross_checks() {
    std::set<std::string_view> used;
    for (const auto& ref : upstream_refs_) {
        used.insert(ref.name);
        if (!is_builtin(ref.name) && !defined_upstreams_.contains(ref.name)) {
            error(ref.path, ref.line,
                  "unknown upstream \"" + printable(ref.name) +
                      "\": not in `upstream:` and not a built-in (ban, echo, health)");
        }
    }
    for (const auto& u : config_.upstreams) {
        if (!used.contains(u.name)) {
            warn(yaml_child("upstream", u.name), 0, "upstream \"" + u.name + "\" is not used");
        }
    }
    // SPEC §3: one socket per address across all servers (the seed bound the first and
    // silently lost the second). Port 0 asks for a fresh ephemeral port each time.
    std::unordered_map<std::string_view, const ListenRef*> first;
    for (const auto& ref : listen_refs_) {
        if (ref.normalised.ends_with(":0")) {
            continue;
        }
        const auto [it, inserted] = first.emplace(ref.normalised, &ref);
        if (!inserted) {
            error(ref.path, ref.line,
                  "duplicate listen address " + ref.normalised + " (already used by " +
                      it->second->path + " on line " + std::to_string(it->second->line) + ")");
        }
    }
    if (admin_listen_ref_ && config_.admin.listen) {
        const auto it = first.find(admin_listen_ref_->normalised);
        if (it != first.end()) {
            error(admin_listen_ref_->path, admin_listen_ref_->line,
                  "the admin server's address " + admin_listen_ref_->normalised +
                      " is also a server's listen address (" + it->second->path + ")");
        }
    }
}

}  // namespace

LoadResult load(std::string_view text, std::string_view file, const env::Lookup& lookup) {
    Loader loader(file, lookup);
    return loader.run(text);
}

}  // namespace tpt::config
