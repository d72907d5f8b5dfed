#include "api/json_codec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/text.h"

namespace qm::api {

const char* JsonTypeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}
namespace {

Status WrongType(const std::string& field, const char* want, const Json& j) {
  return InvalidRequest(field + " must be " + want + ", got " +
                        JsonTypeName(j));
}

Status GetString(const Json& j, const std::string& field, std::string* out) {
  if (!j.is_string()) return WrongType(field, "a string", j);
  *out = j.get<std::string>();
  return Status::Ok();
}

Status GetInt(const Json& j, const std::string& field, int64_t* out) {
  if (j.is_number_integer() || j.is_number_unsigned()) {
    if (j.is_number_unsigned() &&
        j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidRequest(field + " is too large");
    }
    *out = j.get<int64_t>();
    return Status::Ok();
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      *out = static_cast<int64_t>(d);
      return Status::Ok();
    }
    return InvalidRequest(field + " must be a whole number, got " +
                          FormatNumber(d));
  }
  return WrongType(field, "a whole number", j);
}

Status GetNumber(const Json& j, const std::string& field, double* out) {
  if (!j.is_number()) return WrongType(field, "a number", j);
  *out = j.get<double>();
  return Status::Ok();
}

Status GetBool(const Json& j, const std::string& field, bool* out) {
  if (!j.is_boolean()) return WrongType(field, "true or false", j);
  *out = j.get<bool>();
  return Status::Ok();
}

// A JSON array of strings, appended to `out`; an item of another type is
// named with its index ("exclusive_access[2] must be a string").
Status GetStrings(const Json& j, const std::string& field,
                  std::vector<std::string>* out) {
  if (!j.is_array()) return WrongType(field, "an array of strings", j);
  for (size_t i = 0; i < j.size(); ++i) {
    std::string s;
    QM_RETURN_IF_ERROR(
        GetString(j[i], field + "[" + std::to_string(i) + "]", &s));
    out->push_back(std::move(s));
  }
  return Status::Ok();
}

// A priority as requests and reservations give it: a level name, or an
// integer 0-100 (kept as its decimal text).
Status GetPriority(const Json& v, const std::string& f, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return Status::Ok();
  }
  if (!v.is_number()) {
    return WrongType(f, "a level name or an integer 0-100", v);
  }
  int64_t p = 0;
  QM_RETURN_IF_ERROR(GetInt(v, f, &p));
  if (p < 0 || p > 100) {
    return InvalidRequest(f +
                          " must be an integer 0-100 or one of "
                          "critical|high|normal|low, got " +
                          std::to_string(p));
  }
  *out = std::to_string(p);
  return Status::Ok();
}

Status UnknownField(const std::string& prefix, const std::string& key,
                    const std::vector<std::string>& known) {
  std::string msg = prefix + Truncate(key, 64) + ": unknown field";
  const std::string guess = ClosestMatch(key, known);
  if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
  return InvalidRequest(msg).WithDetails("known fields: " + Join(known, ", "));
}

Status NotBuilt(const std::string& field, const std::string& what) {
  return Unimplemented(field + ": " + what +
                       " are not built yet; nothing was allocated");
}

const std::vector<std::string>& RequestFields() {
  static const std::vector<std::string> kFields = {
      "workflow_id",
      "requester",
      "product",
      "agent_type",
      "priority",
      "resources",
      "estimated_tokens",
      "estimated_minutes",
      "blocks",
      "total_tasks",
      "ttl",
      "max_duration",
      "duration",
      "constraints",
      "preemptible",
      "requeue_on_preempt",
      "metadata",
      "idempotency_key",
      "model",
      "wait_for_budget",
      "exclusive_access",
      "shared_access",
      "exclusive_files",
      "conflict_avoidance",
      "reservation_id",
      "auto_release",
      "performance_requirements",
  };
  return kFields;
}

}  // namespace

double Round6(double v) {
  if (!std::isfinite(v)) return v;
  return std::round(v * 1e6) / 1e6;
}

StatusOr<Duration> DurationFromJson(const Json& j, const std::string& field) {
  if (j.is_string()) {
    Duration d{};
    if (!ParseDuration(j.get<std::string>(), &d)) {
      return InvalidRequest(field +
                            " must be a duration such as \"30s\", "
                            "\"15m\", \"2h\" or \"1h30m\", got \"" +
                            Truncate(j.get<std::string>(), 64) + "\"");
    }
    return d;
  }
  if (j.is_number()) {
    const double s = j.get<double>();
    if (!std::isfinite(s) || s < 0 || s > 1e10) {
      return InvalidRequest(field + " must be a number of seconds >= 0");
    }
    return Duration(static_cast<int64_t>(std::llround(s * 1000)));
  }
  return WrongType(field, "a duration (\"30m\" or seconds)", j);
}

StatusOr<ResourceAmounts> AmountsFromJson(const Json& j,
                                          const std::string& field) {
  if (!j.is_object()) return WrongType(field, "an object of amounts", j);
  ResourceAmounts out;
  for (const auto& [name, v] : j.items()) {
    if (name == "tool_instances" && v.is_object()) {
      for (const auto& [tool, amount] : v.items()) {
        double d = 0;
        QM_RETURN_IF_ERROR(GetNumber(
            amount, field + ".tool_instances." + Truncate(tool, 64), &d));
        out.emplace_back("tool." + tool, d);
      }
      continue;
    }
    double d = 0;
    QM_RETURN_IF_ERROR(GetNumber(v, field + "." + Truncate(name, 64), &d));
    out.emplace_back(name, d);
  }
  return out;
}

