#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <tpt/connect.hpp>
#include <tpt/connect_head.hpp>

namespace tpt::connect {

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
    connect_head::ResponseHeadParser parser;
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
            case connect_head::HeadStatus::need_more:
                continue;
            case connect_head::HeadStatus::malformed:
                r.outcome = Outcome::proxy_protocol;
                r.status_line = "malformed response head";
                co_return r;
            case connect_head::HeadStatus::too_large:
                r.outcome = Outcome::proxy_protocol;
                r.status_line =
                    "response head over " + std::to_string(max_head_bytes / 1024) + " KiB";
                co_return r;
            case connect_head::HeadStatus::done:
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

net::awaitable<HandshakeResult> handshake(tcp::socket& socket, std::string_view target,
                                          const std::vector<config::Header>& headers,
                                          runtime::Deadline& deadline) {
    deadline.arm();
    auto r = co_await exchange(socket, connect_head::build_request(target, headers));
    if (deadline.passed()) {
        r = HandshakeResult{};
        r.outcome = Outcome::connect_timeout;
        r.status_line = "no CONNECT response within connect_timeout";
    }
    co_return r;
}

}  // namespace tpt::connect
