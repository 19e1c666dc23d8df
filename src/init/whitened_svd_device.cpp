// The whitened truncated SVD on the device of its second moment (whitened_svd.hpp:
// whitened_truncated_svd_on_device): cuSOLVER / cuBLAS through device_linalg.hpp and Backend
// kernels, on a GPU in a CUDA run (the same steps with LAPACKE on host tensors). Every decision is
// the host path's (whitened_svd_rules.hpp); the factorisation is not:
//
//   S = chol(G + j I)                  potrf, tried per jitter of the shared rule
//   A = W1 S                           trmm (reads only S's triangle)
//   A^T A = V diag(lambda) V^T         one GEMM and syevd: sigma_l = sqrt(max(lambda_l, 0))
//   W1_r = (A V_r) V_r^T S^-1          two GEMMs and trsm; U is never formed
//
// Why the eigen-decomposition of A^T A rather than gesvd / gesvdj of A [F, D], F = 4 D:
//  - the result needs only V_r and sigma^2: W1_r = U_r Sigma_r V_r^T S^-1 = A V_r V_r^T S^-1,
//    and the rank rule and energies use sigma^2, which lambda gives with the absolute accuracy an
//    SVD's sigma^2 has (D eps sigma_1^2). What A^T A loses is the relative accuracy of the smallest
//    singular values: those below ~sqrt(eps) sigma_1 = 1e-8 sigma_1 are not resolved (they come out
//    tiny or 0). They carry < 1e-16 of the energy, so no rank with tau < 1 and no energy moves; the
//    jitter keeps cond(G + j I) <= D / chol_eps, so for the default chol_eps the kept subspace is
//    well separated from them. V_r is accurate to eps sigma_1^2 / (sigma_r^2 - sigma_{r+1}^2).
//  - speed: the GEMM is 2 F D^2 flops at DGEMM speed and syevd (divide and conquer, blocked)
//    works on D x D; gesvd's Householder bidiagonalisation of the F x D matrix is memory-bound
//    level-2 work followed by a sequential QR iteration on the bidiagonal, and gesvdj takes several
//    Jacobi sweeps of ~4 F D^2 flops each.
//  - gesvd also requires m >= n of its column-major input, and the row-major [F, D] buffer is the
//    column-major [D, F] (m = D < n = F): it would need a transposed copy first.
#include <algorithm>
#include <cmath>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/init/device_linalg.hpp"
#include "upcycle/init/whitened_svd.hpp"
#include "upcycle/init/whitened_svd_rules.hpp"

