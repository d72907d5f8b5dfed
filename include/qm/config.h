// The effective configuration: plain data with every option documented next
// to its default. Loaded from YAML by qm::LoadConfigFile (config_loader.h); the
// engine takes it by value. Sections marked "parsed only" are validated now
// and acted on by later work (optimisation targets, monitoring).
#ifndef QM_CONFIG_H_
#define QM_CONFIG_H_

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"

namespace qm {

// Priority levels, lowest first; the numeric value is the level's rank.
enum class Level { kLow = 0, kNormal = 1, kHigh = 2, kCritical = 3 };
inline constexpr int kNumLevels = 4;
// "low", "normal", "high", "critical".
const char* LevelName(Level level);
// Accepts the four names and "medium" (an alias of "normal").
bool LevelFromName(const std::string& name, Level* level);

// A counted resource with a capacity. Amounts are stored as fixed point
// (thousandths) by the engine; `fractional` says whether requests may ask for
// non-whole amounts (cpu_cores, memory_gb, storage_gb are fractional by
// default; everything else counts whole units).
struct ResourceSpec {
  std::string name;
  double capacity = 0;
  bool fractional = false;

  bool operator==(const ResourceSpec&) const = default;
};

struct PriorityLevelConfig {
  // Weight of the level in the priority factor of the queue score.
  double weight = 0.5;
  // Minutes after which a queued request of this level counts as starved
  // (alert) and its wait factor reaches 1. 0 = the factor is 1 at once.
  double max_wait_minutes = 60;
  // Whether a request of this level that cannot fit preempts running
  // preemptible work of strictly lower levels.
  bool preempt_lower = false;

  bool operator==(const PriorityLevelConfig&) const = default;
};

// Weights of the four queue-score factors (seed 001, plus fair share).
struct ScoreWeights {
  double priority = 0.5;
  double wait = 0.3;
  double blocking = 0.2;
  double fair_share = 0.2;

  bool operator==(const ScoreWeights&) const = default;
};

struct ProductConfig {
  // Default priority of this product's requests when they name none.
  std::optional<Level> priority;
  // Max agents running at once for the product; unset = no product limit.
  std::optional<int64_t> max_concurrent_agents;
  // Tokens and USD per budget period (daily by default) for the product.
  std::optional<int64_t> token_budget_daily;
  std::optional<double> cost_budget_daily_usd;
  // Relative fair-share weight against the other products (default 1).
  double share = 1.0;

  bool operator==(const ProductConfig&) const = default;
};

// Per-workflow ceilings (seed 000 resource_policies.allocation_limits), summed
// over the workflow's active allocations. Unset = no limit.
struct AllocationLimits {
  std::optional<double> max_cpu_per_workflow = 6;
  std::optional<double> max_memory_per_workflow = 12;
  std::optional<int64_t> max_agents_per_workflow = 15;
  // Longest an allocation may run from its grant, renewals included.
  Duration max_duration = std::chrono::hours(6);

  bool operator==(const AllocationLimits&) const = default;
};

// Seed 000 auto_release.
struct AutoReleaseConfig {
  bool on_completion = true;
  // When false a lease whose TTL ran out only raises an event; it keeps its
  // resources until released.
  bool on_timeout = true;
  bool on_failure = true;
  // Time between the `lease_expiring` notice and the forced release.
  Duration grace_period = std::chrono::minutes(5);

  bool operator==(const AutoReleaseConfig&) const = default;
};

struct SchedulingConfig {
  ScoreWeights weights;
  // Size of a request's task graph when it names no total_tasks.
  int64_t default_total_tasks = 10;
  // Half-life of the decayed usage behind the fair-share factor.
  Duration fair_share_half_life = std::chrono::hours(1);
  // Notice given to a preempted allocation before its forced release.
  Duration preemption_grace = std::chrono::seconds(30);
  // Lease length when a request names no ttl; renew extends by it again.
  Duration default_ttl = std::chrono::minutes(30);
  // When true, requests must name an agent type listed in
  // max_concurrent.per_type; others are refused.
  bool restrict_agent_types = false;
  // How many finished (released/expired/preempted/failed/cancelled)
  // allocations the engine keeps for lookups and idempotent retries.
  int64_t history_limit = 10000;

