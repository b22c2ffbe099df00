#include <chrono>
#include <fcntl.h>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

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

}  // namespace
