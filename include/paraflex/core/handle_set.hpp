// paraflex/core/handle_set.hpp - a set of small dense integers (request handles) as a two-level bitmap.
//
// The runtime's waiting and running sets change at every task boundary and are read by every policy
// call. A sorted vector costs O(n) per change (a memmove of the whole queue when a long-waiting request
// goes back to waiting); this set costs O(1) per change, iterates in increasing order, and skips empty
// regions 4096 handles at a time. Handles only grow, and old requests end, so the low end of the
// bitmap empties over time: `lowest_` remembers where the members start.
//
// Memory: one bit per handle ever inserted, plus one bit per 64 of them. Growth happens only when a
// larger handle is inserted (a new request), never on the steady-state path.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <stdexcept>
#include <vector>

namespace paraflex {

class handle_set {
 public:
  using value_type = std::uint32_t;

  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::uint32_t;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::uint32_t*;
    using reference = std::uint32_t;

    iterator() = default;
    [[nodiscard]] std::uint32_t operator*() const noexcept { return static_cast<std::uint32_t>(word_ * 64 + static_cast<std::size_t>(std::countr_zero(bits_))); }
    iterator& operator++() noexcept {
      bits_ &= bits_ - 1;
      if (bits_ == 0) advance(word_ + 1);
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.word_ == b.word_ && a.bits_ == b.bits_; }

   private:
    friend class handle_set;
    iterator(const handle_set* s, std::size_t from_word) noexcept : s_(s) { advance(from_word); }
    // Moves to the first non-empty word at or after w (the end when none).
    void advance(std::size_t w) noexcept {
      const auto& words = s_->words_;
      const auto& summary = s_->summary_;
      while (w < words.size()) {
        if (words[w] != 0) {
          word_ = w;
          bits_ = words[w];
          return;
        }
        // Jump with the summary: the next word whose summary bit is set.
        std::size_t sw = w / 64;
        std::uint64_t mask = summary[sw] & (~std::uint64_t{0} << (w % 64));
        while (mask == 0) {
          if (++sw >= summary.size()) {
            word_ = words.size();
            bits_ = 0;
            return;
          }
          mask = summary[sw];
        }
        w = sw * 64 + static_cast<std::size_t>(std::countr_zero(mask));
      }
      word_ = words.size();
      bits_ = 0;
    }
    const handle_set* s_ = nullptr;
    std::size_t word_ = 0;
    std::uint64_t bits_ = 0;
  };

  [[nodiscard]] iterator begin() const noexcept { return iterator(this, lowest_); }
  [[nodiscard]] iterator end() const noexcept {
    iterator it;
    it.s_ = this;
    it.word_ = words_.size();
    return it;
  }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  /// The smallest member. Precondition: not empty.
  [[nodiscard]] std::uint32_t front() const {
    if (count_ == 0) throw std::out_of_range("handle_set::front: empty set");
    return *begin();
  }
  [[nodiscard]] bool contains(std::uint32_t h) const noexcept {
    const std::size_t w = h / 64;
    return w < words_.size() && ((words_[w] >> (h % 64)) & 1U) != 0;
  }

  /// Inserts h; returns false when it was there already.
  bool insert(std::uint32_t h) {
    const std::size_t w = h / 64;
    if (w >= words_.size()) grow(w + 1);
    const std::uint64_t bit = std::uint64_t{1} << (h % 64);
    if (words_[w] & bit) return false;
    words_[w] |= bit;
    summary_[w / 64] |= std::uint64_t{1} << (w % 64);
    if (w < lowest_) lowest_ = w;
    ++count_;
    return true;
  }
  /// Erases h; returns false when it was not there.
  bool erase(std::uint32_t h) noexcept {
    const std::size_t w = h / 64;
    if (w >= words_.size()) return false;
    const std::uint64_t bit = std::uint64_t{1} << (h % 64);
    if (!(words_[w] & bit)) return false;
    words_[w] &= ~bit;
    if (words_[w] == 0) {
      summary_[w / 64] &= ~(std::uint64_t{1} << (w % 64));
      if (w == lowest_) lowest_ = begin().word_;  // the next non-empty word (or the end)
    }
    --count_;
    return true;
  }
  void clear() noexcept {
    for (auto& x : words_) x = 0;
    for (auto& x : summary_) x = 0;
    lowest_ = words_.size();
    count_ = 0;
  }
  /// Makes room for handles below n without inserting them (to keep growth off hot paths).
  void reserve(std::size_t n) {
    if ((n + 63) / 64 > words_.size()) grow((n + 63) / 64);
  }

 private:
  void grow(std::size_t words) {
    const bool was_empty = count_ == 0;
    words_.resize(words, 0);
    summary_.resize((words + 63) / 64, 0);
    if (was_empty) lowest_ = words_.size();
  }

  std::vector<std::uint64_t> words_;    // bit h % 64 of word h / 64: h is a member
  std::vector<std::uint64_t> summary_;  // bit w % 64 of word w / 64: words_[w] != 0
  std::size_t lowest_ = 0;              // no member below word lowest_ (== words_.size() when empty)
  std::size_t count_ = 0;
};

}  // namespace paraflex
