// Engine benchmarks (figures go to the README, not into timed tests).
//
//   make bench   (Release build; medians of 5 repetitions)
#include <benchmark/benchmark.h>

#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "qm/engine.h"

namespace qm {
namespace {

constexpr int kTypes = 50;
constexpr int kProducts = 20;

class LastGrant : public EventSink {
 public:
  void OnEvent(const Event& e) override {
    if (e.type == EventType::kGranted) last = e.allocation_id;
  }
  std::string last;
};

AllocationRequest Request(int type, int product, int workflow,
                          const char* priority = "normal") {
  AllocationRequest r;
  r.workflow_id = "wf" + std::to_string(workflow);
  r.requester = "bench";
  r.product = "p" + std::to_string(product);
  r.agent_type = "t" + std::to_string(type);
  r.priority = priority;
  r.resources = {{"agents", 1}, {"cpu_cores", 0.5}, {"memory_gb", 1}};
  r.ttl = std::chrono::hours(5);
  return r;
}

Config BigConfig(int64_t capped_limit, int64_t open_limit) {
  Config c = Config::Defaults();
  for (ResourceSpec& r : c.resources) r.capacity = 1e7;
  for (int t = 0; t < kTypes; ++t) {
    c.per_type_limits["t" + std::to_string(t)] =
        t < kTypes / 2 ? capped_limit : open_limit;
  }
  c.scheduling.history_limit = 10000;
  return c;
}

// BigConfig plus every money feature: prices, the seed's model rules, a
// per-task token budget for every type, global, per-product and per-type
// period budgets (large enough never to refuse) and a breaker condition.
Config MoneyConfig(Config c) {
  c.pricing.models["opus"] = {15, 75, 1.5};
  c.pricing.models["sonnet"] = {3, 15, 0.3};
  c.pricing.models["haiku"] = {0.25, 1.25, 0.03};
  c.pricing.default_model = "sonnet";
  c.model_rules = {{"task.priority == critical", "opus", "sonnet"},
                   {"task.estimated_minutes < 30", "haiku", ""},
                   {"default", "sonnet", ""}};
  for (int t = 0; t < kTypes; ++t) {
    c.token_budgets.per_type["t" + std::to_string(t)] = 80000;
    c.daily_limits.per_agent_type["t" + std::to_string(t)] = {
        int64_t{100000000000000}, 1e9};
  }
  for (int p = 0; p < kProducts; ++p) {
    c.products["p" + std::to_string(p)].token_budget_daily =
        int64_t{100000000000000};
    c.products["p" + std::to_string(p)].cost_budget_daily_usd = 1e9;
  }
  c.daily_limits.max_tokens_total = int64_t{100000000000000};
  c.daily_limits.max_cost_usd = 1e9;
  c.circuit_breaker.trip_conditions = {
      "cost_daily_usd > daily_limits.max_cost_usd",
      "projected_cost_daily_usd > 2 * daily_limits.max_cost_usd"};
  return c;
}

// allocate + release of a 3-resource request (agents, cpu, memory) with
// 10,000 active leases and 10,000 queued requests over 50 agent types and
// 20 products. Types t0-t24 are full with requests queued behind them;
// the cycle uses types t25-t49, which have room.
//   mode 0: a bare request and release (no estimates, no usage report);
//   mode 1: with token/minute estimates and a usage report at release;
//   mode 2: mode 1 with every budget check (MoneyConfig).
// What the budget checks cost is mode 2 minus mode 1.
void BM_AllocateReleaseCycle(benchmark::State& state) {
  ManualClock clock(Time(Duration(1769436000000LL)));
  const int mode = static_cast<int>(state.range(0));
  const bool money = mode == 2;
  Config config = BigConfig(200, 400);
  if (money) config = MoneyConfig(std::move(config));
  auto engine = std::move(Engine::Create(config, &clock)).value();
  int n = 0;
  for (int t = 0; t < kTypes; ++t) {
    for (int i = 0; i < 200; ++i, ++n) {
      engine->Allocate(Request(t, n % kProducts, n % 1000));
    }
  }
  for (int i = 0; i < 10000; ++i, ++n) {
    auto r =
        engine->Allocate(Request(i % (kTypes / 2), n % kProducts, n % 1000));
    if (r->allocation.status != AllocStatus::kQueued) {
      state.SkipWithError("set-up: expected a queued request");
      return;
    }
  }
  const Snapshot s = engine->GetSnapshot();
  if (s.active != 10000 || s.queued != 10000) {
    state.SkipWithError("set-up: wrong active/queued counts");
    return;
  }
  int i = 0;
  UsageReport usage;
  if (mode > 0) {
    usage.input_tokens = 60000;
    usage.output_tokens = 9000;
  }
  for (auto _ : state) {
    AllocationRequest req =
        Request(kTypes / 2 + i % (kTypes / 2), i % kProducts, i % 1000);
    if (mode > 0) {
      req.estimated_tokens = 70000;
      req.estimated_minutes = 20 + i % 40;
    }
    auto r = engine->Allocate(req);
    auto rel = engine->Release(r->allocation.id, usage);
    benchmark::DoNotOptimize(rel);
    ++i;
  }
  if (!engine->CheckInvariants().ok()) state.SkipWithError("invariants");
  if (money && engine->Costs().tokens_used != 69000LL * i) {
    state.SkipWithError("usage not counted");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AllocateReleaseCycle)
    ->ArgName("mode")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMicrosecond);

// Every agent type full (20 running each) and 100,000 requests queued
// behind them over 4 levels x 20 products x 50 types.
struct FullQueue {
  FullQueue() : clock(Time(Duration(1769436000000LL))) {
    engine =
        std::move(Engine::Create(BigConfig(20, 20), &clock, &sink)).value();
    int n = 0;
    for (int t = 0; t < kTypes; ++t) {
      for (int i = 0; i < 20; ++i, ++n) {
        active.push_back(engine->Allocate(Request(t, n % kProducts, n % 1000))
                             ->allocation.id);
      }
    }
    static const char* kLevels[] = {"low", "normal", "high", "normal"};
    for (int i = 0; i < 100000; ++i, ++n) {
      clock.Advance(std::chrono::milliseconds(7));
      engine->Allocate(Request(i % kTypes, (i / kTypes) % kProducts, n % 1000,
                               kLevels[i % 4]));
    }
  }
  // Releases one running allocation; the request that took the freed slot
  // replaces it in `active`.
  void ReleaseOne() {
    engine->Release(active[next]);
    active[next] = sink.last;
    next = (next + 7) % active.size();
  }
  ManualClock clock;
  LastGrant sink;
  std::unique_ptr<Engine> engine;
  std::vector<std::string> active;
  size_t next = 0;
};

// allocate + release of a request with 8 exclusive path locks while
// 12,500 active allocations hold 100,000 locks (8 each) in a tree of
// 100 directories x 10 subdirectories x files; the cycle's paths are free
// files in the same directories (so every lookup walks a populated branch).
// The cycle counts its path validation and normalisation too.
// Room for everything, no per-workflow limits, a workspace root: only the
// locks make anyone wait.
Config LockBenchConfig() {
  Config config = BigConfig(1000000, 1000000);
  config.conflicts.workspace_root = "/work/repo";
  config.allocation_limits = {};
  config.allocation_limits.max_cpu_per_workflow.reset();
  config.allocation_limits.max_memory_per_workflow.reset();
  config.allocation_limits.max_agents_per_workflow.reset();
  return config;
}

void BM_LockCycle8PathsAmong100kLocks(benchmark::State& state) {
  ManualClock clock(Time(Duration(1769436000000LL)));
  auto engine = std::move(Engine::Create(LockBenchConfig(), &clock)).value();
  auto paths = [](int n, int salt) {
    std::vector<std::string> out;
    for (int k = 0; k < 8; ++k) {
      const int f = n * 8 + k;
      out.push_back("src/dir" + std::to_string(f % 100) + "/sub" +
                    std::to_string((f / 100) % 10) + "/file" +
                    std::to_string(f / 1000) + (salt ? "_new.cc" : ".cc"));
    }
    return out;
  };
  for (int n = 0; n < 12500; ++n) {
    AllocationRequest r = Request(n % kTypes, n % kProducts, n % 1000);
    r.exclusive_access = paths(n, 0);
    auto a = engine->Allocate(r);
    if (!a.ok() || a->allocation.status != AllocStatus::kActive) {
      state.SkipWithError("set-up: expected a grant");
      return;
    }
  }
  // The requests are built up front: their text is the caller's work.
  std::vector<AllocationRequest> cycle;
  for (int n = 0; n < 1000; ++n) {
    cycle.push_back(Request(n % kTypes, n % kProducts, n));
    if (state.range(0)) cycle.back().exclusive_access = paths(n * 12, 1);
  }
  int i = 0;
  for (auto _ : state) {
    auto r = engine->Allocate(cycle[i % cycle.size()]);
    if (r->allocation.status != AllocStatus::kActive) {
      state.SkipWithError("a free path was not granted");
      break;
    }
    auto rel = engine->Release(r->allocation.id);
    benchmark::DoNotOptimize(rel);
    ++i;
  }
  if (!engine->CheckInvariants().ok()) state.SkipWithError("invariants");
  state.SetItemsProcessed(state.iterations());
}
// paths:0 is the same cycle without paths: the difference is what 8 locks
// cost.
BENCHMARK(BM_LockCycle8PathsAmong100kLocks)
    ->ArgName("paths")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMicrosecond);

// n writers queued for one file behind its holder: each iteration releases
// the holder (the first in line takes the lock) and queues one more writer
// at the end, so the line stays n long.
void BM_LockLineRelease(benchmark::State& state) {
  ManualClock clock(Time(Duration(1769436000000LL)));
  auto engine = std::move(Engine::Create(LockBenchConfig(), &clock)).value();
  const int n = static_cast<int>(state.range(0));
  std::deque<std::string> line;
  int made = 0;
  auto writer = [&] {
    AllocationRequest r = Request(made % kTypes, made % kProducts, made % 1000);
    ++made;
    r.exclusive_access = {"src/app.ts"};
    auto a = engine->Allocate(r);
    line.push_back(a->allocation.id);
    return a->allocation.status;
  };
  if (writer() != AllocStatus::kActive) {
    state.SkipWithError("set-up: expected the holder to start");
    return;
  }
  for (int i = 0; i < n; ++i) writer();
  for (auto _ : state) {
    engine->Release(line.front());
    line.pop_front();
    writer();
  }
  if (engine->GetSnapshot().queued != n) state.SkipWithError("line drifted");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LockLineRelease)
    ->ArgName("waiters")
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);

