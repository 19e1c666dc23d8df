// bench_moe: forward + backward time of an expert-parallel MoE layer (E experts, top-k, GELU,
// dropless) against a dense FFN (nn::Mlp) with the same ACTIVE parameters (d_ff_dense = k * d_ff)
// on the same tokens, measured in the same run. The project's target: moe / dense <= 1.3x.
//   bench_moe [--threads N] [--iters I] [--warmup W] [--experts E] [--top-k K] [--case T,D,F]...
//   launch/mpirun_local.sh 2 build/src/bench_moe          (EP over the world: P = world size)
// (`bench_moe --help` lists the options with their defaults.)
// Every rank holds T tokens of its own; each timed step starts after a barrier and its time is the
// max over ranks (the slowest rank sets the step time). Dense, MoE and the phased copy run
// interleaved in every iteration so that load from other processes hits them alike; the table
// shows median times, the median of the per-iteration ratios and min(moe) / min(dense). The breakdown re-runs the layer's dispatch sequence from its public pieces (router,
// plan_dispatch, gather_rows, all_to_all_v, experts, index_add_rows) with a timer per forward phase
// and one for the whole backward; its total is checked against the layer's own time.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/moe/dispatch.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/mlp.hpp"
#include "upcycle/ops/index.hpp"
#include "upcycle/ops/scale_rows.hpp"
#include "upcycle/ops/shape.hpp"

extern "C" void openblas_set_num_threads(int);

namespace {

using namespace upcycle;
using bench::Clock;
using bench::max_over_ranks;
using bench::median;
using bench::ones_like;
using bench::seconds_since;

Tensor index_tensor(const std::vector<std::int64_t>& v) {
  return Tensor::from_vector(v, {static_cast<std::int64_t>(v.size())}, Device::cpu);
}

// Phases of the breakdown (forward phases, then the whole backward).
enum Phase { router_plan, dispatch, experts_ffn, gather_back, combine, backward, num_phases };
const char* const kPhaseNames[num_phases] = {"router+plan", "dispatch", "experts", "return", "combine",
                                             "backward"};

// One forward + backward of `layer` with the layer's dispatch sequence spelled out (as in
// src/moe/moe_layer.cpp, dropless, no shared expert, no selection bias), timing each phase.
// `load` receives the rows this rank's experts processed.
std::vector<double> phased_step(moe::MoeLayer& layer, Communicator& comm, const Var& x, std::int64_t* load) {
  const auto& c = layer.config();
  const std::int64_t D = c.d_model, E = c.num_experts, k = c.top_k;
  const std::int64_t T = x.value().numel() / D;
  std::vector<double> t(num_phases, 0.0);
  layer.zero_grad();
  Var xv = x;
  xv.zero_grad();

  auto t0 = Clock::now();
  const Var x2 = reshape(x, {T, D});
  moe::Routing r = layer.router.forward(x2);
  const moe::DispatchPlan plan = moe::plan_dispatch(r.indices, E, 0);
  const Tensor& slot_tokens = plan.slot_tokens;
  t[router_plan] = seconds_since(t0);

  t0 = Clock::now();
  const Var rows = gather_rows(x2, slot_tokens);
  const int P = comm.size();
  Var back;
  if (P == 1) {
    t[dispatch] = seconds_since(t0);
    t0 = Clock::now();
    back = layer.experts.forward(rows, plan.kept_counts);
    t[experts_ffn] = seconds_since(t0);
    *load = rows.value().dim(0);
  } else {
    const std::int64_t L = layer.num_local_experts();
    Tensor send_ec = Tensor::from_vector(plan.kept_counts, {E}, Device::cpu);
    Tensor recv_ec = Tensor::empty({E}, DType::i64, Device::cpu);
    const std::vector<std::int64_t> ls(static_cast<std::size_t>(P), L);
    comm.all_to_all_v(send_ec, ls, recv_ec, ls);
    const moe::ExchangePlan xp = moe::plan_exchange(plan.kept_counts, P, comm.rank(), recv_ec.to_vector<std::int64_t>());
    const Var received = all_to_all_v(comm, rows, xp.send_counts, xp.recv_counts);
    const Var grouped = gather_rows(received, index_tensor(xp.to_expert_order));
    t[dispatch] = seconds_since(t0);

    t0 = Clock::now();
    const Var out = layer.experts.forward(grouped, xp.expert_rows);
    t[experts_ffn] = seconds_since(t0);
    *load = grouped.value().dim(0);

    t0 = Clock::now();
    const Var by_source = gather_rows(out, index_tensor(xp.to_source_order));
    back = all_to_all_v(comm, by_source, xp.recv_counts, xp.send_counts);
    t[gather_back] = seconds_since(t0);
  }

  t0 = Clock::now();
  const Var slot_gates = reshape(gather_rows(reshape(r.gates, {T * k, 1}), plan.slots), {plan.slots.numel()});
  const Var y = index_add_rows(T, slot_tokens, scale_rows(back, slot_gates));
  t[combine] = seconds_since(t0);

  t0 = Clock::now();
  y.backward(ones_like(y.value()));
  t[backward] = seconds_since(t0);
  return t;
}

struct Case {
  std::int64_t tokens, d_model, d_ff;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads(), iters = 10, warmup = 2;
  std::int64_t experts = 8, top_k = 2;
  std::vector<std::string> case_args = {"4096,256,512", "2048,512,1024", "1024,768,1536"};
  bench::Args args("bench_moe", "Forward+backward of an expert-parallel MoE layer against a dense FFN of the same "
                                "active parameters (EP over mpirun's world).");
  args.add("threads", threads, "CPU threads per rank")
      .add("iters", iters, "timed iterations")
      .add("warmup", warmup, "untimed iterations before them")
      .add("experts", experts, "experts E")
      .add("top-k", top_k, "experts per token k")
      .add("case", case_args, "T,D,F: tokens per rank, width, expert FFN width (repeatable)");
  args.parse(argc, argv);
  std::vector<Case> cases;
  for (const std::string& a : case_args) {
    Case c{};
    if (std::sscanf(a.c_str(), "%ld,%ld,%ld", &c.tokens, &c.d_model, &c.d_ff) != 3)
      args.fail("--case wants T,D,F, got '" + a + "'");
    cases.push_back(c);
  }
  MpiSession session(argc, argv);
  try {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);

