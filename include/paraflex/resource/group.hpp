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
#include <new>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace paraflex {

/// Index of a device (GPU) in the cluster, 0-based and dense.
using device_id = std::uint32_t;

namespace detail {
/// Storage for the ranks of groups wider than 16: blocks of 32, 64, ..., 4,096 ranks, recycled
/// through a free list per size class and thread (at most 32 blocks each, so at most 1 MiB per
/// thread, deleted when the thread ends), so that a steady state that copies and drops wide groups
/// reuses blocks instead of calling operator new. A block may be freed on another thread than the
/// one that took it: it joins that thread's list (every block comes from plain operator new, so any
/// thread may reuse or delete it). Larger blocks, and every block under AddressSanitizer (which must
/// see each use after free), are plain new/delete.
class rank_blocks {
 public:
  static constexpr std::size_t min_block = 32;  // ranks
  static constexpr std::size_t classes = 8;     // 32 .. 4,096 ranks
  static constexpr std::size_t per_class = 32;  // blocks kept per class and thread
  /// False under AddressSanitizer: every block is then plain new/delete.
#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool pooled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  static constexpr bool pooled = false;
#else
  static constexpr bool pooled = true;
#endif
#else
  static constexpr bool pooled = true;
#endif

  /// The capacity a block for n > 16 ranks gets: the next power of two, at least min_block.
  [[nodiscard]] static constexpr std::size_t capacity_for(std::size_t n) noexcept { return std::bit_ceil(std::max(n, min_block)); }

  /// A block of `capacity` ranks (a value from capacity_for).
  [[nodiscard]] static std::uint32_t* take(std::size_t capacity) {
    if constexpr (pooled) {
      const std::size_t c = class_of(capacity);
      if (c < classes) {
        lists& l = mine();
        if (l.count[c] > 0) return static_cast<std::uint32_t*>(l.head[c][--l.count[c]]);
      }
    }
    return static_cast<std::uint32_t*>(::operator new(capacity * sizeof(std::uint32_t)));
  }
  /// Gives back a block from take(capacity).
  static void give(std::uint32_t* p, std::size_t capacity) noexcept {
    if constexpr (pooled) {
      const std::size_t c = class_of(capacity);
      if (c < classes) {
        lists& l = mine();
        if (!l.closed && l.count[c] < per_class) {
          if (!l.registered) register_exit(l);
          l.head[c][l.count[c]++] = p;
          return;
        }
      }
    }
    ::operator delete(p);
  }
  /// Blocks cached by this thread (for tests).
  [[nodiscard]] static std::size_t cached() noexcept {
    std::size_t n = 0;
    if constexpr (pooled) {
      for (std::size_t c = 0; c < classes; ++c) n += mine().count[c];
    }
    return n;
  }

 private:
  // Trivially destructible, so usable until the thread's very end: a group destroyed after the
  // exit handler (drain) ran - a thread_local built before the first block was cached, a static on
  // the main thread - finds `closed` and deletes its block.
  struct lists {
    void* head[classes][per_class];
    std::size_t count[classes];
    bool registered;
    bool closed;
  };
  [[nodiscard]] static lists& mine() noexcept {
    thread_local lists l{};  // zero-initialised: no guard
    return l;
  }
  [[nodiscard]] static constexpr std::size_t class_of(std::size_t capacity) noexcept {
    return static_cast<std::size_t>(std::countr_zero(capacity)) - static_cast<std::size_t>(std::countr_zero(min_block));
  }
  // Deletes the cached blocks at thread exit. Set up on the first block cached, not per call.
  struct drain {
    lists* l;
    ~drain() {
      l->closed = true;
      for (std::size_t c = 0; c < classes; ++c) {
        while (l->count[c] > 0) ::operator delete(l->head[c][--l->count[c]]);
      }
    }
  };
  static void register_exit(lists& l) noexcept {
    l.registered = true;
    thread_local drain d{&l};
    (void)d;
  }
};
}  // namespace detail

/// An ordered list of distinct devices plus its hash. Rank i of the group is devices()[i].
/// Up to 16 devices live inline (no allocation; a copy is a fixed 64-byte copy, no library call);
/// larger groups keep their ranks in a block from detail::rank_blocks, which recycles blocks per
/// thread: copying or building a wide group in a steady state reuses a block instead of allocating,
/// and a group keeps its block when given fewer ranks, so assigning into it again does not allocate.
class device_group {
 public:
  static constexpr std::size_t inline_capacity = 16;

