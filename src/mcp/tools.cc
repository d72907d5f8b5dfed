#include "mcp/tools.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <utility>

#include "mcp/json_schema.h"
#include "qm/clock.h"

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------- helpers

// Parses a schema written in this file (a bug shows as a discarded value,
// which the tool tests catch).
Json Parse(const char* text) {
  Json j = Json::parse(text, nullptr, false);
  assert(!j.is_discarded());
  return j;
}

std::string Dump(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

std::string Str(const Json& obj, const char* key,
                const std::string& fallback = "") {
  if (obj.is_object() && obj.contains(key) && obj[key].is_string()) {
    return obj[key].get<std::string>();
  }
  return fallback;
}

double Number(const Json& obj, const char* key, double fallback = 0) {
  if (obj.is_object() && obj.contains(key) && obj[key].is_number()) {
    return obj[key].get<double>();
  }
  return fallback;
}

// 4 -> "4", 2.5 -> "2.5", 0.333333 -> "0.33".
std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

std::string Money(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "$%.4f", v);
  std::string s = buf;
  // $0.1200 -> $0.12, but keep two decimals.
  while (s.size() > 4 && s.back() == '0' && s[s.size() - 3] != '.') {
    s.pop_back();
  }
  return s;
}

// Integral floats (3.0) where the schema says integer become integers, so
// the server's integer fields accept them.
void NormalizeIntegers(const Json& schema, Json* value) {
  if (!schema.is_object()) return;
  if (schema.contains("type") && schema["type"] == "integer" &&
      value->is_number_float()) {
    const double d = value->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      *value = static_cast<int64_t>(d);
    }
    return;
  }
  if (value->is_object()) {
    for (auto& [key, v] : value->items()) {
      if (schema.contains("properties") && schema["properties"].contains(key)) {
        NormalizeIntegers(schema["properties"][key], &v);
      } else if (schema.contains("additionalProperties")) {
        NormalizeIntegers(schema["additionalProperties"], &v);
      }
    }
  } else if (value->is_array() && schema.contains("items")) {
    for (Json& v : *value) NormalizeIntegers(schema["items"], &v);
  }
  if (schema.contains("oneOf")) {
    for (const Json& alt : schema["oneOf"]) {
      if (ValidateJson(alt, *value, "").ok()) NormalizeIntegers(alt, value);
    }
  }
}

// "mcp-" and 16 random hex digits.
std::string NewIdempotencyKey() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t v;
  {
    std::lock_guard<std::mutex> lock(mu);
    v = rng();
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "mcp-%016llx",
                static_cast<unsigned long long>(v));
  return buf;
}

ToolResult Ok(Json structured, std::string summary, bool with_json = true) {
  ToolResult r;
  r.text.push_back(std::move(summary));
  if (with_json) r.text.push_back(Dump(structured));
  r.structured = std::move(structured);
  return r;
}

ToolResult Invalid(const std::string& message) {
  return ErrorResult(MakeError(Code::kInvalidRequest, message));
}

// ---------------------------------------------------------------- schemas

const char* kPrioritySchema = R"({
  "description": "critical, high, normal or low, or 0-100 (higher goes first). Default normal.",
  "oneOf": [
    {"type": "string", "enum": ["critical", "high", "normal", "low"]},
    {"type": "integer", "minimum": 0, "maximum": 100}
  ]
})";

const char* kResourcesSchema = R"({
  "type": "object",
  "description": "{resource: amount} beyond the agent slot, e.g. {\"cpu_cores\": 2, \"memory_gb\": 4, \"tool.bash\": 1}. The names are the server's (see the qm://config resource).",
  "additionalProperties": {"type": "number", "minimum": 0}
})";

const char* kRequirementsSchema = R"({
  "type": "object",
  "description": "What the work needs, as the qm server's allocation request has it.",
  "additionalProperties": false,
  "required": ["workflow_id", "agent_type"],
  "properties": {
    "workflow_id": {"type": "string", "minLength": 1, "description": "The workflow (task group) the work belongs to: limits, conflict avoidance and reservations go by it."},
    "agent_type": {"type": "string", "minLength": 1, "description": "The kind of agent (coder, reviewer, architect, ...): per-type limits and token budgets."},
    "product": {"type": "string", "description": "The product it counts against (limits, budgets, fair share)."},
    "requester": {"type": "string", "description": "Who asks (shown in lists and events)."},
    "model": {"type": "string", "description": "The model it will run on (priced by the server's config); the server may choose one when absent."},
    "resources": null,
    "estimated_tokens": {"type": "integer", "minimum": 0, "description": "Expected tokens, reserved against the token and dollar budgets."},
    "estimated_minutes": {"type": "number", "minimum": 0, "description": "Expected run time (scheduling, reservations)."},
    "ttl_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "Lease length: without a renewal (resource_renew) the allocation expires this long after its grant or last renewal. Default: the server's."},
    "max_duration_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "Renewals never extend the lease past this long after the grant."},
    "exclusive_access": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Paths or globs the work will write: exclusive locks, taken with the grant."},
    "shared_access": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Paths it will only read: shared locks."},
    "conflict_avoidance": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Workflows that must not be running while this runs."},
    "preemptible": {"type": "boolean", "description": "Whether higher-priority work may preempt it (with notice)."},
    "requeue_on_preempt": {"type": "boolean", "description": "Queue it again when preempted."},
    "blocks": {"type": "integer", "minimum": 0, "description": "How many tasks wait for this one (raises its place in the queue)."},
    "total_tasks": {"type": "integer", "minimum": 0, "description": "Tasks in its workflow (scoring)."},
    "wait_for_budget": {"type": "boolean", "description": "Queue until the budget period resets instead of failing with BUDGET_EXCEEDED."},
    "reservation_id": {"type": "string", "minLength": 1, "description": "Draw from this reservation (resource_reserve) once its window is open."},
    "idempotency_key": {"type": "string", "minLength": 1, "description": "A retry with the same key and the same requirements answers the same allocation (and waits for it again). resource_allocate makes one when absent and returns it."},
    "metadata": {"description": "Any JSON, kept with the allocation."}
  }
})";

const char* kErrorSchema = R"({
  "type": "object",
  "description": "Why the operation failed: the code and message of the qm server's error envelope (INVALID_REQUEST, NOT_FOUND, CONFLICT, RESOURCE_EXHAUSTED, BUDGET_EXCEEDED, PERMISSION_DENIED, UNAVAILABLE, UNIMPLEMENTED, ...).",
  "required": ["code", "message"],
  "properties": {
    "code": {"type": "string"},
    "message": {"type": "string"},
    "details": {"type": "string"},
    "context": {"type": "object"},
    "recovery_suggestions": {"type": "array", "items": {"type": "string"}},
    "alternative_options": {"type": "array", "items": {"type": "string"}}
  }
})";

