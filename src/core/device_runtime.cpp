#include "upcycle/core/device_runtime.hpp"

#include <array>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {
std::array<DeviceRuntime*, 2>& runtimes() {
  static std::array<DeviceRuntime*, 2> r{nullptr, nullptr};
  return r;
}
DeviceRuntime* (*g_resolver)(Device) = nullptr;
}  // namespace

void set_device_runtime_resolver(DeviceRuntime* (*resolver)(Device)) { g_resolver = resolver; }

void register_device_runtime(Device device, DeviceRuntime* runtime) {
  runtimes()[static_cast<std::size_t>(device)] = runtime;
}

DeviceRuntime& device_runtime(Device device) {
  DeviceRuntime* r = runtimes()[static_cast<std::size_t>(device)];
  if (r == nullptr && g_resolver != nullptr) r = g_resolver(device);
  UPCYCLE_CHECK(r != nullptr, "no runtime for device ", device_name(device),
                device == Device::cuda ? " (a build without CUDA, or no usable GPU)" : " (the CPU backend is not linked)");
  return *r;
}

}  // namespace upcycle
