// paraflex-serve - the reference HTTP server: paraflex scheduling a CPU stand-in for a DiT
// (thread_executor + cpu_dit_body) behind a small JSON API. See README.md in this directory.
//
// Threads: the scheduler's own thread runs scheduler::run() with the client open; --threads I/O
// threads run Boost.Asio and talk to the scheduler only through request_client. Shutdown (SIGTERM or
// SIGINT): stop accepting connections and requests; requests that have not started are dropped with
// reason "shutdown"; started ones run to the end; then exit 0. A second signal, or --drain-timeout,
// cancels what is still running (it ends after its current task, reason "shutdown").
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>

#include <paraflex/cost/profile.hpp>
#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/executor/thread_executor.hpp>
#include <paraflex/policy/builtin.hpp>
#include <paraflex/runtime/scheduler.hpp>
#include <paraflex/sim/simulate.hpp>  // fixed_degree_of

#include "cli_parse.hpp"
#include "metrics.hpp"
#include "request_json.hpp"
#include "scaled_executor.hpp"
#include "server.hpp"

#ifndef PARAFLEX_DATA_DIR
#define PARAFLEX_DATA_DIR "bench/data"
#endif

namespace {

using namespace paraflex_serve;

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "paraflex-serve: error: %s\n", message.c_str());
  std::exit(2);
}

// --gpu not given: the profile's only GPU type, else the one with the most models (ties: by name),
// said on stderr so that the choice is never silent.
std::string choose_gpu(const paraflex::profile_table& table) {
  const auto gpus = table.gpus();
  std::string best;
  std::size_t best_models = 0;
  for (const auto& g : gpus) {
    if (const auto n = table.models_on(g).size(); n > best_models) best = g, best_models = n;
  }
  if (gpus.size() > 1) {
    std::fprintf(stderr, "paraflex-serve: the profile has GPU types %s; serving as '%s' (the one with most models; choose with --gpu)\n",
                 paraflex::join_names(gpus).c_str(), best.c_str());
  }
  return best;
}

