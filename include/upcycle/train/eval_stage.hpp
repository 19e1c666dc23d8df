#pragma once
// The eval stage of upcycle_train (docs/methods.md section 6): scores the dense and/or the MoE
// checkpoint of a run on the test split, and writes <run.dir>/eval_report.json and one
// "eval_stage" event in <run.dir>/metrics.jsonl.
//   1. test metrics (images: accuracy and mean cross-entropy; text: bits per byte and loss) of the
//      first eval.test_limit test examples (0 = all);
//   2. classification only: few-shot ridge probes (train/few_shot_probe.hpp) on the frozen features,
//      eval.few_shot_k labelled training images per class, eval.few_shot_draws draws each;
//   3. MoE only, per MoE block: expert weight and output cosine similarity, routing entropy, load
//      CoV, expert-level mean probability, relative compactness (moe/specialisation.hpp).
// Every forward is sharded over the ranks (the MoE forward is collective over the EP group) and
// every sum is taken over all of them, so the results do not depend on the number of ranks.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/metrics.hpp"

namespace upcycle {

struct FewShotScores {
  std::int64_t k = 0;          // labelled images per class
  std::vector<double> draws;   // test accuracy of each draw
  double mean = 0.0, std = 0.0;  // over the draws (sample std)
};

// The measures of one MoE block on the test tokens.
struct BlockSpecialisation {
  std::string name;  // "blocks/01/moe"
  // weight_cosine: of the flattened W1 (the up-projection the initialisers differ in; W2 is a copy
  // of the dense one for sparse and cluster); weight_cosine_w1w2: of [W1, W2].
  double weight_cosine = 0.0, weight_cosine_w1w2 = 0.0, output_cosine = 0.0;
  // The spread of the router's probabilities p_te over all test tokens and experts (their mean is
  // 1/E whatever the router): the population std, and a histogram of kProbBins equal bins of [0, 1].
  double prob_std = 0.0;
  std::vector<std::int64_t> prob_histogram;
  double entropy = 0.0, entropy_norm = 0.0, load_cov = 0.0;
  std::vector<double> expert_mean_prob;  // [E]
  double expert_mean_prob_mean = 0.0;
  double relative_compactness = 0.0;
  std::int64_t tokens = 0;         // test tokens routed (entropy, loads, compactness)
  std::int64_t output_tokens = 0;  // the first of them on which every expert ran (eval.tokens)
};

inline constexpr int kProbBins = 20;

struct ModelEvaluation {
  std::string checkpoint, stage;  // the file and the stage that wrote it
  std::int64_t step = 0;
  std::int64_t test_examples = 0;
  // Images: "accuracy", "loss" (mean cross-entropy, nats); text: "bits_per_byte", "loss" (nats per byte).
  std::map<std::string, double> test;
  std::vector<FewShotScores> few_shot;     // classification only, in eval.few_shot_k order
  std::vector<BlockSpecialisation> blocks;  // MoE only, in block order
};

struct EvalReport {
  int world_size = 1;
  std::optional<ModelEvaluation> dense, moe;
};

// The checkpoints the stage scores: eval.dense_checkpoint / eval.moe_checkpoint, or, when empty,
// <run.dir>/checkpoints/<stage>/latest.h5 when it exists ("" = not scored). Throws UsageError
// naming the key for an explicit path that does not exist, and naming both paths when there is
// nothing to score.
struct EvalCheckpoints {
  std::string dense, moe;
};
EvalCheckpoints eval_checkpoints(const Config& cfg);

// Computes the report (collective over `world`; every rank returns the same numbers, except that
// the few-shot probes are fitted on rank 0 only: the other ranks return them empty).
EvalReport evaluate_checkpoints(const Config& cfg, std::shared_ptr<Communicator> world);

// The eval_report.json object of a report (docs/training.md "Run directory").
JsonObject eval_report_json(const EvalReport& report);

// The stage: evaluate_checkpoints, then on rank 0 the report file, the metrics event and a summary
// on stdout (no files when run.dir is empty).
void run_eval_stage(const Config& cfg, std::shared_ptr<Communicator> world);

}  // namespace upcycle