StatusOr<AllocationRequest> RequestFromJson(const Json& j,
                                            const std::string& prefix) {
  if (!j.is_object()) {
    return InvalidRequest((prefix.empty()
                               ? std::string("request")
                               : prefix.substr(0, prefix.size() - 1)) +
                          " must be a JSON object, got " + JsonTypeName(j));
  }
  AllocationRequest r;
  for (const auto& [key, v] : j.items()) {
    const std::string f = prefix + key;
    if (key == "workflow_id") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.workflow_id));
    } else if (key == "requester") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.requester));
    } else if (key == "product") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.product));
    } else if (key == "agent_type") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.agent_type));
    } else if (key == "priority") {
      QM_RETURN_IF_ERROR(GetPriority(v, f, &r.priority));
    } else if (key == "resources") {
      auto amounts = AmountsFromJson(v, f);
      if (!amounts.ok()) return amounts.status();
      r.resources = std::move(*amounts);
    } else if (key == "estimated_tokens") {
      int64_t t = 0;
      QM_RETURN_IF_ERROR(GetInt(v, f, &t));
      r.estimated_tokens = t;
    } else if (key == "estimated_minutes") {
      double m = 0;
      QM_RETURN_IF_ERROR(GetNumber(v, f, &m));
      r.estimated_minutes = m;
    } else if (key == "blocks") {
      int64_t b = 0;
      QM_RETURN_IF_ERROR(GetInt(v, f, &b));
      r.blocks = b;
    } else if (key == "total_tasks") {
      int64_t t = 0;
      QM_RETURN_IF_ERROR(GetInt(v, f, &t));
      r.total_tasks = t;
    } else if (key == "ttl") {
      auto d = DurationFromJson(v, f);
      if (!d.ok()) return d.status();
      r.ttl = *d;
    } else if (key == "max_duration" || key == "duration") {
      auto d = DurationFromJson(v, f);
      if (!d.ok()) return d.status();
      r.max_duration = *d;
    } else if (key == "constraints") {
      if (!v.is_object()) return WrongType(f, "an object", v);
      for (const auto& [ck, cv] : v.items()) {
        const std::string cf = f + "." + ck;
        if (ck == "max_duration") {
          auto d = DurationFromJson(cv, cf);
          if (!d.ok()) return d.status();
          r.max_duration = *d;
        } else if (ck == "exclusive_access") {
          QM_RETURN_IF_ERROR(GetStrings(cv, cf, &r.exclusive_access));
        } else if (ck == "shared_access") {
          QM_RETURN_IF_ERROR(GetStrings(cv, cf, &r.shared_access));
        } else if (ck == "conflict_avoidance") {
          QM_RETURN_IF_ERROR(GetStrings(cv, cf, &r.conflict_avoidance));
        } else {
          return UnknownField(f + ".", ck,
                              {"max_duration", "exclusive_access",
                               "shared_access", "conflict_avoidance"});
        }
      }
    } else if (key == "preemptible") {
      bool b = false;
      QM_RETURN_IF_ERROR(GetBool(v, f, &b));
      r.preemptible = b;
    } else if (key == "requeue_on_preempt") {
      QM_RETURN_IF_ERROR(GetBool(v, f, &r.requeue_on_preempt));
    } else if (key == "metadata") {
      r.metadata = v.dump();
    } else if (key == "idempotency_key") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.idempotency_key));
    } else if (key == "model") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.model));
    } else if (key == "wait_for_budget") {
      QM_RETURN_IF_ERROR(GetBool(v, f, &r.wait_for_budget));
    } else if (key == "exclusive_access" || key == "exclusive_files") {
      QM_RETURN_IF_ERROR(GetStrings(v, f, &r.exclusive_access));
    } else if (key == "shared_access") {
      QM_RETURN_IF_ERROR(GetStrings(v, f, &r.shared_access));
    } else if (key == "conflict_avoidance") {
      QM_RETURN_IF_ERROR(GetStrings(v, f, &r.conflict_avoidance));
    } else if (key == "reservation_id") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.reservation_id));
    } else if (key == "auto_release" || key == "performance_requirements") {
      return NotBuilt(f, "per-request " + key + " settings");
    } else {
      return UnknownField(prefix, key, RequestFields());
    }
  }
  return r;
}

StatusOr<UsageReport> UsageFromJson(const Json& j) {
  static const std::vector<std::string> kFields = {
      "report_id",           "tokens",   "input_tokens", "output_tokens",
      "cached_input_tokens", "cost_usd", "model",        "outcome"};
  UsageReport u;
  if (j.is_null()) return u;
  if (!j.is_object()) return WrongType("usage", "an object", j);
  auto count = [](const Json& v, const std::string& f,
                  std::optional<int64_t>* out) -> Status {
    int64_t t = 0;
    QM_RETURN_IF_ERROR(GetInt(v, f, &t));
    if (t < 0) {
      return InvalidRequest(f + " must not be negative, got " +
                            std::to_string(t));
    }
    *out = t;
    return Status::Ok();
  };
  for (const auto& [key, v] : j.items()) {
    const std::string f = "usage." + key;
    if (key == "report_id") {
      QM_RETURN_IF_ERROR(GetString(v, f, &u.report_id));
    } else if (key == "tokens") {
      QM_RETURN_IF_ERROR(count(v, f, &u.tokens));
    } else if (key == "input_tokens") {
      QM_RETURN_IF_ERROR(count(v, f, &u.input_tokens));
    } else if (key == "output_tokens") {
      QM_RETURN_IF_ERROR(count(v, f, &u.output_tokens));
    } else if (key == "cached_input_tokens") {
      QM_RETURN_IF_ERROR(count(v, f, &u.cached_input_tokens));
    } else if (key == "cost_usd") {
      double c = 0;
      QM_RETURN_IF_ERROR(GetNumber(v, f, &c));
      if (!std::isfinite(c) || c < 0) {
        return InvalidRequest(f + " must be a number of dollars >= 0, got " +
                              FormatNumber(c));
      }
      u.cost_usd = c;
    } else if (key == "model") {
      QM_RETURN_IF_ERROR(GetString(v, f, &u.model));
    } else if (key == "outcome") {
      std::string o;
      QM_RETURN_IF_ERROR(GetString(v, f, &o));
      if (o == "success" || o == "completed") {
        u.outcome = Outcome::kSuccess;
      } else if (o == "failure" || o == "failed") {
        u.outcome = Outcome::kFailure;
      } else if (o == "cancelled") {
        u.outcome = Outcome::kCancelled;
      } else {
        return InvalidRequest(f +
                              " must be success, failure or cancelled, "
                              "got \"" +
                              Truncate(o, 64) + "\"");
      }
    } else {
      return UnknownField("usage.", key, kFields);
    }
  }
  return u;
}

namespace {
Json Amounts(const ResourceAmounts& r) {
  Json j = Json::object();
  for (const auto& [name, amount] : r) j[name] = amount;
  return j;
}
Json OptTime(const std::optional<Time>& t) {
  return t ? Json(FormatTime(*t)) : Json(nullptr);
}
}  // namespace

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kSuccess:
      return "success";
    case Outcome::kFailure:
      return "failure";
    case Outcome::kCancelled:
      return "cancelled";
  }
  return "success";
}

