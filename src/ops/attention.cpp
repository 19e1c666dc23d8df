// Attention as one autograd op: the forward keeps only P = softmax(scale q k^T) (plus the inputs
// its backward reads) instead of the graph of matmul, mask, softmax and matmul it stands for.
// Every product runs as one batched GEMM over the B*H heads.
#include "upcycle/ops/attention.hpp"

#include <cmath>

#include "upcycle/backend/gemm.hpp"

namespace upcycle {

Var scaled_dot_product_attention(const Var& q, const Var& k, const Var& v, bool causal) {
  const Shape& sq = q.shape();
  const Shape& sk = k.shape();
  UPCYCLE_CHECK(sq.ndim() == 4 && sk.ndim() == 4 && v.shape() == sk && sk[0] == sq[0] && sk[1] == sq[1] &&
                    sk[3] == sq[3],
                "scaled_dot_product_attention: expected q [B, H, T, Dh] and k, v [B, H, S, Dh], got q ", sq.str(),
                ", k ", sk.str(), ", v ", v.shape().str());
  UPCYCLE_CHECK(q.dtype() == k.dtype() && k.dtype() == v.dtype(), "scaled_dot_product_attention: dtypes differ: ",
                describe(q.value()), ", ", describe(k.value()), ", ", describe(v.value()));
  const std::int64_t heads = sq[0] * sq[1], t = sq[2], s = sk[2], dh = sq[3];
  // Bottom-right alignment leaves the first T - S queries without any key when S < T.
  UPCYCLE_CHECK(!causal || s >= t, "scaled_dot_product_attention: causal attention needs S >= T, got T = ", t,
                ", S = ", s);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  Tensor qv = q.value(), kv = k.value(), vv = v.value();
  Backend& be = backend_of(qv);
  const Shape p_shape{sq[0], sq[1], t, s};
  Tensor p = Tensor::empty(p_shape, qv.dtype(), qv.device());
  {
    Tensor scores = Tensor::empty(p_shape, qv.dtype(), qv.device());
    packed_batched_gemm(be, heads, t, s, dh, false, true, scale, qv, kv, scores);  // scale q k^T
    if (causal && t * s > 0) be.causal_mask(scores, t, s);
    be.softmax(scores, p);
  }
  Tensor out = Tensor::empty(sq, qv.dtype(), qv.device());
  packed_batched_gemm(be, heads, t, dh, s, false, false, 1.0, p, vv, out);  // P v
  // Keep what the needed gradients read: dq reads k, dk reads q, both read v (through dP).
  const bool need_qk = q.requires_grad() || k.requires_grad();
  Tensor keep_q = k.requires_grad() ? qv : Tensor(), keep_k = q.requires_grad() ? kv : Tensor();
  Tensor keep_v = need_qk ? vv : Tensor();
  const Shape k_shape = sk;
  return make_output(
      "scaled_dot_product_attention", out, {&q, &k, &v},
      [p, keep_q, keep_k, keep_v, heads, t, s, dh, scale, p_shape, k_shape](const Tensor& gout, GradSink& sink) {
        Backend& b = backend_of(gout);
        if (sink.needs(2)) {  // dV = P^T dO
          Tensor gv = Tensor::empty(k_shape, gout.dtype(), gout.device());
          packed_batched_gemm(b, heads, s, dh, t, true, false, 1.0, p, gout, gv);
          sink.add(2, gv);
        }
        if (!sink.needs(0) && !sink.needs(1)) return;
        // dS = softmax_backward(P, dO V^T); the 1/sqrt(Dh) of dS is folded into the GEMMs below.
        Tensor gs = Tensor::empty(p_shape, gout.dtype(), gout.device());
        {
          Tensor gp = Tensor::empty(p_shape, gout.dtype(), gout.device());
          packed_batched_gemm(b, heads, t, s, dh, false, true, 1.0, gout, keep_v, gp);
          b.softmax_backward(p, gp, gs);
        }
        if (sink.needs(0)) {  // dQ = scale dS K
          Tensor gq = Tensor::empty(gout.shape(), gout.dtype(), gout.device());
          packed_batched_gemm(b, heads, t, dh, s, false, false, scale, gs, keep_k, gq);
          sink.add(0, gq);
        }
        if (sink.needs(1)) {  // dK = scale dS^T Q
          Tensor gk = Tensor::empty(k_shape, gout.dtype(), gout.device());
          packed_batched_gemm(b, heads, s, dh, t, true, false, scale, gs, keep_q, gk);
          sink.add(1, gk);
        }
      });
}

}  // namespace upcycle
