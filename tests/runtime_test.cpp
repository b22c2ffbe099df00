#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <fcntl.h>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/runtime.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

// System calls on one watched descriptor, counted by replacing the C library's wrappers in
// this test program (its definitions take precedence over libc's for every caller, Asio's
// inline code included) and passing each call on with syscall(2).
namespace calls {
std::atomic<int> watched{-1};
std::atomic<int> epoll_mod{0};
std::atomic<int> epoll_del{0};
std::atomic<int> ioctl_fionbio{0};
std::atomic<int> recvmsg{0};  // recv(2) and recvmsg(2)

void watch(int fd) {
    epoll_mod = epoll_del = ioctl_fionbio = recvmsg = 0;
    watched = fd;
}
}  // namespace calls

extern "C" int epoll_ctl(int epfd, int op, int fd, epoll_event* event) noexcept {
    if (fd == calls::watched) {
        if (op == EPOLL_CTL_MOD) {
            ++calls::epoll_mod;
        } else if (op == EPOLL_CTL_DEL) {
            ++calls::epoll_del;
        }
    }
    return static_cast<int>(::syscall(SYS_epoll_ctl, epfd, op, fd, event));
}

extern "C" int ioctl(int fd, unsigned long request, ...) noexcept {
    va_list args;
    va_start(args, request);
    void* arg = va_arg(args, void*);
    va_end(args);
    if (fd == calls::watched && request == FIONBIO) {
        ++calls::ioctl_fionbio;
    }
    return static_cast<int>(::syscall(SYS_ioctl, fd, request, arg));
}

// Asio reads a single buffer with recv(2), several with recvmsg(2): both count as reads.
extern "C" ssize_t recv(int fd, void* buf, size_t len, int flags) {
    if (fd == calls::watched) {
        ++calls::recvmsg;
    }
    return ::syscall(SYS_recvfrom, fd, buf, len, flags, nullptr, nullptr);
}

extern "C" ssize_t recvmsg(int fd, msghdr* message, int flags) {
    if (fd == calls::watched) {
        ++calls::recvmsg;
    }
    return ::syscall(SYS_recvmsg, fd, message, flags);
}

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

int int_option(int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    EXPECT_EQ(::getsockopt(fd, level, name, &value, &len), 0);
    return value;
}

// A connection accepted by `acc` (tuned or not), with its peer kept open.
struct Accepted {
    tcp::socket peer;
    tcp::socket socket;
};
Accepted accept_one(net::io_context& io, tcp::acceptor& acc) {
    tcp::socket peer(io);
    peer.connect(acc.local_endpoint());
    tcp::socket socket = acc.accept();
    return {std::move(peer), std::move(socket)};
}

// Starts a read of up to got.size() bytes into `got`; its completion stores the count in
// `bytes` (which, like `got`, must outlive it) and expects no error.
void read_some_into(tcp::socket& socket, std::string& got, std::size_t& bytes) {
    socket.async_read_some(net::buffer(got),
                           [&bytes](const boost::system::error_code& e, std::size_t n) {
                               EXPECT_FALSE(e) << e.message();
                               bytes = n;
                           });
}

// The session sets no option on an accepted connection: it relies on Linux copying them from
// the listening socket. If a kernel stopped doing so, this fails.
TEST(TuneListener, AcceptedConnectionsInheritNoDelayAndDelayedAcks) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    boost::system::error_code ec;
    tpt::runtime::tune_listener(acc, ec);
    ASSERT_FALSE(ec) << ec.message();
    auto c = accept_one(io, acc);
    EXPECT_EQ(int_option(c.socket.native_handle(), IPPROTO_TCP, TCP_NODELAY), 1);
    EXPECT_EQ(int_option(c.socket.native_handle(), IPPROTO_TCP, TCP_QUICKACK), 0);
}

TEST(TuneListener, AnUntunedListenerGivesTheKernelDefaults) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto c = accept_one(io, acc);
    EXPECT_EQ(int_option(c.socket.native_handle(), IPPROTO_TCP, TCP_NODELAY), 0);
    EXPECT_EQ(int_option(c.socket.native_handle(), IPPROTO_TCP, TCP_QUICKACK), 1);
}

