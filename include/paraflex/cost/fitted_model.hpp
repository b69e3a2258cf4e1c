// paraflex/cost/fitted_model.hpp - step time as a function of latent tokens T and degree k, fitted.
//
// One model per (model, gpu) of a profile. It answers any T >= 1 and any k >= 1, so that the scheduler
// can price shapes and degrees nobody measured. The form is a sum of physical cost components, each
// non-negative and each with a known dependence on T and k:
//
//   t(T, k) = c0                 fixed per-step cost (launches, timestep embedding, tiny kernels)
//           + c1 * T / k         token-linear work (projections, MLP, norms), split over k ranks
//           + c2 * T^2 / k       attention, quadratic in the sequence and split over k ranks
//           + c3 * T (k-1) / k^2 sequence-parallel traffic: in an all-to-all each rank sends (k-1)/k of
//                                its T/k tokens' activations over its own link (why going from 1 to 2
//                                GPUs gains less than going from 2 to 8 in the profiles)
//           + c4 * (k - 1)       per-peer latency: collective set-up and synchronisation grow with the
//                                group (why Qwen-Image 512x512 gets slower on 4 GPUs)
//
// Fitting: non-negative least squares on *relative* residuals (each row divided by the measured time).
// Why not plain least squares: it can return negative coefficients, and then a prediction away from the
// data can go to zero or below. Why not a fit in log space: log t is not linear in these components (t is
// their sum), and a power law cannot express "flat for small shapes, near-linear scaling for large ones"
// at once. Why relative residuals: step times span four orders of magnitude (0.02 s to 118 s); unweighted
// residuals would fit only the largest videos.
// With c >= 0 every component is >= 0 and non-decreasing in T, so predictions are positive and monotone
// in tokens at every degree. A floor (half the fastest measured step) guards the rest.
//
// Robustness: a component that the samples cannot identify (e.g. T^2 when only one token count was
// profiled, or anything in k when only one degree was) is dropped before the fit: features are taken in
// priority order and one that does not raise the numerical rank of the design is left out. A single
// sample still gives a model (t proportional to T / k), which then extrapolates and says so.
//
// Eigen is used only in this header.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Dense>

