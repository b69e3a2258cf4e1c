// paraflex/executor/realtime_waiter.hpp - the real-time half of a BlockingExecutor.
//
// A clock in microseconds since construction, and a wait that ends when the executor's own condition
// holds (an event to poll), when notify() was called (a request submitted from another thread), or
// at a time. The executor keeps its mutex; this class only owns the condition variable and the
// "notified" flag, which are guarded by that mutex.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "paraflex/core/time.hpp"

namespace paraflex {

class realtime_waiter {
 public:
  using clock = std::chrono::steady_clock;

  realtime_waiter() : origin_(clock::now()) {}

  /// Microseconds since construction.
  [[nodiscard]] tick now() const noexcept {
    return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - origin_).count();
  }

  /// With `lk` held on the executor's mutex: blocks until ready(), a notify() since the last wait, or
  /// now() >= t. Far-future and `never` waits are cut to a day; the caller just asks again.
  template <class Ready>
  void wait_until(std::unique_lock<std::mutex>& lk, tick t, Ready ready) {
    const tick cap = add_sat(now(), tick{86'400} * ticks_per_second);
    cv_.wait_until(lk, origin_ + std::chrono::microseconds(std::min(t, cap)), [&] { return notified_ || ready(); });
    notified_ = false;
  }

  /// Wakes a wait in progress, or makes the next one return at once. Any thread; takes `mu`.
  void notify(std::mutex& mu) {
    std::lock_guard lk(mu);
    notified_ = true;
    cv_.notify_all();
  }

  /// Re-checks the ready condition of a wait in progress (call after changing it, under or after the mutex).
  void wake() noexcept { cv_.notify_all(); }

 private:
  clock::time_point origin_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace paraflex
