// tpt_loadgen client. Per connection: socket, connect, one epoll_ctl (edge-triggered, in and
// out at once, so never re-armed), send, recv until EOF, close: seven or eight system calls,
// fewer than any proxy makes for the same connection.
#include "client.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

namespace loadgen {

namespace {

constexpr std::uint64_t expire_every_ns = 50'000'000;
constexpr std::size_t head_limit = std::size_t{16} * 1024;

enum class Phase : std::uint8_t { idle, connecting, head, answer };

struct Slot {
    int fd = -1;
    Phase phase = Phase::idle;
    std::uint32_t request = 0;
    std::uint64_t start_ns = 0;
    std::size_t got = 0;                         // answer bytes so far
    std::array<char, answer_line_bytes> line{};  // the answer's first line
    std::string head;                            // the CONNECT answer head so far
};

bool send_all(int fd, const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;  // a fresh socket takes a request of a few KiB whole
        }
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

// RFC 9110 §9.3.6: a 2xx answer to CONNECT establishes the tunnel.
bool status_2xx(const std::string& head) {
    return head.size() > 9 && head.rfind("HTTP/1.", 0) == 0 && head[9] == '2';
}

double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const auto secs = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    return secs(ru.ru_utime) + secs(ru.ru_stime);
}

// A line on stdout at each end of the counted window, so that whoever samples other processes'
// CPU time for the same window (bench.py) knows when.
void mark(const char* what) {
    std::printf("%s\n", what);
    std::fflush(stdout);
}

void sleep_until_ns(std::uint64_t deadline) {
    const std::uint64_t now = now_ns();
    if (deadline > now) {
        std::this_thread::sleep_for(std::chrono::nanoseconds(deadline - now));
    }
}

class Worker {
public:
    Worker(const ClientOptions& options, const std::vector<Request>& requests, unsigned index,
           unsigned connections, const std::vector<std::string>& lines);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Runs until `end`; counts what finishes from `count_from` on. Called on its own thread.
    void run(std::uint64_t count_from, std::uint64_t end);
    const ClientReport& report() const { return report_; }

private:
    bool launch(std::uint32_t i, std::uint64_t start);
    void schedule(std::uint64_t now);
    void on_event(std::uint32_t i, std::uint32_t events);
    void read_some(std::uint32_t i);
    bool consume(std::uint32_t i, const char* data, std::size_t n);
    std::optional<Error> verdict(const Slot& s) const;
    void finish(std::uint32_t i, std::optional<Error> error);
    void count(std::optional<Error> error, std::uint64_t start);
    void expire(std::uint64_t now);
    int timeout_ms(std::uint64_t now, std::uint64_t next_expire, std::uint64_t end) const;

    const ClientOptions& options_;
    const std::vector<Request>& requests_;
    const std::vector<std::string>& lines_;  // each backend's answer line
    int epoll_ = -1;
    std::vector<Slot> slots_;
    std::vector<std::uint32_t> idle_;
    std::uint32_t next_request_ = 0;
    std::uint64_t period_ns_ = 0;  // paced: time between starts; 0 = closed loop
    std::uint64_t next_due_ = 0;
    std::uint64_t count_from_ = 0;
    std::array<char, std::size_t{16} * 1024> buffer_{};
    ClientReport report_;
};

Worker::Worker(const ClientOptions& options, const std::vector<Request>& requests, unsigned index,
               unsigned connections, const std::vector<std::string>& lines)
    : options_(options), requests_(requests), lines_(lines), slots_(connections) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
        throw std::runtime_error("epoll_create1 failed");
    }
    for (std::uint32_t i = connections; i > 0; --i) {
        idle_.push_back(i - 1);
    }
    next_request_ = static_cast<std::uint32_t>(index * requests.size() / options.threads);
    if (options.rate > 0) {
        period_ns_ = static_cast<std::uint64_t>(1e9 * options.threads / options.rate);
    }
}

Worker::~Worker() {
    for (const Slot& s : slots_) {
        if (s.fd >= 0) {
            ::close(s.fd);
        }
    }
    ::close(epoll_);
}

