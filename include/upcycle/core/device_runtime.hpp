#pragma once
// What a Tensor needs from the device that holds its storage: memory, copies, fill and cast. The
// backend layer implements it (every Backend is a DeviceRuntime) and registers one per device, so
// core depends on nothing above it: the dependency is inverted through this registry.
#include <cstddef>

#include "upcycle/core/dtype.hpp"

namespace upcycle {

class Tensor;

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;
  virtual Device device() const = 0;
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  // Copy bytes between host and this device (either direction) or within the device. Returns when
  // the destination may be read by the host (a device-to-host copy waits for the device).
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) = 0;
  virtual void fill(Tensor& out, double value) = 0;
  virtual void cast(const Tensor& src, Tensor& dst) = 0;  // same element count, any dtypes
};

// The runtime registered for `device`; throws naming the device when none is (a build without it,
// or a device that could not be initialised).
DeviceRuntime& device_runtime(Device device);
// Called by the backend layer when it registers a backend (null unregisters).
void register_device_runtime(Device device, DeviceRuntime* runtime);
// Called by the backend layer at start-up: finds (and starts) the runtime of a device that has
// none registered yet, e.g. the CUDA backend on first use; may throw naming why it cannot.
void set_device_runtime_resolver(DeviceRuntime* (*resolver)(Device));

}  // namespace upcycle
