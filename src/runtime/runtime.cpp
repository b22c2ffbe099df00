#include <array>
#include <cstdlib>
#include <fcntl.h>
#include <string_view>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include <tpt/runtime.hpp>

#include "asio_access.hpp"

namespace tpt::runtime {

namespace {
// Chunks kept per worker beyond those in flight: enough for bursts, bounded for RSS.
constexpr std::size_t max_pooled_chunks = 64;
// Empty pipes kept per worker: two descriptors each, and their capacity counts against
// fs.pipe-user-pages-soft, so only enough for the tunnels busy at one instant.
constexpr std::size_t max_pooled_pipes = 32;
}  // namespace

Pipe& Pipe::operator=(Pipe&& o) noexcept {
    if (this != &o) {
        close();
        read_ = o.read_;
        write_ = o.write_;
        capacity_ = o.capacity_;
        o.read_ = o.write_ = -1;
        o.capacity_ = 0;
    }
    return *this;
}

Pipe Pipe::make() noexcept {
    std::array<int, 2> fds{};
    Pipe p;
    if (::pipe2(fds.data(), O_NONBLOCK | O_CLOEXEC) != 0) {
        return p;
    }
    p.read_ = fds[0];
    p.write_ = fds[1];
    // The default size (64 KiB, less above fs.pipe-user-pages-soft): on loopback 256 KiB and
    // 1 MiB pipes moved no more per CPU second (bench/RESULTS.md), and they use that per-user
    // quota up four and sixteen times faster.
    const int cap = ::fcntl(p.write_, F_GETPIPE_SZ);
    p.capacity_ = cap > 0 ? static_cast<std::size_t>(cap) : 4096;
    return p;
}

void Pipe::close() noexcept {
    if (read_ >= 0) {
        ::close(read_);
        ::close(write_);
    }
    read_ = write_ = -1;
    capacity_ = 0;
}

void tune_listener(tcp::acceptor& acceptor, boost::system::error_code& ec) {
    acceptor.set_option(tcp::no_delay(true), ec);
    if (!ec) {
        acceptor.set_option(QuickAck(false), ec);
    }
}

std::optional<tcp::endpoint> original_destination(tcp::socket& socket, const tcp::endpoint& local) {
    // <linux/netfilter_ipv4.h> SO_ORIGINAL_DST and <linux/netfilter_ipv6/ip6_tables.h>
    // IP6T_SO_ORIGINAL_DST (both 80), without the kernel headers' clashes with netinet/in.h.
    constexpr int original_dst = 80;
    tcp::endpoint out;
    auto len = static_cast<socklen_t>(out.capacity());
    // An IPv4 client of a dual-stack [::] listener has a v4-mapped local address, and an IPv4
    // conntrack entry: ask the IPv4 level, and compare with the unmapped address.
    const auto addr = local.address();
    const bool mapped = addr.is_v6() && addr.to_v6().is_v4_mapped();
    const bool v6 = addr.is_v6() && !mapped;
    if (::getsockopt(socket.native_handle(), v6 ? SOL_IPV6 : SOL_IP, original_dst, out.data(),
                     &len) != 0) {
        return std::nullopt;
    }
    out.resize(len);
    const tcp::endpoint self =
        mapped ? tcp::endpoint(net::ip::make_address_v4(net::ip::v4_mapped, addr.to_v6()),
                               local.port())
               : local;
    if (out == self) {
        return std::nullopt;
    }
    return out;
}

Result<std::vector<tcp::endpoint>> listen_endpoints(const address::HostPort& hp,
                                                    address::Family family) {
    std::vector<tcp::endpoint> out;
    boost::system::error_code ec;
    const auto literal = net::ip::make_address(hp.host, ec);
    if (!ec) {
        out.emplace_back(literal, hp.port);
        return out;
    }
    net::io_context io;
    tcp::resolver resolver(io);
    const auto results =
        resolver.resolve(hp.host, std::to_string(hp.port), tcp::resolver::passive, ec);
    if (ec) {
        return Error{"cannot resolve listen host " + hp.host + ": " + ec.message()};
    }
    for (const auto& r : results) {
        const auto& ep = r.endpoint();
        if ((family == address::Family::v4 && !ep.address().is_v4()) ||
            (family == address::Family::v6 && !ep.address().is_v6())) {
            continue;
        }
        out.push_back(ep);
    }
    if (out.empty()) {
        return Error{"listen host " + hp.host + " has no address of the server's protocol"};
    }
    return out;
}

Worker::Worker() : reactor_(reactor_of(ctx_)) {
    // Reserved up front so give_back() never allocates.
    pool_.reserve(max_pooled_chunks);
    pipes_.reserve(max_pooled_pipes);
}

Pipe Worker::take_pipe() noexcept {
    if (pipes_.empty()) {
        return Pipe::make();
    }
    Pipe p = std::move(pipes_.back());
    pipes_.pop_back();
    return p;
}

void Worker::give_back(Pipe pipe) noexcept {
    if (pipe.valid() && pipes_.size() < max_pooled_pipes) {
        pipes_.push_back(std::move(pipe));
    }
}

std::unique_ptr<Chunk> Worker::take_chunk() {
    if (pool_.empty()) {
        return std::make_unique<Chunk>();
    }
    auto c = std::move(pool_.back());
    pool_.pop_back();
    return c;
}

void Worker::give_back(std::unique_ptr<Chunk> chunk) noexcept {
    if (chunk && pool_.size() < max_pooled_chunks) {
        pool_.push_back(std::move(chunk));
    }
}

void Worker::abort_all() {
    // abort_for_shutdown() closes sockets; the tunnels unlink themselves later, when their
    // coroutines finish, so iterate over a copy of the pointers.
    std::vector<Tickable*> all;
    all.reserve(tickables_.size());
    for (auto& t : tickables_) {
        all.push_back(&t);
    }
    for (auto* t : all) {
        t->abort_for_shutdown();
    }
}

void Worker::start_tick() {
    tick_timer_.expires_after(std::chrono::seconds(1));
    tick_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec) {
            return;
        }
        const auto now = Clock::now();
        // tick() may abort (close) a tunnel but never unlinks it synchronously.
        for (auto& t : tickables_) {
            t.tick(now);
        }
        start_tick();
    });
}

