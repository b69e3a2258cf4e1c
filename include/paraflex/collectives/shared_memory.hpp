// paraflex/collectives/shared_memory.hpp - group-free collectives for ranks that are threads of one process.
//
// shm_transport models Transport (collectives/concepts.hpp) for the CPU thread executor and for
// tests. It is set up once for a world of N devices; a group needs no set-up at all. Members of a
// group meet at a rendezvous keyed by (group, sequence number): every (group, rank) pair counts its
// own calls, so the k-th collective of a rank on a group meets the k-th collective of the other
// ranks on that same group. Consecutive collectives on one group, and collectives on overlapping
// groups ({0,1,2,3} and {2,3}) running at the same time, therefore never mix. As with NCCL, ranks
// of one group must issue that group's collectives in the same order; collectives on different
// groups that share a rank must be issued in an order consistent across those ranks, or they wait
// for each other forever (the usual collective-ordering rule, not a property of this transport).
//
// Data path: each rank copies its contribution into the rendezvous' staging buffer, waits until all
// ranks have arrived (a condition variable, no spinning), copies its result out and leaves; the last
// rank to leave frees the rendezvous. Copies happen outside the lock, so unrelated groups proceed in
// parallel. send() is buffered (it never blocks); recv() blocks until the matching message arrives.
// Messages between one (source, destination) pair are delivered in FIFO order.
//
// Failures: abort(devices) wakes every call waiting on those devices and makes it throw
// transport_aborted, as does any later call touching them, so a failed rank cannot leave its peers
// blocked. reset(devices) then forgets the sequence numbers, rendezvous and messages involving them
// so that the group can be used again; call it only when no thread is inside a call for them.
//
// Misuse (a device not in the group, a device outside the world, buffers of the wrong size, ranks of
// one rendezvous disagreeing on the operation or the size) throws std::invalid_argument; where other
// ranks already wait on the bad rendezvous they are woken with transport_aborted.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "paraflex/collectives/concepts.hpp"
#include "paraflex/resource/group.hpp"

namespace paraflex {

/// A collective or point-to-point call gave up because a device it involves was aborted.
class transport_aborted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class shm_transport {
 public:
  /// A world of `world_size` devices, 0 .. world_size-1.
  explicit shm_transport(std::size_t world_size) : aborted_(world_size, 0) {
    if (world_size == 0) throw std::invalid_argument("shm_transport: the world needs at least one device");
  }
  shm_transport(const shm_transport&) = delete;
  shm_transport& operator=(const shm_transport&) = delete;

  [[nodiscard]] std::size_t world_size() const noexcept { return aborted_.size(); }

  /// recv = the concatenation, in rank order, of every rank's send; recv.size() == send.size() * g.size().
  void all_gather(const device_group& g, device_id self, std::span<const std::byte> send, std::span<std::byte> recv) {
    const std::size_t rank = rank_of(g, self, "all_gather");
    if (recv.size() != send.size() * g.size()) {
      throw std::invalid_argument("shm_transport::all_gather: recv holds " + std::to_string(recv.size()) + " bytes, expected " +
                                  std::to_string(send.size()) + " x " + std::to_string(g.size()) + " ranks");
    }
    if (g.size() == 1) return copy_alone(self, send, recv);
    auto s = arrive(op::all_gather, g, rank, send);
    copy_bytes(recv.data(), s->staging.data(), recv.size());
    leave(s);
  }

  /// send holds g.size() equal chunks, chunk j for rank j; recv receives, in rank order, the chunk
  /// each rank addressed to self (Ulysses' sequence <-> head swap). recv.size() == send.size().
  void all_to_all(const device_group& g, device_id self, std::span<const std::byte> send, std::span<std::byte> recv) {
    const std::size_t rank = rank_of(g, self, "all_to_all");
    const std::size_t n = g.size();
    if (send.size() % n != 0) {
      throw std::invalid_argument("shm_transport::all_to_all: " + std::to_string(send.size()) + " bytes do not split into " +
                                  std::to_string(n) + " equal chunks");
    }
    if (recv.size() != send.size()) {
      throw std::invalid_argument("shm_transport::all_to_all: recv holds " + std::to_string(recv.size()) + " bytes, send " +
                                  std::to_string(send.size()));
    }
    if (n == 1) return copy_alone(self, send, recv);
    auto s = arrive(op::all_to_all, g, rank, send);
    const std::size_t chunk = send.size() / n;
    for (std::size_t i = 0; i < n; ++i) copy_bytes(recv.data() + i * chunk, s->staging.data() + i * send.size() + rank * chunk, chunk);
    leave(s);
  }

  /// Returns when every rank of g has called barrier(g, ...).
  void barrier(const device_group& g, device_id self) {
    const std::size_t rank = rank_of(g, self, "barrier");
    if (g.size() == 1) return copy_alone(self, {}, {});
    leave(arrive(op::barrier, g, rank, {}));
  }

