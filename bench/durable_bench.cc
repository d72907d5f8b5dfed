// Durable engine benchmarks: allocate+release cycles through the journal
// with many callers (group commit), and recovery of a large state.
//
//   make bench                          SQLite (the default store)
//   QM_BENCH_PG_URI=postgresql://...    also PostgreSQL: start a server with
//     scripts/pg-test-server.sh start /tmp/qm-pg-bench and pass the URI in
//     /tmp/qm-pg-bench/uri
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "qm/durable_engine.h"

namespace qm {
namespace {

Config DurableBenchConfig() {
  Config c = Config::Defaults();
  for (ResourceSpec& r : c.resources) r.capacity = 1e7;
  c.allocation_limits.max_agents_per_workflow.reset();
  c.allocation_limits.max_cpu_per_workflow.reset();
  c.allocation_limits.max_memory_per_workflow.reset();
  c.allocation_limits.max_duration = std::chrono::hours(24 * 90);
  c.scheduling.history_limit = 10000;
  return c;
}

AllocationRequest CycleRequest(int thread, int i) {
  AllocationRequest r;
  r.workflow_id = "wf" + std::to_string(thread);
  r.requester = "bench";
  r.product = "p" + std::to_string(thread % 8);
  r.agent_type = "t" + std::to_string(i % 16);
  r.priority = "normal";
  r.resources = {{"agents", 1}, {"cpu_cores", 0.5}};
  r.ttl = std::chrono::minutes(30);
  return r;
}

std::string TempDir(const char* tag) {
  std::string tmpl = std::string("/tmp/qm-bench-") + tag + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return "";
  return tmpl;
}

// The PostgreSQL database to run on (QM_BENCH_PG_URI): it must be empty
// (a fresh database), like a new qm state.
bool PgLocation(std::string* uri) {
  const char* env = std::getenv("QM_BENCH_PG_URI");
  if (env == nullptr || *env == '\0') return false;
  *uri = env;
  return true;
}

std::unique_ptr<DurableEngine> g_engine;
std::string g_dir;
std::atomic<bool> g_failed{false};

// Allocate + release through the durable engine, by state.threads() callers
// at once (64 in the figure the README quotes). Arg 0: SQLite, synchronous
// FULL; arg 1: PostgreSQL (needs QM_BENCH_PG_URI, an empty database).
void BM_DurableCycle(benchmark::State& state) {
  const bool pg = state.range(0) == 1;
  if (state.thread_index() == 0) {
    DurableOptions o;
    if (pg) {
      if (!PgLocation(&o.store.location)) {
        state.SkipWithError("set QM_BENCH_PG_URI to run on PostgreSQL");
        g_failed = true;
      }
    } else {
      g_dir = TempDir("cycle");
      o.store.location = g_dir;
    }
    if (!g_failed) {
      auto d = DurableEngine::Open(o, DurableBenchConfig());
      if (!d.ok()) {
        state.SkipWithError(d.status().ToString().c_str());
        g_failed = true;
      } else {
        g_engine = std::move(*d);
      }
    }
  }
  int i = 0;
  DurableStats before;
  for (auto _ : state) {
    if (g_failed) break;
    if (i == 0 && state.thread_index() == 0) before = g_engine->stats();
    auto a = g_engine->Allocate(CycleRequest(state.thread_index(), i));
    if (!a.ok() || !g_engine->Release(a->allocation.id).ok()) {
      state.SkipWithError("a cycle failed");
      break;
    }
    ++i;
  }
  state.SetItemsProcessed(i);
  if (state.thread_index() == 0 && g_engine) {
    const DurableStats after = g_engine->stats();
    const double commits = static_cast<double>(after.commits - before.commits);
    const double ops =
        static_cast<double>(after.operations - before.operations);
    state.counters["commits_per_s"] =
        benchmark::Counter(commits, benchmark::Counter::kIsRate);
    state.counters["avg_batch"] = commits > 0 ? ops / commits : 0;
    state.counters["journal_bytes_per_cycle"] =
        ops > 0 ? 2.0 *
                      static_cast<double>(after.payload_bytes -
                                          before.payload_bytes) /
                      ops
                : 0;
  }
}
void DurableCycleTearDown(const benchmark::State&) {
  if (g_engine) (void)g_engine->Close();
  g_engine.reset();
  if (!g_dir.empty()) std::filesystem::remove_all(g_dir);
  g_dir.clear();
  g_failed = false;
}
BENCHMARK(BM_DurableCycle)
    ->ArgName("pg")
    ->Arg(0)
    ->Arg(1)
    ->Threads(64)
    ->UseRealTime()
    ->MinTime(3)
    ->Teardown(DurableCycleTearDown)
    ->Unit(benchmark::kMicrosecond);

// Recovery (DurableEngine::Open) of a state with 100,000 active
// allocations in its snapshot and a journal tail of 1,000,000 records
// after it (500,000 allocate+release cycles). Built once with synchronous
// NORMAL and 8 writer threads; each iteration opens it again (restore +
// replay + the restart tick) and closes it.
void BM_Recovery100kActive1MTail(benchmark::State& state) {
  const std::string dir = TempDir("recovery");
  DurableOptions o;
  o.store.location = dir;
  o.store.sync = SyncMode::kNormal;
  o.snapshot_every_records = UINT64_MAX;
  o.snapshot_interval = std::chrono::hours(24 * 365);
  {
    auto d = DurableEngine::Open(o, DurableBenchConfig());
    if (!d.ok()) {
      state.SkipWithError(d.status().ToString().c_str());
      return;
    }
    std::vector<std::thread> threads;
    std::atomic<bool> failed{false};
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 100000 / 8; ++i) {
          AllocationRequest r = CycleRequest(1000 + i, t);
          r.ttl = std::chrono::hours(24 * 30);
          r.max_duration = std::chrono::hours(24 * 60);
          if (!(*d)->Allocate(r).ok()) failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    threads.clear();
    if (failed || !(*d)->WriteSnapshot().ok()) {
      state.SkipWithError("set-up: active allocations");
      return;
    }
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 500000 / 8; ++i) {
          auto a = (*d)->Allocate(CycleRequest(t, i));
          if (!a.ok() || !(*d)->Release(a->allocation.id).ok()) failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    if (failed || !(*d)->Close().ok()) {
      state.SkipWithError("set-up: journal tail");
      return;
    }
  }
  uint64_t replayed = 0;
  double restore_ms = 0, replay_ms = 0;
  for (auto _ : state) {
    auto d = DurableEngine::Open(o, DurableBenchConfig());
    if (!d.ok()) {
      state.SkipWithError(d.status().ToString().c_str());
      break;
    }
    replayed = (*d)->recovery().replayed;
    restore_ms += (*d)->recovery().restore_took.count();
    replay_ms += (*d)->recovery().replay_took.count();
    state.PauseTiming();
    auto snap = (*d)->GetSnapshot();
    if (!snap.ok() || snap->active != 100000) {
      state.SkipWithError("recovered state lacks the 100k active");
    }
    (void)(*d)->Close();
    d->reset();
    state.ResumeTiming();
  }
  state.counters["replayed"] = static_cast<double>(replayed);
  const double n = static_cast<double>(state.iterations());
  state.counters["restore_ms"] = n > 0 ? restore_ms / n : 0;
  state.counters["replay_ms"] = n > 0 ? replay_ms / n : 0;
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Recovery100kActive1MTail)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace qm
