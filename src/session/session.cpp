#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <tpt/client_hello.hpp>
#include <tpt/connect.hpp>
#include <tpt/log.hpp>
#include <tpt/session.hpp>
#include <tpt/tunnel.hpp>

namespace tpt::session {

using namespace boost::asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t hello_limit = 16 * 1024;
constexpr std::size_t hello_read_step = 4096;
constexpr auto default_connect_timeout = 30s;

bool all_health(const routing::Table& table) {
    return std::all_of(table.routes().begin(), table.routes().end(), [](const routing::Route& r) {
        return r.upstream == config::builtin_health;
    });
}

std::string endpoint_text(const tcp::endpoint& ep) {
    const auto a = ep.address();
    if (a.is_v6()) {
        return "[" + a.to_string() + "]:" + std::to_string(ep.port());
    }
    return a.to_string() + ":" + std::to_string(ep.port());
}

struct HelloRead {
    std::vector<std::uint8_t> bytes;  // everything read, forwarded upstream unchanged
    std::optional<std::string> sni;
    bool closed = false;  // EOF before a whole hello: route what came, pass the FIN on
    bool reset = false;   // a reset or error before a whole hello: nothing to route
};

// Phase 1 (SPEC §4.2): read until the parser has a verdict. The buffer lives in this frame
// only, and never grows past the hello limit plus one read.
net::awaitable<HelloRead> read_hello(tcp::socket& socket) {
    HelloRead r;
    tls::ClientHelloParser parser(hello_limit);
    for (;;) {
        const auto old = r.bytes.size();
        r.bytes.resize(old + hello_read_step);
        auto [ec, n] = co_await socket.async_read_some(
            net::buffer(r.bytes.data() + old, hello_read_step), use_tuple);
        r.bytes.resize(old + n);
        if (ec) {
            r.closed = ec == net::error::eof;
            r.reset = !r.closed;
            co_return r;
        }
        const auto st = parser.feed(std::span<const std::uint8_t>(r.bytes.data() + old, n));
        if (st == tls::HelloStatus::need_more && r.bytes.size() <= hello_limit) {
            continue;
        }
        if (st == tls::HelloStatus::done) {
            r.sni = parser.sni();
        }
        co_return r;
    }
}

class Session final : public runtime::Tickable {
public:
    Session(tcp::socket client, SnapshotPtr snapshot, std::size_t server_index, std::string listen,
            WorkerContext& ctx)
        : client_(std::move(client)),
          upstream_(client_.get_executor()),
          snap_(std::move(snapshot)),
          srv_(snap_->servers[server_index]),
          ctx_(ctx),
          start_(runtime::Clock::now()) {
        rec_.server = srv_.server->name;
        rec_.listen = std::move(listen);
        boost::system::error_code ec;
        const auto peer = client_.remote_endpoint(ec);
        rec_.client = ec ? "-" : endpoint_text(peer);
        ctx_.worker.add(*this);
    }

    net::awaitable<void> run() {
        Outcome outcome = Outcome::ok;
        try {
            outcome = co_await serve();
        } catch (const std::exception& e) {
            log::error("session failed", {{"server", rec_.server}, {"error", e.what()}});
            outcome = Outcome::client_reset;
        }
        if (aborted_) {
            outcome = *aborted_;
        }
        finish(outcome);
    }

    void tick(runtime::Clock::time_point now) override {
        publish_bytes();
        if (!relaying_) {
            return;
        }
        if (idle_timeout_ > 0ms && now - counters_.last_activity >= idle_timeout_) {
            abort(Outcome::idle_timeout);
            return;
        }
        if (stats_interval_ > 0ms && now - last_stats_ >= stats_interval_) {
            last_stats_ = now;
            log::info("tunnel in-flight",
                      {{"server", rec_.server},
                       {"route", rec_.route},
                       {"client", rec_.client},
                       {"connect_target", rec_.connect_target},
                       {"bytes_to_upstream", std::to_string(counters_.to_upstream)},
                       {"bytes_to_client", std::to_string(counters_.to_client)}});
        }
    }

    void abort_for_shutdown() override { abort(Outcome::shutdown); }

private:
    void abort(Outcome why) {
        if (!aborted_) {
            aborted_ = why;
        }
        boost::system::error_code ignored;
        client_.close(ignored);
        upstream_.close(ignored);
    }

    void publish_bytes() {
        if (route_metrics_ == nullptr) {
            return;
        }
        const auto up = counters_.to_upstream - published_up_;
        const auto down = counters_.to_client - published_down_;
        if (up != 0 || down != 0) {
            route_metrics_->add_bytes(up, down);
            published_up_ = counters_.to_upstream;
            published_down_ = counters_.to_client;
        }
    }

