// Value types of the engine's public interface: requests, allocations,
// usage reports, snapshots and events. Plain data; no behaviour.
#ifndef QM_TYPES_H_
#define QM_TYPES_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/config.h"

namespace qm {

// Limits on request fields (checked by the engine; exceeding one is an
// INVALID_REQUEST naming the field).
inline constexpr size_t kMaxStringBytes = 4096;
inline constexpr size_t kMaxResourcesPerRequest = 256;
// Lock paths: bytes per path, and paths per request (exclusive and shared
// together).
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxPathsPerRequest = 1024;
// Workflows one request may avoid (conflict_avoidance).
inline constexpr size_t kMaxAvoidedWorkflows = 256;

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
  // The model to run; "" = chosen by auto_model_selection (else
  // pricing.default_model). Must be priced when pricing.models is set.
  std::string model;
  // When the budget reservation cannot fit what is left of a period budget,
  // queue until the period resets instead of refusing with BUDGET_EXCEEDED.
  bool wait_for_budget = false;
  // Files and directories the task writes (exclusive locks) and only reads
  // (shared locks): relative to conflicts.workspace_root, or absolute inside
  // it; globs allowed (docs/conflicts.md). Taken with the grant, all or
  // nothing, and released with the allocation.
  std::vector<std::string> exclusive_access, shared_access;
  // Workflow ids: the request does not start while any of them holds an
  // active allocation.
  std::vector<std::string> conflict_avoidance;
  // Draw from this reservation (its window must be open, and it must be
  // for this request's workflow or product).
  std::string reservation_id;
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

// Spend reported by a holder: incremental reports while it runs, and a last
// one at release. Each report adds to the allocation's totals (a release
// without earlier reports carries the whole usage). Token counts are either
// split (input / output / cached input) or a plain `tokens` total, priced at
// the model's blended price (pricing.estimate_output_share); `cost_usd`, when
// given, is taken as the report's cost instead of the price table.
struct UsageReport {
  // A report repeated with the same id (a retry) is counted once.
  std::string report_id;
  std::optional<int64_t> tokens;
  std::optional<int64_t> input_tokens, output_tokens, cached_input_tokens;
  std::optional<double> cost_usd;
  // Priced as this model instead of the granted one ("" = the granted one).
  std::string model;
  // Release only.
  Outcome outcome = Outcome::kSuccess;
};

// The money side of an allocation.
struct BudgetInfo {
  std::string model;  // "" when no model is known
  // Why this model: "requested", "rule 2: task.estimated_minutes < 30",
  // "pricing.default_model".
  std::string model_reason;
  // Set when a rule's fallback_model replaced `downgraded_from`.
  std::string downgraded_from;
  // The per-task token grant (token_budgets) and how far it may be
  // extended (multiplier x budget); unset when the type has no budget.
  std::optional<int64_t> max_tokens, max_tokens_limit;
  // What admission reserved against the period budgets, and what of it is
  // still held (reports consume it; release returns the rest).
  int64_t reserved_tokens = 0, reserved_tokens_left = 0;
  double reserved_usd = 0, reserved_usd_left = 0;
  // Reported so far.
  int64_t used_tokens = 0;
  double used_usd = 0;
  bool over_budget = false;
  // After release, with an estimate: "estimated 80,000, actual 75,000: good".
  std::string accuracy;
};

using ResourceAmounts = std::vector<std::pair<std::string, double>>;

// One path lock of an allocation: the path normalised relative to the
// workspace root ("." for the root itself; globs as written).
struct PathLockInfo {
  std::string_view path;  // valid while a PathLockList holding it lives
  bool exclusive = false;

  bool operator==(const PathLockInfo&) const = default;
};

// The path locks of an allocation, in the order the engine records them.
// Immutable and shared: the engine builds one list when it accepts a
// request, and every answer or event reporting the allocation points at
// that list, so copying an answer copies no paths. Safe to read from
// several threads at once. Iterates like a vector of PathLockInfo.
class PathLockList {
 public:
  PathLockList() = default;
  // A list of `locks`, their paths copied into the list.
  PathLockList(std::initializer_list<PathLockInfo> locks);
  // A list that takes `text` and `locks`, whose paths must all point into
  // `text` (no copy).
  static PathLockList Adopt(std::unique_ptr<char[]> text,
                            std::vector<PathLockInfo> locks);

  size_t size() const { return rep_ ? rep_->locks.size() : 0; }
  bool empty() const { return size() == 0; }
  const PathLockInfo* begin() const {
    return rep_ ? rep_->locks.data() : nullptr;
  }
  const PathLockInfo* end() const { return begin() + size(); }
  const PathLockInfo& operator[](size_t i) const { return rep_->locks[i]; }

