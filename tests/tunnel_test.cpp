#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/tunnel.hpp>

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// A connected loopback pair: `a` is ours (the peer side), `b` goes into the tunnel.
struct Pair {
    tcp::socket a;
    tcp::socket b;
};

Pair make_pair(net::io_context& io) {
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket a(io);
    a.connect(acc.local_endpoint());
    tcp::socket b = acc.accept();
    return {std::move(a), std::move(b)};
}

// The tunnel runs on a worker's io_context on its own thread; the test talks to the outer
// sockets synchronously from this thread.
class RelayHarness {
public:
    RelayHarness() : worker_(0) {
        client_ = make_pair(worker_.context());
        upstream_ = make_pair(worker_.context());
        net::co_spawn(worker_.context(),
                      tpt::tunnel::relay(client_.b, upstream_.b, worker_, counters_),
                      [this](std::exception_ptr e, tpt::Outcome o) {
                          ASSERT_FALSE(e);
                          outcome_ = o;
                      });
        thread_ = std::thread([this] { worker_.context().run(); });
    }
    ~RelayHarness() {
        worker_.context().stop();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    tcp::socket& client() { return client_.a; }
    tcp::socket& upstream() { return upstream_.a; }

    // Waits for the relay to end; the outcome is read after the worker thread stopped.
    std::optional<tpt::Outcome> finish() {
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (!worker_.context().stopped() && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(5ms);  // the worker stops when the relay ends
        }
        worker_.context().stop();
        if (thread_.joinable()) {
            thread_.join();
        }
        return outcome_;
    }
    const tpt::tunnel::Counters& counters() const { return counters_; }

private:
    tpt::runtime::Worker worker_;
    Pair client_{tcp::socket(worker_.context()), tcp::socket(worker_.context())};
    Pair upstream_{tcp::socket(worker_.context()), tcp::socket(worker_.context())};
    tpt::tunnel::Counters counters_;
    std::optional<tpt::Outcome> outcome_;
    std::thread thread_;
};

std::string read_to_eof(tcp::socket& s) {
    std::string out;
    boost::system::error_code ec;
    net::read(s, net::dynamic_buffer(out), ec);
    EXPECT_EQ(ec, net::error::eof);
    return out;
}

TEST(Relay, PassesBytesBothWaysAndCountsThem) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("hello upstream")));
    std::string got(14, '\0');
    net::read(h.upstream(), net::buffer(got));
    EXPECT_EQ(got, "hello upstream");
    net::write(h.upstream(), net::buffer(std::string("hi")));
    std::string back(2, '\0');
    net::read(h.client(), net::buffer(back));
    EXPECT_EQ(back, "hi");
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "");
    h.upstream().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.client()), "");
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_upstream, 14U);
    EXPECT_EQ(h.counters().to_client, 2U);
}

TEST(Relay, HalfCloseKeepsTheOtherDirectionFlowing) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("question")));
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "question");  // the FIN was passed on
    // After the client's FIN, a large answer still reaches it whole.
    const std::string answer(1 << 20, 'x');
    std::thread writer([&] {
        net::write(h.upstream(), net::buffer(answer));
        h.upstream().shutdown(tcp::socket::shutdown_send);
    });
    EXPECT_EQ(read_to_eof(h.client()), answer);
    writer.join();
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_client, answer.size());
}

TEST(Relay, UpstreamResetClosesBothAndIsBlamedOnTheUpstream) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("x")));
    char c{};
    net::read(h.upstream(), net::buffer(&c, 1));
    h.upstream().set_option(net::socket_base::linger(true, 0));
    h.upstream().close();  // RST
    boost::system::error_code ec;
    std::string rest;
    net::read(h.client(), net::dynamic_buffer(rest), ec);
    EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
    EXPECT_EQ(h.finish(), tpt::Outcome::upstream_reset);
}

TEST(Relay, ClientResetIsBlamedOnTheClient) {
    RelayHarness h;
    h.client().set_option(net::socket_base::linger(true, 0));
    h.client().close();
    boost::system::error_code ec;
    std::string rest;
    net::read(h.upstream(), net::dynamic_buffer(rest), ec);
    EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
    EXPECT_EQ(h.finish(), tpt::Outcome::client_reset);
}

}  // namespace
