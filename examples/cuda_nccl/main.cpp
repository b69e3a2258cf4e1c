// examples/cuda_nccl/main.cpp - paraflex's policies on real GPUs, and what group-free collectives buy.
//
//   cuda_nccl [--quick] [--gpus N] [--policy SPEC]... [--requests N] [--steps N] [--load X] [--slo X]
//             [--layers N] [--hidden N] [--profile FILE] [--no-measure]
//
// 1. Sets up the world once: one NCCL communicator per GPU (nccl_transport), one worker per GPU
//    (cuda_executor), and times that set-up.
// 2. Calibrates: runs the DiT stand-in alone per (shape, degree) and scales the repository's profile
//    (bench/data/profiles/step_latency.csv, l20-inferred rows) so that FLUX.1-dev 1024x1024 on one GPU
//    takes what the stand-in takes here. Arrival rates and SLOs below are then in this machine's time.
// 3. Runs each policy (default: slo-aware and static:2) on the same generated workload through the
//    unchanged paraflex runtime, with the CUDA executor doing the work, and prints compute_metrics().
// 4. Measures: group formation (a device_group value + its first all_to_all) against
//    ncclCommInitRank and ncclCommSplit on the same ranks; all_to_all latency and bandwidth per degree;
//    migration time per MB through the executor.
//
// Exit status: 0 success; 1 a run failed (executor errors, leaked state, a CUDA/NCCL failure);
// 2 bad command line or data file; 77 no usable CUDA device (cudaGetDeviceCount failed or found none):
// ctest's SKIP_RETURN_CODE, so the test is reported as skipped on machines without a GPU.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <paraflex/collectives/migration_plan.hpp>
#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/policy/builtin.hpp>
#include <paraflex/runtime/scheduler.hpp>
#include <paraflex/sim/generators.hpp>
#include <paraflex/sim/metrics.hpp>

#include "cuda_check.hpp"
#include "cuda_executor.hpp"
#include "nccl_transport.hpp"

#ifndef PARAFLEX_DATA_DIR
#define PARAFLEX_DATA_DIR "bench/data"
#endif

namespace {

namespace pf = paraflex;
using namespace paraflex::cuda_nccl;
using clock_type = std::chrono::steady_clock;

constexpr int exit_no_gpu = 77;

struct options {
  bool quick = false;
  bool measure = true;
  int gpus = 0;  // 0: every visible GPU
  std::vector<std::string> policies;
  int requests = 0;  // 0: 12 (--quick) or 40
  int steps = 0;     // 0: 6 (--quick) or 20
  double load = 0.9;
  double slo = 3.0;  // alpha: deadline = alpha x latency alone at the fastest degree (results.md's scale 1.5)
  int layers = 4;
  int hidden = 3072;
  std::string profile = PARAFLEX_DATA_DIR "/profiles/step_latency.csv";  // --profile: for a build run elsewhere
};

[[noreturn]] void usage_error(const std::string& what) {
  fmt::print(stderr, "cuda_nccl: error: {}\n(see the comment atop examples/cuda_nccl/main.cpp for the options)\n", what);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  const auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  const auto number = [&](int& i, double lo, double hi) {
    const std::string flag = argv[i], v = value(i);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || !(x >= lo && x <= hi)) usage_error(fmt::format("{}: '{}' is not a number in [{}, {}]", flag, v, lo, hi));
    return x;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--no-measure") o.measure = false;
    else if (a == "--gpus") o.gpus = static_cast<int>(number(i, 1, 4096));
    else if (a == "--policy") o.policies.push_back(value(i));
    else if (a == "--requests") o.requests = static_cast<int>(number(i, 1, 100000));
    else if (a == "--steps") o.steps = static_cast<int>(number(i, 1, 1000));
    else if (a == "--load") o.load = number(i, 0.01, 100);
    else if (a == "--slo") o.slo = number(i, 1.0, 1000);
    else if (a == "--layers") o.layers = static_cast<int>(number(i, 0, 1000));
    else if (a == "--hidden") o.hidden = static_cast<int>(number(i, 24, 65536));
    else if (a == "--profile") o.profile = value(i);
    else usage_error("unknown option '" + a + "'");
  }
  if (o.policies.empty()) o.policies = {"slo-aware", "static:2"};
  if (o.requests == 0) o.requests = o.quick ? 12 : 40;
  if (o.steps == 0) o.steps = o.quick ? 6 : 20;
  return o;
}

