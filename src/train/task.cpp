#include "upcycle/train/task.hpp"

#include "task_factories.hpp"

namespace upcycle {

namespace {
using TaskFactory = std::unique_ptr<Task> (*)(const Config&, const Communicator&, const TaskOptions&);

struct TaskKind {
  const char* model_kind;
  const char* dataset;  // the data.dataset the task reads
  TaskFactory make;
};

// The one registry of tasks.
constexpr TaskKind kTasks[] = {
    {"vit", "fashion_mnist", &make_image_classification_task},
    {"gpt", "text", &make_language_model_task},
};
}  // namespace

const char* split_name(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::validation: return "validation";
    case Split::test: return "test";
  }
  return "?";
}

std::unique_ptr<Task> make_task(const Config& cfg, const Communicator& world, const TaskOptions& options) {
  const std::string& kind = cfg.get_string("model.kind");
  const std::string& dataset = cfg.get_string("data.dataset");
  for (const auto& t : kTasks) {
    if (kind != t.model_kind) continue;
    if (dataset != t.dataset)
      UPCYCLE_USAGE_ERROR("model.kind = ", kind, " trains on data.dataset = ", t.dataset, ", not ", dataset);
    return t.make(cfg, world, options);
  }
  UPCYCLE_USAGE_ERROR("model.kind = ", kind, " has no task");
}

}  // namespace upcycle
