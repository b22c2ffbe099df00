// tunnel: relay bytes both ways between two connected sockets until both directions closed.
// Thread affinity: both sockets' worker. Data path: a streaming direction is spliced, when the
// worker's splice mode allows it for this tunnel,
// (splice(2) socket -> pipe -> socket, the pipe borrowed from the worker only while bytes are
// in flight); small messages are copied through a pooled chunk. Backpressure: the next read
// waits until what was read is written. An idle tunnel holds no pipe and no buffer. SIGPIPE
// is blocked on a thread that relays.
#pragma once

#include <cstdint>

#include <boost/asio/ip/tcp.hpp>

#include <tpt/outcome.hpp>
#include <tpt/runtime.hpp>

namespace tpt::tunnel {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Plain counters of one tunnel, read by the worker's tick (same thread).
struct Counters {
    std::uint64_t to_upstream = 0;
    std::uint64_t to_client = 0;
    runtime::Clock::time_point last_activity = runtime::Clock::now();
};

// Who hears the end of a relay started with start(): a session that runs its relay outside
// any coroutine frame, so that an established tunnel holds no phase state.
class Observer {
public:
    // Once, with the outcome, from the worker (never inline in start()).
    virtual void relayed(Outcome outcome) = 0;
    // Instead of relayed(): the io_context was destroyed with the relay still open.
    virtual void abandoned() noexcept = 0;

protected:
    Observer() = default;
    Observer(const Observer&) = default;
    Observer& operator=(const Observer&) = default;
    ~Observer() = default;
};

struct StartOptions {
    bool local = false;         // both ends are loopback addresses (runtime::Worker::Splice)
    bool client_ended = false;  // an Asio read on the client already returned EOF
    // The upstream connect turned TCP_QUICKACK off (upstream::start_connect) and nothing was
    // written to the upstream yet, so the handshake's last ACK is still held back: it rides
    // on the client's first bytes. If the client has nothing to say when the relay starts (a
    // server-first protocol: SMTP, MySQL), the relay sends that ACK at once, or the server
    // would not accept the connection before the delayed-ACK timer (200 ms).
    bool upstream_ack_held = false;
};

// Relays between `client` and `upstream` (or, with upstream == nullptr, the built-in `echo`:
// every byte read from the client is written back to it) and reports to `observer`.
// FIN from one side is passed on as shutdown(send) on the other and the other direction keeps
// flowing; a reset or error on either side closes both. The outcome is ok when both
// directions ended with FIN, else client_reset / upstream_reset. The caller closes both
// sockets when the relay ends: the last FIN is passed on by that close, not by a shutdown
// call. The sockets, counters and observer must outlive the relay.
void start(tcp::socket& client, tcp::socket* upstream, const StartOptions& options,
           runtime::Worker& worker, Counters& counters, Observer& observer);

}  // namespace tpt::tunnel
