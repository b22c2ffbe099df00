#include <chrono>
#include <fcntl.h>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/config.hpp>
#include <tpt/metrics.hpp>
#include <tpt/upstream.hpp>

#include "support.hpp"

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::address::Family;
using tpt::address::HostPort;

using tpt::test::TestDeadline;

// Runs `dial`'s finish() on `io` until it ends and returns its result.
tpt::upstream::ConnectResult finish(net::io_context& io, tcp::socket& socket,
                                    tpt::upstream::Dial& dial, TestDeadline& deadline) {
    tpt::upstream::Resolver resolver(io.get_executor());
    std::optional<tpt::upstream::ConnectResult> result;
    // dial, socket and deadline outlive the coroutine: this returns only once it has ended.
    net::co_spawn(io, dial.finish(socket, resolver, deadline),
                  [&](std::exception_ptr e, tpt::upstream::ConnectResult r) {
                      EXPECT_FALSE(e);
                      result = std::move(r);
                  });
    io.restart();
    for (int i = 0; i < 10000 && !result; ++i) {
        io.run_one_for(10ms);  // until the coroutine ended: a deadline left armed is not waited for
    }
    EXPECT_TRUE(result.has_value());
    return result.value_or(tpt::upstream::ConnectResult{});
}

// One connect through finish() alone on a fresh io_context.
tpt::upstream::ConnectResult connect_once(const HostPort& hp, Family family,
                                          std::chrono::milliseconds budget = 2s) {
    net::io_context io;
    tcp::socket socket(io);
    TestDeadline deadline(io, socket, budget);
    tpt::upstream::Dial dial(hp, family, 60s);
    return finish(io, socket, dial, deadline);
}

std::uint16_t closed_port() {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    return acc.local_endpoint().port();  // closed again when acc goes
}

// A listener that takes one connection into its queue and never accepts it: further SYNs are
// dropped, so a connect to it waits.
struct FullListener {
    explicit FullListener(net::io_context& io) : acc(io), queued(io) {
        acc.open(tcp::v4());
        acc.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
        acc.listen(0);
        queued.connect(acc.local_endpoint());
    }
    HostPort address() const { return {"127.0.0.1", acc.local_endpoint().port(), false}; }
    tcp::acceptor acc;
    tcp::socket queued;
};

TEST(UpstreamConnect, ConnectsToAListeningAddress) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    const auto port = acc.local_endpoint().port();
    const auto r = connect_once({"127.0.0.1", port, false}, Family::any);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(r.peer.port(), port);
}

// The connected socket is the relay's: non-blocking and close-on-exec from socket(), Nagle
// off, and usable by Asio's asynchronous operations (the CONNECT exchange uses them).
TEST(UpstreamConnect, ConnectedSocketIsReadyForTheRelay) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    tpt::upstream::Resolver resolver(io.get_executor());
    const HostPort hp{"127.0.0.1", acc.local_endpoint().port(), false};
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    ASSERT_TRUE(dial.at_once(socket, resolver));
    const int fd = socket.native_handle();
    EXPECT_NE(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    tcp::no_delay nodelay;
    socket.get_option(nodelay);
    EXPECT_TRUE(nodelay.value());

    tcp::socket server = acc.accept();
    std::size_t sent = 0;
    net::async_write(socket, net::buffer(std::string("ping")),
                     [&](const boost::system::error_code& ec, std::size_t n) {
                         EXPECT_FALSE(ec) << ec.message();
                         sent = n;
                     });
    io.run_for(5s);
    EXPECT_EQ(sent, 4U);
    std::string got(4, '\0');
    net::read(server, net::buffer(got));
    EXPECT_EQ(got, "ping");
}

// What the session's at-once path relies on: to a loopback listener the handshake is over
// when connect() returns, and the peer is the literal's address.
TEST(UpstreamDial, AtOnceConnectsToALoopbackListener) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    tpt::upstream::Resolver resolver(io.get_executor());
    const HostPort hp{"127.0.0.1", acc.local_endpoint().port(), false};
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    EXPECT_TRUE(dial.at_once(socket, resolver));
    EXPECT_TRUE(socket.is_open());
    EXPECT_EQ(dial.peer(), acc.local_endpoint());
}

