// Request validation: turns an AllocationRequest into a ParsedRequest or an
// INVALID_REQUEST naming the field. Reads engine state, never changes it.
#include <algorithm>
#include <cmath>

#include "core/engine_impl.h"
#include "core/text.h"

namespace qm {
namespace {

// A request field's name: `prefix` (e.g. "requests[2].") and `name`,
// joined only for an error message (the checks run for every request).
struct Field {
  const std::string& prefix;
  std::string_view name;
  std::string str() const { return prefix + std::string(name); }
};

Status CheckString(const Field& field, const std::string& value,
                   bool required) {
  if (required && value.empty()) {
    return InvalidRequest(field.str() + " must not be empty");
  }
  if (value.size() > kMaxStringBytes) {
    return InvalidRequest(field.str() + " is " + std::to_string(value.size()) +
                          " bytes; the limit is " +
                          std::to_string(kMaxStringBytes));
  }
  return Status::Ok();
}

// Names (product, agent type, workflow...) are printable text.
Status CheckName(const Field& field, const std::string& value, bool required) {
  QM_RETURN_IF_ERROR(CheckString(field, value, required));
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return InvalidRequest(field.str() +
                            " must not contain control characters");
    }
  }
  // Names are echoed in JSON output, which must be UTF-8.
  if (size_t bad = 0; !IsUtf8(value, &bad)) {
    return InvalidRequest(field.str() + " must be UTF-8 text (byte " +
                          std::to_string(bad) + " is not)");
  }
  return Status::Ok();
}

}  // namespace

Status EngineImpl::ParsePriority(const std::string& text,
                                 const std::string& product, Level* level,
                                 int* value, const std::string& field) const {
  static constexpr int kNamedValue[kNumLevels] = {20, 55, 80, 95};
  if (text.empty()) {
    *level = Level::kNormal;
    auto it = config_.products.find(product);
    if (it != config_.products.end() && it->second.priority) {
      *level = *it->second.priority;
    }
    *value = kNamedValue[static_cast<int>(*level)];
    return Status::Ok();
  }
  if (LevelFromName(text, level)) {
    *value = kNamedValue[static_cast<int>(*level)];
    return Status::Ok();
  }
  bool digits = text.size() <= 3;
  for (char c : text) digits &= (c >= '0' && c <= '9');
  if (digits) {
    int v = std::stoi(text);
    if (v <= 100) {
      *value = v;
      *level = v >= 90   ? Level::kCritical
               : v >= 70 ? Level::kHigh
               : v >= 40 ? Level::kNormal
                         : Level::kLow;
      return Status::Ok();
    }
  }
  return InvalidRequest(field +
                        " must be one of critical|high|normal|low (or "
                        "medium) or an integer 0-100, got \"" +
                        Truncate(text, 64) + "\"");
}

Status EngineImpl::ValidateAmount(const std::string& prefix,
                                  const std::string& name, double amount,
                                  uint32_t* resource, Milli* out) const {
  // The field's name is built only for an error (this runs per resource).
  auto field = [&] { return ResourceField(prefix, name); };
  auto it = resource_index_.find(name);
  if (it == resource_index_.end()) {
    std::vector<std::string> known;
    for (const ResourceSpec& r : resource_specs_) known.push_back(r.name);
    std::string msg =
        field() + ": unknown resource \"" + Truncate(name, 64) + "\"";
    std::string guess = ClosestMatch(name, known);
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    return InvalidRequest(msg).WithDetails("known resources: " +
                                           Join(known, ", "));
  }
  if (!std::isfinite(amount)) {
    return InvalidRequest(field() + " must be a finite number");
  }
  if (amount < 0) {
    return InvalidRequest(field() + " must not be negative, got " +
                          FormatNumber(amount));
  }
  if (amount > 1e12) {
    return InvalidRequest(field() + " is too large (" + FormatNumber(amount) +
                          ")");
  }
  const ResourceSpec& spec = resource_specs_[it->second];
  if (!spec.fractional && amount != std::floor(amount)) {
    return InvalidRequest(field() + " must be a whole number (" + name +
                          " is counted in whole units), got " +
                          FormatNumber(amount));
  }
  const Milli m = static_cast<Milli>(std::llround(amount * 1000));
  if (m == 0 && amount > 0) {
    return InvalidRequest(field() + " is below the smallest amount (0.001)");
  }
  *resource = it->second;
  *out = m;
  return Status::Ok();
}

