// examples/cuda_nccl/cuda_executor.hpp - paraflex::BlockingExecutor on real GPUs (CUDA + NCCL + cuBLAS).
//
// The CUDA twin of paraflex::thread_executor (executor/thread_executor.hpp), with the same contract:
// one worker thread per GPU (it calls cudaSetDevice once and owns that GPU's cuBLAS handle, weights
// and scratch), launch() queues a task on all its devices at once under one lock - one global order,
// so gang starts cannot deadlock - and a task starts on all its devices together. Completions come
// back through poll(); now() is microseconds since construction; wait_until(t) sleeps until an event
// is ready or t passes.
//
// What a task does is a DiT-step stand-in on real device memory (bf16, like DiT activations):
//   encode   allocates the request's state on every rank - its slice of the noise latent
//            (tokens x 64 channels, slice = shard_range from collectives/migration_plan.hpp, padded
//            to ceil(tokens/k) rows so all-to-all chunks are equal) and the replicated prompt
//            embeddings (512 x 4096)
//   step     per rank: latent -> hidden (GEMM), then `layers` times: pack heads, Ulysses all_to_all
//            (sequence-sharded -> head-sharded), an "attention" GEMM over the full sequence on T x H/k,
//            all_to_all back, GELU, an "MLP" GEMM sized (T/k) x H x H; finally latent += dt * hidden
//            x W_out. GEMMs are cuBLAS, collectives are nccl_transport (group-free)
//   decode   all_gathers the latent (the VAE sees the whole image) and checks it is finite
//   migrate  moves the state to the destination group along plan_migration's edges: each
//            destination pulls its slices with cudaMemcpyPeerAsync (local edges: a device copy) and
//            its prompt copy from a source. Sources take no part: the scheduler may hand a migration
//            a source that is busy with another request's step, and the copy engines serve the pull
//            without stopping it (nor touching its NCCL communicator, which is not thread-safe).
// Where a step runs on the same devices as its state but in another rank order, the executor keeps
// the state's order (the stored layout): the result is the same and nothing moves.
//
// Outcomes are transactional per launch, as in the thread executor: encode and migrate build new
// buffers that replace the old state only when every rank succeeded; a failed launch frees what it
// built. A step updates the latent in place in its last GEMM only, so a failure before it leaves the
// state as it was. Every CUDA/NCCL/cuBLAS error becomes task_failed with its message kept in
// failures(). Everything that can fail synchronously (allocations, sizes) is done before the first
// collective, and the ranks agree on it first, so one rank's error cannot leave its peers waiting in
// NCCL. If a stream still hangs past task_timeout, the device's communicator is aborted and the
// device is reported lost (the runtime then never uses it again).
//
// Batched steps (paraflex::BatchingExecutor; task_launch::batch): one gang on the batch's group. The
// members laid out in the same rank order run as one stacked forward - their rows stacked into every
// GEMM ([b x T/k, H] instead of [T/k, H]) and one all_to_all per exchange carrying every member's
// slice - which is where a batch of small images wins on a GPU: b times the rows per kernel and per
// collective, the same launches. Members in another rank order (same devices) form their own stack,
// in member order on every rank. Each member's final hidden state is kept apart, and the writes to
// the members' latents all come last, after every collective and kernel of the batch: a failure
// before them leaves every member's state as it was, and the batch fails as a whole (one
// task_failed per member). A batch of encodes builds every member's state and installs them together.
//
// The executor's bookkeeping (which request's state lives where, in which layout) is touched only by
// the thread that calls launch/poll/release - the runtime's - so it needs no lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <paraflex/collectives/migration_plan.hpp>
#include <paraflex/executor/concepts.hpp>
#include <paraflex/executor/realtime_waiter.hpp>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "nccl_transport.hpp"

namespace paraflex::cuda_nccl {

/// Sizes of the DiT stand-in. The defaults are FLUX.1's width and latent channels with 4 blocks
/// (FLUX has 57) so that the demo stays short; raise `layers` for realistic step times.
struct standin_config {
  int hidden = 3072;        ///< H; every degree used must divide it (3072: 1, 2, 3, 4, 6, 8, 12, 16, 24)
  int channels = 64;        ///< latent channels per token
  int layers = 4;           ///< transformer blocks per step
  int prompt_tokens = 512;  ///< prompt embeddings: prompt_tokens x prompt_dim, replicated on every rank
  int prompt_dim = 4096;
  float step_size = 0.02f;  ///< latent += step_size * update (keeps values bounded over many steps)
  std::chrono::milliseconds task_timeout{120'000};  ///< a stream busy for longer: the device is lost
};

class cuda_executor {
 public:
  /// One worker per device of `transport`'s world. Throws cuda_error when a device cannot be set up.
  explicit cuda_executor(nccl_transport& transport, standin_config model = {})
      : transport_(transport), model_(model) {
    if (model_.hidden < 1 || model_.channels < 1 || model_.layers < 0 || model_.prompt_tokens < 0 || model_.prompt_dim < 0) {
      throw std::invalid_argument("cuda_executor: invalid stand-in sizes");
    }
    const auto n = static_cast<std::size_t>(transport_.world_size());
    workers_.reserve(n);
    for (std::size_t d = 0; d < n; ++d) workers_.push_back(std::make_unique<worker>(static_cast<device_id>(d)));
    for (auto& w : workers_) w->thread = std::thread([this, p = w.get()] { work(*p); });
    // Wait until every worker has set up its GPU; report the first failure.
    std::unique_lock lk(mu_);
    ready_cv_.wait(lk, [&] { return ready_ == workers_.size(); });
    if (!init_error_.empty()) {
      lk.unlock();
      shutdown();
      throw cuda_error("cuda_executor: " + init_error_);
    }
  }

