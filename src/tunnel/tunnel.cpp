// The relay: one small state machine per tunnel, driven by readiness waits on the worker's
// reactor. A streaming direction moves bytes socket -> pipe -> socket with splice(2), so they
// never cross user space; a direction borrows a pipe from the worker only while bytes are in
// flight and gives it back empty, and it reads again only once the pipe is drained
// (backpressure: at most one pipe's capacity in flight per direction). Small messages, and
// everything when no pipe can be had (descriptors exhausted) or splice is off, are copied
// through a pooled chunk by the same machine, with the same backpressure.
//
// Memory of an idle tunnel: the relay state (a few hundred bytes) and one pending wait per
// direction. No allocation per chunk: waits reuse the reactor's recycled operation memory.
#include <array>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <pthread.h>
#include <type_traits>
#include <utility>

#include <boost/asio/post.hpp>

#include <tpt/tunnel.hpp>

#include <sys/socket.h>
#include <sys/syscall.h>

namespace tpt::tunnel {

namespace {

// Bytes one wakeup of a direction may move before it waits again, so that one fast tunnel
// cannot starve the others on its worker.
constexpr std::size_t wakeup_budget = std::size_t{1024} * 1024;

// Who broke the tunnel first: the side whose read failed, or the side a write to failed.
// Once both sockets are closed the other direction fails too, so only the first one counts.
struct Failure {
    std::optional<Outcome> first;
    void set(bool client_side) {
        if (!first) {
            first = client_side ? Outcome::client_reset : Outcome::upstream_reset;
        }
    }
};

enum class Io : std::uint8_t { ok, again, eof, error, unsupported };

struct IoResult {
    Io status;
    std::size_t bytes = 0;
};

IoResult classify(ssize_t n) {
    if (n > 0) {
        return {Io::ok, static_cast<std::size_t>(n)};
    }
    if (n == 0) {
        return {Io::eof};
    }
    if (errno == EAGAIN) {  // == EWOULDBLOCK on Linux
        return {Io::again};
    }
    if (errno == EINVAL) {
        return {Io::unsupported};  // splice(2) from or to this descriptor is not possible
    }
    return {Io::error};
}

// splice(2) into a socket the peer has closed raises SIGPIPE (it takes no MSG_NOSIGNAL).
// Blocked on the relaying thread, the relay sees EPIPE whatever the process's disposition.
void block_sigpipe_on_this_thread() noexcept {
    thread_local bool blocked = false;
    if (!blocked) {
        sigset_t pipe_only;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
        blocked = true;
    }
}

// Retries a system call interrupted by a signal; any other result is final.
template <typename Call>
ssize_t no_eintr(Call call) {
    ssize_t n = call();
    while (n < 0 && errno == EINTR) {
        n = call();
    }
    return n;
}

// recv(2) and send(2) without glibc's cancellation-point wrappers: in a process with threads,
// those switch the calling thread's cancellation state before and after every call (two
// atomic operations each time) so that pthread_cancel could stop it inside. tpt never
// cancels a thread; the relay makes about eight of these calls per short connection.
ssize_t recv_nc(int fd, void* buf, std::size_t len, int flags) noexcept {
    return ::syscall(SYS_recvfrom, fd, buf, len, flags, nullptr, nullptr);
}
ssize_t send_nc(int fd, const void* buf, std::size_t len, int flags) noexcept {
    return ::syscall(SYS_sendto, fd, buf, len, flags, nullptr, 0);
}

// One direction of a tunnel: from -> to.
struct Direction {
    Direction() = default;
    Direction(tcp::socket* f, tcp::socket* t, bool client, std::uint64_t* c) noexcept
        : from(f), to(t), from_client(client), count(c) {}

    tcp::socket* from = nullptr;
    tcp::socket* to = nullptr;
    bool from_client = true;
    std::uint64_t* count = nullptr;

    bool done = false;
    bool stream = false;     // the last read filled a chunk: splice the next one
    bool copy_only = false;  // splice refused by these descriptors: chunks from now on
    // What the source said after the bytes in flight, acted on once they are written: ok
    // (nothing yet), again, eof or error. See RelayCore::recv_in.
    Io after = Io::ok;
    runtime::Pipe pipe;  // borrowed while bytes are in flight
    std::unique_ptr<runtime::Chunk> chunk;
    std::size_t begin = 0;  // chunk bytes [begin, end) not yet written
    std::size_t end = 0;
    std::size_t in_pipe = 0;

