// runtime: the worker threads (one io_context each), their pipe and buffer pools, 1 s ticks,
// and the socket operations tpt does in fewer system calls than Asio's public API allows.
// Thread affinity: a Worker's members are touched only on its own thread, except
// executor()/context() which any thread may use to post work to it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <tpt/address.hpp>
#include <tpt/outcome.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>

namespace tpt::runtime {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

using tcp = net::ip::tcp;

// A boolean socket option, in the form Asio's set_option() takes (its SettableSocketOption
// requirements).
template <int Level, int Name>
class BoolOption {
public:
    constexpr explicit BoolOption(bool on) noexcept : value_(on ? 1 : 0) {}
    template <typename Protocol>
    static constexpr int level(const Protocol& /*p*/) noexcept {
        return Level;
    }
    template <typename Protocol>
    static constexpr int name(const Protocol& /*p*/) noexcept {
        return Name;
    }
    template <typename Protocol>
    const int* data(const Protocol& /*p*/) const noexcept {
        return &value_;
    }
    template <typename Protocol>
    static constexpr std::size_t size(const Protocol& /*p*/) noexcept {
        return sizeof(int);
    }

private:
    int value_;
};

// TCP_QUICKACK. Off on a new connection, the ACK of the peer's first bytes rides on the first
// bytes sent back (HAProxy's tcp-smart-accept/connect): one packet less.
using QuickAck = BoolOption<IPPROTO_TCP, TCP_QUICKACK>;
using ReusePort = BoolOption<SOL_SOCKET, SO_REUSEPORT>;

// Sets TCP_NODELAY on and TCP_QUICKACK off on a listening socket, after listen() (which resets
// the ACK state). Linux copies both into every connection it accepts: no call per connection.
void tune_listener(tcp::acceptor& acceptor, boost::system::error_code& ec);

// The addresses to bind for a listen address: an IP literal as it is, a host name through
// getaddrinfo (every answer of the family, in its order). Blocking: control thread only.
Result<std::vector<tcp::endpoint>> listen_endpoints(const address::HostPort& hp,
                                                    address::Family family);

// SPEC §11: where a connection redirected by netfilter (REDIRECT) was going, from
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6). nullopt when it was not redirected:
// no NAT entry, or its original destination is the listener itself (`local`).
std::optional<tcp::endpoint> original_destination(tcp::socket& socket, const tcp::endpoint& local);

// --- Fewer system calls than Asio's public API -------------------------------------------
// Asio's reactor has no public way to say what tpt knows about its descriptors. The three
// functions below say it through Asio's internals where those were checked (Boost 1.81, the
// epoll reactor: src/runtime/asio_internals.cpp, its static_assert and runtime_test count the
// calls they save); elsewhere (TPT_ASIO_INTERNALS=OFF) they fall back to the public API, with
// the same behaviour and more system calls (bench/RESULTS.md has both).

// True when the functions below use Asio's internals.
bool asio_internals() noexcept;

// Tells Asio that a socket's descriptor is not shared (Asio assumes any descriptor it did not
// open, accepted ones included, may be dup()ed, and deregisters it with EPOLL_CTL_DEL before
// closing it) and, with `non_blocking`, that it is O_NONBLOCK already (so Asio's first
// operation on it makes no ioctl).
void own_descriptor(tcp::socket& socket, bool non_blocking = false) noexcept;

// Makes the first read wait on a socket just registered with the worker's reactor wait for
// epoll's report, where Asio would complete it at once to try a read first. For a connection
// that has received nothing yet (an upstream just connected), that read only finds EAGAIN.
// No readiness is missed: registering a socket makes epoll report what it holds already, and
// every arrival after. Call it right after the socket is opened or assigned, on the worker,
// before anything waits on it.
void read_after_event(tcp::socket& socket) noexcept;

// Who hears a readiness wait end. ready() is called once, on the socket's worker, with no
// error (an edge came, or may have: the caller's next read or write may still find EAGAIN) or
// with the error that ended the wait (operation_aborted: the socket was closed;
// bad_descriptor: it was closed already). dropped() is called instead when the io_context is
// destroyed with the wait pending. `tag` is the caller's, handed back as it was given.
class Readiness {
public:
    virtual void ready(std::uint8_t tag, const boost::system::error_code& ec) = 0;
    virtual void dropped(std::uint8_t tag) noexcept = 0;

protected:
    Readiness() = default;
    Readiness(const Readiness&) = default;
    Readiness& operator=(const Readiness&) = default;
    ~Readiness() = default;
};

class Worker;

// Waits until `socket` (a connection, or a listening descriptor held in a tcp::socket) is
// readable (`write` false) or writable, without a system call: Asio's async_wait re-arms the
// descriptor with epoll_ctl(EPOLL_CTL_MOD) on every call, a third of the relay's calls for
// small messages. Only valid after the socket said EAGAIN: a wait may complete at once when an
// edge came since the last wait (a spurious wakeup at worst), and a short read may leave a FIN
// queued that raises no new edge. `socket` belongs to `worker`; `to` outlives the wait.
void wait_edge(Worker& worker, tcp::socket& socket, bool write, Readiness& to, std::uint8_t tag);

// The deadline of one connection's phases before its relay (SPEC §4: the ClientHello within
// client_hello_timeout, then connect + CONNECT within connect_timeout), as the modules that
// wait see it. Its owner (the session) closes the sockets a phase waits on when it passes,
// which ends every wait on them at once; the timer is armed only when a phase is about to wait
// (most loopback connects never wait and cost no timer).
class Deadline {
public:
    virtual Clock::time_point at() const noexcept = 0;
    // The owner's timer fired: the sockets were closed under the phase.
    virtual bool passed() const noexcept = 0;
    // Before a wait that closing the owner's sockets ends: arms the timer (once per phase).
    virtual void arm() = 0;
    // Completes when the deadline passes (arming it): for waits that no socket close ends
    // (name resolution), raced with `||`.
    virtual net::awaitable<void> reached() = 0;

protected:
    Deadline() = default;
    Deadline(const Deadline&) = default;
    Deadline& operator=(const Deadline&) = default;
    ~Deadline() = default;
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
    Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

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

    // The reactor of context(), for wait_edge() (asio_internals.cpp; null without internals).
    void* reactor() const noexcept { return reactor_; }

private:
    friend class Runtime;
    void start_tick();

    // Declared before ctx_, so it outlives the handlers that ctx_'s destruction destroys.
    std::atomic<std::uint64_t> sessions_{0};
    // One thread runs it. No locking in its reactor's I/O (Asio's UNSAFE_IO hint; posting from
    // other threads stays safe): every socket on it is opened, used and closed on this worker,
    // never from another thread. The per-descriptor mutexes were several lock pairs per
    // connection (bench/RESULTS.md).
    net::io_context ctx_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    void* reactor_;
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
