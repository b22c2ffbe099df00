// server_set: the listening sockets of every server, on every worker (SO_REUSEPORT), their
// accept loops, and the per-worker current snapshot. apply() diffs listeners against a new
// snapshot.
// Thread affinity: apply(), close_all(), abort_all(), live() and bound() on the control
// thread; accept loops and sessions on the workers.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <tpt/address.hpp>
#include <tpt/config.hpp>
#include <tpt/outcome.hpp>
#include <tpt/runtime.hpp>
#include <tpt/session.hpp>
#include <tpt/snapshot.hpp>

namespace tpt::server_set {

class Listener;

// What apply() did to the listen addresses ("host:port", sorted).
struct Applied {
    std::vector<std::string> added_listen;
    std::vector<std::string> removed_listen;
};

class ServerSet {
public:
    explicit ServerSet(runtime::Runtime& runtime);
    ~ServerSet();
    ServerSet(const ServerSet&) = delete;
    ServerSet& operator=(const ServerSet&) = delete;

    // SPEC §7: binds every listen address of `next` that is not bound yet (all or nothing: on
    // a bind failure the new sockets are closed and the error returned, nothing changed),
    // publishes `next` to every worker, then closes the listeners whose address `next` no
    // longer has. Live tunnels are never touched.
    Result<Applied> apply(const snapshot::SnapshotPtr& next);

    // Stops accepting on every listener (shutdown). Tunnels keep running.
    void close_all();
    // Closes every live tunnel (shutdown's drain timeout).
    void abort_all();
    // Live, non-health sessions on all workers.
    std::uint64_t live() const;
    std::vector<std::string> bound() const;  // "host:port" keys, for logs and tests

private:
    using Bound = std::map<std::string, std::vector<std::shared_ptr<Listener>>>;
    Result<Bound> bind_new(const config::Config& cfg);
    Result<std::vector<std::shared_ptr<Listener>>> bind_everywhere(const std::string& key,
                                                                   const address::HostPort& hp,
                                                                   address::Family family);
    void publish(const snapshot::SnapshotPtr& next);
    std::vector<std::string> close_removed(const snapshot::Snapshot& next);

    runtime::Runtime& runtime_;
    // Never run: new listening sockets are opened here and handed to their worker's reactor
    // by the worker itself (Listener::bind).
    boost::asio::io_context staging_;
    std::vector<std::unique_ptr<session::WorkerContext>> contexts_;
    // Per worker, the snapshot new connections use; written and read on that worker only.
    std::vector<std::shared_ptr<snapshot::SnapshotPtr>> current_;
    Bound listeners_;  // key -> one listener per worker
};

}  // namespace tpt::server_set
