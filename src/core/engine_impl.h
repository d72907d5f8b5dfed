// Private implementation of qm::Engine. See docs/architecture.md for the
// model; this header documents the data structures.
//
// Amounts are fixed point: thousandths of a unit (Milli). Every limit the
// engine enforces is a Counter (a limit and the amount in use): one per
// global resource, per agent type and per product (counting agents), and per
// workflow (agents, cpu_cores, memory_gb). A request's demand is the list of
// counters it touches with the amount it needs on each; it is admitted only
// when every counter has room.
#ifndef QM_CORE_ENGINE_IMPL_H_
#define QM_CORE_ENGINE_IMPL_H_

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/time/time.h"
#include "core/expr.h"
#include "core/paths.h"
#include "core/timeline.h"
#include "qm/clock.h"
#include "qm/config.h"
#include "qm/engine.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm {

using Milli = int64_t;
inline constexpr double kMsPerMinute = 60000.0;
inline Milli ToMilli(double v) {
  return static_cast<Milli>(std::llround(v * 1000));
}
inline double FromMilli(Milli m) { return static_cast<double>(m) / 1000.0; }
inline constexpr Milli kUnlimited = std::numeric_limits<int64_t>::max() / 4;
// Longest lease a request or renewal may ask for (time arithmetic stays far
// from overflow; max_duration caps real leases anyway).
inline constexpr Duration kMaxTtl = std::chrono::hours(24 * 365);

struct Counter {
  // kBudget: a period budget (tokens, or micro-USD). Its `used` is what was
  // spent this period plus what running allocations still have reserved;
  // an allocation's demand on it is its remaining reservation.
  enum class Kind : uint8_t {
    kResource,
    kAgentType,
    kProduct,
    kWorkflow,
    kBudget
  };
  Kind kind = Kind::kResource;
  std::string name;  // resource, type, product, or "wf/resource"
  Milli limit = kUnlimited;
  Milli used = 0;
  // Held by preempted allocations whose forced release is pending: it will
  // come back without any further decision.
  Milli releasing = 0;
  // Member of the blocked set B while blocked_by != 0 and blocked_epoch is
  // the current epoch (a full dispatch pass starts a new epoch, emptying B
  // at once): queued request `blocked_by` does not fit on this counter, so
  // requests it outranks may not take from it. `blocked_serial` is the pass
  // that recorded it (a blocker recorded by the running pass outranks every
  // request the pass visits later).
  uint64_t blocked_epoch = 0;
  uint64_t blocked_by = 0;
  uint64_t blocked_serial = 0;
  // The claimant's amount on this counter. Requests it outranks may take
  // from the counter only while used + their amount + held <= limit: a
  // claimant that does not fit (used + held > limit) shuts them out; one
  // that fits keeps its share (a head-of-line waiter holds all of its
  // demand, so what it already fits on cannot be taken from under it).
  Milli held = 0;
  // The resource, type or product index of a kResource / kAgentType /
  // kProduct counter.
  uint32_t owner = 0;
  // Active holders ordered by expected end (for expected_start estimates and
  // for naming who holds a limit).
  // (A B-tree: a sixth of the memory of a std::set per holder.)
  absl::btree_set<std::pair<Time, uint64_t>> holders;
  bool in_use = true;  // false when a workflow counter sits on the free list
  // kBudget: spent this period (part of `used`); `owner` indexes budgets_.
  Milli spent = 0;
};

using Demand = std::vector<std::pair<uint32_t, Milli>>;  // counter, amount

// The amount `d` needs on `counter` (0 when it does not touch it).
inline Milli AmountOn(const Demand& d, uint32_t counter) {
  for (const auto& [c, m] : d) {
    if (c == counter) return m;
  }
  return 0;
}

// What an allocation keeps of its request for its whole life (kept small:
// names live interned in the engine, rarely used text in AllocExtras).
struct RequestCore {
  std::string workflow_id;
  Level level = Level::kNormal;
  int priority_value = 55;
  Milli agents = 1000;
  std::optional<int64_t> estimated_tokens;
  std::optional<double> estimated_minutes;
  int64_t blocks = 0, total_tasks = 10;
  bool wait_for_budget = false;
  Duration ttl{}, max_duration{};
  bool preemptible = true, requeue_on_preempt = false;
};

// A path lock as an allocation keeps it: normalised (paths.h), "" = the
// workspace root.
struct LockSpec {
  // Normalised; points into the text of the PathLockList of the
  // ParsedRequest or AllocLocks holding this spec (one allocation for all
  // of a request's paths, which moving the holder keeps valid).
  std::string_view path;
  // paths::LockTable::Key(path)'s hashes and prefix size (computed once).
  size_t hash = 0, parent_hash = 0;
  uint32_t prefix_size = 0;
  bool exclusive = false;
  paths::LockTable::Key key() const {
    return {path, hash, parent_hash, prefix_size};
  }
  void set_key(const paths::LockTable::Key& k) {
    hash = k.hash;
    parent_hash = k.parent_hash;
    prefix_size = k.prefix_size;
  }
  // Where the lock sits in the table AllocLocks::where names (null when
  // nowhere).
  paths::LockTable::Handle at = nullptr;
  // The lookup FindGate made in the held table, for TakeLocks to reuse (a
  // cache, not state: never saved; checked before use).
  mutable paths::LockTable::Probe probe = {};
};

// A validated request with every default applied, before interning. (An
// allocation keeps its resources only in its demand.)
struct ParsedRequest : RequestCore {
  std::vector<std::pair<uint32_t, Milli>> resources;  // resource idx, amount
  std::string requester, product, agent_type, metadata, idempotency_key;
  std::string model;  // as requested ("" = choose)
  // Deduplicated (a path named in both lists is exclusive).
  std::vector<LockSpec> locks;
  // The same locks as answers report them; holds the bytes of
  // locks[*].path.
  PathLockList lock_list;
  std::vector<std::string> avoid;  // conflict_avoidance
  std::string reservation;
};

