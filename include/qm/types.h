// Value types of the engine's public interface: requests, allocations,
// usage reports, snapshots and events. Plain data; no behaviour.
#ifndef QM_TYPES_H_
#define QM_TYPES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/config.h"

namespace qm {

// Limits on request fields (checked by the engine; exceeding one is an
// INVALID_REQUEST naming the field).
inline constexpr size_t kMaxStringBytes = 4096;
inline constexpr size_t kMaxResourcesPerRequest = 256;

// What a caller asks for. Amounts are doubles as the caller wrote them; the
// engine validates them (finite, >= 0, whole for non-fractional resources)
// and stores them as fixed point.
struct AllocationRequest {
  std::string workflow_id;  // required
  std::string requester;    // who asks (an orchestrator, a hook...)
  std::string product;      // tenant; "" = "default"
  std::string agent_type;   // "" = "default"
  // "critical|high|normal|low" ("medium" = normal) or an integer 0-100
  // (90-100 critical, 70-89 high, 40-69 normal, 0-39 low). "" = the
  // product's configured priority, else normal.
  std::string priority;
  // Resource name -> amount. `agents` defaults to 1 when absent.
  std::vector<std::pair<std::string, double>> resources;
  std::optional<int64_t> estimated_tokens;
  std::optional<double> estimated_minutes;
  // Tasks this request blocks, out of the size of its task graph.
  std::optional<int64_t> blocks;
  std::optional<int64_t> total_tasks;
  // Lease length without a heartbeat; default scheduling.default_ttl.
  std::optional<Duration> ttl;
  // Hard cap on the run time; default (and ceiling) allocation_limits
  // .max_duration.
  std::optional<Duration> max_duration;
  // Default: true except for critical requests.
  std::optional<bool> preemptible;
  // When preempted, go back to the queue keeping the original queue time.
  bool requeue_on_preempt = false;
  // Free-form JSON text, kept and returned verbatim.
  std::string metadata;
  // A retried request with the same key gets the same allocation.
  std::string idempotency_key;
};

enum class AllocStatus {
  kActive,
  kQueued,
  kReserved,  // held for a future window (reservations: later work)
  kReleased,
  kExpired,
  kPreempted,
  kFailed,
  kCancelled,
};
const char* AllocStatusName(AllocStatus s);
// Statuses that never change again. (A preempted allocation may still be
// re-queued when its request asked for it.)
inline bool IsTerminal(AllocStatus s) {
  return s == AllocStatus::kReleased || s == AllocStatus::kExpired ||
         s == AllocStatus::kFailed || s == AllocStatus::kCancelled;
}

enum class Outcome { kSuccess, kFailure, kCancelled };

// Reported by the holder at release.
struct UsageReport {
  std::optional<int64_t> tokens;
  std::optional<double> cost_usd;
  Outcome outcome = Outcome::kSuccess;
};

using ResourceAmounts = std::vector<std::pair<std::string, double>>;

// An allocation (lease) as the engine reports it.
struct AllocationInfo {
  std::string id;  // "alloc_<n>"
  AllocStatus status = AllocStatus::kQueued;
  std::string workflow_id, requester, product, agent_type;
  Level level = Level::kNormal;
  int priority_value = 55;  // 0-100
  bool preemptible = true;
  ResourceAmounts resources;  // requested (= granted while active)
  // Monotonically increasing across all grants; 0 while never granted.
  uint64_t fencing_token = 0;
  Time queued_at{};  // when first asked for (kept across a re-queue)
  std::optional<Time> granted_at, expires_at, ended_at;
  // Set while queued.
  std::string reason_queued;
  std::optional<Time> expected_start;
  std::optional<double> score;
  // Set while a preemption notice runs: the forced-release time.
  std::optional<Time> preempt_deadline;
  std::optional<int64_t> estimated_tokens;
  std::optional<double> estimated_minutes;
  std::optional<UsageReport> usage;
  std::string metadata;
  std::string idempotency_key;
};

struct AllocateResult {
  AllocationInfo allocation;
  // True when an idempotency key matched an earlier request.
  bool replayed = false;
};

struct ResourceUsage {
  std::string name;
  double capacity = 0, allocated = 0, reserved = 0, available = 0;
  double utilization_percent = 0;
};

struct GroupUsage {  // one agent type or one product
  std::string name;
  double running_agents = 0;
  std::optional<int64_t> limit;
  int64_t queued = 0;
  // Products only: decayed agent-minutes and normalised share.
  double decayed_agent_minutes = 0;
  double share = 0;
};

struct Snapshot {
  Time time{};
  std::vector<ResourceUsage> resources;
  std::vector<GroupUsage> agent_types;
  std::vector<GroupUsage> products;
  int64_t active = 0, queued = 0, preempting = 0;
  std::optional<Duration> oldest_wait;
  // Queued requests per level, lowest first.
  std::array<int64_t, kNumLevels> queued_by_level{};
};

// A queued request with its current score, best first.
struct QueueEntry {
  std::string id;
  Level level = Level::kNormal;
  std::string product, agent_type;
  double score = 0;
  double priority_factor = 0, wait_factor = 0, blocking_factor = 0,
         fair_share_factor = 0;
  Duration waited{};
  std::string reason_queued;
};

enum class EventType {
  kQueued,
  kGranted,
  kReleased,
  kFailed,
  kExpired,
  kLeaseExpiring,  // TTL ran out; forced release after the grace period
  kRenewed,
  kReallocated,
  kCancelled,
  kPreemptionNotice,  // holder must release before the deadline
  kPreempted,         // resources taken back from a preempted holder
  kRequeued,
  kStarvation,  // waited longer than its level's max wait
};
const char* EventTypeName(EventType t);

// Every state change of the engine, in order. `seq` increases by one per
// event and is what later issues journal and resume streams from.
struct Event {
  uint64_t seq = 0;
  Time time{};
  EventType type = EventType::kQueued;
  std::string allocation_id;
  AllocStatus status = AllocStatus::kQueued;
  uint64_t fencing_token = 0;
  std::optional<double> score;
  std::string reason;  // why queued, who preempted it, ...
  std::string product, agent_type;
  Level level = Level::kNormal;
};

}  // namespace qm

#endif  // QM_TYPES_H_
