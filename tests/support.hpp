// Helpers shared by the unit tests of the I/O modules: loopback peers, a deadline as the
// session keeps one, reserved ports. Header-only, test code only.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <poll.h>
#include <string>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <tpt/runtime.hpp>

#include <sys/socket.h>

namespace tpt::test {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

inline const net::ip::address loopback = net::ip::make_address("127.0.0.1");

// Polls `done` until it holds or 5 s pass; true when it held.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

// Whether `fd` has something to read (bytes or EOF) within `wait`.
inline bool readable_within(int fd, std::chrono::milliseconds wait) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) == 1;
}

// A blocking socket of the test's that gives up on a read after 5 s (a read that would hang
// on a regression fails instead).
inline void bound_reads(tcp::socket& s) {
    const timeval five{5, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
}

// Reads until EOF (or an error, which fails the test unless `reset_ok`). Plain recv(2), so
// that bound_reads() applies (Asio's blocking read would poll again after the timeout).
inline std::string read_to_eof(tcp::socket& s, bool reset_ok = false) {
    std::string out;
    char buf[4096];
    for (;;) {
        const auto n = ::recv(s.native_handle(), buf, sizeof buf, 0);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EAGAIN) {  // == EWOULDBLOCK on Linux
            ADD_FAILURE() << "no EOF within the read timeout";
        } else if (n < 0 && !reset_ok) {
            ADD_FAILURE() << "read failed: " << std::strerror(errno);
        }
        return out;
    }
}

// The value of one series ("name{labels}" exactly as serialised) in Prometheus text.
inline std::optional<double> metric(const std::string& text, const std::string& series) {
    const std::string key = "\n" + series + " ";
    const auto at = ("\n" + text).find(key);
    if (at == std::string::npos) {
        return std::nullopt;
    }
    return std::stod(text.substr(at + key.size() - 1));
}

// A port held for a process under test: bound with SO_REUSEPORT and never listening, so the
// kernel hands it to no one else while the listener that shares it (tpt's, also
// SO_REUSEPORT) takes every connection.
class ReservedPort {
public:
    ReservedPort() : socket_(io_) {
        socket_.open(tcp::v4());
        socket_.set_option(runtime::ReusePort(true));
        socket_.bind(tcp::endpoint(loopback, 0));
    }
    std::uint16_t port() const { return socket_.local_endpoint().port(); }
    std::string address() const { return "127.0.0.1:" + std::to_string(port()); }

private:
    net::io_context io_;
    tcp::socket socket_;
};

// A deadline as the session keeps one: when it passes, `socket` is closed. Counts arm().
class TestDeadline final : public runtime::Deadline {
public:
    TestDeadline(net::io_context& io, tcp::socket& s, std::chrono::milliseconds budget)
        : timer_(io), socket_(s), at_(runtime::Clock::now() + budget) {}

    runtime::Clock::time_point at() const noexcept override { return at_; }
    bool passed() const noexcept override { return passed_; }
    void arm() override {
        ++arms;
        armed_fd = socket_.native_handle();
        timer_.expires_at(at_);
        timer_.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) {
                passed_ = true;
                socket_.close();
            }
        });
    }
    net::awaitable<void> reached() override {
        arm();
        co_await timer_.async_wait(net::as_tuple(net::use_awaitable));
    }

    int arms = 0;
    int armed_fd = -1;  // the socket's descriptor when the deadline was last armed

private:
    net::steady_timer timer_;
    tcp::socket& socket_;
    runtime::Clock::time_point at_;
    bool passed_ = false;
};

}  // namespace tpt::test
