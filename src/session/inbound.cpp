#include "inbound.hpp"

#include <variant>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/client_hello.hpp>
#include <tpt/http_head.hpp>

namespace tpt::session {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t read_step = 4096;

// The parser the first bytes go to, and what it found once it has a verdict.
class FirstBytes {
public:
    explicit FirstBytes(Reading how) : how_(how) {
        if (how == Reading::tls) {
            parser_.emplace<client_hello::ClientHelloParser>();
        } else if (how == Reading::http || how == Reading::connect) {
            parser_.emplace<http_head::RequestHeadParser>();
        }
    }

    // True once the parser has a verdict on what was fed so far.
    bool feed(std::span<const std::uint8_t> bytes) {
        if (std::holds_alternative<std::monostate>(parser_) && !bytes.empty()) {
            // Reading::detect: SPEC §12, the first byte decides.
            if (http_head::detect_protocol(bytes.front()) == http_head::Protocol::tls) {
                parser_.emplace<client_hello::ClientHelloParser>();
            } else {
                parser_.emplace<http_head::RequestHeadParser>();
            }
        }
        if (auto* hello = std::get_if<client_hello::ClientHelloParser>(&parser_)) {
            return hello->feed(bytes) != client_hello::HelloStatus::need_more;
        }
        if (auto* head = std::get_if<http_head::RequestHeadParser>(&parser_)) {
            return head->feed(bytes) != http_head::HeadStatus::need_more;
        }
        return false;
    }

    // Fills in what the verdict says about `in` (its bytes are all that was read).
    void verdict(Inbound& in) const {
        if (const auto* hello = std::get_if<client_hello::ClientHelloParser>(&parser_)) {
            if (hello->status() == client_hello::HelloStatus::done) {
                in.name = hello->sni();
            }
            return;
        }
        const auto* head = std::get_if<http_head::RequestHeadParser>(&parser_);
        if (head == nullptr) {
            return;
        }
        const bool done = head->status() == http_head::HeadStatus::done;
        if (how_ == Reading::connect) {
            connect_verdict(*head, in);
            return;
        }
        in.http = done;
        if (done && head->head().authority) {
            in.name = head->head().authority->host;
            in.name_is_ipv6 = head->head().authority->kind == http_head::HostKind::ipv6;
        }
    }

private:
    // SPEC §12: an explicit proxy takes CONNECT host:port only; the bytes after the head are
    // the tunnel's first bytes.
    static void connect_verdict(const http_head::RequestHeadParser& parser, Inbound& in) {
        if (parser.status() != http_head::HeadStatus::done) {
            in.refused = Outcome::bad_request;
            return;
        }
        const auto& head = parser.head();
        if (!head.is_connect()) {
            in.refused = Outcome::method_not_allowed;
            return;
        }
        in.name = head.authority->host;
        in.name_is_ipv6 = head.authority->kind == http_head::HostKind::ipv6;
        in.connect_port = *head.authority->port;
        in.bytes = parser.leftover();
    }

    Reading how_;
    std::variant<std::monostate, client_hello::ClientHelloParser, http_head::RequestHeadParser>
        parser_;
};

}  // namespace

Reading reading_of(const config::Server& server) noexcept {
    if (server.accept_connect) {
        return Reading::connect;
    }
    if (server.tls && server.http) {
        return Reading::detect;
    }
    if (server.tls) {
        return Reading::tls;
    }
    return server.http ? Reading::http : Reading::none;
}

net::awaitable<Inbound> read_inbound(tcp::socket& socket, Reading how) {
    Inbound in;
    FirstBytes first(how);
    for (;;) {
        const auto old = in.bytes.size();
        in.bytes.resize(old + read_step);
        auto [ec, n] = co_await socket.async_read_some(
            net::buffer(in.bytes.data() + old, read_step), use_tuple);
        in.bytes.resize(old + n);
        if (ec) {
            in.closed = ec == net::error::eof;
            in.reset = !in.closed;
            if (how == Reading::connect) {
                in.refused = Outcome::bad_request;
            }
            co_return in;
        }
        if (first.feed(std::span<const std::uint8_t>(in.bytes.data() + old, n)) ||
            in.bytes.size() > max_head_bytes) {
            first.verdict(in);
            co_return in;
        }
    }
}

net::awaitable<HelloName> read_hello_name(tcp::socket& socket, std::vector<std::uint8_t>& bytes) {
    HelloName out;
    client_hello::ClientHelloParser parser;
    auto status = parser.feed(bytes);
    while (status == client_hello::HelloStatus::need_more && bytes.size() <= max_head_bytes) {
        const auto old = bytes.size();
        bytes.resize(old + read_step);
        auto [ec, n] =
            co_await socket.async_read_some(net::buffer(bytes.data() + old, read_step), use_tuple);
        bytes.resize(old + n);
        if (ec) {
            out.reset = true;
            co_return out;
        }
        status = parser.feed(std::span<const std::uint8_t>(bytes.data() + old, n));
    }
    out.hello = status == client_hello::HelloStatus::done;
    out.sni = out.hello ? parser.sni() : std::nullopt;
    co_return out;
}

}  // namespace tpt::session