// The conflict-prevention side of an allocation (only when it names lock
// paths or workflows to avoid). See docs/conflicts.md.
struct AllocLocks {
  std::vector<LockSpec> locks;
  // The same locks as answers report them (shared with every answer);
  // holds the bytes of locks[*].path.
  PathLockList list;
  std::vector<std::string> avoid;
  // Order among requests whose locks conflict: level, then queue time, then
  // id, fixed when it first queues. A request waits only for claimants
  // ahead of it in this order (or for holders), so waits never form a
  // cycle.
  int rank_level = 0;
  int64_t rank_ms = 0;
  // Where its locks are recorded: nowhere, in the claims table (queued) or
  // the held table (holding).
  enum class Where : uint8_t { kNone, kClaimed, kHeld };
  Where where = Where::kNone;
  // Exempt from locking by its product's policy (read_only_operations):
  // takes no locks, never waits for one.
  bool exempt = false;
  // A gated request stays in its lane but dispatch skips it until the
  // allocation (kLock) or workflow (kWorkflow) it waits for moves.
  enum class Gate : uint8_t { kNone, kLock, kWorkflow };
  Gate gate = Gate::kNone;
  uint64_t gate_on = 0;    // kLock: the holder, or the claimant ahead
  std::string subject;     // kLock: its own path; kWorkflow: the workflow
  std::string other_path;  // kLock: the conflicting lock's path
  bool own_exclusive = false, other_exclusive = false;
  uint64_t conflict = 0;  // the open conflict registered for the wait
  // priority_based: whether preempting the holder of this gate was
  // considered (not while grants are held by a pause or the breaker).
  bool preempt_tried = false;
  // Advisory conflicts it was granted despite: "conf_4: ..." lines.
  std::vector<std::string> warnings;
  // The reservation it draws from (0 = none), the window it drew in, and
  // what it drew per counter while holding (given back to the reservation
  // at release while that window is open and in its grace period).
  uint64_t reservation = 0;
  Time drew_window{};
  std::vector<std::pair<uint32_t, Milli>> drawn;
};

// Capacity booked for a window (docs/conflicts.md, "Reservations"). Future
// windows are booked in the timelines of the counters it touches; an open
// window holds what no claimant drew (`left`) in the counters' `used`.
struct Reservation {
  uint64_t num = 0;  // timeline id
  std::string id;
  std::string workflow_id, product, agent_type, requester, metadata;
  Level level = Level::kNormal;
  int priority_value = 55;
  std::vector<std::pair<uint32_t, Milli>> resources;  // resource idx, amount
  Demand demand;  // the counters it books, with amounts
  Time start{};
  Duration duration{};
  Duration period{};  // 0 = once; else daily or weekly
  std::optional<Time> until;
  enum class State : uint8_t { kScheduled, kOpen, kEnded, kCancelled };
  State state = State::kScheduled;
  Time win_start{}, win_end{};  // the current or next window
  Time booked_through{};        // the last window start booked in timelines
  bool grace_over = false;
  // While open, per demand entry: unclaimed capacity it holds, and what it
  // could not take at the start (running work held it; booked in the
  // timelines from `short_since` so nobody else takes it as it frees).
  std::vector<Milli> left, shortfall;
  Time short_since{};
  std::set<uint64_t> claimants;
  std::vector<std::string> warnings;
  Time ended_at{};
  // The fencing counter when it was accepted: allocations granted later
  // were admitted beside it (CheckInvariants).
  uint64_t accepted_fence = 0;
};

// The money side of an allocation (only when pricing or budgets are
// configured). Token amounts are tokens, dollar amounts micro-USD. Its
// remaining reservation on each budget counter is its demand there:
// max(reserved - used, 0) of the counter's unit.
struct AllocMoney {
  std::string model;
  // Why this model: a fixed reason, or rule `rule` (0-based), plus the
  // downgrade note when a fallback replaced `downgraded_from`.
  const char* reason = "";
  int rule = -1;
  std::string downgraded_from, downgrade_note;
  std::optional<int64_t> max_tokens, max_tokens_limit;
  int64_t reserved_tokens = 0, reserved_micro = 0;
  int64_t used_tokens = 0, used_micro = 0;
  bool over_budget = false;
  std::vector<std::string> report_ids;  // seen report ids (duplicates ignored)
  bool learned = false;  // its release taught the estimate ratios
  int64_t RemainingTokens() const {
    return std::max<int64_t>(0, reserved_tokens - used_tokens);
  }
  int64_t RemainingMicro() const {
    return std::max<int64_t>(0, reserved_micro - used_micro);
  }
};

// The parts of an allocation most never have or need only at the end.
struct AllocExtras {
  std::string metadata, idempotency_key;
  std::optional<UsageReport> usage;
  std::string end_reason;
};

// Ordering key of a queued request inside its lane: higher `key` first, then
// earlier queue time, then lower id. `key` is the part of the score that
// does not move with time, so the order inside a lane never changes.
struct QKey {
  double key = 0;
  int64_t queued_ms = 0;
  uint64_t id = 0;
};
struct QKeyBefore {
  bool operator()(const QKey& a, const QKey& b) const {
    if (a.key != b.key) return a.key > b.key;
    if (a.queued_ms != b.queued_ms) return a.queued_ms < b.queued_ms;
    return a.id < b.id;
  }
};

// Why a queued request is not running (rendered to text on demand).
struct WaitReason {
  // kBudgetReset: a budget it needs cannot fit before the period resets.
  enum class Kind : uint8_t {
    kNone,
    kNoFit,
    kBehind,
    kPreempting,
    kYielding,
    kBudgetReset,
    // It fits now but would run into capacity a reservation booked.
    kReserved,
  };
  Kind kind = Kind::kNone;
  uint32_t counter = 0;
  Milli need = 0;
  uint64_t other = 0;  // the higher waiter (kBehind)
};

struct Workflow {
  uint32_t agents = UINT32_MAX, cpu = UINT32_MAX, memory = UINT32_MAX;
  int64_t refs = 0;  // active + queued allocations of this workflow
  // Holding allocations (counted once some request avoided a workflow).
  int64_t active = 0;
};

struct Alloc {
  uint64_t id = 0;
  AllocStatus status = AllocStatus::kQueued;
  RequestCore req;
  uint32_t product = 0, type = 0, requester = 0;  // interned indexes
  Demand demand;
  bool holding = false;  // counted in counters (active, or preempted in grace)
  uint64_t fencing = 0;
  Time queued_at{}, granted_at{}, expires_at{}, ended_at{};
  Time expected_end{};  // key in Counter::holders while holding
  Time preempt_deadline{};
  bool expiring = false;  // lease_expiring notice sent
  bool starvation_alerted = false;
  uint64_t queue_gen = 0;  // bumps on every (re)queue
  // A re-queued victim does not start again before the request that
  // preempted it (else the two could take turns forever).
  uint64_t preempted_by = 0;
  uint64_t preempted_by_fence = 0;  // its fencing token then (0: never ran)
  bool preempted_someone = false;   // sent a preemption notice while queued
  // While queued:
  uint32_t lane = 0;
  QKey qkey;
  WaitReason wait;
  std::unique_ptr<AllocExtras> extras;  // null while nothing to keep
  std::unique_ptr<AllocMoney> money;    // null without pricing or budgets
  std::unique_ptr<AllocLocks> locks;    // null without paths or avoidance