const char* kAllocationProperties = R"({
  "allocation_id": {"type": "string"},
  "status": {"type": "string", "description": "active (granted), queued, released, expired, preempted, failed or cancelled."},
  "workflow_id": {"type": "string"},
  "requester": {"type": "string"},
  "product": {"type": "string"},
  "agent_type": {"type": "string"},
  "priority": {"type": "string"},
  "priority_value": {"type": "integer"},
  "preemptible": {"type": "boolean"},
  "resources": {"type": "object", "additionalProperties": {"type": "number"}},
  "fencing_token": {"type": "integer", "description": "Grows with every grant; pass it to writes that check locks. 0 while never granted."},
  "queued_at": {"type": "string"},
  "granted_at": {"type": ["string", "null"]},
  "expires_at": {"type": ["string", "null"], "description": "When the lease ends without a renewal."},
  "ended_at": {"type": "string"},
  "reason_queued": {"type": "string"},
  "expected_start": {"type": ["string", "null"]},
  "queue_position": {"type": "integer"},
  "queue_length": {"type": "integer"},
  "estimated_tokens": {"type": "integer"},
  "estimated_minutes": {"type": "number"},
  "budget": {"type": "object"},
  "usage": {"type": "object"},
  "locks": {"type": "array", "items": {"type": "object"}},
  "idempotency_key": {"type": "string"},
  "replayed": {"type": "boolean"},
  "warnings": {"type": "array", "items": {"type": "string"}},
  "recommendations": {"type": "array", "items": {"type": "string"}, "description": "What the server suggests doing next."}
})";

// An output schema: `properties` (plus "error") with `required` on success
// or {"error"} on failure.
Json OutputSchema(Json properties, const std::vector<std::string>& required) {
  properties["error"] = Parse(kErrorSchema);
  Json s = {{"type", "object"}, {"properties", std::move(properties)}};
  s["anyOf"] = Json::array(
      {Json{{"required", required}}, Json{{"required", {"error"}}}});
  return s;
}

Json Requirements() {
  Json r = Parse(kRequirementsSchema);
  r["properties"]["resources"] = Parse(kResourcesSchema);
  return r;
}

Json AllocationOutput() {
  return OutputSchema(Parse(kAllocationProperties),
                      {"allocation_id", "status"});
}

Json Annotations(bool read_only, bool destructive, bool idempotent) {
  Json a = {{"readOnlyHint", read_only}, {"openWorldHint", false}};
  if (!read_only) {
    a["destructiveHint"] = destructive;
    a["idempotentHint"] = idempotent;
  }
  return a;
}

// ---------------------------------------------------------------- summaries

std::string DescribeAllocation(const Json& a) {
  const std::string id = Str(a, "allocation_id", "?");
  const std::string status = Str(a, "status", "?");
  std::string who = Str(a, "agent_type");
  if (!Str(a, "workflow_id").empty()) who += " for " + Str(a, "workflow_id");
  if (!Str(a, "product").empty()) who += " in " + Str(a, "product");
  std::string s = id + " is " + status + " (" + who + ")";
  if (status == "active") {
    s += ": granted at " + Str(a, "granted_at", "?") + ", fencing token " +
         (a.contains("fencing_token") ? Dump(a["fencing_token"]) : "?");
    if (a.contains("expires_at") && a["expires_at"].is_string()) {
      s += ", lease until " + a["expires_at"].get<std::string>();
    }
    s += ". Renew it with resource_renew before the lease ends; release it "
         "with resource_release (and its usage) when done.";
  } else if (status == "queued") {
    if (a.contains("queue_position")) {
      s += ", position " + Dump(a["queue_position"]);
      if (a.contains("queue_length")) s += " of " + Dump(a["queue_length"]);
    }
    if (!Str(a, "reason_queued").empty()) {
      s += ": " + Str(a, "reason_queued");
    }
    if (!Str(a, "expected_start").empty()) {
      s += "; expected start " + Str(a, "expected_start");
    }
    s += ". To keep waiting, call resource_allocate again with the same "
         "requirements and idempotency_key \"" +
         Str(a, "idempotency_key") + "\" and a timeout.";
  } else {
    if (a.contains("usage") && a["usage"].is_object()) {
      const Json& u = a["usage"];
      s += ": outcome " + Str(u, "outcome", "?");
    }
    if (a.contains("budget") && a["budget"].is_object()) {
      const Json& b = a["budget"];
      s += ", " + Num(Number(b, "used_tokens")) + " tokens, " +
           Money(Number(b, "used_usd"));
    }
    s += ".";
  }
  if (a.contains("warnings") && a["warnings"].is_array()) {
    for (const Json& w : a["warnings"]) {
      if (w.is_string()) s += " Warning: " + w.get<std::string>() + ".";
    }
  }
  if (a.contains("recommendations") && a["recommendations"].is_array()) {
    for (const Json& r : a["recommendations"]) {
      if (r.is_string()) s += " " + r.get<std::string>();
    }
  }
  return s;
}

// The allocation request for the server from `requirements` and priority.
Json AllocationBody(const Json& args) {
  Json body =
      args.contains("requirements") ? args["requirements"] : Json::object();
  if (body.contains("ttl_seconds")) {
    body["ttl"] = body["ttl_seconds"];
    body.erase("ttl_seconds");
  }
  if (body.contains("max_duration_seconds")) {
    body["max_duration"] = body["max_duration_seconds"];
    body.erase("max_duration_seconds");
  }
  if (args.contains("priority")) body["priority"] = args["priority"];
  return body;
}

Json WithRecommendations(Json result, const Json& recommendations) {
  if (result.is_object() && recommendations.is_array() &&
      !recommendations.empty()) {
    result["recommendations"] = recommendations;
  }
  return result;
}

// ---------------------------------------------------------------- tools

ToolResult Allocate(Backend& backend, const Json& args) {
  Json body = AllocationBody(args);
  if (!body.contains("idempotency_key")) {
    body["idempotency_key"] = NewIdempotencyKey();
  }
  const double timeout = Number(args, "timeout", 0);
  Duration http_timeout(0);
  if (timeout > 0) {
    body["wait"] = timeout;
    http_timeout = std::chrono::duration_cast<Duration>(
                       std::chrono::duration<double>(timeout)) +
                   std::chrono::seconds(30);
  }
  ApiAnswer a = CallApi(backend, "POST", "/v1/allocations", body, http_timeout);
  if (!a.ok) return ErrorResult(a.error);
  Json out = WithRecommendations(a.result, a.recommendations);
  return Ok(out, DescribeAllocation(out));
}

// POSTs `body` to /v1/allocations/{allocation_id}/`action` and answers the
// allocation (resource_release, resource_renew).
ToolResult OnAllocation(Backend& backend, const Json& args,
                        const std::string& action, const Json& body) {
  ApiAnswer a = CallApi(
      backend, "POST",
      "/v1/allocations/" + UrlEncode(args["allocation_id"].get<std::string>()) +
          "/" + action,
      body);
  if (!a.ok) return ErrorResult(a.error);
  Json out = WithRecommendations(a.result, a.recommendations);
  return Ok(out, DescribeAllocation(out));
}

