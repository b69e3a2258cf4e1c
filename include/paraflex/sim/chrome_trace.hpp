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
//
// chrome_trace_recorder keeps every slice in memory until write(); chrome_trace_file writes them to
// the file as the run goes (a million requests make tens of millions of slices), with the same bytes.
//
// A request id is any text and every slice carries it twice (name and args.request), so an id
// longer than max_trace_id_bytes is shortened (trace_id): a 10 MB id made a 1 GB trace of 10 requests.
#pragma once

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <stdlib.h>  // mkstemp
#include <unistd.h>  // unlink, close
#endif

#include <fmt/format.h>

#include "paraflex/core/error.hpp"
#include "paraflex/core/output_file.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/runtime/scheduler.hpp"

namespace paraflex {

/// Request ids up to this many bytes name their slices as they are.
inline constexpr std::size_t max_trace_id_bytes = 256;

/// The id a trace shows for a request: `id` itself up to max_trace_id_bytes, else its first 200 bytes
/// (not cutting a UTF-8 sequence), "...#" and a 64-bit FNV-1a hash of the whole id in 16 hex digits,
/// so that long ids with one prefix still tell their slices apart. Shortening a shortened id
/// changes nothing.
[[nodiscard]] inline std::string trace_id(std::string_view id) {
  if (id.size() <= max_trace_id_bytes) return std::string(id);
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : id) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return fmt::format("{}...#{:016x}", utf8_prefix(id, 200), hash);
}

namespace chrome_trace_detail {

inline void write_header(std::ostream& os, int gpus) {
  os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  os << R"({"ph":"M","pid":0,"name":"process_name","args":{"name":"paraflex cluster"}})";
  for (int d = 0; d < gpus; ++d) os << fmt::format(",\n{{\"ph\":\"M\",\"pid\":0,\"tid\":{0},\"name\":\"thread_name\",\"args\":{{\"name\":\"GPU {0}\"}}}}", d);
}

/// The JSON string literal that names `request`'s slices (trace_id, escaped).
[[nodiscard]] inline std::string quoted_id(std::string_view request) {
  std::string id;
  if (request.size() <= max_trace_id_bytes) append_json_string(id, request);
  else append_json_string(id, trace_id(request));
  return id;
}

/// Appends one slice to `out`: a task (or migration) on one device, named by `id` (from quoted_id).
inline void append_quoted_slice(std::string& out, device_id device, tick start, tick end, std::string_view id, const task_desc& task, bool ok) {
  auto it = std::back_inserter(out);
  it = fmt::format_to(it, ",\n{{\"ph\":\"X\",\"pid\":0,\"tid\":{},\"ts\":{},\"dur\":{},\"name\":{},\"cat\":\"{}\",\"args\":{{\"request\":{},\"task\":\"",
                      device, start, end - start, id, ok ? to_string(task.kind) : "failed", id);
  if (task.kind == task_kind::step) it = fmt::format_to(it, "step {}", task.step);
  else out += to_string(task.kind);
  out += "\"}}";
}

/// Appends one slice to `out`: a task (or migration) of `request` on one device.
inline void append_slice(std::string& out, device_id device, tick start, tick end, std::string_view request, const task_desc& task, bool ok) {
  append_quoted_slice(out, device, start, end, quoted_id(request), task, ok);
}

/// Appends the slices of task `t`, one per device (the scheduler's device d is first_device + d),
/// with the request's name shortened and escaped once for all of them.
inline void append_task_slices(std::string& out, const task_record& t, std::string_view request, device_id first_device) {
  const std::string id = quoted_id(request);
  for (device_id d : t.devices) append_quoted_slice(out, first_device + d, t.start, t.end, id, t.task, t.ok);
}

inline void write_footer(std::ostream& os) { os << "\n]}\n"; }

}  // namespace chrome_trace_detail

class chrome_trace_recorder {
 public:
  /// Attach to a scheduler: records every task as it ends. `first_device` is added to the
  /// scheduler's device ids: a cell's devices 0..n-1 are devices first_device.. of the cluster.
  template <class Scheduler>
  void attach(Scheduler& s, device_id first_device = 0) {
    s.on_task_record([this, &s, first_device](const task_record& t) { add(t, s.request(t.request).spec.id, first_device); });
  }

