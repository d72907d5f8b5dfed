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
#include <string>
#include <string_view>
#include <vector>

#include "qm/status.h"
#include "qm/types.h"

namespace qm::api {

using Json = nlohmann::ordered_json;

// An allocation request: workflow_id, requester, product, agent_type,
// priority (name or 0-100), resources {name: amount} (seed 000's nested
// `tool_instances: {bash: 2}` is accepted as tool.bash), estimated_tokens,
// estimated_minutes, blocks, total_tasks, ttl, max_duration (also `duration`
// and `constraints.max_duration`), preemptible, requeue_on_preempt,
// metadata (any JSON), idempotency_key. `prefix` is prepended to field names
// in errors (e.g. "requests[2].").
StatusOr<AllocationRequest> RequestFromJson(const Json& j,
                                            const std::string& prefix = "");
// tokens, cost_usd, outcome: success|failure|cancelled.
StatusOr<UsageReport> UsageFromJson(const Json& j);
// {name: amount}.
StatusOr<ResourceAmounts> AmountsFromJson(const Json& j,
                                          const std::string& field);
// A duration given as "30m"-style text or a number of seconds.
StatusOr<Duration> DurationFromJson(const Json& j, const std::string& field);

Json ToJson(const AllocationInfo& a);
Json ToJson(const Snapshot& s);
Json ToJson(const QueueEntry& e);
Json ToJson(const Event& e);

// The success envelope: status, operation, timestamp, result,
// metrics.execution_time, recommendations.
Json SuccessEnvelope(std::string_view operation, Time timestamp, Json result,
                     Duration execution_time,
                     std::vector<std::string> recommendations = {});
// The error envelope: status, operation, timestamp, error {code, message,
// details, affected_resources}, recovery_suggestions, alternative_options.
Json ErrorEnvelope(std::string_view operation, Time timestamp,
                   const Status& status);

// A plain-text rendering of an envelope for people (--output table).
std::string RenderTable(const Json& envelope);

// A JSON number printed with at most 6 decimals (scores, percentages), so
// output is stable and readable.
double Round6(double v);

}  // namespace qm::api

#endif  // QM_API_JSON_CODEC_H_
