// upstream: resolve an upstream host (cached per worker, re-resolved every resolve_interval)
// and connect to it, trying every address within one deadline.
// Thread affinity: a Resolver and the sockets belong to one worker; no locks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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

// The part of one connect attempt that does not wait. Opens `socket` (closed on entry) and
// starts connecting it to ep; in_progress: still connecting (wait until writable, then
// SO_ERROR says how it ended), else `ec` says how it ended (empty: connected).
struct Started {
    boost::system::error_code ec;
    bool in_progress = false;
};
Started start_connect(tcp::socket& socket, const tcp::endpoint& ep);

// Told before a connect attempt waits (the caller arms its deadline then). Most connects to
// an IP literal or a cached name over loopback or a fast network never wait: their
// handshake is over when connect() returns, and they cost no timer.
class BeforeWait {
public:
    virtual void operator()() = 0;

protected:
    BeforeWait() = default;
    BeforeWait(const BeforeWait&) = default;
    BeforeWait& operator=(const BeforeWait&) = default;
    ~BeforeWait() = default;
};

// An attempt the caller started itself, with start_connect() on Resolver::first_at_once()'s
// address, and hands to connect() to finish.
struct FirstAttempt {
    tcp::endpoint endpoint;
    Started started;
};

// Connects `socket` (closed on entry, unless `first` left an attempt on it) to the first
// address of hp that accepts, in resolver order, all within `deadline`. A name that is not
// cached is resolved under a timer of its own; the connect attempts are not: the caller
// closes `socket` when the deadline passes (the session's one deadline timer, armed when
// `before_wait` is called, if it is given), and an attempt that fails then is
// connect_timeout. `hp`, `before_wait` and `first` must outlive the coroutine.
net::awaitable<ConnectResult> connect(tcp::socket& socket, Resolver& resolver,
                                      const address::HostPort& hp, address::Family family,
                                      std::chrono::milliseconds refresh,
                                      runtime::Clock::time_point deadline,
                                      BeforeWait* before_wait = nullptr,
                                      const FirstAttempt* first = nullptr);

}  // namespace tpt::upstream