    std::size_t in_flight() const noexcept { return in_pipe + (end - begin); }
};
static_assert(sizeof(Direction) <= 88, "a tunnel's memory: bench/RESULTS.md, RSS per tunnel");

class RelayCore;

// A posted continuation of a direction (see RelayCore::yield). Destroyed without being called
// only when the io_context is destroyed with the tunnel still open.
class Resume {
public:
    Resume(RelayCore* core, std::uint8_t dir) noexcept : core_(core), dir_(dir) {}
    Resume(Resume&& o) noexcept : core_(std::exchange(o.core_, nullptr)), dir_(o.dir_) {}
    Resume(const Resume&) = delete;
    Resume& operator=(const Resume&) = delete;
    Resume& operator=(Resume&&) = delete;
    ~Resume();
    void operator()();

private:
    RelayCore* core_;
    std::uint8_t dir_;
};

// The relay. Lives on the heap from start() until both directions are done and no wait is
// pending; then it reports to its observer and deletes itself. Each readiness wait's tag is
// the direction and whether it waits to write (tag_of).
class RelayCore final : public runtime::Readiness {
public:
    RelayCore(Observer& observer, tcp::socket& client, tcp::socket* upstream, bool local,
              runtime::Worker& worker, Counters& counters)
        : worker_(worker), counters_(counters), observer_(observer) {
        splice_ = worker.splice(local);
        if (upstream != nullptr) {
            dirs_[0] = Direction{&client, upstream, true, &counters.to_upstream};
            dirs_[1] = Direction{upstream, &client, false, &counters.to_client};
            ndirs_ = 2;
        } else {  // echo: the client's bytes go back to the client
            dirs_[0] = Direction{&client, &client, true, &counters.to_client};
            ndirs_ = 1;
        }
    }
    RelayCore(const RelayCore&) = delete;
    RelayCore& operator=(const RelayCore&) = delete;
    ~RelayCore() = default;

    // Each direction starts with an edge wait. Asio marks a new descriptor "maybe ready", and
    // keeps that mark until an operation on it finds nothing more (EOF), so the first wait
    // completes at once and the direction reads what came before the relay. The exception is
    // a client whose EOF a read before the relay already consumed (`client_ended`): no edge
    // will come for it, so its direction reads at once instead (posted: never inline).
    void start(bool client_ended, bool upstream_ack_held) {
        ack_held_ = upstream_ack_held && ndirs_ == 2;
        block_sigpipe_on_this_thread();
        // The analyzer assumes a wait may complete (and free this) inline; neither a post nor
        // a reactor operation ever does.
        // NOLINTBEGIN(clang-analyzer-cplusplus.NewDelete)
        for (std::uint8_t i = 0; i < ndirs_; ++i) {
            if (i == 0 && client_ended) {
                yield(i);
            } else {
                wait(i, false);
            }
        }
        // NOLINTEND(clang-analyzer-cplusplus.NewDelete)
    }

    void ready(std::uint8_t tag, const boost::system::error_code& ec) override {
        const auto i = static_cast<std::uint8_t>(tag >> 1U);
        const bool was_write = (tag & 1U) != 0;
        resume(i, was_write, ec);
    }

    void dropped(std::uint8_t /*tag*/) noexcept override { abandon(); }

    void resume(std::uint8_t i, bool was_write, const boost::system::error_code& ec) {
        --pending_;
        Direction& d = dirs_[i];
        if (ec) {
            // A failed wait: the socket was closed (by the other direction, an idle timeout
            // or shutdown) or broke; a failed write wait blames the peer written to.
            fail(d, was_write ? !d.from_client : d.from_client);
        } else {
            run(i);
        }
        if (pending_ == 0 && all_done()) {
            complete(failure_.first.value_or(Outcome::ok));  // may delete this
        }
    }

    // The io_context is being destroyed with this relay's waits pending.
    void abandon() noexcept {
        if (--pending_ == 0) {
            Observer& o = observer_;
            delete this;
            o.abandoned();
        }
    }

private:
    static std::uint8_t tag_of(std::uint8_t dir, bool write) noexcept {
        return static_cast<std::uint8_t>((static_cast<unsigned>(dir) << 1U) | (write ? 1U : 0U));
    }

