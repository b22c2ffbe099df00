// runtime: the worker threads (one io_context each), their pipe and buffer pools and 1 s ticks.
// Thread affinity: a Worker's members are touched only on its own thread, except
// executor()/context() which any thread may use to post work to it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/detail/socket_option.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>

namespace tpt::runtime {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

using tcp = net::ip::tcp;

// TCP_QUICKACK as a socket option. Off on a new connection, the ACK of the peer's first bytes
// rides on the first bytes sent back (HAProxy's tcp-smart-accept/-connect): one packet less.
using QuickAck = net::detail::socket_option::boolean<IPPROTO_TCP, TCP_QUICKACK>;

// Sets TCP_NODELAY on and TCP_QUICKACK off on a listening socket, after listen() (which resets
// the ACK state). Linux copies both into every connection it accepts: no call per connection.
void tune_listener(tcp::acceptor& acceptor, boost::system::error_code& ec);

// Tells Asio that a socket's descriptor is not shared (Asio assumes any descriptor it did not
// open, accepted ones included, may be dup()ed, and deregisters it with EPOLL_CTL_DEL before
// closing it) and, with `non_blocking`, that it is O_NONBLOCK already (so Asio's first
// operation on it makes no ioctl). Reactor backends only; elsewhere it does nothing.
void own_descriptor(tcp::socket& socket, bool non_blocking = false) noexcept;

// Makes the first read wait on a socket just registered with the worker's reactor wait for
// epoll's report, where Asio would complete it at once to try a read first. For a connection
// that has received nothing yet (an upstream just connected), that read only finds EAGAIN.
// No readiness is missed: registering a socket makes epoll report what it holds already, and
// every arrival after. Call it right after the socket is opened or assigned, on the worker,
// before anything waits on it. Epoll reactor only; elsewhere it does nothing.
void read_after_event(tcp::socket& socket) noexcept;

// Asio's implementation of a socket (its descriptor, reactor registration and state), which
// basic_socket keeps protected. For the two functions above and the relay's edge waits.
struct SocketAccess : tcp::socket {
    static auto& implementation(tcp::socket& s) {
        return (s.*(&SocketAccess::impl_)).get_implementation();
    }
};

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
// The relay copies through one only when it cannot get a pipe (descriptors exhausted).
inline constexpr std::size_t chunk_size = std::size_t{32} * 1024;
struct Chunk {
    std::array<std::byte, chunk_size> data;
};

// A non-blocking pipe for splice(2): socket -> pipe -> socket without copying through user
// space. Borrowed from the worker only while bytes are in flight, so an idle tunnel holds none.
class Pipe {
public:
    Pipe() = default;
    Pipe(Pipe&& o) noexcept : read_(o.read_), write_(o.write_), capacity_(o.capacity_) {
        o.read_ = o.write_ = -1;
        o.capacity_ = 0;
    }
    Pipe& operator=(Pipe&& o) noexcept;
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
    ~Pipe() { close(); }

    // A new pipe, or an invalid one when pipe2() fails (EMFILE/ENFILE): the caller copies.
    static Pipe make() noexcept;

    bool valid() const noexcept { return read_ >= 0; }
    int read_end() const noexcept { return read_; }
    int write_end() const noexcept { return write_; }
    std::size_t capacity() const noexcept { return capacity_; }
    void close() noexcept;

private:
    int read_ = -1;
    int write_ = -1;
    std::size_t capacity_ = 0;
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

    // From the pool, else a new one; invalid when none can be made. A pipe given back must be
    // empty (a pipe holding bytes of a broken tunnel is closed instead).
    Pipe take_pipe() noexcept;
    void give_back(Pipe pipe) noexcept;
    std::size_t pooled_pipes() const noexcept { return pipes_.size(); }
    // When a streaming direction is spliced (TPT_SPLICE; tests, comparisons):
    //   automatic  unless both ends of the tunnel are loopback addresses: between two local
    //              processes copying moves more bytes per second and per CPU second
    //              (bench/RESULTS.md), across a network splice saves the copies;
    //   always / never.
    enum class Splice : std::uint8_t { automatic, always, never };
    void set_splice(Splice mode) noexcept { splice_ = mode; }
    void set_splice(bool on) noexcept { splice_ = on ? Splice::always : Splice::never; }
    Splice splice_mode() const noexcept { return splice_; }
    // Whether a tunnel whose two ends are both loopback (`local`) or not may splice.
    bool splice(bool local) const noexcept {
        return splice_ == Splice::always || (splice_ == Splice::automatic && !local);
    }

    // Sessions open on this worker that count for the drain (read by any thread). A session
    // destroyed with the io_context (stop before the drain ended) still finds it.
    std::atomic<std::uint64_t>& sessions() noexcept { return sessions_; }

    void add(Tickable& t) noexcept { tickables_.push_back(t); }
    // Closes every registered tunnel (shutdown's drain timeout). Worker thread only.
    void abort_all();
    std::size_t live() const noexcept { return tickables_.size(); }

private:
    friend class Runtime;
    void start_tick();

    std::size_t index_;
    // Declared before ctx_, so it outlives the handlers that ctx_'s destruction destroys.
    std::atomic<std::uint64_t> sessions_{0};
    // One thread runs it. No locking in its reactor's I/O (Asio's UNSAFE_IO hint; posting from
    // other threads stays safe): every socket on it is opened, used and closed on this worker,
    // never from another thread. The per-descriptor mutexes were several lock pairs per
    // connection (bench/RESULTS.md).
    net::io_context ctx_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    net::steady_timer tick_timer_{ctx_};
    std::vector<std::unique_ptr<Chunk>> pool_;
    std::vector<Pipe> pipes_;
    Splice splice_ = Splice::automatic;
    boost::intrusive::list<Tickable, boost::intrusive::constant_time_size<false>> tickables_;
};

class Runtime {
public:
    // TPT_SPLICE in the environment: 0 never splice, 1 always, unset (or anything else)
    // automatic. See Worker::Splice.
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
