// paraflex-workload - writes workload CSVs (formats.md §1) from the generators in sim/generators.hpp.
//
//   paraflex-workload --model flux-dev --shapes 256,512,1024,2048 --mix skewed --arrivals poisson
//                     --rate 0.2 --requests 300 --steps 50 --slo-rule alpha:3 --gpus 8 --load 0.9
//                     --seed 1 -o out.csv
//   paraflex-workload --arrivals trace:bench/data/traces/AzureLLMInferenceTrace_conv.csv --requests 500 ...
//
// The profile (--profile, default: the repository's step_latency.csv) is read only when a step time is
// needed: for --load and for the alpha SLO rules. Output is byte-identical for the same flags.
// Exit status: 0 on success, 2 on bad usage or bad input ("paraflex-workload: error: ..." on stderr).
#include <algorithm>
#include <cstdlib>
#include <exception>
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
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/sim/generators.hpp"
#include "paraflex/sim/workload_csv.hpp"
#include "cli_parse.hpp"

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

/// "1024" (square), "768x1360" (height x width), "720x1280x129" (video frames), each optionally
/// prefixed "model:" to mix models.
[[nodiscard]] request_shape parse_shape(std::string_view text, const std::string& default_model) {
  request_shape s;
  s.model = default_model;
  if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    s.model = std::string(trim(text.substr(0, colon)));
    text = text.substr(colon + 1);
  }
  const auto dims = split(text, 'x');
  if (dims.size() > 3 || s.model.empty()) {
    throw usage_error{fmt::format("--shapes: '{}' is not [MODEL:]SIZE, HEIGHTxWIDTH or HEIGHTxWIDTHxFRAMES", text)};
  }
  s.height = integer("--shapes", dims[0]);
  s.width = dims.size() > 1 ? integer("--shapes", dims[1]) : s.height;
  s.frames = dims.size() > 2 ? integer("--shapes", dims[2]) : 1;
  if (s.height <= 0 || s.width <= 0 || s.frames <= 0) {
    throw usage_error{fmt::format("--shapes: '{}': sizes and frames must be > 0", text)};
  }
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
  if (o.duration_s != 0.0 && !poisson) throw usage_error{"--duration: only for --arrivals poisson"};
  if (o.rate && !poisson && o.arrivals.rfind("trace:", 0) != 0) throw usage_error{"--rate: not for --arrivals phases"};
  if (!o.weights.empty() && o.mix != "weighted") throw usage_error{"--weights: only with --mix weighted"};
  if (!o.base_slo.empty() && o.slo_rule.rfind("fixed", 0) != 0) throw usage_error{"--base-slo: only with --slo-rule fixed"};

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
    for (std::size_t i = 0; i < w.size(); ++i) g.shapes[i].weight = number("--weights", w[i]);
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
    g.arrivals = trace_arrivals{load_arrival_trace(path).value_or_throw(), o.rate.value_or(0.0)};
  } else {
    throw usage_error{fmt::format("--arrivals: '{}' is not poisson, phases:D@R,... or trace:FILE", o.arrivals)};
  }

  g.steps.clear();
  for (const auto& s : split(o.steps, ',')) g.steps.push_back(integer("--steps", s));

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
    g.slo = slo_rule::fixed(arg.empty() ? 1.0 : number("--slo-rule", arg));
    const auto base = split(o.base_slo, ',');
    if (!o.base_slo.empty() && base.size() != g.shapes.size()) {
      throw usage_error{fmt::format("--base-slo: needs one value per shape ({})", g.shapes.size())};
    }
    for (std::size_t i = 0; i < g.shapes.size(); ++i) {
      if (!o.base_slo.empty()) {
        g.shapes[i].base_slo_s = number("--base-slo", base[i]);
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
    s += a;
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

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App app{"Writes a workload CSV (formats.md §1): arrivals x shape mix x steps x SLO rule.", tool};
  app.add_option("--model", o.model, "model key for shapes without a MODEL: prefix")->capture_default_str();
  app.add_option("--shapes", o.shapes, "comma list of [MODEL:]SIZE | HxW | HxWxFRAMES")->capture_default_str();
  app.add_option("--mix", o.mix, "uniform | skewed (p ~ exp(tokens/max)) | weighted")->capture_default_str();
  app.add_option("--weights", o.weights, "weights per shape for --mix weighted, comma list");
  app.add_option("--arrivals", o.arrivals, "poisson | phases:DUR@RATE,... | trace:FILE")->capture_default_str();
  app.add_option("--rate", o.rate, "poisson: requests/s (default 0.2); trace: rescale to this mean rate");
  app.add_option("--requests", o.requests, "number of requests (poisson default 300; trace default all)");
  app.add_option("--duration", o.duration_s, "poisson: stop at this many seconds");
  app.add_option("--steps", o.steps, "denoising steps, or a comma list drawn uniformly")->capture_default_str();
  app.add_option("--slo-rule", o.slo_rule,
                 "none | fixed[:SCALE] (base SLO per shape x SCALE) | alpha:A (A x latency at the fastest degree "
                 "<= --gpus) | alpha-deg1:A (A x latency on 1 GPU)")
      ->capture_default_str();
  app.add_option("--base-slo", o.base_slo, "fixed rule: base SLO seconds per shape (default: TetriServe's 1.5,2,3,5)");
  app.add_option("--labels", o.labels, "class labels: resolution | size (S/M/L)")->capture_default_str();
  app.add_option("--priority-weights", o.priority_weights, "draw priority i with weight i (comma list)");
#ifdef PARAFLEX_DATA_DIR
  o.profile = PARAFLEX_DATA_DIR "/profiles/step_latency.csv";
#endif
  app.add_option("--profile", o.profile, "step-latency profile CSV (for --load and alpha SLOs)")->capture_default_str();
  app.add_option("--gpu", o.gpu, "GPU type of the profile rows (default: the only one for the models)");
  app.add_option("--gpus", o.gpus, "cluster size for --load and the fastest degree")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--load", o.load, "rescale arrivals to this offered load: sum(steps x step time on 1 GPU) / (gpus x span)");
  app.add_option("--seed", o.seed, "random seed")->capture_default_str()->check(paraflex_bench::uint64_digits);
  app.add_option("-o,--output", o.output, "output file, - for stdout")->capture_default_str();

  const auto status = paraflex_bench::parse_command_line(app, argc, argv, [](const char* message) {
    std::cerr << tool << ": error: " << message << "\n";
  });
  if (status) return *status;

  try {
    step_times times(o.profile, o.gpu, o.gpus);
    const workload_generator g = build(o, times);
    const workload w = generate_workload(g).value_or_throw();
    for (const auto& note : times.notes()) std::cerr << tool << ": note: " << note << "\n";

    std::ostringstream text;
    write_workload_csv(text, w, command_line(argc, argv));
    if (o.output == "-") {
      std::cout << text.str() << std::flush;
      if (!std::cout) throw usage_error{"cannot write to stdout"};
    } else {
      std::ofstream out(o.output, std::ios::binary);
      if (!out) throw usage_error{fmt::format("--output: cannot open '{}' for writing", o.output)};
      out << text.str();
      out.flush();
      if (!out) throw usage_error{fmt::format("--output: cannot write '{}'", o.output)};
    }
    std::cerr << tool << ": wrote " << w.requests.size() << " requests to " << (o.output == "-" ? "stdout" : o.output)
              << "\n";
    return 0;
  } catch (const usage_error& e) {
    std::cerr << tool << ": error: " << e.message << "\n";
    return 2;
  } catch (const input_exception& e) {
    const auto& err = e.error();
    std::cerr << tool << ": error: " << (err.file == "<generator>" ? generator_message(err) : err.what()) << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << tool << ": internal error: " << e.what() << "\n";
    return 1;
  }
}