// One slot frees with 100,000 queued: the release, the dispatch pass that
// picks the best queued request that fits and grants it, and one new request
// queued behind (to keep the queue at 100,000).
void BM_QueueSelectionOneSlotFrees(benchmark::State& state) {
  FullQueue q;
  if (q.engine->GetSnapshot().queued != 100000) {
    state.SkipWithError("set-up: expected 100,000 queued");
    return;
  }
  int i = 0;
  for (auto _ : state) {
    q.ReleaseOne();
    q.engine->Allocate(Request(i % kTypes, i % kProducts, i % 1000));
    ++i;
  }
  if (q.engine->GetSnapshot().queued != 100000) {
    state.SkipWithError("queue length drifted");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_QueueSelectionOneSlotFrees)->Unit(benchmark::kMicrosecond);

// The same without the refill: only the release, the selection and the
// grant (the queue shrinks from 100,000 to 50,000 over the run).
void BM_QueueSelectionReleaseOnly(benchmark::State& state) {
  FullQueue q;
  for (auto _ : state) q.ReleaseOne();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_QueueSelectionReleaseOnly)
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(50000);

// An engine with 100,000 active allocations (50 types x 2,000, 20
// products, 1,000 workflows; agents, cpu and memory each) and, with
// `queued`, 100,000 more queued behind them: the state a durable engine
// snapshots.
struct BigState {
  explicit BigState(bool queued) : clock(Time(Duration(1769436000000LL))) {
    config = BigConfig(2000, 2000);
    config.allocation_limits.max_agents_per_workflow.reset();
    config.allocation_limits.max_cpu_per_workflow.reset();
    config.allocation_limits.max_memory_per_workflow.reset();
    engine = std::move(Engine::Create(config, &clock)).value();
    const int n = queued ? 200000 : 100000;
    for (int i = 0; i < n; ++i) {
      engine->Allocate(Request(i % kTypes, i % kProducts, i % 1000));
    }
    const Snapshot s = engine->GetSnapshot();
    ok = s.active == 100000 && s.queued == (queued ? 100000 : 0);
  }
  ManualClock clock;
  Config config;
  std::unique_ptr<Engine> engine;
  bool ok = false;
};

void BM_SaveState(benchmark::State& state) {
  BigState big(state.range(0) != 0);
  if (!big.ok) {
    state.SkipWithError("set-up: wrong active/queued counts");
    return;
  }
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string s = big.engine->SaveState();
    bytes = s.size();
    benchmark::DoNotOptimize(s.data());
  }
  state.counters["state_MB"] = static_cast<double>(bytes) / 1e6;
  state.counters["bytes_per_alloc"] =
      static_cast<double>(bytes) / (state.range(0) ? 200000.0 : 100000.0);
}
BENCHMARK(BM_SaveState)
    ->ArgName("queued")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond);

