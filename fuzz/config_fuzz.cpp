// Fuzzes config::load(). Properties: it never throws or crashes whatever the bytes; a
// rejected text has at least one error and every error names the file and has a message; an
// accepted config serialises with to_json() to valid JSON listing every server and upstream,
// and never shows a header value; loading is deterministic.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json.hpp>

#include <tpt/config.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

// Variables whose name starts with "SET" are set, all others are unset, so both expansion
// paths are reachable. The value holds a space, so it can never be part of a host name: if it
// shows up in the JSON, a header value leaked.
constexpr std::string_view secret = "S3CR3T value";

std::optional<std::string> lookup(std::string_view name) {
    if (name.starts_with("SET")) {
        return std::string(secret);
    }
    return std::nullopt;
}

bool leaks(const std::optional<tpt::config::Via>& via, std::string_view json,
           std::string_view input) {
    if (!via) {
        return false;
    }
    for (const auto& h : via->headers) {
        // Written literally in the input (e.g. as a server name), it may rightly be in the JSON.
        if (h.value.find(secret) != std::string::npos && input.find(secret) == std::string::npos &&
            json.find(secret) != std::string_view::npos) {
            return true;
        }
    }
    return false;
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace config = tpt::config;
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    const auto result = config::load(text, "fuzz.yaml", lookup);
    if (!result) {
        const auto errors = result.error();
        check(!errors.empty());
        for (const auto& e : errors) {
            check(e.file == "fuzz.yaml");
            check(!e.message.empty());
            check(e.line >= 0);
            check(!e.to_string().empty());
        }
        return 0;
    }
    const auto& cfg = *result;
    const std::string json = config::to_json(cfg);
    boost::system::error_code ec;
    const auto value = boost::json::parse(json, ec);
    check(!ec && value.is_object());
    const auto& root = value.as_object();
    check(root.at("servers").as_object().size() == cfg.servers.size());
    check(root.at("upstream").as_object().size() == cfg.upstreams.size());
    for (const auto& s : cfg.servers) {
        check(!s.listen.empty() || !cfg.warnings.empty());
        check(s.maxclients >= 1);
        check(!leaks(s.via, json, text));
        for (const auto& r : s.sni) {
            check(!leaks(r.via, json, text));
        }
    }

    const auto again = config::load(text, "fuzz.yaml", lookup);
    check(again.has_value() && *again == cfg);
    return 0;
}
