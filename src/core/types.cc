#include "qm/types.h"

namespace qm {

const char* AllocStatusName(AllocStatus s) {
  switch (s) {
    case AllocStatus::kActive:
      return "active";
    case AllocStatus::kQueued:
      return "queued";
    case AllocStatus::kReserved:
      return "reserved";
    case AllocStatus::kReleased:
      return "released";
    case AllocStatus::kExpired:
      return "expired";
    case AllocStatus::kPreempted:
      return "preempted";
    case AllocStatus::kFailed:
      return "failed";
    case AllocStatus::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

const char* EventTypeName(EventType t) {
  switch (t) {
    case EventType::kQueued:
      return "queued";
    case EventType::kGranted:
      return "granted";
    case EventType::kReleased:
      return "released";
    case EventType::kFailed:
      return "failed";
    case EventType::kExpired:
      return "expired";
    case EventType::kLeaseExpiring:
      return "lease_expiring";
    case EventType::kRenewed:
      return "renewed";
    case EventType::kReallocated:
      return "reallocated";
    case EventType::kCancelled:
      return "cancelled";
    case EventType::kPreemptionNotice:
      return "preemption_notice";
    case EventType::kPreempted:
      return "preempted";
    case EventType::kRequeued:
      return "requeued";
    case EventType::kStarvation:
      return "starvation";
    case EventType::kUsageReported:
      return "usage_reported";
    case EventType::kOverBudget:
      return "over_budget";
    case EventType::kBudgetExtended:
      return "budget_extended";
    case EventType::kBudgetAlert:
      return "budget_alert";
    case EventType::kBudgetReset:
      return "budget_reset";
    case EventType::kCircuitTripped:
      return "circuit_tripped";
    case EventType::kCircuitClosed:
      return "circuit_closed";
    case EventType::kOverride:
      return "override";
    case EventType::kConflictDetected:
      return "conflict_detected";
    case EventType::kConflictResolved:
      return "conflict_resolved";
    case EventType::kReserved:
      return "reserved";
    case EventType::kReservationStarted:
      return "reservation_started";
    case EventType::kReservationReleased:
      return "reservation_released";
    case EventType::kReservationEnded:
      return "reservation_ended";
    case EventType::kReservationCancelled:
      return "reservation_cancelled";
    case EventType::kConfigReloaded:
      return "config_reloaded";
    case EventType::kAlert:
      return "alert";
    case EventType::kReclaimRequested:
      return "reclaim_requested";
  }
  return "unknown";
}

const char* HealthStatusName(HealthStatus s) {
  switch (s) {
    case HealthStatus::kHealthy:
      return "healthy";
    case HealthStatus::kWarning:
      return "warning";
    case HealthStatus::kCritical:
      return "critical";
  }
  return "healthy";
}

const char* ResolveStrategyName(ResolveStrategy s) {
  switch (s) {
    case ResolveStrategy::kPriorityBased:
      return "priority_based";
    case ResolveStrategy::kQueueAndSerialize:
      return "queue_and_serialize";
    case ResolveStrategy::kForceRelease:
      return "force_release";
  }
  return "queue_and_serialize";
}

bool ResolveStrategyFromName(const std::string& name, ResolveStrategy* out) {
  if (name == "priority_based") {
    *out = ResolveStrategy::kPriorityBased;
  } else if (name == "queue_and_serialize") {
    *out = ResolveStrategy::kQueueAndSerialize;
  } else if (name == "force_release") {
    *out = ResolveStrategy::kForceRelease;
  } else {
    return false;
  }
  return true;
}

}  // namespace qm
