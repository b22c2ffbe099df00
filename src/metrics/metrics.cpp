#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <tpt/metrics.hpp>

#include "process.hpp"

namespace tpt::metrics {

namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

constexpr std::array<double, 14> connect_bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25,  0.5,    1,     2.5,  5,     10,   30};

const Histogram::BucketBoundaries& connect_buckets() {
    static const Histogram::BucketBoundaries buckets(connect_bounds.begin(), connect_bounds.end());
    return buckets;
}

// Lifetime of a series: handles with overlapping label sets share series (two upstreams of
// one route share its bytes counters while a reload's old and new tunnels both live), so each
// series is reference-counted by its metric's address (Family::Add gives the same object for
// the same labels) and Remove()d when the last handle lets go. All of it under `mu_`.
class Core {
public:
    explicit Core(std::string_view version)
        : active_(prometheus::BuildGauge()
                      .Name("tpt_active_connections")
                      .Help("Connections currently open on a listen address of a server.")
                      .Register(registry_)),
          maxclients_(prometheus::BuildGauge()
                          .Name("tpt_maxclients")
                          .Help("Configured maximum of concurrent connections of a server.")
                          .Register(registry_)),
          route_connections_(prometheus::BuildCounter()
                                 .Name("tpt_route_connections_total")
                                 .Help("Connections routed to a route and upstream.")
                                 .Register(registry_)),
          route_active_(prometheus::BuildGauge()
                            .Name("tpt_route_active_connections")
                            .Help("Connections currently open on a route and upstream.")
                            .Register(registry_)),
          route_bytes_(prometheus::BuildCounter()
                           .Name("tpt_route_bytes_total")
                           .Help("Bytes relayed on a route, by direction.")
                           .Register(registry_)),
          route_errors_(prometheus::BuildCounter()
                            .Name("tpt_route_errors_total")
                            .Help("Connections on a route that ended in an error, by reason.")
                            .Register(registry_)),
          connect_duration_(prometheus::BuildHistogram()
                                .Name("tpt_upstream_connect_duration_seconds")
                                .Help("Time to connect to the upstream, CONNECT included.")
                                .Register(registry_)),
          member_up_(prometheus::BuildGauge()
                         .Name("tpt_upstream_member_up")
                         .Help("1 while a member of an upstream is healthy, 0 while it is down.")
                         .Register(registry_)),
          member_connections_(prometheus::BuildCounter()
                                  .Name("tpt_upstream_member_connections_total")
                                  .Help("Connections established through a member of an upstream.")
                                  .Register(registry_)),
          member_failures_(prometheus::BuildCounter()
                               .Name("tpt_upstream_member_failures_total")
                               .Help("Failed connects and probes of a member of an upstream.")
                               .Register(registry_)),
          rejected_(prometheus::BuildCounter()
                        .Name("tpt_maxclients_rejected_total")
                        .Help("Connections closed at accept because the server was full.")
                        .Register(registry_)),
          reloads_(prometheus::BuildCounter()
                       .Name("tpt_config_reloads_total")
                       .Help("Configuration reloads, by result.")
                       .Register(registry_)),
          last_reload_ok_(prometheus::BuildGauge()
                              .Name("tpt_config_last_reload_successful")
                              .Help("1 if the last configuration load or reload succeeded.")
                              .Register(registry_)),
          last_reload_time_(prometheus::BuildGauge()
                                .Name("tpt_config_last_reload_success_timestamp_seconds")
                                .Help("Unix time of the last successful configuration load.")
                                .Register(registry_)),
          config_info_(prometheus::BuildGauge()
                           .Name("tpt_config_info")
                           .Help("The SHA-256 of the configuration in use; always 1.")
                           .Register(registry_)),
          build_info_(prometheus::BuildGauge()
                          .Name("tpt_build_info")
                          .Help("The version of tpt; always 1.")
                          .Register(registry_)) {
        build_info_.Add({{"version", std::string(version)}}).Set(1);
        // Both results exist from the start so that rate() sees the first failure.
        reloads_.Add({{"result", "success"}});
        reloads_.Add({{"result", "failure"}});
    }

    template <class T, class... Args>
    T& acquire(Family<T>& family, const Labels& labels, Args&&... args) {
        T& metric = family.Add(labels, std::forward<Args>(args)...);
        ++refs_[&metric];
        return metric;
    }

    template <class T>
    void release(Family<T>& family, T& metric) {
        auto it = refs_.find(&metric);
        assert(it != refs_.end());
        if (it != refs_.end() && --it->second == 0) {
            refs_.erase(it);
            family.Remove(&metric);
        }
    }

