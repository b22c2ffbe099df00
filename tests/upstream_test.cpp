#include <chrono>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <tpt/upstream.hpp>

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::address::Family;
using tpt::address::HostPort;

// Runs one connect on a fresh io_context and returns its result.
tpt::upstream::ConnectResult connect_once(const HostPort& hp, Family family,
                                          std::chrono::milliseconds budget = 2s) {
    net::io_context io;
    tpt::upstream::Resolver resolver(io.get_executor());
    tcp::socket socket(io);
    std::optional<tpt::upstream::ConnectResult> result;
    net::co_spawn(io,
                  tpt::upstream::connect(socket, resolver, hp, family, 60s,
                                         tpt::runtime::Clock::now() + budget),
                  [&](std::exception_ptr e, tpt::upstream::ConnectResult r) {
                      EXPECT_FALSE(e);
                      result = std::move(r);
                  });
    io.run_for(10s);
    EXPECT_TRUE(result.has_value());
    return result.value_or(tpt::upstream::ConnectResult{});
}

std::uint16_t closed_port() {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    return acc.local_endpoint().port();  // closed again when acc goes
}

TEST(UpstreamConnect, ConnectsToAListeningAddress) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    const auto port = acc.local_endpoint().port();
    const auto r = connect_once({"127.0.0.1", port, false}, Family::any);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(r.peer.port(), port);
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

}  // namespace
