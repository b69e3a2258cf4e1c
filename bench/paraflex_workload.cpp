// paraflex-workload - writes workload CSVs (formats.md §1) from the generators in sim/generators.hpp.
//
//   paraflex-workload --model flux-dev --shapes 256,512,1024,2048 --mix skewed --arrivals poisson
//                     --rate 0.2 --requests 300 --steps 50 --slo-rule alpha:3 --gpus 8 --load 0.9
//                     --seed 1 -o out.csv
//   paraflex-workload --arrivals trace:bench/data/traces/AzureLLMInferenceTrace_conv.csv --requests 500 ...
//
// The profile (--profile, default: the repository's step_latency.csv) is read only when a step time is
// needed: for --load and for the alpha SLO rules. Output is byte-identical for the same flags.
// A flag that the chosen mode would ignore (--rate with --load, --gpu without a profile use, ...) and an
// empty flag value are usage errors, not no-ops, and so is an -o that names the --profile or the
// --arrivals trace file (it would be overwritten). Long runs say how far they are on stderr (--quiet: not).
// Exit status: 0 on success, 2 on bad usage or bad input ("paraflex-workload: error: ..." on stderr).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/sim/generators.hpp"
#include "paraflex/sim/workload_csv.hpp"
#include "cli_parse.hpp"
#include "output_clash.hpp"