// A name not in the cache needs the resolver: at_once() starts nothing.
TEST(UpstreamDial, AtOnceLeavesAnUncachedNameToFinish) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    const HostPort hp{"localhost", acc.local_endpoint().port(), false};
    tpt::upstream::Dial dial(hp, Family::v4, 60s);
    tpt::upstream::Resolver resolver(io.get_executor());
    EXPECT_FALSE(dial.at_once(socket, resolver));
    EXPECT_FALSE(socket.is_open());
    TestDeadline deadline(io, socket, 2s);
    const auto r = finish(io, socket, dial, deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
}

// A loopback handshake is over when connect() returns: no wait, so no deadline to arm.
TEST(UpstreamConnect, ConnectThatNeedsNoWaitArmsNoDeadline) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    TestDeadline deadline(io, socket, 300ms);
    const HostPort hp{"127.0.0.1", acc.local_endpoint().port(), false};
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    const auto r = finish(io, socket, dial, deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(deadline.arms, 0);
}

// A connect that waits arms the deadline, which ends it as connect_timeout.
TEST(UpstreamConnect, ConnectThatWaitsArmsTheDeadlineOnce) {
    net::io_context io;
    FullListener full(io);
    tcp::socket socket(io);
    TestDeadline deadline(io, socket, 300ms);
    const auto hp = full.address();
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    const auto start = std::chrono::steady_clock::now();
    const auto r = finish(io, socket, dial, deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::connect_timeout) << r.detail;
    EXPECT_EQ(deadline.arms, 1);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// An attempt at_once() left in progress is waited for on its own socket, not started again.
TEST(UpstreamDial, AttemptInProgressIsFinishedNotStartedAgain) {
    net::io_context io;
    FullListener full(io);
    tcp::socket socket(io);
    tpt::upstream::Resolver resolver(io.get_executor());
    const auto hp = full.address();
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    ASSERT_FALSE(dial.at_once(socket, resolver));
    ASSERT_TRUE(socket.is_open());  // in progress
    const int started_fd = socket.native_handle();
    TestDeadline deadline(io, socket, 300ms);
    const auto r = finish(io, socket, dial, deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::connect_timeout) << r.detail;
    EXPECT_EQ(deadline.arms, 1);
    EXPECT_EQ(deadline.armed_fd, started_fd);
}

// An attempt at_once() saw fail counts as the first address's: its error is reported.
TEST(UpstreamDial, AttemptThatFailedAtOnceIsReportedAsTheFirstAddress) {
    net::io_context io;
    tcp::socket socket(io);
    tpt::upstream::Resolver resolver(io.get_executor());
    const HostPort hp{"127.0.0.1", closed_port(), false};
    tpt::upstream::Dial dial(hp, Family::any, 60s);
    EXPECT_FALSE(dial.at_once(socket, resolver));
    TestDeadline deadline(io, socket, 2s);
    const auto r = finish(io, socket, dial, deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::connect_refused);
    EXPECT_NE(r.detail.find("127.0.0.1: "), std::string::npos) << r.detail;
}

TEST(UpstreamConnect, ResolvesLocalhost) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    const auto r = connect_once({"localhost", acc.local_endpoint().port(), false}, Family::v4);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
}

TEST(UpstreamConnect, RefusedPortIsConnectRefused) {
    const auto r = connect_once({"127.0.0.1", closed_port(), false}, Family::any);
    EXPECT_EQ(r.outcome, tpt::Outcome::connect_refused);
    EXPECT_NE(r.detail.find("127.0.0.1"), std::string::npos);
}

// No test resolves a name that is not in /etc/hosts: that would send a query to the machine's
// DNS server, and tests talk to loopback only.
TEST(UpstreamConnect, LiteralOfTheWrongFamilyIsDns) {
    const auto r = connect_once({"127.0.0.1", 443, false}, Family::v6);
    EXPECT_EQ(r.outcome, tpt::Outcome::dns);
}