ToolResult Release(Backend& backend, const Json& args) {
  Json body = Json::object();
  if (args.contains("usage")) body["usage"] = args["usage"];
  return OnAllocation(backend, args, "release", body);
}

ToolResult Renew(Backend& backend, const Json& args) {
  Json body = Json::object();
  if (args.contains("ttl_seconds")) body["ttl"] = args["ttl_seconds"];
  return OnAllocation(backend, args, "renew", body);
}

// Keeps the agent type and product groups of a status snapshot that match
// the filters.
Json FilterSnapshot(Json status, const Json& filters) {
  if (!status.is_object()) return status;
  const std::string type = Str(filters, "agent_type");
  const std::string product = Str(filters, "product");
  if (!type.empty() && status.contains("agent_types") &&
      status["agent_types"].is_object()) {
    Json keep = Json::object();
    if (status["agent_types"].contains(type)) {
      keep[type] = status["agent_types"][type];
    }
    status["agent_types"] = keep;
  }
  if (!product.empty() && status.contains("products") &&
      status["products"].is_object()) {
    Json keep = Json::object();
    if (status["products"].contains(product)) {
      keep[product] = status["products"][product];
    }
    status["products"] = keep;
  }
  return status;
}

std::string SnapshotLine(const Json& status) {
  std::string s = "At " + Str(status, "time", "?") + ": ";
  if (status.contains("resources") && status["resources"].contains("agents")) {
    const Json& a = status["resources"]["agents"];
    s += "agents " + Num(Number(a, "allocated")) + "/" +
         Num(Number(a, "total")) + " allocated (" +
         Num(Number(a, "available")) + " available); ";
  }
  if (status.contains("allocations") && status["allocations"].is_object()) {
    const Json& al = status["allocations"];
    s += Num(Number(al, "active")) + " active, " + Num(Number(al, "queued")) +
         " queued";
    if (al.contains("oldest_wait") && al["oldest_wait"].is_string()) {
      s += " (oldest waiting " + al["oldest_wait"].get<std::string>() + ")";
    }
  }
  return s + ".";
}

ToolResult Monitor(Backend& backend, const Json& args) {
  const std::string format = Str(args, "format", "json");
  const Json filters =
      args.contains("filters") ? args["filters"] : Json::object();
  if (format == "metrics") {
    auto resp = backend.Call("GET", "/metrics", "", Duration(0));
    if (!resp.ok() || resp->status != 200) {
      // Not enveloped when it works; an error envelope when refused.
      ApiAnswer a = Unwrap(backend, resp);
      if (a.ok) {
        a.error = MakeError(Code::kInternal, "GET /metrics answered HTTP " +
                                                 std::to_string(resp->status));
      }
      return ErrorResult(a.error);
    }
    const std::string text = FilterMetrics(resp->body, Str(filters, "product"),
                                           Str(filters, "agent_type"));
    Json out = {{"format", "metrics"}, {"metrics", text}};
    if (!filters.empty()) out["filters"] = filters;
    ToolResult r;
    r.text.push_back(text);
    r.structured = std::move(out);
    return r;
  }

  ApiAnswer st = CallApi(backend, "GET", "/v1/status");
  if (!st.ok) return ErrorResult(st.error);
  Json allocations = Json::array();
  bool more = false;
  if (filters.contains("allocation_id")) {
    ApiAnswer one =
        CallApi(backend, "GET",
                "/v1/allocations/" +
                    UrlEncode(filters["allocation_id"].get<std::string>()));
    if (!one.ok) return ErrorResult(one.error);
    allocations.push_back(one.result);
  } else {
    std::string statuses = "active,queued";
    if (filters.contains("status")) {
      statuses.clear();
      for (const Json& s : filters["status"]) {
        statuses += (statuses.empty() ? "" : ",") + s.get<std::string>();
      }
    }
    std::string q = "?status=" + UrlEncode(statuses);
    for (const char* key :
         {"product", "agent_type", "workflow_id", "requester"}) {
      if (!Str(filters, key).empty()) {
        q += std::string("&") + key + "=" + UrlEncode(Str(filters, key));
      }
    }
    q += "&limit=" +
         std::to_string(static_cast<int64_t>(Number(args, "limit", 100)));
    ApiAnswer list = CallApi(backend, "GET", "/v1/allocations" + q);
    if (!list.ok) return ErrorResult(list.error);
    if (list.result.contains("allocations") &&
        list.result["allocations"].is_array()) {
      allocations = list.result["allocations"];
    }
    more = list.result.value("more", false);
  }
  Json status = FilterSnapshot(st.result, filters);
  Json out = {{"format", format},
              {"status", status},
              {"allocations", allocations},
              {"count", allocations.size()},
              {"more", more}};
  if (!filters.empty()) out["filters"] = filters;
  if (format == "dashboard") {
    std::string view = RenderDashboard(status, allocations, more);
    out["dashboard"] = view;
    ToolResult r;
    r.text.push_back(std::move(view));
    r.structured = std::move(out);
    return r;
  }
  std::string summary = SnapshotLine(status);
  summary += " " + std::to_string(allocations.size()) +
             (allocations.size() == 1 ? " allocation" : " allocations") +
             (more ? " (and more)" : "") + " match";
  summary += allocations.size() == 1 ? "es" : "";
  size_t shown = 0;
  for (const Json& a : allocations) {
    if (shown++ == 10) {
      summary += ", ...";
      break;
    }
    summary += (shown == 1 ? ": " : ", ") + Str(a, "allocation_id") + " " +
               Str(a, "status") + " (" + Str(a, "agent_type") + ", " +
               Str(a, "workflow_id") + ")";
  }
  return Ok(std::move(out), summary + ".");
}

ToolResult CheckConflicts(Backend& backend, const Json& args) {
  Json body = {{"proposed_allocation", AllocationBody(args)}};
  if (args.contains("time_horizon_seconds")) {
    body["time_horizon"] = args["time_horizon_seconds"];
  }
  if (args.contains("check_future"))
    body["check_future"] = args["check_future"];
  ApiAnswer a = CallApi(backend, "POST", "/v1/conflicts/check", body);
  if (!a.ok) return ErrorResult(a.error);
  Json out = WithRecommendations(a.result, a.recommendations);
  std::string s = "Allocating now would " + Str(out, "outcome", "?") + ": " +
                  Str(out, "reason", "?") + ".";
  if (out.contains("conflicts") && out["conflicts"].is_array()) {
    s += " " + std::to_string(out["conflicts"].size()) + " conflict" +
         (out["conflicts"].size() == 1 ? "" : "s") + " within " +
         Str(out, "horizon", "?");
    for (const Json& c : out["conflicts"]) {
      s += "; [" + Str(c, "type") + ", " + Str(c, "severity") + "] " +
           Str(c, "message");
      if (!Str(c, "recommended_action").empty()) {
        s += " (" + Str(c, "recommended_action") + ")";
      }
    }
    s += ".";
  }
  return Ok(std::move(out), s);
}

