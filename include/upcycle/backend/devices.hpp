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

// --- which GPU this process drives (one GPU per rank: dist/world.hpp bind_rank_to_gpu) ---
// These never start the CUDA backend, so they can pick its GPU before it starts.

// The GPUs the CUDA runtime sees (CUDA_VISIBLE_DEVICES applies); 0 when it sees none or fails, with
// the reason in `why` (if given). Always 0 in a build without CUDA.
int cuda_device_count(std::string* why = nullptr);
// Makes `index` (in [0, cuda_device_count())) the GPU the CUDA backend starts on. The backend
// starts once per process on the GPU current at its first use, so this must come before anything
// touches a cuda tensor; once it runs on another GPU this throws. Throws in a build without CUDA.
void use_cuda_device(int index);
// The PCI bus id of GPU `index` ("0000:3b:00.0"): names the physical GPU whatever
// CUDA_VISIBLE_DEVICES renumbered. Throws in a build without CUDA.
std::string cuda_pci_bus_id(int index);

}  // namespace upcycle
