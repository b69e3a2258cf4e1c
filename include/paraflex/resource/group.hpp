// paraflex/resource/group.hpp - devices, device sets, and a group of devices as a value.
//
// GF-DiT's "group-free" idea: a communication group is nothing but an ordered list of ranks with a
// hash; forming one costs no communication. Here a device_group is exactly that value - cheap to
// build, compare and hash - and collectives take it as an argument.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include <boost/container/small_vector.hpp>

namespace paraflex {

/// Index of a device (GPU) in the cluster, 0-based and dense.
using device_id = std::uint32_t;

/// An ordered list of distinct devices plus its hash. Rank i of the group is devices()[i].
/// Up to 16 devices live inline (no allocation; a copy is a fixed 64-byte move, no library call);
/// larger groups spill to the heap.
class device_group {
 public:
  static constexpr std::size_t inline_capacity = 16;

  device_group() = default;
  device_group(std::initializer_list<device_id> ranks) { assign(ranks.begin(), ranks.size()); }
  explicit device_group(std::span<const device_id> ranks) { assign(ranks.data(), ranks.size()); }
  device_group(const device_group&) = default;
  // The spilled ranks are copied only when either side has any: a copy of a group of up to 16 is
  // then the inline array and two words, with no call into std::vector.
  device_group& operator=(const device_group& o) {
    if (this == &o) return *this;
    n_ = o.n_;
    inline_ = o.inline_;
    hash_ = o.hash_;
    if (!o.spill_.empty() || !spill_.empty()) spill_ = o.spill_;
    return *this;
  }
  // A moved-from group is empty (its heap ranks, if any, went with the move).
  device_group(device_group&& o) noexcept : n_(o.n_), inline_(o.inline_), spill_(std::move(o.spill_)), hash_(o.hash_) { o.reset_empty(); }
  device_group& operator=(device_group&& o) noexcept {
    if (this != &o) {
      n_ = o.n_;
      inline_ = o.inline_;
      spill_ = std::move(o.spill_);
      hash_ = o.hash_;
      o.reset_empty();
    }
    return *this;
  }

  /// Devices first, first+1, ..., first+count-1: the common contiguous case.
  [[nodiscard]] static device_group contiguous(device_id first, std::size_t count) {
    device_group g;
    device_id* out = g.prepare(count);
    for (std::size_t i = 0; i < count; ++i) out[i] = first + static_cast<device_id>(i);
    g.rehash();
    return g;
  }

  /// Collects ranks one by one without a heap allocation for up to 16 devices; build() hashes once.
  class builder {
   public:
    void push_back(device_id d) { ranks_.push_back(d); }
    [[nodiscard]] std::size_t size() const noexcept { return ranks_.size(); }
    [[nodiscard]] device_group build() && { return device_group(std::span<const device_id>(ranks_.data(), ranks_.size())); }

   private:
    boost::container::small_vector<device_id, 16> ranks_;
  };

  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] bool empty() const noexcept { return n_ == 0; }
  /// Makes the group empty (as `= device_group{}`, without building and moving a temporary).
  void clear() noexcept { reset_empty(); }
  [[nodiscard]] std::span<const device_id> devices() const noexcept { return {data(), n_}; }
  [[nodiscard]] device_id operator[](std::size_t rank) const noexcept { return data()[rank]; }
  [[nodiscard]] const device_id* begin() const noexcept { return data(); }
  [[nodiscard]] const device_id* end() const noexcept { return data() + n_; }
  [[nodiscard]] std::uint64_t hash() const noexcept { return hash_; }
  [[nodiscard]] bool contains(device_id d) const noexcept { return std::find(begin(), end(), d) != end(); }

  /// Same devices regardless of rank order (state held by one is usable by the other without a move).
  [[nodiscard]] bool same_devices(const device_group& o) const {
    if (size() != o.size()) return false;
    return std::all_of(begin(), end(), [&](device_id d) { return o.contains(d); });
  }

