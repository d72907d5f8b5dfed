// Seed 000's read-only reports on what the fleet did, computed from the
// allocations the engine still knows and one snapshot:
//
//   GET /v1/status/agents       (`qm status agents '{...}'`): the agent
//       pool now per group and, with include_performance, what the groups
//       did over a time range (tasks, outcomes, waits, run times,
//       agent-minutes, utilisation, tokens and cost);
//   GET /v1/status/{resource}   (`qm status cpu_cores`): one counted
//       resource now, its biggest holders and the demand queued for it;
//   GET /v1/usage/{workflow_id} (`qm usage workflow_123 '{...}'`): one
//       workflow's totals, by agent type and by phase, its efficiency and
//       how it compares with the other workflows.
//
// The engine keeps the active and queued allocations and only the last
// scheduling.history_limit finished ones, so every report says how complete
// the history behind it is (history_complete, history_since). The shapes
// are documented in docs/reports.md and docs/openapi.yaml.
//
// A pure module: no I/O, no clock (the caller passes `now`), no engine
// calls. Thread safety: free functions over values.
#ifndef QM_SERVER_ACTIVITY_H_
#define QM_SERVER_ACTIVITY_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm::server {

// What the reports read: the engine's state at one moment.
struct ActivityInput {
  // Every allocation the engine still knows (active, queued, and the last
  // history_limit finished ones), in any order, of every product.
  std::vector<AllocationInfo> allocations;
  Snapshot snapshot;
  // The time the report is for (the server's clock; never before
  // snapshot.time).
  Time now{};
  // scheduling.history_limit: how many finished allocations the engine
  // keeps.
  int64_t history_limit = 10000;
  // An agent-role caller's products: only their allocations are reported
  // (an allocation of product "" counts as "default"). Unset: every
  // product.
  std::optional<std::vector<std::string>> visible_products;
};

// How GET /v1/status/agents groups the pool.
enum class GroupBy { kAgentType, kProduct, kWorkflow, kModel, kRequester };
// "agent_type", "product", "workflow", "model", "requester".
const char* GroupByName(GroupBy g);

// The query parameters of GET /v1/status/{resource}.
struct StatusQuery {
  // time_range: 15m, 1h, 24h, 7d... (any duration up to 90 days, or a
  // number of seconds). Default 1 h.
  Duration range = std::chrono::hours(1);
  // Whether time_range was given (other resources than agents report over
  // a range only when asked).
  bool range_given = false;
  // agents only. `specialization` (seed 000's word) is agent_type.
  GroupBy group_by = GroupBy::kAgentType;
  bool include_performance = false;
};

// The query parameters of GET /v1/usage/{workflow_id}.
struct UsageQuery {
  bool breakdown_by_phase = false;
  bool include_efficiency = false;
  bool compare_baseline = false;
};

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// Reads the query of GET /v1/status/{resource}: agents takes time_range,
// group_by and include_performance; other resources time_range only.
// INVALID_REQUEST naming the parameter and the accepted values for an
// unknown parameter, a bad value or one given twice.
StatusOr<StatusQuery> ParseStatusQuery(const std::string& resource,
                                       const QueryParams& params);
// Reads breakdown_by_phase, include_efficiency and compare_baseline (each
// true or false); INVALID_REQUEST as above.
StatusOr<UsageQuery> ParseUsageQuery(const QueryParams& params);

// A report: the envelope's result and its recommendations.
struct ActivityReport {
  nlohmann::ordered_json result;
  std::vector<std::string> recommendations;
};

// The name of the resource `name` asks for in `snapshot`: itself, or, when
// no resource has that name, seed 000's short names cpu, memory and storage
// for cpu_cores, memory_gb and storage_gb. NOT_FOUND naming the known
// resources otherwise.
StatusOr<std::string> ResolveResource(const Snapshot& snapshot,
                                      const std::string& name);

// GET /v1/status/{resource} (`resource` as ResolveResource returns it): the
// agents report for "agents", else the resource report. NOT_FOUND as
// ResolveResource.
StatusOr<ActivityReport> ResourceStatusReport(const ActivityInput& in,
                                              const std::string& resource,
                                              const StatusQuery& query);

// GET /v1/usage/{workflow_id}. NOT_FOUND when no allocation of the
// workflow is known (to this caller), saying what the engine keeps.
StatusOr<ActivityReport> WorkflowUsageReport(const ActivityInput& in,
                                             const std::string& workflow_id,
                                             const UsageQuery& query);

}  // namespace qm::server

#endif  // QM_SERVER_ACTIVITY_H_
