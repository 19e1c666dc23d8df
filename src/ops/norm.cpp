#include "upcycle/ops/norm.hpp"

namespace upcycle {}  // namespace upcycle
