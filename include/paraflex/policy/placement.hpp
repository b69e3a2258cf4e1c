// paraflex/policy/placement.hpp - choosing which free devices form a group of k.
//
// Shared by the built-in policies; a custom policy may use it or ignore it. Preference order:
//   1. the request's own devices when it keeps its degree (no migration: GF-DiT's stickiness),
//   2. an aligned contiguous block inside one node (keeps the free space in large blocks),
//   3. any k free devices inside one node, from the node with the fewest free devices that fit
//      (best fit: leaves whole nodes for wide groups),
//   4. the lowest-numbered free devices across nodes (collectives then cross the network).
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

#include "paraflex/resource/cluster.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

namespace detail {
/// Popcounts of the w-bit fields of x (w a power of two, 1..64), each in its own field.
[[nodiscard]] constexpr std::uint64_t field_popcounts(std::uint64_t x, unsigned w) noexcept {
  if (w >= 2) x -= (x >> 1) & 0x5555555555555555ULL;
  if (w >= 4) x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  if (w >= 8) x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  if (w >= 16) x = (x + (x >> 8)) & 0x00FF00FF00FF00FFULL;
  if (w >= 32) x = (x + (x >> 16)) & 0x0000FFFF0000FFFFULL;
  if (w >= 64) x = (x + (x >> 32)) & 0x00000000FFFFFFFFULL;
  return x;
}
/// Bits 0, k, 2k, ... of a word (k a power of two, 1..64).
[[nodiscard]] constexpr std::uint64_t every_kth_bit(unsigned k) noexcept {
  constexpr std::uint64_t by_log2[] = {~std::uint64_t{0},     0x5555555555555555ULL, 0x1111111111111111ULL, 0x0101010101010101ULL,
                                       0x0001000100010001ULL, 0x0000000100000001ULL, 0x1ULL};
  return by_log2[std::countr_zero(k)];
}
}  // namespace detail

