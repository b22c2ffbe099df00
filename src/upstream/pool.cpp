// SPEC §13: the health of an upstream's members, the order a connection tries them in, and
// the pools of a snapshot.
#include <algorithm>
#include <map>
#include <utility>

#include <tpt/log.hpp>
#include <tpt/upstream.hpp>

namespace tpt::upstream {

namespace {

std::int64_t ticks(runtime::Clock::time_point t) noexcept {
    return t.time_since_epoch().count();
}

}  // namespace

Lease::Lease(Member& member) noexcept : member_(&member) {
    member.live_.fetch_add(1, std::memory_order_relaxed);
}

Lease& Lease::operator=(Lease&& o) noexcept {
    if (this != &o) {
        release();
        member_ = std::exchange(o.member_, nullptr);
    }
    return *this;
}

void Lease::release() noexcept {
    if (member_ != nullptr) {
        member_->live_.fetch_sub(1, std::memory_order_relaxed);
        member_ = nullptr;
    }
}

Member::Member(std::string upstream, std::string url, metrics::MemberMetricsPtr metrics)
    : upstream_(std::move(upstream)), url_(std::move(url)), metrics_(std::move(metrics)) {}

bool Member::usable(const config::HealthCheck& health) const noexcept {
    if (up()) {
        return true;
    }
    return health.interval == config::Duration::zero() &&
           ticks(runtime::Clock::now()) >= retry_at_.load(std::memory_order_relaxed);
}

void Member::connected(const config::HealthCheck& health, bool confirm_later) {
    metrics_->connection();
    if (!confirm_later) {
        succeeded(health);
    }
}

void Member::succeeded(const config::HealthCheck& health) {
    // Loads first: on the connect path of a healthy member nothing is written, so the
    // workers share the cache line without bouncing it.
    if (failures_.load(std::memory_order_relaxed) != 0) {
        failures_.store(0, std::memory_order_relaxed);
    }
    if (up()) {
        return;
    }
    const auto n = successes_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n >= health.pass_after && !up_.exchange(true, std::memory_order_relaxed)) {
        successes_.store(0, std::memory_order_relaxed);
        metrics_->set_up(true);
        log::info("upstream member up",
                  {{"upstream", upstream_}, {"member", url_}, {"successes", std::to_string(n)}});
    }
}

void Member::failed(Outcome reason, const config::HealthCheck& health, std::string_view detail) {
    metrics_->failure(reason);
    successes_.store(0, std::memory_order_relaxed);
    retry_at_.store(ticks(runtime::Clock::now() + passive_retry), std::memory_order_relaxed);
    const auto n = failures_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n >= health.fail_after && up_.exchange(false, std::memory_order_relaxed)) {
        metrics_->set_up(false);
        log::warn("upstream member down", {{"upstream", upstream_},
                                           {"member", url_},
                                           {"reason", std::string(to_string(reason))},
                                           {"failures", std::to_string(n)},
                                           {"detail", std::string(detail)}});
    }
}

std::size_t Pool::order(std::span<std::uint8_t, config::max_members> out) const noexcept {
    const auto& cfg = *config_;
    const auto n = members_.size();
    std::size_t start = 0;
    if (cfg.strategy != config::Strategy::failover && n > 1) {
        start = static_cast<std::size_t>(turn_.fetch_add(1, std::memory_order_relaxed) % n);
    }
    std::size_t usable = 0;
    std::size_t last = n;  // the others fill `out` from its end, then move up
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (start + k) % n;
        if (members_[i]->usable(cfg.health)) {
            out[usable++] = static_cast<std::uint8_t>(i);
        } else {
            out[--last] = static_cast<std::uint8_t>(i);
        }
    }
    if (cfg.strategy == config::Strategy::least_connections) {
        std::stable_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(usable),
                         [this](std::uint8_t a, std::uint8_t b) {
                             return members_[a]->live() < members_[b]->live();
                         });
    }
    // The others as listed.
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(usable),
              out.begin() + static_cast<std::ptrdiff_t>(n));
    return n;
}

std::vector<PoolPtr> make_pools(const config::Config& config, const std::vector<PoolPtr>* previous,
                                metrics::Metrics& metrics) {
    // Members that live on: by (upstream name, URL).
    std::map<std::pair<std::string_view, std::string_view>, MemberPtr> old;
    if (previous != nullptr) {
        for (const auto& pool : *previous) {
            for (const auto& m : pool->members()) {
                old.emplace(std::pair<std::string_view, std::string_view>{m->upstream(), m->url()},
                            m);
            }
        }
    }
    std::vector<PoolPtr> pools;
    pools.reserve(config.upstreams.size());
    for (const auto& up : config.upstreams) {
        std::vector<MemberPtr> members;
        members.reserve(up.members.size());
        for (const auto& m : up.members) {
            const auto it = old.find({up.name, m.url});
            members.push_back(
                it != old.end()
                    ? it->second
                    : std::make_shared<Member>(up.name, m.url, metrics.member(up.name, m.url)));
        }
        pools.push_back(std::make_shared<const Pool>(up, std::move(members)));
    }
    return pools;
}

}  // namespace tpt::upstream
