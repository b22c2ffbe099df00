// outcome: how a tunnel ended, the value-or-error type of the pure modules, and the size
// limits the parsers share. ◇
// Thread affinity: none (pure values).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

namespace tpt {

// One value per way a connection can end. Its name is both the access-log `result` and,
// for the SPEC §6 error reasons, the `reason` label of tpt_route_errors_total.
enum class Outcome : std::uint8_t {
    ok,
    ban,                   // routed to the built-in `ban`
    client_hello_timeout,  // no whole ClientHello within client_hello_timeout
    no_target,             // use_sni_as_target without SNI and without `target`
    dns,                   // the upstream (or proxy) host did not resolve
    connect_refused,       // every address refused or was unreachable
    connect_timeout,       // connect (+ CONNECT answer) exceeded connect_timeout
    proxy_status,          // the CONNECT proxy answered non-2xx
    proxy_protocol,        // the CONNECT proxy answered something that is not HTTP/1.x
    idle_timeout,          // no byte in either direction for idle_timeout
    client_reset,          // the client reset or errored mid-tunnel
    upstream_reset,        // the upstream reset or errored mid-tunnel
    shutdown,              // closed by the drain timeout at shutdown
    client_closed,         // the client closed before sending a byte (TLS listeners)
    no_original_dst,       // SPEC §11: the route needs a redirected connection's destination
    loop,                  // SPEC §11: the destination is one of tpt's own listen addresses
    sni_mismatch,          // SPEC §12: the ClientHello names another host than the route's
    bad_request,           // SPEC §12: not an HTTP request head (CONNECT listener: 400)
    method_not_allowed,    // SPEC §12: a CONNECT listener got another method (405)
};

inline constexpr std::size_t outcome_count =
    static_cast<std::size_t>(Outcome::method_not_allowed) + 1;

std::string_view to_string(Outcome o) noexcept;

// True for the outcomes that count in tpt_route_errors_total{reason}.
bool is_route_error(Outcome o) noexcept;

// The name of enumerator `e` in `names`, a table in enumerator order; `fallback` for a value
// outside it (only a cast from outside the enumeration makes one).
template <class Enum, std::size_t N>
constexpr std::string_view enum_name(const std::array<std::string_view, N>& names, Enum e,
                                     std::string_view fallback) noexcept {
    const auto i = static_cast<std::size_t>(e);
    return i < N ? names[i] : fallback;
}

// The most bytes tpt reads before it knows where a connection goes, and the most it reads of
// a proxy's answer: a ClientHello (SPEC §4.2), a CONNECT response head (§4.5).
inline constexpr std::size_t max_head_bytes = std::size_t{16} * 1024;
// An HTTP head's end: its empty line (RFC 9112 §2.1).
inline constexpr std::string_view end_of_head = "\r\n\r\n";

// The error of the pure parsers: a message for the operator, naming the bad input.
struct Error {
    std::string message;
};

// Called by Result::value() on an error (found by argument-dependent lookup).
[[noreturn]] inline void throw_exception_from_error(const Error& e,
                                                    const boost::source_location& /*where*/) {
    throw std::invalid_argument(e.message);
}

// The one value-or-error type at module boundaries (STYLE: std::expected needs C++23).
template <class T>
using Result = boost::system::result<T, Error>;

}  // namespace tpt
