#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/log.hpp>
#include <tpt/session.hpp>

#include "support.hpp"

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using tpt::test::eventually;
using tpt::test::read_to_eof;

std::string hello_bytes(const std::string& name) {
    std::ifstream in(std::string{TPT_TEST_DATA} + "/hello/" + name + ".bin", std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A peer on loopback that serves one connection on its own thread with `serve`.
class Peer {
public:
    explicit Peer(std::function<void(tcp::socket&)> serve)
        : acceptor_(io_, tcp::endpoint(tpt::test::loopback, 0)) {
        thread_ = std::thread([this, serve = std::move(serve)] {
            tcp::socket s = acceptor_.accept();
            serve(s);
        });
    }
    ~Peer() { thread_.join(); }
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;
    std::string url() const {
        return "tcp://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
    }

private:
    net::io_context io_;
    tcp::acceptor acceptor_;
    std::thread thread_;
};

// Reads until EOF, then answers "got:" and what it read, and closes.
void answer_what_came(tcp::socket& s) {
    const auto got = read_to_eof(s);
    net::write(s, net::buffer("got:" + got));
}

// Sessions of one config on one worker thread, fed by connections the test makes; the
// access log lines they write are kept.
class Sessions {
public:
    explicit Sessions(const std::string& yaml)
        : metrics_(tpt::metrics::make_metrics("t")), ctx_(worker_) {
        auto cfg = tpt::config::load(yaml, "session.yaml",
                                     [](std::string_view) { return std::optional<std::string>{}; });
        if (!cfg) {
            throw std::invalid_argument(tpt::config::to_string(cfg.error()));
        }
        snap_ = tpt::snapshot::build(std::make_shared<const tpt::config::Config>(*cfg), "aa",
                                     nullptr, *metrics_, std::make_shared<tpt::admin::Handlers>());
        tpt::log::configure(tpt::config::LogLevel::info, tpt::config::LogFormat::text);
        tpt::log::set_line_hook_for_tests([this](std::string_view line) {
            const std::lock_guard lock(mutex_);
            lines_.emplace_back(line);
        });
        thread_ = std::thread([this] { worker_.context().run(); });
    }
    ~Sessions() {
        EXPECT_TRUE(eventually([this] { return worker_.sessions().load() == 0; }))
            << "a session was not counted out";
        guard_.reset();
        worker_.context().stop();
        thread_.join();
        tpt::log::set_line_hook_for_tests({});
    }
    Sessions(const Sessions&) = delete;
    Sessions& operator=(const Sessions&) = delete;

    // A connection of the test's, accepted on the worker and handed to a session, as the
    // accept loop does.
    tcp::socket connect() {
        tcp::socket client(io_);
        client.connect(acceptor_.local_endpoint());
        tpt::test::bound_reads(client);
        std::promise<void> started;
        net::post(worker_.context(), [this, &started] {
            tcp::endpoint peer;
            tcp::socket s = acceptor_.accept(peer);
            const auto& listen = *snap_->servers[0].listener_metrics.begin();
            auto admission = tpt::snapshot::Admission::admit(*snap_, 0, listen, worker_.sessions());
            EXPECT_TRUE(admission.has_value());
            tpt::session::start(std::move(s), peer, {}, snap_, 0, std::move(*admission), ctx_);
            started.set_value();
        });
        started.get_future().wait();
        return client;
    }

    // The access line of the n-th finished session (1-based), once it is written.
    std::string access(std::size_t n = 1) {
        std::string line;
        EXPECT_TRUE(eventually([&] {
            const std::lock_guard lock(mutex_);
            std::size_t seen = 0;
            for (const auto& l : lines_) {
                if (l.find(" access ") != std::string::npos && ++seen == n) {
                    line = l;
                    return true;
                }
            }
            return false;
        })) << "no access line #"
            << n;
        return line;
    }
    std::string all_lines() {
        const std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& l : lines_) {
            out += l + "\n";
        }
        return out;
    }
    std::optional<double> metric(const std::string& series) {
        return tpt::test::metric(metrics_->serialize(), series);
    }
    tpt::runtime::Worker& worker() { return worker_; }

private:
    std::unique_ptr<tpt::metrics::Metrics> metrics_;
    tpt::snapshot::SnapshotPtr snap_;
    tpt::runtime::Worker worker_;
    tpt::session::WorkerContext ctx_;
    tcp::acceptor acceptor_{worker_.context(), tcp::endpoint(tpt::test::loopback, 0)};
    net::executor_work_guard<net::io_context::executor_type> guard_{
        worker_.context().get_executor()};
    net::io_context io_;  // the test's own sockets, used blocking
    std::thread thread_;
    std::mutex mutex_;
    std::vector<std::string> lines_;
};

std::string plain(const std::string& upstream_url, const std::string& extra = "") {
    return "servers:\n  s: { listen: \"127.0.0.1:0\", default: up" + extra +
           " }\nupstream:\n  up: \"" + upstream_url + "\"\n";
}

// SPEC §4.6: a FIN is passed on as a half-close and the other direction keeps flowing; one
// access line with the byte counts; the admission is given back.
TEST(Session, PlainServerRelaysBothWaysAndHalfCloses) {
    Peer up(answer_what_came);
    Sessions sessions(plain(up.url()));
    auto client = sessions.connect();
    net::write(client, net::buffer(std::string("hello")));
    client.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(client), "got:hello");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=ok"), std::string::npos) << line;
    EXPECT_NE(line.find("bytes_to_upstream=5"), std::string::npos) << line;
    EXPECT_NE(line.find("bytes_to_client=9"), std::string::npos) << line;
    EXPECT_NE(line.find("route=default"), std::string::npos) << line;
}

