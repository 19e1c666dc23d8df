#pragma once
// The few-shot linear probe of the eval stage (docs/methods.md section 6): a closed-form ridge
// classifier on frozen, L2-normalised features, fitted to one-hot targets. Pure host math in
// double (init/linalg.hpp: Cholesky through LAPACKE_dpotrf, triangular solves through cblas_dtrsm).
//
// Fit, for n support examples x_i [D] with labels y_i in [0, C):
//   z_i = x_i / ||x_i||                                  (a zero row stays zero)
//   m   = mean_i z_i,  Z = rows z_i - m                  (centred features, [n, D])
//   Y   = one-hot rows of y_i,  ybar = mean_i Y_i,  Yc = Y - ybar       ([n, C])
//   W   = argmin ||Z W - Yc||^2 + ridge ||W||^2
//       = (Z^T Z + ridge I_D)^{-1} Z^T Yc                (primal: a D x D system)
//       = Z^T (Z Z^T + ridge I_n)^{-1} Yc                (dual: an n x n system; the same W)
//   score(x) = (x / ||x|| - m) W + ybar,   class = argmax (ties: the lowest class)
// Centring the features and the targets by their support means is ridge regression with an
// unpenalised intercept: the bias ybar - m W is fitted exactly instead of being shrunk towards 0,
// so the penalty acts on the directions only. Both systems are symmetric positive definite for
// ridge > 0; the automatic choice solves the smaller one.
#include <cstdint>
#include <vector>

#include "upcycle/init/linalg.hpp"

namespace upcycle {

enum class RidgeSolve { automatic, primal, dual };

struct RidgeClassifier {
  init::Matrix weights;       // W [D, C]
  std::vector<double> center;  // m [D]
  std::vector<double> bias;    // ybar [C]
  bool used_dual = false;      // which system was solved

  // Scores [N, C] and predicted classes [N] of raw (un-normalised) features [N, D].
  init::Matrix scores(const init::Matrix& features) const;
  std::vector<std::int64_t> predict(const init::Matrix& features) const;
};

// Rows divided by their Euclidean norm (zero rows stay zero).
init::Matrix l2_normalize_rows(init::Matrix m);

// Fits the classifier above. features [n, D] (n >= 1), labels [n] in [0, num_classes), ridge > 0.
RidgeClassifier fit_ridge_classifier(const init::Matrix& features, const std::vector<std::int64_t>& labels,
                                     std::int64_t num_classes, double ridge, RidgeSolve solve = RidgeSolve::automatic);

// Share of predictions equal to the labels (sizes must match; NaN for no examples).
double accuracy(const std::vector<std::int64_t>& predicted, const std::vector<std::int64_t>& labels);

// The support set of one few-shot draw: k examples of every class c in [0, num_classes), as
// indices into `labels` (ascending). Each example i gets the 64-bit Philox key
// u_i = Philox4x32(key(seed, k, draw), i) and class c takes its k examples of smallest u_i (ties:
// lower index), a uniform draw without replacement that depends only on (seed, k, draw, labels):
// the same for every rank count, and the same images for the dense and the MoE model. Throws
// UsageError when a class has fewer than k examples.
std::vector<std::int64_t> draw_few_shot(const std::vector<std::int64_t>& labels, std::int64_t num_classes,
                                        std::int64_t k, std::uint64_t seed, std::int64_t draw);

// Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value).
struct MeanStd {
  double mean = 0.0, std = 0.0;
};
MeanStd mean_and_sample_std(const std::vector<double>& values);

}  // namespace upcycle
