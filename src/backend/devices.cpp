#include "upcycle/backend/devices.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

bool cuda_usable(std::string* why) {
#ifdef UPCYCLE_WITH_CUDA
  try {
    backend_for(Device::cuda);
    return true;
  } catch (const Error& e) {
    if (why) *why = e.message();
    return false;
  }
#else
  if (why) *why = "this build has no CUDA backend (nvcc was not found when it was configured)";
  return false;
#endif
}

DeviceChoice choose_device(const std::string& requested) {
  if (requested == "cpu") return {Device::cpu, ""};
  if (requested == "cuda") {
    std::string why;
    if (!cuda_usable(&why)) UPCYCLE_THROW("run.device = cuda: no usable GPU: ", why);
    return {Device::cuda, ""};
  }
  if (requested == "auto") {
    std::string why;
    if (cuda_usable(&why)) return {Device::cuda, "run.device = auto: training on the GPU"};
    return {Device::cpu, "run.device = auto: training on the CPU (no usable GPU: " + why + ")"};
  }
  UPCYCLE_USAGE_ERROR("run.device must be auto, cpu or cuda, got '", requested, "'");
}

// The CUDA build defines these in kernels/cuda_backend.cpp, beside the backend's start-up.
#ifndef UPCYCLE_WITH_CUDA
int cuda_device_count(std::string* why) {
  if (why) *why = "this build has no CUDA backend (nvcc was not found when it was configured)";
  return 0;
}

void use_cuda_device(int index) {
  UPCYCLE_THROW("use_cuda_device(", index, "): this build has no CUDA backend");
}

std::string cuda_pci_bus_id(int index) {
  UPCYCLE_THROW("cuda_pci_bus_id(", index, "): this build has no CUDA backend");
}
#endif

}  // namespace upcycle