  bool operator==(const SchedulingConfig&) const = default;
};

// ---- Money: prices, budgets, periods, the breaker, overrides. ----

// Prices of one model in USD per million tokens.
struct ModelPrice {
  double input_per_million = 0;
  // Default: the input price.
  std::optional<double> output_per_million;
  // Default: the input price.
  std::optional<double> cached_input_per_million;

  bool operator==(const ModelPrice&) const = default;
};

struct PricingConfig {
  // Model name -> prices. Empty: costs come only from usage reports that
  // carry cost_usd, and no dollar amount is reserved.
  std::map<std::string, ModelPrice> models;
  // The model of requests that name none and match no rule; "" = none.
  std::string default_model;
  // Share of output tokens assumed when pricing a token count that is not
  // split into input and output (reservations, reports with only `tokens`).
  double estimate_output_share = 0.2;

  bool operator==(const PricingConfig&) const = default;
};

// What happens when an allocation reports more tokens than its grant.
enum class OverBudgetPolicy { kFlag, kStop };

struct TokenBudgetsConfig {
  // Agent type -> tokens one task of that type is granted (max_tokens).
  std::map<std::string, int64_t> per_type;
  // Budget of types not listed (key `default`); unset = no per-task budget.
  std::optional<int64_t> default_budget;
  // A holder may extend its grant up to multiplier x budget.
  double multiplier = 1.5;
  // When true a request whose estimate (scaled by the learned ratio) is
  // below its type's budget is granted the estimate instead.
  bool use_estimate_when_smaller = false;
  // kFlag: an over_budget event only; kStop: the allocation is also ended.
  OverBudgetPolicy over_budget = OverBudgetPolicy::kFlag;
  // Weight of the newest sample in the learned actual/estimate ratios.
  double learning_rate = 0.2;

  bool operator==(const TokenBudgetsConfig&) const = default;
};

enum class BudgetPeriod { kDaily, kWeekly, kMonthly };
const char* BudgetPeriodName(BudgetPeriod p);

// A token and dollar allowance per budget period; unset = unlimited.
struct PeriodBudget {
  std::optional<int64_t> max_tokens;
  std::optional<double> max_cost_usd;

  bool operator==(const PeriodBudget&) const = default;
};

// Seed 001 daily_limits, plus the calendar the periods follow.
struct DailyLimitsConfig {
  std::optional<int64_t> max_tokens_total;
  std::optional<double> max_cost_usd;
  // Percentages of a limit at which an alert fires, once per period each.
  std::vector<double> alert_at_percent = {80};
  // Budgets reset at the start of each calendar day, week or month...
  BudgetPeriod period = BudgetPeriod::kDaily;
  // ...at midnight in this IANA time zone ("UTC", "Europe/Berlin").
  std::string time_zone = "UTC";
  // First day of a weekly period: 0 = Sunday ... 6 = Saturday (default
  // Monday).
  int week_start = 1;
  // Agent type -> its own allowance per period (`per_agent_type`).
  std::map<std::string, PeriodBudget> per_agent_type;

  bool operator==(const DailyLimitsConfig&) const = default;
};

struct ModelRule {
  // A condition over task.* fields (see src/core/expr.h), or "default".
  std::string condition;
  std::string model;
  // Chosen instead when the product's (or the global) projected spend with
  // `model` would cross its limit; "" = no downgrade.
  std::string fallback_model;

  bool operator==(const ModelRule&) const = default;
};

struct CircuitBreakerConfig {
  // Conditions over the period's spend (see docs/budgets.md); any true trips
  // the breaker. Empty: the breaker never trips.
  std::vector<std::string> trip_conditions;
  std::string action = "pause_all";  // pause_all | pause_new_low_priority
  std::string notify = "ceo";
  bool allow_override = true;
  // Window of the burn rate behind projected_* figures.
  Duration burn_rate_window = std::chrono::hours(1);

  bool operator==(const CircuitBreakerConfig&) const = default;
};

struct ManualOverrideConfig {
  // Start paused: no new grants until an operator resumes.
  bool pause_all_agents = false;
  // Product -> the level all its requests get.
  std::map<std::string, Level> priority_override;