    std::shared_ptr<Communicator> world = make_world_communicator();
    const int P = world->size(), rank = world->rank();
    const bool root = rank == 0;
    if (root)
      std::printf("bench_moe: E=%ld k=%ld gelu_tanh dropless, forward+backward, P=%d rank(s) (EP over the world), "
                  "%d thread(s)/rank, median of %d iterations (max over ranks), T tokens per rank\n",
                  experts, top_k, P, threads, iters);

    struct Row {
      Case c;
      double dense, moe, ratio, min_ratio, phased, imbalance;
      std::vector<double> phases;
    };
    std::vector<Row> rows;
    for (const Case& c : cases) {
      // Inputs differ per rank (their own tokens), weights are the same global set on every rank.
      auto x = std::make_shared<Var>(bench::randn({c.tokens, c.d_model}, 1000 + static_cast<std::uint64_t>(rank)), true);

      nn::MlpConfig dc;
      dc.d_model = c.d_model;
      dc.d_ff = top_k * c.d_ff;
      dc.activation = nn::MlpActivation::gelu_tanh;
      RngStream drng(1);
      nn::Mlp dense(dc, drng);
      moe::MoeConfig mc;
      mc.d_model = c.d_model;
      mc.d_ff = c.d_ff;
      mc.num_experts = experts;
      mc.top_k = top_k;
      mc.activation = nn::MlpActivation::gelu_tanh;
      mc.capacity_factor = 0.0;
      RngStream mrng(2);
      moe::MoeLayer layer(mc, world, mrng);

      // Interleaved: every iteration times dense, the MoE layer and the phased copy back to back
      // (a barrier before each, max over ranks), so load from other processes on a shared machine
      // hits all three alike; the ratio is taken per iteration.
      std::vector<double> t_dense, t_moe, ratio;
      std::vector<std::vector<double>> per_phase(num_phases + 1);
      std::int64_t load = 0, max_load = 0;
      for (int i = 0; i < warmup + iters; ++i) {
        world->barrier();
        auto t0 = Clock::now();
        {
          dense.zero_grad();
          x->zero_grad();
          Var y = dense.forward(*x);
          y.backward(ones_like(y.value()));
        }
        const double d = max_over_ranks(*world, {seconds_since(t0)})[0];
        world->barrier();
        t0 = Clock::now();
        {
          layer.zero_grad();
          x->zero_grad();
          Var y = layer.forward(*x);
          y.backward(ones_like(y.value()));
          layer.clear_routing();
        }
        const double m = max_over_ranks(*world, {seconds_since(t0)})[0];
        world->barrier();
        t0 = Clock::now();
        std::vector<double> t = phased_step(layer, *world, *x, &load);
        t.push_back(seconds_since(t0));
        t = max_over_ranks(*world, t);
        max_load = std::max(max_load, load);
        if (i < warmup) continue;
        t_dense.push_back(d);
        t_moe.push_back(m);
        ratio.push_back(m / d);
        for (int p = 0; p <= num_phases; ++p) per_phase[p].push_back(t[p]);
      }
      // Expert-parallel load balance: the busiest rank's expert rows over the mean (T k).
      Tensor lt = Tensor::from_vector(std::vector<double>{static_cast<double>(max_load)}, {1}, Device::cpu);
      world->all_reduce(lt, CommReduce::max);
      const double imbalance = lt.to_vector<double>()[0] / static_cast<double>(c.tokens * top_k);
      Row row{c, median(t_dense), median(t_moe), median(ratio),
              *std::min_element(t_moe.begin(), t_moe.end()) / *std::min_element(t_dense.begin(), t_dense.end()),
              0.0, imbalance, {}};
      for (int p = 0; p < num_phases; ++p) row.phases.push_back(median(per_phase[p]));
      row.phased = median(per_phase[num_phases]);
      rows.push_back(row);
    }

