#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <tpt/tunnel.hpp>

namespace tpt::tunnel {

using namespace boost::asio::experimental::awaitable_operators;
namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

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

void close_both(tcp::socket& a, tcp::socket& b) {
    boost::system::error_code ignored;
    a.close(ignored);
    b.close(ignored);
}

// One direction. Waits for readability before borrowing a chunk, so an idle tunnel holds no
// buffer; reads once, writes it all, returns the chunk.
net::awaitable<void> pump(tcp::socket& from, tcp::socket& to, bool from_client,
                          runtime::Worker& worker, std::uint64_t& count,
                          runtime::Clock::time_point& last_activity, Failure& failure) {
    for (;;) {
        auto [wec] = co_await from.async_wait(tcp::socket::wait_read, use_tuple);
        if (wec) {
            failure.set(from_client);
            close_both(from, to);
            co_return;
        }
        auto chunk = worker.take_chunk();
        auto [rec, n] =
            co_await from.async_read_some(net::buffer(chunk->data, runtime::chunk_size), use_tuple);
        if (rec == net::error::eof) {
            worker.give_back(std::move(chunk));
            boost::system::error_code ignored;
            to.shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }
        if (rec) {
            worker.give_back(std::move(chunk));
            failure.set(from_client);
            close_both(from, to);
            co_return;
        }
        auto [xec, written] = co_await net::async_write(to, net::buffer(chunk->data, n), use_tuple);
        worker.give_back(std::move(chunk));
        if (xec) {
            failure.set(!from_client);
            close_both(from, to);
            co_return;
        }
        count += written;
        last_activity = runtime::Clock::now();
    }
}
}  // namespace

net::awaitable<Outcome> relay(tcp::socket& client, tcp::socket& upstream, runtime::Worker& worker,
                              Counters& counters) {
    Failure failure;
    co_await (
        pump(client, upstream, true, worker, counters.to_upstream, counters.last_activity,
             failure) &&
        pump(upstream, client, false, worker, counters.to_client, counters.last_activity, failure));
    co_return failure.first.value_or(Outcome::ok);
}

net::awaitable<Outcome> echo(tcp::socket& client, runtime::Worker& worker, Counters& counters) {
    Failure failure;
    co_await pump(client, client, true, worker, counters.to_client, counters.last_activity,
                  failure);
    counters.to_upstream = counters.to_client;
    co_return failure.first.value_or(Outcome::ok);
}

}  // namespace tpt::tunnel