  bool operator==(const ManualOverrideConfig&) const = default;
};

// ---- Parsed only: later issues give these behaviour. ----

struct OptimizationTargets {
  double efficiency_threshold = 80.0;
  Duration response_time_target = std::chrono::seconds(1);
  double utilization_target = 75.0;
  double conflict_tolerance = 0.1;

  bool operator==(const OptimizationTargets&) const = default;
};

struct MonitoringIntervals {
  Duration resource_check = std::chrono::seconds(30);
  Duration performance_sample = std::chrono::minutes(5);
  Duration capacity_analysis = std::chrono::hours(1);
  Duration trend_analysis = std::chrono::hours(24);

  bool operator==(const MonitoringIntervals&) const = default;
};

// Health thresholds, alerts and the memory pressure response (issue 7;
// seed 000 dashboard metrics, seed 003 MemoryOptimizationConfig). All are
// fractions of the whole (0.8 = 80%). Config file section `monitoring`.
struct MonitoringConfig {
  // A resource (cpu, memory, storage, agents) at or above this share is
  // `warning` and raises a capacity_warning alert (severity medium).
  // Default 0.8 (seed 000's safe_threshold 80.0).
  double warning_threshold = 0.8;
  // At or above this share it is `critical` (the alert's severity becomes
  // high). Default 0.95.
  double critical_threshold = 0.95;
  // Memory at or above this share (or memory PSI at or above
  // psi_threshold): new requests that ask for memory_gb queue with that
  // reason until it falls below again (minus the hysteresis). Default 0.8.
  double pressure_threshold = 0.8;
  // Memory at or above this share: preemptible low-priority allocations
  // holding memory_gb are asked to give it back (reclaim_requested, with
  // scheduling.preemption_grace), enough to bring memory under
  // pressure_threshold, then preempted. Default 0.9.
  double gc_trigger_threshold = 0.9;
  // Memory PSI ("some avg10" as a fraction) at or above this counts as
  // memory pressure. Default 0.1 (tasks stalled on memory 10% of the time).
  double psi_threshold = 0.1;
  // An alert or the pressure hold clears only when its figure falls this
  // far below the threshold that started it, so a figure hovering at a
  // threshold does not flap. Default 0.05.
  double hysteresis = 0.05;

  // The degraded_performance alert (seed 000 performance_degradation,
  // detection_method baseline_comparison): the mean queue wait of the
  // grants of the last `window` against that of the `baseline` before it.
  struct Degradation {
    // It fires when the recent mean is above the baseline's by this
    // fraction (seed 000's degradation_threshold 25 = 0.25) and by at
    // least min_increase; it clears when the rise falls below threshold
    // minus the hysteresis, or below half of min_increase. Default 0.25.
    double threshold = 0.25;
    // Rises smaller than this never fire, however large as a fraction (a
    // baseline of 0.1 s rising to 0.5 s is not news). Default 10 s.
    Duration min_increase = std::chrono::seconds(10);
    // The recent span. At least 1 minute, at most the baseline. Default
    // 15 minutes.
    Duration window = std::chrono::minutes(15);
    // The span before it that sets the baseline. At most 7 days. Default
    // 24 hours.
    Duration baseline = std::chrono::hours(24);
    // Grants needed in the window (and four times as many in the
    // baseline) before they are compared. Default 5.
    int64_t min_samples = 5;

    bool operator==(const Degradation&) const = default;
  };
  Degradation degradation;

  bool operator==(const MonitoringConfig&) const = default;
};

// OK, or INVALID_REQUEST naming the first monitoring.* key out of range or
// out of order with the value given (thresholds in (0, 1], critical not
// below warning, gc_trigger not below pressure, hysteresis in [0, 0.5] and
// below every threshold; degradation.threshold above 0 and at most 100,
// its window from 1 minute to its baseline, the baseline at most 7 days,
// min_increase not negative, min_samples at least 1).
Status ValidateMonitoringConfig(const MonitoringConfig& m);

// ---- Conflicts: path locks, workflow exclusion, reservations. ----

// How file locks are enforced (seed 000 prevent-conflicts `enforcement`).
enum class LockEnforcement {
  // A request whose locks conflict with a held lock queues until it is free.
  kStrict,
  // It is granted at once, with a warning and a conflict_detected event.
  kAdvisory,
};
const char* LockEnforcementName(LockEnforcement e);
bool LockEnforcementFromName(const std::string& name, LockEnforcement* out);

// One file-locking policy (global, or for one product).
struct LockPolicy {
  LockEnforcement enforcement = LockEnforcement::kStrict;
  // Requests exempt from locking. The one exception known is
  // "read_only_operations": a request that names no exclusive_access path
  // takes no locks and never waits for one.
  std::vector<std::string> exceptions;

