#pragma once
// Dtype dispatch shared by the backends: calls f(T{}) with the C++ type of a dtype, or throws
// naming the kernel. Both backends accept f32 and f64 for floating kernels and i32 or i64 for
// index tensors.
#include <cstdint>

#include "upcycle/core/dtype.hpp"
#include "upcycle/core/error.hpp"

namespace upcycle {

// T = float or double for a floating dtype.
template <class F>
void dispatch_floating(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: UPCYCLE_THROW(what, ": floating kernels support f32 and f64, got ", dtype_name(dtype));
  }
}

// I = int32_t or int64_t for an index dtype.
template <class F>
void dispatch_index(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::i32: f(std::int32_t{}); return;
    case DType::i64: f(std::int64_t{}); return;
    default: UPCYCLE_THROW(what, ": index tensors must be i32 or i64, got ", dtype_name(dtype));
  }
}

// Any of f32, f64, i32, i64 (fill, cast, arange).
template <class F>
void dispatch_any(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::i32: f(std::int32_t{}); return;
    case DType::i64: f(std::int64_t{}); return;
    default: UPCYCLE_THROW(what, ": unsupported dtype ", dtype_name(dtype));
  }
}

}  // namespace upcycle
