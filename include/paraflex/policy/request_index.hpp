// paraflex/policy/request_index.hpp - requests kept in a policy's order between calls.
//
// A policy that sorts every waiting request at every decision costs O(W log W) per call: 10,000
// queued requests make each step boundary take milliseconds. Most orders do not change between two
// calls - a deadline, a priority, an arrival time never change; a key that depends on a request's
// progress changes only when that request finishes a task - so the order can be kept, and a decision
// only walks its head: the first few requests get the free devices, the rest is never touched.
//
// request_index<Key> is that kept order: an ordered set of (key, handle), O(log n) insert, erase and
// re-key, in-order iteration, and no heap allocation once every handle has been seen (the tree is
// intrusive: its nodes live in a deque indexed by handle, which only grows when a new request comes).
//
//   request_index<tick> by_deadline;
//   by_deadline.insert(h, v.request(h).deadline());         // on_arrival
//   by_deadline.erase(h);                                    // on_request_end
//   for (const auto& [deadline, h] : by_deadline) { ... }    // in (key, handle) order
//
// Ties are broken by handle (arrival order), so the order is total and deterministic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <utility>

#include <boost/intrusive/set.hpp>

#include "paraflex/policy/decision.hpp"

namespace paraflex {

template <class Key>
class request_index {
  struct node : boost::intrusive::set_base_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>,
                                                boost::intrusive::optimize_size<true>> {
    Key key{};
    request_handle h = 0;
    bool linked = false;
  };
  struct node_less {
    bool operator()(const node& a, const node& b) const { return a.key < b.key || (!(b.key < a.key) && a.h < b.h); }
  };
  using tree = boost::intrusive::set<node, boost::intrusive::compare<node_less>, boost::intrusive::constant_time_size<true>>;

 public:
  /// What iteration yields: the key and the request.
  struct entry {
    const Key& key;
    request_handle h;
  };

  class iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = entry;
    using difference_type = std::ptrdiff_t;
    using reference = entry;
    using pointer = void;

    iterator() = default;
    [[nodiscard]] entry operator*() const { return {it_->key, it_->h}; }
    iterator& operator++() {
      ++it_;
      return *this;
    }
    iterator operator++(int) {
      iterator o = *this;
      ++it_;
      return o;
    }
    iterator& operator--() {
      --it_;
      return *this;
    }
    iterator operator--(int) {
      iterator o = *this;
      --it_;
      return o;
    }
    friend bool operator==(const iterator&, const iterator&) = default;

   private:
    friend class request_index;
    explicit iterator(typename tree::const_iterator it) : it_(it) {}
    typename tree::const_iterator it_;
  };

  request_index() = default;
  // The tree links nodes by address: a copy re-links its own nodes; a move keeps them where they are
  // (a deque's move leaves its elements in place).
  request_index(const request_index& o) : nodes_(o.nodes_) { relink(); }
  request_index(request_index&& o) noexcept : nodes_(std::move(o.nodes_)), tree_(std::move(o.tree_)) {}
  request_index& operator=(const request_index& o) {
    if (this != &o) {
      tree_.clear();
      nodes_ = o.nodes_;
      relink();
    }
    return *this;
  }
  request_index& operator=(request_index&& o) noexcept {
    if (this != &o) {
      tree_.clear();
      nodes_ = std::move(o.nodes_);
      tree_ = std::move(o.tree_);
    }
    return *this;
  }
  ~request_index() { tree_.clear(); }

  [[nodiscard]] iterator begin() const { return iterator(tree_.cbegin()); }
  [[nodiscard]] iterator end() const { return iterator(tree_.cend()); }
  [[nodiscard]] std::size_t size() const noexcept { return tree_.size(); }
  [[nodiscard]] bool empty() const noexcept { return tree_.empty(); }
  [[nodiscard]] bool contains(request_handle h) const noexcept { return h < nodes_.size() && nodes_[h].linked; }
  /// The key h is filed under. Precondition: contains(h).
  [[nodiscard]] const Key& key(request_handle h) const { return nodes_[h].key; }
  /// The position of h in the order (end() when absent): walk on from there.
  [[nodiscard]] iterator find(request_handle h) const {
    return contains(h) ? iterator(tree_.iterator_to(nodes_[h])) : end();
  }

  /// Files h under `key` (re-files it when present).
  void insert(request_handle h, Key key) {
    if (h >= nodes_.size()) nodes_.resize(static_cast<std::size_t>(h) + 1);  // deque: nodes never move
    node& n = nodes_[h];
    if (n.linked) {
      if (!(n.key < key) && !(key < n.key)) return;  // same key: nothing moves
      tree_.erase(tree_.iterator_to(n));
    }
    n.key = std::move(key);
    n.h = h;
    n.linked = true;
    tree_.insert(n);
  }
  /// Removes h; returns false when it was not there.
  bool erase(request_handle h) {
    if (!contains(h)) return false;
    node& n = nodes_[h];
    tree_.erase(tree_.iterator_to(n));
    n.linked = false;
    return true;
  }
  void clear() {
    for (auto& n : tree_) n.linked = false;
    tree_.clear();
  }

 private:
  void relink() {  // copied nodes carry their keys and flags, not their links
    for (auto& n : nodes_) {
      if (n.linked) tree_.insert(n);
    }
  }

  std::deque<node> nodes_;  // by handle
  tree tree_;
};

}  // namespace paraflex
