#include "upcycle/ops/topk.hpp"

namespace upcycle {}  // namespace upcycle
