// tpt_loadgen client: opens connections to the targets, sends each one's request (and first
// its CONNECT prelude), reads the answer until the peer closes, closes, and starts the next.
// One epoll loop per thread, each thread with its own share of the connections; the report
// is built on the main thread after the workers joined.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "wire.hpp"

namespace loadgen {

struct ClientOptions {
    std::vector<Endpoint> targets;  // request.backend % targets.size() picks one
    unsigned threads = 1;
    unsigned concurrency = 64;  // connections in flight at most, over all threads
    double rate = 0;            // connections started per second over all threads; 0 = as fast
                                // as they finish (closed loop)
    double warmup_s = 0.5;      // finished connections before this are not counted
    double duration_s = 5;      // counted window after the warm-up
    double timeout_s = 5;       // a connection not done by then counts as `timeout`
    std::size_t answer_bytes = 512;
};

enum class Error : std::uint8_t {
    connect,       // connect() failed or the handshake was refused
    reset,         // a reset or another socket error after connecting
    timeout,       // not done within timeout_s
    proxy_status,  // the CONNECT answer was not a 2xx head
    short_answer,  // the peer closed before the whole answer came
    wrong_answer,  // an answer of another backend or size (a misrouted connection)
    unfinished,    // still open at the end though started before the window opened
    count_
};
inline constexpr std::array<const char*, static_cast<std::size_t>(Error::count_)> error_names = {
    "connect", "reset", "timeout", "proxy_status", "short_answer", "wrong_answer", "unfinished"};

struct ClientReport {
    Histogram latency;  // start (or scheduled start, when paced) to the answer's end
    std::uint64_t done = 0;
    std::array<std::uint64_t, error_names.size()> errors{};
    double cpu_s = 0;  // this process's user+system time during the counted window
};

// Runs the load for warmup_s + duration_s and reports the counted window; prints "window
// start" and "window end" on stdout as the window opens and closes. Throws
// std::runtime_error when a thread cannot set up (epoll, memory).
ClientReport run_client(const ClientOptions& options, const std::vector<Request>& requests);

}  // namespace loadgen
