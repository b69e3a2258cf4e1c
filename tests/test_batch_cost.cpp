// Tests of the profile's optional `batch` column and of profile_cost_model as a BatchCostModel.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/sim/simulate.hpp"
#include "paraflex/sim/workload_csv.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;
using Catch::Matchers::Contains;

namespace {

const std::string real_profile = PARAFLEX_DATA_DIR "/profiles/step_latency.csv";
const std::string batch_profile = PARAFLEX_DATA_DIR "/profiles/tiny_dit_cpu_batch.csv";

result<profile_table> parse(const std::string& text) {
  std::istringstream in(text);
  return read_profile_csv(in, "b.csv");
}

profile_table table_of(const std::string& text) {
  auto r = parse(text);
  if (!r) FAIL(r.error().what());
  return std::move(r).value();
}

input_error error_of(const std::string& text) {
  auto r = parse(text);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// `text` with a `batch` column appended to the header and `value` to every data row.
std::string with_batch_column(const std::string& text, const std::string& value) {
  std::istringstream in(text);
  std::string line, out;
  bool header = true;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') {
      out += line + "\n";
      continue;
    }
    out += line + (header ? ",batch" : "," + value) + "\n";
    header = false;
  }
  return out;
}

request_shape img(int side, const std::string& model = "m") { return request_shape{model, side, side, 1}; }

// t = 0.01 + 1e-5 T at degree 1, exactly: the fit recovers c0 = 0.01 and c1 = 1e-5.
const std::string linear_profile =
    "model,gpu,height,width,frames,degree,step_s,batch\n"
    "m,g,256,256,1,1,0.01256,1\n"    // T = 256
    "m,g,512,512,1,1,0.02024,1\n"    // T = 1024
    "m,g,1024,1024,1,1,0.05096,1\n"  // T = 4096
    "m,g,2048,2048,1,1,0.17384,1\n";  // T = 16384

}  // namespace

TEST_CASE("a batch column of ones, or left blank, prices every single step as the file without it", "[cost][batch]") {
  const std::string text = slurp(real_profile);
  const profile_cost_model plain(table_of(text), "l20-inferred");
  const profile_cost_model ones(table_of(with_batch_column(text, "1")), "l20-inferred");
  const profile_cost_model blank(table_of(with_batch_column(text, "")), "l20-inferred");
  for (const char* model : {"flux-dev", "sd3-medium"}) {
    for (int side : {256, 512, 768, 1024, 1536, 2048, 4096}) {
      for (int k : {1, 2, 3, 4, 8, 16}) {
        const request_shape s = img(side, model);
        CHECK(ones.step_seconds(s, k) == plain.step_seconds(s, k));
        CHECK(blank.step_seconds(s, k) == plain.step_seconds(s, k));
      }
    }
  }
}

TEST_CASE("a bad batch field is rejected with its file, line and column", "[cost][batch]") {
  const std::string head = "model,gpu,height,width,frames,degree,step_s,batch\n";
  const std::string one = "m,g,512,512,1,1,0.1,1\n";
  SECTION("zero") {
    const auto e = error_of(head + one + "m,g,512,512,1,1,0.15,0\n");
    CHECK(e.file == "b.csv");
    CHECK(e.line == 3);
    CHECK(e.column == "batch");
    CHECK_THAT(e.message, Contains("> 0"));
  }
  SECTION("not a number") {
    const auto e = error_of(head + one + "m,g,512,512,1,1,0.15,two\n");
    CHECK(e.line == 3);
    CHECK(e.column == "batch");
  }
  SECTION("a batch row without the batch-1 row of its shape and degree") {
    const auto e = error_of(head + one + "m,g,512,512,1,2,0.15,4\n");
    CHECK(e.line == 3);
    CHECK(e.column == "batch");
    CHECK_THAT(e.message, Contains("batch 4") && Contains("degree 2") && Contains("no batch-1 row"));
  }
  SECTION("the same batch twice") {
    const auto e = error_of(head + one + "m,g,512,512,1,1,0.15,4\nm,g,512,512,1,1,0.16,4\n");
    CHECK(e.line == 4);
    CHECK_THAT(e.message, Contains("duplicate") && Contains("batch 4") && Contains("line 3"));
  }
}