  friend bool operator==(const device_group& a, const device_group& b) noexcept {
    return a.hash_ == b.hash_ && std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

  /// "{0,1,2,3}" for logs and traces.
  [[nodiscard]] std::string to_string() const {
    std::string s = "{";
    for (std::size_t i = 0; i < size(); ++i) s += (i ? "," : "") + std::to_string((*this)[i]);
    return s + "}";
  }

 private:
  [[nodiscard]] const device_id* data() const noexcept { return n_ <= inline_capacity ? inline_.data() : spill_.data(); }
  // Room for n ranks (inline up to 16, else the heap); the caller writes them and calls rehash().
  device_id* prepare(std::size_t n) {
    n_ = n;
    if (n <= inline_capacity) {
      spill_.clear();
      return inline_.data();
    }
    spill_.resize(n);
    return spill_.data();
  }
  void reset_empty() noexcept {
    n_ = 0;
    spill_.clear();
    hash_ = 1469598103934665603ULL;
  }
  void assign(const device_id* p, std::size_t n) {
    std::copy(p, p + n, prepare(n));
    rehash();
  }
  void rehash() noexcept {  // FNV-1a over the ranks: stable across runs and platforms
    std::uint64_t h = 1469598103934665603ULL;
    for (device_id d : *this) {
      for (int b = 0; b < 4; ++b) h = (h ^ ((d >> (8 * b)) & 0xFFu)) * 1099511628211ULL;
    }
    hash_ = h;
  }
  std::size_t n_ = 0;
  std::array<device_id, inline_capacity> inline_{};  // the ranks when n_ <= 16 (a plain copy: no call)
  std::vector<device_id> spill_;                     // the ranks when n_ > 16; empty otherwise
  std::uint64_t hash_ = 1469598103934665603ULL;
};

namespace detail {
/// Bits set in x. std::popcount is a library call unless the target has a popcount instruction
/// (-mpopcnt, -march=native); this inline bit-parallel count is faster than that call.
[[nodiscard]] constexpr int popcount64(std::uint64_t x) noexcept {
#if defined(__POPCNT__)
  return std::popcount(x);
#else
  x -= (x >> 1) & 0x5555555555555555ULL;
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
#endif
}
}  // namespace detail

/// A set of devices as a bitmap: the scheduler's free/busy bookkeeping. Sized for any cluster.
/// count() is O(1): every change keeps the number of members.
class device_set {
 public:
  device_set() = default;
  explicit device_set(std::size_t device_count, bool all = false)
      : n_(device_count), words_((device_count + 63) / 64, all ? ~0ULL : 0ULL) {
    trim();
    count_ = all ? n_ : 0;
  }
  device_set(const device_set&) = default;
  device_set(device_set&&) noexcept = default;
  device_set& operator=(device_set&&) noexcept = default;
  // Copying over a set of the same cluster (the runtime's and the policies' scratch copies of the
  // free set) copies the words in place: no out-of-line std::vector operator=.
  device_set& operator=(const device_set& o) {
    if (this == &o) return *this;
    if (words_.size() == o.words_.size()) std::copy(o.words_.begin(), o.words_.end(), words_.begin());
    else words_ = o.words_;
    n_ = o.n_;
    count_ = o.count_;
    return *this;
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return n_; }
  [[nodiscard]] bool test(device_id d) const noexcept { return d < n_ && ((words_[d / 64] >> (d % 64)) & 1ULL); }
  void set(device_id d) noexcept {
    auto& w = words_[d / 64];
    const std::uint64_t bit = 1ULL << (d % 64);
    count_ += (w & bit) == 0;
    w |= bit;
  }
  void reset(device_id d) noexcept {
    auto& w = words_[d / 64];
    const std::uint64_t bit = 1ULL << (d % 64);
    count_ -= (w & bit) != 0;
    w &= ~bit;
  }
  void set(const device_group& g) noexcept { for (device_id d : g) set(d); }
  void reset(const device_group& g) noexcept { for (device_id d : g) reset(d); }
  /// True when every device of g is in the set.
  [[nodiscard]] bool contains_all(const device_group& g) const noexcept {
    return std::all_of(g.begin(), g.end(), [&](device_id d) { return test(d); });
  }
  [[nodiscard]] std::size_t count() const noexcept { return count_; }
  /// The bitmap, 64 devices a word (device d is bit d % 64 of word d / 64; bits past the end are 0).
  [[nodiscard]] std::size_t word_count() const noexcept { return words_.size(); }
  [[nodiscard]] std::uint64_t word(std::size_t i) const noexcept { return words_[i]; }
  [[nodiscard]] bool none() const noexcept { return count() == 0; }
  /// Members in [begin, end).
  [[nodiscard]] std::size_t count_range(device_id begin, device_id end) const noexcept {
    end = static_cast<device_id>(std::min<std::size_t>(end, n_));
    if (begin >= end) return 0;
    std::size_t c = 0;
    const std::size_t wb = begin / 64, we = (end - 1) / 64;
    for (std::size_t w = wb; w <= we; ++w) {
      std::uint64_t bits = words_[w];
      if (w == wb) bits &= ~std::uint64_t{0} << (begin % 64);
      if (w == we && end % 64 != 0) bits &= (std::uint64_t{1} << (end % 64)) - 1;
      c += static_cast<std::size_t>(detail::popcount64(bits));
    }
    return c;
  }
  /// True when every device in [begin, end) is a member.
  [[nodiscard]] bool all_in_range(device_id begin, device_id end) const noexcept {
    return end <= n_ && count_range(begin, end) == static_cast<std::size_t>(end - begin);
  }
  /// The first member >= from, or capacity() when none (word by word).
  [[nodiscard]] std::size_t next_member(std::size_t from) const noexcept {
    if (from >= n_) return n_;
    std::size_t w = from / 64;
    std::uint64_t bits = words_[w] & (~std::uint64_t{0} << (from % 64));
    while (bits == 0) {
      if (++w >= words_.size()) return n_;
      bits = words_[w];
    }
    return std::min(n_, w * 64 + static_cast<std::size_t>(std::countr_zero(bits)));
  }
  /// The first non-member >= from, or capacity() when none (word by word).
  [[nodiscard]] std::size_t next_non_member(std::size_t from) const noexcept {
    if (from >= n_) return n_;
    std::size_t w = from / 64;
    std::uint64_t bits = ~words_[w] & (~std::uint64_t{0} << (from % 64));
    while (bits == 0) {
      if (++w >= words_.size()) return n_;
      bits = ~words_[w];
    }
    return std::min(n_, w * 64 + static_cast<std::size_t>(std::countr_zero(bits)));
  }
  /// Calls f(d) for every member in increasing order.
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t w = 0; w < words_.size(); ++w) {
      for (std::uint64_t bits = words_[w]; bits; bits &= bits - 1) {
        f(static_cast<device_id>(w * 64 + static_cast<std::size_t>(std::countr_zero(bits))));
      }
    }
  }
  friend bool operator==(const device_set& a, const device_set& b) noexcept { return a.n_ == b.n_ && a.words_ == b.words_; }

 private:
  void trim() noexcept {
    if (n_ % 64 && !words_.empty()) words_.back() &= (1ULL << (n_ % 64)) - 1;
  }
  std::size_t n_ = 0;
  std::vector<std::uint64_t> words_;
  std::size_t count_ = 0;  // members, kept by set/reset
};

}  // namespace paraflex
