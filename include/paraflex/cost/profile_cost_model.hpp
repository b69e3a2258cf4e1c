// paraflex/cost/profile_cost_model.hpp - the CostModel built from a step-latency profile.
//
// For one GPU type, step_seconds(shape, k) is, in order of preference:
//   1. exact          the profile row for (shape, k), returned unchanged (so closed-form checks such as
//                     static:K against an FCFS queue match to the microsecond);
//   2. anchored fit   a profiled shape at an unprofiled degree: the fitted model (fitted_model.hpp)
//                     times the shape's own measured/fitted ratio, interpolated in log k between the
//                     two measured degrees around k (or taken from the nearest one outside them). The
//                     fit supplies the shape of the curve in k, the measurements its level: a shape the
//                     fit misses by 20% at its measured degrees is missed by about as much in between.
//   3. bracketed fit  an unprofiled shape inside the profiled token range: the fitted model times the
//                     measured/fitted ratio interpolated in log T between the profiled shapes just below
//                     and just above it in tokens (each at degree k as in 2);
//   4. fit            outside the profiled token range: the fitted model, with the edge shape's ratio
//                     faded out over a factor of 4 in tokens so that the answer stays continuous there.
// Why correct the fit at all: a five-term fit misses individual shapes by 5-20% (kernel choices, text
// tokens, padding), and a shape's misses are shared by its degrees and by its neighbours in tokens. On
// the shipped profile the corrections lower the leave-one-out error for four models of five
// (docs/cost-model.md). Predictions are positive and never below the fit's floor; the plain fit is
// monotone in tokens, the corrected one only as monotone as the measurements themselves.
// Cases 2-4 are `fitted_interpolated` when the request's latent tokens and degree lie inside the
// ranges profiled for that model, else `extrapolated`. Extrapolations are recorded by cause (the
// model, and which of its profiled ranges - tokens below/above, degree below/above - was left):
// extrapolation_notes() has one line per cause, with its first example and how many distinct
// (shape, degree) pairs it covers, so that pricing 12 shapes on 65,536 GPUs gives a few lines, not
// 786,000. Distinct pairs are kept as degree intervals per shape (a run prices degrees 1..G in order,
// so that is one interval per shape).
//
// allows_degree: degree >= 1, heads % degree == 0 where the profile states the model's heads, and
// degree <= max_degree() when one is set (set_max_degree; 0, the default, sets none). The cluster size
// is the policy's business; max_degree is the deployment's: the widest group the serving engine runs
// one request's sequence parallelism over. Past the profiled degrees the fit keeps getting faster
// (its compute terms shrink as 1/k), so on a large cluster an uncapped policy sizes a request up to
// hundreds of devices and migrates it at nearly every step (docs/performance.md, "Cells", "Degree cap").
// Batched steps (BatchCostModel; docs/cost-model.md): batch_step_seconds(shape, k, b) is, in order:
//   1. exact          the profile row with batch b for (shape, k);
//   2. measured curve (shape, k) has batch rows: linear in b between the measured batches (b = 1 is
//                     the batch-1 row), beyond the largest one continued with the last segment's
//                     slope (the cost of one more member) and noted as extrapolated;
//   3. fit estimate   no batch rows for (shape, k): step_seconds(shape, k) x the fit's batch ratio
//                     (c0 + c4 (k-1) + b x the token terms) / (c0 + c4 (k-1) + the token terms):
//                     the fixed and per-peer costs are paid once per batched step, every term that
//                     grows with tokens b times (b sequences of T tokens). Always noted: nothing was
//                     measured, and the fit's c0 is only as good as its smallest profiled shapes.
// b = 1 is step_seconds. Batch rows never enter the degree fit, so a profile without them prices
// every single step exactly as before.
// Latent tokens use latent_tokens(shape) with the 16-pixel factor for every model. A model with another
// VAE factor (Wan2.2: 32) sees its token counts scaled by about the same constant (4), which the fit absorbs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "paraflex/core/error.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/cost/fitted_model.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// Where a step time came from.
enum class provenance : unsigned char {
  exact,                ///< a profile row
  fitted_interpolated,  ///< the fitted model inside the profiled token and degree ranges
  extrapolated,         ///< the fitted model outside them
};