/// k devices from `available`, by the order above (steps 2-4), or nullopt when fewer than k are free.
/// No allocation for groups of up to 16 devices: free devices are counted per node with popcounts
/// (for nodes of 1, 2, 4, ..., 64 devices: every node of a 64-bit word at once, empty words skipped).
[[nodiscard]] inline std::optional<device_group> find_free_group(const device_set& available, int k, const cluster& c) {
  if (k <= 0) return std::nullopt;
  const int g = c.gpus;
  const int per_node = c.gpus_per_node;
  const auto node_range = [&](int n) {
    const auto first = static_cast<device_id>(n * per_node);
    return std::pair{first, static_cast<device_id>(std::min(g, n * per_node + per_node))};
  };
  if (static_cast<int>(available.count()) < k) return std::nullopt;
  if (k <= per_node) {
    // Best-fit node: the fewest free devices that still holds k; the first such node on ties.
    int best_node = -1;
    std::size_t best_free = 0;
    if (per_node <= 64 && (per_node & (per_node - 1)) == 0) {
      // Nodes of a power-of-two size tile the 64-bit words: the free count of every node of a word
      // comes from one in-register popcount per field, and a word with nothing free is skipped.
      const auto w = static_cast<unsigned>(per_node);
      const std::uint64_t field_mask = w == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << w) - 1;
      const std::size_t per_word = 64 / w;
      const auto log_w = static_cast<unsigned>(std::countr_zero(w));  // a shift, not a division, per field found
      // Nodes of 4-32 devices: a field's count c <= w is below its top bit, so (c | top) - t keeps the
      // top bit exactly when c >= t, for every field at once without a borrow across fields; a word
      // whose fields all hold fewer than k, or no fewer than the best so far, is passed in a few
      // operations, and only the fields in between are looked at (in order: the same node as below).
      const bool swar = w >= 4 && w <= 32;
      const std::uint64_t ones = detail::every_kth_bit(w), tops = ones << (w - 1);
      const auto at_least = [&](std::uint64_t counts, std::size_t t) { return ((counts | tops) - t * ones) & tops; };
      for (std::size_t i = 0; i < available.word_count() && best_free != static_cast<std::size_t>(k); ++i) {
        const std::uint64_t bits = available.word(i);
        if (bits == 0) continue;
        const std::uint64_t counts = detail::field_popcounts(bits, w);
        if (swar) {
          std::uint64_t between = at_least(counts, static_cast<std::size_t>(k));
          if (best_node >= 0) between &= ~at_least(counts, best_free);
          for (; between != 0; between &= between - 1) {
            const std::size_t f = static_cast<std::size_t>(std::countr_zero(between)) >> log_w;
            const auto f_free = static_cast<std::size_t>((counts >> (f * w)) & field_mask);
            if (best_node < 0 || f_free < best_free) best_node = static_cast<int>(i * per_word + f), best_free = f_free;
            if (f_free == static_cast<std::size_t>(k)) break;  // an exact fit: no later node is better
          }
          continue;
        }
        for (std::size_t f = 0; f < per_word; ++f) {
          const auto f_free = static_cast<std::size_t>((counts >> (f * w)) & field_mask);
          if (f_free >= static_cast<std::size_t>(k) && (best_node < 0 || f_free < best_free)) {
            best_node = static_cast<int>(i * per_word + f), best_free = f_free;
            if (f_free == static_cast<std::size_t>(k)) break;  // an exact fit: no later node is better
          }
        }
      }
    } else {
      for (int n = 0; n < c.node_count(); ++n) {
        const auto [first, end] = node_range(n);
        const std::size_t f = available.count_range(first, end);
        if (f >= static_cast<std::size_t>(k) && (best_node < 0 || f < best_free)) best_node = n, best_free = f;
        if (best_free == static_cast<std::size_t>(k) && best_node >= 0) break;  // an exact fit: no later node is better
      }
    }
    if (best_node >= 0) {
      const auto [node_first, node_end] = node_range(best_node);
      const auto kk = static_cast<device_id>(k);
      if (per_node <= 64 && (per_node & (per_node - 1)) == 0) {
        // The node lies in one word: test the aligned blocks and pick the devices on its bits.
        const auto w = static_cast<unsigned>(per_node);
        const std::uint64_t node_bits = (available.word(node_first / 64) >> (node_first % 64)) &
                                        (w == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << w) - 1);
        const std::uint64_t block = kk == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << kk) - 1;
        for (device_id start = node_first; start + kk <= node_end; start += kk) {  // aligned blocks
          if (((node_bits >> (start - node_first)) & block) == block) return device_group::contiguous(start, static_cast<std::size_t>(k));
        }
        device_group::builder picked;
        for (std::uint64_t b = node_bits; b && static_cast<int>(picked.size()) < k; b &= b - 1) {
          picked.push_back(node_first + static_cast<device_id>(std::countr_zero(b)));
        }
        return std::move(picked).build();
      }
      // Aligned blocks, the first whose devices are all free.
      const std::size_t first = node_first, end = node_end, kz = kk;
      if (first % 64 == 0 && end % 64 == 0 && kz <= 64 && std::has_single_bit(kz)) {
        // Nodes of whole words and a power-of-two k: no block straddles a word, so each word shows
        // its full blocks at once - bit i survives log2(k) shift-and-ANDs when bits i..i+k-1 are all
        // free - and the first survivor at a multiple of k is the answer (the same block as below).
        const std::uint64_t at_starts = detail::every_kth_bit(static_cast<unsigned>(kz));
        for (std::size_t w = first / 64; w < end / 64; ++w) {
          std::uint64_t full = available.word(w);
          for (std::size_t shift = 1; shift < kz && full != 0; shift <<= 1) full &= full >> shift;
          if (const std::uint64_t starts = full & at_starts; starts != 0) {
            return device_group::contiguous(static_cast<device_id>(w * 64 + static_cast<std::size_t>(std::countr_zero(starts))), kz);
          }
        }
      } else {
        // Word scans jump over busy runs: a block can only start full at or after the next free device,
        // and ends short at the next busy one.
        std::size_t start = first;
        while (start + kz <= end) {
          const std::size_t d = available.next_member(start);
          if (d + kz > end) break;
          if (d != start) {  // start is busy: the block holding d is the next candidate
            const std::size_t block_of_d = first + (d - first) / kz * kz;
            start = block_of_d == start ? start + kz : block_of_d;
            continue;
          }
          const std::size_t z = available.next_non_member(start);
          if (z >= start + kz) return device_group::contiguous(static_cast<device_id>(start), static_cast<std::size_t>(k));
          start = first + ((z - first) / kz + 1) * kz;  // the first block after the busy device z
        }
      }
      device_group::builder picked;
      for (std::size_t d = available.next_member(first); d < end && static_cast<int>(picked.size()) < k; d = available.next_member(d + 1)) {
        picked.push_back(static_cast<device_id>(d));
      }
      return std::move(picked).build();
    }
  }
  // The lowest-numbered free devices, stopping at k.
  device_group::builder picked;
  for (std::size_t i = 0; i < available.word_count() && static_cast<int>(picked.size()) < k; ++i) {
    for (std::uint64_t b = available.word(i); b && static_cast<int>(picked.size()) < k; b &= b - 1) {
      picked.push_back(static_cast<device_id>(i * 64 + static_cast<std::size_t>(std::countr_zero(b))));
    }
  }
  return std::move(picked).build();
}

/// A group of k devices for request h: its current devices when it keeps the degree and they are
/// available (no migration), else find_free_group.
[[nodiscard]] inline std::optional<device_group> place(const scheduler_view& v, request_handle h, int k,
                                                        const device_set& available) {
  const auto& sg = v.request(h).state_group;
  if (static_cast<int>(sg.size()) == k && available.contains_all(sg)) return sg;
  return find_free_group(available, k, v.topology());
}

}  // namespace paraflex