// Resolves hp with resolver on io and returns the answer.
tpt::upstream::Resolver::Answer resolve_on(net::io_context& io, tpt::upstream::Resolver& resolver,
                                           const HostPort& hp, Family family) {
    std::optional<tpt::upstream::Resolver::Answer> answer;
    net::co_spawn(io, resolver.resolve(hp, family, 60s),
                  [&](std::exception_ptr e, tpt::upstream::Resolver::Answer a) {
                      EXPECT_FALSE(e);
                      answer = std::move(a);
                  });
    io.restart();
    io.run_for(10s);
    EXPECT_TRUE(answer.has_value());
    return answer.value_or(tpt::upstream::Resolver::Answer{});
}

TEST(Resolver, LiteralsAreAnsweredAtOnce) {
    net::io_context io;
    tpt::upstream::Resolver resolver(io.get_executor());
    const HostPort v4{"127.0.0.1", 8080, false};
    const auto first = resolver.first_at_once(v4, Family::any, 60s);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(*first, tcp::endpoint(net::ip::make_address("127.0.0.1"), 8080));
    EXPECT_FALSE(resolver.first_at_once(v4, Family::v6, 60s).has_value());
    const auto answer = resolver.at_once(v4, Family::v6, 60s);
    ASSERT_TRUE(answer.has_value());  // an answer, with no address and the reason
    EXPECT_TRUE(answer->endpoints.empty());
    EXPECT_FALSE(answer->error.empty());
}

// A name is answered at once only once resolved, per (host, port, family), while fresh.
TEST(Resolver, NamesAreAnsweredAtOnceFromTheCacheWhileFresh) {
    net::io_context io;
    tpt::upstream::Resolver resolver(io.get_executor());
    const HostPort name{"localhost", 8080, false};
    EXPECT_FALSE(resolver.first_at_once(name, Family::v4, 60s).has_value());
    EXPECT_FALSE(resolver.at_once(name, Family::v4, 60s).has_value());

    const auto resolved = resolve_on(io, resolver, name, Family::v4);
    ASSERT_FALSE(resolved.endpoints.empty()) << resolved.error;
    const auto first = resolver.first_at_once(name, Family::v4, 60s);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(*first, resolved.endpoints.front());
    const auto cached = resolver.at_once(name, Family::v4, 60s);
    ASSERT_TRUE(cached.has_value());
    EXPECT_EQ(cached->endpoints, resolved.endpoints);

    // Another port, another family, or a refresh interval already over: not cached.
    EXPECT_FALSE(resolver.first_at_once({"localhost", 8081, false}, Family::v4, 60s));
    EXPECT_FALSE(resolver.first_at_once(name, Family::any, 60s));
    EXPECT_FALSE(resolver.first_at_once(name, Family::v4, 0s));
}

// --- Pools (SPEC §13) ------------------------------------------------------------------------

// The config of one upstream `u` whose members are `servers` (YAML flow list items).
std::shared_ptr<const tpt::config::Config> pool_config(const std::string& servers,
                                                       const std::string& rest = "") {
    const std::string yaml =
        "servers: {s: {listen: \"127.0.0.1:1\", default: u}}\n"
        "upstream:\n  u: {servers: [" +
        servers + "]" + rest + "}\n";
    auto r = tpt::config::load(yaml, "pool.yaml",
                               [](std::string_view) { return std::optional<std::string>{}; });
    EXPECT_TRUE(r.has_value()) << (r ? std::string() : tpt::config::to_string(r.error()));
    return std::make_shared<const tpt::config::Config>(std::move(r).value());
}

struct PoolFixture {
    explicit PoolFixture(const std::string& servers, const std::string& rest = "")
        : config(pool_config(servers, rest)),
          pools(tpt::upstream::make_pools(*config, nullptr, *metrics)) {}
    const tpt::upstream::Pool& pool() const { return *pools.at(0); }
    tpt::upstream::Member& member(std::size_t i) const { return pool().member(i); }
    const tpt::config::HealthCheck& health() const { return config->upstreams.at(0).health; }
    std::vector<int> order() const {
        std::array<std::uint8_t, tpt::config::max_members> out{};
        const auto n = pool().order(out);
        return {out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)};
    }
    void fail(std::size_t i, int times) const {
        for (int k = 0; k < times; ++k) {
            member(i).failed(tpt::Outcome::connect_refused, health(), "test");
        }
    }

    std::unique_ptr<tpt::metrics::Metrics> metrics = tpt::metrics::make_metrics("test");
    std::shared_ptr<const tpt::config::Config> config;
    std::vector<tpt::upstream::PoolPtr> pools;
};

