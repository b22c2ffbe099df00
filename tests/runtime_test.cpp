#include <chrono>
#include <fcntl.h>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/runtime.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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

}  // namespace
