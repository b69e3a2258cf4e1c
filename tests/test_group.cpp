// Tests of device_group's storage for groups wider than 16 ranks: value semantics across the inline
// and block storage, the builder, and the recycled blocks of detail::rank_blocks (per thread, a
// block freed on another thread than the one that took it).
#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "paraflex/resource/group.hpp"

using namespace paraflex;

namespace {

// n distinct ranks in decreasing order, so that rank order matters and no run is contiguous.
std::vector<device_id> scattered(std::size_t n) {
  std::vector<device_id> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(static_cast<device_id>(3 * (n - i) + 1));
  return v;
}

std::vector<device_id> ranks_of(const device_group& g) { return {g.begin(), g.end()}; }

// FNV-1a over the ranks' four bytes each, low byte first: the hash a group must carry.
std::uint64_t fnv1a(const std::vector<device_id>& ranks) {
  std::uint64_t h = 1469598103934665603ULL;
  for (device_id d : ranks) {
    for (int b = 0; b < 4; ++b) h = (h ^ ((d >> (8 * b)) & 0xFFu)) * 1099511628211ULL;
  }
  return h;
}

// Runs f on a fresh thread (whose block cache starts empty) and waits for it.
template <class F>
void on_fresh_thread(F&& f) {
  std::thread t(std::forward<F>(f));
  t.join();
}

}  // namespace

TEST_CASE("groups wider than 16 keep their ranks and hash when copied, assigned and moved", "[resource][group]") {
  // Across the block sizes (32, 64, ...) and past the largest recycled one (4,096 ranks).
  for (std::size_t n : {17, 31, 32, 33, 64, 100, 513, 4096, 5000}) {
    INFO("size " << n);
    const std::vector<device_id> ranks = scattered(n);
    const device_group g{std::span<const device_id>(ranks)};
    REQUIRE(ranks_of(g) == ranks);
    CHECK(g.hash() == fnv1a(ranks));

    device_group copy = g;
    CHECK(ranks_of(copy) == ranks);
    CHECK(copy.hash() == g.hash());
    { const device_group dropped = g; }  // a copy's block is its own: dropping one leaves g intact
    CHECK(ranks_of(g) == ranks);

    device_group moved = std::move(copy);
    CHECK(ranks_of(moved) == ranks);
    CHECK(moved.hash() == g.hash());
    CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): a moved-from group is empty
    CHECK(copy == device_group{});
    copy = g;  // and usable again
    CHECK(copy == g);

    device_group narrow{1, 2, 3};
    narrow = g;
    CHECK(ranks_of(narrow) == ranks);
    CHECK(narrow.hash() == g.hash());
    device_group larger = device_group::contiguous(0, 2 * n + 1);  // a bigger block than g needs
    larger = g;
    CHECK(ranks_of(larger) == ranks);
    CHECK(larger.hash() == g.hash());
    device_group smaller = device_group::contiguous(0, 17);  // too small a block for g
    smaller = g;
    CHECK(ranks_of(smaller) == ranks);

    // Move-assignment between two wide groups: each keeps the right ranks, and the moved-from one
    // takes new ranks correctly afterwards.
    device_group target = device_group::contiguous(7, 20);
    target = std::move(moved);
    CHECK(ranks_of(target) == ranks);
    CHECK(target.hash() == g.hash());
    CHECK(moved.empty());  // NOLINT(bugprone-use-after-move)
    moved = device_group::contiguous(2, 40);
    CHECK(moved == device_group::contiguous(2, 40));
    CHECK(moved[39] == 41);
    CHECK(ranks_of(target) == ranks);

    // Wide to narrow and back: a narrow group's ranks are read inline though a block is kept.
    target = device_group{4, 5};
    CHECK(target.to_string() == "{4,5}");
    CHECK(target.hash() == fnv1a({4, 5}));
    target = g;
    CHECK(ranks_of(target) == ranks);
    target.clear();
    CHECK(target.empty());
    CHECK(target == device_group{});
    target = g;
    CHECK(target == g);
    device_group& same = target;
    target = same;  // self-assignment
    CHECK(ranks_of(target) == ranks);
  }
}

