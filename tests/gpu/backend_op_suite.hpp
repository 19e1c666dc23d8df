#pragma once
// The backend op suite (after ggml's test-backend-ops): every kernel of the Backend interface
// (include/upcycle/backend/backend.hpp) run on the same seeded inputs by a reference backend and by
// the backend under test, outputs compared element by element (tests/support/backend_compare.hpp
// for the rule and the tolerance tiers; each kernel's cases in backend_op_suite.cpp say which tier
// applies and why).
//
// How a case runs. Its inputs are made on the host (seeded), then for each backend: every input
// and every output's initial value is copied to that backend's device (always a fresh copy, so
// in-place kernels never share storage between the two runs), the kernel is called on that
// backend, the backend is synchronised and the outputs are copied back. Outputs the kernel must
// overwrite start as a sentinel (NaN / -777) on both sides, so an element a kernel forgets to write
// fails; in/out tensors (axpy's y, gemm's C with beta != 0, ...) start from the same data. Every
// input a kernel reads that another kernel produces (mean / rstd for layernorm_backward, lse for
// cross_entropy_backward, y for softmax_backward) is computed by the CPU backend on the host and
// copied, so each kernel is tested alone and a broken kernel is reported under its own name only.
// A second pass runs error cases (an index out of range): both backends must throw, naming the
// kernel; it runs after every other case so that a device fault it may cause cannot hide other
// results.
//
// The suite never calls gtest macros: it returns the failures, so a gtest program, a benchmark or a
// self-test can use it (tests/gpu/test_backend_ops.cpp, tests/unit/test_backend_op_suite_selftest.cpp).
// It allocates with Tensor::empty(..., backend.device()), so both backends may be the CPU one
// (or a decorator of it) in a CPU-only self-test.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "upcycle/backend/backend.hpp"

namespace upcycle::testing {

struct OpFailure {
  std::string kernel;  // Backend method name ("softmax")
  std::string dtype;   // "f32", "f64", "i32->f64", "mixed", ...
  std::string shape;   // the case's shapes ("[3, 4097]", "m 33 n 17 k 65 batch 3")
  std::string params;  // the other arguments ("alpha 0.5 beta 2", "capacity 3")
  std::string output;  // which output differs ("y", "idx"); empty for an exception
  std::string detail;  // the worst element (index, got, ref, bound) or the exception's message
  std::string str() const;
};

struct OpSuiteStats {
  std::int64_t cases = 0;                        // cases run (error cases included)
  std::map<std::string, std::int64_t> per_kernel;  // cases run per kernel
};

// Names of the kernels the suite covers, in the order it runs them (one entry per Backend kernel).
std::vector<std::string> backend_op_suite_kernels();

// Whether `filter` (the syntax below) selects `kernel`.
bool op_suite_selects(const std::string& filter, const std::string& kernel);

// Which cases run: the comparisons, the error cases, or both (comparisons first).
enum class OpSuitePass { all, compare, errors };

// Runs every case whose kernel the filter selects and returns the failures (empty = all passed).
// filter: "" selects every kernel; otherwise a comma-separated list of kernel names, each matched
// exactly, or as a prefix when it ends with '*' ("softmax" is softmax alone, "softmax*" also
// softmax_backward). An unknown name selects nothing (the caller can check stats->cases).
std::vector<OpFailure> run_backend_op_suite(Backend& reference, Backend& under_test, const std::string& filter = "",
                                            OpSuiteStats* stats = nullptr, OpSuitePass pass = OpSuitePass::all);

}  // namespace upcycle::testing
