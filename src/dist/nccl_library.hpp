#pragma once
// The NCCL functions this project calls, resolved at run time from libnccl.so.2 (dlopen), so that
// no program of a CUDA build needs NCCL to start (the device bundle carries no NCCL: its 200 MB do
// not fit; the GPU machine's own library is used). Only compiled with UPCYCLE_WITH_NCCL; the
// declarations and types come from the nccl.h CMake found.
#include <nccl.h>

#include <string>

namespace upcycle::nccl {

struct Library {
  std::string path;  // what was loaded
  int version = 0;   // ncclGetVersion: NCCL_VERSION(major, minor, patch)
  decltype(&::ncclGetVersion) GetVersion = nullptr;
  decltype(&::ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&::ncclCommInitRank) CommInitRank = nullptr;
  decltype(&::ncclCommSplit) CommSplit = nullptr;
  decltype(&::ncclCommDestroy) CommDestroy = nullptr;
  decltype(&::ncclCommAbort) CommAbort = nullptr;
  decltype(&::ncclCommCount) CommCount = nullptr;
  decltype(&::ncclCommUserRank) CommUserRank = nullptr;
  decltype(&::ncclGetErrorString) GetErrorString = nullptr;
  decltype(&::ncclGetLastError) GetLastError = nullptr;
  decltype(&::ncclAllReduce) AllReduce = nullptr;
  decltype(&::ncclAllGather) AllGather = nullptr;
  decltype(&::ncclReduceScatter) ReduceScatter = nullptr;
  decltype(&::ncclBroadcast) Broadcast = nullptr;
  decltype(&::ncclSend) Send = nullptr;
  decltype(&::ncclRecv) Recv = nullptr;
  decltype(&::ncclGroupStart) GroupStart = nullptr;
  decltype(&::ncclGroupEnd) GroupEnd = nullptr;
};

// The oldest NCCL this project runs with: ncclCommSplit arrived in 2.18.
constexpr int kMinVersion = 21800;

// "2.28.9" for a version code (NCCL_VERSION encoding: 2.8.x and older were 1000-based).
std::string version_text(int code);

// Loads the library on the first call: $UPCYCLE_NCCL_LIBRARY when set, else libnccl.so.2 on the
// library path, else the library CMake found. Throws an Error naming every place tried (with
// dlerror) when none loads, a function is missing, or the version is older than kMinVersion; the
// failure is remembered, so later calls throw the same Error.
const Library& library();

// Throws an Error "<call> failed (on rank r of n): <ncclGetErrorString> (<ncclGetLastError>)"
// unless result is ncclSuccess; comm may be null (a failed init). `where` is the rank part.
void check(ncclResult_t result, const char* call, ncclComm_t comm, const std::string& where);

}  // namespace upcycle::nccl
