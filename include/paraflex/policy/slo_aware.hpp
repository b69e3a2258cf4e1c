// paraflex/policy/slo_aware.hpp - deadline-aware continuous scheduling: "edf-best-fit" and "slo-aware".
//
// Both decide at every step boundary (no rounds) and are compositions of the parts in compose.hpp.
//
// edf_best_fit_policy ("edf-best-fit", no parameters) reproduces GF-DiT's headline policy:
//   admit_all + edf_order + smallest_meeting_degree + sticky_placement, spare devices widen.
//   In deadline order each waiting request's next task gets the smallest degree whose estimated
//   finish (migration included) meets its deadline; a doomed request gets the fastest degree that
//   fits; then spare devices go, most urgent first, to a request that gets strictly faster; a
//   request keeps its devices when it keeps its degree. It never drops or defers, so under
//   overload it spends GPU time on requests that miss anyway.
//
// slo_aware_policy ("slo-aware") = slo_admission + priority_edf_order + smallest_meeting_degree
// (with a margin) + sticky_placement, spare devices widen, devices held for running requests:
//   1. Unreachable: a request that cannot meet its deadline even alone at its fastest degree on an
//      empty cluster is dropped ("deadline_unreachable"). It is a miss either way; running it late
//      only takes devices from requests that can still make it (and lengthens the mean latency of
//      completed requests), so dropping it is never worse for SLO attainment. The same holds for a
//      deferred request: it is kept only while it can still make it, then dropped.
//   2. Capacity: at every decision the requests with a deadline (running and waiting) are checked
//      against the cluster in every deadline window, as on a fluid machine of G devices: for each
//      deadline d, the GPU-time still needed by the requests due by d must fit in
//      capacity x G x (d - now). A request's need is the cheapest mix of degrees that meets its
//      deadline from now (TetriServe's step A: as many steps as possible at a cheap degree, the
//      rest at a faster one, on the lower convex hull of GPU-time against step time). When a window
//      overflows, the request set aside is the one of the lowest priority class, then the largest
//      need (Moore-Hodgson's rule, which maximises the number of on-time jobs on one machine). A
//      request set aside is not run: admission=relaxed defers it (it waits and is admitted when
//      room appears, or dropped once unreachable); admission=strict drops it at once
//      ("over_capacity") if it has not started, so its client can go elsewhere; admission=off
//      skips the check. A request alone in its window is always admitted, also when it is alone
//      because the others were set aside, so that some request with a deadline always runs.
//      Measured: running set-aside requests in the background on devices the admitted ones leave
//      idle did worse than deferring them (they occupy devices at the next arrival), so they wait.
//   3. Reserve: a request whose SLO is longer than the mean SLO of the arrivals so far is checked
//      against capacity - reserve, so long jobs cannot fill the cluster and some room stays for
//      the short-deadline requests that arrive next.
//   4. Order: higher priority class first, then the earliest deadline. Requests without a
//      deadline are best effort: they run in the background (on devices the admitted requests
//      leave) and, once older than best_effort_age x their latency alone, are admitted with that
//      virtual deadline, so they are never starved. order=edf leaves the class out of the order
//      (earliest deadline first among the admitted requests): the classes then act only through
//      item 2, which sets the lower class aside first. When the deadlines are far apart it serves
//      every class: 40,000 requests arriving at once with SLOs of 5 s to 4.6 days and three
//      classes, 8 GPUs: 99.2% on time instead of 72.8% (the lower classes 97.5% and 99.99%
//      instead of 48% and 70%). Not the default: under overload with tight SLOs the admitted set
//      is not always feasible, and results.md's section B then loses up to 2.4 points of its top
//      class (docs/results.md, "Order within the admitted requests").
//   5. Sizing with a margin (finish within the first 1 - margin of the time left), placement on
//      the request's own devices first and away from other waiting requests' state, spare devices
//      to admitted requests that get strictly faster, and devices held for running requests that
//      want more (compose_options::hold). Held devices are backfilled (a waiting request runs a
//      task there that ends before the holder's) only on clusters of up to backfill_max_gpus (64).
//      Measured: backfill gains up to 1.5 points on 8 GPUs, is neutral on 16-64, and loses 0.5 on
//      128 and 2-6 on 256-1,024, where requests started on held devices and fed there window
//      after window are abandoned (docs/performance.md, "Backfill over hundreds of GPUs").
//   6. Selective batching (max_batch > 1, TetriServe section 5): a request placed on a group lets
//      waiting requests of its shape whose state is there share its next step, or recruits ones
//      that have not started (compose.hpp, policy/batching.hpp), as long as
//      - every member still finishes within (1 - batch_margin) of its time left. batch_margin
//        defaults to margin + 0.1: a batch that ate into the sizing margin would leave a member
//        whose degree no longer meets sizing's target at its next step, so it would be widened
//        (and migrated). Measured on small FLUX images: 0.1 loses up to 5 points against no
//        batching, 0.3 gains up to 5.5;
//      - each member adds at most (1 - batch_saving) of a step alone to the batched step. A batch
//        of large images saves almost nothing and turns EDF into processor sharing: without this
//        rule Qwen-Image at 512-1536 px lost up to 28 points; with 0.25 no setup of results.md
//        loses more than half a point.
//      Off by default, as in round-based (docs/results.md section D).
//   Parameters (registry): admission=relaxed|strict|off (relaxed), capacity=0.9, reserve=0.1,
//   margin=0.2, chunk=1 (tasks per assignment), best_effort_age=10, widen=1, hold=1,
//   max_batch=1 (1 = no batching; up to 64), batch_margin=margin + 0.1 (at most 0.9),
//   batch_saving=0.25, exact_limit=4096 (below), backfill_max_gpus=64 (0: never backfill),
//   order=priority|edf (priority; item 4).
//
// Cost per decision: the capacity check walks the R unfinished requests with a deadline, kept in
// deadline order between calls (no sort; arrivals are merged in by the next check), each with a copy
// of what its need is made of (steps and encode/decode time left, hull, deadline, class), taken again
// only when its task ends (on_task_end) or a device is lost; with every hook forwarded the walk reads
// no request record. A need is then a comparison while the request's cheapest degree still meets its
// deadline, else a point on the line between the two hull points it lay between last time (kept in
// the copy as steps x cost, steps x time and the slope: a multiply-add; with two dependent divisions
// instead, needs were a third of a check over 1,024 GPUs); only when the budget moves
// past them is its shape's hull (computed once per shape) walked on from there (as time passes a
// need only moves towards faster points). Moore-Hodgson's heap is
// built only when a window first overflows: O(R) when every window fits, O(R log R) at worst. A
// job in it is one 128-bit key (class, need, handle); while every job fits one word as (the class's
// rank among the classes seen, need, handle), with the handle in as few bits as the largest one
// needs, the heap holds those words: half the moves, one comparison. (Until session 43 only while
// every job was of one class with a need below 2^32: the burst file's five classes kept its checks
// on whole jobs; in words it takes a tenth less CPU time, docs/performance.md "One word per job".)
// Under overload most requests walked are set aside at every check: the one just added goes
// without entering the heap when it is the first to go, else it takes the top's place in one
// sift-down (200,000 requests at load 10 on 8 GPUs: the check's instructions down by a quarter).
// The heap is 4-ary (sift_down): under overload a check pops about a hundred jobs, and a pop then
// waits on half as many levels (burst file: 15.1-15.2 -> 14.3-14.5 CPU s; 8-ary lost it again).
// First 1,500 rows of the 1M file on 1,024 GPUs (about 240 requests walked per check): 39,500
// instructions per check, from 67,000 with three-field heap jobs and a hull walk per need.
// Once a check can neither stand (below) nor fit, and its heap holds words, what is left of its
// walk only decides verdicts: walk_lean() takes it on, the same steps without the bookkeeping for
// standing checks, in a function of its own whose state stays in registers (inside begin() a
// dozen values were reloaded from the stack at every entry, about 155 instructions per entry).
// On the burst file of docs/performance.md (overloaded at nearly every check) a quarter less CPU
// time, the same JSON ("A lean walk").
// Exact regime: up to slo_admission::exact_limit (4096) such requests, the check runs at every
// decision - every setup of docs/results.md stays there, with the same schedules as a check at every
// decision. Above it, the check runs once every ceil(R / exact_limit) decisions: in between the
// verdicts of the last check stand (a request that becomes unreachable is dropped at the next one)
// and requests that arrive wait for the next check (deferred), so a decision costs about
// exact_limit requests' worth on average, and one decision in ceil(R / exact_limit) the whole pass.
// With every hook forwarded, a decision counts only while something changed: the count is at most
// the arrivals and ends since the last check plus one per thousandth of the median SLO of simulated
// time passed. Where SLOs are seconds, a decision is that far apart and the count is as before; a
// batch with SLOs of days makes thousands of decisions per thousandth of its median SLO, and between
// two ends nothing changes that a check would act on: its 200,000 requests on 8 GPUs took 130 s with
// a check every ceil(R / exact_limit) decisions, 8.0-8.4 s with one every ceil(R / exact_limit) ends, and
// the same attainment (docs/performance.md, "Changes, not decisions").
// A check is never skipped while nothing runs (no task end would come to bring the next one).
// In either regime a check is also skipped, exactly, while the last one is known to give the same
// verdicts: it set nothing aside, every need was on its cheapest degree and every window fitted
// below its room (not by the alone rule), and since then no request arrived, no task failed and no
// device was lost. Needs then only fall (a task end leaves fewer steps; an end removes one), and
// rooms shrink linearly with time, so every window keeps fitting until the earliest time one of
// them could touch its room, or a need could leave its cheapest degree (clean_until_, with a margin
// for rounding). A need past its cheapest degree grows with time (and falls with progress: fewer
// steps, more time per step), so with one the check stands only up to a horizon, from the needs as
// they will be then; the horizon doubles when it held and halves when it did not, and is tried only
// after a check that set nothing aside. Under light load most decisions skip the walk
// (docs/performance.md); under overload windows overflow and every decision checks.
// The registry's exact_limit=N sets the limit: a smaller one trades exactness for speed where
// hundreds of requests are tracked (docs/performance.md, "Exact limit").
// Deep queues: under overload the windows that overflow are the first ones; a queue thousands deep
// (long SLOs waiting their turn) lies beyond them, and a walk of it all decides nothing there. So the
// walk stops at an entry from which every later window fits, for sure: with each entry at the most
// it can need up to a time bound_until_ (bound_of: its need on the cheapest degree when that stays
// fast enough until then, else every step at its fastest point, `most`), need so far plus those
// bounds of the entries up to window j stays within (capacity - reserve) x G x (deadline_j - now),
// and no entry from there on can be unreachable yet (deadline - time alone at the fastest degree > now).
// Both are read off bounds by list position (tail_bounds: prefix sums of bound_of, the least room left
// over the windows from each position on, the earliest time one becomes unreachable), valid until
// the list's positions move (a fold, ended entries cleaned up, devices lost) or the time passes
// bound_until_, since needs only fall and those times only come later as requests progress; built
// again at the first stop tried after that (a clean check never needs them). Arrivals do not move
// them: they join fresh_, a short list walked alongside (in the same order), and every fresh entry
// not walked yet counts in every window past the stop at its bound, and by when it becomes
// unreachable (fresh_bounds); fresh_ is folded in
// once longer than 32 + R/32. The entries past the stop keep the verdict admit, as a whole walk
// would give them; a stop is tried only once the check cannot be clean (nothing past it could then
// change what the check decides), and only with every hook forwarded. While the horizon is tried,
// the same test is made at the horizon with the needs there (need_h): the rest then fits until the
// horizon, so the check stands until it, as a whole walk keeping clean_h would find.
// Requests end roughly in deadline order, so ended entries gather at the list's head until the
// next clean-up; the walk starts past them (front_).
// 200,000 rows on 8 GPUs at load 2, three in ten without a deadline, SLOs from 1e-6 to 1e7 s (the
// list ~4,000 deep for most of the run): 77 -> 17 s with the stop, -> 12 s with fresh_ (merging
// each arrival into the list and building its bounds again had taken two fifths of the check's
// time), -> about 6.5 s with the stop at the horizon (three quarters of the entries walked were
// in checks trying the horizon, which walked the whole list) and the head skipped (two fifths of
// the entries walked had ended), the same schedule (docs/performance.md). On the burst file of
// docs/performance.md (load 10, five classes, bursts of 500) the walk went on 160 entries past the
// last window that overflowed while the bounds were `most`; with bound_of, 33 (720 -> 594 entries
// walked per check).
// Verdicts are stamped with the pass that gave them (no per-call reset), best effort is judged on the
// spot. The walk of the composed policy then costs what it hands out (compose.hpp).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/registry.hpp"