  ~cuda_executor() { shutdown(); }
  cuda_executor(const cuda_executor&) = delete;
  cuda_executor& operator=(const cuda_executor&) = delete;

  // --- paraflex::BlockingExecutor ---------------------------------------------------------------------

  /// Batched steps and encodes (see the header comment).
  static constexpr bool runs_batches = true;

  void launch(const task_launch& l) {
    auto j = std::make_shared<job>();
    j->launch = l;
    if (l.shape != nullptr) {
      j->shape = *l.shape;  // the runtime's shape table may move while the task runs
      j->launch.shape = &j->shape;
    }
    j->batch.assign(l.batch.begin(), l.batch.end());  // l.batch is valid only during this call
    j->launch.batch = j->batch;
    if (j->batch.empty()) j->requests.push_back(l.request);
    for (const auto& m : j->batch) j->requests.push_back(m.request);
    try {
      plan_job(*j);
    } catch (const std::exception& e) {  // nothing to run: fail at once, with the reason
      j->failed = true;
      j->error = e.what();
      std::lock_guard lk(mu_);
      finished_.push_back(finished_job{j, now()});
      waiter_.wake();
      return;
    }
    std::lock_guard lk(mu_);
    for (device_id d : j->members) {  // every queue at once, under one lock: one global order
      workers_[d]->queue.push_back(item{j, {}});
      workers_[d]->wake.notify_all();
    }
  }

  /// Appends the events of launches that ended since the last poll (task_failed before the
  /// device_lost of a device it hung), and commits or rolls back their state changes.
  void poll(std::vector<executor_event>& out) {
    std::deque<finished_job> done;
    {
      std::lock_guard lk(mu_);
      done.swap(finished_);
    }
    for (auto& f : done) {
      job& j = *f.j;
      settle(j);
      for (request_handle h : j.requests) {  // one event per member of a batch, all alike
        out.push_back(executor_event{f.at, j.failed ? executor_event_kind::task_failed : executor_event_kind::task_done, j.launch.id, h, 0});
      }
      for (device_id d : j.hung) out.push_back(executor_event{f.at, executor_event_kind::device_lost, 0, 0, d});
    }
  }

  [[nodiscard]] tick now() const noexcept { return waiter_.now(); }

  void wait_until(tick t) {
    std::unique_lock lk(mu_);
    waiter_.wait_until(lk, t, [&] { return !finished_.empty(); });
  }

  /// Wakes a wait_until in progress (from any thread), e.g. after a submit from another thread.
  void notify() { waiter_.notify(mu_); }

  // --- beyond the concept ------------------------------------------------------------------------------

  /// Frees h's device state (a request dropped before its decode). Call from the runtime's thread,
  /// e.g. in scheduler::on_request_end; a no-op for a request without state.
  void release(request_handle h) {
    auto it = states_.find(h);
    if (it == states_.end()) return;
    free_later(it->second);
    states_.erase(it);
  }

  /// Runs f(rank, device) on the workers of g, gang-started, and waits for all of them; rethrows the
  /// first exception. For measurements (collective micro-benchmarks, communicator set-up) while no
  /// launch is in flight: f may use the transport for its device and the worker's current GPU.
  void run_gang(const device_group& g, std::function<void(std::size_t rank, device_id device)> f) {
    auto j = std::make_shared<job>();
    j->members = g;
    j->custom = std::move(f);
    auto done = j->custom_done.get_future();
    {
      std::lock_guard lk(mu_);
      for (device_id d : g) {
        if (d >= workers_.size()) throw std::invalid_argument("cuda_executor::run_gang: device " + std::to_string(d) + " out of range");
      }
      for (device_id d : g) {
        workers_[d]->queue.push_back(item{j, {}});
        workers_[d]->wake.notify_all();
      }
    }
    done.get();
    if (j->failed) throw cuda_error(j->error);
  }

  /// Why launches failed ("launch 7 (step 3 of request 2): device 1: cublasGemmEx: ..."), oldest first.
  [[nodiscard]] const std::vector<std::string>& failures() const noexcept { return failures_; }
  /// Requests whose state is held on the GPUs (0 after a run in which every request ended).
  [[nodiscard]] std::size_t live_states() const noexcept { return states_.size(); }
  /// The ordered devices holding h's state (empty when none): rank i holds slice i.
  [[nodiscard]] device_group layout_of(request_handle h) const {
    auto it = states_.find(h);
    return it == states_.end() ? device_group{} : it->second->layout;
  }
  [[nodiscard]] std::size_t device_count() const noexcept { return workers_.size(); }
  [[nodiscard]] nccl_transport& transport() noexcept { return transport_; }
  [[nodiscard]] const standin_config& model() const noexcept { return model_; }

 private:
  using clock = std::chrono::steady_clock;
  static constexpr std::size_t bf16 = 2;  // bytes per element
  static constexpr std::size_t workspace_bytes = std::size_t{32} << 20;

