#include <tpt/admin.hpp>

namespace tpt::admin {

bool control_allowed(const net::ip::address& peer, bool control_from_any) {
    if (control_from_any) {
        return true;
    }
    if (peer.is_v4()) {
        return peer.to_v4().to_bytes()[0] == 127;
    }
    const auto v6 = peer.to_v6();
    if (v6.is_loopback()) {
        return true;
    }
    // A dual-stack listener ([::]) sees IPv4 peers as ::ffff:a.b.c.d.
    if (v6.is_v4_mapped()) {
        return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_bytes()[0] == 127;
    }
    return false;
}

}  // namespace tpt::admin
