// scaled_executor.hpp - the thread executor seen through a clock that runs `speedup` times faster.
//
// `paraflex-serve --time-scale X` makes the CPU stand-in X times faster than the GPUs the profile was
// measured on: a step the profile prices at 0.8 s runs in 0.8 s / X. If only the task bodies were
// faster (cpu_dit_body::time_scale = 1/X) the scheduler would still believe that step takes 0.8 s of
// its real-time clock, so deadlines, policy wake-ups and round periods would be X times off. This
// wrapper keeps the scheduler's whole world in profile seconds instead: now() is the real clock times
// X, and a wait until profile time t is a real wait until t / X. Costs, SLOs, latencies and the
// policy's timers then mean what they mean in the workload CSV and in paraflex-sim; only the wall
// clock is faster.
#pragma once

#include <cmath>
#include <stdexcept>
#include <vector>

#include <paraflex/executor/thread_executor.hpp>

namespace paraflex_serve {

class scaled_executor {
 public:
  /// `inner` must outlive this object; its task body must sleep expected_duration / speedup
  /// (cpu_dit_body{.time_scale = 1 / speedup}).
  scaled_executor(paraflex::thread_executor& inner, double speedup) : inner_(inner), speedup_(speedup) {
    if (!(speedup > 0) || !std::isfinite(speedup)) throw std::invalid_argument("scaled_executor: the speed-up must be a finite number > 0");
  }

  /// Batched launches pass through to the thread executor (paraflex::BatchingExecutor).
  static constexpr bool runs_batches = paraflex::BatchingExecutor<paraflex::thread_executor>;

  void launch(const paraflex::task_launch& l) { inner_.launch(l); }

  void poll(std::vector<paraflex::executor_event>& out) {
    const auto first = out.size();
    inner_.poll(out);
    for (auto i = first; i < out.size(); ++i) out[i].time = to_profile(out[i].time);
  }

  /// Profile microseconds: real microseconds since the executor started, times the speed-up.
  /// Monotone because the real clock is and the factor is positive.
  [[nodiscard]] paraflex::tick now() const noexcept { return to_profile(inner_.now()); }

  /// Waits until profile time t (rounded up to the real microsecond, so that now() >= t after a
  /// full wait); `never` stays never.
  void wait_until(paraflex::tick t) { inner_.wait_until(to_real(t)); }

  void notify() { inner_.notify(); }
  void release(paraflex::request_handle h) { inner_.release(h); }

  [[nodiscard]] double speedup() const noexcept { return speedup_; }
  [[nodiscard]] paraflex::thread_executor& inner() noexcept { return inner_; }

 private:
  [[nodiscard]] paraflex::tick to_profile(paraflex::tick real) const noexcept {
    const double v = static_cast<double>(real) * speedup_;
    return v >= 4.0e18 ? paraflex::never : static_cast<paraflex::tick>(v);
  }
  [[nodiscard]] paraflex::tick to_real(paraflex::tick profile) const noexcept {
    if (profile == paraflex::never) return paraflex::never;
    const double v = std::ceil(static_cast<double>(profile) / speedup_);
    return v >= 4.0e18 ? paraflex::never : static_cast<paraflex::tick>(v);
  }

  paraflex::thread_executor& inner_;
  double speedup_;
};

}  // namespace paraflex_serve
