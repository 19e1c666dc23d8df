// Image classification: a ViT on Fashion-MNIST.
#include <cmath>

#include "model_config.hpp"
#include "upcycle/data/fashion_mnist.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/train/task.hpp"
#include "sharded_eval.hpp"
#include "task_factories.hpp"

namespace upcycle {

namespace {

// Fashion-MNIST training-set pixel statistics (on [0, 1] pixels), for input standardisation.
constexpr float kPixelMean = 0.2860f;
constexpr float kPixelStd = 0.3530f;

class ImageClassificationTask final : public Task {
 public:
  ImageClassificationTask(const Config& cfg, const Communicator& world, const TaskOptions& options)
      : train_(load(cfg, "train")),
        test_(load(cfg, "test")),
        split_(split_training_file(train_.count, cfg.get_float("data.val_fraction"))),
        seed_(static_cast<std::uint64_t>(cfg.get_int("run.seed"))),
        rng_(seed_),
        model_(vit_config_from(cfg, options), rng_),
        sampler_(static_cast<std::int64_t>(split_.train.size()), cfg.get_int("train.batch_size"), world.rank(),
                 world.size(), seed_, cfg.get_bool("data.shuffle")) {
    model_.to(model_device_from(cfg));  // initialised on the host from the seed, moved once
    const auto& v = model_.config();
    if (train_.height != v.image_size || train_.width != v.image_size || v.channels != 1)
      UPCYCLE_USAGE_ERROR("model.image_size = ", v.image_size, " and model.channels = ", v.channels,
                          " do not match the data (", train_.height, "x", train_.width, ", 1 channel)");
    if (v.num_classes != train_.num_classes)
      UPCYCLE_USAGE_ERROR("model.num_classes = ", v.num_classes, " but the data has ", train_.num_classes, " classes");
  }

  nn::Module& model() override { return model_; }
  ShardedSampler& sampler() override { return sampler_; }
  nn::ModuleList<nn::TransformerBlock>& blocks() override { return model_.blocks; }
  std::string headline_metric() const override { return "accuracy"; }

  Batch next_batch() override {
    std::vector<std::int64_t> ids = sampler_.next();
    for (std::int64_t& i : ids) i = split_.train[static_cast<std::size_t>(i)];  // dataset indices
    Batch b = make_batch(train_, ids);
    b.sample_ids = std::move(ids);
    return b;
  }

  std::int64_t num_classes() const override { return model_.config().num_classes; }

  std::int64_t split_size(Split split) const override {
    return static_cast<std::int64_t>(split == Split::test ? test_.count : ids_of(split).size());
  }

  std::vector<std::int64_t> split_labels(Split split) const override {
    std::vector<std::int64_t> labels(static_cast<std::size_t>(split_size(split)));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = label_of(split, static_cast<std::int64_t>(i));
    return labels;
  }

  Batch split_batch(Split split, const std::vector<std::int64_t>& ids) const override {
    if (split == Split::test) return make_batch(test_, ids);
    const std::vector<std::int64_t>& map = ids_of(split);
    std::vector<std::int64_t> rows(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) rows[i] = map.at(static_cast<std::size_t>(ids[i]));
    Batch b = make_batch(train_, rows);
    b.sample_ids = std::move(rows);
    return b;
  }

  ModelOutputs run_model(const nn::Module& model, const Tensor& inputs, RngStream* dropout_rng) const override {
    const auto* vit = dynamic_cast<const nn::ViT*>(&model);
    UPCYCLE_CHECK(vit != nullptr, "the image task runs ViT models only");
    ModelOutputs out;
    out.features = vit->features(inputs, dropout_rng);
    out.logits = vit->head.forward(out.features);
    return out;
  }

  std::unique_ptr<nn::Module> make_twin() const override {
    RngStream rng(seed_);
    auto twin = std::make_unique<nn::ViT>(model_.config(), rng);
    twin->to(model_.device());
    return twin;
  }

  std::vector<std::pair<std::string, moe::MoeLayer*>> moe_layers() const override {
    return moe::find_moe_layers(model_);
  }

  // Group-conditioned DPSL on images: G = E groups ("class sets"), image of label y is in group
  // y mod G, and so are all 1 + N of its tokens (class token and patches, rows b (1 + N) ...).
  std::int64_t num_token_groups(std::int64_t num_experts) const override { return num_experts; }
  Tensor token_groups(const Batch& batch, std::int64_t num_groups) const override {
    const std::int64_t b = batch.targets.dim(0), per = 1 + model_.config().num_patches();
    Tensor g = Tensor::empty({b * per}, DType::i64, Device::cpu);
    std::int64_t* pg = g.data<std::int64_t>();
    const Tensor labels = batch.targets.to(Device::cpu);
    const std::int64_t* y = labels.data<std::int64_t>();
    for (std::int64_t r = 0; r < b; ++r)
      for (std::int64_t j = 0; j < per; ++j) pg[r * per + j] = y[r] % num_groups;
    return g.to(batch.targets.device());
  }

  Var loss(const Batch& batch, RngStream* dropout_rng) override {
    last_outputs_ = run_model(model_, batch.inputs, dropout_rng);
    return cross_entropy(last_outputs_.logits, batch.targets);
  }

