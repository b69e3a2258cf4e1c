// Micro-benchmarks (Google Benchmark) of the scheduler:
//   BM_decision/<policy>/<waiting requests>/<gpus>: one policy call on a queue of N waiting requests
//     and G free GPUs (the call the runtime makes at a rescheduling point);
//   BM_simulation/<policy>/<requests>/<gpus>: a whole simulated run; reports simulated tasks per second.
// Results and the command that reproduces them: docs/results.md ("Scheduler speed").
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "builtin_policies.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/runtime/scheduler.hpp"

namespace {

using namespace paraflex;

// Sublinear scaling in the style of the FLUX profile rows (no file needed).
struct bench_cost {
  double step_seconds(const request_shape& s, int k) const {
    const double t = latent_tokens(s);
    return 0.05 + t * 2.5e-5 / k + t * t * 1.0e-9 / k + (k > 1 ? 0.002 * k : 0.0);
  }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool cross) const { return cross ? 0.002 : 0.0005; }
};

std::vector<request_spec> make_requests(int n, double gap_s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int sizes[] = {256, 512, 1024, 2048};
  std::vector<request_spec> out;
  for (int i = 0; i < n; ++i) {
    const int s = sizes[rng() % 4];
    const tick arrival = static_cast<tick>(gap_s * 1e6 * i);
    out.push_back(request_spec{std::to_string(i), arrival, {"bench", s, s, 1}, 50, static_cast<tick>((20 + rng() % 100) * 1'000'000), 0, ""});
  }
  return out;
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = paraflex_bench::default_policy_list(8);
  return names;
}

// Runs the benchmark loop inside the first policy call, when all N requests wait and all GPUs are
// free. Each iteration decides with a fresh policy object, so that policies which plan once per
// round (round-based) or build state on their first call are timed doing that work.
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

// The arguments every benchmark here takes: policy index, request count, GPU count.
struct bench_args {
  std::string name;
  int n, gpus;
  policy_registry registry;
};
bench_args args_of(benchmark::State& state) {
  const auto& name = policy_names()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(name);
  const int gpus = static_cast<int>(state.range(2));
  return {name, static_cast<int>(state.range(1)), gpus, paraflex_bench::builtin_registry(gpus)};
}

void BM_decision(benchmark::State& state) {
  auto [name, n, gpus, registry] = args_of(state);
  bench_cost cost;
  simulated_executor ex;
  timed_first_call p{&registry, name, &state};
  scheduler s(cluster{gpus, 8, "bench"}, p, ex, cost);
  for (auto& r : make_requests(n, 0.0, 1)) s.submit(std::move(r));
  s.run();
}

void BM_simulation(benchmark::State& state) {
  auto [name, n, gpus, registry] = args_of(state);
  bench_cost cost;
  // Arrivals spaced so that the offered load is roughly 0.9 of the cluster at degree 1.
  const auto reqs = make_requests(n, 50 * 0.25 / (0.9 * gpus), 2);
  std::uint64_t tasks = 0, decisions = 0;
  for (auto _ : state) {
    any_policy p = registry.make(name).value_or_throw();
    simulated_executor ex;
    scheduler s(cluster{gpus, 8, "bench"}, p, ex, cost);
    s.on_task_record([&](const task_record&) { ++tasks; });
    for (const auto& r : reqs) s.submit(r);
    s.run();
    decisions += s.stats().decisions;
  }
  state.counters["tasks/s"] = benchmark::Counter(static_cast<double>(tasks), benchmark::Counter::kIsRate);
  state.counters["decisions/s"] = benchmark::Counter(static_cast<double>(decisions), benchmark::Counter::kIsRate);
}

void decision_args(benchmark::internal::Benchmark* b) {
  for (std::size_t p = 0; p < policy_names().size(); ++p) {
    for (int n : {100, 1000, 10000}) {
      for (int g : {8, 64, 256}) b->Args({static_cast<long>(p), n, g});
    }
  }
}
void simulation_args(benchmark::internal::Benchmark* b) {
  for (std::size_t p = 0; p < policy_names().size(); ++p) b->Args({static_cast<long>(p), 2000, 8})->Args({static_cast<long>(p), 2000, 64});
}

}  // namespace

BENCHMARK(BM_decision)->Apply(decision_args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_simulation)->Apply(simulation_args)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
