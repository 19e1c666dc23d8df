#include "upcycle/core/tensor.hpp"

#include <cstring>

#include "upcycle/core/device_runtime.hpp"

namespace upcycle {

Storage::Storage(void* ptr, std::size_t bytes, Device device, void (*deleter)(void*, Device))
    : ptr_(ptr), bytes_(bytes), device_(device), deleter_(deleter) {}

Storage::~Storage() {
  if (ptr_ && deleter_) deleter_(ptr_, device_);
}

namespace {
void release_to_runtime(void* ptr, Device device) { device_runtime(device).deallocate(ptr); }
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape) UPCYCLE_CHECK(d >= 0, "negative dimension in shape ", shape.str());
  Tensor t;
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  void* ptr = device_runtime(device).allocate(bytes);
  t.storage_ = std::make_shared<Storage>(ptr, bytes, device, &release_to_runtime);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device_runtime(device).fill(t, value);
  return t;
}

Tensor Tensor::empty_like(const Tensor& like) { return empty(like.shape(), like.dtype(), like.device()); }
Tensor Tensor::zeros_like(const Tensor& like) { return zeros(like.shape(), like.dtype(), like.device()); }

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  UPCYCLE_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(), "from_vector: ",
                values.size(), " values for shape ", shape.str());
  Tensor t = empty(shape, dtype_of<T>::value, device);
  device_runtime(device).copy_bytes(t.raw(), device, values.data(), Device::cpu, t.nbytes());
  return t;
}

Device Tensor::device() const {
  UPCYCLE_CHECK(defined(), "undefined tensor");
  return storage_->device();
}

void Tensor::check_host_access(DType requested) const {
  UPCYCLE_CHECK(defined(), "host access to an undefined tensor");
  UPCYCLE_CHECK(storage_->device() == Device::cpu, "host access to ", describe(*this),
                ": copy it to the host first (to(Device::cpu))");
  UPCYCLE_CHECK(requested == dtype_, "tensor holds ", dtype_name(dtype_), ", requested ", dtype_name(requested));
}

void* Tensor::raw() const {
  UPCYCLE_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->ptr()) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
}

Tensor Tensor::reshape(const Shape& shape) const {
  UPCYCLE_CHECK(defined(), "reshape of an undefined tensor");
  Shape s = shape;
  int infer = -1;
  std::int64_t known = 1;
  for (int i = 0; i < s.ndim(); ++i) {
    if (s[i] == -1) {
      UPCYCLE_CHECK(infer < 0, "reshape: more than one -1 in ", shape.str());
      infer = i;
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    UPCYCLE_CHECK(known > 0 && numel() % known == 0, "reshape ", shape_.str(), " -> ", shape.str());
    s[infer] = numel() / known;
  }
  UPCYCLE_CHECK(s.numel() == numel(), "reshape ", shape_.str(), " -> ", shape.str(),
                ": element counts differ");
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::flatten_to_2d() const {
  UPCYCLE_CHECK(ndim() >= 1, "flatten_to_2d of a scalar");
  return reshape({numel() / shape_.dim(-1), shape_.dim(-1)});
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t end) const {
  UPCYCLE_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "rows(", begin, ", ",
                end, ") of ", shape_.str());
  Tensor t = *this;
  t.offset_ += begin * shape_.prod(1, ndim());
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  UPCYCLE_CHECK(src.numel() == numel() && src.dtype() == dtype(), "copy_from: ", describe(src),
                " into ", describe(*this));
  if (numel() == 0) return;
  const Device from = src.device(), to = device();
  DeviceRuntime& b = device_runtime(to == Device::cpu ? from : to);
  b.copy_bytes(raw(), to, src.raw(), from, nbytes());
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device());
  device_runtime(device()).cast(*this, t);
  return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  check_dtype(*this, dtype_of<T>::value, "to_vector");
  std::vector<T> v(static_cast<std::size_t>(numel()));
  if (!v.empty()) device_runtime(device()).copy_bytes(v.data(), Device::cpu, raw(), device(), nbytes());
  return v;
}

template <class T>
T Tensor::item() const {
  UPCYCLE_CHECK(numel() == 1, "item() of ", describe(*this));
  return to_vector<T>()[0];
}

#define UPCYCLE_INSTANTIATE(T)                                                           \
  template Tensor Tensor::from_vector<T>(const std::vector<T>&, const Shape&, Device); \
  template std::vector<T> Tensor::to_vector<T>() const;                                \
  template T Tensor::item<T>() const;
UPCYCLE_INSTANTIATE(float)
UPCYCLE_INSTANTIATE(double)
UPCYCLE_INSTANTIATE(std::int32_t)
UPCYCLE_INSTANTIATE(std::int64_t)
#undef UPCYCLE_INSTANTIATE

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return std::string(dtype_name(t.dtype())) + t.shape().str() + " " + device_name(t.device());
}

void check_dtype(const Tensor& t, DType dtype, const char* what) {
  UPCYCLE_CHECK(t.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(t.dtype() == dtype, what, ": expected ", dtype_name(dtype), ", got ", describe(t));
}

void check_shape(const Tensor& t, const Shape& shape, const char* what) {
  UPCYCLE_CHECK(t.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(t.shape() == shape, what, ": expected shape ", shape.str(), ", got ", describe(t));
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  UPCYCLE_CHECK(a.defined() && b.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(a.shape() == b.shape(), what, ": shapes differ: ", describe(a), " vs ", describe(b));
}

}  // namespace upcycle