Runtime::Runtime(std::size_t workers) {
    // TPT_SPLICE: 0 relays by copying only, 1 splices every stream, unset lets each tunnel
    // choose (Worker::Splice). A diagnostic and benchmark switch (bench/RESULTS.md).
    const char* splice_env = std::getenv("TPT_SPLICE");
    auto splice = Worker::Splice::automatic;
    if (splice_env != nullptr && std::string_view(splice_env) == "0") {
        splice = Worker::Splice::never;
    } else if (splice_env != nullptr && std::string_view(splice_env) == "1") {
        splice = Worker::Splice::always;
    }
    workers_.reserve(workers);
    for (std::size_t i = 0; i < workers; ++i) {
        workers_.push_back(std::make_unique<Worker>());
        workers_.back()->set_splice(splice);
    }
}

Runtime::~Runtime() {
    stop();
}

void Runtime::start() {
    for (auto& w : workers_) {
        guards_.push_back(
            std::make_unique<net::executor_work_guard<net::io_context::executor_type>>(
                w->ctx_.get_executor()));
        net::post(w->ctx_, [wp = w.get()] { wp->start_tick(); });
        threads_.emplace_back([wp = w.get()] { wp->ctx_.run(); });
    }
}

void Runtime::stop() {
    guards_.clear();
    for (auto& w : workers_) {
        w->ctx_.stop();
    }
    for (auto& t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
    threads_.clear();
}

}  // namespace tpt::runtime
