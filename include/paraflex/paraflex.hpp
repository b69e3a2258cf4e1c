// paraflex/paraflex.hpp - everything a serving system or a simulation needs, in one include.
//
// Heavier optional parts are not included here: the fitted cost model (Eigen) comes with
// cost/profile_cost_model.hpp, workload generators (nlohmann json) with sim/generators.hpp.
#pragma once

#include "paraflex/collectives/concepts.hpp"
#include "paraflex/collectives/migration_plan.hpp"
#include "paraflex/collectives/shared_memory.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/executor/concepts.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/executor/thread_executor.hpp"
#include "paraflex/policy/any_policy.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/decision.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/resource/cluster.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/runtime/view.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/trajectory/request.hpp"
#include "paraflex/trajectory/trajectory.hpp"