  /// Buffered point-to-point put: returns at once; `peer` receives it with recv(peer, self, ...).
  void send(device_id self, device_id peer, std::span<const std::byte> data) {
    check_device(self, "send");
    check_device(peer, "send");
    std::vector<std::byte> message(data.begin(), data.end());  // copied before taking the lock
    std::lock_guard lk(mu_);
    throw_if_aborted(self, peer, "send");
    auto& box = mailboxes_[mailbox_key(self, peer)];
    box.messages.push_back(std::move(message));
    box.ready.notify_all();
  }

  /// Blocks until the oldest message from `peer` to `self` is there; its size must be data.size()
  /// (otherwise the message is consumed and std::invalid_argument thrown).
  void recv(device_id self, device_id peer, std::span<std::byte> data) {
    check_device(self, "recv");
    check_device(peer, "recv");
    std::vector<std::byte> message;
    {
      std::unique_lock lk(mu_);
      auto& box = mailboxes_[mailbox_key(peer, self)];
      box.ready.wait(lk, [&] { return !box.messages.empty() || aborted_[self] || aborted_[peer]; });
      throw_if_aborted(self, peer, "recv");
      message = std::move(box.messages.front());
      box.messages.pop_front();
    }
    if (message.size() != data.size()) {
      throw std::invalid_argument("shm_transport::recv: device " + std::to_string(self) + " expected " + std::to_string(data.size()) +
                                  " bytes from device " + std::to_string(peer) + ", the message has " + std::to_string(message.size()));
    }
    copy_bytes(data.data(), message.data(), data.size());
  }

  /// Every call waiting on, or later touching, one of `devices` throws transport_aborted until reset.
  void abort(std::span<const device_id> devices) {
    std::lock_guard lk(mu_);
    for (device_id d : devices) {
      if (d < aborted_.size()) aborted_[d] = 1;
    }
    for (auto& [key, s] : slots_) {
      if (touches(s->group, devices)) {
        s->aborted = true;
        s->done.notify_all();
      }
    }
    for (auto& [key, box] : mailboxes_) {
      if (touches_pair(key, devices)) box.ready.notify_all();
    }
  }

  /// Forgets sequence numbers, rendezvous and undelivered messages involving `devices`, and clears
  /// their abort. Precondition: no thread is inside a call that involves them.
  void reset(std::span<const device_id> devices) {
    std::lock_guard lk(mu_);
    for (device_id d : devices) {
      if (d < aborted_.size()) aborted_[d] = 0;
    }
    std::erase_if(sequence_, [&](const auto& kv) { return touches(kv.first, devices); });
    std::erase_if(slots_, [&](const auto& kv) { return touches(kv.second->group, devices); });
    std::erase_if(mailboxes_, [&](const auto& kv) { return touches_pair(kv.first, devices); });
  }

 private:
  enum class op : unsigned char { all_gather, all_to_all, barrier };
  static const char* name(op o) noexcept {
    switch (o) {
      case op::all_gather: return "all_gather";
      case op::all_to_all: return "all_to_all";
      case op::barrier: return "barrier";
    }
    return "?";
  }

  // One meeting of a group's ranks: the k-th call of every rank on that group.
  struct slot {
    device_group group;
    std::uint64_t seq = 0;
    op kind = op::barrier;
    std::size_t bytes = 0;            // each rank's contribution
    std::vector<std::byte> staging;   // rank i's contribution at [i * bytes, (i + 1) * bytes)
    std::size_t arrived = 0;
    std::size_t left = 0;
    bool aborted = false;
    std::condition_variable done;
  };
  struct slot_key {
    device_group group;
    std::uint64_t seq = 0;
    friend bool operator==(const slot_key&, const slot_key&) = default;
  };
  struct group_hash {
    std::size_t operator()(const device_group& g) const noexcept { return static_cast<std::size_t>(g.hash()); }
    std::size_t operator()(const slot_key& k) const noexcept {
      return static_cast<std::size_t>(k.group.hash() ^ (k.seq * 0x9E3779B97F4A7C15ULL));
    }
  };
  struct mailbox {
    std::deque<std::vector<std::byte>> messages;
    std::condition_variable ready;
  };

  static void copy_bytes(std::byte* to, const std::byte* from, std::size_t n) noexcept {
    if (n) std::memmove(to, from, n);  // null pointers are undefined even for 0 bytes; in-place calls overlap
  }
  static std::uint64_t mailbox_key(device_id from, device_id to) noexcept { return (std::uint64_t{from} << 32) | to; }
  static bool touches(const device_group& g, std::span<const device_id> devices) noexcept {
    return std::any_of(devices.begin(), devices.end(), [&](device_id d) { return g.contains(d); });
  }
  static bool touches_pair(std::uint64_t key, std::span<const device_id> devices) noexcept {
    const auto from = static_cast<device_id>(key >> 32);
    const auto to = static_cast<device_id>(key & 0xFFFFFFFFu);
    return std::any_of(devices.begin(), devices.end(), [&](device_id d) { return d == from || d == to; });
  }