    if (root) {
      std::printf("\n%-22s %11s %11s %10s %10s %10s\n", "case (per rank)", "dense ms", "moe ms", "moe/dense",
                  "min-ratio", "max load");
      for (const Row& r : rows) {
        char name[64];
        std::snprintf(name, sizeof name, "T%ld D%ld F%ld", r.c.tokens, r.c.d_model, r.c.d_ff);
        std::printf("%-22s %11.2f %11.2f %9.2fx %9.2fx %9.2fx\n", name, r.dense * 1e3, r.moe * 1e3, r.ratio,
                    r.min_ratio, r.imbalance);
      }
      std::printf("\nMoE breakdown (ms, median over iterations of the max over ranks; forward phases, then the "
                  "whole backward)\n%-22s", "case (per rank)");
      for (int p = 0; p < num_phases; ++p) std::printf(" %11s", kPhaseNames[p]);
      std::printf(" %11s %11s\n", "total", "layer");
      for (const Row& r : rows) {
        char name[64];
        std::snprintf(name, sizeof name, "T%ld D%ld F%ld", r.c.tokens, r.c.d_model, r.c.d_ff);
        std::printf("%-22s", name);
        for (double s : r.phases) std::printf(" %11.2f", s * 1e3);
        std::printf(" %11.2f %11.2f\n", r.phased * 1e3, r.moe * 1e3);
      }
      std::printf("(dense d_ff = k * F: same active parameters; moe/dense = median of the per-iteration ratios, "
                  "min-ratio = min moe / min dense;\n max load = the busiest rank's expert rows / (T k), "
                  "1.00 = balanced)\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_moe: " << e.what() << "\n";
    session.abort_job(1);
    return 1;
  }
}
