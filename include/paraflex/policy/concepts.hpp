// paraflex/policy/concepts.hpp - the Policy concept family.
//
// A policy computes decisions from a read-only scheduler_view and writes them into a runtime-owned
// decision_buffer. It never sees the executor, so the same policy object runs unchanged in the
// simulator, on CPU threads and on GPUs.
//
//   struct fcfs_on_one_gpu {                                        // valid: models Policy
//     void decide(const scheduler_view& v, decision_buffer& out);
//   };
//   struct returns_list { std::vector<int> decide(const scheduler_view&); };  // invalid: wrong signature
//
// Optional hooks, detected by refinement (a policy without them is called the same way, the
// runtime just skips the call):
//   ArrivalAwarePolicy     on_arrival(view, handle)            after a request arrives, before decide
//   CompletionAwarePolicy  on_request_end(view, handle)        after a request completes or is dropped
//   TaskAwarePolicy        on_task_end(view, handle, ok)       after each task (ok = false: it failed);
//                                                              a migration only when it fails
//   PeriodicPolicy         tick_period() -> tick               decide is also called every period
//                                                              (round-based policies); on_tick(view)
//                                                              is called first when present
//   NamedPolicy            name() -> string                    shown in results and errors
#pragma once

#include <concepts>
#include <string>
#include <type_traits>

#include "paraflex/policy/decision.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

// Policy's requirement in two parts, so that the scheduler can say which one fails: decide(view, out)
// must be callable on a non-const P, and return void (decisions go into the buffer).
namespace policy_requirements {
template <class P>
concept decides = requires(P& p, const scheduler_view& v, decision_buffer& out) { p.decide(v, out); };
template <class P>
concept decides_into_buffer = requires(P& p, const scheduler_view& v, decision_buffer& out) {
  { p.decide(v, out) } -> std::same_as<void>;
};
}  // namespace policy_requirements

template <class P>
concept Policy = policy_requirements::decides<P> && policy_requirements::decides_into_buffer<P>;

template <class P>
concept ArrivalAwarePolicy = Policy<P> && requires(P& p, const scheduler_view& v, request_handle h) {
  p.on_arrival(v, h);
};

template <class P>
concept CompletionAwarePolicy = Policy<P> && requires(P& p, const scheduler_view& v, request_handle h) {
  p.on_request_end(v, h);
};

template <class P>
concept TaskAwarePolicy = Policy<P> && requires(P& p, const scheduler_view& v, request_handle h, bool ok) {
  p.on_task_end(v, h, ok);
};

template <class P>
concept PeriodicPolicy = Policy<P> && requires(const P& p) {
  { p.tick_period() } -> std::convertible_to<tick>;
};

template <class P>
concept TickHookPolicy = PeriodicPolicy<P> && requires(P& p, const scheduler_view& v) { p.on_tick(v); };

template <class P>
concept NamedPolicy = Policy<P> && requires(const P& p) {
  { p.name() } -> std::convertible_to<std::string>;
};

namespace detail {
// P declares a (non-static, non-overloaded, non-template) member function of that name. A hook whose
// signature does not match its refinement would otherwise be skipped without a word.
template <class P>
concept declares_on_arrival = requires { &P::on_arrival; } && std::is_member_function_pointer_v<decltype(&P::on_arrival)>;
template <class P>
concept declares_on_request_end = requires { &P::on_request_end; } && std::is_member_function_pointer_v<decltype(&P::on_request_end)>;
template <class P>
concept declares_on_task_end = requires { &P::on_task_end; } && std::is_member_function_pointer_v<decltype(&P::on_task_end)>;
template <class P>
concept declares_tick_period = requires { &P::tick_period; } && std::is_member_function_pointer_v<decltype(&P::tick_period)>;
template <class P>
concept declares_on_tick = requires { &P::on_tick; } && std::is_member_function_pointer_v<decltype(&P::on_tick)>;
template <class P>
concept declares_name = requires { &P::name; } && std::is_member_function_pointer_v<decltype(&P::name)>;
}  // namespace detail

/// The name of a policy for reports: its name() if it has one, else "policy".
template <Policy P>
[[nodiscard]] std::string policy_name(const P& p) {
  if constexpr (NamedPolicy<P>) {
    return std::string(p.name());
  } else {
    static_assert(!detail::declares_name<P>, "policy: name() must be callable on a const policy and return something convertible to std::string (NamedPolicy)");
    (void)p;
    return "policy";
  }
}

/// The hooks as free functions with no-op defaults: the runtime calls these, never the members.
/// A policy that declares a hook with a signature the runtime cannot call fails here, naming it.
namespace hooks {
template <Policy P>
void on_arrival(P& p, const scheduler_view& v, request_handle h) {
  if constexpr (ArrivalAwarePolicy<P>) p.on_arrival(v, h);
  else {
    static_assert(!detail::declares_on_arrival<P>, "policy: on_arrival is declared but cannot be called as on_arrival(const scheduler_view&, request_handle) (ArrivalAwarePolicy); the runtime would never call it");
    (void)p, (void)v, (void)h;
  }
}
template <Policy P>
void on_request_end(P& p, const scheduler_view& v, request_handle h) {
  if constexpr (CompletionAwarePolicy<P>) p.on_request_end(v, h);
  else {
    static_assert(!detail::declares_on_request_end<P>, "policy: on_request_end is declared but cannot be called as on_request_end(const scheduler_view&, request_handle) (CompletionAwarePolicy); the runtime would never call it");
    (void)p, (void)v, (void)h;
  }
}
template <Policy P>
void on_task_end(P& p, const scheduler_view& v, request_handle h, bool ok) {
  if constexpr (TaskAwarePolicy<P>) p.on_task_end(v, h, ok);
  else {
    static_assert(!detail::declares_on_task_end<P>, "policy: on_task_end is declared but cannot be called as on_task_end(const scheduler_view&, request_handle, bool ok) (TaskAwarePolicy); the runtime would never call it");
    (void)p, (void)v, (void)h, (void)ok;
  }
}
template <Policy P>
[[nodiscard]] tick tick_period(const P& p) {
  if constexpr (PeriodicPolicy<P>) return static_cast<tick>(p.tick_period());
  else {
    static_assert(!detail::declares_tick_period<P>, "policy: tick_period() must be callable on a const policy and return a tick (PeriodicPolicy); the policy would never be ticked");
    return (void)p, never;
  }
}
template <Policy P>
void on_tick(P& p, const scheduler_view& v) {
  if constexpr (TickHookPolicy<P>) p.on_tick(v);
  else {
    static_assert(!detail::declares_on_tick<P> || PeriodicPolicy<P>, "policy: on_tick is called only for a periodic policy: add tick_period() (PeriodicPolicy)");
    static_assert(!detail::declares_on_tick<P> || !PeriodicPolicy<P>, "policy: on_tick is declared but cannot be called as on_tick(const scheduler_view&) (TickHookPolicy); the runtime would never call it");
    (void)p, (void)v;
  }
}
}  // namespace hooks

}  // namespace paraflex