std::string EngineImpl::ResourceField(const std::string& prefix,
                                      const std::string& name) {
  return prefix + "resources." + Truncate(name, 64);
}

StatusOr<ParsedRequest> EngineImpl::Validate(const AllocationRequest& r,
                                             const std::string& prefix) const {
  ParsedRequest p;
  QM_RETURN_IF_ERROR(CheckName({prefix, "workflow_id"}, r.workflow_id, true));
  QM_RETURN_IF_ERROR(CheckName({prefix, "requester"}, r.requester, false));
  QM_RETURN_IF_ERROR(CheckName({prefix, "product"}, r.product, false));
  QM_RETURN_IF_ERROR(CheckName({prefix, "agent_type"}, r.agent_type, false));
  QM_RETURN_IF_ERROR(CheckString({prefix, "metadata"}, r.metadata, false));
  QM_RETURN_IF_ERROR(
      CheckName({prefix, "idempotency_key"}, r.idempotency_key, false));
  QM_RETURN_IF_ERROR(CheckString({prefix, "priority"}, r.priority, false));
  p.workflow_id = r.workflow_id;
  p.requester = r.requester;
  p.product = r.product.empty() ? "default" : r.product;
  p.agent_type = r.agent_type.empty() ? "default" : r.agent_type;
  if (config_.scheduling.restrict_agent_types &&
      !config_.per_type_limits.count(p.agent_type)) {
    std::vector<std::string> known;
    for (const auto& [name, limit] : config_.per_type_limits) {
      known.push_back(name);
    }
    std::string msg = prefix + "agent_type: unknown agent type \"" +
                      Truncate(p.agent_type, 64) +
                      "\" (agent types are restricted to the configured ones)";
    std::string guess = ClosestMatch(p.agent_type, known);
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    return InvalidRequest(msg).WithDetails("known agent types: " +
                                           Join(known, ", "));
  }
  QM_RETURN_IF_ERROR(ParsePriority(r.priority, p.product, &p.level,
                                   &p.priority_value, prefix + "priority"));
  if (const std::optional<Level> forced = PriorityOverride(p.product)) {
    static constexpr int kNamedValue[kNumLevels] = {20, 55, 80, 95};
    p.level = *forced;
    p.priority_value = kNamedValue[static_cast<int>(*forced)];
  }
  QM_RETURN_IF_ERROR(CheckName({prefix, "model"}, r.model, false));
  p.model = r.model;
  p.wait_for_budget = r.wait_for_budget;

  if (r.resources.size() > kMaxResourcesPerRequest) {
    return InvalidRequest(
        prefix + "resources names " + std::to_string(r.resources.size()) +
        " resources; the limit is " + std::to_string(kMaxResourcesPerRequest));
  }
  std::vector<bool> seen(resource_specs_.size(), false);
  bool agents_given = false;
  for (const auto& [name, amount] : r.resources) {
    uint32_t idx = 0;
    Milli m = 0;
    QM_RETURN_IF_ERROR(ValidateAmount(prefix, name, amount, &idx, &m));
    if (seen[idx]) {
      return InvalidRequest(ResourceField(prefix, name) + " is given twice");
    }
    seen[idx] = true;
    if (idx == agents_resource_) {
      agents_given = true;
      p.agents = m;
    }
    if (m > 0) p.resources.emplace_back(idx, m);
  }
  if (!agents_given) p.resources.emplace_back(agents_resource_, p.agents);

  if (r.estimated_tokens && *r.estimated_tokens < 0) {
    return InvalidRequest(prefix + "estimated_tokens must not be negative");
  }
  p.estimated_tokens = r.estimated_tokens;
  if (r.estimated_minutes) {
    if (!std::isfinite(*r.estimated_minutes) || *r.estimated_minutes < 0 ||
        *r.estimated_minutes > 1e7) {
      return InvalidRequest(prefix +
                            "estimated_minutes must be a finite number of "
                            "minutes >= 0");
    }
  }
  p.estimated_minutes = r.estimated_minutes;
  p.total_tasks =
      r.total_tasks.value_or(config_.scheduling.default_total_tasks);
  if (p.total_tasks < 1) {
    return InvalidRequest(prefix + "total_tasks must be at least 1");
  }
  p.blocks = r.blocks.value_or(0);
  if (p.blocks < 0)
    return InvalidRequest(prefix + "blocks must not be negative");
  if (p.blocks > p.total_tasks) {
    return InvalidRequest(prefix + "blocks (" + std::to_string(p.blocks) +
                          ") must not exceed total_tasks (" +
                          std::to_string(p.total_tasks) + ")");
  }
  const Duration cap = config_.allocation_limits.max_duration;
  if (r.max_duration) {
    if (r.max_duration->count() <= 0) {
      return InvalidRequest(prefix + "max_duration must be positive");
    }
    if (*r.max_duration > cap) {
      return InvalidRequest(
          prefix + "max_duration " + FormatDuration(*r.max_duration) +
          " exceeds allocation_limits.max_duration " + FormatDuration(cap));
    }
  }
  p.max_duration = r.max_duration.value_or(cap);
  if (r.ttl && (r.ttl->count() <= 0 || *r.ttl > kMaxTtl)) {
    return InvalidRequest(prefix + "ttl must be positive and at most " +
                          FormatDuration(kMaxTtl));
  }
  p.ttl = r.ttl.value_or(config_.scheduling.default_ttl);
  p.preemptible = r.preemptible.value_or(p.level != Level::kCritical);
  p.requeue_on_preempt = r.requeue_on_preempt;
  p.metadata = r.metadata;
  p.idempotency_key = r.idempotency_key;
  QM_RETURN_IF_ERROR(ValidateConflictFields(r, prefix, &p));
  return p;
}