ToolResult Reserve(Backend& backend, const Json& args) {
  Json body = args;
  body["duration"] = body["duration_seconds"];
  body.erase("duration_seconds");
  ApiAnswer a = CallApi(backend, "POST", "/v1/reservations", body);
  if (!a.ok) return ErrorResult(a.error);
  Json out = WithRecommendations(a.result, a.recommendations);
  std::string s = "Reservation " + Str(out, "reservation_id", "?") + " is " +
                  Str(out, "status", "?") + ": " +
                  (out.contains("resources") ? Dump(out["resources"]) : "{}") +
                  " from " + Str(out, "window_start", Str(out, "start_time")) +
                  " for " + Str(out, "duration", "?");
  if (!Str(out, "recurrence").empty()) {
    s += ", " + Str(out, "recurrence");
  }
  s += ". Allocations of its workflow or product draw from it with "
       "requirements.reservation_id once it is open.";
  return Ok(std::move(out), s);
}

// The figures of an analytics result that each strategy looks at.
std::vector<std::string> StrategySections(const std::string& strategy) {
  if (strategy == "cost") return {"cost_efficiency", "estimates"};
  if (strategy == "throughput") {
    return {"queue_performance", "agent_utilization"};
  }
  if (strategy == "latency") return {"queue_performance"};
  return {"queue_performance", "cost_efficiency", "agent_utilization",
          "estimates"};
}

ToolResult Optimize(Backend& backend, const Json& args) {
  if (args.value("apply", false)) {
    return ErrorResult(MakeError(
        Code::kUnimplemented,
        "resource_optimize cannot apply recommendations: the qm server has "
        "no operation that applies them. Call it without apply to read them, "
        "then change the server's config (docs/configuration.md; "
        "POST /v1/config/reload) or use its overrides."));
  }
  const std::string strategy = Str(args, "strategy", "balanced");
  ApiAnswer a = CallApi(backend, "GET", "/v1/analytics");
  if (!a.ok) return ErrorResult(a.error);
  const Json& m = a.result;
  Json figures = Json::object();
  std::set<std::string> types;
  if (args.contains("constraints") &&
      args["constraints"].contains("agent_types")) {
    for (const Json& t : args["constraints"]["agent_types"]) {
      types.insert(t.get<std::string>());
    }
  }
  for (const std::string& section : StrategySections(strategy)) {
    if (!m.contains(section)) continue;
    Json v = m[section];
    if (!types.empty() && section == "agent_utilization" && v.is_object()) {
      Json keep = Json::object();
      for (const auto& [k, x] : v.items()) {
        if (types.count(k)) keep[k] = x;
      }
      v = keep;
    } else if (!types.empty() && section == "estimates" && v.is_array()) {
      Json keep = Json::array();
      for (const Json& e : v) {
        if (types.count(Str(e, "agent_type"))) keep.push_back(e);
      }
      v = keep;
    }
    figures[section] = v;
  }

  // Each target against the server's current figure.
  struct Metric {
    const char* name;
    const char* section;
    bool lower_is_better;
  };
  static const Metric kMetrics[] = {
      {"avg_wait_time_minutes", "queue_performance", true},
      {"max_wait_time_minutes", "queue_performance", true},
      {"tasks_that_waited", "queue_performance", true},
      {"cost_per_task", "cost_efficiency", true},
      {"tokens_per_task", "cost_efficiency", true},
      {"tasks_per_dollar", "cost_efficiency", false},
  };
  Json targets = Json::array();
  Json notes = Json::array();
  const Json tm =
      args.contains("target_metrics") ? args["target_metrics"] : Json::object();
  for (const Metric& metric : kMetrics) {
    if (!tm.contains(metric.name)) continue;
    const double target = tm[metric.name].get<double>();
    Json t = {{"metric", metric.name},
              {"target", tm[metric.name]},
              {"better", metric.lower_is_better ? "lower" : "higher"}};
    if (m.contains(metric.section) && m[metric.section].contains(metric.name) &&
        m[metric.section][metric.name].is_number()) {
      const double current = m[metric.section][metric.name].get<double>();
      t["current"] = m[metric.section][metric.name];
      t["met"] = metric.lower_is_better ? current <= target : current >= target;
    } else {
      t["current"] = nullptr;
      t["met"] = nullptr;
      notes.push_back(std::string("the server reports no ") + metric.name);
    }
    targets.push_back(std::move(t));
  }
  if (tm.contains("agent_utilization")) {
    const double target = tm["agent_utilization"].get<double>();
    const Json u =
        m.contains("agent_utilization") && m["agent_utilization"].is_object()
            ? m["agent_utilization"]
            : Json::object();
    bool any = false;
    for (const auto& [type, v] : u.items()) {
      if (!types.empty() && !types.count(type)) continue;
      if (!v.is_number()) continue;
      any = true;
      targets.push_back(Json{{"metric", "agent_utilization"},
                             {"agent_type", type},
                             {"target", tm["agent_utilization"]},
                             {"better", "higher"},
                             {"current", v},
                             {"met", v.get<double>() >= target}});
    }
    if (!any) {
      notes.push_back(
          "the server reports no agent utilisation yet (no agent type has "
          "finished work since " +
          Str(m, "since", "it started") + ")");
    }
  }
  notes.push_back(
      "The recommendations are the qm server's (GET /v1/analytics): they are "
      "the same for every strategy, which only selects the figures shown. "
      "Nothing was changed (apply is not supported).");

  Json recs = m.contains("recommendations") && m["recommendations"].is_array()
                  ? m["recommendations"]
                  : Json::array();
  Json out = {{"strategy", strategy},    {"applied", false},
              {"recommendations", recs}, {"figures", figures},
              {"targets", targets},      {"since", Str(m, "since")},
              {"time", Str(m, "time")},  {"notes", notes}};
  if (args.contains("constraints")) out["constraints"] = args["constraints"];
  std::string s = std::to_string(recs.size()) + " recommendation" +
                  (recs.size() == 1 ? "" : "s") + " from the qm server";
  for (const Json& r : recs) {
    if (r.is_string()) s += "\n- " + r.get<std::string>();
  }
  for (const Json& t : targets) {
    s +=
        "\n" + Str(t, "metric") +
        (t.contains("agent_type") ? " (" + Str(t, "agent_type") + ")" : "") +
        ": " +
        (t["current"].is_null() ? "unknown" : Num(t["current"].get<double>())) +
        " against a target of " + Num(t["target"].get<double>()) +
        (t["met"].is_null() ? ""
                            : (t["met"].get<bool>() ? ", met" : ", not met"));
  }
  s += "\nNothing was applied.";
  return Ok(std::move(out), s);
}

