#include <algorithm>
#include <cerrno>
#include <netdb.h>
#include <system_error>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/steady_timer.hpp>

#include <tpt/log.hpp>
#include <tpt/server_set.hpp>

namespace tpt::server_set {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// One listening socket of one address on one worker.
class Listener final : public std::enable_shared_from_this<Listener>, private runtime::Readiness {
public:
    Listener(session::WorkerContext& ctx, std::shared_ptr<snapshot::SnapshotPtr> current,
             std::string key)
        : ctx_(ctx), current_(std::move(current)), key_(std::move(key)) {}

    net::any_io_executor executor() const { return ctx_.worker.executor(); }

    // Control thread, before start(): opens, binds and listens a socket of `staging`, an
    // io_context that never runs (throws on failure). A socket joins its worker's reactor only
    // on that worker (open_on_worker): the workers' io_contexts do no I/O locking
    // (runtime.hpp), so no other thread may register with or close on them.
    void bind(net::io_context& staging, const tcp::endpoint& ep) {
        auto& a = staged_.emplace_back(staging);
        // Opened on the worker; sized here, so that references to them stay valid.
        listening_.emplace_back(ctx_.worker.executor(), ep.protocol());
        if (!ep.address().is_unspecified()) {
            listening_.back().local = ep;  // every accepted socket's local address
        }
        a.open(ep.protocol());
        a.set_option(net::socket_base::reuse_address(true));
        a.set_option(runtime::ReusePort(true));
        if (ep.address().is_v6()) {
            a.set_option(net::ip::v6_only(true));
        }
        a.bind(ep);
        a.listen(net::socket_base::max_listen_connections);
        a.non_blocking(true);               // accept4 returns EAGAIN once the queue is empty
        boost::system::error_code ignored;  // latency and packet savings, not correctness
        runtime::tune_listener(a, ignored);
    }

    // Control thread: hands each listening socket over to its accept loop on the worker.
    void start() {
        for (std::size_t i = 0; i < staged_.size(); ++i) {
            const int fd = staged_[i].release();
            net::post(ctx_.worker.executor(),
                      [self = shared_from_this(), i, fd] { self->open_on_worker(i, fd); });
        }
        staged_.clear();
    }

    // On the worker, or on the control thread before start() (then only staged sockets are
    // open).
    void close() {
        boost::system::error_code ignored;
        for (auto& a : staged_) {
            a.close(ignored);
        }
        for (auto& l : listening_) {
            l.socket.close(ignored);  // a pending wait ends with operation_aborted
            l.backoff.cancel();
        }
    }

private:
    // Connections taken per wakeup before the worker runs its other handlers (HAProxy's
    // tune.maxaccept): a burst of new connections does not hold up the live tunnels.
    static constexpr int max_accepts_per_run = 16;

    // A listening socket on the worker, with what its accept loop needs.
    struct Listening {
        Listening(const net::any_io_executor& ex, tcp p) : socket(ex), backoff(ex), protocol(p) {}
        tcp::socket socket;  // a listening descriptor: the reactor registration to wait on
        net::steady_timer backoff;
        tcp protocol;
        tcp::endpoint local;  // the bound address when it is not a wildcard; else port 0
    };

    void open_on_worker(std::size_t i, int fd) {
        auto& l = listening_[i].socket;
        boost::system::error_code ec;
        l.assign(listening_[i].protocol, fd, ec);
        if (ec) {
            ::close(fd);
            log::error("cannot accept on a listen address",
                       {{"listen", key_}, {"error", ec.message()}});
            return;
        }
        runtime::own_descriptor(l, true);
        accept_more(i);
    }

