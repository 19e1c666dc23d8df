#include "upcycle/ops/index.hpp"

namespace upcycle {}  // namespace upcycle
