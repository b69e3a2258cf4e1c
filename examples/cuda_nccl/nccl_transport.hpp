// examples/cuda_nccl/nccl_transport.hpp - group-free collectives on NCCL: one world communicator, any group.
//
// paraflex::Transport (collectives/concepts.hpp) over NCCL, single process, one thread per GPU.
// The world communicator is created once (ncclCommInitAll over every visible device, world rank =
// CUDA device ordinal = paraflex device_id). A "group" is never a communicator: every collective
// takes a device_group and is built from ncclSend/ncclRecv pairs inside ncclGroupStart/End on the
// world communicator, so forming a group costs nothing and no ncclCommSplit/ncclCommInitRank is ever
// needed after start-up (GF-DiT's measurement: communicator creation 0.1-2.5 s, a group value ~us).
//
//   all_gather(g, self, send, recv)  rank r sends its block to every other member and receives theirs;
//                                    its own block is a device-local copy
//   all_to_all(g, self, send, recv)  chunk j of send goes to g[j]; chunk j of recv comes from g[j]
//   send / recv                      one ncclSend / ncclRecv on the world communicator
//   barrier(g, self)                 a one-byte all_gather, then the host waits for the stream
//
// Semantics next to the CPU transports: spans hold DEVICE memory of `self`'s GPU, and calls are
// stream-ordered - they return once the work is enqueued on stream(self); later work on that stream
// sees the result, and synchronize(self) waits for it. barrier() is the exception: it returns only
// when every member has reached it. Calls for one `self` must come from one thread at a time (an
// NCCL communicator is not thread-safe); different selves may run on different threads at once.
// All-to-all and all-gather on p2p pairs cost k-1 sends per rank: right for single-node groups of
// up to 8-16 GPUs on NVLink, where every pair has a direct link.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <paraflex/collectives/concepts.hpp>
#include <paraflex/resource/group.hpp>

#include "cuda_check.hpp"

