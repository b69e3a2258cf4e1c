// paraflex/policy/registry.hpp - policies by name with parameters: "NAME[:KEY=VALUE]...".
//
// formats §5: `round-based:round_steps=5`, `slo-aware:admission=strict`; a bare value is the
// policy's positional parameter (`static:4` = `static:degree=4`). An unknown key or a bad value is
// an input_error naming the policy and the key. Users add their own policies with add().
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "paraflex/core/error.hpp"
#include "paraflex/policy/any_policy.hpp"
#include "paraflex/policy/static_degree.hpp"

namespace paraflex {

/// One parameter a policy's factory reads, as policy_registry::parameters() lists it.
struct policy_parameter {
  std::string key;
  std::string default_value;  ///< what an absent key means ("required" when it may not be absent)
  std::string accepted;       ///< "[min, max]", "a|b|c", or empty (any text)
};

/// The parameters of one policy spec. Getters record which keys were read (and their defaults and
/// ranges) so that unknown keys can be reported after the factory ran, naming the known ones; a bad
/// value throws input_exception.
class policy_params {
 public:
  policy_params(std::string policy, std::map<std::string, std::string> values)
      : policy_(std::move(policy)), values_(std::move(values)) {}

  [[nodiscard]] const std::string& policy() const noexcept { return policy_; }
  [[nodiscard]] bool has(const std::string& key) const { return values_.contains(key); }

  [[nodiscard]] std::string get_string(const std::string& key, std::string fallback) {
    describe(key, fallback, "");
    auto it = values_.find(key);
    return it == values_.end() ? std::move(fallback) : it->second;
  }
  [[nodiscard]] long long get_int(const std::string& key, long long fallback, long long min_value, long long max_value) {
    describe(key, fmt::format("{}", fallback), fmt::format("[{}, {}]", min_value, max_value));
    auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    long long v = 0;
    const auto& s = it->second;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) fail(key, fmt::format("expected an integer, got '{}'", s));
    if (v < min_value || v > max_value) fail(key, fmt::format("{} is out of range [{}, {}]", v, min_value, max_value));
    return v;
  }
  [[nodiscard]] double get_double(const std::string& key, double fallback, double min_value, double max_value) {
    describe(key, fmt::format("{:.6g}", fallback), fmt::format("[{:.6g}, {:.6g}]", min_value, max_value));
    auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    const auto& s = it->second;
    // strtod, not stod: stod throws on underflow, and "1e-400" is a number (it rounds towards 0).
    char* end = nullptr;
    const double v = s.empty() ? std::nan("") : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || std::isnan(v)) fail(key, fmt::format("expected a number, got '{}'", s));
    if (std::isinf(v) || v < min_value || v > max_value) fail(key, fmt::format("{} is out of range [{}, {}]", s, min_value, max_value));
    return v;
  }
  /// One of `choices`.
  [[nodiscard]] std::string get_choice(const std::string& key, std::string fallback, const std::vector<std::string>& choices) {
    describe(key, fallback, fmt::format("{}", fmt::join(choices, "|")));
    auto v = get_string(key, std::move(fallback));
    for (const auto& c : choices) {
      if (c == v) return v;
    }
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    fail(key, fmt::format("'{}' is not one of: {}", v, list));
  }
  /// Keys given but never read by the factory.
  [[nodiscard]] std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : values_) {
      if (!read(k)) out.push_back(k);
    }
    return out;
  }
  /// Records that the factory reads `key` (the getters call it; a factory calls it itself for a key
  /// it checks before reading, such as a required one). The first description of a key stands.
  void describe(const std::string& key, std::string default_value, std::string accepted) {
    if (read(key)) return;
    described_.push_back(policy_parameter{key, std::move(default_value), std::move(accepted)});
  }
  /// The keys read so far, in the order the factory first read them.
  [[nodiscard]] const std::vector<policy_parameter>& described() const noexcept { return described_; }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw input_exception(input_error{"--policy", 0, "", fmt::format("policy '{}', parameter '{}': {}", policy_, key, message)});
  }

 private:
  std::string policy_;
  std::map<std::string, std::string> values_;
  std::vector<policy_parameter> described_;  // every key read, once: a policy has a dozen at most

  [[nodiscard]] bool read(const std::string& key) const {
    return std::any_of(described_.begin(), described_.end(), [&](const policy_parameter& d) { return d.key == key; });
  }
};

class policy_registry {
 public:
  using factory = std::function<any_policy(policy_params&)>;

