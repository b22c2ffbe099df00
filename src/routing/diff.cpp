// routing::diff(): which servers a reload changes, for the reload log line.
#include <string>

#include <tpt/routing.hpp>

namespace tpt::routing {

namespace {

const config::Server* find_server(const config::Config& c, std::string_view name) {
    for (const auto& s : c.servers) {
        if (s.name == name) {
            return &s;
        }
    }
    return nullptr;
}

// The upstream a route name resolves to, or nullptr for a built-in (or a dangling name in
// a hand-built Config).
const config::Upstream* resolve(const config::Config& c, std::string_view name) {
    return config::is_builtin(name) ? nullptr : c.find_upstream(name);
}

bool same_upstream(const config::Config& before, const config::Config& after,
                   std::string_view name) {
    const auto* a = resolve(before, name);
    const auto* b = resolve(after, name);
    if (a == nullptr || b == nullptr) {
        return a == b;
    }
    return *a == *b;
}

// Same settings, and every upstream it can route to still means the same address.
bool same_server(const config::Server& s, const config::Config& before, const config::Server& t,
                 const config::Config& after) {
    if (!(s == t)) {
        return false;
    }
    if (!same_upstream(before, after, s.default_upstream)) {
        return false;
    }
    for (const auto& r : s.sni) {
        if (!same_upstream(before, after, r.upstream)) {
            return false;
        }
    }
    return true;
}

}  // namespace

Diff diff(const config::Config& before, const config::Config& after) {
    Diff d;
    for (const auto& s : after.servers) {
        const auto* old = find_server(before, s.name);
        if (old == nullptr) {
            d.added_servers.push_back(s.name);
        } else if (!same_server(*old, before, s, after)) {
            d.changed_servers.push_back(s.name);
        }
    }
    for (const auto& s : before.servers) {
        if (find_server(after, s.name) == nullptr) {
            d.removed_servers.push_back(s.name);
        }
    }

    return d;
}

}  // namespace tpt::routing