namespace paraflex {

enum class admission_mode : unsigned char { off, relaxed, strict };

/// The admission part of slo-aware (see the header comment, items 1-4).
class slo_admission {
 public:
  admission_mode mode = admission_mode::relaxed;
  double capacity = 0.9;        ///< share of the devices that admitted work may plan on
  double reserve = 0.1;         ///< taken off capacity for requests with a longer-than-mean SLO
  double best_effort_age = 10;  ///< best effort is admitted after this many times its latency alone

  /// Above this many unfinished requests with a deadline, the capacity check runs once every
  /// ceil(R / exact_limit) decisions instead of at every one (see "Cost per decision" above).
  std::size_t exact_limit = 4096;

  void on_arrival(const scheduler_view& v, request_handle h) {
    if (seen_.size() <= h) seen_.resize(static_cast<std::size_t>(h) + 1, 0);
    if (seen_[h]) return;
    seen_[h] = 1;
    ++known_;
    const auto& r = v.request(h);
    if (!r.has_deadline()) return;
    slo_sum_ += static_cast<double>(r.spec.slo);
    ++slo_count_;
    ++slo_log2_[std::bit_width(static_cast<std::uint64_t>(std::max<tick>(r.spec.slo, 1)))];
    track(v, h);
    ++changes_;
    // Waits for the next check (the next begin() when every decision checks).
    set_verdict(h, verdict::deferred);
  }
  void on_request_end(const scheduler_view&, request_handle h) {
    if (h >= seen_.size() || !seen_[h]) return;  // ended before it arrived (cancelled)
    seen_[h] = 0;
    --known_;
    if (h < mark_.size()) mark_[h] |= ended;
    if (h < tracked_.size() && tracked_[h]) ++ended_in_list_, ++changes_;  // its entry stays in the list until the next clean-up
  }
  void on_task_end(const scheduler_view&, request_handle h, bool ok) {
    task_hooks_ = true;
    if (h < mark_.size()) mark_[h] |= moved;
    if (!ok) clean_ = false;  // a failed task may be run again: its need did not fall
  }