Json ToJson(const UsageReport& u) {
  Json j = Json::object();
  if (!u.report_id.empty()) j["report_id"] = u.report_id;
  if (u.tokens) j["tokens"] = *u.tokens;
  if (u.input_tokens) j["input_tokens"] = *u.input_tokens;
  if (u.output_tokens) j["output_tokens"] = *u.output_tokens;
  if (u.cached_input_tokens) {
    j["cached_input_tokens"] = *u.cached_input_tokens;
  }
  if (u.cost_usd) j["cost_usd"] = Round6(*u.cost_usd);
  if (!u.model.empty()) j["model"] = u.model;
  j["outcome"] = OutcomeName(u.outcome);
  return j;
}

Json ToJson(const BudgetInfo& b) {
  Json j;
  j["model"] = b.model.empty() ? Json(nullptr) : Json(b.model);
  if (!b.model_reason.empty()) j["model_reason"] = b.model_reason;
  if (!b.downgraded_from.empty()) j["downgraded_from"] = b.downgraded_from;
  if (b.max_tokens) j["max_tokens"] = *b.max_tokens;
  if (b.max_tokens_limit) j["max_tokens_limit"] = *b.max_tokens_limit;
  j["reserved_tokens"] = b.reserved_tokens;
  j["reserved_tokens_left"] = b.reserved_tokens_left;
  j["reserved_usd"] = Round6(b.reserved_usd);
  j["reserved_usd_left"] = Round6(b.reserved_usd_left);
  j["used_tokens"] = b.used_tokens;
  j["used_usd"] = Round6(b.used_usd);
  j["over_budget"] = b.over_budget;
  if (!b.accuracy.empty()) j["accuracy"] = b.accuracy;
  return j;
}

Json ToJson(const AllocationInfo& a) {
  Json j;
  j["allocation_id"] = a.id;
  j["status"] = AllocStatusName(a.status);
  j["workflow_id"] = a.workflow_id;
  j["requester"] = a.requester;
  j["product"] = a.product;
  j["agent_type"] = a.agent_type;
  j["priority"] = LevelName(a.level);
  j["priority_value"] = a.priority_value;
  j["preemptible"] = a.preemptible;
  j["resources"] = Amounts(a.resources);
  j["fencing_token"] = a.fencing_token;
  j["queued_at"] = FormatTime(a.queued_at);
  j["granted_at"] = OptTime(a.granted_at);
  j["expires_at"] = OptTime(a.expires_at);
  if (a.ended_at) j["ended_at"] = FormatTime(*a.ended_at);
  if (a.status == AllocStatus::kQueued) {
    j["reason_queued"] = a.reason_queued;
    j["expected_start"] = OptTime(a.expected_start);
    if (a.score) j["score"] = Round6(*a.score);
  }
  if (a.preempt_deadline)
    j["preempt_deadline"] = FormatTime(*a.preempt_deadline);
  if (a.estimated_tokens) j["estimated_tokens"] = *a.estimated_tokens;
  if (a.estimated_minutes) j["estimated_minutes"] = *a.estimated_minutes;
  if (a.usage) j["usage"] = ToJson(*a.usage);
  j["budget"] = ToJson(a.budget);
  if (!a.metadata.empty()) {
    j["metadata"] = Json::parse(a.metadata, nullptr, false);
  }
  if (!a.idempotency_key.empty()) j["idempotency_key"] = a.idempotency_key;
  // Conflict prevention: only when the allocation uses it, so that other
  // allocations keep their shape.
  if (!a.locks.empty()) {
    Json locks = Json::array();
    for (const PathLockInfo& l : a.locks) {
      locks.push_back(
          {{"path", l.path}, {"mode", l.exclusive ? "exclusive" : "shared"}});
    }
    j["locks"] = locks;
  }
  if (!a.conflict_avoidance.empty()) {
    j["conflict_avoidance"] = a.conflict_avoidance;
  }
  if (!a.reservation_id.empty()) j["reservation_id"] = a.reservation_id;
  if (!a.warnings.empty()) j["warnings"] = a.warnings;
  return j;
}

Json ToJson(const Snapshot& s) {
  Json j;
  j["time"] = FormatTime(s.time);
  Json res = Json::object();
  for (const ResourceUsage& r : s.resources) {
    res[r.name] = {{"total", r.capacity},
                   {"allocated", r.allocated},
                   {"reserved", r.reserved},
                   {"available", r.available},
                   {"utilization_percent", Round6(r.utilization_percent)}};
  }
  j["resources"] = res;
  auto groups = [](const std::vector<GroupUsage>& gs, bool product) {
    Json out = Json::object();
    for (const GroupUsage& g : gs) {
      Json e = {{"running_agents", g.running_agents},
                {"limit", g.limit ? Json(*g.limit) : Json(nullptr)},
                {"queued", g.queued}};
      if (g.limit && *g.limit > 0) {
        e["utilization_percent"] = Round6(100.0 * g.running_agents / *g.limit);
      }
      if (product) {
        e["share"] = Round6(g.share);
        e["decayed_agent_minutes"] = Round6(g.decayed_agent_minutes);
      }
      out[g.name] = e;
    }
    return out;
  };
  j["agent_types"] = groups(s.agent_types, false);
  j["products"] = groups(s.products, true);
  Json q;
  q["active"] = s.active;
  q["queued"] = s.queued;
  q["preempting"] = s.preempting;
  q["oldest_wait"] =
      s.oldest_wait ? Json(FormatDuration(*s.oldest_wait)) : Json(nullptr);
  Json by_level = Json::object();
  for (int l = kNumLevels - 1; l >= 0; --l) {
    by_level[LevelName(static_cast<Level>(l))] = s.queued_by_level[l];
  }
  q["queued_by_level"] = by_level;
  j["allocations"] = q;
  const Health& h = s.health;
  auto status = [](const std::optional<HealthStatus>& v) {
    return v ? Json(HealthStatusName(*v)) : Json(nullptr);
  };
  // Seed 000's dashboard system_health; null = not measured yet.
  j["health"] = {{"overall_status", HealthStatusName(h.overall)},
                 {"cpu_status", status(h.cpu)},
                 {"memory_status", status(h.memory)},
                 {"storage_status", status(h.storage)},
                 {"agent_pool_status", HealthStatusName(h.agent_pool)},
                 {"memory_pressure", h.memory_pressure}};
  if (s.system) {
    auto percent = [](const std::optional<double>& v) {
      return v ? Json(Round6(*v * 100)) : Json(nullptr);
    };
    j["system"] = {
        {"time",
         s.system_time ? Json(FormatTime(*s.system_time)) : Json(nullptr)},
        {"cpu_utilization_percent", percent(s.system->cpu_utilization)},
        {"memory_utilization_percent", percent(s.system->memory_utilization)},
        {"memory_pressure_percent", percent(s.system->memory_pressure)},
        {"storage_utilization_percent", percent(s.system->storage_utilization)},
        {"memory_total_gb", Round6(s.system->memory_total_gb)}};
  } else {
    j["system"] = nullptr;
  }
  Json alerts = Json::array();
  for (const Alert& a : s.alerts) alerts.push_back(ToJson(a));
  j["alerts"] = std::move(alerts);
  return j;
}