  AllocExtras& Extras() {
    if (!extras) extras = std::make_unique<AllocExtras>();
    return *extras;
  }
  // Whether it is over: not holding anything, neither running nor waiting
  // (a preempted allocation that was not re-queued has ended).
  bool Ended() const {
    return !holding && status != AllocStatus::kActive &&
           status != AllocStatus::kQueued && status != AllocStatus::kReserved;
  }
  const std::string& idempotency_key() const {
    static const std::string kEmpty;
    return extras ? extras->idempotency_key : kEmpty;
  }
};

// All queued requests of one (level, product, agent type, uses agents) share
// their type and product counters (and the global agents counter), so a
// lane whose best request waits for one of those can be skipped whole.
struct Lane {
  uint32_t band = 0;
  uint32_t type = 0, product = 0;
  bool uses_agents = true;
  uint64_t seen_serial = 0;  // the last pass that put this lane on its heap
  absl::btree_set<QKey, QKeyBefore> members;
};
struct LaneHeadBefore {
  bool operator()(const std::pair<QKey, uint32_t>& a,
                  const std::pair<QKey, uint32_t>& b) const {
    QKeyBefore q;
    if (q(a.first, b.first)) return true;
    if (q(b.first, a.first)) return false;
    return a.second < b.second;
  }
};
// One (level, product): its lanes ordered by their best request. Within a
// band the time-dependent parts of the score (wait slope, fair share) are
// the same for every request, so this order holds at any time.
struct Band {
  Level level = Level::kNormal;
  uint32_t product = 0;
  absl::btree_set<std::pair<QKey, uint32_t>, LaneHeadBefore> lanes;
};

struct ProductState {
  std::string name;
  Milli running_agents = 0;
  double decayed = 0;  // agent-minutes, decayed to `decayed_at`
  Time decayed_at{};
  // Sum over running allocations of agents x expected end (minutes since
  // the engine's epoch): the agent-minutes already committed to running
  // work are this minus running agents x now.
  double committed_end_sum = 0;
  int64_t queued = 0;
  double share = 1;
  uint32_t counter = 0;
};

struct TypeState {
  std::string name;
  uint32_t counter = 0;
  int64_t queued = 0;
};

struct Timer {
  enum class Kind : uint8_t {
    kLeaseExpiry,
    kForceExpire,
    kPreemptDeadline,
    kStarvation,
    kPeriodReset,  // not tied to an allocation
    // Reservation windows (id: the reservation; gen: the window start).
    kResOpen,
    kResGrace,
    kResClose,
  };
  Time at{};
  uint64_t seq = 0;  // tie-break: scheduling order
  uint64_t id = 0;
  Kind kind = Kind::kLeaseExpiry;
  uint64_t gen = 0;  // queue_gen for starvation timers
  bool operator>(const Timer& o) const {
    return at != o.at ? at > o.at : seq > o.seq;
  }
};

// One period budget: a scope (global, a product, an agent type) and a
// metric. Its counter holds the (possibly raised) limit.
struct BudgetState {
  enum class Scope : uint8_t { kGlobal, kProduct, kAgentType };
  enum class Metric : uint8_t { kTokens, kMicroUsd };
  Scope scope = Scope::kGlobal;
  Metric metric = Metric::kTokens;
  std::string name;  // product or agent type; "" for global
  uint32_t counter = 0;
  Milli configured_limit = 0;  // the limit RaiseLimits reverts to at reset
  std::vector<bool> alerted;   // per alert threshold, this period
};

// Spend of one model, product or agent type this period.
struct Spend {
  int64_t tasks = 0, tokens = 0, micro = 0;
};

struct ModelState {
  std::string name;
  ModelPrice price;
  bool priced = false;
  // Blended USD per million tokens used for estimates and plain `tokens`.
  double blended = 0;
};

struct CompiledRule {
  expr::Condition condition;
  std::string model, fallback;
  std::string reason;  // "rule 2: task.estimated_minutes < 30"
};

// Whether a usage report carries anything to record.
inline bool HasSpend(const UsageReport& u) {
  return u.tokens || u.input_tokens || u.output_tokens ||
         u.cached_input_tokens || u.cost_usd || !u.report_id.empty() ||
         !u.model.empty();
}

// What admission reserves for a new request.
struct MoneyPlan {
  std::string model;
  const char* reason = "";
  int rule = -1;
  std::string downgraded_from, downgrade_note;
  std::optional<int64_t> max_tokens, max_tokens_limit;
  int64_t tokens = 0, micro = 0;  // the reservation
  // budgets_ indexes the request touches (global, product, agent type: at
  // most two each).
  std::array<uint32_t, 6> budgets{};
  size_t num_budgets = 0;
  std::span<const uint32_t> Budgets() const {
    return {budgets.data(), num_budgets};
  }
};

struct Learned {
  int64_t samples = 0;
  double token_ratio = 1, minute_ratio = 1;
  int64_t minute_samples = 0;
  std::optional<int64_t> last_est_tokens, last_actual_tokens;
  std::optional<double> last_est_minutes, last_actual_minutes;
  std::string accuracy;
};

class EngineImpl {
 public:
  EngineImpl(Config config, Clock* clock, EventSink* sink);
  // The state codec (state_codec.cc) reads and writes the members directly.
  friend class StateCodec;
  Status Init();