[[nodiscard]] constexpr const char* to_string(provenance p) noexcept {
  switch (p) {
    case provenance::exact: return "exact";
    case provenance::fitted_interpolated: return "fitted_interpolated";
    case provenance::extrapolated: return "extrapolated";
  }
  return "?";
}

/// A step time and where it came from.
struct step_estimate {
  double seconds = 0.0;
  provenance source = provenance::exact;
};

/// The GPU type to use when the user names none: the only one the profile has rows for among `models`
/// (all models of the profile when `models` is empty). An error naming `file` when there is none or more
/// than one.
[[nodiscard]] inline result<std::string> default_gpu_for(const profile_table& table, const std::vector<std::string>& models,
                                                         const std::string& file) {
  std::vector<std::string> gpus;
  if (models.empty()) {
    gpus = table.gpus();
  } else {
    for (const auto& m : models) {
      for (auto& g : table.gpus_for(m)) gpus.push_back(std::move(g));
    }
    std::sort(gpus.begin(), gpus.end());
    gpus.erase(std::unique(gpus.begin(), gpus.end()), gpus.end());
  }
  if (gpus.size() == 1) return gpus.front();
  if (gpus.empty()) {
    return input_error{file, 0, {},
                       "the profile has no rows for model(s) " + join_names(models) + " (it knows " +
                           join_names(table.models()) + ")"};
  }
  // Advise only a GPU type that covers every model; when none does, say which model is on which.
  std::vector<std::string> covering;
  for (const auto& g : gpus) {
    bool all = true;
    for (const auto& m : models) {
      const auto of_m = table.gpus_for(m);
      all = all && std::find(of_m.begin(), of_m.end(), g) != of_m.end();
    }
    if (all) covering.push_back(g);
  }
  if (covering.empty()) {
    std::string where;
    for (const auto& m : models) where += (where.empty() ? "" : "; ") + m + ": " + join_names(table.gpus_for(m));
    return input_error{file, 0, {},
                       "no GPU type of the profile has rows for every model of the workload (" + where +
                           "): a run uses one GPU type, so split the workload by GPU type or add rows"};
  }
  return input_error{file, 0, {},
                     "the profile has several GPU types for " +
                         (models.empty() ? std::string("its models") : "model(s) " + join_names(models)) + ": " +
                         join_names(gpus) + "; choose one (e.g. --gpu " + covering.front() + ")"};
}

/// CostModel backed by one GPU type's rows of a profile. Copyable; safe to share between threads
/// (the only mutable state, the extrapolation notes, is guarded).
class profile_cost_model {
 public:
  /// Builds the model for `gpu`. Precondition: `table` is valid (validate_profile) and has rows for `gpu`;
  /// std::invalid_argument otherwise. from_profile is the checked way.
  profile_cost_model(const profile_table& table, std::string gpu, migration_cost migration = {})
      : gpu_(std::move(gpu)), migration_(migration) {
    for (const auto& r : table.rows) {
      if (r.gpu != gpu_) continue;
      auto& m = models_[r.shape.model];
      auto& s = m.shapes[shape_key(r.shape)];
      s.tokens = latent_tokens(r.shape);
      if (r.batch == 1) s.measured.emplace_back(r.degree, r.step_s);
      s.batched[r.degree].emplace_back(r.batch, r.step_s);  // b = 1 too: the curve's first point
    }
    if (models_.empty()) throw std::invalid_argument("profile_cost_model: the profile has no rows for gpu '" + gpu_ + "'");
    for (auto& [name, m] : models_) {
      std::vector<fit_sample> samples;
      for (auto& [key, s] : m.shapes) {
        std::sort(s.measured.begin(), s.measured.end());
        for (const auto& [k, sec] : s.measured) samples.push_back({s.tokens, k, sec});
        for (auto it = s.batched.begin(); it != s.batched.end();) {  // keep only degrees with batch rows
          std::sort(it->second.begin(), it->second.end());
          it = it->second.size() < 2 ? s.batched.erase(it) : std::next(it);
        }
      }
      m.fit = fitted_step_model::fit(samples);
      for (auto& [key, s] : m.shapes) {
        for (const auto& [k, sec] : s.measured) s.log_ratio.push_back(std::log(sec / m.fit.predict(s.tokens, k)));
      }
      m.heads = table.heads_of(name);
    }
  }

