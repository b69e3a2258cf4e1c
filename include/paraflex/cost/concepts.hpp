// paraflex/cost/concepts.hpp - the CostModel concept: how long work takes on k devices.
//
// A cost model answers, for one GPU type, how many seconds one denoising step of a shape takes on a
// group of `degree` devices, whether that degree is allowed at all (Ulysses needs heads % degree == 0),
// and how long moving a request's state between groups takes. The runtime asks once per
// (shape, degree) and rounds to integer microseconds, so a model may be slow to evaluate.
//
// Refinements, detected when present (no base class):
//   StageCostModel  - also prices the non-step stages (text encode, VAE decode); absent = free.
//   BatchCostModel  - also prices one denoising step of a batch of b requests of one shape run together
//                     on `degree` devices (TetriServe's batching); absent = the runtime refuses batches.
//   MultiDegreeCostModel - also lists a shape's allowed degrees with their step times in one call, the
//                     same answers as allows_degree and step_seconds; absent = two calls per degree.
//                     Worth having when a model looks a shape up before it can price it
//                     (profile_cost_model does): the runtime prices each shape on every degree up to
//                     the cluster's size.
//
//   struct my_model {                                                     // valid: models CostModel
//     double step_seconds(const request_shape&, int degree) const;
//     bool allows_degree(const request_shape&, int degree) const;
//     double migration_seconds(const request_shape&, int from_degree, int to_degree, bool cross_node) const;
//   };
//   struct no_migration { double step_seconds(const request_shape&, int) const; };  // invalid: incomplete
#pragma once

#include <concepts>
#include <utility>
#include <vector>

#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// Non-step stages of a trajectory. A denoising step is not a stage: it is priced by step_seconds.
enum class stage_kind : unsigned char { encode, decode };

// CostModel's requirements one member at a time: the concept is their conjunction, and the scheduler
// checks each of them with a message naming the missing member (one source of truth for both).
namespace cost_model_requirements {
template <class C>
concept prices_steps = requires(const C& c, const request_shape& s, int degree) { { c.step_seconds(s, degree) } -> std::convertible_to<double>; };
template <class C>
concept allows_degrees = requires(const C& c, const request_shape& s, int degree) { { c.allows_degree(s, degree) } -> std::convertible_to<bool>; };
template <class C>
concept prices_migrations = requires(const C& c, const request_shape& s, int degree, bool cross_node) {
  { c.migration_seconds(s, degree, degree, cross_node) } -> std::convertible_to<double>;
};
}  // namespace cost_model_requirements

template <class C>
concept CostModel = cost_model_requirements::prices_steps<C> && cost_model_requirements::allows_degrees<C> &&
                    cost_model_requirements::prices_migrations<C>;

/// A CostModel that also prices text encoding and VAE decoding (on `degree` devices).
template <class C>
concept StageCostModel = CostModel<C> && requires(const C& c, const request_shape& s, stage_kind k, int degree) {
  { c.stage_seconds(s, k, degree) } -> std::convertible_to<double>;
};

/// A CostModel that also prices a batched step: b requests of the same shape, one step each, run as one
/// forward pass on `degree` devices (b >= 1; b = 1 must agree with step_seconds).
///
///   struct batched { ...; double batch_step_seconds(const request_shape&, int degree, int batch) const; };
template <class C>
concept BatchCostModel = CostModel<C> && requires(const C& c, const request_shape& s, int degree, int batch) {
  { c.batch_step_seconds(s, degree, batch) } -> std::convertible_to<double>;
};

/// A CostModel that prices one shape's step on all its allowed degrees in one call: `allowed` is cleared,
/// then gets (k, step_seconds(s, k)) for every k in 1..max_degree that allows_degree(s, k) admits, in
/// increasing order (the same figures, not approximations of them). The runtime prices each shape
/// this way once.
///
///   struct swept { ...; void allowed_step_seconds(const request_shape&, int max_degree,
///                                                  std::vector<std::pair<int, double>>& allowed) const; };  // valid
///   struct wrong { ...; std::vector<double> allowed_step_seconds(const request_shape&) const; };  // invalid: no max_degree, no out-parameter
template <class C>
concept MultiDegreeCostModel = CostModel<C> && requires(const C& c, const request_shape& s, int max_degree, std::vector<std::pair<int, double>>& allowed) {
  c.allowed_step_seconds(s, max_degree, allowed);
};

/// Seconds of a stage under any CostModel: the model's own figure if it has one, else 0 (free).
template <CostModel C>
[[nodiscard]] double stage_seconds_of(const C& c, const request_shape& s, stage_kind k, int degree) {
  if constexpr (StageCostModel<C>) {
    return static_cast<double>(c.stage_seconds(s, k, degree));
  } else {
    (void)c, (void)s, (void)k, (void)degree;
    return 0.0;
  }
}

/// Migration of a request's state (latent + prompt embeddings + sampler state, a few MB): a fixed
/// start-up latency plus bytes over the link. Defaults describe a PCIe-class node (L20/H20 boxes) and
/// a 100 Gb/s network between nodes; state bytes grow with latent tokens.
struct migration_cost {
  double latency_s = 50e-6;                ///< per transfer set-up (group-free: no communicator creation)
  double intra_node_bytes_per_s = 20e9;    ///< PCIe 4.0 x16-class peer copy
  double inter_node_bytes_per_s = 12.5e9;  ///< 100 Gb/s
  double bytes_per_token = 64 * 2;         ///< latent channels x bf16
  double fixed_bytes = 512.0 * 4096 * 2;   ///< prompt embeddings (512 tokens x 4096 x bf16)

  [[nodiscard]] double seconds(const request_shape& s, bool cross_node) const noexcept {
    const double bytes = fixed_bytes + bytes_per_token * latent_tokens(s);
    return latency_s + bytes / (cross_node ? inter_node_bytes_per_s : intra_node_bytes_per_s);
  }
};

}  // namespace paraflex
