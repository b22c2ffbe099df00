#include <cerrno>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/upstream.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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
// One non-blocking connect. Asio's async_connect asks poll() and then SO_ERROR once the socket
// is writable; SO_ERROR alone says it. TCP_QUICKACK off before connect: the handshake's last
// ACK rides on the first bytes sent (HAProxy's tcp-smart-connect), one packet less.
net::awaitable<boost::system::error_code> connect_one(tcp::socket& socket,
                                                      const tcp::endpoint& ep) {
    boost::system::error_code ec;
    socket.open(ep.protocol(), ec);
    if (ec) {
        co_return ec;
    }
    boost::system::error_code ignored;
    socket.set_option(runtime::QuickAck(false), ignored);
    socket.non_blocking(true, ec);
    if (ec) {
        co_return ec;
    }
    const int fd = socket.native_handle();
    if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) == 0) {
        co_return ec;
    }
    if (errno != EINPROGRESS && errno != EINTR) {  // EINTR: the connect goes on regardless
        co_return boost::system::error_code(errno, boost::system::system_category());
    }
    auto [wait_ec] = co_await socket.async_wait(tcp::socket::wait_write, use_tuple);
    if (wait_ec) {
        co_return wait_ec;
    }
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
        error = errno;
    }
    co_return boost::system::error_code(error, boost::system::system_category());
}
}  // namespace

std::optional<Resolver::Answer> Resolver::at_once(const address::HostPort& hp,
                                                  address::Family family,
                                                  std::chrono::milliseconds refresh) const {
    boost::system::error_code ec;
    const auto literal = net::ip::make_address(hp.host, ec);
    if (!ec) {
        Answer answer;
        const tcp::endpoint ep{literal, hp.port};
        if (family_ok(ep, family)) {
            answer.endpoints.push_back(ep);
        } else {
            answer.error = "address family does not match the upstream protocol";
        }
        return answer;
    }
    const auto it = cache_.find(hp.to_string() + "/" + std::string(address::to_string(family)));
    if (it != cache_.end() && runtime::Clock::now() - it->second.resolved_at < refresh) {
        return Answer{it->second.endpoints, {}};
    }
    return std::nullopt;
}

net::awaitable<Resolver::Answer> Resolver::resolve(const address::HostPort& hp,
                                                   address::Family family,
                                                   std::chrono::milliseconds refresh) {
    if (auto answer = at_once(hp, family, refresh)) {
        co_return std::move(*answer);
    }
    Answer answer;
    const std::string key = hp.to_string() + "/" + std::string(address::to_string(family));
    const auto now = runtime::Clock::now();
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
    const auto it = cache_.find(key);  // looked up again: the map may have changed meanwhile
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
    // Literals and cached names (nearly every connection) cost no timer and no frame.
    auto answer = resolver.at_once(hp, family, refresh);
    if (!answer) {
        net::steady_timer timer(socket.get_executor());
        timer.expires_at(deadline);
        auto resolved =
            co_await (resolver.resolve(hp, family, refresh) || timer.async_wait(use_tuple));
        if (resolved.index() == 1) {
            result.outcome = Outcome::connect_timeout;
            result.detail = "timed out resolving " + hp.host;
            co_return result;
        }
        answer = std::get<0>(std::move(resolved));
    }
    if (answer->endpoints.empty()) {
        result.outcome = Outcome::dns;
        result.detail = answer->error;
        co_return result;
    }
    result.outcome = Outcome::connect_refused;
    boost::system::error_code ignored;
    for (const auto& ep : answer->endpoints) {
        socket.close(ignored);
        if (runtime::Clock::now() >= deadline) {
            result.outcome = Outcome::connect_timeout;
            result.detail = "timed out connecting to " + hp.host;
            co_return result;
        }
        const auto ec = co_await connect_one(socket, ep);
        if (!ec) {
            socket.set_option(tcp::no_delay(true), ignored);
            result.outcome = Outcome::ok;
            result.peer = ep;
            result.detail.clear();
            co_return result;
        }
        if (runtime::Clock::now() >= deadline) {
            // The caller's deadline closed the socket under the attempt.
            result.outcome = Outcome::connect_timeout;
            result.detail = "timed out connecting to " + ep.address().to_string();
            socket.close(ignored);
            co_return result;
        }
        result.detail = ep.address().to_string() + ": " + ec.message();
    }
    socket.close(ignored);
    co_return result;
}

}  // namespace tpt::upstream
