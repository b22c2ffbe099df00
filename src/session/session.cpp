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
#include <boost/intrusive_ptr.hpp>

#include <tpt/client_hello.hpp>
#include <tpt/connect.hpp>
#include <tpt/log.hpp>
#include <tpt/session.hpp>
#include <tpt/tunnel.hpp>

namespace tpt::session {

namespace {

using namespace std::chrono_literals;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t hello_read_step = 4096;

std::string endpoint_text(const tcp::endpoint& ep) {
    const auto a = ep.address();
    if (a.is_v6()) {
        return "[" + a.to_string() + "]:" + std::to_string(ep.port());
    }
    return a.to_string() + ":" + std::to_string(ep.port());
}

bool through_proxy(const routing::Route& route) noexcept {
    return route.via != nullptr && !route.via->is_direct();
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
    client_hello::ClientHelloParser parser;
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
        if (st == client_hello::HelloStatus::need_more && r.bytes.size() <= max_head_bytes) {
            continue;
        }
        if (st == client_hello::HelloStatus::done) {
            r.sni = parser.sni();
        }
        co_return r;
    }
}

// What the phases leave to do once their frames are gone.
enum class Next : std::uint8_t { finish, relay, echo };
struct Established {
    Outcome outcome = Outcome::ok;
    Next next = Next::finish;
};

class Session;
using SessionPtr = boost::intrusive_ptr<Session>;
class PhaseDeadline;

// One connection. Lives on the heap from accept to the end of its relay, owned by what is in
// flight for it (its phases' coroutine, a deadline wait, its relay) through SessionPtr; what a
// phase needs only while it runs (the hello buffer, the deadline timer, CONNECT state) lives
// in the phase's coroutine frame, which is freed before the relay starts.
class Session final : public runtime::Tickable, private tunnel::Observer {
public:
    // NOLINTNEXTLINE(modernize-pass-by-value): a trivially copyable 28-byte endpoint
    Session(tcp::socket client, const tcp::endpoint& peer, snapshot::SnapshotPtr snapshot,
            std::size_t server_index, snapshot::Admission admission, WorkerContext& ctx)
        : client_(std::move(client)),
          upstream_(client_.get_executor()),
          snap_(std::move(snapshot)),
          srv_(snap_->servers[server_index]),
          ctx_(ctx),
          admission_(std::move(admission)),
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
    }

    static void launch(tcp::socket client, const tcp::endpoint& peer,
                       snapshot::SnapshotPtr snapshot, std::size_t server_index,
                       snapshot::Admission admission, WorkerContext& ctx) {
        const SessionPtr s(new Session(std::move(client), peer, std::move(snapshot), server_index,
                                       std::move(admission), ctx));
        std::optional<upstream::Dial> dial;
        if (s->establish_at_once(dial)) {
            return;
        }
        net::co_spawn(ctx.worker.executor(), s->establish(std::move(dial)), PhasesDone{s});
    }

    friend void intrusive_ptr_add_ref(Session* s) noexcept { ++s->refs_; }
    friend void intrusive_ptr_release(Session* s) noexcept {
        if (--s->refs_ == 0) {
            delete s;
        }
    }

    void tick(runtime::Clock::time_point now) override;
    void abort_for_shutdown() override { abort(Outcome::shutdown); }

private:
    friend class PhaseDeadline;

    struct PhasesDone {
        SessionPtr s;
        void operator()(const std::exception_ptr& e, Established r) { s->established(e, r); }
    };

    // The deadline timer's handler: closes both sockets, so that the phase's pending
    // operation ends at once, unless the phase that armed it ended as the timer fired.
    struct DeadlineWait {
        SessionPtr s;
        std::uint32_t generation;
        void operator()(const boost::system::error_code& ec) const {
            if (!ec && generation == s->deadline_generation_) {
                s->expired_ = true;
                s->close_sockets();
            }
        }
    };