  /// Registers `name`; `positional` is the key a bare value stands for (empty: none allowed).
  void add(std::string name, std::string positional, std::string summary, factory f) {
    entries_[name] = entry{std::move(positional), std::move(summary), std::move(f)};
  }
  [[nodiscard]] bool contains(const std::string& name) const { return entries_.contains(name); }
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, e] : entries_) out.push_back(n);
    return out;
  }
  [[nodiscard]] const std::string& summary(const std::string& name) const { return entries_.at(name).summary; }

  /// The parameters `name` takes, with their defaults and accepted values, in the order its factory
  /// reads them: found by running the factory on a spec with no parameters (a factory that fails
  /// for a missing required key lists what it read up to then, so it describes that key first).
  /// Throws std::out_of_range for an unknown name, like summary().
  [[nodiscard]] std::vector<policy_parameter> parameters(const std::string& name) const {
    const entry& e = entries_.at(name);
    policy_params params(name, {});
    try {
      (void)e.make(params);
    } catch (const input_exception&) {  // e.g. static without its degree: what it read is the answer
    }
    return params.described();
  }

  /// A spec taken apart: the policy's name and its parameters, a positional value under its key
  /// ("static:4" -> static, {degree: 4}). Values are not checked: make() does that.
  struct parsed_spec {
    std::string name;
    std::map<std::string, std::string> values;
  };

  /// Parses "NAME[:KEY=VALUE]..." as make() does, without building the policy: an input_error for an
  /// unknown name or bad syntax. For tools that read a spec (which parameters it sets) - one reader of
  /// the syntax, this one.
  [[nodiscard]] result<parsed_spec> parse(std::string_view spec) const {
    try {
      return parse_or_throw(spec);
    } catch (const input_exception& e) {
      return e.error();
    }
  }

  /// Builds a policy from "NAME[:KEY=VALUE]..."; input_error on any problem.
  [[nodiscard]] result<any_policy> make(std::string_view spec) const {
    try {
      return make_or_throw(spec);
    } catch (const input_exception& e) {
      return e.error();
    }
  }

  /// Splits a comma-separated list of specs ("static:1,rssp"). Commas only separate policies.
  [[nodiscard]] static std::vector<std::string> split_list(std::string_view list) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= list.size()) {
      const auto comma = list.find(',', start);
      const auto end = comma == std::string_view::npos ? list.size() : comma;
      out.emplace_back(list.substr(start, end - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return out;
  }

 private:
  struct entry {
    std::string positional, summary;
    factory make;
  };

  static input_exception spec_error(const std::string& msg) { return input_exception(input_error{"--policy", 0, "", msg}); }

  parsed_spec parse_or_throw(std::string_view spec) const {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
      const auto colon = spec.find(':', start);
      parts.emplace_back(spec.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
      if (colon == std::string_view::npos) break;
      start = colon + 1;
    }
    const std::string name = parts.front();
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string known;
      for (const auto& [n, e] : entries_) known += (known.empty() ? "" : ", ") + n;
      throw spec_error(fmt::format("unknown policy '{}' (known: {})", name, known));
    }
    std::map<std::string, std::string> values;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      const auto& p = parts[i];
      const auto eq = p.find('=');
      std::string key, value;
      if (eq == std::string::npos) {
        if (it->second.positional.empty() || i != 1) throw spec_error(fmt::format("policy '{}': expected KEY=VALUE, got '{}'", name, p));
        key = it->second.positional;
        value = p;
      } else {
        key = p.substr(0, eq);
        value = p.substr(eq + 1);
      }
      if (key.empty()) throw spec_error(fmt::format("policy '{}': empty parameter name in '{}'", name, p));
      if (!values.emplace(key, value).second) throw spec_error(fmt::format("policy '{}': parameter '{}' given twice", name, key));
    }
    return parsed_spec{name, std::move(values)};
  }

  any_policy make_or_throw(std::string_view spec) const {
    parsed_spec parsed = parse_or_throw(spec);
    policy_params params(parsed.name, std::move(parsed.values));
    any_policy p = entries_.at(parsed.name).make(params);
    if (auto unknown = params.unused(); !unknown.empty()) {
      std::vector<std::string> known;
      for (const auto& d : params.described()) known.push_back(d.key);
      throw spec_error(known.empty() ? fmt::format("policy '{}': unknown parameter '{}' (it takes no parameters)", parsed.name, unknown.front())
                                     : fmt::format("policy '{}': unknown parameter '{}' (it takes: {})", parsed.name, unknown.front(),
                                                   fmt::join(known, ", ")));
    }
    return p;
  }

  std::map<std::string, entry> entries_;
};

/// Adds the fixed-parallelism baselines: static (static:K) and rssp.
/// `gpus` bounds static's degree (K > G is a usage error, formats §5).
inline void register_static_policies(policy_registry& r, int gpus) {
  r.add("static", "degree", "every request on a fixed group of K GPUs for its whole life, FCFS",
        [gpus](policy_params& p) -> any_policy {
          p.describe("degree", "required", fmt::format("[1, {}]", gpus));
          if (!p.has("degree")) p.fail("degree", "required (static:K)");
          return static_degree_policy(static_cast<int>(p.get_int("degree", 1, 1, gpus)));
        });
  r.add("rssp", "", "best fixed degree per shape (fewest GPU-seconds that meets the SLO alone), FCFS",
        [](policy_params&) -> any_policy { return rssp_policy{}; });
}

}  // namespace paraflex