  device_group() = default;
  device_group(std::initializer_list<device_id> ranks) { assign(ranks.begin(), ranks.size()); }
  explicit device_group(std::span<const device_id> ranks) { assign(ranks.data(), ranks.size()); }
  // A group of up to 16 is copied as the inline array and its size and hash; only a wider one takes
  // a block.
  device_group(const device_group& o) : n_(o.n_), inline_(o.inline_), hash_(o.hash_) {
    if (o.n_ > inline_capacity) {
      cap_ = static_cast<std::uint32_t>(detail::rank_blocks::capacity_for(o.n_));
      spill_ = detail::rank_blocks::take(cap_);
      std::copy(o.spill_, o.spill_ + o.n_, spill_);
    }
  }
  // Into a group whose block is large enough, the ranks are copied in place.
  device_group& operator=(const device_group& o) {
    if (this == &o) return *this;
    if (o.n_ > inline_capacity) std::copy(o.spill_, o.spill_ + o.n_, reserve(o.n_));
    n_ = o.n_;
    inline_ = o.inline_;
    hash_ = o.hash_;
    return *this;
  }
  // A moved-from group is empty (its block, if any, went with the move).
  device_group(device_group&& o) noexcept : n_(o.n_), cap_(o.cap_), inline_(o.inline_), spill_(o.spill_), hash_(o.hash_) {
    o.spill_ = nullptr;
    o.cap_ = 0;
    o.reset_empty();
  }
  // From a group with a block, the two blocks change hands (the moved-from group is empty but keeps
  // this one's); from one without, this group keeps its block for the next wide assignment.
  device_group& operator=(device_group&& o) noexcept {
    if (this != &o) {
      n_ = o.n_;
      inline_ = o.inline_;
      hash_ = o.hash_;
      if (o.spill_) {
        std::swap(spill_, o.spill_);
        std::swap(cap_, o.cap_);
      }
      o.reset_empty();
    }
    return *this;
  }
  ~device_group() {
    if (spill_) detail::rank_blocks::give(spill_, cap_);
  }

  /// Devices first, first+1, ..., first+count-1: the common contiguous case.
  [[nodiscard]] static device_group contiguous(device_id first, std::size_t count) {
    device_group g;
    device_id* out = g.prepare(count);
    for (std::size_t i = 0; i < count; ++i) out[i] = first + static_cast<device_id>(i);
    g.rehash();
    return g;
  }

  /// Collects ranks one by one straight into a group (inline up to 16, then a recycled block that
  /// doubles); build() hashes once. Defined below, once device_group is complete.
  class builder;

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
    if (std::equal(begin(), end(), o.begin())) return true;  // the usual case: the same rank order too
    // Pairwise on small groups (no allocation); sorted copies on wide ones, where pairwise would
    // cost k^2 per step (65,536 devices: seconds per step).
    if (size() <= 32) return std::all_of(begin(), end(), [&](device_id d) { return o.contains(d); });
    std::vector<device_id> mine(begin(), end()), theirs(o.begin(), o.end());
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    return mine == theirs;
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
  static_assert(sizeof(device_id) == sizeof(std::uint32_t));
  [[nodiscard]] const device_id* data() const noexcept { return n_ <= inline_capacity ? inline_.data() : spill_; }
  // A block of at least n ranks (n > 16), kept when large enough; its contents are not kept.
  device_id* reserve(std::size_t n) {
    if (cap_ < n) {
      device_id* p = detail::rank_blocks::take(detail::rank_blocks::capacity_for(n));
      if (spill_) detail::rank_blocks::give(spill_, cap_);
      spill_ = p;
      cap_ = static_cast<std::uint32_t>(detail::rank_blocks::capacity_for(n));
    }
    return spill_;
  }
  // Room for n ranks (inline up to 16, else the block); the caller writes them and calls rehash().
  device_id* prepare(std::size_t n) {
    device_id* out = n <= inline_capacity ? inline_.data() : reserve(n);
    n_ = n;
    return out;
  }
  // One more rank, unhashed (builder): past 16 the inline ranks move to a block, a full block doubles.
  void append(device_id d) {
    if (n_ < inline_capacity) {
      inline_[n_++] = d;
      return;
    }
    if (n_ == inline_capacity) {
      std::copy(inline_.begin(), inline_.end(), reserve(inline_capacity + 1));
    } else if (n_ == cap_) {
      const std::size_t cap = 2 * static_cast<std::size_t>(cap_);
      device_id* p = detail::rank_blocks::take(cap);
      std::copy(spill_, spill_ + n_, p);
      detail::rank_blocks::give(spill_, cap_);
      spill_ = p;
      cap_ = static_cast<std::uint32_t>(cap);
    }
    spill_[n_++] = d;
  }
  void reset_empty() noexcept {
    n_ = 0;
    hash_ = 1469598103934665603ULL;
  }
  void assign(const device_id* p, std::size_t n) {
    std::copy(p, p + n, prepare(n));
    rehash();
  }
  void rehash() noexcept {  // FNV-1a over the ranks' 4 bytes each: stable across runs and platforms
    constexpr std::uint64_t prime = 1099511628211ULL, prime4 = prime * prime * prime * prime;
    std::uint64_t h = 1469598103934665603ULL;
    for (device_id d : *this) {
      // A rank below 256 has three zero bytes, and x ^ 0 = x: its four rounds are one xor and P^4.
      if (d < 256) {
        h = (h ^ d) * prime4;
        continue;
      }
      for (int b = 0; b < 4; ++b) h = (h ^ ((d >> (8 * b)) & 0xFFu)) * prime;
    }
    hash_ = h;
  }
  std::size_t n_ = 0;
  std::uint32_t cap_ = 0;                             // ranks the block holds (0: no block)
  std::array<device_id, inline_capacity> inline_{};  // the ranks when n_ <= 16 (a plain copy: no call)
  device_id* spill_ = nullptr;                        // the ranks when n_ > 16; may stay allocated when n_ <= 16
  std::uint64_t hash_ = 1469598103934665603ULL;
};

class device_group::builder {
 public:
  void push_back(device_id d) { g_.append(d); }
  [[nodiscard]] std::size_t size() const noexcept { return g_.size(); }
  [[nodiscard]] device_group build() && {
    g_.rehash();
    return std::move(g_);
  }

 private:
  device_group g_;
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
    if (begin == 0 && end == n_) return count_;  // the whole set (one node spanning the cluster)
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
