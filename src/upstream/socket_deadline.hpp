// SocketDeadline: a deadline that closes one socket when it passes: a pool member's share of
// a connection's deadline, or an active probe's timeout. Private to the upstream module.
// Thread affinity: the socket's executor.
#pragma once

#include <algorithm>
#include <memory>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/runtime.hpp>

namespace tpt::upstream {

class SocketDeadline final : public runtime::Deadline {
public:
    // `outer` (optional) still bounds this deadline, is armed with it, and passing it counts
    // as passing this one. `socket` and `outer` outlive this object.
    SocketDeadline(runtime::tcp::socket& socket, runtime::Clock::time_point at,
                   runtime::Deadline* outer)
        : outer_(outer),
          at_(outer != nullptr ? std::min(at, outer->at()) : at),
          timer_(socket.get_executor()),
          state_(std::make_shared<State>(State{&socket})) {}
    SocketDeadline(const SocketDeadline&) = delete;
    SocketDeadline& operator=(const SocketDeadline&) = delete;
    ~SocketDeadline() {
        state_->socket = nullptr;  // a completion already queued must not touch it
        timer_.cancel();
    }

    runtime::Clock::time_point at() const noexcept override { return at_; }
    bool passed() const noexcept override {
        return state_->passed || (outer_ != nullptr && outer_->passed());
    }
    void arm() override {
        if (outer_ != nullptr) {
            outer_->arm();
        }
        if (!armed_ && !outer_owns_end()) {
            armed_ = true;
            timer_.expires_at(at_);
            timer_.async_wait(Expire{state_});
        }
    }
    boost::asio::awaitable<void> reached() override {
        if (outer_owns_end()) {
            co_await outer_->reached();
            co_return;
        }
        arm();
        co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }

private:
    struct State {
        runtime::tcp::socket* socket;
        bool passed = false;
    };
    // The timer's handler: it holds the state, never the deadline, which may be gone.
    struct Expire {
        std::shared_ptr<State> state;
        void operator()(const boost::system::error_code& ec) const {
            if (!ec && state->socket != nullptr) {
                state->passed = true;
                boost::system::error_code ignored;
                state->socket->close(ignored);
            }
        }
    };

    // The outer deadline ends no later than this one: its own timer does the closing.
    bool outer_owns_end() const noexcept { return outer_ != nullptr && at_ >= outer_->at(); }

    runtime::Deadline* outer_;
    runtime::Clock::time_point at_;
    boost::asio::steady_timer timer_;
    std::shared_ptr<State> state_;
    bool armed_ = false;
};

}  // namespace tpt::upstream
