// The admin handler: one coroutine per connection, Beast's parser and serializer, a read
// deadline per request on the tcp_stream.
#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <tpt/admin.hpp>
#include <tpt/log.hpp>
#include <tpt/metrics.hpp>

namespace tpt::admin {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;

// A /reload body is never used; it is read (so the connection stays in step) up to this size.
constexpr std::uint64_t body_limit = std::uint64_t{4} * 1024;

constexpr std::string_view text_plain = "text/plain; charset=utf-8";

struct Reply {
    http::status status = http::status::ok;
    std::string body;
    std::string_view content_type = text_plain;
    std::string_view allow;  // set for 405
};

Reply text(http::status status, std::string body) {
    return Reply{status, std::move(body), text_plain, {}};
}

std::string exception_text(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        return ex.what();
    } catch (...) {
        return "unknown exception";
    }
}

// A handler threw: answer 500 (503 for the probes, which only know up or down) and log it.
Reply handler_failed(std::string_view path, const std::exception_ptr& e, http::status status) {
    const auto what = exception_text(e);
    log::error("admin handler failed", {{"path", std::string(path)}, {"error", what}});
    return text(status, "internal error\n");
}

enum class Path : std::uint8_t { metrics, health, config, reload, ready, healthz, unknown };

// In the order of Path, before unknown.
constexpr std::array<std::string_view, 6> paths{"/metrics", "/health", "/config",
                                                "/reload",  "/ready",  "/healthz"};

Path classify(std::string_view target) {
    target = target.substr(0, target.find('?'));
    const auto it = std::find(paths.begin(), paths.end(), target);
    return static_cast<Path>(it - paths.begin());  // unknown when not found
}

// Everything a request can be answered with, except the errors of reading it.
net::awaitable<Reply> answer(const http::request<http::string_body>& req, const Handlers& h,
                             bool control_ok) {
    const auto path = classify(req.target());
    if (path == Path::unknown) {
        co_return text(http::status::not_found, "not found\n");
    }
    const bool post_path = path == Path::reload;
    const bool method_ok =
        post_path ? req.method() == http::verb::post
                  : (req.method() == http::verb::get || req.method() == http::verb::head);
    if (!method_ok) {
        Reply r = text(http::status::method_not_allowed, "method not allowed\n");
        r.allow = post_path ? "POST" : "GET, HEAD";
        co_return r;
    }
    if ((path == Path::config || path == Path::reload) && !control_ok) {
        co_return text(http::status::forbidden, "forbidden: control_from is loopback\n");
    }
    std::exception_ptr failure;
    try {
        switch (path) {
            case Path::metrics:
                co_return Reply{http::status::ok, h.metrics(), metrics::content_type, {}};
            case Path::ready:
                co_return h.ready() ? text(http::status::ok, "ready")
                                    : text(http::status::service_unavailable, "not ready");
            case Path::healthz: {
                // Not `?:` around co_await: GCC 12 ran a co_await in the branch not taken
                // (upstream_test caught it in upstream::connect).
                bool alive = false;
                if (h.alive) {
                    alive = co_await h.alive();
                }
                co_return alive ? text(http::status::ok, "ok")
                                : text(http::status::service_unavailable, "not ok");
            }
            case Path::health:
                co_return text(http::status::ok, "OK");
            case Path::config:
                co_return Reply{http::status::ok, h.config_json(), "application/json", {}};
            case Path::reload: {
                auto result = co_await h.reload();
                co_return text(static_cast<http::status>(result.status), std::move(result.body));
            }
            case Path::unknown:
                break;
        }
    } catch (...) {
        failure = std::current_exception();
    }
    const bool probe = path == Path::ready || path == Path::healthz;
    co_return handler_failed(
        req.target(), failure,
        probe ? http::status::service_unavailable : http::status::internal_server_error);
}

http::response<http::string_body> make_response(Reply reply, unsigned version, bool keep_alive,
                                                bool head) {
    http::response<http::string_body> res{reply.status, version};
    res.set(http::field::server, "tpt");
    res.set(http::field::content_type, reply.content_type);
    if (!reply.allow.empty()) {
        res.set(http::field::allow, reply.allow);
    }
    res.keep_alive(keep_alive);
    res.body() = std::move(reply.body);
    res.prepare_payload();
    if (head) {
        // RFC 9110 §9.3.2: the same header fields as GET, Content-Length included, no content.
        res.body().clear();
    }
    return res;
}

net::awaitable<void> serve_requests(beast::tcp_stream& stream, const Handlers& handlers,
                                    const Limits& limits, bool control_ok) {
    beast::flat_buffer buffer(limits.header_limit + body_limit + 4096);
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(limits.header_limit));
        parser.body_limit(body_limit);

        // One deadline for the whole request, header and body: a client that trickles bytes
        // (slowloris) is cut when it expires, and so is an idle keep-alive connection.
        stream.expires_after(limits.read_timeout);
        auto [ec, n] = co_await http::async_read_header(stream, buffer, parser,
                                                        net::as_tuple(net::use_awaitable));
        if (!ec && !parser.is_done()) {
            // RFC 9110 §10.1.1: a client waiting for 100 Continue would stall until the deadline.
            if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
                http::response<http::empty_body> cont{http::status::continue_, 11};
                auto [wec, wn] =
                    co_await http::async_write(stream, cont, net::as_tuple(net::use_awaitable));
                if (wec) {
                    co_return;
                }
            }
            std::tie(ec, n) = co_await http::async_read(stream, buffer, parser,
                                                        net::as_tuple(net::use_awaitable));
        }
        if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
            ec == net::error::connection_reset || ec == net::error::eof) {
            co_return;  // the peer left, or was too slow: the stream is closed, nothing to say
        }
        if (ec) {
            const auto status = ec == http::error::header_limit
                                    ? http::status::request_header_fields_too_large
                                : ec == http::error::body_limit ? http::status::payload_too_large
                                                                : http::status::bad_request;
            auto res = make_response(text(status, ec.message() + "\n"), 11, false, false);
            stream.expires_after(limits.read_timeout);
            co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
            beast::error_code ignored;
            stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }

        const auto& req = parser.get();
        const bool keep_alive = req.keep_alive();
        auto res = make_response(co_await answer(req, handlers, control_ok), req.version(),
                                 keep_alive, req.method() == http::verb::head);
        stream.expires_after(limits.read_timeout);
        auto [wec, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
        if (wec) {
            co_return;
        }
        if (!keep_alive) {
            beast::error_code ignored;
            stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }
    }
}

}  // namespace

net::awaitable<void> serve(tcp::socket socket, HandlersPtr handlers, Limits limits) {
    try {
        beast::error_code ec;
        const auto peer = socket.remote_endpoint(ec);
        const bool control_ok =
            !ec && control_allowed(peer.address(),
                                   handlers->control_from_any && handlers->control_from_any());
        beast::tcp_stream stream(std::move(socket));
        co_await serve_requests(stream, *handlers, limits, control_ok);
    } catch (...) {
        log::error("admin connection failed",
                   {{"error", exception_text(std::current_exception())}});
    }
}

}  // namespace tpt::admin
