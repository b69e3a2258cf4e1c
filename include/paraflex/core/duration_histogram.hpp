// paraflex/core/duration_histogram.hpp - host-time samples in constant memory.
//
// The runtime times its policy calls. A day of traffic is tens of millions of calls, so keeping each
// sample (as a vector would) costs hundreds of MB; this histogram keeps a count, a sum, a maximum and
// 16 buckets per power of two from 1/16 us up, so a quantile is exact to within 6.25%.
// Host timings are outside the deterministic output, so an approximate p99 is what a report needs.
//
// A caller may time only a sample of the calls (a clock read costs about as much as a cheap policy
// call): skip() counts a call that was not timed, and a timed one stands for `weight` calls (the
// inverse of its sampling rate), so mean and quantiles estimate those of every call while count()
// stays exact.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace paraflex {

class duration_histogram {
 public:
  static constexpr int buckets_per_octave = 16;
  static constexpr int octaves = 40;  // 1/16 us .. 2^36 us (19 hours)
  static constexpr double smallest_us = 1.0 / 16.0;

  /// One call that took `us` microseconds; as a sample it stands for `weight` calls (1: every call is timed).
  void add(double us, std::uint64_t weight = 1) noexcept {
    ++count_;
    weight_ += weight;
    sum_ += us * static_cast<double>(weight);
    max_ = std::max(max_, us);
    buckets_[bucket_of(us)] += weight;
  }
  /// One call that was not timed: counted; its time is estimated by the weighted samples.
  void skip() noexcept { ++count_; }
  /// Adds every call of `other` (e.g. the histograms of independent runs, into one for all of them).
  void merge(const duration_histogram& other) noexcept {
    count_ += other.count_;
    weight_ += other.weight_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
    for (std::size_t b = 0; b < buckets_.size(); ++b) buckets_[b] += other.buckets_[b];
  }
  /// Calls recorded, timed or not.
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(count_); }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  /// Estimated total time of every call (the weighted sum of the samples).
  [[nodiscard]] double sum() const noexcept { return sum_; }
  /// The largest sample.
  [[nodiscard]] double max() const noexcept { return max_; }
  [[nodiscard]] double mean() const noexcept { return weight_ ? sum_ / static_cast<double>(weight_) : 0.0; }
  /// The q-quantile (0..1): the geometric middle of the bucket holding it, capped by the maximum.
  [[nodiscard]] double quantile(double q) const noexcept {
    if (weight_ == 0) return 0.0;
    if (q >= 1.0) return max_;
    const auto rank = static_cast<std::uint64_t>(std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(weight_)));
    std::uint64_t seen = 0;
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      seen += buckets_[b];
      if (seen >= std::max<std::uint64_t>(rank, 1)) {
        const double lo = lower_bound_us(b), hi = lower_bound_us(b + 1);
        return std::min(max_, b == 0 ? hi : std::sqrt(lo * hi));
      }
    }
    return max_;
  }

 private:
  static constexpr std::size_t bucket_count = static_cast<std::size_t>(buckets_per_octave * octaves) + 1;
  // Bucket 0 holds everything up to smallest_us; then each octave [2^e, 2^(e+1)) x smallest_us is cut
  // into buckets_per_octave equal parts (no logarithm: this runs once per policy call).
  [[nodiscard]] static std::size_t bucket_of(double us) noexcept {
    const double x = us / smallest_us;
    if (!(x >= 1.0)) return 0;
    int e = 0;
    const double m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1)
    const auto sub = static_cast<std::size_t>((2.0 * m - 1.0) * buckets_per_octave);
    const std::size_t b = 1 + static_cast<std::size_t>(e - 1) * buckets_per_octave + std::min<std::size_t>(sub, buckets_per_octave - 1);
    return std::min(b, bucket_count - 1);
  }
  [[nodiscard]] static double lower_bound_us(std::size_t b) noexcept {
    if (b == 0) return 0.0;
    const std::size_t e = (b - 1) / buckets_per_octave, sub = (b - 1) % buckets_per_octave;
    return smallest_us * std::ldexp(1.0 + static_cast<double>(sub) / buckets_per_octave, static_cast<int>(e));
  }

  std::uint64_t count_ = 0;   // calls
  std::uint64_t weight_ = 0;  // calls the samples stand for (= count_ when every call is timed)
  double sum_ = 0;
  double max_ = 0;
  std::array<std::uint64_t, bucket_count> buckets_{};
};

}  // namespace paraflex
