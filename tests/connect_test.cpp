#include <optional>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/connect.hpp>

#include "support.hpp"

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::Outcome;
using tpt::test::TestDeadline;

// A proxy on loopback that reads one request head and answers `answer` (nothing when empty,
// then waits for the client to close). What it read is kept for the test.
class Proxy {
public:
    explicit Proxy(std::string answer)
        : acceptor_(io_, tcp::endpoint(tpt::test::loopback, 0)), answer_(std::move(answer)) {
        thread_ = std::thread([this] { serve(); });
    }
    ~Proxy() { thread_.join(); }
    Proxy(const Proxy&) = delete;
    Proxy& operator=(const Proxy&) = delete;

    tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
    std::string request() {
        thread_.join();
        thread_ = std::thread([] {});
        return request_;
    }

private:
    void serve() {
        tcp::socket s = acceptor_.accept();
        boost::system::error_code ec;
        net::read_until(s, net::dynamic_buffer(request_), "\r\n\r\n", ec);
        if (!answer_.empty()) {
            net::write(s, net::buffer(answer_), ec);
        }
        std::string rest;
        net::read(s, net::dynamic_buffer(rest), ec);  // until the client closes
    }

    net::io_context io_;
    tcp::acceptor acceptor_;
    std::string answer_;
    std::string request_;
    std::thread thread_;
};

// Runs one handshake against `proxy` with `budget`; the socket is closed afterwards, which
// ends the proxy's session.
struct Run {
    tpt::connect::HandshakeResult result;
    int arms = 0;
};
Run handshake(Proxy& proxy, const std::vector<tpt::config::Header>& headers,
              std::chrono::milliseconds budget = 2s) {
    net::io_context io;
    tcp::socket socket(io);
    socket.connect(proxy.endpoint());
    TestDeadline deadline(io, socket, budget);
    std::optional<tpt::connect::HandshakeResult> result;
    net::co_spawn(io, tpt::connect::handshake(socket, "www.example.com:443", headers, deadline),
                  [&](std::exception_ptr e, tpt::connect::HandshakeResult r) {
                      EXPECT_FALSE(e);
                      result = std::move(r);
                  });
    io.restart();
    for (int i = 0; i < 10000 && !result; ++i) {
        io.run_one_for(10ms);  // until the coroutine ended: a deadline left armed is not waited for
    }
    EXPECT_TRUE(result.has_value());
    boost::system::error_code ignored;
    socket.close(ignored);
    return {result.value_or(tpt::connect::HandshakeResult{}), deadline.arms};
}

TEST(Handshake, SendsTheConnectRequestWithTheConfiguredHeaders) {
    Proxy proxy("HTTP/1.1 200 Connection established\r\n\r\n");
    const auto run = handshake(proxy, {{"Proxy-Authorization", "Basic dTpw"}});
    EXPECT_EQ(run.result.outcome, Outcome::ok);
    EXPECT_EQ(run.result.status_code, 200U);
    EXPECT_EQ(proxy.request(),
              "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n"
              "Proxy-Authorization: Basic dTpw\r\n\r\n");
    EXPECT_EQ(run.arms, 1);  // armed before the exchange waits
}

// RFC 9110 §9.3.6: bytes after a 2xx head belong to the tunnel.
TEST(Handshake, BytesAfterTheHeadAreLeftForTheClient) {
    Proxy proxy("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    const auto run = handshake(proxy, {});
    EXPECT_EQ(run.result.outcome, Outcome::ok);
    EXPECT_EQ(std::string(run.result.leftover.begin(), run.result.leftover.end()), "hello");
}

TEST(Handshake, NonSuccessIsProxyStatusWithTheAuthSchemeOnly) {
    Proxy proxy(
        "HTTP/1.1 407 Proxy Authentication Required\r\n"
        "Proxy-Authenticate: Basic realm=\"corp\"\r\n\r\n");
    const auto run = handshake(proxy, {{"Proxy-Authorization", "Basic secret"}});
    EXPECT_EQ(run.result.outcome, Outcome::proxy_status);
    EXPECT_EQ(run.result.status_code, 407U);
    EXPECT_EQ(run.result.status_line, "HTTP/1.1 407 Proxy Authentication Required");
    EXPECT_EQ(run.result.auth_scheme, "Basic");
}

TEST(Handshake, AnAnswerThatIsNotHttpIsProxyProtocol) {
    Proxy proxy("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    const auto run = handshake(proxy, {});
    EXPECT_EQ(run.result.outcome, Outcome::proxy_protocol);
}

// The deadline's owner closes the socket when it passes: the exchange ends as connect_timeout.
TEST(Handshake, ASilentProxyEndsAtTheDeadline) {
    Proxy proxy("");
    const auto start = std::chrono::steady_clock::now();
    const auto run = handshake(proxy, {}, 200ms);
    EXPECT_EQ(run.result.outcome, Outcome::connect_timeout);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(took, 190ms);
    EXPECT_LT(took, 2s);
}

}  // namespace