  StatusOr<AllocateResult> Allocate(const AllocationRequest& request);
  StatusOr<std::vector<AllocateResult>> AllocateBatch(
      const std::vector<AllocationRequest>& requests, bool all_or_nothing);
  StatusOr<AllocationInfo> Release(std::string_view id,
                                   const UsageReport& usage);
  // Allocate and AllocateBatch: `requests` are validated first; a single
  // request (not all-or-nothing) names its fields without a batch index.
  StatusOr<std::vector<AllocateResult>> AllocateMany(
      std::span<const AllocationRequest> requests, bool all_or_nothing);
  StatusOr<AllocationInfo> Renew(std::string_view id,
                                 std::optional<Duration> ttl);
  StatusOr<AllocationInfo> Reallocate(std::string_view id,
                                      const ResourceAmounts& resources);
  StatusOr<AllocationInfo> Cancel(std::string_view id);
  StatusOr<AllocationInfo> Reclaim(std::string_view id,
                                   const std::string& reason);
  // Cancel's work on a queued allocation, with the event's reason.
  AllocationInfo CancelQueued(Alloc& a, std::string reason);
  // Monitoring (monitor.cc).
  Status ObserveSystem(const SystemReading& reading);
  // The health that `s` (a snapshot being built: pool and queue filled in)
  // and the last reading give.
  Health ComputeHealth(const Snapshot& s) const;
  // Fires, re-rates or clears the alert `type`/`resource` for `value`
  // (unset: not measured, nothing changes) against the warning and
  // critical thresholds, with hysteresis.
  void RateAlert(const std::string& type, const std::string& resource,
                 std::optional<double> value, double warning, double critical,
                 const std::string& message, const std::string& action);
  void EmitAlert(const Alert& alert);
  // Ends the active alert `it` with an event saying `message`.
  void ClearAlert(std::map<std::string, Alert>::iterator it,
                  std::string message);
  // Above gc_trigger_threshold: reclaim notices to enough preemptible
  // low-priority holders of memory.
  void ReclaimForMemory(double memory_utilization, double memory_total_gb);
  // Counts a grant's queue wait into wait_buckets_ (and drops buckets past
  // the degradation window plus baseline).
  void RecordGrantWait(Duration wait);
  // Fires, re-rates or clears degraded_performance from wait_buckets_.
  void RateDegradation();
  // The memory_gb counter, or UINT32_MAX when there is none.
  uint32_t MemoryCounter() const {
    return memory_resource_ == UINT32_MAX ? UINT32_MAX
                                          : resource_counter_[memory_resource_];
  }
  // Memory is under pressure and `d` asks for memory.
  bool PressureHolds(const Demand& d) const {
    return memory_pressure_ && memory_resource_ != UINT32_MAX &&
           AmountOn(d, MemoryCounter()) > 0;
  }
  std::string PressureText() const;
  StatusOr<AllocationInfo> Get(std::string_view id) const;
  StatusOr<AllocationList> List(const AllocationFilter& filter) const;
  Snapshot GetSnapshot() const;
  std::vector<QueueEntry> Queue() const;
  StatusOr<AllocationInfo> ReportUsage(std::string_view id,
                                       const UsageReport& usage);
  StatusOr<AllocationInfo> ExtendTokens(std::string_view id,
                                        int64_t max_tokens);
  Status Pause(const Actor& actor);
  Status Resume(const Actor& actor);
  Status SetPriorityOverride(const std::string& product,
                             std::optional<Level> level, const Actor& actor);
  Status OverrideBreaker(const Actor& actor);
  Status RaiseLimits(std::optional<int64_t> max_tokens,
                     std::optional<double> max_cost_usd, const Actor& actor);
  CostReport Costs() const;
  MetricsReport Metrics() const;
  void Tick();
  std::optional<Time> NextDeadline() const;
  Status CheckInvariants() const;
  // Locks: held and claimed tables match the allocations; no two holders
  // under strict policies hold conflicting locks; gates are counted.
  Status CheckLockInvariants() const;
  // Reservations: holds and bookings add up, and no allocation granted
  // after a reservation was accepted runs into capacity it booked.
  Status CheckReservationInvariants() const;
  const Config& config() const { return config_; }

  // ---- durable state (state_codec.cc) ----
  // The engine's whole dynamic state in the versioned binary form of
  // Engine::SaveState (everything not derived from the config by Init, nor
  // a cache).
  std::string SaveState() const;
  // Loads SaveState() bytes over an engine that has just run Init() with the
  // config they were saved under, then checks the invariants. DATA_LOSS for
  // damaged, truncated or newer-format bytes (naming the field and byte),
  // INVALID_REQUEST when the config differs from the one saved. Emits no
  // events. After an error the engine is in no defined state: discard it.
  Status LoadState(std::string_view state);

 private:
  // --- validation (no state change) ---
  StatusOr<ParsedRequest> Validate(const AllocationRequest& r,
                                   const std::string& prefix) const;
  Status ParsePriority(const std::string& text, const std::string& product,
                       Level* level, int* value,
                       const std::string& field) const;
  // Validates `amount` of resource `name`, the request field
  // ResourceField(prefix, name): its index and amount in milli-units, or
  // INVALID_REQUEST naming the field.
  Status ValidateAmount(const std::string& prefix, const std::string& name,
                        double amount, uint32_t* resource, Milli* out) const;
  // "<prefix>resources.<name>" (the name truncated for messages).
  static std::string ResourceField(const std::string& prefix,
                                   const std::string& name);
  // RESOURCE_EXHAUSTED when some amount exceeds a limit outright.
  Status CheckCanEverFit(const ParsedRequest& p, const std::string& product,
                         const std::string& agent_type) const;