  // Equal when they hold the same locks in the same order.
  bool operator==(const PathLockList& other) const;

 private:
  struct Rep {
    std::unique_ptr<char[]> text;
    std::vector<PathLockInfo> locks;  // paths point into `text`
  };
  std::shared_ptr<const Rep> rep_;
};

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
  BudgetInfo budget;
  // Its path locks (held while active; claimed while queued).
  PathLockList locks;
  std::vector<std::string> conflict_avoidance;
  std::string reservation_id;
  // Conflicts it was granted despite (advisory locking), as conflict ids
  // with their message.
  std::vector<std::string> warnings;
};

// Which allocations a listing returns (every condition given must hold).
struct AllocationFilter {
  std::vector<AllocStatus> statuses;  // any of these; empty = any status
  std::string product, agent_type, workflow_id, requester;  // "" = any
  // Only allocations whose id comes after this one (paging); "" = from the
  // first.
  std::string after;
  // At most this many, in id order. Default 100.
  size_t limit = 100;
};

struct AllocationList {
  std::vector<AllocationInfo> allocations;  // in id order
  bool more = false;  // more match after the last one returned
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

// ---- Monitoring: the machine's figures, health and alerts ----

// One reading of the machine the manager runs on, taken by the server's
// sampler and handed to Engine::ObserveSystem (journaled, so replay decides
// exactly as the live engine did). Fractions are of the whole, 0..1; an
// unset figure was not measured (no PSI on this kernel, say) and counts as
// neither healthy nor unhealthy.
struct SystemReading {
  // Busy share of the cores this process may use, since the last reading.
  std::optional<double> cpu_utilization;
  // 1 - available / total memory (the cgroup's when it is limited).
  std::optional<double> memory_utilization;
  // Memory pressure stall information: the share of the last 10 s some
  // task stalled on memory (/proc/pressure/memory "some avg10" / 100).
  std::optional<double> memory_pressure;
  // Used share of the filesystem that holds the state.
  std::optional<double> storage_utilization;
  // The memory those fractions are of, in GB (0 = unknown); sizes how much
  // a reclaim asks back.
  double memory_total_gb = 0;

  bool operator==(const SystemReading&) const = default;
};

enum class HealthStatus { kHealthy, kWarning, kCritical };
const char* HealthStatusName(HealthStatus s);  // "healthy", ...

// Seed 000's dashboard `system_health`: each resource's status from the
// last reading and the pool, against the config's monitoring thresholds,
// and the worst of them as overall.
struct Health {
  HealthStatus overall = HealthStatus::kHealthy;
  // Unset: no reading of that figure yet.
  std::optional<HealthStatus> cpu, memory, storage;
  // Agents in use against the limit, and starvation in the queue.
  HealthStatus agent_pool = HealthStatus::kHealthy;
  // New requests that ask for memory are held (monitoring.pressure_threshold).
  bool memory_pressure = false;
};

// A condition the manager warns about (seed 000 `resource_alerts`), active
// from `since` until it clears. Alert events say when one fires, changes
// severity and clears: once each, not at every reading.
struct Alert {
  // "capacity_warning", "memory_pressure", "degraded_performance".
  std::string type;
  // What it is about: "cpu", "memory", "storage", "agents", "queue_wait".
  std::string resource;
  std::string severity;  // "low" (degraded_performance only), "medium", "high"
  std::string message;
  std::string recommended_action;
  // The figure that fired it and the threshold it crossed, as fractions
  // (of capacity; for degraded_performance, the rise over the baseline).
  double value = 0;
  double threshold = 0;
  Time since{};
  // False on the event that says it cleared.
  bool firing = true;

