// metrics: every tpt_* series of SPEC §6 on a prometheus-cpp registry, plus process_* metrics.
// Thread affinity: any thread; handles are cheap, series updates are atomic inside
// prometheus-cpp. Hot path rule: a tunnel folds its byte counts in at most once a second.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <tpt/outcome.hpp>

namespace tpt::metrics {

class Metrics;

// Series of one (server, route, upstream). Shared by the snapshot that routes to it and by
// every tunnel on it; the series leave the registry when the last holder lets go (SPEC §6:
// series of removed routes disappear once no tunnel uses them).
class RouteMetrics {
public:
    virtual ~RouteMetrics() = default;
    virtual void connection_opened() = 0;  // connections_total +1, active +1
    virtual void connection_closed() = 0;  // active -1
    virtual void add_bytes(std::uint64_t to_upstream, std::uint64_t to_client) = 0;
    virtual void error(Outcome reason) = 0;  // only for is_route_error(reason)
    virtual void observe_connect_seconds(double seconds) = 0;
};
using RouteMetricsPtr = std::shared_ptr<RouteMetrics>;

// tpt_active_connections / tpt_maxclients {name, listen} of one listen address of a server;
// same lifetime rule as RouteMetrics.
class ListenerMetrics {
public:
    virtual ~ListenerMetrics() = default;
    virtual void set_maxclients(std::uint32_t n) = 0;
    virtual void connection_opened() = 0;
    virtual void connection_closed() = 0;
};
using ListenerMetricsPtr = std::shared_ptr<ListenerMetrics>;

// SPEC §13: tpt_upstream_member_up, tpt_upstream_member_connections_total and
// tpt_upstream_member_failures_total{reason} of one member of an upstream; same lifetime rule
// as RouteMetrics. Any thread; connection() takes no lock.
class MemberMetrics {
public:
    virtual ~MemberMetrics() = default;
    virtual void set_up(bool up) = 0;
    virtual void connection() = 0;             // a connection was established through it
    virtual void failure(Outcome reason) = 0;  // a connect or probe failed (rare: locks)
};
using MemberMetricsPtr = std::shared_ptr<MemberMetrics>;

class Metrics {
public:
    virtual ~Metrics() = default;

    // The same labels give the same (shared) handle while any holder lives.
    virtual RouteMetricsPtr route(std::string_view server, std::string_view route,
                                  std::string_view upstream) = 0;
    virtual ListenerMetricsPtr listener(std::string_view server, std::string_view listen) = 0;
    virtual MemberMetricsPtr member(std::string_view upstream, std::string_view member) = 0;

    // tpt_maxclients_rejected_total{name}
    virtual void maxclients_rejected(std::string_view server) = 0;
    // Forget the rejected counter of a server a reload removed.
    virtual void forget_server(std::string_view server) = 0;

    // tpt_config_reloads_total{result}, tpt_config_last_reload_successful and, on success,
    // tpt_config_last_reload_success_timestamp_seconds (unix seconds) and tpt_config_info{sha256}.
    virtual void reload_result(bool success, std::string_view sha256, double unix_seconds) = 0;
    // The initial load: info + timestamp + successful=1, without counting a reload.
    virtual void config_loaded(std::string_view sha256, double unix_seconds) = 0;

    // Prometheus text format 0.0.4, including process_* metrics read from /proc now.
    virtual std::string serialize() = 0;
};

// version: the tpt_build_info{version} label.
std::unique_ptr<Metrics> make_metrics(std::string_view version);

inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace tpt::metrics
