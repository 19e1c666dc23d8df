#include "upcycle/ops/loss.hpp"

namespace upcycle {}  // namespace upcycle
