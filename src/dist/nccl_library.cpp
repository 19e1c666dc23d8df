// Loading NCCL at run time (see nccl_library.hpp for why).
#include "nccl_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <type_traits>
#include <vector>

#include "upcycle/core/error.hpp"

#ifndef UPCYCLE_NCCL_BUILD_LIBRARY
#define UPCYCLE_NCCL_BUILD_LIBRARY ""
#endif

namespace upcycle::nccl {

std::string version_text(int code) {
  const bool old_encoding = code < 10000;  // NCCL_VERSION of 2.8.x and older: X * 1000 + Y * 100 + Z
  const int major = old_encoding ? code / 1000 : code / 10000;
  const int minor = old_encoding ? code % 1000 / 100 : code % 10000 / 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

namespace {

// dlopen of the first candidate that loads; `tried` collects the failures for the message.
void* open_library(std::string& path, std::string& tried) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("UPCYCLE_NCCL_LIBRARY"); env && *env) candidates.emplace_back(env);
  candidates.emplace_back("libnccl.so.2");
  if (*UPCYCLE_NCCL_BUILD_LIBRARY) candidates.emplace_back(UPCYCLE_NCCL_BUILD_LIBRARY);
  for (const std::string& c : candidates) {
    // RTLD_LOCAL: NCCL's symbols stay out of the global namespace (nothing else resolves against them).
    if (void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      path = c;
      return h;
    }
    const char* e = dlerror();
    tried += (tried.empty() ? "" : "; ") + c + ": " + (e ? e : "dlopen failed");
  }
  return nullptr;
}

Library load() {
  Library lib;
  std::string tried;
  void* h = open_library(lib.path, tried);
  if (!h)
    UPCYCLE_THROW("cannot load the NCCL library (tried ", tried,
                  "); install NCCL or point UPCYCLE_NCCL_LIBRARY at libnccl.so.2");
  std::string missing;
  auto resolve = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
    if (!fn) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
  resolve(lib.GetVersion, "ncclGetVersion");
  resolve(lib.GetUniqueId, "ncclGetUniqueId");
  resolve(lib.CommInitRank, "ncclCommInitRank");
  resolve(lib.CommSplit, "ncclCommSplit");
  resolve(lib.CommDestroy, "ncclCommDestroy");
  resolve(lib.CommAbort, "ncclCommAbort");
  resolve(lib.CommCount, "ncclCommCount");
  resolve(lib.CommUserRank, "ncclCommUserRank");
  resolve(lib.GetErrorString, "ncclGetErrorString");
  resolve(lib.GetLastError, "ncclGetLastError");
  resolve(lib.AllReduce, "ncclAllReduce");
  resolve(lib.AllGather, "ncclAllGather");
  resolve(lib.ReduceScatter, "ncclReduceScatter");
  resolve(lib.Broadcast, "ncclBroadcast");
  resolve(lib.Send, "ncclSend");
  resolve(lib.Recv, "ncclRecv");
  resolve(lib.GroupStart, "ncclGroupStart");
  resolve(lib.GroupEnd, "ncclGroupEnd");
  // The library stays loaded for the process's lifetime (communicators may outlive main's scope).
  if (!lib.GetVersion || lib.GetVersion(&lib.version) != ncclSuccess)
    UPCYCLE_THROW(lib.path, ": ncclGetVersion ", lib.GetVersion ? "failed" : "is missing",
                  "; is this the NCCL library?");
  if (!missing.empty())
    UPCYCLE_THROW(lib.path, " (NCCL ", version_text(lib.version), ") lacks ", missing, "; NCCL ",
                  version_text(kMinVersion), " or later is needed");
  if (lib.version < kMinVersion)
    UPCYCLE_THROW(lib.path, " is NCCL ", version_text(lib.version), "; NCCL ", version_text(kMinVersion),
                  " or later is needed (ncclCommSplit)");
  return lib;
}

}  // namespace

const Library& library() {
  // Loaded once; a failure is kept and rethrown, so every caller gets the same message.
  static std::once_flag once;
  static Library* loaded = nullptr;
  static Error* failure = nullptr;
  std::call_once(once, [] {
    try {
      loaded = new Library(load());  // never freed, like the library itself
    } catch (const Error& e) {
      failure = new Error(e);
    }
  });
  if (!loaded) throw Error(*failure);
  return *loaded;
}

void check(ncclResult_t result, const char* call, ncclComm_t comm, const std::string& where) {
  if (result == ncclSuccess) return;
  const Library& lib = library();
  // ncclGetLastError holds NCCL's own explanation (e.g. "Duplicate GPU detected : rank 1 and rank 0
  // both on CUDA device 1000"), also when NCCL_DEBUG is unset.
  const char* last = lib.GetLastError(comm);
  UPCYCLE_THROW(call, " failed", where.empty() ? "" : " on " + where, ": ", lib.GetErrorString(result),
                last && *last ? std::string(" (") + last + ")" : std::string());
}

}  // namespace upcycle::nccl