int run_server(int argc, char** argv) {
  CLI::App app{"paraflex-serve: an HTTP server that schedules requests with paraflex on CPU threads standing in for GPUs."};
  std::string host = "127.0.0.1", policy_spec = "slo-aware", profile_file, gpu_type;
  int port = 8080, gpus = 4, io_threads = 2, channels = 16, max_degree = 0;
  double time_scale = 1.0, read_timeout_s = 10, drain_timeout_s = 60, max_tokens = 1 << 18, decision_gap_ms = 0;
  long max_connections = 512;
  std::size_t body_limit = 64 * 1024;
  std::size_t retain = 100000;
  app.add_option("--port", port, "TCP port; 0 picks a free one (the first line on stdout says which)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(0, 65535));
  app.add_option("--host", host, "address to listen on (default 127.0.0.1)");
  app.add_option("--gpus", gpus, "devices (CPU worker threads standing in for GPUs)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 256));
  app.add_option("--policy", policy_spec, "policy spec NAME[:KEY=VALUE]... (default slo-aware)");
  app.add_option("--max-degree", max_degree, "run no request on more devices than this (default: no cap), as paraflex-sim --max-degree")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 256));
  app.add_option("--decision-gap-ms", decision_gap_ms,
                 "call the policy at most once per this many milliseconds of the profile's clock (default 0: at every event), "
                 "as paraflex-sim --decision-gap-ms")
      ->check(paraflex_bench::decision_gap_ms);
  app.add_option("--profile", profile_file, "step-latency profile CSV (default: the bundled one)")->check(paraflex_bench::non_empty);
  app.add_option("--gpu", gpu_type, "GPU type: selects profile rows")->check(paraflex_bench::non_empty);
  app.add_option("--time-scale", time_scale, "run X times faster than the profile's GPUs (1000: a step priced 0.8 s takes 0.8 ms)")
      ->check(paraflex_bench::finite_range(1e-3, 1e6));
  app.add_option("--threads", io_threads, "HTTP I/O threads")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 64));
  app.add_option("--max-connections", max_connections, "open connections beyond which new ones get 503")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1L, 1L << 20));
  app.add_option("--read-timeout", read_timeout_s, "seconds a request (headers and body) may take to arrive")->check(paraflex_bench::finite_range(0.01, 3600.0));
  app.add_option("--body-limit", body_limit, "largest request body in bytes (413 beyond)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(std::size_t{2}, std::size_t{1} << 30));
  app.add_option("--drain-timeout", drain_timeout_s, "seconds after SIGTERM before running requests are cancelled")->check(paraflex_bench::finite_range(0.0, 86400.0));
  app.add_option("--max-tokens", max_tokens, "largest latent (tokens) one request may have")->check(paraflex_bench::finite_range(1.0, 1e9));
  app.add_option("--retain", retain, "ended requests whose outcome GET still answers; older ones are forgotten (404)")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(std::size_t{1}, std::size_t{1} << 32));
  app.add_option("--channels", channels, "latent channels of the CPU stand-in (memory and work per token)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1024));
  if (const auto status = paraflex_bench::parse_command_line(app, argc, argv, usage_error)) return *status;

  beast::error_code addr_ec;
  const auto address = net::ip::make_address(host, addr_ec);
  if (addr_ec) usage_error(fmt::format("--host '{}': not an IP address ({})", host, addr_ec.message()));

  // Inputs: profile, GPU type, cost model, policy. Bad ones are usage errors (exit 2).
  const std::string profile_path = profile_file.empty() ? std::string(PARAFLEX_DATA_DIR "/profiles/step_latency.csv") : profile_file;
  paraflex::profile_table table;
  std::optional<paraflex::profile_cost_model> cost;
  std::optional<paraflex::any_policy> policy;
  try {
    table = paraflex::load_profile_csv(profile_path).value_or_throw();
    if (gpu_type.empty()) gpu_type = choose_gpu(table);
    cost.emplace(paraflex::profile_cost_model::from_profile(table, gpu_type).value_or_throw());
    cost->set_max_degree(max_degree);  // before anything is priced; 0: no cap
    policy.emplace(paraflex::builtin_policies(gpus).make(policy_spec).value_or_throw());
    if (const auto k = paraflex::fixed_degree_of(*policy); k && max_degree > 0 && *k > max_degree) {
      usage_error(fmt::format("--policy '{}' runs every request on {} devices: more than --max-degree {}", policy_spec, *k, max_degree));
    }
  } catch (const paraflex::input_exception& e) {
    usage_error(e.what());
  } catch (const std::exception& e) {
    usage_error(e.what());
  }
  const paraflex::profile_cost_model check_cost = *cost;  // HTTP threads price requests on this copy

  request_limits limits;
  limits.max_latent_tokens = max_tokens;
  limits.fixed_degree = paraflex::fixed_degree_of(*policy).value_or(0);  // static:K: refuse a model that does not allow K
  http_options http_opts;
  http_opts.body_limit = body_limit;
  http_opts.read_timeout = std::chrono::milliseconds(static_cast<long>(read_timeout_s * 1000));
  http_opts.max_connections = max_connections;

  // The runtime: real CPU work on `gpus` threads, in a clock that runs time_scale times faster.
  paraflex::cpu_dit_body body;
  body.time_scale = 1.0 / time_scale;  // the body sleeps expected_duration / X (real microseconds)
  body.channels = static_cast<std::size_t>(channels);
  body.work = 1;
  // The stand-in's self-check (its decode replays every step serially) costs real CPU in proportion
  // to the steps, which no time scale shortens and no cancel interrupts: a server does not need it.
  body.verify = false;
  paraflex::thread_executor threads(static_cast<std::size_t>(gpus), body);
  scaled_executor executor(threads, time_scale);
  paraflex::scheduler_options sched_opts;
  sched_opts.strict = false;  // a server keeps serving past an invalid decision (skipped, counted)
  sched_opts.min_decision_gap = paraflex_bench::decision_gap_ticks(decision_gap_ms);  // checked by the flag's validator
  paraflex::scheduler sched(paraflex::cluster{gpus, gpus, gpu_type}, *policy, executor, *cost, sched_opts);

  server_metrics metrics;
  auto& client = sched.client();
  // Declared before the io_context: sessions destroyed with it still use the service and metrics.
  service svc(client, check_cost, gpus, limits, metrics, http_opts);
  // The outcomes of the last `retain` ended requests stay queryable; older ones are forgotten, which
  // bounds what GET answers but not memory: the library keeps a record per request, and the service
  // every id (README, "Limits worth knowing"). The metrics keep counting them.
  std::deque<std::string> ended_ids;
  sched.on_request_end([&](const paraflex::request_record& r) {  // scheduler's thread, once per request
    const bool ok = r.phase == paraflex::request_phase::completed;
    metrics.request_ended(ok, r.drop_reason, ok ? paraflex::to_seconds(r.finish - r.spec.arrival) : 0.0);
    svc.request_ended(r.spec.id);
    ended_ids.push_back(r.spec.id);  // published as ended before this callback: forget() accepts it later
    while (ended_ids.size() > retain) {
      client.forget(ended_ids.front());
      ended_ids.pop_front();
    }
  });
  client.open();  // run() serves until close(), even when nothing is in flight

  net::io_context ioc;
  std::shared_ptr<listener> lst;
  try {
    lst = std::make_shared<listener>(ioc, tcp::endpoint(address, static_cast<unsigned short>(port)), svc);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "paraflex-serve: error: cannot listen on %s:%d: %s\n", host.c_str(), port, e.what());
    client.close();
    sched.run();  // nothing was submitted: returns at once
    return 1;
  }
  // Shutdown: first signal drains, a second one (or the drain timeout) cancels what still runs. Set up
  // before the listening line: whoever reads that line may signal at once, and then the signal must
  // drain, not kill (it is handled once the I/O threads run).
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  net::steady_timer drain_timer(ioc);
  int signals_seen = 0;
  auto cancel_all = [&] {
    std::size_t n = 0;
    for (const auto& id : svc.unended_ids()) n += client.cancel(id, "shutdown") == paraflex::cancel_outcome::accepted;
    std::fprintf(stderr, "paraflex-serve: cancelled %zu unfinished request(s)\n", n);
  };
  std::function<void(beast::error_code, int)> on_signal = [&](beast::error_code ec, int signo) {
    if (ec) return;
    if (++signals_seen == 1) {
      std::fprintf(stderr, "paraflex-serve: signal %d: draining (no new connections or requests)\n", signo);
      lst->close();
      std::size_t dropped = 0;
      for (const auto& id : svc.stop_accepting()) {
        const auto st = client.status(id);
        if (st && st->state == paraflex::request_state::waiting && st->first_start == paraflex::never) {
          dropped += client.cancel(id, "shutdown") == paraflex::cancel_outcome::accepted;
        }
      }
      std::fprintf(stderr, "paraflex-serve: dropped %zu request(s) that had not started; the others run to the end\n", dropped);
      client.close();  // run() returns once everything accepted has ended
      drain_timer.expires_after(std::chrono::milliseconds(static_cast<long>(drain_timeout_s * 1000)));
      drain_timer.async_wait([&](beast::error_code tec) {
        if (!tec) cancel_all();
      });
    } else {
      cancel_all();
    }
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);

  const auto at = lst->local_endpoint();
  // An IPv6 address in brackets (RFC 3986 authority form), so that HOST:PORT splits at the last colon
  // and reads as a URL's authority either way.
  const std::string shown_address = at.address().is_v6() ? "[" + at.address().to_string() + "]" : at.address().to_string();
  std::printf("listening on %s:%u\n", shown_address.c_str(), static_cast<unsigned>(at.port()));
  std::fflush(stdout);
  std::fprintf(stderr, "paraflex-serve: %d devices as '%s', policy %s, profile %s, time scale %g%s\n", gpus, gpu_type.c_str(),
               policy_spec.c_str(), profile_path.c_str(), time_scale,
               max_degree > 0 ? fmt::format(", groups of at most {}", max_degree).c_str() : "");

  auto work = net::make_work_guard(ioc);  // the I/O threads run until the scheduler has finished
  std::atomic<bool> sched_failed{false};
  std::thread sched_thread([&] {
    try {
      sched.run();  // returns once the client is closed and every accepted request has ended
    } catch (const std::exception& e) {
      std::fprintf(stderr, "paraflex-serve: error: the scheduler stopped: %s\n", e.what());
      sched_failed = true;
    }
    net::post(ioc, [&] {
      work.reset();
      ioc.stop();
    });
  });

  lst->run();
  auto serve = [&] {
    for (;;) {  // a handler that throws costs its connection, not the server
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "paraflex-serve: error in an I/O handler: %s\n", e.what());
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < io_threads; ++i) pool.emplace_back(serve);
  serve();
  for (auto& t : pool) t.join();
  sched_thread.join();

  const auto c = client.counters();
  std::fprintf(stderr, "paraflex-serve: stopped: %llu submitted, %llu completed, %llu dropped%s\n", static_cast<unsigned long long>(c.submitted),
               static_cast<unsigned long long>(c.completed), static_cast<unsigned long long>(c.dropped), metrics.dropped_summary().c_str());
  return sched_failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a closed pipe (stderr read by a log shipper that died, `2>&1 | head`) must fail, not
  // kill the server mid-drain: requests in flight would never end. Sockets use MSG_NOSIGNAL already.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run_server(argc, argv);
  } catch (const std::exception& e) {  // from startup (an executor or the scheduler refusing a setting): exit 2, not terminate()
    usage_error(e.what());
  }
}
