#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <poll.h>
#include <string>
#include <thread>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <tpt/tunnel.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// A connected loopback pair: `a` is ours (the peer side), `b` goes into the tunnel.
struct Pair {
    tcp::socket a;
    tcp::socket b;
};

Pair make_pair(net::io_context& io) {
    tcp::acceptor acc(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket a(io);
    a.connect(acc.local_endpoint());
    tcp::socket b = acc.accept();
    return {std::move(a), std::move(b)};
}

// Hears the end of a relay (reported once, never inline) and closes its sockets, as the
// session does: the close sends the last FIN.
struct Recorder final : tpt::tunnel::Observer {
    std::optional<tpt::Outcome> outcome;
    int calls = 0;
    bool abandoned_called = false;
    tcp::socket* a = nullptr;
    tcp::socket* b = nullptr;
    void relayed(tpt::Outcome o) override {
        ++calls;
        outcome = o;
        a->close();
        b->close();
    }
    void abandoned() noexcept override { abandoned_called = true; }
};

// The tunnel runs on a worker's io_context on its own thread; the test talks to the outer
// sockets synchronously from this thread.
class RelayHarness {
public:
    // splice off: the relay copies through chunks, as it does when no pipe can be had.
    // `before` runs on this thread once the sockets are connected, before the relay starts.
    explicit RelayHarness(bool splice = true,
                          const std::function<void(RelayHarness&)>& before = {}) {
        worker_.set_splice(splice);
        client_ = make_pair(worker_.context());
        upstream_ = make_pair(worker_.context());
        if (before) {
            before(*this);
        }
        rec_.a = &client_.b;
        rec_.b = &upstream_.b;
        tpt::tunnel::start(client_.b, &upstream_.b, {}, worker_, counters_, rec_);
        thread_ = std::thread([this] { worker_.context().run(); });
    }
    ~RelayHarness() {
        worker_.context().stop();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    tcp::socket& client() { return client_.a; }
    tcp::socket& upstream() { return upstream_.a; }
    // The sockets inside the tunnel, to be touched on the worker only.
    void inner(tcp::socket*& client, tcp::socket*& upstream) {
        client = &client_.b;
        upstream = &upstream_.b;
    }

    // Waits for the relay to end; the outcome is read after the worker thread stopped.
    std::optional<tpt::Outcome> finish() {
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (!worker_.context().stopped() && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(5ms);  // the worker stops when the relay ends
        }
        worker_.context().stop();
        if (thread_.joinable()) {
            thread_.join();
        }
        EXPECT_LE(rec_.calls, 1);
        return rec_.outcome;
    }
    const tpt::tunnel::Counters& counters() const { return counters_; }
    tpt::runtime::Worker& worker() { return worker_; }

private:
    tpt::runtime::Worker worker_;
    Pair client_{tcp::socket(worker_.context()), tcp::socket(worker_.context())};
    Pair upstream_{tcp::socket(worker_.context()), tcp::socket(worker_.context())};
    tpt::tunnel::Counters counters_;
    Recorder rec_;
    std::thread thread_;
};

// Whether `s` has something to read (bytes or EOF) within `wait`.
bool wait_readable(tcp::socket& s, std::chrono::milliseconds wait) {
    pollfd p{s.native_handle(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) == 1;
}

std::string read_to_eof(tcp::socket& s) {
    std::string out;
    boost::system::error_code ec;
    net::read(s, net::dynamic_buffer(out), ec);
    EXPECT_EQ(ec, net::error::eof);
    return out;
}

TEST(Relay, PassesBytesBothWaysAndCountsThem) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("hello upstream")));
    std::string got(14, '\0');
    net::read(h.upstream(), net::buffer(got));
    EXPECT_EQ(got, "hello upstream");
    net::write(h.upstream(), net::buffer(std::string("hi")));
    std::string back(2, '\0');
    net::read(h.client(), net::buffer(back));
    EXPECT_EQ(back, "hi");
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "");
    h.upstream().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.client()), "");
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_upstream, 14U);
    EXPECT_EQ(h.counters().to_client, 2U);
}

