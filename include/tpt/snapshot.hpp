// snapshot: everything a connection needs, frozen when it is accepted (the config, each
// server's routing table and metrics handles), and the admission token that counts a
// connection in and out.
// Thread affinity: built on the control thread, then shared read-only by every worker; an
// Admission lives and dies on the worker that accepted its connection.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include <tpt/admin.hpp>
#include <tpt/config.hpp>
#include <tpt/metrics.hpp>
#include <tpt/routing.hpp>
#include <tpt/upstream.hpp>

namespace tpt::snapshot {

// Live-connection count of a server, carried over across reloads by server name.
struct ServerState {
    std::atomic<std::uint32_t> active{0};
};

// One listen address of a server and its gauges.
using ListenEntry = std::pair<const std::string, metrics::ListenerMetricsPtr>;

struct ServerRuntime {
    const config::Server* server = nullptr;
    std::unique_ptr<routing::Table> table;
    std::vector<metrics::RouteMetricsPtr> route_metrics;  // parallel to table->routes()
    std::shared_ptr<ServerState> state;
    bool health_only = false;  // every route is `health`: exempt from maxclients
    std::unordered_map<std::string, metrics::ListenerMetricsPtr> listener_metrics;  // by listen
};

// A connection finishes with the snapshot it started with, whatever reloads happen meanwhile.
struct Snapshot {
    std::shared_ptr<const config::Config> config;
    std::string sha256;
    std::vector<ServerRuntime> servers;                             // parallel to config->servers
    std::unordered_map<std::string, std::size_t> server_by_listen;  // "host:port" -> index
    std::vector<boost::asio::ip::tcp::endpoint> own_listen;         // every listen address
    admin::HandlersPtr admin_handlers;
    metrics::Metrics* metrics = nullptr;   // outlives every snapshot
    std::vector<upstream::PoolPtr> pools;  // parallel to config->upstreams

    // The pool of an upstream of this snapshot's config.
    const upstream::Pool& pool(const config::Upstream& u) const noexcept {
        return *pools[static_cast<std::size_t>(&u - config->upstreams.data())];
    }
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

// Builds the runtime side of a config. States of servers with the same name in `previous`
// carry over (active counts, SPEC §7), and so do upstream members with the same upstream name
// and URL (their health, SPEC §13); metrics handles are shared with it where labels are equal.
SnapshotPtr build(std::shared_ptr<const config::Config> config, std::string sha256,
                  const Snapshot* previous, metrics::Metrics& metrics,
                  admin::HandlersPtr admin_handlers);

// SPEC §11: whether connecting to `ep` would reach tpt itself: one of its listen addresses,
// or the port of a wildcard listen address on a loopback address.
bool is_own_listen(const Snapshot& snap, const boost::asio::ip::tcp::endpoint& ep);

// One accepted connection, counted in: its server's active count (maxclients), the worker's
// drain count and its listener's gauge; counted out by the destructor. Health-only servers
// are exempt from the first two (SPEC §4.1).
class Admission {
public:
    // nullopt (and tpt_maxclients_rejected_total +1) when the server is at maxclients.
    // `listen` is an entry of servers[server].listener_metrics; `live` the worker's count, which
    // outlives the Admission.
    static std::optional<Admission> admit(const Snapshot& snap, std::size_t server,
                                          const ListenEntry& listen,
                                          std::atomic<std::uint64_t>& live);

    Admission(Admission&& o) noexcept
        : listen_(std::exchange(o.listen_, nullptr)),
          state_(std::exchange(o.state_, nullptr)),
          live_(std::exchange(o.live_, nullptr)) {}
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    Admission& operator=(Admission&&) = delete;
    ~Admission();

    const std::string& listen() const noexcept { return listen_->first; }

private:
    Admission(const ListenEntry* listen, ServerState* state,
              std::atomic<std::uint64_t>* live) noexcept
        : listen_(listen), state_(state), live_(live) {}

    const ListenEntry* listen_;
    ServerState* state_;                // nullptr: health-only, not counted
    std::atomic<std::uint64_t>* live_;  // nullptr with state_
};

}  // namespace tpt::snapshot
