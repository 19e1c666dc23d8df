// Shape ops. Only reshape is a view (tensors are contiguous, so it never moves data); the others
// copy through the backend's permute / copy_axis. Backward of a copy is the inverse copy.
#include "upcycle/ops/shape.hpp"

#include <array>
#include <utility>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {

using Perm = std::array<int, Shape::kMaxDims>;

// A tensor seen as [outer, len, inner] around one axis (the view copy_axis works on).
struct AxisView {
  std::int64_t outer, len, inner;
};
AxisView around(const Shape& s, int axis) { return {s.prod(0, axis), s[axis], s.prod(axis + 1, s.ndim())}; }

// out = permuted copy of x (out.shape[i] = x.shape[perm[i]]).
Tensor permuted(const Tensor& x, const Perm& perm) {
  Shape shape;
  for (int i = 0; i < x.ndim(); ++i) shape.push_back(x.dim(perm[static_cast<std::size_t>(i)]));
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend_of(x).permute(x, out, perm.data());
  return out;
}

// dst[:, dst_off : dst_off + len, :] = src[:, src_off : src_off + len, :] around `axis`.
void copy_slab(const Tensor& src, std::int64_t src_off, Tensor& dst, std::int64_t dst_off, int axis,
               std::int64_t len) {
  const AxisView s = around(src.shape(), axis), d = around(dst.shape(), axis);
  backend_of(src).copy_axis(src, s.len, src_off, dst, d.len, dst_off, s.outer, len, s.inner, false);
}

}  // namespace

Var reshape(const Var& x, const Shape& shape) {
  const Shape in_shape = x.shape();
  return make_output("reshape", x.value().reshape(shape), {&x},
                     [in_shape](const Tensor& gy, GradSink& sink) { sink.add(0, gy.reshape(in_shape)); });
}

Var permute(const Var& x, const std::vector<int>& perm) {
  const Shape& s = x.shape();
  const int n = s.ndim();
  UPCYCLE_CHECK(static_cast<int>(perm.size()) == n, "permute: ", perm.size(), " axes for shape ", s.str());
  Perm p{}, inv{};
  inv.fill(-1);
  for (int i = 0; i < n; ++i) {
    const int a = s.wrap_axis(perm[static_cast<std::size_t>(i)]);
    UPCYCLE_CHECK(inv[static_cast<std::size_t>(a)] < 0, "permute: axis ", perm[static_cast<std::size_t>(i)],
                  " appears twice; perm must list every axis of ", s.str(), " once");
    p[static_cast<std::size_t>(i)] = a;
    inv[static_cast<std::size_t>(a)] = i;
  }
  return make_output("permute", permuted(x.value(), p), {&x}, [inv](const Tensor& gy, GradSink& sink) {
    sink.add(0, permuted(gy, inv));
  });
}

Var transpose(const Var& x, int axis0, int axis1) {
  const int n = x.shape().ndim();
  const int a = x.shape().wrap_axis(axis0), b = x.shape().wrap_axis(axis1);
  std::vector<int> perm(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  std::swap(perm[static_cast<std::size_t>(a)], perm[static_cast<std::size_t>(b)]);
  return permute(x, perm);
}

Var concat(const std::vector<Var>& xs, int axis_in) {
  UPCYCLE_CHECK(!xs.empty(), "concat: no tensors given");
  const Shape& s0 = xs[0].shape();
  const int axis = s0.wrap_axis(axis_in);
  std::vector<Shape> shapes;
  shapes.reserve(xs.size());
  std::int64_t total = 0;
  for (const Var& x : xs) {
    const Shape& s = x.shape();
    bool compatible = s.ndim() == s0.ndim() && x.dtype() == xs[0].dtype() && x.device() == xs[0].device();
    for (int i = 0; compatible && i < s.ndim(); ++i) compatible = i == axis || s[i] == s0[i];
    UPCYCLE_CHECK(compatible, "concat along axis ", axis, ": ", describe(x.value()), " does not match ",
                  describe(xs[0].value()), " (same dtype, device and dims except the axis expected)");
    shapes.push_back(s);
    total += s[axis];
  }
  Shape out_shape = s0;
  out_shape[axis] = total;
  Tensor y = Tensor::empty(out_shape, xs[0].dtype(), xs[0].device());
  std::int64_t off = 0;
  for (const Var& x : xs) {
    copy_slab(x.value(), 0, y, off, axis, x.shape()[axis]);
    off += x.shape()[axis];
  }
  return make_output("concat", y, xs, [shapes, axis](const Tensor& gy, GradSink& sink) {
    std::int64_t at = 0;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const std::int64_t len = shapes[i][axis];
      if (sink.needs(i)) {
        Tensor g = Tensor::empty(shapes[i], gy.dtype(), gy.device());
        copy_slab(gy, at, g, 0, axis, len);
        sink.add(i, g);
      }
      at += len;
    }
  });
}

Var slice(const Var& x, int axis_in, std::int64_t begin, std::int64_t end) {
  const Shape in_shape = x.shape();
  const int axis = in_shape.wrap_axis(axis_in);
  UPCYCLE_CHECK(0 <= begin && begin <= end && end <= in_shape[axis], "slice [", begin, ", ", end, ") of axis ",
                axis, " of ", in_shape.str(), ": expected 0 <= begin <= end <= ", in_shape[axis]);
  Shape out_shape = in_shape;
  out_shape[axis] = end - begin;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  copy_slab(x.value(), begin, y, 0, axis, end - begin);
  return make_output("slice", y, {&x}, [in_shape, axis, begin](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::zeros(in_shape, gy.dtype(), gy.device());
    copy_slab(gy, 0, gx, begin, axis, gy.shape()[axis]);
    sink.add(0, gx);
  });
}

std::vector<Var> split(const Var& x, const std::vector<std::int64_t>& sizes, int axis_in) {
  const int axis = x.shape().wrap_axis(axis_in);
  std::int64_t total = 0;
  for (std::int64_t s : sizes) {
    UPCYCLE_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  UPCYCLE_CHECK(total == x.shape()[axis], "split: sizes add up to ", total, ", but axis ", axis, " of ",
                x.shape().str(), " has ", x.shape()[axis]);
  // Each piece is a slice, so its backward writes only its own slab of the input gradient.
  std::vector<Var> pieces;
  pieces.reserve(sizes.size());
  std::int64_t off = 0;
  for (std::int64_t s : sizes) {
    pieces.push_back(slice(x, axis, off, off + s));
    off += s;
  }
  return pieces;
}

}  // namespace upcycle