TEST(Relay, HalfCloseKeepsTheOtherDirectionFlowing) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("question")));
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "question");  // the FIN was passed on
    // After the client's FIN, a large answer still reaches it whole.
    const std::string answer(1 << 20, 'x');
    std::thread writer([&] {
        net::write(h.upstream(), net::buffer(answer));
        h.upstream().shutdown(tcp::socket::shutdown_send);
    });
    EXPECT_EQ(read_to_eof(h.client()), answer);
    writer.join();
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_client, answer.size());
}

TEST(Relay, UpstreamResetClosesBothAndIsBlamedOnTheUpstream) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("x")));
    char c{};
    net::read(h.upstream(), net::buffer(&c, 1));
    h.upstream().set_option(net::socket_base::linger(true, 0));
    h.upstream().close();  // RST
    boost::system::error_code ec;
    std::string rest;
    net::read(h.client(), net::dynamic_buffer(rest), ec);
    EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
    EXPECT_EQ(h.finish(), tpt::Outcome::upstream_reset);
}

TEST(Relay, ClientResetIsBlamedOnTheClient) {
    RelayHarness h;
    h.client().set_option(net::socket_base::linger(true, 0));
    h.client().close();
    boost::system::error_code ec;
    std::string rest;
    net::read(h.upstream(), net::dynamic_buffer(rest), ec);
    EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
    EXPECT_EQ(h.finish(), tpt::Outcome::client_reset);
}

// A pattern that makes a lost, duplicated or reordered block visible.
std::string pattern(std::size_t size, char salt) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        s[i] = static_cast<char>((i * 131 + i / 4096 + static_cast<std::size_t>(salt)) & 0xff);
    }
    return s;
}

class RelayModes : public ::testing::TestWithParam<bool> {};

// Both directions at once, larger than socket buffers plus a pipe, so backpressure and
// partial writes are exercised; once with splice, once copying.
TEST_P(RelayModes, LargeTransfersBothWaysAtOnceArriveWholeAndAreCountedExactly) {
    RelayHarness h(GetParam());
    const std::string up = pattern(8 << 20, 1);
    const std::string down = pattern(6 << 20, 7);
    std::string got_up;
    std::thread upstream_side([&] {
        std::thread writer([&] {
            net::write(h.upstream(), net::buffer(down));
            h.upstream().shutdown(tcp::socket::shutdown_send);
        });
        got_up = read_to_eof(h.upstream());
        writer.join();
    });
    std::thread client_writer([&] {
        net::write(h.client(), net::buffer(up));
        h.client().shutdown(tcp::socket::shutdown_send);
    });
    const std::string got_down = read_to_eof(h.client());
    client_writer.join();
    upstream_side.join();
    EXPECT_TRUE(got_up == up) << "upstream got " << got_up.size() << " bytes";
    EXPECT_TRUE(got_down == down) << "client got " << got_down.size() << " bytes";
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_upstream, up.size());
    EXPECT_EQ(h.counters().to_client, down.size());
    // A stream is spliced, and its pipes come back to the worker empty.
    EXPECT_EQ(h.worker().pooled_pipes() > 0, GetParam());
}

TEST_P(RelayModes, HalfCloseFromTheUpstreamFirstKeepsTheClientSending) {
    RelayHarness h(GetParam());
    h.upstream().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.client()), "");
    const std::string late = pattern(300000, 3);
    std::thread writer([&] {
        net::write(h.client(), net::buffer(late));
        h.client().shutdown(tcp::socket::shutdown_send);
    });
    EXPECT_TRUE(read_to_eof(h.upstream()) == late);
    writer.join();
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_upstream, late.size());
    EXPECT_EQ(h.counters().to_client, 0U);
}

INSTANTIATE_TEST_SUITE_P(SpliceAndCopy, RelayModes, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                             return std::string(i.param ? "Splice" : "Copy");
                         });

