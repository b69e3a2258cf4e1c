// paraflex/sim/chrome_trace.hpp - a Chrome trace-event JSON of a run (opens in Perfetto or
// chrome://tracing): one track per GPU, one slice per task or migration, named by request.
//
// The output is valid JSON whatever the request ids hold: quotes, backslashes and control characters
// are escaped, and bytes that are not valid UTF-8 become U+FFFD (ids from the workload reader are
// UTF-8 already; a library caller may pass anything). A failed task is a slice of category "failed".
//
// Several schedulers, one trace (sim/cells.hpp): each cell's recorder attaches with the number of
// its first device in the whole cluster, and append() puts the cells' slices together in cell
// order, so the file does not depend on which thread ran which cell.
#pragma once

#include <iterator>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/utf8.hpp"
#include "paraflex/runtime/scheduler.hpp"

namespace paraflex {

class chrome_trace_recorder {
 public:
  /// Attach to a scheduler: records every task as it ends. `first_device` is added to the
  /// scheduler's device ids: a cell's devices 0..n-1 are devices first_device.. of the cluster.
  template <class Scheduler>
  void attach(Scheduler& s, device_id first_device = 0) {
    s.on_task_record([this, &s, first_device](const task_record& t) { add(t, s.request(t.request).spec.id, first_device); });
  }

  void add(const task_record& t, std::string_view request_id, device_id first_device = 0) {
    for (device_id d : t.devices) {
      slices_.push_back(slice{first_device + d, t.start, t.end, std::string(request_id), t.task, t.ok});
    }
  }
  /// Moves the slices of `other` after this one's (one trace of several schedulers).
  void append(chrome_trace_recorder&& other) {
    if (slices_.empty()) {
      slices_ = std::move(other.slices_);
    } else {
      slices_.insert(slices_.end(), std::make_move_iterator(other.slices_.begin()), std::make_move_iterator(other.slices_.end()));
    }
    other.slices_.clear();
  }
  [[nodiscard]] std::size_t size() const noexcept { return slices_.size(); }

  /// Writes {"traceEvents":[...]} with times in microseconds (the format's native unit).
  void write(std::ostream& os, int gpus) const {
    os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    os << R"({"ph":"M","pid":0,"name":"process_name","args":{"name":"paraflex cluster"}})";
    for (int d = 0; d < gpus; ++d) os << fmt::format(",\n{{\"ph\":\"M\",\"pid\":0,\"tid\":{0},\"name\":\"thread_name\",\"args\":{{\"name\":\"GPU {0}\"}}}}", d);
    for (const auto& s : slices_) {
      const std::string what = s.task.kind == task_kind::step ? fmt::format("step {}", s.task.step) : to_string(s.task.kind);
      const std::string id = json_string(s.request);
      os << fmt::format(",\n{{\"ph\":\"X\",\"pid\":0,\"tid\":{},\"ts\":{},\"dur\":{},\"name\":{},\"cat\":\"{}\",\"args\":{{\"request\":{},\"task\":\"{}\"}}}}",
                        s.device, s.start, s.end - s.start, id, s.ok ? to_string(s.task.kind) : "failed", id, what);
    }
    os << "\n]}\n";
  }

 private:
  struct slice {
    device_id device;
    tick start, end;
    std::string request;
    task_desc task;
    bool ok;
  };
  std::vector<slice> slices_;
};

}  // namespace paraflex
