#include "upcycle/ops/attention.hpp"

namespace upcycle {}  // namespace upcycle
