#pragma once
// Dense float64 linear algebra on a tensor's device, for the device path of the whitened SVD
// (whitened_svd.hpp): cuSOLVER and cuBLAS on the CUDA backend's compute stream for cuda tensors,
// LAPACKE and CBLAS for host tensors. Both call their libraries with the same column-major
// arguments (src/init/column_major.hpp), so the CPU tests, which run the host side, check the
// layout the GPU side uses.
//
// Matrices are contiguous row-major f64 tensors, all arguments of a call on one device. Calls that
// return a library status (potrf's and syevd's info) wait for the device to read it; the others
// are enqueued like Backend kernels. Every library error throws upcycle::Error naming the routine.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle::init {

// The lower Cholesky factor, in place: `a` [n, n] holds the symmetric A in its lower triangle (the
// strict upper triangle is not read). On success (0) its lower triangle holds L with L L^T = A
// and its strict upper triangle is left as it was. Returns k > 0 when the leading minor of order k
// is not positive definite (`a` is then unspecified).
int cholesky_lower_in_place(Tensor& a);

// out = b L for b [m, n] and L [n, n], reading only the lower triangle of `l` (trmm). out [m, n]
// must not overlap b.
void multiply_lower_right(const Tensor& b, const Tensor& l, Tensor& out);

// b := b L^-1, the X of X L = b, in place, reading only the lower triangle of `l` (trsm). L's
// diagonal must be non-zero (a Cholesky factor whose pivots were checked).
void solve_lower_right_in_place(Tensor& b, const Tensor& l);

// The eigen-decomposition of the symmetric matrix whose lower triangle `a` [n, n] holds (syevd,
// divide and conquer): the eigenvalues ascending into `eigenvalues` [n], and row i of `a` becomes
// the unit eigenvector of eigenvalue i. Throws when the algorithm does not converge.
void symmetric_eigen_in_place(Tensor& a, Tensor& eigenvalues);

}  // namespace upcycle::init