  struct rank_buffers {
    void* latent = nullptr;  ///< rows x channels
    void* prompt = nullptr;  ///< prompt_tokens x prompt_dim
  };
  /// One request's state on the GPUs: rank i of `layout` holds rows shard_range(i, k, tokens).
  struct request_state {
    device_group layout;
    std::size_t tokens = 0;
    std::size_t rows = 0;  ///< capacity per rank: ceil(tokens / k), so all-to-all chunks are equal
    std::vector<rank_buffers> ranks;
  };
  using state_ptr = std::shared_ptr<request_state>;

  struct job {
    task_launch launch;
    request_shape shape;
    device_group members;  ///< devices that run a part, in rank order
    state_ptr state;       ///< the state read (step, decode, migrate's source)
    state_ptr fresh;       ///< the state built (encode, migrate); replaces `state` on success
    migration_plan plan;   ///< migrate
    std::vector<batch_member> batch;         ///< a batched launch's members (launch.batch points here)
    std::vector<request_handle> requests;    ///< the request, or every member of a batch
    std::vector<state_ptr> batch_states;     ///< a batched step: each member's state, in member order
    std::vector<state_ptr> batch_fresh;      ///< a batched encode: each member's new state
    std::function<void(std::size_t, device_id)> custom;  ///< run_gang
    std::promise<void> custom_done;
    // Guarded by the executor's mutex:
    std::size_t arrived = 0, prepared = 0, finished = 0;
    bool failed = false;
    std::string error;
    std::vector<device_id> hung;
  };
  struct finished_job {
    std::shared_ptr<job> j;
    tick at = 0;
  };
  /// A worker's queue entry: a part of a gang job, or a chore for this device alone (frees).
  struct item {
    std::shared_ptr<job> j;
    std::function<void()> chore;
  };

  struct worker {
    explicit worker(device_id d) : device(d) {}
    device_id device;
    std::thread thread;
    std::deque<item> queue;        // guarded by the executor's mutex
    std::condition_variable wake;  // queue not empty, gang formed, or stopping
    // Owned by the worker thread:
    cublasHandle_t blas = nullptr;
    void* w_in = nullptr;   // channels x hidden
    void* w = nullptr;      // hidden x hidden (the attention GEMM uses its top-left H/k x H/k block)
    void* w_out = nullptr;  // hidden x channels
    std::byte* scratch = nullptr;
    std::size_t scratch_bytes = 0;
    float* d_sum = nullptr;
    float* h_sum = nullptr;  // pinned
    void* workspace = nullptr;  // cuBLAS
    std::atomic<bool> lost{false};
  };

  // --- launch: decide who runs what (runtime thread) ----------------------------------------------------

  void plan_job(job& j) {
    const task_launch& l = j.launch;
    if (l.group.empty()) throw std::invalid_argument("empty group");
    for (device_id d : l.group) {
      if (d >= workers_.size()) throw std::invalid_argument("device " + std::to_string(d) + " out of range");
      if (workers_[d]->lost) throw std::runtime_error("device " + std::to_string(d) + " was lost");
    }
    if (!j.batch.empty()) {
      plan_batch(j);
      return;
    }
    const request_handle h = l.request;
    auto it = states_.find(h);
    switch (l.task.kind) {
      case task_kind::encode: {
        if (l.shape == nullptr) throw std::invalid_argument("encode without a shape");
        j.fresh = make_state(l.group, static_cast<std::size_t>(latent_tokens(*l.shape)));
        j.members = l.group;
        break;
      }
      case task_kind::step:
      case task_kind::decode: {
        if (it == states_.end()) throw std::logic_error("request " + std::to_string(h) + " has no state on the GPUs (encode missing)");
        if (!it->second->layout.same_devices(l.group)) {
          throw std::logic_error("task on " + l.group.to_string() + " but the state lives on " + it->second->layout.to_string() +
                                 " (a migration is missing)");
        }
        j.state = it->second;
        j.members = j.state->layout;  // the stored rank order: same devices, nothing to move
        break;
      }
      case task_kind::migrate: {
        if (it == states_.end()) throw std::logic_error("migration of request " + std::to_string(h) + ", which has no state");
        if (!l.source.empty() && !it->second->layout.same_devices(l.source)) {
          throw std::logic_error("migration from " + l.source.to_string() + " but the state lives on " + it->second->layout.to_string());
        }
        j.state = it->second;
        j.plan = plan_migration(j.state->layout, l.group, j.state->tokens);
        j.fresh = make_state(j.plan.layout, j.state->tokens);
        j.members = j.plan.layout;  // rank i of the new layout builds slice i
        break;
      }
    }
  }

  void plan_batch(job& j) {
    const task_launch& l = j.launch;
    if (j.batch.size() < 2) throw std::invalid_argument("a batch needs two members or more");
    const task_kind kind = j.batch.front().task.kind;
    for (std::size_t i = 0; i < j.batch.size(); ++i) {
      if (j.batch[i].task.kind != kind) throw std::invalid_argument("the members of a batch run different kinds of task");
      for (std::size_t o = 0; o < i; ++o) {
        if (j.batch[o].request == j.batch[i].request) throw std::invalid_argument("request " + std::to_string(j.batch[i].request) + " twice in a batch");
      }
    }
    j.members = l.group;
    if (kind == task_kind::encode) {
      if (l.shape == nullptr) throw std::invalid_argument("encode without a shape");
      for (std::size_t i = 0; i < j.batch.size(); ++i) j.batch_fresh.push_back(make_state(l.group, static_cast<std::size_t>(latent_tokens(*l.shape))));
      return;
    }
    if (kind != task_kind::step) throw std::invalid_argument(std::string("a batched ") + to_string(kind) + " (steps and encodes only)");
    for (const auto& m : j.batch) {
      auto it = states_.find(m.request);
      if (it == states_.end()) throw std::logic_error("request " + std::to_string(m.request) + " has no state on the GPUs (encode missing)");
      if (!it->second->layout.same_devices(l.group)) {
        throw std::logic_error("batched step on " + l.group.to_string() + " but the state of request " + std::to_string(m.request) + " lives on " +
                               it->second->layout.to_string() + " (a migration is missing)");
      }
      if (!j.batch_states.empty() && it->second->rows != j.batch_states.front()->rows) {
        throw std::logic_error("the members of a batch have different latent sizes");
      }
      j.batch_states.push_back(it->second);
    }
  }

