// SPEC §13: active health checks, one loop per member on the control thread.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/upstream.hpp>

#include "socket_deadline.hpp"

namespace tpt::upstream {

// What a member's probe loop needs, copied from the published config at every reload.
struct ProbeSettings {
    config::HealthCheck health;
    address::HostPort address;
    address::Family family = address::Family::any;
    std::chrono::milliseconds refresh{0};
};

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// One probe: a connect within health.timeout, then, with a probe_target, the CONNECT
// exchange within what is left of it.
net::awaitable<ConnectResult> probe_once(const ProbeSettings& probe, Resolver& resolver,
                                         const Prober::Handshake& handshake) {
    tcp::socket socket(co_await net::this_coro::executor);
    SocketDeadline deadline(socket, runtime::Clock::now() + probe.health.timeout, nullptr);
    Dial dial(probe.address, probe.family, probe.refresh);
    auto result = co_await dial.finish(socket, resolver, deadline);
    if (result.outcome != Outcome::ok || !probe.health.probe_target) {
        co_return result;
    }
    const auto target = probe.health.probe_target->to_string();
    const auto outcome = co_await handshake(socket, target, probe.health.headers, deadline);
    if (outcome != Outcome::ok) {
        result.outcome = outcome;
        result.detail = "probe CONNECT " + target + ": " + std::string(to_string(outcome));
    }
    co_return result;
}

}  // namespace

void Prober::adopt(const std::vector<PoolPtr>& pools, std::chrono::milliseconds refresh) {
    for (const auto& pool : pools) {
        const auto& cfg = pool->config();
        for (std::size_t i = 0; i < cfg.members.size(); ++i) {
            const auto& member = pool->members()[i];
            member->probe_ = std::make_shared<const ProbeSettings>(
                ProbeSettings{cfg.health, cfg.members[i].address, cfg.members[i].family, refresh});
            if (cfg.health.interval > config::Duration::zero() && !member->probing_) {
                member->probing_ = true;
                net::co_spawn(executor_, loop(member, handshake_), net::detached);
            }
        }
    }
}

net::awaitable<void> Prober::loop(std::weak_ptr<Member> weak, Handshake handshake) {
    const auto executor = co_await net::this_coro::executor;
    net::steady_timer timer(executor);
    Resolver resolver(executor);
    for (;;) {
        std::shared_ptr<const ProbeSettings> probe;
        if (const auto member = weak.lock()) {
            probe = member->probe_;
            if (probe->health.interval == config::Duration::zero()) {
                member->probing_ = false;
                co_return;
            }
        } else {
            co_return;
        }
        timer.expires_after(probe->health.interval);
        co_await timer.async_wait(use_tuple);
        const auto member = weak.lock();
        if (!member) {
            co_return;
        }
        probe = member->probe_;  // a reload may have changed it meanwhile
        if (probe->health.interval == config::Duration::zero()) {
            continue;
        }
        const auto result = co_await probe_once(*probe, resolver, handshake);
        if (result.outcome == Outcome::ok) {
            member->succeeded(probe->health);
        } else {
            member->failed(result.outcome, probe->health, "probe: " + result.detail);
        }
    }
}

}  // namespace tpt::upstream