    void set_config_hash(std::string_view sha256) {
        if (info_ != nullptr && info_hash_ == sha256) {
            return;
        }
        if (info_ != nullptr) {
            config_info_.Remove(info_);
        }
        info_hash_ = sha256;
        info_ = &config_info_.Add({{"sha256", info_hash_}});
        info_->Set(1);
    }

    std::mutex mu_;
    prometheus::Registry registry_;
    Family<Gauge>& active_;
    Family<Gauge>& maxclients_;
    Family<Counter>& route_connections_;
    Family<Gauge>& route_active_;
    Family<Counter>& route_bytes_;
    Family<Counter>& route_errors_;
    Family<Histogram>& connect_duration_;
    Family<Gauge>& member_up_;
    Family<Counter>& member_connections_;
    Family<Counter>& member_failures_;
    Family<Counter>& rejected_;
    Family<Counter>& reloads_;
    Family<Gauge>& last_reload_ok_;
    Family<Gauge>& last_reload_time_;
    Family<Gauge>& config_info_;
    Family<Gauge>& build_info_;

    using RouteKey = std::tuple<std::string, std::string, std::string>;
    using ListenerKey = std::pair<std::string, std::string>;
    using MemberKey = std::pair<std::string, std::string>;
    std::map<RouteKey, std::weak_ptr<RouteMetrics>> routes_;
    std::map<ListenerKey, std::weak_ptr<ListenerMetrics>> listeners_;
    std::map<MemberKey, std::weak_ptr<MemberMetrics>> members_;

private:
    std::map<const void*, std::size_t> refs_;
    Gauge* info_ = nullptr;
    std::string info_hash_;
};

// Forgets the handle map entry of a handle being destroyed, unless a newer handle for the
// same labels took the entry over between the last release and this destructor.
template <class Map, class Key>
void forget_entry(Map& map, const Key& key) {
    auto it = map.find(key);
    if (it != map.end() && it->second.expired()) {
        map.erase(it);
    }
}

// Counters of one label set by `reason`, each added on its first use: errors are rare, and a
// reason never seen needs no series.
class ReasonCounters {
public:
    // Takes core.mu_.
    void increment(Core& core, Family<Counter>& family, Labels labels, Outcome reason) {
        const std::lock_guard lock(core.mu_);
        Counter*& counter = slots_.at(static_cast<std::size_t>(reason));
        if (counter == nullptr) {
            labels.emplace("reason", std::string(to_string(reason)));
            counter = &core.acquire(family, labels);
        }
        counter->Increment();
    }
    // Called with core.mu_ held.
    void release(Core& core, Family<Counter>& family) {
        for (Counter* c : slots_) {
            if (c != nullptr) {
                core.release(family, *c);
            }
        }
    }

private:
    std::array<Counter*, outcome_count> slots_{};  // guarded by the core's mu_
};

// What every handle holds: the core it registers with, and its key in the core's map.
template <class Key>
struct HandleBase {
    HandleBase(std::shared_ptr<Core> core, Key key)
        : core_(std::move(core)), key_(std::move(key)) {}
    HandleBase(const HandleBase&) = delete;  // a handle owns its registry entries
    HandleBase& operator=(const HandleBase&) = delete;
    HandleBase(HandleBase&&) = delete;
    HandleBase& operator=(HandleBase&&) = delete;
    ~HandleBase() = default;
    std::shared_ptr<Core> core_;
    Key key_;
};

class RouteHandle final : public RouteMetrics, private HandleBase<Core::RouteKey> {
public:
    // Called with core->mu_ held.
    RouteHandle(std::shared_ptr<Core> core, Core::RouteKey key)
        : HandleBase(std::move(core), std::move(key)),
          connections_(core_->acquire(core_->route_connections_, labels())),
          active_(core_->acquire(core_->route_active_, labels())),
          to_upstream_(core_->acquire(core_->route_bytes_, direction_labels("to_upstream"))),
          to_client_(core_->acquire(core_->route_bytes_, direction_labels("to_client"))),
          connect_(
              core_->acquire(core_->connect_duration_, server_route_labels(), connect_buckets())) {}

    ~RouteHandle() override {
        fold_connect();  // the histogram may outlive this handle (shared labels)
        const std::lock_guard lock(core_->mu_);
        core_->release(core_->route_connections_, connections_);
        core_->release(core_->route_active_, active_);
        core_->release(core_->route_bytes_, to_upstream_);
        core_->release(core_->route_bytes_, to_client_);
        core_->release(core_->connect_duration_, connect_);
        errors_.release(*core_, core_->route_errors_);
        forget_entry(core_->routes_, key_);
    }

