#pragma once
// The cuda side of device_linalg.hpp (device_linalg_cuda.cpp, built with the CUDA backend): raw
// device pointers and the column-major arguments of column_major.hpp; everything on the CUDA
// backend's compute stream.
#include "column_major.hpp"

namespace upcycle::init::cuda_linalg {

// potrf(upper) of the column-major [n, n] at `a`; returns its info (>= 0; < 0 throws).
int potrf_upper(double* a, const column_major::Square& s);
// c = op * b with the upper-triangular `l` on the left (trmm, out of place).
void trmm_left_upper(const double* l, const double* b, double* c, const column_major::RightLowerTriangular& t);
// b := l^-1 b with the upper-triangular `l` on the left (trsm, in place).
void trsm_left_upper(const double* l, double* b, const column_major::RightLowerTriangular& t);
// syevd(vectors, upper) of the column-major [n, n] at `a`: eigenvalues ascending into `w`.
void syevd_upper(double* a, double* w, const column_major::Square& s);

}  // namespace upcycle::init::cuda_linalg