bool Worker::launch(std::uint32_t i, std::uint64_t start) {
    Slot& s = slots_[i];
    s.request = next_request_;
    next_request_ = static_cast<std::uint32_t>((next_request_ + 1) % requests_.size());
    const Request& r = requests_[s.request];
    const Endpoint& to = options_.targets[r.backend % options_.targets.size()];
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd >= 0 &&
        ::connect(s.fd, reinterpret_cast<const sockaddr*>(&to.addr), sizeof to.addr) != 0 &&
        errno != EINPROGRESS) {
        ::close(s.fd);
        s.fd = -1;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = i;
    if (s.fd >= 0 && epoll_ctl(epoll_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
        ::close(s.fd);
        s.fd = -1;
    }
    if (s.fd < 0) {
        count(Error::connect, start);
        return false;
    }
    s.phase = Phase::connecting;
    s.start_ns = start;
    s.got = 0;
    s.head.clear();
    return true;
}

// Closed loop: every idle slot starts now. Paced: a slot starts per period, its latency counted
// from when it was due, so a slow proxy's backlog shows in the figures (no coordinated
// omission). A connect that fails at once leaves the slot idle until the next pass.
void Worker::schedule(std::uint64_t now) {
    std::vector<std::uint32_t> failed;
    while (!idle_.empty() && (period_ns_ == 0 || next_due_ <= now)) {
        const std::uint32_t i = idle_.back();
        idle_.pop_back();
        const std::uint64_t start = period_ns_ == 0 ? now : next_due_;
        next_due_ += period_ns_;
        if (!launch(i, start)) {
            failed.push_back(i);
            break;
        }
    }
    idle_.insert(idle_.end(), failed.begin(), failed.end());
}

void Worker::on_event(std::uint32_t i, std::uint32_t events) {
    Slot& s = slots_[i];
    if (s.phase == Phase::connecting) {
        if ((events & EPOLLERR) != 0) {
            finish(i, Error::connect);
            return;
        }
        if ((events & EPOLLOUT) == 0) {
            return;
        }
        const Request& r = requests_[s.request];
        if (!send_all(s.fd, r.prelude.empty() ? r.payload : r.prelude)) {
            finish(i, Error::reset);
            return;
        }
        s.phase = r.prelude.empty() ? Phase::answer : Phase::head;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0) {
        read_some(i);
    }
}

// Edge-triggered: read until EAGAIN (or the end), so no edge is lost.
void Worker::read_some(std::uint32_t i) {
    for (;;) {
        const ssize_t n = ::recv(slots_[i].fd, buffer_.data(), buffer_.size(), 0);
        if (n > 0) {
            if (!consume(i, buffer_.data(), static_cast<std::size_t>(n))) {
                return;
            }
            continue;
        }
        if (n == 0) {
            finish(i, verdict(slots_[i]));
            return;
        }
        if (errno == EAGAIN) {
            return;
        }
        if (errno != EINTR) {
            finish(i, Error::reset);
            return;
        }
    }
}

// Takes bytes read; false when the connection was finished meanwhile.
bool Worker::consume(std::uint32_t i, const char* data, std::size_t n) {
    Slot& s = slots_[i];
    if (s.phase == Phase::head) {
        s.head.append(data, n);
        const auto end = s.head.find("\r\n\r\n");
        if (end == std::string::npos) {
            if (s.head.size() > head_limit) {
                finish(i, Error::proxy_status);
                return false;
            }
            return true;
        }
        if (!status_2xx(s.head) || !send_all(s.fd, requests_[s.request].payload)) {
            finish(i, status_2xx(s.head) ? Error::reset : Error::proxy_status);
            return false;
        }
        s.phase = Phase::answer;
        data = s.head.data() + end + 4;  // bytes after the head belong to the tunnel
        n = s.head.size() - end - 4;
    }
    for (std::size_t k = 0; k < n && s.got + k < s.line.size(); ++k) {
        s.line[s.got + k] = data[k];
    }
    s.got += n;
    return true;
}

std::optional<Error> Worker::verdict(const Slot& s) const {
    if (s.phase != Phase::answer) {
        return s.phase == Phase::head ? Error::proxy_status : Error::connect;
    }
    if (s.got < options_.answer_bytes) {
        return Error::short_answer;
    }
    const std::string& want = lines_[requests_[s.request].backend];
    if (s.got != options_.answer_bytes ||
        want.compare(0, want.size(), s.line.data(), s.line.size()) != 0) {
        return Error::wrong_answer;
    }
    return std::nullopt;
}

void Worker::finish(std::uint32_t i, std::optional<Error> error) {
    Slot& s = slots_[i];
    ::close(s.fd);
    s.fd = -1;
    s.phase = Phase::idle;
    count(error, s.start_ns);
    idle_.push_back(i);
}

void Worker::count(std::optional<Error> error, std::uint64_t start) {
    const std::uint64_t now = now_ns();
    if (now < count_from_) {
        return;
    }
    if (error) {
        ++report_.errors[static_cast<std::size_t>(*error)];
        return;
    }
    ++report_.done;
    report_.latency.add(now - start);
}

void Worker::expire(std::uint64_t now) {
    const auto limit = static_cast<std::uint64_t>(options_.timeout_s * 1e9);
    for (std::uint32_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].fd >= 0 && now - slots_[i].start_ns > limit) {
            finish(i, Error::timeout);
        }
    }
}

