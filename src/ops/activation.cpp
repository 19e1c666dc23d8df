#include "upcycle/ops/activation.hpp"

namespace upcycle {}  // namespace upcycle
