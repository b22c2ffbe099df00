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

#include <tpt/connect.hpp>
#include <tpt/log.hpp>
#include <tpt/session.hpp>
#include <tpt/tunnel.hpp>

#include "inbound.hpp"
#include <sys/socket.h>

namespace tpt::session {

namespace {

using namespace std::chrono_literals;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string endpoint_text(const tcp::endpoint& ep) {
    const auto a = ep.address();
    if (a.is_v6()) {
        return "[" + a.to_string() + "]:" + std::to_string(ep.port());
    }
    return a.to_string() + ":" + std::to_string(ep.port());
}

// Through an HTTP proxy with CONNECT: a named upstream with a via that is not direct. The
// built-ins, `original` included, always connect directly.
bool through_proxy(const routing::Route& route) noexcept {
    return route.target != nullptr && route.via != nullptr && !route.via->is_direct();
}

// SPEC §12: the status an explicit proxy answers a failure with, and its reason phrase.
std::string_view answer_status(Outcome why) noexcept {
    switch (why) {
        case Outcome::ban:
            return "403 Forbidden";
        case Outcome::connect_timeout:
            return "504 Gateway Timeout";
        case Outcome::bad_request:
            return "400 Bad Request";
        case Outcome::method_not_allowed:
            return "405 Method Not Allowed";
        case Outcome::client_hello_timeout:
            return "408 Request Timeout";
        default:
            return "502 Bad Gateway";
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

    static void launch(tcp::socket client, const tcp::endpoint& peer, const tcp::endpoint& local,
                       snapshot::SnapshotPtr snapshot, std::size_t server_index,
                       snapshot::Admission admission, WorkerContext& ctx) {
        const SessionPtr s(new Session(std::move(client), peer, std::move(snapshot), server_index,
                                       std::move(admission), ctx));
        std::optional<upstream::Dial> dial;
        if (s->establish_at_once(dial)) {
            return;
        }
        net::co_spawn(ctx.worker.executor(), s->establish(std::move(dial), local), PhasesDone{s});
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
                s->answer_failure(s->expiry_);  // an explicit proxy's 408 or 504, first
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
    net::awaitable<Established> establish(std::optional<upstream::Dial> dial, tcp::endpoint local);
    std::optional<Established> first_bytes_end(const Inbound& in);
    net::awaitable<Established> builtin(const routing::Route& route, Inbound& in);
    net::awaitable<Established> to_upstream(const routing::Route& route, Inbound& in,
                                            PhaseDeadline& deadline,
                                            std::optional<upstream::Dial>& dial);
    std::optional<Outcome> plan(const routing::Route& route, const Inbound& in,
                                address::HostPort& original, std::optional<upstream::Dial>& dial);
    std::optional<Outcome> destination(const routing::Route& route, const Inbound& in,
                                       address::HostPort& host);
    std::optional<std::string> connect_target(const config::Via& via, const Inbound& in) const;
    net::awaitable<Outcome> confirm(const Inbound& in);
    net::awaitable<Outcome> confirm_tunnel(Inbound& in, PhaseDeadline& deadline);
    std::optional<Outcome> connected_to(const routing::Route& route,
                                        const upstream::ConnectResult& connected);
    net::awaitable<Outcome> sni_matches(Inbound& in, PhaseDeadline& deadline);
    bool forward_now(const Inbound& in, const std::vector<std::uint8_t>& leftover,
                     std::size_t& done);
    net::awaitable<Outcome> forward_first(const Inbound& in,
                                          const std::vector<std::uint8_t>& leftover,
                                          std::size_t done);
    void answer_failure(Outcome why);
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
    // The access line's names, made only for connections that have one: a plain tunnel
    // holds no string.
    struct Names {
        std::string sni, connect_target;
        std::optional<tcp::endpoint> original_dst;  // formatted only for the access log
        std::string refusal;  // what an explicit proxy's error answer says (SPEC §12)
    };
    std::unique_ptr<Names> names_;
    Names& names() {
        if (!names_) {
            names_ = std::make_unique<Names>();
        }
        return *names_;
    }
    runtime::Clock::time_point last_stats_{};
    std::uint32_t refs_ = 0;
    std::uint32_t deadline_generation_ = 0;
    std::optional<Outcome> aborted_;
    bool relaying_ = false;
    bool expired_ = false;
    Outcome expiry_ = Outcome::client_hello_timeout;  // what the running deadline's end means
    bool upstream_loopback_ = true;                   // echo: the client is both ends
    bool client_ended_ = false;                       // the hello read found the client's EOF
    bool confirmed_ = false;                          // an explicit proxy answered 200 (SPEC §12)
};

// The session's one deadline for its phases before the relay (runtime::Deadline), in the
// frame of establish(): a phase starts it, waits arm it, the phase's end stops it.
class PhaseDeadline final : public runtime::Deadline {
public:
    explicit PhaseDeadline(Session& s) : session_(s), timer_(s.client_.get_executor()) {}
    PhaseDeadline(const PhaseDeadline&) = delete;
    PhaseDeadline& operator=(const PhaseDeadline&) = delete;
    ~PhaseDeadline() { stop(); }

    // `why`: the outcome if `at` passes (client_hello_timeout or connect_timeout).
    void start(runtime::Clock::time_point at, Outcome why) {
        stop();
        at_ = at;
        session_.expiry_ = why;
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
        log::info("tunnel in-flight",
                  {{"server", srv_.server->name},
                   {"route", route_->key},
                   {"client", endpoint_text(peer_)},
                   {"connect_target", names_ ? names_->connect_target : std::string{}},
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
        answer_failure(r.outcome);
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
    if (reading_of(*srv_.server) != Reading::none || srv_.server->transparent) {
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

// Every phase before the relay: first bytes (ClientHello, HTTP head, CONNECT head), route,
// connect, CONNECT, the explicit proxy's answer, first bytes on.
// `local`: the client socket's local address, or port 0 when it must be asked for.
net::awaitable<Established> Session::establish(std::optional<upstream::Dial> dial,
                                               tcp::endpoint local) {
    const config::Server& server = *srv_.server;
    PhaseDeadline deadline(*this);
    Inbound in;
    if (const auto how = reading_of(server); how != Reading::none) {
        deadline.start(runtime::Clock::now() + server.client_hello_timeout,
                       Outcome::client_hello_timeout);
        deadline.arm();  // a read always waits for the client
        in = co_await read_inbound(client_, how);
        deadline.stop();
        if (auto end = first_bytes_end(in)) {
            co_return *end;
        }
    }
    if (server.transparent) {
        // SPEC §11: where the application was going; nothing when not redirected.
        boost::system::error_code ec;
        if (local.port() == 0) {  // a wildcard listener: the address the client reached
            local = client_.local_endpoint(ec);
        }
        in.original = ec ? std::nullopt : runtime::original_destination(client_, local);
        if (in.original) {
            names().original_dst = in.original;
        }
    }
    client_ended_ = in.closed;
    if (in.name) {
        names().sni = *in.name;
    }
    choose(srv_.table->match(in.name ? std::optional<std::string_view>(*in.name) : std::nullopt));
    if (in.refused != Outcome::ok) {
        co_return Established{in.refused};
    }
    if (route_->target == nullptr && route_->upstream != config::builtin_original) {
        co_return co_await builtin(*route_, in);
    }
    co_return co_await to_upstream(*route_, in, deadline, dial);
}

// The ends the first bytes can bring before any route: a deadline, a reset, a silent close.
std::optional<Established> Session::first_bytes_end(const Inbound& in) {
    if (expired_) {
        choose(srv_.table->default_route());
        return Established{Outcome::client_hello_timeout};
    }
    if (in.reset) {
        return Established{Outcome::client_reset};
    }
    if (in.closed && in.bytes.empty() && in.refused == Outcome::ok) {
        return Established{Outcome::client_closed};
    }
    return std::nullopt;
}

// The built-in upstreams (SPEC §3): ban, echo, health.
net::awaitable<Established> Session::builtin(const routing::Route& route, Inbound& in) {
    if (route.upstream == config::builtin_echo) {
        const auto confirmed = co_await confirm(in);
        if (confirmed != Outcome::ok) {
            co_return Established{confirmed};
        }
        if (!in.bytes.empty()) {
            auto [ec, n] = co_await net::async_write(client_, net::buffer(in.bytes), use_tuple);
            if (ec) {
                co_return Established{Outcome::client_reset};
            }
            counters_.to_client += n;
        }
        relaying_ = true;
        co_return Established{Outcome::ok, Next::echo};
    }
    if (route.upstream == config::builtin_health && !srv_.server->accept_connect) {
        co_await admin::serve(std::move(client_), snap_->admin_handlers);
        co_return Established{Outcome::ok};
    }
    co_return Established{Outcome::ban};
}

// Before the connect: what to ask a proxy for, where `original` goes (into `original` for
// SPEC §12; the Dial keeps a reference), and the Dial itself unless at_once() made it.
std::optional<Outcome> Session::plan(const routing::Route& route, const Inbound& in,
                                     address::HostPort& original,
                                     std::optional<upstream::Dial>& dial) {
    if (through_proxy(route)) {
        auto target = connect_target(*route.via, in);
        if (!target) {
            // SPEC §11: a transparent connection that was not redirected lacks what it needs.
            return srv_.server->transparent && !in.original ? Outcome::no_original_dst
                                                            : Outcome::no_target;
        }
        names().connect_target = std::move(*target);
    }
    if (const auto refused = destination(route, in, original)) {
        return refused;
    }
    if (!dial) {
        if (route.target == nullptr && in.original && !srv_.server->accept_connect) {
            dial.emplace(*in.original);        // `original` (SPEC §11): one address, always direct
        } else if (route.target == nullptr) {  // SPEC §12: the CONNECT's host:port, directly
            dial.emplace(original, address::Family::any, snap_->config->resolve_interval);
        } else {
            dial.emplace(snap_->pool(*route.target), snap_->config->resolve_interval,
                         through_proxy(route));
        }
    }
    return std::nullopt;
}

net::awaitable<Established> Session::to_upstream(const routing::Route& route, Inbound& in,
                                                 PhaseDeadline& deadline,
                                                 std::optional<upstream::Dial>& dial) {
    const config::Via* via = route.via;
    address::HostPort original;  // the `original` upstream's host:port (SPEC §12)
    const bool fresh = !dial;    // else establish_at_once() started its first attempt
    if (const auto refused = plan(route, in, original, dial)) {
        co_return Established{*refused};
    }
    const auto connect_start = runtime::Clock::now();
    deadline.start(connect_start + (via != nullptr && route.target != nullptr
                                        ? via->connect_timeout
                                        : config::default_connect_timeout),
                   Outcome::connect_timeout);
    std::vector<std::uint8_t> leftover;
    // The first address without waiting: on loopback, and to any peer that answers the SYN
    // within connect(), the connection is up without a coroutine step.
    bool up_at_once = fresh && dial->at_once(upstream_, ctx_.resolver);
    for (;;) {  // SPEC §13: a proxy that fails the CONNECT exchange hands over to the next member
        upstream::ConnectResult connected;
        if (up_at_once) {  // not `?:` around co_await (GCC 12)
            connected.peer = dial->peer();
            up_at_once = false;
        } else {
            connected = co_await dial->finish(upstream_, ctx_.resolver, deadline);
        }
        if (const auto failed = connected_to(route, connected)) {
            co_return Established{*failed};
        }
        if (!through_proxy(route)) {
            break;
        }
        auto hs =
            co_await connect::handshake(upstream_, names().connect_target, via->headers, deadline);
        const bool next_member = dial->proxied(hs.outcome, hs.status_line);
        if (hs.outcome == Outcome::ok) {
            leftover = std::move(hs.leftover);
            break;
        }
        if (!next_member) {
            log_refused(route, hs);
            names().refusal = hs.status_line;
            co_return Established{hs.outcome};
        }
    }
    lease_ = dial->lease();
    deadline.stop();
    observe_connect(connect_start);
    auto sent = Outcome::ok;
    if (srv_.server->accept_connect) {
        sent = co_await confirm_tunnel(in, deadline);
    }
    std::size_t done = 0;
    if (sent == Outcome::ok && !forward_now(in, leftover, done)) {
        sent = co_await forward_first(in, leftover, done);
    }
    if (sent != Outcome::ok) {
        co_return Established{sent};
    }
    ready_to_relay();
    co_return Established{Outcome::ok, Next::relay};
}

// After each connect: the outcome that ends the session (a failure, or a loop), or nothing.
std::optional<Outcome> Session::connected_to(const routing::Route& route,
                                             const upstream::ConnectResult& connected) {
    upstream_loopback_ = connected.peer.address().is_loopback();
    if (connected.outcome != Outcome::ok) {
        log_connect_failure(route, connected);
        return connected.outcome;
    }
    if (route.target == nullptr && snapshot::is_own_listen(*snap_, connected.peer)) {
        return Outcome::loop;  // a name that resolved to tpt itself
    }
    return std::nullopt;
}

// Where the `original` upstream goes, or why it cannot: SPEC §11, a transparent connection's
// original destination (dialled as the endpoint it is); SPEC §12, the CONNECT host:port, into
// `host`. tpt's own listen addresses are refused (a loop). Other upstreams: nothing to do.
std::optional<Outcome> Session::destination(const routing::Route& route, const Inbound& in,
                                            address::HostPort& host) {
    if (route.target != nullptr) {
        return std::nullopt;
    }
    if (!srv_.server->accept_connect) {
        if (!in.original) {
            return Outcome::no_original_dst;
        }
        return snapshot::is_own_listen(*snap_, *in.original) ? std::optional(Outcome::loop)
                                                             : std::nullopt;
    }
    host = address::HostPort{*in.name, in.connect_port, in.name_is_ipv6};
    boost::system::error_code ec;
    const auto literal = net::ip::make_address(host.host, ec);
    if (!ec && snapshot::is_own_listen(*snap_, tcp::endpoint(literal, host.port))) {
        return Outcome::loop;
    }
    return std::nullopt;
}

// SPEC §4.4, §11, §12: what to ask the proxy for. An explicit proxy passes its client's
// host:port on; use_sni_as_target asks for the name (SNI or Host, validated as a host name by
// its parser, so safe in a request line: SPEC §9) with the connection's port, or, without a
// name, for a transparent connection's original address; else the static target.
std::optional<std::string> Session::connect_target(const config::Via& via,
                                                   const Inbound& in) const {
    if (srv_.server->accept_connect) {
        return address::host_port_text(*in.name, in.connect_port, in.name_is_ipv6);
    }
    const auto original_port = in.original ? std::optional(in.original->port()) : std::nullopt;
    if (via.use_sni_as_target && in.name && srv_.server->transparent && !original_port &&
        !via.target_port) {
        return std::nullopt;  // the name's port is the original one, and there is none
    }
    if (via.use_sni_as_target && in.name) {
        return address::host_port_text(*in.name, via.port_for(in.http, original_port),
                                       in.name_is_ipv6);
    }
    if (via.use_sni_as_target && in.original) {
        return endpoint_text(*in.original);
    }
    if (via.target) {
        return via.target->to_string();
    }
    return std::nullopt;
}

// SPEC §12: an explicit proxy tells its client the tunnel is open (RFC 9110 §9.3.6: a 2xx to
// CONNECT has no Content-Length or Transfer-Encoding). Other servers: nothing to say.
net::awaitable<Outcome> Session::confirm(const Inbound& /*in*/) {
    if (!srv_.server->accept_connect) {
        co_return Outcome::ok;
    }
    static constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
    auto [ec, n] = co_await net::async_write(client_, net::buffer(established), use_tuple);
    confirmed_ = true;
    co_return ec ? Outcome::client_reset : Outcome::ok;
}

// An explicit proxy's tunnel to an upstream: confirmed, then with sni_must_match the hello
// that follows is checked (sni_matches).
net::awaitable<Outcome> Session::confirm_tunnel(Inbound& in, PhaseDeadline& deadline) {
    const auto sent = co_await confirm(in);
    if (sent != Outcome::ok || !srv_.server->sni_must_match) {
        co_return sent;
    }
    co_return co_await sni_matches(in, deadline);
}

// SPEC §12 sni_must_match: the ClientHello the client opens its tunnel with (read now, within
// client_hello_timeout, if it did not come with the CONNECT head) must name the host the route
// was chosen by. Bytes that are no ClientHello, or a hello without a name, pass.
net::awaitable<Outcome> Session::sni_matches(Inbound& in, PhaseDeadline& deadline) {
    deadline.start(runtime::Clock::now() + srv_.server->client_hello_timeout,
                   Outcome::client_hello_timeout);
    deadline.arm();
    const auto hello = co_await read_hello_name(client_, in.bytes);
    deadline.stop();
    if (expired_) {
        co_return Outcome::client_hello_timeout;
    }
    if (hello.reset) {
        co_return Outcome::client_reset;
    }
    if (hello.sni && in.name && *hello.sni != *in.name) {
        log::warn("SNI does not match the routed host", {{"server", srv_.server->name},
                                                         {"route", route_->key},
                                                         {"host", *in.name},
                                                         {"sni", *hello.sni}});
        co_return Outcome::sni_mismatch;
    }
    co_return Outcome::ok;
}

// SPEC §4.6: the bytes read before routing go upstream first, unchanged; bytes that followed
// the proxy's answer go to the client (SPEC §9).
// The first bytes in one send() without waiting, when the upstream socket takes them whole
// (a new connection's send buffer is empty) and nothing goes back to the client: true when
// all is done. Else `done` bytes went, and forward_first() does the rest.
bool Session::forward_now(const Inbound& in, const std::vector<std::uint8_t>& leftover,
                          std::size_t& done) {
    if (!leftover.empty()) {
        return false;
    }
    if (!in.bytes.empty()) {
        const auto n = ::send(upstream_.native_handle(), in.bytes.data(), in.bytes.size(),
                              MSG_NOSIGNAL | MSG_DONTWAIT);
        done = n > 0 ? static_cast<std::size_t>(n) : 0;  // an error: async_write reports it
        counters_.to_upstream += done;
        if (done != in.bytes.size()) {
            return false;
        }
    }
    if (in.closed) {
        boost::system::error_code ignored;
        upstream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
    return true;
}

// `done`: the bytes of in.bytes forward_now() sent already.
net::awaitable<Outcome> Session::forward_first(const Inbound& in,
                                               const std::vector<std::uint8_t>& leftover,
                                               std::size_t done) {
    if (in.bytes.size() > done) {
        auto [ec, n] = co_await net::async_write(
            upstream_, net::buffer(in.bytes.data() + done, in.bytes.size() - done), use_tuple);
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
    if (in.closed) {
        // The client half-closed right after its bytes: pass the FIN on.
        boost::system::error_code ignored;
        upstream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
    co_return Outcome::ok;
}

// SPEC §12: an explicit proxy answers every failure before it closes, with a one-line reason.
// The answer is a few hundred bytes to a socket that has sent nothing yet: one non-blocking
// send() takes it whole (a client that reset gets nothing).
void Session::answer_failure(Outcome why) {
    if (!srv_.server->accept_connect || confirmed_ || why == Outcome::client_reset ||
        why == Outcome::client_closed || !client_.is_open()) {
        return;
    }
    std::string reason = "tpt: " + std::string(to_string(why));
    if (names_ && !names_->sni.empty()) {
        reason += " (" + names_->sni + ", route " + (route_ != nullptr ? route_->key : "-") + ")";
    }
    if (names_ && !names_->refusal.empty()) {
        reason += ": the proxy answered " + names_->refusal;
    }
    if (why == Outcome::method_not_allowed) {
        reason +=
            ": this is a CONNECT proxy (HTTPS_PROXY); plain-HTTP proxy requests "
            "(GET http://...) are not served";
    }
    reason += "\n";
    const std::string answer =
        "HTTP/1.1 " + std::string(answer_status(why)) +
        "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(reason.size()) +
        "\r\nConnection: close\r\n\r\n" + reason;
    boost::system::error_code ignored;
    client_.send(net::buffer(answer), tcp::socket::message_flags{}, ignored);
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
                  {"connect_target", names_ ? names_->connect_target : std::string{}},
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
    if (names_) {
        rec.sni = names_->sni;
        rec.connect_target = names_->connect_target;
        rec.original_dst = names_->original_dst ? endpoint_text(*names_->original_dst) : "";
    }
    rec.route = route_->key;
    rec.upstream = route_->upstream;
    rec.bytes_to_upstream = counters_.to_upstream;
    rec.bytes_to_client = counters_.to_client;
    rec.duration_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(runtime::Clock::now() - start_)
            .count());
    rec.result = to_string(outcome);
    log::access(rec);
}

}  // namespace

void start(tcp::socket client, const tcp::endpoint& peer, const tcp::endpoint& local,
           snapshot::SnapshotPtr snapshot, std::size_t server_index, snapshot::Admission admission,
           WorkerContext& ctx) {
    Session::launch(std::move(client), peer, local, std::move(snapshot), server_index,
                    std::move(admission), ctx);
}

}  // namespace tpt::session
