// paraflex/trajectory/trajectory.hpp - a request as a chain of tasks with rescheduling points.
//
// A DiT request is a trajectory: text encode -> N denoising steps -> VAE decode. Every boundary
// between two tasks is a rescheduling point: the policy may then change the request's degree of
// parallelism or its devices; a task in flight is never interrupted.
//
// The Trajectory concept is what the runtime needs of one:
//
//   struct my_traj {                                    // valid: models Trajectory
//     std::size_t task_count() const;
//     task_desc task_at(std::size_t position) const;   // position 0 .. task_count()-1, in run order
//   };
//   struct no_tasks { int steps; };                     // invalid: no task_count()/task_at()
//
// trajectory_template is the built-in model. Requests with the same number of steps share one
// template (see trajectory_library), so 100,000 queued requests are 100,000 positions, not millions
// of graph nodes. The template's task DAG is a Boost.Graph adjacency_list, topologically ordered
// once; the runtime then walks that order.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/topological_sort.hpp>

namespace paraflex {

enum class task_kind : unsigned char { encode, step, decode, migrate };

[[nodiscard]] constexpr const char* to_string(task_kind k) noexcept {
  switch (k) {
    case task_kind::encode: return "encode";
    case task_kind::step: return "step";
    case task_kind::decode: return "decode";
    case task_kind::migrate: return "migrate";
  }
  return "?";
}

/// One task of a trajectory: what it is and, for a denoising step, which one (0-based).
struct task_desc {
  task_kind kind = task_kind::step;
  int step = -1;  ///< step index for task_kind::step, -1 otherwise
  friend bool operator==(const task_desc&, const task_desc&) = default;
};

template <class T>
concept Trajectory = requires(const T& t, std::size_t position) {
  { t.task_count() } -> std::convertible_to<std::size_t>;
  { t.task_at(position) } -> std::convertible_to<task_desc>;
};

/// The task DAG of every request with `steps` denoising steps: encode -> step 0 -> ... -> decode.
/// Built as a Boost.Graph so that richer DAGs (e.g. a prompt encoder running beside a VAE warm-up)
/// keep working: the runtime only relies on the topological order computed here.
class trajectory_template {
 public:
  using graph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS, task_desc>;

  explicit trajectory_template(int steps) : steps_(steps) {
    if (steps <= 0) throw std::invalid_argument("trajectory_template: steps must be > 0");
    const auto encode = boost::add_vertex(task_desc{task_kind::encode, -1}, dag_);
    auto prev = encode;
    for (int s = 0; s < steps; ++s) {
      const auto v = boost::add_vertex(task_desc{task_kind::step, s}, dag_);
      boost::add_edge(prev, v, dag_);
      prev = v;
    }
    const auto decode = boost::add_vertex(task_desc{task_kind::decode, -1}, dag_);
    boost::add_edge(prev, decode, dag_);

    std::vector<graph::vertex_descriptor> reverse_order;
    boost::topological_sort(dag_, std::back_inserter(reverse_order));
    order_.reserve(reverse_order.size());
    for (auto it = reverse_order.rbegin(); it != reverse_order.rend(); ++it) order_.push_back(dag_[*it]);
    // Prefix counts per kind, so that the cost of any run of tasks is O(1) (the runtime prices
    // every assignment, and a static assignment is the whole trajectory).
    prefix_.assign(order_.size() + 1, kind_counts{});
    for (std::size_t p = 0; p < order_.size(); ++p) {
      prefix_[p + 1] = prefix_[p];
      switch (order_[p].kind) {
        case task_kind::encode: ++prefix_[p + 1].encode; break;
        case task_kind::decode: ++prefix_[p + 1].decode; break;
        default: ++prefix_[p + 1].step; break;
      }
    }
  }

  /// How many tasks of each kind positions [begin, end) hold (end clipped to task_count()).
  struct kind_counts {
    std::uint32_t encode = 0, step = 0, decode = 0;
  };
  [[nodiscard]] kind_counts counts(std::size_t begin, std::size_t end) const noexcept {
    end = std::min(end, order_.size());
    if (begin >= end) return {};
    const auto& a = prefix_[begin];
    const auto& b = prefix_[end];
    return {b.encode - a.encode, b.step - a.step, b.decode - a.decode};
  }

  [[nodiscard]] std::size_t task_count() const noexcept { return order_.size(); }
  [[nodiscard]] const task_desc& task_at(std::size_t position) const { return order_.at(position); }
  [[nodiscard]] int steps() const noexcept { return steps_; }
  [[nodiscard]] const graph& dag() const noexcept { return dag_; }

  /// Denoising steps left when `position` tasks have completed.
  [[nodiscard]] int steps_remaining(std::size_t position) const noexcept {
    if (position == 0) return steps_;
    const std::size_t last_step = static_cast<std::size_t>(steps_);  // positions 1..steps are steps
    return position > last_step ? 0 : steps_ - static_cast<int>(position - 1);
  }

 private:
  int steps_;
  graph dag_;
  std::vector<task_desc> order_;
  std::vector<kind_counts> prefix_;  // prefix_[p]: kinds among positions [0, p)
};

static_assert(Trajectory<trajectory_template>);

/// One shared template per step count. Templates are shared_ptr so that a request_record copied out
/// of a scheduler stays usable after the scheduler is gone.
class trajectory_library {
 public:
  std::shared_ptr<const trajectory_template> for_steps(int steps) {
    auto it = templates_.find(steps);
    if (it == templates_.end()) it = templates_.emplace(steps, std::make_shared<const trajectory_template>(steps)).first;
    return it->second;
  }
  [[nodiscard]] std::size_t size() const noexcept { return templates_.size(); }

 private:
  std::map<int, std::shared_ptr<const trajectory_template>> templates_;
};

}  // namespace paraflex
