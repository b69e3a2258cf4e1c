// paraflex/sim/chrome_trace.hpp - a Chrome trace-event JSON of a run (opens in Perfetto or
// chrome://tracing): one track per GPU, one slice per task or migration, named by request.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "paraflex/runtime/scheduler.hpp"

namespace paraflex {

class chrome_trace_recorder {
 public:
  /// Attach to a scheduler: records every task as it ends.
  template <class Scheduler>
  void attach(Scheduler& s) {
    s.on_task_record([this, &s](const task_record& t) { add(t, s.request(t.request).spec.id); });
  }

  void add(const task_record& t, std::string_view request_id) {
    for (device_id d : t.devices) {
      slices_.push_back(slice{d, t.start, t.end, std::string(request_id), t.task, t.ok});
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return slices_.size(); }

  /// Writes {"traceEvents":[...]} with times in microseconds (the format's native unit).
  void write(std::ostream& os, int gpus) const {
    os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    os << R"({"ph":"M","pid":0,"name":"process_name","args":{"name":"paraflex cluster"}})";
    for (int d = 0; d < gpus; ++d) os << fmt::format(",\n{{\"ph\":\"M\",\"pid\":0,\"tid\":{0},\"name\":\"thread_name\",\"args\":{{\"name\":\"GPU {0}\"}}}}", d);
    for (const auto& s : slices_) {
      const std::string what = s.task.kind == task_kind::step ? fmt::format("step {}", s.task.step) : to_string(s.task.kind);
      os << fmt::format(",\n{{\"ph\":\"X\",\"pid\":0,\"tid\":{},\"ts\":{},\"dur\":{},\"name\":\"{}\",\"cat\":\"{}\",\"args\":{{\"request\":\"{}\",\"task\":\"{}\"}}}}",
                        s.device, s.start, s.end - s.start, escape(s.request), s.ok ? to_string(s.task.kind) : "failed",
                        escape(s.request), what);
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
  static std::string escape(std::string_view s) {
    std::string out;
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\', out += c;
      else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      else out += c;
    }
    return out;
  }
  std::vector<slice> slices_;
};

}  // namespace paraflex
