// upstream: resolve an upstream host (cached per worker, re-resolved every resolve_interval)
// and connect to it, trying every address within one deadline; an upstream's members (SPEC
// §13): their health, shared by every worker, the order a connection tries them in, and the
// active probes.
// Thread affinity: a Resolver, a Dial and their sockets belong to one worker, with no locks;
// a Member is shared by every thread through atomics; a Prober lives on the control thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <tpt/address.hpp>
#include <tpt/config.hpp>
#include <tpt/metrics.hpp>
#include <tpt/outcome.hpp>
#include <tpt/runtime.hpp>

namespace tpt::upstream {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Per-worker DNS cache. Entries older than the refresh interval are re-resolved on next use;
// when that fails, the stale addresses keep serving and the next use retries.
class Resolver {
public:
    explicit Resolver(const net::any_io_executor& ex) : resolver_(ex) {}

    struct Answer {
        std::vector<tcp::endpoint> endpoints;  // empty: failed
        std::string error;
    };
    net::awaitable<Answer> resolve(const address::HostPort& hp, address::Family family,
                                   std::chrono::milliseconds refresh);
    // Without waiting: the answer for an IP literal or a fresh cache entry, else nullopt
    // (resolve() must ask the resolver).
    std::optional<Answer> at_once(const address::HostPort& hp, address::Family family,
                                  std::chrono::milliseconds refresh) const;
    // The first address at_once() would answer, without copying the list: nullopt when it
    // would answer nullopt or no address.
    std::optional<tcp::endpoint> first_at_once(const address::HostPort& hp, address::Family family,
                                               std::chrono::milliseconds refresh) const;

private:
    struct Entry {
        std::vector<tcp::endpoint> endpoints;
        runtime::Clock::time_point resolved_at;
    };
    // Found without building a key: std::less<> compares a tuple of views with the keys.
    using Key = std::tuple<std::string, std::uint16_t, address::Family>;
    const Entry* fresh_entry(const address::HostPort& hp, address::Family family,
                             std::chrono::milliseconds refresh) const;

    tcp::resolver resolver_;
    std::map<Key, Entry, std::less<>> cache_;
};

// --- Members and pools (SPEC §13) ------------------------------------------------------

// A member of an upstream marked down is tried again by connections this long after its last
// failure when no active probe watches it (health.interval 0), as an ejected host returns in
// Envoy's outlier detection: a passive check alone has no other way to see it recover.
inline constexpr std::chrono::seconds passive_retry{10};

class Member;
struct ProbeSettings;  // what a member's probe loop needs (Prober)

// One live tunnel counted on its member (least_connections), from the connect until the
// tunnel ends. Empty when nothing is counted.
class Lease {
public:
    Lease() = default;
    explicit Lease(Member& member) noexcept;
    Lease(Lease&& o) noexcept : member_(std::exchange(o.member_, nullptr)) {}
    Lease& operator=(Lease&& o) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    void release() noexcept;

private:
    Member* member_ = nullptr;
};

// The health of one member of an upstream: shared by every worker (atomics, no lock on the
// connect path) and by its active prober, and kept across reloads while the config still
// lists the member under the same upstream name and URL. Passive checks: every connection
// reports how its connect went; active ones: Prober. fail_after consecutive failures mark it
// down, pass_after consecutive successes up again (counted without a lock: two threads
// failing at once may each reset the other's success count, never the reverse).
class Member {
public:
    Member(std::string upstream, std::string url, metrics::MemberMetricsPtr metrics);
    Member(const Member&) = delete;
    Member& operator=(const Member&) = delete;

    const std::string& upstream() const noexcept { return upstream_; }
    const std::string& url() const noexcept { return url_; }
    bool up() const noexcept { return up_.load(std::memory_order_relaxed); }
    std::int64_t live() const noexcept { return live_.load(std::memory_order_relaxed); }

    // Whether a connection should try it in strategy order: up, or down without an active
    // probe and passive_retry after its last failure (`now` is read only then).
    bool usable(const config::HealthCheck& health) const noexcept;