  bool operator==(const Alert&) const = default;
};

struct Snapshot {
  Time time{};
  std::vector<ResourceUsage> resources;
  std::vector<GroupUsage> agent_types;
  std::vector<GroupUsage> products;
  int64_t active = 0, queued = 0, preempting = 0;
  std::optional<Duration> oldest_wait;
  // Queued requests per level, lowest first, and how long the oldest of
  // each level has waited (unset when none is queued).
  std::array<int64_t, kNumLevels> queued_by_level{};
  std::array<std::optional<Duration>, kNumLevels> oldest_wait_by_level{};
  // The last reading of the machine (unset before the first) and when it
  // was taken; the health it gives; the alerts active now.
  std::optional<SystemReading> system;
  std::optional<Time> system_time;
  Health health;
  std::vector<Alert> alerts;
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
  // Money and operator events (allocation_id set only where it applies).
  kUsageReported,   // an allocation reported spend
  kOverBudget,      // an allocation used more tokens than its grant
  kBudgetExtended,  // an allocation's token grant grew
  kBudgetAlert,     // a period budget crossed an alert threshold
  kBudgetReset,     // a new budget period started
  kCircuitTripped,  // the circuit breaker opened
  kCircuitClosed,   // the breaker closed (period reset or raised limit)
  kOverride,        // an operator action: pause, resume, priority, breaker
  // Conflicts and reservations.
  kConflictDetected,    // a request meets a lock or workflow it must not share
  kConflictResolved,    // the conflict ended (lock freed, resolve-conflicts...)
  kReserved,            // a reservation was accepted
  kReservationStarted,  // its window opened: claimable
  kReservationReleased,   // grace over: unclaimed capacity back to the pool
  kReservationEnded,      // its window closed (or the last occurrence did)
  kReservationCancelled,  // cancelled by its owner or an operator
  // The engine runs under a new config (Engine::Reconfigure).
  kConfigReloaded,
  // Monitoring: an alert fired, changed severity or cleared (Event::alert).
  kAlert,
  // Memory is above monitoring.gc_trigger_threshold: the holder is asked
  // to give its allocation back by the deadline, then it is preempted.
  kReclaimRequested,
};
// The last EventType: loops over every type run to it inclusive.
inline constexpr EventType kLastEventType = EventType::kReclaimRequested;
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
  std::string workflow_id;  // of the allocation or reservation, when any
  Level level = Level::kNormal;
  // Operator events: who acted (the reason says why).
  std::string actor;
  // kAlert: the alert (its `firing` says whether it fired or cleared).
  std::optional<Alert> alert;
};

// ---- Money reports ----

// One period budget (global, a product's or an agent type's).
struct BudgetLine {
  std::string scope;  // "global", "product", "agent_type"
  std::string name;   // "" for global
  std::optional<int64_t> token_limit;
  std::optional<double> cost_limit_usd;
  int64_t tokens_used = 0, tokens_reserved = 0;
  double cost_used_usd = 0, cost_reserved_usd = 0;
  std::optional<double> percent_tokens, percent_cost;  // of the limit, used
};

struct BudgetAlert {
  Time time{};
  std::string budget;  // "global", "product web", "agent_type architect"
  double threshold_percent = 0;
  std::string message;
};

struct SpendLine {  // one model, product or agent type this period
  std::string name;
  int64_t tasks = 0;  // allocations granted this period
  int64_t tokens = 0;
  double cost_usd = 0;
  double token_share = 0;  // of all tokens this period, 0-1
};

struct BreakerState {
  bool open = false;  // blocks grants now
  std::string action;
  std::string condition;  // the trip condition that held
  std::optional<Time> tripped_at;
  // It closes by itself at the period reset.
  std::optional<Time> closes_at;
  bool allow_override = true;
  // An operator resumed for the rest of the period.
  bool overridden = false;
  std::string override_by, override_reason;
};

// Seed 001 "Cost tracking" and "Monitoring Dashboard Integration".
struct CostReport {
  Time time{};
  BudgetPeriod period = BudgetPeriod::kDaily;
  std::string time_zone;
  Time period_start{}, period_end{};
  int64_t tokens_used = 0, tokens_reserved = 0;
  double cost_usd = 0, cost_reserved_usd = 0;
  std::optional<int64_t> token_limit;
  std::optional<double> cost_limit_usd;
  std::optional<double> percent_tokens, percent_cost;
  double burn_rate_usd_per_hour = 0, burn_rate_tokens_per_hour = 0;
  double projected_cost_usd = 0;
  int64_t projected_tokens = 0;
  std::vector<BudgetAlert> alerts;  // this period, in order
  std::vector<SpendLine> models, products, agent_types;
  std::vector<BudgetLine> budgets;
  BreakerState breaker;
  bool paused = false;
  std::string paused_by, paused_reason;
  std::vector<std::pair<std::string, Level>> priority_overrides;
};

// What the engine has learned about one agent type's estimates.
struct LearnedEstimate {
  std::string agent_type;
  int64_t samples = 0;  // releases with an estimate and a usage report
  // Exponentially weighted actual / estimated (1 before any sample).
  double token_ratio = 1, minute_ratio = 1;
  std::optional<int64_t> last_estimated_tokens, last_actual_tokens;
  std::optional<double> last_estimated_minutes, last_actual_minutes;
  std::string accuracy;  // of the last sample: good | fair | poor
};

// Seed 001 "Metrics & Optimization", over the current period.
struct MetricsReport {
  Time time{};
  Time since{};  // start of the measured span (period start or engine start)
  struct TypeUtilization {
    std::string agent_type;
    double utilization = 0;  // busy agent-time / (limit x span), 0-1
    double limit = 0;        // agents (the type's limit, else the total)
  };
  std::vector<TypeUtilization> agent_utilization;
  int64_t tasks_completed = 0;
  double cost_per_task = 0, tokens_per_task = 0, tasks_per_dollar = 0;
  int64_t tasks_started = 0;
  double avg_wait_minutes = 0, max_wait_minutes = 0;
  double tasks_that_waited = 0;  // fraction of started tasks, 0-1
  std::vector<LearnedEstimate> estimates;
  std::vector<std::string> recommendations;
};

