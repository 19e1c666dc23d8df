// Byte-level language modelling: a GPT on a text corpus (by default the Debian package fortunes).
#include <cmath>

#include "model_config.hpp"
#include "sharded_eval.hpp"
#include "task_factories.hpp"
#include "upcycle/data/text_corpus.hpp"
#include "upcycle/ops/loss.hpp"

namespace upcycle {

namespace {

class LanguageModelTask final : public Task {
 public:
  LanguageModelTask(const Config& cfg, const Communicator& world, const TaskOptions& options)
      : corpus_(load(cfg)),
        context_(cfg.get_int("model.context")),
        seed_(static_cast<std::uint64_t>(cfg.get_int("run.seed"))),
        rng_(seed_),
        model_(gpt_config_from(cfg, options), rng_),
        sampler_(windows(corpus_.train), cfg.get_int("train.batch_size"), world.rank(), world.size(),
                 static_cast<std::uint64_t>(cfg.get_int("run.seed")), cfg.get_bool("data.shuffle")) {
    model_.to(model_device_from(cfg));  // initialised on the host from the seed, moved once
    if (model_.config().vocab < 256)
      UPCYCLE_USAGE_ERROR("model.vocab_size = ", model_.config().vocab, " is too small for bytes (256)");
  }

  nn::Module& model() override { return model_; }
  ShardedSampler& sampler() override { return sampler_; }
  nn::ModuleList<nn::TransformerBlock>& blocks() override { return model_.blocks; }
  std::string headline_metric() const override { return "bits_per_byte"; }

  Batch next_batch() override {
    std::vector<std::int64_t> ids = sampler_.next();
    Batch b = make_batch(corpus_.train, ids);
    b.sample_ids = std::move(ids);
    return b;
  }

  std::vector<std::pair<std::string, moe::MoeLayer*>> moe_layers() const override {
    return moe::find_moe_layers(model_);
  }
  // Text has one token group (group-conditioned DPSL degenerates to one prior): the defaults.

  Var loss(const Batch& batch, RngStream* dropout_rng) override {
    last_outputs_ = run_model(model_, batch.inputs, dropout_rng);
    return cross_entropy(last_outputs_.logits, batch.targets);
  }

  ModelOutputs run_model(const nn::Module& model, const Tensor& inputs, RngStream* dropout_rng) const override {
    const auto* gpt = dynamic_cast<const nn::GPT*>(&model);
    UPCYCLE_CHECK(gpt != nullptr, "the language-model task runs GPT models only");
    ModelOutputs out;
    out.features = gpt->features(inputs, dropout_rng);
    out.logits = gpt->logits(out.features);
    return out;
  }

  std::unique_ptr<nn::Module> make_twin() const override {
    RngStream rng(seed_);
    auto twin = std::make_unique<nn::GPT>(model_.config(), rng);
    twin->to(model_.device());
    return twin;
  }

  // The held-out documents serve as validation and test (the corpus has no third split).
  const std::vector<std::uint8_t>& text_of(Split split) const {
    return split == Split::train ? corpus_.train : corpus_.val;
  }
  std::int64_t split_size(Split split) const override { return windows(text_of(split)); }
  Batch split_batch(Split split, const std::vector<std::int64_t>& ids) const override {
    return make_batch(text_of(split), ids);
  }

  std::map<std::string, double> evaluate(Communicator& comm, Split split) override {
    UPCYCLE_CHECK(split != Split::train, "evaluate: the training split is not held out");
    // Every non-overlapping held-out window once, sharded contiguously over the ranks.
    double sums[2] = {0, 0};  // loss sum over predicted bytes, bytes
    run_sharded_eval(
        model_, moe::moe_layers_of(model_.blocks), comm, windows(text_of(split)), 16,
        [&](const std::vector<std::int64_t>& idx) {
          const Batch b = make_batch(text_of(split), idx);
          const Device dev = model_.device();
          const double bytes = static_cast<double>(b.targets.numel());
          sums[0] += static_cast<double>(
                         cross_entropy(model_.forward(b.inputs.to(dev)), b.targets.to(dev)).value().item<float>()) *
                     bytes;
          sums[1] += bytes;
        },
        [&] { model_.forward(make_batch(text_of(split), {0}).inputs.to(model_.device())); });
    Tensor t = Tensor::from_vector<double>({sums[0], sums[1]}, {2}, Device::cpu);
    comm.all_reduce(t);
    const auto v = t.to_vector<double>();
    const double loss = v[1] > 0 ? v[0] / v[1] : NAN;
    return {{"val_loss", loss}, {"bits_per_byte", loss / std::log(2.0)}};
  }

 private:
  static TextCorpus load(const Config& cfg) {
    const std::string& path = cfg.get_string("data.path");
    return load_text_corpus({path.empty() ? kFortunesDir : path}, cfg.get_float("data.val_fraction"),
                            static_cast<std::uint64_t>(cfg.get_int("run.seed")));
  }

  // Window i covers bytes [i T, i T + T] (T inputs, each predicting the next byte).
  std::int64_t windows(const std::vector<std::uint8_t>& text) const {
    return (static_cast<std::int64_t>(text.size()) - 1) / context_;
  }

  Batch make_batch(const std::vector<std::uint8_t>& text, const std::vector<std::int64_t>& idx) const {
    const std::int64_t b = static_cast<std::int64_t>(idx.size()), t = context_;
    Batch batch;
    batch.inputs = Tensor::empty({b, t}, DType::i64, Device::cpu);
    batch.targets = Tensor::empty({b, t}, DType::i64, Device::cpu);
    std::int64_t* in = batch.inputs.data<std::int64_t>();
    std::int64_t* out = batch.targets.data<std::int64_t>();
    for (std::int64_t r = 0; r < b; ++r) {
      const std::uint8_t* src = text.data() + idx[static_cast<std::size_t>(r)] * t;
      for (std::int64_t j = 0; j < t; ++j) {
        in[r * t + j] = src[j];
        out[r * t + j] = src[j + 1];
      }
    }
    batch.tokens = b * t;
    return batch;
  }

  TextCorpus corpus_;
  std::int64_t context_;
  std::uint64_t seed_;
  RngStream rng_;
  nn::GPT model_;
  ShardedSampler sampler_;
};

}  // namespace

std::unique_ptr<Task> make_language_model_task(const Config& cfg, const Communicator& world,
                                               const TaskOptions& options) {
  return std::make_unique<LanguageModelTask>(cfg, world, options);
}

}  // namespace upcycle
