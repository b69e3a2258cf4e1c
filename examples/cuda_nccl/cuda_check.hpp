// examples/cuda_nccl/cuda_check.hpp - CUDA, NCCL and cuBLAS status codes as exceptions, and a device guard.
//
// Every CUDA/NCCL/cuBLAS call in this example goes through check(): a failure becomes a cuda_error
// whose message names the call and the library's own description. The executor catches it at the
// task boundary and reports task_failed with that message, so a log says what broke and where.
#pragma once

#include <stdexcept>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

namespace paraflex::cuda_nccl {

/// A failed CUDA, NCCL or cuBLAS call; what() is "<call>: <library's description>".
class cuda_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return;
  // Clear the thread's last-error slot: a non-sticky failure (an allocation that did not fit) must not
  // resurface in the next, unrelated cudaGetLastError() - a kernel launch check, say.
  (void)cudaGetLastError();
  throw cuda_error(std::string(call) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline void check(ncclResult_t r, const char* call) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  std::string msg = std::string(call) + ": " + ncclGetErrorString(r);
  // ncclGetLastError(nullptr) gives the most recent detail NCCL logged on this thread, if any.
  if (const char* last = ncclGetLastError(nullptr); last != nullptr && *last != '\0') msg += std::string(" (") + last + ")";
  throw cuda_error(msg);
}

inline void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) throw cuda_error(std::string(call) + ": " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

/// Makes `device` current for the calling thread and restores the previous one on exit, so that
/// helpers can touch another GPU (a peer copy, a free) without surprising their caller.
class device_guard {
 public:
  explicit device_guard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~device_guard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace paraflex::cuda_nccl
