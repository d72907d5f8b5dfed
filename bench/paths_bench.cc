// Path lock benchmarks: the lock table under 100,000 held locks, and path
// normalisation (figures go to the README, not into timed tests).
//
//   make bench   (Release build; medians of 5 repetitions)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/paths.h"
#include "heap.h"

namespace qm::paths {
namespace {

constexpr int kHeld = 100000;

// Random 4-deep paths shaped like a repository: 10 top-level directories,
// 20 below each, 20 below those, and files named from 1,000.
class PathMaker {
 public:
  explicit PathMaker(uint32_t seed) : rng_(seed) {}
  std::string Next() {
    return "dir" + Num(10) + "/mod" + Num(20) + "/pkg" + Num(20) + "/file" +
           Num(1000) + ".cc";
  }

 private:
  std::string Num(int n) {
    return std::to_string(std::uniform_int_distribution<int>(0, n - 1)(rng_));
  }
  std::mt19937 rng_;
};

// The lock table with kHeld plain locks (one in five exclusive), and
// `queries` paths it does not hold.
struct Fixture {
  LockTable table;
  std::vector<std::string> held;
  std::vector<std::string> queries;
  size_t bytes = 0;  // heap the table takes

  Fixture() {
    PathMaker maker(1);
    held.reserve(kHeld);
    for (int i = 0; i < kHeld; ++i) held.push_back(maker.Next());
    const size_t strings = qm::bench::HeapBytes();
    for (int i = 0; i < kHeld; ++i) table.Add(held[i], i % 5 == 0, i + 1);
    bytes = qm::bench::HeapBytes() - strings;
    std::vector<std::string> sorted = held;
    std::sort(sorted.begin(), sorted.end());
    while (queries.size() < 4096) {
      std::string q = maker.Next();
      if (!std::binary_search(sorted.begin(), sorted.end(), q)) {
        queries.push_back(std::move(q));
      }
    }
  }
};

Fixture& SharedFixture() {
  static Fixture* const kFixture = new Fixture();
  return *kFixture;
}

// An exclusive lock request for a path nobody holds (the common case of an
// allocation's path check): walks four levels and finds nothing.
void BM_LockTableConflict(benchmark::State& state) {
  Fixture& f = SharedFixture();
  size_t i = 0;
  size_t hits = 0;
  for (auto _ : state) {
    f.table.ForEachConflict(f.queries[i++ & 4095], true, 0,
                            [&](const LockTable::Hit&) {
                              ++hits;
                              return true;
                            });
  }
  benchmark::DoNotOptimize(hits);
  state.counters["table_MB"] = static_cast<double>(f.bytes) / 1e6;
  state.counters["bytes_per_lock"] = static_cast<double>(f.bytes) / kHeld;
}
BENCHMARK(BM_LockTableConflict);

// A shared request for a held path (conflicts only with exclusive holders).
void BM_LockTableConflictHeldShared(benchmark::State& state) {
  Fixture& f = SharedFixture();
  size_t i = 0;
  size_t hits = 0;
  for (auto _ : state) {
    f.table.ForEachConflict(f.held[i++ & 4095], false, 0,
                            [&](const LockTable::Hit&) {
                              ++hits;
                              return true;
                            });
  }
  benchmark::DoNotOptimize(hits);
}
BENCHMARK(BM_LockTableConflictHeldShared);

// Taking and releasing a lock on a path nobody holds (creates and deletes
// its leaf node).
void BM_LockTableAddRemove(benchmark::State& state) {
  Fixture& f = SharedFixture();
  size_t i = 0;
  for (auto _ : state) {
    const std::string& q = f.queries[i++ & 4095];
    f.table.Add(q, true, 1);
    benchmark::DoNotOptimize(f.table.Remove(q, true, 1));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LockTableAddRemove);

// A glob request against the table: visits the subtree under its prefix.
void BM_LockTableConflictGlob(benchmark::State& state) {
  Fixture& f = SharedFixture();
  size_t hits = 0;
  for (auto _ : state) {
    f.table.ForEachConflict("dir3/mod7/*/file1*.cc", true, 0,
                            [&](const LockTable::Hit&) {
                              ++hits;
                              return true;
                            });
  }
  benchmark::DoNotOptimize(hits);
}
BENCHMARK(BM_LockTableConflictGlob)->Unit(benchmark::kMicrosecond);

void BM_Normalize(benchmark::State& state) {
  const std::string_view paths[] = {
      "src/./module12/../module7/file.ts",
      "/work/repo/services/api/handlers/users.go",
      "docs/**/*.md",
  };
  size_t i = 0;
  for (auto _ : state) {
    auto r = Normalize("/work/repo", paths[i++ % 3], "exclusive_access[0]");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_Normalize);

void BM_OverlapGlobGlob(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(Overlap("src/**/[ab]*.ts", "src/lib/*/c?.ts"));
  }
}
BENCHMARK(BM_OverlapGlobGlob);

}  // namespace
}  // namespace qm::paths