Json ToJson(const Alert& a) {
  return Json{{"type", a.type},
              {"resource", a.resource},
              {"severity", a.severity},
              {"message", a.message},
              {"recommended_action", a.recommended_action},
              {"value_percent", Round6(a.value * 100)},
              {"threshold_percent", Round6(a.threshold * 100)},
              {"since", FormatTime(a.since)},
              {"state", a.firing ? "firing" : "resolved"}};
}

Json ToJson(const QueueEntry& e) {
  return Json{{"allocation_id", e.id},
              {"priority", LevelName(e.level)},
              {"product", e.product},
              {"agent_type", e.agent_type},
              {"score", Round6(e.score)},
              {"factors",
               {{"priority", Round6(e.priority_factor)},
                {"wait", Round6(e.wait_factor)},
                {"blocking", Round6(e.blocking_factor)},
                {"fair_share", Round6(e.fair_share_factor)}}},
              {"waited", FormatDuration(e.waited)},
              {"reason_queued", e.reason_queued}};
}

bool IsReservationEvent(EventType t) {
  return t == EventType::kReserved || t == EventType::kReservationStarted ||
         t == EventType::kReservationEnded ||
         t == EventType::kReservationReleased ||
         t == EventType::kReservationCancelled;
}

Json ToJson(const Event& e) {
  Json j;
  j["seq"] = e.seq;
  j["time"] = FormatTime(e.time);
  j["type"] = EventTypeName(e.type);
  if (IsReservationEvent(e.type)) {
    // A reservation is no allocation: its id (carried in allocation_id) is
    // named as such, and allocation status and fencing do not apply.
    if (!e.allocation_id.empty()) j["reservation_id"] = e.allocation_id;
    if (!e.reason.empty()) j["reason"] = e.reason;
    if (!e.product.empty()) j["product"] = e.product;
    if (!e.agent_type.empty()) j["agent_type"] = e.agent_type;
    if (!e.workflow_id.empty()) j["workflow_id"] = e.workflow_id;
    j["priority"] = LevelName(e.level);
    if (!e.actor.empty()) j["actor"] = e.actor;
    return j;
  }
  if (e.allocation_id.empty()) {
    // An operator, period-budget or alert event: no allocation, status or
    // level; the product or agent type only when the event concerns one.
    if (!e.reason.empty()) j["reason"] = e.reason;
    if (e.alert) j["alert"] = ToJson(*e.alert);
    if (!e.product.empty()) j["product"] = e.product;
    if (!e.agent_type.empty()) j["agent_type"] = e.agent_type;
    if (!e.actor.empty()) j["actor"] = e.actor;
    return j;
  }
  j["allocation_id"] = e.allocation_id;
  j["status"] = AllocStatusName(e.status);
  if (e.fencing_token) j["fencing_token"] = e.fencing_token;
  if (e.score) j["score"] = Round6(*e.score);
  if (!e.reason.empty()) j["reason"] = e.reason;
  j["product"] = e.product;
  j["agent_type"] = e.agent_type;
  if (!e.workflow_id.empty()) j["workflow_id"] = e.workflow_id;
  j["priority"] = LevelName(e.level);
  if (!e.actor.empty()) j["actor"] = e.actor;
  return j;
}

namespace {

Json OptInt(const std::optional<int64_t>& v) {
  return v ? Json(*v) : Json(nullptr);
}
Json OptNumber(const std::optional<double>& v) {
  return v ? Json(Round6(*v)) : Json(nullptr);
}

Json SpendLines(const std::vector<SpendLine>& lines) {
  Json out = Json::array();
  for (const SpendLine& l : lines) {
    out.push_back({{"name", l.name},
                   {"tasks", l.tasks},
                   {"tokens", l.tokens},
                   {"cost_usd", Round6(l.cost_usd)},
                   {"token_share", Round6(l.token_share)}});
  }
  return out;
}

Json ToJson(const BudgetLine& b) {
  Json j;
  j["scope"] = b.scope;
  if (!b.name.empty()) j["name"] = b.name;
  j["limits"] = {{"tokens", OptInt(b.token_limit)},
                 {"cost", OptNumber(b.cost_limit_usd)}};
  j["tokens_used"] = b.tokens_used;
  j["tokens_reserved"] = b.tokens_reserved;
  j["cost_usd"] = Round6(b.cost_used_usd);
  j["cost_reserved_usd"] = Round6(b.cost_reserved_usd);
  j["percent_used"] = {{"tokens", OptNumber(b.percent_tokens)},
                       {"cost", OptNumber(b.percent_cost)}};
  return j;
}

}  // namespace

Json ToJson(const BreakerState& b) {
  Json j;
  j["open"] = b.open;
  j["action"] = b.action;
  if (!b.condition.empty()) j["condition"] = b.condition;
  j["tripped_at"] = OptTime(b.tripped_at);
  j["closes_at"] = OptTime(b.closes_at);
  j["allow_override"] = b.allow_override;
  j["overridden"] = b.overridden;
  if (b.overridden) {
    j["override_by"] = b.override_by;
    j["override_reason"] = b.override_reason;
  }
  return j;
}

Json ToJson(const LearnedEstimate& e) {
  Json j;
  j["agent_type"] = e.agent_type;
  j["samples"] = e.samples;
  j["token_ratio"] = Round6(e.token_ratio);
  j["minute_ratio"] = Round6(e.minute_ratio);
  if (e.last_estimated_tokens) {
    j["last_estimated_tokens"] = *e.last_estimated_tokens;
  }
  if (e.last_actual_tokens) j["last_actual_tokens"] = *e.last_actual_tokens;
  if (e.last_estimated_minutes) {
    j["last_estimated_minutes"] = Round6(*e.last_estimated_minutes);
  }
  if (e.last_actual_minutes) {
    j["last_actual_minutes"] = Round6(*e.last_actual_minutes);
  }
  if (!e.accuracy.empty()) j["accuracy"] = e.accuracy;
  return j;
}

