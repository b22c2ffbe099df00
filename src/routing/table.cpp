// routing::Table: SPEC §4.3 (exact, then the longest wildcard suffix, then default) and
// §4.4 (the route's via, else the server's).
#include <cassert>

#include <tpt/routing.hpp>

namespace tpt::routing {

namespace {

const config::Via* effective_via(const std::optional<config::Via>& route_via,
                                 const config::Server& server) {
    if (route_via) {
        return &*route_via;
    }
    return server.via ? &*server.via : nullptr;
}

const config::Upstream* target_of(std::string_view upstream, const config::Config& config) {
    return config::is_builtin(upstream) ? nullptr : config.find_upstream(upstream);
}

}  // namespace

Table::Table(const config::Server& server, const config::Config& config) {
    // A server that reads no name (no ClientHello, no HTTP head, no CONNECT) never has one to
    // match: the sni routes are not part of the table at all (config warns about them).
    if (server.tls || server.http || server.accept_connect) {
        routes_.reserve(server.sni.size() + 1);
        exact_.reserve(server.sni.size());
        for (const auto& r : server.sni) {
            const std::size_t index = routes_.size();
            routes_.push_back(Route{r.key, r.upstream, effective_via(r.via, server),
                                    target_of(r.upstream, config)});
            // config::load() rejects duplicate patterns, so emplace never finds one; a
            // hand-built Config with duplicates keeps the first, as the file order says.
            if (r.pattern == "*") {
                catch_all_ = catch_all_.value_or(index);
            } else if (r.wildcard) {
                assert(r.pattern.starts_with("*."));
                wildcard_.emplace(r.pattern.substr(2), index);
            } else {
                exact_.emplace(r.pattern, index);
            }
        }
    }
    routes_.push_back(Route{"default", server.default_upstream, effective_via(std::nullopt, server),
                            target_of(server.default_upstream, config)});
}

const Route& Table::match(std::optional<std::string_view> sni) const {
    if (!sni || sni->empty()) {
        return default_route();
    }
    const Route& fallback = catch_all_ ? routes_[*catch_all_] : default_route();
    const std::string_view name = *sni;
    if (const auto it = exact_.find(name); it != exact_.end()) {
        return routes_[it->second];
    }
    if (wildcard_.empty()) {
        return fallback;
    }
    // "*.example.org" is stored as "example.org" and matches any name with at least one
    // label before it. Walking the dots left to right tries the longest suffix first, so
    // the first hit is the most specific wildcard: one lookup per label.
    for (std::size_t dot = name.find('.'); dot != std::string_view::npos;
         dot = name.find('.', dot + 1)) {
        const std::string_view suffix = name.substr(dot + 1);
        if (const auto it = wildcard_.find(suffix); it != wildcard_.end()) {
            return routes_[it->second];
        }
    }
    return fallback;
}

}  // namespace tpt::routing
