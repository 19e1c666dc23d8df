#include "upcycle/train/stop_request.hpp"

#include <csignal>

namespace upcycle {

namespace {
// The one kind of object a signal handler may write portably.
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int signal_number) {
  if (g_signal == 0) g_signal = signal_number;
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = &on_stop_signal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a blocking read or write interrupted by the signal resumes instead of failing
  // with EINTR inside MPI, HDF5 or the data loader.
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

int stop_signal() { return g_signal; }

void request_stop(int signal_number) {
  if (g_signal == 0) g_signal = signal_number;
}

void clear_stop_request() { g_signal = 0; }

std::string signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "signal " + std::to_string(signal_number);
  }
}

StopRequested::StopRequested(int signal_number, std::string stage, long long step)
    : signal_(signal_number),
      message_("stopped by " + signal_name(signal_number) + " after step " + std::to_string(step) + " of stage " +
               stage + "; the checkpoint of that step is saved: resume with checkpoint.resume = auto") {}

}  // namespace upcycle
