#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <tpt/admin.hpp>
#include <tpt/metrics.hpp>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;
using net::ip::make_address;
using tpt::admin::AdminServer;
using tpt::admin::control_allowed;
using tpt::admin::Handlers;
using tpt::admin::Limits;
using tpt::admin::ReloadAnswer;
using tcp = net::ip::tcp;
using Response = http::response<http::string_body>;
using Clock = std::chrono::steady_clock;

TEST(ControlAllowed, LoopbackPeersOnlyUnlessAny) {
    struct Case {
        const char* peer;
        bool allowed;
    };
    const std::vector<Case> cases{
        {"127.0.0.1", true},
        {"127.0.0.2", true},
        {"127.255.255.254", true},
        {"::1", true},
        {"::ffff:127.0.0.1", true},
        {"::ffff:127.9.8.7", true},
        {"10.0.0.1", false},
        {"0.0.0.0", false},
        {"128.0.0.1", false},
        {"126.255.255.255", false},
        {"::", false},
        {"::2", false},
        {"fe80::1", false},
        {"::ffff:10.0.0.1", false},
        {"::127.0.0.1", false},
        {"2001:db8::1", false},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.peer);
        EXPECT_EQ(control_allowed(make_address(c.peer), false), c.allowed);
        EXPECT_TRUE(control_allowed(make_address(c.peer), true));
    }
}

net::awaitable<bool> just(bool value) {
    co_return value;
}
net::awaitable<bool> throw_bool() {
    throw std::runtime_error("loop stuck");
    co_return false;
}
net::awaitable<ReloadAnswer> reload_answer(ReloadAnswer a) {
    co_return a;
}

