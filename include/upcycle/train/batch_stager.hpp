#pragma once
// Moves host batches to the model's device. Each tensor goes through a pinned (page-locked) host
// buffer and an asynchronous copy on the compute stream, so the host does not wait for the copy
// and the forward pass that reads the batch is ordered after it by the stream. A buffer is refilled
// only once its previous copy has run (an event; with two buffers per tensor that copy is a step
// old, so the host practically never waits). On the CPU the batch is used as it is.
#include <array>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

class BatchStager {
 public:
  explicit BatchStager(Device device);
  ~BatchStager();
  BatchStager(const BatchStager&) = delete;
  BatchStager& operator=(const BatchStager&) = delete;

  // The batch with inputs and targets on the device (sample ids and token count kept).
  Batch stage(const Batch& host);
  Device device() const { return device_; }

 private:
  struct Buffer {
    void* pinned = nullptr;
    std::size_t bytes = 0;
    EventHandle copied = nullptr;  // recorded after the copy out of `pinned`
  };
  Tensor upload(const Tensor& host, Buffer& buffer);

  Device device_;
  Backend* backend_ = nullptr;
  std::array<std::array<Buffer, 2>, 2> buffers_{};  // [inputs, targets] x two alternating sets
  int next_ = 0;
};

}  // namespace upcycle
