// The session's first phase: what a connection's first bytes say (SPEC §4.2, §12): a
// ClientHello, an HTTP request head, or an explicit proxy's CONNECT head.
// Thread affinity: the connection's worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <tpt/config.hpp>
#include <tpt/outcome.hpp>

namespace tpt::session {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// What the first bytes said.
struct Inbound {
    std::vector<std::uint8_t> bytes;  // to send upstream first, unchanged (CONNECT: what followed
                                      // the head, e.g. a ClientHello sent early)
    std::optional<std::string> name;  // SNI, Host or CONNECT host: what the route is chosen by
    bool name_is_ipv6 = false;        // an IPv6 literal (Host or CONNECT), without brackets
    std::optional<tcp::endpoint> original;  // SPEC §11: a redirected connection's destination
    std::uint16_t connect_port = 0;         // CONNECT host:port's port
    bool http = false;                      // an HTTP request head came (default target port 80)
    bool closed = false;            // EOF before a verdict: route what came, pass the FIN on
    bool reset = false;             // a reset or error before a verdict: nothing to route
    Outcome refused = Outcome::ok;  // CONNECT listener: bad_request or method_not_allowed
};

// How a server reads its first bytes.
enum class Reading : std::uint8_t { none, tls, http, detect, connect };
Reading reading_of(const config::Server& server) noexcept;

// Reads until the parser of `how` has a verdict (the caller bounds it with its deadline).
// Memory: at most max_head_bytes plus one read.
net::awaitable<Inbound> read_inbound(tcp::socket& socket, Reading how);

// SPEC §12 sni_must_match: the SNI of the ClientHello that `bytes` start with, reading more
// from `socket` into `bytes` until it is whole. nullopt: the bytes are no ClientHello, or it
// names no valid host; `reset` when the client broke off.
struct HelloName {
    std::optional<std::string> sni;
    bool hello = false;  // the bytes are a (whole) ClientHello
    bool reset = false;
};
net::awaitable<HelloName> read_hello_name(tcp::socket& socket, std::vector<std::uint8_t>& bytes);

}  // namespace tpt::session
