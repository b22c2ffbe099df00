#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include <tpt/snapshot.hpp>

#include "support.hpp"

namespace {

using tpt::test::metric;
namespace snapshot = tpt::snapshot;

std::shared_ptr<const tpt::config::Config> load(const std::string& yaml) {
    auto r = tpt::config::load(yaml, "snapshot.yaml",
                               [](std::string_view) { return std::optional<std::string>{}; });
    if (!r) {
        ADD_FAILURE() << tpt::config::to_string(r.error());
        return std::make_shared<const tpt::config::Config>();
    }
    return std::make_shared<const tpt::config::Config>(std::move(r).value());
}

constexpr const char* two_servers = R"(
servers:
  proxy: { listen: "127.0.0.1:1", maxclients: 2, default: echo }
  probes: { listen: "127.0.0.1:2", maxclients: 1, default: health }
)";

class Admission : public testing::Test {
protected:
    std::unique_ptr<tpt::metrics::Metrics> metrics_ = tpt::metrics::make_metrics("t");
    snapshot::SnapshotPtr snap_ = snapshot::build(load(two_servers), "aa", nullptr, *metrics_,
                                                  std::make_shared<tpt::admin::Handlers>());
    std::atomic<std::uint64_t> live_{0};

    std::optional<snapshot::Admission> admit(std::size_t server) {
        const auto& entry = *snap_->servers[server].listener_metrics.begin();
        return snapshot::Admission::admit(*snap_, server, entry, live_);
    }
    std::optional<double> series(const std::string& s) { return metric(metrics_->serialize(), s); }
};

TEST_F(Admission, CountsAConnectionInAndOutAgain) {
    {
        auto a = admit(0);
        ASSERT_TRUE(a.has_value());
        EXPECT_EQ(a->listen(), "127.0.0.1:1");
        EXPECT_EQ(snap_->servers[0].state->active.load(), 1U);
        EXPECT_EQ(live_.load(), 1U);
        EXPECT_EQ(series(R"(tpt_active_connections{listen="127.0.0.1:1",name="proxy"})"), 1.0);
        auto moved = std::move(*a);  // one count, whoever holds it
        a.reset();
        EXPECT_EQ(live_.load(), 1U);
    }
    EXPECT_EQ(snap_->servers[0].state->active.load(), 0U);
    EXPECT_EQ(live_.load(), 0U);
    EXPECT_EQ(series(R"(tpt_active_connections{listen="127.0.0.1:1",name="proxy"})"), 0.0);
}

TEST_F(Admission, RefusesBeyondMaxclientsAndCountsTheRejection) {
    auto a = admit(0);
    auto b = admit(0);
    ASSERT_TRUE(a && b);
    EXPECT_FALSE(admit(0).has_value());
    EXPECT_EQ(series(R"(tpt_maxclients_rejected_total{name="proxy"})"), 1.0);
    EXPECT_EQ(snap_->servers[0].state->active.load(), 2U);  // the refusal took nothing
    b.reset();
    EXPECT_TRUE(admit(0).has_value());
}

// SPEC §4.1: health servers are exempt from maxclients, and probes do not hold up a drain.
TEST_F(Admission, HealthServersAreExemptAndNotDrained) {
    auto a = admit(1);
    auto b = admit(1);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(live_.load(), 0U);
    EXPECT_EQ(series(R"(tpt_active_connections{listen="127.0.0.1:2",name="probes"})"), 2.0);
}

// SPEC §7: the active count of a server carries over a reload by name.
TEST_F(Admission, ActiveCountsCarryOverToTheNextSnapshotByServerName) {
    auto a = admit(0);
    const auto next = snapshot::build(load(two_servers), "bb", snap_.get(), *metrics_,
                                      std::make_shared<tpt::admin::Handlers>());
    EXPECT_EQ(next->servers[0].state, snap_->servers[0].state);
    EXPECT_EQ(next->servers[0].state->active.load(), 1U);
    EXPECT_EQ(next->server_by_listen.at("127.0.0.1:2"), 1U);
}

}  // namespace
