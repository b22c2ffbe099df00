#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <tpt/client_hello.hpp>
#include <tpt/connect.hpp>
#include <tpt/log.hpp>
#include <tpt/session.hpp>
#include <tpt/tunnel.hpp>

namespace tpt::session {

using namespace std::chrono_literals;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t hello_limit = std::size_t{16} * 1024;
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

class Session;

// Ownership of a Session, shared by what is in flight for it: its phases (one coroutine), a
// deadline wait, its relay. The last one to let go deletes the session. Handlers hold one, so
// a handler destroyed without being called (io_context torn down) lets go too.
class Hold {
public:
    explicit Hold(Session& s) noexcept;
    Hold(Hold&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    Hold& operator=(Hold&&) = delete;
    ~Hold();
    Session* operator->() const noexcept { return s_; }

private:
    Session* s_;
};

// What the phases leave to do once their frames are gone.
enum class Next : std::uint8_t { finish, relay, echo };
struct Established {
    Outcome outcome = Outcome::ok;
    Next next = Next::finish;
};

// One connection. Lives on the heap from accept to the end of its relay; what a phase needs
// only while it runs (the hello buffer, the deadline timer, CONNECT state) lives in the
// phase's coroutine frame, which is freed before the relay starts.
class Session final : public runtime::Tickable, private tunnel::Observer {
public:
    // NOLINTNEXTLINE(modernize-pass-by-value): a trivially copyable 28-byte endpoint
    Session(tcp::socket client, const tcp::endpoint& peer, SnapshotPtr snapshot,
            std::size_t server_index, const ListenEntry& listen, WorkerContext& ctx)
        : client_(std::move(client)),
          upstream_(client_.get_executor()),
          snap_(std::move(snapshot)),
          srv_(snap_->servers[server_index]),
          ctx_(ctx),
          live_(&ctx.live),
          listen_(&listen),
          peer_(peer),
          start_(runtime::Clock::now()) {
        ctx_.worker.add(*this);
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    ~Session() override {
        boost::system::error_code ignored;
        client_.close(ignored);
        upstream_.close(ignored);
        listen_->second->connection_closed();
        if (!srv_.health_only) {
            srv_.state->active.fetch_sub(1, std::memory_order_relaxed);
            live_->fetch_sub(1, std::memory_order_relaxed);  // ctx_ may be gone (see live_)
        }
    }

    static void launch(tcp::socket client, const tcp::endpoint& peer, SnapshotPtr snapshot,
                       std::size_t server_index, const ListenEntry& listen, WorkerContext& ctx) {
        auto* s =
            new Session(std::move(client), peer, std::move(snapshot), server_index, listen, ctx);
        Hold hold(*s);
        std::optional<upstream::FirstAttempt> first;
        if (s->establish_at_once(first)) {
            return;
        }
        net::co_spawn(ctx.worker.executor(), s->establish(std::move(first)),
                      PhasesDone{std::move(hold)});
    }

    void retain() noexcept { ++holds_; }
    void release() noexcept {
        if (--holds_ == 0) {
            delete this;
        }
    }

    void tick(runtime::Clock::time_point now) override {
        publish_bytes();
        if (!relaying_) {
            return;
        }
        const auto idle_timeout = srv_.server->idle_timeout;
        if (idle_timeout > 0ms && now - counters_.last_activity >= idle_timeout) {
            abort(Outcome::idle_timeout);
            return;
        }
        // Tunnels to an upstream only (not echo), as the effective via says.
        const auto stats_interval =
            route_ != nullptr && route_->target != nullptr && route_->via != nullptr
                ? route_->via->stats_interval
                : 0ms;
        if (stats_interval > 0ms && now - last_stats_ >= stats_interval) {
            last_stats_ = now;
            log::info("tunnel in-flight",
                      {{"server", srv_.server->name},
                       {"route", route_->key},
                       {"client", endpoint_text(peer_)},
                       {"connect_target", connect_target_},
                       {"bytes_to_upstream", std::to_string(counters_.to_upstream)},
                       {"bytes_to_client", std::to_string(counters_.to_client)}});
        }
    }

    void abort_for_shutdown() override { abort(Outcome::shutdown); }

    // Fired by the deadline of the phase that armed it (ClientHello, TCP connect): closes
    // both sockets, so that the phase's pending operation ends at once.
    void expire(std::uint32_t generation) {
        if (generation != deadline_generation_) {
            return;  // the phase ended as the timer fired
        }
        expired_ = true;
        boost::system::error_code ignored;
        client_.close(ignored);
        upstream_.close(ignored);
    }

private:
    struct PhasesDone {
        Hold hold;
        void operator()(const std::exception_ptr& e, Established r) { hold->established(e, r); }
    };

    struct DeadlineWait {
        Hold hold;
        std::uint32_t generation;
        void operator()(const boost::system::error_code& ec) {
            if (!ec) {
                hold->expire(generation);
            }
        }
    };

    // Arms the connect deadline only if the connect waits (upstream::BeforeWait).
    struct ArmBeforeWait final : upstream::BeforeWait {
        ArmBeforeWait(Session& s, net::steady_timer& t, runtime::Clock::time_point at) noexcept
            : session(s), timer(t), deadline(at) {}
        void operator()() override {
            if (!armed) {
                armed = true;
                session.arm(timer, deadline);
            }
        }
        Session& session;
        net::steady_timer& timer;
        runtime::Clock::time_point deadline;
        bool armed = false;
    };

    void arm(net::steady_timer& timer, runtime::Clock::time_point at) {
        ++deadline_generation_;
        timer.expires_at(at);  // cancels the previous wait, if any
        timer.async_wait(DeadlineWait{Hold(*this), deadline_generation_});
    }

    void disarm(net::steady_timer& timer) {
        ++deadline_generation_;
        timer.cancel();
    }

    void established(const std::exception_ptr& e, Established r) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                log::error("session failed", {{"server", srv_.server->name}, {"error", ex.what()}});
            }
            r = {Outcome::client_reset, Next::finish};
        }
        if (aborted_) {
            r = {*aborted_, Next::finish};
        }
        if (r.next == Next::finish) {
            finish(r.outcome);
            return;
        }
        retain();  // the relay's hold, let go in relayed() or abandoned()
        tunnel::StartOptions options;
        options.local = peer_.address().is_loopback() && upstream_loopback_;
        options.client_ended = client_ended_;
        // Bytes written upstream before the relay (the hello, a CONNECT request) carried the
        // handshake's ACK; otherwise it is still held (StartOptions::upstream_ack_held).
        options.upstream_ack_held =
            counters_.to_upstream == 0 && route_ != nullptr && !through_proxy(*route_);
        tunnel::start(client_, r.next == Next::relay ? &upstream_ : nullptr, options, ctx_.worker,
                      counters_, *this);
    }

