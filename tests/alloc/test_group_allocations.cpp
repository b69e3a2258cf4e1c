// Heap allocations of device_group, counted by replacing this program's global operator new (so
// these tests are their own executable, paraflex_alloc_tests): a group of up to 16 ranks never
// allocates, assigning into a group whose block is large enough copies in place, and a steady state
// that copies, builds and drops wide groups reuses recycled blocks.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include "paraflex/resource/group.hpp"

// GCC cannot see that these replace new/delete together, and warns about free() on new's memory.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
thread_local std::size_t t_allocations = 0;  // this thread's calls of operator new
}  // namespace
void* operator new(std::size_t n) {
  ++t_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
// The nothrow forms too (Catch uses them): every block from malloc must go back through free.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace paraflex;

namespace {

// Calls of operator new made by f.
template <class F>
std::size_t allocations_in(F&& f) {
  const std::size_t before = t_allocations;
  f();
  return t_allocations - before;
}

std::vector<device_id> scattered(std::size_t n) {
  std::vector<device_id> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(static_cast<device_id>(3 * (n - i) + 1));
  return v;
}

}  // namespace

TEST_CASE("the allocation counter sees a wide group's block", "[group][alloc]") {
  // Guards the tests below: a counter that counted nothing would pass them all.
  CHECK(allocations_in([] { std::vector<int> v(100); (void)v; }) == 1);
  CHECK(allocations_in([] { const device_group g = device_group::contiguous(0, 5000); (void)g; }) == 1);  // never recycled
}

TEST_CASE("groups of up to 16 devices are built, copied, assigned and moved without allocating", "[group][alloc]") {
  const std::vector<device_id> ranks = scattered(16);
  device_group target{1, 2, 3};
  const std::size_t n = allocations_in([&] {
    const device_group g{std::span<const device_id>(ranks)};
    device_group copy = g;
    target = copy;
    device_group moved = std::move(copy);
    target = std::move(moved);
    device_group::builder b;
    for (device_id d : ranks) b.push_back(d);
    target = std::move(b).build();
    const std::optional<device_group> o = device_group::contiguous(0, 16);
    target = *o;
  });
  CHECK(n == 0);
  CHECK(target == device_group::contiguous(0, 16));
}

TEST_CASE("assigning a wide group into one whose block is large enough does not allocate", "[group][alloc]") {
  const std::vector<device_id> ranks = scattered(100);
  const device_group wide{std::span<const device_id>(ranks)};
  device_group target = device_group::contiguous(0, 128);  // a 128-rank block
  std::size_t n = allocations_in([&] { target = wide; });
  CHECK(n == 0);
  CHECK(target == wide);
  // A narrow group assigned in between, or a clear(), keeps the block for the next wide one.
  const device_group other = device_group::contiguous(0, 120);
  n = allocations_in([&] {
    target = device_group{4, 5};
    target = wide;
    target.clear();
    target = other;
  });
  CHECK(n == 0);
  CHECK(target == other);
}

TEST_CASE("a steady state that copies, builds and drops wide groups allocates nothing once blocks are recycled", "[group][alloc]") {
  if (!detail::rank_blocks::pooled) {
    WARN("blocks are not recycled under AddressSanitizer: nothing to check");
    return;
  }
  const std::vector<device_id> ranks = scattered(40);
  const device_group held{std::span<const device_id>(ranks)};
  std::vector<device_group> queue;
  queue.reserve(8);
  // What a scheduler turn does with a wide group: a placement copies a request's group into an
  // optional, a builder collects ranks, the decision is stored and the last one dropped.
  const auto turn = [&] {
    const std::optional<device_group> placed = held;
    device_group::builder b;
    for (device_id d : ranks) b.push_back(d);
    queue.push_back(std::move(b).build());
    queue.push_back(*placed);
    queue.clear();
  };
  turn();  // the first turn takes blocks from the heap
  const std::size_t n = allocations_in([&] {
    for (int i = 0; i < 1000; ++i) turn();
  });
  CHECK(n == 0);
}
