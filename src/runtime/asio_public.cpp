// The public-API fallback of asio_internals.cpp (TPT_ASIO_INTERNALS off): the same behaviour
// through async_wait, at the cost of the system calls that file saves.
#if !TPT_ASIO_INTERNALS

#include <utility>

#include <tpt/runtime.hpp>

#include "asio_access.hpp"

namespace tpt::runtime {

namespace {

// async_wait's handler: tells `to` once, or that the wait was dropped with its io_context.
class WaitHandler {
public:
    WaitHandler(Readiness& to, std::uint8_t tag) noexcept : to_(&to), tag_(tag) {}
    WaitHandler(WaitHandler&& o) noexcept : to_(std::exchange(o.to_, nullptr)), tag_(o.tag_) {}
    WaitHandler(const WaitHandler&) = delete;
    WaitHandler& operator=(const WaitHandler&) = delete;
    WaitHandler& operator=(WaitHandler&&) = delete;
    ~WaitHandler() {
        if (to_ != nullptr) {
            to_->dropped(tag_);
        }
    }
    void operator()(const boost::system::error_code& ec) {
        std::exchange(to_, nullptr)->ready(tag_, ec);
    }

private:
    Readiness* to_;
    std::uint8_t tag_;
};

}  // namespace

bool asio_internals() noexcept {
    return false;
}

void* reactor_of(net::io_context& /*ctx*/) {
    return nullptr;
}

void own_descriptor(tcp::socket& /*socket*/, bool /*non_blocking*/) noexcept {}

void read_after_event(tcp::socket& /*socket*/) noexcept {}

void wait_edge(Worker& /*worker*/, tcp::socket& socket, bool write, Readiness& to,
               std::uint8_t tag) {
    socket.async_wait(write ? tcp::socket::wait_write : tcp::socket::wait_read,
                      WaitHandler(to, tag));
}

}  // namespace tpt::runtime

#endif  // !TPT_ASIO_INTERNALS
