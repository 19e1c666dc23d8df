// The registry of cross-key consistency rules: conditions no single key's type or range can
// express. Add a rule by adding a row; its summary also appears in --help.
#include "config_internal.hpp"

namespace upcycle::detail {

namespace {

// "moe.top_k = 4 (cfg.ini:7)": a value and where it came from, so the user knows what to edit.
std::string show(const Config& c, const char* key) {
  const std::string text = c.value_text(key);
  return std::string(key) + (text.empty() ? " (empty, " : " = " + text + " (") + c.origin(key) + ")";
}

std::string unless(bool ok, const std::string& message) { return ok ? "" : message; }

}  // namespace

const std::vector<ConfigRule>& config_rules() {
  static const std::vector<ConfigRule> rules = {
      {"moe.top_k <= moe.num_experts",
       [](const Config& c) {
         return unless(c.get_int("moe.top_k") <= c.get_int("moe.num_experts"),
                       show(c, "moe.top_k") + " exceeds " + show(c, "moe.num_experts"));
       }},
      {"model.heads divides model.width",
       [](const Config& c) {
         return unless(c.get_int("model.width") % c.get_int("model.heads") == 0,
                       show(c, "model.width") + " is not divisible by " + show(c, "model.heads"));
       }},
      {"train.min_lr <= train.lr",
       [](const Config& c) {
         return unless(c.get_float("train.min_lr") <= c.get_float("train.lr"),
                       show(c, "train.min_lr") + " exceeds " + show(c, "train.lr"));
       }},
      {"upcycle.granularity divides moe.num_experts when upcycle.method = granular",
       [](const Config& c) {
         return unless(c.get_string("upcycle.method") != "granular" ||
                           c.get_int("moe.num_experts") % c.get_int("upcycle.granularity") == 0,
                       show(c, "moe.num_experts") + " is not divisible by " + show(c, "upcycle.granularity") +
                           " with " + show(c, "upcycle.method"));
       }},
      {"upcycle.granularity divides model.ffn_width when upcycle.method = granular",
       [](const Config& c) {
         return unless(c.get_string("upcycle.method") != "granular" ||
                           c.get_int("model.ffn_width") % c.get_int("upcycle.granularity") == 0,
                       show(c, "model.ffn_width") + " is not divisible by " + show(c, "upcycle.granularity") +
                           " with " + show(c, "upcycle.method"));
       }},
      {"moe.expert_ffn_width = model.ffn_width / upcycle.granularity when set and upcycle.method = granular",
       [](const Config& c) {
         const auto w = c.get_int("moe.expert_ffn_width");
         return unless(w == 0 || c.get_string("upcycle.method") != "granular" ||
                           w * c.get_int("upcycle.granularity") == c.get_int("model.ffn_width"),
                       show(c, "moe.expert_ffn_width") + " must be " + show(c, "model.ffn_width") + " / " +
                           show(c, "upcycle.granularity") + " (or 0) with upcycle.method = granular");
       }},
      {"upcycle.subspace = random needs upcycle.method = cluster",
       [](const Config& c) {
         return unless(c.get_string("upcycle.subspace") == "svd" || c.get_string("upcycle.method") == "cluster",
                       show(c, "upcycle.subspace") + " is a control of cluster-aware upcycling, but " +
                           show(c, "upcycle.method"));
       }},
      {"eval.few_shot_* are set only for model.kind = vit (text has no classes to probe)",
       [](const Config& c) {
         if (c.get_string("model.kind") == "vit") return std::string();
         for (const char* key : {"eval.few_shot_k", "eval.few_shot_draws", "eval.few_shot_ridge"})
           if (c.origin(key) != "default")
             return show(c, key) + " sets the few-shot probes of image classification, but " + show(c, "model.kind");
         return std::string();
       }},
      {"moe.block_list is set exactly when moe.blocks = list",
       [](const Config& c) {
         const bool is_list = c.get_string("moe.blocks") == "list";
         return unless(is_list != c.get_int_list("moe.block_list").empty(),
                       is_list ? show(c, "moe.blocks") + " needs moe.block_list to name the MoE blocks"
                               : show(c, "moe.block_list") + " is ignored with " + show(c, "moe.blocks"));
       }},
      {"every moe.block_list entry < model.depth",
       [](const Config& c) {
         for (auto b : c.get_int_list("moe.block_list")) {
           if (b >= c.get_int("model.depth")) {
             return show(c, "moe.block_list") + " names block " + std::to_string(b) + " but " +
                    show(c, "model.depth");
           }
         }
         return std::string();
       }},
      {"model.patch_size divides model.image_size when model.kind = vit",
       [](const Config& c) {
         return unless(c.get_string("model.kind") != "vit" ||
                           c.get_int("model.image_size") % c.get_int("model.patch_size") == 0,
                       show(c, "model.image_size") + " is not divisible by " + show(c, "model.patch_size"));
       }},
      {"data.dataset matches model.kind (fashion_mnist: vit, text: gpt)",
       [](const Config& c) {
         const std::string want = c.get_string("data.dataset") == "text" ? "gpt" : "vit";
         return unless(c.get_string("model.kind") == want,
                       show(c, "data.dataset") + " needs model.kind = " + want + " but " + show(c, "model.kind"));
       }},
      {"data.path is set when data.dataset = text",
       [](const Config& c) {
         return unless(c.get_string("data.dataset") != "text" || !c.get_string("data.path").empty(),
                       show(c, "data.dataset") + " has no default location: set data.path");
       }},
      {"train.micro_batches divides train.batch_size",
       [](const Config& c) {
         return unless(c.get_int("train.batch_size") % c.get_int("train.micro_batches") == 0,
                       show(c, "train.batch_size") + " is not divisible by " + show(c, "train.micro_batches"));
       }},
      {"parallel.expert_parallel divides moe.num_experts when set",
       [](const Config& c) {
         const auto p = c.get_int("parallel.expert_parallel");
         return unless(p == 0 || c.get_int("moe.num_experts") % p == 0,
                       show(c, "moe.num_experts") + " is not divisible by " + show(c, "parallel.expert_parallel"));
       }},
      {"dpsl.alphas has moe.num_experts entries exactly when dpsl.prior = asymmetric",
       [](const Config& c) {
         const bool asym = c.get_string("dpsl.prior") == "asymmetric";
         const auto n = static_cast<std::int64_t>(c.get_float_list("dpsl.alphas").size());
         if (!asym) return unless(n == 0, show(c, "dpsl.alphas") + " is ignored with " + show(c, "dpsl.prior"));
         return unless(n == c.get_int("moe.num_experts"), show(c, "dpsl.alphas") + " has " + std::to_string(n) +
                                                              " entries but " + show(c, "moe.num_experts"));
       }},
  };
  return rules;
}

}  // namespace upcycle::detail
