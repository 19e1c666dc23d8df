#pragma once
// A small fixed-capacity shape so that building and comparing shapes never allocates.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace upcycle {

class Shape {
 public:
  static constexpr int kMaxDims = 8;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(const std::vector<std::int64_t>& dims);

  int ndim() const { return n_; }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  // Dimension with Python-style negative indexing, checked.
  std::int64_t dim(int i) const;
  int wrap_axis(int axis) const;  // negative axis -> positive, checked
  std::int64_t numel() const;
  // Product of dims [begin, end).
  std::int64_t prod(int begin, int end) const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  void push_back(std::int64_t d);
  std::vector<std::int64_t> to_vector() const { return {dims_.begin(), dims_.begin() + n_}; }
  std::string str() const;
  const std::int64_t* begin() const { return dims_.data(); }
  const std::int64_t* end() const { return dims_.data() + n_; }

 private:
  std::array<std::int64_t, kMaxDims> dims_{};
  int n_ = 0;
};

// True when `suffix` equals the trailing dims of `full` (the broadcasting rule of the binary ops:
// the smaller operand is repeated over the leading dimensions of the larger one).
bool is_suffix_of(const Shape& suffix, const Shape& full);

}  // namespace upcycle
