// Workload traces (formats.md §1, §5): the CSV reader's defaults and every rejection, the writer's round
// trip, the deterministic generators, arrival-trace replay from the repository's data, load rescaling.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "paraflex/core/utf8.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/sim/generators.hpp"
#include "paraflex/sim/workload_csv.hpp"

using namespace paraflex;

namespace {

result<workload> read(const std::string& text, const std::vector<std::string>& known = {}) {
  std::istringstream in(text);
  return read_workload_csv(in, "w.csv", known);
}

/// The error of a read that must fail.
input_error fails(const std::string& text, const std::vector<std::string>& known = {}) {
  auto r = read(text, known);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().file == "w.csv");
  return r.error();
}

const std::string header = "arrival_s,model,height,width,steps\n";

/// Seconds per step for tests: linear in tokens, so shapes differ.
double toy_step(const request_shape& s) { return 1e-4 * latent_tokens(s); }

workload_generator toy_generator() {
  workload_generator g;
  g.seed = 42;
  g.requests = 200;
  g.arrivals = poisson_arrivals{0.5, 0.0};
  g.shapes = tetriserve_shapes("flux-dev");
  return g;
}

bool same_requests(const workload& a, const workload& b) {
  if (a.requests.size() != b.requests.size()) return false;
  for (std::size_t i = 0; i < a.requests.size(); ++i) {
    const auto& x = a.requests[i];
    const auto& y = b.requests[i];
    if (x.id != y.id || x.arrival != y.arrival || x.shape != y.shape || x.steps != y.steps || x.slo != y.slo ||
        x.priority != y.priority || x.class_label != y.class_label) {
      return false;
    }
  }
  return true;
}

