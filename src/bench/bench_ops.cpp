// bench_ops: forward + backward time of linear layers, of the grouped expert GEMMs of an MoE layer
// and of pre-LN transformer blocks on one backend and, in the same invocation, of the same shapes in
// PyTorch (run by src/bench/bench_ops_torch.py on the same device), with the ratio
// torch_time / upcycle_time (> 1: upcycle is faster). `bench_ops --help` lists the options.
// On the GPU (--device cuda) the linear and grouped cases also time their GEMMs issued alone
// through the backend (one cublasGemmEx each): "vs cuBLAS" = cuBLAS-alone time / op time, so the
// op's own overhead shows (aim: >= 80%).
// Debian's PyTorch uses the pthread OpenBLAS, whose own pool ignores torch.set_num_threads and
// fights the intra-op pool: on the CPU run with OPENBLAS_NUM_THREADS=1 for PyTorch's faster setting.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/nn/linear.hpp"
#include "upcycle/nn/transformer_block.hpp"
#include "upcycle/ops/grouped_linear.hpp"

namespace {

using namespace upcycle;
using bench::randn;

struct Case {
  std::string name;
  JsonObject json;  // the case as the PyTorch peer reads it
  // Builds the operands on the CPU, moves them to the device, returns one fwd+bwd iteration.
  std::function<std::function<void()>(Device)> make;
  // A (grouped) linear layer: its rows per group and its widths, for its GEMMs alone.
  std::vector<std::int64_t> groups;
  std::int64_t in = 0, out = 0;
};

std::function<void()> fwd_bwd(const std::function<Var()>& forward, const std::vector<nn::Module*>& modules,
                              const std::vector<std::shared_ptr<Var>>& inputs) {
  return [=] {
    for (nn::Module* m : modules) m->zero_grad();
    for (const auto& x : inputs) x->zero_grad();
    Var y = forward();
    y.backward(bench::ones_like(y.value()));
  };
}

Case linear_case(std::int64_t rows, std::int64_t in, std::int64_t out) {
  const std::string name = "linear " + std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out);
  JsonObject json;
  json.add("name", name).add("kind", "linear").add("rows", rows).add("in", in).add("out", out);
  return {name, json, [=](Device device) {
            RngStream rng(1);
            auto layer = std::make_shared<nn::Linear>(in, out, rng, true, 0.02);
            layer->to(device);
            auto x = std::make_shared<Var>(randn({rows, in}, 2).to(device), true);
            return fwd_bwd([layer, x] { return layer->forward(*x); }, {layer.get()}, {x});
          },
          {rows}, in, out};
}

// The experts' first (or second) linear map of an MoE layer: `rows` routed rows split evenly over
// `experts` groups, one grouped_linear.
Case grouped_case(std::int64_t experts, std::int64_t rows, std::int64_t in, std::int64_t out) {
  const std::string name = "experts E" + std::to_string(experts) + " " + std::to_string(rows) + "x" +
                           std::to_string(in) + "->" + std::to_string(out);
  const std::vector<std::int64_t> groups(static_cast<std::size_t>(experts), rows / experts);
  JsonObject json;
  json.add("name", name).add("kind", "grouped").add("groups", groups).add("in", in).add("out", out);
  return {name, json, [=](Device device) {
            auto w = std::make_shared<Var>(randn({experts, out, in}, 1, 0.02).to(device), true);
            auto b = std::make_shared<Var>(Tensor::zeros({experts, out}, DType::f32, device), true);
            auto x = std::make_shared<Var>(randn({rows, in}, 2).to(device), true);
            return fwd_bwd([=] { return grouped_linear(*x, *w, *b, groups); }, {}, {w, b, x});
          },
          groups, in, out};
}

Case block_case(std::int64_t batch, std::int64_t t, std::int64_t d, std::int64_t heads, std::int64_t ffn, bool causal) {
  const std::string name = "block B" + std::to_string(batch) + " T" + std::to_string(t) + " D" + std::to_string(d) +
                           " H" + std::to_string(heads) + " F" + std::to_string(ffn) + (causal ? " causal" : "");
  JsonObject json;
  json.add("name", name).add("kind", "block").add("batch", batch).add("t", t).add("d", d).add("heads", heads);
  json.add("ffn", ffn).add_raw("causal", causal ? "true" : "false");
  return {name, json, [=](Device device) {
            RngStream rng(1);
            nn::TransformerBlockConfig c;
            c.d_model = d;
            c.n_heads = heads;
            c.d_ff = ffn;
            c.causal = causal;
            auto block = std::make_shared<nn::TransformerBlock>(c, rng);
            block->to(device);
            auto x = std::make_shared<Var>(randn({batch, t, d}, 2).to(device), true);
            return fwd_bwd([block, x] { return block->forward(*x); }, {block.get()}, {x});
          },
          {}, 0, 0};
}

