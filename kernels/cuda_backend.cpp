// The CUDA backend's device start-up and execution context: the compute stream, cuBLAS handle,
// events, copies, workspace and the device error flag. Host code only (compiled by the C++
// compiler against the CUDA runtime).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda_allocator.hpp"
#include "cuda_common.cuh"
#include "upcycle/backend/devices.hpp"

namespace upcycle {

const char* cuda::device_error_message(int code) {
  switch (static_cast<cuda::DeviceError>(code)) {
    case cuda::DeviceError::none: return "no error";
    case cuda::DeviceError::gather_rows_index: return "gather_rows: an index lies outside the table's rows";
    case cuda::DeviceError::index_add_rows_index: return "index_add_rows: an index lies outside the output's rows";
    case cuda::DeviceError::gather_last_index: return "gather_last: an index lies outside the row";
    case cuda::DeviceError::scatter_add_last_index: return "scatter_add_last: an index lies outside the row";
    case cuda::DeviceError::cross_entropy_target:
      return "cross_entropy: a target is neither a class index nor ignore_index";
    case cuda::DeviceError::moe_dispatch_expert: return "moe_dispatch: an expert index lies outside [0, E)";
    case cuda::DeviceError::cluster_sums_assignment: return "cluster_sums: an assignment lies outside [0, K)";
  }
  return "unknown device error";
}

CudaBackend::CudaBackend(int device_index) : device_index_(device_index) {
  UPCYCLE_CUDA_CHECK(cudaSetDevice(device_index_));
  UPCYCLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  UPCYCLE_CUBLAS_CHECK(cublasCreate(&cublas_));
  UPCYCLE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // FP32 products compute in FP32 unless TF32 is allowed (set_allow_tf32): the compute type of
  // every call says so, and the default math mode lets it decide.
  UPCYCLE_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  init_allocator();
  UPCYCLE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&upload_ring_), kUploadSlotBytes * kUploadSlots));
  upload_events_.resize(kUploadSlots);
  for (cudaEvent_t& e : upload_events_) {
    UPCYCLE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    UPCYCLE_CUDA_CHECK(cudaEventRecord(e, stream_));  // every slot starts free
  }
  UPCYCLE_CUDA_CHECK(cudaMalloc(&error_flag_, sizeof(int)));
  UPCYCLE_CUDA_CHECK(cudaMemsetAsync(error_flag_, 0, sizeof(int), stream_));
  // cuBLAS gets a workspace of its own, kept for the backend's lifetime, so that it never
  // allocates inside a step (and never shares the kernels' workspace(), which may be replaced).
  constexpr std::size_t kCublasWorkspace = std::size_t{32} << 20;
  UPCYCLE_CUBLAS_CHECK(cublasSetWorkspace(cublas_, allocate(kCublasWorkspace), kCublasWorkspace));
  UPCYCLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// The backend lives until the process ends (tensors may be freed during static destruction), so