// A descriptor made O_NONBLOCK by its creator and adopted with own_descriptor(…, true):
// Asio's asynchronous reads work on it, and its synchronous reads still wait for data rather
// than failing with would_block (only Asio's internal flag is set).
TEST(OwnDescriptor, AdoptedNonBlockingSocketServesAsyncAndBlockingReads) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto [peer, accepted] = accept_one(io, acc);
    const int fd = accepted.release();
    ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    tcp::socket adopted(io);
    adopted.assign(tcp::v4(), fd);
    tpt::runtime::own_descriptor(adopted, true);

    std::string got(5, '\0');
    std::size_t async_bytes = 0;
    read_some_into(adopted, got, async_bytes);
    net::write(peer, net::buffer(std::string("first")));
    io.run_for(5s);
    EXPECT_EQ(async_bytes, 5U);
    EXPECT_EQ(got, "first");

    std::thread late([&] {
        std::this_thread::sleep_for(50ms);  // the read below must wait for these bytes
        net::write(peer, net::buffer(std::string("later")));
    });
    boost::system::error_code ec;
    const auto n = net::read(adopted, net::buffer(got), ec);
    late.join();
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(n, 5U);
    EXPECT_EQ(got, "later");
    adopted.close();  // no EPOLL_CTL_DEL needed; must not fail either way
}

// read_after_event drops Asio's "try a read first" mark; epoll must still report bytes that
// arrived before the socket was registered, and bytes that arrive later.
TEST(ReadAfterEvent, BytesThatCameBeforeRegistrationAreStillRead) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto [peer, accepted] = accept_one(io, acc);
    net::write(peer, net::buffer(std::string("early")));
    const int fd = accepted.release();
    tcp::socket socket(io);
    socket.assign(tcp::v4(), fd);  // registers with the reactor now, bytes already queued
    tpt::runtime::read_after_event(socket);

    std::string got(5, '\0');
    std::size_t bytes = 0;
    read_some_into(socket, got, bytes);
    io.run_for(5s);  // returns as soon as the read completed
    EXPECT_EQ(bytes, 5U);
    EXPECT_EQ(got, "early");
}

TEST(ReadAfterEvent, BytesThatComeLaterAreRead) {
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket socket(io);
    socket.connect(acc.local_endpoint());
    tpt::runtime::read_after_event(socket);
    tcp::socket peer = acc.accept();

    std::string got(5, '\0');
    std::size_t bytes = 0;
    read_some_into(socket, got, bytes);
    EXPECT_EQ(io.poll(), 0U);  // nothing to read: the read waits
    EXPECT_EQ(bytes, 0U);
    net::write(peer, net::buffer(std::string("later")));
    io.run_for(5s);
    EXPECT_EQ(bytes, 5U);
    EXPECT_EQ(got, "later");
}

// --- The system calls runtime's Asio internals save (asio_internals.cpp) -----------------
// Each test below fails when the function it tests does nothing (the public-API fallback
// makes exactly the calls counted), so a Boost release that moved what asio_internals.cpp
// relies on shows up here.