    // Called once, with no wait pending: frees the relay, then tells the observer (which may
    // end the session at once).
    void complete(Outcome outcome) {
        if (ndirs_ == 1) {
            // Echo: every byte read from the client was also written to it.
            counters_.to_upstream = counters_.to_client;
        }
        Observer& o = observer_;
        delete this;
        o.relayed(outcome);
    }

    bool all_done() const noexcept {
        for (std::uint8_t i = 0; i < ndirs_; ++i) {
            if (!dirs_[i].done) {
                return false;
            }
        }
        return true;
    }

    // Waits for direction i's source to be readable, or its sink writable. Called only after
    // that socket said EAGAIN (a direction reads until EAGAIN or EOF, never stopping at a
    // short read, which may leave a FIN queued behind it), so the next edge is all there is
    // to wait for.
    void wait(std::uint8_t i, bool write) {
        const Direction& d = dirs_[i];
        ++pending_;
        runtime::wait_edge(worker_, write ? *d.to : *d.from, write, *this, tag_of(i, write));
    }

    // Runs direction i once the worker has run what is queued, as a wait would.
    void yield(std::uint8_t i) {
        ++pending_;
        net::post(worker_.context(), Resume(this, i));
    }

    // Moves bytes until a socket would block, the reader ends, or the wakeup budget is spent.
    void run(std::uint8_t i) {
        Direction& d = dirs_[i];
        std::size_t moved = 0;
        while ((d.in_flight() != 0 || refill(i, d, moved)) && write_out(i, d, moved)) {
        }
        if (moved != 0) {
            counters_.last_activity = runtime::Clock::now();
        }
        if (ack_held_ && d.from_client) {
            // The client direction's first run (StartOptions::upstream_ack_held): bytes sent
            // upstream carried the ACK, a FIN or a close did too; otherwise send it now.
            ack_held_ = false;
            if (moved == 0 && !d.done) {
                boost::system::error_code ignored;
                d.to->set_option(runtime::QuickAck(true), ignored);  // sends a pending ACK
            }
        }
    }

    // Reads into direction i while nothing is in flight. False when the direction stops for
    // now: it waits, yields to the worker's other handlers, or ended.
    bool refill(std::uint8_t i, Direction& d, std::size_t moved) {
        if (moved >= wakeup_budget) {
            // Bytes may still be waiting, and no new edge need come for them: come back after
            // the other handlers on this worker instead of waiting.
            release(d);
            yield(i);
            return false;
        }
        const auto r = d.after != Io::ok ? std::exchange(d.after, Io::ok) : fill(d);
        if (r == Io::again) {
            release(d);
            wait(i, false);
        } else if (r == Io::eof) {
            // SPEC §4.6: pass the FIN on as a half-close; the other direction goes on. When
            // every other direction is done the tunnel ends now, and closing the sockets
            // sends that FIN: no shutdown call.
            release(d);
            d.done = true;
            if (!all_done()) {
                boost::system::error_code ignored;
                d.to->shutdown(tcp::socket::shutdown_send, ignored);
            }
        } else if (r != Io::ok) {
            fail(d, d.from_client);
        }
        return r == Io::ok;
    }

    // Writes what is in flight; false when the direction waits for its sink or failed.
    bool write_out(std::uint8_t i, Direction& d, std::size_t& moved) {
        const auto w = drain(d);
        if (w.status == Io::ok) {
            *d.count += w.bytes;
            moved += w.bytes;
            return true;
        }
        if (w.status == Io::again) {
            wait(i, true);
        } else {
            fail(d, !d.from_client);
        }
        return false;
    }

    // Reads what `from` has into the pipe (or chunk). ok, again, eof or error.
    Io fill(Direction& d) {
        const auto r = d.stream && !d.copy_only && splice_ ? splice_in(d) : recv_in(d);
        // As HAProxy's splice-auto: a read that found a whole chunk waiting means a stream,
        // which is spliced; less means messages, which are copied (splicing a small message
        // costs more than copying it: bench/RESULTS.md).
        if (r == Io::ok) {
            d.stream = d.in_flight() >= runtime::chunk_size;
        }
        return r;
    }

