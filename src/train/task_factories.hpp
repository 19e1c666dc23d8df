#pragma once
// The task constructors, one per model.kind; src/train/task.cpp holds the one table that maps
// kinds to them.
#include <memory>

#include "upcycle/train/task.hpp"

namespace upcycle {

std::unique_ptr<Task> make_image_classification_task(const Config& cfg, const Communicator& world,
                                                     const TaskOptions& options);
std::unique_ptr<Task> make_language_model_task(const Config& cfg, const Communicator& world,
                                                     const TaskOptions& options);

}  // namespace upcycle
