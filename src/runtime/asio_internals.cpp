// The one file that uses Asio's internals (runtime.hpp: "Fewer system calls than Asio's
// public API"). Every name from boost::asio::detail, and the two ways of reaching what Asio
// keeps private, are here and nowhere else. Built when TPT_ASIO_INTERNALS is on (CMake turns
// it on only for the Boost release checked below); asio_public.cpp is the fallback.
//
// What it relies on, in Boost 1.81's epoll reactor (boost/asio/detail/impl/epoll_reactor.ipp):
// - basic_socket keeps its implementation in the protected member impl_, whose
//   reactive_socket_service_base::base_implementation_type holds socket_, state_ and
//   reactor_data_ (the epoll_reactor::descriptor_state of the registration);
// - socket_ops::possible_dup makes close() deregister with EPOLL_CTL_DEL, and
//   internal_non_blocking tells Asio the descriptor is O_NONBLOCK already;
// - descriptor_state::try_speculative_[op] is the "try the operation before waiting" mark;
// - epoll_reactor::start_op(..., allow_speculative = true) runs an operation's perform() at
//   once while that mark is set, and otherwise queues it without epoll_ctl for reads (the
//   registration is edge-triggered for reading from the start); async_wait passes false,
//   which makes start_op re-arm with EPOLL_CTL_MOD on every call.
// runtime_test counts the system calls each function saves: a Boost release that changes any
// of the above fails those tests or this file's static_assert.
#include <boost/version.hpp>

#if TPT_ASIO_INTERNALS

static_assert(BOOST_VERSION == 108100,
              "asio_internals.cpp was checked against Boost 1.81 only: check it against this "
              "release (runtime_test counts the system calls it saves) or configure with "
              "-DTPT_ASIO_INTERNALS=OFF");

#include <memory>
#include <type_traits>

#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>

#include <tpt/runtime.hpp>

#include "asio_access.hpp"

#if !defined(BOOST_ASIO_HAS_EPOLL) || defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#error "TPT_ASIO_INTERNALS needs Asio's epoll reactor"
#endif

namespace tpt::runtime {

namespace {

using Reactor = net::detail::epoll_reactor;

// basic_socket's implementation (descriptor, state flags, reactor registration), which it
// keeps protected: a derived class may name the member pointer.
struct SocketAccess : tcp::socket {
    static auto& implementation(tcp::socket& s) {
        return (s.*(&SocketAccess::impl_)).get_implementation();
    }
};

// The speculation marks, which descriptor_state keeps private. An explicit instantiation may
// name a private member ([temp.spec.general]), and the friend it defines hands the pointer out.
using DescriptorState = std::remove_pointer_t<Reactor::per_descriptor_data>;
// NOLINTNEXTLINE(modernize-avoid-c-arrays): the member is a C array in Asio
using SpeculationMarks = bool (DescriptorState::*)[Reactor::max_ops];
struct SpeculationTag {
    friend SpeculationMarks speculation_marks(SpeculationTag);
};
template <SpeculationMarks Member>
struct ExposeSpeculation {
    friend SpeculationMarks speculation_marks(SpeculationTag) { return Member; }
};
template struct ExposeSpeculation<&DescriptorState::try_speculative_>;

// The handler of an edge wait: who hears it, and the caller's tag.
struct EdgeHandler {
    Readiness* to;
    std::uint8_t tag;
};

// A reactor operation that "performs" by being ready: queued with speculation allowed, it
// completes at once when an edge came since the last completed operation (the reactor marks
// the descriptor ready on every event that finds nothing queued, so no edge is lost), else
// at the next edge. Its memory comes from the thread's recycling allocator, as Asio's own.
class EdgeWaitOp : public net::detail::reactor_op {
public:
    using Handler = EdgeHandler;  // the name BOOST_ASIO_DEFINE_HANDLER_PTR uses
    BOOST_ASIO_DEFINE_HANDLER_PTR(EdgeWaitOp);

    explicit EdgeWaitOp(EdgeHandler& handler)
        : reactor_op(no_error(), &EdgeWaitOp::do_perform, &EdgeWaitOp::do_complete),
          handler_(handler) {}

    static status do_perform(reactor_op* /*op*/) { return done_and_exhausted; }

    static void do_complete(void* owner, net::detail::operation* base,
                            const boost::system::error_code& /*ec*/, std::size_t /*bytes*/) {
        auto* o = static_cast<EdgeWaitOp*>(base);
        ptr p = {std::addressof(o->handler_), o, o};
        const EdgeHandler handler = o->handler_;
        const boost::system::error_code ec = o->ec_;
        p.reset();  // the memory goes back before the upcall, which may wait again
        if (owner != nullptr) {
            handler.to->ready(handler.tag, ec);
        } else {
            handler.to->dropped(handler.tag);  // the io_context is being destroyed
        }
    }

private:
    static const boost::system::error_code& no_error() {
        static const boost::system::error_code none;
        return none;
    }

    EdgeHandler handler_;
};

}  // namespace

bool asio_internals() noexcept {
    return true;
}

void* reactor_of(net::io_context& ctx) {
    return &net::use_service<Reactor>(ctx);
}

void own_descriptor(tcp::socket& socket, bool non_blocking) noexcept {
    namespace ops = net::detail::socket_ops;
    auto& state = SocketAccess::implementation(socket).state_;
    state &= static_cast<ops::state_type>(~ops::possible_dup);
    if (non_blocking) {
        // Only Asio's own flag: its synchronous operations still wait (user_set_non_blocking
        // would make them return would_block).
        state |= ops::internal_non_blocking;
    }
}

void read_after_event(tcp::socket& socket) noexcept {
    auto* state = SocketAccess::implementation(socket).reactor_data_;
    if (state != nullptr) {
        (state->*speculation_marks(SpeculationTag{}))[Reactor::read_op] = false;
    }
}

void wait_edge(Worker& worker, tcp::socket& socket, bool write, Readiness& to, std::uint8_t tag) {
    auto& reactor = *static_cast<Reactor*>(worker.reactor());
    auto& impl = SocketAccess::implementation(socket);
    EdgeHandler handler{&to, tag};
    EdgeWaitOp::ptr p = {std::addressof(handler), EdgeWaitOp::ptr::allocate(handler), nullptr};
    p.p = new (p.v) EdgeWaitOp(handler);
    // A closed socket (no registration) completes with bad_descriptor.
    reactor.start_op(write ? Reactor::write_op : Reactor::read_op, impl.socket_, impl.reactor_data_,
                     p.p, false, true);
    p.v = p.p = nullptr;
}

}  // namespace tpt::runtime

#endif  // TPT_ASIO_INTERNALS