  /// The model for `gpu`, or an input_error (naming the table's source) when the table is invalid or has
  /// no rows for that GPU type (listing the ones it has).
  [[nodiscard]] static result<profile_cost_model> from_profile(const profile_table& table, std::string gpu,
                                                              migration_cost migration = {}) {
    if (auto e = validate_profile(table)) return *e;
    if (!table.has_gpu(gpu)) {
      return input_error{table.source, 0, "gpu",
                         "the profile has no rows for gpu '" + gpu + "' (it has: " + join_names(table.gpus()) + ")"};
    }
    return profile_cost_model(table, std::move(gpu), migration);
  }

  // --- CostModel ----------------------------------------------------------------------------------

  /// Seconds per denoising step of `s` on `degree` GPUs. std::out_of_range for a model the profile does
  /// not know on this GPU type (workload readers reject those first, with knows_model).
  [[nodiscard]] double step_seconds(const request_shape& s, int degree) const { return estimate(s, degree).seconds; }

  /// degree >= 1, heads % degree == 0 when the profile states the model's heads, and degree <=
  /// max_degree() when one is set. False for an unknown model.
  [[nodiscard]] bool allows_degree(const request_shape& s, int degree) const noexcept {
    const auto it = models_.find(s.model);
    return it != models_.end() && allows(it->second, degree);
  }

  [[nodiscard]] double migration_seconds(const request_shape& s, int from_degree, int to_degree, bool cross_node) const noexcept {
    (void)from_degree, (void)to_degree;  // the state is a few MB whatever the layout; links dominate
    return migration_.seconds(s, cross_node);
  }

  // --- BatchCostModel ------------------------------------------------------------------------------

  /// Seconds of one step of `batch` requests of `s` run together on `degree` GPUs (batch <= 1: one
  /// request, step_seconds). See the header comment for where the figure comes from.
  [[nodiscard]] double batch_step_seconds(const request_shape& s, int degree, int batch) const {
    return batch_estimate(s, degree, batch).seconds;
  }

  // --- beyond the concept -------------------------------------------------------------------------

  /// Batched step time with its provenance: exact (a batch row), fitted_interpolated (between measured
  /// batches of this shape and degree) or extrapolated (beyond them, or estimated from the fit).
  [[nodiscard]] step_estimate batch_estimate(const request_shape& s, int degree, int batch) const {
    const step_estimate single = estimate(s, degree);
    if (batch <= 1) return single;
    const model_data& m = model(s.model);
    const int k = std::max(degree, 1);
    const double b = static_cast<double>(batch);
    const auto sh = m.shapes.find(shape_key(s));
    if (sh != m.shapes.end()) {
      const auto curve = sh->second.batched.find(k);
      if (curve != sh->second.batched.end()) {
        const auto& pts = curve->second;  // (batch, seconds), sorted, starting at batch 1
        const auto hi = std::lower_bound(pts.begin(), pts.end(), batch, [](const auto& p, int x) { return p.first < x; });
        if (hi != pts.end() && hi->first == batch) return {hi->second, provenance::exact};
        if (hi != pts.end()) {
          const auto lo = std::prev(hi);
          const double w = (b - lo->first) / static_cast<double>(hi->first - lo->first);
          return {(1.0 - w) * lo->second + w * hi->second, provenance::fitted_interpolated};
        }
        const auto& last = pts.back();
        const auto& before = pts[pts.size() - 2];
        const double slope = std::max(0.0, (last.second - before.second) / static_cast<double>(last.first - before.first));
        notes_.add(s, k, batch_above, [&] {
          return describe_batch(s, k, batch) + ": extrapolated (batch above the profiled 1.." + std::to_string(last.first) +
                 " for this shape and degree; the last measured member's cost continued)";
        }, batch);
        return {last.second + slope * (b - static_cast<double>(last.first)), provenance::extrapolated};
      }
    }
    notes_.add(s, k, batch_estimated, [&] {
      return describe_batch(s, k, batch) +
             ": estimated from the token-count fit (no batch rows for this shape and degree; the fixed and per-peer "
             "costs shared, the token terms x batch)";
    }, batch);
    return {single.seconds * fit_batch_ratio(m.fit, latent_tokens(s), k, b), provenance::extrapolated};
  }

