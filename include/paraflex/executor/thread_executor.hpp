// paraflex/executor/thread_executor.hpp - a BlockingExecutor whose devices are CPU threads.
//
// One worker thread per device. launch() returns at once after queueing the task on every device it
// occupies (its group, and for a migration also the source devices); each worker runs its queue in
// order, and a task starts on all of its devices together (gang start) once every one of them has
// reached it. Because every launch is queued on all its devices at once, in one global order, the
// oldest queued task can always start: gang starts cannot deadlock. A device therefore runs one task
// at a time; a migration whose source device is still busy with another request's step starts when
// that step ends (a CPU thread has no copy engine to overlap it with).
//
// What a task does is a task_body, called once per device of the launch, concurrently, with a
// task_context: the launch, the device's rank, the shared shm_transport (group-free collectives)
// and the device's state store. The default body, cpu_dit_body, is a real CPU stand-in for a DiT
// under Ulysses sequence parallelism: every rank holds a contiguous slice of the latent's rows,
// a step is all_to_all -> a cross-row "attention" mix -> all_to_all -> a per-element "MLP", encode
// creates the latent and decode all_gathers it and checks it bit for bit against a serial
// reference. A migration moves the real rows with point-to-point copies planned by
// plan_migration (collectives/migration_plan.hpp).
//
// Outcomes are transactional per launch: a body writes its new state into the store's staging
// area, and the executor commits every device's staged state when all ranks returned, or discards
// it when any rank threw - the request's state is then exactly as before the task, as the Executor
// concept promises for task_failed. A throwing rank aborts the launch's devices in the transport so
// its peers cannot stay blocked in a collective, and the transport is reset for them afterwards.
//
// Time is real: now() is microseconds since construction (steady_clock). wait_until(t) blocks until
// an event is ready, notify() is called (from any thread), or t passes. An outside event loop can be
// woken instead: on_ready(f) calls f whenever events become available to poll().
//
// Batched steps (BatchingExecutor): a launch with task_launch::batch is one gang start on its group
// in which every rank runs the body once per member, in member order (the same on every rank, so the
// members' collectives pair up), each call seeing a launch whose request and task are that member's
// (context.member says which; launch.batch lists them all). The launch lasts as long as the whole
// batch; cpu_dit_body's time_scale sleep counts from the gang start, so a batch takes its
// expected_duration once, not once per member. Outcomes stay per launch: every member's staged state
// is committed when all ranks returned, or all of it discarded when any rank threw, and one event per
// member follows (task_done for all, or task_failed for all with every member's state unchanged).
//
// Faults on real execution: fail_device(d) loses device d as a GPU falling off the bus would. Every
// launch on d that has not ended is reported task_failed, then device_lost (the Executor concept's
// order); peers blocked in a collective with d are released; the failed launches' staged state is
// discarded, so a request's state is exactly as before the failed task (or, where it lived on d,
// gone: the runtime restarts it); d takes no more work.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/collectives/migration_plan.hpp"
#include "paraflex/collectives/shared_memory.hpp"
#include "paraflex/executor/concepts.hpp"
#include "paraflex/executor/realtime_waiter.hpp"

namespace paraflex {

/// One device's slice of a request's latent: rows [row_begin, row_begin + rows) of a
/// total_rows x channels matrix, row-major.
struct latent_shard {
  std::vector<float> data;
  std::size_t row_begin = 0;
  std::size_t rows = 0;
  std::size_t total_rows = 0;
  std::size_t channels = 0;
  int steps_done = 0;   ///< denoising steps applied so far (the sampler's state)
  device_group layout;  ///< layout[i] holds shard_range(i, layout.size(), total_rows)
};

/// The state one device holds, by request. Bodies read the committed shard and stage changes; the
/// executor commits or discards the staged changes when the whole launch has ended.
class device_store {
 public:
  /// The committed shard of h here, or nullptr. Stays valid until h's launch in flight ends.
  [[nodiscard]] const latent_shard* find(request_handle h) const {
    std::lock_guard lk(mu_);
    auto it = committed_.find(h);
    return it == committed_.end() ? nullptr : &it->second;
  }
  /// Stages h's new shard on this device (visible through find() once the launch succeeded).
  void put(request_handle h, latent_shard s) {
    std::lock_guard lk(mu_);
    staged_[h] = std::move(s);
  }
  /// Stages the removal of h's shard from this device.
  void erase(request_handle h) {
    std::lock_guard lk(mu_);
    staged_[h] = std::nullopt;
  }
  /// Committed shards held (requests whose state lives here at least in part).
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lk(mu_);
    return committed_.size();
  }
  /// Calls f(const latent_shard&) under the store's lock if h has a committed shard here.
  template <class F>
  bool visit(request_handle h, F&& f) const {
    std::lock_guard lk(mu_);
    auto it = committed_.find(h);
    if (it == committed_.end()) return false;
    std::forward<F>(f)(it->second);
    return true;
  }

 private:
  friend class thread_executor;
  void commit(request_handle h) {
    std::lock_guard lk(mu_);
    auto it = staged_.find(h);
    if (it == staged_.end()) return;
    if (it->second) committed_[h] = std::move(*it->second);
    else committed_.erase(h);
    staged_.erase(it);
  }
  void discard(request_handle h) {
    std::lock_guard lk(mu_);
    staged_.erase(h);
  }
  void drop(request_handle h) {
    std::lock_guard lk(mu_);
    committed_.erase(h);
    staged_.erase(h);
  }