  [[nodiscard]] static std::size_t rank_in(const device_group& g, device_id d) {
    return static_cast<std::size_t>(std::find(g.begin(), g.end(), d) - g.begin());
  }

  [[nodiscard]] static state_ptr make_state(const device_group& layout, std::size_t tokens) {
    auto s = std::make_shared<request_state>();
    s->layout = layout;
    s->tokens = std::max<std::size_t>(tokens, 1);
    s->rows = (s->tokens + layout.size() - 1) / layout.size();
    s->ranks.resize(layout.size());
    return s;
  }

  // --- poll: commit or roll back (runtime thread) -------------------------------------------------------

  void settle(job& j) {
    const request_handle h = j.launch.request;
    if (j.failed) {
      if (j.fresh) free_later(j.fresh);  // what the launch built; the old state stays
      for (const auto& f : j.batch_fresh) free_later(f);
      if (failures_.size() < 1000) {
        failures_.push_back("launch " + std::to_string(j.launch.id) + " (" + to_string(j.launch.task.kind) +
                            (j.launch.task.kind == task_kind::step ? " " + std::to_string(j.launch.task.step) : std::string()) +
                            " of request " + std::to_string(h) + "): " + j.error);
      }
      return;
    }
    if (!j.batch_fresh.empty()) {  // a batch of encodes: every member's state at once
      for (std::size_t i = 0; i < j.batch.size(); ++i) {
        if (auto it = states_.find(j.batch[i].request); it != states_.end()) free_later(it->second);
        states_[j.batch[i].request] = j.batch_fresh[i];
      }
      return;
    }
    if (!j.batch.empty()) return;  // a batched step changed the latents in place
    switch (j.launch.task.kind) {
      case task_kind::encode:  // also a restart after a lost device: the old state is stale
      case task_kind::migrate:
        if (auto it = states_.find(h); it != states_.end()) free_later(it->second);
        states_[h] = j.fresh;
        break;
      case task_kind::decode:
        if (auto it = states_.find(h); it != states_.end()) {
          free_later(it->second);
          states_.erase(it);
        }
        break;
      case task_kind::step: break;
    }
  }

  /// Frees a state's buffers on the devices that hold them, each by its own worker, after whatever
  /// that worker is doing (a source may still be running another request's step).
  void free_later(const state_ptr& s) {
    std::lock_guard lk(mu_);
    for (std::size_t r = 0; r < s->layout.size(); ++r) {
      const rank_buffers b = std::exchange(s->ranks[r], rank_buffers{});
      if (b.latent == nullptr && b.prompt == nullptr) continue;
      auto& w = *workers_[s->layout[r]];
      w.queue.push_back(item{nullptr, [b] {
                               (void)cudaFree(b.latent);
                               (void)cudaFree(b.prompt);
                             }});
      w.wake.notify_all();
    }
  }

  // --- the workers ----------------------------------------------------------------------------------------

  void work(worker& w) {
    std::string error;
    try {
      init_device(w);
    } catch (const std::exception& e) {
      error = "device " + std::to_string(w.device) + ": " + e.what();
    }
    std::unique_lock lk(mu_);
    if (!error.empty() && init_error_.empty()) init_error_ = error;
    ++ready_;
    ready_cv_.notify_all();
    for (;;) {
      w.wake.wait(lk, [&] { return stopping_ || !w.queue.empty(); });
      if (w.queue.empty()) break;  // stopping, and everything queued is done
      item it = std::move(w.queue.front());
      w.queue.pop_front();
      if (!it.j) {  // a chore
        lk.unlock();
        it.chore();
        lk.lock();
        continue;
      }
      job& j = *it.j;
      const std::size_t n = j.members.size();
      if (++j.arrived == n) {  // gang start: the last device to arrive releases the others
        for (device_id e : j.members) workers_[e]->wake.notify_all();
      } else {
        w.wake.wait(lk, [&] { return j.arrived == n; });
      }
      const std::size_t rank = static_cast<std::size_t>(std::find(j.members.begin(), j.members.end(), w.device) - j.members.begin());
      lk.unlock();
      run_part(j, rank, w, lk);
      if (++j.finished == n) finish(it.j);
    }
    lk.unlock();
    release_device(w);
  }