    void connection_opened() override {
        connections_.Increment();
        active_.Increment();
    }
    void connection_closed() override { active_.Decrement(); }

    void add_bytes(std::uint64_t to_upstream, std::uint64_t to_client) override {
        if (to_upstream != 0) {
            to_upstream_.Increment(static_cast<double>(to_upstream));
        }
        if (to_client != 0) {
            to_client_.Increment(static_cast<double>(to_client));
        }
    }

    void error(Outcome reason) override {
        assert(is_route_error(reason));
        if (!is_route_error(reason)) {
            return;
        }
        errors_.increment(*core_, core_->route_errors_, server_route_labels(), reason);
    }

    // Without a lock: prometheus-cpp's Histogram::Observe takes a mutex that every worker's
    // connects would share. The counts wait in atomics until a scrape (or this handle's end)
    // folds them into the histogram.
    void observe_connect_seconds(double seconds) override {
        const auto bucket = static_cast<std::size_t>(
            std::lower_bound(connect_bounds.begin(), connect_bounds.end(), seconds) -
            connect_bounds.begin());  // the first bound >= seconds; connect_bounds.size(): +Inf
        pending_buckets_.at(bucket).fetch_add(1, std::memory_order_relaxed);
        const double ns = std::isfinite(seconds) && seconds > 0 ? seconds * 1e9 : 0;
        pending_sum_ns_.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
    }

    // Moves the pending connect observations into the histogram. Any thread; a concurrent
    // observation lands in this fold or the next (the sum may trail the count by it).
    void fold_connect() {
        std::vector<double> increments(pending_buckets_.size());
        bool any = false;
        for (std::size_t i = 0; i < pending_buckets_.size(); ++i) {
            const auto n = pending_buckets_.at(i).exchange(0, std::memory_order_relaxed);
            increments.at(i) = static_cast<double>(n);
            any = any || n != 0;
        }
        const auto sum_ns = pending_sum_ns_.exchange(0, std::memory_order_relaxed);
        if (any || sum_ns != 0) {
            connect_.ObserveMultiple(increments, static_cast<double>(sum_ns) / 1e9);
        }
    }

private:
    Labels server_route_labels() const {
        return {{"server", std::get<0>(key_)}, {"route", std::get<1>(key_)}};
    }
    Labels labels() const {
        Labels l = server_route_labels();
        l.emplace("upstream", std::get<2>(key_));
        return l;
    }
    Labels direction_labels(const char* direction) const {
        Labels l = server_route_labels();
        l.emplace("direction", direction);
        return l;
    }

    Counter& connections_;
    Gauge& active_;
    Counter& to_upstream_;
    Counter& to_client_;
    Histogram& connect_;
    ReasonCounters errors_;
    std::array<std::atomic<std::uint64_t>, connect_bounds.size() + 1> pending_buckets_{};
    std::atomic<std::uint64_t> pending_sum_ns_{0};
};

class ListenerHandle final : public ListenerMetrics, private HandleBase<Core::ListenerKey> {
public:
    // Called with core->mu_ held.
    ListenerHandle(std::shared_ptr<Core> core, Core::ListenerKey key)
        : HandleBase(std::move(core), std::move(key)),
          active_(core_->acquire(core_->active_, labels())),
          maxclients_(core_->acquire(core_->maxclients_, labels())) {}

    ~ListenerHandle() override {
        const std::lock_guard lock(core_->mu_);
        core_->release(core_->active_, active_);
        core_->release(core_->maxclients_, maxclients_);
        forget_entry(core_->listeners_, key_);
    }

    void set_maxclients(std::uint32_t n) override { maxclients_.Set(n); }
    void connection_opened() override { active_.Increment(); }
    void connection_closed() override { active_.Decrement(); }

private:
    Labels labels() const { return {{"name", key_.first}, {"listen", key_.second}}; }

    Gauge& active_;
    Gauge& maxclients_;
};

class MemberHandle final : public MemberMetrics, private HandleBase<Core::MemberKey> {
public:
    // Called with core->mu_ held.
    MemberHandle(std::shared_ptr<Core> core, Core::MemberKey key)
        : HandleBase(std::move(core), std::move(key)),
          up_(core_->acquire(core_->member_up_, labels())),
          connections_(core_->acquire(core_->member_connections_, labels())) {
        up_.Set(1);  // a member is up until it fails (SPEC §13: never refuse on no data)
    }