Json ToJson(const CostReport& c) {
  Json j;
  j["date"] = FormatTime(c.period_start);
  j["time"] = FormatTime(c.time);
  j["period"] = BudgetPeriodName(c.period);
  j["time_zone"] = c.time_zone;
  j["period_start"] = FormatTime(c.period_start);
  j["period_end"] = FormatTime(c.period_end);
  j["tokens_used"] = c.tokens_used;
  j["cost_usd"] = Round6(c.cost_usd);
  j["limits"] = {{"tokens", OptInt(c.token_limit)},
                 {"cost", OptNumber(c.cost_limit_usd)}};
  j["percent_used"] = {{"tokens", OptNumber(c.percent_tokens)},
                       {"cost", OptNumber(c.percent_cost)}};
  j["reserved"] = {{"tokens", c.tokens_reserved},
                   {"cost_usd", Round6(c.cost_reserved_usd)}};
  j["burn_rate"] = {{"tokens_per_hour", Round6(c.burn_rate_tokens_per_hour)},
                    {"cost_usd_per_hour", Round6(c.burn_rate_usd_per_hour)}};
  j["projected_eod"] = {{"cost_usd", Round6(c.projected_cost_usd)},
                        {"tokens", c.projected_tokens}};
  Json alerts = Json::array();
  for (const BudgetAlert& a : c.alerts) {
    alerts.push_back({{"time", FormatTime(a.time)},
                      {"budget", a.budget},
                      {"threshold_percent", Round6(a.threshold_percent)},
                      {"message", a.message}});
  }
  j["alerts_triggered"] = alerts;
  j["models"] = SpendLines(c.models);
  j["by_product"] = SpendLines(c.products);
  j["by_agent_type"] = SpendLines(c.agent_types);
  Json budgets = Json::array();
  for (const BudgetLine& b : c.budgets) budgets.push_back(ToJson(b));
  j["budgets"] = budgets;
  j["circuit_breaker"] = ToJson(c.breaker);
  j["paused"] = c.paused;
  if (c.paused) {
    j["paused_by"] = c.paused_by;
    j["paused_reason"] = c.paused_reason;
  }
  Json overrides = Json::object();
  for (const auto& [product, level] : c.priority_overrides) {
    overrides[product] = LevelName(level);
  }
  j["priority_overrides"] = overrides;
  return j;
}

Json ToJson(const MetricsReport& m) {
  Json j;
  j["time"] = FormatTime(m.time);
  j["since"] = FormatTime(m.since);
  Json util = Json::object();
  for (const auto& u : m.agent_utilization) {
    util[u.agent_type] = Round6(u.utilization);
  }
  j["agent_utilization"] = util;
  j["cost_efficiency"] = {{"tasks_completed", m.tasks_completed},
                          {"cost_per_task", Round6(m.cost_per_task)},
                          {"tokens_per_task", Round6(m.tokens_per_task)},
                          {"tasks_per_dollar", Round6(m.tasks_per_dollar)}};
  j["queue_performance"] = {
      {"tasks_started", m.tasks_started},
      {"avg_wait_time_minutes", Round6(m.avg_wait_minutes)},
      {"max_wait_time_minutes", Round6(m.max_wait_minutes)},
      {"tasks_that_waited", Round6(m.tasks_that_waited)}};
  Json estimates = Json::array();
  for (const LearnedEstimate& e : m.estimates) estimates.push_back(ToJson(e));
  j["estimates"] = estimates;
  j["recommendations"] = m.recommendations;
  return j;
}

// ---- Conflicts and reservations ----

Json ToJson(const ConflictInfo& c) {
  // Seed 000's alert first; then what this conflict is about.
  Json j;
  j["type"] = c.type;
  j["severity"] = c.severity;
  j["message"] = c.message;
  j["recommended_action"] = c.recommended_action;
  if (!c.id.empty()) j["id"] = c.id;
  if (!c.subject.empty()) j["subject"] = c.subject;
  if (!c.holder.empty()) j["holder"] = c.holder;
  if (c.since) j["since"] = FormatTime(*c.since);
  if (c.expected_release) {
    j["expected_release"] = FormatTime(*c.expected_release);
  }
  if (c.starts_at) j["starts_at"] = FormatTime(*c.starts_at);
  if (!c.waiter.empty()) j["waiter"] = c.waiter;
  j["status"] = c.status;
  if (!c.resolution.empty()) j["resolution"] = c.resolution;
  if (c.detected_at != Time{}) j["detected_at"] = FormatTime(c.detected_at);
  if (c.resolved_at) j["resolved_at"] = FormatTime(*c.resolved_at);
  return j;
}

Json ToJson(const ConflictReport& r) {
  Json j;
  j["time"] = FormatTime(r.time);
  j["horizon"] = FormatDuration(r.horizon);
  j["outcome"] = r.outcome;
  j["reason"] = r.reason;
  j["conflicts_found"] = r.conflicts.size();
  Json conflicts = Json::array();
  for (const ConflictInfo& c : r.conflicts) conflicts.push_back(ToJson(c));
  j["conflicts"] = conflicts;
  return j;
}

Json ToJson(const LockVerdict& v) {
  Json j;
  j["path"] = v.path;
  j["token"] = v.token;
  j["valid"] = v.valid;
  j["holder"] = v.holder.empty() ? Json(nullptr) : Json(v.holder);
  j["mode"] = v.holder.empty() ? Json(nullptr)
                               : Json(v.exclusive ? "exclusive" : "shared");
  j["message"] = v.message;
  Json holders = Json::array();
  for (const auto& [id, token] : v.holders) {
    holders.push_back({{"allocation_id", id}, {"fencing_token", token}});
  }
  j["holders"] = holders;
  return j;
}