  void begin(const scheduler_view& v) {
    const tick now = v.now();
    // Requests this part was not told about (a host without on_arrival): tracked now.
    const bool told = known_ == v.waiting().size() + v.running().size();
    if (!told) {
      for (const handle_set* list : {&v.running(), &v.waiting()}) {
        for (request_handle h : *list) {
          if (v.request(h).has_deadline()) track(v, h);
        }
      }
    }
    const int usable = v.usable_device_count();
    // The last check still holds (see "In either regime" above): its verdicts stand, exactly.
    if (clean_ && told && task_hooks_ && pending_.empty() && usable == hull_devices_ && now >= clean_from_ && now <= clean_until_) {
      ++clean_skips_;
      return;
    }
    clean_ = false;
    const std::size_t tracked = by_deadline_.size() - dead_ + fresh_.size() + pending_.size();
    // Skipped only while a task is in flight: its end brings the next decision, so deferred
    // newcomers cannot stall a run with nothing else to wake it. With every hook forwarded, a
    // decision counts towards the next check only while something changed ("Cost per decision" above).
    if (tracked > exact_limit && pass_ > 0 && usable == hull_devices_ && !v.running().empty()) {
      ++skipped_;
      const std::size_t since = told && task_hooks_ ? std::min(skipped_, changes_since_check(now)) : skipped_;
      if ((since + 1) * exact_limit < tracked) return;  // the verdicts of the last check stand
    }
    skipped_ = 0;
    changes_ = 0;
    last_check_at_ = now;
    ++pass_;  // verdicts of earlier passes no longer count: every request is admitted unless set aside below
    // With every hook called (arrivals, ends, task ends), the marks say which requests ended or moved
    // on, and the walk never reads the requests' records (a cache miss each, at a large R).
    const bool trust = told && task_hooks_;
    // Moore-Hodgson over the deadline windows, walking the requests by deadline (kept sorted
    // across calls: deadlines never change, so no sort per decision; new ones are merged in first);
    // ended ones are passed over, and removed once they are an eighth of the list.
    // A device was lost: new hulls, and every entry is taken again (as in a fresh pass).
    const bool lost = usable != hull_devices_;
    if (lost) hulls_.clear(), hull_devices_ = usable, tail_valid_ = false;
    const double devices = static_cast<double>(usable);
    const double long_limit = (capacity - reserve) * devices, short_limit = capacity * devices;
    // A request whose SLO is above the mean of the arrivals so far is checked against long_limit.
    const double long_above = slo_count_ > 0 ? slo_sum_ / static_cast<double>(slo_count_) : std::numeric_limits<double>::infinity();
    drops_.clear();
    if (!pending_.empty()) {
      // Arrivals join fresh_, a short list of their own, so that by_deadline_'s positions (and the
      // tail stop's bounds by position) stay put; fresh_ is folded in once it grows long.
      // Sorted by 16-byte keys (deadline, handle, slot), then merged: an entry is over 100 bytes, and
      // a burst of 100,000 arrivals sorted in place moved each one log R times (~75% of a cold call).
      // (deadline, handle) is unique, so this is the order a sort of the entries would give.
      pending_keys_.clear();
      for (std::size_t i = 0; i < pending_.size(); ++i) {
        pending_keys_.emplace_back(pending_[i].deadline, std::uint64_t{pending_[i].h} << 32 | i);
      }
      std::sort(pending_keys_.begin(), pending_keys_.end());
      next_.clear();
      next_.reserve(fresh_.size() + pending_.size());
      auto old = fresh_.cbegin();
      for (const auto& key : pending_keys_) {
        const entry& e = pending_[key.second & 0xFFFFFFFFu];
        while (old != fresh_.cend() && by_deadline(*old, e)) next_.push_back(*old++);
        next_.push_back(e);
      }
      next_.insert(next_.end(), old, fresh_.cend());
      fresh_.swap(next_);
      pending_.clear();
      if (fresh_.size() > fresh_fold_at()) fold_fresh();
      else fresh_bounds();
    }
    if (lost) fold_fresh();  // every entry is taken again below: the fresh bounds would be stale
    // The loop keeps what it reads in locals (the compiler cannot: the stores below may alias members).
    const std::size_t n = by_deadline_.size(), fn = fresh_.size();
    if (heap_.size() < n + fn) heap_.resize(n + fn), narrow_.resize(n + fn);  // never shrink: no per-call initialisation
    entry* const es = by_deadline_.data();
    entry* const fs = fresh_.data();
    const bool off = mode == admission_mode::off;
    // The heap of admitted jobs: the order they leave it in is fixed by set_aside_first, a total
    // order, whatever the heap's layout. While every job fits one word as (class rank, need, handle)
    // - the class's rank among the classes so far, the handle in as many bits as the largest one
    // needs, the need in the rest - the heap holds those words, in narrow_ (half the moves, one
    // comparison); they compare as the jobs do. A job that does not fit (a need of 2^(need_bits) or
    // more, or a class past the first max_ranked_classes) moves the heap to whole jobs in heap_ (wide).
    job* const heap = heap_.data();
    std::uint64_t* const narrow = narrow_.data();
    // Every handle is below tracked_.size().
    const auto handle_bits = static_cast<unsigned>(std::bit_width(std::max<std::size_t>(tracked_.size(), 1)));
    const auto class_bits = static_cast<unsigned>(std::bit_width(class_rank_.size() > 1 ? class_rank_.size() - 1 : 0));
    const unsigned need_bits = 64 - handle_bits - class_bits;  // at least 64 - 33 - 8
    const std::uint64_t handle_mask = (std::uint64_t{1} << handle_bits) - 1;
    const std::uint64_t need_mask = (std::uint64_t{1} << need_bits) - 1;  // need_bits < 64: a handle takes a bit at least
    const std::uint64_t* const rank_part = class_rank_part_.data();
    bool wide = too_many_classes_;
    // The heap is built only when a window first overflows (make_heap, then one push per job).
    bool heaped = false;
    std::size_t dead = 0, top = 0;  // dead: entries of ended requests passed; top: jobs in the heap
    double need = 0;
    // A job set aside is deferred, or rejected (strict) if it has not started (set_aside).
    const bool strict = mode == admission_mode::strict;
    const std::uint64_t deferred = pass_ << 2 | static_cast<std::uint64_t>(verdict::deferred);
    const set_aside_as aside{v, strict, deferred};
    const auto job_of = [](const job& j) { return j; };
    const auto lo_first = [](std::uint64_t a, std::uint64_t b) noexcept { return a < b; };
    // A narrow key back as its job.
    const auto unpack = [&](std::uint64_t key) {
      const std::uint64_t w = key >> handle_bits & need_mask;
      const std::uint64_t r = class_bits > 0 ? key >> (64 - class_bits) : 0;
      return make_job(class_by_rank_[r], static_cast<tick>(w), static_cast<request_handle>(key & handle_mask));
    };
    // Whether this check can stand for later ones (clean_), and until when.
    bool clean = trust && !off;
    tick clean_until = std::numeric_limits<tick>::max();
    // With a need past its cheapest degree (it grows with time), the check can still stand up to a
    // horizon: needs only grow between task ends, so their values at the horizon bound them until
    // then. Tried only after a check that set nothing aside (under overload it would cost a second
    // need per request for nothing).
    const tick horizon = now + clean_horizon_;
    bool clean_h = clean && last_fitted_;
    double need_h = 0;  // every need at the horizon, summed in deadline order
    bool fitted = !off;  // this check sets nothing aside and uses no alone rule
    // The tail stop (see "Deep queues" above): the walk ends at an entry from which every window fits
    // with each entry at the most it can need until bound_until_, and none can be unreachable yet.
    const double least_share = std::min(long_limit, short_limit);
    const bool may_stop = trust && !lost && !off && least_share > 0;
    // by_deadline_ and fresh_ walked as one list in (deadline, handle) order: es[i] and fs[fi] next.
    // Requests end roughly in deadline order, so ended entries gather at the list's head (on the
    // deep-queue files, 36-44% of the entries walked): the walk starts past them. front_ is back
    // to 0 whenever positions move (fold_fresh, which the clean-up calls first).
    if (trust) {
      while (front_ < n && (mark_[es[front_].h] & ended) != 0) ++front_;
    }
    std::size_t i = trust ? front_ : 0, fi = 0;
    // Once the check can neither stand nor fit, and keeps narrow keys, the rest of the walk only
    // decides verdicts: walk_lean does that with nothing else to keep (it hands back a job that does
    // not fit a narrow key).
    const bool may_lean = trust && !lost && !off;
    for (;;) {
      if (may_lean && !clean && !clean_h && !fitted && !wide) {
        lean_walk c{v, now, long_above, long_limit, short_limit, least_share, need_mask, handle_bits, rank_part, narrow,
                    es, n, fs, fn, may_stop, aside, i, fi, top, dead, need, heaped};
        const bool done = walk_lean(c);
        i = c.i, fi = c.fi, top = c.top, dead = c.dead, need = c.need, heaped = c.heaped;
        if (done) break;
      }
      entry* next = nullptr;
      if (fi < fn && (i == n || by_deadline(fs[fi], es[i]))) {
        next = fs + fi++;
      } else if (i < n) {
        // While the horizon is tried, at = the horizon and need = the needs there: every later window
        // then fits up to the horizon too (needs grow with time up to their bounds, rooms shrink), so
        // the check stands until then, as a whole walk that kept clean_h would say.
        if (may_stop && !clean && i % 8 == 0 && stops_at(i, fi, clean_h ? horizon : now, clean_h ? need_h : need, least_share)) {
          horizon_stops_ += clean_h;
          break;
        }
        next = es + i++;
      } else {
        break;
      }
      entry& e = *next;
      if (trust) {
        const unsigned char m = mark_[e.h];
        if (m & ended) {
          ++dead;
          continue;
        }
        if (m != 0 || lost) refresh(v, e);
      } else {
        const request_record& r = v.request(e.h);
        if (r.ended()) {
          ++dead;
          continue;
        }
        if (e.position != r.position || lost) refresh(v, e);
      }
      const tick w = need_at(e, now);
      if (now > e.cheap_until) clean = false;  // a need past its cheapest degree grows with time
      else clean_until = std::min(clean_until, e.cheap_until);
      if (clean_h) {
        const tick wh = horizon <= e.cheap_until ? e.w_cheap : need_late_of_copy(e, horizon);
        if (wh < 0) clean_h = false;
        else need_h += static_cast<double>(wh) + 1;  // + 1: a tick of rounding per need
      }
      if (w < 0) {  // too late even alone at the fastest degree
        clean = clean_h = fitted = false;
        unreachable(v, e.h);
        continue;
      }
      if (off) continue;
      std::uint64_t key = 0;  // the job's narrow key
      if (!wide) {
        const auto uw = static_cast<std::uint64_t>(w);
        if ((uw & ~need_mask) == 0) {
          key = narrow_key(rank_part, e.cls, uw, handle_bits, e.h);
        } else {
          for (std::size_t k = 0; k < top; ++k) heap[k] = unpack(narrow[k]);
          wide = true;
        }
      }
      need += static_cast<double>(w);
      // A request alone in its window always fits: only competition sets one aside.
      const double share = share_of(e, long_above, long_limit, short_limit);
      const double room = share * static_cast<double>(e.deadline - now);
      if (clean) {
        // The window fits until need reaches share x (deadline - t): a tick and a relative 1e-9
        // early, so that rounding can never make a skipped check disagree with a real one.
        if (need <= room && share > 0) {
          const double fits_for = need / share * (1 + 1e-9) + 2;
          clean_until = std::min(clean_until, e.deadline - static_cast<tick>(std::ceil(fits_for)));
        } else {
          clean = false;  // fits only by the alone rule, or overflows
        }
      }
      if (clean_h && !(share > 0 && need_h + 2 <= share * static_cast<double>(e.deadline - horizon) * (1 - 1e-9))) clean_h = false;
      if (!(need <= room)) clean_h = fitted = false;
      if (need <= room || need <= static_cast<double>(w)) {  // need <= limit below
        if (wide) {
          const job added = make_job(e.class_key, w, e.h);
          heap[top] = added;
          if (heaped) sift_up(heap, top, added, set_aside_first);
        } else {
          narrow[top] = key;
          if (heaped) sift_up(narrow, top, key, lo_first);
        }
        ++top;
        continue;
      }
      const double limit = std::max(room, static_cast<double>(w));
      if (wide) {
        if (!heaped) make_heap(heap, top, set_aside_first), heaped = true;
        std::tie(need, top) = overflow(heap, make_job(e.class_key, w, e.h), set_aside_first, job_of, limit, need, top, aside);
      } else {
        if (!heaped) make_heap(narrow, top, lo_first), heaped = true;
        std::tie(need, top) = overflow(narrow, key, lo_first, narrow_need_and_handle{handle_bits, need_mask, handle_mask}, limit, need, top, aside);
      }
    }
    clean_ = clean && clean_until >= now;
    clean_until_ = clean_until;
    if (!clean_ && last_fitted_ && trust && !off) {  // the horizon was tried: grow it when it held, else shrink it
      if (clean_h && horizon > now) clean_ = true, clean_until_ = horizon;
      clean_horizon_ = clean_h ? std::min<tick>(clean_horizon_ * 2, max_horizon) : std::max<tick>(clean_horizon_ / 2, 1000);
    }
    clean_from_ = now;
    last_fitted_ = fitted;
    // Ended requests' entries stay where they are (skipped above) until they are an eighth of the
    // list: closing each gap at once copied every later entry, at every check after an end. With
    // the hooks, the ends counted so far are those a whole walk would pass.
    dead_ = trust ? ended_in_list_ : dead;
    if (dead_ > n / 8) {
      fold_fresh();  // so that every ended entry is in by_deadline_ (and the walk starts at its head again)
      std::erase_if(by_deadline_, [&](const entry& e) { return trust ? (mark_[e.h] & ended) != 0 : v.request(e.h).ended(); });
      dead_ = 0;
      ended_in_list_ = 0;
      tail_valid_ = false;  // positions moved
    }
  }