  mutable std::mutex mu_;
  std::map<request_handle, latent_shard> committed_;
  std::map<request_handle, std::optional<latent_shard>> staged_;  // nullopt: erase on commit
};

/// What a task body gets, once per device of a launch.
struct task_context {
  static constexpr std::size_t no_rank = static_cast<std::size_t>(-1);
  const task_launch& launch;  ///< launch.shape points to a copy owned by the executor
  std::size_t rank;           ///< index of `device` in launch.group; no_rank for a migration source outside it
  device_id device;
  shm_transport& transport;
  device_store& store;
  std::chrono::steady_clock::time_point started;  ///< gang start, the same for every rank
  std::size_t member = 0;  ///< a batched step: the index in launch.batch of the member this call runs
};

/// Runs one rank of a launch; throwing fails the launch. Called concurrently from every worker, so
/// it must be safe to call from several threads at once.
using task_body = std::function<void(const task_context&)>;

namespace cpu_dit {

// Values are integers below a prime held exactly in floats, and every operation is integer
// arithmetic: results do not depend on evaluation order, FMA contraction or the degree, so the
// parallel run must match the serial reference bit for bit.
inline constexpr std::uint32_t modulus = 65521;

[[nodiscard]] inline std::uint64_t mix64(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
[[nodiscard]] inline float initial(request_handle h, std::size_t row, std::size_t ch, std::size_t channels) noexcept {
  return static_cast<float>(mix64((std::uint64_t{h} << 40) ^ (row * channels + ch)) % modulus);
}
[[nodiscard]] inline std::uint32_t to_int(float v) noexcept { return static_cast<std::uint32_t>(v); }
// The cross-row part of a step ("attention"): each value takes in the sum of its column.
[[nodiscard]] inline float attend(float v, std::uint64_t column_sum, std::size_t row, int step) noexcept {
  const std::uint64_t x = std::uint64_t{to_int(v)} * 241 + column_sum % modulus + row + static_cast<std::uint64_t>(step);
  return static_cast<float>(x % modulus);
}
// The per-element part ("MLP"): `work` multiply-adds.
[[nodiscard]] inline float mlp(float v, std::size_t ch, int step, int work) noexcept {
  std::uint64_t x = to_int(v);
  for (int w = 0; w < work; ++w) x = (x * 241 + ch + static_cast<std::uint64_t>(step + w)) % modulus;
  return static_cast<float>(x);
}

/// The latent after `steps` steps, computed serially: what any parallel schedule must produce.
[[nodiscard]] inline std::vector<float> reference(request_handle h, std::size_t rows, std::size_t channels, int steps, int work) {
  std::vector<float> x(rows * channels);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < channels; ++c) x[r * channels + c] = initial(h, r, c, channels);
  }
  for (int s = 0; s < steps; ++s) {
    for (std::size_t c = 0; c < channels; ++c) {
      std::uint64_t sum = 0;
      for (std::size_t r = 0; r < rows; ++r) sum += to_int(x[r * channels + c]);
      for (std::size_t r = 0; r < rows; ++r) x[r * channels + c] = attend(x[r * channels + c], sum, r, s);
    }
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t c = 0; c < channels; ++c) x[r * channels + c] = mlp(x[r * channels + c], c, s, work);
    }
  }
  return x;
}

[[nodiscard]] inline std::size_t index_in(const device_group& g, device_id d) noexcept {
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (g[i] == d) return i;
  }
  return g.size();
}
[[nodiscard]] inline std::span<const std::byte> bytes_of(std::span<const float> v) noexcept { return std::as_bytes(v); }
[[nodiscard]] inline std::span<std::byte> bytes_of(std::span<float> v) noexcept { return std::as_writable_bytes(v); }

}  // namespace cpu_dit

/// The default task body: a real CPU stand-in for a DiT step under Ulysses sequence parallelism.
struct cpu_dit_body {
  /// Largest time_scale: a run 1000x slower than the cost model (paraflex-serve's --time-scale 1e-3).
  static constexpr double max_time_scale = 1000.0;
  /// Most channels (paraflex-serve's --channels range): beyond it a latent is no stand-in, only an allocation failure.
  static constexpr std::size_t max_channels = 1024;

  double time_scale = 1.0;    ///< then sleep until start + expected_duration x time_scale (0: no sleep)
  std::size_t channels = 64;  ///< latent channels per token (rows = latent tokens of the shape)
  int work = 4;               ///< multiply-adds per element per step
  bool verify = true;         ///< decode replays every step serially and compares (costly for videos)

  /// Throws std::invalid_argument unless time_scale is in [0, max_time_scale], channels in [1,
  /// max_channels] and work >= 0. thread_executor checks its body at construction.
  void check() const {
    if (!(time_scale >= 0.0 && time_scale <= max_time_scale)) {
      throw std::invalid_argument(fmt::format("cpu_dit_body: time_scale must be in [0, {}] (got {})", max_time_scale, time_scale));
    }
    if (channels == 0 || channels > max_channels) {
      throw std::invalid_argument(fmt::format("cpu_dit_body: channels must be in [1, {}] (got {})", max_channels, channels));
    }
    if (work < 0) throw std::invalid_argument(fmt::format("cpu_dit_body: work must be >= 0 (got {})", work));
  }

