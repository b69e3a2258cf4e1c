// paraflex/paraflex.hpp - one include for embedding the scheduler or running a simulation.
//
// Includes exactly:
//   core         time, errors and result<T>
//   trajectory   request_spec, shapes, the task DAG
//   resource     device_group, device_set, cluster
//   cost         the CostModel concept and shape_costs (the runtime's per-shape tables)
//   policy       the Policy concept and hooks, decisions, placement, composition (compose.hpp),
//                every built-in policy (static:K, rssp, round-based, edf-best-fit, slo-aware,
//                throughput-first), any_policy and the registry (builtin_policies())
//   runtime      scheduler, scheduler_view, the thread-safe request_client
//   executor     the Executor concepts, simulated_executor, thread_executor
//   collectives  the Transport concept, shm_transport, migration plans
//   sim          metrics and simulate()
//   data.hpp     where the bundled profiles and traces are
//
// Not included, because they pull in heavier dependencies or are for tools and tests:
//   cost/profile.hpp, cost/profile_cost_model.hpp   profile CSV reader and the fitted model (Eigen)
//   sim/workload_csv.hpp, sim/generators.hpp        workload CSV reader; generators (nlohmann-json)
//   sim/fluid_bound.hpp, sim/chrome_trace.hpp       upper bound on SLO attainment; Perfetto traces
//   sim/fault_flags.hpp                             parsing of --fail-device / --straggler
//   testing/archetypes.hpp, testing/invariants.hpp  for users' own tests
#pragma once

#include "paraflex/collectives/concepts.hpp"
#include "paraflex/collectives/migration_plan.hpp"
#include "paraflex/collectives/shared_memory.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/data.hpp"
#include "paraflex/executor/concepts.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/executor/thread_executor.hpp"
#include "paraflex/policy/any_policy.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/decision.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/round_based.hpp"
#include "paraflex/policy/slo_aware.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/policy/throughput_first.hpp"
#include "paraflex/resource/cluster.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/runtime/client.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/runtime/view.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/sim/cells.hpp"
#include "paraflex/sim/simulate.hpp"
#include "paraflex/trajectory/request.hpp"
#include "paraflex/trajectory/trajectory.hpp"