  /// How many times begin() has run the capacity check (fewer than its calls above exact_limit).
  [[nodiscard]] std::uint64_t checks() const noexcept { return pass_; }
  /// How many begin() calls skipped the check because the last one was known to still hold.
  [[nodiscard]] std::uint64_t clean_skips() const noexcept { return clean_skips_; }
  /// How many checks ended their walk early because the rest of the list was known to fit.
  [[nodiscard]] std::uint64_t tail_stops() const noexcept { return tail_stops_; }
  /// How many of those stopped while trying the horizon: the check then stands until the horizon.
  [[nodiscard]] std::uint64_t horizon_stops() const noexcept { return horizon_stops_; }

  /// The requests begin() judged unreachable or rejected: composed_policy drops them at every call,
  /// wherever they stand in the order.
  [[nodiscard]] const std::vector<request_handle>& pending_drops() const noexcept { return drops_; }

  [[nodiscard]] admission judge(const scheduler_view& v, request_handle h) const {
    // Only requests with a deadline are tracked and get verdicts: for them no record is read.
    if (h < verdict_.size() && (verdict_[h] >> 2) == pass_) {
      switch (static_cast<verdict>(verdict_[h] & 3)) {
        case verdict::deferred: return admission::defer();
        case verdict::unreachable: return admission::drop("deadline_unreachable");
        case verdict::reject: return admission::drop("over_capacity");
        case verdict::admit: break;
      }
      return admission::admit();
    }
    if ((h < tracked_.size() && tracked_[h]) || v.request(h).has_deadline()) return admission::admit();
    // Best effort: in the background until its virtual deadline.
    return priority_edf_order::effective_deadline(v, h, best_effort_age) > v.now() ? admission::background() : admission::admit();
  }

  /// GPU-time (device x microseconds) h still needs to meet its deadline from now on, running its
  /// steps at the cheapest mix of degrees that is fast enough (as many steps as possible on the
  /// cheaper degree, TetriServe's step A, priced on the lower convex hull of cost against time);
  /// -1 when even the fastest degree is too slow.
  [[nodiscard]] tick demand(const scheduler_view& v, request_handle h) {
    if (hull_devices_ < 0) hull_devices_ = v.usable_device_count();  // begin() refreshes it
    const auto& hull = cost_hull(v, h);
    if (hull.empty()) return -1;
    const auto& r = v.request(h);
    const tick slack = r.deadline() - v.now();
    const auto steps = static_cast<double>(r.steps_remaining());
    const int fast = hull.back().k;
    const tick stages = v.remaining_time(h, fast) - static_cast<tick>(r.steps_remaining()) * v.step_time(h, fast);
    const double budget = static_cast<double>(slack - stages);  // for the steps
    if (budget < steps * static_cast<double>(hull.back().time)) return -1;
    // hull: by growing cost and shrinking time; find the first point fast enough (steps x its time
    // within the budget; point 0 when no steps are left).
    std::size_t lo = 0, hi = hull.size() - 1;
    while (steps > 0 && lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (steps * static_cast<double>(hull[mid].time) <= budget) hi = mid;
      else lo = mid + 1;
    }
    // The mix of the slower, cheaper point lo-1 and point lo that spends the budget (in need_late's
    // arithmetic: the same value to the last bit).
    const hull_point& b = hull[lo];
    const double slope = lo > 0 ? mix_slope(hull[lo - 1], b) : 0.0;
    return static_cast<tick>(steps * static_cast<double>(b.cost) + (budget - steps * static_cast<double>(b.time)) * slope) +
           static_cast<tick>(fast) * stages;
  }


 private:
  enum class verdict : unsigned char { admit, deferred, unreachable, reject };
  struct hull_point {
    int k;
    tick time;  ///< one step on k devices
    tick cost;  ///< k x time
  };
  // A job of the heap as one 128-bit key (hi, lo) = (class, need, handle) packed so that comparing
  // keys compares those in turn: two integer comparisons instead of three fields' branches.
  struct job {
    std::uint64_t hi;  ///< ~(priority with its sign bit flipped) << 32 | the need's upper 32 bits
    std::uint64_t lo;  ///< the need's lower 32 bits << 32 | handle
  };
  // A class as job::hi's upper half: lower classes are larger (the sign bit flipped, then all bits).
  static std::uint64_t class_key_of(int priority) noexcept {
    return std::uint64_t{~(static_cast<std::uint32_t>(priority) ^ 0x80000000u)} << 32;
  }
  // need >= 0 (requests with no way to finish are not in the heap).
  static job make_job(std::uint64_t class_key, tick w, request_handle h) noexcept {
    const auto uw = static_cast<std::uint64_t>(w);
    return {class_key | uw >> 32, uw << 32 | h};
  }
  // A job as one word (begin() says when it fits): its class's rank as rank_part holds it, the need
  // (uw, within the need bits), the handle in the low handle_bits.
  static std::uint64_t narrow_key(const std::uint64_t* rank_part, std::uint32_t cls, std::uint64_t uw, unsigned handle_bits,
                                  request_handle h) noexcept {
    return rank_part[cls] | uw << handle_bits | h;
  }
  // A word back as a job for overflow(), which reads only its need and handle: no class, so no
  // lookup (begin()'s unpack restores the class when the heap turns wide).
  struct narrow_need_and_handle {
    unsigned handle_bits;
    std::uint64_t need_mask, handle_mask;
    job operator()(std::uint64_t key) const noexcept {
      return make_job(0, static_cast<tick>(key >> handle_bits & need_mask), static_cast<request_handle>(key & handle_mask));
    }
  };