Status EngineImpl::ValidateConflictFields(const AllocationRequest& r,
                                          const std::string& prefix,
                                          ParsedRequest* p) const {
  const size_t n = r.exclusive_access.size() + r.shared_access.size();
  if (n > kMaxPathsPerRequest) {
    return InvalidRequest(prefix + "exclusive_access and shared_access name " +
                          std::to_string(n) + " paths; the limit is " +
                          std::to_string(kMaxPathsPerRequest));
  }
  if (n == 0) return ValidateAvoidance(r, prefix, p);
  p->locks.reserve(n);
  // The answers' list of the same locks ("." for the root).
  std::vector<PathLockInfo> shown;
  shown.reserve(n);
  // All the normalised paths go into one buffer: a normalised path is never
  // longer than the text it came from, and that text is never empty.
  size_t capacity = 0;
  for (const std::string& path : r.exclusive_access) capacity += path.size();
  for (const std::string& path : r.shared_access) capacity += path.size();
  auto text = std::make_unique_for_overwrite<char[]>(capacity);
  size_t used = 0;
  std::string scratch;
  // Exclusive first, so a path named in both lists stays exclusive.
  for (int exclusive = 1; exclusive >= 0; --exclusive) {
    const auto& list = exclusive ? r.exclusive_access : r.shared_access;
    const char* name = exclusive ? "exclusive_access" : "shared_access";
    for (size_t i = 0; i < list.size(); ++i) {
      // The field's name is built only for an error (this runs per path).
      auto field = [&] {
        return prefix + name + "[" + std::to_string(i) + "]";
      };
      // Paths are echoed in JSON output, which must be UTF-8 text.
      if (size_t bad = 0; !IsUtf8(list[i], &bad)) {
        return InvalidRequest(field() + " must be UTF-8 text (byte " +
                              std::to_string(bad) + " is not)");
      }
      auto norm =
          paths::NormalizeView(workspace_root_, list[i], "path", &scratch);
      if (!norm.ok()) {
        return paths::Normalize(workspace_root_, list[i], field()).status();
      }
      const paths::LockTable::Key key(*norm);
      bool dup = false;
      for (const LockSpec& l : p->locks) {
        dup |= l.hash == key.hash && l.path == *norm;
      }
      if (dup) continue;
      const std::string_view show = norm->empty() ? "." : *norm;
      if (show.size() > capacity - used) {
        return Internal(field() + ": normalised path longer than its text");
      }
      char* const at = text.get() + used;
      std::copy(show.begin(), show.end(), at);
      LockSpec& spec = p->locks.emplace_back();
      spec.path = std::string_view(at, norm->size());
      spec.set_key(key);
      spec.exclusive = exclusive == 1;
      shown.push_back({std::string_view(at, show.size()), exclusive == 1});
      used += show.size();
    }
  }
  p->lock_list = PathLockList::Adopt(std::move(text), std::move(shown));
  return ValidateAvoidance(r, prefix, p);
}