TEST_CASE("batch rows may come before their batch-1 row, and several batches of one shape are distinct rows", "[cost][batch]") {
  const auto t = table_of("model,gpu,height,width,frames,degree,step_s,batch\nm,g,512,512,1,1,0.3,4\nm,g,512,512,1,1,0.1,1\nm,g,512,512,1,1,0.2,2\n");
  CHECK(t.rows.size() == 3);
  CHECK(t.rows[0].batch == 4);
  CHECK_FALSE(validate_profile(t).has_value());
}

TEST_CASE("validate_profile rejects a batch row built in code without its batch-1 row", "[cost][batch]") {
  profile_table t;
  t.source = "<memory>";
  profile_row r;
  r.shape = img(512);
  r.gpu = "g";
  r.step_s = 0.2;
  r.batch = 2;
  r.line = 7;
  t.rows.push_back(r);
  auto e = validate_profile(t);
  REQUIRE(e.has_value());
  CHECK(e->line == 7);
  CHECK(e->column == "batch");
  t.rows.back().batch = 0;
  e = validate_profile(t);
  REQUIRE(e.has_value());
  CHECK(e->column == "batch");
  CHECK_THAT(e->message, Contains("> 0"));
}

TEST_CASE("measured batches are returned exactly, interpolated linearly between, and continued beyond with a note", "[cost][batch]") {
  const auto t = table_of(
      "model,gpu,height,width,frames,degree,step_s,batch\n"
      "m,g,512,512,1,1,0.10,1\n"
      "m,g,512,512,1,1,0.12,2\n"
      "m,g,512,512,1,1,0.20,4\n"
      "m,g,1024,1024,1,1,0.30,1\n");
  const profile_cost_model cm(t, "g");
  const request_shape s = img(512);
  CHECK(cm.batch_step_seconds(s, 1, 1) == cm.step_seconds(s, 1));
  CHECK(cm.batch_step_seconds(s, 1, 2) == 0.12);
  CHECK(cm.batch_estimate(s, 1, 4).source == provenance::exact);
  CHECK(cm.batch_step_seconds(s, 1, 3) == Approx(0.16));
  CHECK(cm.batch_estimate(s, 1, 3).source == provenance::fitted_interpolated);
  CHECK(cm.extrapolation_notes().empty());
  // beyond 4: the last member's cost (0.04 s) per extra member
  CHECK(cm.batch_step_seconds(s, 1, 8) == Approx(0.36));
  CHECK(cm.batch_estimate(s, 1, 6).source == provenance::extrapolated);
  const auto notes = cm.extrapolation_notes();
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Contains("m 512x512 at degree 1 on g, batch 8") && Contains("batch above the profiled 1..4") &&
                           Contains("1 more (shape, degree, batch) case for the same reason"));
}

TEST_CASE("without batch rows a batch is estimated from the fit: fixed cost once, token terms once per member", "[cost][batch]") {
  const profile_cost_model cm(table_of(linear_profile), "g");
  const fitted_step_model& fit = *cm.fit_for("m");
  REQUIRE(fit.coefficient(step_feature::fixed) == Approx(0.01).epsilon(1e-6));
  REQUIRE(fit.coefficient(step_feature::linear) == Approx(1e-5).epsilon(1e-6));
  for (int side : {256, 512, 1024}) {
    const request_shape s = img(side);
    const double tokens = latent_tokens(s);
    for (int b : {2, 4, 8}) {
      INFO("side " << side << " batch " << b);
      CHECK(cm.batch_step_seconds(s, 1, b) == Approx(0.01 + b * 1e-5 * tokens).epsilon(1e-6));
      CHECK(cm.batch_estimate(s, 1, b).source == provenance::extrapolated);
    }
  }
  // b = 1 agrees with step_seconds wherever the step comes from (exact row or fit)
  CHECK(cm.batch_step_seconds(img(512), 1, 1) == cm.step_seconds(img(512), 1));
  CHECK(cm.batch_step_seconds(img(640), 1, 1) == cm.step_seconds(img(640), 1));
  const auto notes = cm.extrapolation_notes();
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Contains("m 256x256 at degree 1 on g, batch 2: estimated from the token-count fit") &&
                           Contains("8 more (shape, degree, batch) cases"));
}

