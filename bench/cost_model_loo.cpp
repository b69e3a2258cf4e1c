// cost_model_loo - leave-one-out validation of the profile cost model (figures in docs/cost-model.md).
//
//   cost_model_loo [PROFILE.csv]      default: the repository's bench/data/profiles/step_latency.csv
//
// For each (model, gpu) it prints, as a Markdown table, the median and maximum relative error when one
// row ("row out") or every row of one shape ("shape out": the shape becomes unprofiled) is removed and
// predicted from the rest, both as profile_cost_model serves it (fit + corrections from the measured
// neighbours) and by the fitted model alone; then the coefficients fitted on the whole profile.
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

/// Each row (or each shape's rows) held out, predicted by the plain fit on the remaining rows of the same
/// (model, gpu): what the corrections in profile_cost_model are measured against.
stats fit_only_loo(const profile_table& t, const std::string& model, const std::string& gpu, holdout unit) {
  auto rows = t.rows_for(model, gpu);
  std::erase_if(rows, [](const profile_row& r) { return r.batch != 1; });  // the degree fit sees single steps only
  std::vector<double> errors;
  for (std::size_t held = 0; held < rows.size(); ++held) {
    std::vector<fit_sample> samples;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const bool out = unit == holdout::row ? i == held : rows[i].shape == rows[held].shape;
      if (!out) samples.push_back({latent_tokens(rows[i].shape), rows[i].degree, rows[i].step_s});
    }
    if (samples.empty()) continue;
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
  std::printf("| model | gpu | rows | row out: served | row out: fit only | shape out: served | shape out: fit only "
              "| fit RMS, all rows |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < by_row.size(); ++i) {
    const auto& r = by_row[i];
    const auto& s = by_shape[i];
    const auto fr = fit_only_loo(table, r.model, r.gpu, holdout::row);
    const auto fs = fit_only_loo(table, r.model, r.gpu, holdout::shape);
    const profile_cost_model cm(table, r.gpu);
    std::printf("| %s | %s | %zu | %s / %s | %s / %s | %s / %s | %s / %s | %s |\n", r.model.c_str(), r.gpu.c_str(),
                r.predicted, pct(r.median_abs).c_str(), pct(r.max_abs).c_str(), pct(fr.median).c_str(),
                pct(fr.max).c_str(), pct(s.median_abs).c_str(), pct(s.max_abs).c_str(), pct(fs.median).c_str(),
                pct(fs.max).c_str(), pct(cm.fit_for(r.model)->rms_relative_error()).c_str());
  }
  std::printf("\nCells: median / max of |predicted - measured| / measured.\n");

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