// Segments a socket has received (tcpi_segs_in, which glibc's struct tcp_info predates; the
// kernel's struct goes on from glibc's last field, and only ever grows).
std::uint32_t segments_in(tcp::socket& s) {
    struct {
        tcp_info classic;
        std::uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
        std::uint32_t segs_out, segs_in;
    } info{};
    socklen_t len = sizeof info;
    EXPECT_EQ(::getsockopt(s.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len), 0);
    EXPECT_EQ(len, sizeof info);
    return info.segs_in;
}

// A response and the upstream's close that came together leave together: the bytes and our
// FIN in one segment, not two (one packet per connection less for request/response traffic).
TEST(Relay, BytesAndFinThatCameTogetherLeaveInOneSegment) {
    const std::string response(1200, 'r');
    std::uint32_t before = 0;
    RelayHarness h(true, [&](RelayHarness& harness) {
        net::write(harness.upstream(), net::buffer(response));
        harness.upstream().shutdown(tcp::socket::shutdown_send);
        before = segments_in(harness.client());
    });
    EXPECT_EQ(read_to_eof(h.client()), response);
    EXPECT_EQ(segments_in(h.client()) - before, 1U);
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "");
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_client, response.size());
}

// The same once the client's FIN has gone through: then the close carries the FIN.
TEST(Relay, BytesAndFinAfterTheClientsFinLeaveInOneSegment) {
    RelayHarness h;
    h.client().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.upstream()), "");
    // Wait for the ACK of the client's FIN (the relay may delay it), so that it cannot ride
    // on, or add to, the segments counted below.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    tcp_info state{};
    socklen_t len = sizeof state;
    while (std::chrono::steady_clock::now() < deadline) {
        ASSERT_EQ(::getsockopt(h.client().native_handle(), IPPROTO_TCP, TCP_INFO, &state, &len), 0);
        if (state.tcpi_state == TCP_FIN_WAIT2) {
            break;
        }
        std::this_thread::sleep_for(2ms);
    }
    ASSERT_EQ(state.tcpi_state, TCP_FIN_WAIT2);
    const auto before = segments_in(h.client());
    // The upstream's bytes and FIN in one segment too, so that the relay finds both at once.
    const std::string response(1200, 's');
    ASSERT_EQ(::send(h.upstream().native_handle(), response.data(), response.size(), MSG_MORE),
              static_cast<ssize_t>(response.size()));
    h.upstream().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.client()), response);
    EXPECT_EQ(segments_in(h.client()) - before, 1U);
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
}

// Request/response traffic is copied: splicing a message costs more than copying it.
TEST(Relay, SmallMessagesAreCopiedNotSpliced) {
    RelayHarness h;
    for (int i = 0; i < 20; ++i) {
        const std::string request = "request " + std::to_string(i);
        net::write(h.client(), net::buffer(request));
        std::string got(request.size(), '\0');
        net::read(h.upstream(), net::buffer(got));
        EXPECT_EQ(got, request);
        const std::string response(1024, static_cast<char>('a' + i));
        net::write(h.upstream(), net::buffer(response));
        std::string back(response.size(), '\0');
        net::read(h.client(), net::buffer(back));
        EXPECT_EQ(back, response);
    }
    h.client().shutdown(tcp::socket::shutdown_send);
    h.upstream().shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(h.client()), "");
    EXPECT_EQ(read_to_eof(h.upstream()), "");
    EXPECT_EQ(h.finish(), tpt::Outcome::ok);
    EXPECT_EQ(h.worker().pooled_pipes(), 0U);
    EXPECT_EQ(h.counters().to_client, 20U * 1024);
}

// What a session's idle timeout or shutdown does: close both sockets on the worker.
TEST(Relay, ClosingBothSocketsFromTheWorkerEndsIt) {
    RelayHarness h;
    net::write(h.client(), net::buffer(std::string("x")));
    char c{};
    net::read(h.upstream(), net::buffer(&c, 1));
    tcp::socket* inner_client = nullptr;
    tcp::socket* inner_upstream = nullptr;
    h.inner(inner_client, inner_upstream);
    net::post(h.worker().context(), [=] {
        boost::system::error_code ignored;
        inner_client->close(ignored);
        inner_upstream->close(ignored);
    });
    const auto out = h.finish();
    ASSERT_TRUE(out.has_value());
    EXPECT_NE(*out, tpt::Outcome::ok);
    EXPECT_EQ(h.counters().to_upstream, 1U);
}

