// The runtime's private view of a worker's reactor (asio_internals.cpp or asio_public.cpp).
// Thread affinity: called once per worker, at its construction.
#pragma once

#include <boost/asio/io_context.hpp>

namespace tpt::runtime {

// The reactor wait_edge() queues on for `ctx`; nullptr when the public API is used.
void* reactor_of(boost::asio::io_context& ctx);

}  // namespace tpt::runtime