namespace paraflex::cuda_nccl {

class nccl_transport {
 public:
  /// Creates the world communicator over devices 0..devices-1, one non-blocking stream per device,
  /// and connects every pair once (NCCL connects lazily; doing it here keeps the first collective of
  /// a new group as cheap as any other - the point of group-free collectives). Throws cuda_error.
  explicit nccl_transport(int devices, bool connect_all_pairs = true) : n_(devices) {
    if (devices < 1) throw std::invalid_argument("nccl_transport: need at least one device");
    int current = 0;
    check(cudaGetDevice(&current), "cudaGetDevice");
    comms_.assign(static_cast<std::size_t>(n_), nullptr);
    streams_.assign(static_cast<std::size_t>(n_), nullptr);
    token_.assign(static_cast<std::size_t>(n_), nullptr);
    try {
      std::vector<int> ordinals(static_cast<std::size_t>(n_));
      std::iota(ordinals.begin(), ordinals.end(), 0);
      check(ncclCommInitAll(comms_.data(), n_, ordinals.data()), "ncclCommInitAll");
      for (int d = 0; d < n_; ++d) {
        const device_guard on(d);
        const auto i = static_cast<std::size_t>(d);
        check(cudaStreamCreateWithFlags(&streams_[i], cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        // barrier scratch: one byte to send plus one per possible member to receive
        check(cudaMalloc(&token_[i], static_cast<std::size_t>(n_) + 1), "cudaMalloc(barrier token)");
        check(cudaMemset(token_[i], 0, static_cast<std::size_t>(n_) + 1), "cudaMemset(barrier token)");
      }
      if (connect_all_pairs && n_ > 1) connect_all();
    } catch (...) {
      release();
      (void)cudaSetDevice(current);
      throw;
    }
    (void)cudaSetDevice(current);
  }

  ~nccl_transport() { release(); }
  nccl_transport(const nccl_transport&) = delete;
  nccl_transport& operator=(const nccl_transport&) = delete;

  [[nodiscard]] int world_size() const noexcept { return n_; }
  [[nodiscard]] cudaStream_t stream(device_id self) const { return streams_.at(self); }
  [[nodiscard]] ncclComm_t comm(device_id self) const {
    ncclComm_t c = comms_.at(self);
    if (c == nullptr) throw cuda_error("nccl_transport: the communicator of device " + std::to_string(self) + " was aborted");
    return c;
  }

  /// Waits until everything enqueued for `self` has run; then reports any asynchronous NCCL error.
  void synchronize(device_id self) const {
    const device_guard on(static_cast<int>(self));
    check(cudaStreamSynchronize(stream(self)), "cudaStreamSynchronize");
    check_async(self);
  }

  /// synchronize() with a time limit: false when the stream is still busy after `timeout` (a peer
  /// that never posted its half of a send/recv leaves NCCL kernels waiting forever - see abort()).
  /// Polls instead of blocking so that asynchronous NCCL errors surface while waiting.
  [[nodiscard]] bool wait_for(device_id self, std::chrono::steady_clock::duration timeout) const {
    const device_guard on(static_cast<int>(self));
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (int spins = 0;; ++spins) {
      const cudaError_t q = cudaStreamQuery(stream(self));
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) check(q, "cudaStreamQuery");
      check_async(self);
      if (std::chrono::steady_clock::now() >= until) return false;
      // Spin briefly (short collectives finish in microseconds), then stop burning a core.
      if (spins < 2000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_async(self);
    return true;
  }

  /// Tears down `self`'s communicator (ncclCommAbort), which also ends NCCL kernels stuck waiting for
  /// a peer. The device can take part in no collective afterwards: the executor reports it lost.
  void abort(device_id self) noexcept {
    if (self >= comms_.size() || comms_[self] == nullptr) return;
    (void)ncclCommAbort(comms_[self]);
    comms_[self] = nullptr;
  }

  // --- paraflex::Transport ---------------------------------------------------------------------------

  void all_gather(const device_group& g, device_id self, std::span<const std::byte> send, std::span<std::byte> recv) {
    const std::size_t r = rank_of(g, self, "all_gather");
    const std::size_t chunk = send.size();
    if (recv.size() != chunk * g.size()) {
      throw std::invalid_argument("nccl_transport::all_gather: recv holds " + std::to_string(recv.size()) + " bytes, expected " +
                                  std::to_string(chunk) + " x " + std::to_string(g.size()));
    }
    if (chunk == 0) return;
    const device_guard on(static_cast<int>(self));
    const cudaStream_t s = stream(self);
    // Own block first, outside the NCCL group: a plain device copy on the same stream.
    check(cudaMemcpyAsync(recv.data() + r * chunk, send.data(), chunk, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync(all_gather self)");
    if (g.size() == 1) return;
    check(ncclGroupStart(), "ncclGroupStart");
    for (std::size_t j = 0; j < g.size(); ++j) {
      if (j == r) continue;
      check(ncclSend(send.data(), chunk, ncclUint8, peer(g[j]), comm(self), s), "ncclSend(all_gather)");
      check(ncclRecv(recv.data() + j * chunk, chunk, ncclUint8, peer(g[j]), comm(self), s), "ncclRecv(all_gather)");
    }
    check(ncclGroupEnd(), "ncclGroupEnd(all_gather)");
  }

  void all_to_all(const device_group& g, device_id self, std::span<const std::byte> send, std::span<std::byte> recv) {
    const std::size_t r = rank_of(g, self, "all_to_all");
    if (send.size() != recv.size() || send.size() % g.size() != 0) {
      throw std::invalid_argument("nccl_transport::all_to_all: send (" + std::to_string(send.size()) + " bytes) and recv (" +
                                  std::to_string(recv.size()) + ") must be equal and divisible by the group size " +
                                  std::to_string(g.size()));
    }
    const std::size_t chunk = send.size() / g.size();
    if (chunk == 0) return;
    const device_guard on(static_cast<int>(self));
    const cudaStream_t s = stream(self);
    check(cudaMemcpyAsync(recv.data() + r * chunk, send.data() + r * chunk, chunk, cudaMemcpyDeviceToDevice, s),
          "cudaMemcpyAsync(all_to_all self)");
    if (g.size() == 1) return;
    check(ncclGroupStart(), "ncclGroupStart");
    for (std::size_t j = 0; j < g.size(); ++j) {
      if (j == r) continue;
      check(ncclSend(send.data() + j * chunk, chunk, ncclUint8, peer(g[j]), comm(self), s), "ncclSend(all_to_all)");
      check(ncclRecv(recv.data() + j * chunk, chunk, ncclUint8, peer(g[j]), comm(self), s), "ncclRecv(all_to_all)");
    }
    check(ncclGroupEnd(), "ncclGroupEnd(all_to_all)");
  }

  void send(device_id self, device_id to, std::span<const std::byte> bytes) {
    if (self == to) throw std::invalid_argument("nccl_transport::send: a device cannot send to itself (copy instead)");
    if (bytes.empty()) return;
    const device_guard on(static_cast<int>(self));
    check(ncclSend(bytes.data(), bytes.size(), ncclUint8, peer(to), comm(self), stream(self)), "ncclSend");
  }

  void recv(device_id self, device_id from, std::span<std::byte> bytes) {
    if (self == from) throw std::invalid_argument("nccl_transport::recv: a device cannot receive from itself (copy instead)");
    if (bytes.empty()) return;
    const device_guard on(static_cast<int>(self));
    check(ncclRecv(bytes.data(), bytes.size(), ncclUint8, peer(from), comm(self), stream(self)), "ncclRecv");
  }

  void barrier(const device_group& g, device_id self) {
    (void)rank_of(g, self, "barrier");
    auto* t = static_cast<std::byte*>(token_.at(self));
    all_gather(g, self, std::span<const std::byte>(t, 1), std::span<std::byte>(t + 1, g.size()));
    synchronize(self);  // the host leaves only when every member's byte has arrived
  }

  /// One byte between every pair of the world, from one thread: makes NCCL set up every p2p
  /// connection now instead of on a group's first collective.
  void connect_all() {
    const device_group world = device_group::contiguous(0, static_cast<std::size_t>(n_));
    check(ncclGroupStart(), "ncclGroupStart");
    for (int d = 0; d < n_; ++d) {
      auto* t = static_cast<std::byte*>(token_[static_cast<std::size_t>(d)]);
      for (int p = 0; p < n_; ++p) {
        if (p == d) continue;
        check(ncclSend(t, 1, ncclUint8, p, comms_[static_cast<std::size_t>(d)], streams_[static_cast<std::size_t>(d)]), "ncclSend(connect)");
        check(ncclRecv(t + 1 + p, 1, ncclUint8, p, comms_[static_cast<std::size_t>(d)], streams_[static_cast<std::size_t>(d)]), "ncclRecv(connect)");
      }
    }
    check(ncclGroupEnd(), "ncclGroupEnd(connect)");
    for (device_id d : world) synchronize(d);
  }

 private:
  /// Position of `self` in g; the call is meaningless for a non-member, so that is an error.
  static std::size_t rank_of(const device_group& g, device_id self, const char* op) {
    const auto it = std::find(g.begin(), g.end(), self);
    if (it == g.end()) {
      throw std::invalid_argument(std::string("nccl_transport::") + op + ": device " + std::to_string(self) + " is not in group " +
                                  g.to_string());
    }
    return static_cast<std::size_t>(it - g.begin());
  }
  void check_async(device_id self) const {
    ncclResult_t async = ncclSuccess;
    check(ncclCommGetAsyncError(comm(self), &async), "ncclCommGetAsyncError");
    check(async, "NCCL asynchronous error");
  }
  [[nodiscard]] int peer(device_id d) const {
    if (d >= static_cast<device_id>(n_)) throw std::out_of_range("nccl_transport: device " + std::to_string(d) + " is outside the world");
    return static_cast<int>(d);
  }

  void release() noexcept {
    for (std::size_t i = 0; i < comms_.size(); ++i) {
      if (comms_[i] != nullptr) (void)ncclCommDestroy(comms_[i]);
      comms_[i] = nullptr;
    }
    for (std::size_t i = 0; i < streams_.size(); ++i) {
      (void)cudaSetDevice(static_cast<int>(i));
      if (token_[i] != nullptr) (void)cudaFree(token_[i]);
      if (streams_[i] != nullptr) (void)cudaStreamDestroy(streams_[i]);
      token_[i] = nullptr;
      streams_[i] = nullptr;
    }
  }

  int n_ = 0;
  std::vector<ncclComm_t> comms_;
  std::vector<cudaStream_t> streams_;
  std::vector<void*> token_;
};

static_assert(Transport<nccl_transport>);

}  // namespace paraflex::cuda_nccl
