#pragma once
// Tensor: a contiguous row-major view (shape, dtype, element offset) into shared storage.
// Copies of a Tensor share storage; clone() copies the data.
#include <cstdint>
#include <memory>
#include <vector>

#include "upcycle/core/dtype.hpp"
#include "upcycle/core/error.hpp"
#include "upcycle/core/shape.hpp"

namespace upcycle {

// Raw memory owned by one backend's allocator.
class Storage {
 public:
  Storage(void* ptr, std::size_t bytes, Device device, void (*deleter)(void*, Device));
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* ptr() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* ptr_;
  std::size_t bytes_;
  Device device_;
  void (*deleter_)(void*, Device);
};

// Every factory names its device: library code creates a tensor on the device of the module,
// model or input that owns it, and a host tensor says Device::cpu where it is made, never by default.
class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  static Tensor empty(const Shape& shape, DType dtype, Device device);
  static Tensor zeros(const Shape& shape, DType dtype, Device device);
  static Tensor full(const Shape& shape, double value, DType dtype, Device device);
  // Host data -> tensor on `device` (copied).
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device);
  // Same shape, dtype and device as `like`, uninitialised / zero.
  static Tensor empty_like(const Tensor& like);
  static Tensor zeros_like(const Tensor& like);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  std::int64_t dim(int i) const { return shape_.dim(i); }
  std::int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  // The address of the first element on the tensor's device (a device pointer for a GPU tensor):
  // for backends and communicators, which know what memory they are given.
  void* raw() const;
  // Typed host access: refuses a tensor that is not in host memory (copy it with to(Device::cpu)
  // first: an explicit host step) and a dtype other than T.
  template <class T>
  T* data() const {
    check_host_access(dtype_of<T>::value);
    return static_cast<T*>(raw());
  }

  // Views (share storage).
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor flatten_to_2d() const;              // [prod(leading), last]
  Tensor rows(std::int64_t begin, std::int64_t end) const;  // slice of dim 0

  // Copies.
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // converts between floating and integer dtypes
  void copy_from(const Tensor& src);  // same shape; any device / same dtype

  template <class T>
  std::vector<T> to_vector() const;  // host copy; dtype must match
  template <class T>
  T item() const;  // single element; dtype must match

  // True when no other Tensor shares this storage (in-place updates are then safe).
  bool storage_unique() const { return storage_.use_count() == 1; }
  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }

 private:
  void check_host_access(DType requested) const;

  std::shared_ptr<Storage> storage_;
  std::int64_t offset_ = 0;  // in elements
  Shape shape_;
  DType dtype_ = DType::f32;
};

std::string describe(const Tensor& t);  // "f32[2, 3] cpu"

// Throws unless `t` has the given dtype / shape; `what` names the argument in the message.
void check_dtype(const Tensor& t, DType dtype, const char* what);
void check_shape(const Tensor& t, const Shape& shape, const char* what);
void check_same_shape(const Tensor& a, const Tensor& b, const char* what);

}  // namespace upcycle
