#include "upcycle/train/batch_stager.hpp"

#include <cstring>

namespace upcycle {

BatchStager::BatchStager(Device device) : device_(device) {
  if (device_ != Device::cpu) backend_ = &backend_for(device_);
}

BatchStager::~BatchStager() {
  if (!backend_) return;
  for (auto& set : buffers_)
    for (Buffer& b : set) {
      // A copy out of the buffer may still be queued: wait for it before freeing the memory.
      if (b.copied) {
        backend_->synchronize_event(b.copied);
        backend_->destroy_event(b.copied);
      }
      if (b.pinned) backend_->deallocate_pinned(b.pinned);
    }
}

Tensor BatchStager::upload(const Tensor& host, Buffer& buffer) {
  UPCYCLE_CHECK(host.device() == Device::cpu, "BatchStager: batches come from the host, got ", describe(host));
  const std::size_t bytes = host.nbytes();
  if (buffer.copied && !backend_->event_done(buffer.copied)) backend_->synchronize_event(buffer.copied);
  if (buffer.bytes < bytes) {
    if (buffer.pinned) backend_->deallocate_pinned(buffer.pinned);
    buffer.pinned = backend_->allocate_pinned(bytes);
    buffer.bytes = bytes;
  }
  if (!buffer.copied) buffer.copied = backend_->create_event();
  if (bytes) std::memcpy(buffer.pinned, host.raw(), bytes);
  Tensor out = Tensor::empty(host.shape(), host.dtype(), device_);
  backend_->copy_bytes_async(out.raw(), device_, buffer.pinned, Device::cpu, bytes);
  backend_->record_event(buffer.copied, nullptr);
  return out;
}

Batch BatchStager::stage(const Batch& host) {
  if (device_ == Device::cpu) return host;
  auto& set = buffers_[static_cast<std::size_t>(next_)];
  next_ ^= 1;
  Batch b;
  b.inputs = upload(host.inputs, set[0]);
  b.targets = upload(host.targets, set[1]);
  b.tokens = host.tokens;
  b.sample_ids = host.sample_ids;
  return b;
}

}  // namespace upcycle