  // --- money (budget.cc) ---
  Status InitMoney();
  // Workspace root and lock policies from config_.conflicts.
  Status InitConflicts();
  bool MoneyEnabled() const { return money_enabled_; }
  // Chooses the model and sizes the reservation of a validated request.
  StatusOr<MoneyPlan> PlanMoney(const ParsedRequest& p,
                                const std::string& prefix) const;
  // BUDGET_EXCEEDED when the plan can never fit what is left of a period
  // budget (unless the request waits for the reset), CIRCUIT_OPEN when the
  // breaker refuses new work of this level.
  Status CheckMoney(const ParsedRequest& p, const MoneyPlan& plan,
                    const std::string& prefix) const;
  // Appends the plan's budget counters to a demand.
  void AddBudgetDemand(const MoneyPlan& plan, Demand* d) const;
  std::unique_ptr<AllocMoney> MakeMoney(const MoneyPlan& plan) const;
  // Moves `tokens`/`micro` of `a` from reserved to spent everywhere, counted
  // as spend of `model` ("" = its granted model).
  void ApplySpend(Alloc& a, int64_t tokens, int64_t micro,
                  const std::string& model);
  // Prices a usage report for `a` in micro-USD; INVALID_REQUEST on bad
  // counts or an unknown model.
  StatusOr<std::pair<int64_t, int64_t>> PriceUsage(
      const Alloc& a, const UsageReport& u, const std::string& prefix) const;
  // Records a usage report (dedup by id). When `may_stop` and the stop
  // policy applies to running `a`, sets `*stopped`: the caller ends it.
  Status RecordUsage(Alloc& a, const UsageReport& u, const std::string& prefix,
                     bool may_stop, bool* stopped);
  // At the end of a held allocation: learning, accuracy, metrics.
  void OnFinishMoney(Alloc& a);
  // A preempted `a` (no longer holding) goes back to the queue: like a new
  // request it must reserve at least a token and a micro-dollar.
  void OnRequeueMoney(Alloc& a);
  void OnGrantMoney(const Alloc& a);
  // `a`'s lease ends at its max_duration (no renewal can extend it), so
  // its expiry is that, not a missed heartbeat.
  bool ReachedMaxDuration(const Alloc& a) const {
    return a.expires_at >= a.granted_at + a.req.max_duration;
  }
  // Grants are withheld from `a` (pause, the breaker, or memory pressure
  // when it asks for memory).
  bool GrantsHeld(const Alloc& a) const {
    return GrantsHeld(a.req.level) || PressureHolds(a.demand);
  }
  bool GrantsHeld(Level level) const { return paused_ || BreakerHolds(level); }
  bool BreakerBlocks() const { return breaker_.open && !breaker_.overridden; }
  // The open breaker refuses and holds work of `level` (all levels under
  // pause_all, low ones under pause_new_low_priority).
  bool BreakerHolds(Level level) const {
    return BreakerBlocks() &&
           (breaker_.action == "pause_all" || level == Level::kLow);
  }
  // Nothing at all may be granted now.
  bool AllHeld() const {
    return paused_ || (BreakerBlocks() && breaker_.action == "pause_all");
  }
  // A budget counter of `a`'s demand that cannot fit before the reset.
  bool WaitsForReset(const Alloc& a) const;
  void ComputePeriod(Time t, Time* start, Time* end) const;
  void StartPeriod();
  void ResetPeriod();
  // Fires the alert thresholds crossed by the budgets `a` touches (all
  // budgets when null).
  void CheckAlerts(const Alloc* a);
  void CheckAlert(BudgetState& b);
  void EvaluateBreaker();
  // Closed, not overridden, with the configured action.
  void CloseBreaker();
  std::vector<expr::Value> BreakerValues() const;
  double BurnRate(bool micro) const;  // per hour
  void RecordBurn(int64_t tokens, int64_t micro);
  void EmitOp(EventType type, std::string reason, const std::string& actor,
              const std::string& product = "");
  std::string BudgetLabel(const BudgetState& b) const;
  std::string BudgetAmount(const BudgetState& b, Milli amount) const;
  void FillBudgetInfo(const Alloc& a, BudgetInfo* out) const;
  const ModelState* FindModel(const std::string& name) const;
  // Reservation in micro-USD of `tokens` with `model` (0 when unpriced).
  int64_t PriceTokens(const std::string& model, int64_t tokens) const;
  std::optional<Level> PriorityOverride(const std::string& product) const;

  // --- conflicts (conflicts.cc) ---
  // Validates and normalises the lock paths, conflict_avoidance and
  // reservation_id of `r` into `p`.
  Status ValidateConflictFields(const AllocationRequest& r,
                                const std::string& prefix,
                                ParsedRequest* p) const;
  // conflict_avoidance and reservation_id (the rest of
  // ValidateConflictFields).
  Status ValidateAvoidance(const AllocationRequest& r,
                           const std::string& prefix, ParsedRequest* p) const;
  const LockPolicy& PolicyFor(uint32_t product) const;
  const LockPolicy& PolicyFor(const std::string& product) const;
  // Whether a request with `locks` is exempt from locking under `policy`.
  static bool Exempt(const std::vector<LockSpec>& locks,
                     const LockPolicy& policy);
  // Keeps a resolved or advisory conflict for listing (bounded).
  void RememberConflict(ConflictInfo c);
  // Gives a new allocation its lock state (moves the locks out of `p`).
  void SetupLocks(Alloc& a, ParsedRequest& p);
  // What `a` has to wait for now, if anything (no state change).
  struct GateFind {
    AllocLocks::Gate kind = AllocLocks::Gate::kNone;
    uint64_t on = 0;
    std::string subject, other_path;
    bool own_exclusive = false, other_exclusive = false;
  };
  GateFind FindGate(const Alloc& a) const;
  // Whether lock-order key of `x` is ahead of `y`'s.
  static bool LockAhead(const AllocLocks& x, uint64_t xid, const AllocLocks& y,
                        uint64_t yid);
  // Re-checks `a`'s gate: gates it (registering the conflict, preempting
  // holders under priority_based) and answers true, or clears the gate.
  bool Gate(Alloc& a);
  // priority_based: preempts the lower-level preemptible holders in the way
  // of gated `a`, once per gate (PreemptDue says whether it is due).
  void PreemptForLock(Alloc& a);
  bool PreemptDue(const Alloc& a) const;
  void ClaimLocks(Alloc& a);
  void TakeLocks(Alloc& a);
  // Removes its locks from whichever table holds them and clears its gate
  // (it leaves the queue or stops holding).
  void DropLocks(Alloc& a);
  void NoteWorkflowActive(const Alloc& a, int sign);
  // Requests gated on `id` (or workflow `wf`) must be re-checked.
  void WakeGated(uint64_t id);
  // Re-checks every woken request; true when one stopped being gated (a
  // full dispatch pass must then look at it).
  bool ProcessWakes();
  bool WakesPending() const { return !wakes_.empty() || !wf_wakes_.empty(); }
  uint64_t OpenConflict(Alloc& waiter, const GateFind& g);
  void CloseConflict(Alloc& a, const std::string& resolution);
  void RecordAdvisory(Alloc& a);
  std::string GateText(const Alloc& a) const;
  Time ExpectedEnd(const Alloc& h) const;
  // A preemption notice to `v` on behalf of queued `by`.
  void SendPreemptNotice(Alloc& v, Alloc& by, const std::string& why);
  // The notice itself: `v` is preempted with grace (`text` says by what),
  // announced by an event of `type` (a preemption notice, or a reclaim
  // request).
  void NoticeVictim(Alloc& v, const std::string& text,
                    EventType type = EventType::kPreemptionNotice);
  std::string ConflictSeverity(const GateFind& g, const Alloc& waiter) const;
  ConflictInfo* FindConflict(std::string_view id);
  // For all-or-nothing batches: why `p` (product `product`) cannot take its
  // locks now beside the held ones and those of `earlier` batch members.
  std::string BatchLockConflict(
      const ParsedRequest& p,
      const std::vector<const ParsedRequest*>& earlier) const;