// A connection accepted with accept4(SOCK_NONBLOCK) and assigned to a socket of `io`, as the
// accept loops do; the peer is kept open.
struct Adopted {
    tcp::socket peer;
    tcp::socket socket;
};
Adopted adopt_accepted(net::io_context& io, tcp::acceptor& acc) {
    tcp::socket peer(io);
    peer.connect(acc.local_endpoint());
    const int fd = ::accept4(acc.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    EXPECT_GE(fd, 0);
    tcp::socket socket(io);
    socket.assign(tcp::v4(), fd);
    return {std::move(peer), std::move(socket)};
}

// Asio's first asynchronous operation on a descriptor it did not open sets O_NONBLOCK with an
// ioctl, and its close() deregisters with EPOLL_CTL_DEL (it assumes a dup() may share the
// registration); own_descriptor(…, true) spares both.
TEST(AsioInternals, OwnedDescriptorCostsNoIoctlAndNoEpollDel) {
    if (!tpt::runtime::asio_internals()) {
        GTEST_SKIP() << "built with TPT_ASIO_INTERNALS=OFF";
    }
    net::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    for (const bool owned : {false, true}) {
        SCOPED_TRACE(owned ? "owned" : "not owned");
        auto [peer, socket] = adopt_accepted(io, acc);
        calls::watch(socket.native_handle());
        if (owned) {
            tpt::runtime::own_descriptor(socket, true);
        }
        std::string got(1, '\0');
        std::size_t bytes = 0;
        read_some_into(socket, got, bytes);
        net::write(peer, net::buffer(std::string("x")));
        io.restart();
        io.run_for(5s);
        EXPECT_EQ(bytes, 1U);
        socket.close();
        calls::watched = -1;
        EXPECT_EQ(calls::ioctl_fionbio, owned ? 0 : 1);
        EXPECT_EQ(calls::epoll_del, owned ? 0 : 1);
    }
}

// A socket whose first read waits for epoll makes no recvmsg before its bytes come; Asio
// would try one at once and find EAGAIN.
TEST(AsioInternals, ReadAfterEventSkipsTheReadThatFindsNothing) {
    if (!tpt::runtime::asio_internals()) {
        GTEST_SKIP() << "built with TPT_ASIO_INTERNALS=OFF";
    }
    for (const bool after_event : {false, true}) {
        SCOPED_TRACE(after_event ? "read_after_event" : "plain");
        net::io_context io;
        tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
        tcp::socket socket(io);
        socket.connect(acc.local_endpoint());
        tcp::socket peer = acc.accept();
        calls::watch(socket.native_handle());
        if (after_event) {
            tpt::runtime::read_after_event(socket);
        }
        std::string got(5, '\0');
        std::size_t bytes = 0;
        read_some_into(socket, got, bytes);
        io.poll();
        EXPECT_EQ(calls::recvmsg, after_event ? 0 : 1);  // before any byte came
        net::write(peer, net::buffer(std::string("later")));
        io.run_for(5s);
        calls::watched = -1;
        EXPECT_EQ(bytes, 5U);
        EXPECT_EQ(calls::recvmsg, after_event ? 1 : 2);
    }
}

// Hears readiness waits: how many ended, and with which error.
struct Waits final : tpt::runtime::Readiness {
    int ready_calls = 0;
    int dropped_calls = 0;
    boost::system::error_code last;
    void ready(std::uint8_t /*tag*/, const boost::system::error_code& ec) override {
        ++ready_calls;
        last = ec;
    }
    void dropped(std::uint8_t /*tag*/) noexcept override { ++dropped_calls; }
};

// Reads everything `socket` holds until EAGAIN, as the relay does before it waits.
std::size_t drain(tcp::socket& socket) {
    std::size_t total = 0;
    char buf[256];
    for (;;) {
        const auto n = ::recv(socket.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) {
            EXPECT_TRUE(n < 0 && errno == EAGAIN);
            return total;
        }
        total += static_cast<std::size_t>(n);
    }
}

// Every readiness wait of the relay and the accept loops: no epoll_ctl per wait (Asio's
// async_wait re-arms with EPOLL_CTL_MOD each time), and every edge is seen.
TEST(AsioInternals, EdgeWaitsMakeNoEpollCtl) {
    if (!tpt::runtime::asio_internals()) {
        GTEST_SKIP() << "built with TPT_ASIO_INTERNALS=OFF";
    }
    tpt::runtime::Worker worker;
    auto& io = worker.context();
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto c = accept_one(io, acc);
    calls::watch(c.socket.native_handle());
    Waits waits;
    constexpr int rounds = 5;
    for (int i = 0; i < rounds; ++i) {
        net::write(c.peer, net::buffer(std::string("ping")));
        tpt::runtime::wait_edge(worker, c.socket, false, waits, 0);
        io.restart();
        for (int spin = 0; spin < 500 && waits.ready_calls == i; ++spin) {
            io.run_one_for(10ms);
        }
        ASSERT_EQ(waits.ready_calls, i + 1);
        EXPECT_FALSE(waits.last) << waits.last.message();
        EXPECT_EQ(drain(c.socket), 4U);
    }
    calls::watched = -1;
    EXPECT_EQ(calls::epoll_mod, 0);
}

// A wait pending when its io_context is destroyed is dropped, not lost: its owner hears it
// and frees what it holds (here the socket, as a session does).
TEST(EdgeWait, APendingWaitIsDroppedWithItsContext) {
    struct Owner final : tpt::runtime::Readiness {
        std::unique_ptr<tcp::socket> socket;
        int ready_calls = 0;
        int dropped_calls = 0;
        void ready(std::uint8_t /*tag*/, const boost::system::error_code& /*ec*/) override {
            ++ready_calls;
        }
        void dropped(std::uint8_t /*tag*/) noexcept override {
            ++dropped_calls;
            socket.reset();
        }
    } owner;
    {
        tpt::runtime::Worker worker;
        tcp::acceptor acc(worker.context(), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
        auto c = accept_one(worker.context(), acc);
        owner.socket = std::make_unique<tcp::socket>(std::move(c.socket));
        tpt::runtime::wait_edge(worker, *owner.socket, false, owner, 0);  // "maybe ready"
        worker.context().poll();
        ASSERT_EQ(owner.ready_calls, 1);
        EXPECT_EQ(drain(*owner.socket), 0U);
        tpt::runtime::wait_edge(worker, *owner.socket, false, owner, 0);  // nothing comes
        worker.context().poll();
        EXPECT_EQ(owner.ready_calls, 1);
    }
    EXPECT_EQ(owner.dropped_calls, 1);
    EXPECT_FALSE(owner.socket);
}

}  // namespace