void check_trace(const std::vector<double>& t) {
  REQUIRE_FALSE(t.empty());
  CHECK(t.front() == 0.0);
  CHECK(std::is_sorted(t.begin(), t.end()));
  CHECK(std::all_of(t.begin(), t.end(), [](double x) { return x >= 0.0 && std::isfinite(x); }));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Reader: what it accepts.

TEST_CASE("a workload row with only the required columns gets the documented defaults", "[workload][csv]") {
  auto w = read(header + "1.5,flux-dev,1024,768,50\n").value_or_throw();
  REQUIRE(w.requests.size() == 1);
  const auto& r = w.requests[0];
  CHECK(w.source == "w.csv");
  CHECK(r.id == "2");  // the 1-based line number of the row
  CHECK(r.arrival == 1'500'000);
  CHECK(r.shape == request_shape{"flux-dev", 1024, 768, 1});
  CHECK(r.steps == 50);
  CHECK_FALSE(r.has_deadline());
  CHECK(r.priority == 0);
  CHECK(r.class_label.empty());
}

TEST_CASE("default request ids are physical line numbers, counting comments and blank lines", "[workload][csv]") {
  auto w = read("# a comment\n" + header + "0,m,16,16,1\n\n   # indented comment\n1,m,16,16,1\n").value_or_throw();
  REQUIRE(w.requests.size() == 2);
  CHECK(w.requests[0].id == "3");
  CHECK(w.requests[1].id == "6");
}

TEST_CASE("columns may come in any order and unknown columns are ignored", "[workload][csv]") {
  auto w = read("note,steps,class,width,priority,slo_s,request_id,height,frames,model,arrival_s\n"
                "hello,20,L,1280,3,120.25,job-a,720,129,hunyuanvideo,2\n")
               .value_or_throw();
  REQUIRE(w.requests.size() == 1);
  const auto& r = w.requests[0];
  CHECK(r.id == "job-a");
  CHECK(r.arrival == 2'000'000);
  CHECK(r.shape == request_shape{"hunyuanvideo", 720, 1280, 129});
  CHECK(r.steps == 20);
  CHECK(r.slo == 120'250'000);
  CHECK(r.deadline() == 122'250'000);
  CHECK(r.priority == 3);
  CHECK(r.class_label == "L");
}

TEST_CASE("empty optional fields take their defaults", "[workload][csv]") {
  auto w = read("arrival_s,model,height,width,steps,frames,slo_s,request_id,priority,class\n"
                "0,m,16,16,1,,,,,\n")
               .value_or_throw();
  const auto& r = w.requests.at(0);
  CHECK(r.shape.frames == 1);
  CHECK_FALSE(r.has_deadline());
  CHECK(r.id == "2");
  CHECK(r.priority == 0);
  CHECK(r.class_label.empty());
}

TEST_CASE("rows are stably sorted by arrival", "[workload][csv]") {
  auto w = read("arrival_s,model,height,width,steps,request_id\n"
                "3,m,16,16,1,a\n1,m,16,16,1,b\n3,m,16,16,1,c\n0.5,m,16,16,1,d\n1,m,16,16,1,e\n")
               .value_or_throw();
  std::vector<std::string> ids;
  for (const auto& r : w.requests) ids.push_back(r.id);
  CHECK(ids == std::vector<std::string>{"d", "b", "e", "a", "c"});
}

TEST_CASE("a model in the known list is accepted, and an empty list accepts any model", "[workload][csv]") {
  CHECK(read(header + "0,flux-dev,16,16,1\n", {"sd3", "flux-dev"}).has_value());
  CHECK(read(header + "0,anything,16,16,1\n").has_value());
}

TEST_CASE("negative priorities and quoted fields are read as written", "[workload][csv]") {
  auto w = read("arrival_s,model,height,width,steps,priority,class,request_id\n"
                "0,m,16,16,1,-2,\"a, b\",\"x \"\"y\"\"\"\n")
               .value_or_throw();
  CHECK(w.requests[0].priority == -2);
  CHECK(w.requests[0].class_label == "a, b");
  CHECK(w.requests[0].id == "x \"y\"");
}

// ---------------------------------------------------------------------------------------------------
// Reader: every rejection names file, line and column.

TEST_CASE("a missing required column is reported at the header line", "[workload][csv][errors]") {
  for (const std::string col : {"arrival_s", "model", "height", "width", "steps"}) {
    std::string h;
    for (const std::string c : {"arrival_s", "model", "height", "width", "steps"}) {
      if (c != col) h += (h.empty() ? "" : ",") + c;
    }
    const auto e = fails("# comment\n" + h + "\n0,m,1,1\n");
    CHECK(e.line == 2);
    CHECK(e.column == col);
    CHECK_THAT(e.message, Catch::Contains("missing required column"));
  }
}

TEST_CASE("non-numeric and non-finite numbers are rejected", "[workload][csv][errors]") {
  SECTION("arrival_s not a number") {
    const auto e = fails(header + "0,m,16,16,1\nsoon,m,16,16,1\n");
    CHECK(e.line == 3);
    CHECK(e.column == "arrival_s");
    CHECK(e.what() == "w.csv:3: column 'arrival_s': " + e.message);
  }
  for (const std::string bad : {"nan", "inf", "-inf", "1e999"}) {
    const auto e = fails(header + bad + ",m,16,16,1\n");
    CHECK(e.line == 2);
    CHECK(e.column == "arrival_s");
  }
  SECTION("height not an integer") {
    const auto e = fails(header + "0,m,512.5,16,1\n");
    CHECK(e.column == "height");
  }
  SECTION("steps with a unit") { CHECK(fails(header + "0,m,16,16,50x\n").column == "steps"); }
  SECTION("priority not an integer") {
    CHECK(fails("arrival_s,model,height,width,steps,priority\n0,m,16,16,1,high\n").column == "priority");
  }
  SECTION("slo_s not a number") {
    CHECK(fails("arrival_s,model,height,width,steps,slo_s\n0,m,16,16,1,nan\n").column == "slo_s");
  }
}

TEST_CASE("a negative arrival is rejected", "[workload][csv][errors]") {
  const auto e = fails(header + "-0.5,m,16,16,1\n");
  CHECK(e.line == 2);
  CHECK(e.column == "arrival_s");
}

TEST_CASE("zero or negative values where positive is required are rejected", "[workload][csv][errors]") {
  const std::string h = "arrival_s,model,height,width,steps,frames,slo_s\n";
  CHECK(fails(h + "0,m,0,16,1,1,1\n").column == "height");
  CHECK(fails(h + "0,m,16,-16,1,1,1\n").column == "width");
  CHECK(fails(h + "0,m,16,16,0,1,1\n").column == "steps");
  CHECK(fails(h + "0,m,16,16,1,0,1\n").column == "frames");
  CHECK(fails(h + "0,m,16,16,1,1,0\n").column == "slo_s");
  CHECK(fails(h + "0,m,16,16,1,1,-3\n").column == "slo_s");
  const auto e = fails(h + "0,m,16,16,1,1,1e-9\n");  // positive, but 0 microseconds
  CHECK(e.column == "slo_s");
  CHECK_THAT(e.message, Catch::Contains("0 microseconds"));
}

TEST_CASE("a time that does not fit in a tick is rejected", "[workload][csv][errors]") {
  CHECK(fails(header + "1e300,m,16,16,1\n").column == "arrival_s");
  CHECK(fails("arrival_s,model,height,width,steps,slo_s\n0,m,16,16,1,1e300\n").column == "slo_s");
}

TEST_CASE("an integer out of range is rejected", "[workload][csv][errors]") {
  CHECK(fails(header + "0,m,16,16,99999999999\n").column == "steps");
}

TEST_CASE("empty required fields are rejected", "[workload][csv][errors]") {
  CHECK(fails(header + ",m,16,16,1\n").column == "arrival_s");
  CHECK(fails(header + "0,,16,16,1\n").column == "model");
  CHECK(fails(header + "0,m,,16,1\n").column == "height");
  CHECK(fails(header + "0,m,16,16,\n").column == "steps");
}

TEST_CASE("a duplicate request_id names both lines", "[workload][csv][errors]") {
  const auto e = fails("arrival_s,model,height,width,steps,request_id\n0,m,16,16,1,a\n1,m,16,16,1,b\n2,m,16,16,1,a\n");
  CHECK(e.line == 4);
  CHECK(e.column == "request_id");
  CHECK_THAT(e.message, Catch::Contains("'a'") && Catch::Contains("line 2"));
}

TEST_CASE("an explicit id equal to another row's default id is a duplicate", "[workload][csv][errors]") {
  const auto e = fails("arrival_s,model,height,width,steps,request_id\n0,m,16,16,1,\n1,m,16,16,1,2\n");
  CHECK(e.line == 3);
  CHECK(e.column == "request_id");
}

TEST_CASE("an unknown model is rejected with the list of known ones", "[workload][csv][errors]") {
  const auto e = fails(header + "0,flux-dev,16,16,1\n0,sdxl,16,16,1\n", {"flux-dev", "sd3-medium"});
  CHECK(e.line == 3);
  CHECK(e.column == "model");
  CHECK_THAT(e.message, Catch::Contains("sdxl") && Catch::Contains("flux-dev, sd3-medium"));
}

TEST_CASE("a workload without rows, or without a header, is rejected", "[workload][csv][errors]") {
  CHECK_THAT(fails(header + "# only a comment\n").message, Catch::Contains("no requests"));
  CHECK(fails("").line == 0);
  CHECK(fails("# nothing\n\n").line == 0);
}

TEST_CASE("malformed CSV records are rejected with their line", "[workload][csv][errors]") {
  CHECK(fails(header + "0,m,16,16,1\n0,m,16,16\n").line == 3);
  CHECK(fails(header + "0,m,16,16,1,extra\n").line == 2);
  CHECK(fails(header + "0,\"m,16,16,1\n").line == 2);
  CHECK(fails("arrival_s,model,height,width,steps,model\n0,m,1,1,1,m\n").column == "model");
}

TEST_CASE("text fields must be valid UTF-8: an invalid byte is named by line and column", "[workload][csv][errors][encoding]") {
  for (const char* column : {"class", "request_id", "model"}) {
    INFO(column);
    const std::string row_model = std::string(column) == "model" ? "flux\xFF" : "flux-dev";
    const std::string row_extra = std::string(column) == "model" ? "x" : "\xC3(\xFF";
    const auto e = fails("arrival_s,model,height,width,steps," + std::string(column == std::string("model") ? "class" : column) + "\n" +
                         "0,flux-dev,512,512,20,ok\n" + "1," + row_model + ",512,512,20," + row_extra + "\n");
    CHECK(e.line == 3);
    CHECK(e.column == column);
    CHECK_THAT(e.message, Catch::Contains("not valid UTF-8"));
    CHECK(is_valid_utf8(e.what()));  // the message never carries the raw bytes
  }
  // Valid UTF-8 is kept as written; a column nobody reads is not checked.
  const auto w = read("arrival_s,model,height,width,steps,class,request_id,comment\n"
                      "0,flux-dev,512,512,20,gro\xC3\x9F,\xE2\x9C\x93,caf\xE9\n")
                     .value_or_throw();
  CHECK(w.requests[0].class_label == "gro\xC3\x9F");
  CHECK(w.requests[0].id == "\xE2\x9C\x93");
}

TEST_CASE("a UTF-16 workload, a NUL byte and CR-only line ends are refused with what is wrong", "[workload][csv][errors][encoding]") {
  std::string utf16{"\xFF\xFE"};
  for (char c : header + "0,flux-dev,512,512,20\n") utf16 += std::string{c, '\0'};
  CHECK_THAT(fails(utf16).what(), Catch::Contains("w.csv:1:") && Catch::Contains("UTF-16"));
  CHECK_THAT(fails(header + std::string("0,flux-dev,512,512,2\0\n", 22)).what(), Catch::Contains("w.csv:2:") && Catch::Contains("NUL byte"));
  std::string cr_only = header + "0,flux-dev,512,512,20\n";
  std::replace(cr_only.begin(), cr_only.end(), '\n', '\r');
  const auto e = fails(cr_only);
  CHECK_THAT(e.what(), Catch::Contains("CR-only"));
  CHECK_THAT(e.what(), !Catch::Contains("duplicate column"));
}

TEST_CASE("workload and profile columns nobody reads may repeat a name or have none", "[workload][csv]") {
  const auto w = read("arrival_s,model,height,width,steps,note,note,\n0,flux-dev,512,512,20,a,b,\n").value_or_throw();
  REQUIRE(w.requests.size() == 1);
  CHECK(w.requests[0].steps == 20);
  CHECK_THAT(fails("arrival_s,model,height,width,steps,steps\n0,flux-dev,512,512,20,30\n").what(),
             Catch::Contains("w.csv:1:") && Catch::Contains("duplicate column name") && Catch::Contains("columns 5 and 6"));
  std::istringstream profile("model,gpu,height,width,frames,degree,step_s,source,source,\nm,g,512,512,1,1,0.5,a,b,\n");
  const auto t = read_profile_csv(profile, "p.csv");
  REQUIRE(t.has_value());
  CHECK(t.value().rows.size() == 1);
}

TEST_CASE("a directory given as a workload or profile file is named as a directory", "[workload][csv][errors]") {
  const std::string dir = std::filesystem::temp_directory_path().string();
  auto w = load_workload_csv(dir);
  REQUIRE_FALSE(w.has_value());
  CHECK_THAT(w.error().message, Catch::Contains("is a directory, not a workload file"));
  auto p = load_profile_csv(dir);
  REQUIRE_FALSE(p.has_value());
  CHECK_THAT(p.error().message, Catch::Contains("is a directory, not a profile file"));
}

TEST_CASE("loading a workload file that cannot be opened names the file", "[workload][csv][errors]") {
  auto r = load_workload_csv("/nonexistent/dir/w.csv");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().file == "/nonexistent/dir/w.csv");
  CHECK(r.error().line == 0);
}

