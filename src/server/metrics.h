// Prometheus metrics of `qm serve` (GET /metrics): the text exposition
// format 0.0.4, written by hand.
//
// Two kinds of figures: what the engine reports when scraped (capacity,
// allocations, queue, spend, budgets, breaker: read from a Snapshot and a
// CostReport at scrape time), and what the server counts as it goes
// (events by type, refusals by reason, request latencies per route,
// journal commits), kept here.
//
// Every family is written once, with HELP and TYPE lines; names are
// prefixed "qm_"; label values are escaped (\\, \", \n); no series is
// written twice.
//
// Thread safety: the Observe* / OnEvent methods may be called from any
// thread concurrently with Render.
#ifndef QM_SERVER_METRICS_H_
#define QM_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/durable_engine.h"
#include "qm/engine.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm::server {

// A cumulative histogram with fixed upper bounds (in the unit observed:
// seconds for latencies, operations for batch sizes).
class Histogram {
 public:
  // `bounds` ascending (sorted, duplicates and non-finite values dropped);
  // +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  // Counts `value` in the first bucket whose bound is >= value. NaN is
  // ignored.
  void Observe(double value);
  struct Data {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // per bucket, not cumulative; +Inf last
    double sum = 0;
    uint64_t count = 0;
  };
  Data Read() const;

 private:
  mutable std::mutex mu_;
  Data data_;
};

// Latency buckets for HTTP requests and journal commits: 0.5 ms .. 10 s.
std::vector<double> DefaultLatencyBounds();
// Buckets for journal commit batch sizes (operations per commit): 1 .. 1024.
std::vector<double> DefaultBatchBounds();

// The figures read from the engine and the store at scrape time.
struct MetricsInputs {
  Snapshot snapshot;
  CostReport costs;
  DurableStats journal;
  // Journal commit latency and batch size, when the store reports them.
  const Histogram* commit_latency = nullptr;
  const Histogram* commit_batch = nullptr;  // bounds: operations per commit
  bool leader = true;
  // Seconds since the server started.
  double uptime_seconds = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  // Counts one engine event (qm_events_total{type}, and the dedicated
  // counters: grants, queued, preemptions, expiries, requeues, starvation
  // per level / product as the event carries them).
  void OnEvent(const Event& event);
  // Counts one refused operation: qm_refusals_total{operation, reason},
  // reason the error code's lower-case name ("resource_exhausted").
  void OnRefusal(std::string_view operation, Code code);
  // One HTTP request: qm_http_requests_total{route, method, code} and
  // qm_http_request_duration_seconds{route} (route is the pattern,
  // "/v1/allocations/{id}", never the raw path, so series stay bounded).
  void ObserveRequest(std::string_view route, std::string_view method,
                      int status, double seconds);

  // The whole exposition: the server's own counters plus the figures in
  // `in` (per resource: capacity, allocated, reserved, available; per agent
  // type and product: running, limit, queued, fair share; queue length and
  // oldest wait per level; tokens and cost used / reserved per product and
  // model with budget limits and remaining per budget line; breaker open,
  // paused; journal operations, commits, bytes, snapshots, committed seq,
  // commit latency and batch size; leader; uptime).
  std::string Render(const MetricsInputs& in) const;

 private:
  mutable std::mutex mu_;
  // By type name; every known type present from the start (zero).
  std::map<std::string, uint64_t, std::less<>> events_;
  // (operation, lower-case code name) -> count.
  std::map<std::pair<std::string, std::string>, uint64_t> refusals_;
  struct RouteStats {
    std::map<std::pair<std::string, int>, uint64_t> requests;  // method, code
    Histogram latency{DefaultLatencyBounds()};
  };
  std::map<std::string, RouteStats, std::less<>> routes_;
  // Indexed by Level.
  std::array<uint64_t, kNumLevels> grants_by_level_{}, queued_by_level_{},
      starvation_by_level_{};
  std::map<std::string, uint64_t> preemptions_by_product_;
  uint64_t expiries_ = 0, requeues_ = 0;
};

}  // namespace qm::server

#endif  // QM_SERVER_METRICS_H_
