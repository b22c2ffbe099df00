// tpt_loadgen backend. TCP_DEFER_ACCEPT on the listeners: accept returns with the request
// already queued, so a connection usually costs accept4, recv, send, close and never touches
// epoll; one that is still short of its request is registered and finished on its edge.
#include "backend.hpp"

#include <cerrno>
#include <cstdint>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>

#include "wire.hpp"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

namespace loadgen {

namespace {

constexpr std::uint64_t listener_tag = std::uint64_t{1} << 63;
constexpr std::size_t request_limit = std::size_t{64} * 1024;

int listen_on(const Endpoint& ep) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one) != 0 ||
        ::bind(fd, reinterpret_cast<const sockaddr*>(&ep.addr), sizeof ep.addr) != 0 ||
        ::listen(fd, 4096) != 0) {
        throw std::runtime_error("cannot listen on " + ep.text + ": " + std::to_string(errno));
    }
    return fd;
}

struct Conn {
    std::string bytes;
    std::uint16_t backend = 0;
    bool registered = false;
};

class Backend {
public:
    Backend(const BackendOptions& options, const std::vector<std::string>& answers);
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;
    [[noreturn]] void run();

private:
    void accept_all(std::uint16_t k);
    void serve(int fd);
    void close_conn(int fd);

    const std::vector<std::string>& answers_;
    int epoll_ = -1;
    std::vector<int> listeners_;
    std::vector<Conn> conns_;  // by descriptor
    std::array<char, std::size_t{16} * 1024> buffer_{};
};

Backend::Backend(const BackendOptions& options, const std::vector<std::string>& answers)
    : answers_(answers) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
        throw std::runtime_error("epoll_create1 failed");
    }
    for (std::size_t k = 0; k < options.listen.size(); ++k) {
        listeners_.push_back(listen_on(options.listen[k]));
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET;
        ev.data.u64 = listener_tag | k;
        epoll_ctl(epoll_, EPOLL_CTL_ADD, listeners_.back(), &ev);
    }
}

void Backend::run() {
    std::array<epoll_event, 256> events{};
    for (;;) {
        const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), -1);
        for (int i = 0; i < n; ++i) {
            const std::uint64_t data = events[static_cast<std::size_t>(i)].data.u64;
            if ((data & listener_tag) != 0) {
                accept_all(static_cast<std::uint16_t>(data & ~listener_tag));
            } else {
                serve(static_cast<int>(data));
            }
        }
    }
}

void Backend::accept_all(std::uint16_t k) {
    for (;;) {
        const int fd = ::accept4(listeners_[k], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;  // EAGAIN: the queue is empty; anything else: the next edge retries
        }
        const auto at = static_cast<std::size_t>(fd);
        if (conns_.size() <= at) {
            conns_.resize(at + 1);
        }
        conns_[at].backend = k;
        serve(fd);
    }
}

void Backend::serve(int fd) {
    Conn& c = conns_[static_cast<std::size_t>(fd)];
    for (;;) {
        const ssize_t n = ::recv(fd, buffer_.data(), buffer_.size(), 0);
        if (n > 0) {
            c.bytes.append(buffer_.data(), static_cast<std::size_t>(n));
            if (request_complete(c.bytes) || c.bytes.size() > request_limit) {
                const std::string& a = answers_[c.backend];
                (void)::send(fd, a.data(), a.size(), MSG_NOSIGNAL);
                close_conn(fd);
                return;
            }
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            break;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        close_conn(fd);  // EOF or an error before the whole request
        return;
    }
    if (!c.registered) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = static_cast<std::uint64_t>(fd);
        c.registered = epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) == 0;
    }
}

void Backend::close_conn(int fd) {
    Conn& c = conns_[static_cast<std::size_t>(fd)];
    c.bytes.clear();
    c.registered = false;
    ::close(fd);
}

}  // namespace

void run_backend(const BackendOptions& options) {
    if (options.answer_bytes < answer_line_bytes || options.answer_bytes > request_limit) {
        throw std::invalid_argument("answer bytes must be in [26, 65536]");
    }
    std::vector<std::string> answers;
    for (unsigned k = 0; k < options.listen.size(); ++k) {
        answers.push_back(answer(k, options.answer_bytes));
    }
    std::vector<std::unique_ptr<Backend>> backends;
    for (unsigned t = 0; t < std::max(options.threads, 1U); ++t) {
        backends.push_back(std::make_unique<Backend>(options, answers));
    }
    std::cout << "ready" << std::endl;
    std::vector<std::jthread> threads;
    threads.reserve(backends.size());
    for (auto& b : backends) {
        threads.emplace_back([&b] { b->run(); });
    }
    for (;;) {
        pause();
    }
}

}  // namespace loadgen
