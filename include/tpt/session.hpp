// session: one accepted connection through its phases: ClientHello, route, connect,
// CONNECT, relay, access log. Also the immutable Snapshot a connection runs with.
// Thread affinity: a session runs on the worker that accepted it; a Snapshot is shared
// read-only by every worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <tpt/admin.hpp>
#include <tpt/config.hpp>
#include <tpt/metrics.hpp>
#include <tpt/routing.hpp>
#include <tpt/runtime.hpp>
#include <tpt/upstream.hpp>

namespace tpt::session {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Live-connection count of a server, carried over across reloads by server name.
struct ServerState {
    std::atomic<std::uint32_t> active{0};
};

struct ServerRuntime {
    const config::Server* server = nullptr;
    std::unique_ptr<routing::Table> table;
    std::vector<metrics::RouteMetricsPtr> route_metrics;  // parallel to table->routes()
    std::shared_ptr<ServerState> state;
    bool health_only = false;  // every route is `health`: exempt from maxclients
    std::unordered_map<std::string, metrics::ListenerMetricsPtr> listener_metrics;  // by listen
};
// One listen address of a server and its gauges: an element of listener_metrics.
using ListenEntry = std::pair<const std::string, metrics::ListenerMetricsPtr>;

// Everything a connection needs, frozen at accept: a connection finishes with the snapshot
// it started with, whatever reloads happen meanwhile.
struct Snapshot {
    std::shared_ptr<const config::Config> config;
    std::string sha256;
    std::vector<ServerRuntime> servers;                             // parallel to config->servers
    std::unordered_map<std::string, std::size_t> server_by_listen;  // "host:port" -> index
    admin::HandlersPtr admin_handlers;
    metrics::Metrics* metrics = nullptr;  // outlives every snapshot
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

// Builds the runtime side of a config. States of servers with the same name in `previous`
// carry over (active counts); metrics handles are shared with it where labels are equal.
SnapshotPtr build_snapshot(std::shared_ptr<const config::Config> config, std::string sha256,
                           const Snapshot* previous, metrics::Metrics& metrics,
                           admin::HandlersPtr admin_handlers);

// Per-worker state of sessions (the DNS cache).
struct WorkerContext {
    runtime::Worker& worker;
    upstream::Resolver resolver;
    // Sessions on this worker that are not health-only (read by the control thread to drain).
    std::atomic<std::uint64_t>& live;  // the worker's, which outlives this context
    explicit WorkerContext(runtime::Worker& w)
        : worker(w), resolver(w.executor()), live(w.sessions()) {}
};

// Runs one connection to its end, on the calling worker: starts its phases and returns.
// `client` is adopted from accept already (runtime::own_descriptor, O_NONBLOCK);
// `peer` is the client's address (from accept). The caller has counted the connection in
// server.state->active (unless the server is health_only) and in the listener gauge; the
// session un-counts both at its end. An established tunnel holds the session object and the
// relay state only: every phase's frame is gone by then.
// `listen` is the snapshot's entry for the accepting address.
void start(tcp::socket client, const tcp::endpoint& peer, SnapshotPtr snapshot,
           std::size_t server_index, const ListenEntry& listen, WorkerContext& ctx);

}  // namespace tpt::session
