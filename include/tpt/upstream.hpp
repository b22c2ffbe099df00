// upstream: resolve an upstream host (cached per worker, re-resolved every resolve_interval)
// and connect to it, trying every address within one deadline.
// Thread affinity: a Resolver and the sockets belong to one worker; no locks.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <tpt/address.hpp>
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

struct ConnectResult {
    Outcome outcome = Outcome::ok;  // ok | dns | connect_refused | connect_timeout
    tcp::endpoint peer;
    std::string detail;  // resolver / socket error text for the log
};

// One connection's connect to an upstream host: every resolved address in turn, all within
// the connection's deadline (SPEC §4.5). at_once() does what needs no wait (nearly every
// connection: an IP literal or a cached name, and a handshake that is over when connect()
// returns, as on loopback); finish() does the rest in a coroutine, resuming the attempt that
// at_once() left in progress rather than starting another.
class Dial {
public:
    Dial(const address::HostPort& host, address::Family family,
         std::chrono::milliseconds refresh) noexcept
        : host_(&host), family_(family), refresh_(refresh) {}
    // `host` is kept by reference: it must outlive the Dial (it lives in the config).
    Dial(address::HostPort&& host, address::Family family,
         std::chrono::milliseconds refresh) = delete;

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

private:
    const address::HostPort* host_;
    address::Family family_;
    std::chrono::milliseconds refresh_;
    // What at_once() did: its address, and how its attempt stands.
    tcp::endpoint first_endpoint_;
    boost::system::error_code first_ec_;
    bool first_started_ = false;
    bool first_in_progress_ = false;
};

}  // namespace tpt::upstream
