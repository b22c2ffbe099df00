// routing: a server's name → route table (exact, longest wildcard, "*", then default). ◇
// Thread affinity: built on the control thread, then shared read-only by every worker.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tpt/config.hpp>

namespace tpt::routing {

struct Route {
    std::string key;       // SNI key as written, or "default" (the metrics' `route` label)
    std::string upstream;  // upstream name or built-in
    const config::Via* via = nullptr;          // effective via; nullptr or is_direct() = direct TCP
    const config::Upstream* target = nullptr;  // nullptr for built-ins
};

// Transparent string hash, so match() looks up string_view suffixes without allocating.
struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

// Borrowed pointers point into the Config, which must outlive the table (both live in one
// snapshot).
class Table {
public:
    Table(const config::Server& server, const config::Config& config);

    // sni: the validated, lower-cased name (the ClientHello's SNI, an HTTP Host, a CONNECT
    // host), or nullopt. A name matches exactly, then the longest wildcard suffix, then "*";
    // no name goes to default (SPEC §4.3, §11).
    // Cost: one hash lookup per label of sni, independent of the number of rules.
    const Route& match(std::optional<std::string_view> sni) const;

    const Route& default_route() const noexcept { return routes_.back(); }
    const std::vector<Route>& routes() const noexcept { return routes_; }

private:
    std::vector<Route> routes_;  // sni routes in config order, then default last
    using Index = std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>>;
    Index exact_;                           // lower-cased host -> index
    Index wildcard_;                        // suffix after "*." -> index
    std::optional<std::size_t> catch_all_;  // the "*" route: any name
};

// Which servers a reload changes, for logging its effect, compared by name (changed: any
// setting differs, or an upstream it routes to changed its URL); each list in file order.
// What happens to listen addresses is server_set's (ServerSet::apply reports it).
struct Diff {
    std::vector<std::string> added_servers, removed_servers, changed_servers;
};
Diff diff(const config::Config& before, const config::Config& after);

}  // namespace tpt::routing
