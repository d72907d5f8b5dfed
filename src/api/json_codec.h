// The JSON face of the engine: requests in, allocations, snapshots, queue
// entries and events out, and the response envelope of seed 000 ("Output
// Format"). Shared by the CLI, the simulator and (later) the server and the
// MCP adapter, so every entry point reads and writes the same shapes.
//
// Decoding never throws: a malformed document is INVALID_REQUEST naming the
// field; a field for a feature that is not built yet is UNIMPLEMENTED.
#ifndef QM_API_JSON_CODEC_H_
#define QM_API_JSON_CODEC_H_

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qm/config.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm::api {

using Json = nlohmann::ordered_json;

// "null", "a boolean", "a string", "an array", "an object" or "a number":
// what a JSON value is, for "must be X, got Y" messages.
const char* JsonTypeName(const Json& j);

// An allocation request: workflow_id, requester, product, agent_type,
// priority (name or 0-100), resources {name: amount} (seed 000's nested
// `tool_instances: {bash: 2}` is accepted as tool.bash), estimated_tokens,
// estimated_minutes, blocks, total_tasks, ttl, max_duration (also `duration`
// and `constraints.max_duration`), preemptible, requeue_on_preempt,
// metadata (any JSON), idempotency_key, model (a name), wait_for_budget
// (bool), exclusive_access, shared_access and conflict_avoidance (arrays of
// strings, also under `constraints` as seed 000 writes them; seed 000's
// `exclusive_files` adds to exclusive_access), reservation_id. The engine
// checks the paths and ids themselves. `prefix` is prepended to field names
// in errors (e.g. "requests[2].").
StatusOr<AllocationRequest> RequestFromJson(const Json& j,
                                            const std::string& prefix = "");
// report_id, tokens, input_tokens, output_tokens, cached_input_tokens (whole
// numbers >= 0), cost_usd (dollars >= 0), model, outcome:
// success|failure|cancelled. Null is an empty report. Errors name the field
// as "usage.<field>".
StatusOr<UsageReport> UsageFromJson(const Json& j);
// {name: amount}.
StatusOr<ResourceAmounts> AmountsFromJson(const Json& j,
                                          const std::string& field);
// A duration given as "30m"-style text or a number of seconds.
StatusOr<Duration> DurationFromJson(const Json& j, const std::string& field);

// An allocation; always carries `budget` (see ToJson(BudgetInfo)). `locks`
// ([{path, mode: exclusive|shared}]), `conflict_avoidance`,
// `reservation_id` and `warnings` appear only when non-empty.
Json ToJson(const AllocationInfo& a);
// A usage report: the fields that are set, and outcome.
Json ToJson(const UsageReport& u);
// model (null when none), model_reason, downgraded_from, max_tokens and
// max_tokens_limit (when set), reserved_tokens, reserved_tokens_left,
// reserved_usd, reserved_usd_left, used_tokens, used_usd, over_budget,
// accuracy (when set).
Json ToJson(const BudgetInfo& b);
Json ToJson(const Snapshot& s);
// An alert (seed 000 resource_alerts) with "state": "firing" | "resolved".
Json ToJson(const Alert& a);
Json ToJson(const QueueEntry& e);
// An event (with workflow_id when its allocation or reservation names one).
// Events without an allocation (operator actions, period budget
// alerts and resets, the breaker) carry only seq, time, type, reason, and
// product / agent_type / actor when set. Reservation events (reserved,
// reservation_started, reservation_ended, reservation_cancelled) name the
// reservation (the event's allocation_id) as reservation_id, with reason,
// product, agent_type, priority and actor.
Json ToJson(const Event& e);
// Whether events of type `t` concern a reservation (whose id they carry in
// allocation_id) rather than an allocation.
bool IsReservationEvent(EventType t);

// ---- Conflicts and reservations (docs/conflicts.md) ----

// A conflict in the shape of seed 000's alerts: type, severity, message,
// recommended_action, then id, subject, holder, since, expected_release,
// starts_at, waiter (each only when set), status, resolution, detected_at,
// resolved_at (when set).
Json ToJson(const ConflictInfo& c);
// A check-conflicts dry run: time, horizon ("4h"), outcome (grant | queue |
// refuse), reason, conflicts_found, conflicts.
Json ToJson(const ConflictReport& r);
// `qm lock verify`: path, token, valid, holder and mode (exclusive | shared;
// both null when no allocation with the token holds the path), message,
// holders [{allocation_id, fencing_token}].
Json ToJson(const LockVerdict& v);
// reservation_id, status, workflow_id, product, agent_type, requester,
// priority, priority_value, resources, start_time, duration, recurrence
// (null when once), until (when set), window_start, window_end,
// grace_ends_at (when set), grace_over, claimed, holders, warnings (when
// any), metadata (when set).
Json ToJson(const ReservationInfo& r);

// seed 000 `reserve`: reservation_id, workflow_id, product, agent_type,
// requester, priority (name or 0-100), resources {name: amount},
// start_time (RFC 3339 UTC, or "+2h": that long after `now`; required),
// duration ("2h" or seconds; required), recurrence (daily | weekly, or
// null / "" for once), until (as start_time; only with a recurrence),
// metadata (any JSON). The engine checks the window and the amounts.
StatusOr<ReservationRequest> ReservationFromJson(const Json& j, Time now);

// A seed 000 prevent-conflicts request, decoded: the scope it applies to
// and the policy to set there (nullopt: the product drops its own policy
// and follows the global one).
struct LockPolicyChange {
  std::string scope = "global";  // "global" or a product name
  std::optional<LockPolicy> policy;
};
// {policy_type: file_locking (required), scope: global (the default) or a
// product, enforcement: strict | advisory (required; "inherit" or null
// removes a product's own policy), exceptions: [read_only_operations]
// (default none)}. The policy given replaces the scope's whole policy.
StatusOr<LockPolicyChange> LockPolicyFromJson(const Json& j);
// Seed 001 "Cost tracking": date (= period_start), time, period, time_zone,
// period_start, period_end, tokens_used, cost_usd, limits {tokens, cost},
// percent_used {tokens, cost} (null when unlimited), reserved, burn_rate,
// projected_eod {cost_usd, tokens}, alerts_triggered [{time, budget,
// threshold_percent, message}], models, by_product, by_agent_type ([{name,
// tasks, tokens, cost_usd, token_share}]), budgets, circuit_breaker, paused
// (+ paused_by, paused_reason), priority_overrides {product: level}.
Json ToJson(const CostReport& c);
// Seed 001 "Metrics & Optimization": time, since, agent_utilization {type:
// 0-1}, cost_efficiency, queue_performance, estimates, recommendations.
Json ToJson(const MetricsReport& m);
Json ToJson(const BreakerState& b);
Json ToJson(const LearnedEstimate& e);

// Seed 001 "Monitoring Dashboard Integration" as Markdown text for people:
// agents (from `snapshot` when given, and the metrics), costs against the
// limits ("Tokens used: 1,600,000 / 2,000,000 (80%) ⚠️": the mark when the
// figure is at or above the threshold of an alert fired this period, 🛑 at
// the limit), projected end of period, breaker and pause state, alerts, models,
// shares by product and agent type, efficiency and recommendations.
std::string RenderCostDashboard(const CostReport& c, const MetricsReport& m,
                                const Snapshot* snapshot = nullptr);

// The success envelope: status, operation, timestamp, result,
// metrics.execution_time, recommendations.
Json SuccessEnvelope(std::string_view operation, Time timestamp, Json result,
                     Duration execution_time,
                     std::vector<std::string> recommendations = {});
// The error envelope: status, operation, timestamp, error {code, message,
// details, affected_resources, context (the Status's machine-readable facts,
// when any: which budget, what is left, when it resets...)},
// recovery_suggestions, alternative_options (the Status's alternatives when
// it has any, else generic ones for the code).
Json ErrorEnvelope(std::string_view operation, Time timestamp,
                   const Status& status);

// A plain-text rendering of an envelope for people (--output table).
std::string RenderTable(const Json& envelope);

// A JSON number printed with at most 6 decimals (scores, percentages), so
// output is stable and readable.
double Round6(double v);

}  // namespace qm::api

#endif  // QM_API_JSON_CODEC_H_
