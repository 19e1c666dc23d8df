#include "upcycle/ops/shape.hpp"

namespace upcycle {}  // namespace upcycle