Json ToJson(const ReservationInfo& r) {
  Json j;
  j["reservation_id"] = r.id;
  j["status"] = r.status;
  j["workflow_id"] = r.workflow_id;
  j["product"] = r.product;
  j["agent_type"] = r.agent_type;
  j["requester"] = r.requester;
  j["priority"] = LevelName(r.level);
  j["priority_value"] = r.priority_value;
  j["resources"] = Amounts(r.resources);
  j["start_time"] = FormatTime(r.start_time);
  j["duration"] = FormatDuration(r.duration);
  j["recurrence"] = r.recurrence.empty() ? Json(nullptr) : Json(r.recurrence);
  if (r.until) j["until"] = FormatTime(*r.until);
  j["window_start"] = OptTime(r.window_start);
  j["window_end"] = OptTime(r.window_end);
  if (r.grace_ends_at) j["grace_ends_at"] = FormatTime(*r.grace_ends_at);
  j["grace_over"] = r.grace_over;
  j["claimed"] = Amounts(r.claimed);
  j["holders"] = r.holders;
  if (!r.warnings.empty()) j["warnings"] = r.warnings;
  if (!r.metadata.empty()) {
    j["metadata"] = Json::parse(r.metadata, nullptr, false);
  }
  return j;
}

namespace {

// A reservation time: RFC 3339 UTC text, or "+<duration>" from `now`.
Status GetReservationTime(const Json& v, const std::string& f, Time now,
                          Time* out) {
  if (!v.is_string()) {
    return WrongType(f, "a time such as \"2026-01-26T15:00:00Z\"", v);
  }
  const std::string text = v.get<std::string>();
  if (!text.empty() && text[0] == '+') {
    Duration d{};
    if (ParseDuration(text.substr(1), &d)) {
      *out = now + d;
      return Status::Ok();
    }
  } else if (ParseTime(text, out)) {
    return Status::Ok();
  }
  return InvalidRequest(f +
                        " must be an RFC 3339 UTC time such as "
                        "\"2026-01-26T15:00:00Z\" or an offset from now such "
                        "as \"+2h\", got \"" +
                        Truncate(text, 64) + "\"");
}

}  // namespace

StatusOr<ReservationRequest> ReservationFromJson(const Json& j, Time now) {
  static const std::vector<std::string> kFields = {
      "reservation_id", "workflow_id", "product",   "agent_type",
      "requester",      "priority",    "resources", "start_time",
      "duration",       "recurrence",  "until",     "metadata"};
  if (!j.is_object()) {
    return InvalidRequest(std::string("reservation must be a JSON object, "
                                      "got ") +
                          JsonTypeName(j));
  }
  ReservationRequest r;
  bool has_start = false, has_duration = false;
  for (const auto& [key, v] : j.items()) {
    const std::string& f = key;
    if (key == "reservation_id") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.reservation_id));
    } else if (key == "workflow_id") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.workflow_id));
    } else if (key == "product") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.product));
    } else if (key == "agent_type") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.agent_type));
    } else if (key == "requester") {
      QM_RETURN_IF_ERROR(GetString(v, f, &r.requester));
    } else if (key == "priority") {
      QM_RETURN_IF_ERROR(GetPriority(v, f, &r.priority));
    } else if (key == "resources") {
      auto amounts = AmountsFromJson(v, f);
      if (!amounts.ok()) return amounts.status();
      r.resources = std::move(*amounts);
    } else if (key == "start_time") {
      QM_RETURN_IF_ERROR(GetReservationTime(v, f, now, &r.start_time));
      has_start = true;
    } else if (key == "duration") {
      auto d = DurationFromJson(v, f);
      if (!d.ok()) return d.status();
      r.duration = *d;
      has_duration = true;
    } else if (key == "recurrence") {
      if (v.is_null()) {
        r.recurrence.clear();
        continue;
      }
      QM_RETURN_IF_ERROR(GetString(v, f, &r.recurrence));
      if (!r.recurrence.empty() && r.recurrence != "daily" &&
          r.recurrence != "weekly") {
        std::string msg = f + " must be daily or weekly (or null for once), " +
                          "got \"" + Truncate(r.recurrence, 64) + "\"";
        const std::string guess =
            ClosestMatch(r.recurrence, {"daily", "weekly"});
        if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
        return InvalidRequest(msg);
      }
    } else if (key == "until") {
      if (v.is_null()) {
        r.until.reset();
        continue;
      }
      Time t{};
      QM_RETURN_IF_ERROR(GetReservationTime(v, f, now, &t));
      r.until = t;
    } else if (key == "metadata") {
      r.metadata = v.dump();
    } else {
      return UnknownField("", key, kFields);
    }
  }
  if (!has_start) {
    return InvalidRequest(
        "start_time is required: when the window starts (RFC 3339, e.g. "
        "\"2026-01-26T15:00:00Z\")");
  }
  if (!has_duration) {
    return InvalidRequest(
        "duration is required: how long the window lasts (\"2h\" or "
        "seconds)");
  }
  if (r.until && r.recurrence.empty()) {
    return InvalidRequest(
        "until applies only to a recurring reservation; give recurrence "
        "daily or weekly, or leave until out");
  }
  return r;
}

