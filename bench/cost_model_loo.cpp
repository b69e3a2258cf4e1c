// cost_model_loo - leave-one-out validation of the profile cost model (figures in docs/cost-model.md).
//
//   cost_model_loo [PROFILE.csv]      default: the repository's bench/data/profiles/step_latency.csv
//
// For each (model, gpu) it prints, as a Markdown table, the median and maximum relative error when
//   - one row is removed and predicted from the rest, as served (exact rows + anchored fit + fit);
//   - one row is removed and predicted by the fitted model alone (no anchoring to the shape's other rows);
//   - every row of one shape is removed (the shape becomes unprofiled) and predicted from the rest;
// then the fitted coefficients on the full profile.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "paraflex/cost/profile_cost_model.hpp"

namespace {

using namespace paraflex;

struct stats {
  double median = 0.0;
  double max = 0.0;
  std::size_t n = 0;
};

stats summarize(std::vector<double> errors) {
  stats s;
  for (double& e : errors) e = std::abs(e);
  std::sort(errors.begin(), errors.end());
  s.n = errors.size();
  if (s.n == 0) return s;
  s.median = s.n % 2 == 1 ? errors[s.n / 2] : 0.5 * (errors[s.n / 2 - 1] + errors[s.n / 2]);
  s.max = errors.back();
  return s;
}

/// Row held out, predicted by the plain fit on the remaining rows of the same (model, gpu).
stats fit_only_loo(const profile_table& t, const std::string& model, const std::string& gpu) {
  const auto rows = t.rows_for(model, gpu);
  std::vector<double> errors;
  for (std::size_t held = 0; held < rows.size() && rows.size() > 1; ++held) {
    std::vector<fit_sample> samples;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (i != held) samples.push_back({latent_tokens(rows[i].shape), rows[i].degree, rows[i].step_s});
    }
    const auto fit = fitted_step_model::fit(samples);
    errors.push_back(fit.predict(latent_tokens(rows[held].shape), rows[held].degree) / rows[held].step_s - 1.0);
  }
  return summarize(std::move(errors));
}

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef PARAFLEX_DATA_DIR
  std::string path = PARAFLEX_DATA_DIR "/profiles/step_latency.csv";
#else
  std::string path = "bench/data/profiles/step_latency.csv";
#endif
  if (argc > 2) {
    std::fprintf(stderr, "usage: cost_model_loo [PROFILE.csv]\n");
    return 2;
  }
  if (argc == 2) path = argv[1];
  auto loaded = load_profile_csv(path);
  if (!loaded) {
    std::fprintf(stderr, "cost_model_loo: error: %s\n", loaded.error().what().c_str());
    return 2;
  }
  const profile_table& table = loaded.value();

  const auto by_row = leave_one_out(table, holdout::row);
  const auto by_shape = leave_one_out(table, holdout::shape);

  std::printf("Leave-one-out relative error of step time (profile: %s)\n\n", path.c_str());
  std::printf("| model | gpu | rows | row out, as served: median / max | row out, fit only: median / max | "
              "shape out: median / max | fit RMS (all rows) |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < by_row.size(); ++i) {
    const auto& r = by_row[i];
    const auto& s = by_shape[i];
    const auto f = fit_only_loo(table, r.model, r.gpu);
    const profile_cost_model cm(table, r.gpu);
    std::printf("| %s | %s | %zu | %s / %s | %s / %s | %s / %s | %s |\n", r.model.c_str(), r.gpu.c_str(), r.predicted,
                pct(r.median_abs).c_str(), pct(r.max_abs).c_str(), pct(f.median).c_str(), pct(f.max).c_str(),
                pct(s.median_abs).c_str(), pct(s.max_abs).c_str(), pct(cm.fit_for(r.model)->rms_relative_error()).c_str());
  }

  std::printf("\nFitted on all rows (seconds; T = latent tokens, k = degree)\n\n");
  std::printf("| model | gpu | t(T, k) | floor |\n|---|---|---|---:|\n");
  for (const auto& gpu : table.gpus()) {
    const profile_cost_model cm(table, gpu);
    for (const auto& model : cm.models()) {
      const auto* fit = cm.fit_for(model);
      std::printf("| %s | %s | %s | %.4g |\n", model.c_str(), gpu.c_str(), fit->describe().c_str(), fit->floor_seconds());
    }
  }
  return 0;
}