    // The accept loop of listening socket i, without an Asio operation or a coroutine step per
    // connection: accept4 until the queue is empty (then wait for its next edge), at most
    // max_accepts_per_run at a time. The listening socket sits in a tcp::socket, which has
    // the reactor registration the wait needs; accept is called directly.
    void accept_more(std::size_t i) {
        auto& l = listening_[i].socket;
        for (int n = 0; n < max_accepts_per_run; ++n) {
            tcp::endpoint peer;  // filled by accept: no getpeername per connection
            auto len = static_cast<socklen_t>(peer.capacity());
            const int fd =
                ::accept4(l.native_handle(), peer.data(), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                peer.resize(std::min<std::size_t>(len, peer.capacity()));
                admit(i, fd, peer);
                continue;
            }
            switch (errno) {
                case EAGAIN:
#if EWOULDBLOCK != EAGAIN
                case EWOULDBLOCK:
#endif
                    wait_for_connections(i);
                    return;
                // A connection that failed while queued (accept(2): retry as for EAGAIN), or
                // a signal: the next one.
                case EINTR:
                case ECONNABORTED:
                case EPROTO:
                case ENETDOWN:
                case ENOPROTOOPT:
                case EHOSTDOWN:
                case ENONET:
                case EHOSTUNREACH:
                case EOPNOTSUPP:
                case ENETUNREACH:
                case EPERM:  // refused by a firewall rule
                    continue;
                case EBADF:  // closed by close()
                    return;
                default:
                    back_off(i, errno);
                    return;
            }
        }
        net::post(ctx_.worker.executor(), [self = shared_from_this(), i] { self->accept_more(i); });
    }

    // Takes accept loop i up again after a wait, unless the wait failed (the listening socket
    // was closed).
    void resume(std::size_t i, const boost::system::error_code& ec) {
        if (!ec && listening_[i].socket.is_open()) {
            accept_more(i);
        }
    }

    // A pending wait keeps the listener alive (the reactor holds only a reference to it).
    void wait_for_connections(std::size_t i) {
        if (waits_++ == 0) {
            waiting_self_ = shared_from_this();
        }
        runtime::wait_edge(ctx_.worker, listening_[i].socket, false, *this,
                           static_cast<std::uint8_t>(i));
    }

    void ready(std::uint8_t tag, const boost::system::error_code& ec) override {
        const auto self = end_wait();
        resume(tag, ec);
    }
    void dropped(std::uint8_t /*tag*/) noexcept override { end_wait(); }

    std::shared_ptr<Listener> end_wait() noexcept {
        return --waits_ == 0 ? std::move(waiting_self_) : waiting_self_;
    }

    // EMFILE/ENFILE/ENOBUFS/ENOMEM: the pending connection stays queued; back off instead of
    // spinning on a readable listener, warn at most every 10 s.
    void back_off(std::size_t i, int error) {
        if (const auto held = warnings_.pass(runtime::Clock::now())) {
            log::warn("accept failed, backing off",
                      {{"listen", key_},
                       {"error", std::system_category().message(error)},
                       {"held_back", std::to_string(*held)}});
        }
        auto& timer = listening_[i].backoff;
        timer.expires_after(100ms);
        timer.async_wait([self = shared_from_this(), i](const boost::system::error_code& ec) {
            self->resume(i, ec);
        });
    }

    void admit(std::size_t i, int fd, const tcp::endpoint& peer) {
        tcp::socket socket(ctx_.worker.executor());
        boost::system::error_code ec;
        socket.assign(listening_[i].protocol, fd, ec);
        if (ec) {  // the reactor could not register it (out of memory)
            ::close(fd);
            return;
        }
        runtime::own_descriptor(socket, true);  // accept4 made it O_NONBLOCK
        dispatch(std::move(socket), peer, listening_[i].local);
    }

    void dispatch(tcp::socket socket, const tcp::endpoint& peer, const tcp::endpoint& local) {
        // A reference: the slot changes only by a post to this worker, never during this call,
        // and the session's copy is the one count the connection takes (the count is shared
        // with the other workers, so each change moves its cache line between cores).
        const snapshot::SnapshotPtr& snap = *current_;
        if (!snap) {
            return;
        }
        const auto it = snap->server_by_listen.find(key_);
        if (it == snap->server_by_listen.end()) {
            return;  // the address is being removed by a reload; closing is all we can do
        }
        const auto index = it->second;
        const auto& listen = *snap->servers[index].listener_metrics.find(key_);
        auto admission = snapshot::Admission::admit(*snap, index, listen, ctx_.worker.sessions());
        if (!admission) {
            // SO_LINGER 0 would send RST; a plain close sends FIN, which clients read as
            // "closed at once".
            return;
        }
        session::start(std::move(socket), peer, local, snap, index, std::move(*admission), ctx_);
    }