  // Heap order: the top is set aside first - the lowest class, then the largest need, then the
  // later arrival (the largest handle). (An object, not a function: the heap algorithms inline it.)
  static constexpr auto set_aside_first = [](const job& a, const job& b) noexcept {
#if defined(__SIZEOF_INT128__)
    // One 128-bit comparison (cmp, sbb): no branch on hi, whose outcome is a coin toss in a heap
    // of several classes.
    __extension__ using wide_key = unsigned __int128;
    return (wide_key{a.hi} << 64 | a.lo) < (wide_key{b.hi} << 64 | b.lo);
#else
    return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
#endif
  };
  // The heap is 4-ary: half the levels of a binary one, and a node's four children lie side by side
  // (one or two cache lines), so a sift-down waits on half as many dependent loads; a push still
  // climbs rarely. Pops and sift-downs were a quarter of a check's time under overload.
  static constexpr std::size_t arity = 4;
  // x put in slot i of heap[0..n) and sifted down (std::pop_heap's step without its sift-up).
  template <class T, class Before>
  static void sift_down(T* heap, std::size_t n, const T x, Before before, std::size_t i = 0) noexcept {
    for (;;) {
      const std::size_t c = arity * i + 1;
      std::size_t first;  // the child set aside first
      if (c + 3 < n) {  // all four: a tournament without branches
        const std::size_t a = c + static_cast<std::size_t>(before(heap[c], heap[c + 1]));
        const std::size_t b = c + 2 + static_cast<std::size_t>(before(heap[c + 2], heap[c + 3]));
        first = before(heap[a], heap[b]) ? b : a;
      } else if (c < n) {
        first = c;
        for (std::size_t k = c + 1; k < n; ++k) first = before(heap[first], heap[k]) ? k : first;
      } else {
        break;
      }
      if (!before(x, heap[first])) break;
      heap[i] = heap[first];
      i = first;
    }
    heap[i] = x;
  }
  // heap[0..n) put in heap order (std::make_heap).
  template <class T, class Before>
  static void make_heap(T* heap, std::size_t n, Before before) noexcept {
    for (std::size_t i = n > 1 ? (n - 2) / arity + 1 : 0; i-- > 0;) sift_down(heap, n, heap[i], before, i);
  }
  // x, to be stored at heap[i], sifted up (std::push_heap).
  template <class T, class Before>
  static void sift_up(T* heap, std::size_t i, const T x, Before before) noexcept {
    while (i > 0) {
      const std::size_t parent = (i - 1) / arity;
      if (!before(heap[parent], x)) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = x;
  }

  // Arrivals and ends since the last check, plus one for each thousandth of the median SLO of
  // simulated time passed (the median within a factor of two: from the SLOs' binary magnitudes).
  [[nodiscard]] std::size_t changes_since_check(tick now) noexcept {
    if (per_change_of_ != slo_count_) {  // found again only after an arrival (a batch: once for millions of decisions)
      std::uint64_t below = 0;
      int magnitude = 0;  // the median SLO is in [2^(magnitude - 1), 2^magnitude) ticks
      while (magnitude < 64 && (below += slo_log2_[magnitude]) * 2 <= slo_count_) ++magnitude;
      per_change_ = std::max(1.0, std::ldexp(1.0, magnitude - 1) / 1000);
      per_change_of_ = slo_count_;
    }
    const double passed = static_cast<double>(now > last_check_at_ ? now - last_check_at_ : 0) / per_change_;
    return changes_ + static_cast<std::size_t>(std::min(passed, 1e15));
  }

  void set_verdict(request_handle h, verdict x) {
    if (verdict_.size() <= h) verdict_.resize(static_cast<std::size_t>(h) + 1, 0);
    verdict_[h] = pass_ << 2 | static_cast<std::uint64_t>(x);
  }

  // What the walk needs of a request, copied out of the view: its need at any time is a function of
  // these until its next task ends (position) or a device is lost (then every entry is refreshed).
  // What every pass reads comes first (48 bytes); the rest only once the cheapest degree is too slow.
  struct entry {
    tick deadline;
    tick cheap_until;     ///< up to this time the cheapest hull point is fast enough: need = w_cheap
    tick w_cheap;         ///< (no degree fits: cheap_until = max, w_cheap = -1, unreachable)
    double slo;
    request_handle h;
    std::uint32_t cls;        ///< its class's index in class_rank_ (none past max_ranked_classes)
    std::uint64_t class_key;  ///< class_key_of(priority)
    // need_late(): the request...
    double steps;         ///< steps remaining
    tick stages;          ///< time of the rest (encode, decode) at the fastest degree
    double min_budget;    ///< steps x time of the fastest point: less time than this, unreachable
    int fast;             ///< the fastest degree on the hull
    std::uint32_t shape;  ///< hulls_ index
    // What tail_bounds() reads (taken again with the rest at refresh()):
    double most;           ///< the most it can need while reachable: every step at the fastest point (bound_of)
    double alone_fastest;  ///< stages + min_budget: unreachable once less time is left (+inf: always)
    // ... and the hull segment its need was on last time (time only moves it towards faster points):
    // point (b) and the one before it (a), as the line the need lies on: steps x b's cost, plus
    // (budget - steps x b's time) x slope. It stays there while budget_above <= budget < budget_below.
    std::uint32_t point = 0;
    std::uint32_t position;  ///< the request's position these were taken at (refresh() when it changes)
    double budget_above, budget_below;  ///< steps x b's time, -inf for the fastest; steps x a's time, +inf for point 0
    double steps_cost, steps_time, slope;  ///< steps x b's cost, steps x b's time, (a's cost - b's) / (a's time - b's)
  };

  // The share of its window's time a request's window may fill: long_limit for SLOs above the
  // running mean (long_above), else short_limit.
  static double share_of(const entry& e, double long_above, double long_limit, double short_limit) noexcept {
    return e.slo > long_above ? long_limit : short_limit;
  }

  // What set_aside needs of the check.
  struct set_aside_as {
    const scheduler_view& v;
    bool strict;              // admission_mode::strict
    std::uint64_t deferred;   // verdict_'s word for deferred in this pass
  };
  // Sets h aside: deferred, or rejected (strict) if it has not started.
  void set_aside(const set_aside_as& a, request_handle h) {
    if (a.strict && a.v.request(h).first_start == never) set_verdict(h, verdict::reject), drops_.push_back(h);
    else verdict_[h] = a.deferred;  // sized by track()
  }
  // A window overflowed as `added` (need already counted) joined the heap h[0..top): the same removals
  // as a push and pops, cheaper (under overload most requests walked are set aside at every check,
  // one per request added once the windows are full): added goes at once when it is first in line,
  // else it takes the top's place in one sift-down; then the top goes while need > limit. Returns
  // need and top after. as_job(x) is x as a job (a narrow key unpacked). Out of line, as stops_at: it
  // runs at a few entries in a hundred, and inlined into walk_lean it took the loop's registers.
  template <class T, class Before, class AsJob>
  [[nodiscard, gnu::noinline]] std::pair<double, std::size_t> overflow(T* h, const T added, Before before, AsJob as_job, double limit, double need,
                                                        std::size_t top, const set_aside_as& a) {
    const auto out = [&](const T x) {
      const job j = as_job(x);
      set_aside(a, static_cast<request_handle>(j.lo));
      need -= static_cast<double>(static_cast<tick>(j.hi << 32 | j.lo >> 32));
    };
    if (top == 0 || before(h[0], added)) {
      out(added);
    } else {
      const T first = h[0];
      sift_down(h, top, added, before);
      out(first);
    }
    while (need > limit && top > 1) {  // the last one left is alone in its window: it fits
      const T first = h[0];
      if (--top > 0) sift_down(h, top, h[top], before);
      out(first);
    }
    return {need, top};
  }
  // h cannot meet its deadline even alone at its fastest degree: dropped if waiting (a running one is
  // dropped when its task ends).
  void unreachable(const scheduler_view& v, request_handle h) {
    if (v.request(h).phase == request_phase::waiting) set_verdict(h, verdict::unreachable), drops_.push_back(h);
  }
  // The tail stop (see "Deep queues" above), tried before es[i] with fresh_[fi] next: every window j
  // from here fits, need + (bounds of entries i..j) <= share x (deadline_j - at), with room for the
  // rounding of sums as large as every entry's bound and the clock, and no entry from here on can
  // be unreachable by `at`. Fresh entries not walked yet (each after some es[j], j >= i) count in
  // every such window.
  [[nodiscard, gnu::noinline]] bool stops_at(std::size_t i, std::size_t fi, tick at, double need, double share) {
    // Built here, not before the walk: a clean check never needs them. They hold up to bound_until_.
    if (!tail_valid_ || tail_share_ != share || at > bound_until_) tail_bounds(share, at);
    const std::size_t n = by_deadline_.size();
    const double at_room = share * static_cast<double>(at);
    const double later = fresh_most_[fi];
    const double lhs = need - tail_most_[i] + at_room + later;
    if (static_cast<double>(at) + 2 < std::min(tail_reach_[i], fresh_reach_[fi]) &&
        lhs + 4 + 1e-9 * (need + tail_most_[n] + later + at_room + std::abs(tail_room_[i])) <= tail_room_[i]) {
      ++tail_stops_;
      return true;
    }
    return false;
  }
  // What walk_lean reads (fixed for the check) and carries on (i to heaped: in and out).
  struct lean_walk {
    const scheduler_view& v;
    tick now;
    double long_above, long_limit, short_limit, least_share;
    std::uint64_t need_mask;
    unsigned handle_bits;
    const std::uint64_t* rank_part;
    std::uint64_t* narrow;
    entry* es;
    std::size_t n;
    entry* fs;
    std::size_t fn;
    bool may_stop;
    set_aside_as aside;
    std::size_t i, fi, top, dead;
    double need;
    bool heaped;
  };
  // begin()'s walk once only verdicts are left to decide (the check neither stands nor fits, keeps
  // narrow keys, trusts the marks, no device lost): the same steps with nothing else kept, in a
  // function of its own so that its state stays in registers (inside begin() it was reloaded from
  // the stack at every entry). Returns true at the end of the walk (the list's end or the tail
  // stop), false at a job that does not fit a narrow key, left for begin() to take (c.i and c.fi at it).
  bool walk_lean(lean_walk& c) {
    const tick now = c.now;
    const double long_above = c.long_above, long_limit = c.long_limit, short_limit = c.short_limit;
    const std::uint64_t need_mask = c.need_mask;
    const unsigned handle_bits = c.handle_bits;
    const std::uint64_t* const rank_part = c.rank_part;
    std::uint64_t* const narrow = c.narrow;
    entry* const es = c.es;
    entry* const fs = c.fs;
    const std::size_t n = c.n, fn = c.fn;
    const unsigned char* const mark = mark_.data();
    std::size_t i = c.i, fi = c.fi, top = c.top, dead = c.dead;
    double need = c.need;
    bool heaped = c.heaped, done = true;
    const bool may_stop = c.may_stop;
    const double least_share = c.least_share;
    // The next fresh entry's key, kept at hand: it goes before es[i] when it comes first by (deadline, handle).
    constexpr tick no_deadline = std::numeric_limits<tick>::max();
    constexpr request_handle no_handle = std::numeric_limits<request_handle>::max();  // comes first before nothing
    tick fresh_deadline = fi < fn ? fs[fi].deadline : no_deadline;
    request_handle fresh_h = fi < fn ? fs[fi].h : no_handle;
    const auto lo_first = [](std::uint64_t a, std::uint64_t b) noexcept { return a < b; };
    const narrow_need_and_handle job_of_key{handle_bits, need_mask, (std::uint64_t{1} << handle_bits) - 1};
    for (;;) {
      entry* e = es + i;
      const bool fresh = i < n ? fresh_deadline < e->deadline || (fresh_deadline == e->deadline && fresh_h < e->h) : fi < fn;
      if (fresh) {
        e = fs + fi++;
        fresh_deadline = fi < fn ? fs[fi].deadline : no_deadline;
        fresh_h = fi < fn ? fs[fi].h : no_handle;
      } else if (i < n) {
        if (i % 8 == 0 && may_stop && stops_at(i, fi, now, need, least_share)) break;
        ++i;
      } else {
        break;
      }
      const unsigned char m = mark[e->h];
      if (m & ended) {
        ++dead;
        continue;
      }
      if (m != 0) refresh(c.v, *e);
      const tick w = need_at(*e, now);
      if (w < 0) {
        unreachable(c.v, e->h);
        continue;
      }
      const auto uw = static_cast<std::uint64_t>(w);
      if ((uw & ~need_mask) != 0) {  // begin() takes it on with whole jobs
        if (fresh) --fi;
        else --i;
        done = false;
        break;
      }
      const std::uint64_t key = narrow_key(rank_part, e->cls, uw, handle_bits, e->h);
      need += static_cast<double>(w);
      const double share = share_of(*e, long_above, long_limit, short_limit);
      const double room = share * static_cast<double>(e->deadline - now);
      if (need <= room || need <= static_cast<double>(w)) {
        narrow[top] = key;
        if (heaped) sift_up(narrow, top, key, lo_first);
        ++top;
        continue;
      }
      if (!heaped) make_heap(narrow, top, lo_first), heaped = true;
      std::tie(need, top) = overflow(narrow, key, lo_first, job_of_key, std::max(room, static_cast<double>(w)), need, top, c.aside);
    }
    c.i = i, c.fi = fi, c.top = top, c.dead = dead, c.need = need, c.heaped = heaped;
    return done;
  }

  // Inserts h into the deadline order once.
  void track(const scheduler_view& v, request_handle h) {
    if (tracked_.size() <= h) tracked_.resize(static_cast<std::size_t>(h) + 1, 0);
    if (tracked_[h]) return;
    tracked_[h] = 1;
    const auto& r = v.request(h);
    entry e{};
    e.deadline = r.deadline();
    e.h = h;
    e.slo = static_cast<double>(r.spec.slo);
    e.class_key = class_key_of(r.spec.priority);
    e.cls = rank_class(e.class_key);
    refresh(v, e);
    pending_.push_back(e);  // merged into the order by the next check
    if (verdict_.size() <= h) verdict_.resize(static_cast<std::size_t>(h) + 1, 0);  // for begin()'s set_aside
    if (mark_.size() <= h) mark_.resize(static_cast<std::size_t>(h) + 1, 0);
    mark_[h] = 0;
  }
  // The index of a class in class_rank_, added on its first request (ranks found again then: classes
  // are few). Past max_ranked_classes, none: every later check keeps whole jobs.
  std::uint32_t rank_class(std::uint64_t class_key) {
    std::uint32_t c = 0;
    while (c < class_key_.size() && class_key_[c] != class_key) ++c;
    if (c < class_key_.size()) return c;
    if (c == max_ranked_classes) {
      too_many_classes_ = true;
      return c;
    }
    class_key_.push_back(class_key);
    class_by_rank_ = class_key_;
    std::sort(class_by_rank_.begin(), class_by_rank_.end());
    class_rank_.resize(class_key_.size());
    for (std::size_t k = 0; k < class_key_.size(); ++k) {
      const auto at = std::lower_bound(class_by_rank_.begin(), class_by_rank_.end(), class_key_[k]);
      class_rank_[k] = static_cast<unsigned>(at - class_by_rank_.begin());
    }
    // The rank as it sits in a narrow key: above the need, in the top bit_width(classes - 1) bits.
    const auto class_bits = static_cast<unsigned>(std::bit_width(class_rank_.size() - 1));
    class_rank_part_.resize(class_rank_.size());
    for (std::size_t k = 0; k < class_rank_.size(); ++k) {
      class_rank_part_[k] = class_bits > 0 ? std::uint64_t{class_rank_[k]} << (64 - class_bits) : 0;
    }
    return c;
  }
  static bool by_deadline(const entry& a, const entry& b) noexcept { return a.deadline != b.deadline ? a.deadline < b.deadline : a.h < b.h; }
  void refresh(const scheduler_view& v, entry& e) {
    if (hull_devices_ < 0) hull_devices_ = v.usable_device_count();
    const auto& r = v.request(e.h);
    e.position = r.position;
    if (e.h < mark_.size()) mark_[e.h] &= static_cast<unsigned char>(~moved);
    const auto& hull = cost_hull(v, e.h);
    e.shape = r.shape;
    e.steps = static_cast<double>(r.steps_remaining());
    if (hull.empty()) {  // need_at answers -1 at once
      e.fast = 0;
      e.cheap_until = std::numeric_limits<tick>::max();
      e.w_cheap = -1;
      e.most = 0;  // never reachable: alone_fastest keeps the tail stop before it
      e.alone_fastest = std::numeric_limits<double>::infinity();
      return;
    }
    e.fast = hull.back().k;
    e.stages = v.remaining_time(e.h, e.fast) - static_cast<tick>(r.steps_remaining()) * v.step_time(e.h, e.fast);
    e.cheap_until = e.deadline - e.stages - static_cast<tick>(r.steps_remaining()) * hull.front().time;
    e.w_cheap = static_cast<tick>(e.steps * static_cast<double>(hull.front().cost)) + static_cast<tick>(e.fast) * e.stages;
    e.min_budget = e.steps * static_cast<double>(hull.back().time);
    to_point(e, hull, 0);
    // need_late's mix lies between the cheapest and the fastest point, and the fastest costs most.
    e.most = e.steps * static_cast<double>(hull.back().cost) + static_cast<double>(e.fast) * static_cast<double>(e.stages);
    e.alone_fastest = static_cast<double>(e.stages) + e.min_budget;
  }
  // The most e can need at any time up to bound_until_, as long as its request only progresses:
  // w_cheap while its cheapest degree stays fast enough until then (a task end lowers w_cheap and
  // moves cheap_until later), else `most`. On the deep-queue files most entries past the last
  // overflow are such long-deadline requests, and bounding them by `most` (every step at the
  // fastest degree) kept the walk going past where it could stop (docs/performance.md).
  [[nodiscard]] double bound_of(const entry& e) const noexcept {
    return e.cheap_until >= bound_until_ ? static_cast<double>(std::max<tick>(e.w_cheap, 0)) : e.most;
  }
  // fresh_ joins by_deadline_ once longer than this: each fold moves by_deadline_'s positions (the
  // tail bounds are built again), and every fresh entry weighs on the tail stop at its bound.
  // Measured on the first deep-queue file (docs/performance.md): 32 + R/32 to 128 + R/4 alike; 8 +
  // R/256 (a fold every few arrivals) and 256 (fresh bounds too loose to stop) both 40-50% slower.
  [[nodiscard]] std::size_t fresh_fold_at() const noexcept { return 32 + by_deadline_.size() / 32; }
  void fold_fresh() {
    if (!fresh_.empty()) {
      next_.clear();
      next_.reserve(by_deadline_.size() + fresh_.size());
      std::merge(by_deadline_.cbegin(), by_deadline_.cend(), fresh_.cbegin(), fresh_.cend(), std::back_inserter(next_), by_deadline);
      by_deadline_.swap(next_);
      fresh_.clear();
    }
    tail_valid_ = false;  // positions moved
    front_ = 0;
    fresh_bounds();
  }
  // By position k in fresh_: the bounds of fresh_[k..] summed and the earliest time one of them
  // becomes unreachable (as tail_bounds; they too stay valid while the entries only progress).
  void fresh_bounds() {
    const std::size_t f = fresh_.size();
    fresh_most_.resize(f + 1);
    fresh_reach_.resize(f + 1);
    fresh_most_[f] = 0;
    fresh_reach_[f] = std::numeric_limits<double>::infinity();
    for (std::size_t k = f; k-- > 0;) {
      const entry& e = fresh_[k];
      const bool gone = (mark_[e.h] & ended) != 0;
      fresh_most_[k] = fresh_most_[k + 1] + (gone ? 0.0 : bound_of(e));
      fresh_reach_[k] = gone ? fresh_reach_[k + 1] : std::min(fresh_reach_[k + 1], static_cast<double>(e.deadline) - e.alone_fastest);
    }
  }
  // The tail stop's bounds by list position i, from the entries as they are now (ended ones need
  // nothing): tail_most_[i], the bounds of the entries before i summed; tail_room_[i], the least over
  // windows j >= i of share x deadline_j - tail_most_[j + 1]; tail_reach_[i], the earliest time an
  // entry from i on becomes unreachable, deadline - alone_fastest. Entries only need less, and
  // become unreachable later, as their requests progress, so the bounds stay valid until the list's
  // positions move (a fold, a clean-up), the devices change, or time passes bound_until_. That is
  // set to `at` + bound_span_ at every build, the fresh bounds built again with it; the span doubles
  // when the bounds ran out within 64 checks (a build walks the whole list) and halves when they
  // lasted over 4,096.
  void tail_bounds(double share, tick at) {
    if (at > bound_until_) {
      const std::uint64_t lasted = pass_ - bound_pass_;
      if (lasted < 64) bound_span_ = std::min<tick>(bound_span_ * 2, max_bound_span);
      else if (lasted > 4096) bound_span_ = std::max<tick>(bound_span_ / 2, 1000);
    }
    bound_pass_ = pass_;
    bound_until_ = at > std::numeric_limits<tick>::max() - bound_span_ ? std::numeric_limits<tick>::max() : at + bound_span_;
    fresh_bounds();
    const std::size_t n = by_deadline_.size();
    tail_most_.resize(n + 1);
    tail_room_.resize(n + 1);
    tail_reach_.resize(n + 1);
    tail_most_[0] = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const entry& e = by_deadline_[i];
      tail_most_[i + 1] = tail_most_[i] + ((mark_[e.h] & ended) ? 0.0 : bound_of(e));
    }
    tail_room_[n] = tail_reach_[n] = std::numeric_limits<double>::infinity();
    for (std::size_t i = n; i-- > 0;) {
      const entry& e = by_deadline_[i];
      const bool gone = (mark_[e.h] & ended) != 0;
      tail_room_[i] = std::min(tail_room_[i + 1], share * static_cast<double>(e.deadline) - tail_most_[i + 1]);
      tail_reach_[i] = gone ? tail_reach_[i + 1] : std::min(tail_reach_[i + 1], static_cast<double>(e.deadline) - e.alone_fastest);
    }
    tail_share_ = share;
    tail_valid_ = true;
  }
  void to_point(entry& e, const std::vector<hull_point>& hull, std::size_t lo) const noexcept {
    constexpr double inf = std::numeric_limits<double>::infinity();
    e.point = static_cast<std::uint32_t>(lo);
    const hull_point& b = hull[lo];
    const bool some = e.steps > 0;  // no steps left: point 0 whatever the budget
    e.budget_above = some && lo + 1 < hull.size() ? e.steps * static_cast<double>(b.time) : -inf;
    e.budget_below = some && lo > 0 ? e.steps * static_cast<double>(hull[lo - 1].time) : inf;
    e.steps_cost = e.steps * static_cast<double>(b.cost);
    e.steps_time = e.steps * static_cast<double>(b.time);
    e.slope = lo > 0 ? mix_slope(hull[lo - 1], b) : 0.0;
  }
  // GPU-time per unit of time per step between hull points a (slower, cheaper) and b: negative.
  static double mix_slope(const hull_point& a, const hull_point& b) noexcept {
    return (static_cast<double>(a.cost) - static_cast<double>(b.cost)) / static_cast<double>(a.time - b.time);
  }
  // demand() from an entry, with the same arithmetic. Up to cheap_until the answer is w_cheap: then
  // steps x time(0) <= budget in integers, so in doubles too (both exact below 2^53), and the search
  // in need_late() would stop at point 0 with no mix.
  [[nodiscard]] tick need_at(entry& e, tick now) const { return now <= e.cheap_until ? e.w_cheap : need_late(e, now); }
  // need_late at a time ahead, leaving e's hull point where it is (the next check starts from there).
  [[nodiscard]] tick need_late_of_copy(const entry& e, tick at) const {
    entry copy = e;
    return need_late(copy, at);
  }
  [[nodiscard]] tick need_late(entry& e, tick now) const {
    const double steps = e.steps;
    const double budget = static_cast<double>(e.deadline - now - e.stages);
    if (budget < e.min_budget) return -1;
    // The first point fast enough (hull times shrink along it): the one of last time while the
    // budget is still in its segment. Between refreshes the budget only shrinks, so the search
    // resumes where it stopped last time; it starts over if the point before is fast enough too
    // (time went back: a host replaying a view).
    if (!(budget >= e.budget_above && budget < e.budget_below)) {  // steps > 0 here
      const std::vector<hull_point>& hull = hulls_[e.shape];
      std::size_t lo = e.point;
      if (lo > 0 && steps * static_cast<double>(hull[lo - 1].time) <= budget) lo = 0;
      while (lo + 1 < hull.size() && steps * static_cast<double>(hull[lo].time) > budget) ++lo;  // else the fastest
      to_point(e, hull, lo);
    }
    // On point 0 the slope is 0: steps x its cost. Else the mix of a and b that spends the budget.
    return static_cast<tick>(e.steps_cost + (budget - e.steps_time) * e.slope) + static_cast<tick>(e.fast) * e.stages;
  }