namespace paraflex {

/// One measurement in fitting units: latent tokens, degree, seconds per step.
struct fit_sample {
  double tokens = 1.0;
  int degree = 1;
  double seconds = 0.0;
};

/// The components of fitted_step_model, in the order of its coefficients.
enum class step_feature : unsigned char { fixed, linear, attention, traffic, peers };
inline constexpr std::size_t step_feature_count = 5;

[[nodiscard]] constexpr const char* to_string(step_feature f) noexcept {
  switch (f) {
    case step_feature::fixed: return "fixed";
    case step_feature::linear: return "T/k";
    case step_feature::attention: return "T^2/k";
    case step_feature::traffic: return "T(k-1)/k^2";
    case step_feature::peers: return "(k-1)";
  }
  return "?";
}

/// Value of one component at (tokens, degree), before its coefficient.
[[nodiscard]] inline double feature_value(step_feature f, double tokens, int degree) noexcept {
  const double k = static_cast<double>(degree);
  switch (f) {
    case step_feature::fixed: return 1.0;
    case step_feature::linear: return tokens / k;
    case step_feature::attention: return tokens * tokens / k;
    case step_feature::traffic: return tokens * (k - 1.0) / (k * k);
    case step_feature::peers: return k - 1.0;
  }
  return 0.0;
}

namespace detail {

/// Lawson-Hanson active-set non-negative least squares: argmin ||A x - b|| subject to x >= 0.
/// Columns of A should be scaled to comparable norms (the caller normalises them). Small problems only
/// (a handful of columns): each inner step solves the passive columns with a pivoted QR.
[[nodiscard]] inline Eigen::VectorXd nnls(const Eigen::MatrixXd& a, const Eigen::VectorXd& b) {
  const Eigen::Index n = a.cols();
  Eigen::VectorXd x = Eigen::VectorXd::Zero(n);
  std::vector<bool> passive(static_cast<std::size_t>(n), false);
  std::vector<bool> rejected(static_cast<std::size_t>(n), false);  // entered once and came back <= 0
  const double tol = 1e-12 * std::max(1.0, b.norm()) * static_cast<double>(std::max<Eigen::Index>(a.rows(), n));

  const auto solve_passive = [&]() {
    std::vector<Eigen::Index> cols;
    for (Eigen::Index j = 0; j < n; ++j) {
      if (passive[static_cast<std::size_t>(j)]) cols.push_back(j);
    }
    Eigen::MatrixXd ap(a.rows(), static_cast<Eigen::Index>(cols.size()));
    for (std::size_t c = 0; c < cols.size(); ++c) ap.col(static_cast<Eigen::Index>(c)) = a.col(cols[c]);
    const Eigen::VectorXd sp = ap.colPivHouseholderQr().solve(b);
    Eigen::VectorXd s = Eigen::VectorXd::Zero(n);
    for (std::size_t c = 0; c < cols.size(); ++c) s(cols[c]) = sp(static_cast<Eigen::Index>(c));
    return s;
  };

  for (int outer = 0; outer < 3 * static_cast<int>(n) + 3; ++outer) {
    const Eigen::VectorXd w = a.transpose() * (b - a * x);
    Eigen::Index best = -1;
    for (Eigen::Index j = 0; j < n; ++j) {
      const auto u = static_cast<std::size_t>(j);
      if (!passive[u] && !rejected[u] && w(j) > tol && (best < 0 || w(j) > w(best))) best = j;
    }
    if (best < 0) break;
    passive[static_cast<std::size_t>(best)] = true;

    for (int inner = 0; inner < 3 * static_cast<int>(n) + 3; ++inner) {
      const Eigen::VectorXd s = solve_passive();
      bool feasible = true;
      for (Eigen::Index j = 0; j < n; ++j) {
        if (passive[static_cast<std::size_t>(j)] && s(j) <= 0.0) feasible = false;
      }
      if (feasible) {
        x = s;
        break;
      }
      // Step from x towards s as far as feasibility allows, then release the columns that hit zero.
      double alpha = 1.0;
      for (Eigen::Index j = 0; j < n; ++j) {
        if (passive[static_cast<std::size_t>(j)] && s(j) <= 0.0) alpha = std::min(alpha, x(j) / (x(j) - s(j)));
      }
      x += alpha * (s - x);
      for (Eigen::Index j = 0; j < n; ++j) {
        const auto u = static_cast<std::size_t>(j);
        if (passive[u] && x(j) <= 1e-15) {
          passive[u] = false;
          x(j) = 0.0;
          if (j == best) rejected[u] = true;  // degenerate: never re-enter it (avoids cycling)
        }
      }
    }
  }
  return x.cwiseMax(0.0);
}

}  // namespace detail

/// t(T, k) fitted to samples of one (model, gpu); see the header comment for the form.
class fitted_step_model {
 public:
  fitted_step_model() = default;

  /// Fits to `samples` (at least one; every seconds > 0, tokens >= 1, degree >= 1).
  [[nodiscard]] static fitted_step_model fit(const std::vector<fit_sample>& samples) {
    if (samples.empty()) throw std::invalid_argument("fitted_step_model::fit: no samples");
    fitted_step_model m;
    m.min_tokens_ = m.max_tokens_ = samples.front().tokens;
    m.min_degree_ = m.max_degree_ = samples.front().degree;
    double fastest = samples.front().seconds;
    for (const auto& s : samples) {
      if (!(s.seconds > 0.0) || !std::isfinite(s.seconds) || !(s.tokens >= 1.0) || s.degree < 1) {
        throw std::invalid_argument("fitted_step_model::fit: sample out of domain");
      }
      m.min_tokens_ = std::min(m.min_tokens_, s.tokens);
      m.max_tokens_ = std::max(m.max_tokens_, s.tokens);
      m.min_degree_ = std::min(m.min_degree_, s.degree);
      m.max_degree_ = std::max(m.max_degree_, s.degree);
      fastest = std::min(fastest, s.seconds);
    }
    m.floor_ = 0.5 * fastest;

    // Relative residuals: row i of the design is divided by the measured time, the target is 1.
    const auto rows = static_cast<Eigen::Index>(samples.size());
    Eigen::MatrixXd all(rows, static_cast<Eigen::Index>(step_feature_count));
    for (Eigen::Index i = 0; i < rows; ++i) {
      const auto& s = samples[static_cast<std::size_t>(i)];
      for (std::size_t f = 0; f < step_feature_count; ++f) {
        all(i, static_cast<Eigen::Index>(f)) = feature_value(static_cast<step_feature>(f), s.tokens, s.degree) / s.seconds;
      }
    }

    // Identifiable components, in priority order: T/k alone already gives a usable model, then the
    // fixed cost, attention, and the two degree penalties. Columns are normalised so that the rank test
    // and NNLS see comparable scales (T^2 reaches 1e10).
    constexpr std::array<step_feature, step_feature_count> priority = {
        step_feature::linear, step_feature::fixed, step_feature::attention, step_feature::peers, step_feature::traffic};
    std::vector<std::size_t> chosen;
    std::vector<double> scale;
    Eigen::MatrixXd design(rows, 0);
    for (step_feature f : priority) {
      const auto fi = static_cast<Eigen::Index>(f);
      const double norm = all.col(fi).norm();
      if (!(norm > 0.0)) continue;  // identically zero on the samples (e.g. k-1 with only degree 1)
      Eigen::MatrixXd trial(rows, design.cols() + 1);
      trial << design, all.col(fi) / norm;
      Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(trial);
      qr.setThreshold(1e-9);
      if (qr.rank() <= design.cols()) continue;  // in the span of what is already chosen
      design = std::move(trial);
      chosen.push_back(static_cast<std::size_t>(f));
      scale.push_back(norm);
    }

    const Eigen::VectorXd x = detail::nnls(design, Eigen::VectorXd::Ones(rows));
    for (std::size_t c = 0; c < chosen.size(); ++c) {
      m.coef_[chosen[c]] = x(static_cast<Eigen::Index>(c)) / scale[c];
      m.used_[chosen[c]] = true;
    }

    double sq = 0.0;
    for (const auto& s : samples) {
      const double e = m.predict(s.tokens, s.degree) / s.seconds - 1.0;
      sq += e * e;
    }
    m.rms_relative_error_ = std::sqrt(sq / static_cast<double>(samples.size()));
    return m;
  }