    void relayed(Outcome outcome) override {
        finish(aborted_.value_or(outcome));
        release();
    }

    void abandoned() noexcept override { release(); }

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
    }

    // The phases without a coroutine, in the common case that needs no wait: a server that
    // reads nothing first (no `tls`), whose route goes straight to an upstream whose address
    // is known now (an IP literal or a cached name), connected within the connect() call
    // (loopback, a near peer). This spares the coroutine's frames and its completion's trip
    // through the worker's queue (bench/RESULTS.md). True: the relay runs. False, having
    // done nothing but maybe start the connect, whose attempt is then left in `first`:
    // establish() does the phases and finishes that attempt instead of starting another.
    bool establish_at_once(std::optional<upstream::FirstAttempt>& first) {
        if (srv_.server->tls) {
            return false;
        }
        const routing::Route& route = srv_.table->match(std::nullopt);
        if (route.target == nullptr || through_proxy(route)) {
            return false;
        }
        const config::Upstream& up = *route.target;
        const auto first_ep =
            ctx_.resolver.first_at_once(up.address, up.family, snap_->config->resolve_interval);
        if (!first_ep) {
            return false;
        }
        const auto connect_start = runtime::Clock::now();
        const tcp::endpoint& ep = *first_ep;
        const auto started = upstream::start_connect(upstream_, ep);
        if (started.in_progress || started.ec) {
            first = upstream::FirstAttempt{ep, started};
            return false;
        }
        choose(route);
        upstream_loopback_ = ep.address().is_loopback();
        observe_connect(connect_start);
        ready_to_relay();
        established(nullptr, Established{Outcome::ok, Next::relay});
        return true;
    }

    static bool through_proxy(const routing::Route& route) noexcept {
        return route.via != nullptr && !route.via->is_direct();
    }

    void observe_connect(runtime::Clock::time_point connect_start) {
        route_metrics_->observe_connect_seconds(
            std::chrono::duration<double>(runtime::Clock::now() - connect_start).count());
    }

    void ready_to_relay() {
        last_stats_ = runtime::Clock::now();
        counters_.last_activity = last_stats_;
        relaying_ = true;
    }

    // Every phase before the relay: ClientHello, route, connect, CONNECT, first bytes.
    // `first`: see establish_at_once().
    net::awaitable<Established> establish(std::optional<upstream::FirstAttempt> first) {
        const config::Server& server = *srv_.server;
        net::steady_timer deadline(client_.get_executor());
        HelloRead hello;
        if (server.tls) {
            arm(deadline, runtime::Clock::now() + server.client_hello_timeout);
            hello = co_await read_hello(client_);
            disarm(deadline);
            if (expired_) {
                choose(srv_.table->default_route());
                co_return Established{Outcome::client_hello_timeout};
            }
            if (hello.reset) {
                co_return Established{Outcome::client_reset};
            }
            if (hello.closed && hello.bytes.empty()) {
                co_return Established{Outcome::client_closed};
            }
        }
        client_ended_ = hello.closed;
        if (hello.sni) {
            sni_ = *hello.sni;
        }
        choose(srv_.table->match(hello.sni ? std::optional<std::string_view>(*hello.sni)
                                           : std::nullopt));
        const routing::Route& route = *route_;

        if (route.upstream == config::builtin_ban) {
            co_return Established{Outcome::ban};
        }
        if (route.upstream == config::builtin_echo) {
            if (!hello.bytes.empty()) {
                auto [ec, n] =
                    co_await net::async_write(client_, net::buffer(hello.bytes), use_tuple);
                if (ec) {
                    co_return Established{Outcome::client_reset};
                }
                counters_.to_client += n;
            }
            relaying_ = true;
            co_return Established{Outcome::ok, Next::echo};
        }
        if (route.upstream == config::builtin_health) {
            co_await admin::serve(std::move(client_), snap_->admin_handlers);
            co_return Established{Outcome::ok};
        }
        co_return co_await to_upstream(route, hello, deadline, first ? &*first : nullptr);
    }

    net::awaitable<Established> to_upstream(const routing::Route& route, HelloRead& hello,
                                            net::steady_timer& deadline_timer,
                                            const upstream::FirstAttempt* first) {
        const config::Via* via = route.via;
        std::string target;
        if (through_proxy(route)) {
            // SPEC §4.4; the SNI was validated as a host name by the parser, so it is safe in
            // a request line (SPEC §9).
            if (via->use_sni_as_target && hello.sni) {
                target = *hello.sni + ":" + std::to_string(via->target_port);
            } else if (via->target) {
                target = via->target->to_string();
            } else {
                co_return Established{Outcome::no_target};
            }
            connect_target_ = target;
        }
        const auto timeout = via != nullptr ? via->connect_timeout
                                            : std::chrono::milliseconds(default_connect_timeout);
        const auto connect_start = runtime::Clock::now();
        const auto deadline = connect_start + timeout;
        const config::Upstream& up = *route.target;
        ArmBeforeWait arm_deadline(*this, deadline_timer, deadline);
        auto connected = co_await upstream::connect(upstream_, ctx_.resolver, up.address, up.family,
                                                    snap_->config->resolve_interval, deadline,
                                                    &arm_deadline, first);
        if (arm_deadline.armed) {
            disarm(deadline_timer);
        }
        if (expired_ && connected.outcome == Outcome::ok) {
            // Connected as the deadline closed the socket: too late all the same.
            connected.outcome = Outcome::connect_timeout;
            connected.detail = "timed out connecting to " + up.address.host;
        }
        upstream_loopback_ = connected.peer.address().is_loopback();
        if (connected.outcome != Outcome::ok) {
            log::warn("upstream connect failed",
                      {{"server", srv_.server->name},
                       {"route", route.key},
                       {"upstream", route.upstream},
                       {"reason", std::string(to_string(connected.outcome))},
                       {"detail", connected.detail}});
            co_return Established{connected.outcome};
        }
        std::vector<std::uint8_t> leftover;
        if (through_proxy(route)) {
            std::vector<std::pair<std::string, std::string>> headers;
            headers.reserve(via->headers.size());
            for (const auto& h : via->headers) {
                headers.emplace_back(h.name, h.value);
            }
            auto hs = co_await connect::handshake(upstream_, target, headers, deadline);
            if (hs.outcome != Outcome::ok) {
                // Status line and auth scheme only: never a header value (SPEC §5).
                log::Fields f{{"server", srv_.server->name},
                              {"route", route.key},
                              {"upstream", route.upstream},
                              {"connect_target", target},
                              {"reason", std::string(to_string(hs.outcome))},
                              {"status", hs.status_line}};
                if (!hs.auth_scheme.empty()) {
                    f.emplace_back("proxy_authenticate", hs.auth_scheme);
                }
                log::warn("CONNECT refused", f);
                co_return Established{hs.outcome};
            }
            leftover = std::move(hs.leftover);
        }
        observe_connect(connect_start);

        // SPEC §4.6: the bytes read before routing go first, unchanged.
        if (!hello.bytes.empty()) {
            auto [ec, n] =
                co_await net::async_write(upstream_, net::buffer(hello.bytes), use_tuple);
            if (ec) {
                co_return Established{Outcome::upstream_reset};
            }
            counters_.to_upstream += n;
        }
        if (!leftover.empty()) {
            auto [ec, n] = co_await net::async_write(client_, net::buffer(leftover), use_tuple);
            if (ec) {
                co_return Established{Outcome::client_reset};
            }
            counters_.to_client += n;
        }
        if (hello.closed) {
            // The client half-closed right after its bytes: pass the FIN on.
            boost::system::error_code ignored;
            upstream_.shutdown(tcp::socket::shutdown_send, ignored);
        }
        ready_to_relay();
        co_return Established{Outcome::ok, Next::relay};
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
        if (!log::enabled(config::LogLevel::info) ||
            (outcome == Outcome::client_closed && !log::enabled(config::LogLevel::debug))) {
            return;
        }
        // Filled only here, so that a live tunnel holds no copy of these strings.
        log::AccessRecord rec;
        rec.server = srv_.server->name;
        rec.listen = listen_->first;
        rec.client = endpoint_text(peer_);
        rec.sni = sni_;
        rec.route = route_->key;
        rec.upstream = route_->upstream;
        rec.connect_target = connect_target_;
        rec.bytes_to_upstream = counters_.to_upstream;
        rec.bytes_to_client = counters_.to_client;
        rec.duration_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(runtime::Clock::now() - start_)
                .count());
        rec.result = to_string(outcome);
        log::access(rec);
    }

    tcp::socket client_;
    tcp::socket upstream_;
    SnapshotPtr snap_;
    const ServerRuntime& srv_;
    WorkerContext& ctx_;
    // The worker's drain count: a session destroyed with its io_context (after the server set,
    // which owns ctx_) still un-counts itself.
    std::atomic<std::uint64_t>* live_;
    const ListenEntry* listen_;  // in srv_.listener_metrics, held by the snapshot
    tcp::endpoint peer_;
    runtime::Clock::time_point start_;
    const routing::Route* route_ = nullptr;
    metrics::RouteMetrics* route_metrics_ = nullptr;
    tunnel::Counters counters_;
    std::uint64_t published_up_ = 0;
    std::uint64_t published_down_ = 0;
    std::string sni_;
    std::string connect_target_;
    runtime::Clock::time_point last_stats_{};
    std::uint32_t holds_ = 0;
    std::uint32_t deadline_generation_ = 0;
    std::optional<Outcome> aborted_;
    bool relaying_ = false;
    bool expired_ = false;
    bool upstream_loopback_ = true;  // echo: the client is both ends
    bool client_ended_ = false;      // the hello read found the client's EOF
};

Hold::Hold(Session& s) noexcept : s_(&s) {
    s.retain();
}

Hold::~Hold() {
    if (s_ != nullptr) {
        s_->release();
    }
}

}  // namespace

void start(tcp::socket client, const tcp::endpoint& peer, SnapshotPtr snapshot,
           std::size_t server_index, const ListenEntry& listen, WorkerContext& ctx) {
    Session::launch(std::move(client), peer, std::move(snapshot), server_index, listen, ctx);
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
