// Monitoring benchmarks (issue 7, docs/monitoring.md), on a real `qm serve`
// App in this process (SQLite state in a temporary directory):
//
//   BM_SampleOnce           one sample: read the machine, journal the
//                           reading (ObserveSystem), record it.
//   BM_IdleServerCpu/S      the server idle for 10 s with the sampler at
//                           1 s (S=1) or off (S=0): the process's CPU time
//                           as a share of one core (counter cpu_pct). The
//                           sampler's cost is the difference.
//   BM_ReclaimHolderKilled  a holder process is killed with SIGKILL; the
//                           time from the kill to the `expired` event of
//                           its allocation (capacity back in the pool).
//
//   build-bench/bench/qm_monitor_bench --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "server/app.h"
#include "server/holders.h"
#include "server/http_client.h"
#include "server/sampler.h"

namespace qm::server {
namespace {

using Json = nlohmann::json;

class TempDir {
 public:
  TempDir() {
    std::string t =
        (std::filesystem::temp_directory_path() / "qm-bench-XXXXXX").string();
    path_ = mkdtemp(t.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<App> StartApp(const std::string& dir, bool sample,
                              Duration interval) {
  ServeOptions o;
  o.http.listen = "127.0.0.1:0";
  o.service.workers = 8;
  o.durable.store.location = dir;
  o.sample = sample;
  o.config.monitoring_intervals.resource_check = interval;
  auto app = App::Start(std::move(o));
  if (!app.ok()) return nullptr;
  return std::move(*app);
}

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void BM_SampleOnce(benchmark::State& state) {
  TempDir dir;
  auto app = StartApp(dir.path(), false, std::chrono::seconds(30));
  if (!app) {
    state.SkipWithError("the server did not start");
    return;
  }
  SamplerOptions o;
  o.storage_path = dir.path();
  Sampler sampler(o, &app->engine());
  for (auto _ : state) {
    Status s = sampler.SampleOnce();
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
}
BENCHMARK(BM_SampleOnce)->Unit(benchmark::kMicrosecond);

void BM_IdleServerCpu(benchmark::State& state) {
  const bool sample = state.range(0) == 1;
  for (auto _ : state) {
    TempDir dir;
    auto app = StartApp(dir.path(), sample, std::chrono::seconds(1));
    if (!app) {
      state.SkipWithError("the server did not start");
      return;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // settle
    const double cpu0 = ProcessCpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(10));
    const double cpu = ProcessCpuSeconds() - cpu0;
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    state.counters["cpu_pct"] = 100 * cpu / wall;
    (void)app->Stop(std::chrono::seconds(2));
  }
}
BENCHMARK(BM_IdleServerCpu)
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

void BM_ReclaimHolderKilled(benchmark::State& state) {
  TempDir dir;
  auto app = StartApp(dir.path(), false, std::chrono::seconds(30));
  if (!app) {
    state.SkipWithError("the server did not start");
    return;
  }
  const std::string url = "http://" + app->address();
  // Expired events, by allocation id, as the stream delivers them.
  std::mutex mu;
  std::condition_variable cv;
  std::string last_expired;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    ClientOptions co;
    co.url = url;
    HttpClient client(co);
    client.Stream(
        "/v1/events?types=expired,override",
        [&](const std::string&, const std::string& type,
            const std::string& data) {
          if (type == "expired") {
            Json e = Json::parse(data, nullptr, false);
            std::lock_guard<std::mutex> lock(mu);
            last_expired = e.value("allocation_id", "");
            cv.notify_all();
          }
          return !stop.load();
        },
        std::chrono::seconds(60));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ClientOptions co;
  co.url = url;
  HttpClient client(co);
  const std::string boot = BootId();
  int n = 0;
  for (auto _ : state) {
    const pid_t child = fork();
    if (child == 0) {
      pause();
      _exit(0);
    }
    auto start_time = ProcessStartTime(child);
    Json body = {{"workflow_id", "bench-" + std::to_string(n++)},
                 {"agent_type", "dev"},
                 {"ttl", "1h"},
                 {"holder",
                  {{"pid", child},
                   {"start_time", start_time.ok() ? *start_time : 0},
                   {"boot_id", boot}}}};
    auto r = client.Call("POST", "/v1/allocations", body.dump());
    Json a = r.ok() ? Json::parse(r->body, nullptr, false) : Json();
    if (!r.ok() || !a.contains("result") ||
        a["result"].value("status", "") != "active") {
      kill(child, SIGKILL);
      waitpid(child, nullptr, 0);
      state.SkipWithError("the allocation was not granted");
      break;
    }
    const std::string id = a["result"]["allocation_id"];
    std::unique_lock<std::mutex> lock(mu);
    const auto t0 = std::chrono::steady_clock::now();
    kill(child, SIGKILL);
    const bool seen = cv.wait_for(lock, std::chrono::seconds(5),
                                  [&] { return last_expired == id; });
    const auto t1 = std::chrono::steady_clock::now();
    lock.unlock();
    waitpid(child, nullptr, 0);
    if (!seen) {
      state.SkipWithError("the allocation was not reclaimed within 5 s");
      break;
    }
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  stop = true;
  // One more event ends the reader (an override: pause, then resume).
  (void)client.Call("POST", "/v1/overrides/pause", "{}");
  (void)client.Call("POST", "/v1/overrides/resume", "{}");
  reader.join();
}
BENCHMARK(BM_ReclaimHolderKilled)
    ->UseManualTime()
    ->Iterations(50)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace qm::server
