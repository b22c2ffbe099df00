// edge_wait: a readiness wait on a socket (or listening socket) of a worker that costs no
// system call, for the relay and the accept loops.
// Thread affinity: the socket's worker only.
//
// Asio registers every socket once, edge-triggered, for reading (and for writing from its
// first write wait on); its async_wait still re-arms the descriptor with
// epoll_ctl(EPOLL_CTL_MOD) on every call, one system call per wait, which was a third of the
// relay's calls for small messages. EdgeWaitOp is queued on the same registration with
// speculation allowed: when an edge arrived since the last completed wait, it completes at once
// (at worst a spurious wakeup: the caller's next read finds EAGAIN and waits again); otherwise
// it waits for the next edge. No edge can be lost: the reactor marks the descriptor ready on
// every event that finds no operation queued.
//
// Only valid after EAGAIN: a short read may leave a FIN queued that raises no new edge, and a
// listening socket may hold more than the connections accept() took.
#pragma once

#include <memory>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>

#include <tpt/runtime.hpp>

// They use Asio's epoll reactor directly, which exists on Linux unless io_uring is the default
// backend. Elsewhere callers use async_wait.
#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && \
    BOOST_VERSION >= 108100
#define TPT_EDGE_WAIT 1
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#else
#define TPT_EDGE_WAIT 0
#endif

namespace tpt::edge {

#if TPT_EDGE_WAIT
namespace net = boost::asio;
using tcp = net::ip::tcp;

using Reactor = net::detail::epoll_reactor;

// The reactor of a worker's io_context.
inline Reactor& reactor_of(net::io_context& ctx) {
    return net::use_service<Reactor>(ctx);
}

// The handler is called once with no error (an edge came, or may have), or with the error
// that ended the wait (operation_aborted: the socket was closed; bad_descriptor: it was
// closed already). It is destroyed without being called only when the io_context is destroyed
// with the wait pending.
template <typename Handler>
class EdgeWaitOp : public net::detail::reactor_op {
public:
    BOOST_ASIO_DEFINE_HANDLER_PTR(EdgeWaitOp);

    explicit EdgeWaitOp(Handler& handler)
        : reactor_op(no_error(), &EdgeWaitOp::do_perform, &EdgeWaitOp::do_complete),
          handler_(std::move(handler)) {}

    static status do_perform(reactor_op* /*op*/) { return done_and_exhausted; }

    static void do_complete(void* owner, net::detail::operation* base,
                            const boost::system::error_code& /*ec*/, std::size_t /*bytes*/) {
        auto* o = static_cast<EdgeWaitOp*>(base);
        ptr p = {std::addressof(o->handler_), o, o};
        Handler handler(std::move(o->handler_));
        const boost::system::error_code ec = o->ec_;
        p.reset();  // the memory goes back before the upcall, which may wait again
        if (owner != nullptr) {
            handler(ec);
        }
    }

private:
    static const boost::system::error_code& no_error() {
        static const boost::system::error_code none;
        return none;
    }

    Handler handler_;
};

// `socket` may hold a listening descriptor (the accept loops): readable then means that a
// connection waits to be accepted.
template <typename Handler>
void wait(Reactor& reactor, tcp::socket& socket, bool write, Handler handler) {
    auto& impl = runtime::SocketAccess::implementation(socket);
    using Op = EdgeWaitOp<Handler>;
    typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) Op(handler);
    // A closed socket (no registration) completes with bad_descriptor.
    reactor.start_op(write ? Reactor::write_op : Reactor::read_op, impl.socket_, impl.reactor_data_,
                     p.p, false, true);
    p.v = p.p = nullptr;
}
#endif

}  // namespace tpt::edge