  /// The fit's batched / single step ratio at (tokens, k): (shared + b x scaled) / (shared + scaled),
  /// shared = the fixed and per-peer terms, scaled = the terms that grow with tokens. b when the fit
  /// has no token terms at all, 1 + (b - 1) x (share of the token terms) in general.
  [[nodiscard]] static double fit_batch_ratio(const fitted_step_model& fit, double tokens, int k, double b) noexcept {
    const double t = std::max(tokens, 1.0);
    const double shared = fit.coefficient(step_feature::fixed) + fit.coefficient(step_feature::peers) * feature_value(step_feature::peers, t, k);
    double scaled = 0.0;
    for (step_feature f : {step_feature::linear, step_feature::attention, step_feature::traffic}) {
      scaled += fit.coefficient(f) * feature_value(f, t, k);
    }
    if (!(shared + scaled > 0.0)) return b;
    return (shared + b * scaled) / (shared + scaled);
  }

  /// Step time with its provenance. degree < 1 is treated as 1 (allows_degree says it is not allowed).
  [[nodiscard]] step_estimate estimate(const request_shape& s, int degree) const {
    const shape_lookup l = look_up(s);
    const int k = std::max(degree, 1);
    const step_estimate e = estimate_at(l, k);
    if (e.source == provenance::extrapolated) {
      notes_.add(s, k, cause_of(k, l.tokens, l.m->fit), [&] { return describe_extrapolation(s, k, l.tokens, l.m->fit); });
    }
    return e;
  }

  /// Every degree in 1..max_degree that allows_degree admits for `s`, in increasing order, with its
  /// step_seconds (MultiDegreeCostModel): the same figures and notes, with the model, the shape and its
  /// profiled neighbours looked up once, so that pricing a shape on 1,024 degrees is mostly the fit's
  /// arithmetic. std::out_of_range for an unknown model.
  void allowed_step_seconds(const request_shape& s, int max_degree, std::vector<std::pair<int, double>>& allowed) const {
    allowed.clear();
    const shape_lookup l = look_up(s);
    std::vector<std::pair<int, unsigned char>> extrapolated;  // (degree, cause), noted under one lock below
    for (int k = 1; k <= max_degree; ++k) {
      if (!allows(*l.m, k)) continue;
      const step_estimate e = estimate_at(l, k);
      allowed.emplace_back(k, e.seconds);
      if (e.source == provenance::extrapolated) extrapolated.emplace_back(k, cause_of(k, l.tokens, l.m->fit));
    }
    notes_.add_each(s, extrapolated, [&](int k) { return describe_extrapolation(s, k, l.tokens, l.m->fit); });
  }

