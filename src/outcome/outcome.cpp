#include <tpt/outcome.hpp>

namespace tpt {

std::string_view to_string(Outcome o) noexcept {
    switch (o) {
        case Outcome::ok:
            return "ok";
        case Outcome::ban:
            return "ban";
        case Outcome::client_hello_timeout:
            return "client_hello_timeout";
        case Outcome::no_target:
            return "no_target";
        case Outcome::dns:
            return "dns";
        case Outcome::connect_refused:
            return "connect_refused";
        case Outcome::connect_timeout:
            return "connect_timeout";
        case Outcome::proxy_status:
            return "proxy_status";
        case Outcome::proxy_protocol:
            return "proxy_protocol";
        case Outcome::idle_timeout:
            return "idle_timeout";
        case Outcome::client_reset:
            return "client_reset";
        case Outcome::upstream_reset:
            return "upstream_reset";
        case Outcome::shutdown:
            return "shutdown";
        case Outcome::client_closed:
            return "client_closed";
    }
    // Only reachable through a value cast from outside the enumeration.
    return "unknown";
}

// SPEC §6: the `reason` values of tpt_route_errors_total.
bool is_route_error(Outcome o) noexcept {
    switch (o) {
        case Outcome::connect_refused:
        case Outcome::connect_timeout:
        case Outcome::dns:
        case Outcome::proxy_status:
        case Outcome::proxy_protocol:
        case Outcome::client_hello_timeout:
            return true;
        case Outcome::ok:
        case Outcome::ban:
        case Outcome::no_target:
        case Outcome::idle_timeout:
        case Outcome::client_reset:
        case Outcome::upstream_reset:
        case Outcome::shutdown:
        case Outcome::client_closed:
            return false;
    }
    return false;
}

}  // namespace tpt
