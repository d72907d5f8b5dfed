// The server's monitoring sampler (issue 7, docs/monitoring.md): every
// monitoring_intervals.resource_check it reads the machine (src/sys), hands
// the reading to the engine (DurableEngine::ObserveSystem, which rates
// health, fires alerts and applies the memory pressure response: the
// decisions stay in the engine), and records the machine's and the pool's
// figures as the usage history that GET /v1/monitor/system, the dashboard
// and analytics read.
//
// History is kept in two bounded rings in memory (every sample for a day,
// and 5-minute averages for 90 days) and in the store beside the journal
// (Store::AppendHistory: tier 0 raw samples, tier 1 averages; not engine
// state, never replayed). A new sampler loads the stored rings, so the
// history survives restarts; while this server leads, each sample is
// appended as it is taken, each average as its bucket closes, and what
// falls out of a tier's range is pruned then. A follower reads the stored
// history at start but writes none. When the store fails, the failure is
// logged once and the rings in memory go on.
//
// Thread safety: every method may be called from any thread.
#ifndef QM_SERVER_SAMPLER_H_
#define QM_SERVER_SAMPLER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"
#include "sys/system_probe.h"

namespace qm {
class DurableEngine;
}  // namespace qm

namespace qm::server {

// One sample: the machine's figures (fractions 0..1; unset: not measured)
// and the pool's at one time, or the average of several (5-minute tier).
struct Sample {
  Time time{};
  std::optional<double> cpu_utilization, memory_utilization, memory_pressure,
      storage_utilization;
  double agents_active = 0, agents_limit = 0, queued = 0;
  double tokens_today = 0, cost_today_usd = 0;
  // How many raw samples this one stands for (1 for a raw one).
  int count = 1;
};

struct SamplerOptions {
  // Time between samples (monitoring_intervals.resource_check). At least
  // 1 s. Default 30 s.
  Duration interval = std::chrono::seconds(30);
  // The raw tier keeps this much; the averaged tier keeps `long_range` in
  // buckets of `bucket`. Defaults: a day; 90 days of 5 minutes.
  Duration raw_range = std::chrono::hours(24);
  Duration long_range = std::chrono::hours(24 * 90);
  Duration bucket = std::chrono::minutes(5);
  // The filesystem root the readers look under ("/"; tests: a fixture),
  // and the directory whose filesystem storage_utilization measures.
  std::string root = "/";
  std::string storage_path = ".";
  // The clock samples are stamped with (null: the system clock).
  Clock* clock = nullptr;
};

// Least-squares trend of one figure over a range.
struct Trend {
  double current = 0, min = 0, max = 0, average = 0;
  // Change per hour of the least-squares line (in the figure's unit), and
  // "rising", "falling" or "steady" (the line changes by under 1 unit
  // over the samples' span), "unknown" without samples.
  double slope_per_hour = 0;
  std::string direction;
  int samples = 0;
};

class Sampler {
 public:
  // `engine` must outlive the sampler. Loads the stored history of the last
  // raw_range (tier 0) and long_range (tier 1) before `options.clock`'s
  // now; damaged records are skipped with a log, and a store that cannot
  // be read leaves the rings empty (logged). Raw samples newer than the
  // last stored average are put back in their buckets: those that closed
  // while the server was down are averaged (and stored, when leading),
  // the last one stays open.
  Sampler(SamplerOptions options, DurableEngine* engine);
  ~Sampler();  // Stop()
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Samples every interval on a thread of its own, the first at once.
  void Start();
  void Stop();

  // Takes one sample now: reads the machine, gives the reading to the
  // engine while this server leads (a follower's engine gets the
  // leader's), and records it. The reader's error when the machine cannot
  // be read (nothing is recorded then); the engine's refusal is logged,
  // not returned, since the figures are still worth keeping.
  Status SampleOnce();

  // The samples of the last `range` (raw ones up to a day, 5-minute
  // averages beyond), oldest first.
  std::vector<Sample> History(Duration range) const;

  // The last full reading of the machine (cores, load, memory, pressure,
  // disks, GPUs); NOT_FOUND before the first sample.
  StatusOr<sys::SystemInfo> Latest() const;

  Duration interval() const;

  // Samples recorded since start.
  int64_t samples_taken() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A sample's stored form (the payload of a HistoryRecord; its time is the
// record's): compact versioned JSON. DecodeSample refuses anything else
// (not JSON, another version, a field of the wrong type, a count under 1)
// with DATA_LOSS naming the problem.
std::string EncodeSample(const Sample& sample);
StatusOr<Sample> DecodeSample(Time time, std::string_view payload);

// The used share (0..1) of something with `available` of `total` bytes
// free; unset when `total` is 0. One definition for the sampler's readings
// and the figures /v1/monitor/system shows.
std::optional<double> UsedShare(uint64_t available, uint64_t total);

// The trend of `get` over `samples` (those where it is set).
Trend TrendOf(const std::vector<Sample>& samples,
              std::optional<double> (*get)(const Sample&));

}  // namespace qm::server

#endif  // QM_SERVER_SAMPLER_H_