    void arm(net::steady_timer& timer, runtime::Clock::time_point at) {
        ++deadline_generation_;
        timer.expires_at(at);  // cancels the previous wait, if any
        timer.async_wait(DeadlineWait{SessionPtr(this), deadline_generation_});
    }

    void disarm(net::steady_timer& timer) {
        ++deadline_generation_;
        timer.cancel();
    }

    void close_sockets() {
        boost::system::error_code ignored;
        client_.close(ignored);
        upstream_.close(ignored);
    }

    void abort(Outcome why) {
        if (!aborted_) {
            aborted_ = why;
        }
        close_sockets();
    }

    void established(const std::exception_ptr& e, Established r);
    void relayed(Outcome outcome) override {
        const SessionPtr last(this, false);  // the relay's reference (established())
        finish(aborted_.value_or(outcome));
    }
    void abandoned() noexcept override { const SessionPtr last(this, false); }

    void publish_bytes();
    void choose(const routing::Route& route);
    void observe_connect(runtime::Clock::time_point connect_start);
    void ready_to_relay();
    bool establish_at_once(std::optional<upstream::Dial>& dial);
    net::awaitable<Established> establish(std::optional<upstream::Dial> dial);
    net::awaitable<Established> builtin(const routing::Route& route, HelloRead& hello);
    net::awaitable<Established> to_upstream(const routing::Route& route, HelloRead& hello,
                                            PhaseDeadline& deadline,
                                            std::optional<upstream::Dial>& dial);
    net::awaitable<Outcome> forward_first(const HelloRead& hello,
                                          const std::vector<std::uint8_t>& leftover);
    void log_connect_failure(const routing::Route& route, const upstream::ConnectResult& r);
    void log_refused(const routing::Route& route, const connect::HandshakeResult& r);
    void finish(Outcome outcome);

    tcp::socket client_;
    tcp::socket upstream_;
    snapshot::SnapshotPtr snap_;
    const snapshot::ServerRuntime& srv_;
    WorkerContext& ctx_;
    snapshot::Admission admission_;
    upstream::Lease lease_;  // after snap_, whose pools hold the member it counts on
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
    std::uint32_t refs_ = 0;
    std::uint32_t deadline_generation_ = 0;
    std::optional<Outcome> aborted_;
    bool relaying_ = false;
    bool expired_ = false;
    bool upstream_loopback_ = true;  // echo: the client is both ends
    bool client_ended_ = false;      // the hello read found the client's EOF
};

// The session's one deadline for its phases before the relay (runtime::Deadline), in the
// frame of establish(): a phase starts it, waits arm it, the phase's end stops it.
class PhaseDeadline final : public runtime::Deadline {
public:
    explicit PhaseDeadline(Session& s) : session_(s), timer_(s.client_.get_executor()) {}
    PhaseDeadline(const PhaseDeadline&) = delete;
    PhaseDeadline& operator=(const PhaseDeadline&) = delete;
    ~PhaseDeadline() { stop(); }

    void start(runtime::Clock::time_point at) {
        stop();
        at_ = at;
    }
    void stop() {
        if (armed_) {
            armed_ = false;
            session_.disarm(timer_);
        }
    }

    runtime::Clock::time_point at() const noexcept override { return at_; }
    bool passed() const noexcept override { return session_.expired_; }
    void arm() override {
        if (!armed_) {
            armed_ = true;
            session_.arm(timer_, at_);
        }
    }
    net::awaitable<void> reached() override {
        arm();
        co_await timer_.async_wait(use_tuple);
    }

private:
    Session& session_;
    net::steady_timer timer_;
    runtime::Clock::time_point at_{};
    bool armed_ = false;
};

void Session::tick(runtime::Clock::time_point now) {
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
        log::info("tunnel in-flight", {{"server", srv_.server->name},
                                       {"route", route_->key},
                                       {"client", endpoint_text(peer_)},
                                       {"connect_target", connect_target_},
                                       {"bytes_to_upstream", std::to_string(counters_.to_upstream)},
                                       {"bytes_to_client", std::to_string(counters_.to_client)}});
    }
}