  // One rank of a job. Enters and leaves with the mutex released... except that it re-locks around
  // the agreement between prepare and execute; returns with `lk` locked.
  void run_part(job& j, std::size_t rank, worker& w, std::unique_lock<std::mutex>& lk) {
    const std::size_t n = j.members.size();
    std::string error;
    try {
      if (w.lost) throw std::runtime_error("device lost");
      if (j.custom) {
        j.custom(rank, w.device);
      } else {
        prepare(j, rank, w);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    lk.lock();
    if (!error.empty()) fail(j, w.device, error);
    if (j.custom) return;
    // Agreement: nobody posts a collective unless every rank is ready to post its half.
    if (++j.prepared == n) {
      for (device_id e : j.members) workers_[e]->wake.notify_all();
    } else {
      w.wake.wait(lk, [&] { return j.prepared == n; });
    }
    if (j.failed) return;
    lk.unlock();
    bool hung = false;
    try {
      execute(j, rank, w);
      hung = !transport_.wait_for(w.device, model_.task_timeout);
      if (!hung) check_result(j, w);
    } catch (const std::exception& e) {
      error = e.what();
      // A rank that failed after posting part of a collective leaves its peers waiting: give them the
      // timeout to notice, as for a hang.
      hung = !transport_.wait_for(w.device, model_.task_timeout);
    }
    if (hung) {
      transport_.abort(w.device);
      w.lost = true;
      if (error.empty()) error = "no progress for " + std::to_string(model_.task_timeout.count()) + " ms; communicator aborted, device lost";
    }
    lk.lock();
    if (hung) j.hung.push_back(w.device);
    if (!error.empty()) fail(j, w.device, error);
  }

  static void fail(job& j, device_id d, const std::string& what) {
    if (!j.failed) j.error = "device " + std::to_string(d) + ": " + what;  // the first error is the cause
    j.failed = true;
  }

  // All ranks are done (mutex held).
  void finish(const std::shared_ptr<job>& j) {
    if (j->custom) {
      j->custom_done.set_value();
      return;
    }
    finished_.push_back(finished_job{j, now()});
    waiter_.wake();
  }

  // --- device work (worker thread, its GPU current) -----------------------------------------------------

  void init_device(worker& w) {
    check(cudaSetDevice(static_cast<int>(w.device)), "cudaSetDevice");
    // Peer access lets migrations and NCCL use NVLink directly; not all pairs may support it.
    for (device_id p = 0; p < workers_.size(); ++p) {
      int can = 0;
      if (p == w.device || cudaDeviceCanAccessPeer(&can, static_cast<int>(w.device), static_cast<int>(p)) != cudaSuccess || !can) continue;
      const cudaError_t e = cudaDeviceEnablePeerAccess(static_cast<int>(p), 0);
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) check(e, "cudaDeviceEnablePeerAccess");
      (void)cudaGetLastError();
    }
    const cudaStream_t s = transport_.stream(w.device);
    check(cublasCreate(&w.blas), "cublasCreate");
    check(cublasSetStream(w.blas, s), "cublasSetStream");
    // A workspace of our own (32 MiB, cuBLAS's advice for Hopper): otherwise cuBLAS allocates one on
    // first use, inside a step, where an allocation failure would strand the peers mid-collective.
    check(cudaMalloc(&w.workspace, workspace_bytes), "cudaMalloc(cuBLAS workspace)");
    check(cublasSetWorkspace(w.blas, w.workspace, workspace_bytes), "cublasSetWorkspace");
    const auto H = static_cast<std::size_t>(model_.hidden), C = static_cast<std::size_t>(model_.channels);
    check(cudaMalloc(&w.w_in, C * H * bf16), "cudaMalloc(W_in)");
    check(cudaMalloc(&w.w, H * H * bf16), "cudaMalloc(W)");
    check(cudaMalloc(&w.w_out, H * C * bf16), "cudaMalloc(W_out)");
    check(cudaMalloc(reinterpret_cast<void**>(&w.d_sum), sizeof(float)), "cudaMalloc(sum)");
    check(cudaMallocHost(reinterpret_cast<void**>(&w.h_sum), sizeof(float)), "cudaMallocHost(sum)");
    // Uniform weights with variance 1/fan_in keep activations O(1) through the blocks; the same seeds
    // on every GPU, like a replicated model.
    check(kernels::fill_uniform_bf16(w.w_in, C * H, 11, std::sqrt(3.0f / static_cast<float>(C)), s), "fill(W_in)");
    check(kernels::fill_uniform_bf16(w.w, H * H, 12, std::sqrt(3.0f / static_cast<float>(H)), s), "fill(W)");
    check(kernels::fill_uniform_bf16(w.w_out, H * C, 13, std::sqrt(3.0f / static_cast<float>(H)), s), "fill(W_out)");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize(init)");
  }

  void release_device(worker& w) noexcept {
    (void)cudaSetDevice(static_cast<int>(w.device));
    (void)cudaStreamSynchronize(transport_.stream(w.device));
    if (w.blas != nullptr) (void)cublasDestroy(w.blas);
    for (void* p : {w.w_in, w.w, w.w_out, static_cast<void*>(w.scratch), static_cast<void*>(w.d_sum), w.workspace}) (void)cudaFree(p);
    if (w.h_sum != nullptr) (void)cudaFreeHost(w.h_sum);
  }

  void ensure_scratch(worker& w, std::size_t bytes) {
    if (w.scratch_bytes >= bytes) return;
    check(cudaStreamSynchronize(transport_.stream(w.device)), "cudaStreamSynchronize(scratch)");
    (void)cudaFree(w.scratch);
    w.scratch = nullptr;
    w.scratch_bytes = 0;
    check(cudaMalloc(reinterpret_cast<void**>(&w.scratch), bytes), "cudaMalloc(scratch)");
    w.scratch_bytes = bytes;
  }

  // Everything that can fail before the first collective: sizes, allocations.
  void prepare(job& j, std::size_t r, worker& w) {
    const auto H = static_cast<std::size_t>(model_.hidden), C = static_cast<std::size_t>(model_.channels);
    const std::size_t k = j.members.size();
    const std::size_t prompt_bytes = static_cast<std::size_t>(model_.prompt_tokens) * static_cast<std::size_t>(model_.prompt_dim) * bf16;
    if (!j.batch_fresh.empty()) {
      for (const auto& f : j.batch_fresh) {
        rank_buffers& b = f->ranks[r];
        check(cudaMalloc(&b.latent, f->rows * C * bf16), "cudaMalloc(latent)");
        if (prompt_bytes > 0) check(cudaMalloc(&b.prompt, prompt_bytes), "cudaMalloc(prompt embeddings)");
      }
      return;
    }
    if (!j.batch_states.empty()) {
      if (H % k != 0) {
        throw std::invalid_argument("the stand-in's hidden size " + std::to_string(H) + " is not divisible by degree " + std::to_string(k));
      }
      for (const auto& st : j.batch_states) {
        if (st->ranks[rank_in(st->layout, w.device)].latent == nullptr) throw std::logic_error("no latent on this rank");
      }
      // keep (one [rows, H] per member) + the four working blocks of the largest stack
      ensure_scratch(w, 5 * j.batch_states.size() * j.batch_states.front()->rows * H * bf16);
      return;
    }
    switch (j.launch.task.kind) {
      case task_kind::encode:
      case task_kind::migrate: {
        rank_buffers& b = j.fresh->ranks[r];
        check(cudaMalloc(&b.latent, j.fresh->rows * C * bf16), "cudaMalloc(latent)");
        if (prompt_bytes > 0) check(cudaMalloc(&b.prompt, prompt_bytes), "cudaMalloc(prompt embeddings)");
        break;
      }
      case task_kind::step:
        if (H % k != 0) {
          throw std::invalid_argument("the stand-in's hidden size " + std::to_string(H) + " is not divisible by degree " + std::to_string(k));
        }
        if (j.state->ranks[r].latent == nullptr) throw std::logic_error("no latent on this rank");
        ensure_scratch(w, 4 * j.state->rows * H * bf16);
        break;
      case task_kind::decode:
        if (j.state->ranks[r].latent == nullptr) throw std::logic_error("no latent on this rank");
        ensure_scratch(w, k * j.state->rows * C * bf16);
        break;
    }
  }

  void execute(job& j, std::size_t r, worker& w) {
    if (!j.batch_fresh.empty()) {
      for (std::size_t i = 0; i < j.batch.size(); ++i) encode_state(*j.batch_fresh[i], j.batch[i].request, r, w);
      return;
    }
    if (!j.batch_states.empty()) {
      step_batch(j, w);
      return;
    }
    switch (j.launch.task.kind) {
      case task_kind::encode: encode(j, r, w); break;
      case task_kind::step: step(j, r, w); break;
      case task_kind::decode: decode(j, r, w); break;
      case task_kind::migrate: migrate(j, r, w); break;
    }
  }

  void encode(job& j, std::size_t r, worker& w) { encode_state(*j.fresh, j.launch.request, r, w); }

  void encode_state(const request_state& st, request_handle h, std::size_t r, worker& w) {
    const cudaStream_t s = transport_.stream(w.device);
    const auto C = static_cast<std::size_t>(model_.channels);
    const element_range mine = shard_range(r, st.layout.size(), st.tokens);
    const std::uint64_t seed = 0x5EED0000ULL + h;
    check(cudaMemsetAsync(st.ranks[r].latent, 0, st.rows * C * bf16, s), "cudaMemsetAsync(latent)");  // padding rows stay 0
    check(kernels::fill_uniform_bf16(st.ranks[r].latent, mine.count * C, seed, 1.0f, s, mine.begin * C), "fill(noise latent)");
    const auto prompt = static_cast<std::size_t>(model_.prompt_tokens) * static_cast<std::size_t>(model_.prompt_dim);
    check(kernels::fill_uniform_bf16(st.ranks[r].prompt, prompt, seed ^ 0xE4BEDULL, 1.0f, s), "fill(prompt embeddings)");
  }

  // Row-major C[M,N] = alpha * A[M,K] x B[K,N] + beta * C, bf16 in and out, fp32 accumulation.
  // cuBLAS is column-major, so this computes C^T = B^T A^T with the operands swapped.
  static void gemm(worker& w, std::size_t M, std::size_t N, std::size_t K, const void* A, std::size_t lda, const void* B, std::size_t ldb,
                   void* Cm, std::size_t ldc, float alpha = 1.0f, float beta = 0.0f) {
    check(cublasGemmEx(w.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_16BF,
                       static_cast<int>(ldb), A, CUDA_R_16BF, static_cast<int>(lda), &beta, Cm, CUDA_R_16BF, static_cast<int>(ldc),
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  }

  void step(job& j, std::size_t r, worker& w) {
    const cudaStream_t s = transport_.stream(w.device);
    const request_state& st = *j.state;
    const device_group& g = j.members;
    const std::size_t k = g.size(), m = st.rows;
    const auto H = static_cast<std::size_t>(model_.hidden), C = static_cast<std::size_t>(model_.channels);
    const std::size_t Hk = H / k, block = m * H * bf16;  // bytes of one m x H activation
    std::byte* h = w.scratch;
    std::byte* out = h + block;
    std::byte* send = out + block;
    std::byte* recv = send + block;
    void* latent = st.ranks[r].latent;

    gemm(w, m, H, C, latent, C, w.w_in, H, h, H);  // patch embedding: latent -> hidden
    for (int layer = 0; layer < model_.layers; ++layer) {
      // Pack: chunk q = head slice q of my tokens ([m, H/k], contiguous), for rank q.
      for (std::size_t q = 0; q < k; ++q) {
        check(cudaMemcpy2DAsync(send + q * m * Hk * bf16, Hk * bf16, h + q * Hk * bf16, H * bf16, Hk * bf16, m, cudaMemcpyDeviceToDevice, s),
              "cudaMemcpy2DAsync(pack)");
      }
      // Ulysses: sequence-sharded -> head-sharded; recv is [k*m, H/k], the whole sequence of my heads.
      transport_.all_to_all(g, w.device, std::span<const std::byte>(send, block), std::span<std::byte>(recv, block));
      gemm(w, k * m, Hk, Hk, recv, Hk, w.w, H, send, Hk);  // "attention": every token of my heads
      transport_.all_to_all(g, w.device, std::span<const std::byte>(send, block), std::span<std::byte>(recv, block));
      for (std::size_t q = 0; q < k; ++q) {  // unpack: head slice q back into my tokens' columns
        check(cudaMemcpy2DAsync(h + q * Hk * bf16, H * bf16, recv + q * m * Hk * bf16, Hk * bf16, Hk * bf16, m, cudaMemcpyDeviceToDevice, s),
              "cudaMemcpy2DAsync(unpack)");
      }
      check(kernels::gelu_bf16(h, m * H, s), "gelu");
      gemm(w, m, H, H, h, H, w.w, H, out, H);  // "MLP": (T/k) x H x H per rank
      std::swap(h, out);
    }
    // The only write to the state, last: a failure before it leaves the latent as it was.
    gemm(w, m, C, H, h, H, w.w_out, C, latent, C, model_.step_size, 1.0f);
  }

  // A batched step: members with the same layout as one stack (rows of every member in every GEMM and
  // every all_to_all), stacks in member order; the latents are written last, all together.
  void step_batch(job& j, worker& w) {
    const cudaStream_t s = transport_.stream(w.device);
    const std::size_t n = j.batch_states.size(), k = j.members.size(), m = j.batch_states.front()->rows;
    const auto H = static_cast<std::size_t>(model_.hidden), C = static_cast<std::size_t>(model_.channels);
    const std::size_t Hk = H / k, member_block = m * H * bf16;
    std::byte* keep = w.scratch;                    // member i's final hidden state at keep + i x member_block
    std::byte* work = keep + n * member_block;      // h, out, send, recv of the current stack
    std::vector<bool> done(n, false);
    std::vector<std::size_t> stack;
    for (std::size_t first = 0; first < n; ++first) {
      if (done[first]) continue;
      const device_group& g = j.batch_states[first]->layout;
      stack.clear();
      for (std::size_t i = first; i < n; ++i) {
        if (done[i] || j.batch_states[i]->layout != g) continue;
        stack.push_back(i);
        done[i] = true;
      }
      const std::size_t b = stack.size(), rows = b * m, block = rows * H * bf16;
      const std::size_t r = rank_in(g, w.device);
      std::byte* h = work;
      std::byte* out = h + block;
      std::byte* send = out + block;
      std::byte* recv = send + block;
      for (std::size_t p = 0; p < b; ++p) {  // patch embedding of each member into its rows of the stack
        gemm(w, m, H, C, j.batch_states[stack[p]]->ranks[r].latent, C, w.w_in, H, h + p * member_block, H);
      }
      for (int layer = 0; layer < model_.layers; ++layer) {
        // Pack: chunk q = head slice q of every stacked row ([b x m, H/k]), for rank q.
        for (std::size_t q = 0; q < k; ++q) {
          check(cudaMemcpy2DAsync(send + q * rows * Hk * bf16, Hk * bf16, h + q * Hk * bf16, H * bf16, Hk * bf16, rows, cudaMemcpyDeviceToDevice, s),
                "cudaMemcpy2DAsync(pack)");
        }
        transport_.all_to_all(g, w.device, std::span<const std::byte>(send, block), std::span<std::byte>(recv, block));
        gemm(w, k * rows, Hk, Hk, recv, Hk, w.w, H, send, Hk);  // "attention" over every member's sequence
        transport_.all_to_all(g, w.device, std::span<const std::byte>(send, block), std::span<std::byte>(recv, block));
        for (std::size_t q = 0; q < k; ++q) {
          check(cudaMemcpy2DAsync(h + q * Hk * bf16, H * bf16, recv + q * rows * Hk * bf16, Hk * bf16, Hk * bf16, rows, cudaMemcpyDeviceToDevice, s),
                "cudaMemcpy2DAsync(unpack)");
        }
        check(kernels::gelu_bf16(h, rows * H, s), "gelu");
        gemm(w, rows, H, H, h, H, w.w, H, out, H);
        std::swap(h, out);
      }
      for (std::size_t p = 0; p < b; ++p) {
        check(cudaMemcpyAsync(keep + stack[p] * member_block, h + p * member_block, member_block, cudaMemcpyDeviceToDevice, s),
              "cudaMemcpyAsync(keep)");
      }
    }
    // The only writes to the states, last and together: a failure before them leaves every member as it was.
    for (std::size_t i = 0; i < n; ++i) {
      const request_state& st = *j.batch_states[i];
      gemm(w, m, C, H, keep + i * member_block, H, w.w_out, C, st.ranks[rank_in(st.layout, w.device)].latent, C, model_.step_size, 1.0f);
    }
  }

  void decode(job& j, std::size_t r, worker& w) {
    const cudaStream_t s = transport_.stream(w.device);
    const request_state& st = *j.state;
    const std::size_t k = j.members.size(), bytes = st.rows * static_cast<std::size_t>(model_.channels) * bf16;
    transport_.all_gather(j.members, w.device, std::span<const std::byte>(static_cast<const std::byte*>(st.ranks[r].latent), bytes),
                          std::span<std::byte>(w.scratch, k * bytes));
    check(cudaMemsetAsync(w.d_sum, 0, sizeof(float), s), "cudaMemsetAsync(sum)");
    check(kernels::abs_sum_bf16(w.scratch, k * bytes / bf16, w.d_sum, s), "abs_sum");
    check(cudaMemcpyAsync(w.h_sum, w.d_sum, sizeof(float), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync(sum)");
  }

  // Pull model: this destination rank copies its slices from wherever they are.
  void migrate(job& j, std::size_t r, worker& w) {
    const cudaStream_t s = transport_.stream(w.device);
    const request_state& from = *j.state;
    const request_state& to = *j.fresh;
    const auto C = static_cast<std::size_t>(model_.channels);
    const std::size_t ks = from.layout.size(), kd = to.layout.size();
    const element_range mine = shard_range(r, kd, to.tokens);
    auto* dst = static_cast<std::byte*>(to.ranks[r].latent);
    check(cudaMemsetAsync(dst, 0, to.rows * C * bf16, s), "cudaMemsetAsync(latent)");
    for (const auto& e : j.plan.edges) {
      if (j.launch.group[e.dst_rank] != w.device) continue;  // edges name the destination by its group rank
      const element_range theirs = shard_range(e.src_rank, ks, from.tokens);
      const auto* src = static_cast<const std::byte*>(from.ranks[e.src_rank].latent) + (e.offset - theirs.begin) * C * bf16;
      std::byte* at = dst + (e.offset - mine.begin) * C * bf16;
      copy(at, w.device, src, from.layout[e.src_rank], e.count * C * bf16, s);
    }
    const std::size_t prompt_bytes = static_cast<std::size_t>(model_.prompt_tokens) * static_cast<std::size_t>(model_.prompt_dim) * bf16;
    if (prompt_bytes > 0) {  // replicated: keep the local copy if there is one, else spread the reads over the sources
      const auto own = static_cast<std::size_t>(std::find(from.layout.begin(), from.layout.end(), w.device) - from.layout.begin());
      const std::size_t src = own < ks ? own : r % ks;
      copy(to.ranks[r].prompt, w.device, from.ranks[src].prompt, from.layout[src], prompt_bytes, s);
    }
  }

  static void copy(void* dst, device_id dst_dev, const void* src, device_id src_dev, std::size_t bytes, cudaStream_t s) {
    if (src_dev == dst_dev) {
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync(local)");
    } else {
      check(cudaMemcpyPeerAsync(dst, static_cast<int>(dst_dev), src, static_cast<int>(src_dev), bytes, s), "cudaMemcpyPeerAsync");
    }
  }

  // After the stream finished: checks that need the results on the host.
  void check_result(job& j, worker& w) const {
    if (j.launch.task.kind == task_kind::decode && !std::isfinite(*w.h_sum)) {
      throw std::runtime_error("decode: the latent of request " + std::to_string(j.launch.request) + " holds non-finite values");
    }
  }

  void shutdown() noexcept {
    {
      std::lock_guard lk(mu_);
      if (stopping_ && workers_.empty()) return;
      for (auto& [h, s] : states_) {  // free what is left, by the owning workers, before they stop
        for (std::size_t r = 0; r < s->layout.size(); ++r) {
          const rank_buffers b = std::exchange(s->ranks[r], rank_buffers{});
          workers_[s->layout[r]]->queue.push_back(item{nullptr, [b] {
                                                         (void)cudaFree(b.latent);
                                                         (void)cudaFree(b.prompt);
                                                       }});
        }
      }
      states_.clear();
      stopping_ = true;
      for (auto& w : workers_) w->wake.notify_all();
    }
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
    workers_.clear();
  }

  nccl_transport& transport_;
  standin_config model_;
  std::vector<std::unique_ptr<worker>> workers_;
  std::mutex mu_;
  paraflex::realtime_waiter waiter_;  // now, wait_until, notify
  std::condition_variable ready_cv_;  // workers set up
  std::size_t ready_ = 0;
  std::string init_error_;
  std::deque<finished_job> finished_;
  bool stopping_ = false;
  // Runtime-thread only:
  std::map<request_handle, state_ptr> states_;
  std::vector<std::string> failures_;
};

static_assert(BlockingExecutor<cuda_executor> && BatchingExecutor<cuda_executor>);

}  // namespace paraflex::cuda_nccl