    ~MemberHandle() override {
        const std::lock_guard lock(core_->mu_);
        core_->release(core_->member_up_, up_);
        core_->release(core_->member_connections_, connections_);
        failures_.release(*core_, core_->member_failures_);
        forget_entry(core_->members_, key_);
    }

    void set_up(bool up) override { up_.Set(up ? 1 : 0); }
    void connection() override { connections_.Increment(); }
    void failure(Outcome reason) override {
        failures_.increment(*core_, core_->member_failures_, labels(), reason);
    }

private:
    Labels labels() const { return {{"upstream", key_.first}, {"member", key_.second}}; }

    Gauge& up_;
    Counter& connections_;
    ReasonCounters failures_;
};

// The live handle of `key` in `handles`, or a new one (Handle's constructor takes the core and
// the key) when none lives: while any holder lives, the same labels give the same handle.
template <class Handle, class Key, class Base>
std::shared_ptr<Base> shared_handle(const std::shared_ptr<Core>& core,
                                    std::map<Key, std::weak_ptr<Base>>& handles, Key key) {
    const std::lock_guard lock(core->mu_);
    auto& slot = handles[key];
    if (auto live = slot.lock()) {
        return live;
    }
    auto handle = std::make_shared<Handle>(core, std::move(key));
    slot = handle;
    return handle;
}

class MetricsImpl final : public Metrics {
public:
    explicit MetricsImpl(std::string_view version) : core_(std::make_shared<Core>(version)) {}

    RouteMetricsPtr route(std::string_view server, std::string_view route,
                          std::string_view upstream) override {
        return shared_handle<RouteHandle>(
            core_, core_->routes_,
            Core::RouteKey{std::string(server), std::string(route), std::string(upstream)});
    }

    ListenerMetricsPtr listener(std::string_view server, std::string_view listen) override {
        return shared_handle<ListenerHandle>(
            core_, core_->listeners_, Core::ListenerKey{std::string(server), std::string(listen)});
    }

    MemberMetricsPtr member(std::string_view upstream, std::string_view member) override {
        return shared_handle<MemberHandle>(
            core_, core_->members_, Core::MemberKey{std::string(upstream), std::string(member)});
    }

    void maxclients_rejected(std::string_view server) override {
        const std::lock_guard lock(core_->mu_);
        core_->rejected_.Add({{"name", std::string(server)}}).Increment();
    }

    void forget_server(std::string_view server) override {
        const std::lock_guard lock(core_->mu_);
        const Labels labels{{"name", std::string(server)}};
        if (core_->rejected_.Has(labels)) {
            core_->rejected_.Remove(&core_->rejected_.Add(labels));
        }
    }

    void reload_result(bool success, std::string_view sha256, double unix_seconds) override {
        const std::lock_guard lock(core_->mu_);
        core_->reloads_.Add({{"result", success ? "success" : "failure"}}).Increment();
        core_->last_reload_ok_.Add({}).Set(success ? 1 : 0);
        if (success) {
            core_->last_reload_time_.Add({}).Set(unix_seconds);
            core_->set_config_hash(sha256);
        }
    }

    void config_loaded(std::string_view sha256, double unix_seconds) override {
        const std::lock_guard lock(core_->mu_);
        core_->last_reload_ok_.Add({}).Set(1);
        core_->last_reload_time_.Add({}).Set(unix_seconds);
        core_->set_config_hash(sha256);
    }

    std::string serialize() override {
        // Pending connect observations first. The handles are taken under the lock and let
        // go after it: a last reference dropped here runs ~RouteHandle, which locks mu_.
        std::vector<RouteMetricsPtr> live;
        {
            const std::lock_guard lock(core_->mu_);
            live.reserve(core_->routes_.size());
            for (const auto& [key, weak] : core_->routes_) {
                if (auto handle = weak.lock()) {
                    live.push_back(std::move(handle));
                }
            }
        }
        for (const auto& handle : live) {
            static_cast<RouteHandle&>(*handle).fold_connect();
        }
        live.clear();
        auto families = core_->registry_.Collect();
        auto proc = process::collect();
        families.insert(families.end(), std::make_move_iterator(proc.begin()),
                        std::make_move_iterator(proc.end()));
        return prometheus::TextSerializer().Serialize(families);
    }

private:
    std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<Metrics> make_metrics(std::string_view version) {
    return std::make_unique<MetricsImpl>(version);
}

}  // namespace tpt::metrics
