// Micro-benchmarks (Google Benchmark) of the scheduler, for every built-in policy:
//
//   decide/<policy>/requests:R/gpus:G       the steady state: R requests known (running on every GPU,
//                                           the rest waiting); one turn of the runtime = the next task
//                                           ends, its devices free up, the policy decides, launches
//                                           follow. Counters: policy_us (the decide() call alone),
//                                           allocs (heap allocations per turn: the goal is 0),
//                                           round_us (round-based: mean time of a turn that starts a round).
//   decide_cold/<policy>/requests:R/gpus:G  the first call: a fresh policy, R waiting, G free GPUs.
//   simulate/<policy>/requests:R/gpus:G     a whole simulated run at ~0.9 load; counter events/s (task
//                                           ends and arrivals processed per second of host time).
//
// Heap allocations are counted by replacing the global operator new of this program.
// Results and the commands that reproduce them: docs/performance.md.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "builtin_policies.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/round_based.hpp"
#include "paraflex/runtime/scheduler.hpp"

// ---- counting allocator --------------------------------------------------------------------------
// GCC cannot see that these replace new/delete together, and warns about free() on new's memory.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<std::uint64_t> g_allocations{0};
}  // namespace
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace paraflex;

// Sublinear scaling in the style of the FLUX profile rows (no file needed).
struct bench_cost {
  double step_seconds(const request_shape& s, int k) const {
    const double t = latent_tokens(s);
    return 0.05 + t * 2.5e-5 / k + t * t * 1.0e-9 / k + (k > 1 ? 0.002 * k : 0.0);
  }
  bool allows_degree(const request_shape&, int k) const { return k <= 8; }  // within a node
  double migration_seconds(const request_shape&, int, int, bool cross) const { return cross ? 0.002 : 0.0005; }
};

constexpr int steps = 50;
constexpr int sizes[] = {256, 512, 1024, 2048};

// Device-seconds of one request at degree 1, on average over the four sizes.
double mean_work_s() {
  bench_cost c;
  double sum = 0;
  for (int s : sizes) sum += c.step_seconds(request_shape{"bench", s, s, 1}, 1) * steps;
  return sum / 4;
}

// n requests, arrivals `gap_s` apart, deadlines spread so that the queue is about feasible.
std::vector<request_spec> make_requests(int n, int gpus, double gap_s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double horizon = std::max(60.0, mean_work_s() * n / gpus);  // time to drain n at degree 1
  std::vector<request_spec> out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int s = sizes[rng() % 4];
    request_spec r;
    r.id = std::to_string(i);
    r.arrival = static_cast<tick>(gap_s * 1e6 * i);
    r.shape = {"bench", s, s, 1};
    r.steps = steps;
    r.slo = static_cast<tick>((0.5 + 1.5 * static_cast<double>(rng() % 1000) / 1000.0) * horizon * 1e6);
    out.push_back(std::move(r));
  }
  return out;
}

// Every built-in policy once (static:K at K = 2).
const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {"static:2", "rssp", "round-based", "edf-best-fit", "slo-aware", "throughput-first"};
  return names;
}

struct bench_args {
  std::string name;
  int requests, gpus;
  policy_registry registry;
};
bench_args args_of(benchmark::State& state, const std::string& name) {
  const int gpus = static_cast<int>(state.range(1));
  return {name, static_cast<int>(state.range(0)), gpus, paraflex_bench::builtin_registry(gpus)};
}

// ---- steady state --------------------------------------------------------------------------------
// Times one turn of the runtime at a time, on a run where R requests arrived at once: the first turn
// fills the GPUs, every later one is a task end and the decision after it.
struct probe_policy {  // forwards to the real policy, and times its calls
  any_policy* inner;
  std::uint64_t calls = 0;
  double us = 0;
  void decide(const scheduler_view& v, decision_buffer& out) {
    const auto t0 = std::chrono::steady_clock::now();
    inner->decide(v, out);
    us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    ++calls;
  }
  void on_arrival(const scheduler_view& v, request_handle h) { inner->on_arrival(v, h); }
  void on_request_end(const scheduler_view& v, request_handle h) { inner->on_request_end(v, h); }
  void on_task_end(const scheduler_view& v, request_handle h, bool ok) { inner->on_task_end(v, h, ok); }
};

// One steady-state run: R requests submitted at once, warmed up until the first task ends.
struct steady_run {
  bench_cost cost;
  any_policy policy;
  probe_policy probe{&policy};
  simulated_executor ex;
  scheduler<probe_policy, simulated_executor, bench_cost> s;
  steady_run(const policy_registry& registry, const std::string& name, const std::vector<request_spec>& reqs, int gpus)
      : policy(registry.make(name).value_or_throw()), s(cluster{gpus, 8, "bench"}, probe, ex, cost) {
    for (const auto& r : reqs) s.submit(r);
    // Past the first turn (which fills every GPU at once) to the first task ends.
    for (int i = 0; i < 3 && !s.finished(); ++i) s.turn_to(s.next_wakeup());
    probe.calls = 0;
    probe.us = 0;
  }
  [[nodiscard]] std::size_t known() const { return s.state().waiting.size() + s.state().running.size(); }
};

