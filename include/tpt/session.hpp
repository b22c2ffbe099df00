// session: one accepted connection through its phases: ClientHello, route, connect, CONNECT,
// relay, access log.
// Thread affinity: a session runs on the worker that accepted it.
#pragma once

#include <cstddef>

#include <boost/asio/ip/tcp.hpp>

#include <tpt/runtime.hpp>
#include <tpt/snapshot.hpp>
#include <tpt/upstream.hpp>

namespace tpt::session {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Per-worker state of sessions (the DNS cache).
struct WorkerContext {
    runtime::Worker& worker;
    upstream::Resolver resolver;
    explicit WorkerContext(runtime::Worker& w) : worker(w), resolver(w.executor()) {}
};

// Runs one connection to its end, on the calling worker: starts its phases and returns.
// `client` is adopted from accept already (runtime::own_descriptor, O_NONBLOCK); `peer` is the
// client's address (from accept); `local` the listening address when it is not a wildcard
// (what getsockname would say; a default endpoint, port 0, when unknown); `admission` counted it
// in, and counts it out when the session ends. An established tunnel holds the session object and
// the relay state only: every phase's frame is gone by then.
void start(tcp::socket client, const tcp::endpoint& peer, const tcp::endpoint& local,
           snapshot::SnapshotPtr snapshot, std::size_t server_index, snapshot::Admission admission,
           WorkerContext& ctx);

}  // namespace tpt::session