  /// Predicted seconds per step; never below floor_seconds(). tokens < 1 counts as 1, degree < 1 as 1.
  [[nodiscard]] double predict(double tokens, int degree) const noexcept {
    const double t = std::max(tokens, 1.0);
    const int k = std::max(degree, 1);
    double sum = 0.0;
    for (std::size_t f = 0; f < step_feature_count; ++f) sum += coef_[f] * feature_value(static_cast<step_feature>(f), t, k);
    return std::max(sum, floor_);
  }

  /// Coefficient of each component (0 when dropped or fitted to 0), indexed by step_feature.
  [[nodiscard]] const std::array<double, step_feature_count>& coefficients() const noexcept { return coef_; }
  [[nodiscard]] double coefficient(step_feature f) const noexcept { return coef_[static_cast<std::size_t>(f)]; }
  /// Whether the samples could identify the component (it took part in the fit).
  [[nodiscard]] bool identified(step_feature f) const noexcept { return used_[static_cast<std::size_t>(f)]; }

  [[nodiscard]] double floor_seconds() const noexcept { return floor_; }
  [[nodiscard]] double min_tokens() const noexcept { return min_tokens_; }
  [[nodiscard]] double max_tokens() const noexcept { return max_tokens_; }
  [[nodiscard]] int min_degree() const noexcept { return min_degree_; }
  [[nodiscard]] int max_degree() const noexcept { return max_degree_; }
  /// True when (tokens, degree) lies inside the box the samples span.
  [[nodiscard]] bool in_range(double tokens, int degree) const noexcept {
    return tokens >= min_tokens_ && tokens <= max_tokens_ && degree >= min_degree_ && degree <= max_degree_;
  }
  /// Root-mean-square relative error on the samples it was fitted to.
  [[nodiscard]] double rms_relative_error() const noexcept { return rms_relative_error_; }

  /// "0.0213 + 1.1e-05*T/k + ..." - for logs and docs.
  [[nodiscard]] std::string describe() const {
    std::string s;
    for (std::size_t f = 0; f < step_feature_count; ++f) {
      if (coef_[f] == 0.0) continue;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.4g", coef_[f]);
      if (!s.empty()) s += " + ";
      s += buf;
      if (static_cast<step_feature>(f) != step_feature::fixed) s += std::string("*") + to_string(static_cast<step_feature>(f));
    }
    return s.empty() ? "0" : s;
  }

 private:
  std::array<double, step_feature_count> coef_{};
  std::array<bool, step_feature_count> used_{};
  double floor_ = 0.0;
  double min_tokens_ = 1.0;
  double max_tokens_ = 1.0;
  int min_degree_ = 1;
  int max_degree_ = 1;
  double rms_relative_error_ = 0.0;
};

}  // namespace paraflex