  /// Rows of the latent for a shape: its latent tokens.
  [[nodiscard]] static std::size_t rows_of(const request_shape& s) noexcept { return static_cast<std::size_t>(latent_tokens(s)); }

  void operator()(const task_context& c) const {
    if (!c.launch.shape) throw std::invalid_argument("cpu_dit_body: the launch has no shape");
    check();
    switch (c.launch.task.kind) {
      case task_kind::encode: encode(c); break;
      case task_kind::step: step(c); break;
      case task_kind::decode: decode(c); break;
      case task_kind::migrate: migrate(c); break;
    }
    if (time_scale > 0 && c.launch.expected_duration > 0) {
      // Capped in double before the cast: the product may exceed int64 (the cast would be undefined),
      // and started + the sleep must stay within steady_clock's range.
      constexpr double max_sleep_us = 1e15;  // about 31 years
      const double us = std::min(static_cast<double>(c.launch.expected_duration) * time_scale, max_sleep_us);
      std::this_thread::sleep_until(c.started + std::chrono::microseconds(static_cast<std::int64_t>(us)));
    }
  }

 private:
  static const latent_shard& held(const task_context& c, const char* what) {
    const latent_shard* s = c.store.find(c.launch.request);
    if (!s) {
      throw std::logic_error(std::string("cpu_dit_body: ") + what + " of request " + std::to_string(c.launch.request) + " on device " +
                             std::to_string(c.device) + ", which holds no state for it");
    }
    if (!s->layout.same_devices(c.launch.group) && c.launch.task.kind != task_kind::migrate) {
      throw std::logic_error(std::string("cpu_dit_body: ") + what + " on " + c.launch.group.to_string() + " but the state lives on " +
                             s->layout.to_string() + " (a migration is missing)");
    }
    return *s;
  }

  void encode(const task_context& c) const {
    const std::size_t k = c.launch.group.size();
    const std::size_t total = rows_of(*c.launch.shape);
    const element_range mine = shard_range(c.rank, k, total);
    latent_shard s;
    s.row_begin = mine.begin;
    s.rows = mine.count;
    s.total_rows = total;
    s.channels = channels;
    s.layout = c.launch.group;
    s.data.resize(mine.count * channels);
    for (std::size_t r = 0; r < mine.count; ++r) {
      for (std::size_t ch = 0; ch < channels; ++ch) s.data[r * channels + ch] = cpu_dit::initial(c.launch.request, mine.begin + r, ch, channels);
    }
    c.store.put(c.launch.request, std::move(s));
  }

  // all_to_all (rows -> channels), column mix over all rows, all_to_all back (re-sharded in the
  // group's rank order, which costs nothing extra), per-element mix.
  void step(const task_context& c) const {
    const latent_shard& in = held(c, "step");
    if (in.steps_done != c.launch.task.step) {
      throw std::logic_error("cpu_dit_body: step " + std::to_string(c.launch.task.step) + " of request " + std::to_string(c.launch.request) +
                             " on a latent after " + std::to_string(in.steps_done) + " steps");
    }
    const device_group& g = c.launch.group;
    const std::size_t k = g.size(), i = c.rank, T = in.total_rows, C = in.channels;
    const std::size_t max_rows = (T + k - 1) / k, max_ch = (C + k - 1) / k, chunk = max_rows * max_ch;
    const element_range my_ch = shard_range(i, k, C);

    std::vector<float> send(k * chunk, 0.0f), recv(k * chunk);
    for (std::size_t j = 0; j < k; ++j) {
      const element_range cj = shard_range(j, k, C);
      for (std::size_t r = 0; r < in.rows; ++r) {
        std::copy_n(in.data.data() + r * C + cj.begin, cj.count, send.data() + j * chunk + r * max_ch);
      }
    }
    c.transport.all_to_all(g, c.device, cpu_dit::bytes_of(std::span<const float>(send)), cpu_dit::bytes_of(std::span<float>(recv)));

    // Every row of my channels, in row order: rank r sent the rows its layout slice holds.
    const std::size_t m = my_ch.count;
    std::vector<float> cols(T * m);
    for (std::size_t r = 0; r < k; ++r) {
      const element_range rows = shard_range(cpu_dit::index_in(in.layout, g[r]), k, T);
      for (std::size_t t = 0; t < rows.count; ++t) std::copy_n(recv.data() + r * chunk + t * max_ch, m, cols.data() + (rows.begin + t) * m);
    }
    for (std::size_t cc = 0; cc < m; ++cc) {
      std::uint64_t sum = 0;
      for (std::size_t t = 0; t < T; ++t) sum += cpu_dit::to_int(cols[t * m + cc]);
      for (std::size_t t = 0; t < T; ++t) cols[t * m + cc] = cpu_dit::attend(cols[t * m + cc], sum, t, in.steps_done);
    }

    // Back to rows, now laid out in g's rank order: rank j gets shard_range(j, k, T).
    std::fill(send.begin(), send.end(), 0.0f);
    for (std::size_t j = 0; j < k; ++j) {
      const element_range rj = shard_range(j, k, T);
      for (std::size_t t = 0; t < rj.count; ++t) std::copy_n(cols.data() + (rj.begin + t) * m, m, send.data() + j * chunk + t * max_ch);
    }
    c.transport.all_to_all(g, c.device, cpu_dit::bytes_of(std::span<const float>(send)), cpu_dit::bytes_of(std::span<float>(recv)));

    const element_range mine = shard_range(i, k, T);
    latent_shard out;
    out.row_begin = mine.begin;
    out.rows = mine.count;
    out.total_rows = T;
    out.channels = C;
    out.steps_done = in.steps_done + 1;
    out.layout = g;
    out.data.resize(mine.count * C);
    for (std::size_t r = 0; r < k; ++r) {
      const element_range cr = shard_range(r, k, C);
      for (std::size_t t = 0; t < mine.count; ++t) std::copy_n(recv.data() + r * chunk + t * max_ch, cr.count, out.data.data() + t * C + cr.begin);
    }
    for (std::size_t t = 0; t < mine.count; ++t) {
      for (std::size_t ch = 0; ch < C; ++ch) out.data[t * C + ch] = cpu_dit::mlp(out.data[t * C + ch], ch, in.steps_done, work);
    }
    c.store.put(c.launch.request, std::move(out));
  }