void BM_decide(benchmark::State& state, const std::string& spec) {
  auto [name, n, gpus, registry] = args_of(state, spec);
  const auto reqs = make_requests(n, gpus, 0.0, 1);
  auto run = std::make_unique<steady_run>(registry, name, reqs, gpus);
  std::uint64_t turns = 0, allocs = 0, round_turns = 0, calls = 0, restarts = 0;
  double round_us = 0, policy_us = 0, known = 0;
  for (auto _ : state) {
    // Keep R requests known: once half of them have ended, start the run again (not timed).
    if (run->s.finished() || 2 * run->known() < static_cast<std::size_t>(n)) {
      state.PauseTiming();
      calls += run->probe.calls;
      policy_us += run->probe.us;
      run.reset();
      run = std::make_unique<steady_run>(registry, name, reqs, gpus);
      ++restarts;
      state.ResumeTiming();
    }
    auto* round_based = run->policy.target<round_based_policy>();
    const std::uint64_t rounds_before = round_based ? round_based->rounds() : 0;
    const std::uint64_t a0 = g_allocations.load(std::memory_order_relaxed);
    const auto t0 = std::chrono::steady_clock::now();
    run->s.turn_to(run->s.next_wakeup());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    allocs += g_allocations.load(std::memory_order_relaxed) - a0;
    if (round_based && round_based->rounds() != rounds_before) ++round_turns, round_us += us;
    if ((turns & 1023) == 0) known += static_cast<double>(run->known());
    ++turns;
  }
  calls += run->probe.calls;
  policy_us += run->probe.us;
  state.counters["known"] = known / static_cast<double>((turns + 1023) / 1024);
  state.counters["policy_us"] = calls ? policy_us / static_cast<double>(calls) : 0.0;
  state.counters["allocs"] = turns ? static_cast<double>(allocs) / static_cast<double>(turns) : 0.0;
  state.counters["restarts"] = static_cast<double>(restarts);
  if (spec == "round-based") state.counters["round_us"] = round_turns ? round_us / static_cast<double>(round_turns) : 0.0;
}

// ---- cold first call -----------------------------------------------------------------------------
// Runs the benchmark loop inside the first policy call, when all R requests wait and all GPUs are
// free. Each iteration decides with a fresh policy object that has seen the R arrivals, so policies
// that build state on their first call (an order, a round plan) are timed doing that work.
struct timed_first_call {
  const policy_registry* registry;
  std::string name;
  benchmark::State* state;
  bool done = false;
  void decide(const scheduler_view& v, decision_buffer& out) {
    if (!done) {
      done = true;
      for (auto _ : *state) {
        state->PauseTiming();
        any_policy inner = registry->make(name).value_or_throw();
        for (request_handle h : v.waiting()) inner.on_arrival(v, h);
        out.clear();
        state->ResumeTiming();
        inner.decide(v, out);
        benchmark::DoNotOptimize(out.assigns().data());
      }
      state->counters["waiting"] = static_cast<double>(v.waiting().size());
    }
    out.clear();
    for (request_handle h : v.waiting()) out.drop(h, "benchmark_over");  // end the run at once
  }
};

void BM_decide_cold(benchmark::State& state, const std::string& spec) {
  auto [name, n, gpus, registry] = args_of(state, spec);
  bench_cost cost;
  simulated_executor ex;
  timed_first_call p{&registry, name, &state};
  scheduler s(cluster{gpus, 8, "bench"}, p, ex, cost);
  for (auto& r : make_requests(n, gpus, 0.0, 1)) s.submit(std::move(r));
  s.run();
}

// ---- whole runs ----------------------------------------------------------------------------------
void BM_simulate(benchmark::State& state, const std::string& spec) {
  auto [name, n, gpus, registry] = args_of(state, spec);
  bench_cost cost;
  // Arrivals spaced so that the offered load is about 0.9 of the cluster at degree 1.
  const auto reqs = make_requests(n, gpus, mean_work_s() / (0.9 * gpus), 2);
  std::uint64_t events = 0, decisions = 0;
  for (auto _ : state) {
    any_policy p = registry.make(name).value_or_throw();
    simulated_executor ex;
    scheduler s(cluster{gpus, 8, "bench"}, p, ex, cost);
    std::uint64_t tasks = 0;
    s.on_task_record([&](const task_record&) { ++tasks; });
    for (const auto& r : reqs) s.submit(r);
    s.run();
    events += tasks + reqs.size();  // task ends and arrivals
    decisions += s.stats().decisions;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["decisions/s"] = benchmark::Counter(static_cast<double>(decisions), benchmark::Counter::kIsRate);
}

}  // namespace

// decide/<policy>/requests:R/gpus:G and so on, one family per policy.
int main(int argc, char** argv) {
  for (const auto& policy : policy_names()) {
    auto* d = benchmark::RegisterBenchmark(("decide/" + policy).c_str(), BM_decide, policy);
    auto* c = benchmark::RegisterBenchmark(("decide_cold/" + policy).c_str(), BM_decide_cold, policy);
    auto* s = benchmark::RegisterBenchmark(("simulate/" + policy).c_str(), BM_simulate, policy);
    for (auto* b : {d, c, s}) b->ArgNames({"requests", "gpus"});
    for (int n : {100, 1000, 10000, 100000}) {
      for (int g : {8, 64, 512}) {
        d->Args({n, g});
        c->Args({n, g});
      }
    }
    for (int n : {1000, 10000}) {
      for (int g : {8, 64, 512}) s->Args({n, g});
    }
    d->Unit(benchmark::kMicrosecond);
    c->Unit(benchmark::kMicrosecond);
    s->Unit(benchmark::kMillisecond)->Iterations(1);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