  void check_device(device_id d, const char* what) const {
    if (d >= aborted_.size()) {
      throw std::invalid_argument(std::string("shm_transport::") + what + ": device " + std::to_string(d) + " is outside the world of " +
                                  std::to_string(aborted_.size()) + " devices");
    }
  }
  std::size_t rank_of(const device_group& g, device_id self, const char* what) const {
    check_device(self, what);
    for (std::size_t i = 0; i < g.size(); ++i) {
      if (g[i] == self) return i;
    }
    throw std::invalid_argument(std::string("shm_transport::") + what + ": device " + std::to_string(self) + " is not in group " +
                                g.to_string());
  }
  void throw_if_aborted(device_id a, device_id b, const char* what) const {
    if (aborted_[a] || aborted_[b]) {
      throw transport_aborted(std::string("shm_transport::") + what + ": device " + std::to_string(aborted_[a] ? a : b) + " was aborted");
    }
  }
  void throw_if_aborted(const device_group& g, const char* what) const {
    for (device_id d : g) {
      if (aborted_[d]) throw transport_aborted(std::string("shm_transport::") + what + ": device " + std::to_string(d) + " of group " +
                                               g.to_string() + " was aborted");
    }
  }

  // A group of one meets nobody: it only has to honour aborts.
  void copy_alone(device_id self, std::span<const std::byte> send, std::span<std::byte> recv) {
    {
      std::lock_guard lk(mu_);
      throw_if_aborted(self, self, "collective");
    }
    copy_bytes(recv.data(), send.data(), send.size());
  }

  // Joins the rendezvous of this rank's next call on g, contributes `send`, waits for everyone.
  std::shared_ptr<slot> arrive(op kind, const device_group& g, std::size_t rank, std::span<const std::byte> send) {
    std::shared_ptr<slot> s;
    {
      std::lock_guard lk(mu_);
      for (device_id d : g) check_device(d, name(kind));
      throw_if_aborted(g, name(kind));
      auto& counters = sequence_[g];
      if (counters.empty()) counters.assign(g.size(), 0);
      const std::uint64_t seq = counters[rank];
      auto it = slots_.find(slot_key{g, seq});
      if (it == slots_.end()) {
        check_distinct(g);  // once per rendezvous; the other ranks pass the same group
        auto fresh = std::make_shared<slot>();
        fresh->group = g;
        fresh->seq = seq;
        fresh->kind = kind;
        fresh->bytes = send.size();
        fresh->staging.resize(send.size() * g.size());
        it = slots_.emplace(slot_key{g, seq}, std::move(fresh)).first;
      } else if (it->second->kind != kind || it->second->bytes != send.size()) {
        const auto& other = *it->second;
        it->second->aborted = true;  // the ranks already there would wait forever
        it->second->done.notify_all();
        throw std::invalid_argument("shm_transport: rank " + std::to_string(rank) + " of group " + g.to_string() + " called " + name(kind) +
                                    " with " + std::to_string(send.size()) + " bytes where another rank called " + name(other.kind) +
                                    " with " + std::to_string(other.bytes) + " (call " + std::to_string(seq) + " on this group)");
      }
      ++counters[rank];
      s = it->second;
    }
    copy_bytes(s->staging.data() + rank * s->bytes, send.data(), send.size());  // own region: no lock needed
    std::unique_lock lk(mu_);
    if (++s->arrived == s->group.size()) {
      s->done.notify_all();
    } else {
      s->done.wait(lk, [&] { return s->arrived == s->group.size() || s->aborted; });
      if (s->arrived != s->group.size()) {
        throw transport_aborted("shm_transport::" + std::string(name(kind)) + ": group " + g.to_string() + " was aborted");
      }
    }
    return s;
  }

  // After copying the result out: the last rank to leave frees the rendezvous.
  void leave(const std::shared_ptr<slot>& s) {
    std::lock_guard lk(mu_);
    if (++s->left < s->group.size()) return;
    auto it = slots_.find(slot_key{s->group, s->seq});
    if (it != slots_.end() && it->second == s) slots_.erase(it);
  }

  static void check_distinct(const device_group& g) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      for (std::size_t j = i + 1; j < g.size(); ++j) {
        if (g[i] == g[j]) throw std::invalid_argument("shm_transport: device " + std::to_string(g[i]) + " appears twice in group " + g.to_string());
      }
    }
  }

  std::mutex mu_;
  std::vector<unsigned char> aborted_;  // per device
  std::unordered_map<device_group, std::vector<std::uint64_t>, group_hash> sequence_;  // calls per (group, rank)
  std::unordered_map<slot_key, std::shared_ptr<slot>, group_hash> slots_;
  std::unordered_map<std::uint64_t, mailbox> mailboxes_;  // key: from << 32 | to
};

static_assert(Transport<shm_transport>);

}  // namespace paraflex
