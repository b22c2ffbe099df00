// admin: the Boost.Beast HTTP/1.1 admin handler (SPEC §6), served on admin.listen and on
// listeners routed to the built-in `health` upstream.
// Thread affinity: each connection runs on the executor of its socket; Handlers are called
// there and must be thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace tpt::admin {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct ReloadAnswer {
    unsigned status = 200;  // 200 | 400 (invalid config) | 500 (could not apply)
    std::string body;       // the new hash, or the error text
};

struct Handlers {
    std::function<std::string()> metrics;         // Prometheus text
    std::function<bool()> ready;                  // GET /ready
    std::function<net::awaitable<bool>()> alive;  // GET /healthz: every event loop answered
    std::function<std::string()> config_json;     // GET /config body
    std::function<net::awaitable<ReloadAnswer>()> reload;  // POST /reload
    std::function<bool()> control_from_any;                // admin.control_from == any
};
using HandlersPtr = std::shared_ptr<const Handlers>;

struct Limits {
    std::size_t header_limit = std::size_t{8} * 1024;
    std::chrono::milliseconds read_timeout = std::chrono::seconds(10);
};

// SPEC §6: /config and /reload are for loopback peers (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104)
// unless admin.control_from is `any`.
bool control_allowed(const net::ip::address& peer, bool control_from_any);

// Serves requests on `socket` until the peer closes, a request is bad, or a read times out
// (limits.read_timeout covers one whole request, header and body; an idle keep-alive
// connection gets the same). Bad requests get 400/413/431 and a close. Never throws.
net::awaitable<void> serve(tcp::socket socket, HandlersPtr handlers, Limits limits = {});

// Accept loop on one endpoint; runs until stop().
class AdminServer : public std::enable_shared_from_this<AdminServer> {
public:
    // Binds and listens now (throws boost::system::system_error on failure).
    AdminServer(const net::any_io_executor& executor, const tcp::endpoint& endpoint,
                HandlersPtr handlers, Limits limits = {});
    void start();
    void stop();  // closes the acceptor (on its executor); live connections finish on their own
    tcp::endpoint local_endpoint() const;

private:
    net::awaitable<void> accept_loop(std::shared_ptr<AdminServer> self);
    tcp::acceptor acceptor_;
    HandlersPtr handlers_;
    Limits limits_;
    tcp::endpoint endpoint_;  // the bound address, kept for local_endpoint() after stop()
};

}  // namespace tpt::admin