// SPEC §4.2, §4.6: a ClientHello in pieces is routed by its SNI and reaches the upstream
// unchanged, first.
TEST(Session, HelloInPiecesIsRoutedBySniAndForwardedUnchanged) {
    const auto hello = hello_bytes("openssl_tls13_sni");
    ASSERT_GT(hello.size(), 100U);
    std::string seen;
    Peer up([&seen](tcp::socket& s) { seen = read_to_eof(s); });
    Sessions sessions(
        "servers:\n  s:\n    listen: \"127.0.0.1:0\"\n    tls: true\n"
        "    sni: { \"*.example.com\": up }\nupstream:\n  up: \"" +
        up.url() + "\"\n");
    auto client = sessions.connect();
    net::write(client, net::buffer(hello.substr(0, 7)));
    std::this_thread::sleep_for(20ms);  // two segments for the parser, not a synchronisation
    net::write(client, net::buffer(hello.substr(7)));
    client.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(client), "");
    const auto line = sessions.access();
    EXPECT_NE(line.find("sni=tls13.example.com"), std::string::npos) << line;
    EXPECT_NE(line.find("route=*.example.com"), std::string::npos) << line;
    client.close();
    EXPECT_TRUE(eventually([&] { return seen.size() == hello.size(); }));
    EXPECT_EQ(seen, hello);
}

TEST(Session, UnmatchedSniGoesToTheDefaultBan) {
    Sessions sessions(
        "servers:\n  s: { listen: \"127.0.0.1:0\", tls: true, sni: { a.example.org: echo } }\n");
    auto client = sessions.connect();
    net::write(client, net::buffer(hello_bytes("python_sni")));
    EXPECT_EQ(read_to_eof(client, true), "");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=ban"), std::string::npos) << line;
    EXPECT_NE(line.find("route=default"), std::string::npos) << line;
}

TEST(Session, SilentClientIsClosedAtTheHelloTimeout) {
    Sessions sessions(
        "servers:\n  s: { listen: \"127.0.0.1:0\", tls: true, client_hello_timeout: 200ms,"
        " default: echo }\n");
    const auto start = std::chrono::steady_clock::now();
    auto client = sessions.connect();
    EXPECT_EQ(read_to_eof(client, true), "");
    EXPECT_GE(std::chrono::steady_clock::now() - start, 190ms);
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=client_hello_timeout"), std::string::npos) << line;
    EXPECT_EQ(sessions.metric(R"(tpt_route_errors_total{reason="client_hello_timeout",)"
                              R"(route="default",server="s"})"),
              1.0);
}