  bool operator==(const LockPolicy&) const = default;
};

// What a request does about a lock held by lower-priority work.
enum class ConflictStrategy {
  // Wait until the holder lets go (seed 000 "queue_and_serialize").
  kQueueAndSerialize,
  // When its level may preempt (levels.<level>.preempt_lower), preempt the
  // lower-level preemptible holder with the usual grace, then take the lock.
  kPriorityBased,
};
const char* ConflictStrategyName(ConflictStrategy s);
bool ConflictStrategyFromName(const std::string& name, ConflictStrategy* out);

struct ConflictsConfig {
  // Absolute directory that relative lock paths are resolved against and
  // that absolute ones must lie in. "" = none: only relative paths are
  // accepted. The config loader resolves a relative value against the
  // config file's directory.
  std::string workspace_root;
  // The global file-locking policy (scope "global")...
  LockPolicy file_locking;
  // ...and products with a policy of their own (scope = product name).
  std::map<std::string, LockPolicy> per_product;
  ConflictStrategy strategy = ConflictStrategy::kQueueAndSerialize;
  // How many resolved conflicts are kept for listing.
  int64_t history_limit = 1000;

  bool operator==(const ConflictsConfig&) const = default;
};

struct ReservationsConfig {
  // How far ahead a reservation's window may end.
  Duration horizon = std::chrono::hours(24 * 30);
  // Capacity of a started reservation that no allocation claimed returns to
  // the pool this long after the window starts.
  Duration grace_period = std::chrono::minutes(15);
  // Whether a window that starts while running work occupies its capacity
  // preempts lower-level preemptible work to make room. When false it takes
  // capacity as running work releases it.
  bool preempt_running = false;
  // Upper bound on reservations held at once (scheduled or running).
  int64_t max_reservations = 10000;

  bool operator==(const ReservationsConfig&) const = default;
};

struct Config {
  // Counted resources. Defaults: agents 5 (seed 001 max_concurrent.total),
  // workflows 5, cpu_cores 8, memory_gb 16, storage_gb 500, tool.bash 12,
  // tool.file_ops 8, tool.search 4, tool.web 2 (seed 000). `agents` always
  // exists; max_concurrent.total sets its capacity.
  std::vector<ResourceSpec> resources;
  // max_concurrent.per_type: agents of one type running at once.
  std::map<std::string, int64_t> per_type_limits;
  // Levels indexed by Level. Defaults (seed 001): critical 1.0/0 min/preempt,
  // high 0.75/15, normal 0.5/60, low 0.25/240.
  std::array<PriorityLevelConfig, kNumLevels> levels;
  SchedulingConfig scheduling;
  std::map<std::string, ProductConfig> products;
  AllocationLimits allocation_limits;
  AutoReleaseConfig auto_release;

  PricingConfig pricing;
  TokenBudgetsConfig token_budgets;
  DailyLimitsConfig daily_limits;
  std::vector<ModelRule> model_rules;
  CircuitBreakerConfig circuit_breaker;
  ManualOverrideConfig manual_override;
  OptimizationTargets optimization_targets;
  MonitoringIntervals monitoring_intervals;
  MonitoringConfig monitoring;

  ConflictsConfig conflicts;
  ReservationsConfig reservations;

  // The defaults above, with the resource list filled in.
  static Config Defaults();
  // Looks up a resource by name; nullptr when absent.
  const ResourceSpec* FindResource(const std::string& name) const;

  bool operator==(const Config&) const = default;
};

}  // namespace qm

#endif  // QM_CONFIG_H_