namespace upcycle::init {

namespace {

// The flat positions i (D + 1) of the diagonal of a [D, D] matrix, on `device`.
Tensor diagonal_positions(std::int64_t d, Device device) {
  std::vector<std::int64_t> at(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < d; ++i) at[static_cast<std::size_t>(i)] = i * (d + 1);
  return Tensor::from_vector(at, {d}, device);
}

// The diagonal of a square matrix on its device, read on the host.
std::vector<double> diagonal_of(const Tensor& m, const Tensor& positions) {
  const std::int64_t d = m.dim(0);
  Tensor diag = Tensor::empty({d, 1}, DType::f64, m.device());
  backend_of(m).gather_rows(m.reshape({d * d, 1}), positions, diag);
  return diag.to_vector<double>();
}

// The host path's check of G (whitened_svd_rules.hpp) without bringing G to the host: the diagonal
// is on the host already, sum(G^2) finds a non-finite entry and max |G - G^T| the asymmetry. Only
// when one of them fails is G copied for the host check, which throws naming the entry.
void check_second_moment_on_device(const Tensor& g, const std::vector<double>& diag) {
  const double max_diag = check_second_moment_diagonal(diag);
  Backend& be = backend_of(g);
  const std::int64_t d = g.dim(0);
  Tensor total = Tensor::empty({1}, DType::f64, g.device());
  be.sum_squares({g}, total);
  bool suspect = !std::isfinite(total.item<double>());
  if (!suspect) {
    Tensor gt = Tensor::empty({d, d}, DType::f64, g.device()), diff = Tensor::empty({d, d}, DType::f64, g.device());
    Tensor size = Tensor::empty({d, d}, DType::f64, g.device()), worst = Tensor::empty({1}, DType::f64, g.device());
    const int transpose[2] = {1, 0};
    be.permute(g, gt, transpose);
    be.binary(BinaryOp::sub, g, gt, diff);
    be.unary(UnaryOp::abs, diff, size);
    be.reduce(ReduceOp::max, size, worst, 1, d * d, 1);
    suspect = !(worst.item<double>() <= 1e-5 * max_diag);
  }
  if (suspect) check_second_moment(to_matrix(g));
}

// c = a op(b) on a's device (row-major GEMM through the Backend).
Tensor product(const Tensor& a, const Tensor& b, bool trans_b) {
  GemmDesc d;
  d.m = a.dim(0);
  d.k = a.dim(1);
  d.n = trans_b ? b.dim(0) : b.dim(1);
  d.trans_b = trans_b;
  Tensor c = Tensor::empty({d.m, d.n}, DType::f64, a.device());
  backend_of(a).gemm(d, a, b, c);
  return c;
}

}  // namespace

WhitenedSvdResult whitened_truncated_svd_on_device(const Tensor& w1, const Tensor& second_moment,
                                                   const WhitenedSvdOptions& options) {
  check_whitened_svd_options(options);
  check_whitened_svd_inputs(w1, second_moment);
  const std::int64_t F = w1.dim(0), D = w1.dim(1);
  const Device device = second_moment.device();
  Backend& be = backend_for(device);
  const Tensor w = w1.to(device).to(DType::f64);
  const Tensor g = second_moment.to(DType::f64);

  const Tensor positions = diagonal_positions(D, device);
  const std::vector<double> diag = diagonal_of(g, positions);
  check_second_moment_on_device(g, diag);

  Tensor s;  // the accepted lower factor (its strict upper triangle still holds G's)
  const CholeskyJitter jitter = choose_cholesky_jitter(mean_diagonal(diag), options.chol_eps, D, [&](double j) {
    Tensor a = g.clone();
    Tensor flat = a.reshape({D * D, 1});
    be.index_add_rows(flat, positions, Tensor::full({D, 1}, j, DType::f64, device));  // one add per diagonal entry
    if (cholesky_lower_in_place(a) != 0) return false;
    if (!cholesky_pivots_safe(diagonal_of(a, positions), max_jittered_diagonal(diag, j))) return false;
    s = a;
    return true;
  });

  Tensor ws = Tensor::empty({F, D}, DType::f64, device);
  multiply_lower_right(w, s, ws);  // A = W1 S
  GemmDesc gram_desc;
  gram_desc.m = D;
  gram_desc.n = D;
  gram_desc.k = F;
  gram_desc.trans_a = true;
  Tensor v = Tensor::empty({D, D}, DType::f64, device);
  be.gemm(gram_desc, ws, ws, v);  // A^T A
  Tensor lambda = Tensor::empty({D}, DType::f64, device);
  symmetric_eigen_in_place(v, lambda);  // row i of v: the eigenvector of lambda[i], ascending
  const std::vector<double> ev = lambda.to_vector<double>();

  WhitenedSvdResult res;
  const std::int64_t k = std::min(F, D);
  res.sigma.resize(static_cast<std::size_t>(k));
  for (std::int64_t l = 0; l < k; ++l)
    res.sigma[static_cast<std::size_t>(l)] = std::sqrt(std::max(ev[static_cast<std::size_t>(D - 1 - l)], 0.0));
  res.jitter = jitter.jitter;
  res.fallback = jitter.fallback;
  res.note = jitter.note;
  res.rank = whitened_svd_rank(res.sigma, options.tau, options.min_rank_frac, D);
  TruncationEnergy energy = truncation_energy(res.sigma, res.rank);

  Tensor m;
  if (options.random_subspace != nullptr && res.rank > 0) {
    // The control: the host path's random basis Q [D, r], W1 S Q Q^T.
    const Tensor q = to_tensor(random_subspace_basis(D, res.rank, *options.random_subspace), DType::f64).to(device);
    const Tensor p = product(ws, q, false);
    Tensor captured = Tensor::empty({1}, DType::f64, device);
    be.sum_squares({p}, captured);
    energy = subspace_energy(res.sigma, captured.item<double>());
    m = product(p, q, true);
  } else if (res.rank > 0) {
    const Tensor vr = v.rows(D - res.rank, D);  // V_r^T: the eigenvectors of the r largest eigenvalues
    m = product(product(ws, vr, true), vr, false);
  } else {
    m = Tensor::zeros({F, D}, DType::f64, device);
  }
  res.energy_kept = energy.energy_kept;
  res.dropped_sq = energy.dropped_sq;
  if (res.rank > 0) solve_lower_right_in_place(m, s);  // W1_r = M S^-1
  res.w1 = m.to(w1.dtype());
  return res;
}

}  // namespace upcycle::init