StatusOr<LockPolicyChange> LockPolicyFromJson(const Json& j) {
  static const std::vector<std::string> kFields = {"policy_type", "scope",
                                                   "enforcement", "exceptions"};
  static const std::vector<std::string> kExceptions = {"read_only_operations"};
  if (!j.is_object()) {
    return InvalidRequest(std::string("policy must be a JSON object, got ") +
                          JsonTypeName(j));
  }
  LockPolicyChange change;
  LockPolicy policy;
  bool has_type = false, has_enforcement = false, inherit = false,
       has_exceptions = false;
  for (const auto& [key, v] : j.items()) {
    const std::string& f = key;
    if (key == "policy_type") {
      std::string type;
      QM_RETURN_IF_ERROR(GetString(v, f, &type));
      if (type != "file_locking") {
        return InvalidRequest(
            f + " must be file_locking (the one policy type), got \"" +
            Truncate(type, 64) + "\"");
      }
      has_type = true;
    } else if (key == "scope") {
      QM_RETURN_IF_ERROR(GetString(v, f, &change.scope));
      if (change.scope.empty()) {
        return InvalidRequest(f + " must be global or a product name");
      }
    } else if (key == "enforcement") {
      has_enforcement = true;
      if (v.is_null()) {
        inherit = true;
        continue;
      }
      std::string name;
      QM_RETURN_IF_ERROR(GetString(v, f, &name));
      if (name == "inherit") {
        inherit = true;
      } else if (!LockEnforcementFromName(name, &policy.enforcement)) {
        std::string msg = f + " must be strict, advisory or inherit, got \"" +
                          Truncate(name, 64) + "\"";
        const std::string guess =
            ClosestMatch(name, {"strict", "advisory", "inherit"});
        if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
        return InvalidRequest(msg);
      }
    } else if (key == "exceptions") {
      has_exceptions = true;
      if (v.is_null()) continue;
      std::vector<std::string> names;
      QM_RETURN_IF_ERROR(GetStrings(v, f, &names));
      for (size_t i = 0; i < names.size(); ++i) {
        const std::string& name = names[i];
        if (name != kExceptions[0]) {
          std::string msg = f + "[" + std::to_string(i) +
                            "]: unknown exception \"" + Truncate(name, 64) +
                            "\" (the one exception known is " + kExceptions[0] +
                            ")";
          const std::string guess = ClosestMatch(name, kExceptions);
          if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
          return InvalidRequest(msg);
        }
        if (std::find(policy.exceptions.begin(), policy.exceptions.end(),
                      name) == policy.exceptions.end()) {
          policy.exceptions.push_back(name);
        }
      }
    } else {
      return UnknownField("", key, kFields);
    }
  }
  if (!has_type) {
    return InvalidRequest("policy_type is required: file_locking");
  }
  if (!has_enforcement) {
    return InvalidRequest(
        "enforcement is required: strict (conflicting requests queue) or "
        "advisory (they are granted with a warning)" +
        std::string(change.scope == "global"
                        ? ""
                        : ", or inherit to remove the product's own policy"));
  }
  if (inherit) {
    if (change.scope == "global") {
      return InvalidRequest(
          "enforcement: the global policy cannot inherit; give strict or "
          "advisory");
    }
    if (has_exceptions && !policy.exceptions.empty()) {
      return InvalidRequest(
          "exceptions: a product that inherits the global policy takes its "
          "exceptions too; leave exceptions out");
    }
    return change;
  }
  change.policy = std::move(policy);
  return change;
}

Json SuccessEnvelope(std::string_view operation, Time timestamp, Json result,
                     Duration execution_time,
                     std::vector<std::string> recommendations) {
  Json j;
  j["status"] = "success";
  j["operation"] = operation;
  j["timestamp"] = FormatTime(timestamp);
  j["result"] = std::move(result);
  char t[32];
  std::snprintf(t, sizeof t, "%.3fs", execution_time.count() / 1000.0);
  j["metrics"] = {{"execution_time", t}};
  j["recommendations"] = recommendations;
  return j;
}

Json ErrorEnvelope(std::string_view operation, Time timestamp,
                   const Status& status) {
  std::vector<std::string> recovery, alternatives;
  switch (status.code()) {
    case Code::kInvalidRequest:
      recovery = {"Fix the named field and send the request again"};
      break;
    case Code::kNotFound:
      recovery = {
          "Check the id or path; finished allocations leave the "
          "history after scheduling.history_limit newer ones"};
      break;
    case Code::kResourceExhausted:
      recovery = {"Reduce resource request size",
                  "Raise the limit in the configuration"};
      alternatives = {"Split the work into smaller allocations"};
      break;
    case Code::kConflict:
      recovery = {"Read the current state the message names and act on it"};
      break;
    case Code::kBudgetExceeded:
      recovery = {"Wait for the budget period to reset",
                  "Raise the budget in the configuration"};
      alternatives = {"Queue until the period resets (wait_for_budget: true)"};
      break;
    case Code::kCircuitOpen:
      recovery = {"Investigate the spend, then resume with an override",
                  "Wait for the breaker to close at the period reset"};
      break;
    case Code::kPermissionDenied:
      recovery = {"Use a token whose role allows this operation"};
      break;
    case Code::kUnavailable:
      recovery = {"Wait for current allocations to release", "Retry later"};
      alternatives = {"Queue the request (allocate without all_or_nothing)"};
      break;
    case Code::kUnimplemented:
      recovery = {
          "Leave the unsupported field out; see the issue tracker "
          "for when it lands"};
      break;
    case Code::kDataLoss:
      recovery = {"Run `qm state check` and restore from the latest export",
                  "See docs/durability.md"};
      break;
    case Code::kUnauthenticated:
      recovery = {
          "Send `Authorization: Bearer <token>` with a token the "
          "server's config lists (auth.tokens)"};
      break;
    case Code::kRateLimited:
      recovery = {"Slow down: retry after the time the error names"};
      break;
    case Code::kDeadlineExceeded:
      recovery = {"Retry with a longer timeout",
                  "Check that the server is running and not overloaded"};
      break;
    case Code::kInternal:
    case Code::kOk:
      recovery = {"Report a bug with the command and its output"};
      break;
  }
  // The engine's own alternatives (a cheaper model that fits, the queue...)
  // replace the generic ones.
  if (!status.alternatives().empty()) alternatives = status.alternatives();
  Json j;
  j["status"] = "error";
  j["operation"] = operation;
  j["timestamp"] = FormatTime(timestamp);
  j["error"] = {{"code", CodeName(status.code())},
                {"message", status.message()},
                {"details", status.details()},
                {"affected_resources", status.affected_resources()}};
  if (!status.context().empty()) {
    Json context = Json::object();
    for (const auto& [key, value] : status.context()) context[key] = value;
    j["error"]["context"] = context;
  }
  j["recovery_suggestions"] = recovery;
  j["alternative_options"] = alternatives;
  return j;
}

namespace {
void Flatten(const Json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>* rows) {
  if (j.is_object()) {
    if (j.empty()) rows->emplace_back(prefix, "{}");
    for (const auto& [k, v] : j.items()) {
      Flatten(v, prefix.empty() ? k : prefix + "." + k, rows);
    }
  } else if (j.is_array()) {
    bool scalars = true;
    for (const auto& v : j) scalars &= !v.is_structured();
    if (scalars) {
      std::string s;
      for (const auto& v : j) {
        if (!s.empty()) s += ", ";
        s += v.is_string() ? v.get<std::string>() : v.dump();
      }
      rows->emplace_back(prefix, s);
    } else {
      for (size_t i = 0; i < j.size(); ++i) {
        Flatten(j[i], prefix + "[" + std::to_string(i) + "]", rows);
      }
    }
  } else {
    rows->emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
  }
}
}  // namespace