  [[nodiscard]] const std::string& gpu() const noexcept { return gpu_; }
  [[nodiscard]] bool knows_model(std::string_view name) const { return models_.find(name) != models_.end(); }
  /// Models with rows for this GPU type, sorted.
  [[nodiscard]] std::vector<std::string> models() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : models_) out.push_back(name);
    return out;
  }
  [[nodiscard]] std::optional<int> heads_of(std::string_view model_name) const {
    const auto it = models_.find(model_name);
    return it == models_.end() ? std::nullopt : it->second.heads;
  }
  /// The fitted model of one model (nullptr when unknown): coefficients and profiled ranges.
  [[nodiscard]] const fitted_step_model* fit_for(std::string_view model_name) const {
    const auto it = models_.find(model_name);
    return it == models_.end() ? nullptr : &it->second.fit;
  }
  [[nodiscard]] const migration_cost& migration() const noexcept { return migration_; }

  /// Allows no degree above `degree` for any model (0: no cap, the default); std::invalid_argument
  /// when negative. Set it before a scheduler prices its first shape: shapes are priced once.
  void set_max_degree(int degree) {
    if (degree < 0) throw std::invalid_argument("profile_cost_model: max_degree must be >= 0 (0: no cap), got " + std::to_string(degree));
    max_degree_ = degree;
  }
  /// The cap set by set_max_degree, 0 when there is none.
  [[nodiscard]] int max_degree() const noexcept { return max_degree_; }

  /// One line per cause of extrapolation so far (model and the profiled ranges left), in the order
  /// first seen: the first (shape, degree) answered that way, and how many more distinct ones followed.
  [[nodiscard]] std::vector<std::string> extrapolation_notes() const { return notes_.lines(); }
  void clear_extrapolation_notes() const { notes_.clear(); }

 private:
  using shape_id = std::tuple<int, int, int>;  // height, width, frames
  static constexpr double fade_span = 4.0;  // see bracket_log_ratio; 2-8 give similar leave-one-out errors

  struct shape_data {
    double tokens = 1.0;
    std::vector<std::pair<int, double>> measured;  ///< (degree, seconds), sorted by degree
    std::map<int, std::vector<std::pair<int, double>>> batched;  ///< degree -> (batch, seconds) from 1, where batch rows exist
    std::vector<double> log_ratio;                 ///< log(measured / fit), same order
  };
  struct model_data {
    fitted_step_model fit;
    std::map<shape_id, shape_data> shapes;
    std::optional<int> heads;
  };

  /// Which profiled ranges an extrapolated (shape, degree) leaves (bits), for one model.
  enum cause_bits : unsigned char {
    tokens_below = 1, tokens_above = 2, degree_below = 4, degree_above = 8,
    batch_estimated = 16,  ///< a batched step priced by the fit: no batch rows for its shape and degree
    batch_above = 32,      ///< a batched step beyond the largest measured batch of its shape and degree
  };

  /// Extrapolations grouped by cause, in the order first seen, behind a mutex; copies get their own
  /// mutex. Each cause keeps its first example's line and the number of distinct (shape, degree) pairs.
  class note_log {
   public:
    note_log() = default;
    note_log(const note_log& o) {
      const std::lock_guard lock(o.mutex_);
      causes_ = o.causes_;
      seen_ = o.seen_;
    }
    note_log& operator=(const note_log& o) {
      if (this != &o) {
        note_log copy(o);
        const std::lock_guard lock(mutex_);
        causes_ = std::move(copy.causes_);
        seen_ = std::move(copy.seen_);
      }
      return *this;
    }
    /// Records (s, degree) (with `batch` for batch causes) under `cause` unless it was recorded before;
    /// `describe` makes the example line, called only for a new cause.
    template <class Describe>
    void add(const request_shape& s, int degree, unsigned char cause, Describe&& describe, int batch = 1) {
      const std::lock_guard lock(mutex_);
      record(seen_[{s, batch}], s.model, degree, cause, [&](int) { return std::forward<Describe>(describe)(); });
    }
    /// add() for each (degree, cause) of one shape (batch 1) in turn, under one lock and one lookup of the
    /// shape; describe(degree) makes the example line of a new cause.
    template <class Describe>
    void add_each(const request_shape& s, std::span<const std::pair<int, unsigned char>> extrapolated, Describe&& describe) {
      if (extrapolated.empty()) return;
      const std::lock_guard lock(mutex_);
      intervals& seen = seen_[{s, 1}];
      for (const auto& [k, cause] : extrapolated) record(seen, s.model, k, cause, describe);
    }
    [[nodiscard]] std::vector<std::string> lines() const {
      const std::lock_guard lock(mutex_);
      std::vector<std::string> out;
      out.reserve(causes_.size());
      for (const auto& c : causes_) {
        const bool batched = (c.bits & (batch_estimated | batch_above)) != 0;
        out.push_back(c.count == 1 ? c.example
                                   : c.example + " and " + std::to_string(c.count - 1) +
                                         (batched ? " more (shape, degree, batch) case" : " more (shape, degree) pair") +
                                         (c.count == 2 ? "" : "s") + " for the same reason");
      }
      return out;
    }
    void clear() {
      const std::lock_guard lock(mutex_);
      causes_.clear();
      seen_.clear();
    }

   private:
    using intervals = std::map<int, int>;  // first degree -> last degree, disjoint and not adjacent

    // Counts `degree` under (model, cause) unless `seen` (the shape's degrees so far) has it. Under mutex_.
    template <class Describe>
    void record(intervals& seen, const std::string& model, int degree, unsigned char cause, Describe&& describe) {
      if (!insert(seen, degree)) return;
      for (auto& c : causes_) {
        if (c.bits == cause && c.model == model) {
          ++c.count;
          return;
        }
      }
      causes_.push_back(entry{model, cause, describe(degree), 1});
    }

    struct entry {
      std::string model;
      unsigned char bits = 0;
      std::string example;
      std::size_t count = 0;
    };

    /// Adds k to `iv`; false when it was there already.
    static bool insert(intervals& iv, int k) {
      auto next = iv.upper_bound(k);
      if (next != iv.begin()) {
        auto prev = std::prev(next);
        if (prev->second >= k) return false;
        if (prev->second == k - 1) {
          prev->second = k;
          if (next != iv.end() && next->first == k + 1) {
            prev->second = next->second;
            iv.erase(next);
          }
          return true;
        }
      }
      if (next != iv.end() && next->first == k + 1) {
        const int last = next->second;
        iv.erase(next);
        iv.emplace(k, last);
        return true;
      }
      iv.emplace(k, k);
      return true;
    }

    mutable std::mutex mutex_;
    std::vector<entry> causes_;
    std::map<std::pair<request_shape, int>, intervals> seen_;  // (shape, batch) -> degrees
  };

  [[nodiscard]] static shape_id shape_key(const request_shape& s) noexcept { return {s.height, s.width, s.frames}; }

  [[nodiscard]] const model_data& model(std::string_view name) const {
    const auto it = models_.find(name);
    if (it == models_.end()) {
      throw std::out_of_range("profile_cost_model: unknown model '" + std::string(name) + "' on gpu '" + gpu_ +
                              "' (known: " + join_names(models()) + ")");
    }
    return it->second;
  }

  /// log(measured / fit) at degree k for a profiled shape: linear in log k between the measured degrees
  /// around k, constant beyond the outermost ones.
  [[nodiscard]] static double anchor_log_ratio(const shape_data& s, int k) {
    const auto& d = s.measured;
    if (k <= d.front().first) return s.log_ratio.front();
    if (k >= d.back().first) return s.log_ratio.back();
    std::size_t hi = 1;
    while (d[hi].first < k) ++hi;
    const double x0 = std::log(static_cast<double>(d[hi - 1].first));
    const double x1 = std::log(static_cast<double>(d[hi].first));
    const double w = (std::log(static_cast<double>(k)) - x0) / (x1 - x0);
    return (1.0 - w) * s.log_ratio[hi - 1] + w * s.log_ratio[hi];
  }

  /// Where an unprofiled shape's correction comes from (bracket_log_ratio), found once per shape: the
  /// profiled shapes just below and just above it in tokens, or the edge shape when it lies outside them.
  struct bracket {
    const shape_data* lo = nullptr;
    const shape_data* hi = nullptr;
    const shape_data* edge = nullptr;  ///< set when lo or hi is missing
    double distance = 0.0;             ///< from the edge, in factors of fade_span (edge only)
    double w = 0.0;                    ///< hi's weight between lo and hi in log T
    bool same_tokens = false;          ///< lo and hi have the same token count: their mean
  };
  [[nodiscard]] static bracket bracket_of(const model_data& m, double tokens) {
    bracket b;
    for (const auto& [key, s] : m.shapes) {
      if (s.tokens <= tokens && (b.lo == nullptr || s.tokens > b.lo->tokens)) b.lo = &s;
      if (s.tokens >= tokens && (b.hi == nullptr || s.tokens < b.hi->tokens)) b.hi = &s;
    }
    if (b.lo == nullptr || b.hi == nullptr) {
      b.edge = b.lo != nullptr ? b.lo : b.hi;
      b.distance = std::abs(std::log(tokens / b.edge->tokens)) / std::log(fade_span);
    } else if (b.hi->tokens <= b.lo->tokens) {
      b.same_tokens = true;  // another shape with the same token count
    } else {
      b.w = (std::log(tokens) - std::log(b.lo->tokens)) / (std::log(b.hi->tokens) - std::log(b.lo->tokens));
    }
    return b;
  }
  /// log(measured / fit) for an unprofiled shape at degree k: linear in log T between the profiled shapes
  /// just below and just above it in tokens (each taken at degree k by anchor_log_ratio); outside the
  /// profiled token range the edge shape's correction fades out over a factor of `fade_span` in tokens,
  /// so that the answer stays continuous at the edge yet returns to the plain fit, where neighbours on one
  /// side say little about the trend.
  [[nodiscard]] static double bracket_log_ratio(const bracket& b, int k) {
    if (b.edge != nullptr) return b.distance >= 1.0 ? 0.0 : (1.0 - b.distance) * anchor_log_ratio(*b.edge, k);
    const double r_lo = anchor_log_ratio(*b.lo, k);
    const double r_hi = anchor_log_ratio(*b.hi, k);
    if (b.same_tokens) return 0.5 * (r_lo + r_hi);
    return (1.0 - b.w) * r_lo + b.w * r_hi;
  }

  /// What estimate() needs of a shape before any degree: its model, tokens, and its own profile rows or
  /// the bracket its correction comes from.
  struct shape_lookup {
    const model_data* m;
    double tokens;
    const shape_data* profiled;  ///< the shape's own rows, or nullptr (then `around` applies)
    bracket around;
  };
  [[nodiscard]] shape_lookup look_up(const request_shape& s) const {
    const model_data& m = model(s.model);
    shape_lookup l{&m, latent_tokens(s), nullptr, {}};
    const auto sh = m.shapes.find(shape_key(s));
    if (sh != m.shapes.end()) l.profiled = &sh->second;
    else l.around = bracket_of(m, l.tokens);
    return l;
  }
  /// allows_degree for a model found already.
  [[nodiscard]] bool allows(const model_data& m, int degree) const noexcept {
    if (degree < 1 || (max_degree_ > 0 && degree > max_degree_)) return false;
    return !m.heads || *m.heads % degree == 0;
  }
  /// estimate() at degree k >= 1 of a looked-up shape, without noting an extrapolation.
  [[nodiscard]] static step_estimate estimate_at(const shape_lookup& l, int k) {
    const model_data& m = *l.m;
    double seconds = 0.0;
    if (l.profiled != nullptr) {
      const auto& meas = l.profiled->measured;
      const auto it = std::lower_bound(meas.begin(), meas.end(), k, [](const auto& p, int d) { return p.first < d; });
      if (it != meas.end() && it->first == k) return {it->second, provenance::exact};
      seconds = m.fit.predict(l.tokens, k) * std::exp(anchor_log_ratio(*l.profiled, k));
    } else {
      seconds = m.fit.predict(l.tokens, k) * std::exp(bracket_log_ratio(l.around, k));
    }
    seconds = std::max(seconds, m.fit.floor_seconds());
    return {seconds, m.fit.in_range(l.tokens, k) ? provenance::fitted_interpolated : provenance::extrapolated};
  }

  [[nodiscard]] static unsigned char cause_of(int k, double tokens, const fitted_step_model& fit) noexcept {
    unsigned bits = 0;
    if (tokens < fit.min_tokens()) bits |= tokens_below;
    if (tokens > fit.max_tokens()) bits |= tokens_above;
    if (k < fit.min_degree()) bits |= degree_below;
    if (k > fit.max_degree()) bits |= degree_above;
    return static_cast<unsigned char>(bits);
  }

  [[nodiscard]] std::string describe_extrapolation(const request_shape& s, int k, double tokens,
                                                   const fitted_step_model& fit) const {
    std::string line = s.model + " " + std::to_string(s.height) + "x" + std::to_string(s.width);
    if (s.frames != 1) line += "x" + std::to_string(s.frames);
    line += " at degree " + std::to_string(k) + " on " + gpu_ + ": extrapolated (";
    bool first = true;
    const auto fmt_num = [](double v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.0f", v);
      return std::string(buf);
    };
    if (tokens < fit.min_tokens() || tokens > fit.max_tokens()) {
      line += "latent tokens " + fmt_num(tokens) + " outside the profiled " + fmt_num(fit.min_tokens()) + ".." +
              fmt_num(fit.max_tokens());
      first = false;
    }
    if (k < fit.min_degree() || k > fit.max_degree()) {
      if (!first) line += "; ";
      line += "degree outside the profiled " + std::to_string(fit.min_degree()) + ".." + std::to_string(fit.max_degree());
    }
    return line + ")";
  }

  [[nodiscard]] std::string describe_batch(const request_shape& s, int k, int batch) const {
    std::string line = s.model + " " + std::to_string(s.height) + "x" + std::to_string(s.width);
    if (s.frames != 1) line += "x" + std::to_string(s.frames);
    return line + " at degree " + std::to_string(k) + " on " + gpu_ + ", batch " + std::to_string(batch);
  }

  std::string gpu_;
  migration_cost migration_;
  int max_degree_ = 0;  // 0: no cap
  std::map<std::string, model_data, std::less<>> models_;
  mutable note_log notes_;
};