// Sends `raw` on a new connection and reads one response (HEAD: no body).
net::awaitable<Response> exchange(tcp::endpoint ep, std::string raw, bool head = false) {
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    co_await net::async_write(s, net::buffer(raw), net::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.skip(head);
    co_await http::async_read(s, buffer, parser, net::use_awaitable);
    co_return parser.release();
}

std::string get(std::string_view path, std::string_view method = "GET",
                std::string_view extra = "") {
    return std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: t\r\n" +
           std::string(extra) + "\r\n";
}

// Reads until the peer closes; returns how long that took. Bytes that arrive are dropped.
net::awaitable<Clock::duration> until_closed(tcp::socket& s) {
    const auto start = Clock::now();
    std::array<char, 512> buf{};
    for (int i = 0; i < 1000; ++i) {
        auto [ec, n] =
            co_await s.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
        if (ec) {
            break;
        }
    }
    co_return Clock::now() - start;
}

class Admin : public ::testing::Test {
protected:
    Admin() {
        auto h = std::make_shared<Handlers>();
        h->metrics = [this] { return metrics->serialize(); };
        h->ready = [this] { return ready.load(); };
        h->alive = [this] {
            if (alive_throws.load()) {
                return throw_bool();
            }
            return just(alive.load());
        };
        h->config_json = [] { return std::string(R"({"sha256":"abc"})"); };
        h->reload = [this] {
            ++reloads;
            return reload_answer(ReloadAnswer{400, "servers.x: bad"});
        };
        h->control_from_any = [] { return false; };
        handlers = std::move(h);
    }

    ~Admin() override {
        if (server) {
            server->stop();
            std::weak_ptr<AdminServer> weak = server;
            server.reset();
            // The accept loop holds the server; it lets go once the acceptor is closed.
            const auto deadline = Clock::now() + 5s;
            while (!weak.expired() && Clock::now() < deadline) {
                ioc.restart();
                ioc.run_one_for(10ms);
            }
            EXPECT_TRUE(weak.expired()) << "the accept loop did not end after stop()";
        }
    }

    void start(Limits limits = {}) {
        server = std::make_shared<AdminServer>(
            ioc.get_executor(), tcp::endpoint(make_address("127.0.0.1"), 0), handlers, limits);
        server->start();
        ep = server->local_endpoint();
    }

    // Runs the io_context until `f` is ready (or fails the test at the deadline).
    template <class T>
    T wait(std::future<T>& f, Clock::duration limit = 5s) {
        const auto deadline = Clock::now() + limit;
        while (f.wait_for(0s) != std::future_status::ready) {
            if (Clock::now() > deadline) {
                ADD_FAILURE() << "deadline passed";
                throw std::runtime_error("deadline passed");
            }
            if (ioc.stopped()) {
                ioc.restart();
            }
            ioc.run_one_for(10ms);
        }
        return f.get();
    }

    template <class T>
    T run(net::awaitable<T> a, Clock::duration limit = 5s) {
        auto f = net::co_spawn(ioc, std::move(a), net::use_future);
        return wait(f, limit);
    }

    Response request(std::string raw, bool head = false) {
        return run(exchange(ep, std::move(raw), head));
    }

    net::io_context ioc;
    std::shared_ptr<const Handlers> handlers;
    std::shared_ptr<AdminServer> server;
    tcp::endpoint ep;
    std::unique_ptr<tpt::metrics::Metrics> metrics = tpt::metrics::make_metrics("9.9.9");
    std::atomic<bool> ready{true};
    std::atomic<bool> alive{true};
    std::atomic<bool> alive_throws{false};
    std::atomic<int> reloads{0};
};

TEST_F(Admin, AnswersEveryPath) {
    start();
    struct Case {
        std::string raw;
        unsigned status;
        std::string body;
        std::string content_type;
    };
    const std::vector<Case> cases{
        {get("/ready"), 200, "ready", "text/plain; charset=utf-8"},
        {get("/healthz"), 200, "ok", "text/plain; charset=utf-8"},
        {get("/health"), 200, "OK", "text/plain; charset=utf-8"},
        {get("/health?probe=1"), 200, "OK", "text/plain; charset=utf-8"},
        {get("/config"), 200, R"({"sha256":"abc"})", "application/json"},
        {get("/reload", "POST"), 400, "servers.x: bad", "text/plain; charset=utf-8"},
        {get("/nope"), 404, "not found\n", "text/plain; charset=utf-8"},
        {get("/"), 404, "not found\n", "text/plain; charset=utf-8"},
        {get("/metricsx"), 404, "not found\n", "text/plain; charset=utf-8"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.raw);
        const auto res = request(c.raw);
        EXPECT_EQ(res.result_int(), c.status);
        EXPECT_EQ(res.body(), c.body);
        EXPECT_EQ(res[http::field::content_type], c.content_type);
    }
    EXPECT_EQ(reloads.load(), 1);
}

TEST_F(Admin, MetricsHaveThePrometheusContentType) {
    start();
    const auto res = request(get("/metrics"));
    EXPECT_EQ(res.result_int(), 200U);
    EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_NE(res.body().find(R"(tpt_build_info{version="9.9.9"} 1)"), std::string::npos);
}

TEST_F(Admin, MetricSeriesFollowHandleLifetimes) {
    start();
    const std::string series =
        R"(tpt_route_bytes_total{direction="to_upstream",route="a.example",server="s"} 42)";
    auto route = metrics->route("s", "a.example", "up");
    route->add_bytes(42, 0);
    EXPECT_NE(request(get("/metrics")).body().find(series), std::string::npos);
    route.reset();
    EXPECT_EQ(request(get("/metrics")).body().find("a.example"), std::string::npos);
}

TEST_F(Admin, WrongMethodIs405WithAllow) {
    start();
    struct Case {
        std::string raw;
        std::string allow;
    };
    const std::vector<Case> cases{
        {get("/metrics", "POST"), "GET, HEAD"}, {get("/ready", "DELETE"), "GET, HEAD"},
        {get("/config", "PUT"), "GET, HEAD"},   {get("/reload"), "POST"},
        {get("/reload", "HEAD"), "POST"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.raw);
        const auto res = request(c.raw, c.raw.starts_with("HEAD"));
        EXPECT_EQ(res.result_int(), 405U);
        EXPECT_EQ(res[http::field::allow], c.allow);
    }
    EXPECT_EQ(reloads.load(), 0);
}

TEST_F(Admin, HeadGivesTheHeadersWithoutTheBody) {
    start();
    auto f = net::co_spawn(
        ioc,
        [](tcp::endpoint e) -> net::awaitable<std::string> {
            tcp::socket s(co_await net::this_coro::executor);
            co_await s.async_connect(e, net::use_awaitable);
            const std::string raw = get("/health", "HEAD", "Connection: close\r\n");
            co_await net::async_write(s, net::buffer(raw), net::use_awaitable);
            std::string all;
            std::array<char, 1024> buf{};
            for (int i = 0; i < 100; ++i) {
                auto [ec, n] =
                    co_await s.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
                all.append(buf.data(), n);
                if (ec) {
                    break;
                }
            }
            co_return all;
        }(ep),
        net::use_future);
    const auto raw = wait(f);
    EXPECT_TRUE(raw.starts_with("HTTP/1.1 200 OK\r\n")) << raw;
    EXPECT_NE(raw.find("Content-Length: 2\r\n"), std::string::npos) << raw;
    EXPECT_TRUE(raw.ends_with("\r\n\r\n")) << raw;
}

// No liveness check wired: /healthz says 503.
TEST_F(Admin, HealthzWithoutALivenessCheckIs503) {
    auto h = std::make_shared<Handlers>(*handlers);
    h->alive = nullptr;
    handlers = std::move(h);
    start();
    EXPECT_EQ(request(get("/healthz")).result_int(), 503U);
}

TEST_F(Admin, ProbesAnswer503WhenDown) {
    start();
    ready = false;
    alive = false;
    EXPECT_EQ(request(get("/ready")).result_int(), 503U);
    EXPECT_EQ(request(get("/healthz")).result_int(), 503U);
    alive_throws = true;
    EXPECT_EQ(request(get("/healthz")).result_int(), 503U);
    ready = true;
    alive_throws = false;
    alive = true;
    EXPECT_EQ(request(get("/ready")).result_int(), 200U);
    EXPECT_EQ(request(get("/healthz")).result_int(), 200U);
}

net::awaitable<std::vector<Response>> on_one_connection(tcp::endpoint ep,
                                                        std::vector<std::string> raws,
                                                        bool pipelined) {
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    beast::flat_buffer buffer;
    std::vector<Response> out;
    if (pipelined) {
        std::string all;
        for (const auto& r : raws) {
            all += r;
        }
        co_await net::async_write(s, net::buffer(all), net::use_awaitable);
    }
    for (const auto& r : raws) {
        if (!pipelined) {
            co_await net::async_write(s, net::buffer(r), net::use_awaitable);
        }
        Response res;
        co_await http::async_read(s, buffer, res, net::use_awaitable);
        out.push_back(std::move(res));
    }
    co_return out;
}

TEST_F(Admin, KeepAliveServesSeveralRequestsOnOneConnection) {
    start();
    for (const bool pipelined : {false, true}) {
        SCOPED_TRACE(pipelined ? "pipelined" : "one by one");
        const auto res = run(on_one_connection(
            ep, {get("/health"), get("/ready"), get("/metrics"), get("/nope")}, pipelined));
        ASSERT_EQ(res.size(), 4U);
        EXPECT_EQ(res[0].body(), "OK");
        EXPECT_EQ(res[1].body(), "ready");
        EXPECT_EQ(res[2].result_int(), 200U);
        EXPECT_EQ(res[3].result_int(), 404U);
        for (const auto& r : res) {
            EXPECT_TRUE(r.keep_alive());
        }
    }
}

TEST_F(Admin, HandlerExceptionIs500AndServingGoesOn) {
    // (403 itself: every peer of a loopback socket is loopback, so the decision is tested in
    // ControlAllowed and end to end in e2e/test_metrics.py.)
    auto h = std::make_shared<Handlers>(*handlers);
    h->config_json = []() -> std::string { throw std::runtime_error("boom"); };
    handlers = h;
    start();
    const auto res = request(get("/config"));
    EXPECT_EQ(res.result_int(), 500U);
    const auto both = run(on_one_connection(ep, {get("/config"), get("/health")}, false));
    ASSERT_EQ(both.size(), 2U);
    EXPECT_EQ(both[0].result_int(), 500U);
    EXPECT_EQ(both[1].body(), "OK") << "the connection goes on after a failed handler";
}

net::awaitable<std::pair<Response, Clock::duration>> then_closed(tcp::endpoint ep,
                                                                 std::string raw) {
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    co_await net::async_write(s, net::buffer(raw), net::use_awaitable);
    beast::flat_buffer buffer;
    Response res;
    co_await http::async_read(s, buffer, res, net::use_awaitable);
    auto took = co_await until_closed(s);
    co_return std::pair{std::move(res), took};
}

TEST_F(Admin, ConnectionCloseAndHttp10AreHonoured) {
    start();
    {
        auto [res, took] = run(then_closed(ep, get("/health", "GET", "Connection: close\r\n")));
        EXPECT_EQ(res.body(), "OK");
        EXPECT_FALSE(res.keep_alive());
        EXPECT_LT(took, 2s);
    }
    {
        auto [res, took] = run(then_closed(ep, "GET /ready HTTP/1.0\r\n\r\n"));
        EXPECT_EQ(res.body(), "ready");
        EXPECT_EQ(res.version(), 10U);
        EXPECT_LT(took, 2s);
    }
}

// The server answers with a status and closes, or closes at once: either is fine for
// requests it refuses to read.
net::awaitable<std::pair<unsigned, bool>> refused(tcp::endpoint ep, std::string raw) {
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    co_await net::async_write(s, net::buffer(raw), net::as_tuple(net::use_awaitable));
    beast::flat_buffer buffer;
    Response res;
    auto [ec, n] = co_await http::async_read(s, buffer, res, net::as_tuple(net::use_awaitable));
    const unsigned status = ec ? 0U : res.result_int();
    const auto took = co_await until_closed(s);
    co_return std::pair{status, took < 2s};
}

TEST_F(Admin, OversizedHeaderIs431OrClose) {
    start();
    const auto [status, closed] =
        run(refused(ep, get("/health", "GET", "X-Big: " + std::string(9000, 'a') + "\r\n")));
    EXPECT_TRUE(status == 431U || status == 0U) << status;
    EXPECT_TRUE(closed);
    // Just below the limit is fine.
    const auto res = request(get("/health", "GET", "X-Big: " + std::string(7000, 'a') + "\r\n"));
    EXPECT_EQ(res.result_int(), 200U);
}

TEST_F(Admin, ReloadBodyIsIgnoredUpToAFewKiB) {
    start();
    const auto small = request(get("/reload", "POST", "Content-Length: 5\r\n") + "hello");
    EXPECT_EQ(small.result_int(), 400U);
    EXPECT_EQ(reloads.load(), 1);
    const auto [status, closed] = run(refused(
        ep, get("/reload", "POST", "Content-Length: 100000\r\n") + std::string(100000, 'x')));
    EXPECT_TRUE(status == 413U || status == 0U) << status;
    EXPECT_TRUE(closed);
    EXPECT_EQ(reloads.load(), 1);
}

TEST_F(Admin, ExpectContinueGetsAnInterimAnswer) {
    start();
    auto f = net::co_spawn(
        ioc,
        [](tcp::endpoint e) -> net::awaitable<std::pair<unsigned, unsigned>> {
            tcp::socket s(co_await net::this_coro::executor);
            co_await s.async_connect(e, net::use_awaitable);
            const std::string head =
                get("/reload", "POST", "Content-Length: 3\r\nExpect: 100-continue\r\n");
            co_await net::async_write(s, net::buffer(head), net::use_awaitable);
            beast::flat_buffer buffer;
            http::response<http::empty_body> interim;
            co_await http::async_read(s, buffer, interim, net::use_awaitable);
            co_await net::async_write(s, net::buffer(std::string("abc")), net::use_awaitable);
            Response final_answer;
            co_await http::async_read(s, buffer, final_answer, net::use_awaitable);
            co_return std::pair{interim.result_int(), final_answer.result_int()};
        }(ep),
        net::use_future);
    const auto [interim, final_status] = wait(f);
    EXPECT_EQ(interim, 100U);
    EXPECT_EQ(final_status, 400U);
}

TEST_F(Admin, MalformedRequestIs400) {
    start();
    const auto [status, closed] = run(refused(ep, "GARBAGE\r\n\r\n"));
    EXPECT_EQ(status, 400U);
    EXPECT_TRUE(closed);
}

// One client sends half a request and stalls, another trickles a byte every 50 ms; both are
// cut at the read timeout, and a third client is served meanwhile.
net::awaitable<Clock::duration> stalled(tcp::endpoint ep) {
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    const std::string part = "GET /metrics HTTP/1.1\r\nHost: t\r\n";
    co_await net::async_write(s, net::buffer(part), net::use_awaitable);
    co_return co_await until_closed(s);
}

net::awaitable<void> trickle(tcp::socket& s) {
    net::steady_timer timer(s.get_executor());
    const std::string request = get("/health", "GET", "X-Pad: " + std::string(200, 'p') + "\r\n");
    for (char c : request) {
        auto [ec, n] =
            co_await net::async_write(s, net::buffer(&c, 1), net::as_tuple(net::use_awaitable));
        if (ec) {
            co_return;
        }
        timer.expires_after(50ms);
        co_await timer.async_wait(net::use_awaitable);
    }
}

net::awaitable<Clock::duration> trickling(tcp::endpoint ep) {
    using namespace net::experimental::awaitable_operators;
    tcp::socket s(co_await net::this_coro::executor);
    co_await s.async_connect(ep, net::use_awaitable);
    const auto start = Clock::now();
    co_await (until_closed(s) || trickle(s));
    co_return Clock::now() - start;
}

TEST_F(Admin, SlowClientsAreCutWhileOthersAreServed) {
    Limits limits;
    limits.read_timeout = 300ms;
    start(limits);
    auto slow = net::co_spawn(ioc, stalled(ep), net::use_future);
    auto slower = net::co_spawn(ioc, trickling(ep), net::use_future);
    const auto fast = request(get("/health"));
    EXPECT_EQ(fast.body(), "OK");
    EXPECT_NE(slow.wait_for(0s), std::future_status::ready) << "cut before the timeout";
    const auto slow_took = wait(slow);
    const auto slower_took = wait(slower);
    EXPECT_GE(slow_took, 200ms);
    EXPECT_LT(slow_took, 2s);
    EXPECT_GE(slower_took, 250ms);
    EXPECT_LT(slower_took, 2s) << "a trickling client must not extend its deadline";
    // An idle keep-alive connection is cut by the same deadline.
    auto [res, idle] = run(then_closed(ep, get("/health")));
    EXPECT_EQ(res.body(), "OK");
    EXPECT_GE(idle, 200ms);
    EXPECT_LT(idle, 2s);
}

net::awaitable<boost::system::error_code> try_connect(tcp::endpoint ep) {
    tcp::socket s(co_await net::this_coro::executor);
    auto [ec] = co_await s.async_connect(ep, net::as_tuple(net::use_awaitable));
    co_return ec;
}

TEST_F(Admin, StopClosesTheAcceptorButNotLiveConnections) {
    start();
    auto f = net::co_spawn(
        ioc,
        [](tcp::endpoint e, std::shared_ptr<AdminServer> srv) -> net::awaitable<unsigned> {
            tcp::socket s(co_await net::this_coro::executor);
            co_await s.async_connect(e, net::use_awaitable);
            beast::flat_buffer buffer;
            const auto one = get("/health");
            co_await net::async_write(s, net::buffer(one), net::use_awaitable);
            Response first;
            co_await http::async_read(s, buffer, first, net::use_awaitable);
            srv->stop();
            co_await net::async_write(s, net::buffer(one), net::use_awaitable);
            Response second;
            co_await http::async_read(s, buffer, second, net::use_awaitable);
            co_return first.result_int() + second.result_int();
        }(ep, server),
        net::use_future);
    EXPECT_EQ(wait(f), 400U);
    EXPECT_EQ(run(try_connect(ep)), net::error::connection_refused);
    EXPECT_EQ(server->local_endpoint(), ep);
}

TEST(AdminServer, BindFailureThrows) {
    net::io_context ioc;
    auto h = std::make_shared<Handlers>();
    auto first = std::make_shared<AdminServer>(ioc.get_executor(),
                                               tcp::endpoint(make_address("127.0.0.1"), 0), h);
    EXPECT_THROW(AdminServer(ioc.get_executor(), first->local_endpoint(), h),
                 boost::system::system_error);
}

}  // namespace
