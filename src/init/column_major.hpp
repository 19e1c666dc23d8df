#pragma once
// How row-major f64 matrices meet the column-major libraries (LAPACKE / CBLAS with
// LAPACK_COL_MAJOR on the host, cuSOLVER / cuBLAS on a GPU), for device_linalg.hpp. The buffer of
// a row-major [r, c] matrix M is the column-major [c, r] matrix M^T with leading dimension c, so:
//  - the lower triangle of a row-major square matrix is the upper triangle of the column-major
//    one: a symmetric matrix given by its lower triangle is passed with uplo = upper;
//  - potrf(upper) leaves U with U^T U = A^T = A in the column-major reading, which read row-major
//    is U^T: the lower factor L with L L^T = A, where the row-major lower triangle was;
//  - syevd leaves the eigenvectors in the columns of the column-major reading: the rows of the
//    row-major one;
//  - B L and B L^-1 for B [m, n] row-major are, transposed, L^T B^T and L^-T B^T: the left
//    product with the upper-triangular column-major reading of L's buffer, applied to the
//    [n, m] column-major reading of B's buffer (leading dimension n), without a transpose.
#include <climits>
#include <cstdint>

#include "upcycle/core/error.hpp"

namespace upcycle::init::column_major {

inline int as_int(std::int64_t v, const char* routine) {
  UPCYCLE_CHECK(v >= 0 && v <= INT_MAX, routine, ": dimension ", v, " does not fit the library's 32-bit int");
  return static_cast<int>(v);
}

// A square [n, n] operand: order and leading dimension.
struct Square {
  int n, lda;
};
inline Square square(std::int64_t n, const char* routine) { return {as_int(n, routine), as_int(n, routine)}; }

// The left, upper, non-transposed triangular call (trmm / trsm) that computes B L or B L^-1 for
// B [rows, cols] row-major and L [cols, cols]: the column-major B^T is [m = cols, n = rows].
struct RightLowerTriangular {
  int m, n, lda, ldb;
};
inline RightLowerTriangular right_lower_triangular(std::int64_t rows, std::int64_t cols, const char* routine) {
  const int c = as_int(cols, routine);
  return {c, as_int(rows, routine), c, c};
}

}  // namespace upcycle::init::column_major