// the destructor is never run in practice; it releases what it owns for completeness.
CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_);
  if (cublas_) cublasDestroy(cublas_);
  if (error_flag_) cudaFree(error_flag_);
  for (cudaEvent_t e : upload_events_) cudaEventDestroy(e);
  if (upload_ring_) cudaFreeHost(upload_ring_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::set_allow_tf32(bool allow) {
  allow_tf32_ = allow;
  UPCYCLE_CUBLAS_CHECK(cublasSetMathMode(cublas_, allow ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

void CudaBackend::count_host_wait() { ++host_waits_; }

void CudaBackend::check_device_errors() {
  int code = 0;
  // The stream is idle here (the caller just waited), so this small copy does not wait again.
  UPCYCLE_CUDA_CHECK(cudaMemcpy(&code, error_flag_, sizeof(int), cudaMemcpyDeviceToHost));
  if (code == 0) return;
  UPCYCLE_CUDA_CHECK(cudaMemset(error_flag_, 0, sizeof(int)));
  UPCYCLE_THROW("a CUDA kernel reported: ", cuda::device_error_message(code));
}

void CudaBackend::synchronize() {
  count_host_wait();
  UPCYCLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_errors();
}

StreamHandle CudaBackend::create_stream() {
  cudaStream_t s = nullptr;
  UPCYCLE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void CudaBackend::destroy_stream(StreamHandle stream) {
  if (stream != nullptr && stream != stream_) UPCYCLE_CUDA_CHECK(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
}
EventHandle CudaBackend::create_event() {
  cudaEvent_t e = nullptr;
  UPCYCLE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}
void CudaBackend::destroy_event(EventHandle event) {
  if (event != nullptr) UPCYCLE_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
}
void CudaBackend::record_event(EventHandle event, StreamHandle stream) {
  UPCYCLE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), stream ? static_cast<cudaStream_t>(stream) : stream_));
}
void CudaBackend::wait_event(StreamHandle stream, EventHandle event) {
  UPCYCLE_CUDA_CHECK(cudaStreamWaitEvent(stream ? static_cast<cudaStream_t>(stream) : stream_,
                                         static_cast<cudaEvent_t>(event), 0));
}
void CudaBackend::synchronize_event(EventHandle event) {
  count_host_wait();
  UPCYCLE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  check_device_errors();
}

bool CudaBackend::event_done(EventHandle event) {
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (e == cudaErrorNotReady) return false;
  UPCYCLE_CUDA_CHECK(e);
  return true;
}

namespace {
cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (src == Device::cpu) return dst == Device::cpu ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  return dst == Device::cpu ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}
}  // namespace

void CudaBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  const cudaMemcpyKind kind = copy_kind(dst_device, src_device);
  if (kind == cudaMemcpyHostToHost) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (kind == cudaMemcpyHostToDevice && bytes <= kUploadSlotBytes) {
    // A small upload (index lists, coefficients, a scalar): staged through a pinned slot, so the
    // caller may free `src` at once and the host does not wait for the device.
    const int slot = upload_next_;
    upload_next_ = (upload_next_ + 1) % kUploadSlots;
    cudaEvent_t done = upload_events_[static_cast<std::size_t>(slot)];
    const cudaError_t state = cudaEventQuery(done);
    if (state == cudaErrorNotReady) {  // the ring went round faster than the device
      count_host_wait();
      UPCYCLE_CUDA_CHECK(cudaEventSynchronize(done));
    } else {
      UPCYCLE_CUDA_CHECK(state);
    }
    char* staging = upload_ring_ + static_cast<std::size_t>(slot) * kUploadSlotBytes;
    std::memcpy(staging, src, bytes);
    UPCYCLE_CUDA_CHECK(cudaMemcpyAsync(dst, staging, bytes, kind, stream_));
    UPCYCLE_CUDA_CHECK(cudaEventRecord(done, stream_));
    return;
  }
  UPCYCLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
  if (kind == cudaMemcpyDeviceToDevice) return;  // ordered on the stream like any kernel
  // To the host: the caller reads dst next. From pageable host memory: the caller may free src at
  // once, so the copy must have left it. Either way the host waits here.
  count_host_wait();
  UPCYCLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (kind == cudaMemcpyDeviceToHost) check_device_errors();
}

void CudaBackend::copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  UPCYCLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, copy_kind(dst_device, src_device), stream_));
}

void* CudaBackend::workspace(std::size_t bytes) {
  if (bytes > workspace_bytes_) {
    // The old block may still be read by queued work: hand it back to the caching allocator, which
    // reuses memory only in stream order, and take a larger one.
    if (workspace_) deallocate(workspace_);
    workspace_ = allocate(bytes);
    workspace_bytes_ = bytes;
  }
  return workspace_;
}

namespace {
// The GPU the backend started on, -1 before it starts (use_cuda_device refuses to move it).
std::atomic<int> g_backend_device{-1};
}  // namespace

// Starts the backend on the current device (use_cuda_device before the first use picks another).
// Any error of cudaGetDeviceCount means "no GPU": without a driver it returns
// cudaErrorInsufficientDriver (35), not cudaErrorNoDevice (100).
Backend& cuda_backend() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so a later query starts clean
    UPCYCLE_THROW("cudaGetDeviceCount failed with ", cudaGetErrorName(e), " (error ",
                  static_cast<int>(e), ": ", cudaGetErrorString(e), ")");
  }
  UPCYCLE_CHECK(count > 0, "the CUDA runtime sees no device");
  int device = 0;
  UPCYCLE_CUDA_CHECK(cudaGetDevice(&device));
  static CudaBackend* backend = [device] {  // never destroyed (see ~CudaBackend)
    auto* b = new CudaBackend(device);
    g_backend_device = device;
    return b;
  }();
  return *backend;
}

int cuda_device_count(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // as in cuda_backend(): a later query starts clean
    if (why)
      *why = detail::concat("cudaGetDeviceCount failed with ", cudaGetErrorName(e), " (error ", static_cast<int>(e),
                            ": ", cudaGetErrorString(e), ")");
    return 0;
  }
  if (count == 0 && why) *why = "the CUDA runtime sees no device";
  return count;
}

// cudaSetDevice sets the calling thread's current GPU, which the backend reads when it starts;
// every CUDA call of this project comes from the main thread.
void use_cuda_device(int index) {
  const int running = g_backend_device.load();
  if (running >= 0) {
    UPCYCLE_CHECK(running == index, "use_cuda_device(", index, "): the CUDA backend already runs on GPU ", running,
                  "; choose the GPU before the first use of a cuda tensor");
    return;
  }
  std::string why;
  const int count = cuda_device_count(&why);
  UPCYCLE_CHECK(index >= 0 && index < count, "use_cuda_device(", index, "): the CUDA runtime sees ", count,
                " GPU(s)", why.empty() ? "" : ": " + why);
  UPCYCLE_CUDA_CHECK(cudaSetDevice(index));
}

std::string cuda_pci_bus_id(int index) {
  char id[64] = {};
  UPCYCLE_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof id), index));
  return id;
}

}  // namespace upcycle