// A proxy that checks the CONNECT head, answers 200 with early tunnel bytes, then echoes
// what comes through the tunnel with a prefix.
void connect_proxy(tcp::socket& s) {
    std::string head;
    net::read_until(s, net::dynamic_buffer(head), "\r\n\r\n");
    EXPECT_EQ(head,
              "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n"
              "Proxy-Authorization: Basic c2VjcmV0\r\n\r\n");
    net::write(s, net::buffer(std::string("HTTP/1.1 200 Connection established\r\n\r\nearly;")));
    answer_what_came(s);
}

constexpr const char* via_proxy =
    ", via: { target: \"www.example.com:443\", connect_timeout: 300ms,"
    " headers: { Proxy-Authorization: \"Basic c2VjcmV0\" } }";

TEST(Session, ThroughAProxyWithConnectAndItsEarlyBytes) {
    Peer proxy(connect_proxy);
    Sessions sessions(plain(proxy.url(), via_proxy));
    auto client = sessions.connect();
    net::write(client, net::buffer(std::string("data")));
    client.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(client), "early;got:data");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=ok"), std::string::npos) << line;
    EXPECT_NE(line.find("connect_target=www.example.com:443"), std::string::npos) << line;
}

// SPEC §4.5, §5: a refusal is logged with its status line and auth scheme, never a header.
TEST(Session, ProxyRefusalIsLoggedWithoutTheCredential) {
    Peer proxy([](tcp::socket& s) {
        std::string head;
        net::read_until(s, net::dynamic_buffer(head), "\r\n\r\n");
        net::write(s, net::buffer(std::string("HTTP/1.1 407 Auth\r\n"
                                              "Proxy-Authenticate: Basic realm=x\r\n\r\n")));
        read_to_eof(s, true);
    });
    Sessions sessions(plain(proxy.url(), via_proxy));
    auto client = sessions.connect();
    EXPECT_EQ(read_to_eof(client, true), "");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=proxy_status"), std::string::npos) << line;
    const auto log = sessions.all_lines();
    EXPECT_NE(log.find("proxy_authenticate=Basic"), std::string::npos) << log;
    EXPECT_EQ(log.find("c2VjcmV0"), std::string::npos) << log;
}

// The one deadline covers the CONNECT answer too (connect_timeout: 300ms above).
TEST(Session, SilentProxyEndsAtTheConnectTimeout) {
    Peer proxy([](tcp::socket& s) { read_to_eof(s, true); });
    Sessions sessions(plain(proxy.url(), via_proxy));
    const auto start = std::chrono::steady_clock::now();
    auto client = sessions.connect();
    EXPECT_EQ(read_to_eof(client, true), "");
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(took, 290ms);
    EXPECT_LT(took, 3s);
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=connect_timeout"), std::string::npos) << line;
}

TEST(Session, RefusedUpstreamIsConnectRefused) {
    std::uint16_t closed = 0;
    {
        net::io_context io;
        const tcp::acceptor a(io, tcp::endpoint(tpt::test::loopback, 0));
        closed = a.local_endpoint().port();
    }
    Sessions sessions(plain("tcp://127.0.0.1:" + std::to_string(closed)));
    auto client = sessions.connect();
    EXPECT_EQ(read_to_eof(client, true), "");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=connect_refused"), std::string::npos) << line;
}

TEST(Session, ShutdownClosesALiveTunnel) {
    Peer up([](tcp::socket& s) { read_to_eof(s, true); });
    Sessions sessions(plain(up.url()));
    auto client = sessions.connect();
    net::write(client, net::buffer(std::string("x")));
    net::post(sessions.worker().context(), [&] { sessions.worker().abort_all(); });
    EXPECT_EQ(read_to_eof(client, true), "");
    const auto line = sessions.access();
    EXPECT_NE(line.find("result=shutdown"), std::string::npos) << line;
}

}  // namespace