Status EngineImpl::ValidateAvoidance(const AllocationRequest& r,
                                     const std::string& prefix,
                                     ParsedRequest* p) const {
  if (r.conflict_avoidance.size() > kMaxAvoidedWorkflows) {
    return InvalidRequest(prefix + "conflict_avoidance names " +
                          std::to_string(r.conflict_avoidance.size()) +
                          " workflows; the limit is " +
                          std::to_string(kMaxAvoidedWorkflows));
  }
  for (size_t i = 0; i < r.conflict_avoidance.size(); ++i) {
    const std::string& w = r.conflict_avoidance[i];
    const std::string field =
        prefix + "conflict_avoidance[" + std::to_string(i) + "]";
    QM_RETURN_IF_ERROR(CheckName({field, ""}, w, true));
    if (w == r.workflow_id) {
      return InvalidRequest(field + " names the request's own workflow " +
                            Quote(w) + " (a workflow cannot wait for itself)");
    }
    if (std::find(p->avoid.begin(), p->avoid.end(), w) == p->avoid.end()) {
      p->avoid.push_back(w);
    }
  }
  QM_RETURN_IF_ERROR(
      CheckName({prefix, "reservation_id"}, r.reservation_id, false));
  p->reservation = r.reservation_id;
  return CheckReservationRef(*p, prefix);
}

Status EngineImpl::CheckCanEverFit(const ParsedRequest& p,
                                   const std::string& product,
                                   const std::string& agent_type) const {
  for (const auto& [idx, m] : p.resources) {
    const Counter& c = counters_[resource_counter_[idx]];
    if (m > c.limit) {
      return ResourceExhausted("resources." + resource_specs_[idx].name +
                               ": requested " + FormatMilli(m) +
                               ", but the capacity is " + FormatMilli(c.limit))
          .AddAffected(resource_specs_[idx].name);
    }
  }
  if (p.agents > 0) {
    const Milli tl = TypeLimit(agent_type);
    if (p.agents > tl) {
      return ResourceExhausted("agent type " + agent_type + " allows at most " +
                               FormatMilli(tl) +
                               " running at once; requested " +
                               FormatMilli(p.agents))
          .AddAffected("agents");
    }
    const Milli pl = ProductLimit(product);
    if (p.agents > pl) {
      return ResourceExhausted("product " + product + " allows at most " +
                               FormatMilli(pl) +
                               " agents at once (max_concurrent_agents); "
                               "requested " +
                               FormatMilli(p.agents))
          .AddAffected("agents");
    }
  }
  const AllocationLimits& al = config_.allocation_limits;
  for (const auto& [idx, m] : p.resources) {
    const std::string& name = resource_specs_[idx].name;
    std::optional<double> limit;
    const char* key = nullptr;
    if (idx == agents_resource_ && al.max_agents_per_workflow) {
      limit = static_cast<double>(*al.max_agents_per_workflow);
      key = "max_agents_per_workflow";
    } else if (name == "cpu_cores") {
      limit = al.max_cpu_per_workflow;
      key = "max_cpu_per_workflow";
    } else if (name == "memory_gb") {
      limit = al.max_memory_per_workflow;
      key = "max_memory_per_workflow";
    }
    if (limit && m > static_cast<Milli>(std::llround(*limit * 1000))) {
      return ResourceExhausted("resources." + name + ": requested " +
                               FormatMilli(m) + ", but " + key + " is " +
                               FormatNumber(*limit))
          .AddAffected(name);
    }
  }
  return Status::Ok();
}

}  // namespace qm
