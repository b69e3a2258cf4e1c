// Compile-time errors a policy, executor or cost-model author meets, one per CASE (tests/CMakeLists.txt
// builds each as its own target and expects the build to fail with the message it names). CASE 0 is the
// valid program every other case differs from by one member, so a failure cannot come from the harness.
#include <vector>

#include <paraflex/policy/compose.hpp>
#include <paraflex/runtime/scheduler.hpp>

using namespace paraflex;

struct valid_policy {
  void decide(const scheduler_view&, decision_buffer&) {}
};
struct valid_executor {
  void launch(const task_launch&) {}
  void poll(std::vector<executor_event>&) {}
  [[nodiscard]] tick now() const { return 0; }
  [[nodiscard]] tick next_event_time() const { return never; }
  void advance_to(tick) {}
};
struct valid_cost {
  [[nodiscard]] double step_seconds(const request_shape&, int) const { return 1.0; }
  [[nodiscard]] bool allows_degree(const request_shape&, int) const { return true; }
  [[nodiscard]] double migration_seconds(const request_shape&, int, int, bool) const { return 0.0; }
};

#if CASE == 1  // expect: needs a member decide
struct policy { void choose(const scheduler_view&, decision_buffer&) {} };
#elif CASE == 2  // expect: must return void
struct policy { int decide(const scheduler_view&, decision_buffer&) { return 0; } };
#elif CASE == 3  // expect: on_task_end is declared but cannot be called
struct policy : valid_policy { void on_task_end(const scheduler_view&, request_handle) {} };
#elif CASE == 4  // expect: the Order part declares on_arrival, on_request_end or on_task_end
struct my_order {
  tick key(const scheduler_view&, request_handle) const { return 0; }
  void on_arrival(request_handle) {}
};
using policy = composed_policy<admit_all, my_order, fastest_degree>;
#else
using policy = valid_policy;
#endif

#if CASE == 5  // expect: needs a member poll
struct executor {
  void launch(const task_launch&) {}
  [[nodiscard]] tick now() const { return 0; }
};
#elif CASE == 6  // expect: needs a member now\(\) callable on a const E
struct executor {
  void launch(const task_launch&) {}
  void poll(std::vector<executor_event>&) {}
  tick now() { return 0; }
};
#else
using executor = valid_executor;
#endif

#if CASE == 7  // expect: needs a const member migration_seconds
struct cost {
  [[nodiscard]] double step_seconds(const request_shape&, int) const { return 1.0; }
  [[nodiscard]] bool allows_degree(const request_shape&, int) const { return true; }
};
#else
using cost = valid_cost;
#endif

int main() {
  policy p{};
  executor e;
  const cost c;
  scheduler s(cluster{8, 8, "gpu"}, p, e, c);
  s.run();
  return 0;
}
