#pragma once
// Which device a run trains on (run.device), and whether this process can use a GPU.
#include <string>

#include "upcycle/core/dtype.hpp"

namespace upcycle {

// Whether this build has the CUDA backend and it starts on a visible GPU. When it cannot, `why`
// (if given) receives the reason, naming the CUDA error (e.g. cudaErrorInsufficientDriver when the
// toolkit is installed without a driver, cudaErrorNoDevice without a GPU).
bool cuda_usable(std::string* why = nullptr);

struct DeviceChoice {
  Device device = Device::cpu;
  std::string reason;  // one line on why (for "auto"); empty when the device was asked for by name
};

// Resolves a run.device value: "cpu"; "cuda" (throws an Error naming the CUDA error when no GPU is
// usable); "auto" (cuda when usable, else cpu with the reason). Anything else is a UsageError.
DeviceChoice choose_device(const std::string& requested);

}  // namespace upcycle
