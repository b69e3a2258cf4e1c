// paraflex/policy/batching.hpp - choosing who shares a batched step (TetriServe's selective batching).
//
// A small image leaves a GPU underused: one denoising step of a 256x256 FLUX request costs about as
// much as a step of four of them run together. A policy that has chosen a group g for request h can
// let other requests ride along in one batched step (decision_buffer::assign_batch) - requests that
// would otherwise wait - provided the batch makes nobody miss a deadline.
//
// batch_companions() is that choice, for any policy:
//   candidates  waiting requests whose state lives on exactly g's devices (the state holders of g:
//               no migration), of h's shape, whose next task is a denoising step, and that the
//               policy has not handed out in this call (`taken`);
//   order       earliest deadline first (no deadline last), then handle;
//   rule        a candidate joins while every member - h included - still finishes in time: now +
//               the batched step on g + its remaining time after that step at |g| devices, within
//               (1 - margin) of its time left. A batch of b costs the cost model's batched step
//               (BatchCostModel); without one, or with max_batch <= 1, nobody joins.
//   saving      (min_saving > 0) and the b-th member adds at most (1 - min_saving) of a step alone
//               to the batched step. A batch that saves little only makes every member wait for
//               the others - processor sharing instead of earliest deadline first - and delays the
//               requests waiting behind it; large images save little (a step already fills a GPU).
// Cost: O(H log H) for the H state holders of g's first device (a few).
//
//   std::vector<request_handle> members;
//   batch_companions(v, h, g, 4, 0.1, [&](request_handle o) { return planned(o); }, members);
//   if (members.size() > 1) out.assign_batch(members, g); else out.assign(h, g, 1);
//
// batch_recruits() extends this to requests that have not started: they have no state anywhere, so
// they first run their (free) text encode on g - a batch of encodes - and join at the next call.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "paraflex/runtime/view.hpp"

