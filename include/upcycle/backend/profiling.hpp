#pragma once
// Per-kernel profiler: a Backend decorator that times every kernel call and accumulates, by kernel
// name (gemm, softmax, layernorm_backward, ...), the number of calls and their total seconds.
//
// Off by default and free when off: nothing is wrapped, backend_for() returns the plain backend.
// Turned on
//   * by the environment: UPCYCLE_PROFILE=1 in any program linked with the library installs the
//     wrapper before main() and prints the table to stderr at exit; UPCYCLE_PROFILE=2 also keeps a
//     breakdown by detail (gemm by shape and transposes, unary / binary / reduce by op);
//   * or by the API: profile::enable(), then profile::print() / profile::table() on demand.
//
// Regions: profile::Region (RAII) names what the current thread is doing ("forward", or an
// autograd op's backward, see below); kernel time is then also attributed to the innermost region,
// and each region's own wall time is kept. Regions cost one branch when the profiler is off.
//
// Autograd hook: the engine can time each node's backward by op name with one line around the
// backward call in run_backward (src/autograd/engine.cpp):
//     profile::Region region(n->op.c_str(), profile::RegionKind::backward_op);
// which shows up in the table as "backward:<op>" (e.g. backward:linear).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "upcycle/core/dtype.hpp"

namespace upcycle::profile {

// One row of the profile: a kernel ("gemm"), a kernel detail ("gemm 6400x192x64 NT"), a region
// ("region:forward") or a kernel inside a region ("forward > gemm").
struct Entry {
  std::string name;
  std::int64_t calls = 0;
  double seconds = 0.0;
};

enum class RegionKind : std::uint8_t { plain, backward_op };

// Installs the timing wrapper around the backend of `device` (idempotent) and starts counting.
// detail = true also keeps the per-shape / per-op breakdown (a string key per call: slower).
void enable(Device device = Device::cpu, bool detail = false);
// Puts the plain backend back (the counts are kept until reset()).
void disable(Device device = Device::cpu);
bool enabled();
// Zeroes every count (kernels, details, regions).
void reset();

// Kernels sorted by total time (descending).
std::vector<Entry> kernels();
// Details (only with detail = true), regions and per-region kernels, each sorted by time.
std::vector<Entry> details();
std::vector<Entry> regions();
std::vector<Entry> region_kernels();

// The sorted table (kernels, then regions, then details) as text. `top` limits each section
// (0 = all). `wall_seconds` > 0 adds each row's share of that wall time.
std::string table(std::size_t top = 0, double wall_seconds = 0.0);
void print(std::FILE* out = stderr, std::size_t top = 0, double wall_seconds = 0.0);

// Reads UPCYCLE_PROFILE: "1" enables, "2" enables with details; anything else does nothing.
// When it enabled and print_at_exit, the table is printed to stderr at exit. Returns enabled().
// (Runs automatically before main() in programs linked with the library.)
bool enable_from_env(bool print_at_exit = true);

namespace detail {
extern bool g_regions_on;  // true while the profiler is enabled
void push_region(const char* name, RegionKind kind);
void pop_region();
}  // namespace detail

class Region {
 public:
  explicit Region(const char* name, RegionKind kind = RegionKind::plain) : active_(detail::g_regions_on) {
    if (active_) detail::push_region(name, kind);
  }
  ~Region() {
    if (active_) detail::pop_region();
  }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

 private:
  bool active_;
};

}  // namespace upcycle::profile
