// tpt_loadgen backend: on each listen address, reads a whole request (a ClientHello, an HTTP
// head), answers with the address's answer and closes. One epoll loop per thread, each with its
// own SO_REUSEPORT listeners; runs until the process is killed.
#pragma once

#include <cstddef>
#include <vector>

#include "common.hpp"

namespace loadgen {

struct BackendOptions {
    std::vector<Endpoint> listen;  // listen[k] answers as backend k
    unsigned threads = 1;
    std::size_t answer_bytes = 512;
};

// Binds every address on every thread (throws std::runtime_error naming the address that
// fails), prints "ready" on stdout, then serves forever.
[[noreturn]] void run_backend(const BackendOptions& options);

}  // namespace loadgen
