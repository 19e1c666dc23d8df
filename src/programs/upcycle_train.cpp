// upcycle_train: reads and validates the config, prepares the run directory, runs the stages.
// Exit status (README.md "Command line"): 0 success, 2 usage or config error, 1 failure at run time.
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>

#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/core/error.hpp"
#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/io/command_line.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/log.hpp"
#include "upcycle/train/stages.hpp"
#include "upcycle/train/stop_request.hpp"

namespace {

void run(const upcycle::Config& cfg) {
  const std::filesystem::path dir = cfg.get_string("run.dir");
  if (dir.empty()) UPCYCLE_USAGE_ERROR("run.dir is empty, but upcycle_train writes its outputs there: set [run] dir");
  // What this build cannot run, and the device every stage trains on ("cuda" without a usable GPU
  // fails here, naming the CUDA error), are checked before anything is written to the run directory.
  upcycle::check_stages_runnable(cfg);
  upcycle::set_log_level(upcycle::parse_log_level(cfg.get_string("log.level")));
  // One GPU per rank, chosen from the node-local rank before the CUDA backend starts on it; then
  // the device, then the communicator for that device (parallel.backend = nccl on the CPU stops here).
  const std::string& backend_key = cfg.get_string("parallel.backend");
  const upcycle::GpuBinding gpu = upcycle::bind_rank_to_gpu(cfg.get_string("run.device"), backend_key);
  const upcycle::DeviceChoice device = upcycle::choose_device(cfg.get_string("run.device"));
  const upcycle::NcclSupport nccl =
      backend_key == "mpi" ? upcycle::NcclSupport{} : upcycle::nccl_support();  // mpi never loads NCCL
  const upcycle::CommBackendChoice comm = upcycle::resolve_comm_backend(backend_key, device, nccl);
  if (device.device == upcycle::Device::cuda)
    upcycle::backend_for(upcycle::Device::cuda).set_allow_tf32(cfg.get_bool("run.allow_tf32"));
  const auto world = upcycle::make_world_communicator(comm.backend);
  // Every rank names itself first (log.level = debug): where each process of a multi-node job
  // runs, and on which GPU.
  if (upcycle::log_enabled(upcycle::LogLevel::debug)) {
    char host[256] = "?";
    ::gethostname(host, sizeof host - 1);
    std::string line = "rank " + std::to_string(world->rank()) + " of " + std::to_string(world->size()) + " on host " +
                       host + " (node-local rank " + std::to_string(gpu.node.local_rank) + " of " +
                       std::to_string(gpu.node.local_size) + "), pid " + std::to_string(::getpid()) + ", device " +
                       upcycle::device_name(device.device);
    if (device.device == upcycle::Device::cuda && gpu.gpu >= 0)
      line += ": GPU " + std::to_string(gpu.gpu) + " of " + std::to_string(gpu.gpu_count) + ", PCI " + gpu.pci_bus_id;
    line += ", communicator " + std::string(upcycle::comm_backend_name(comm.backend));
    if (comm.backend == upcycle::CommBackend::nccl) line += " (NCCL " + upcycle::nccl_version_string() + ")";
    upcycle::log_debug(line);
  }
  if (world->rank() == 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) UPCYCLE_THROW("cannot create run directory '", dir.string(), "': ", ec.message());
    // A resumed run replaces config.ini only once its checkpoint loaded (the trainer does it), so
    // a failed resume leaves the description of the existing checkpoints intact.
    if (cfg.get_string("checkpoint.resume").empty()) upcycle::write_config_file(cfg, (dir / "config.ini").string());
  }
  const int threads = upcycle::configure_cpu_threads(static_cast<int>(cfg.get_int("run.threads")));
  if (world->rank() == 0) {
    upcycle::log_info("upcycle_train: " + std::to_string(world->size()) + " rank(s) x " + std::to_string(threads) +
                      " thread(s) on " + upcycle::device_name(device.device) + ", run dir " + dir.string());
    if (!device.reason.empty()) upcycle::log_info(device.reason);
    if (!comm.reason.empty()) upcycle::log_info(comm.reason);
  }
  world->barrier();
  upcycle::run_stages(cfg, world);
}

}  // namespace

int main(int argc, char** argv) {
  // MPI starts before anything else reads argv; a failure on one rank ends the whole job, since
  // the other ranks may be waiting in a collective for it.
  std::unique_ptr<upcycle::MpiSession> mpi;
  try {
    mpi = std::make_unique<upcycle::MpiSession>(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "upcycle_train: " << e.what() << "\n";
    return 1;
  }
  try {
    const upcycle::CommandLine cl = upcycle::parse_command_line(argc, argv);
    if (cl.help) {
      std::cout << upcycle::command_line_help();
      return 0;
    }
    const upcycle::Config cfg = upcycle::load_config(cl.config_path, cl.overrides);
    if (cl.print_config) {
      std::cout << cfg.to_ini();
      return 0;
    }
    upcycle::install_stop_signal_handlers();
    run(cfg);
    return 0;
  } catch (const upcycle::StopRequested& e) {
    // Every rank stops after the same step (the trainer agreed on it), so none is left waiting.
    std::cerr << "upcycle_train: " << e.what() << "\n";
    return upcycle::kExitStopped;
  } catch (const upcycle::UsageError& e) {
    // Every rank reads the same config, so every rank fails here alike: no abort needed.
    std::cerr << "upcycle_train: error: " << e.message() << "\n(see upcycle_train --help)\n";
    return 2;
  } catch (const std::exception& e) {  // upcycle::Error included: its source location helps a bug report
    std::cerr << "upcycle_train: " << e.what() << "\n";
    mpi->abort_job(1);
    return 1;
  }
}
