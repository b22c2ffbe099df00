#include <cerrno>
#include <poll.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/upstream.hpp>

#include "socket_deadline.hpp"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace tpt::upstream {

using namespace boost::asio::experimental::awaitable_operators;
namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// The endpoint of an IP literal host; nullopt for a name.
std::optional<tcp::endpoint> literal_endpoint(const address::HostPort& hp) {
    boost::system::error_code ec;
    const auto literal = net::ip::make_address(hp.host, ec);
    if (ec) {
        return std::nullopt;
    }
    return tcp::endpoint{literal, hp.port};
}

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
boost::system::error_code errno_code(int error) {
    return {error, boost::system::system_category()};
}

boost::system::error_code socket_error(int fd) {
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
        error = errno;
    }
    return errno_code(error);
}

// How one connect attempt stands after the part that does not wait: in_progress (wait
// until writable, then SO_ERROR says how it ended), else `ec` says how it ended (empty:
// connected).
struct Started {
    boost::system::error_code ec;
    bool in_progress = false;
};

// The wait of an attempt that start_connect() left in progress: until the socket is writable
// (or the deadline's owner closes it), then SO_ERROR says how the connect ended.
net::awaitable<boost::system::error_code> finish_connect(tcp::socket& socket,
                                                         runtime::Deadline& deadline) {
    deadline.arm();
    auto [wait_ec] = co_await socket.async_wait(tcp::socket::wait_write, use_tuple);
    if (wait_ec) {
        co_return wait_ec;
    }
    co_return socket_error(socket.native_handle());
}

// In fewer system calls than Asio's open() and async_connect():
// - SOCK_NONBLOCK at socket(): no ioctl;
// - TCP_NODELAY, and TCP_QUICKACK off, before connect: the handshake's last ACK rides on the
//   first bytes sent (HAProxy's tcp-smart-connect), one packet less;
// - no read before epoll reports one (runtime::read_after_event): one EAGAIN less;
// - a poll() without waiting right after EINPROGRESS. On loopback, and to any peer that
//   answers the SYN within the connect() call, the handshake is already over: no epoll_ctl to
//   add EPOLLOUT to the registration (after which every ACK would wake the worker), no
//   reactor round, no SO_ERROR.
Started start_connect(tcp::socket& socket, const tcp::endpoint& ep) {
    Started r;
    const int fd =
        ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        r.ec = errno_code(errno);
        return r;
    }
    const int on = 1;
    const int off = 0;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off);
    const int rc = ::connect(fd, ep.data(), static_cast<socklen_t>(ep.size()));
    const int connect_errno = rc == 0 ? 0 : errno;
    socket.assign(ep.protocol(), fd, r.ec);  // from here on the socket owns the descriptor
    if (r.ec) {
        ::close(fd);
        return r;
    }
    runtime::own_descriptor(socket, true);
    // Nothing can have come yet: the relay's first read waits for epoll instead of finding EAGAIN.
    runtime::read_after_event(socket);
    if (rc == 0) {
        return r;
    }
    if (connect_errno != EINPROGRESS && connect_errno != EINTR) {  // EINTR: it goes on
        r.ec = errno_code(connect_errno);
        return r;
    }
    pollfd ready{fd, POLLOUT, 0};
    if (::poll(&ready, 1, 0) == 1) {
        if ((ready.revents & (POLLERR | POLLHUP)) != 0) {
            const auto error = socket_error(fd);
            r.ec = error ? error : errno_code(ECONNRESET);
        }
        return r;
    }
    r.in_progress = true;
    return r;
}

}  // namespace

const Resolver::Entry* Resolver::fresh_entry(const address::HostPort& hp, address::Family family,
                                             std::chrono::milliseconds refresh) const {
    const auto it = cache_.find(
        std::tuple<std::string_view, std::uint16_t, address::Family>{hp.host, hp.port, family});
    if (it != cache_.end() && runtime::Clock::now() - it->second.resolved_at < refresh) {
        return &it->second;
    }
    return nullptr;
}

std::optional<Resolver::Answer> Resolver::at_once(const address::HostPort& hp,
                                                  address::Family family,
                                                  std::chrono::milliseconds refresh) const {
    if (const auto ep = literal_endpoint(hp)) {
        Answer answer;
        if (family_ok(*ep, family)) {
            answer.endpoints.push_back(*ep);
        } else {
            answer.error = "address family does not match the upstream protocol";
        }
        return answer;
    }
    if (const Entry* e = fresh_entry(hp, family, refresh)) {
        return Answer{e->endpoints, {}};
    }
    return std::nullopt;
}

std::optional<tcp::endpoint> Resolver::first_at_once(const address::HostPort& hp,
                                                     address::Family family,
                                                     std::chrono::milliseconds refresh) const {
    if (const auto ep = literal_endpoint(hp)) {
        return family_ok(*ep, family) ? ep : std::nullopt;
    }
    const Entry* e = fresh_entry(hp, family, refresh);
    return e != nullptr && !e->endpoints.empty() ? std::optional(e->endpoints.front())
                                                 : std::nullopt;
}

net::awaitable<Resolver::Answer> Resolver::resolve(const address::HostPort& hp,
                                                   address::Family family,
                                                   std::chrono::milliseconds refresh) {
    if (auto answer = at_once(hp, family, refresh)) {
        co_return std::move(*answer);
    }
    Answer answer;
    Key key{hp.host, hp.port, family};
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
    cache_[std::move(key)] = Entry{eps, now};
    answer.endpoints = std::move(eps);
    co_return answer;
}

