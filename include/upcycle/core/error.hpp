#pragma once
// Errors carry the source location and throw; library code never exits.
#include <sstream>
#include <stdexcept>
#include <string>

namespace upcycle {

class Error : public std::runtime_error {
 public:
  Error(const char* file, int line, const std::string& msg)
      : std::runtime_error(msg + " [" + file + ":" + std::to_string(line) + "]"), message_(msg) {}
  // The message without the source location, for user-facing output.
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// Errors in user input (config, command line) that map to exit status 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace upcycle

#define UPCYCLE_THROW(...) throw ::upcycle::Error(__FILE__, __LINE__, ::upcycle::detail::concat(__VA_ARGS__))
#define UPCYCLE_USAGE_ERROR(...) \
  throw ::upcycle::UsageError(__FILE__, __LINE__, ::upcycle::detail::concat(__VA_ARGS__))
#define UPCYCLE_CHECK(cond, ...)                                                          \
  do {                                                                                    \
    if (!(cond)) UPCYCLE_THROW("check failed: " #cond ": ", ::upcycle::detail::concat(__VA_ARGS__)); \
  } while (0)
