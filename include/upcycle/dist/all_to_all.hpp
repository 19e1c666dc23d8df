#pragma once
// The differentiable all-to-all that moves tokens to the ranks holding their experts and back.
#include <cstdint>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/dist/communicator.hpp"

namespace upcycle {

// Sends the rows of x ([sum(send_counts), ...]) as Communicator::all_to_all_v does and returns
// the received rows, [sum(recv_counts), ...]. Backward returns the gradient of every received row
// to the rank and position it came from: the same exchange with the counts swapped.
//
// Backward communicates, so it is collective as well: every rank of `comm` must run backward
// through this op, in the same order relative to its other collectives, and x must require a
// gradient on all ranks or on none. The op keeps `comm` alive until backward through
// shared_from_this(), so `comm` must be owned by a std::shared_ptr.
Var all_to_all_v(Communicator& comm, const Var& x, const std::vector<std::int64_t>& send_counts,
                 const std::vector<std::int64_t>& recv_counts);

}  // namespace upcycle