TEST_CASE("a batch is never cheaper than one of its members and grows with the batch", "[cost][batch]") {
  const profile_cost_model cm(table_of(slurp(real_profile)), "l20-inferred");
  for (const char* model : {"flux-dev", "sd3-medium", "cogvideox"}) {
    for (int side : {256, 512, 1024, 2048}) {
      for (int k : {1, 2, 4, 8}) {
        const request_shape s = img(side, model);
        double prev = cm.step_seconds(s, k);
        for (int b = 2; b <= 8; ++b) {
          const double t = cm.batch_step_seconds(s, k, b);
          INFO(model << " " << side << " k=" << k << " b=" << b);
          CHECK(t >= prev);
          CHECK(t <= b * cm.step_seconds(s, k) * (1 + 1e-12));
          prev = t;
        }
      }
    }
  }
}

TEST_CASE("the shipped batched profile is valid and its batches are measured rows", "[cost][batch]") {
  auto t = load_profile_csv(batch_profile);
  if (!t) FAIL(t.error().what());
  const profile_cost_model cm(t.value(), "cpu-1t");
  int batch_rows = 0;
  for (const auto& r : t.value().rows) {
    if (r.batch == 1) continue;
    ++batch_rows;
    CHECK(cm.batch_estimate(r.shape, r.degree, r.batch).source == provenance::exact);
    CHECK(cm.batch_step_seconds(r.shape, r.degree, r.batch) == r.step_s);
  }
  CHECK(batch_rows >= 12);
  CHECK(cm.extrapolation_notes().empty());
}

TEST_CASE("leave_one_out predicts single steps only and keeps batch rows out of the degree fit", "[cost][batch]") {
  const std::string plain =
      "model,gpu,height,width,frames,degree,step_s\n"
      "m,g,256,256,1,1,0.012\nm,g,512,512,1,1,0.021\nm,g,1024,1024,1,1,0.05\nm,g,512,512,1,2,0.013\n";
  const std::string batched = with_batch_column(plain, "1") + "m,g,512,512,1,1,0.5,8\nm,g,256,256,1,1,0.2,4\n";
  const auto a = leave_one_out(table_of(plain));
  const auto b = leave_one_out(table_of(batched));
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(b[0].predicted == a[0].predicted);
  CHECK(b[0].relative_errors == a[0].relative_errors);
}

TEST_CASE("the runtime's batch tables are the cost model's batched figures in microseconds", "[cost][batch]") {
  const profile_cost_model cm(table_of(linear_profile), "g");
  const shape_costs c = make_shape_costs(cm, img(512), 2, 4);
  REQUIRE(c.max_batch == 4);
  for (int k : {1, 2}) {
    for (int b = 2; b <= 4; ++b) {
      CHECK(c.batch_step_time(k, b) == *to_ticks(cm.batch_step_seconds(img(512), k, b)));
    }
    CHECK(c.batch_step_time(k, 1) == c.step[static_cast<std::size_t>(k)]);
  }
}

TEST_CASE("priced on first use, a batch table exists only once read, holds the same figures and asks the cost model only for what is read", "[cost][batch]") {
  const profile_cost_model eager_model(table_of(linear_profile), "g"), lazy_model(table_of(linear_profile), "g");
  const shape_costs eager = make_shape_costs(eager_model, img(512), 2, 4);
  const shape_costs lazy = make_shape_costs(lazy_model, img(512), 2, 4, batch_pricing::on_first_use);
  REQUIRE(lazy.max_batch == 4);
  const auto batch_notes = [&] {
    std::vector<std::string> out;
    for (const auto& line : lazy_model.extrapolation_notes()) {
      if (line.find(", batch ") != std::string::npos) out.push_back(line);
    }
    return out;
  };
  CHECK(batch_notes().empty());  // nothing priced yet (single steps at degree 2 are noted: no such rows)
  CHECK(lazy.batch_step.empty());  // nor allocated: a run that never batches keeps no table per shape
  CHECK(eager.batch_step.size() == 3 * eager.step.size());
  CHECK(lazy.batch_step_time(2, 3) == eager.batch_step_time(2, 3));
  CHECK(lazy.batch_step.size() == 3 * lazy.step.size());
  const auto notes = batch_notes();
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Contains("m 512x512 at degree 2 on g, batch 3: estimated from the token-count fit"));
  CHECK_THAT(notes[0], !Contains("more (shape, degree, batch)"));  // only the one read
  for (int k : {1, 2}) {
    for (int b = 1; b <= 4; ++b) CHECK(lazy.batch_step_time(k, b) == eager.batch_step_time(k, b));
  }
  CHECK_THROWS_AS(lazy.batch_step_time(1, 5), policy_error);
}

