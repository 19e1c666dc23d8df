// packed_qkv_attention: attention from a fused qkv projection without the split / merge graph
// (see upcycle/ops/fused_attention.hpp). The per-head products are the same batched GEMMs as
// scaled_dot_product_attention, so the values agree with that op's.
#include "upcycle/ops/fused_attention.hpp"

#include <cmath>

#include "upcycle/backend/gemm.hpp"

namespace upcycle {

namespace {


// Part i (0 = q, 1 = k, 2 = v) of a [3, B, H, T, Dh] block, as a [B, H, T, Dh] view.
Tensor part(const Tensor& block, int i, const Shape& head_shape) {
  return block.reshape({3, head_shape.numel()}).rows(i, i + 1).reshape(head_shape);
}

}  // namespace

Var packed_qkv_attention(const Var& qkv, std::int64_t heads, bool causal) {
  const Shape& s = qkv.shape();
  UPCYCLE_CHECK(s.ndim() == 3 && heads > 0 && s[2] % (3 * heads) == 0,
                "packed_qkv_attention: expected qkv [B, T, 3 * D] with D a multiple of ", heads,
                " heads, got ", describe(qkv.value()));
  const std::int64_t B = s[0], T = s[1], D = s[2] / 3, H = heads, Dh = D / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  const Tensor qkv_v = qkv.value();
  Backend& be = backend_of(qkv_v);
  const DType dt = qkv_v.dtype();
  const Device dev = qkv_v.device();
  const Shape head_shape{B, H, T, Dh};
  const std::int64_t bh = B * H;

  // [B, T, 3, H, Dh] -> [3, B, H, T, Dh]: q, k, v are contiguous [B, H, T, Dh] blocks.
  Tensor block = Tensor::empty({3, B, H, T, Dh}, dt, dev);
  {
    static const int perm[5] = {2, 0, 3, 1, 4};
    be.permute(qkv_v.reshape({B, T, 3, H, Dh}), block, perm);
  }
  const Tensor q = part(block, 0, head_shape), k = part(block, 1, head_shape), v = part(block, 2, head_shape);

  const Shape p_shape{B, H, T, T};
  Tensor p = Tensor::empty(p_shape, dt, dev);
  {
    Tensor scores = Tensor::empty(p_shape, dt, dev);
    packed_batched_gemm(be, bh, T, T, Dh, false, true, scale, q, k, scores);  // scale q k^T
    if (causal && T > 0) be.causal_mask(scores, T, T);
    be.softmax(scores, p);
  }
  Tensor o = Tensor::empty(head_shape, dt, dev);
  packed_batched_gemm(be, bh, T, Dh, T, false, false, 1.0, p, v, o);  // P v
  // Merge the heads: [B, H, T, Dh] -> [B, T, H, Dh] = [B, T, D].
  Tensor out = Tensor::empty({B, T, D}, dt, dev);
  {
    static const int perm[4] = {0, 2, 1, 3};
    Tensor out4 = out.reshape({B, T, H, Dh});
    be.permute(o, out4, perm);
  }

  return make_output(
      "packed_qkv_attention", out, {&qkv},
      [block, p, B, T, H, Dh, bh, scale, head_shape, p_shape, qkv_shape = s](const Tensor& gout, GradSink& sink) {
        Backend& b = backend_of(gout);
        const DType gdt = gout.dtype();
        const Device gdev = gout.device();
        // dO: [B, T, H, Dh] -> [B, H, T, Dh].
        Tensor go = Tensor::empty(head_shape, gdt, gdev);
        {
          static const int perm[4] = {0, 2, 1, 3};
          b.permute(gout.reshape({B, T, H, Dh}), go, perm);
        }
        const Tensor q = part(block, 0, head_shape), k = part(block, 1, head_shape), v = part(block, 2, head_shape);
        // dq, dk, dv go straight into their parts of one [3, B, H, T, Dh] block.
        Tensor gblock = Tensor::empty({3, B, H, T, Dh}, gdt, gdev);
        Tensor gq = part(gblock, 0, head_shape), gk = part(gblock, 1, head_shape), gv = part(gblock, 2, head_shape);
        packed_batched_gemm(b, bh, T, Dh, T, true, false, 1.0, p, go, gv);  // dV = P^T dO
        // dS = softmax_backward(P, dO V^T); the 1/sqrt(Dh) of dS is folded into the GEMMs below.
        Tensor gs = Tensor::empty(p_shape, gdt, gdev);
        {
          Tensor gp = Tensor::empty(p_shape, gdt, gdev);
          packed_batched_gemm(b, bh, T, T, Dh, false, true, 1.0, go, v, gp);
          b.softmax_backward(p, gp, gs);
        }
        packed_batched_gemm(b, bh, T, Dh, T, false, false, scale, gs, k, gq);  // dQ = scale dS K
        packed_batched_gemm(b, bh, T, Dh, T, true, false, scale, gs, q, gk);   // dK = scale dS^T Q
        // [3, B, H, T, Dh] -> [B, T, 3, H, Dh] = qkv's layout.
        Tensor gqkv = Tensor::empty(qkv_shape, gdt, gdev);
        {
          static const int perm[5] = {1, 3, 0, 2, 4};
          Tensor g5 = gqkv.reshape({B, T, 3, H, Dh});
          b.permute(gblock, g5, perm);
        }
        sink.add(0, gqkv);
      });
}

}  // namespace upcycle
