#include "upcycle/core/shape.hpp"

#include "upcycle/core/error.hpp"

namespace upcycle {

Shape::Shape(std::initializer_list<std::int64_t> dims) {
  UPCYCLE_CHECK(dims.size() <= kMaxDims, "at most ", kMaxDims, " dims");
  for (auto d : dims) dims_[static_cast<std::size_t>(n_++)] = d;
}

Shape::Shape(const std::vector<std::int64_t>& dims) {
  UPCYCLE_CHECK(dims.size() <= kMaxDims, "at most ", kMaxDims, " dims");
  for (auto d : dims) dims_[static_cast<std::size_t>(n_++)] = d;
}

int Shape::wrap_axis(int axis) const {
  const int a = axis < 0 ? axis + n_ : axis;
  UPCYCLE_CHECK(a >= 0 && a < n_, "axis ", axis, " out of range for shape ", str());
  return a;
}

std::int64_t Shape::dim(int i) const { return dims_[static_cast<std::size_t>(wrap_axis(i))]; }

std::int64_t Shape::numel() const { return prod(0, n_); }

std::int64_t Shape::prod(int begin, int end) const {
  std::int64_t p = 1;
  for (int i = begin; i < end; ++i) p *= dims_[static_cast<std::size_t>(i)];
  return p;
}

bool Shape::operator==(const Shape& o) const {
  if (n_ != o.n_) return false;
  for (int i = 0; i < n_; ++i)
    if (dims_[static_cast<std::size_t>(i)] != o.dims_[static_cast<std::size_t>(i)]) return false;
  return true;
}

void Shape::push_back(std::int64_t d) {
  UPCYCLE_CHECK(n_ < kMaxDims, "at most ", kMaxDims, " dims");
  dims_[static_cast<std::size_t>(n_++)] = d;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < n_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return s + "]";
}

bool is_suffix_of(const Shape& suffix, const Shape& full) {
  if (suffix.ndim() > full.ndim()) return false;
  const int off = full.ndim() - suffix.ndim();
  for (int i = 0; i < suffix.ndim(); ++i)
    if (suffix[i] != full[off + i]) return false;
  return true;
}

}  // namespace upcycle
