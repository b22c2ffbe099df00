#include <boost/asio/post.hpp>

#include <tpt/runtime.hpp>

namespace tpt::runtime {

namespace {
// Chunks kept per worker beyond those in flight: enough for bursts, bounded for RSS.
constexpr std::size_t max_pooled_chunks = 64;
}  // namespace

Worker::Worker(std::size_t index) : index_(index) {}

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
    workers_.reserve(workers);
    for (std::size_t i = 0; i < workers; ++i) {
        workers_.push_back(std::make_unique<Worker>(i));
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