int Worker::timeout_ms(std::uint64_t now, std::uint64_t next_expire, std::uint64_t end) const {
    std::uint64_t until = std::min(next_expire, end);
    if (!idle_.empty()) {
        until = std::min(until, period_ns_ == 0 ? now + 1'000'000 : next_due_);
    }
    return until <= now ? 0 : static_cast<int>((until - now + 999'999) / 1'000'000);
}

void Worker::run(std::uint64_t count_from, std::uint64_t end) {
    count_from_ = count_from;
    std::array<epoll_event, 256> events{};
    std::uint64_t now = now_ns();
    std::uint64_t next_expire = now + expire_every_ns;
    next_due_ = now;
    schedule(now);
    while (now < end) {
        const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                                 timeout_ms(now, next_expire, end));
        for (int k = 0; k < n; ++k) {
            const auto& ev = events[static_cast<std::size_t>(k)];
            on_event(static_cast<std::uint32_t>(ev.data.u64), ev.events);
        }
        now = now_ns();
        if (now >= next_expire) {
            expire(now);
            next_expire = now + expire_every_ns;
        }
        schedule(now);
    }
    // A peer that holds every connection (timeout_s beyond the run) must not look clean.
    for (const Slot& s : slots_) {
        if (s.fd >= 0 && s.start_ns < count_from) {
            ++report_.errors[static_cast<std::size_t>(Error::unfinished)];
        }
    }
}

}  // namespace

ClientReport run_client(const ClientOptions& options, const std::vector<Request>& requests) {
    if (options.threads == 0 || options.concurrency < options.threads || options.targets.empty() ||
        options.answer_bytes < answer_line_bytes) {
        throw std::invalid_argument(
            "need threads >= 1, concurrency >= threads, a target, answer bytes >= 26");
    }
    std::vector<std::string> lines;
    for (const Request& r : requests) {
        while (lines.size() <= r.backend) {
            lines.push_back(answer(static_cast<unsigned>(lines.size()), 0));
        }
    }
    std::vector<std::unique_ptr<Worker>> workers;
    for (unsigned t = 0; t < options.threads; ++t) {
        const unsigned share = options.concurrency / options.threads +
                               (t < options.concurrency % options.threads ? 1 : 0);
        workers.push_back(std::make_unique<Worker>(options, requests, t, share, lines));
    }
    const std::uint64_t start = now_ns();
    const std::uint64_t count_from = start + static_cast<std::uint64_t>(options.warmup_s * 1e9);
    const std::uint64_t end = count_from + static_cast<std::uint64_t>(options.duration_s * 1e9);
    std::vector<std::jthread> threads;
    threads.reserve(workers.size());
    for (auto& w : workers) {
        threads.emplace_back([&w, count_from, end] { w->run(count_from, end); });
    }
    sleep_until_ns(count_from);
    const double cpu0 = cpu_seconds();
    mark("window start");
    sleep_until_ns(end);
    const double cpu1 = cpu_seconds();
    mark("window end");
    threads.clear();  // joins
    ClientReport total;
    total.cpu_s = cpu1 - cpu0;
    for (const auto& w : workers) {
        total.latency.merge(w->report().latency);
        total.done += w->report().done;
        for (std::size_t e = 0; e < total.errors.size(); ++e) {
            total.errors[e] += w->report().errors[e];
        }
    }
    return total;
}

}  // namespace loadgen