  // all_gather of the whole latent; rank 0 checks it against the serial reference.
  void decode(const task_context& c) const {
    const latent_shard& in = held(c, "decode");
    const device_group& g = c.launch.group;
    const std::size_t k = g.size(), T = in.total_rows, C = in.channels;
    const std::size_t max_rows = (T + k - 1) / k, chunk = 1 + max_rows * C;  // [steps done, rows...]
    std::vector<float> send(chunk, 0.0f), recv(k * chunk);
    send[0] = static_cast<float>(in.steps_done);
    std::copy(in.data.begin(), in.data.end(), send.begin() + 1);
    c.transport.all_gather(g, c.device, cpu_dit::bytes_of(std::span<const float>(send)), cpu_dit::bytes_of(std::span<float>(recv)));
    if (c.rank == 0 && verify) {
      std::vector<float> full(T * C);
      for (std::size_t r = 0; r < k; ++r) {
        if (recv[r * chunk] != send[0]) throw std::runtime_error("cpu_dit_body: decode: ranks disagree on the steps done");
        const element_range rows = shard_range(cpu_dit::index_in(in.layout, g[r]), k, T);
        std::copy_n(recv.data() + r * chunk + 1, rows.count * C, full.data() + rows.begin * C);
      }
      if (full != cpu_dit::reference(c.launch.request, T, C, in.steps_done, work)) {
        throw std::runtime_error("cpu_dit_body: decode: request " + std::to_string(c.launch.request) + " latent differs from the serial reference after " +
                                 std::to_string(in.steps_done) + " steps");
      }
    }
    c.store.erase(c.launch.request);
  }

  // Source rank 0 tells destination-only devices the sampler state and the source layout; then every
  // edge of the plan is a local copy or one send/recv pair.
  void migrate(const task_context& c) const {
    const device_group& src = c.launch.source;
    const device_group& dst = c.launch.group;
    const request_handle h = c.launch.request;
    const bool is_src = src.contains(c.device), is_dst = dst.contains(c.device);
    const std::size_t total = rows_of(*c.launch.shape);

    const latent_shard* mine = nullptr;
    int steps = 0;
    device_group layout;
    std::vector<std::uint64_t> meta(1 + src.size());
    if (is_src) {
      mine = &held(c, "migrate");
      if (!mine->layout.same_devices(src) || mine->total_rows != total || mine->channels != channels) {
        throw std::logic_error("cpu_dit_body: migrate from " + src.to_string() + " but the state of request " + std::to_string(h) + " lives on " +
                               mine->layout.to_string());
      }
      steps = mine->steps_done;
      layout = mine->layout;
      if (c.device == src[0]) {
        meta[0] = static_cast<std::uint64_t>(steps);
        for (std::size_t i = 0; i < src.size(); ++i) meta[1 + i] = layout[i];
        for (device_id d : dst) {
          if (!src.contains(d)) c.transport.send(c.device, d, std::as_bytes(std::span<const std::uint64_t>(meta)));
        }
      }
    } else {
      c.transport.recv(c.device, src[0], std::as_writable_bytes(std::span<std::uint64_t>(meta)));
      steps = static_cast<int>(meta[0]);
      std::vector<device_id> devs(src.size());
      for (std::size_t i = 0; i < src.size(); ++i) devs[i] = static_cast<device_id>(meta[1 + i]);
      layout = device_group(std::span<const device_id>(devs));
    }

    const migration_plan plan = plan_migration(layout, dst, total);
    const std::size_t C = channels;
    if (is_src) {
      for (const auto& e : plan.edges) {
        if (layout[e.src_rank] != c.device || e.local) continue;
        const std::span<const float> rows(mine->data.data() + (e.offset - mine->row_begin) * C, e.count * C);
        c.transport.send(c.device, dst[e.dst_rank], cpu_dit::bytes_of(rows));
      }
    }
    if (is_dst) {
      const element_range want = shard_range(cpu_dit::index_in(plan.layout, c.device), dst.size(), total);
      latent_shard out;
      out.row_begin = want.begin;
      out.rows = want.count;
      out.total_rows = total;
      out.channels = C;
      out.steps_done = steps;
      out.layout = plan.layout;
      out.data.resize(want.count * C);
      for (const auto& e : plan.edges) {
        if (dst[e.dst_rank] != c.device) continue;
        float* to = out.data.data() + (e.offset - want.begin) * C;
        if (e.local) {
          std::copy_n(mine->data.data() + (e.offset - mine->row_begin) * C, e.count * C, to);
        } else {
          c.transport.recv(c.device, layout[e.src_rank], cpu_dit::bytes_of(std::span<float>(to, e.count * C)));
        }
      }
      c.store.put(h, std::move(out));
    } else {
      c.store.erase(h);
    }
  }
};

