#include <array>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

Backend& cpu_backend();  // defined in src/backend/cpu

namespace {
std::array<Backend*, 2>& registry() {
  static std::array<Backend*, 2> backends{&cpu_backend(), nullptr};
  return backends;
}
}  // namespace

void register_backend(Device device, Backend* backend) {
  registry()[static_cast<std::size_t>(device)] = backend;
}

Backend& backend_for(Device device) {
  Backend* b = registry()[static_cast<std::size_t>(device)];
  UPCYCLE_CHECK(b != nullptr, "no backend for device ", device_name(device),
                " (build with UPCYCLE_WITH_CUDA=ON for cuda)");
  return *b;
}

}  // namespace upcycle