  std::map<std::string, double> evaluate(Communicator& comm, Split split) override {
    UPCYCLE_CHECK(split != Split::train, "evaluate: the training split is not held out");
    double sums[3] = {0, 0, 0};  // correct, loss sum, count
    run_sharded_eval(
        model_, moe::moe_layers_of(model_.blocks), comm, split_size(split), 500,
        [&](const std::vector<std::int64_t>& idx) {
          const Batch host = split_batch(split, idx);
          const Device dev = model_.device();
          const Var logits = model_.forward(host.inputs.to(dev));
          // Predictions are scored on the host (an explicit host step: [B, classes] per chunk).
          const Tensor l = logits.value().to(Device::cpu);
          const std::int64_t classes = l.dim(1);
          const float* pl = l.data<float>();
          const std::int64_t* labels = host.targets.data<std::int64_t>();
          for (std::size_t r = 0; r < idx.size(); ++r) {
            const float* row = pl + static_cast<std::int64_t>(r) * classes;
            std::int64_t best = 0;
            for (std::int64_t c = 1; c < classes; ++c)
              if (row[c] > row[best]) best = c;
            sums[0] += best == labels[r] ? 1.0 : 0.0;
          }
          sums[1] += static_cast<double>(cross_entropy(logits, host.targets.to(dev)).value().item<float>()) *
                     static_cast<double>(idx.size());
          sums[2] += static_cast<double>(idx.size());
        },
        [&] { model_.forward(split_batch(split, {0}).inputs.to(model_.device())); });
    Tensor t = Tensor::from_vector<double>({sums[0], sums[1], sums[2]}, {3}, Device::cpu);
    comm.all_reduce(t);
    const auto v = t.to_vector<double>();
    return {{"accuracy", v[0] / v[2]}, {"val_loss", v[1] / v[2]}};
  }

 private:
  static ImageDataset load(const Config& cfg, const std::string& split) {
    const std::string& path = cfg.get_string("data.path");
    return load_fashion_mnist(path.empty() ? kFashionMnistDir : path, split);
  }

  Batch make_batch(const ImageDataset& ds, const std::vector<std::int64_t>& idx) const {
    const std::int64_t b = static_cast<std::int64_t>(idx.size()), hw = ds.height * ds.width;
    Batch batch;
    batch.inputs = Tensor::empty({b, 1, ds.height, ds.width}, DType::f32, Device::cpu);
    batch.targets = Tensor::empty({b}, DType::i64, Device::cpu);
    float* px = batch.inputs.data<float>();
    std::int64_t* py = batch.targets.data<std::int64_t>();
    for (std::int64_t r = 0; r < b; ++r) {
      const std::uint8_t* src = ds.pixels.data() + idx[static_cast<std::size_t>(r)] * hw;
      for (std::int64_t i = 0; i < hw; ++i) px[r * hw + i] = (static_cast<float>(src[i]) / 255.0f - kPixelMean) / kPixelStd;
      py[r] = ds.labels[static_cast<std::size_t>(idx[static_cast<std::size_t>(r)])];
    }
    batch.tokens = b * (1 + model_.config().num_patches());
    return batch;
  }

  // Training and validation examples of the training file (dataset indices, ascending).
  struct TrainingSplit {
    std::vector<std::int64_t> train, validation;
  };
  // Example i is validation when Philox-uniform(kValidationKey, i) < fraction: a fixed draw, the
  // same for every run.seed, so a dense model and the MoE runs upcycled from it (with other seeds)
  // never see each other's validation images in training.
  static TrainingSplit split_training_file(std::int64_t count, double fraction) {
    constexpr std::uint64_t kValidationKey = 0x7661'6c69'6461'7465ull;
    TrainingSplit s;
    for (std::int64_t i = 0; i < count; ++i)
      (Philox4x32::uniform(kValidationKey, static_cast<std::uint64_t>(i)) < fraction ? s.validation : s.train).push_back(i);
    if (fraction > 0 && s.validation.empty())
      UPCYCLE_USAGE_ERROR("data.val_fraction = ", fraction, " leaves no validation image of ", count);
    if (s.train.empty()) UPCYCLE_USAGE_ERROR("data.val_fraction = ", fraction, " leaves no training image");
    return s;
  }
  const std::vector<std::int64_t>& ids_of(Split split) const {
    return split == Split::validation ? split_.validation : split_.train;
  }
  std::int64_t label_of(Split split, std::int64_t i) const {
    if (split == Split::test) return test_.labels[static_cast<std::size_t>(i)];
    return train_.labels[static_cast<std::size_t>(ids_of(split)[static_cast<std::size_t>(i)])];
  }

  ImageDataset train_, test_;
  TrainingSplit split_;
  std::uint64_t seed_;
  RngStream rng_;  // initialisation stream
  nn::ViT model_;
  ShardedSampler sampler_;
};

}  // namespace

std::unique_ptr<Task> make_image_classification_task(const Config& cfg, const Communicator& world,
                                                     const TaskOptions& options) {
  return std::make_unique<ImageClassificationTask>(cfg, world, options);
}

}  // namespace upcycle
