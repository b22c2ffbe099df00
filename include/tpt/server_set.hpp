// server_set: the listening sockets of every server, on every worker (SO_REUSEPORT), and the
// per-worker current snapshot. apply() diffs listeners against a new snapshot.
// Thread affinity: apply(), close_all() and live() on the control thread; accept loops and
// sessions on the workers.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <tpt/runtime.hpp>
#include <tpt/session.hpp>

namespace tpt::server_set {

class Listener;

class ServerSet {
public:
    explicit ServerSet(runtime::Runtime& runtime);
    ~ServerSet();

    // Binds every listen address of `next` that is not bound yet (all or nothing: on a bind
    // failure the new sockets are closed and the error returned, nothing changed), publishes
    // `next` to every worker, then closes the listeners whose address `next` no longer has.
    // Live tunnels are never touched.
    std::optional<std::string> apply(const session::SnapshotPtr& next);

    // Stops accepting on every listener (shutdown). Tunnels keep running.
    void close_all();
    // Closes every live tunnel (shutdown's drain timeout).
    void abort_all();
    // Live, non-health sessions on all workers.
    std::uint64_t live() const;
    std::vector<std::string> bound() const;  // "host:port" keys, for logs and tests

private:
    runtime::Runtime& runtime_;
    // Never run: new listening sockets are opened here and handed to their worker's reactor
    // by the worker itself (Listener::bind).
    boost::asio::io_context staging_;
    std::vector<std::unique_ptr<session::WorkerContext>> contexts_;
    // Per worker, the snapshot new connections use; written and read on that worker only.
    std::vector<std::shared_ptr<session::SnapshotPtr>> current_;
    std::map<std::string, std::vector<std::shared_ptr<Listener>>> listeners_;  // key -> per worker
};

}  // namespace tpt::server_set