namespace {

using namespace paraflex;

constexpr const char* tool = "paraflex-workload";

/// A usage error: the flag it is about and why.
struct usage_error {
  std::string message;
};

[[nodiscard]] std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (;;) {
    const auto at = s.find(sep);
    out.emplace_back(trim(s.substr(0, at)));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

[[nodiscard]] double number(std::string_view flag, std::string_view text) {
  const auto v = parse_double(text);
  if (!v) throw usage_error{fmt::format("{}: {}", flag, v.message)};
  return *v.value;
}

[[nodiscard]] int integer(std::string_view flag, std::string_view text) {
  const auto v = parse_int(text);
  if (!v) throw usage_error{fmt::format("{}: {}", flag, v.message)};
  return *v.value;
}

/// A model name as it will appear in the CSV and be matched against a profile: not empty, no blanks at
/// its ends (the CSV reader would keep them, and no profile has them), no control characters (a newline
/// would end the row).
void check_model_name(std::string_view flag, std::string_view shown, std::string_view model) {
  if (model.empty()) throw usage_error{fmt::format("{} '{}': empty model name", flag, shown)};
  if (trim(model).size() != model.size()) {
    throw usage_error{fmt::format("{} '{}': model name '{}' starts or ends with a blank", flag, shown, model)};
  }
  if (std::any_of(model.begin(), model.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    throw usage_error{fmt::format("{} '{}': model name has a control character", flag, shown)};
  }
}

/// "1024" (square), "768x1360" (height x width), "720x1280x129" (video frames), each optionally
/// prefixed "model:" to mix models. Errors name the element of the list.
[[nodiscard]] request_shape parse_shape(std::string_view text, const std::string& default_model) {
  const std::string shown(text);
  const auto bad = [&](std::string_view why) { return usage_error{fmt::format("--shapes '{}': {}", shown, why)}; };
  if (text.empty()) throw bad("empty shape (two commas in a row, or one at an end?)");
  request_shape s;
  s.model = default_model;
  if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    s.model = std::string(trim(text.substr(0, colon)));
    text = text.substr(colon + 1);
    check_model_name("--shapes", shown, s.model);
  }
  const auto dims = split(text, 'x');
  if (dims.size() > 3) throw bad("not [MODEL:]SIZE, HEIGHTxWIDTH or HEIGHTxWIDTHxFRAMES");
  const auto dim = [&](const std::string& d) {
    const auto v = parse_int(d);
    if (!v) throw bad(fmt::format("not [MODEL:]SIZE, HEIGHTxWIDTH or HEIGHTxWIDTHxFRAMES ({})", v.message));
    return *v.value;
  };
  s.height = dim(dims[0]);
  s.width = dims.size() > 1 ? dim(dims[1]) : s.height;
  s.frames = dims.size() > 2 ? dim(dims[2]) : 1;
  if (s.height <= 0 || s.width <= 0 || s.frames <= 0) throw bad("sizes and frames must be > 0");
  return s;
}

/// TetriServe's base SLO for its square image sizes (seconds on H100), if `s` is one of them.
[[nodiscard]] std::optional<double> tetriserve_base_slo(const request_shape& s) {
  if (s.frames != 1 || s.height != s.width) return std::nullopt;
  for (const auto& c : tetriserve_shapes(s.model)) {
    if (c.shape == s) return c.base_slo_s;
  }
  return std::nullopt;
}

struct options {
  std::string model = "flux-dev";
  std::string shapes = "256,512,1024,2048";
  std::string mix = "uniform";
  std::string weights;
  std::string arrivals = "poisson";
  std::optional<double> rate;
  std::size_t requests = 0;
  double duration_s = 0.0;
  std::string steps = "50";
  std::string trace_time;  // --trace-time: the time column of a CSV trace (empty: found by name)
  std::string slo_rule = "none";
  std::string base_slo;
  std::string labels = "resolution";
  std::string priority_weights;
  std::string profile;
  std::string gpu;
  int gpus = 8;
  std::optional<double> load;
  std::uint64_t seed = 1;
  std::string output = "-";
  bool quiet = false;
  bool requests_given = false;  // --requests on the command line (0 is then an error, not "the default")
  bool gpus_given = false;      // --gpus on the command line
  bool duration_given = false;  // --duration on the command line (0 is then an error, not "no limit")
};

/// Step times from the profile, loaded on first use.
class step_times {
 public:
  step_times(std::string path, std::string gpu, int gpus) : path_(std::move(path)), gpu_(std::move(gpu)), gpus_(gpus) {}

  /// Loads the profile and checks that it knows every model in `models`; throws input_exception.
  const profile_cost_model& cost(const std::vector<std::string>& models) {
    if (model_) return *model_;
    if (path_.empty()) throw usage_error{"--profile: a step-latency profile is needed for --load and alpha SLOs"};
    auto table = load_profile_csv(path_).value_or_throw();
    std::string gpu = gpu_;
    if (gpu.empty()) gpu = default_gpu_for(table, models, path_).value_or_throw();
    model_.emplace(profile_cost_model::from_profile(table, gpu).value_or_throw());
    for (const auto& m : models) {
      if (!model_->knows_model(m)) {
        throw input_exception(input_error{path_, 0, "model",
                                          fmt::format("the profile has no rows for model '{}' on gpu '{}' (known: {})",
                                                      m, gpu, fmt::join(model_->models(), ", "))});
      }
    }
    return *model_;
  }

  [[nodiscard]] step_time_fn at_degree_one(const std::vector<std::string>& models) {
    const auto* c = &cost(models);
    return [c](const request_shape& s) { return c->step_seconds(s, 1); };
  }

  /// The fastest allowed degree up to --gpus: the latency a request could have alone on the cluster.
  [[nodiscard]] step_time_fn fastest(const std::vector<std::string>& models) {
    const auto* c = &cost(models);
    const int gpus = gpus_;
    return [c, gpus](const request_shape& s) {
      double best = std::numeric_limits<double>::infinity();
      for (int k = 1; k <= gpus; ++k) {
        if (c->allows_degree(s, k)) best = std::min(best, c->step_seconds(s, k));
      }
      return best;
    };
  }

  [[nodiscard]] std::vector<std::string> notes() const { return model_ ? model_->extrapolation_notes() : std::vector<std::string>{}; }

 private:
  std::string path_;
  std::string gpu_;
  int gpus_;
  std::optional<profile_cost_model> model_;
};

[[nodiscard]] workload_generator build(const options& o, step_times& times) {
  workload_generator g;
  g.seed = o.seed;
  g.requests = o.requests;

  // Flags that the chosen mode would ignore are mistakes, not no-ops.
  const bool poisson = o.arrivals == "poisson";
  if ((o.duration_given || o.duration_s != 0.0) && !poisson) throw usage_error{"--duration: only for --arrivals poisson"};
  if (o.duration_given && !(o.duration_s > 0.0 && std::isfinite(o.duration_s))) {
    throw usage_error{fmt::format("--duration: must be a finite number of seconds > 0, got {} (omit it for no time limit)", o.duration_s)};
  }
  if (o.rate && !poisson && o.arrivals.rfind("trace:", 0) != 0) throw usage_error{"--rate: not for --arrivals phases"};
  if (!o.weights.empty() && o.mix != "weighted") throw usage_error{"--weights: only with --mix weighted"};
  if (!o.base_slo.empty() && o.slo_rule.rfind("fixed", 0) != 0) throw usage_error{"--base-slo: only with --slo-rule fixed"};
  if (o.requests_given && o.requests == 0) {
    throw usage_error{"--requests: must be >= 1 (omit it for the default: 300 for poisson, every arrival of a trace, one pass "
                      "of the phases)"};
  }
  if (o.rate && !(std::isfinite(*o.rate) && *o.rate > 0.0)) throw usage_error{fmt::format("--rate: must be > 0, got {}", *o.rate)};
  // --load rescales the arrival times last: a rate only matters where it sets how many requests come.
  if (o.rate && o.load && !(poisson && o.duration_s > 0.0)) {
    throw usage_error{"--rate: has no effect with --load (the arrival times are rescaled to the load); give one of them"};
  }
  const std::string rule_name = o.slo_rule.substr(0, o.slo_rule.find(':'));
  const bool alpha_rule = rule_name == "alpha" || rule_name == "alpha-deg1";
  if (!o.gpu.empty() && !o.load && !alpha_rule) {
    throw usage_error{"--gpu: only with --load or --slo-rule alpha:A / alpha-deg1:A (nothing else reads the profile)"};
  }
  if (o.gpus_given && !o.load && rule_name != "alpha") {
    throw usage_error{"--gpus: only with --load or --slo-rule alpha:A (nothing else uses the cluster size)"};
  }

  check_model_name("--model", o.model, o.model);
  std::vector<std::string> models;
  for (const auto& text : split(o.shapes, ',')) {
    shape_class c;
    c.shape = parse_shape(text, o.model);
    if (std::find(models.begin(), models.end(), c.shape.model) == models.end()) models.push_back(c.shape.model);
    g.shapes.push_back(std::move(c));
  }

  if (o.mix == "uniform") {
    g.mix = shape_mix::uniform;
  } else if (o.mix == "skewed") {
    g.mix = shape_mix::skewed;
  } else if (o.mix == "weighted") {
    g.mix = shape_mix::weighted;
    const auto w = split(o.weights, ',');
    if (o.weights.empty() || w.size() != g.shapes.size()) {
      throw usage_error{fmt::format("--weights: --mix weighted needs one weight per shape ({})", g.shapes.size())};
    }
    double largest = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      const double x = number("--weights", w[i]);
      if (x < 0.0) throw usage_error{fmt::format("--weights: weight {} of {} is {}: must be >= 0", i + 1, w.size(), w[i])};
      g.shapes[i].weight = x;
      largest = std::max(largest, x);  // not a sum: weights near the largest double would add up to infinity
    }
    if (!(largest > 0.0)) throw usage_error{"--weights: every weight is 0: no shape could be drawn"};
  } else {
    throw usage_error{fmt::format("--mix: '{}' is not uniform, skewed or weighted", o.mix)};
  }

  if (o.arrivals == "poisson") {
    const double rate = o.rate.value_or(0.2);  // TetriServe: 12 requests per minute
    if (o.requests == 0 && o.duration_s <= 0.0) g.requests = 300;
    g.arrivals = poisson_arrivals{rate, o.duration_s};
  } else if (o.arrivals.rfind("phases:", 0) == 0) {
    phased_arrivals p;
    for (const auto& phase : split(std::string_view(o.arrivals).substr(7), ',')) {
      const auto parts = split(phase, '@');
      if (parts.size() != 2) throw usage_error{fmt::format("--arrivals: phase '{}' is not DURATION@RATE", phase)};
      p.phases.push_back({number("--arrivals", parts[0]), number("--arrivals", parts[1])});
    }
    g.arrivals = std::move(p);
  } else if (o.arrivals.rfind("trace:", 0) == 0) {
    const std::string path = o.arrivals.substr(6);
    if (path.empty()) throw usage_error{"--arrivals: 'trace:' needs a file name (trace:FILE)"};
    trace_columns columns{o.trace_time, {}};
    if (o.steps.rfind("trace:", 0) == 0) {
      // trace:COLUMN or trace:COLUMN:N (N: the steps of a row whose cell is empty).
      columns.steps = o.steps.substr(6);
      if (const auto colon = columns.steps.rfind(':'); colon != std::string::npos) {
        columns.missing_steps = integer("--steps", std::string_view(columns.steps).substr(colon + 1));
        if (*columns.missing_steps < 1) throw usage_error{fmt::format("--steps: the steps of rows without them must be >= 1, got {}", *columns.missing_steps)};
        columns.steps.resize(colon);
      }
      if (columns.steps.empty()) throw usage_error{"--steps: 'trace:' needs the trace's column of step counts (trace:COLUMN[:N])"};
    }
    recorded_trace recorded = load_recorded_trace(path, columns).value_or_throw();
    if (recorded.filled_steps > 0 && !o.quiet) {
      const bool one = recorded.filled_steps == 1;
      std::fprintf(stderr, "paraflex-workload: note: %zu %s of %s %s no %s: %s %d steps (--steps trace:%s:%d)\n",
                   recorded.filled_steps, one ? "row" : "rows", printable(path).c_str(), one ? "has" : "have",
                   printable(columns.steps).c_str(), one ? "it has" : "they have", *columns.missing_steps,
                   printable(columns.steps).c_str(), *columns.missing_steps);
    }
    g.arrivals = trace_arrivals{std::move(recorded.times_s), o.rate.value_or(0.0), std::move(recorded.steps)};
  } else {
    throw usage_error{fmt::format("--arrivals: '{}' is not poisson, phases:D@R,... or trace:FILE", o.arrivals)};
  }
  const bool trace = o.arrivals.rfind("trace:", 0) == 0;
  if (!o.trace_time.empty() && !trace) throw usage_error{"--trace-time: only with --arrivals trace:FILE"};

  g.steps.clear();
  if (o.steps.rfind("trace:", 0) == 0) {
    if (!trace) throw usage_error{"--steps trace:COLUMN: only with --arrivals trace:FILE (a CSV trace with that column)"};
    g.steps.push_back(1);  // unused: every request has its recorded steps
  } else {
    for (const auto& s : split(o.steps, ',')) g.steps.push_back(integer("--steps", s));
  }

  if (o.labels == "resolution") {
    g.labels = class_labels::resolution;
  } else if (o.labels == "size") {
    g.labels = class_labels::size;
  } else {
    throw usage_error{fmt::format("--labels: '{}' is not resolution or size", o.labels)};
  }

  if (!o.priority_weights.empty()) {
    for (const auto& w : split(o.priority_weights, ',')) g.priority_weights.push_back(number("--priority-weights", w));
  }

  const auto colon = o.slo_rule.find(':');
  const std::string rule = o.slo_rule.substr(0, colon);
  const std::string arg = colon == std::string::npos ? std::string{} : o.slo_rule.substr(colon + 1);
  if (rule == "none" && arg.empty()) {
    g.slo = slo_rule::none();
  } else if (rule == "fixed") {
    if (colon != std::string::npos && arg.empty()) {
      throw usage_error{"--slo-rule: 'fixed:' needs a scale after the colon, e.g. fixed:1.5 (plain fixed: scale 1)"};
    }
    g.slo = slo_rule::fixed(arg.empty() ? 1.0 : number("--slo-rule", arg));
    const auto base = split(o.base_slo, ',');
    if (!o.base_slo.empty() && base.size() != g.shapes.size()) {
      throw usage_error{fmt::format("--base-slo: needs one value per shape ({})", g.shapes.size())};
    }
    for (std::size_t i = 0; i < g.shapes.size(); ++i) {
      if (!o.base_slo.empty()) {
        g.shapes[i].base_slo_s = number("--base-slo", base[i]);
        if (!(g.shapes[i].base_slo_s > 0.0)) {
          throw usage_error{fmt::format("--base-slo: value {} of {} is {}: must be > 0", i + 1, base.size(), base[i])};
        }
      } else if (const auto t = tetriserve_base_slo(g.shapes[i].shape)) {
        g.shapes[i].base_slo_s = *t;
      } else {
        throw usage_error{fmt::format("--base-slo: shape {} has no default base SLO (defaults exist for 256, 512, "
                                      "1024, 2048); give one value per shape",
                                      resolution_label(g.shapes[i].shape))};
      }
    }
  } else if (rule == "alpha" || rule == "alpha-deg1") {
    if (arg.empty()) throw usage_error{fmt::format("--slo-rule: {} needs a multiple, e.g. {}:3", rule, rule)};
    g.slo = slo_rule::latency_multiple(number("--slo-rule", arg),
                                       rule == "alpha" ? times.fastest(models) : times.at_degree_one(models));
  } else {
    throw usage_error{fmt::format("--slo-rule: '{}' is not none, fixed[:SCALE], alpha:A or alpha-deg1:A", o.slo_rule)};
  }

  if (o.load) g.load = load_target{*o.load, o.gpus, times.at_degree_one(models)};
  g.source = "paraflex-workload";
  return g;
}

/// The flags, for the output's comment line; the output path is left out so that the same workload
/// written to two files is the same bytes.
[[nodiscard]] std::string command_line(int argc, char** argv) {
  std::string s = tool;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-o" || a == "--output") {
      ++i;
      continue;
    }
    if (a.rfind("--output=", 0) == 0 || (a.rfind("-o", 0) == 0 && a.rfind("--", 0) != 0)) continue;
    s += " ";
    s += printable(a);  // control characters (a CR from a CRLF script, a newline) would break the comment line
  }
  return s;
}