const std::string three = R"("tcp://a:1", "tcp://b:1", "tcp://c:1")";

// The servers list of members on 127.0.0.1 at `ports`.
std::string loopback_members(std::initializer_list<std::uint16_t> ports) {
    std::string out;
    for (const auto port : ports) {
        out += (out.empty() ? "\"" : ", \"") + std::string("tcp://127.0.0.1:") +
               std::to_string(port) + "\"";
    }
    return out;
}

TEST(PoolOrder, FailoverTriesMembersAsListedAndDownOnesLast) {
    const PoolFixture f(three, ", health: {interval: 1s, fail_after: 2}");
    EXPECT_EQ(f.order(), (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(f.order(), (std::vector<int>{0, 1, 2}));  // no rotation
    f.fail(0, 2);
    EXPECT_FALSE(f.member(0).up());
    EXPECT_EQ(f.order(), (std::vector<int>{1, 2, 0}));
    f.fail(1, 2);
    f.fail(2, 2);
    // All down: every member is still tried, as listed.
    EXPECT_EQ(f.order(), (std::vector<int>{0, 1, 2}));
}

TEST(PoolOrder, RoundRobinStartsAtTheNextMemberEachTime) {
    const PoolFixture f(three, ", strategy: round_robin, health: {interval: 1s, fail_after: 1}");
    std::array<int, 3> first{};
    for (int i = 0; i < 300; ++i) {
        const auto o = f.order();
        ASSERT_EQ(o.size(), 3U);
        ++first[static_cast<std::size_t>(o[0])];
    }
    EXPECT_EQ(first, (std::array<int, 3>{100, 100, 100}));
    f.fail(1, 1);
    for (int i = 0; i < 10; ++i) {
        const auto o = f.order();
        EXPECT_NE(o[0], 1);
        EXPECT_EQ(o[2], 1);
    }
}

TEST(PoolOrder, LeastConnectionsPrefersTheMemberWithFewerLiveTunnels) {
    const PoolFixture f(three, ", strategy: least_connections");
    tpt::upstream::Lease a1(f.member(0));
    tpt::upstream::Lease a2(f.member(0));
    tpt::upstream::Lease c1(f.member(2));
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(f.order(), (std::vector<int>{1, 2, 0})) << i;
    }
    a1.release();
    a2.release();
    EXPECT_EQ(f.member(0).live(), 0);
    tpt::upstream::Lease b1(f.member(1));
    tpt::upstream::Lease b2 = std::move(b1);  // moved: counted once
    EXPECT_EQ(f.member(1).live(), 1);
    EXPECT_EQ(f.order().front(), 0);
}

TEST(PoolHealth, FailAfterFailuresDownPassAfterSuccessesUp) {
    const PoolFixture f(R"("tcp://a:1")", ", health: {interval: 1s, fail_after: 3, pass_after: 2}");
    auto& m = f.member(0);
    f.fail(0, 2);
    m.succeeded(f.health());  // a success resets the failure count
    f.fail(0, 2);
    EXPECT_TRUE(m.up());
    f.fail(0, 1);
    EXPECT_FALSE(m.up());
    EXPECT_NE(
        f.metrics->serialize().find(R"(tpt_upstream_member_up{member="tcp://a:1",upstream="u"} 0)"),
        std::string::npos);
    m.succeeded(f.health());
    EXPECT_FALSE(m.up());
    f.fail(0, 1);  // a failure resets the success count
    m.succeeded(f.health());
    EXPECT_FALSE(m.up());
    m.succeeded(f.health());
    EXPECT_TRUE(m.up());
    const auto text = f.metrics->serialize();
    EXPECT_NE(text.find(R"(tpt_upstream_member_up{member="tcp://a:1",upstream="u"} 1)"),
              std::string::npos)
        << text;
    EXPECT_NE(
        text.find(
            R"(tpt_upstream_member_failures_total{member="tcp://a:1",reason="connect_refused",upstream="u"} 6)"),
        std::string::npos)
        << text;
}

TEST(PoolHealth, WithoutProbesADownMemberIsRetriedOnlyAfterAPause) {
    const PoolFixture f(R"("tcp://a:1", "tcp://b:1")", ", health: {fail_after: 1}");
    f.fail(0, 1);
    EXPECT_FALSE(f.member(0).up());
    EXPECT_FALSE(f.member(0).usable(f.health()));  // passive_retry not over yet
    EXPECT_EQ(f.order(), (std::vector<int>{1, 0}));
}

TEST(PoolHealth, MembersThatStayKeepTheirHealthAcrossAReload) {
    const PoolFixture f(R"("tcp://a:1", "tcp://b:1")", ", health: {interval: 1s, fail_after: 1}");
    f.fail(0, 1);
    const auto next = pool_config(R"("tcp://c:1", "tcp://a:1")", ", health: {interval: 1s}");
    const auto pools = tpt::upstream::make_pools(*next, &f.pools, *f.metrics);
    EXPECT_EQ(&pools.at(0)->member(1), &f.member(0));
    EXPECT_FALSE(pools.at(0)->member(1).up());
    EXPECT_TRUE(pools.at(0)->member(0).up());
    EXPECT_EQ(pools.at(0)->member(0).url(), "tcp://c:1");
}

// The pool's walk on loopback: a member that swallows SYNs costs only its share of the
// deadline, a refusing one nothing, and the connection ends on a listening member.
TEST(PoolDial, AFailingMemberHandsOverToTheNextWithinOneDeadline) {
    net::io_context io;
    const FullListener blackhole(io);
    tcp::acceptor live(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    const auto servers =
        loopback_members({blackhole.address().port, closed_port(), live.local_endpoint().port()});
    const PoolFixture f(servers, ", health: {interval: 1s, fail_after: 1}");
    tcp::socket socket(io);
    TestDeadline deadline(io, socket, 3s);
    tpt::upstream::Dial dial(f.pool(), 60s, false);
    const auto start = tpt::runtime::Clock::now();
    const auto r = finish(io, socket, dial, deadline);
    const auto took = tpt::runtime::Clock::now() - start;
    ASSERT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(r.peer.port(), live.local_endpoint().port());
    // The blackholed member had a third of 3 s.
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 1500ms);
    EXPECT_FALSE(f.member(0).up());
    EXPECT_FALSE(f.member(1).up());
    EXPECT_TRUE(f.member(2).up());
    // The next connection goes straight to the live member.
    tcp::socket again(io);
    tpt::upstream::Dial next(f.pool(), 60s, false);
    EXPECT_TRUE(next.at_once(again, tpt::upstream::Resolver(io.get_executor())));
    EXPECT_EQ(next.peer().port(), live.local_endpoint().port());
}

TEST(PoolDial, AProxyThatFailsTheConnectExchangeHandsOverToTheNext) {
    net::io_context io;
    tcp::acceptor first(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::acceptor second(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    const auto servers =
        loopback_members({first.local_endpoint().port(), second.local_endpoint().port()});
    const PoolFixture f(servers, ", health: {interval: 1s, fail_after: 1}");
    tcp::socket socket(io);
    TestDeadline deadline(io, socket, 3s);
    tpt::upstream::Dial dial(f.pool(), 60s, true);
    auto r = finish(io, socket, dial, deadline);
    ASSERT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(r.peer.port(), first.local_endpoint().port());
    // A proxy that answered with a status is not the member's fault: no next member.
    EXPECT_FALSE(dial.proxied(tpt::Outcome::proxy_status, "HTTP/1.1 403 Forbidden"));
    EXPECT_TRUE(f.member(0).up());
    // No HTTP answer: a failure, and the next member is left to try.
    EXPECT_TRUE(dial.proxied(tpt::Outcome::proxy_protocol, "not HTTP"));
    EXPECT_FALSE(f.member(0).up());
    r = finish(io, socket, dial, deadline);
    ASSERT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(r.peer.port(), second.local_endpoint().port());
    EXPECT_FALSE(dial.proxied(tpt::Outcome::proxy_protocol, "not HTTP"));  // none left
}

}  // namespace