/// The repository's profile in this machine's time. Step times are scaled by the ratio measured on a
/// reference shape (the stand-in is not FLUX, and an H100 is not an L20); migrations keep the profile's
/// own byte-rate model, which is already in seconds. Degrees must also divide the stand-in's width.
struct scaled_cost {
  const pf::profile_cost_model* base = nullptr;
  double scale = 1.0;
  int hidden = 3072;
  [[nodiscard]] double step_seconds(const pf::request_shape& s, int k) const { return base->step_seconds(s, k) * scale; }
  [[nodiscard]] bool allows_degree(const pf::request_shape& s, int k) const { return k >= 1 && hidden % k == 0 && base->allows_degree(s, k); }
  [[nodiscard]] double migration_seconds(const pf::request_shape& s, int from, int to, bool cross) const {
    return base->migration_seconds(s, from, to, cross);
  }
};
static_assert(pf::CostModel<scaled_cost>);

/// Runs one launch outside any scheduler and waits for it; seconds from launch to its event.
double run_one(cuda_executor& ex, pf::task_launch l) {
  static pf::launch_id next = pf::launch_id{1} << 40;  // far from the scheduler's ids
  l.id = ++next;
  const pf::tick t0 = ex.now();
  ex.launch(l);
  std::vector<pf::executor_event> events;
  for (;;) {
    ex.wait_until(pf::never);
    events.clear();
    ex.poll(events);
    for (const auto& e : events) {
      if (e.kind == pf::executor_event_kind::device_lost) throw std::runtime_error(fmt::format("device {} lost", e.device));
      if (e.id != l.id) continue;
      if (e.kind == pf::executor_event_kind::task_failed) throw std::runtime_error(ex.failures().back());
      return pf::to_seconds(e.time - t0);
    }
  }
}

pf::task_launch make_launch(pf::request_handle h, const pf::request_shape& shape, pf::task_kind kind, pf::device_group g, int step = -1) {
  pf::task_launch l;
  l.request = h;
  l.task = pf::task_desc{kind, step};
  l.group = std::move(g);
  l.shape = &shape;
  return l;
}

// --- 2. calibration ------------------------------------------------------------------------------------

struct calibration {
  std::map<std::pair<pf::request_shape, int>, double> step_s;  // measured seconds per step
  double scale = 1.0;
};

calibration calibrate(cuda_executor& ex, const pf::profile_cost_model& profile, const std::vector<pf::request_shape>& shapes,
                      const std::vector<int>& degrees, int hidden) {
  calibration c;
  pf::request_handle h = 1u << 30;  // handles no scheduler uses
  fmt::print("\n== calibration: stand-in step time vs the profile ({} layers, hidden {}) ==\n", ex.model().layers, hidden);
  for (const auto& s : shapes) {
    for (int k : degrees) {
      if (hidden % k != 0 || !profile.allows_degree(s, k)) continue;
      const auto g = pf::device_group::contiguous(0, static_cast<std::size_t>(k));
      run_one(ex, make_launch(++h, s, pf::task_kind::encode, g));
      run_one(ex, make_launch(h, s, pf::task_kind::step, g, 0));  // warm-up: cuBLAS heuristics, scratch
      constexpr int timed = 3;
      double total = 0;
      for (int i = 1; i <= timed; ++i) total += run_one(ex, make_launch(h, s, pf::task_kind::step, g, i));
      run_one(ex, make_launch(h, s, pf::task_kind::decode, g));
      c.step_s[{s, k}] = total / timed;
    }
  }
  const pf::request_shape ref{"flux-dev", 1024, 1024, 1};
  if (auto it = c.step_s.find({ref, 1}); it != c.step_s.end()) c.scale = it->second / profile.step_seconds(ref, 1);
  fmt::print("scale = measured / profiled step time of flux-dev 1024x1024 on 1 GPU = {:.3g}\n", c.scale);
  fmt::print("{:>12} {:>6} {:>12} {:>16} {:>8}\n", "shape", "degree", "measured_ms", "profile_x_scale", "ratio");
  for (const auto& [key, sec] : c.step_s) {
    const double predicted = profile.step_seconds(key.first, key.second) * c.scale;
    fmt::print("{:>12} {:>6} {:>12.3f} {:>16.3f} {:>8.2f}\n", pf::resolution_label(key.first), key.second, sec * 1e3, predicted * 1e3,
               sec / predicted);
  }
  return c;
}