static_assert(CostModel<profile_cost_model> && BatchCostModel<profile_cost_model> && MultiDegreeCostModel<profile_cost_model>);

/// What leave_one_out holds out at a time.
enum class holdout : unsigned char {
  row,    ///< one profile row (its shape usually stays profiled at other degrees: anchored fit)
  shape,  ///< every row of one shape (the shape becomes unprofiled: plain fit)
};

/// Cross-validation of the cost model on its own profile, for one (model, gpu).
struct loo_summary {
  std::string model;
  std::string gpu;
  std::size_t predicted = 0;            ///< rows predicted (rows whose removal left nothing to fit are skipped)
  std::vector<double> relative_errors;  ///< (predicted - measured) / measured, in profile order
  double median_abs = 0.0;              ///< median of |relative error|
  double max_abs = 0.0;                 ///< largest |relative error|
};

/// For every (model, gpu) of a valid table: remove each row (or each shape's rows), rebuild the
/// profile_cost_model from the rest, and predict what was removed. Cost: one fit per held-out unit.
/// Single steps only: batch rows are never held out, and leave with the batch-1 row they hang on.
[[nodiscard]] inline std::vector<loo_summary> leave_one_out(const profile_table& table, holdout unit = holdout::row) {
  std::vector<loo_summary> out;
  for (const auto& gpu : table.gpus()) {
    for (const auto& model : table.models_on(gpu)) {
      loo_summary sum{model, gpu, 0, {}, 0.0, 0.0};
      const auto mine = [&](const profile_row& r) { return r.gpu == gpu && r.shape.model == model; };
      for (const auto& held : table.rows) {
        if (!mine(held) || held.batch != 1) continue;
        profile_table rest;
        rest.source = table.source;
        rest.heads = table.heads;
        bool left = false;
        for (const auto& r : table.rows) {
          const bool out_now = unit == holdout::row ? (mine(r) && r.shape == held.shape && r.degree == held.degree)
                                                    : (mine(r) && r.shape == held.shape);
          if (out_now) continue;
          left = left || mine(r);
          rest.rows.push_back(r);
        }
        if (!left) continue;
        const profile_cost_model cm(rest, gpu);
        const double e = cm.step_seconds(held.shape, held.degree) / held.step_s - 1.0;
        sum.relative_errors.push_back(e);
      }
      sum.predicted = sum.relative_errors.size();
      if (sum.predicted > 0) {
        std::vector<double> a;
        for (double e : sum.relative_errors) a.push_back(std::abs(e));
        std::sort(a.begin(), a.end());
        const std::size_t n = a.size();
        sum.median_abs = n % 2 == 1 ? a[n / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
        sum.max_abs = a.back();
      }
      out.push_back(std::move(sum));
    }
  }
  return out;
}

}  // namespace paraflex