  void add(const task_record& t, std::string_view request_id, device_id first_device = 0) {
    const std::string shown = trace_id(request_id);  // kept shortened: a slice per device holds a copy
    for (device_id d : t.devices) {
      slices_.push_back(slice{first_device + d, t.start, t.end, shown, t.task, t.ok});
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
    chrome_trace_detail::write_header(os, gpus);
    write_slices(os);
    chrome_trace_detail::write_footer(os);
  }
  /// The slices alone, as write() puts them between its header and footer.
  void write_slices(std::ostream& os) const {
    std::string text;
    for (const auto& s : slices_) {
      text.clear();
      chrome_trace_detail::append_slice(text, s.device, s.start, s.end, s.request, s.task, s.ok);
      os.write(text.data(), static_cast<std::streamsize>(text.size()));
    }
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

/// A trace written to a file while the run goes, byte for byte what chrome_trace_recorder::write()
/// gives for the same run. The file is opened (and its header written) on construction, so a path
/// that cannot be written fails before a long run, not after it; finish() completes it, and a file
/// left unfinished (the run threw) is removed rather than left as invalid JSON.
///
/// With cells (sim/cells.hpp), cell 0 is written as it runs and each other cell to a temporary file
/// beside the trace (on its file system, which must hold the trace anyway; unlinked at once, so
/// nothing is left behind even if the process dies), else from std::tmpfile, else in memory, that
/// finish() appends in cell order: attach(s, c, first_device) from cell c's set-up, on its thread.
/// The file does not depend on which thread ran which cell, and no cell's slices are held in memory.
class chrome_trace_file {
 public:
  /// Opens `path` for a trace of `gpus` devices run as `cells` schedulers. `flag` names where the
  /// path came from in errors ("--trace-out 'x': cannot open for writing (reason)"); an
  /// input_exception when the file cannot be opened.
  chrome_trace_file(std::string path, int gpus, int cells = 1, std::string_view flag = "trace")
      : file_(std::move(path), flag), held_(cells > 1 ? static_cast<std::size_t>(cells - 1) : 0) {
    chrome_trace_detail::write_header(file_.stream(), gpus);
  }

  /// Records every task of `s`, cell `cell` of the run, whose devices are the cluster's from
  /// `first_device` on. Cell 0 (or a run without cells) goes straight to the file.
  template <class Scheduler>
  void attach(Scheduler& s, int cell = 0, device_id first_device = 0) {
    if (cell == 0) {
      s.on_task_record([this, &s, first_device](const task_record& t) { put(t, s.request(t.request).spec.id, first_device, file_.stream()); });
      return;
    }
    held_cell& h = held_.at(static_cast<std::size_t>(cell - 1));
    h.file.reset(open_scratch());
    if (!h.file) {
      h.memory.attach(s, first_device);
      return;
    }
    s.on_task_record([&s, first_device, &h](const task_record& t) {  // on cell `cell`'s thread: touches only h
      chrome_trace_detail::append_task_slices(h.text, t, s.request(t.request).spec.id, first_device);
      if (h.text.size() >= (1u << 16)) h.flush();
    });
  }

  /// Appends the held cells in order and the footer, and closes the file; an input_exception when
  /// anything could not be written (a full disk). Once finished, a second call does nothing.
  void finish() {
    if (!file_.is_open()) return;
    std::ostream& out = file_.stream();
    bool ok = true;
    for (auto& h : held_) {
      if (h.file) {
        ok = h.flush() && ok;
        std::rewind(h.file.get());
        char chunk[1 << 16];
        for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, h.file.get())) > 0;) out.write(chunk, static_cast<std::streamsize>(n));
        ok = !std::ferror(h.file.get()) && ok;
        h.file.reset();  // unlinked already: closing it frees the space
      } else {
        h.memory.write_slices(out);
        h.memory = chrome_trace_recorder{};  // free each cell once written
      }
    }
    chrome_trace_detail::write_footer(out);
    if (!ok) throw input_exception(file_.error("write failed"));  // file_ removes the file
    file_.commit();
  }

 private:
  struct file_closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  struct held_cell {
    std::unique_ptr<std::FILE, file_closer> file;  // its slices as text, or
    chrome_trace_recorder memory;                  // without a temporary file
    std::string text;                              // not yet in `file`
    bool failed = false;
    bool flush() {
      failed = failed || std::fwrite(text.data(), 1, text.size(), file.get()) != text.size();
      text.clear();
      return !failed;
    }
  };

  void put(const task_record& t, std::string_view id, device_id first_device, std::ostream& os) {
    text_.clear();
    chrome_trace_detail::append_task_slices(text_, t, id, first_device);
    os.write(text_.data(), static_cast<std::streamsize>(text_.size()));
  }
  // A file for one cell's slices, already unlinked: beside the trace where the platform allows.
  [[nodiscard]] std::FILE* open_scratch() const {
#if defined(__unix__) || defined(__APPLE__)
    std::string name = file_.path() + ".cell-XXXXXX";
    if (const int fd = ::mkstemp(name.data()); fd >= 0) {
      ::unlink(name.c_str());
      if (std::FILE* f = ::fdopen(fd, "w+b")) return f;
      ::close(fd);
    }
#endif
    return std::tmpfile();
  }
  output_file file_;             // removed if the run never finishes it
  std::string text_;             // cell 0's slice being written
  std::vector<held_cell> held_;  // cells 1.., each written by its own thread
};

}  // namespace paraflex