// The spend lines of a cost report for `group` (agent_type, product or
// model), keeping `fields`.
Json SpendLines(const Json& costs, const std::string& group,
                const std::vector<std::string>& fields) {
  const char* key = group == "agent_type" ? "by_agent_type"
                    : group == "product"  ? "by_product"
                                          : "models";
  Json out = Json::array();
  if (!costs.contains(key) || !costs[key].is_array()) return out;
  for (const Json& line : costs[key]) {
    Json l = {{"name", Str(line, "name")}};
    for (const std::string& f : fields) {
      if (line.contains(f)) l[f] = line[f];
    }
    out.push_back(std::move(l));
  }
  return out;
}

ToolResult Analytics(Backend& backend, const Json& args) {
  std::set<std::string> want = {"usage", "costs", "utilization", "trends",
                                "queue"};
  if (args.contains("metrics")) {
    want.clear();
    for (const Json& m : args["metrics"]) want.insert(m.get<std::string>());
  }
  std::vector<std::string> groups = {"agent_type", "product", "model"};
  if (args.contains("group_by")) {
    groups.clear();
    for (const Json& g : args["group_by"]) {
      const std::string name = g.get<std::string>();
      if (std::find(groups.begin(), groups.end(), name) == groups.end()) {
        groups.push_back(name);
      }
    }
  }
  Time range_start{}, range_end{};
  const bool has_range = args.contains("time_range");
  if (has_range) {
    const Json& r = args["time_range"];
    if (r.contains("start") &&
        !ParseTime(r["start"].get<std::string>(), &range_start)) {
      return Invalid(
          "time_range.start: an RFC 3339 UTC time, e.g. "
          "2026-01-26T00:00:00Z");
    }
    if (r.contains("end") &&
        !ParseTime(r["end"].get<std::string>(), &range_end)) {
      return Invalid(
          "time_range.end: an RFC 3339 UTC time, e.g. 2026-01-26T18:00:00Z");
    }
  }

  if (has_range && args["time_range"].contains("start") &&
      args["time_range"].contains("end") && range_end < range_start) {
    return Invalid("time_range: end is before start");
  }

  ApiAnswer costs = CallApi(backend, "GET", "/v1/costs");
  if (!costs.ok) return ErrorResult(costs.error);
  const Json& c = costs.result;
  ApiAnswer metrics, status;
  if (want.count("utilization") || want.count("queue")) {
    metrics = CallApi(backend, "GET", "/v1/analytics");
    if (!metrics.ok) return ErrorResult(metrics.error);
  }
  if (want.count("utilization")) {
    status = CallApi(backend, "GET", "/v1/status");
    if (!status.ok) return ErrorResult(status.error);
  }

  Json out = Json::object();
  out["time"] = Str(c, "time");
  out["period"] = {{"period", Str(c, "period")},
                   {"time_zone", Str(c, "time_zone")},
                   {"start", Str(c, "period_start")},
                   {"end", Str(c, "period_end")}};
  Json unavailable = Json::array();
  if (want.count("usage")) {
    Json u = {{"tokens_used", c.value("tokens_used", Json())},
              {"tokens_reserved", c.contains("reserved")
                                      ? c["reserved"].value("tokens", Json())
                                      : Json()}};
    for (const std::string& g : groups) {
      u["by_" + g] = SpendLines(c, g, {"tasks", "tokens", "token_share"});
    }
    out["usage"] = std::move(u);
  }
  if (want.count("costs")) {
    Json k = {{"cost_usd", c.value("cost_usd", Json())},
              {"reserved_usd", c.contains("reserved")
                                   ? c["reserved"].value("cost_usd", Json())
                                   : Json()},
              {"limits", c.value("limits", Json())},
              {"percent_used", c.value("percent_used", Json())},
              {"budgets", c.value("budgets", Json::array())},
              {"circuit_breaker", c.value("circuit_breaker", Json())}};
    for (const std::string& g : groups) {
      k["by_" + g] = SpendLines(c, g, {"tasks", "cost_usd"});
    }
    out["costs"] = std::move(k);
  }
  if (want.count("utilization")) {
    const Json& snap = status.result;
    const Json& m = metrics.result;
    Json u = Json::object();
    u["since"] = Str(m, "since");
    u["resources"] = snap.value("resources", Json::object());
    for (const std::string& g : groups) {
      if (g == "model") {
        unavailable.push_back(
            {{"what", "utilization by model"},
             {"why",
              "the qm server tracks utilisation per resource, agent "
              "type and product, not per model"}});
        continue;
      }
      const char* key = g == "agent_type" ? "agent_types" : "products";
      Json lines = Json::object();
      if (snap.contains(key) && snap[key].is_object()) {
        for (const auto& [name, v] : snap[key].items()) lines[name] = v;
      }
      if (g == "agent_type" && m.contains("agent_utilization") &&
          m["agent_utilization"].is_object()) {
        // The busy fraction since `since`, next to the current figures.
        for (const auto& [name, v] : m["agent_utilization"].items()) {
          lines[name]["busy_fraction"] = v;
        }
      }
      u["by_" + g] = std::move(lines);
    }
    out["utilization"] = std::move(u);
  }
  if (want.count("queue")) {
    out["queue"] = metrics.result.value("queue_performance", Json::object());
  }
  if (want.count("trends")) {
    out["trends"] = {
        {"burn_rate", c.value("burn_rate", Json())},
        {"projected_end_of_day", c.value("projected_eod", Json())},
        {"alerts_triggered", c.value("alerts_triggered", Json::array())}};
    unavailable.push_back(
        {{"what", "trends as a time series"},
         {"why",
          "the qm server keeps running totals for the current budget "
          "period, not a history: the trend it reports is the "
          "period's burn rate and its projection to the end of the "
          "day"}});
  }
  if (has_range) {
    Time period_start{}, now{};
    const bool known = ParseTime(Str(c, "period_start"), &period_start) &&
                       ParseTime(Str(c, "time"), &now);
    const Json& r = args["time_range"];
    out["time_range"] = {
        {"requested", r},
        {"covered",
         {{"usage_and_costs",
           {{"start", Str(c, "period_start")}, {"end", Str(c, "time")}}}}}};
    if (want.count("utilization") || want.count("queue")) {
      out["time_range"]["covered"]["utilization_and_queue"] = {
          {"start", Str(metrics.result, "since")}, {"end", Str(c, "time")}};
    }
    const bool matches = known && r.contains("start") &&
                         range_start == period_start &&
                         (!r.contains("end") || range_end >= now);
    if (!matches) {
      unavailable.push_back(
          {{"what", "figures for the requested time range"},
           {"why",
            "the qm server keeps running totals for the current "
            "budget period only (from " +
                Str(c, "period_start") +
                "); the figures here cover "
                "the ranges in time_range.covered"}});
    }
  }
  out["unavailable"] = unavailable;

  std::string s = "Budget period " + Str(c, "period") + " from " +
                  Str(c, "period_start") + " to " + Str(c, "period_end") +
                  ": " + Num(Number(c, "tokens_used")) + " tokens, " +
                  Money(Number(c, "cost_usd")) + " spent.";
  for (const char* key : {"by_agent_type", "by_product"}) {
    if (!c.contains(key) || !c[key].is_array() || c[key].empty()) continue;
    s += std::string(key == std::string("by_agent_type") ? " By agent type:"
                                                         : " By product:");
    bool first = true;
    for (const Json& l : c[key]) {
      s += (first ? " " : ", ") + Str(l, "name") + " " +
           Num(Number(l, "tasks")) + " tasks, " + Num(Number(l, "tokens")) +
           " tokens, " + Money(Number(l, "cost_usd"));
      first = false;
    }
    s += ".";
  }
  for (const Json& u : unavailable) {
    s += " Not available: " + Str(u, "what") + " (" + Str(u, "why") + ").";
  }
  return Ok(std::move(out), s);
}

