#include <memory>
#include <string>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/server_set.hpp>

#include "support.hpp"

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::test::eventually;
using tpt::test::ReservedPort;

// A ServerSet on one running worker; apply() loads YAML and applies it as a reload does.
class Set {
public:
    Set() { runtime_.start(); }
    ~Set() {
        set_.close_all();
        set_.abort_all();
        EXPECT_TRUE(eventually([this] { return set_.live() == 0; }));
        runtime_.stop();
    }
    Set(const Set&) = delete;
    Set& operator=(const Set&) = delete;

    tpt::Result<tpt::server_set::Applied> apply(const std::string& yaml) {
        auto cfg = tpt::config::load(yaml, "set.yaml",
                                     [](std::string_view) { return std::optional<std::string>{}; });
        if (!cfg) {
            ADD_FAILURE() << tpt::config::to_string(cfg.error());
            return tpt::Error{"bad config"};
        }
        auto snap = tpt::snapshot::build(std::make_shared<const tpt::config::Config>(*cfg), "sha",
                                         current_.get(), *metrics_,
                                         std::make_shared<tpt::admin::Handlers>());
        auto applied = set_.apply(snap);
        if (applied) {
            current_ = snap;
        }
        return applied;
    }
    tpt::server_set::ServerSet& set() { return set_; }
    std::optional<double> metric(const std::string& series) {
        return tpt::test::metric(metrics_->serialize(), series);
    }

private:
    tpt::runtime::Runtime runtime_{1};
    std::unique_ptr<tpt::metrics::Metrics> metrics_ = tpt::metrics::make_metrics("t");
    tpt::server_set::ServerSet set_{runtime_};
    tpt::snapshot::SnapshotPtr current_;
};

std::string echo_server(const std::string& name, const ReservedPort& port,
                        const std::string& extra = "") {
    return "  " + name + ": { listen: \"" + port.address() + "\", default: echo" + extra + " }\n";
}

// A client of the test (blocking) connected to `port`.
struct Client {
    explicit Client(const ReservedPort& port) : socket(io) {
        socket.connect(tcp::endpoint(tpt::test::loopback, port.port()));
        tpt::test::bound_reads(socket);
    }
    // Sends `text` and reads as many bytes back.
    std::string echo(const std::string& text) {
        net::write(socket, net::buffer(text));
        std::string back(text.size(), '\0');
        boost::system::error_code ec;
        net::read(socket, net::buffer(back), ec);
        return ec ? "error: " + ec.message() : back;
    }
    net::io_context io;
    tcp::socket socket;
};

bool refused(const ReservedPort& port) {
    net::io_context io;
    tcp::socket s(io);
    boost::system::error_code ec;
    s.connect(tcp::endpoint(tpt::test::loopback, port.port()), ec);
    return ec == net::error::connection_refused;
}

TEST(ServerSet, AppliedListenersAcceptAndServe) {
    Set set;
    const ReservedPort p;
    const auto applied = set.apply("servers:\n" + echo_server("a", p));
    ASSERT_TRUE(applied) << applied.error().message;
    EXPECT_EQ(applied->added_listen, std::vector<std::string>{p.address()});
    EXPECT_TRUE(applied->removed_listen.empty());
    Client c(p);
    EXPECT_EQ(c.echo("ping"), "ping");
    EXPECT_EQ(set.set().live(), 1U);
    EXPECT_EQ(set.metric(R"(tpt_active_connections{listen=")" + p.address() + R"(",name="a"})"),
              1.0);
}

// SPEC §4.1: at maxclients a new connection is closed at once and counted.
TEST(ServerSet, AtMaxclientsNewConnectionsAreClosedAndCounted) {
    Set set;
    const ReservedPort p;
    ASSERT_TRUE(set.apply("servers:\n" + echo_server("a", p, ", maxclients: 1")));
    Client first(p);
    ASSERT_EQ(first.echo("1"), "1");
    Client second(p);
    EXPECT_EQ(tpt::test::read_to_eof(second.socket, true), "");
    EXPECT_EQ(set.metric(R"(tpt_maxclients_rejected_total{name="a"})"), 1.0);
    EXPECT_EQ(first.echo("still"), "still");
}

// SPEC §7: a reload that removes a listen address closes its listener, never its tunnels; a
// kept address keeps its socket.
TEST(ServerSet, ReloadClosesRemovedListenersButNotTheirTunnels) {
    Set set;
    const ReservedPort kept;
    const ReservedPort removed;
    const ReservedPort added;
    ASSERT_TRUE(set.apply("servers:\n" + echo_server("k", kept) + echo_server("r", removed)));
    Client live(removed);
    ASSERT_EQ(live.echo("before"), "before");
    Client on_kept(kept);
    ASSERT_EQ(on_kept.echo("x"), "x");

    const auto applied = set.apply("servers:\n" + echo_server("k", kept) + echo_server("n", added));
    ASSERT_TRUE(applied) << applied.error().message;
    EXPECT_EQ(applied->added_listen, std::vector<std::string>{added.address()});
    EXPECT_EQ(applied->removed_listen, std::vector<std::string>{removed.address()});
    EXPECT_TRUE(eventually([&] { return refused(removed); }));
    EXPECT_EQ(live.echo("after"), "after");
    EXPECT_EQ(on_kept.echo("y"), "y");
    Client fresh(added);
    EXPECT_EQ(fresh.echo("new"), "new");
}

// SPEC §7: a bind failure of an added address fails the reload as a whole: nothing changed.
TEST(ServerSet, BindFailureOfOneAddressChangesNothing) {
    Set set;
    const ReservedPort first;
    const ReservedPort free_one;
    ASSERT_TRUE(set.apply("servers:\n" + echo_server("a", first)));
    net::io_context io;
    tcp::acceptor taken(io, tcp::endpoint(tpt::test::loopback, 0));  // no SO_REUSEPORT
    const std::string taken_address = "127.0.0.1:" + std::to_string(taken.local_endpoint().port());

    const auto applied =
        set.apply("servers:\n" + echo_server("a", first) + echo_server("b", free_one) +
                  "  c: { listen: \"" + taken_address + "\", default: echo }\n");
    ASSERT_FALSE(applied);
    EXPECT_NE(applied.error().message.find(taken_address), std::string::npos)
        << applied.error().message;
    EXPECT_EQ(set.set().bound(), std::vector<std::string>{first.address()});
    EXPECT_TRUE(refused(free_one));
    Client c(first);
    EXPECT_EQ(c.echo("ok"), "ok");
}

}  // namespace
