#include "qm/types.h"

#include <algorithm>

namespace qm {

PathLockList::PathLockList(std::initializer_list<PathLockInfo> locks) {
  size_t bytes = 0;
  for (const PathLockInfo& l : locks) bytes += l.path.size();
  auto text = std::make_unique_for_overwrite<char[]>(bytes);
  std::vector<PathLockInfo> copies;
  copies.reserve(locks.size());
  char* at = text.get();
  for (const PathLockInfo& l : locks) {
    std::copy(l.path.begin(), l.path.end(), at);
    copies.push_back({std::string_view(at, l.path.size()), l.exclusive});
    at += l.path.size();
  }
  *this = Adopt(std::move(text), std::move(copies));
}

PathLockList PathLockList::Adopt(std::unique_ptr<char[]> text,
                                 std::vector<PathLockInfo> locks) {
  PathLockList list;
  if (!locks.empty()) {
    list.rep_ =
        std::make_shared<const Rep>(Rep{std::move(text), std::move(locks)});
  }
  return list;
}

bool PathLockList::operator==(const PathLockList& other) const {
  return std::equal(begin(), end(), other.begin(), other.end());
}

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
