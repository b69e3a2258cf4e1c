// Embedding paraflex: a profile-driven cost model, a policy, the simulated executor, and a callback
// per request. The same scheduler runs with a real executor; only the executor type changes.
#include <cstdio>

#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/paraflex.hpp>

#ifndef PARAFLEX_DATA_DIR
#define PARAFLEX_DATA_DIR "bench/data"
#endif

int main(int argc, char** argv) {
  using namespace paraflex;
  const std::string profile_path = argc > 1 ? argv[1] : PARAFLEX_DATA_DIR "/profiles/step_latency.csv";
  try {
    auto profile = load_profile_csv(profile_path).value_or_throw();
    auto cost = profile_cost_model::from_profile(profile, "l20-inferred").value_or_throw();
    rssp_policy policy;                       // or any class with decide(view, decisions)
    simulated_executor executor(/*seed=*/1);  // or a real executor: same policy, same runtime
    scheduler sched(cluster{8, 8, "l20-inferred"}, policy, executor, cost);
    int completed = 0;
    sched.on_request_end([&](const request_record& r) {
      completed += r.phase == request_phase::completed;
      std::printf("%-3s %-9s at %6.3f s on %d GPU(s)\n", r.spec.id.c_str(),
                  r.phase == request_phase::completed ? "completed" : r.drop_reason.c_str(), to_seconds(r.finish), r.last_degree);
    });
    sched.submit({"a", 0, {"flux-dev", 1024, 1024, 1}, 28, *to_ticks(20.0), 0, ""});
    sched.submit({"b", *to_ticks(0.5), {"flux-dev", 256, 256, 1}, 28, *to_ticks(5.0), 0, ""});
    sched.submit({"c", *to_ticks(1.0), {"flux-dev", 2048, 2048, 1}, 28, *to_ticks(60.0), 0, ""});
    sched.run();  // virtual time: returns when every request has ended
    return completed == 3 ? 0 : 1;
  } catch (const input_exception& e) {
    std::fprintf(stderr, "embed_simulator: error: %s\n", e.what());
    return 2;
  }
}
