// The table of every config key (methods and losses: docs/methods.md; run directory: docs/training.md;
// parallel layout: docs/architecture.md); add a key by adding a row, nothing else.
#include "upcycle/io/config_schema.hpp"

#include <map>

namespace upcycle {

namespace {
using T = ConfigType;
using namespace config_range;
}  // namespace

const std::vector<ConfigSection>& config_sections() {
  static const std::vector<ConfigSection> sections = {
      {"run", "what to run and where its outputs go"},
      {"model", "the dense transformer: ViT for images, GPT for bytes"},
      {"moe", "which blocks become Mixture-of-Experts, the router and its losses"},
      {"upcycle", "dense -> MoE initialisation (docs/methods.md, docs/upcycling.md)"},
      {"train", "optimiser, learning-rate schedule, evaluation cadence"},
      {"data", "dataset and validation split"},
      {"parallel", "expert parallelism and communication"},
      {"eesd", "Expert-Ensemble Self-Distillation from an EMA teacher (docs/methods.md)"},
      {"eval", "the eval stage: test accuracy, few-shot probes, expert specialisation (docs/methods.md)"},
      {"dpsl", "Dirichlet-Prior Shaping Loss on the router (docs/methods.md)"},
      {"checkpoint", "HDF5 checkpoints and resume"},
      {"log", "console output and metrics.jsonl"},
  };
  return sections;
}

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> keys = {
      // section, name, type, default, range, allowed, help[, empty]
      {"run", "stages", T::StringList, "dense", kAnyValue, "dense|upcycle|moe|eval",
       "Stages to run in order; each stage reads the previous one's checkpoint from run.dir.", ConfigEmpty::Forbidden},
      {"run", "dir", T::String, "runs/default", kAnyValue, nullptr,
       "Run directory: config.ini, metrics.jsonl, checkpoints/, report.json, plots/. Empty = write no "
       "files (library use and tests; upcycle_train needs one)."},
      {"run", "overwrite", T::Bool, "false", kAnyValue, nullptr,
       "Allow a fresh run into a run.dir that holds another config's run or checkpoints; they are replaced."},
      {"run", "seed", T::Int, "1234", at_least(0), nullptr,
       "Seed of every random stream (init, dropout, data order, k-means++ sample)."},
      {"run", "device", T::Enum, "auto", kAnyValue, "auto|cpu|cuda",
       "Compute backend; auto = cuda when built with CUDA and a GPU is visible, else cpu (the log says "
       "why); cuda without a usable GPU is an error that names the CUDA error."},
      {"run", "allow_tf32", T::Bool, "false", kAnyValue, nullptr,
       "On cuda, let f32 matrix products round their inputs to TF32 on tensor cores (faster, about 1e-3 "
       "relative error); off, the GPU matches the CPU backend to f32 rounding."},
      {"run", "threads", T::Int, "0", at_least(0), nullptr,
       "OpenMP threads per rank; 0 = OpenMP's default (OMP_NUM_THREADS)."},

      {"model", "kind", T::Enum, "vit", kAnyValue, "vit|gpt", "ViT over image patches or GPT over bytes."},
      {"model", "width", T::Int, "128", at_least(1), nullptr, "Model width d (residual stream size)."},
      {"model", "depth", T::Int, "6", at_least(1), nullptr, "Number of transformer blocks."},
      {"model", "heads", T::Int, "4", at_least(1), nullptr, "Attention heads; must divide model.width."},
      {"model", "ffn_width", T::Int, "512", at_least(1), nullptr, "FFN hidden size d_ff (also each expert's)."},
      {"model", "ffn_activation", T::Enum, "gelu", kAnyValue, "gelu|gelu_erf|swiglu",
       "FFN activation: gelu (tanh approximation), gelu_erf (exact), swiglu (gated, adds W3)."},
      {"model", "dropout", T::Float, "0", right_open(0, 1), nullptr, "Dropout probability (attention and FFN)."},
      {"model", "init_std", T::Float, "0.02", above(0), nullptr, "Std of the normal weight initialisation."},
      {"model", "ln_eps", T::Float, "1e-5", above(0), nullptr, "LayerNorm epsilon."},
      {"model", "image_size", T::Int, "28", at_least(1), nullptr, "ViT: input image side in pixels."},
      {"model", "channels", T::Int, "1", at_least(1), nullptr, "ViT: input image channels."},
      {"model", "patch_size", T::Int, "4", at_least(1), nullptr, "ViT: patch side in pixels; divides image_size."},
      {"model", "num_classes", T::Int, "10", at_least(1), nullptr, "ViT: classifier outputs."},
      {"model", "pool", T::Enum, "cls", kAnyValue, "cls|mean", "ViT: classify from the CLS token or the mean token."},
      {"model", "context", T::Int, "256", at_least(1), nullptr, "GPT: context length in tokens."},
      {"model", "vocab_size", T::Int, "256", at_least(1), nullptr, "GPT: vocabulary size (256 for bytes)."},
      {"model", "tie_embeddings", T::Bool, "true", kAnyValue, nullptr,
       "GPT: share the token embedding with the output projection."},

      {"moe", "blocks", T::Enum, "every_other", kAnyValue, "every_other|all|list",
       "Blocks that become MoE: every_other (1, 3, 5, ...), all, or list (moe.block_list)."},
      {"moe", "block_list", T::IntList, "", at_least(0), nullptr,
       "0-based block indices that become MoE when moe.blocks = list."},
      {"moe", "num_experts", T::Int, "8", at_least(1), nullptr, "Experts E per MoE block."},
      {"moe", "expert_ffn_width", T::Int, "0", at_least(0), nullptr,
       "Hidden units per expert; 0 = model.ffn_width, or model.ffn_width / upcycle.granularity with "
       "upcycle.method = granular (fine-grained experts)."},
      {"moe", "init", T::String, "auto", kAnyValue, nullptr,
       "Where stage moe starts when checkpoint.resume is empty: auto (the upcycled checkpoint when run.stages "
       "has upcycle before moe, else random), random, upcycled (run.dir/checkpoints/upcycle/upcycled.h5), or "
       "the path of an MoE checkpoint (weights only; optimiser and step start fresh)."},
      {"moe", "top_k", T::Int, "2", at_least(1), nullptr, "Experts k each token is routed to."},
      {"moe", "renormalize", T::Bool, "true", kAnyValue, nullptr,
       "Renormalise the top-k gates to sum to 1 (sparse upcycling then equals the dense model)."},
      {"moe", "capacity_factor", T::Float, "0", at_least(0), nullptr,
       "Expert capacity as a multiple of T*k/E; 0 = dropless."},
      {"moe", "shared_expert", T::Bool, "false", kAnyValue, nullptr, "Add an always-active shared expert."},
      {"moe", "lb_weight", T::Float, "0.01", at_least(0), nullptr, "Switch load-balancing loss weight; 0 = off."},
      {"moe", "z_weight", T::Float, "0.001", at_least(0), nullptr, "Router z-loss weight; 0 = off."},
      {"moe", "aux_free_rate", T::Float, "0", at_least(0), nullptr,
       "Auxiliary-loss-free bias update rate u; 0 = off (0.001 is the usual value when on)."},

      {"upcycle", "method", T::Enum, "cluster", kAnyValue, "sparse|drop|drop_svd|granular|cluster",
       "How experts and router are initialised from the dense FFN."},
      {"upcycle", "dense_checkpoint", T::String, "", kAnyValue, nullptr,
       "Dense checkpoint to upcycle; empty = the dense stage's final checkpoint in run.dir."},
      {"upcycle", "calib_tokens", T::Int, "65536", at_least(1), nullptr,
       "cluster: calibration tokens, sharded over all ranks."},
      {"upcycle", "calib_token_frac", T::Float, "0.25", left_open(0, 1), nullptr,
       "cluster: share of each batch's tokens kept for calibration (more samples for the same memory)."},
      {"upcycle", "kmeans_iters", T::Int, "25", at_least(1), nullptr,
       "cluster: most Lloyd iterations (stops early when no assignment changes)."},
      {"upcycle", "kmeans_init_sample", T::Int, "8192", at_least(1), nullptr,
       "cluster: tokens sampled (from run.seed) for the k-means++ initialisation."},
      {"upcycle", "tau", T::Float, "0.9", left_open(0, 1), nullptr,
       "cluster: spectral energy each expert keeps of the whitened up-projection."},
      {"upcycle", "min_rank_frac", T::Float, "0.5", closed(0, 1), nullptr,
       "cluster: rank floor as a fraction of model.width (tau alone can pick rank 1-2)."},
      {"upcycle", "subspace", T::Enum, "svd", kAnyValue, "svd|random",
       "cluster: the rank-r subspace each expert keeps: svd (the top whitened singular directions) or random "
       "(a random orthonormal subspace of the same rank; a control for the SVD's choice)."},
      {"upcycle", "chol_eps", T::Float, "1e-5", at_least(0), nullptr,
       "cluster: Cholesky jitter, relative to the mean diagonal of the second moment."},
      {"upcycle", "drop_ratio", T::Float, "0.5", closed(0, 1), nullptr,
       "drop: fraction r of hidden units re-drawn per expert."},
      {"upcycle", "svd_keep_frac", T::Float, "0.75", left_open(0, 1), nullptr,
       "drop_svd: fraction of the spectrum whose singular vectors are kept."},
      {"upcycle", "granularity", T::Int, "2", at_least(1), nullptr,
       "granular: G shards of the FFN; must divide moe.num_experts and model.ffn_width."},
      {"upcycle", "granular_scale", T::Bool, "false", kAnyValue, nullptr,
       "granular: scale expert weights (off by default: the DPSL paper found it hurt)."},
      {"upcycle", "noise_std", T::Float, "0", at_least(0), nullptr, "sparse: std of noise added to each copy."},
      {"upcycle", "router_std", T::Float, "0.02", at_least(0), nullptr,
       "Std of the random router (every method but cluster)."},
      {"upcycle", "router_scale", T::Float, "1", above(0), nullptr,
       "cluster: scale of the router rows (the normalised centroids)."},

      {"train", "steps", T::Int, "1000", at_least(1), nullptr, "Optimiser steps per training stage."},
      {"train", "moe_steps", T::Int, "0", at_least(0), nullptr,
       "Optimiser steps of stage moe; 0 = train.steps (a dense,upcycle,moe chain can train the stages for different lengths)."},
      {"train", "moe_lr", T::Float, "0", at_least(0), nullptr,
       "Peak learning rate of stage moe; 0 = train.lr (an upcycled model usually continues with a lower one)."},
      {"train", "batch_size", T::Int, "128", at_least(1), nullptr,
       "Global batch (samples) per optimiser step, split over all ranks."},
      {"train", "micro_batches", T::Int, "1", at_least(1), nullptr,
       "Gradient-accumulation micro-batches per step; divides train.batch_size."},
      {"train", "lr", T::Float, "1e-3", above(0), nullptr, "Peak learning rate."},
      {"train", "min_lr", T::Float, "1e-5", at_least(0), nullptr, "Final learning rate of the decay."},
      {"train", "lr_schedule", T::Enum, "cosine", kAnyValue, "cosine|linear|constant",
       "Decay from train.lr to train.min_lr after the warm-up."},
      {"train", "warmup_steps", T::Int, "100", at_least(0), nullptr, "Steps of linear warm-up to train.lr."},
      {"train", "weight_decay", T::Float, "0.05", at_least(0), nullptr, "AdamW decoupled weight decay."},
      {"train", "beta1", T::Float, "0.9", right_open(0, 1), nullptr, "AdamW first-moment decay."},
      {"train", "beta2", T::Float, "0.999", right_open(0, 1), nullptr, "AdamW second-moment decay."},
      {"train", "adam_eps", T::Float, "1e-8", above(0), nullptr, "AdamW epsilon."},
      {"train", "grad_clip", T::Float, "1", at_least(0), nullptr, "Global gradient-norm clip; 0 = off."},
      {"train", "eval_every", T::Int, "200", at_least(0), nullptr, "Evaluate every N steps; 0 = only at the end."},
      {"train", "eval_at_start", T::Bool, "false", kAnyValue, nullptr,
       "Also evaluate before the first step (e.g. an upcycled model as it starts)."},
      {"train", "nan_policy", T::Enum, "stop", kAnyValue, "stop|skip",
       "On a non-finite loss: stop the run, or skip the step and go on."},
      {"train", "max_skipped_steps", T::Int, "10", at_least(1), nullptr,
       "nan_policy = skip: the run stops with an error after this many consecutive skipped steps."},

      {"data", "dataset", T::Enum, "fashion_mnist", kAnyValue, "fashion_mnist|text",
       "fashion_mnist (IDX files, for model.kind = vit) or text (byte corpus, for model.kind = gpt)."},
      {"data", "path", T::String, "", kAnyValue, nullptr,
       "Dataset location; empty = /usr/share/datasets/fashion-mnist (required for text)."},
      {"data", "val_fraction", T::Float, "0.1", right_open(0, 1), nullptr,
       "Share of the training data held out for validation."},
      {"data", "shuffle", T::Bool, "true", kAnyValue, nullptr, "Shuffle the training order each epoch (from run.seed)."},

      {"parallel", "expert_parallel", T::Int, "0", at_least(0), nullptr,
       "Expert-parallel size P; 0 = the largest divisor of the world size that also divides moe.num_experts."},
      {"parallel", "backend", T::Enum, "auto", kAnyValue, "auto|mpi|nccl",
       "Communicator. nccl: GPU tensors move directly between the ranks' GPUs (one GPU per rank; needs "
       "run.device = cuda and a build with NCCL). mpi: host memory (GPU tensors staged through the host; ranks "
       "may share a GPU). auto = nccl when training on the GPU and NCCL is usable, else mpi."},
      {"parallel", "grad_bucket_mb", T::Int, "25", at_least(1), nullptr,
       "Gradient all-reduce bucket size in MiB (one reduction per bucket)."},
      {"parallel", "overlap_grad_reduce", T::Bool, "true", kAnyValue, nullptr,
       "Start each gradient bucket's all-reduce during the last micro-batch's backward, as soon as its gradients are "
       "final (NCCL: on a communication stream; MPI: non-blocking). false = all buckets after backward."},

      {"eesd", "enabled", T::Bool, "false", kAnyValue, nullptr,
       "Distil the EMA teacher's dense expert ensemble in stage moe (run.stages must contain moe)."},
      {"eesd", "weight", T::Float, "0.1", at_least(0), nullptr, "Loss weight lambda."},
      {"eesd", "ema", T::Float, "0.999", closed(0, 1), nullptr, "Teacher EMA momentum m."},
      {"eesd", "weighting", T::Enum, "uniform", kAnyValue, "uniform|entropy",
       "Per-token weight: uniform (w = 1) or entropy (routing entropy / log E)."},
      {"eesd", "target", T::Enum, "moe_output", kAnyValue, "moe_output|embedding|logits",
       "What is distilled: each MoE block's output, the final embedding, or the logits."},

      {"eval", "dense_checkpoint", T::String, "", kAnyValue, nullptr,
       "Dense checkpoint the eval stage scores; empty = run.dir/checkpoints/dense/latest.h5 when it exists."},
      {"eval", "moe_checkpoint", T::String, "", kAnyValue, nullptr,
       "MoE checkpoint the eval stage scores; empty = run.dir/checkpoints/moe/latest.h5 when it exists."},
      {"eval", "few_shot_k", T::IntList, "1,5,10", at_least(1), nullptr,
       "Images: labelled training images per class of each few-shot linear probe."},
      {"eval", "few_shot_draws", T::Int, "5", at_least(1), nullptr,
       "Images: independent draws (from run.seed) of the labelled images per k; the report gives mean and std."},
      {"eval", "few_shot_ridge", T::Float, "1", above(0), nullptr,
       "Images: ridge penalty of the closed-form few-shot classifier on L2-normalised features."},
      {"eval", "test_limit", T::Int, "0", at_least(0), nullptr,
       "Score the first N test examples only; 0 = the whole test split."},
      {"eval", "tokens", T::Int, "4096", at_least(1), nullptr,
       "MoE: test tokens per block on which every expert runs for the expert output similarity."},

      {"dpsl", "enabled", T::Bool, "false", kAnyValue, nullptr, "Shape router probabilities towards a Dirichlet prior."},
      {"dpsl", "weight", T::Float, "0.01", at_least(0), nullptr, "Loss weight lambda."},
      {"dpsl", "alpha", T::Float, "1", above(0), nullptr, "Concentration of the symmetric prior (base alpha_b otherwise)."},
      {"dpsl", "prior", T::Enum, "symmetric", kAnyValue, "symmetric|asymmetric|group",
       "symmetric Dir(alpha), asymmetric Dir(dpsl.alphas), or group-conditioned."},
      {"dpsl", "alphas", T::FloatList, "", above(0), nullptr,
       "prior = asymmetric: one concentration per expert."},
      {"dpsl", "group_boost", T::Float, "1", at_least(0), nullptr,
       "prior = group: alpha_s added to the concentration of a token's own group expert."},
      {"dpsl", "scope", T::Enum, "global", kAnyValue, "global|rank",
       "Sort the probabilities of the whole batch across ranks (global) or per rank (cheaper)."},
      {"dpsl", "pdf_clip", T::Float, "100", above(0), nullptr,
       "Upper clip of the Beta pdf in the gradient (alpha < 1 makes it unbounded at 0)."},

      {"checkpoint", "every", T::Int, "500", at_least(0), nullptr, "Save every N steps; 0 = only at the end of a stage."},
      {"checkpoint", "keep", T::Int, "3", at_least(0), nullptr, "Step checkpoints kept besides latest.h5; 0 = all."},
      {"checkpoint", "resume", T::String, "", kAnyValue, nullptr,
       "empty = start fresh; 'auto' = every training stage resumes from run.dir/checkpoints/<stage>/ when it "
       "holds a checkpoint (the newest one that verifies) and starts fresh otherwise; 'latest' = the first "
       "training stage resumes from run.dir/checkpoints/<stage>/latest.h5, which must exist; or a checkpoint "
       "path for the first training stage."},

      {"log", "every", T::Int, "10", at_least(1), nullptr, "Write a metrics.jsonl event every N steps."},
      {"log", "progress", T::Enum, "auto", kAnyValue, "auto|redraw|lines|off",
       "Progress of rank 0 (step, loss, throughput, ETA): auto = redrawn in place on an interactive terminal, "
       "one plain line per log event otherwise (a file, a pipe, mpirun's pty with its output redirected, "
       "Slurm); redraw or lines force either; off = none."},
      {"log", "level", T::Enum, "info", kAnyValue, "debug|info|warn|error", "Least severe console message shown."},
  };
  return keys;
}

std::size_t config_key_index(const std::string& full_name) {
  static const std::map<std::string, std::size_t> index = [] {
    std::map<std::string, std::size_t> m;
    const auto& keys = config_schema();
    for (std::size_t i = 0; i < keys.size(); ++i) m.emplace(keys[i].full_name(), i);
    return m;
  }();
  const auto it = index.find(full_name);
  return it == index.end() ? kNoConfigKey : it->second;
}

}  // namespace upcycle