    // socket -> pipe. Falls back to copying, for good, when the descriptors refuse splice.
    Io splice_in(Direction& d) {
        if (!d.pipe.valid()) {
            d.pipe = worker_.take_pipe();
        }
        if (d.pipe.valid()) {
            const int fd = d.from->native_handle();
            const auto want = d.pipe.capacity();
            const auto r = classify(no_eintr([&] {
                return ::splice(fd, nullptr, d.pipe.write_end(), nullptr, want,
                                SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            }));
            if (r.status != Io::unsupported) {
                d.in_pipe = r.bytes;
                return r.status;
            }
            d.copy_only = true;
            release(d);
        }
        return recv_in(d);
    }

    // socket -> chunk.
    Io recv_in(Direction& d) {
        if (!d.chunk) {
            d.chunk = worker_.take_chunk();
        }
        const int fd = d.from->native_handle();
        const auto r = classify(no_eintr(
            [&] { return recv_nc(fd, d.chunk->data.data(), runtime::chunk_size, MSG_DONTWAIT); }));
        d.begin = 0;
        d.end = r.bytes;
        if (r.status == Io::ok && d.end < runtime::chunk_size) {
            // A short read emptied the socket's queue. Asking again before writing costs the
            // read that would find EAGAIN after the write anyway, and when the peer's FIN came
            // with the bytes (a response and its close), the bytes then leave with our FIN in
            // one segment (drain's MSG_MORE, then the shutdown or close): a packet less.
            const auto more = classify(no_eintr([&] {
                return recv_nc(fd, d.chunk->data.data() + d.end, runtime::chunk_size - d.end,
                               MSG_DONTWAIT);
            }));
            if (more.status == Io::ok) {
                d.end += more.bytes;  // the next fill goes on reading
            } else {
                d.after = more.status == Io::unsupported ? Io::error : more.status;
            }
        }
        return r.status == Io::unsupported ? Io::error : r.status;
    }

    // Writes what is in flight to `to`, as much as it takes now.
    IoResult drain(Direction& d) {
        const int fd = d.to->native_handle();
        IoResult r;
        if (d.in_pipe != 0) {
            r = classify(no_eintr([&] {
                return ::splice(d.pipe.read_end(), nullptr, fd, nullptr, d.in_pipe,
                                SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            }));
            if (r.status == Io::ok) {
                d.in_pipe -= r.bytes;
            }
        } else {
            r = classify(no_eintr([&] {
                // Before a FIN: held back until the shutdown or close adds it (see recv_in).
                const int more = d.after == Io::eof ? MSG_MORE : 0;
                return send_nc(fd, d.chunk->data.data() + d.begin, d.end - d.begin,
                               MSG_DONTWAIT | MSG_NOSIGNAL | more);
            }));
            if (r.status == Io::ok) {
                d.begin += r.bytes;
            }
        }
        if (r.status == Io::eof) {
            r.status = Io::error;  // a socket that accepts nothing while writable is broken
        }
        return r;
    }

    // Gives the pipe and chunk back to the worker; only empty ones go back to the pools.
    void release(Direction& d) noexcept {
        if (d.in_pipe == 0) {
            worker_.give_back(std::move(d.pipe));
        }
        d.pipe.close();
        d.in_pipe = 0;
        worker_.give_back(std::move(d.chunk));
        d.begin = d.end = 0;
    }

    // SPEC §4.6: a reset or error on either side closes both; the pending waits of the
    // other direction then fail with operation_aborted.
    void fail(Direction& d, bool client_side) {
        failure_.set(client_side);
        release(d);
        boost::system::error_code ignored;
        d.from->close(ignored);
        d.to->close(ignored);
        d.done = true;
    }

    runtime::Worker& worker_;
    Counters& counters_;
    Observer& observer_;
    Failure failure_;
    std::array<Direction, 2> dirs_;
    std::uint8_t ndirs_ = 0;
    bool splice_ = false;    // streams may be spliced (runtime::Worker::Splice)
    bool ack_held_ = false;  // StartOptions::upstream_ack_held, until the client's first run
    std::size_t pending_ = 0;
};

Resume::~Resume() {
    if (core_ != nullptr) {
        core_->abandon();
    }
}

void Resume::operator()() {
    std::exchange(core_, nullptr)->resume(dir_, false, boost::system::error_code{});
}

}  // namespace

void start(tcp::socket& client, tcp::socket* upstream, const StartOptions& options,
           runtime::Worker& worker, Counters& counters, Observer& observer) {
    auto* relay = new RelayCore(observer, client, upstream, options.local, worker, counters);
    // Never completes inline: the first event is a wait.
    relay->start(options.client_ended, options.upstream_ack_held);
}

}  // namespace tpt::tunnel