  // The lower convex hull of (step time, GPU-time per step) over a shape's allowed degrees that
  // fit the usable devices, from the cheapest to the fastest: mixing two neighbours on it is the
  // cheapest way to reach any speed in between. Computed once per shape (and device loss).
  const std::vector<hull_point>& cost_hull(const scheduler_view& v, request_handle h) {
    const int usable = hull_devices_;
    const std::uint32_t s = v.request(h).shape;
    if (hulls_.size() <= s) hulls_.resize(static_cast<std::size_t>(s) + 1);
    auto& hull = hulls_[s];
    if (!hull.empty()) return hull;
    const auto& c = v.costs(h);
    // Pareto front first: by growing cost, keep a degree only if faster than every cheaper one.
    std::vector<hull_point> front;
    for (int k : c.allowed_degrees) {
      if (k <= usable) front.push_back({k, c.step_time(k), static_cast<tick>(k) * c.step_time(k)});
    }
    std::sort(front.begin(), front.end(), [](const hull_point& a, const hull_point& b) {
      return a.cost != b.cost ? a.cost < b.cost : a.time < b.time;
    });
    for (const auto& p : front) {
      if (!hull.empty() && p.time >= hull.back().time) continue;
      // Then convexity: drop the last point while it lies on or above the chord to p.
      while (hull.size() >= 2) {
        const auto& a = hull[hull.size() - 2];
        const auto& b = hull.back();
        const double cross = static_cast<double>(b.time - a.time) * static_cast<double>(p.cost - a.cost) -
                             static_cast<double>(b.cost - a.cost) * static_cast<double>(p.time - a.time);
        if (cross < 0) break;
        hull.pop_back();
      }
      hull.push_back(p);
    }
    return hull;
  }