// ---------------------------------------------------------------------------------------------------
// Writer.

TEST_CASE("writing a workload and reading it back gives the same workload", "[workload][csv]") {
  workload w;
  w.source = "w.csv";
  auto add = [&](std::string id, tick arrival, request_shape s, int steps, tick slo, int prio, std::string label) {
    w.requests.push_back({std::move(id), arrival, std::move(s), steps, slo, prio, std::move(label)});
  };
  add("1", 0, {"flux-dev", 256, 256, 1}, 50, never, 0, "");
  add("a,b", 1, {"flux-dev", 1024, 768, 1}, 28, 1, -3, "quoted \"label\"");
  add("#3", 999'999, {"hunyuanvideo", 720, 1280, 129}, 50, 1'500'000, 7, " padded ");
  add("line\nbreak", 123'456'789'000'001, {"model, with comma", 16, 16, 1}, 1, 86'400'000'000, 1, "L");
  add("big", (tick{1} << 50) - 1, {"m", 16, 16, 5}, 3, (tick{1} << 49) + 1, 0, "S");
  // A CR of the value's own just before a line break (the reader drops one CR before each LF: CRLF
  // files), and CRs elsewhere; found by fuzzing.
  add("cr\r\nlf", tick{1} << 50, {"m", 16, 16, 1}, 1, never, 0, "a\r\r\n\rb\r");

  std::ostringstream out;
  write_workload_csv(out, w, "generated for a test\nsecond line");
  std::istringstream in(out.str());
  auto back = read_workload_csv(in, "w.csv").value_or_throw();
  CHECK(same_requests(w, back));
  CHECK(out.str().rfind("# generated for a test\n# second line\n", 0) == 0);

  // And generated workloads, whose times are not round numbers of seconds.
  auto g = toy_generator();
  g.slo = slo_rule::latency_multiple(2.5, toy_step);
  const auto gw = generate_workload(g).value_or_throw();
  std::ostringstream out2;
  write_workload_csv(out2, gw);
  std::istringstream in2(out2.str());
  CHECK(same_requests(gw, read_workload_csv(in2, "g.csv").value_or_throw()));
}

// ---------------------------------------------------------------------------------------------------
// Generators.

TEST_CASE("the same seed gives the same workload and another seed a different one", "[workload][generator]") {
  auto g = toy_generator();
  g.mix = shape_mix::skewed;
  g.steps = {20, 30, 50};
  g.priority_weights = {1.0, 1.0};
  const auto a = generate_workload(g).value_or_throw();
  const auto b = generate_workload(g).value_or_throw();
  CHECK(same_requests(a, b));
  g.seed = 43;
  const auto c = generate_workload(g).value_or_throw();
  CHECK_FALSE(same_requests(a, c));
  REQUIRE(a.requests.size() == 200);
  CHECK(a.requests.front().id == "1");
  CHECK(a.requests.back().id == "200");
}

TEST_CASE("a seeded workload is pinned: the generator's draws do not depend on the standard library", "[workload][generator]") {
  // The generator uses std::mt19937_64 (its output is fixed by the standard) through its own
  // transforms (draw::), never std::*_distribution, whose output differs between standard libraries.
  // These values were recorded once; any change to the draws, their order or their transforms shows
  // here, as it would change every published figure generated from a seed.
  std::mt19937_64 h(5);
  CHECK(draw::uniform01(h) == 0x1.589bf68d490b3p-1);
  std::mt19937_64 k(7);
  std::vector<std::size_t> idx;
  for (int i = 0; i < 8; ++i) idx.push_back(draw::index(k, 3));
  CHECK(idx == std::vector<std::size_t>{0, 0, 0, 0, 1, 0, 0, 1});
  std::mt19937_64 e(9);
  CHECK(draw::exponential(e, 2.0) == Approx(0x1.76370bdc2c66fp-2).epsilon(1e-15));  // log1p may differ by an ulp

  const auto w = generate_workload(toy_generator()).value_or_throw();
  REQUIRE(w.requests.size() == 200);
  struct pinned {
    const char* id;
    tick arrival;
    int side, steps;
  };
  const pinned expect[] = {{"1", 300'883, 1024, 50}, {"2", 7'269'209, 2048, 50}, {"3", 14'295'430, 1024, 50}, {"4", 14'867'288, 256, 50}};
  for (std::size_t i = 0; i < std::size(expect); ++i) {
    INFO("request " << i);
    const auto& r = w.requests[i];
    CHECK(r.id == expect[i].id);
    CHECK(r.arrival == expect[i].arrival);
    CHECK(r.shape == request_shape{"flux-dev", expect[i].side, expect[i].side, 1});
    CHECK(r.steps == expect[i].steps);
  }
}

TEST_CASE("Poisson arrivals have the requested mean rate", "[workload][generator]") {
  std::mt19937_64 g(7);
  const auto t = generate_arrivals(poisson_arrivals{2.0, 0.0}, 40'000, g).value_or_throw();
  REQUIRE(t.size() == 40'000);
  CHECK(std::is_sorted(t.begin(), t.end()));
  const double rate = static_cast<double>(t.size()) / t.back();
  CHECK(rate == Approx(2.0).epsilon(0.02));
  // Exponential gaps: coefficient of variation 1.
  double sum = 0.0, sum2 = 0.0;
  for (std::size_t i = 1; i < t.size(); ++i) {
    const double gap = t[i] - t[i - 1];
    sum += gap;
    sum2 += gap * gap;
  }
  const double n = static_cast<double>(t.size() - 1);
  const double mean = sum / n;
  CHECK(std::sqrt(sum2 / n - mean * mean) / mean == Approx(1.0).epsilon(0.03));
}

TEST_CASE("Poisson arrivals over a duration stop at the duration", "[workload][generator]") {
  std::mt19937_64 g(3);
  const auto t = generate_arrivals(poisson_arrivals{5.0, 2000.0}, 0, g).value_or_throw();
  CHECK(t.back() < 2000.0);
  CHECK(static_cast<double>(t.size()) == Approx(10'000.0).epsilon(0.05));
  std::mt19937_64 g2(3);
  CHECK(generate_arrivals(poisson_arrivals{5.0, 2000.0}, 100, g2).value_or_throw().size() == 100);
}

TEST_CASE("phased arrivals follow each phase's rate", "[workload][generator]") {
  std::mt19937_64 g(11);
  const phased_arrivals p{{{1000.0, 1.0}, {500.0, 0.0}, {1000.0, 4.0}}};
  const auto t = generate_arrivals(p, 0, g).value_or_throw();
  const auto in = [&](double lo, double hi) {
    return static_cast<double>(std::count_if(t.begin(), t.end(), [&](double x) { return x >= lo && x < hi; }));
  };
  CHECK(in(0, 1000) == Approx(1000.0).epsilon(0.1));
  CHECK(in(1000, 1500) == 0.0);
  CHECK(in(1500, 2500) == Approx(4000.0).epsilon(0.1));
  CHECK(t.back() < 2500.0);
  // With a request count the phases repeat until it is reached.
  std::mt19937_64 g2(11);
  const auto many = generate_arrivals(p, 12'000, g2).value_or_throw();
  CHECK(many.size() == 12'000);
  CHECK(many.back() > 2500.0);
}

TEST_CASE("the skewed mix favours large shapes", "[workload][generator]") {
  const auto shapes = tetriserve_shapes("flux-dev");
  const auto p = mix_probabilities(shapes, shape_mix::skewed);
  const double z = std::exp(1.0 / 64) + std::exp(1.0 / 16) + std::exp(0.25) + std::exp(1.0);
  CHECK(p[3] == Approx(std::exp(1.0) / z));
  CHECK(p[0] == Approx(std::exp(1.0 / 64) / z));

  auto g = toy_generator();
  g.requests = 20'000;
  g.mix = shape_mix::skewed;
  std::map<int, int> count;
  for (const auto& r : generate_workload(g).value_or_throw().requests) ++count[r.shape.height];
  CHECK(count[2048] > count[1024]);
  CHECK(count[1024] > count[512]);
  CHECK(static_cast<double>(count[2048]) / 20'000 == Approx(p[3]).epsilon(0.05));

  g.mix = shape_mix::uniform;
  count.clear();
  for (const auto& r : generate_workload(g).value_or_throw().requests) ++count[r.shape.height];
  for (const int px : {256, 512, 1024, 2048}) CHECK(static_cast<double>(count[px]) == Approx(5000.0).epsilon(0.06));
}

TEST_CASE("explicit weights of zero are never drawn", "[workload][generator]") {
  auto g = toy_generator();
  g.mix = shape_mix::weighted;
  g.shapes[0].weight = 0.0;
  g.shapes[1].weight = 3.0;
  g.shapes[2].weight = 0.0;
  g.shapes[3].weight = 1.0;
  std::map<int, int> count;
  for (const auto& r : generate_workload(g).value_or_throw().requests) ++count[r.shape.height];
  CHECK(count[256] == 0);
  CHECK(count[1024] == 0);
  CHECK(count[512] > count[2048]);
}

TEST_CASE("steps, priorities and labels follow their rules", "[workload][generator]") {
  auto g = toy_generator();
  g.steps = {20, 50};
  g.priority_weights = {0.0, 1.0, 1.0};
  g.labels = class_labels::size;
  std::set<int> steps, priorities;
  std::map<int, std::string> label_of;
  for (const auto& r : generate_workload(g).value_or_throw().requests) {
    steps.insert(r.steps);
    priorities.insert(r.priority);
    label_of[r.shape.height] = r.class_label;
  }
  CHECK(steps == std::set<int>{20, 50});
  CHECK(priorities == std::set<int>{1, 2});
  CHECK(label_of == std::map<int, std::string>{{256, "S"}, {512, "M"}, {1024, "M"}, {2048, "L"}});

  g.labels = class_labels::per_shape;
  g.priority_weights.clear();
  g.shapes[3].class_label = "huge";
  g.shapes[3].priority = 9;
  for (const auto& r : generate_workload(g).value_or_throw().requests) {
    CHECK(r.class_label == (r.shape.height == 2048 ? "huge" : resolution_label(r.shape)));
    CHECK(r.priority == (r.shape.height == 2048 ? 9 : 0));
  }
  CHECK(resolution_label({"m", 768, 1360, 1}) == "768x1360");
  CHECK(resolution_label({"m", 720, 1280, 129}) == "720x1280x129");
}

TEST_CASE("SLO rules: none, fixed base x scale, alpha x own latency", "[workload][generator]") {
  auto g = toy_generator();
  for (const auto& r : generate_workload(g).value_or_throw().requests) CHECK_FALSE(r.has_deadline());

  g.slo = slo_rule::fixed(1.5);
  const std::map<int, tick> base{{256, 2'250'000}, {512, 3'000'000}, {1024, 4'500'000}, {2048, 7'500'000}};
  for (const auto& r : generate_workload(g).value_or_throw().requests) CHECK(r.slo == base.at(r.shape.height));

  g.slo = slo_rule::latency_multiple(3.0, toy_step);
  g.steps = {10, 40};
  for (const auto& r : generate_workload(g).value_or_throw().requests) {
    CHECK(r.slo == *to_ticks(3.0 * r.steps * toy_step(r.shape)));
  }
}

TEST_CASE("streams are independent: changing the arrival rate keeps the shapes", "[workload][generator]") {
  auto g = toy_generator();
  const auto a = generate_workload(g).value_or_throw();
  g.arrivals = poisson_arrivals{3.0, 0.0};
  const auto b = generate_workload(g).value_or_throw();
  for (std::size_t i = 0; i < a.requests.size(); ++i) CHECK(a.requests[i].shape == b.requests[i].shape);
  CHECK(a.requests.back().arrival != b.requests.back().arrival);
}

TEST_CASE("generator configuration errors name the field", "[workload][generator][errors]") {
  auto g = toy_generator();
  g.shapes.clear();
  CHECK(generate_workload(g).error().column == "shapes");
  g = toy_generator();
  g.arrivals = poisson_arrivals{0.0, 0.0};
  CHECK(generate_workload(g).error().column == "rate");
  g = toy_generator();
  g.requests = 0;
  CHECK(generate_workload(g).error().column == "requests");
  g = toy_generator();
  g.steps = {0};
  CHECK(generate_workload(g).error().column == "steps");
  g = toy_generator();
  g.slo = slo_rule::fixed(1.0);
  g.shapes[0].base_slo_s = 0.0;
  CHECK(generate_workload(g).error().column == "slo");
  g = toy_generator();
  g.arrivals = trace_arrivals{{0.0, 1.0}, 0.0};
  CHECK(generate_workload(g).error().column == "requests");  // 200 > 2
  g.arrivals = phased_arrivals{{{10.0, 0.0}}};
  CHECK(generate_workload(g).error().column == "phases");
  CHECK(generate_workload(g).error().file == "<generator>");
}

// ---------------------------------------------------------------------------------------------------
// Recorded arrival traces.

TEST_CASE("the Azure traces replay as sorted nonnegative arrivals", "[workload][trace]") {
  const auto conv = load_arrival_trace(PARAFLEX_DATA_DIR "/traces/AzureLLMInferenceTrace_conv.csv").value_or_throw();
  check_trace(conv);
  CHECK(conv.size() == 19'366);
  CHECK(conv.back() == Approx(3502.0).margin(1.0));
  // First gap of the file: 18:15:50.9951690 - 18:15:46.6805900.
  CHECK(conv[1] == Approx(4.314579).margin(1e-9));

  const auto code = load_arrival_trace(PARAFLEX_DATA_DIR "/traces/AzureLLMInferenceTrace_code.csv").value_or_throw();
  check_trace(code);
  CHECK(code.size() == 8'819);
  CHECK(code.back() == Approx(3436.0).margin(1.0));
}

TEST_CASE("the Mooncake and Hetu-DiT traces replay as sorted nonnegative arrivals", "[workload][trace]") {
  const auto moon = load_arrival_trace(PARAFLEX_DATA_DIR "/traces/mooncake_conversation_trace.jsonl").value_or_throw();
  check_trace(moon);
  CHECK(moon.size() == 12'031);
  CHECK(moon.back() == Approx(3536.999));

  const auto flux = load_arrival_trace(PARAFLEX_DATA_DIR "/traces/hetu_dit_synthetic/flux_trace.txt").value_or_throw();
  check_trace(flux);
  CHECK(flux.size() == 2'700);
  CHECK(flux.back() == Approx(1799.334233));
  const auto hy = load_arrival_trace(PARAFLEX_DATA_DIR "/traces/hetu_dit_synthetic/hunyuanvideo_trace.txt").value_or_throw();
  CHECK(hy.size() == 1'800);
}

TEST_CASE("trace formats are detected from content and bad lines are located", "[workload][trace][errors]") {
  auto parse = [](const std::string& text, trace_format f = trace_format::detect) {
    std::istringstream in(text);
    return read_arrival_trace(in, "t", f);
  };
  CHECK(parse("# seconds\n5\n3.5\n\n10\n").value_or_throw() == std::vector<double>{0.0, 1.5, 6.5});
  CHECK(parse("{\"timestamp\": 2000}\n{\"timestamp\": 500}\n").value_or_throw() == std::vector<double>{0.0, 1.5});
  CHECK(parse("Request(request_id=0, timestamp=2.5, prompt='timestamp=9')\nRequest(timestamp=1.0)\n").value_or_throw() ==
        std::vector<double>{0.0, 1.5});
  CHECK(parse("TIMESTAMP,x\n1970-01-02 00:00:01.5,1\n1970-01-01T23:59:59,2\n").value_or_throw() ==
        std::vector<double>{0.0, 2.5});
  CHECK(parse("arrival_s,model\n4,m\n1,m\n").value_or_throw() == std::vector<double>{0.0, 3.0});

  auto e = parse("5\n6\nsoon\n").error();
  CHECK(e.line == 3);
  e = parse("{\"timestamp\": 1}\n{\"timestamp\": 1\n").error();
  CHECK(e.line == 2);
  e = parse("{\"timestamp\": 1}\n{\"time\": 1}\n").error();
  CHECK(e.line == 2);
  CHECK(e.column == "timestamp");
  e = parse("Request(request_id=0, timestamp=x)\n").error();
  CHECK(e.line == 1);
  CHECK(e.column == "timestamp");
  e = parse("TIMESTAMP\n2023-11-16 18:17:03.97\n2023-13-16 18:17:03.97\n").error();
  CHECK(e.line == 3);
  CHECK(e.column == "TIMESTAMP");
  CHECK(parse("when,x\n1,2\n").error().column == "TIMESTAMP");
  CHECK(parse("# nothing\n").error().message == "the trace has no arrivals");
  CHECK(parse("5\n", trace_format::hetu_dit).error().line == 1);
  CHECK(load_arrival_trace("/nonexistent.csv").error().file == "/nonexistent.csv");
}

TEST_CASE("a CSV trace's time column is found by name in any case, or named, and holds date-times or seconds", "[workload][trace]") {
  auto parse = [](const std::string& text, trace_columns c = {}) {
    std::istringstream in(text);
    return read_recorded_trace(in, "t.csv", c);
  };
  // Alibaba's GenAI trace: gmt_create, whole seconds, other columns ignored (some of them empty).
  const auto ali = parse("gmt_create,predict_type,num_inference_steps\n2024-11-15 16:57:50,TXT_2_IMG,30.0\n"
                         "2024-11-15 16:57:48,IMG_2_IMG,\n").value_or_throw();
  CHECK(ali.times_s == std::vector<double>{0.0, 2.0});
  CHECK(ali.steps.empty());
  // BurstGPT-style: "Timestamp" in seconds; TIMESTAMP is found before arrival_s.
  CHECK(parse("Timestamp,Model\n5.5,a\n1,b\n").value_or_throw().times_s == std::vector<double>{0.0, 4.5});
  CHECK(parse("arrival_s,TIMESTAMP\n9,1\n1,3\n").value_or_throw().times_s == std::vector<double>{0.0, 2.0});
  // A named column, exactly or in another case; date-times there too.
  CHECK(parse("sent,x\n3,1\n1,2\n", {"sent", {}}).value_or_throw().times_s == std::vector<double>{0.0, 2.0});
  CHECK(parse("Sent\n2024-01-01T00:00:10\n2024-01-01T00:00:00\n", {"sent", {}}).value_or_throw().times_s == std::vector<double>{0.0, 10.0});

  // Errors name the column and the line.
  auto e = parse("sent\n1\n", {"when", {}}).error();
  CHECK(e.column == "when");
  CHECK(e.line == 1);
  CHECK(e.message.find("the header has: sent") != std::string::npos);
  CHECK(parse("timestamp,TIMESTAMP\n1,2\n").has_value());  // "TIMESTAMP" matches one column exactly: no ambiguity
  e = parse("Timestamp,timeStamp\n1,2\n").error();
  CHECK(e.message.find("ambiguous") != std::string::npos);
  e = parse("TIMESTAMP\n2024-01-01 00:00:00\n12.5\n").error();  // the kind of the first row holds for all
  CHECK(e.line == 3);
  CHECK(e.column == "TIMESTAMP");
  e = parse("arrival_s\n1\n2024-01-01 00:00:00\n").error();
  CHECK(e.line == 3);
  e = parse("arrival_s\nsoon\n").error();
  CHECK(e.line == 2);
  CHECK(e.message.find("'soon'") != std::string::npos);
  CHECK(parse("arrival_s\ninf\n").error().line == 2);
  // Dates a 64-bit count of nanoseconds holds (found by fuzzing: year 1012 overflowed it), and two of
  // them further apart than INT64_MAX nanoseconds.
  e = parse("TIMESTAMP\n1012-11-15 16:57:50\n").error();
  CHECK(e.message.find("years 1678-2261") != std::string::npos);
  const auto far = parse("TIMESTAMP\n2261-12-31 23:59:59\n1678-01-01 00:00:00\n").value_or_throw().times_s;
  REQUIRE(far.size() == 2);
  CHECK(far[1] == Approx((std::chrono::sys_days{std::chrono::year{2262} / 1 / 1} - std::chrono::sys_days{std::chrono::year{1678} / 1 / 1}).count() * 86400.0 - 1.0));
  // A column can be chosen only where there are columns.
  CHECK(parse("5\n6\n", {"t", {}}).error().message.find("only in a CSV trace") != std::string::npos);
  CHECK(parse("{\"timestamp\": 1}\n", {{}, "steps"}).error().column == "steps");
}

TEST_CASE("a CSV trace's steps column gives each arrival its recorded steps, which follow it when sorted", "[workload][trace]") {
  auto parse = [](const std::string& text, trace_columns c) {
    std::istringstream in(text);
    return read_recorded_trace(in, "t.csv", c);
  };
  const std::string ali = "gmt_create,num_inference_steps\n2024-11-15 16:57:50,30.0\n2024-11-15 16:57:40,40.0\n"
                          "2024-11-15 16:57:45,\n2024-11-15 16:57:40,28\n";
  auto e = parse(ali, {{}, "num_inference_steps"}).error();  // an empty cell, with no steps given for it
  CHECK(e.line == 4);
  CHECK(e.column == "num_inference_steps");
  const auto t = parse(ali, {{}, "num_inference_steps", 50}).value_or_throw();
  CHECK(t.times_s == std::vector<double>{0.0, 0.0, 5.0, 10.0});
  CHECK(t.steps == std::vector<int>{40, 28, 50, 30});  // ties keep the file's order
  CHECK(t.filled_steps == 1);
  for (const char* bad : {"2.5", "0", "-3", "x", "1e9"}) {
    e = parse(std::string("arrival_s,steps\n1,5\n2,") + bad + "\n", {{}, "steps"}).error();
    CHECK(e.line == 3);
    CHECK(e.column == "steps");
  }
  CHECK(parse("arrival_s\n1\n", {{}, "steps"}).error().column == "steps");

  // A generator gives request i the steps recorded with its arrival, whatever workload_generator::steps says.
  auto g = toy_generator();
  g.steps = {7};
  g.requests = 3;
  g.arrivals = trace_arrivals{t.times_s, 0.0, t.steps};
  const auto w = generate_workload(g).value_or_throw();
  REQUIRE(w.requests.size() == 3);
  CHECK(w.requests[0].steps == 40);
  CHECK(w.requests[1].steps == 28);
  CHECK(w.requests[2].steps == 50);
  // Unsorted times given by hand: the steps still follow their arrivals.
  g.requests = 0;
  g.arrivals = trace_arrivals{{3.0, 1.0, 2.0}, 0.0, {30, 10, 20}};
  const auto sorted = generate_workload(g).value_or_throw();
  CHECK(sorted.requests[0].steps == 10);
  CHECK(sorted.requests[1].steps == 20);
  CHECK(sorted.requests[2].steps == 30);
  g.arrivals = trace_arrivals{{3.0, 1.0}, 0.0, {30}};
  CHECK(generate_workload(g).error().column == "trace");
  g.arrivals = trace_arrivals{{3.0, 1.0}, 0.0, {30, 0}};
  CHECK(generate_workload(g).error().column == "trace");
}

TEST_CASE("a generator replays the first n arrivals of a trace, optionally at a new mean rate", "[workload][trace]") {
  auto g = toy_generator();
  g.requests = 500;
  g.arrivals = trace_arrivals{load_arrival_trace(PARAFLEX_DATA_DIR "/traces/AzureLLMInferenceTrace_code.csv").value_or_throw(), 0.0};
  const auto w = generate_workload(g).value_or_throw();
  REQUIRE(w.requests.size() == 500);
  CHECK(w.requests.front().arrival == 0);
  CHECK(std::is_sorted(w.requests.begin(), w.requests.end(),
                       [](const auto& a, const auto& b) { return a.arrival < b.arrival; }));

  std::get<trace_arrivals>(g.arrivals).rate = 0.1;
  const auto slow = generate_workload(g).value_or_throw();
  CHECK(499.0 / to_seconds(slow.requests.back().arrival) == Approx(0.1).epsilon(1e-6));
}

// ---------------------------------------------------------------------------------------------------
// Load.

TEST_CASE("offered load follows the definition in formats §5", "[workload][load]") {
  workload w;
  w.requests.push_back({"a", 0, {"m", 256, 256, 1}, 10, never, 0, ""});
  w.requests.push_back({"b", 10'000'000, {"m", 512, 512, 1}, 20, never, 0, ""});
  // (10 x 0.0256 + 20 x 0.1024) / (2 GPUs x 10 s)
  CHECK(offered_load(w, 2, toy_step) == Approx((10 * 0.0256 + 20 * 0.1024) / 20.0));
}

TEST_CASE("rescaling to a target load hits it", "[workload][load]") {
  for (const double target : {0.3, 0.9, 1.7}) {
    auto g = toy_generator();
    g.mix = shape_mix::skewed;
    g.slo = slo_rule::fixed(1.0);
    g.load = load_target{target, 8, toy_step};
    const auto w = generate_workload(g).value_or_throw();
    CHECK(std::abs(offered_load(w, 8, toy_step) / target - 1.0) < 1e-6);

    // Deadlines stay durations; the first arrival stays put; the order is kept.
    auto plain = g;
    plain.load.reset();
    const auto before = generate_workload(plain).value_or_throw();
    CHECK(w.requests.front().arrival == before.requests.front().arrival);
    for (std::size_t i = 0; i < w.requests.size(); ++i) {
      CHECK(w.requests[i].slo == before.requests[i].slo);
      CHECK(w.requests[i].shape == before.requests[i].shape);
    }
  }
  // On a trace too, via rescale_to_load directly.
  auto g = toy_generator();
  g.requests = 1000;
  g.arrivals = trace_arrivals{load_arrival_trace(PARAFLEX_DATA_DIR "/traces/mooncake_conversation_trace.jsonl").value_or_throw(), 0.0};
  const auto w = rescale_to_load(generate_workload(g).value_or_throw(), 0.8, 4, toy_step).value_or_throw();
  CHECK(std::abs(offered_load(w, 4, toy_step) / 0.8 - 1.0) < 1e-6);
}

TEST_CASE("rescaling rejects a workload whose requests all arrive at once", "[workload][load][errors]") {
  workload w;
  w.requests.push_back({"a", 5, {"m", 256, 256, 1}, 10, never, 0, ""});
  w.requests.push_back({"b", 5, {"m", 256, 256, 1}, 10, never, 0, ""});
  CHECK_FALSE(rescale_to_load(w, 0.5, 1, toy_step).has_value());
  CHECK_FALSE(rescale_to_load(w, 0.0, 1, toy_step).has_value());
  w.requests[1].arrival = 6;
  CHECK_FALSE(rescale_to_load(w, 0.5, 0, toy_step).has_value());
  CHECK(rescale_to_load(w, 0.5, 1, toy_step).has_value());
  CHECK_FALSE(rescale_to_load(w, 0.5, 1, [](const request_shape&) { return 0.0; }).has_value());
}

TEST_CASE("a request with more steps than a trajectory may have is rejected", "[workload]") {
  std::istringstream in("arrival_s,model,height,width,steps\n0,flux-dev,512,512,100001\n");
  auto w = paraflex::read_workload_csv(in, "w.csv");
  REQUIRE_FALSE(w.has_value());
  REQUIRE(w.error().line == 2);
  REQUIRE(w.error().column == "steps");
}
