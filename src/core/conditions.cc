#include "core/conditions.h"

namespace qm {

const expr::Schema& TaskSchema() {
  using expr::Type;
  static const expr::Schema* schema = new expr::Schema{
      {"task.priority", Type::kLevel},
      {"task.priority_value", Type::kNumber},
      {"task.estimated_minutes", Type::kNumber},
      {"task.estimated_tokens", Type::kNumber},
      {"task.product", Type::kString},
      {"task.agent_type", Type::kString},
      {"task.workflow_id", Type::kString},
      {"task.requester", Type::kString},
      {"task.preemptible", Type::kBool},
  };
  return *schema;
}

const expr::Schema& BreakerSchema() {
  using expr::Type;
  static const expr::Schema* schema = new expr::Schema{
      {"cost_daily_usd", Type::kNumber},
      {"tokens_daily", Type::kNumber},
      {"projected_cost_daily_usd", Type::kNumber},
      {"projected_tokens_daily", Type::kNumber},
      {"burn_rate_usd_per_hour", Type::kNumber},
      {"burn_rate_tokens_per_hour", Type::kNumber},
      {"daily_limits.max_cost_usd", Type::kNumber},
      {"daily_limits.max_tokens_total", Type::kNumber},
      {"percent_cost_used", Type::kNumber},
      {"percent_tokens_used", Type::kNumber},
  };
  return *schema;
}

}  // namespace qm