  double slo_sum_ = 0;
  std::uint64_t slo_count_ = 0;
  // By handle: pass << 2 | verdict, what that pass said of h (a verdict of an earlier pass means admit).
  std::vector<std::uint64_t> verdict_;
  std::uint64_t pass_ = 0;                   // begin() calls
  std::vector<unsigned char> seen_;          // by handle: arrived (on_arrival) and not ended
  std::size_t known_ = 0;                    // how many of seen_ are set
  std::vector<job> heap_;              // begin()'s heap, sized for every request tracked (wide)
  std::vector<std::uint64_t> narrow_;  // the same as narrow keys (class rank, need, handle)
  // Classes by first arrival (class_key_), their ranks in key order, and the keys by rank.
  static constexpr std::size_t max_ranked_classes = 256;
  std::vector<std::uint64_t> class_key_, class_by_rank_;
  std::vector<unsigned> class_rank_;
  std::vector<std::uint64_t> class_rank_part_;  // class_rank_ shifted to its place in a narrow key
  bool too_many_classes_ = false;  // a class past max_ranked_classes arrived: whole jobs from then on
  std::vector<request_handle> drops_;  // unreachable or rejected in the last begin()
  std::vector<entry> by_deadline_;      // requests with a deadline, by (deadline, handle): unfinished ones and dead_ ended ones
  std::size_t dead_ = 0;                // entries of ended requests in by_deadline_, as of the last check
  std::vector<entry> fresh_;            // tracked since the last fold, by (deadline, handle), walked with by_deadline_
  std::vector<double> fresh_most_ = {0}, fresh_reach_ = {std::numeric_limits<double>::infinity()};  // fresh_bounds()
  std::vector<entry> pending_;          // tracked since the last check, not yet in fresh_
  std::vector<entry> next_;             // the merge's output (swapped with by_deadline_)
  std::vector<std::pair<tick, std::uint64_t>> pending_keys_;  // pending_ by (deadline, handle << 32 | slot)
  static constexpr unsigned char ended = 1, moved = 2;
  std::vector<unsigned char> mark_;     // by handle: ended, or a task ended since refresh()
  bool task_hooks_ = false;             // on_task_end is called (so marks say who moved)
  std::size_t skipped_ = 0;             // decisions since the last check
  std::size_t changes_ = 0;             // arrivals and ends of requests with a deadline since the last check
  tick last_check_at_ = 0;
  std::array<std::uint64_t, 65> slo_log2_{};  // the arrivals' SLOs by std::bit_width (changes_since_check)
  double per_change_ = 1;                     // ticks per change, as of per_change_of_ SLOs
  std::uint64_t per_change_of_ = ~std::uint64_t{0};  // none yet
  bool clean_ = false;                  // the last check holds from clean_from_ to clean_until_ unless
  tick clean_from_ = 0, clean_until_ = 0;  // a request arrives, a task fails or a device is lost
  std::uint64_t clean_skips_ = 0;
  // The tail stop: its bounds by list position (tail_bounds), and the ends not yet cleaned up.
  std::vector<double> tail_most_, tail_room_, tail_reach_;
  bool tail_valid_ = false;
  // The bounds (tail and fresh) hold up to bound_until_: until the first build it is the end of
  // time, where bound_of is `most` (or 0 for an entry that never fits), which holds at any time.
  tick bound_until_ = std::numeric_limits<tick>::max();
  tick bound_span_ = 1'000'000;  // a second at first
  std::uint64_t bound_pass_ = 0;  // the check that built them
  static constexpr tick max_bound_span = 3'600'000'000'000;  // a thousand hours
  std::size_t front_ = 0;  // by_deadline_[0, front_) are ended requests' entries (with every hook forwarded)
  double tail_share_ = 0;
  std::size_t ended_in_list_ = 0;
  std::uint64_t tail_stops_ = 0;
  std::uint64_t horizon_stops_ = 0;
  static constexpr tick max_horizon = 3'600'000'000;  // an hour
  tick clean_horizon_ = 1'000'000;  // how far ahead a check with growing needs tries to stand
  bool last_fitted_ = false;        // the last check set nothing aside (and used no alone rule)
  std::vector<unsigned char> tracked_;                         // by handle
  std::vector<std::vector<hull_point>> hulls_;
  int hull_devices_ = -1;
};

// ============================================================================================

/// GF-DiT's EDF-best-fit, parameter-free.
class edf_best_fit_policy : public composed_policy<admit_all, edf_order, smallest_meeting_degree, sticky_placement> {
 public:
  edf_best_fit_policy() : composed_policy({}, {}, {}, {}, compose_options{"edf-best-fit", 1, true}) {}
};

struct slo_aware_options {
  admission_mode admission = admission_mode::relaxed;
  double capacity = 0.9;
  double reserve = 0.1;
  double margin = 0.2;
  std::uint32_t chunk = 1;
  double best_effort_age = 10;
  bool widen = true;
  bool hold = true;
  int max_batch = 1;          ///< > 1: selective batching (item 6)
  double batch_margin = 0.3;  ///< item 6; the registry defaults it to margin + 0.1 (set both when changing margin here)
  double batch_saving = 0.25;  ///< item 6
  std::size_t exact_limit = 4096;  ///< slo_admission::exact_limit ("Cost per decision" above)
  int backfill_max_gpus = 64;      ///< item 5: held devices are backfilled on clusters of at most this many GPUs
  bool priority_order = true;      ///< item 4: false = order=edf (the class acts through admission only)
};

/// EDF-best-fit plus admission control, priority classes and best effort (see the header comment).
class slo_aware_policy : public composed_policy<slo_admission, priority_edf_order, smallest_meeting_degree, sticky_placement> {
 public:
  explicit slo_aware_policy(slo_aware_options o = {})
      : composed_policy(make_admission(o), priority_edf_order{o.best_effort_age, o.priority_order}, smallest_meeting_degree{o.margin}, {},
                        compose_options{"slo-aware", o.chunk, o.widen, o.hold, o.max_batch, o.batch_margin, o.batch_saving,
                                        o.backfill_max_gpus}) {}

