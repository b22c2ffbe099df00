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
#include <type_traits>
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

bool has_control_char(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

// The server reads a name to route by: an SNI, a Host or a CONNECT host (SPEC §4, §12).
bool names_connections(const Server& s) {
    return s.tls || s.http || s.accept_connect;
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

// True when `text` can hold no second document, so that count_documents() (a second parse
// of the whole text, as costly as the load) is not needed: its first document's root is a
// block map and every line that starts in column 0 (not blank, not a comment) is one of that
// map's keys. A second document needs a line the root does not account for (`---`, `...`, a
// directive, a stray `,` ending the map); flow and scalar roots, and a line that starts with
// a tab, take the full count.
bool one_document(const std::string& text, const YAML::Node& root) {
    if (!root.IsMap() || root.Style() != YAML::EmitterStyle::Block) {
        return false;
    }
    std::vector<int> key_lines;
    key_lines.reserve(root.size());
    for (const auto& kv : root) {
        const YAML::Mark m = kv.first.Mark();
        if (m.is_null()) {
            return false;
        }
        if (m.column == 0) {
            key_lines.push_back(m.line);
        }
    }
    std::sort(key_lines.begin(), key_lines.end());
    int line = 0;
    for (std::size_t at = 0; at < text.size(); ++line) {
        const std::size_t end = std::min(text.find('\n', at), text.size());
        const char c = text[at];
        if (c == '\t') {
            return false;
        }
        if (at < end && c != ' ' && c != '#' && c != '\r' &&
            !std::binary_search(key_lines.begin(), key_lines.end(), line)) {
            return false;
        }
        at = end + 1;
    }
    return true;
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
    std::size_t server;  // index in config_.servers of the server that routes to it
};

struct ListenRef {
    std::string normalised;  // "host:port"
    std::string path;
    int line;
};

class Loader {
public:
    Loader(std::string_view file, const env::Lookup& lookup, const env::FileReader& read_file)
        : file_(file), lookup_(lookup), read_file_(read_file) {}

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
    // The entries of the map at e.value whose key is `known` and whose value is not null; an
    // unknown key is recorded as an error.
    std::vector<Entry> known_entries(const Entry& e, Keys known);
    // The same for the map at `node`; *all_known (when given) turns false on an unknown key.
    std::vector<Entry> known_entries(const YAML::Node& node, const std::string& path, Keys known,
                                     bool* all_known = nullptr);
    void unknown_key(const Entry& e, Keys known) {
        error(e.path, e.key_node, unknown_key_message(e.key, known));
    }

    // Typed scalar readers. nullopt after recording an error.
    std::optional<std::string> text(const YAML::Node& node, const std::string& path,
                                    std::string_view what = "a scalar");
    // Expanded with ${VAR} and ${file:}; *from_file (when given) tells whether a file was read.
    std::optional<std::string> expanded(const YAML::Node& node, const std::string& path,
                                        std::string_view what = "a scalar",
                                        bool* from_file = nullptr);
    void note_file(std::string path);
    // The scalar at `node` given to `parse` (text -> Result<T>); nullopt after recording an
    // error: not a scalar (`what` was expected), or `prefix` and the parser's message.
    template <class Parse>
    auto parsed(const YAML::Node& node, const std::string& path, std::string_view what,
                std::string_view prefix, Parse parse)
        -> std::optional<typename std::invoke_result_t<Parse, const std::string&>::value_type>;
    std::optional<bool> boolean(const Entry& e);
    std::optional<Duration> duration(const Entry& e, bool allow_zero);
    std::optional<std::int64_t> integer(const Entry& e, std::int64_t min, std::int64_t max,
                                        std::string_view range_message);

    // Setters: assign `out` when the value is valid; else record an error, leave `out` as it
    // is and return false.
    bool set_text(const Entry& e, std::string& out, std::string_view what);
    bool set_bool(const Entry& e, bool& out);
    bool set_duration(const Entry& e, Duration& out, bool allow_zero);
    template <class Int>
    bool set_integer(const Entry& e, Int& out, std::int64_t min, std::int64_t max,
                     std::string_view range_message);

    void top_level(const YAML::Node& root);
    void top_level_entry(const Entry& e);
    void log_level(const Entry& e);
    void log_format(const Entry& e);
    void admin(const Entry& e);
    void reload(const Entry& e);
    void shutdown(const Entry& e);
    void servers(const Entry& e);
    void server(const Entry& e);
    void server_setting(const Entry& f, Server& s);
    void protocol(const Entry& f, address::Family& out);
    void listen_addresses(const Entry& listen, Server& s);
    // A via of the server being read (server_).
    std::optional<Via> via(const YAML::Node& node, const std::string& path);
    bool target_port(const Entry& f, Via& v);
    void refer(const std::string& name, const std::string& path, int line) {
        upstream_refs_.push_back(UpstreamRef{name, path, line, config_.servers.size()});
    }
    void server_modes(const std::vector<Entry>& fields, const Server& s);
    bool via_target(const Entry& e, Via& v);
    bool headers(const Entry& e, std::vector<Header>& out);
    // lower-cased pattern -> (key as written, line), to name both keys of a duplicate
    using SniKeys = std::unordered_map<std::string, std::pair<std::string, int>>;
    std::vector<SniRoute> sni(const Entry& e);
    bool sni_key(const Entry& r, SniRoute& route, SniKeys& seen);
    bool sni_value(const Entry& r, SniRoute& route);
    void upstreams(const Entry& e);
    bool member(const YAML::Node& node, const std::string& path, std::vector<Member>& out);
    bool pool(const Entry& u, Upstream& up);
    bool pool_servers(const Entry& f, std::vector<Member>& out);
    void strategy(const Entry& f, Strategy& out);
    void health(const Entry& f, HealthCheck& out);
    void probe_target(const Entry& f, HealthCheck& out);
    bool auth(const Entry& e, std::optional<BasicAuth>& out, std::vector<Header>& headers);
    bool basic_auth(const Entry& b, BasicAuth& out, std::string& password);
    // The content of the file a `*_file` key names (path env-expanded, absolute); nullopt
    // after recording an error naming the path.
    std::optional<std::string> secret_file(const Entry& f, std::string& path);
    std::optional<address::HostPort> listen_address(const YAML::Node& node, const std::string& path,
                                                    address::Family protocol);
    void cross_checks();

    std::string file_;
    const env::Lookup& lookup_;
    const env::FileReader& read_file_;
    Config config_;
    std::vector<ConfigError> errors_;
    std::size_t suppressed_errors_ = 0;
    std::vector<UpstreamRef> upstream_refs_;
    // Every name in `upstream:`, valid or not, so a broken URL is reported once and not
    // again as an unknown name at each use.
    std::set<std::string, std::less<>> defined_upstreams_;
    std::vector<ListenRef> listen_refs_;
    const Server* server_ = nullptr;  // the server being read
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

// The entry of `key` in `fields`, or nullptr.
const Entry* find_entry(const std::vector<Entry>& fields, std::string_view key) {
    const auto it =
        std::find_if(fields.begin(), fields.end(), [&](const Entry& f) { return f.key == key; });
    return it == fields.end() ? nullptr : &*it;
}

std::vector<Entry> Loader::known_entries(const Entry& e, Keys known) {
    return known_entries(e.value, e.path, known);
}

std::vector<Entry> Loader::known_entries(const YAML::Node& node, const std::string& path,
                                         Keys known, bool* all_known) {
    std::vector<Entry> out;
    for (Entry& f : entries(node, path)) {
        if (!contains(known, f.key)) {
            unknown_key(f, known);
            if (all_known != nullptr) {
                *all_known = false;
            }
        } else if (!f.value.IsNull()) {
            out.push_back(std::move(f));
        }
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

template <class Parse>
auto Loader::parsed(const YAML::Node& node, const std::string& path, std::string_view what,
                    std::string_view prefix, Parse parse)
    -> std::optional<typename std::invoke_result_t<Parse, const std::string&>::value_type> {
    const auto raw = text(node, path, what);
    if (!raw) {
        return std::nullopt;
    }
    auto result = parse(*raw);
    if (!result) {
        error(path, node, std::string(prefix) + printable(result.error().message));
        return std::nullopt;
    }
    return std::move(result).value();
}

std::optional<std::string> Loader::expanded(const YAML::Node& node, const std::string& path,
                                            std::string_view what, bool* from_file) {
    auto e = parsed(node, path, what, "environment expansion: ", [this](const std::string& raw) {
        return env::expand(raw, lookup_, read_file_);
    });
    if (!e) {
        return std::nullopt;
    }
    if (from_file != nullptr) {
        *from_file = !e->files.empty();
    }
    for (auto& f : e->files) {
        note_file(std::move(f));
    }
    return std::move(e->value);
}

void Loader::note_file(std::string path) {
    auto& files = config_.files;
    const auto at = std::lower_bound(files.begin(), files.end(), path);
    if (at == files.end() || *at != path) {
        files.insert(at, std::move(path));
    }
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
    const auto d = parsed(e.value, e.path, "a duration", "",
                          [](const std::string& t) { return duration::parse(t); });
    if (d && !allow_zero && *d == Duration::zero()) {
        error(e.path, e.value, "must be greater than 0s");
        return std::nullopt;
    }
    return d;
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

bool Loader::set_text(const Entry& e, std::string& out, std::string_view what) {
    auto t = text(e.value, e.path, what);
    if (!t) {
        return false;
    }
    out = std::move(*t);
    return true;
}

bool Loader::set_bool(const Entry& e, bool& out) {
    const auto b = boolean(e);
    out = b.value_or(out);
    return b.has_value();
}

bool Loader::set_duration(const Entry& e, Duration& out, bool allow_zero) {
    const auto d = duration(e, allow_zero);
    out = d.value_or(out);
    return d.has_value();
}

template <class Int>
bool Loader::set_integer(const Entry& e, Int& out, std::int64_t min, std::int64_t max,
                         std::string_view range_message) {
    const auto n = integer(e, min, max, range_message);
    if (n) {
        out = static_cast<Int>(*n);
    }
    return n.has_value();
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
        YAML::Node root = YAML::Load(text);  // the first document only
        const DocumentCount docs =
            one_document(text, root) ? DocumentCount{1, 0} : count_documents(text);
        if (docs.count > 1) {
            error("", docs.second_line,
                  "content after the first YAML document (a second `---` document or a stray "
                  "`,`); a config is exactly one document");
        } else {
            if (docs.count == 0) {
                root = YAML::Node{};
            }
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
    std::string log_format_key;  // the spelling seen first; empty before
    for (const Entry& e : entries(root, "")) {
        if (!contains(top_keys, e.key)) {
            unknown_key(e, top_keys);
            continue;
        }
        // The top-level `via` is only an anchor for `*alias` use (seed README); what it
        // means is checked where it is used.
        if (e.key == "via" || e.value.IsNull()) {
            continue;
        }
        if (e.key == "log_format" || e.key == "log-format") {
            if (!log_format_key.empty()) {
                error(e.path, e.key_node,
                      "log format given twice (also as " + log_format_key + ")");
                continue;
            }
            log_format_key = e.key;
        }
        have_servers = have_servers || e.key == "servers";
        top_level_entry(e);
    }
    if (!have_servers) {
        error("servers", line_of(root), "missing or empty: a config needs a `servers` map");
    }
    cross_checks();
}

// One known, non-null top-level key. (Kept apart from the loop above, as are the other
// per-key readers: clang-tidy's optional-access dataflow grows steeply with the branches of
// one function.)
void Loader::top_level_entry(const Entry& e) {
    if (e.key == "version") {
        set_integer(e, config_.version, 1, 2, "unsupported config version: must be 1 or 2");
    } else if (e.key == "log") {
        log_level(e);
    } else if (e.key == "log_format" || e.key == "log-format") {
        log_format(e);
    } else if (e.key == "admin") {
        admin(e);
    } else if (e.key == "reload") {
        reload(e);
    } else if (e.key == "shutdown") {
        shutdown(e);
    } else if (e.key == "resolve_interval") {
        set_duration(e, config_.resolve_interval, false);
    } else if (e.key == "servers") {
        servers(e);
    } else {
        upstreams(e);
    }
}

void Loader::log_level(const Entry& e) {
    auto t = text(e.value, e.path, "a log level");
    if (!t) {
        return;
    }
    if (auto level = parse_log_level(*t)) {
        config_.log = *level;
    } else {
        error(e.path, e.value,
              "unknown log level \"" + printable(*t) +
                  "\"; expected off, error, warn, info, debug, trace or disable");
    }
}

void Loader::log_format(const Entry& e) {
    auto t = text(e.value, e.path, "txt, text or json");
    if (!t) {
        return;
    }
    const std::string v = hostname::to_lower(*t);
    if (v == "txt" || v == "text") {
        config_.log_format = LogFormat::text;
    } else if (v == "json") {
        config_.log_format = LogFormat::json;
    } else {
        error(e.path, e.value,
              "unknown log format \"" + printable(*t) + "\"; expected txt, text or json");
    }
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
    for (const Entry& r : known_entries(e, keys)) {
        if (r.key == "watch") {
            set_bool(r, config_.reload.watch);
        } else {
            set_duration(r, config_.reload.poll_interval, true);
        }
    }
}

void Loader::shutdown(const Entry& e) {
    static constexpr std::array<std::string_view, 2> keys{"delay", "drain_timeout"};
    for (const Entry& s : known_entries(e, keys)) {
        set_duration(s, s.key == "delay" ? config_.shutdown.delay : config_.shutdown.drain_timeout,
                     true);
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
    // Port 0 (an ephemeral port) is allowed for tests; such addresses never collide.
    auto hp = parsed(node, path, "a listen address (\"host:port\")", "bad listen address: ",
                     [](const std::string& t) { return address::parse_host_port(t, true); });
    if (!hp) {
        return std::nullopt;
    }
    const std::string t = node.Scalar();
    address::HostPort out = std::move(*hp);
    if (!address::is_ip_literal(out.host)) {
        error(path, node,
              "bad listen address \"" + printable(t) +
                  R"(": the host must be an IP address ("0.0.0.0", "[::]", "127.0.0.1"))");
        return std::nullopt;
    }
    if (protocol == address::Family::v4 && out.is_ipv6_literal) {
        error(path, node,
              "listen address \"" + printable(t) + "\" is IPv6 but the protocol is tcp4");
        return std::nullopt;
    }
    if (protocol == address::Family::v6 && !out.is_ipv6_literal) {
        error(path, node,
              "listen address \"" + printable(t) + "\" is IPv4 but the protocol is tcp6");
        return std::nullopt;
    }
    out.host = normalise_ip(out.host);
    return out;
}

constexpr std::array<std::string_view, 13> server_keys{"listen",
                                                       "protocol",
                                                       "tls",
                                                       "sni",
                                                       "default",
                                                       "maxclients",
                                                       "client_hello_timeout",
                                                       "idle_timeout",
                                                       "via",
                                                       "http",
                                                       "transparent",
                                                       "accept_connect",
                                                       "sni_must_match"};

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
    const std::vector<Entry> fields = known_entries(e.value, e.path, server_keys);
    server_ = &s;
    for (const Entry& f : fields) {
        if (f.key != "listen" && f.key != "sni" && f.key != "via") {
            server_setting(f, s);
        }
    }
    const Entry* listen = find_entry(fields, "listen");
    const Entry* sni_entry = find_entry(fields, "sni");
    const Entry* via_entry = find_entry(fields, "via");

    // Read after the loop: they depend on `protocol` and `tls`, which may come later.
    if (listen == nullptr) {
        error(yaml_child(e.path, "listen"), line_of(e.key_node),
              "missing: a server needs at least one listen address");
    } else {
        listen_addresses(*listen, s);
    }
    server_modes(fields, s);
    if (via_entry != nullptr) {
        s.via = via(via_entry->value, via_entry->path);
    }
    if (sni_entry != nullptr) {
        s.sni = sni(*sni_entry);
        // The Rust seed accepts `sni` without `tls: true` and ignores it; so do we (old
        // configs keep loading), but the routes can never match, which is worth a warning.
        if (!names_connections(s) && !s.sni.empty()) {
            warn(sni_entry->path, line_of(sni_entry->key_node),
                 "sni routes are ignored: this server reads no name (it has none of `tls: "
                 "true`, `http: true`, `accept_connect: true`)");
        }
    }
    server_ = nullptr;
    config_.servers.push_back(std::move(s));
}

// SPEC §11, §12: which modes go together. An explicit proxy reads CONNECT heads only; it
// is not also a TLS, HTTP or transparent listener.
void Loader::server_modes(const std::vector<Entry>& fields, const Server& s) {
    const auto line_of_key = [&](std::string_view key) {
        const Entry* f = find_entry(fields, key);
        return f == nullptr ? 0 : line_of(f->key_node);
    };
    if (s.accept_connect && (s.tls || s.http || s.transparent)) {
        error(yaml_child(yaml_child("servers", s.name), "accept_connect"),
              line_of_key("accept_connect"),
              "accept_connect makes an explicit proxy that reads CONNECT requests; it cannot be "
              "combined with tls, http or transparent on the same server");
    }
    if (s.sni_must_match && !s.http && !s.accept_connect) {
        warn(yaml_child(yaml_child("servers", s.name), "sni_must_match"),
             line_of_key("sni_must_match"),
             "sni_must_match has no effect without `http: true` or `accept_connect: true` (only "
             "a Host header or a CONNECT host can disagree with an SNI)");
    }
}

// The servers' on/off keys (SPEC §4, §11, §12).
constexpr std::array<std::pair<std::string_view, bool Server::*>, 5> server_flags{{
    {"tls", &Server::tls},
    {"http", &Server::http},
    {"transparent", &Server::transparent},
    {"accept_connect", &Server::accept_connect},
    {"sni_must_match", &Server::sni_must_match},
}};

// A known, non-null server key other than listen, sni and via.
void Loader::server_setting(const Entry& f, Server& s) {
    if (f.key == "protocol") {
        protocol(f, s.protocol);
    } else if (const auto flag = std::find_if(server_flags.begin(), server_flags.end(),
                                              [&](const auto& k) { return k.first == f.key; });
               flag != server_flags.end()) {
        set_bool(f, s.*(flag->second));
    } else if (f.key == "default") {
        if (set_text(f, s.default_upstream, "an upstream name")) {
            refer(s.default_upstream, f.path, line_of(f.value));
        }
    } else if (f.key == "maxclients") {
        set_integer(f, s.maxclients, 1, std::numeric_limits<std::uint32_t>::max(),
                    "maxclients must be between 1 and 4294967295");
    } else if (f.key == "client_hello_timeout") {
        set_duration(f, s.client_hello_timeout, false);
    } else {
        set_duration(f, s.idle_timeout, true);
    }
}

void Loader::protocol(const Entry& f, address::Family& out) {
    auto t = text(f.value, f.path, "tcp, tcp4 or tcp6");
    if (!t) {
        return;
    }
    auto family = address::parse_family(*t);
    if (family) {
        out = family.value();
    } else {
        error(f.path, f.value,
              "unknown protocol \"" + printable(*t) + "\"; expected tcp, tcp4 or tcp6");
    }
}

// `listen:` is a list of addresses or a single one.
void Loader::listen_addresses(const Entry& listen, Server& s) {
    const auto add = [&](const YAML::Node& node, const std::string& path) {
        if (auto hp = listen_address(node, path, s.protocol)) {
            listen_refs_.push_back(ListenRef{hp->to_string(), path, line_of(node)});
            s.listen.push_back(std::move(*hp));
        }
    };
    if (!listen.value.IsSequence()) {
        add(listen.value, listen.path);
        return;
    }
    if (listen.value.size() == 0) {
        warn(listen.path, line_of(listen.value),
             "empty listen list: this server never accepts a connection");
    }
    std::size_t i = 0;
    for (auto it = listen.value.begin(); it != listen.value.end(); ++it, ++i) {
        add(*it, yaml_index(listen.path, i));
    }
}

constexpr std::array<std::string_view, 7> via_keys{
    "target",         "use_sni_as_target", "target_port", "connect_timeout",
    "stats_interval", "headers",           "auth"};

std::optional<Via> Loader::via(const YAML::Node& node, const std::string& path) {
    if (!node.IsMap()) {
        error(path, node, "expected a map (target, headers, ...)");
        return std::nullopt;
    }
    Via v;
    bool ok = true;
    const std::vector<Entry> fields = known_entries(node, path, via_keys, &ok);
    for (const Entry& f : fields) {
        if (f.key == "use_sni_as_target") {
            ok = set_bool(f, v.use_sni_as_target) && ok;
        } else if (f.key == "target_port") {
            ok = target_port(f, v) && ok;
        } else if (f.key == "connect_timeout") {
            ok = set_duration(f, v.connect_timeout, false) && ok;
        } else if (f.key == "stats_interval") {
            ok = set_duration(f, v.stats_interval, true) && ok;
        } else if (f.key == "headers") {
            ok = headers(f, v.headers) && ok;
        }
    }
    const Entry* target = find_entry(fields, "target");
    const Entry* use_sni = find_entry(fields, "use_sni_as_target");
    const Entry* auth_entry = find_entry(fields, "auth");
    // After the loop: the target depends on use_sni_as_target and target_port; auth checks
    // the headers.
    if (target != nullptr) {
        ok = via_target(*target, v) && ok;
    }
    if (auth_entry != nullptr) {
        ok = auth(*auth_entry, v.auth, v.headers) && ok;
    }
    if (use_sni != nullptr && v.use_sni_as_target && !names_connections(*server_) &&
        !server_->transparent) {
        warn(use_sni->path, line_of(use_sni->value),
             "use_sni_as_target on a server that reads no name (none of `tls: true`, `http: "
             "true`, `accept_connect: true`) and is not transparent: these connections are "
             "closed");
    }
    if (!ok) {
        return std::nullopt;
    }
    return v;
}

// 1..65535, or `original` (the redirected connection's port) in a transparent server.
bool Loader::target_port(const Entry& f, Via& v) {
    if (f.value.IsScalar() && f.value.Scalar() == "original") {
        if (server_->transparent) {
            return true;  // the default there
        }
        error(f.path, f.value,
              "target_port: original needs a transparent server (`transparent: true`)");
        return false;
    }
    std::uint16_t port = 0;
    if (!set_integer(f, port, 1, 65535, "target_port must be between 1 and 65535 or original")) {
        return false;
    }
    v.target_port = port;
    return true;
}

bool Loader::via_target(const Entry& e, Via& v) {
    auto t = expanded(e.value, e.path, "a CONNECT target (\"host:port\")", &v.target_from_file);
    if (!t) {
        return false;
    }
    if (t->empty()) {
        return true;  // the seed's default target is "": no static CONNECT target
    }
    if (v.use_sni_as_target) {
        error(e.path, e.value,
              "`target` and `use_sni_as_target: true` are both set; use one of them");
        return false;
    }
    // The seed README's `target: www.test1.com` has no port, and the seed sent it as written;
    // RFC 9110 §9.3.6 requires "host:port" in CONNECT, so the port is completed with
    // target_port (default 443) and a warning says so.
    const bool bracketed_only = t->front() == '[' && t->back() == ']';
    if (t->find(':') == std::string::npos || bracketed_only) {
        const auto port = std::to_string(v.target_port.value_or(443));
        *t += ':' + port;
        warn(e.path, line_of(e.value), "target has no port; using target_port " + port);
    }
    auto hp = address::parse_host_port(*t);
    if (!hp) {
        error(e.path, e.value,
              v.target_from_file ? std::string("bad CONNECT target (read from a file)")
                                 : "bad CONNECT target: " + printable(hp.error().message));
        return false;
    }
    v.target = std::move(hp).value();
    return true;
}

bool Loader::headers(const Entry& e, std::vector<Header>& out) {
    bool ok = true;
    std::set<std::string> seen_lower;
    for (const Entry& h : entries(e.value, e.path)) {
        if (!hostname::is_token(h.key)) {
            error(h.path, h.key_node,
                  "header name \"" + printable(h.key) +
                      "\" is not an HTTP token (RFC 9110 §5.6.2: letters, digits and "
                      "!#$%&'*+-.^_`|~)");
            ok = false;
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
                ok = false;
                continue;
            }
            value = std::move(*t);
        }
        // RFC 9110 §5.5: CR, LF and NUL would split or end the request head (the value is
        // never shown: it is typically a credential).
        if (value.find_first_of(std::string_view{"\r\n\0", 3}) != std::string::npos) {
            error(h.path, h.value,
                  "header value contains CR, LF or NUL after environment expansion");
            ok = false;
            continue;
        }
        out.push_back(Header{h.key, std::move(value)});
    }
    return ok;
}

std::vector<SniRoute> Loader::sni(const Entry& e) {
    std::vector<SniRoute> routes;
    SniKeys seen;
    for (const Entry& r : entries(e.value, e.path)) {
        SniRoute route;
        const bool key_ok = sni_key(r, route, seen);
        const bool value_ok = sni_value(r, route);
        if (key_ok && value_ok) {
            routes.push_back(std::move(route));
        }
    }
    return routes;
}

// Sets route.key/pattern/wildcard from r.key; false (after recording why) when the key is
// not a host name, not a valid wildcard, or a duplicate of an earlier key after lower-casing.
bool Loader::sni_key(const Entry& r, SniRoute& route, SniKeys& seen) {
    route.key = r.key;
    route.pattern = hostname::to_lower(r.key);
    const std::string& p = route.pattern;
    if (p == "*") {
        route.wildcard = true;  // SPEC §11: every name, after every other pattern
    } else if (p.starts_with("*.")) {
        route.wildcard = true;
        const std::string_view suffix = std::string_view{p}.substr(2);
        if (suffix.find('*') != std::string_view::npos || !hostname::is_valid(suffix)) {
            error(r.path, r.key_node,
                  "invalid wildcard \"" + printable(r.key) +
                      "\": `*` is allowed only as a whole leading label before a valid "
                      "host name, as in \"*.example.org\"");
            return false;
        }
    } else if (p.find('*') != std::string::npos) {
        error(r.path, r.key_node,
              "invalid wildcard \"" + printable(r.key) +
                  R"(": `*` is allowed only as a whole leading label, as in "*.example.org")");
        return false;
    } else if (!hostname::is_valid(p)) {
        error(r.path, r.key_node,
              "\"" + printable(r.key) +
                  "\" is not a valid host name (letters, digits, '-', '_', '.'; no empty "
                  "label; at most 253 bytes)");
        return false;
    }
    const int line = line_of(r.key_node);
    const auto [first, inserted] = seen.emplace(p, std::pair{r.key, line});
    if (!inserted) {
        error(r.path, r.key_node,
              "duplicate SNI key \"" + printable(r.key) + "\": same as \"" +
                  printable(first->second.first) + "\" on line " +
                  std::to_string(first->second.second) + " (keys are compared case-insensitively)");
        return false;
    }
    return true;
}

// An SNI value: an upstream name, or {upstream: NAME, via: {...}}.
bool Loader::sni_value(const Entry& r, SniRoute& route) {
    if (r.value.IsScalar()) {
        route.upstream = r.value.Scalar();
        refer(route.upstream, r.path, line_of(r.value));
        return true;
    }
    if (!r.value.IsMap()) {
        error(r.path, r.value, "expected an upstream name or a map {upstream: NAME, via: {...}}");
        return false;
    }
    static constexpr std::array<std::string_view, 2> keys{"upstream", "via"};
    bool ok = true;
    bool have_upstream = false;
    // `via: ~` inherits the server's via, as if absent.
    for (const Entry& f : known_entries(r.value, r.path, keys, &ok)) {
        if (f.key == "upstream") {
            have_upstream = set_text(f, route.upstream, "an upstream name");
            ok = ok && have_upstream;
            if (have_upstream) {
                refer(route.upstream, f.path, line_of(f.value));
            }
        } else {
            route.via = via(f.value, f.path);
            ok = ok && route.via.has_value();
        }
    }
    if (!have_upstream && ok) {
        error(yaml_child(r.path, "upstream"), line_of(r.key_node),
              "missing: an SNI route needs an upstream name");
        ok = false;
    }
    return ok;
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
                      "\" is a built-in upstream (ban, echo, health, original) and cannot "
                      "be redefined");
            continue;
        }
        Upstream up;
        up.name = u.key;
        // SPEC §13: a map is a pool; a single URL keeps its meaning (a pool of one).
        const bool ok = u.value.IsMap() ? pool(u, up) : member(u.value, u.path, up.members);
        if (!ok || up.members.empty()) {
            continue;
        }
        const Member& first = up.members.front();
        up.url = first.url;
        up.family = first.family;
        up.address = first.address;
        config_.upstreams.push_back(std::move(up));
    }
}

// One URL (`tcp://host:port`, env- and file-expanded) appended to `out`.
bool Loader::member(const YAML::Node& node, const std::string& path, std::vector<Member>& out) {
    bool from_file = false;
    auto url = expanded(node, path, "a URL (tcp://host:port)", &from_file);
    if (!url) {
        return false;
    }
    auto parsed = address::parse_upstream_url(*url);
    if (!parsed) {
        // A URL read from a file is not shown: load errors never carry a file's content.
        error(path, node,
              from_file ? std::string("invalid upstream URL (read from a file)")
                        : printable(parsed.error().message));
        return false;
    }
    Member m{from_file ? node.Scalar() : std::move(*url), from_file, parsed->family,
             parsed->address};
    const auto same = std::find_if(out.begin(), out.end(), [&](const Member& o) {
        return o.url == m.url || (o.address == m.address && o.family == m.family);
    });
    if (same != out.end()) {
        error(path, node, "the same server is listed twice (" + printable(same->url) + ")");
        return false;
    }
    out.push_back(std::move(m));
    return true;
}

constexpr std::array<std::string_view, 3> pool_keys{"servers", "strategy", "health"};

bool Loader::pool(const Entry& u, Upstream& up) {
    up.pool = true;
    bool have_servers = false;
    bool ok = true;
    for (const Entry& f : known_entries(u, pool_keys)) {
        if (f.key == "servers") {
            have_servers = true;
            ok = pool_servers(f, up.members) && ok;
        } else if (f.key == "strategy") {
            strategy(f, up.strategy);
        } else {
            health(f, up.health);
        }
    }
    if (!have_servers) {
        error(yaml_child(u.path, "servers"), line_of(u.key_node),
              "missing: an upstream written as a map needs `servers`, a list of URLs");
        return false;
    }
    return ok;
}

bool Loader::pool_servers(const Entry& f, std::vector<Member>& out) {
    if (!f.value.IsSequence() || f.value.size() == 0) {
        error(f.path, f.value, "expected a non-empty list of URLs (tcp://host:port)");
        return false;
    }
    if (f.value.size() > max_members) {
        error(f.path, f.value,
              "at most " + std::to_string(max_members) + " servers per upstream, got " +
                  std::to_string(f.value.size()));
        return false;
    }
    bool ok = true;
    std::size_t i = 0;
    for (auto it = f.value.begin(); it != f.value.end(); ++it, ++i) {
        ok = member(*it, yaml_index(f.path, i), out) && ok;
    }
    return ok;
}

void Loader::strategy(const Entry& f, Strategy& out) {
    static constexpr std::array<Strategy, 3> all{Strategy::failover, Strategy::round_robin,
                                                 Strategy::least_connections};
    const auto t = text(f.value, f.path, "failover, round_robin or least_connections");
    if (!t) {
        return;
    }
    const auto it = std::find_if(
        all.begin(), all.end(), [&](Strategy s) { return to_string(s) == hostname::to_lower(*t); });
    if (it == all.end()) {
        error(f.path, f.value,
              "unknown strategy \"" + printable(*t) +
                  "\"; expected failover, round_robin or least_connections");
        return;
    }
    out = *it;
}

constexpr std::array<std::string_view, 7> health_keys{
    "interval", "timeout", "fail_after", "pass_after", "probe_target", "headers", "auth"};

void Loader::health(const Entry& f, HealthCheck& out) {
    const Entry* auth_entry = nullptr;
    const Entry* probe = nullptr;
    const auto entries = known_entries(f, health_keys);  // outlives the pointers into it
    for (const Entry& h : entries) {
        if (h.key == "interval") {
            set_duration(h, out.interval, true);
        } else if (h.key == "timeout") {
            set_duration(h, out.timeout, false);
        } else if (h.key == "fail_after" || h.key == "pass_after") {
            set_integer(h, h.key == "fail_after" ? out.fail_after : out.pass_after, 1, 1000,
                        h.key + " must be between 1 and 1000");
        } else if (h.key == "probe_target") {
            probe = &h;
            probe_target(h, out);
        } else if (h.key == "headers") {
            headers(h, out.headers);
        } else {
            auth_entry = &h;
        }
    }
    if (auth_entry != nullptr) {
        auth(*auth_entry, out.auth, out.headers);
    }
    if (probe == nullptr && (!out.headers.empty() || out.auth)) {
        warn(f.path, line_of(f.key_node),
             "headers and auth are sent only by the CONNECT probe, and there is no probe_target");
    }
    if (probe != nullptr && out.interval == Duration::zero()) {
        warn(probe->path, line_of(probe->key_node),
             "probe_target is unused: active probes are off (interval is 0s)");
    }
}

void Loader::probe_target(const Entry& f, HealthCheck& out) {
    auto t =
        expanded(f.value, f.path, "a CONNECT target (\"host:port\")", &out.probe_target_from_file);
    if (!t) {
        return;
    }
    auto hp = address::parse_host_port(*t);
    if (!hp) {
        error(f.path, f.value,
              out.probe_target_from_file
                  ? std::string("bad probe target (read from a file)")
                  : "bad probe target (expected host:port): " + printable(hp.error().message));
        return;
    }
    out.probe_target = std::move(hp).value();
}

// SPEC §13: `auth: { basic: {...} }` becomes a Proxy-Authorization header in `headers`.
bool Loader::auth(const Entry& e, std::optional<BasicAuth>& out, std::vector<Header>& headers) {
    static constexpr std::array<std::string_view, 1> keys{"basic"};
    const auto schemes = known_entries(e, keys);
    if (schemes.empty()) {
        error(e.path, e.value, "expected `basic: {username or username_file, password_file}`");
        return false;
    }
    const auto set = std::find_if(headers.begin(), headers.end(), [](const Header& h) {
        return hostname::to_lower(h.name) == "proxy-authorization";
    });
    if (set != headers.end()) {
        error(e.path, e.key_node,
              "auth and a Proxy-Authorization header are both set; use one of them");
        return false;
    }
    BasicAuth a;
    std::string password;
    if (!basic_auth(schemes.front(), a, password)) {
        return false;
    }
    headers.push_back(
        Header{"Proxy-Authorization", "Basic " + base64(a.username + ":" + password)});
    out = std::move(a);
    return true;
}

bool Loader::basic_auth(const Entry& b, BasicAuth& out, std::string& password) {
    static constexpr std::array<std::string_view, 3> keys{"username", "username_file",
                                                          "password_file"};
    const Entry* user = nullptr;
    const Entry* password_entry = nullptr;
    const auto entries = known_entries(b, keys);  // outlives the pointers into it
    for (const Entry& f : entries) {
        if (f.key == "password_file") {
            password_entry = &f;
        } else if (user != nullptr) {
            error(f.path, f.key_node, "username and username_file are both set; use one of them");
            return false;
        } else {
            user = &f;
        }
    }
    if (user == nullptr || password_entry == nullptr) {
        error(b.path, b.key_node,
              "basic auth needs `username` (or `username_file`) and `password_file`");
        return false;
    }
    std::optional<std::string> name;
    if (user->key == "username") {
        name = expanded(user->value, user->path, "a user name");
    } else {
        out.username_file.emplace();
        name = secret_file(*user, *out.username_file);
    }
    auto pw = secret_file(*password_entry, out.password_file);
    if (!name || !pw) {
        return false;
    }
    // RFC 7617 §2: the user-id cannot contain a colon, and neither part control characters.
    // The messages never show either value.
    if (name->find(':') != std::string::npos || has_control_char(*name)) {
        error(user->path, user->value, "the user name contains a colon or a control character");
        return false;
    }
    if (has_control_char(*pw)) {
        error(password_entry->path, password_entry->value,
              "the password contains a control character (only one trailing newline is "
              "stripped)");
        return false;
    }
    out.username = std::move(*name);
    password = std::move(*pw);
    return true;
}

std::optional<std::string> Loader::secret_file(const Entry& f, std::string& path) {
    auto p = parsed(f.value, f.path, "a file path", "environment expansion: ",
                    [this](const std::string& raw) { return env::expand(raw, lookup_); });
    if (!p) {
        return std::nullopt;
    }
    if (!p->starts_with('/')) {
        error(f.path, f.value, "\"" + printable(*p) + "\" is not an absolute path");
        return std::nullopt;
    }
    auto content = env::file_value(read_file_, *p);
    if (!content) {
        error(f.path, f.value, printable(content.error().message));
        return std::nullopt;
    }
    note_file(*p);
    path = std::move(*p);
    return std::move(*content);
}

void Loader::cross_checks() {
    std::set<std::string_view> used;
    for (const auto& ref : upstream_refs_) {
        used.insert(ref.name);
        if (!is_builtin(ref.name) && !defined_upstreams_.contains(ref.name)) {
            error(ref.path, ref.line,
                  "unknown upstream \"" + printable(ref.name) +
                      "\": not in `upstream:` and not a built-in (ban, echo, health, original)");
        }
        const bool read = ref.server < config_.servers.size();
        const Server* server = read ? &config_.servers[ref.server] : nullptr;
        if (ref.name == builtin_original && server != nullptr && !server->transparent &&
            !server->accept_connect) {
            error(ref.path, ref.line,
                  "upstream `original` connects to where a connection was going: it needs a "
                  "transparent server or one that accepts CONNECT (`transparent: true` or "
                  "`accept_connect: true`)");
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

LoadResult load(std::string_view text, std::string_view file, const env::Lookup& lookup,
                const env::FileReader& read_file) {
    Loader loader(file, lookup, read_file);
    return loader.run(text);
}

LoadResult load(std::string_view text, std::string_view file, const env::Lookup& lookup) {
    const env::FileReader no_files = [](std::string_view path) -> Result<std::string> {
        return Error{"${file:" + std::string(path) + "}: this load reads no file"};
    };
    return load(text, file, lookup, no_files);
}

}  // namespace tpt::config