/// A generator configuration error in the words of the flag that set the field.
[[nodiscard]] std::string generator_message(const input_error& e) {
  static const std::pair<const char*, const char*> flags[] = {
      {"requests", "--requests"}, {"rate", "--rate"},         {"duration_s", "--duration"},
      {"phases", "--arrivals"},   {"trace", "--arrivals"},    {"arrivals", "--arrivals"},
      {"shapes", "--shapes"},     {"steps", "--steps"},       {"slo", "--slo-rule"},
      {"load", "--load"},         {"gpus", "--gpus"},         {"priority_weights", "--priority-weights"}};
  for (const auto& [field, flag] : flags) {
    if (e.column == field) return std::string(flag) + ": " + e.message;
  }
  return e.what();
}

/// Removes the half-written output `path` after a failed write, so that it cannot pass for a workload;
/// only a regular file (never /dev/full or a pipe).
void remove_partial(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) std::filesystem::remove(path, ec);
}

/// Writes `w` as a workload CSV to `out`: the same bytes as one write_workload_csv call, but in blocks of
/// rows, so that a large workload is never held as text in memory as a whole, and `progress(rows)` can
/// say how far it is. Returns false when a write failed.
template <class Progress>
[[nodiscard]] bool write_in_blocks(std::ostream& out, workload& w, const std::string& comment, Progress&& progress) {
  constexpr std::size_t block = 1 << 16;
  workload part;
  part.source = w.source;
  std::ostringstream text;
  for (std::size_t begin = 0;; begin += block) {
    const std::size_t end = std::min(w.requests.size(), begin + block);
    part.requests.assign(std::make_move_iterator(w.requests.begin() + static_cast<std::ptrdiff_t>(begin)),
                         std::make_move_iterator(w.requests.begin() + static_cast<std::ptrdiff_t>(end)));
    text.str({});
    write_workload_csv(text, part, begin == 0 ? std::string_view(comment) : std::string_view{});
    std::string_view rows = text.view();
    if (begin > 0) rows.remove_prefix(rows.find('\n') + 1);  // the header row, already written with the first block
    out.write(rows.data(), static_cast<std::streamsize>(rows.size()));
    if (!out) return false;
    progress(end);
    if (end >= w.requests.size()) return true;
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App app{"Writes a workload CSV (formats.md §1): arrivals x shape mix x steps x SLO rule.", tool};
  const auto& non_empty = paraflex_bench::non_empty;  // `--flag "$UNSET"` is a mistake, not the default
  app.add_option("--model", o.model, "model key for shapes without a MODEL: prefix")->capture_default_str()->check(non_empty);
  app.add_option("--shapes", o.shapes, "comma list of [MODEL:]SIZE | HxW | HxWxFRAMES")->capture_default_str()->check(non_empty);
  app.add_option("--mix", o.mix, "uniform | skewed (p ~ exp(tokens/max)) | weighted")->capture_default_str()->check(non_empty);
  app.add_option("--weights", o.weights, "weights per shape for --mix weighted, comma list")->check(non_empty);
  app.add_option("--arrivals", o.arrivals, "poisson | phases:DUR@RATE,... | trace:FILE")->capture_default_str()->check(non_empty);
  app.add_option("--rate", o.rate, "poisson: requests/s (default 0.2); trace: rescale to this mean rate")->check(non_empty);
  auto* requests = app.add_option("--requests", o.requests, "number of requests, >= 1 (default: poisson 300, trace all, phases one pass)")
                       ->transform(paraflex_bench::uint64_digits);
  auto* duration = app.add_option("--duration", o.duration_s, "poisson: stop at this many seconds")->check(non_empty);
  app.add_option("--steps", o.steps, "denoising steps, or a comma list drawn uniformly, or trace:COLUMN[:N] (each request's steps from that column of a CSV --arrivals trace; N for empty cells)")
      ->capture_default_str()
      ->check(non_empty);
  app.add_option("--trace-time", o.trace_time,
                 "the time column of a CSV --arrivals trace: date-times or seconds (default: TIMESTAMP, arrival_s, gmt_create or arrival_time, any case)")
      ->check(non_empty);
  app.add_option("--slo-rule", o.slo_rule,
                 "none | fixed[:SCALE] (base SLO per shape x SCALE) | alpha:A (A x latency at the fastest degree "
                 "<= --gpus) | alpha-deg1:A (A x latency on 1 GPU)")
      ->capture_default_str()
      ->check(non_empty);
  app.add_option("--base-slo", o.base_slo, "fixed rule: base SLO seconds per shape (default: TetriServe's 1.5,2,3,5)")->check(non_empty);
  app.add_option("--labels", o.labels, "class labels: resolution | size (S/M/L)")->capture_default_str()->check(non_empty);
  app.add_option("--priority-weights", o.priority_weights, "draw priority i with weight i (comma list)")->check(non_empty);
#ifdef PARAFLEX_DATA_DIR
  o.profile = PARAFLEX_DATA_DIR "/profiles/step_latency.csv";
#endif
  app.add_option("--profile", o.profile, "step-latency profile CSV (for --load and alpha SLOs)")->capture_default_str()->check(non_empty);
  app.add_option("--gpu", o.gpu, "GPU type of the profile rows, with --load or alpha SLOs (default: the only one for the models)")
      ->check(non_empty);
  auto* gpus = app.add_option("--gpus", o.gpus, "cluster size, with --load or --slo-rule alpha:A")
                   ->capture_default_str()
                   ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 20));
  app.add_option("--load", o.load, "rescale arrivals to this offered load: sum(steps x step time on 1 GPU) / (gpus x span)")->check(non_empty);
  app.add_option("--seed", o.seed, "random seed")->capture_default_str()->transform(paraflex_bench::uint64_digits);
  app.add_option("-o,--output", o.output, "output file, - for stdout")->capture_default_str()->check(non_empty);
  app.add_flag("--quiet", o.quiet, "no notes, progress or summary on stderr (errors only)");

  const auto status = paraflex_bench::parse_command_line(app, argc, argv, [](const char* message) {
    std::cerr << tool << ": error: " << printable(message) << "\n";
  });
  if (status) return *status;
  o.requests_given = requests->count() > 0;
  o.gpus_given = gpus->count() > 0;
  o.duration_given = duration->count() > 0;

  const std::string shown_output = o.output == "-" ? std::string("stdout") : printable(o.output);
  bool created = false;  // a file of ours that a failure must not leave behind half-written
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    // Writing over the profile or the arrival trace would destroy an input (it is read first).
    if (o.output != "-") {
      const std::string trace_file = o.arrivals.rfind("trace:", 0) == 0 ? o.arrivals.substr(6) : std::string();
      if (auto why = paraflex_bench::output_clash({"--output", o.output}, {{"--profile", o.profile}, {"--arrivals", trace_file}}); !why.empty()) {
        throw usage_error{std::move(why)};
      }
    }
    step_times times(o.profile, o.gpu, o.gpus);
    const workload_generator g = build(o, times);
    workload w = generate_workload(g).value_or_throw();
    const std::size_t n = w.requests.size();
    if (!o.quiet) {
      for (const auto& note : times.notes()) std::cerr << tool << ": note: " << note << "\n";
      if (elapsed() >= 2.0) std::cerr << fmt::format("{}: generated {} requests in {:.1f} s, writing\n", tool, n, elapsed());
    }
    // Long runs only, at most one line every 2 s.
    double next_line_s = std::max(2.0, elapsed() + 2.0 * static_cast<double>(elapsed() >= 2.0));
    const auto progress = [&](std::size_t rows) {
      if (o.quiet || rows == n) return;
      const double s = elapsed();
      if (s < next_line_s) return;
      next_line_s = s + 2.0;
      std::cerr << fmt::format("{}: wrote {}/{} requests, {:.1f} s elapsed\n", tool, rows, n, s);
    };
    const std::string comment = command_line(argc, argv);
    if (o.output == "-") {
      if (!write_in_blocks(std::cout, w, comment, progress) || !std::cout.flush()) throw usage_error{"cannot write to stdout"};
    } else {
      std::ofstream out(o.output, std::ios::binary);
      if (!out) throw usage_error{fmt::format("--output: cannot open '{}' for writing", shown_output)};
      created = true;
      if (!write_in_blocks(out, w, comment, progress) || !out.flush()) {
        throw usage_error{fmt::format("--output: cannot write '{}' (disk full?)", shown_output)};
      }
      out.close();
      if (!out) throw usage_error{fmt::format("--output: cannot write '{}' (disk full?)", shown_output)};
      created = false;
    }
    if (!o.quiet) std::cerr << tool << ": wrote " << n << " requests to " << shown_output << "\n";
    return 0;
  } catch (const usage_error& e) {
    std::cerr << tool << ": error: " << printable(e.message) << "\n";
  } catch (const input_exception& e) {
    const auto& err = e.error();
    std::cerr << tool << ": error: " << (err.file == "<generator>" ? printable(generator_message(err)) : err.what()) << "\n";
  } catch (const std::exception& e) {
    std::cerr << tool << ": internal error: " << e.what() << "\n";
    if (created) remove_partial(o.output);
    return 1;
  }
  if (created) remove_partial(o.output);
  return 2;
}
