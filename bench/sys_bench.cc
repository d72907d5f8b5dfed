// System detection benchmarks: one full detection of the live machine (all
// readers: CPU with utilisation, load, memory, cgroup, PSI, two disks, GPUs
// through NVML when present). Target: under 1 ms.
//
//   qm_bench --benchmark_filter=Sys --benchmark_repetitions=5   (Release)
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "sys/system_probe.h"

namespace qm::sys {
namespace {

const std::vector<std::string>& DiskPaths() {
  static const std::vector<std::string> paths = {"/", "/tmp"};
  return paths;
}

// A long-lived probe, as the server's sampler keeps one.
void BM_SysDetect(benchmark::State& state) {
  SystemProbe probe;
  for (auto _ : state) {
    StatusOr<SystemInfo> info = probe.Detect(DiskPaths());
    if (!info.ok()) {
      state.SkipWithError(info.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_SysDetect)->Unit(benchmark::kMicrosecond);

// A new probe each time: adds loading (or failing to load) NVML.
void BM_SysDetectNewProbe(benchmark::State& state) {
  for (auto _ : state) {
    SystemProbe probe;
    StatusOr<SystemInfo> info = probe.Detect(DiskPaths());
    if (!info.ok()) {
      state.SkipWithError(info.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_SysDetectNewProbe)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace qm::sys
