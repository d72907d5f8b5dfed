#include "qm/config.h"

namespace qm {

const char* LevelName(Level level) {
  switch (level) {
    case Level::kLow:
      return "low";
    case Level::kNormal:
      return "normal";
    case Level::kHigh:
      return "high";
    case Level::kCritical:
      return "critical";
  }
  return "normal";
}

bool LevelFromName(const std::string& name, Level* level) {
  if (name == "low") {
    *level = Level::kLow;
  } else if (name == "normal" || name == "medium") {
    *level = Level::kNormal;
  } else if (name == "high") {
    *level = Level::kHigh;
  } else if (name == "critical") {
    *level = Level::kCritical;
  } else {
    return false;
  }
  return true;
}

const char* BudgetPeriodName(BudgetPeriod p) {
  switch (p) {
    case BudgetPeriod::kDaily:
      return "daily";
    case BudgetPeriod::kWeekly:
      return "weekly";
    case BudgetPeriod::kMonthly:
      return "monthly";
  }
  return "daily";
}

const char* LockEnforcementName(LockEnforcement e) {
  return e == LockEnforcement::kAdvisory ? "advisory" : "strict";
}

bool LockEnforcementFromName(const std::string& name, LockEnforcement* out) {
  if (name == "strict") {
    *out = LockEnforcement::kStrict;
  } else if (name == "advisory") {
    *out = LockEnforcement::kAdvisory;
  } else {
    return false;
  }
  return true;
}

const char* ConflictStrategyName(ConflictStrategy s) {
  return s == ConflictStrategy::kPriorityBased ? "priority_based"
                                               : "queue_and_serialize";
}

bool ConflictStrategyFromName(const std::string& name, ConflictStrategy* out) {
  if (name == "queue_and_serialize") {
    *out = ConflictStrategy::kQueueAndSerialize;
  } else if (name == "priority_based") {
    *out = ConflictStrategy::kPriorityBased;
  } else {
    return false;
  }
  return true;
}

Config Config::Defaults() {
  Config c;
  c.resources = {
      {"agents", 5, false},        {"workflows", 5, false},
      {"cpu_cores", 8, true},      {"memory_gb", 16, true},
      {"storage_gb", 500, true},   {"tool.bash", 12, false},
      {"tool.file_ops", 8, false}, {"tool.search", 4, false},
      {"tool.web", 2, false},
  };
  c.levels[static_cast<int>(Level::kCritical)] = {1.0, 0, true};
  c.levels[static_cast<int>(Level::kHigh)] = {0.75, 15, false};
  c.levels[static_cast<int>(Level::kNormal)] = {0.5, 60, false};
  c.levels[static_cast<int>(Level::kLow)] = {0.25, 240, false};
  return c;
}

const ResourceSpec* Config::FindResource(const std::string& name) const {
  for (const ResourceSpec& r : resources) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

}  // namespace qm
