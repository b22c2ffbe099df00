// runtime: the worker threads (one io_context each), their buffer pools and 1 s ticks.
// Thread affinity: a Worker's members are touched only on its own thread, except
// executor()/context() which any thread may use to post work to it.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

namespace tpt::runtime {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

// Something that lives on a worker and wants a call once a second (a live tunnel: publish byte
// counts, enforce idle_timeout, write stats lines) and a way to be closed at shutdown.
// The hook unlinks itself when the object dies.
class Tickable : public boost::intrusive::list_base_hook<
                     boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
public:
    Tickable() = default;
    Tickable(const Tickable&) = delete;
    Tickable& operator=(const Tickable&) = delete;
    virtual ~Tickable() = default;
    virtual void tick(Clock::time_point now) = 0;
    virtual void abort_for_shutdown() = 0;
};

// A relay chunk, borrowed only while bytes are in flight (STYLE: one chunk per direction).
inline constexpr std::size_t chunk_size = 32 * 1024;
struct Chunk {
    std::byte data[chunk_size];
};

class Worker {
public:
    explicit Worker(std::size_t index);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    std::size_t index() const noexcept { return index_; }
    net::io_context& context() noexcept { return ctx_; }
    net::any_io_executor executor() noexcept { return ctx_.get_executor(); }

    std::unique_ptr<Chunk> take_chunk();
    void give_back(std::unique_ptr<Chunk> chunk) noexcept;

    void add(Tickable& t) noexcept { tickables_.push_back(t); }
    // Closes every registered tunnel (shutdown's drain timeout). Worker thread only.
    void abort_all();
    std::size_t live() const noexcept { return tickables_.size(); }

private:
    friend class Runtime;
    void start_tick();

    std::size_t index_;
    net::io_context ctx_{1};
    net::steady_timer tick_timer_{ctx_};
    std::vector<std::unique_ptr<Chunk>> pool_;
    boost::intrusive::list<Tickable, boost::intrusive::constant_time_size<false>> tickables_;
};

class Runtime {
public:
    explicit Runtime(std::size_t workers);
    ~Runtime();

    std::size_t size() const noexcept { return workers_.size(); }
    Worker& worker(std::size_t i) noexcept { return *workers_[i]; }

    void start();  // one thread per worker, each running its context until stop()
    void stop();   // stops the contexts and joins the threads

private:
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::unique_ptr<net::executor_work_guard<net::io_context::executor_type>>> guards_;
    std::vector<std::thread> threads_;
};

}  // namespace tpt::runtime