Dial::Target Dial::target() const noexcept {
    if (pool_ == nullptr) {
        return {host_, family_};
    }
    const auto& m = pool_->config().members[order_[at_]];
    return {&m.address, m.family};
}

void Dial::prepare() noexcept {
    if (pool_ != nullptr && count_ == 0) {
        count_ = static_cast<std::uint8_t>(pool_->order(order_));
    }
}

// The member at_ accepted the connection.
void Dial::connected() {
    if (pool_ == nullptr) {
        return;
    }
    Member& m = pool_->member(order_[at_]);
    m.connected(pool_->config().health, through_proxy_);
    if (pool_->config().strategy == config::Strategy::least_connections) {
        lease_ = Lease(m);
    }
}

bool Dial::at_once(tcp::socket& socket, const Resolver& resolver) {
    prepare();
    const Target t = target();
    const auto ep = t.host != nullptr ? resolver.first_at_once(*t.host, t.family, refresh_)
                                      : std::optional(address_);
    if (!ep) {
        return false;
    }
    first_endpoint_ = *ep;
    const auto started = start_connect(socket, first_endpoint_);
    first_started_ = true;
    first_ec_ = started.ec;
    first_in_progress_ = started.in_progress;
    if (started.in_progress || started.ec) {
        return false;
    }
    connected();
    return true;
}

// Not a coroutine itself: the awaitable of the one that does the work, one frame less.
net::awaitable<ConnectResult> Dial::finish(tcp::socket& socket, Resolver& resolver,
                                           runtime::Deadline& deadline) {
    if (pool_ == nullptr) {
        return connect_host(socket, resolver, deadline, target());
    }
    return walk(socket, resolver, deadline);
}

// SPEC §13: the members in order, each within its share of what is left of the deadline.
net::awaitable<ConnectResult> Dial::walk(tcp::socket& socket, Resolver& resolver,
                                         runtime::Deadline& deadline) {
    prepare();
    const auto& health = pool_->config().health;
    ConnectResult result{Outcome::connect_refused, {}, {}};
    std::string details;
    for (; at_ < count_; ++at_) {
        const auto left = static_cast<std::int64_t>(count_ - at_);
        if (left == 1) {  // the last member's share is all that is left: no timer of its own
            result = co_await connect_host(socket, resolver, deadline, target());
        } else {
            const auto now = runtime::Clock::now();
            SocketDeadline share(socket, now + (deadline.at() - now) / left, &deadline);
            result = co_await connect_host(socket, resolver, share, target());
        }
        if (result.outcome == Outcome::ok) {
            connected();
            co_return result;
        }
        Member& m = pool_->member(order_[at_]);
        m.failed(result.outcome, health, result.detail);
        details += (details.empty() ? "" : "; ") + m.url() + ": " + result.detail;
        if (deadline.passed() || runtime::Clock::now() >= deadline.at()) {
            result.outcome = Outcome::connect_timeout;
            break;
        }
    }
    result.detail = std::move(details);
    co_return result;
}

bool Dial::proxied(Outcome handshake, std::string_view detail) {
    if (pool_ == nullptr) {
        return false;
    }
    Member& m = pool_->member(order_[at_]);
    const auto& health = pool_->config().health;
    if (handshake == Outcome::ok) {
        m.succeeded(health);
        return false;
    }
    if (handshake != Outcome::proxy_protocol) {
        return false;
    }
    m.failed(handshake, health, detail);
    lease_.release();
    ++at_;
    return at_ < count_;
}

net::awaitable<ConnectResult> Dial::connect_host(tcp::socket& socket, Resolver& resolver,
                                                 runtime::Deadline& deadline, Target target) {
    ConnectResult result;
    // Literals and cached names (nearly every connection) cost no timer and no frame.
    auto answer = target.host != nullptr ? resolver.at_once(*target.host, target.family, refresh_)
                                         : std::optional(Resolver::Answer{{address_}, {}});
    if (!answer) {
        auto resolved = co_await (resolver.resolve(*target.host, target.family, refresh_) ||
                                  deadline.reached());
        if (resolved.index() == 1) {
            result.outcome = Outcome::connect_timeout;
            result.detail = "timed out resolving " + target.host->host;
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
    for (std::size_t i = 0; i < answer->endpoints.size(); ++i) {
        const auto& ep = answer->endpoints[i];
        Started started;
        if (i == 0 && first_started_ && first_endpoint_ == ep) {
            started = Started{first_ec_, first_in_progress_};  // at_once()'s attempt
        } else {
            socket.close(ignored);
            if (runtime::Clock::now() >= deadline.at()) {
                break;
            }
            started = start_connect(socket, ep);
        }
        first_started_ = false;  // at_once()'s attempt is resumed once, by the first target
        // Not `?:` around co_await: GCC 12 ran the co_await in the branch not taken.
        auto ec = started.ec;
        if (started.in_progress) {
            ec = co_await finish_connect(socket, deadline);
        }
        if (!ec && !deadline.passed()) {
            result = ConnectResult{Outcome::ok, ep, {}};
            co_return result;
        }
        if (deadline.passed() || runtime::Clock::now() >= deadline.at()) {
            break;
        }
        result.detail = ep.address().to_string() + ": " + ec.message();
    }
    socket.close(ignored);
    if (deadline.passed() || runtime::Clock::now() >= deadline.at()) {
        result.outcome = Outcome::connect_timeout;
        result.detail =
            "timed out connecting to " +
            (target.host != nullptr ? target.host->host : address_.address().to_string());
    }
    co_return result;
}

}  // namespace tpt::upstream