 private:
  static slo_admission make_admission(const slo_aware_options& o) {
    slo_admission a;
    a.mode = o.admission;
    a.capacity = o.capacity;
    a.reserve = o.reserve;
    a.best_effort_age = o.best_effort_age;
    a.exact_limit = o.exact_limit;
    return a;
  }
};

static_assert(Policy<edf_best_fit_policy> && NamedPolicy<edf_best_fit_policy> && ArrivalAwarePolicy<edf_best_fit_policy>);
static_assert(Policy<slo_aware_policy> && NamedPolicy<slo_aware_policy> && ArrivalAwarePolicy<slo_aware_policy>);

/// Registers "slo-aware" (parameters above) and "edf-best-fit" (none).
inline void register_slo_aware(policy_registry& r) {
  r.add("slo-aware", "", "EDF best fit + admission against deadline-window capacity, priority classes, best effort; "
        "max_batch=N batches identical requests when no member misses",
        [](policy_params& p) -> any_policy {
          slo_aware_options o;
          const auto mode = p.get_choice("admission", "relaxed", {"relaxed", "strict", "off"});
          o.admission = mode == "strict" ? admission_mode::strict : mode == "off" ? admission_mode::off : admission_mode::relaxed;
          o.capacity = p.get_double("capacity", o.capacity, 0.05, 4.0);
          o.reserve = p.get_double("reserve", o.reserve, 0.0, 1.0);
          if (o.reserve >= o.capacity) {
            p.fail("reserve", fmt::format("{} must be smaller than capacity ({}){}", o.reserve, o.capacity,
                                          p.has("reserve") ? "" : "; reserve is at its default: lower it too (e.g. reserve=0)"));
          }
          o.margin = p.get_double("margin", o.margin, 0.0, 0.9);
          o.chunk = static_cast<std::uint32_t>(p.get_int("chunk", o.chunk, 1, 1000000));
          o.best_effort_age = p.get_double("best_effort_age", o.best_effort_age, 0.0, 1e6);
          o.widen = p.get_int("widen", 1, 0, 1) != 0;
          o.hold = p.get_int("hold", 1, 0, 1) != 0;
          o.max_batch = static_cast<int>(p.get_int("max_batch", o.max_batch, 1, 64));
          o.batch_margin = p.get_double("batch_margin", std::min(0.9, o.margin + 0.1), 0.0, 0.9);
          o.batch_saving = p.get_double("batch_saving", o.batch_saving, 0.0, 0.95);
          o.exact_limit = static_cast<std::size_t>(p.get_int("exact_limit", static_cast<long long>(o.exact_limit), 1, 1'000'000'000));
          o.backfill_max_gpus = static_cast<int>(p.get_int("backfill_max_gpus", o.backfill_max_gpus, 0, 1'000'000'000));
          o.priority_order = p.get_choice("order", "priority", {"priority", "edf"}) == "priority";
          return slo_aware_policy(o);
        });
  r.add("edf-best-fit", "", "GF-DiT: EDF, smallest degree meeting the deadline, spare GPUs widen; never drops",
        [](policy_params&) -> any_policy { return edf_best_fit_policy{}; });
}

}  // namespace paraflex
