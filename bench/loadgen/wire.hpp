// tpt_loadgen's bytes on the wire: the request file bench/lib.py writes, the backend's answer
// (which names the backend, so a misrouted connection counts as an error) and when a request
// has fully arrived. Pure functions, any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loadgen {

// One connection's bytes. A non-empty prelude (a CONNECT head) is sent first and answered by
// a 2xx response head before the payload (a ClientHello, an HTTP request head) goes.
struct Request {
    std::uint16_t backend = 0;  // the backend whose answer must come back
    std::string prelude;
    std::string payload;
};

// The request file: records of u16 backend, u32 prelude length, prelude, u32 payload length,
// payload (big-endian). Throws std::runtime_error naming the file when it is malformed.
std::vector<Request> load_requests(const std::string& path);

// What backend `index` answers: "tpt-loadgen backend NNNNN\n" padded with 'x' to `bytes`
// (never shorter than that line).
std::string answer(unsigned index, std::size_t bytes);
inline constexpr std::size_t answer_line_bytes = 26;

// True once `data` holds a whole request: a TLS ClientHello (records of type 22 carrying one
// whole handshake message, RFC 8446 §5.1), or an HTTP head (RFC 9112 §2.1: up to the empty
// line), or anything else at all (it is answered at once).
bool request_complete(std::string_view data);

}  // namespace loadgen