// ---------------------------------------------------------------- the table

std::vector<Tool> MakeTools() {
  std::vector<Tool> tools;

  {
    Tool t;
    t.name = "resource_allocate";
    t.title = "Allocate resources";
    t.description =
        "Ask the qm resource manager for an agent slot (and other "
        "resources, path locks, budget) before starting work. Answers at "
        "once (granted, or queued with its reason and expected start), or "
        "waits up to `timeout` seconds for the grant. A granted allocation "
        "has an allocation_id, a fencing_token and a lease (expires_at): "
        "renew it with resource_renew, and release it with resource_release "
        "when the work is done.";
    t.input_schema = {
        {"type", "object"},
        {"additionalProperties", false},
        {"required", {"requirements"}},
        {"properties",
         {{"requirements", Requirements()},
          {"priority", Parse(kPrioritySchema)},
          {"timeout",
           {{"type", "number"},
            {"minimum", 0},
            {"maximum", 600},
            {"description",
             "Seconds to wait for the grant when the request queues (0, the "
             "default: answer at once). At most the server's max wait (10 "
             "minutes by default)."}}}}}};
    t.output_schema = AllocationOutput();
    t.annotations = Annotations(false, false, false);
    t.run = Allocate;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_release";
    t.title = "Release an allocation";
    t.description =
        "Give an allocation back when the work is done, with its usage "
        "(tokens, cost, outcome): frees its slot and locks for queued work "
        "and reconciles the budgets. Releasing it again is harmless.";
    t.input_schema = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "required": ["allocation_id"],
      "properties": {
        "allocation_id": {"type": "string", "minLength": 1},
        "usage": {
          "type": "object",
          "description": "What the work used. Token counts either split (input/output/cached input) or a plain total.",
          "additionalProperties": false,
          "properties": {
            "tokens": {"type": "integer", "minimum": 0},
            "input_tokens": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
            "cached_input_tokens": {"type": "integer", "minimum": 0},
            "cost_usd": {"type": "number", "minimum": 0, "description": "The cost, instead of the server's price table."},
            "model": {"type": "string", "description": "Priced as this model instead of the granted one."},
            "outcome": {"type": "string", "enum": ["success", "failure", "cancelled"]},
            "report_id": {"type": "string", "description": "A report repeated with the same id is counted once."}
          }
        }
      }
    })");
    t.output_schema = AllocationOutput();
    t.annotations = Annotations(false, true, true);
    t.run = Release;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_renew";
    t.title = "Renew an allocation's lease";
    t.description =
        "Heartbeat: extend the lease of an active allocation by ttl_seconds "
        "(default: its own ttl) from now, never past its max duration. Call "
        "it well before expires_at while the work runs.";
    t.input_schema = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "required": ["allocation_id"],
      "properties": {
        "allocation_id": {"type": "string", "minLength": 1},
        "ttl_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "The new lease length from now."}
      }
    })");
    t.output_schema = AllocationOutput();
    t.annotations = Annotations(false, false, true);
    t.run = Renew;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_monitor";
    t.title = "Monitor resources and allocations";
    t.description =
        "The qm server's current state: capacity and use per resource, "
        "agent type and product, the queue, and the allocations matching "
        "the filters (default: active and queued). format json (the data), "
        "dashboard (a compact text view of the same), or metrics (the "
        "server's Prometheus metrics, needs an operator token when tokens "
        "are configured). To follow changes, subscribe to the qm://status "
        "resource.";
    t.input_schema = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "filters": {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "product": {"type": "string", "minLength": 1},
            "agent_type": {"type": "string", "minLength": 1},
            "workflow_id": {"type": "string", "minLength": 1},
            "requester": {"type": "string", "minLength": 1},
            "status": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["active", "queued", "released", "expired", "preempted", "failed", "cancelled"]}, "description": "Allocation statuses to list. Default [\"active\", \"queued\"]."},
            "allocation_id": {"type": "string", "minLength": 1, "description": "Show just this allocation (any status)."}
          }
        },
        "format": {"type": "string", "enum": ["json", "metrics", "dashboard"], "default": "json"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100, "description": "At most this many allocations."}
      }
    })");
    Json props = Parse(R"({
      "format": {"type": "string", "enum": ["json", "metrics", "dashboard"]},
      "filters": {"type": "object"},
      "status": {"type": "object", "description": "The server's status snapshot (GET /v1/status), its agent_types and products narrowed to the filters."},
      "allocations": {"type": "array", "items": {"type": "object"}},
      "count": {"type": "integer"},
      "more": {"type": "boolean", "description": "More allocations match than were listed."},
      "dashboard": {"type": "string"},
      "metrics": {"type": "string", "description": "Prometheus text exposition."}
    })");
    t.output_schema = OutputSchema(std::move(props), {"format"});
    t.annotations = Annotations(true, false, true);
    t.run = Monitor;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_check_conflicts";
    t.title = "Check for conflicts (dry run)";
    t.description =
        "Dry-run an allocation: every file lock, workflow, resource, "
        "budget and reservation conflict it would meet now (and "
        "reservations within the horizon), and whether allocating would "
        "grant, queue or refuse it. Changes nothing.";
    t.input_schema = {
        {"type", "object"},
        {"additionalProperties", false},
        {"required", {"requirements"}},
        {"properties",
         {{"requirements", Requirements()},
          {"priority", Parse(kPrioritySchema)},
          {"time_horizon_seconds",
           {{"type", "number"},
            {"minimum", 0},
            {"description",
             "How far ahead to look for reservations. Default 4 hours."}}},
          {"check_future",
           {{"type", "boolean"},
            {"description",
             "false ignores reservations ahead. Default true."}}}}}};
    t.output_schema = OutputSchema(Parse(R"({
      "time": {"type": "string"},
      "horizon": {"type": "string"},
      "outcome": {"type": "string", "enum": ["grant", "queue", "refuse"]},
      "reason": {"type": "string"},
      "conflicts_found": {"type": "integer"},
      "conflicts": {"type": "array", "items": {"type": "object"}},
      "recommendations": {"type": "array", "items": {"type": "string"}}
    })"),
                                   {"outcome", "conflicts"});
    t.annotations = Annotations(true, false, true);
    t.run = CheckConflicts;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_reserve";
    t.title = "Reserve capacity for a future window";
    t.description =
        "Book resources for a window ahead (once, daily or weekly) for a "
        "workflow or product; its allocations draw from it with "
        "requirements.reservation_id once it opens. Accepted only if it fits "
        "beside the other reservations. Needs an operator token when tokens "
        "are configured.";
    Json in = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "required": ["start_time", "duration_seconds"],
      "anyOf": [{"required": ["workflow_id"]}, {"required": ["product"]}],
      "properties": {
        "start_time": {"type": "string", "minLength": 1, "description": "RFC 3339 UTC (2026-01-26T15:00:00Z), or \"+2h\" for that long from now."},
        "duration_seconds": {"type": "number", "exclusiveMinimum": 0},
        "workflow_id": {"type": "string", "minLength": 1, "description": "Who may draw from it (this or product is required)."},
        "product": {"type": "string", "minLength": 1},
        "agent_type": {"type": "string", "minLength": 1},
        "requester": {"type": "string"},
        "priority": null,
        "resources": null,
        "recurrence": {"type": "string", "enum": ["daily", "weekly"], "description": "Repeat the window; absent for once."},
        "until": {"type": "string", "description": "When a recurrence ends, as start_time."},
        "reservation_id": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Letters, digits, '_', '-' or '.'; default res_<n>."},
        "metadata": {"description": "Any JSON, kept with the reservation."}
      }
    })");
    in["properties"]["priority"] = Parse(kPrioritySchema);
    in["properties"]["resources"] = Parse(kResourcesSchema);
    t.input_schema = std::move(in);
    t.output_schema = OutputSchema(Parse(R"({
      "reservation_id": {"type": "string"},
      "status": {"type": "string", "description": "scheduled, open, ended or cancelled."},
      "workflow_id": {"type": "string"},
      "product": {"type": "string"},
      "agent_type": {"type": "string"},
      "resources": {"type": "object", "additionalProperties": {"type": "number"}},
      "start_time": {"type": "string"},
      "duration": {"type": "string"},
      "recurrence": {"type": ["string", "null"]},
      "window_start": {"type": ["string", "null"]},
      "window_end": {"type": ["string", "null"]},
      "claimed": {"type": "object"},
      "holders": {"type": "array", "items": {"type": "string"}},
      "warnings": {"type": "array", "items": {"type": "string"}},
      "recommendations": {"type": "array", "items": {"type": "string"}}
    })"),
                                   {"reservation_id", "status"});
    t.annotations = Annotations(false, false, false);
    t.run = Reserve;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_optimize";
    t.title = "Optimization recommendations";
    t.description =
        "The qm server's recommendations for its allocation settings (from "
        "its analytics: utilisation, cost per task, queue performance, "
        "learned estimates), with the current figures the strategy looks at "
        "and each target metric compared to the current value. Read-only: "
        "apply: true is refused, since the server has no operation that "
        "applies recommendations.";
    t.input_schema = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "strategy": {"type": "string", "enum": ["balanced", "cost", "throughput", "latency"], "default": "balanced", "description": "Which figures to show: cost (cost efficiency, estimates), throughput (queue, utilisation), latency (queue), balanced (all)."},
        "constraints": {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "agent_types": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Consider only these agent types' utilisation and estimates."}
          }
        },
        "target_metrics": {
          "type": "object",
          "additionalProperties": false,
          "description": "Goals to compare with the current figures.",
          "properties": {
            "avg_wait_time_minutes": {"type": "number", "minimum": 0},
            "max_wait_time_minutes": {"type": "number", "minimum": 0},
            "tasks_that_waited": {"type": "number", "minimum": 0, "maximum": 1, "description": "Fraction of started tasks that waited."},
            "cost_per_task": {"type": "number", "minimum": 0},
            "tokens_per_task": {"type": "number", "minimum": 0},
            "tasks_per_dollar": {"type": "number", "minimum": 0},
            "agent_utilization": {"type": "number", "minimum": 0, "maximum": 1, "description": "Busy fraction per agent type."}
          }
        },
        "apply": {"type": "boolean", "default": false, "description": "Not supported: true answers an error."}
      }
    })");
    t.output_schema = OutputSchema(Parse(R"({
      "strategy": {"type": "string"},
      "applied": {"type": "boolean"},
      "recommendations": {"type": "array", "items": {"type": "string"}},
      "figures": {"type": "object"},
      "targets": {"type": "array", "items": {"type": "object", "required": ["metric", "target", "current", "met"], "properties": {"metric": {"type": "string"}, "agent_type": {"type": "string"}, "target": {"type": "number"}, "current": {"type": ["number", "null"]}, "met": {"type": ["boolean", "null"]}, "better": {"type": "string", "enum": ["lower", "higher"]}}}},
      "constraints": {"type": "object"},
      "since": {"type": "string"},
      "time": {"type": "string"},
      "notes": {"type": "array", "items": {"type": "string"}}
    })"),
                                   {"strategy", "applied", "recommendations"});
    t.annotations = Annotations(true, false, true);
    t.run = Optimize;
    tools.push_back(std::move(t));
  }
  {
    Tool t;
    t.name = "resource_analytics";
    t.title = "Usage, cost and utilisation analytics";
    t.description =
        "Usage (tokens, tasks), costs and budgets, utilisation and queue "
        "performance per agent type, product and model for the current "
        "budget period, and its trend (burn rate, projection). The server "
        "keeps running totals, not a history: what it cannot break down "
        "(e.g. an arbitrary time range) is listed in `unavailable`, never "
        "estimated.";
    t.input_schema = Parse(R"({
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "metrics": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["usage", "costs", "utilization", "trends", "queue"]}, "description": "Default: all."},
        "group_by": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["agent_type", "product", "model"]}, "description": "Breakdowns. Default: all."},
        "time_range": {
          "type": "object",
          "additionalProperties": false,
          "description": "The range wanted (RFC 3339 UTC). The server reports the current budget period; time_range.covered in the answer says what the figures cover.",
          "properties": {
            "start": {"type": "string", "minLength": 1},
            "end": {"type": "string", "minLength": 1}
          }
        }
      }
    })");
    t.output_schema = OutputSchema(Parse(R"({
      "time": {"type": "string"},
      "period": {"type": "object"},
      "usage": {"type": "object"},
      "costs": {"type": "object"},
      "utilization": {"type": "object"},
      "queue": {"type": "object"},
      "trends": {"type": "object"},
      "time_range": {"type": "object"},
      "unavailable": {"type": "array", "items": {"type": "object", "required": ["what", "why"], "properties": {"what": {"type": "string"}, "why": {"type": "string"}}}}
    })"),
                                   {"period", "unavailable"});
    t.annotations = Annotations(true, false, true);
    t.run = Analytics;
    tools.push_back(std::move(t));
  }
  return tools;
}

}  // namespace

