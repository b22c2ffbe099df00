#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/upstream.hpp>

namespace tpt::upstream {

using namespace boost::asio::experimental::awaitable_operators;
namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

bool family_ok(const tcp::endpoint& ep, address::Family f) {
    switch (f) {
        case address::Family::v4:
            return ep.address().is_v4();
        case address::Family::v6:
            return ep.address().is_v6();
        case address::Family::any:
            return true;
    }
    return true;
}
}  // namespace

net::awaitable<Resolver::Answer> Resolver::resolve(const address::HostPort& hp,
                                                   address::Family family,
                                                   std::chrono::milliseconds refresh) {
    Answer answer;
    boost::system::error_code ec;
    const auto literal = net::ip::make_address(hp.host, ec);
    if (!ec) {
        tcp::endpoint ep{literal, hp.port};
        if (family_ok(ep, family)) {
            answer.endpoints.push_back(ep);
        } else {
            answer.error = "address family does not match the upstream protocol";
        }
        co_return answer;
    }
    const std::string key = hp.to_string() + "/" + std::string(address::to_string(family));
    const auto now = runtime::Clock::now();
    auto it = cache_.find(key);
    if (it != cache_.end() && now - it->second.resolved_at < refresh) {
        answer.endpoints = it->second.endpoints;
        co_return answer;
    }
    auto [rec, results] =
        co_await resolver_.async_resolve(hp.host, std::to_string(hp.port), use_tuple);
    std::vector<tcp::endpoint> eps;
    if (!rec) {
        for (const auto& r : results) {
            if (family_ok(r.endpoint(), family)) {
                eps.push_back(r.endpoint());
            }
        }
    }
    if (eps.empty()) {
        answer.error = rec ? rec.message() : "no address of the wanted family";
        if (it != cache_.end()) {
            answer.endpoints = it->second.endpoints;  // stale beats nothing; retried next time
        }
        co_return answer;
    }
    cache_[key] = Entry{eps, now};
    answer.endpoints = std::move(eps);
    co_return answer;
}

net::awaitable<ConnectResult> connect(tcp::socket& socket, Resolver& resolver,
                                      const address::HostPort& hp, address::Family family,
                                      std::chrono::milliseconds refresh,
                                      runtime::Clock::time_point deadline) {
    ConnectResult result;
    net::steady_timer timer(socket.get_executor());
    timer.expires_at(deadline);
    auto resolved = co_await (resolver.resolve(hp, family, refresh) || timer.async_wait(use_tuple));
    if (resolved.index() == 1) {
        result.outcome = Outcome::connect_timeout;
        result.detail = "timed out resolving " + hp.host;
        co_return result;
    }
    auto answer = std::get<0>(std::move(resolved));
    if (answer.endpoints.empty()) {
        result.outcome = Outcome::dns;
        result.detail = answer.error;
        co_return result;
    }
    result.outcome = Outcome::connect_refused;
    for (const auto& ep : answer.endpoints) {
        boost::system::error_code ignored;
        socket.close(ignored);
        auto r = co_await (socket.async_connect(ep, use_tuple) || timer.async_wait(use_tuple));
        if (r.index() == 1) {
            result.outcome = Outcome::connect_timeout;
            result.detail = "timed out connecting to " + ep.address().to_string();
            socket.close(ignored);
            co_return result;
        }
        auto [ec] = std::get<0>(r);
        if (!ec) {
            socket.set_option(tcp::no_delay(true), ignored);
            result.outcome = Outcome::ok;
            result.peer = ep;
            result.detail.clear();
            co_return result;
        }
        result.detail = ep.address().to_string() + ": " + ec.message();
    }
    boost::system::error_code ignored;
    socket.close(ignored);
    co_return result;
}

}  // namespace tpt::upstream