    session::WorkerContext& ctx_;
    std::shared_ptr<snapshot::SnapshotPtr> current_;
    std::string key_;
    std::vector<tcp::acceptor> staged_;  // bind() to start(): on the staging io_context
    std::vector<Listening> listening_;   // one per resolved endpoint, on the worker
    log::Throttle warnings_{10s};
    std::size_t waits_ = 0;  // edge waits pending
    std::shared_ptr<Listener> waiting_self_;
};

ServerSet::ServerSet(runtime::Runtime& runtime) : runtime_(runtime) {
    for (std::size_t i = 0; i < runtime.size(); ++i) {
        contexts_.push_back(std::make_unique<session::WorkerContext>(runtime.worker(i)));
        current_.push_back(std::make_shared<snapshot::SnapshotPtr>());
    }
}

ServerSet::~ServerSet() = default;

Result<Applied> ServerSet::apply(const snapshot::SnapshotPtr& next) {
    auto added = bind_new(*next->config);
    if (!added) {
        return added.error();
    }
    publish(next);
    Applied applied;
    for (auto& [key, ls] : *added) {
        for (auto& l : ls) {
            l->start();
        }
        applied.added_listen.push_back(key);
        listeners_.emplace(key, std::move(ls));
    }
    applied.removed_listen = close_removed(*next);
    return applied;
}

// All or nothing: on a failure the sockets bound so far are closed.
Result<ServerSet::Bound> ServerSet::bind_new(const config::Config& cfg) {
    Bound added;
    for (const auto& server : cfg.servers) {
        for (const auto& hp : server.listen) {
            const auto key = hp.to_string();
            if (listeners_.contains(key) || added.contains(key)) {
                continue;
            }
            auto bound = bind_everywhere(key, hp, server.protocol);
            if (!bound) {
                for (auto& [k, ls] : added) {
                    for (auto& l : ls) {
                        l->close();
                    }
                }
                return bound.error();
            }
            added.emplace(key, std::move(*bound));
        }
    }
    return added;
}

// One listener per worker for one address, every endpoint of it bound (SO_REUSEPORT).
Result<std::vector<std::shared_ptr<Listener>>> ServerSet::bind_everywhere(
    const std::string& key, const address::HostPort& hp, address::Family family) {
    const auto eps = runtime::listen_endpoints(hp, family);
    if (!eps) {
        return eps.error();
    }
    std::vector<std::shared_ptr<Listener>> per_worker;
    for (std::size_t w = 0; w < contexts_.size(); ++w) {
        auto l = std::make_shared<Listener>(*contexts_[w], current_[w], key);
        per_worker.push_back(l);
        for (const auto& ep : *eps) {
            try {
                l->bind(staging_, ep);
            } catch (const boost::system::system_error& e) {
                for (auto& done : per_worker) {
                    done->close();
                }
                return Error{"cannot listen on " + key + ": " + e.code().message()};
            }
        }
    }
    return per_worker;
}

// Publish first, then start new accept loops: posts to one worker run in order, so a new
// listener never sees a snapshot without its address.
void ServerSet::publish(const snapshot::SnapshotPtr& next) {
    for (std::size_t w = 0; w < contexts_.size(); ++w) {
        net::post(runtime_.worker(w).executor(), [slot = current_[w], next] { *slot = next; });
    }
}

std::vector<std::string> ServerSet::close_removed(const snapshot::Snapshot& next) {
    std::vector<std::string> removed;
    for (auto it = listeners_.begin(); it != listeners_.end();) {
        if (next.server_by_listen.contains(it->first)) {
            ++it;
            continue;
        }
        for (auto& l : it->second) {
            net::post(l->executor(), [l] { l->close(); });
        }
        removed.push_back(it->first);
        it = listeners_.erase(it);
    }
    return removed;
}

void ServerSet::close_all() {
    for (auto& [key, ls] : listeners_) {
        for (auto& l : ls) {
            net::post(l->executor(), [l] { l->close(); });
        }
    }
    listeners_.clear();
}

void ServerSet::abort_all() {
    for (std::size_t w = 0; w < runtime_.size(); ++w) {
        auto& worker = runtime_.worker(w);
        net::post(worker.executor(), [&worker] { worker.abort_all(); });
    }
}

std::uint64_t ServerSet::live() const {
    std::uint64_t n = 0;
    for (const auto& c : contexts_) {
        n += c->worker.sessions().load(std::memory_order_relaxed);
    }
    return n;
}

std::vector<std::string> ServerSet::bound() const {
    std::vector<std::string> keys;
    keys.reserve(listeners_.size());
    for (const auto& [key, ls] : listeners_) {
        keys.push_back(key);
    }
    return keys;
}

}  // namespace tpt::server_set