// --- 3. policies on the GPUs -------------------------------------------------------------------------

pf::workload make_workload(const options& o, const scaled_cost& cost, int gpus) {
  pf::workload_generator g;
  g.seed = 7;
  g.requests = static_cast<std::size_t>(o.requests);
  g.arrivals = pf::poisson_arrivals{1.0, 0.0};  // rescaled to the target load below
  for (int px : o.quick ? std::vector<int>{256, 512, 1024} : std::vector<int>{256, 512, 1024, 2048}) {
    pf::shape_class c;
    c.shape = pf::request_shape{"flux-dev", px, px, 1};
    c.class_label = pf::resolution_label(c.shape);
    g.shapes.push_back(c);
  }
  g.mix = pf::shape_mix::skewed;
  g.steps = {o.steps};
  const auto fastest = [&cost, gpus](const pf::request_shape& s) {
    double best = cost.step_seconds(s, 1);
    for (int k = 2; k <= gpus; ++k) {
      if (cost.allows_degree(s, k)) best = std::min(best, cost.step_seconds(s, k));
    }
    return best;
  };
  g.slo = pf::slo_rule::latency_multiple(o.slo, fastest);  // docs/results.md's rule (paraflex-workload --slo-rule alpha:A)
  g.load = pf::load_target{o.load, gpus, [&cost](const pf::request_shape& s) { return cost.step_seconds(s, 1); }};
  return pf::generate_workload(g).value_or_throw();
}

void print_metrics(const pf::run_metrics& m) {
  const auto opt = [](const std::optional<double>& v, double mul = 1.0) { return v ? fmt::format("{:.3f}", *v * mul) : std::string("-"); };
  fmt::print("  requests {}  completed {}  dropped {}", m.requests, m.completed, m.dropped);
  for (const auto& [reason, n] : m.dropped_by_reason) fmt::print(" [{}: {}]", reason, n);
  fmt::print("\n  SLO attainment {}  latency mean {} s  p95 {} s  max {} s\n", opt(m.slo_attainment), opt(m.latency_s.mean),
             opt(m.latency_s.p95), opt(m.latency_s.max));
  fmt::print("  throughput {:.2f} req/s  goodput {:.2f} req/s  makespan {:.3f} s  GPU busy {:.3f} s  utilization {:.2f}  migrations {}\n",
             m.throughput_rps, m.goodput_rps, m.makespan_s, m.gpu_busy_s, m.utilization, m.migrations);
  fmt::print("  policy decisions {}  mean {:.1f} us  p99 {:.1f} us  wall {:.3f} s\n", m.decisions, m.decision_us_mean, m.decision_us_p99,
             m.wall_s);
  for (const auto& [label, c] : m.per_class) {
    fmt::print("    {:>8}: {:>3} requests  SLO {}  mean {} s\n", label, c.requests, opt(c.slo_attainment), opt(c.latency_s.mean));
  }
}