// The GEMMs of a (grouped) linear layer's forward and backward (y = x w^T, gx = gy w,
// gw = gy^T x per group), each issued alone to the backend: the op's time without the bias,
// allocation and autograd work around them.
std::function<void()> gemms_alone(const Case& c, Device device) {
  const std::int64_t n = std::accumulate(c.groups.begin(), c.groups.end(), std::int64_t{0});
  const auto G = static_cast<std::int64_t>(c.groups.size());
  const Tensor x = randn({n, c.in}, 3).to(device), w = randn({G, c.out, c.in}, 4, 0.02).to(device);
  const Tensor gy = randn({n, c.out}, 5).to(device);
  const Tensor y = Tensor::empty({n, c.out}, DType::f32, device), gx = Tensor::empty({n, c.in}, DType::f32, device);
  const Tensor gw = Tensor::empty({G, c.out, c.in}, DType::f32, device);
  return [=] {
    Backend& be = backend_for(device);
    std::int64_t r = 0;
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t m = c.groups[static_cast<std::size_t>(g)];
      const Tensor wg = w.rows(g, g + 1).reshape({c.out, c.in}), xg = x.rows(r, r + m), gyg = gy.rows(r, r + m);
      Tensor yg = y.rows(r, r + m), gxg = gx.rows(r, r + m), gwg = gw.rows(g, g + 1).reshape({c.out, c.in});
      GemmDesc f;
      f.m = m, f.n = c.out, f.k = c.in, f.trans_b = true;
      be.gemm(f, xg, wg, yg);
      GemmDesc dx;
      dx.m = m, dx.n = c.in, dx.k = c.out;
      be.gemm(dx, gyg, wg, gxg);
      GemmDesc dw;
      dw.m = c.out, dw.n = c.in, dw.k = m, dw.trans_a = true;
      be.gemm(dw, gyg, xg, gwg);
      r += m;
    }
  };
}

// The PyTorch peer on every case; name -> median seconds (empty when it failed).
std::map<std::string, double> run_torch(const std::string& python, const std::string& script,
                                        const std::vector<Case>& cases, int threads, int iters, Device device,
                                        bool tf32) {
  std::vector<std::string> cmd = {python, script, "--threads", std::to_string(threads), "--iters",
                                  std::to_string(iters), "--device", bench::device_name(device)};
  if (tf32) cmd.push_back("--tf32");
  for (const auto& c : cases) cmd.push_back(c.json.str());
  std::map<std::string, double> out;
  const auto lines = bench::run_peer(cmd);
  if (!lines) {
    std::fprintf(stderr, "bench_ops: the PyTorch peer failed (is python3-torch installed?)\n");
    return out;
  }
  for (const auto& s : *lines) {
    const double m = bench::json_number(s, "median_s");
    if (!std::isnan(m)) out[bench::json_string(s, "name")] = m;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads(), iters = 10;
  std::string python = "/usr/bin/python3", script = bench::peer_script("bench_ops_torch.py"), json_path;
  std::string device_name = "cpu";
  bool no_torch = false, tf32 = false;
  bench::Args args("bench_ops", "Forward+backward time of linear layers, grouped expert GEMMs and transformer "
                                "blocks, against PyTorch on the same device.");
  args.add("threads", threads, "CPU threads (upcycle and PyTorch)")
      .add("iters", iters, "timed iterations per case (after 2 warm-up ones)")
      .add("device", device_name, "cpu, cuda or auto")
      .flag("tf32", tf32, "let GEMMs round f32 inputs to TF32 on the GPU (both sides)")
      .flag("no-torch", no_torch, "time upcycle only")
      .add("python", python, "the Python that runs the PyTorch peer")
      .add("torch-script", script, "the PyTorch peer")
      .add("json", json_path, "also write one JSON line per case to this file", "none");
  args.parse(argc, argv);
  if (iters < 1) args.fail("--iters must be at least 1");
  const Device device = bench::choose(args, device_name, tf32);
  threads = configure_cpu_threads(threads);

  const std::vector<Case> cases = {
      linear_case(2048, 256, 1024),  linear_case(2048, 1024, 256), linear_case(1024, 768, 3072),
      linear_case(8192, 768, 3072),  // a ViT-B MLP's first layer on 8192 tokens
      grouped_case(8, 8192, 768, 3072), grouped_case(8, 8192, 3072, 768),  // 4096 tokens, top-2 of 8 experts
      block_case(16, 50, 128, 4, 512, false),  // a small ViT on 28x28 images, 4x4 patches
      block_case(8, 128, 256, 8, 1024, true),  // a small byte-level GPT
      block_case(4, 197, 384, 6, 1536, false),  // ViT-S/16 at 224x224
  };
  const bool gpu = device == Device::cuda;
  std::printf("bench_ops: forward+backward, median of %d iterations, %d threads%s\n", iters, threads,
              gpu ? (tf32 ? ", on cuda, TF32 on" : ", on cuda, TF32 off") : "");
  auto timed = [&](const std::function<void()>& f) {
    return bench::median(bench::time_calls([&](int) { f(); }, 2, iters, device));
  };
  std::map<std::string, double> ours, alone;
  for (const auto& c : cases) {
    ours[c.name] = timed(c.make(device));
    if (gpu && !c.groups.empty()) alone[c.name] = timed(gemms_alone(c, device));
  }
  const auto theirs = no_torch ? std::map<std::string, double>() : run_torch(python, script, cases, threads, iters, device, tf32);
  MetricsWriter json = bench::json_lines(json_path);
  std::printf("%-40s %12s %12s %10s%s\n", "case", "upcycle ms", "torch ms", "speedup",
              gpu ? "    cublas ms  vs cuBLAS" : "");
  for (const auto& c : cases) {
    const double u = ours[c.name] * 1e3;
    const auto it = theirs.find(c.name);
    const double t = it == theirs.end() ? 0.0 : it->second * 1e3;
    std::printf("%-40s %12.3f %12.3f %9.2fx", c.name.c_str(), u, t, t > 0 ? t / u : 0.0);
    JsonObject line;
    line.add("case", c.name).add("upcycle_ms", u).add("torch_ms", t).add("threads", threads);
    line.add("device", bench::device_name(device));
    if (alone.count(c.name)) {
      const double a = alone[c.name] * 1e3;
      std::printf(" %12.3f %9.0f%%", a, 100.0 * a / u);
      line.add("cublas_ms", a);
    }
    std::printf("\n");
    json.write(line);
  }
  return 0;
}
