#include <chrono>
#include <exception>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/admin.hpp>
#include <tpt/log.hpp>

namespace tpt::admin {

namespace {

// An exception escaping a spawned coroutine is a bug: say so.
void log_escape(const char* what, const std::exception_ptr& e) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        log::error("bug: exception escaped", {{"coroutine", what}, {"error", ex.what()}});
    } catch (...) {
        log::error("bug: exception escaped", {{"coroutine", what}, {"error", "unknown"}});
    }
}

}  // namespace

AdminServer::AdminServer(const net::any_io_executor& executor, const tcp::endpoint& endpoint,
                         HandlersPtr handlers, Limits limits)
    : acceptor_(executor), handlers_(std::move(handlers)), limits_(limits) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(net::socket_base::max_listen_connections);
    endpoint_ = acceptor_.local_endpoint();
}

void AdminServer::start() {
    net::co_spawn(acceptor_.get_executor(), accept_loop(shared_from_this()),
                  [](const std::exception_ptr& e) { log_escape("admin accept loop", e); });
}

void AdminServer::stop() {
    net::dispatch(acceptor_.get_executor(), [self = shared_from_this()] {
        boost::system::error_code ignored;
        self->acceptor_.close(ignored);
    });
}

tcp::endpoint AdminServer::local_endpoint() const {
    return endpoint_;
}

net::awaitable<void> AdminServer::accept_loop(std::shared_ptr<AdminServer> self) {
    log::Throttle warnings(std::chrono::seconds(10));
    for (;;) {
        auto [ec, socket] =
            co_await self->acceptor_.async_accept(net::as_tuple(net::use_awaitable));
        if (!self->acceptor_.is_open()) {
            co_return;  // stop()
        }
        if (ec) {
            // EMFILE and friends: the pending connection stays queued; retry shortly
            // instead of spinning.
            if (const auto held = warnings.pass(std::chrono::steady_clock::now())) {
                log::warn("admin accept failed, backing off",
                          {{"error", ec.message()}, {"held_back", std::to_string(*held)}});
            }
            net::steady_timer pause(self->acceptor_.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(net::as_tuple(net::use_awaitable));
            continue;
        }
        net::co_spawn(self->acceptor_.get_executor(),
                      serve(std::move(socket), self->handlers_, self->limits_),
                      [](const std::exception_ptr& e) { log_escape("admin serve", e); });
    }
}

}  // namespace tpt::admin
