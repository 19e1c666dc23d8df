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
