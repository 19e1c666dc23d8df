#include "upcycle/ops/random.hpp"

namespace upcycle {}  // namespace upcycle