TEST(Echo, ReflectsEveryByteAndCountsItBothWays) {
    tpt::runtime::Worker worker;
    Pair p = make_pair(worker.context());
    tpt::tunnel::Counters counters;
    Recorder rec;
    rec.a = &p.b;
    rec.b = &p.b;
    tpt::tunnel::start(p.b, nullptr, {}, worker, counters, rec);
    std::thread t([&] { worker.context().run(); });
    const std::string data = pattern(3 << 20, 5);
    std::thread writer([&] {
        net::write(p.a, net::buffer(data));
        p.a.shutdown(tcp::socket::shutdown_send);
    });
    EXPECT_TRUE(read_to_eof(p.a) == data);
    writer.join();
    t.join();  // run() returns once the echo has ended
    EXPECT_EQ(rec.outcome, tpt::Outcome::ok);
    EXPECT_EQ(counters.to_client, data.size());
    EXPECT_EQ(counters.to_upstream, data.size());
}

// Relays 1 MiB up through tpt::tunnel::start and returns the pipes the worker pooled.
std::size_t relay_observed(bool local) {
    tpt::runtime::Worker worker;  // automatic splice mode
    Pair client = make_pair(worker.context());
    Pair upstream = make_pair(worker.context());
    tpt::tunnel::Counters counters;
    Recorder rec;
    rec.a = &client.b;
    rec.b = &upstream.b;
    tpt::tunnel::start(client.b, &upstream.b, {.local = local}, worker, counters, rec);
    EXPECT_EQ(rec.calls, 0);  // never inline
    std::thread t([&] { worker.context().run(); });
    const std::string up = pattern(1 << 20, 7);
    std::thread writer([&] {
        net::write(client.a, net::buffer(up));
        client.a.shutdown(tcp::socket::shutdown_send);
    });
    EXPECT_TRUE(read_to_eof(upstream.a) == up);
    writer.join();
    upstream.a.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(client.a), "");
    t.join();
    EXPECT_EQ(rec.calls, 1);
    EXPECT_EQ(rec.outcome, tpt::Outcome::ok);
    EXPECT_FALSE(rec.abandoned_called);
    EXPECT_EQ(counters.to_upstream, up.size());
    return worker.pooled_pipes();
}

TEST(Observed, LoopbackEndsCopyOthersSplice) {
    EXPECT_EQ(relay_observed(true), 0U);   // copied: no pipe was ever taken
    EXPECT_GE(relay_observed(false), 1U);  // a 1 MiB stream was spliced
}

// Runtime::stop() may leave tunnels open: destroying their io_context frees the relay (the
// ASan build reports a leak otherwise) and tells the observer.
TEST(Observed, DestroyingTheContextReportsAbandoned) {
    Recorder rec;
    {
        tpt::runtime::Worker worker;
        Pair client = make_pair(worker.context());
        Pair upstream = make_pair(worker.context());
        tpt::tunnel::Counters counters;
        tpt::tunnel::start(client.b, &upstream.b, {}, worker, counters, rec);
        for (int i = 0; i < 100 && worker.context().poll() != 0; ++i) {
        }
    }
    EXPECT_TRUE(rec.abandoned_called);
    EXPECT_EQ(rec.calls, 0);
}

