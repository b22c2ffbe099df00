#include <chrono>
#include <fcntl.h>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/upstream.hpp>

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::address::Family;
using tpt::address::HostPort;

// Runs one upstream::connect of `socket` on `io` until it ends and returns its result.
struct ConnectArgs {
    Family family = Family::any;
    std::chrono::milliseconds budget = 2s;
    tpt::upstream::BeforeWait* before_wait = nullptr;
    const tpt::upstream::FirstAttempt* first = nullptr;
};
tpt::upstream::ConnectResult run_connect(net::io_context& io, tcp::socket& socket,
                                         const HostPort& hp, const ConnectArgs& args) {
    tpt::upstream::Resolver resolver(io.get_executor());
    std::optional<tpt::upstream::ConnectResult> result;
    // hp and args outlive the coroutine: this function returns only once it has ended.
    net::co_spawn(io,
                  tpt::upstream::connect(socket, resolver, hp, args.family, 60s,
                                         tpt::runtime::Clock::now() + args.budget, args.before_wait,
                                         args.first),
                  [&](std::exception_ptr e, tpt::upstream::ConnectResult r) {
                      EXPECT_FALSE(e);
                      result = std::move(r);
                  });
    io.restart();
    io.run_for(10s);
    EXPECT_TRUE(result.has_value());
    return result.value_or(tpt::upstream::ConnectResult{});
}

// One connect on a fresh io_context.
tpt::upstream::ConnectResult connect_once(const HostPort& hp, Family family,
                                          std::chrono::milliseconds budget = 2s) {
    net::io_context io;
    tcp::socket socket(io);
    return run_connect(io, socket, hp, {.family = family, .budget = budget});
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

// The connected socket is the relay's: non-blocking and close-on-exec from socket(), Nagle
// off, and usable by Asio's asynchronous operations (the CONNECT exchange uses them).
TEST(UpstreamConnect, ConnectedSocketIsReadyForTheRelay) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    const auto result =
        run_connect(io, socket, {"127.0.0.1", acc.local_endpoint().port(), false}, {});
    ASSERT_EQ(result.outcome, tpt::Outcome::ok) << result.detail;
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
    io.restart();
    io.run_for(5s);
    EXPECT_EQ(sent, 4U);
    std::string got(4, '\0');
    net::read(server, net::buffer(got));
    EXPECT_EQ(got, "ping");
}

// Arms a deadline as the session does: closes the socket when it passes.
struct CountingDeadline final : tpt::upstream::BeforeWait {
    CountingDeadline(net::io_context& io, tcp::socket& s) : timer(io), socket(s) {}
    void operator()() override {
        ++calls;
        timer.expires_after(300ms);
        timer.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) {
                socket.close();
            }
        });
    }
    net::steady_timer timer;
    tcp::socket& socket;
    int calls = 0;
};

tpt::upstream::ConnectResult connect_with(net::io_context& io, tcp::socket& socket,
                                          std::uint16_t port, CountingDeadline& deadline) {
    return run_connect(io, socket, {"127.0.0.1", port, false},
                       {.budget = 300ms, .before_wait = &deadline});
}

// A loopback handshake is over when connect() returns: no wait, so no deadline to arm.
TEST(UpstreamConnect, ConnectThatNeedsNoWaitArmsNoDeadline) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    CountingDeadline deadline(io, socket);
    const auto r = connect_with(io, socket, acc.local_endpoint().port(), deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::ok) << r.detail;
    EXPECT_EQ(deadline.calls, 0);
}

// A listener whose accept queue is full drops SYNs: the connect waits, under the deadline
// armed for it, and the deadline ends it as connect_timeout.
TEST(UpstreamConnect, ConnectThatWaitsArmsTheDeadlineOnce) {
    net::io_context io;
    tcp::acceptor acc(io);
    acc.open(tcp::v4());
    acc.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acc.listen(0);  // room for one connection, never accepted
    tcp::socket first(io);
    first.connect(acc.local_endpoint());
    tcp::socket socket(io);
    CountingDeadline deadline(io, socket);
    const auto start = std::chrono::steady_clock::now();
    const auto r = connect_with(io, socket, acc.local_endpoint().port(), deadline);
    EXPECT_EQ(r.outcome, tpt::Outcome::connect_timeout) << r.detail;
    EXPECT_EQ(deadline.calls, 1);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// What the session's at-once path relies on: on loopback the handshake is over when
// start_connect() returns.
TEST(StartConnect, ToALoopbackListenerIsOverAtOnce) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    const auto started = tpt::upstream::start_connect(socket, acc.local_endpoint());
    EXPECT_FALSE(started.in_progress);
    EXPECT_FALSE(started.ec) << started.ec.message();
    EXPECT_TRUE(socket.is_open());
}

TEST(StartConnect, ToAClosedPortFailsAtOnce) {
    net::io_context io;
    tcp::socket socket(io);
    const auto started = tpt::upstream::start_connect(
        socket, tcp::endpoint(net::ip::make_address("127.0.0.1"), closed_port()));
    EXPECT_FALSE(started.in_progress);
    EXPECT_EQ(started.ec, net::error::connection_refused) << started.ec.message();
}

// An attempt the caller left in progress is waited for on its own socket, not started again.
TEST(UpstreamConnect, FirstAttemptInProgressIsFinishedNotStartedAgain) {
    net::io_context io;
    tcp::acceptor acc(io);
    acc.open(tcp::v4());
    acc.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acc.listen(0);  // room for one connection, never accepted: further SYNs are dropped
    tcp::socket queued(io);
    queued.connect(acc.local_endpoint());
    tcp::socket socket(io);
    const tpt::upstream::FirstAttempt first{
        acc.local_endpoint(), tpt::upstream::start_connect(socket, acc.local_endpoint())};
    ASSERT_TRUE(first.started.in_progress);
    const int started_fd = socket.native_handle();
    CountingDeadline deadline(io, socket);
    int waited_fd = -1;
    struct Recorder final : tpt::upstream::BeforeWait {
        CountingDeadline& inner;
        tcp::socket& socket;
        int& fd;
        Recorder(CountingDeadline& d, tcp::socket& s, int& f) : inner(d), socket(s), fd(f) {}
        void operator()() override {
            fd = socket.native_handle();
            inner();
        }
    } recorder(deadline, socket, waited_fd);
    const auto result = run_connect(io, socket, {"127.0.0.1", acc.local_endpoint().port(), false},
                                    {.budget = 300ms, .before_wait = &recorder, .first = &first});
    EXPECT_EQ(result.outcome, tpt::Outcome::connect_timeout) << result.detail;
    EXPECT_EQ(deadline.calls, 1);
    EXPECT_EQ(waited_fd, started_fd);
}

// An attempt the caller saw fail counts as the first address's: its error is reported.
TEST(UpstreamConnect, FirstAttemptThatFailedIsReportedAsTheFirstAddress) {
    net::io_context io;
    const tcp::endpoint dead(net::ip::make_address("127.0.0.1"), closed_port());
    tcp::socket socket(io);
    const tpt::upstream::FirstAttempt first{dead, tpt::upstream::start_connect(socket, dead)};
    ASSERT_TRUE(first.started.ec);
    const auto result =
        run_connect(io, socket, {"127.0.0.1", dead.port(), false}, {.first = &first});
    EXPECT_EQ(result.outcome, tpt::Outcome::connect_refused);
    EXPECT_NE(result.detail.find("127.0.0.1: "), std::string::npos) << result.detail;
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