// ---- Conflicts (docs/conflicts.md) ----

// A conflict, in the shape of seed 000's alerts: what stands between a
// request and what it asks for.
struct ConflictInfo {
  // "conf_<n>" for registered conflicts; "" in a dry run (CheckConflicts).
  std::string id;
  // file_conflict | workflow_conflict | resource_conflict | system_conflict
  // | reservation_conflict | budget_conflict
  std::string type;
  std::string severity;  // low | medium | high | critical
  std::string message;
  std::string recommended_action;
  // The path, workflow, resource, reservation or budget concerned.
  std::string subject;
  // The allocation (or reservation) that holds it; "" when none does.
  std::string holder;
  std::optional<Time> since;             // held since
  std::optional<Time> expected_release;  // the holder's expected end
  std::optional<Time> starts_at;         // future conflicts: when it begins
  // Registered conflicts: the allocation it holds back.
  std::string waiter;
  // open (the waiter waits), advisory (granted despite it), resolved.
  std::string status = "open";
  std::string resolution;  // how it ended
  Time detected_at{};
  std::optional<Time> resolved_at;
};

// The answer of a dry run (seed 000 check-conflicts).
struct ConflictReport {
  Time time{};
  Duration horizon{};
  // What Allocate would do now: "grant", "queue" or "refuse" (with why).
  std::string outcome;
  std::string reason;
  std::vector<ConflictInfo> conflicts;  // now first, then within the horizon
};

// seed 000 resolve-conflicts strategies.
enum class ResolveStrategy {
  kPriorityBased,      // preempt the lower-priority holder, with grace
  kQueueAndSerialize,  // the waiter keeps waiting behind the holder
  kForceRelease,       // operator: end the holder now
};
const char* ResolveStrategyName(ResolveStrategy s);
bool ResolveStrategyFromName(const std::string& name, ResolveStrategy* out);

// Whether a fencing token still holds a path (`qm lock verify`).
struct LockVerdict {
  std::string path;  // normalised
  uint64_t token = 0;
  bool valid = false;
  // The allocation with this token, when it still holds the path, and
  // whether its lock there is exclusive (safe to write) or shared.
  std::string holder;
  bool exclusive = false;
  std::string message;
  // Every allocation holding a lock that covers the path, with its token.
  std::vector<std::pair<std::string, uint64_t>> holders;
};

// ---- Reservations ----

// seed 000 `reserve`: capacity booked for a future window.
struct ReservationRequest {
  // "" = "res_<n>"; else letters, digits, '_', '-', '.' (unique).
  std::string reservation_id;
  // Who may draw from it: allocations of this workflow, or (when
  // workflow_id is empty) of this product. At least one is required.
  std::string workflow_id, product;
  // Agent-type slots: its agents count against this type's limit.
  std::string agent_type;
  std::string requester;
  std::string priority;       // as AllocationRequest::priority
  ResourceAmounts resources;  // agents, cpu_cores, memory_gb, custom
  Time start_time{};
  Duration duration{};
  // "" (once), "daily" or "weekly": repeats until cancelled (or `until`).
  std::string recurrence;
  std::optional<Time> until;  // no occurrence starts after this
  std::string metadata;
};

struct ReservationInfo {
  std::string id;
  std::string workflow_id, product, agent_type, requester;
  Level level = Level::kNormal;
  int priority_value = 55;
  ResourceAmounts resources;
  Time start_time{};
  Duration duration{};
  std::string recurrence;
  std::optional<Time> until;
  // scheduled (next window in the future), open (claimable now), ended,
  // cancelled.
  std::string status = "scheduled";
  // The current or next window.
  std::optional<Time> window_start, window_end;
  // Unclaimed capacity returns to the pool then (while open).
  std::optional<Time> grace_ends_at;
  bool grace_over = false;
  // What allocations drawing from it hold now, and who they are.
  ResourceAmounts claimed;
  std::vector<std::string> holders;
  // E.g. running work expected to overlap the window.
  std::vector<std::string> warnings;
  std::string metadata;
};

// Who performs an operator action, and why (both recorded in the event).
// What Engine::Reconfigure changed: one line per changed setting or
// section, e.g. "resources.cpu_cores.capacity: 8 -> 12" or
// "section pricing changed". Empty when the new config equals the old.
struct ReconfigureResult {
  std::vector<std::string> changes;
};

struct Actor {
  std::string who;
  std::string why;
};

}  // namespace qm

#endif  // QM_TYPES_H_
