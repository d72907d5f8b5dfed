// Simulator throughput: 1,000,000 engine events through the simulator, with
// its JSON-lines output written to a discarding stream.
#include <benchmark/benchmark.h>

#include <ostream>
#include <streambuf>

#include "sim/simulator.h"

namespace qm {
namespace {

class NullBuf : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

// 340,000 tasks of 10 minutes on 50 agents: each task is queued, granted and
// released (three events), a little over 1,000,000 events in all.
constexpr char kScenario[] = R"(
name: million-events
config:
  max_concurrent: {total: 50}
  scheduling: {history_limit: 1000}
timeline:
  - at: 0m
    allocate: {id: task, agent_type: worker, run_for: 10m, ttl: 30d}
    count: 340000
)";

void BM_Simulator1MEvents(benchmark::State& state) {
  for (auto _ : state) {
    NullBuf buf;
    std::ostream out(&buf);
    sim::RunStats stats;
    const Status s =
        sim::RunScenarioString(kScenario, "bench", ".", out, &stats);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    state.counters["events"] = static_cast<double>(stats.events);
  }
}
BENCHMARK(BM_Simulator1MEvents)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace qm
