// Driving the scheduler from an event loop that is not paraflex's: a Boost.Asio io_context owns the
// thread; paraflex never blocks it. The loop takes a turn when
//   - the timer for next_wakeup() fires (an arrival, a policy wake-up),
//   - the scheduler's on_wakeup fires: a client thread submitted or cancelled, or (thread_executor is
//     a SignallingExecutor) a task ended on a device thread.
// A client thread submits twelve requests and cancels one; the program ends when every request has
// ended and the client is closed. docs/embedding.md explains the pattern.
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <paraflex/paraflex.hpp>

namespace {
struct cpu_cost {  // a few milliseconds per step, faster on wider groups
  double step_seconds(const paraflex::request_shape& s, int k) const { return 0.001 + paraflex::latent_tokens(s) * 2e-6 / k; }
  bool allows_degree(const paraflex::request_shape&, int) const { return true; }
  double migration_seconds(const paraflex::request_shape&, int, int, bool) const { return 0.0005; }
};
}  // namespace

int main() {
  using namespace paraflex;
  namespace asio = boost::asio;
  asio::io_context io;
  asio::steady_timer timer(io);

  thread_executor executor(4);
  cpu_cost cost;
  auto policy = builtin_policies(4).make("slo-aware").value_or_throw();
  scheduler sched(cluster{4, 4, "cpu"}, policy, executor, cost);
  std::map<std::string, std::string> outcome;  // touched on the loop's thread only
  sched.on_request_end([&](const request_record& r) {
    outcome[r.spec.id] = r.phase == request_phase::completed ? "completed" : r.drop_reason;
  });

  // The executor's clock and the timer's: now() counts microseconds from this origin.
  const auto origin = std::chrono::steady_clock::now() - std::chrono::microseconds(executor.now());
  std::uint64_t turns = 0;
  std::function<void()> turn_again;
  auto turn = [&] {
    ++turns;
    const tick next = sched.turn();
    if (sched.finished()) {
      timer.cancel();
      io.stop();
      return;
    }
    if (next != never) {  // re-arm: the earliest thing the scheduler waits for by time
      timer.expires_at(origin + std::chrono::microseconds(next));
      timer.async_wait([&](const boost::system::error_code& ec) {
        if (!ec) asio::post(io, turn_again);
      });
    }
  };
  turn_again = turn;
  // Any thread: post a turn to the loop (never call the scheduler from here).
  sched.on_wakeup([&] { asio::post(io, turn); });

  auto& client = sched.client();
  client.open();
  std::thread client_thread([&] {
    for (int i = 0; i < 12; ++i) {
      const int px = i % 3 == 0 ? 512 : 256;
      client.submit({"q" + std::to_string(i), 0, {"toy-dit", px, px, 1}, 8, *to_ticks(60.0), 0, ""});
      if (i == 7) client.cancel("q7");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    client.close();  // the loop may finish once everything has ended
  });

  asio::post(io, turn);
  // finished() can only turn true in a turn: keep the loop alive until the last one stops it.
  auto guard = asio::make_work_guard(io);
  io.run();
  client_thread.join();

  int completed = 0;
  for (const auto& [id, how] : outcome) completed += how == "completed";
  const bool ok = outcome.size() == 12 && completed >= 11 && (outcome["q7"] == "cancelled" || outcome["q7"] == "completed");
  std::printf("%s: %zu requests ended (%d completed, q7 %s) in %llu turns of the Asio loop\n", ok ? "ok" : "FAILED", outcome.size(),
              completed, outcome["q7"].c_str(), static_cast<unsigned long long>(turns));
  return ok ? 0 : 1;
}