/// Runs one policy on the GPUs; false when the executor reported failures or leaked state.
bool run_policy(const std::string& spec, const pf::workload& w, cuda_executor& ex, const scaled_cost& cost, int gpus) {
  fmt::print("\n== policy {} on {} GPU(s), {} requests ==\n", spec, gpus, w.requests.size());
  auto made = pf::builtin_policies(gpus).make(spec);
  if (!made) {
    fmt::print("  skipped: {}\n", made.error().message);
    return true;
  }
  pf::any_policy policy = std::move(made).value();
  const std::size_t failures_before = ex.failures().size();
  const auto t0 = clock_type::now();
  pf::scheduler sched(pf::cluster{gpus, gpus, "l20-inferred"}, policy, ex, cost);
  // The runtime releases a dropped request's state itself; a completed one's is freed here too.
  sched.on_request_end([&](const pf::request_record& r) { ex.release(r.handle); });
  const pf::tick base = ex.now() + 20'000;  // arrivals are relative to the first; start 20 ms from now
  for (auto r : w.requests) {
    r.arrival += base;
    sched.submit(std::move(r));
  }
  sched.run();
  const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
  pf::run_metrics m = pf::compute_metrics(spec, sched.state().requests, gpus, sched.gpu_busy_seconds());
  pf::set_decision_timings(m, sched.stats().host_us, wall);
  print_metrics(m);
  const auto& f = ex.failures();
  bool ok = true;
  if (f.size() > failures_before) {
    ok = false;
    fmt::print("  executor failures: {}\n", f.size() - failures_before);
    for (std::size_t i = failures_before; i < f.size() && i < failures_before + 5; ++i) fmt::print("    {}\n", f[i]);
  }
  if (ex.live_states() != 0) {
    ok = false;
    fmt::print("  error: {} request state(s) still on the GPUs after the run\n", ex.live_states());
  }
  return ok;
}

// --- 4. measurements -----------------------------------------------------------------------------------

std::vector<int> powers_of_two(int from, int up_to) {
  std::vector<int> out;
  for (int k = from; k <= up_to; k *= 2) out.push_back(k);
  return out;
}

