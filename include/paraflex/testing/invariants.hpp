// paraflex/testing/invariants.hpp - checks, from the outside, what the runtime promises about a run.
//
// Attach an invariant_checker to a scheduler before run(), then ask it for violations() afterwards.
// It works with any policy, executor and cost model (simulated or real threads), needs no test
// framework, and checks:
//   1. every request ends exactly once (one on_request_end call), its record says it ended, and a
//      dropped request has a reason;
//   2. a device runs one thing at a time: the tasks and migrations recorded on one device never
//      overlap in time (the members of one batched step share its launch, and its devices);
//   3. a request runs one task at a time, never before it arrives and never after it ended;
//   4. a request's successful tasks follow its trajectory: encode, step 0, step 1, ..., decode, where
//      encode may come again (a restart after a lost device); a completed request ends with decode;
//   5. time never goes back between callbacks.
// Typical use, with Catch2 (any framework works the same way):
//
//   paraflex::testing::invariant_checker chk;
//   chk.attach(sched);                     // sets on_task_record and on_request_end
//   ... submit, run ...
//   const auto v = chk.violations(sched.state());
//   INFO(paraflex::testing::join_lines(v));
//   REQUIRE(v.empty());
//
// attach() takes both scheduler callbacks; a test that needs its own calls observe_task() and
// observe_end() from them instead.
#pragma once

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex::testing {

class invariant_checker {
 public:
  /// Installs on_task_record and on_request_end on `s` (replacing callbacks set before).
  template <class Scheduler>
  void attach(Scheduler& s) {
    s.on_task_record([this](const task_record& t) { observe_task(t); });
    s.on_request_end([this](const request_record& r) { observe_end(r); });
  }

  /// Records one finished (or failed) task or migration; call it from on_task_record.
  void observe_task(const task_record& t) {
    ++tasks_;
    if (t.end < t.start) note(fmt::format("{} of request {} ends at {} before it starts at {}", describe(t.task), t.request, t.end, t.start));
    if (t.end < last_time_) note(fmt::format("time went back: a task ended at {} after a callback at {}", t.end, last_time_));
    last_time_ = std::max(last_time_, t.end);
    for (device_id d : t.devices) busy_[d].push_back({t.start, t.end, t.request, t.launch});
    auto& req = requests_[t.request];
    req.spans.push_back({t.start, t.end, t.request, t.launch});
    if (t.ok && t.task.kind != task_kind::migrate) req.done.push_back(t.task);
  }

  /// Records one request's end; call it from on_request_end.
  void observe_end(const request_record& r) {
    auto& req = requests_[r.handle];
    ++req.ends;
    req.finish = r.finish;
    if (r.finish < last_time_) note(fmt::format("time went back: request '{}' ended at {} after a callback at {}", r.spec.id, r.finish, last_time_));
    last_time_ = std::max(last_time_, r.finish);
  }

  /// Task records observed so far (a test can require that the checker saw the run at all).
  [[nodiscard]] std::size_t tasks_observed() const noexcept { return tasks_; }

  /// Every broken invariant found in what was observed and in the final state `st` of the scheduler
  /// (at most 50 messages); empty when the run kept all of them.
  [[nodiscard]] std::vector<std::string> violations(const scheduler_state& st) const {
    std::vector<std::string> out = problems_;
    const auto add = [&](std::string m) {
      if (out.size() < max_messages) out.push_back(std::move(m));
    };
    for (request_handle h = 0; h < st.requests.size(); ++h) {
      const request_record& r = st.requests[h];
      const auto it = requests_.find(h);
      const request_log empty;
      const request_log& log = it == requests_.end() ? empty : it->second;
      const std::string who = fmt::format("request '{}'", r.spec.id);
      if (log.ends != 1) add(fmt::format("{} ended {} times (on_request_end calls)", who, log.ends));
      if (!r.ended()) add(fmt::format("{} has not ended", who));
      if (r.phase == request_phase::dropped && r.drop_reason.empty()) add(fmt::format("{} was dropped without a reason", who));
      // 3. one task at a time, inside [arrival, finish].
      auto spans = log.spans;
      std::sort(spans.begin(), spans.end());
      for (std::size_t i = 0; i < spans.size(); ++i) {
        if (spans[i].start < r.spec.arrival) add(fmt::format("{} ran at {} before it arrived at {}", who, spans[i].start, r.spec.arrival));
        if (r.ended() && spans[i].end > r.finish) add(fmt::format("{} ran until {} after it ended at {}", who, spans[i].end, r.finish));
        if (i > 0 && spans[i - 1].end > spans[i].start) {
          add(fmt::format("{} ran two tasks at once: [{}, {}) and [{}, {})", who, spans[i - 1].start, spans[i - 1].end, spans[i].start, spans[i].end));
        }
      }
      // 4. trajectory order; encode may restart it.
      const int steps = r.spec.steps;
      for (std::size_t i = 0; i < log.done.size(); ++i) {
        const task_desc& t = log.done[i];
        if (t.kind == task_kind::encode) continue;
        const bool follows = i > 0 && (log.done[i - 1].kind == task_kind::encode   ? t == task_desc{task_kind::step, 0}
                                       : log.done[i - 1].kind == task_kind::step   ? (log.done[i - 1].step + 1 == steps ? t.kind == task_kind::decode
                                                                                                                     : t == task_desc{task_kind::step, log.done[i - 1].step + 1})
                                                                                   : false);
        if (!follows) add(fmt::format("{}: {} ran after {}", who, describe(t), i > 0 ? describe(log.done[i - 1]) : std::string("nothing")));
      }
      if (r.phase == request_phase::completed && (log.done.empty() || log.done.back().kind != task_kind::decode)) {
        add(fmt::format("{} completed without a decode as its last task", who));
      }
    }
    // 2. one thing at a time per device.
    for (const auto& [d, spans_in] : busy_) {
      auto spans = spans_in;
      std::sort(spans.begin(), spans.end());
      // The members of one batched step share its launch and its devices: only other launches clash
      // (launch 0: a record not made by the runtime, which clashes with anything).
      std::size_t last = 0;  // the span ending latest so far
      for (std::size_t i = 1; i < spans.size(); ++i) {
        const span& p = spans[last];
        if (p.end > spans[i].start && (p.launch != spans[i].launch || p.launch == 0)) {
          add(fmt::format("device {} ran two things at once: request {} [{}, {}) and request {} [{}, {})", d, p.request, p.start, p.end,
                          spans[i].request, spans[i].start, spans[i].end));
        }
        if (spans[i].end > p.end) last = i;
      }
    }
    for (const auto& [h, log] : requests_) {
      if (h >= st.requests.size()) add(fmt::format("callbacks for request {}, which the scheduler does not have", h));
    }
    return out;
  }

 private:
  static constexpr std::size_t max_messages = 50;
  struct span {
    tick start = 0, end = 0;
    request_handle request = 0;
    launch_id launch = 0;
    bool operator<(const span& o) const noexcept { return start != o.start ? start < o.start : end < o.end; }
  };
  struct request_log {
    std::vector<span> spans;
    std::vector<task_desc> done;  ///< successful tasks (not migrations), in the order they ended
    int ends = 0;
    tick finish = never;
  };

  static std::string describe(const task_desc& t) {
    return t.kind == task_kind::step ? fmt::format("step {}", t.step) : std::string(to_string(t.kind));
  }
  void note(std::string m) {
    if (problems_.size() < max_messages) problems_.push_back(std::move(m));
  }

  std::map<device_id, std::vector<span>> busy_;
  std::map<request_handle, request_log> requests_;
  std::vector<std::string> problems_;
  tick last_time_ = 0;
  std::size_t tasks_ = 0;
};

/// The messages of violations(), one per line (for INFO / a failure message).
[[nodiscard]] inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace paraflex::testing
