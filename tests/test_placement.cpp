// Tests of find_free_group's word-at-a-time search against a device-by-device reference, and of
// device_group's inline and heap storage.
#include <catch2/catch.hpp>

#include <optional>
#include <random>
#include <vector>

#include "paraflex/policy/placement.hpp"

using namespace paraflex;

namespace {

// The placement rules of placement.hpp, one device at a time: best-fit node (the first of the fewest
// free devices that hold k), its first all-free aligned block, else its lowest free devices; else the
// lowest free devices of the cluster.
std::optional<device_group> reference_group(const device_set& free, int k, const cluster& c) {
  if (k <= 0 || static_cast<int>(free.count()) < k) return std::nullopt;
  const auto is_free = [&](int d) { return free.test(static_cast<device_id>(d)); };
  std::vector<device_id> picked;
  if (k <= c.gpus_per_node) {
    int best = -1, best_free = 0;
    for (int n = 0; n < c.node_count(); ++n) {
      int f = 0;
      for (int d = n * c.gpus_per_node; d < std::min(c.gpus, (n + 1) * c.gpus_per_node); ++d) f += is_free(d);
      if (f >= k && (best < 0 || f < best_free)) best = n, best_free = f;
    }
    if (best >= 0) {
      const int first = best * c.gpus_per_node, end = std::min(c.gpus, first + c.gpus_per_node);
      for (int s = first; s + k <= end; s += k) {
        bool all = true;
        for (int d = s; d < s + k; ++d) all = all && is_free(d);
        if (all) return device_group::contiguous(static_cast<device_id>(s), static_cast<std::size_t>(k));
      }
      for (int d = first; d < end && static_cast<int>(picked.size()) < k; ++d) {
        if (is_free(d)) picked.push_back(static_cast<device_id>(d));
      }
      return device_group(std::span<const device_id>(picked));
    }
  }
  for (int d = 0; d < c.gpus && static_cast<int>(picked.size()) < k; ++d) {
    if (is_free(d)) picked.push_back(static_cast<device_id>(d));
  }
  return device_group(std::span<const device_id>(picked));
}

}  // namespace

TEST_CASE("find_free_group picks what the device-by-device rules pick, for every node size and fill", "[policy][placement]") {
  std::mt19937_64 rng(7);
  const cluster shapes[] = {{8, 8, ""},    {16, 8, ""},  {1024, 8, ""}, {1024, 1024, ""}, {96, 32, ""}, {128, 64, ""},
                            {12, 4, ""},   {24, 6, ""},  {100, 10, ""}, {7, 7, ""},       {200, 1, ""}, {130, 2, ""},
                            {256, 128, ""}, {72, 24, ""}, {20, 8, ""}, {50, 12, ""}, {64, 16, ""}, {40, 16, ""}};
  int checked = 0;
  for (const cluster& c : shapes) {
    for (int trial = 0; trial < 60; ++trial) {
      device_set free(c.device_count());
      const double p = static_cast<double>(trial % 10) / 9.0;  // from nearly full to nearly empty
      std::bernoulli_distribution coin(p);
      for (int d = 0; d < c.gpus; ++d) {
        if (coin(rng)) free.set(static_cast<device_id>(d));
      }
      for (int k : {1, 2, 3, 4, 6, 8, 16, 24, 32, 33, 64}) {
        INFO(c.gpus << " GPUs, " << c.gpus_per_node << " per node, trial " << trial << ", k " << k);
        const auto got = find_free_group(free, k, c);
        const auto want = reference_group(free, k, c);
        REQUIRE(got.has_value() == want.has_value());
        if (got) CHECK(got->to_string() == want->to_string());
        ++checked;
      }
    }
  }
  CHECK(checked == 18 * 60 * 11);
}

TEST_CASE("a device group keeps its devices through copies and moves, inline or on the heap", "[resource]") {
  for (std::size_t n : {std::size_t{0}, std::size_t{3}, std::size_t{16}, std::size_t{17}, std::size_t{40}}) {
    INFO("size " << n);
    const device_group g = device_group::contiguous(5, n);
    REQUIRE(g.size() == n);
    for (std::size_t i = 0; i < n; ++i) CHECK(g[i] == 5 + i);
    device_group copy = g;
    CHECK(copy == g);
    CHECK(copy.hash() == g.hash());
    device_group moved = std::move(copy);
    CHECK(moved == g);
    CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): a moved-from group is empty
    CHECK(copy == device_group{});
    device_group assigned{1, 2};
    assigned = moved;
    CHECK(assigned == g);
    assigned = device_group{9};
    CHECK(assigned.to_string() == "{9}");
    assigned = std::move(moved);
    CHECK(assigned == g);
    CHECK(std::vector<device_id>(assigned.begin(), assigned.end()) == std::vector<device_id>(g.devices().begin(), g.devices().end()));
  }
}