namespace paraflex {

namespace detail {
inline std::vector<std::pair<tick, request_handle>>& batch_candidates_scratch() {
  thread_local std::vector<std::pair<tick, request_handle>> s;  // reused: no allocation once warm
  return s;
}
inline std::vector<request_handle>& batch_trial_scratch() {
  thread_local std::vector<request_handle> s;
  return s;
}
}  // namespace detail

/// When request m would finish if its next step ran in a batch of b on k devices and the rest alone at k.
[[nodiscard]] inline tick finish_after_batched_step(const scheduler_view& v, request_handle m, int k, int b) {
  return add_sat(v.now(), v.batch_step_time(m, k, b) + v.remaining_time(m, k) - v.step_time(m, k));
}

/// Whether every member meets its deadline (within (1 - margin) of its time left) in a batch of
/// members.size() on k devices.
[[nodiscard]] inline bool batch_keeps_deadlines(const scheduler_view& v, const std::vector<request_handle>& members, int k, double margin) {
  const int b = static_cast<int>(members.size());
  for (request_handle m : members) {
    const auto& r = v.request(m);
    if (!r.has_deadline()) continue;
    const tick left = r.deadline() - v.now();
    const tick target = margin <= 0 ? r.deadline() : v.now() + static_cast<tick>(static_cast<double>(left) * (1.0 - margin));
    if (finish_after_batched_step(v, m, k, b) > target) return false;
  }
  return true;
}

/// Whether the b-th member of a batch of m's shape on k devices adds at most (1 - min_saving) of a
/// step alone to the batched step (always true for min_saving <= 0).
[[nodiscard]] inline bool batch_member_saves(const scheduler_view& v, request_handle m, int k, int b, double min_saving) {
  if (min_saving <= 0) return true;
  const tick added = v.batch_step_time(m, k, b) - v.batch_step_time(m, k, b - 1);
  return static_cast<double>(added) <= (1.0 - min_saving) * static_cast<double>(v.step_time(m, k));
}

/// members <- `leader` and the companions that may share its next step on g (see the file comment),
/// at most max_batch in all. `taken(h)` says h was handed out in this call already.
template <class Taken>
void batch_companions(const scheduler_view& v, request_handle leader, const device_group& g, int max_batch, double margin, Taken&& taken,
                      std::vector<request_handle>& members, double min_saving = 0) {
  members.clear();
  members.push_back(leader);
  const auto& lr = v.request(leader);
  const int limit = std::min(max_batch, v.max_batch(leader));
  if (limit <= 1 || g.empty() || lr.next_task().kind != task_kind::step) return;
  if (!lr.state_group.empty() && !lr.state_group.same_devices(g)) return;  // the leader moves: it runs alone first
  const int k = static_cast<int>(g.size());
  auto& cands = detail::batch_candidates_scratch();
  cands.clear();
  for (request_handle h : v.state_holders(g[0])) {
    if (h == leader || taken(h)) continue;
    const auto& r = v.request(h);
    if (r.phase != request_phase::waiting || r.shape != lr.shape || r.next_task().kind != task_kind::step) continue;
    if (!r.state_group.same_devices(g)) continue;
    cands.emplace_back(r.has_deadline() ? r.deadline() : never, h);
  }
  std::sort(cands.begin(), cands.end());
  for (const auto& [deadline, h] : cands) {
    if (static_cast<int>(members.size()) >= limit) break;
    if (!batch_member_saves(v, leader, k, static_cast<int>(members.size()) + 1, min_saving)) break;  // the same for every candidate
    members.push_back(h);
    if (!batch_keeps_deadlines(v, members, k, margin)) members.pop_back();
  }
}

/// recruits <- waiting requests of `leader`'s shape that have not started (no state yet), are not
/// `taken`, and could join the leader's next batched step on g once their text encode has run there:
/// every member, recruits included, still meets its deadline in the bigger batch. Only when the
/// encode is free on g (it would otherwise delay the leader's step). A policy then runs the recruits'
/// encodes on g now (one batched launch, decision_buffer::assign_batch) and the leader's batch right
/// after, at the same time.
template <class Taken>
void batch_recruits(const scheduler_view& v, request_handle leader, const device_group& g, int max_batch, double margin, Taken&& taken,
                    const std::vector<request_handle>& members, std::vector<request_handle>& recruits, double min_saving = 0) {
  recruits.clear();
  const auto& lr = v.request(leader);
  const int limit = std::min(max_batch, v.max_batch(leader)) - static_cast<int>(members.size());
  if (limit <= 0 || g.empty() || lr.next_task().kind != task_kind::step) return;
  const int k = static_cast<int>(g.size());
  if (v.costs(leader).encode[static_cast<std::size_t>(k)] != 0) return;
  auto& cands = detail::batch_candidates_scratch();
  cands.clear();
  // The oldest waiting requests first (handle order), and no more than a bounded look: the call must
  // not cost the length of the queue.
  std::size_t looked = 0;
  for (request_handle h : v.waiting()) {
    if (++looked > static_cast<std::size_t>(16 * limit + 64)) break;
    const auto& r = v.request(h);
    if (h == leader || taken(h) || r.position != 0 || !r.state_group.empty() || r.shape != lr.shape) continue;
    cands.emplace_back(r.has_deadline() ? r.deadline() : never, h);
  }
  std::sort(cands.begin(), cands.end());
  auto& trial = detail::batch_trial_scratch();
  trial.assign(members.begin(), members.end());
  for (const auto& [deadline, h] : cands) {
    if (static_cast<int>(recruits.size()) >= limit) break;
    if (!batch_member_saves(v, leader, k, static_cast<int>(trial.size()) + 1, min_saving)) break;
    trial.push_back(h);
    // A recruit's next step in the batch is its first: price it as such (position 0 counts the encode,
    // which is free on g).
    if (batch_keeps_deadlines(v, trial, k, margin)) recruits.push_back(h);
    else trial.pop_back();
  }
}

}  // namespace paraflex
