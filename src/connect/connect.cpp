#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <tpt/connect.hpp>
#include <tpt/connect_head.hpp>

namespace tpt::connect {

using namespace boost::asio::experimental::awaitable_operators;
namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Writes the request and reads until the head is complete. Owns its read buffer (STYLE:
// phase state lives in the phase's coroutine).
net::awaitable<HandshakeResult> exchange(tcp::socket& socket, std::string request) {
    HandshakeResult r;
    auto [wec, wn] = co_await net::async_write(socket, net::buffer(request), use_tuple);
    if (wec) {
        r.outcome = Outcome::proxy_protocol;
        r.status_line = "write failed: " + wec.message();
        co_return r;
    }
    ResponseHeadParser parser;
    std::array<std::uint8_t, 4096> buf{};
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(net::buffer(buf), use_tuple);
        if (ec) {
            r.outcome = Outcome::proxy_protocol;
            r.status_line = ec == net::error::eof ? "proxy closed before a response head"
                                                  : "read failed: " + ec.message();
            co_return r;
        }
        switch (parser.feed(std::span<const std::uint8_t>(buf.data(), n))) {
            case HeadStatus::need_more:
                continue;
            case HeadStatus::malformed:
                r.outcome = Outcome::proxy_protocol;
                r.status_line = "malformed response head";
                co_return r;
            case HeadStatus::too_large:
                r.outcome = Outcome::proxy_protocol;
                r.status_line = "response head over 16 KiB";
                co_return r;
            case HeadStatus::done:
                break;
        }
        break;
    }
    r.status_code = parser.status_code();
    r.status_line = parser.status_line();
    r.auth_scheme = parser.proxy_authenticate_scheme();
    // RFC 9110 §15.3: any 2xx to CONNECT means the tunnel is open.
    if (r.status_code >= 200 && r.status_code < 300) {
        r.outcome = Outcome::ok;
        r.leftover = parser.leftover();
    } else {
        r.outcome = Outcome::proxy_status;
    }
    co_return r;
}
}  // namespace

net::awaitable<HandshakeResult> handshake(
    tcp::socket& socket, std::string_view target,
    const std::vector<std::pair<std::string, std::string>>& headers,
    runtime::Clock::time_point deadline) {
    net::steady_timer timer(socket.get_executor());
    timer.expires_at(deadline);
    auto r =
        co_await (exchange(socket, build_request(target, headers)) || timer.async_wait(use_tuple));
    if (r.index() == 1) {
        HandshakeResult t;
        t.outcome = Outcome::connect_timeout;
        t.status_line = "no CONNECT response within connect_timeout";
        co_return t;
    }
    co_return std::get<0>(std::move(r));
}

}  // namespace tpt::connect
