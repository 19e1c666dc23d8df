#include "upcycle/ops/softmax.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

// Both derivatives are cheapest from the output, so backward keeps y and not x.
Var softmax(const Var& x) {
  Tensor y = Tensor::empty_like(x.value());
  backend_of(y).softmax(x.value(), y);
  return make_output("softmax", y, {&x}, [y](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty_like(y);
    backend_of(y).softmax_backward(y, gy, gx);
    sink.add(0, gx);
  });
}

Var log_softmax(const Var& x) {
  Tensor y = Tensor::empty_like(x.value());
  backend_of(y).log_softmax(x.value(), y);
  return make_output("log_softmax", y, {&x}, [y](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty_like(y);
    backend_of(y).log_softmax_backward(y, gy, gx);
    sink.add(0, gx);
  });
}

}  // namespace upcycle
