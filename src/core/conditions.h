// The variables that auto_model_selection rules and circuit_breaker trip
// conditions may read (see expr.h for the language). Shared by the config
// loader (which checks conditions with file positions) and the engine (which
// evaluates them), so both accept exactly the same conditions.
#ifndef QM_CORE_CONDITIONS_H_
#define QM_CORE_CONDITIONS_H_

#include "core/expr.h"

namespace qm {

// Indexes into TaskSchema().
enum TaskVar : size_t {
  kTaskPriority,          // level
  kTaskPriorityValue,     // number 0-100
  kTaskEstimatedMinutes,  // number, absent when not estimated
  kTaskEstimatedTokens,   // number, absent when not estimated
  kTaskProduct,           // string
  kTaskAgentType,         // string
  kTaskWorkflowId,        // string
  kTaskRequester,         // string
  kTaskPreemptible,       // bool
  kNumTaskVars,
};
const expr::Schema& TaskSchema();

// Indexes into BreakerSchema(). "daily" names the current budget period
// (a week or a month when daily_limits.period says so).
enum BreakerVar : size_t {
  kCostDailyUsd,           // spent this period
  kTokensDaily,            // tokens this period
  kProjectedCostDailyUsd,  // spent + burn rate x time left in the period
  kProjectedTokensDaily,   // same for tokens
  kBurnRateUsdPerHour,     // over circuit_breaker.burn_rate_window
  kBurnRateTokensPerHour,
  kMaxCostUsd,         // daily_limits.max_cost_usd (absent if unset)
  kMaxTokensTotal,     // daily_limits.max_tokens_total (absent if unset)
  kPercentCostUsed,    // 0-100+, absent without a cost limit
  kPercentTokensUsed,  // 0-100+, absent without a token limit
  kNumBreakerVars,
};
const expr::Schema& BreakerSchema();

}  // namespace qm

#endif  // QM_CORE_CONDITIONS_H_