// ---------------------------------------------------------------- public

Json ToolResult::ToJson() const {
  Json content = Json::array();
  for (const std::string& t : text) {
    content.push_back(Json{{"type", "text"}, {"text", t}});
  }
  return Json{{"content", std::move(content)},
              {"structuredContent", structured},
              {"isError", is_error}};
}

Json Tool::ToJson() const {
  Json j = {{"name", name},
            {"title", title},
            {"description", description},
            {"inputSchema", input_schema},
            {"outputSchema", output_schema}};
  if (!annotations.is_null()) {
    j["annotations"] = annotations;
    j["annotations"]["title"] = title;
  }
  return j;
}

const std::vector<Tool>& Tools() {
  static const std::vector<Tool> kTools = MakeTools();
  return kTools;
}

const Tool* FindTool(std::string_view name) {
  for (const Tool& t : Tools()) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

ToolResult CallTool(const Tool& tool, Backend& backend, const Json& args) {
  Json a = args.is_null() ? Json::object() : args;
  Status valid = ValidateJson(tool.input_schema, a, "arguments");
  if (!valid.ok()) return Invalid(valid.message());
  NormalizeIntegers(tool.input_schema, &a);
  return tool.run(backend, a);
}

ToolResult ErrorResult(Json error) {
  ToolResult r;
  r.is_error = true;
  std::string text =
      Str(error, "code", "INTERNAL") + ": " + Str(error, "message", "failed");
  if (!Str(error, "details").empty())
    text += " (" + Str(error, "details") + ")";
  for (const char* key : {"recovery_suggestions", "alternative_options"}) {
    if (error.contains(key) && error[key].is_array()) {
      for (const Json& s : error[key]) {
        if (s.is_string()) text += "\n- " + s.get<std::string>();
      }
    }
  }
  r.text.push_back(std::move(text));
  r.structured = Json{{"error", std::move(error)}};
  return r;
}

std::string RenderDashboard(const Json& status, const Json& allocations,
                            bool more) {
  std::ostringstream o;
  o << "qm at " << Str(status, "time", "?") << "\n";
  if (status.contains("resources") && status["resources"].is_object() &&
      !status["resources"].empty()) {
    o << "resource            used/total  available  util\n";
    for (const auto& [name, r] : status["resources"].items()) {
      char line[160];
      const std::string used =
          Num(Number(r, "allocated")) + "/" + Num(Number(r, "total"));
      std::snprintf(line, sizeof line, "  %-17s %10s %10s %4s%%\n",
                    name.c_str(), used.c_str(),
                    Num(Number(r, "available")).c_str(),
                    Num(Number(r, "utilization_percent")).c_str());
      o << line;
    }
  }
  auto groups = [&](const char* key, const char* title) {
    if (!status.contains(key) || !status[key].is_object() ||
        status[key].empty()) {
      return;
    }
    o << title << ":";
    bool first = true;
    for (const auto& [name, g] : status[key].items()) {
      o << (first ? " " : "; ") << name << " "
        << Num(Number(g, "running_agents")) << " running";
      if (g.contains("limit") && g["limit"].is_number()) {
        o << " of " << Num(g["limit"].get<double>());
      }
      o << ", " << Num(Number(g, "queued")) << " queued";
      first = false;
    }
    o << "\n";
  };
  groups("agent_types", "agent types");
  groups("products", "products");
  if (status.contains("allocations") && status["allocations"].is_object()) {
    const Json& a = status["allocations"];
    o << "allocations: " << Num(Number(a, "active")) << " active, "
      << Num(Number(a, "queued")) << " queued, " << Num(Number(a, "preempting"))
      << " preempting";
    if (a.contains("oldest_wait") && a["oldest_wait"].is_string()) {
      o << ", oldest waiting " << a["oldest_wait"].get<std::string>();
    }
    o << "\n";
  }
  if (allocations.is_array() && !allocations.empty()) {
    for (const Json& al : allocations) {
      o << "  " << Str(al, "allocation_id") << " " << Str(al, "status") << " "
        << Str(al, "agent_type") << " " << Str(al, "workflow_id");
      if (!Str(al, "product").empty()) o << " [" << Str(al, "product") << "]";
      o << " " << Str(al, "priority");
      if (Str(al, "status") == "active") {
        o << " token " << Num(Number(al, "fencing_token")) << " until "
          << Str(al, "expires_at", "-");
      } else if (Str(al, "status") == "queued") {
        o << " since " << Str(al, "queued_at");
        if (!Str(al, "reason_queued").empty()) {
          o << ": " << Str(al, "reason_queued");
        }
      }
      o << "\n";
    }
    if (more) o << "  ... (more match; raise limit or narrow the filters)\n";
  } else {
    o << "  (no allocations match)\n";
  }
  return o.str();
}

std::string FilterMetrics(std::string_view text, const std::string& product,
                          const std::string& agent_type) {
  if (product.empty() && agent_type.empty()) return std::string(text);
  // Whether a sample's labels keep it.
  auto keep = [&](std::string_view line) {
    const size_t open = line.find('{');
    if (open == std::string_view::npos) return true;
    const size_t close = line.find('}', open);
    const std::string_view labels = line.substr(open, close - open);
    for (const auto& [label, want] :
         {std::pair<std::string, std::string>{"product", product},
          {"agent_type", agent_type}}) {
      if (want.empty()) continue;
      const std::string key = label + "=\"";
      size_t at = labels.find(key);
      // A whole label name: preceded by '{' or ','.
      while (at != std::string_view::npos && labels[at - 1] != '{' &&
             labels[at - 1] != ',') {
        at = labels.find(key, at + 1);
      }
      if (at == std::string_view::npos) continue;
      const size_t start = at + key.size();
      const size_t end = labels.find('"', start);
      if (labels.substr(start, end - start) != want) return false;
    }
    return true;
  };
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  // Families (by the name in their HELP/TYPE lines) that keep a sample.
  std::vector<bool> kept(lines.size(), false);
  std::set<std::string, std::less<>> families;
  std::string family;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view l = lines[i];
    if (l.rfind("# HELP ", 0) == 0 || l.rfind("# TYPE ", 0) == 0) {
      std::string_view rest = l.substr(7);
      family = std::string(rest.substr(0, rest.find(' ')));
      continue;
    }
    if (l.empty() || l[0] == '#') continue;
    if (keep(l)) {
      kept[i] = true;
      families.insert(family);
    }
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view l = lines[i];
    bool emit = kept[i];
    if (l.rfind("# HELP ", 0) == 0 || l.rfind("# TYPE ", 0) == 0) {
      std::string_view rest = l.substr(7);
      emit = families.count(rest.substr(0, rest.find(' '))) > 0;
    }
    if (emit) {
      out += l;
      out += '\n';
    }
  }
  return out;
}

}  // namespace qm::mcp