    // A connection went through it (counted; a success unless `confirm_later`: the CONNECT
    // exchange through it decides, with succeeded()).
    void connected(const config::HealthCheck& health, bool confirm_later);
    void succeeded(const config::HealthCheck& health);
    // `detail` goes to the log line of the transition (never a credential).
    void failed(Outcome reason, const config::HealthCheck& health, std::string_view detail);

private:
    friend class Lease;
    friend class Prober;

    const std::string upstream_;
    const std::string url_;
    const metrics::MemberMetricsPtr metrics_;
    std::atomic<bool> up_{true};
    std::atomic<std::uint32_t> failures_{0};   // consecutive
    std::atomic<std::uint32_t> successes_{0};  // consecutive, while down
    std::atomic<std::int64_t> retry_at_{0};    // runtime::Clock ticks; passive recovery
    std::atomic<std::int64_t> live_{0};        // tunnels (least_connections only)

    // Control thread only (Prober): what its probe loop checks, and whether one runs.
    std::shared_ptr<const ProbeSettings> probe_;
    bool probing_ = false;
};
using MemberPtr = std::shared_ptr<Member>;

// An upstream of one snapshot: its config and its members (parallel to config.members).
class Pool {
public:
    Pool(const config::Upstream& config, std::vector<MemberPtr> members)
        : config_(&config), members_(std::move(members)) {}

    const config::Upstream& config() const noexcept { return *config_; }
    const std::vector<MemberPtr>& members() const noexcept { return members_; }
    Member& member(std::size_t i) const noexcept { return *members_[i]; }

    // The order in which a connection tries the members now (indices into `out`, returns how
    // many): the usable ones in strategy order (failover: as listed; round_robin: the next
    // start in turn; least_connections: fewest live tunnels, ties in turn), then the others
    // as listed: when every member is down they are all tried anyway, never refused on stale
    // health.
    std::size_t order(std::span<std::uint8_t, config::max_members> out) const noexcept;

private:
    const config::Upstream* config_;  // in the snapshot's config
    std::vector<MemberPtr> members_;
    mutable std::atomic<std::uint64_t> turn_{0};
};
using PoolPtr = std::shared_ptr<const Pool>;

// The pools of `config` (parallel to config.upstreams). A member listed under the same
// upstream name and URL in `previous` keeps its Member (its health and live count).
std::vector<PoolPtr> make_pools(const config::Config& config, const std::vector<PoolPtr>* previous,
                                metrics::Metrics& metrics);

// --- Connecting ----------------------------------------------------------------------------

struct ConnectResult {
    Outcome outcome = Outcome::ok;  // ok | dns | connect_refused | connect_timeout
    tcp::endpoint peer;
    std::string detail;  // resolver / socket error text for the log
};

// One connection's connect to an upstream host: every resolved address in turn, all within
// the connection's deadline (SPEC §4.5), or to a pool's members in the order Pool::order()
// gives (SPEC §13): a member that refuses, times out or does not resolve counts a failure and
// the next is tried. A member's attempt may use an equal share of what is left of the deadline
// among the members left to try (the last one all of it), so a member that swallows SYNs
// costs at most its share. at_once() does what needs no wait (nearly every connection: an IP
// literal or a cached name, and a handshake that is over when connect() returns, as on
// loopback); finish() does the rest in a coroutine, resuming the attempt that at_once() left
// in progress rather than starting another.
class Dial {
public:
    Dial(const address::HostPort& host, address::Family family,
         std::chrono::milliseconds refresh) noexcept
        : host_(&host), family_(family), refresh_(refresh) {}
    // `host` is kept by reference: it must outlive the Dial (it lives in the config).
    Dial(address::HostPort&& host, address::Family family,
         std::chrono::milliseconds refresh) = delete;
    // The members of `pool` (which must outlive the Dial). `through_proxy`: a CONNECT exchange
    // follows, and proxied() reports how it went.
    Dial(const Pool& pool, std::chrono::milliseconds refresh, bool through_proxy) noexcept
        : pool_(&pool), refresh_(refresh), through_proxy_(through_proxy) {}
    // One address, directly: a transparent connection's original destination (SPEC §11),
    // which needs no text form, no parse and no resolver.
    explicit Dial(const tcp::endpoint& address) noexcept : address_(address), refresh_(0) {}

