#include "upcycle/ops/softmax.hpp"

namespace upcycle {}  // namespace upcycle
