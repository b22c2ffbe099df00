#include <algorithm>

#include <tpt/snapshot.hpp>

namespace tpt::snapshot {

namespace {

bool all_health(const routing::Table& table) {
    return std::all_of(table.routes().begin(), table.routes().end(), [](const routing::Route& r) {
        return r.upstream == config::builtin_health;
    });
}

std::shared_ptr<ServerState> state_of(const Snapshot* previous, const std::string& name) {
    if (previous != nullptr) {
        for (const auto& old : previous->servers) {
            if (old.server->name == name) {
                return old.state;
            }
        }
    }
    return std::make_shared<ServerState>();
}

}  // namespace

SnapshotPtr build(std::shared_ptr<const config::Config> config, std::string sha256,
                  const Snapshot* previous, metrics::Metrics& metrics,
                  admin::HandlersPtr admin_handlers) {
    auto snap = std::make_shared<Snapshot>();
    snap->config = std::move(config);
    snap->sha256 = std::move(sha256);
    snap->metrics = &metrics;
    snap->admin_handlers = std::move(admin_handlers);
    const auto& cfg = *snap->config;
    snap->pools =
        upstream::make_pools(cfg, previous != nullptr ? &previous->pools : nullptr, metrics);
    snap->servers.reserve(cfg.servers.size());
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        const auto& server = cfg.servers[i];
        ServerRuntime rt;
        rt.server = &server;
        rt.table = std::make_unique<routing::Table>(server, cfg);
        for (const auto& route : rt.table->routes()) {
            rt.route_metrics.push_back(metrics.route(server.name, route.key, route.upstream));
        }
        rt.health_only = all_health(*rt.table);
        rt.state = state_of(previous, server.name);
        for (const auto& l : server.listen) {
            const auto key = l.to_string();
            auto lm = metrics.listener(server.name, key);
            lm->set_maxclients(server.maxclients);
            rt.listener_metrics.emplace(key, std::move(lm));
            snap->server_by_listen.emplace(key, i);
            boost::system::error_code ec;  // listen hosts are IP literals (config::load)
            const auto addr = boost::asio::ip::make_address(l.host, ec);
            if (!ec) {
                snap->own_listen.emplace_back(addr, l.port);
            }
        }
        snap->servers.push_back(std::move(rt));
    }
    return snap;
}

bool is_own_listen(const Snapshot& snap, const boost::asio::ip::tcp::endpoint& ep) {
    return std::any_of(snap.own_listen.begin(), snap.own_listen.end(), [&](const auto& l) {
        return l.port() == ep.port() &&
               (l.address() == ep.address() ||
                (l.address().is_unspecified() && ep.address().is_loopback()));
    });
}

std::optional<Admission> Admission::admit(const Snapshot& snap, std::size_t server,
                                          const ListenEntry& listen,
                                          std::atomic<std::uint64_t>& live) {
    const auto& srv = snap.servers[server];
    ServerState* state = nullptr;
    std::atomic<std::uint64_t>* counted_live = nullptr;
    if (!srv.health_only) {
        const auto before = srv.state->active.fetch_add(1, std::memory_order_relaxed);
        if (before >= srv.server->maxclients) {
            srv.state->active.fetch_sub(1, std::memory_order_relaxed);
            snap.metrics->maxclients_rejected(srv.server->name);
            return std::nullopt;
        }
        live.fetch_add(1, std::memory_order_relaxed);
        state = srv.state.get();
        counted_live = &live;
    }
    listen.second->connection_opened();
    return Admission(&listen, state, counted_live);
}

Admission::~Admission() {
    if (listen_ == nullptr) {
        return;  // moved from
    }
    listen_->second->connection_closed();
    if (state_ != nullptr) {
        state_->active.fetch_sub(1, std::memory_order_relaxed);
        live_->fetch_sub(1, std::memory_order_relaxed);
    }
}

}  // namespace tpt::snapshot