 public:
  StatusOr<ConflictReport> CheckConflicts(const AllocationRequest& request,
                                          Duration horizon);
  std::vector<ConflictInfo> Conflicts() const;
  StatusOr<ConflictInfo> ResolveConflict(std::string_view conflict_id,
                                         ResolveStrategy strategy,
                                         const Actor& actor);
  Status SetLockPolicy(const std::string& scope,
                       std::optional<LockPolicy> policy, const Actor& actor);
  StatusOr<LockVerdict> VerifyLock(std::string_view path, uint64_t token);
  StatusOr<ReservationInfo> Reserve(const ReservationRequest& request);
  ReservationInfo ResInfo(const Reservation& r) const;
  StatusOr<ReservationInfo> CancelReservation(std::string_view id,
                                              const Actor& actor);
  StatusOr<ReservationInfo> GetReservation(std::string_view id) const;
  std::vector<ReservationInfo> Reservations() const;

 private:
  // --- reservations (reservations.cc) ---
  bool HasBookings() const { return bookings_ > 0; }
  // When `a` is expected to stop: now + estimated_minutes (else its ttl),
  // at most its max_duration.
  Time RunEnd(const RequestCore& r) const;
  // Capacity of counter `c` booked by reservations (other than `a`'s own)
  // at some instant of `a`'s expected run.
  Milli Booked(uint32_t c, const Alloc& a) const;
  Milli Booked(uint32_t c, Time end, uint64_t exclude) const;
  // The reservation a request names must be open and its own.
  Status CheckReservationRef(const ParsedRequest& p,
                             const std::string& prefix) const;
  // Claimant `a` takes what it can of its reservation's unclaimed capacity
  // (moving it out of `used`), or gives it back.
  void PreDraw(Alloc& a);
  void UndoDraw(Alloc& a);
  // At the end of a claimant's hold: what it drew goes back to the
  // reservation while its window is open and in grace.
  void ReturnDraw(Alloc& a);
  // What ending holder `v` would free on counter `c` for others: what it
  // drew from a reservation in its grace period goes back to it instead.
  Milli FreedBy(const Alloc& v, uint32_t c) const;
  void HandleReservationTimer(const Timer& t);
  void OpenWindow(Reservation& r);
  // reservations.preempt_running: preempts lower-level preemptible running
  // work (lowest level, then priority, then latest grant first) to cover
  // what window `r` is short of; it takes the capacity as they release.
  void PreemptForWindow(Reservation& r);
  void CloseWindow(Reservation& r, bool cancelled);
  void EndGrace(Reservation& r);
  // Gives back what an open window holds (left and the shortfall booking).
  void ReleaseHold(Reservation& r);
  // Open windows short of capacity take what has freed.
  void TopUpReservations();
  // Books the windows of `r` that start before now + horizon.
  void BookWindows(Reservation& r, bool initial);
  Status FitsBeside(const Reservation& r, Time ws, Time we) const;
  void EmitRes(EventType type, const Reservation& r, std::string reason,
               const std::string& actor = "");
  StatusOr<Reservation*> FindRes(std::string_view id);
  std::string BookedText(uint32_t c, const Alloc& a) const;

  // --- interning and counters ---
  uint32_t InternProduct(const std::string& name);
  uint32_t InternType(const std::string& name);
  uint32_t NewCounter(Counter::Kind kind, std::string name, Milli limit);
  // Puts an unused counter on the free list.
  void FreeCounter(uint32_t c);
  Workflow& AcquireWorkflow(const std::string& id);
  void ReleaseWorkflowRef(const std::string& id);
  // `extra`: room to reserve for entries the caller appends (budgets).
  Demand BuildDemand(const ParsedRequest& p, uint32_t product, uint32_t type,
                     const Workflow* wf, size_t extra = 0) const;
  // Milli limits a request would face, without creating state (for
  // CheckCanEverFit before interning).
  Milli TypeLimit(const std::string& type) const;
  Milli ProductLimit(const std::string& product) const;

  // --- admission ---
  // Budget counters keep no holder index (nothing reads it: a reservation
  // comes back when its holder reports or releases, not at a known time).
  bool TracksHolders(uint32_t c) const {
    return counters_[c].kind != Counter::Kind::kBudget;
  }
  bool Fits(const Demand& d) const;
  // The queued request blocking counter `c`, or 0.
  uint64_t Blocker(uint32_t c) const;
  // Whether queued `x` goes before queued-or-arriving `y` right now.
  bool Outranks(const Alloc& x, const Alloc& y) const;
  // Records `a` as the claimant of `c` (holding its amount there) unless a
  // request that outranks it already is.
  void Block(uint32_t c, const Alloc& a);
  // Room left on `c` for requests its claimant outranks.
  Milli Room(uint32_t c) const;
  // How `a` stands: the counters it does not fit on (`nofit`), and the first
  // counter on which a claim that outranks it leaves too little room
  // (`behind`, UINT32_MAX if none). Claims recorded by pass `serial` outrank
  // `a` (it is visited after them).
  void Assess(const Alloc& a, uint64_t serial, std::vector<uint32_t>* nofit,
              uint32_t* behind) const;
  // `a` cannot start: it claims the counters it does not fit on. True when
  // it heads all of them (then it may preempt).
  bool Claim(const Alloc& a, const std::vector<uint32_t>& nofit);
  // A preempting request also holds its share of the counters it fits on,
  // so what its victims free is not taken by lower requests first.
  void HoldRest(const Alloc& a, const std::vector<uint32_t>& nofit);
  // The queued request that preempted `a`, if it has not started yet.
  uint64_t ParkedBehind(const Alloc& a) const;
  // `a` cannot start for a while (it waits for the budget reset, or the
  // breaker holds its level): the victims it preempted stop waiting for it.
  void Unpark(Alloc& a);
  // Claim, then preempt when the level allows and `a` heads its claims;
  // sets a.wait.
  void Wait(Alloc& a, const std::vector<uint32_t>& nofit);
  // Grants a new (or re-queued) allocation at once when it fits and no
  // waiter that outranks it claims one of its counters; else queues it
  // (preempting when its level allows).
  void Admit(Alloc& a, bool is_new);
  // Re-examines the queue after counters in `touched` gained room or lost
  // their blocker. Does nothing unless one of them is blocked.
  void DispatchFreed(const Demand& touched);
  // A dispatch pass. Full (`seeds` null): every lane, and B is rebuilt from
  // scratch. Targeted: only lanes touching the seed counters (agent type or
  // product counters), cascading to the lanes of every counter whose
  // blocker starts; escalates to a full pass when that counter is global.
  void RunPass(const std::vector<uint32_t>* seeds);
  void Dispatch() { RunPass(nullptr); }
  bool TryPreempt(Alloc& a, const std::vector<uint32_t>& short_counters);
  // The order victims are chosen in: lowest level, then lowest priority,
  // then the most recently granted (then the highest id).
  static bool VictimBefore(const Alloc* x, const Alloc* y);
  void Grant(Alloc& a, std::optional<double> score);
  void ApplyCounters(Alloc& a, int sign);
  void Enqueue(Alloc& a);
  void Dequeue(Alloc& a);