namespace {

// A percentage for people: one decimal at most ("80", "63.8").
std::string Percent(double p) {
  return FormatNumber(std::round(p * 10) / 10) + "%";
}

// The period's start as seed 001 writes it: the date when the period starts
// at midnight UTC, else the instant and the zone.
std::string PeriodLabel(const CostReport& c) {
  const std::string start = FormatTime(c.period_start);
  const bool midnight_utc =
      start.size() == 20 && start.substr(10) == "T00:00:00Z";
  const std::string when =
      midnight_utc
          ? start.substr(0, 10)
          : "since " + start +
                (c.time_zone.empty() ? std::string() : ", " + c.time_zone);
  switch (c.period) {
    case BudgetPeriod::kDaily:
      return "Today (" + when + ")";
    case BudgetPeriod::kWeekly:
      return "This week (" + when + ")";
    case BudgetPeriod::kMonthly:
      return "This month (" + when + ")";
  }
  return when;
}

// " ⚠️" once `percent` is at or above a threshold that fired an alert this
// period (every budget shares daily_limits.alert_at_percent, so such a
// figure crossed it too), " 🛑" at or past the limit.
std::string Mark(const CostReport& c, std::optional<double> percent) {
  if (!percent) return "";
  if (*percent >= 100) return " \xF0\x9F\x9B\x91";
  for (const BudgetAlert& a : c.alerts) {
    if (a.threshold_percent <= *percent) return " \xE2\x9A\xA0\xEF\xB8\x8F";
  }
  return "";
}

}  // namespace

std::string RenderCostDashboard(const CostReport& c, const MetricsReport& m,
                                const Snapshot* snapshot) {
  std::string out = "## Resource Usage\n\n**" + PeriodLabel(c) + "**\n";
  auto line = [&out](const std::string& text) { out += "- " + text + "\n"; };

  out += "\n### Agents\n";
  if (snapshot) {
    for (const ResourceUsage& r : snapshot->resources) {
      if (r.name != "agents") continue;
      line("Active: " + FormatNumber(r.allocated) + "/" +
           FormatNumber(r.capacity) + " (" + Percent(r.utilization_percent) +
           " utilization)");
    }
    line("Queue: " + FormatGrouped(snapshot->queued) +
         (snapshot->queued == 1 ? " task" : " tasks") + " waiting");
  }
  line("Avg wait time: " + FormatNumber(std::round(m.avg_wait_minutes)) +
       " minutes");
  if (!m.agent_utilization.empty()) {
    std::vector<std::string> parts;
    for (const auto& u : m.agent_utilization) {
      parts.push_back(u.agent_type + " " + Percent(100 * u.utilization));
    }
    line("Utilization: " + Join(parts, ", "));
  }

  out += "\n### Costs\n";
  std::string tokens = "Tokens used: " + FormatGrouped(c.tokens_used);
  if (c.token_limit) {
    tokens += " / " + FormatGrouped(*c.token_limit);
    if (c.percent_tokens) tokens += " (" + Percent(*c.percent_tokens) + ")";
  }
  line(tokens + Mark(c, c.percent_tokens));
  std::string cost = "Cost: " + FormatUsd(c.cost_usd);
  if (c.cost_limit_usd) {
    cost += " / " + FormatUsd(*c.cost_limit_usd);
    if (c.percent_cost) cost += " (" + Percent(*c.percent_cost) + ")";
  }
  line(cost + Mark(c, c.percent_cost));
  if (c.tokens_reserved > 0 || c.cost_reserved_usd > 0) {
    line("Reserved by running work: " + FormatGrouped(c.tokens_reserved) +
         " tokens, " + FormatUsd(c.cost_reserved_usd));
  }
  line(std::string(c.period == BudgetPeriod::kDaily ? "Projected EOD: "
                                                    : "Projected end of "
                                                      "period: ") +
       FormatUsd(c.projected_cost_usd) + " (" +
       FormatGrouped(c.projected_tokens) + " tokens)");
  if (c.breaker.open) {
    std::string b = "Circuit breaker: OPEN";
    if (c.breaker.tripped_at)
      b += " since " + FormatTime(*c.breaker.tripped_at);
    if (!c.breaker.condition.empty()) b += " (" + c.breaker.condition + ")";
    if (c.breaker.overridden) {
      b += "; overridden by " + c.breaker.override_by;
      if (!c.breaker.override_reason.empty()) {
        b += ": " + c.breaker.override_reason;
      }
    } else if (c.breaker.closes_at) {
      b += "; closes " + FormatTime(*c.breaker.closes_at);
    }
    line(b);
  }
  if (c.paused) {
    line("Paused by " + (c.paused_by.empty() ? "an operator" : c.paused_by) +
         (c.paused_reason.empty() ? "" : ": " + c.paused_reason));
  }
  for (const auto& [product, level] : c.priority_overrides) {
    line("Priority override: " + product + " -> " + LevelName(level));
  }

  if (!c.alerts.empty()) {
    out += "\n### Alerts\n";
    for (const BudgetAlert& a : c.alerts) {
      line(FormatTime(a.time) + " " + a.message);
    }
  }
  if (!c.models.empty()) {
    out += "\n### Models\n";
    for (const SpendLine& l : c.models) {
      line(l.name + ": " + FormatGrouped(l.tasks) +
           (l.tasks == 1 ? " task, " : " tasks, ") + FormatUsd(l.cost_usd));
    }
  }
  auto shares = [&](const char* title, const std::vector<SpendLine>& lines) {
    if (lines.empty()) return;
    out += std::string("\n### ") + title + "\n";
    for (const SpendLine& l : lines) {
      line(l.name + ": " + Percent(100 * l.token_share) + " of tokens, " +
           FormatUsd(l.cost_usd));
    }
  };
  shares("By Product", c.products);
  shares("By Agent Type", c.agent_types);

  out += "\n### Efficiency\n";
  line("Tasks completed: " + FormatGrouped(m.tasks_completed));
  line("Cost per task: " + FormatUsd(m.cost_per_task));
  line("Tokens per task: " +
       FormatGrouped(static_cast<int64_t>(std::llround(m.tokens_per_task))));
  line("Tasks per dollar: " +
       FormatNumber(Round6(std::round(m.tasks_per_dollar * 100) / 100)));
  if (!m.recommendations.empty()) {
    out += "\n### Recommendations\n";
    for (const std::string& r : m.recommendations) line(r);
  }
  return out;
}

std::string RenderTable(const Json& envelope) {
  std::vector<std::pair<std::string, std::string>> rows;
  Flatten(envelope, "", &rows);
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  std::string out;
  for (const auto& [k, v] : rows) {
    out += k;
    out.append(width - k.size() + 2, ' ');
    out += v;
    out += '\n';
  }
  return out;
}

}  // namespace qm::api
