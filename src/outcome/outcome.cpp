#include <algorithm>

#include <tpt/outcome.hpp>

namespace tpt {

namespace {

// In the order of the enumeration.
constexpr std::array<std::string_view, outcome_count> outcome_names{
    "ok",
    "ban",
    "client_hello_timeout",
    "no_target",
    "dns",
    "connect_refused",
    "connect_timeout",
    "proxy_status",
    "proxy_protocol",
    "idle_timeout",
    "client_reset",
    "upstream_reset",
    "shutdown",
    "client_closed",
    "no_original_dst",
    "loop",
    "sni_mismatch",
    "bad_request",
    "method_not_allowed",
};

// SPEC §6 (and §11, §12): the `reason` values of tpt_route_errors_total.
constexpr std::array<Outcome, 9> route_errors{Outcome::connect_refused,
                                              Outcome::connect_timeout,
                                              Outcome::dns,
                                              Outcome::proxy_status,
                                              Outcome::proxy_protocol,
                                              Outcome::client_hello_timeout,
                                              Outcome::no_original_dst,
                                              Outcome::loop,
                                              Outcome::sni_mismatch};

}  // namespace

std::string_view to_string(Outcome o) noexcept {
    return enum_name(outcome_names, o, "unknown");
}

bool is_route_error(Outcome o) noexcept {
    return std::find(route_errors.begin(), route_errors.end(), o) != route_errors.end();
}

}  // namespace tpt