  void StopHolding(Alloc& a);
  // End `a` (freeing what it holds) and answer its final state; `a` may be
  // dropped from the history afterwards.
  AllocationInfo Finish(Alloc& a, AllocStatus status, EventType event,
                        std::string reason);
  // Finish, or re-queue a preempted allocation whose request asked for it.
  AllocationInfo ForceRelease(Alloc& a, AllocStatus status, EventType event,
                              std::string reason);

  // --- scoring ---
  double LevelWait(Level l) const;
  bool NoWaitLevel(Level l) const { return LevelWait(l) <= 0; }
  double StaticKey(const Alloc& a) const;
  double Score(const Alloc& a, Time now, const std::vector<double>& fs,
               QueueEntry* parts = nullptr) const;
  std::vector<double> FairShareTerms(Time now) const;
  // FairShareTerms(now_), cached until time moves or usage changes.
  const std::vector<double>& FairShare() const;
  // The score of queue key `k` of a request of `level` and `product` now:
  // what dispatch orders lanes by (equal to Score() up to rounding).
  double RankScore(const QKey& k, Level level, uint32_t product,
                   const std::vector<double>& fs) const;
  double CurrentScore(const Alloc& a) const {
    return Score(a, now_, FairShare());
  }
  double DecayedUsage(const ProductState& p, Time now) const;
  // Decayed past usage plus the usage committed to running work until its
  // expected end: what the fair-share factor compares against shares.
  double FairShareUsage(const ProductState& p, Time now) const;
  // Adds (sign +1) or removes (-1) `a`'s agents from its product's running
  // totals, accruing decayed usage first.
  void CountRunning(Alloc& a, int sign);
  void AccrueUsage(ProductState& p, Time now);

  // --- time ---
  void ProcessTimersUpTo(Time t);
  void Schedule(Time at, uint64_t id, Timer::Kind kind, uint64_t gen = 0);
  void HandleTimer(const Timer& t);
  void StartOp();
  void EndOp();
  // Brackets a public operation: processes what is due first (StartOp) and
  // again at the end (EndOp), on every return path.
  class OpScope {
   public:
    explicit OpScope(EngineImpl* e) : e_(e) { e_->StartOp(); }
    ~OpScope() { e_->EndOp(); }
    OpScope(const OpScope&) = delete;
    OpScope& operator=(const OpScope&) = delete;

   private:
    EngineImpl* e_;
  };

  // --- output ---
  // Takes the next sequence number; false when there is no sink to tell,
  // else fills the event's common fields.
  bool NextEvent(EventType type, std::string reason, Event* e);
  void Emit(EventType type, const Alloc& a, std::string reason = {},
            std::optional<double> score = std::nullopt);
  AllocationInfo Info(const Alloc& a) const;
  std::string ReasonText(const Alloc& a) const;
  std::string ReasonText(const WaitReason& w) const;
  // Why `d` cannot be admitted now: it does not fit on some counter, or it
  // fits but another queued request (not `self`) waits for one of its
  // counters (kBehind: only a dispatch pass can tell which scores higher),
  // or kNone.
  WaitReason Diagnose(const Demand& d, uint64_t self) const;
  std::optional<Time> ExpectedStart(const Alloc& a) const;
  std::string CounterLabel(const Counter& c) const;
  // The allocation's request as validated: its core and its resources (from
  // its demand).
  ParsedRequest Reconstruct(const Alloc& a) const;
  StatusOr<Alloc*> Find(std::string_view id);
  StatusOr<const Alloc*> Find(std::string_view id) const;
  static std::string IdText(uint64_t id);
  void Retire(Alloc& a);
  // Starts fetching the memory of the allocations Retire will erase next.
  void PrefetchRetirees() const;

  Config config_;
  Clock* clock_;
  EventSink* sink_;
  // Set only while Engine::Reconfigure loads the state of this engine's
  // predecessor (running under the old config) into it: the loader then
  // takes the config-built parts from the new config (not state).
  const EngineImpl* migrate_from_ = nullptr;
  Time now_{};
  Time epoch_time_{};  // reference for static keys
  Time last_pass_{};

  std::vector<ResourceSpec> resource_specs_;
  std::unordered_map<std::string, uint32_t> resource_index_;
  std::vector<uint32_t> resource_counter_;  // resource idx -> counter
  uint32_t agents_resource_ = 0;
  Milli agents_min_ = 1000;  // the smallest non-zero agents amount
  // The memory_gb resource's index (UINT32_MAX when not configured); its
  // counter is resource_counter_[memory_resource_] (counters move on
  // restore and reload, resource indexes do not).
  uint32_t memory_resource_ = UINT32_MAX;

  std::vector<Counter> counters_;
  std::vector<uint32_t> free_counters_;
  std::vector<ProductState> products_;
  std::unordered_map<std::string, uint32_t> product_index_;
  std::vector<TypeState> types_;
  std::vector<std::string> requesters_;
  std::unordered_map<std::string, uint32_t> requester_index_;
  std::unordered_map<std::string, uint32_t> type_index_;
  std::unordered_map<std::string, Workflow> workflows_;