/// Per-rank device buffers for a gang measurement, freed by the owning workers.
struct gang_buffers {
  cuda_executor& ex;
  pf::device_group g;
  std::vector<std::byte*> send, recv;
  std::size_t bytes;
  gang_buffers(cuda_executor& e, pf::device_group group, std::size_t b) : ex(e), g(std::move(group)), send(g.size()), recv(g.size()), bytes(b) {
    ex.run_gang(g, [this](std::size_t r, pf::device_id) {
      check(cudaMalloc(reinterpret_cast<void**>(&send[r]), bytes), "cudaMalloc(send)");
      check(cudaMalloc(reinterpret_cast<void**>(&recv[r]), bytes), "cudaMalloc(recv)");
      check(cudaMemset(send[r], static_cast<int>(r + 1), bytes), "cudaMemset(send)");
    });
  }
  ~gang_buffers() {
    try {
      ex.run_gang(g, [this](std::size_t r, pf::device_id) {
        (void)cudaFree(send[r]);
        (void)cudaFree(recv[r]);
      });
    } catch (...) {
    }
  }
  gang_buffers(const gang_buffers&) = delete;
  gang_buffers& operator=(const gang_buffers&) = delete;
  std::span<const std::byte> in(std::size_t r) const { return {send[r], bytes}; }
  std::span<std::byte> out(std::size_t r) const { return {recv[r], bytes}; }
};

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// An all_to_all of `b` over a communicator whose ranks are 0..k-1 (a freshly created one).
void all_to_all_on(ncclComm_t comm, std::size_t rank, std::size_t k, const gang_buffers& b, cudaStream_t s) {
  const std::size_t chunk = b.bytes / k;
  check(ncclGroupStart(), "ncclGroupStart");
  for (std::size_t j = 0; j < k; ++j) {
    check(ncclSend(b.send[rank] + j * chunk, chunk, ncclUint8, static_cast<int>(j), comm, s), "ncclSend");
    check(ncclRecv(b.recv[rank] + j * chunk, chunk, ncclUint8, static_cast<int>(j), comm, s), "ncclRecv");
  }
  check(ncclGroupEnd(), "ncclGroupEnd");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

void measure_group_formation(cuda_executor& ex, int gpus) {
  fmt::print("\n== group formation: group-free vs a communicator per group (same ranks, 1 KiB per peer) ==\n");
  if (gpus < 2) {
    fmt::print("  needs at least 2 GPUs\n");
    return;
  }
  nccl_transport& t = ex.transport();
  const auto world = pf::device_group::contiguous(0, static_cast<std::size_t>(gpus));
  fmt::print("{:>6} {:>14} {:>16} {:>16} {:>18} {:>16} {:>18}\n", "degree", "group_value_ns", "first_a2a_us", "init_rank_ms", "a2a_after_init_ms",
             "split_ms", "a2a_after_split_ms");
  for (int k : powers_of_two(2, gpus)) {
    // A group is a value: build it from a rank list (no communication at all).
    std::vector<pf::device_id> ranks(static_cast<std::size_t>(k));
    std::iota(ranks.begin(), ranks.end(), pf::device_id{0});
    constexpr int reps = 100000;
    std::uint64_t sink = 0;
    const auto v0 = clock_type::now();
    for (int i = 0; i < reps; ++i) sink += pf::device_group(std::span<const pf::device_id>(ranks)).hash();
    const double value_ns = seconds_since(v0) / reps * 1e9;
    static std::atomic<std::uint64_t> keep{0};  // the loop must not be optimised away
    keep.store(sink, std::memory_order_relaxed);
    const pf::device_group g{std::span<const pf::device_id>(ranks)};
    gang_buffers b(ex, g, static_cast<std::size_t>(k) * 1024);

    std::vector<double> a2a(g.size()), init(g.size()), init_a2a(g.size()), split(g.size()), split_a2a(g.size());
    // Group-free: the first all_to_all on this group value, over the world communicator.
    ex.run_gang(g, [&](std::size_t r, pf::device_id d) {
      const auto t0 = clock_type::now();
      t.all_to_all(g, d, b.in(r), b.out(r));
      t.synchronize(d);
      a2a[r] = seconds_since(t0);
    });
    // A communicator per group: ncclCommInitRank on the same ranks, then the same all_to_all on it.
    ncclUniqueId id;
    check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::vector<ncclComm_t> comms(g.size(), nullptr);
    ex.run_gang(g, [&](std::size_t r, pf::device_id d) {
      const auto t0 = clock_type::now();
      check(ncclCommInitRank(&comms[r], k, id, static_cast<int>(r)), "ncclCommInitRank");
      init[r] = seconds_since(t0);
      const auto t1 = clock_type::now();
      all_to_all_on(comms[r], r, g.size(), b, t.stream(d));
      init_a2a[r] = seconds_since(t1);
    });
    ex.run_gang(g, [&](std::size_t r, pf::device_id) { check(ncclCommDestroy(comms[r]), "ncclCommDestroy"); });
    // ncclCommSplit of the world communicator: every world rank takes part; the others get no comm.
    std::vector<ncclComm_t> split_comms(world.size(), nullptr);
    ex.run_gang(world, [&](std::size_t r, pf::device_id d) {
      const bool member = r < g.size();
      const auto t0 = clock_type::now();
      check(ncclCommSplit(t.comm(d), member ? 0 : NCCL_SPLIT_NOCOLOR, static_cast<int>(r), &split_comms[r], nullptr), "ncclCommSplit");
      if (!member) return;
      split[r] = seconds_since(t0);
      const auto t1 = clock_type::now();
      all_to_all_on(split_comms[r], r, g.size(), b, t.stream(d));
      split_a2a[r] = seconds_since(t1);
    });
    ex.run_gang(world, [&](std::size_t r, pf::device_id) {
      if (split_comms[r] != nullptr) check(ncclCommDestroy(split_comms[r]), "ncclCommDestroy");
    });
    const auto mx = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
    fmt::print("{:>6} {:>14.0f} {:>16.1f} {:>16.1f} {:>18.2f} {:>16.1f} {:>18.2f}\n", k, value_ns, mx(a2a) * 1e6, mx(init) * 1e3,
               mx(init_a2a) * 1e3, mx(split) * 1e3, mx(split_a2a) * 1e3);
  }
}

void measure_all_to_all(cuda_executor& ex, int gpus, bool quick) {
  fmt::print("\n== all_to_all (group-free, world communicator): latency and bandwidth per degree ==\n");
  if (gpus < 2) {
    fmt::print("  needs at least 2 GPUs\n");
    return;
  }
  nccl_transport& t = ex.transport();
  fmt::print("{:>6} {:>14} {:>12} {:>14} {:>14}\n", "degree", "bytes_per_rank", "time_us", "algbw_GB/s", "busbw_GB/s");
  const std::vector<std::size_t> sizes = quick ? std::vector<std::size_t>{1u << 20}
                                               : std::vector<std::size_t>{64u << 10, 1u << 20, 16u << 20, 128u << 20};
  for (int k : powers_of_two(2, gpus)) {
    const auto g = pf::device_group::contiguous(0, static_cast<std::size_t>(k));
    for (std::size_t bytes : sizes) {
      gang_buffers b(ex, g, bytes / static_cast<std::size_t>(k) * static_cast<std::size_t>(k));
      std::vector<double> per(g.size());
      const int warm = 3, iters = quick ? 5 : 20;
      ex.run_gang(g, [&](std::size_t r, pf::device_id d) {
        const cudaStream_t s = t.stream(d);
        for (int i = 0; i < warm; ++i) t.all_to_all(g, d, b.in(r), b.out(r));
        t.barrier(g, d);
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        check(cudaEventCreate(&e0), "cudaEventCreate");
        check(cudaEventCreate(&e1), "cudaEventCreate");
        check(cudaEventRecord(e0, s), "cudaEventRecord");
        for (int i = 0; i < iters; ++i) t.all_to_all(g, d, b.in(r), b.out(r));
        check(cudaEventRecord(e1, s), "cudaEventRecord");
        t.synchronize(d);
        float ms = 0;
        check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
        (void)cudaEventDestroy(e0);
        (void)cudaEventDestroy(e1);
        per[r] = static_cast<double>(ms) / 1e3 / iters;
      });
      const double sec = *std::max_element(per.begin(), per.end());
      const double algbw = static_cast<double>(b.bytes) / sec / 1e9;
      fmt::print("{:>6} {:>14} {:>12.1f} {:>14.2f} {:>14.2f}\n", k, b.bytes, sec * 1e6, algbw, algbw * (k - 1) / k);
    }
  }
}

void measure_migration(cuda_executor& ex, const scaled_cost& cost, int gpus, bool quick) {
  fmt::print("\n== migration through the executor (plan_migration + cudaMemcpyPeerAsync; state = latent + prompt embeddings) ==\n");
  if (gpus < 2) {
    fmt::print("  needs at least 2 GPUs\n");
    return;
  }
  using G = pf::device_group;
  std::vector<std::pair<G, G>> cases = {{G{0}, G{1}}};
  if (gpus >= 3) cases.push_back({G{0, 1}, G{1, 2}});
  if (gpus >= 4) cases.push_back({G{0, 1}, G{2, 3}});
  if (gpus >= 8) cases.push_back({G{0, 1, 2, 3}, G{4, 5, 6, 7}});
  const std::vector<int> pixels = quick ? std::vector<int>{1024, 4096} : std::vector<int>{1024, 4096, 8192};
  const auto& m = ex.model();
  const double prompt_mb = static_cast<double>(m.prompt_tokens) * m.prompt_dim * 2 / 1e6;
  fmt::print("{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}\n", "from", "to", "shape", "moved_MB", "time_ms", "ms_per_MB", "GB/s",
             "model_ms");
  pf::request_handle h = 1u << 31;
  for (const auto& [from, to] : cases) {
    for (int px : pixels) {
      const pf::request_shape s{"flux-dev", px, px, 1};
      const auto tokens = static_cast<std::size_t>(pf::latent_tokens(s));
      run_one(ex, make_launch(++h, s, pf::task_kind::encode, from));
      // Remote bytes only: slices that stay on their device and kept prompt copies are local copies.
      const pf::migration_plan plan = pf::plan_migration(from, to, tokens);
      std::size_t new_devices = 0;
      for (pf::device_id d : to) new_devices += from.contains(d) ? 0 : 1;
      const double moved_mb = static_cast<double>(plan.remote_elements) * m.channels * 2 / 1e6 + prompt_mb * static_cast<double>(new_devices);
      run_one(ex, make_launch(h, s, pf::task_kind::migrate, to));  // first: allocation paths warm up
      run_one(ex, make_launch(h, s, pf::task_kind::migrate, from));
      constexpr int reps = 3;
      double total = 0;
      for (int i = 0; i < reps; ++i) {
        total += run_one(ex, make_launch(h, s, pf::task_kind::migrate, to));
        run_one(ex, make_launch(h, s, pf::task_kind::migrate, from));
      }
      ex.release(h);
      const double sec = total / reps;
      fmt::print("{:>10} {:>10} {:>10} {:>10.2f} {:>10.3f} {:>10.4f} {:>12.1f} {:>14.3f}\n", from.to_string(), to.to_string(), pf::resolution_label(s),
                 moved_mb, sec * 1e3, sec * 1e3 / moved_mb, moved_mb / 1e3 / sec, cost.migration_seconds(s, 1, 1, false) * 1e3);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);

  // No driver, no device, or a broken installation: nothing here can run. 77 tells ctest "skipped".
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    const std::string why = e != cudaSuccess ? fmt::format("{}: {}", cudaGetErrorName(e), cudaGetErrorString(e)) : "no device found";
    fmt::print("cuda_nccl: no CUDA device available ({}); nothing to run\n", why);
    return exit_no_gpu;
  }
  const int gpus = o.gpus > 0 ? std::min(o.gpus, count) : count;

  pf::profile_table profile;
  try {
    profile = pf::load_profile_csv(o.profile).value_or_throw();
  } catch (const pf::input_exception& e) {
    fmt::print(stderr, "cuda_nccl: error: {}\n", e.what());
    return 2;
  }

  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    int nccl_version = 0;
    check(ncclGetVersion(&nccl_version), "ncclGetVersion");
    fmt::print("cuda_nccl: {} of {} GPU(s) ({}), NCCL {}\n", gpus, count, prop.name, nccl_version);

    // 1. The world, once: communicators (+ every pair connected), then the workers.
    const auto t0 = clock_type::now();
    nccl_transport transport(gpus);
    const double world_s = seconds_since(t0);
    const auto t1 = clock_type::now();
    standin_config model;
    model.layers = o.layers;
    model.hidden = o.hidden;
    cuda_executor ex(transport, model);
    fmt::print("world set-up: ncclCommInitAll + connecting all pairs {:.1f} ms; workers (cuBLAS, weights) {:.1f} ms\n", world_s * 1e3,
               seconds_since(t1) * 1e3);

    // 2. Calibration.
    auto cm = pf::profile_cost_model::from_profile(profile, "l20-inferred").value_or_throw();
    const std::vector<pf::request_shape> shapes = o.quick ? std::vector<pf::request_shape>{{"flux-dev", 256, 256, 1}, {"flux-dev", 1024, 1024, 1}}
                                                          : std::vector<pf::request_shape>{{"flux-dev", 256, 256, 1},
                                                                                           {"flux-dev", 512, 512, 1},
                                                                                           {"flux-dev", 1024, 1024, 1},
                                                                                           {"flux-dev", 2048, 2048, 1}};
    const calibration cal = calibrate(ex, cm, shapes, o.quick ? powers_of_two(1, std::min(gpus, 2)) : powers_of_two(1, gpus), o.hidden);
    const scaled_cost cost{&cm, cal.scale, o.hidden};

    // 3. Policies, same workload each.
    const pf::workload w = make_workload(o, cost, gpus);
    bool ok = true;
    for (const auto& spec : o.policies) ok = run_policy(spec, w, ex, cost, gpus) && ok;

    // 4. Measurements.
    if (o.measure) {
      measure_group_formation(ex, gpus);
      measure_all_to_all(ex, gpus, o.quick);
      measure_migration(ex, cost, gpus, o.quick);
    }
    if (!ok) {
      fmt::print("cuda_nccl: FAILED (see the executor failures above)\n");
      return 1;
    }
    return 0;
  } catch (const pf::input_exception& e) {
    fmt::print(stderr, "cuda_nccl: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "cuda_nccl: error: {}\n", e.what());
    return 1;
  }
}