// Restore (Init, decode, index rebuild, invariant check) of BM_SaveState's
// states.
void BM_RestoreState(benchmark::State& state) {
  BigState big(state.range(0) != 0);
  if (!big.ok) {
    state.SkipWithError("set-up: wrong active/queued counts");
    return;
  }
  const std::string saved = big.engine->SaveState();
  for (auto _ : state) {
    auto restored = Engine::Restore(big.config, &big.clock, nullptr, saved);
    if (!restored.ok()) {
      state.SkipWithError(restored.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(restored->get());
  }
}
BENCHMARK(BM_RestoreState)
    ->ArgName("queued")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond);

long RssKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Resident memory of 100,000 active + 100,000 queued allocations.
void BM_Memory100kActive100kQueued(benchmark::State& state) {
  for (auto _ : state) {
    const long before = RssKiB();
    ManualClock clock(Time(Duration(1769436000000LL)));
    Config c = BigConfig(2000, 2000);
    auto engine = std::move(Engine::Create(c, &clock)).value();
    for (int i = 0; i < 200000; ++i) {
      engine->Allocate(Request(i % kTypes, i % kProducts, i % 20000));
    }
    const Snapshot s = engine->GetSnapshot();
    if (s.active != 100000 || s.queued != 100000) {
      state.SkipWithError("set-up: expected 100k active + 100k queued");
    }
    state.counters["rss_delta_MB"] = (RssKiB() - before) / 1024.0;
    state.counters["rss_total_MB"] = RssKiB() / 1024.0;
  }
}
BENCHMARK(BM_Memory100kActive100kQueued)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

}  // namespace
}  // namespace qm