void Session::established(const std::exception_ptr& e, Established r) {
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
    SessionPtr(this).detach();  // the relay's reference, taken back in relayed()/abandoned()
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

void Session::publish_bytes() {
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

void Session::choose(const routing::Route& route) {
    const auto& routes = srv_.table->routes();
    const auto index = static_cast<std::size_t>(&route - routes.data());
    route_ = &route;
    route_metrics_ = srv_.route_metrics[index].get();
    route_metrics_->connection_opened();
}

void Session::observe_connect(runtime::Clock::time_point connect_start) {
    route_metrics_->observe_connect_seconds(
        std::chrono::duration<double>(runtime::Clock::now() - connect_start).count());
}

void Session::ready_to_relay() {
    last_stats_ = runtime::Clock::now();
    counters_.last_activity = last_stats_;
    relaying_ = true;
}

// The phases without a coroutine, in the common case that needs no wait: a server that
// reads nothing first (no `tls`), whose route goes straight to an upstream whose address is
// known now (an IP literal or a cached name), connected within the connect() call (loopback,
// a near peer). This spares the coroutine's frames and its completion's trip through the
// worker's queue (bench/RESULTS.md). True: the relay runs. False: establish() does the
// phases, finishing the attempt this left in `dial` if it started one.
bool Session::establish_at_once(std::optional<upstream::Dial>& dial) {
    if (srv_.server->tls) {
        return false;
    }
    const routing::Route& route = srv_.table->match(std::nullopt);
    if (route.target == nullptr || through_proxy(route)) {
        return false;
    }
    const auto connect_start = runtime::Clock::now();
    dial.emplace(snap_->pool(*route.target), snap_->config->resolve_interval, false);
    if (!dial->at_once(upstream_, ctx_.resolver)) {
        return false;
    }
    lease_ = dial->lease();
    choose(route);
    upstream_loopback_ = dial->peer().address().is_loopback();
    observe_connect(connect_start);
    ready_to_relay();
    established(nullptr, Established{Outcome::ok, Next::relay});
    return true;
}

// Every phase before the relay: ClientHello, route, connect, CONNECT, first bytes.
net::awaitable<Established> Session::establish(std::optional<upstream::Dial> dial) {
    const config::Server& server = *srv_.server;
    PhaseDeadline deadline(*this);
    HelloRead hello;
    if (server.tls) {
        deadline.start(runtime::Clock::now() + server.client_hello_timeout);
        deadline.arm();  // a read always waits for the client
        hello = co_await read_hello(client_);
        deadline.stop();
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
    choose(
        srv_.table->match(hello.sni ? std::optional<std::string_view>(*hello.sni) : std::nullopt));
    if (route_->target == nullptr) {
        co_return co_await builtin(*route_, hello);
    }
    co_return co_await to_upstream(*route_, hello, deadline, dial);
}

// The built-in upstreams (SPEC §3): ban, echo, health.
net::awaitable<Established> Session::builtin(const routing::Route& route, HelloRead& hello) {
    if (route.upstream == config::builtin_echo) {
        if (!hello.bytes.empty()) {
            auto [ec, n] = co_await net::async_write(client_, net::buffer(hello.bytes), use_tuple);
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
    co_return Established{Outcome::ban};
}

net::awaitable<Established> Session::to_upstream(const routing::Route& route, HelloRead& hello,
                                                 PhaseDeadline& deadline,
                                                 std::optional<upstream::Dial>& dial) {
    const config::Via* via = route.via;
    if (through_proxy(route)) {
        // SPEC §4.4; the SNI was validated as a host name by the parser, so it is safe in a
        // request line (SPEC §9).
        if (via->use_sni_as_target && hello.sni) {
            connect_target_ = *hello.sni + ":" + std::to_string(via->target_port);
        } else if (via->target) {
            connect_target_ = via->target->to_string();
        } else {
            co_return Established{Outcome::no_target};
        }
    }
    const auto connect_start = runtime::Clock::now();
    deadline.start(connect_start +
                   (via != nullptr ? via->connect_timeout : config::default_connect_timeout));
    if (!dial) {
        dial.emplace(snap_->pool(*route.target), snap_->config->resolve_interval,
                     through_proxy(route));
    }
    std::vector<std::uint8_t> leftover;
    for (;;) {  // SPEC §13: a proxy that fails the CONNECT exchange hands over to the next member
        const auto connected = co_await dial->finish(upstream_, ctx_.resolver, deadline);
        upstream_loopback_ = connected.peer.address().is_loopback();
        if (connected.outcome != Outcome::ok) {
            log_connect_failure(route, connected);
            co_return Established{connected.outcome};
        }
        if (!through_proxy(route)) {
            break;
        }
        auto hs = co_await connect::handshake(upstream_, connect_target_, via->headers, deadline);
        const bool next_member = dial->proxied(hs.outcome, hs.status_line);
        if (hs.outcome == Outcome::ok) {
            leftover = std::move(hs.leftover);
            break;
        }
        if (!next_member) {
            log_refused(route, hs);
            co_return Established{hs.outcome};
        }
    }
    lease_ = dial->lease();
    deadline.stop();
    observe_connect(connect_start);
    const auto sent = co_await forward_first(hello, leftover);
    if (sent != Outcome::ok) {
        co_return Established{sent};
    }
    ready_to_relay();
    co_return Established{Outcome::ok, Next::relay};
}

// SPEC §4.6: the bytes read before routing go upstream first, unchanged; bytes that followed
// the proxy's answer go to the client (SPEC §9).
net::awaitable<Outcome> Session::forward_first(const HelloRead& hello,
                                               const std::vector<std::uint8_t>& leftover) {
    if (!hello.bytes.empty()) {
        auto [ec, n] = co_await net::async_write(upstream_, net::buffer(hello.bytes), use_tuple);
        if (ec) {
            co_return Outcome::upstream_reset;
        }
        counters_.to_upstream += n;
    }
    if (!leftover.empty()) {
        auto [ec, n] = co_await net::async_write(client_, net::buffer(leftover), use_tuple);
        if (ec) {
            co_return Outcome::client_reset;
        }
        counters_.to_client += n;
    }
    if (hello.closed) {
        // The client half-closed right after its bytes: pass the FIN on.
        boost::system::error_code ignored;
        upstream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
    co_return Outcome::ok;
}

void Session::log_connect_failure(const routing::Route& route, const upstream::ConnectResult& r) {
    log::warn("upstream connect failed", {{"server", srv_.server->name},
                                          {"route", route.key},
                                          {"upstream", route.upstream},
                                          {"reason", std::string(to_string(r.outcome))},
                                          {"detail", r.detail}});
}

// Status line and auth scheme only: never a header value (SPEC §5).
void Session::log_refused(const routing::Route& route, const connect::HandshakeResult& r) {
    log::Fields f{{"server", srv_.server->name},
                  {"route", route.key},
                  {"upstream", route.upstream},
                  {"connect_target", connect_target_},
                  {"reason", std::string(to_string(r.outcome))},
                  {"status", r.status_line}};
    if (!r.auth_scheme.empty()) {
        f.emplace_back("proxy_authenticate", r.auth_scheme);
    }
    log::warn("CONNECT refused", f);
}

void Session::finish(Outcome outcome) {
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
    rec.listen = admission_.listen();
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

}  // namespace

void start(tcp::socket client, const tcp::endpoint& peer, snapshot::SnapshotPtr snapshot,
           std::size_t server_index, snapshot::Admission admission, WorkerContext& ctx) {
    Session::launch(std::move(client), peer, std::move(snapshot), server_index,
                    std::move(admission), ctx);
}

}  // namespace tpt::session
