#include "api/json_codec.h"

#include <cmath>
#include <cstdio>

#include "core/text.h"

namespace qm::api {
namespace {

const char* TypeName(const Json& j) {
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

Status WrongType(const std::string& field, const char* want, const Json& j) {
  return InvalidRequest(field + " must be " + want + ", got " + TypeName(j));
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
                          " must be a JSON object, got " + TypeName(j));
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
      if (v.is_string()) {
        r.priority = v.get<std::string>();
      } else if (v.is_number()) {
        int64_t p = 0;
        QM_RETURN_IF_ERROR(GetInt(v, f, &p));
        if (p < 0 || p > 100) {
          return InvalidRequest(f +
                                " must be an integer 0-100 or one of "
                                "critical|high|normal|low, got " +
                                std::to_string(p));
        }
        r.priority = std::to_string(p);
      } else {
        return WrongType(f, "a level name or an integer 0-100", v);
      }
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
        } else if (ck == "exclusive_access" || ck == "shared_access") {
          return NotBuilt(cf, "path locks");
        } else if (ck == "conflict_avoidance") {
          return NotBuilt(cf, "workflow exclusions");
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
    } else if (key == "exclusive_access" || key == "shared_access" ||
               key == "exclusive_files") {
      return NotBuilt(f, "path locks");
    } else if (key == "conflict_avoidance") {
      return NotBuilt(f, "workflow exclusions");
    } else if (key == "reservation_id") {
      return NotBuilt(f, "future reservations");
    } else if (key == "auto_release" || key == "performance_requirements") {
      return NotBuilt(f, "per-request " + key + " settings");
    } else {
      return UnknownField(prefix, key, RequestFields());
    }
  }
  return r;
}

StatusOr<UsageReport> UsageFromJson(const Json& j) {
  UsageReport u;
  if (j.is_null()) return u;
  if (!j.is_object()) return WrongType("usage", "an object", j);
  for (const auto& [key, v] : j.items()) {
    const std::string f = "usage." + key;
    if (key == "tokens") {
      int64_t t = 0;
      QM_RETURN_IF_ERROR(GetInt(v, f, &t));
      u.tokens = t;
    } else if (key == "cost_usd") {
      double c = 0;
      QM_RETURN_IF_ERROR(GetNumber(v, f, &c));
      u.cost_usd = c;
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
      return UnknownField("usage.", key, {"tokens", "cost_usd", "outcome"});
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
  if (a.usage) {
    Json u;
    if (a.usage->tokens) u["tokens"] = *a.usage->tokens;
    if (a.usage->cost_usd) u["cost_usd"] = *a.usage->cost_usd;
    u["outcome"] = a.usage->outcome == Outcome::kSuccess   ? "success"
                   : a.usage->outcome == Outcome::kFailure ? "failure"
                                                           : "cancelled";
    j["usage"] = u;
  }
  if (!a.metadata.empty()) {
    j["metadata"] = Json::parse(a.metadata, nullptr, false);
  }
  if (!a.idempotency_key.empty()) j["idempotency_key"] = a.idempotency_key;
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
  return j;
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

Json ToJson(const Event& e) {
  Json j;
  j["seq"] = e.seq;
  j["time"] = FormatTime(e.time);
  j["type"] = EventTypeName(e.type);
  j["allocation_id"] = e.allocation_id;
  j["status"] = AllocStatusName(e.status);
  if (e.fencing_token) j["fencing_token"] = e.fencing_token;
  if (e.score) j["score"] = Round6(*e.score);
  if (!e.reason.empty()) j["reason"] = e.reason;
  j["product"] = e.product;
  j["agent_type"] = e.agent_type;
  j["priority"] = LevelName(e.level);
  return j;
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
      recovery = {"Read the allocation's current state and act on it"};
      break;
    case Code::kBudgetExceeded:
      recovery = {"Wait for the budget period to reset",
                  "Raise the budget in the configuration"};
      break;
    case Code::kCircuitOpen:
      recovery = {"Investigate the spend, then resume with an override"};
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
    case Code::kInternal:
    case Code::kOk:
      recovery = {"Report a bug with the command and its output"};
      break;
  }
  Json j;
  j["status"] = "error";
  j["operation"] = operation;
  j["timestamp"] = FormatTime(timestamp);
  j["error"] = {{"code", CodeName(status.code())},
                {"message", status.message()},
                {"details", status.details()},
                {"affected_resources", status.affected_resources()}};
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
