// The backend of each device. The CPU backend is installed before main; the CUDA backend (built
// with UPCYCLE_CUDA) starts on first use, and when it cannot (no driver, no GPU) the error names
// the CUDA error and nothing is installed, so a later call reports it again.
#include <array>
#include <atomic>
#include <mutex>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

Backend& cpu_backend();  // src/backend/cpu
#ifdef UPCYCLE_WITH_CUDA
Backend& cuda_backend();  // kernels/cuda_backend.cpp: starts the device; throws naming the CUDA error
#endif

namespace {

struct Registry {
  std::mutex mu;
  std::array<std::atomic<Backend*>, 2> installed{};
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();  // never destroyed: tensors may be freed during static destruction
    reg->installed[0] = &cpu_backend();
    register_device_runtime(Device::cpu, reg->installed[0]);
    return reg;
  }();
  return *r;
}

// The built-in backend of a device that has none installed yet.
Backend* start_builtin(Device device) {
#ifdef UPCYCLE_WITH_CUDA
  if (device == Device::cuda) return &cuda_backend();
#endif
  (void)device;
  return nullptr;
}

DeviceRuntime* resolve(Device device) { return &backend_for(device); }

// Before main: tensors created before the first backend_for() call need the CPU runtime.
const bool g_installed = [] {
  registry();
  set_device_runtime_resolver(&resolve);
  return true;
}();

}  // namespace

void register_backend(Device device, Backend* backend) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const auto i = static_cast<std::size_t>(device);
  if (backend == nullptr) backend = device == Device::cpu ? &cpu_backend() : nullptr;
  r.installed[i] = backend;
  register_device_runtime(device, backend);
}

Backend& backend_for(Device device) {
  Registry& r = registry();
  const auto i = static_cast<std::size_t>(device);
  if (Backend* b = r.installed[i].load()) return *b;
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.installed[i].load() == nullptr) {
    Backend* b = start_builtin(device);
    UPCYCLE_CHECK(b != nullptr, "no backend for device ", device_name(device),
                  ": this build has no CUDA backend (configure with nvcc on the PATH, UPCYCLE_CUDA=ON)");
    r.installed[i].store(b);
    register_device_runtime(device, b);
  }
  return *r.installed[i].load();
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
    case BinaryOp::max: return "max";
    case BinaryOp::min: return "min";
  }
  return "binary";
}

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::rsqrt: return "rsqrt";
    case UnaryOp::square: return "square";
    case UnaryOp::abs: return "abs";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::reciprocal: return "reciprocal";
    case UnaryOp::relu: return "relu";
    case UnaryOp::gelu_tanh: return "gelu_tanh";
    case UnaryOp::gelu_erf: return "gelu_erf";
    case UnaryOp::silu: return "silu";
  }
  return "unary";
}

}  // namespace upcycle
