#pragma once
// The message of the exception `body` throws (what(), with upcycle's file:line), "" when it does
// not throw: for tests that check what an error says.
#include <exception>
#include <string>

namespace upcycle::testing {

template <class F>
std::string error_of(F&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace upcycle::testing
