// paraflex/policy/any_policy.hpp - a type-erased Policy, for choosing a policy by name at run time.
//
// The runtime is a template over the policy type, so a statically known policy pays no virtual
// call. A tool that picks policies from the command line wraps them in any_policy; every optional
// hook of the wrapped policy is forwarded (and stays a no-op where the policy has none).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "paraflex/policy/concepts.hpp"

namespace paraflex {

class any_policy {
 public:
  template <Policy P>
    requires(!std::same_as<std::remove_cvref_t<P>, any_policy>)
  any_policy(P policy)  // NOLINT: implicit, like std::function
      : self_(std::make_unique<model<P>>(std::move(policy))) {}

  void decide(const scheduler_view& v, decision_buffer& out) { self().decide(v, out); }
  void on_arrival(const scheduler_view& v, request_handle h) { self().on_arrival(v, h); }
  void on_request_end(const scheduler_view& v, request_handle h) { self().on_request_end(v, h); }
  void on_task_end(const scheduler_view& v, request_handle h, bool ok) { self().on_task_end(v, h, ok); }
  void on_tick(const scheduler_view& v) { self().on_tick(v); }
  /// never when the wrapped policy is not periodic.
  [[nodiscard]] tick tick_period() const { return self().tick_period(); }
  [[nodiscard]] std::string name() const { return self().name(); }
  /// The wrapped policy when it is a T (like std::function::target), else nullptr (also once moved from).
  template <class T>
  [[nodiscard]] T* target() noexcept {
    auto* m = dynamic_cast<model<T>*>(self_.get());
    return m ? &m->policy : nullptr;
  }

 private:
  struct concept_base {
    virtual ~concept_base() = default;
    virtual void decide(const scheduler_view&, decision_buffer&) = 0;
    virtual void on_arrival(const scheduler_view&, request_handle) = 0;
    virtual void on_request_end(const scheduler_view&, request_handle) = 0;
    virtual void on_task_end(const scheduler_view&, request_handle, bool) = 0;
    virtual void on_tick(const scheduler_view&) = 0;
    [[nodiscard]] virtual tick tick_period() const = 0;
    [[nodiscard]] virtual std::string name() const = 0;
  };
  template <class P>
  struct model final : concept_base {
    explicit model(P p) : policy(std::move(p)) {}
    void decide(const scheduler_view& v, decision_buffer& out) override { policy.decide(v, out); }
    void on_arrival(const scheduler_view& v, request_handle h) override { hooks::on_arrival(policy, v, h); }
    void on_request_end(const scheduler_view& v, request_handle h) override { hooks::on_request_end(policy, v, h); }
    void on_task_end(const scheduler_view& v, request_handle h, bool ok) override { hooks::on_task_end(policy, v, h, ok); }
    void on_tick(const scheduler_view& v) override { hooks::on_tick(policy, v); }
    [[nodiscard]] tick tick_period() const override { return hooks::tick_period(policy); }
    [[nodiscard]] std::string name() const override { return policy_name(policy); }
    P policy;
  };
  // A moved-from any_policy holds nothing: using it throws, as an empty std::function does.
  [[nodiscard]] concept_base& self() const {
    if (!self_) throw std::logic_error("any_policy: used after it was moved from (it holds no policy)");
    return *self_;
  }
  std::unique_ptr<concept_base> self_;
};

static_assert(Policy<any_policy> && PeriodicPolicy<any_policy> && TickHookPolicy<any_policy> && ArrivalAwarePolicy<any_policy>);

}  // namespace paraflex
