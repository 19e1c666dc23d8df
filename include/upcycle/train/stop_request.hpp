#pragma once
// Stopping a run cleanly on request (Slurm preemption, a time limit, scancel, kill -USR1):
// SIGTERM and SIGUSR1 only raise a flag here. The Trainer agrees on it over all ranks at the end
// of each step (one more value in the step's all-reduce, so every rank stops after the same step
// even when the signal reached them at different moments), writes a checkpoint at that step and
// throws StopRequested; upcycle_train then exits with kExitStopped on every rank.
#include <exception>
#include <string>

namespace upcycle {

// Exit status of a run stopped by a signal after saving a checkpoint: resume to continue
// (checkpoint.resume = auto). 75 is EX_TEMPFAIL of sysexits.h: "temporary failure, retry later".
inline constexpr int kExitStopped = 75;

// Installs the handlers of SIGTERM and SIGUSR1 (idempotent). Call once at program start, before
// the first stage: a signal that arrives during a stage without training steps (upcycle, eval)
// then stops the run at the next training step instead of killing it.
void install_stop_signal_handlers();

// The signal number that asked this process to stop, 0 when none did. Further signals change
// nothing: the first one is kept.
int stop_signal();

// Sets the request as a signal would (tests, and code that must stop on its own terms).
void request_stop(int signal_number);
// Forgets a request (tests).
void clear_stop_request();

// "SIGTERM", "SIGUSR1", or "signal N".
std::string signal_name(int signal_number);

// Thrown by the Trainer on every rank once the checkpoint of the stopping step is written.
class StopRequested : public std::exception {
 public:
  StopRequested(int signal_number, std::string stage, long long step);
  const char* what() const noexcept override { return message_.c_str(); }
  int signal_number() const { return signal_; }

 private:
  int signal_;
  std::string message_;
};

}  // namespace upcycle