TEST_CASE("a group's hash is FNV-1a over every byte of its ranks, below 256 and above", "[resource][group]") {
  // Ranks below 256 take a shortcut (three zero bytes); ranks above, and mixes of both, must not.
  for (const std::vector<device_id>& ranks : std::vector<std::vector<device_id>>{
           {0}, {7, 3}, {255}, {256}, {250, 251, 252, 253, 254, 255, 256, 257}, {65535, 65536, 0, 16777216, 4294967295u}}) {
    const device_group g{std::span<const device_id>(ranks)};
    CHECK(g.hash() == fnv1a(ranks));
  }
  CHECK(device_group::contiguous(250, 10).hash() == fnv1a({250, 251, 252, 253, 254, 255, 256, 257, 258, 259}));
}

TEST_CASE("a group built rank by rank equals the same group built from its ranks", "[resource][group]") {
  // Through the move from inline to a block (17) and each doubling of the block (33, 65, ...).
  std::vector<std::size_t> sizes;
  for (std::size_t n = 0; n <= 70; ++n) sizes.push_back(n);
  for (std::size_t n : {128, 129, 1000, 5000}) sizes.push_back(n);
  for (std::size_t n : sizes) {
    INFO("size " << n);
    const std::vector<device_id> ranks = scattered(n);
    device_group::builder b;
    for (device_id d : ranks) b.push_back(d);
    CHECK(b.size() == n);
    const device_group built = std::move(b).build();
    CHECK(ranks_of(built) == ranks);
    CHECK(built.hash() == fnv1a(ranks));
    CHECK(built == device_group{std::span<const device_id>(ranks)});
  }
}

TEST_CASE("a dropped wide group's block is reused by the next wide group of its size", "[resource][group]") {
  using blocks = detail::rank_blocks;
  // Blocks cached by a fresh thread (whose cache starts empty) after each step; checked here, as
  // Catch's assertions are for the main thread.
  std::vector<std::size_t> cached;
  on_fresh_thread([&] {
    const std::vector<device_id> ranks = scattered(40);  // a 64-rank block
    cached.push_back(blocks::cached());
    { const device_group g{std::span<const device_id>(ranks)}; }
    cached.push_back(blocks::cached());
    const device_group again = device_group::contiguous(0, 64);  // same block size: takes it back
    cached.push_back(blocks::cached());
    device_group keeper = device_group::contiguous(0, 40);
    keeper = device_group{1, 2};  // keeps its block: the narrow temporary leaves with none
    cached.push_back(blocks::cached());
    { const device_group other = device_group::contiguous(0, 65); }  // a 128-rank block: another size
    cached.push_back(blocks::cached());
    {
      std::vector<device_group> many;
      for (std::size_t i = 0; i < blocks::per_class + 10; ++i) many.emplace_back(std::span<const device_id>(ranks));
    }
    cached.push_back(blocks::cached());
    { const device_group huge = device_group::contiguous(0, 5000); }  // wider than the largest block kept
    cached.push_back(blocks::cached());
  });
  const std::size_t p = blocks::pooled ? 1 : 0;  // under AddressSanitizer nothing is kept
  // At most per_class blocks of one size are kept; the rest go back to the heap.
  CHECK(cached == std::vector<std::size_t>{0, p, 0, 0, p, p * (blocks::per_class + 1), p * (blocks::per_class + 1)});
}

TEST_CASE("wide groups freed on another thread than the one that built them keep every rank", "[resource][group][threads]") {
  using blocks = detail::rank_blocks;
  const std::vector<device_id> ranks = scattered(100);
  std::vector<device_group> made;
  std::size_t cached_by_maker = 0;
  on_fresh_thread([&] {
    for (int i = 0; i < 10; ++i) made.emplace_back(std::span<const device_id>(ranks));
    cached_by_maker = blocks::cached();
  });
  CHECK(cached_by_maker == 0);  // the maker exited with nothing cached and its groups alive
  REQUIRE(made.size() == 10);
  for (const auto& g : made) CHECK(ranks_of(g) == ranks);

  std::size_t cached_after_free = 0, cached_after_reuse = 0;
  bool reused_ok = true;
  on_fresh_thread([&] {
    made.clear();  // the blocks join this thread's cache
    cached_after_free = blocks::cached();
    std::vector<device_group> again;
    for (int i = 0; i < 10; ++i) {
      again.push_back(device_group::contiguous(static_cast<device_id>(i), 128));
      reused_ok = reused_ok && again.back()[127] == static_cast<device_id>(i + 127);
    }
    cached_after_reuse = blocks::cached();
    for (const auto& g : again) reused_ok = reused_ok && g.size() == 128 && g[0] + 127 == g[127];
  });
  CHECK(cached_after_free == (blocks::pooled ? 10u : 0u));
  CHECK(cached_after_reuse == 0);
  CHECK(reused_ok);
}