    void choose(const routing::Route& route) {
        const auto& routes = srv_.table->routes();
        const auto index = static_cast<std::size_t>(&route - routes.data());
        route_ = &route;
        route_metrics_ = srv_.route_metrics[index].get();
        route_metrics_->connection_opened();
        rec_.route = route.key;
        rec_.upstream = route.upstream;
    }

    net::awaitable<Outcome> serve() {
        const config::Server& server = *srv_.server;
        HelloRead hello;
        if (server.tls) {
            net::steady_timer timer(client_.get_executor());
            timer.expires_after(server.client_hello_timeout);
            auto r = co_await (read_hello(client_) || timer.async_wait(use_tuple));
            if (r.index() == 1) {
                choose(srv_.table->default_route());
                co_return Outcome::client_hello_timeout;
            }
            hello = std::get<0>(std::move(r));
            if (hello.reset) {
                co_return Outcome::client_reset;
            }
            if (hello.closed && hello.bytes.empty()) {
                co_return Outcome::client_closed;
            }
        }
        if (hello.sni) {
            rec_.sni = *hello.sni;
        }
        choose(srv_.table->match(hello.sni ? std::optional<std::string_view>(*hello.sni)
                                           : std::nullopt));
        const routing::Route& route = *route_;

        if (route.upstream == config::builtin_ban) {
            co_return Outcome::ban;
        }
        if (route.upstream == config::builtin_echo) {
            if (!hello.bytes.empty()) {
                auto [ec, n] =
                    co_await net::async_write(client_, net::buffer(hello.bytes), use_tuple);
                if (ec) {
                    co_return Outcome::client_reset;
                }
                counters_.to_client += n;
            }
            idle_timeout_ = server.idle_timeout;
            relaying_ = true;
            auto out = co_await tunnel::echo(client_, ctx_.worker, counters_);
            counters_.to_upstream = counters_.to_client;
            co_return out;
        }
        if (route.upstream == config::builtin_health) {
            co_await admin::serve(std::move(client_), snap_->admin_handlers);
            co_return Outcome::ok;
        }
        co_return co_await tunnel_to_upstream(route, hello);
    }

    net::awaitable<Outcome> tunnel_to_upstream(const routing::Route& route, HelloRead& hello) {
        const config::Via* via = route.via;
        const bool through_proxy = via != nullptr && !via->is_direct();
        std::string target;
        if (through_proxy) {
            // SPEC §4.4; the SNI was validated as a host name by the parser, so it is safe in
            // a request line (SPEC §9).
            if (via->use_sni_as_target && hello.sni) {
                target = *hello.sni + ":" + std::to_string(via->target_port);
            } else if (via->target) {
                target = via->target->to_string();
            } else {
                co_return Outcome::no_target;
            }
            rec_.connect_target = target;
        }
        const auto timeout = via != nullptr ? via->connect_timeout
                                            : std::chrono::milliseconds(default_connect_timeout);
        const auto connect_start = runtime::Clock::now();
        const auto deadline = connect_start + timeout;
        const config::Upstream& up = *route.target;
        auto connected = co_await upstream::connect(upstream_, ctx_.resolver, up.address, up.family,
                                                    snap_->config->resolve_interval, deadline);
        if (connected.outcome != Outcome::ok) {
            log::warn("upstream connect failed",
                      {{"server", rec_.server},
                       {"route", rec_.route},
                       {"upstream", rec_.upstream},
                       {"reason", std::string(to_string(connected.outcome))},
                       {"detail", connected.detail}});
            co_return connected.outcome;
        }
        std::vector<std::uint8_t> leftover;
        if (through_proxy) {
            std::vector<std::pair<std::string, std::string>> headers;
            headers.reserve(via->headers.size());
            for (const auto& h : via->headers) {
                headers.emplace_back(h.name, h.value);
            }
            auto hs = co_await connect::handshake(upstream_, target, headers, deadline);
            if (hs.outcome != Outcome::ok) {
                // Status line and auth scheme only: never a header value (SPEC §5).
                log::Fields f{{"server", rec_.server},
                              {"route", rec_.route},
                              {"upstream", rec_.upstream},
                              {"connect_target", target},
                              {"reason", std::string(to_string(hs.outcome))},
                              {"status", hs.status_line}};
                if (!hs.auth_scheme.empty()) {
                    f.emplace_back("proxy_authenticate", hs.auth_scheme);
                }
                log::warn("CONNECT refused", f);
                co_return hs.outcome;
            }
            leftover = std::move(hs.leftover);
        }
        route_metrics_->observe_connect_seconds(
            std::chrono::duration<double>(runtime::Clock::now() - connect_start).count());

        // SPEC §4.6: the bytes read before routing go first, unchanged.
        if (!hello.bytes.empty()) {
            auto [ec, n] =
                co_await net::async_write(upstream_, net::buffer(hello.bytes), use_tuple);
            if (ec) {
                co_return Outcome::upstream_reset;
            }
            counters_.to_upstream += n;
            hello.bytes = {};
        }
        if (!leftover.empty()) {
            auto [ec, n] = co_await net::async_write(client_, net::buffer(leftover), use_tuple);
            if (ec) {
                co_return Outcome::client_reset;
            }
            counters_.to_client += n;
            leftover = {};
        }
        if (hello.closed) {
            // The client half-closed right after its bytes: pass the FIN on.
            boost::system::error_code ignored;
            upstream_.shutdown(tcp::socket::shutdown_send, ignored);
        }
        idle_timeout_ = srv_.server->idle_timeout;
        stats_interval_ = via != nullptr ? via->stats_interval : 0ms;
        last_stats_ = runtime::Clock::now();
        counters_.last_activity = last_stats_;
        relaying_ = true;
        co_return co_await tunnel::relay(client_, upstream_, ctx_.worker, counters_);
    }

