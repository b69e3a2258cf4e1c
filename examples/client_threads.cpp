// The small example of docs/embedding.md, checked: four CPU threads stand in for GPUs, two client
// threads submit (one also cancels), and the scheduler serves on its own thread until the client
// closes. Every request must end exactly once.
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <paraflex/paraflex.hpp>

namespace {
struct cpu_cost {  // a few milliseconds per step, faster on wider groups
  double step_seconds(const paraflex::request_shape& s, int k) const { return 0.001 + paraflex::latent_tokens(s) * 2e-6 / k; }
  bool allows_degree(const paraflex::request_shape&, int) const { return true; }
  double migration_seconds(const paraflex::request_shape&, int, int, bool) const { return 0.0005; }
};
}  // namespace

int main() {
  using namespace paraflex;
  thread_executor executor(4);
  cpu_cost cost;
  auto policy = builtin_policies(4).make("slo-aware").value_or_throw();
  scheduler sched(cluster{4, 4, "cpu"}, policy, executor, cost);
  std::map<std::string, int> ends;  // the scheduler's thread only
  sched.on_request_end([&](const request_record& r) {
    ++ends[r.spec.id];
    std::printf("%-4s %s\n", r.spec.id.c_str(), r.phase == request_phase::completed ? "completed" : r.drop_reason.c_str());
  });
  auto& client = sched.client();
  client.open();  // serve until close()
  std::thread serving([&] { sched.run(); });
  std::thread a([&] {
    for (int i = 0; i < 8; ++i) client.submit({"a" + std::to_string(i), 0, {"dit", 512, 512, 1}, 8, *to_ticks(60.0), 0, ""});
  });
  std::string cancelled_id;
  std::thread b([&] {
    cancelled_id = client.submit({"", 0, {"dit", 1024, 1024, 1}, 20, never, 0, ""});
    client.cancel(cancelled_id);  // ends now if waiting, after its task if running
  });
  a.join();
  b.join();
  client.close();  // run() returns once everything has ended
  serving.join();

  bool ok = ends.size() == 9;
  for (const auto& [id, n] : ends) ok = ok && n == 1;
  const auto c = client.status(cancelled_id);
  ok = ok && c && c->state == request_state::dropped && c->reason == "cancelled";
  for (int i = 0; i < 8; ++i) ok = ok && client.status("a" + std::to_string(i))->state == request_state::completed;
  std::printf("%s: %zu requests ended, '%s' %s\n", ok ? "ok" : "FAILED", ends.size(), cancelled_id.c_str(),
              c ? to_string(c->state) : "unknown");
  return ok ? 0 : 1;
}