// A client whose EOF a read before the relay consumed (the session's ClientHello read) raises
// no new edge: the relay must read it at once and pass the FIN on, or the upstream would wait
// for it forever.
TEST(Observed, ClientThatEndedBeforeTheRelayHasItsFinPassedOn) {
    tpt::runtime::Worker worker;
    Pair client = make_pair(worker.context());
    Pair upstream = make_pair(worker.context());
    // As the hello read does: an Asio read waits for the client, then sees its bytes and
    // its EOF; after that Asio no longer takes the socket for "maybe ready", and no new edge
    // will come.
    std::string hello;
    boost::system::error_code end;
    net::async_read(client.b, net::dynamic_buffer(hello),
                    [&](const boost::system::error_code& ec, std::size_t /*n*/) { end = ec; });
    worker.context().poll();  // the read finds nothing and waits for epoll
    net::write(client.a, net::buffer(std::string("hi")));
    client.a.shutdown(tcp::socket::shutdown_send);
    worker.context().run_for(2s);
    worker.context().restart();
    ASSERT_EQ(end, net::error::eof);
    ASSERT_EQ(hello, "hi");
    tpt::tunnel::Counters counters;
    Recorder rec;
    rec.a = &client.b;
    rec.b = &upstream.b;
    tpt::tunnel::start(client.b, &upstream.b, {.client_ended = true}, worker, counters, rec);
    std::thread t([&] { worker.context().run(); });
    if (!wait_readable(upstream.a, 2s)) {
        worker.context().stop();
        t.join();
        FAIL() << "the client's FIN never reached the upstream";
    }
    EXPECT_EQ(read_to_eof(upstream.a), "");
    net::write(upstream.a, net::buffer(std::string("bye")));
    upstream.a.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(client.a), "bye");
    t.join();
    EXPECT_EQ(rec.calls, 1);
    EXPECT_EQ(rec.outcome, tpt::Outcome::ok);
    EXPECT_EQ(counters.to_client, 3U);
}

// Whether a listening socket has a connection to accept within `wait`.
bool acceptable_within(tcp::acceptor& acc, std::chrono::milliseconds wait) {
    pollfd p{acc.native_handle(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) == 1;
}

// An upstream connected with TCP_QUICKACK off holds the handshake's last ACK back, so the
// server cannot accept the connection yet. A client with nothing to say (server-first
// protocols) must not leave it so until the delayed-ACK timer (200 ms): the relay sends it.
TEST(Observed, HeldHandshakeAckIsSentWhenTheClientIsSilent) {
    tpt::runtime::Worker worker;
    Pair client = make_pair(worker.context());
    tcp::acceptor server(worker.context(), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket upstream(worker.context());
    upstream.open(tcp::v4());
    const int off = 0;
    ASSERT_EQ(::setsockopt(upstream.native_handle(), IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off),
              0);
    upstream.connect(server.local_endpoint());
    ASSERT_FALSE(acceptable_within(server, 50ms));  // the ACK is held back

    tpt::tunnel::Counters counters;
    Recorder rec;
    rec.a = &client.b;
    rec.b = &upstream;
    tpt::tunnel::start(client.b, &upstream, {.upstream_ack_held = true}, worker, counters, rec);
    std::thread t([&] { worker.context().run(); });
    // Well inside the 200 ms the kernel would wait (less the 50 ms above).
    EXPECT_TRUE(acceptable_within(server, 100ms));
    tcp::socket accepted = server.accept();
    net::write(accepted, net::buffer(std::string("220 hello\r\n")));
    std::string greeting(11, '\0');
    net::read(client.a, net::buffer(greeting));
    EXPECT_EQ(greeting, "220 hello\r\n");
    client.a.shutdown(tcp::socket::shutdown_send);
    accepted.shutdown(tcp::socket::shutdown_send);
    EXPECT_EQ(read_to_eof(accepted), "");
    EXPECT_EQ(read_to_eof(client.a), "");
    t.join();
    EXPECT_EQ(rec.outcome, tpt::Outcome::ok);
}

TEST(Worker, LendsNonBlockingPipesAndTakesEmptyOnesBack) {
    tpt::runtime::Worker worker;
    auto p = worker.take_pipe();
    ASSERT_TRUE(p.valid());
    EXPECT_GE(p.capacity(), 64U * 1024);
    char buf[1];
    EXPECT_EQ(::read(p.read_end(), buf, 1), -1);  // empty and non-blocking
    EXPECT_EQ(errno, EAGAIN);
    const int read_end = p.read_end();
    worker.give_back(std::move(p));
    EXPECT_FALSE(p.valid());  // NOLINT(bugprone-use-after-move): moved-from is defined here
    auto again = worker.take_pipe();
    EXPECT_EQ(again.read_end(), read_end);  // the pooled one
}

}  // namespace