    // Without waiting: true when `socket` (closed on entry) is connected now; peer() tells
    // where. False: finish() must be awaited, and an attempt may be under way on `socket`.
    bool at_once(tcp::socket& socket, const Resolver& resolver);

    // Resolves (a name that is not cached, raced with deadline.reached()) and tries each
    // address until one accepts. Arms the deadline before a connect waits; when the deadline
    // passes its owner closes `socket`, and the attempt then ends as connect_timeout.
    // The Dial, `socket` and `deadline` must outlive the coroutine.
    net::awaitable<ConnectResult> finish(tcp::socket& socket, Resolver& resolver,
                                         runtime::Deadline& deadline);

    const tcp::endpoint& peer() const noexcept { return first_endpoint_; }

    // Through a proxy, after the CONNECT exchange on the member finish() connected to: ok
    // counts a success; proxy_protocol (no HTTP answer: the member's fault) a failure, and
    // then true when another member is left for finish() to try within the deadline. A
    // status (the proxy answered) or a timeout changes nothing and gives false.
    bool proxied(Outcome handshake, std::string_view detail);

    // The connected member's live-tunnel count (least_connections), for the session to hold
    // until its tunnel ends; empty otherwise.
    Lease lease() noexcept { return std::move(lease_); }

private:
    struct Target {
        const address::HostPort* host;
        address::Family family;
    };
    Target target() const noexcept;
    void prepare() noexcept;
    void connected();
    net::awaitable<ConnectResult> connect_host(tcp::socket& socket, Resolver& resolver,
                                               runtime::Deadline& deadline, Target target);
    net::awaitable<ConnectResult> walk(tcp::socket& socket, Resolver& resolver,
                                       runtime::Deadline& deadline);

    const address::HostPort* host_ = nullptr;  // one host; else pool_; else address_
    tcp::endpoint address_;
    address::Family family_ = address::Family::any;
    const Pool* pool_ = nullptr;
    std::chrono::milliseconds refresh_;
    bool through_proxy_ = false;
    // The pool's members in the order to try them, and the one being tried.
    std::array<std::uint8_t, config::max_members> order_{};
    std::uint8_t count_ = 0;  // 0: not ordered yet
    std::uint8_t at_ = 0;
    Lease lease_;
    // What at_once() did: its address, and how its attempt stands.
    tcp::endpoint first_endpoint_;
    boost::system::error_code first_ec_;
    bool first_started_ = false;
    bool first_in_progress_ = false;
};

// Active health checks (SPEC §13, health.interval > 0): one loop per member on one executor
// (the control thread's), probing every interval: a TCP connect within health.timeout and,
// with a probe_target, a CONNECT to it through the member, which must answer 2xx.
class Prober {
public:
    // The CONNECT exchange (connect::handshake, a later module): its outcome. `socket`,
    // `headers` and `deadline` outlive the coroutine.
    using Handshake = std::function<net::awaitable<Outcome>(
        tcp::socket& socket, std::string target, const std::vector<config::Header>& headers,
        runtime::Deadline& deadline)>;

    Prober(net::any_io_executor executor, Handshake handshake)
        : executor_(std::move(executor)), handshake_(std::move(handshake)) {}

    // Gives every member of `pools` (a snapshot just published) its probe settings, and starts
    // a loop for each that needs one and has none. A loop ends when its member is gone or its
    // interval became 0. Control thread.
    void adopt(const std::vector<PoolPtr>& pools, std::chrono::milliseconds refresh);

private:
    static net::awaitable<void> loop(std::weak_ptr<Member> member, Handshake handshake);

    net::any_io_executor executor_;
    Handshake handshake_;
};

}  // namespace tpt::upstream