  std::unordered_map<uint64_t, Alloc> allocs_;
  std::unordered_map<std::string, uint64_t> idempotency_;
  // Ended allocations kept for reading, oldest first (elements of
  // allocs_, each once); Retire erases the oldest beyond
  // scheduling.history_limit.
  std::deque<Alloc*> history_;
  uint64_t next_id_ = 1;
  uint64_t fencing_ = 0;
  uint64_t event_seq_ = 0;
  int64_t active_count_ = 0, queued_count_ = 0, preempting_count_ = 0;
  int64_t queued_without_agents_ = 0;

  std::vector<Lane> lanes_;
  std::unordered_map<uint64_t, uint32_t> lane_index_;
  std::vector<Band> bands_;
  std::map<std::pair<int, uint32_t>, uint32_t> band_index_;
  std::set<uint32_t> active_bands_;
  std::vector<std::vector<uint32_t>> type_lanes_, product_lanes_;
  uint64_t pass_epoch_ = 1;
  uint64_t pass_serial_ = 0;
  // Set when a claim was taken over with a smaller share (see Block): a full
  // pass must re-examine the queue.
  bool relaxed_ = false;
  // Fair-share cache: valid while fs_time_ == now_ and no usage changed.
  mutable std::vector<double> fs_cache_;
  mutable Time fs_time_{};
  mutable uint64_t fs_cached_version_ = UINT64_MAX;
  uint64_t fs_version_ = 0;

  // --- money state ---
  bool money_enabled_ = false;
  absl::TimeZone tz_;
  Time period_start_{}, period_end_{};
  std::map<std::string, ModelState> models_;
  std::vector<CompiledRule> rules_;
  std::vector<expr::Condition> trip_conditions_;
  std::vector<BudgetState> budgets_;
  // budgets_ indexes by scope name: tokens first, then micro-USD
  // (UINT32_MAX when not configured).
  std::array<uint32_t, 2> global_budgets_ = {UINT32_MAX, UINT32_MAX};
  std::unordered_map<std::string, std::array<uint32_t, 2>> product_budgets_,
      type_budgets_;
  // This period's spend (all of it, whether a budget is configured or not).
  int64_t period_tokens_ = 0, period_micro_ = 0;
  // By model name (few), and by product / agent type index.
  std::map<std::string, Spend> spend_by_model_;
  std::vector<Spend> spend_by_product_, spend_by_type_;
  // Scratch values of the task variables for rule evaluation (reused so
  // evaluating rules allocates nothing once warm).
  mutable std::vector<expr::Value> task_values_;
  std::vector<bool> rule_vars_;  // variables some rule reads
  std::vector<BudgetAlert> alerts_;
  // Spend per minute over the burn-rate window: minute index -> spend.
  std::deque<std::pair<int64_t, std::pair<int64_t, int64_t>>> burn_;
  BreakerState breaker_;
  bool paused_ = false;
  std::string paused_by_, paused_reason_;
  std::map<std::string, Level> priority_overrides_;
  std::unordered_map<std::string, Learned> learned_;
  // Metrics over the period.
  Time metrics_since_{};
  std::vector<double> busy_agent_ms_;  // agent-ms by agent type index
  int64_t tasks_completed_ = 0, tasks_completed_tokens_ = 0,
          tasks_completed_micro_ = 0;
  int64_t tasks_started_ = 0, tasks_waited_ = 0;
  double wait_ms_sum_ = 0, wait_ms_max_ = 0;

  // --- monitoring state (monitor.cc) ---
  std::optional<SystemReading> system_;  // the last reading
  Time system_time_{};
  // New requests asking for memory are held (pressure_threshold).
  bool memory_pressure_ = false;
  // Active alerts by "type/resource".
  std::map<std::string, Alert> health_alerts_;
  // Queue waits of grants per minute of engine time, oldest first, over
  // monitoring.degradation's window plus baseline (degraded_performance).
  struct WaitBucket {
    int64_t minute = 0;  // engine time / 1 min
    int64_t grants = 0;
    int64_t wait_ms = 0;  // their waits, summed
    // Caps that keep the sums over a week of minutes far from overflowing
    // (a loaded state is held to them too).
    static constexpr int64_t kMaxGrants = 1'000'000'000;
    static constexpr int64_t kMaxWaitMs = int64_t{1} << 48;
  };
  std::deque<WaitBucket> wait_buckets_;

  // --- reservation state (reservations.cc) ---
  std::map<uint64_t, Reservation> reservations_;  // by num
  std::unordered_map<std::string, uint64_t> reservation_ids_;
  uint64_t next_reservation_ = 1;
  // Per counter: windows booked ahead, and shortfalls of open windows.
  std::unordered_map<uint32_t, Timeline> timelines_;
  int64_t bookings_ = 0;       // intervals in all timelines
  int64_t short_windows_ = 0;  // open windows with a shortfall
  // Grants that left a counter over its limit net of bookings (a bug).
  int64_t booking_violations_ = 0;
  std::string booking_violation_;

  // --- conflict state (conflicts.cc) ---
  std::string workspace_root_;  // normalised; "" = none
  LockPolicy global_policy_;
  std::map<std::string, LockPolicy> product_policies_;
  // Locks of holding allocations, and locks claimed by queued ones.
  paths::LockTable held_locks_, claimed_locks_;
  // Gated requests by what they wait for (entries may be stale: a request
  // is checked again when woken).
  std::unordered_map<uint64_t, std::vector<uint64_t>> gated_on_;
  std::unordered_map<std::string, std::vector<uint64_t>> gated_on_wf_;
  std::vector<uint64_t> wakes_;
  std::vector<std::string> wf_wakes_;
  int64_t gated_count_ = 0;
  // Workflow active counts are kept once a request avoided a workflow.
  bool track_wf_active_ = false;
  uint64_t next_conflict_ = 1;
  std::map<uint64_t, ConflictInfo> open_conflicts_;
  std::deque<ConflictInfo> resolved_conflicts_;  // newest last
  // Fencing token -> allocation, for allocations with locks still known.
  std::unordered_map<uint64_t, uint64_t> fencing_owner_;

  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  bool in_op_ = false;
  // A full dispatch pass is due when the current operation ends (after the
  // breaker started holding low-priority work).
  bool dispatch_at_end_ = false;
};

}  // namespace qm

#endif  // QM_CORE_ENGINE_IMPL_H_