namespace {
// n identical images (id prefix + index), one every `gap` us, each with `slo` us.
workload identical_images(int n, const request_shape& shape, const char* prefix, tick gap, tick slo) {
  workload w;
  w.source = "<memory>";
  for (int i = 0; i < n; ++i) {
    request_spec r;
    r.id = prefix + std::to_string(i);
    r.shape = shape;
    r.steps = 20;
    r.arrival = i * gap;
    r.slo = slo;
    w.requests.push_back(r);
  }
  return w;
}

// A run of `spec` on two devices, with the number of batched tasks it ran.
struct batch_run {
  run_metrics metrics;
  int batched_tasks = 0;
};
batch_run run_counting_batches(const workload& w, const cluster& c, const profile_cost_model& cm, const char* spec) {
  batch_run out;
  auto policy = paraflex_test::builtin_policies(c.gpus).make(spec).value_or_throw();
  out.metrics = simulate(w, c, cm, policy, spec, {}, [&](auto& sched) {
    sched.on_task_record([&](const task_record& t) { out.batched_tasks += t.batch > 1; });
  });
  return out;
}
}  // namespace

TEST_CASE("simulate() runs round-based batches on the profile cost model, and max_batch=1 runs none", "[cost][batch][sim]") {
  const profile_cost_model cm(table_of(slurp(real_profile)), "l20-inferred");
  // Small identical images, 1.5x what two GPUs carry one by one.
  const workload w = identical_images(120, img(256, "flux-dev"), "s", 730'000, 12'000'000);
  const cluster two{2, 2, "l20-inferred"};
  const batch_run plain = run_counting_batches(w, two, cm, "round-based"), batching = run_counting_batches(w, two, cm, "round-based:max_batch=8");
  const int batched_tasks[2] = {plain.batched_tasks, batching.batched_tasks};
  const run_metrics m[2] = {plain.metrics, batching.metrics};
  CHECK(batched_tasks[0] == 0);
  CHECK(batched_tasks[1] > 0);
  CHECK(m[1].completed == 120);
  REQUIRE(m[0].slo_attainment.has_value());
  REQUIRE(m[1].slo_attainment.has_value());
  CHECK(*m[1].slo_attainment > *m[0].slo_attainment);
  CHECK(m[1].gpu_busy_s < m[0].gpu_busy_s);
}

TEST_CASE("round-based with batching runs the bundled default workload: a batch leader is never launched twice in one call", "[cost][batch][sim][round-based]") {
  // Found when profile_cost_model began pricing batches: a planned request that led a batch stayed
  // pending and was placed again in the same call ("is not waiting (or is assigned twice)").
  auto table = load_profile_csv(real_profile);
  if (!table) FAIL(table.error().what());
  const profile_cost_model cm(table.value(), "l20-inferred");
  auto w = load_workload_csv(PARAFLEX_DATA_DIR "/default_workload.csv", cm.models());
  if (!w) FAIL(w.error().what());
  for (const char* spec : {"round-based:max_batch=8", "round-based:max_batch=2:mid_round=admit"}) {
    INFO(spec);
    auto policy = paraflex_test::builtin_policies(8).make(spec).value_or_throw();
    int batched = 0;
    run_metrics m;
    REQUIRE_NOTHROW(m = simulate(w.value(), cluster{8, 8, "l20-inferred"}, cm, policy, spec, {}, [&](auto& sched) {
      sched.on_task_record([&](const task_record& t) { batched += t.batch > 1; });
    }));
    CHECK(m.completed + m.dropped == w.value().requests.size());
    CHECK(batched > 0);
  }
}

TEST_CASE("a run whose policy never batches prices no batch, so the cost model notes no batch estimate", "[cost][batch][sim]") {
  const profile_cost_model cm(table_of(slurp(real_profile)), "l20-inferred");
  const workload w = identical_images(40, img(256, "flux-dev"), "s", 730'000, 12'000'000);
  const cluster two{2, 2, "l20-inferred"};
  const auto batch_notes = [&] {
    int n = 0;
    for (const auto& line : cm.extrapolation_notes()) n += line.find(", batch ") != std::string::npos;
    return n;
  };
  cm.clear_extrapolation_notes();
  for (const char* spec : {"slo-aware", "round-based", "edf-best-fit"}) (void)run_counting_batches(w, two, cm, spec);
  CHECK(batch_notes() == 0);
  const batch_run batching = run_counting_batches(w, two, cm, "slo-aware:max_batch=8");
  CHECK(batching.batched_tasks > 0);
  CHECK(batch_notes() == 1);  // the batches it priced were estimated from the fit, and it says so
}

TEST_CASE("simulate() runs slo-aware batches on the measured tiny DiT profile: less GPU time, no fewer on time", "[cost][batch][sim][slo-aware]") {
  auto table = load_profile_csv(batch_profile);
  if (!table) FAIL(table.error().what());
  const profile_cost_model cm(table.value(), "cpu-1t");
  // 128 px images at 1.5x what two cores carry one by one (9.3 ms a step alone).
  const workload w = identical_images(300, img(128, "tiny-dit"), "t", 62'000, 800'000);
  const cluster two{2, 2, "cpu-1t"};
  const batch_run plain = run_counting_batches(w, two, cm, "slo-aware"), batching = run_counting_batches(w, two, cm, "slo-aware:max_batch=8");
  const int batched_tasks[2] = {plain.batched_tasks, batching.batched_tasks};
  const run_metrics m[2] = {plain.metrics, batching.metrics};
  INFO("attainment " << m[0].slo_attainment.value_or(-1) << " -> " << m[1].slo_attainment.value_or(-1) << ", GPU busy "
                     << m[0].gpu_busy_s << " -> " << m[1].gpu_busy_s << ", completed " << m[0].completed << " -> " << m[1].completed);
  CHECK(batched_tasks[0] == 0);
  CHECK(batched_tasks[1] > 0);
  REQUIRE(m[0].slo_attainment.has_value());
  REQUIRE(m[1].slo_attainment.has_value());
  CHECK(*m[1].slo_attainment > *m[0].slo_attainment);
  CHECK(m[1].completed >= m[0].completed);
  CHECK(m[1].gpu_busy_s < m[0].gpu_busy_s);
}

TEST_CASE("slo-aware with batching runs the bundled default workload: every request ends once, no batch refused", "[cost][batch][sim][slo-aware]") {
  auto table = load_profile_csv(real_profile);
  if (!table) FAIL(table.error().what());
  const profile_cost_model cm(table.value(), "l20-inferred");
  auto w = load_workload_csv(PARAFLEX_DATA_DIR "/default_workload.csv", cm.models());
  if (!w) FAIL(w.error().what());
  for (const char* spec : {"slo-aware:max_batch=8", "slo-aware:max_batch=2:chunk=3:hold=0", "slo-aware:max_batch=4:admission=strict:batch_margin=0"}) {
    INFO(spec);
    auto policy = paraflex_test::builtin_policies(8).make(spec).value_or_throw();
    int batched = 0;
    run_metrics m;
    REQUIRE_NOTHROW(m = simulate(w.value(), cluster{8, 8, "l20-inferred"}, cm, policy, spec, {}, [&](auto& sched) {
      sched.on_task_record([&](const task_record& t) { batched += t.batch > 1; });
    }));
    CHECK(m.completed + m.dropped == w.value().requests.size());
    CHECK(batched > 0);
  }
}