    void finish(Outcome outcome) {
        relaying_ = false;
        if (route_metrics_ == nullptr) {
            choose(srv_.table->default_route());
        }
        publish_bytes();
        if (is_route_error(outcome)) {
            route_metrics_->error(outcome);
        }
        route_metrics_->connection_closed();
        rec_.bytes_to_upstream = counters_.to_upstream;
        rec_.bytes_to_client = counters_.to_client;
        rec_.duration_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(runtime::Clock::now() - start_)
                .count());
        rec_.result = to_string(outcome);
        if (outcome != Outcome::client_closed || log::enabled(config::LogLevel::debug)) {
            log::access(rec_);
        }
    }

    tcp::socket client_;
    tcp::socket upstream_;
    SnapshotPtr snap_;
    const ServerRuntime& srv_;
    WorkerContext& ctx_;
    runtime::Clock::time_point start_;
    const routing::Route* route_ = nullptr;
    metrics::RouteMetrics* route_metrics_ = nullptr;
    tunnel::Counters counters_;
    std::uint64_t published_up_ = 0;
    std::uint64_t published_down_ = 0;
    log::AccessRecord rec_;
    std::optional<Outcome> aborted_;
    bool relaying_ = false;
    std::chrono::milliseconds idle_timeout_{0};
    std::chrono::milliseconds stats_interval_{0};
    runtime::Clock::time_point last_stats_{};
};

}  // namespace

net::awaitable<void> run(tcp::socket client, SnapshotPtr snapshot, std::size_t server_index,
                         std::string listen, WorkerContext& ctx) {
    const auto& srv = snapshot->servers[server_index];
    const bool counted = !srv.health_only;
    auto state = srv.state;
    auto listener = srv.listener_metrics.at(listen);
    {
        Session s(std::move(client), std::move(snapshot), server_index, std::move(listen), ctx);
        co_await s.run();
    }
    listener->connection_closed();
    if (counted) {
        state->active.fetch_sub(1, std::memory_order_relaxed);
        ctx.live.fetch_sub(1, std::memory_order_relaxed);
    }
}

SnapshotPtr build_snapshot(std::shared_ptr<const config::Config> config, std::string sha256,
                           const Snapshot* previous, metrics::Metrics& metrics,
                           admin::HandlersPtr admin_handlers) {
    auto snap = std::make_shared<Snapshot>();
    snap->config = std::move(config);
    snap->sha256 = std::move(sha256);
    snap->metrics = &metrics;
    snap->admin_handlers = std::move(admin_handlers);
    const auto& cfg = *snap->config;
    snap->servers.reserve(cfg.servers.size());
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        const auto& server = cfg.servers[i];
        ServerRuntime rt;
        rt.server = &server;
        rt.table = std::make_unique<routing::Table>(server, cfg);
        for (const auto& route : rt.table->routes()) {
            rt.route_metrics.push_back(metrics.route(server.name, route.key, route.upstream));
        }
        rt.health_only = all_health(*rt.table);
        if (previous != nullptr) {
            for (const auto& old : previous->servers) {
                if (old.server->name == server.name) {
                    rt.state = old.state;
                }
            }
        }
        if (!rt.state) {
            rt.state = std::make_shared<ServerState>();
        }
        for (const auto& l : server.listen) {
            const auto key = l.to_string();
            auto lm = metrics.listener(server.name, key);
            lm->set_maxclients(server.maxclients);
            rt.listener_metrics.emplace(key, std::move(lm));
            snap->server_by_listen.emplace(key, i);
        }
        snap->servers.push_back(std::move(rt));
    }
    return snap;
}

}  // namespace tpt::session