class thread_executor {
 public:
  /// Batched steps run as one gang, the body once per member (see the header comment).
  static constexpr bool runs_batches = true;

  /// `devices` worker threads, devices 0 .. devices-1. An empty body means cpu_dit_body{}.
  explicit thread_executor(std::size_t devices, task_body body = {})
      : body_(body ? std::move(body) : task_body(cpu_dit_body{})), transport_(devices == 0 ? 1 : devices) {
    if (devices == 0) throw std::invalid_argument("thread_executor: needs at least one device");
    if (const auto* b = body_.target<cpu_dit_body>()) b->check();  // refused now, not as task_failed later
    stores_.reserve(devices);
    for (std::size_t d = 0; d < devices; ++d) stores_.push_back(std::make_unique<device_store>());
    queues_.resize(devices);
    lost_.assign(devices, 0);
    wake_ = std::make_unique<std::condition_variable[]>(devices);
    workers_.reserve(devices);
    for (std::size_t d = 0; d < devices; ++d) workers_.emplace_back([this, d] { work(static_cast<device_id>(d)); });
  }
  thread_executor(const thread_executor&) = delete;
  thread_executor& operator=(const thread_executor&) = delete;

  /// Stops taking tasks, aborts collectives in progress, and joins every worker. Tasks already
  /// running finish (their bodies are not interrupted); queued ones are abandoned.
  ~thread_executor() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
      for (std::size_t d = 0; d < queues_.size(); ++d) wake_[d].notify_all();
      waiter_.wake();
    }
    std::vector<device_id> all(queues_.size());
    for (std::size_t d = 0; d < all.size(); ++d) all[d] = static_cast<device_id>(d);
    transport_.abort(all);
    for (auto& t : workers_) t.join();
  }

  /// Queues `l` on every device it occupies and returns. A launch touching a lost device is reported
  /// task_failed at once (it never runs).
  void launch(const task_launch& l) {
    if (l.group.empty()) throw std::invalid_argument("thread_executor::launch: empty group");
    if (l.task.kind == task_kind::migrate && l.source.empty()) throw std::invalid_argument("thread_executor::launch: migration without a source");
    if (l.batch.size() == 1) throw std::invalid_argument("thread_executor::launch: a batch needs two members or more");
    auto j = std::make_shared<job>();
    j->launch = l;
    if (l.shape) {
      // The runtime's shape table may grow (and move) while the task runs: keep a copy.
      j->shape = *l.shape;
      j->launch.shape = &j->shape;
    }
    // l.batch is valid only during this call: keep the members, and one launch per member for the body.
    j->members.assign(l.batch.begin(), l.batch.end());
    j->launch.batch = j->members;
    if (j->members.empty()) {
      j->requests.push_back(l.request);
    } else {
      for (const auto& m : j->members) {
        if (std::find(j->requests.begin(), j->requests.end(), m.request) != j->requests.end()) {
          throw std::invalid_argument("thread_executor::launch: request " + std::to_string(m.request) + " twice in one batch");
        }
        j->requests.push_back(m.request);
        task_launch per = j->launch;
        per.request = m.request;
        per.task = m.task;
        j->member_launches.push_back(per);
      }
    }
    j->devices.assign(l.group.begin(), l.group.end());
    if (l.task.kind == task_kind::migrate) {
      for (device_id d : l.source) {
        if (!l.group.contains(d)) j->devices.push_back(d);
      }
    }
    for (std::size_t a = 0; a < j->devices.size(); ++a) {
      if (j->devices[a] >= queues_.size()) {
        throw std::invalid_argument("thread_executor::launch: device " + std::to_string(j->devices[a]) + " out of range (" +
                                    std::to_string(queues_.size()) + " devices)");
      }
      for (std::size_t b = a + 1; b < j->devices.size(); ++b) {
        if (j->devices[a] == j->devices[b]) throw std::invalid_argument("thread_executor::launch: device " + std::to_string(j->devices[a]) + " twice in " + l.group.to_string());
      }
    }
    std::unique_lock lk(mu_);
    if (stopping_) throw std::logic_error("thread_executor::launch: the executor is shutting down");
    ++launched_;
    j->seq = launched_;
    for (device_id d : j->devices) {
      if (lost_[d]) {
        fail_unstarted(*j, "device " + std::to_string(d) + " was lost before the launch");
        notify_ready(lk);
        return;
      }
    }
    live_.emplace(j->seq, j);
    for (device_id d : j->devices) {  // all queues at once, under one lock: one global order
      queues_[d].push_back(j);
      wake_[d].notify_all();
    }
  }

  /// Appends the events of launches that ended since the last poll, in the order they ended.
  void poll(std::vector<executor_event>& out) {
    std::lock_guard lk(mu_);
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
  }

  /// Microseconds since construction.
  [[nodiscard]] tick now() const noexcept { return waiter_.now(); }

  /// Blocks until an event is ready to poll, notify() was called since the last wait, or now() >= t.
  void wait_until(tick t) {
    std::unique_lock lk(mu_);
    waiter_.wait_until(lk, t, [&] { return !done_.empty() || stopping_; });
  }

  /// Wakes a wait_until in progress, or makes the next one return at once. Any thread.
  void notify() { waiter_.notify(mu_); }

  /// Calls `f` every time events become available to poll(): a launch ended, failed, or a device was
  /// lost. `f` runs on the thread that made them available - a worker thread, or the caller of
  /// fail_device() or of launch() (a launch on a lost device fails at once) - after the events are
  /// queued and the executor's mutex is released, so it may call poll() or notify() itself, or wake an
  /// external event loop (post to a Boost.Asio io_context, or Python asyncio's call_soon_threadsafe)
  /// that then polls. Several threads may call `f` at once, and it may still run while the destructor
  /// waits for the workers; it must not throw. An empty `f` removes the callback. Any thread.
  void on_ready(std::function<void()> f) {
    auto p = f ? std::make_shared<const std::function<void()>>(std::move(f)) : nullptr;
    std::unique_lock lk(mu_);
    ready_ = std::move(p);
    // A worker may have taken the previous callback and be calling it: wait for that, so that once
    // on_ready returns the previous callback is never running (a scheduler replaces its own in its
    // destructor). Not to be called from inside the callback.
    ready_idle_.wait(lk, [&] { return ready_calls_ == 0; });
  }

  /// Injects the loss of device `d`, as a GPU that falls off the bus: every launch occupying d that
  /// has not ended - queued, waiting for its gang, or running - is reported task_failed now, in launch
  /// order, then device_lost for d (the order the Executor concept promises). A running launch's
  /// peers are released from their collectives (the transport aborts d for good); their bodies and
  /// the body on d return on their own, and the launch's staged state is discarded. Later launches
  /// touching d fail at once. Losing a device twice, or one out of range, does nothing. Any thread,
  /// also a task body.
  void fail_device(device_id d) {
    std::unique_lock lk(mu_);
    if (d >= lost_.size() || lost_[d] || stopping_) return;
    lost_[d] = 1;
    const std::string why = "device " + std::to_string(d) + " lost";
    std::vector<std::shared_ptr<job>> hit;
    for (const auto& [seq, j] : live_) {
      if (std::find(j->devices.begin(), j->devices.end(), d) != j->devices.end()) hit.push_back(j);
    }
    for (const auto& j : hit) {
      if (j->started) {
        // Running: report it now. Ranks still inside leave their collectives and wait in work() until
        // finish() rolls them back; ranks that already left roll back here, before the runtime can
        // launch the request again on their devices.
        if (!j->failed) j->error = why;  // a launch that failed already keeps its first cause
        j->failed = j->reported = true;
        for (device_id e : j->inside) {  // added to what an earlier failure of it aborted
          if (std::find(j->aborted.begin(), j->aborted.end(), e) == j->aborted.end()) j->aborted.push_back(e);
        }
        transport_.abort(j->inside);
        for (device_id e : j->devices) {
          if (std::find(j->inside.begin(), j->inside.end(), e) == j->inside.end()) {
            for (request_handle h : j->requests) stores_[e]->discard(h);
          }
        }
        report(*j);
      } else {
        live_.erase(j->seq);
        for (device_id e : j->devices) {
          auto& q = queues_[e];
          q.erase(std::remove(q.begin(), q.end(), j), q.end());
          wake_[e].notify_all();  // a worker already waiting for this gang moves on
        }
        j->cancelled = true;
        fail_unstarted(*j, why + " before the launch started");
      }
    }
    const std::vector<device_id> lost_device{d};
    transport_.abort(lost_device);  // nothing may talk to d again
    done_.push_back(executor_event{now(), executor_event_kind::device_lost, 0, 0, d});
    waiter_.wake();
    notify_ready(lk);
  }

  /// Whether fail_device(d) was called.
  [[nodiscard]] bool lost(device_id d) const {
    std::lock_guard lk(mu_);
    return d < lost_.size() && lost_[d] != 0;
  }

  /// Forgets h's state on every device (a dropped request's latent; completed ones are freed by decode).
  /// A launch of h that a device loss reported failed may still have ranks inside their bodies,
  /// reading h's committed shards (find() keeps them valid until the launch ends): then the state is
  /// forgotten when the last of them returns.
  void release(request_handle h) {
    {
      std::lock_guard lk(mu_);
      for (const auto& [seq, j] : live_) {
        if (std::find(j->requests.begin(), j->requests.end(), h) != j->requests.end()) {
          j->release_at_finish.push_back(h);
          return;
        }
      }
    }
    for (auto& s : stores_) s->drop(h);
  }

  [[nodiscard]] std::size_t device_count() const noexcept { return queues_.size(); }
  [[nodiscard]] shm_transport& transport() noexcept { return transport_; }
  [[nodiscard]] device_store& store(device_id d) { return *stores_.at(d); }

  /// Devices holding committed state of h, in increasing order.
  [[nodiscard]] std::vector<device_id> state_devices(request_handle h) const {
    std::vector<device_id> out;
    for (std::size_t d = 0; d < stores_.size(); ++d) {
      if (stores_[d]->visit(h, [](const latent_shard&) {})) out.push_back(static_cast<device_id>(d));
    }
    return out;
  }

  /// A checksum of h's whole latent (values, positions and steps done) that does not depend on how
  /// it is sharded: equal before and after a migration that moved it intact. nullopt when h has no
  /// state, or its shards do not tile the latent exactly once (a gap, an overlap, disagreeing shapes).
  /// Call it while no launch of h is in flight.
  [[nodiscard]] std::optional<std::uint64_t> state_checksum(request_handle h) const {
    struct piece {
      std::size_t begin, rows, total, channels;
      int steps;
    };
    std::vector<piece> pieces;
    std::uint64_t sum = 0;
    for (const auto& s : stores_) {
      s->visit(h, [&](const latent_shard& sh) {
        pieces.push_back({sh.row_begin, sh.rows, sh.total_rows, sh.channels, sh.steps_done});
        for (std::size_t i = 0; i < sh.data.size(); ++i) {
          std::uint32_t bits = 0;
          std::memcpy(&bits, &sh.data[i], sizeof bits);
          sum += cpu_dit::mix64(((sh.row_begin * sh.channels + i) << 32) ^ bits);
        }
      });
    }
    if (pieces.empty()) return std::nullopt;
    std::sort(pieces.begin(), pieces.end(), [](const piece& a, const piece& b) { return a.begin < b.begin; });
    std::size_t next = 0;
    for (const auto& p : pieces) {
      if (p.begin != next || p.total != pieces[0].total || p.channels != pieces[0].channels || p.steps != pieces[0].steps) return std::nullopt;
      next += p.rows;
    }
    if (next != pieces[0].total) return std::nullopt;
    return sum ^ cpu_dit::mix64(static_cast<std::uint64_t>(pieces[0].steps) + std::uint64_t{0x51ED270B2A3C4D5E});
  }

  /// Launches queued, ended successfully, and failed so far.
  [[nodiscard]] std::uint64_t launched() const { std::lock_guard lk(mu_); return launched_; }
  [[nodiscard]] std::uint64_t succeeded() const { std::lock_guard lk(mu_); return succeeded_; }
  [[nodiscard]] std::uint64_t failed() const { std::lock_guard lk(mu_); return failed_; }
  /// Launches queued or running (not yet reported).
  [[nodiscard]] std::size_t in_flight() const { std::lock_guard lk(mu_); return live_.size(); }
  /// Why launches failed ("launch 12 (step 3 of request 4) on device 2: ..."), the first 100.
  [[nodiscard]] std::vector<std::string> errors() const { std::lock_guard lk(mu_); return errors_; }

 private:
  using clock = std::chrono::steady_clock;
  struct job {
    task_launch launch;
    request_shape shape;
    std::vector<batch_member> members;       // a batched step's members (launch.batch points here)
    std::vector<task_launch> member_launches;  // per member: launch with its request and task
    std::vector<request_handle> requests;    // whose state the launch changes: the request, or every member
    std::vector<device_id> devices;  // group, then the migration sources outside it
    std::uint64_t seq = 0;           // launch order (key in live_)
    std::size_t arrived = 0;         // workers that reached this job
    std::size_t finished = 0;        // bodies that returned or threw
    bool started = false;            // the gang formed: bodies run
    bool failed = false;
    bool reported = false;           // its event is already in done_ (a device loss reported it)
    bool cancelled = false;          // failed before it started: taken out of every queue
    std::vector<device_id> inside;   // devices whose rank has not returned yet
    std::vector<device_id> aborted;  // devices aborted in the transport when the launch failed
    std::vector<request_handle> release_at_finish;  // released while ranks were still inside (release)
    std::string error;
    clock::time_point started_at;
  };

  void work(device_id d) {
    std::unique_lock lk(mu_);
    for (;;) {
      wake_[d].wait(lk, [&] { return stopping_ || !queues_[d].empty(); });
      if (stopping_) return;
      std::shared_ptr<job> j = std::move(queues_[d].front());
      queues_[d].pop_front();
      const std::size_t n = j->devices.size();
      if (++j->arrived == n) {  // gang start: the last device to arrive releases the others
        j->started = true;
        j->inside = j->devices;
        j->started_at = clock::now();
        for (device_id e : j->devices) wake_[e].notify_all();
      } else {
        wake_[d].wait(lk, [&] { return j->started || j->cancelled || stopping_; });
        if (stopping_ && !j->started) return;  // shutting down before the gang formed
        if (!j->started) continue;              // failed by a device loss before it started
      }
      const std::size_t rank = cpu_dit::index_in(j->launch.group, d);
      const std::size_t calls = j->member_launches.empty() ? 1 : j->member_launches.size();
      lk.unlock();
      std::string error;
      for (std::size_t m = 0; m < calls && error.empty(); ++m) {
        if (m > 0) {  // a peer failed the batch: its later members' collectives would only be aborted
          std::lock_guard g(mu_);
          if (j->failed) break;
        }
        const task_launch& what = j->member_launches.empty() ? j->launch : j->member_launches[m];
        try {
          body_(task_context{what, rank < j->launch.group.size() ? rank : task_context::no_rank, d, transport_, *stores_[d], j->started_at, m});
        } catch (const std::exception& e) {
          error = e.what();
          if (error.empty()) error = "exception";
          if (calls > 1) error = "batch member " + std::to_string(m) + " (request " + std::to_string(what.request) + "): " + error;
        } catch (...) {
          error = "unknown exception";
        }
      }
      lk.lock();
      std::erase(j->inside, d);
      if (!error.empty() && !j->failed) {  // the first error is the cause; peers then fail as aborted
        j->failed = true;
        j->error = "device " + std::to_string(d) + ": " + error;
        // Only ranks still inside (and this one): a rank that already left may be running its next
        // launch, which this abort must not touch.
        j->aborted = j->inside;
        j->aborted.push_back(d);
        transport_.abort(j->aborted);
      }
      if (++j->finished == n) {
        if (finish(*j)) notify_ready(lk);
      } else if (j->failed) {
        // The peers of a failed launch wait until every rank has left it and the transport is reset
        // (in finish), so that their next launch cannot meet the abort meant for this one.
        wake_[d].wait(lk, [&] { return j->finished == n || stopping_; });
      }
    }
  }

  // All ranks have returned (mu_ held): commit or roll back, then report unless a device loss did.
  // True when an event was queued.
  bool finish(job& j) {
    live_.erase(j.seq);
    for (device_id e : j.devices) wake_[e].notify_all();  // peers waiting in work() for a failed launch
    if (!j.failed) {
      for (request_handle h : j.requests) {
        for (device_id d : j.devices) stores_[d]->commit(h);
        if (j.launch.task.kind == task_kind::encode) {  // a restart: state left elsewhere is stale
          for (std::size_t d = 0; d < stores_.size(); ++d) {
            if (!j.launch.group.contains(static_cast<device_id>(d))) stores_[d]->drop(h);
          }
        }
      }
      ++succeeded_;
    } else {
      // Reported early (device loss): ranks that had left were rolled back then, and the requests may
      // already run again there; otherwise nothing of them runs anywhere until these events are polled.
      for (request_handle h : j.requests) {
        for (device_id d : j.reported ? j.aborted : j.devices) stores_[d]->discard(h);
      }
      std::vector<device_id> usable;  // a lost device stays aborted for good
      for (device_id d : j.aborted) {
        if (!lost_[d]) usable.push_back(d);
      }
      transport_.reset(usable);  // every aborted rank has left its calls and waits: safe to forget them
    }
    for (request_handle h : j.release_at_finish) {  // no body reads h's shards any more
      for (auto& s : stores_) s->drop(h);
    }
    if (j.reported) return false;
    if (j.failed) {
      report(j);
    } else {
      const tick t = now();
      for (request_handle h : j.requests) done_.push_back(executor_event{t, executor_event_kind::task_done, j.launch.id, h, 0});
    }
    waiter_.wake();
    return true;
  }

  // Queues j's task_failed events, one per member, and records why (mu_ held).
  void report(job& j) {
    ++failed_;
    if (errors_.size() < 100) {
      errors_.push_back("launch " + std::to_string(j.launch.id) + " (" + to_string(j.launch.task.kind) +
                        (j.launch.task.kind == task_kind::step ? " " + std::to_string(j.launch.task.step) : std::string()) +
                        " of request " + std::to_string(j.launch.request) +
                        (j.requests.size() > 1 ? ", a batch of " + std::to_string(j.requests.size()) : std::string()) + ") on " + j.error);
    }
    const tick t = now();
    for (request_handle h : j.requests) done_.push_back(executor_event{t, executor_event_kind::task_failed, j.launch.id, h, 0});
    waiter_.wake();
  }

  // A launch that never ran: reported failed with `why` (mu_ held).
  void fail_unstarted(job& j, std::string why) {
    j.failed = j.reported = true;
    j.error = std::move(why);
    report(j);
  }

  // Calls the on_ready callback with mu_ released, then takes it again.
  void notify_ready(std::unique_lock<std::mutex>& lk) {
    auto f = ready_;
    if (!f) return;
    ++ready_calls_;
    lk.unlock();
    (*f)();
    lk.lock();
    if (--ready_calls_ == 0) ready_idle_.notify_all();
  }

  task_body body_;
  shm_transport transport_;
  std::vector<std::unique_ptr<device_store>> stores_;
  mutable std::mutex mu_;
  std::vector<std::deque<std::shared_ptr<job>>> queues_;  // per device, in launch order
  std::map<std::uint64_t, std::shared_ptr<job>> live_;   // launches queued or running, by launch order
  std::unique_ptr<std::condition_variable[]> wake_;       // per device: queue not empty, gang formed or cancelled
  std::vector<unsigned char> lost_;                       // per device: fail_device was called
  realtime_waiter waiter_;                                // now, wait_until, notify
  std::deque<executor_event> done_;
  std::vector<std::string> errors_;
  std::shared_ptr<const std::function<void()>> ready_;   // on_ready
  std::size_t ready_calls_ = 0;                          // on_ready callbacks running now (under mu_)
  std::condition_variable ready_idle_;                   // ready_calls_ back to 0
  std::uint64_t launched_ = 0, succeeded_ = 0, failed_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // last: started after everything above exists
};

static_assert(BlockingExecutor<thread_executor> && BatchingExecutor<thread_executor>);
static_assert(!VirtualTimeExecutor<thread_executor>);

}  // namespace paraflex
