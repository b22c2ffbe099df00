// connect: the CONNECT exchange with an upstream HTTP proxy over a connected socket.
// Thread affinity: the socket's worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <tpt/config.hpp>
#include <tpt/outcome.hpp>
#include <tpt/runtime.hpp>

namespace tpt::connect {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct HandshakeResult {
    Outcome outcome = Outcome::ok;  // ok | proxy_status | proxy_protocol | connect_timeout
    unsigned status_code = 0;
    std::string status_line;             // sanitised, for the log (never a header value)
    std::string auth_scheme;             // Proxy-Authenticate scheme on 407
    std::vector<std::uint8_t> leftover;  // tunnel bytes that followed the head
};

// Sends the CONNECT request for `target` with `headers` and reads the response head (SPEC
// §4.5), within `deadline`: it is armed before the exchange waits, and when it passes its owner
// closes `socket`, which ends the exchange as connect_timeout. On 2xx the socket is ready for
// tunnelling and `leftover` belongs to the client. `socket`, `headers` and `deadline` must
// outlive the coroutine.
net::awaitable<HandshakeResult> handshake(tcp::socket& socket, std::string_view target,
                                          const std::vector<config::Header>& headers,
                                          runtime::Deadline& deadline);

}  // namespace tpt::connect
