// outcome: how a tunnel ended, and the small value-or-error type of the pure modules. ◇
// Thread affinity: none (pure values).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

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
};

std::string_view to_string(Outcome o) noexcept;

// True for the outcomes that count in tpt_route_errors_total{reason}.
bool is_route_error(Outcome o) noexcept;

// A value or an error message; the error type of the pure parsers.
struct Error {
    std::string message;
};

template <class T>
class Result {
public:
    Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }
    const T& value() const& { return std::get<0>(v_); }
    T& value() & { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    const T& operator*() const& { return value(); }
    const T* operator->() const { return &value(); }
    const std::string& error() const { return std::get<1>(v_).message; }

private:
    std::variant<T, Error> v_;
};

}  // namespace tpt
