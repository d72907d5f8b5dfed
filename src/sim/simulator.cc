#include "sim/simulator.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <queue>
#include <sstream>

#include "api/json_codec.h"
#include "config/yaml_config.h"
#include "core/text.h"
#include "qm/config_loader.h"
#include "qm/engine.h"
#include "sim/yaml_json.h"

namespace qm::sim {
namespace {

using api::Json;

// Seed 001's example day.
constexpr int64_t kDefaultStartMs = 1769436000000LL;  // 2026-01-26T14:00:00Z

std::string Where(const std::string& source, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.line < 0) return source + ": ";
  return source + ":" + std::to_string(m.line + 1) + ":" +
         std::to_string(m.column + 1) + ": ";
}

// Minimal JSON string escaping for the hot output path.
void AppendString(std::string* out, const std::string& s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

struct Op {
  Duration at{};
  std::string kind;
  YAML::Node node;   // the operation's value
  YAML::Node entry;  // the whole timeline entry (for positions)
  int64_t count = 1;
};

struct AllocSpec {
  std::string label;
  std::optional<Duration> run_for;
  UsageReport usage;
};

struct AutoRelease {
  Time at;
  uint64_t seq;
  std::string alloc;
  // The grant it ends: a preempted task that was re-queued and granted
  // again runs for run_for from its new grant.
  uint64_t fencing;
  bool operator>(const AutoRelease& o) const {
    return at != o.at ? at > o.at : seq > o.seq;
  }
};

class Collector : public EventSink {
 public:
  void OnEvent(const Event& e) override { events.push_back(e); }
  std::vector<Event> events;
};

class Simulation {
 public:
  Simulation(std::string source, std::string base_dir, std::string text,
             std::ostream& out)
      : source_(std::move(source)),
        base_dir_(std::move(base_dir)),
        text_(std::move(text)),
        out_(out) {}

  Status Run(const YAML::Node& root, RunStats* stats,
             const RunOptions& options);

 private:
  Status Parse(const YAML::Node& root);
  Status Execute(const Op& op);
  Status DoAllocate(const Op& op);
  Status DoAllocateBatch(const Op& op);
  Status Expect(const Op& op);
  Status ExpectAllocation(const Op& op);
  Status ExpectCosts(const YAML::Node& want);
  Status DoUsage(const Op& op);
  Status DoExtend(const Op& op);
  Status DoOperator(const Op& op);
  // Conflict and reservation operations (docs/conflicts.md).
  Status DoCheckConflicts(const Op& op);
  Status DoResolveConflict(const Op& op);
  Status DoPreventConflicts(const Op& op);
  Status DoLockVerify(const Op& op);
  Status DoReserve(const Op& op);
  Status DoCancelReservation(const Op& op);
  Status ExpectConflicts(const YAML::Node& want);
  // The reservation id a scenario label (or an engine "res_" id) names.
  StatusOr<std::string> ReservationIdFor(const YAML::Node& n,
                                         const std::string& what) const;
  // A scenario time: an offset from the scenario start ("1h", like `at`)
  // or RFC 3339 text, as the RFC 3339 text the codec reads.
  StatusOr<std::string> ScenarioTime(const YAML::Node& n,
                                     const std::string& what) const;
  // Prints {"t","op",("id"),"result"} for an operation's answer.
  void PrintResult(const char* op, const std::string& label, api::Json result);
  // INVALID_REQUEST naming the first key of `n` not in `keys` (and when `n`
  // is neither a mapping nor null).
  Status CheckKeys(const YAML::Node& n, const std::string& what,
                   const std::vector<std::string>& keys) const;
  StatusOr<Actor> ActorOf(const YAML::Node& n, const std::string& what) const;
  // Prints the allocation's money state after an operation.
  void PrintBudget(const char* op, const std::string& id);
  void PrintReport(const std::string& report);
  StatusOr<std::string> AllocIdFor(const YAML::Node& n,
                                   const std::string& what);
  StatusOr<AllocSpec> SplitSpec(const YAML::Node& n, Json* request);
  // A task with run_for and no ttl is a live holder that heartbeats: its
  // lease is one minute longer than its run (at least the default ttl).
  void DefaultTtl(const AllocSpec& s, Json* request) const {
    if (!s.run_for || request->contains("ttl")) return;
    const Duration ttl = std::max(config_.scheduling.default_ttl,
                                  *s.run_for + std::chrono::minutes(1));
    (*request)["ttl"] = FormatDuration(ttl);
  }
  void Drain();
  void Integrate(Time to);
  void PrintError(const char* op, const std::string& label, const Status& s);
  std::string Offset(Time t) const { return FormatDuration(t - start_); }
  std::string Label(const std::string& id) const {
    auto it = labels_.find(id);
    if (it != labels_.end()) return it->second;
    auto res = res_labels_.find(id);
    return res == res_labels_.end() ? id : res->second;
  }
  void Line(const std::string& s) { out_ << s << '\n'; }
  void PrintSummary();

  std::string source_, base_dir_, text_;
  std::ostream& out_;
  std::string name_;
  Time start_{Duration(kDefaultStartMs)};
  std::optional<Duration> until_;
  Config config_;
  std::vector<Op> ops_;

  ManualClock clock_;
  Collector sink_;
  std::unique_ptr<Engine> engine_;
  std::map<std::string, std::string> labels_;        // alloc id -> label
  std::map<std::string, std::string> by_label_;      // label -> alloc id
  std::map<std::string, AllocSpec> specs_;           // alloc id -> spec
  std::map<std::string, std::string> res_labels_;    // reservation -> label
  std::map<std::string, std::string> res_by_label_;  // label -> reservation
  std::priority_queue<AutoRelease, std::vector<AutoRelease>,
                      std::greater<AutoRelease>>
      releases_;
  uint64_t release_seq_ = 0;
  RunStats stats_;

  // Summary accumulators.
  struct Held {
    ResourceAmounts resources;
    std::string product;
    double agents = 0;
  };
  std::map<std::string, Held> held_;      // alloc id -> what it holds
  std::map<std::string, double> in_use_;  // resource -> amount now
  std::map<std::string, double> area_;    // resource -> amount x minutes
  std::map<std::string, double> product_agents_;  // product -> agents now
  std::map<std::string, double> agent_minutes_;
  Time integrated_to_{};
  std::array<std::vector<double>, kNumLevels> waits_;
  std::map<std::string, int64_t> decisions_;
};

Status Simulation::Parse(const YAML::Node& root) {
  if (!root.IsMap()) {
    return InvalidRequest(Where(source_, root) +
                          "a scenario must be a mapping with a timeline");
  }
  static const std::vector<std::string> kKeys = {
      "name", "description", "start", "until", "config", "timeline"};
  config_ = Config::Defaults();
  bool have_timeline = false;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "name") {
      name_ = v.as<std::string>();
    } else if (key == "description") {
    } else if (key == "start") {
      Time t;
      if (!v.IsScalar() || !ParseTime(v.Scalar(), &t)) {
        return InvalidRequest(Where(source_, kv.first) +
                              "start: must be a UTC time like "
                              "2026-01-26T14:00:00Z");
      }
      start_ = t;
    } else if (key == "until") {
      Duration d;
      if (!v.IsScalar() || !ParseDuration(v.Scalar(), &d)) {
        return InvalidRequest(Where(source_, kv.first) +
                              "until: must be a duration such as 10h");
      }
      until_ = d;
    } else if (key == "config") {
      if (v.IsScalar()) {
        std::string path = v.Scalar();
        if (!path.empty() && path[0] != '/') path = base_dir_ + "/" + path;
        auto c = LoadConfigFile(path);
        if (!c.ok()) return c.status();
        config_ = std::move(*c);
      } else {
        // A relative workspace root is relative to the scenario's directory.
        auto c = ConfigFromYamlNode(v, source_, text_, base_dir_);
        if (!c.ok()) return c.status();
        config_ = std::move(*c);
      }
    } else if (key == "timeline") {
      have_timeline = true;
      if (!v.IsSequence()) {
        return InvalidRequest(Where(source_, kv.first) +
                              "timeline: must be a list of operations");
      }
      static const std::vector<std::string> kOps = {"allocate",
                                                    "allocate_batch",
                                                    "release",
                                                    "renew",
                                                    "reallocate",
                                                    "cancel",
                                                    "queue",
                                                    "snapshot",
                                                    "advance",
                                                    "expect",
                                                    "usage",
                                                    "extend",
                                                    "pause",
                                                    "resume",
                                                    "priority_override",
                                                    "breaker_override",
                                                    "raise_limits",
                                                    "costs",
                                                    "metrics",
                                                    "dashboard",
                                                    "check_conflicts",
                                                    "resolve_conflict",
                                                    "prevent_conflicts",
                                                    "lock_verify",
                                                    "conflicts",
                                                    "reserve",
                                                    "cancel_reservation",
                                                    "reservations"};
      Duration last{0};
      for (auto it = v.begin(); it != v.end(); ++it) {
        const YAML::Node entry = *it;
        if (!entry.IsMap()) {
          return InvalidRequest(Where(source_, entry) +
                                "timeline entry must be a mapping with `at`");
        }
        Op op;
        op.entry = entry;
        bool have_at = false;
        for (const auto& e : entry) {
          const std::string k = e.first.as<std::string>();
          if (k == "at") {
            if (!e.second.IsScalar() ||
                !ParseDuration(e.second.Scalar(), &op.at)) {
              return InvalidRequest(
                  Where(source_, e.first) +
                  "at: must be an offset such as 45m or 1h30m");
            }
            have_at = true;
          } else if (k == "count") {
            if (!e.second.IsScalar()) {
              return InvalidRequest(Where(source_, e.first) +
                                    "count: must be a whole number >= 1");
            }
            const Json c = ToJsonValue(e.second);
            if (!c.is_number_integer() || c.get<int64_t>() < 1 ||
                c.get<int64_t>() > 10000000) {
              return InvalidRequest(Where(source_, e.first) +
                                    "count: must be a whole number >= 1");
            }
            op.count = c.get<int64_t>();
          } else if (std::find(kOps.begin(), kOps.end(), k) != kOps.end()) {
            if (!op.kind.empty()) {
              return InvalidRequest(Where(source_, e.first) + k +
                                    ": one operation per timeline entry (this "
                                    "one already has " +
                                    op.kind + ")");
            }
            op.kind = k;
            op.node = e.second;
          } else {
            std::string msg =
                Where(source_, e.first) + k + ": unknown timeline key";
            std::vector<std::string> all = kOps;
            all.push_back("at");
            all.push_back("count");
            const std::string guess = ClosestMatch(k, all);
            if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
            return InvalidRequest(msg);
          }
        }
        if (!have_at) {
          return InvalidRequest(Where(source_, entry) +
                                "timeline entry needs an `at` offset");
        }
        if (op.kind.empty()) {
          return InvalidRequest(Where(source_, entry) +
                                "timeline entry names no operation (one of " +
                                Join(kOps, ", ") + ")");
        }
        if (op.count != 1 && op.kind != "allocate") {
          return InvalidRequest(Where(source_, entry) +
                                "count: only allocate can be repeated");
        }
        if (op.at < last) {
          return InvalidRequest(Where(source_, entry) +
                                "at: " + FormatDuration(op.at) +
                                " comes before the "
                                "previous entry's " +
                                FormatDuration(last));
        }
        last = op.at;
        ops_.push_back(std::move(op));
      }
    } else {
      std::string msg =
          Where(source_, kv.first) + key + ": unknown scenario key";
      const std::string guess = ClosestMatch(key, kKeys);
      if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
      return InvalidRequest(msg);
    }
  }
  if (!have_timeline) {
    return InvalidRequest(Where(source_, root) + "timeline: missing");
  }
  return Status::Ok();
}

StatusOr<AllocSpec> Simulation::SplitSpec(const YAML::Node& n, Json* request) {
  if (!n.IsMap()) {
    return InvalidRequest(Where(source_, n) +
                          "allocate: must be a mapping of request fields");
  }
  AllocSpec spec;
  *request = Json::object();
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (k == "id") {
      spec.label = kv.second.as<std::string>();
    } else if (k == "run_for") {
      Duration d;
      if (!kv.second.IsScalar() || !ParseDuration(kv.second.Scalar(), &d)) {
        return InvalidRequest(Where(source_, kv.first) +
                              "run_for: must be a duration such as 30m");
      }
      spec.run_for = d;
    } else if (k == "usage") {
      auto u = api::UsageFromJson(ToJsonValue(kv.second));
      if (!u.ok()) {
        return InvalidRequest(Where(source_, kv.first) + u.status().message());
      }
      spec.usage = *u;
    } else if (k == "reservation") {
      auto id = ReservationIdFor(kv.second, "allocate.reservation");
      if (!id.ok()) return id.status();
      (*request)["reservation_id"] = *id;
    } else {
      (*request)[k] = ToJsonValue(kv.second);
    }
  }
  return spec;
}

void Simulation::PrintError(const char* op, const std::string& label,
                            const Status& s) {
  std::string line = "{\"t\":";
  AppendString(&line, Offset(clock_.Now()));
  line += ",\"op\":";
  AppendString(&line, op);
  if (!label.empty()) {
    line += ",\"id\":";
    AppendString(&line, label);
  }
  line += ",\"error\":{\"code\":";
  AppendString(&line, std::string(CodeName(s.code())));
  line += ",\"message\":";
  AppendString(&line, s.message());
  const bool money =
      s.code() == Code::kBudgetExceeded || s.code() == Code::kCircuitOpen;
  if (money && !s.details().empty()) {
    line += ",\"details\":";
    AppendString(&line, s.details());
  }
  if (!s.context().empty()) {
    line += ",\"context\":{";
    bool first = true;
    for (const auto& [key, value] : s.context()) {
      if (!first) line += ",";
      first = false;
      AppendString(&line, key);
      line += ":";
      AppendString(&line, value);
    }
    line += "}";
  }
  line += "}";
  if (!s.alternatives().empty()) {
    line += ",\"alternative_options\":[";
    for (size_t i = 0; i < s.alternatives().size(); ++i) {
      if (i) line += ",";
      AppendString(&line, s.alternatives()[i]);
    }
    line += "]";
  }
  line += "}";
  Line(line);
  ++decisions_["refused"];
}

Status Simulation::DoAllocate(const Op& op) {
  Json base;
  auto spec = SplitSpec(op.node, &base);
  if (!spec.ok()) return spec.status();
  for (int64_t k = 1; k <= op.count; ++k) {
    AllocSpec s = *spec;
    if (s.label.empty()) s.label = "task" + std::to_string(labels_.size() + 1);
    if (op.count > 1) s.label += "-" + std::to_string(k);
    Json j = base;
    if (!j.contains("workflow_id")) j["workflow_id"] = s.label;
    DefaultTtl(s, &j);
    if (by_label_.count(s.label)) {
      return InvalidRequest(Where(source_, op.node) + "allocate: id \"" +
                            s.label + "\" is already used in this scenario");
    }
    auto req = api::RequestFromJson(j);
    if (!req.ok()) {
      PrintError("allocate", s.label, req.status());
      continue;
    }
    auto r = engine_->Allocate(*req);
    if (!r.ok()) {
      PrintError("allocate", s.label, r.status());
      continue;
    }
    labels_[r->allocation.id] = s.label;
    by_label_[s.label] = r->allocation.id;
    specs_[r->allocation.id] = s;
    Drain();
  }
  return Status::Ok();
}

Status Simulation::DoAllocateBatch(const Op& op) {
  if (!op.node.IsMap() || !op.node["requests"] ||
      !op.node["requests"].IsSequence()) {
    return InvalidRequest(Where(source_, op.node) +
                          "allocate_batch: needs `requests: [...]`");
  }
  bool all_or_nothing = false;
  if (op.node["all_or_nothing"]) {
    all_or_nothing = ToJsonValue(op.node["all_or_nothing"]) == Json(true);
  }
  std::vector<AllocationRequest> reqs;
  std::vector<AllocSpec> specs;
  for (const auto& n : op.node["requests"]) {
    Json j;
    auto spec = SplitSpec(n, &j);
    if (!spec.ok()) return spec.status();
    if (spec->label.empty()) {
      spec->label = "task" + std::to_string(labels_.size() + specs.size() + 1);
    }
    if (!j.contains("workflow_id")) j["workflow_id"] = spec->label;
    DefaultTtl(*spec, &j);
    auto req = api::RequestFromJson(
        j, "requests[" + std::to_string(reqs.size()) + "].");
    if (!req.ok()) {
      PrintError("allocate_batch", "", req.status());
      return Status::Ok();
    }
    reqs.push_back(std::move(*req));
    specs.push_back(std::move(*spec));
  }
  auto r = engine_->AllocateBatch(reqs, all_or_nothing);
  if (!r.ok()) {
    PrintError("allocate_batch", "", r.status());
    return Status::Ok();
  }
  for (size_t i = 0; i < r->size(); ++i) {
    const std::string& id = (*r)[i].allocation.id;
    labels_[id] = specs[i].label;
    by_label_[specs[i].label] = id;
    specs_[id] = specs[i];
  }
  Drain();
  return Status::Ok();
}

StatusOr<std::string> Simulation::AllocIdFor(const YAML::Node& n,
                                             const std::string& what) {
  std::string label;
  if (n.IsScalar()) {
    label = n.Scalar();
  } else if (n.IsMap() && n["id"]) {
    label = n["id"].as<std::string>();
  } else {
    return InvalidRequest(Where(source_, n) + what +
                          ": give the allocation's scenario id");
  }
  auto it = by_label_.find(label);
  if (it == by_label_.end()) {
    // Engine ids are accepted too.
    if (label.rfind("alloc_", 0) == 0) return label;
    return InvalidRequest(Where(source_, n) + what +
                          ": no allocation with id \"" + label +
                          "\" was made earlier in this scenario");
  }
  return it->second;
}

Status Simulation::CheckKeys(const YAML::Node& n, const std::string& what,
                             const std::vector<std::string>& keys) const {
  if (n.IsNull()) return Status::Ok();
  if (!n.IsMap()) {
    return InvalidRequest(Where(source_, n) + what + ": must be a mapping {" +
                          Join(keys, ", ") + "}");
  }
  const std::string known =
      keys.empty() ? "it takes none" : "known: " + Join(keys, ", ");
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (std::find(keys.begin(), keys.end(), k) != keys.end()) continue;
    std::string msg = Where(source_, kv.first) + what + "." + k +
                      ": unknown key (" + known + ")";
    const std::string guess = ClosestMatch(k, keys);
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    return InvalidRequest(msg);
  }
  return Status::Ok();
}

StatusOr<Actor> Simulation::ActorOf(const YAML::Node& n,
                                    const std::string& what) const {
  Actor actor;
  if (!n.IsMap()) return actor;
  for (const char* key : {"by", "reason"}) {
    if (!n[key]) continue;
    if (!n[key].IsScalar()) {
      return InvalidRequest(Where(source_, n[key]) + what + "." + key +
                            ": must be text");
    }
    (std::string(key) == "by" ? actor.who : actor.why) = n[key].Scalar();
  }
  return actor;
}

namespace {

// Within 1e-6 of `want`, relative to its size (at least 1).
bool Near(double got, double want) {
  return std::fabs(got - want) <= 1e-6 * std::max(1.0, std::fabs(want));
}

std::string Num(double v) { return FormatNumber(api::Round6(v)); }

}  // namespace

Status Simulation::Expect(const Op& op) {
  static const std::vector<std::string> kKeys = {
      "id",          "status", "reason_contains", "model",    "over_budget",
      "used_tokens", "costs",  "warnings",        "conflicts"};
  if (op.node.IsMap()) QM_RETURN_IF_ERROR(CheckKeys(op.node, "expect", kKeys));
  const bool costs = op.node.IsMap() && op.node["costs"];
  const bool conflicts = op.node.IsMap() && op.node["conflicts"];
  if (costs) QM_RETURN_IF_ERROR(ExpectCosts(op.node["costs"]));
  if (conflicts) QM_RETURN_IF_ERROR(ExpectConflicts(op.node["conflicts"]));
  if ((costs || conflicts) && !op.node["id"]) return Status::Ok();
  return ExpectAllocation(op);
}

Status Simulation::ExpectCosts(const YAML::Node& want) {
  static const std::vector<std::string> kKeys = {
      "cost_usd", "tokens_used", "breaker_open", "paused", "alerts"};
  if (!want.IsMap()) {
    return InvalidRequest(Where(source_, want) +
                          "expect.costs: must be a mapping {" +
                          Join(kKeys, ", ") + "}");
  }
  QM_RETURN_IF_ERROR(CheckKeys(want, "expect.costs", kKeys));
  const CostReport report = engine_->Costs();
  Json seen = Json::object();
  for (const auto& kv : want) {
    const std::string key = kv.first.as<std::string>();
    const Json w = ToJsonValue(kv.second);
    const std::string where = Where(source_, kv.first) + "expect: costs." + key;
    if (key == "breaker_open" || key == "paused") {
      if (!w.is_boolean()) {
        return InvalidRequest(where + " must be true or false");
      }
      const bool got = key == "paused" ? report.paused : report.breaker.open;
      if (got != w.get<bool>()) {
        return Conflict(where + " is " + (got ? "true" : "false") + " at " +
                        Offset(clock_.Now()) + ", expected " +
                        (got ? "false" : "true"));
      }
      seen[key] = got;
      continue;
    }
    if (!w.is_number()) return InvalidRequest(where + " must be a number");
    const double got = key == "cost_usd" ? report.cost_usd
                       : key == "tokens_used"
                           ? static_cast<double>(report.tokens_used)
                           : static_cast<double>(report.alerts.size());
    if (!Near(got, w.get<double>())) {
      return Conflict(where + " is " + Num(got) + " at " +
                      Offset(clock_.Now()) + ", expected " +
                      Num(w.get<double>()));
    }
    seen[key] = api::Round6(got);
  }
  Line(Json{{"t", Offset(clock_.Now())}, {"expect", "ok"}, {"costs", seen}}
           .dump());
  return Status::Ok();
}

Status Simulation::ExpectAllocation(const Op& op) {
  auto id = AllocIdFor(op.node, "expect");
  if (!id.ok()) return id.status();
  auto info = engine_->Get(*id);
  const std::string label = Label(*id);
  std::string got = info.ok() ? AllocStatusName(info->status) : "unknown";
  auto fail = [&](const std::string& what) {
    return Conflict(Where(source_, op.node) + "expect: " + label + " " + what);
  };
  if (op.node["status"]) {
    const std::string want = op.node["status"].as<std::string>();
    if (want != got) {
      return Conflict(Where(source_, op.node) + "expect: " + label + " is " +
                      got + " at " + Offset(clock_.Now()) + ", expected " +
                      want);
    }
  }
  if (op.node["reason_contains"]) {
    const std::string want = op.node["reason_contains"].as<std::string>();
    const std::string reason = info.ok() ? info->reason_queued : "";
    if (reason.find(want) == std::string::npos) {
      return Conflict(Where(source_, op.node) + "expect: " + label +
                      " reason is \"" + reason +
                      "\", expected it to contain \"" + want + "\"");
    }
  }
  const BudgetInfo budget = info.ok() ? info->budget : BudgetInfo{};
  if (op.node["model"]) {
    const std::string want = op.node["model"].as<std::string>();
    if (budget.model != want) {
      return fail("model is \"" + budget.model + "\" at " +
                  Offset(clock_.Now()) + ", expected \"" + want + "\"");
    }
  }
  if (op.node["over_budget"]) {
    const Json want = ToJsonValue(op.node["over_budget"]);
    if (!want.is_boolean()) {
      return InvalidRequest(Where(source_, op.node["over_budget"]) +
                            "expect.over_budget: must be true or false");
    }
    if (budget.over_budget != want.get<bool>()) {
      return fail(std::string("over_budget is ") +
                  (budget.over_budget ? "true" : "false") + " at " +
                  Offset(clock_.Now()) + ", expected " +
                  (budget.over_budget ? "false" : "true"));
    }
  }
  if (op.node["used_tokens"]) {
    const Json want = ToJsonValue(op.node["used_tokens"]);
    if (!want.is_number()) {
      return InvalidRequest(Where(source_, op.node["used_tokens"]) +
                            "expect.used_tokens: must be a number");
    }
    const double used = static_cast<double>(budget.used_tokens);
    if (!Near(used, want.get<double>())) {
      return fail("used_tokens is " + Num(used) + " at " +
                  Offset(clock_.Now()) + ", expected " +
                  Num(want.get<double>()));
    }
  }
  if (op.node["warnings"]) {
    const Json want = ToJsonValue(op.node["warnings"]);
    if (!want.is_number_integer() || want.get<int64_t>() < 0) {
      return InvalidRequest(Where(source_, op.node["warnings"]) +
                            "expect.warnings: must be a whole number >= 0");
    }
    const size_t warnings = info.ok() ? info->warnings.size() : 0;
    if (warnings != want.get<uint64_t>()) {
      std::string what = "has " + std::to_string(warnings) + " warnings at " +
                         Offset(clock_.Now()) + ", expected " +
                         std::to_string(want.get<int64_t>());
      if (warnings > 0) what += " (" + Join(info->warnings, "; ") + ")";
      return fail(what);
    }
  }
  std::string line = "{\"t\":";
  AppendString(&line, Offset(clock_.Now()));
  line += ",\"expect\":\"ok\",\"id\":";
  AppendString(&line, label);
  line += ",\"status\":";
  AppendString(&line, got);
  line += "}";
  Line(line);
  return Status::Ok();
}

void Simulation::PrintBudget(const char* op, const std::string& id) {
  auto info = engine_->Get(id);
  if (!info.ok()) return;
  Line(Json{{"t", Offset(clock_.Now())},
            {"op", op},
            {"id", Label(id)},
            {"status", AllocStatusName(info->status)},
            {"budget", api::ToJson(info->budget)}}
           .dump());
}

Status Simulation::DoUsage(const Op& op) {
  if (!op.node.IsMap()) {
    return InvalidRequest(Where(source_, op.node) +
                          "usage: needs {id, tokens, cost_usd, ...}");
  }
  auto id = AllocIdFor(op.node, "usage");
  if (!id.ok()) return id.status();
  Json j = ToJsonValue(op.node);
  j.erase("id");
  auto usage = api::UsageFromJson(j);
  if (!usage.ok()) {
    PrintError("usage", Label(*id), usage.status());
    return Status::Ok();
  }
  auto r = engine_->ReportUsage(*id, *usage);
  Drain();
  if (!r.ok()) {
    PrintError("usage", Label(*id), r.status());
    return Status::Ok();
  }
  PrintBudget("usage", *id);
  return Status::Ok();
}

Status Simulation::DoExtend(const Op& op) {
  QM_RETURN_IF_ERROR(CheckKeys(op.node, "extend", {"id", "max_tokens"}));
  if (!op.node.IsMap() || !op.node["max_tokens"]) {
    return InvalidRequest(Where(source_, op.node) +
                          "extend: needs {id, max_tokens}");
  }
  auto id = AllocIdFor(op.node, "extend");
  if (!id.ok()) return id.status();
  const Json t = ToJsonValue(op.node["max_tokens"]);
  if (!t.is_number_integer()) {
    return InvalidRequest(Where(source_, op.node["max_tokens"]) +
                          "extend.max_tokens: must be a whole number");
  }
  auto r = engine_->ExtendTokens(*id, t.get<int64_t>());
  Drain();
  if (!r.ok()) {
    PrintError("extend", Label(*id), r.status());
    return Status::Ok();
  }
  PrintBudget("extend", *id);
  return Status::Ok();
}

Status Simulation::DoOperator(const Op& op) {
  const std::string& k = op.kind;
  std::vector<std::string> keys = {"by", "reason"};
  if (k == "priority_override") {
    keys.insert(keys.begin(), {"product", "level"});
  } else if (k == "raise_limits") {
    keys.insert(keys.begin(), {"max_tokens", "max_cost_usd"});
  }
  QM_RETURN_IF_ERROR(CheckKeys(op.node, k, keys));
  auto actor = ActorOf(op.node, k);
  if (!actor.ok()) return actor.status();
  Status s;
  if (k == "pause") {
    s = engine_->Pause(*actor);
  } else if (k == "resume") {
    s = engine_->Resume(*actor);
  } else if (k == "breaker_override") {
    s = engine_->OverrideBreaker(*actor);
  } else if (k == "priority_override") {
    if (!op.node.IsMap() || !op.node["product"] ||
        !op.node["product"].IsScalar()) {
      return InvalidRequest(Where(source_, op.node) +
                            "priority_override: needs {product, level}");
    }
    std::optional<Level> level;
    const YAML::Node l = op.node["level"];
    if (l && !l.IsNull() && !(l.IsScalar() && l.Scalar() == "null")) {
      Level parsed;
      if (!l.IsScalar() || !LevelFromName(l.Scalar(), &parsed)) {
        return InvalidRequest(Where(source_, l) +
                              "priority_override.level: must be critical, "
                              "high, normal, low or null (to clear)");
      }
      level = parsed;
    }
    s = engine_->SetPriorityOverride(op.node["product"].Scalar(), level,
                                     *actor);
  } else if (k == "raise_limits") {
    std::optional<int64_t> tokens;
    std::optional<double> cost;
    if (op.node.IsMap() && op.node["max_tokens"]) {
      const Json t = ToJsonValue(op.node["max_tokens"]);
      if (!t.is_number_integer()) {
        return InvalidRequest(Where(source_, op.node["max_tokens"]) +
                              "raise_limits.max_tokens: must be a whole "
                              "number");
      }
      tokens = t.get<int64_t>();
    }
    if (op.node.IsMap() && op.node["max_cost_usd"]) {
      const Json c = ToJsonValue(op.node["max_cost_usd"]);
      if (!c.is_number()) {
        return InvalidRequest(Where(source_, op.node["max_cost_usd"]) +
                              "raise_limits.max_cost_usd: must be a number");
      }
      cost = c.get<double>();
    }
    s = engine_->RaiseLimits(tokens, cost, *actor);
  }
  if (!s.ok()) PrintError(k.c_str(), "", s);
  Drain();
  return Status::Ok();
}

// ---- Conflicts and reservations ----

void Simulation::PrintResult(const char* op, const std::string& label,
                             Json result) {
  Json line = {{"t", Offset(clock_.Now())}, {"op", op}};
  if (!label.empty()) line["id"] = label;
  line["result"] = std::move(result);
  Line(line.dump());
}

StatusOr<std::string> Simulation::ReservationIdFor(
    const YAML::Node& n, const std::string& what) const {
  if (!n.IsScalar() || n.Scalar().empty()) {
    return InvalidRequest(Where(source_, n) + what +
                          ": give the reservation's scenario id");
  }
  const std::string label = n.Scalar();
  auto it = res_by_label_.find(label);
  if (it != res_by_label_.end()) return it->second;
  // Engine ids are accepted too.
  if (label.rfind("res_", 0) == 0) return label;
  return InvalidRequest(Where(source_, n) + what +
                        ": no reservation with id \"" + label +
                        "\" was made earlier in this scenario");
}

StatusOr<std::string> Simulation::ScenarioTime(const YAML::Node& n,
                                               const std::string& what) const {
  Duration offset{};
  if (n.IsScalar() && ParseDuration(n.Scalar(), &offset)) {
    return FormatTime(start_ + offset);
  }
  Time t{};
  if (n.IsScalar() && ParseTime(n.Scalar(), &t)) return FormatTime(t);
  return InvalidRequest(Where(source_, n) + what +
                        ": must be an offset from the scenario start such as "
                        "1h30m, or a UTC time like 2026-01-26T15:00:00Z");
}

Status Simulation::DoCheckConflicts(const Op& op) {
  static const std::vector<std::string> kKeys = {
      "request", "proposed_allocation", "check_future", "time_horizon"};
  QM_RETURN_IF_ERROR(CheckKeys(op.node, "check_conflicts", kKeys));
  const bool has_request = op.node.IsMap() && op.node["request"];
  const bool has_proposed = op.node.IsMap() && op.node["proposed_allocation"];
  if (has_request == has_proposed) {
    return InvalidRequest(Where(source_, op.node) +
                          "check_conflicts: needs one of `request: {...}` "
                          "(allocate fields) or `proposed_allocation: "
                          "{workflow_id, resources, files}`");
  }
  Json request;
  if (has_request) {
    auto spec = SplitSpec(op.node["request"], &request);
    if (!spec.ok()) return spec.status();
    if (!request.contains("workflow_id")) {
      request["workflow_id"] = spec->label.empty() ? "dry_run" : spec->label;
    }
  } else {
    const YAML::Node proposed = op.node["proposed_allocation"];
    if (!proposed.IsMap()) {
      return InvalidRequest(Where(source_, proposed) +
                            "check_conflicts.proposed_allocation: must be a "
                            "mapping {workflow_id, resources, files}");
    }
    request = ToJsonValue(proposed);
    // Seed 000's `files` are the paths the allocation would write.
    if (request.contains("files")) {
      Json files = request["files"];
      request.erase("files");
      if (request.contains("exclusive_access") &&
          request["exclusive_access"].is_array() && files.is_array()) {
        for (const Json& f : files) request["exclusive_access"].push_back(f);
      } else {
        request["exclusive_access"] = files;
      }
    }
    if (!request.contains("workflow_id")) request["workflow_id"] = "dry_run";
  }
  Duration horizon{0};
  if (op.node["time_horizon"]) {
    auto d = api::DurationFromJson(ToJsonValue(op.node["time_horizon"]),
                                   "check_conflicts.time_horizon");
    if (!d.ok()) {
      return InvalidRequest(Where(source_, op.node["time_horizon"]) +
                            d.status().message());
    }
    horizon = *d;
  }
  if (op.node["check_future"]) {
    const Json future = ToJsonValue(op.node["check_future"]);
    if (!future.is_boolean()) {
      return InvalidRequest(Where(source_, op.node["check_future"]) +
                            "check_conflicts.check_future: must be true or "
                            "false");
    }
    if (!future.get<bool>()) horizon = Duration(0);
  }
  auto req = api::RequestFromJson(request);
  if (!req.ok()) {
    PrintError("check_conflicts", "", req.status());
    return Status::Ok();
  }
  auto report = engine_->CheckConflicts(*req, horizon);
  Drain();
  if (!report.ok()) {
    PrintError("check_conflicts", "", report.status());
    return Status::Ok();
  }
  PrintResult("check_conflicts", "", api::ToJson(*report));
  return Status::Ok();
}

Status Simulation::DoResolveConflict(const Op& op) {
  static const std::vector<std::string> kKeys = {"conflict", "waiter",
                                                 "strategy", "by", "reason"};
  QM_RETURN_IF_ERROR(CheckKeys(op.node, "resolve_conflict", kKeys));
  const bool by_id = op.node.IsMap() && op.node["conflict"];
  const bool by_waiter = op.node.IsMap() && op.node["waiter"];
  if (by_id == by_waiter || !op.node["strategy"]) {
    return InvalidRequest(Where(source_, op.node) +
                          "resolve_conflict: needs {conflict: <conf id> or "
                          "waiter: <allocation id>, strategy}");
  }
  auto actor = ActorOf(op.node, "resolve_conflict");
  if (!actor.ok()) return actor.status();
  const YAML::Node strategy_node = op.node["strategy"];
  const std::string name =
      strategy_node.IsScalar() ? strategy_node.Scalar() : "";
  ResolveStrategy strategy;
  if (!ResolveStrategyFromName(name, &strategy)) {
    std::string msg =
        "strategy must be priority_based, queue_and_serialize or "
        "force_release, got \"" +
        name + "\"";
    const std::string guess = ClosestMatch(
        name, {"priority_based", "queue_and_serialize", "force_release"});
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    PrintError("resolve_conflict", "", InvalidRequest(msg));
    return Status::Ok();
  }
  std::string conflict_id, label;
  if (by_id) {
    const YAML::Node c = op.node["conflict"];
    if (!c.IsScalar() || c.Scalar().empty()) {
      return InvalidRequest(Where(source_, c) +
                            "resolve_conflict.conflict: must be a conflict "
                            "id such as conf_1");
    }
    conflict_id = c.Scalar();
  } else {
    auto waiter = AllocIdFor(op.node["waiter"], "resolve_conflict.waiter");
    if (!waiter.ok()) return waiter.status();
    label = Label(*waiter);
    for (const ConflictInfo& c : engine_->Conflicts()) {
      if (c.waiter == *waiter && c.status == "open") {
        conflict_id = c.id;
        break;
      }
    }
    if (conflict_id.empty()) {
      PrintError("resolve_conflict", label,
                 NotFound("no open conflict holds back " + label + " (" +
                          *waiter + ")"));
      return Status::Ok();
    }
  }
  auto r = engine_->ResolveConflict(conflict_id, strategy, *actor);
  Drain();
  if (!r.ok()) {
    PrintError("resolve_conflict", label, r.status());
    return Status::Ok();
  }
  PrintResult("resolve_conflict", label, api::ToJson(*r));
  return Status::Ok();
}

Status Simulation::DoPreventConflicts(const Op& op) {
  static const std::vector<std::string> kKeys = {
      "policy_type", "scope", "enforcement", "exceptions", "by", "reason"};
  QM_RETURN_IF_ERROR(CheckKeys(op.node, "prevent_conflicts", kKeys));
  if (!op.node.IsMap()) {
    return InvalidRequest(Where(source_, op.node) +
                          "prevent_conflicts: needs {policy_type, scope, "
                          "enforcement, exceptions}");
  }
  auto actor = ActorOf(op.node, "prevent_conflicts");
  if (!actor.ok()) return actor.status();
  Json j = ToJsonValue(op.node);
  j.erase("by");
  j.erase("reason");
  auto change = api::LockPolicyFromJson(j);
  if (!change.ok()) {
    PrintError("prevent_conflicts", "", change.status());
    return Status::Ok();
  }
  const Status s =
      engine_->SetLockPolicy(change->scope, change->policy, *actor);
  Drain();
  if (!s.ok()) {
    PrintError("prevent_conflicts", "", s);
    return Status::Ok();
  }
  Json result = {{"policy_type", "file_locking"}, {"scope", change->scope}};
  if (change->policy) {
    result["enforcement"] = LockEnforcementName(change->policy->enforcement);
    result["exceptions"] = change->policy->exceptions;
  } else {
    result["enforcement"] = "inherit";
  }
  PrintResult("prevent_conflicts", "", result);
  return Status::Ok();
}

Status Simulation::DoLockVerify(const Op& op) {
  QM_RETURN_IF_ERROR(
      CheckKeys(op.node, "lock_verify", {"path", "token", "id"}));
  const bool has_token = op.node.IsMap() && op.node["token"];
  const bool has_id = op.node.IsMap() && op.node["id"];
  if (!op.node.IsMap() || !op.node["path"] || has_token == has_id) {
    return InvalidRequest(Where(source_, op.node) +
                          "lock_verify: needs {path, token} or {path, id}");
  }
  const YAML::Node path = op.node["path"];
  if (!path.IsScalar()) {
    return InvalidRequest(Where(source_, path) +
                          "lock_verify.path: must be a path");
  }
  uint64_t token = 0;
  std::string label;
  if (has_token) {
    const Json t = ToJsonValue(op.node["token"]);
    if (!t.is_number_integer() || t.get<int64_t>() < 1) {
      return InvalidRequest(Where(source_, op.node["token"]) +
                            "lock_verify.token: must be a whole number >= 1 "
                            "(a fencing token)");
    }
    token = t.get<uint64_t>();
  } else {
    auto id = AllocIdFor(op.node, "lock_verify");
    if (!id.ok()) return id.status();
    label = Label(*id);
    auto info = engine_->Get(*id);
    if (!info.ok()) {
      PrintError("lock_verify", label, info.status());
      return Status::Ok();
    }
    token = info->fencing_token;
  }
  auto verdict = engine_->VerifyLock(path.Scalar(), token);
  Drain();
  if (!verdict.ok()) {
    PrintError("lock_verify", label, verdict.status());
    return Status::Ok();
  }
  PrintResult("lock_verify", label, api::ToJson(*verdict));
  return Status::Ok();
}

Status Simulation::DoReserve(const Op& op) {
  static const std::vector<std::string> kKeys = {
      "id",          "start",      "start_time", "duration",  "reservation_id",
      "workflow_id", "product",    "agent_type", "requester", "priority",
      "resources",   "recurrence", "until",      "metadata"};
  QM_RETURN_IF_ERROR(CheckKeys(op.node, "reserve", kKeys));
  if (!op.node.IsMap()) {
    return InvalidRequest(Where(source_, op.node) +
                          "reserve: needs {id, start, duration, resources, "
                          "workflow_id or product}");
  }
  if (op.node["start"] && op.node["start_time"]) {
    return InvalidRequest(Where(source_, op.node["start_time"]) +
                          "reserve: give start (an offset from the scenario "
                          "start) or start_time, not both");
  }
  std::string label;
  if (op.node["id"]) {
    if (!op.node["id"].IsScalar() || op.node["id"].Scalar().empty()) {
      return InvalidRequest(Where(source_, op.node["id"]) +
                            "reserve.id: must be a name");
    }
    label = op.node["id"].Scalar();
    if (res_by_label_.count(label) != 0) {
      return InvalidRequest(Where(source_, op.node["id"]) + "reserve: id \"" +
                            label + "\" is already used in this scenario");
    }
  }
  Json j = ToJsonValue(op.node);
  j.erase("id");
  j.erase("start");
  if (op.node["start"]) {
    auto t = ScenarioTime(op.node["start"], "reserve.start");
    if (!t.ok()) return t.status();
    j["start_time"] = *t;
  }
  if (op.node["until"] && !op.node["until"].IsNull()) {
    auto t = ScenarioTime(op.node["until"], "reserve.until");
    if (!t.ok()) return t.status();
    j["until"] = *t;
  }
  auto request = api::ReservationFromJson(j, clock_.Now());
  if (!request.ok()) {
    PrintError("reserve", label, request.status());
    return Status::Ok();
  }
  auto r = engine_->Reserve(*request);
  if (r.ok()) {
    if (label.empty()) label = r->id;
    res_labels_[r->id] = label;
    res_by_label_[label] = r->id;
  }
  Drain();
  if (!r.ok()) {
    PrintError("reserve", label, r.status());
    return Status::Ok();
  }
  PrintResult("reserve", label, api::ToJson(*r));
  return Status::Ok();
}

Status Simulation::DoCancelReservation(const Op& op) {
  if (op.node.IsMap()) {
    QM_RETURN_IF_ERROR(
        CheckKeys(op.node, "cancel_reservation", {"id", "by", "reason"}));
  }
  if (op.node.IsMap() && !op.node["id"]) {
    return InvalidRequest(Where(source_, op.node) +
                          "cancel_reservation: give the reservation's "
                          "scenario id");
  }
  const YAML::Node which = op.node.IsMap() ? op.node["id"] : op.node;
  auto id = ReservationIdFor(which, "cancel_reservation");
  if (!id.ok()) return id.status();
  auto actor = ActorOf(op.node, "cancel_reservation");
  if (!actor.ok()) return actor.status();
  auto r = engine_->CancelReservation(*id, *actor);
  Drain();
  if (!r.ok()) {
    PrintError("cancel_reservation", Label(*id), r.status());
    return Status::Ok();
  }
  PrintResult("cancel_reservation", Label(*id), api::ToJson(*r));
  return Status::Ok();
}

Status Simulation::ExpectConflicts(const YAML::Node& want) {
  static const std::vector<std::string> kKeys = {"open", "advisory",
                                                 "resolved"};
  if (!want.IsMap()) {
    return InvalidRequest(Where(source_, want) +
                          "expect.conflicts: must be a mapping {" +
                          Join(kKeys, ", ") + "}");
  }
  QM_RETURN_IF_ERROR(CheckKeys(want, "expect.conflicts", kKeys));
  std::map<std::string, int64_t> counts;
  for (const ConflictInfo& c : engine_->Conflicts()) ++counts[c.status];
  Json seen = Json::object();
  for (const auto& kv : want) {
    const std::string key = kv.first.as<std::string>();
    const Json w = ToJsonValue(kv.second);
    const std::string where =
        Where(source_, kv.first) + "expect: conflicts." + key;
    if (!w.is_number_integer() || w.get<int64_t>() < 0) {
      return InvalidRequest(where + " must be a whole number >= 0");
    }
    if (counts[key] != w.get<int64_t>()) {
      return Conflict(where + " is " + std::to_string(counts[key]) + " at " +
                      Offset(clock_.Now()) + ", expected " +
                      std::to_string(w.get<int64_t>()));
    }
    seen[key] = counts[key];
  }
  Line(Json{{"t", Offset(clock_.Now())}, {"expect", "ok"}, {"conflicts", seen}}
           .dump());
  return Status::Ok();
}

void Simulation::PrintReport(const std::string& report) {
  if (report == "costs") {
    Line(Json{{"t", Offset(clock_.Now())},
              {"costs", api::ToJson(engine_->Costs())}}
             .dump());
  } else if (report == "metrics") {
    Line(Json{{"t", Offset(clock_.Now())},
              {"metrics", api::ToJson(engine_->Metrics())}}
             .dump());
  } else if (report == "dashboard") {
    const Snapshot snap = engine_->GetSnapshot();
    Line(Json{{"t", Offset(clock_.Now())},
              {"dashboard", api::RenderCostDashboard(
                                engine_->Costs(), engine_->Metrics(), &snap)}}
             .dump());
  }
}

Status Simulation::Execute(const Op& op) {
  ++stats_.operations;
  if (op.kind == "allocate") return DoAllocate(op);
  if (op.kind == "allocate_batch") return DoAllocateBatch(op);
  if (op.kind == "advance") return Status::Ok();
  if (op.kind == "expect") return Expect(op);
  if (op.kind == "queue") {
    Json q = Json::array();
    for (const QueueEntry& e : engine_->Queue()) {
      Json j = api::ToJson(e);
      j["allocation_id"] = Label(e.id);
      q.push_back(j);
    }
    Json line = {{"t", Offset(clock_.Now())}, {"queue", q}};
    Line(line.dump());
    return Status::Ok();
  }
  if (op.kind == "usage") return DoUsage(op);
  if (op.kind == "extend") return DoExtend(op);
  if (op.kind == "pause" || op.kind == "resume" ||
      op.kind == "priority_override" || op.kind == "breaker_override" ||
      op.kind == "raise_limits") {
    return DoOperator(op);
  }
  if (op.kind == "costs" || op.kind == "metrics" || op.kind == "dashboard") {
    QM_RETURN_IF_ERROR(CheckKeys(op.node, op.kind, {}));
    PrintReport(op.kind);
    return Status::Ok();
  }
  if (op.kind == "check_conflicts") return DoCheckConflicts(op);
  if (op.kind == "resolve_conflict") return DoResolveConflict(op);
  if (op.kind == "prevent_conflicts") return DoPreventConflicts(op);
  if (op.kind == "lock_verify") return DoLockVerify(op);
  if (op.kind == "reserve") return DoReserve(op);
  if (op.kind == "cancel_reservation") return DoCancelReservation(op);
  if (op.kind == "conflicts") {
    QM_RETURN_IF_ERROR(CheckKeys(op.node, op.kind, {}));
    Json list = Json::array();
    for (const ConflictInfo& c : engine_->Conflicts()) {
      list.push_back(api::ToJson(c));
    }
    Line(Json{{"t", Offset(clock_.Now())}, {"conflicts", list}}.dump());
    return Status::Ok();
  }
  if (op.kind == "reservations") {
    QM_RETURN_IF_ERROR(CheckKeys(op.node, op.kind, {}));
    Json list = Json::array();
    for (const ReservationInfo& r : engine_->Reservations()) {
      Json j = api::ToJson(r);
      const std::string label = Label(r.id);
      if (label != r.id) j["id"] = label;
      list.push_back(j);
    }
    Line(Json{{"t", Offset(clock_.Now())}, {"reservations", list}}.dump());
    return Status::Ok();
  }
  if (op.kind == "snapshot") {
    Json line = {{"t", Offset(clock_.Now())},
                 {"snapshot", api::ToJson(engine_->GetSnapshot())}};
    Line(line.dump());
    return Status::Ok();
  }
  auto id = AllocIdFor(op.node, op.kind);
  if (!id.ok()) return id.status();
  StatusOr<AllocationInfo> r = Status::Ok();
  if (op.kind == "release") {
    UsageReport usage;
    if (op.node.IsMap()) {
      Json j = ToJsonValue(op.node);
      j.erase("id");
      auto u = api::UsageFromJson(j);
      if (!u.ok()) {
        return InvalidRequest(Where(source_, op.node) + u.status().message());
      }
      usage = *u;
    }
    r = engine_->Release(*id, usage);
  } else if (op.kind == "renew") {
    std::optional<Duration> ttl;
    if (op.node.IsMap() && op.node["ttl"]) {
      auto d = api::DurationFromJson(ToJsonValue(op.node["ttl"]), "ttl");
      if (!d.ok())
        return InvalidRequest(Where(source_, op.node) + d.status().message());
      ttl = *d;
    }
    r = engine_->Renew(*id, ttl);
  } else if (op.kind == "reallocate") {
    if (!op.node.IsMap() || !op.node["resources"]) {
      return InvalidRequest(Where(source_, op.node) +
                            "reallocate: needs {id, resources}");
    }
    auto amounts =
        api::AmountsFromJson(ToJsonValue(op.node["resources"]), "resources");
    if (!amounts.ok()) {
      PrintError("reallocate", Label(*id), amounts.status());
      return Status::Ok();
    }
    r = engine_->Reallocate(*id, *amounts);
  } else if (op.kind == "cancel") {
    r = engine_->Cancel(*id);
  }
  if (!r.ok()) PrintError(op.kind.c_str(), Label(*id), r.status());
  Drain();
  return Status::Ok();
}

void Simulation::Integrate(Time to) {
  if (to <= integrated_to_) return;
  const double minutes = (to - integrated_to_).count() / 60000.0;
  for (const auto& [name, amount] : in_use_) area_[name] += amount * minutes;
  for (const auto& [p, agents] : product_agents_) {
    agent_minutes_[p] += agents * minutes;
  }
  integrated_to_ = to;
}

// Prints the engine's events and updates the summary accumulators.
void Simulation::Drain() {
  for (const Event& e : sink_.events) {
    ++stats_.events;
    Integrate(e.time);
    ++decisions_[EventTypeName(e.type)];
    auto take = [&](const std::string& id) {
      auto info = engine_->Get(id);
      if (!info.ok()) return;
      Held h{info->resources, info->product, 0};
      for (const auto& [name, amount] : h.resources) {
        in_use_[name] += amount;
        if (name == "agents") h.agents = amount;
      }
      product_agents_[h.product] += h.agents;
      held_[id] = std::move(h);
    };
    auto drop = [&](const std::string& id) {
      auto it = held_.find(id);
      if (it == held_.end()) return;
      for (const auto& [name, amount] : it->second.resources) {
        in_use_[name] -= amount;
      }
      product_agents_[it->second.product] -= it->second.agents;
      held_.erase(it);
    };
    switch (e.type) {
      case EventType::kGranted: {
        take(e.allocation_id);
        auto info = engine_->Get(e.allocation_id);
        if (info.ok() && info->granted_at) {
          waits_[static_cast<int>(e.level)].push_back(
              (*info->granted_at - info->queued_at).count() / 60000.0);
        }
        auto spec = specs_.find(e.allocation_id);
        if (spec != specs_.end() && spec->second.run_for) {
          releases_.push(AutoRelease{e.time + *spec->second.run_for,
                                     ++release_seq_, e.allocation_id,
                                     e.fencing_token});
        }
        break;
      }
      case EventType::kReallocated:
        drop(e.allocation_id);
        take(e.allocation_id);
        break;
      case EventType::kReleased:
      case EventType::kFailed:
      case EventType::kExpired:
      case EventType::kPreempted:
        drop(e.allocation_id);
        break;
      default:
        // E.g. an over_budget stop that ends the allocation.
        if (!e.allocation_id.empty() && IsTerminal(e.status)) {
          drop(e.allocation_id);
        }
        break;
    }
    std::string line = "{\"t\":";
    AppendString(&line, Offset(e.time));
    line += ",\"event\":";
    AppendString(&line, EventTypeName(e.type));
    // Appends ,"key":"value" unless the value is empty.
    auto add = [&line](const char* key, const std::string& value) {
      if (value.empty()) return;
      line += ",\"";
      line += key;
      line += "\":";
      AppendString(&line, value);
    };
    if (api::IsReservationEvent(e.type)) {
      // The reservation's label and id (carried in allocation_id).
      if (!e.allocation_id.empty()) {
        add("id", Label(e.allocation_id));
        add("reservation", e.allocation_id);
      }
      add("reason", e.reason);
      add("actor", e.actor);
      Line(line + "}");
      continue;
    }
    if (e.allocation_id.empty()) {
      // Operator, period budget and breaker events concern no allocation.
      add("product", e.product);
      add("agent_type", e.agent_type);
      add("actor", e.actor);
      add("reason", e.reason);
      Line(line + "}");
      continue;
    }
    add("id", Label(e.allocation_id));
    add("alloc", e.allocation_id);
    add("status", AllocStatusName(e.status));
    add("priority", LevelName(e.level));
    if (e.score) {
      line += ",\"score\":";
      line += FormatNumber(api::Round6(*e.score));
    }
    add("reason", e.reason);
    add("actor", e.actor);
    Line(line + "}");
  }
  sink_.events.clear();
}

void Simulation::PrintSummary() {
  Json s;
  s["scenario"] = name_;
  s["end"] = Offset(clock_.Now());
  s["events"] = stats_.events;
  Json d = Json::object();
  for (const auto& [k, v] : decisions_) d[k] = v;
  s["decisions"] = d;
  Json waits = Json::object();
  for (int l = kNumLevels - 1; l >= 0; --l) {
    std::vector<double> w = waits_[l];
    if (w.empty()) continue;
    std::sort(w.begin(), w.end());
    auto pct = [&](double p) {
      const size_t rank = static_cast<size_t>(std::ceil(p * w.size()));
      return api::Round6(w[std::max<size_t>(rank, 1) - 1]);
    };
    waits[LevelName(static_cast<Level>(l))] = {{"count", w.size()},
                                               {"p50", pct(0.5)},
                                               {"p95", pct(0.95)},
                                               {"max", api::Round6(w.back())}};
  }
  s["wait_minutes"] = waits;
  Json util = Json::object();
  const double total = (clock_.Now() - start_).count() / 60000.0;
  const Snapshot snap = engine_->GetSnapshot();
  for (const ResourceUsage& r : snap.resources) {
    auto it = area_.find(r.name);
    if (it == area_.end() || r.capacity <= 0 || total <= 0) continue;
    util[r.name] = api::Round6(100.0 * it->second / (r.capacity * total));
  }
  s["utilization_percent"] = util;
  Json am = Json::object();
  for (const auto& [p, m] : agent_minutes_) am[p] = api::Round6(m);
  s["agent_minutes"] = am;
  s["final"] = {{"active", snap.active}, {"queued", snap.queued}};
  const CostReport costs = engine_->Costs();
  if (costs.tokens_used > 0 || costs.cost_usd > 0 || !costs.alerts.empty() ||
      costs.breaker.open || costs.paused) {
    s["spend"] = {{"tokens_used", costs.tokens_used},
                  {"cost_usd", api::Round6(costs.cost_usd)},
                  {"alerts", costs.alerts.size()},
                  {"breaker_open", costs.breaker.open},
                  {"paused", costs.paused}};
  }
  Line(Json{{"summary", s}}.dump());
}

Status Simulation::Run(const YAML::Node& root, RunStats* stats,
                       const RunOptions& options) {
  if (!options.report.empty() && options.report != "costs" &&
      options.report != "metrics" && options.report != "dashboard") {
    return InvalidRequest("report: must be costs, metrics or dashboard, got " +
                          Quote(options.report));
  }
  QM_RETURN_IF_ERROR(Parse(root));
  clock_.Set(start_);
  integrated_to_ = start_;
  auto engine = Engine::Create(config_, &clock_, &sink_);
  if (!engine.ok()) return engine.status();
  engine_ = std::move(*engine);
  size_t next_op = 0;
  const std::optional<Time> until =
      until_ ? std::optional<Time>(start_ + *until_) : std::nullopt;
  while (true) {
    std::optional<Time> next;
    if (next_op < ops_.size()) next = start_ + ops_[next_op].at;
    if (!releases_.empty() && (!next || releases_.top().at <= *next)) {
      next = releases_.top().at;
    }
    // Engine deadlines (expiries, grace periods) matter while a timeline or
    // an automatic release is pending, or up to `until`.
    const std::optional<Time> deadline = engine_->NextDeadline();
    if (deadline && (next || until) && (!next || *deadline < *next)) {
      next = deadline;
    }
    if (!next) break;
    if (until && *next > *until) break;
    clock_.Set(std::max(*next, clock_.Now()));
    if (!releases_.empty() && releases_.top().at <= clock_.Now()) {
      const AutoRelease r = releases_.top();
      releases_.pop();
      ++stats_.operations;
      const AllocSpec& spec = specs_[r.alloc];
      auto info = engine_->Get(r.alloc);
      if (info.ok() && info->fencing_token == r.fencing &&
          (info->status == AllocStatus::kActive ||
           (info->status == AllocStatus::kPreempted &&
            info->preempt_deadline))) {
        auto res = engine_->Release(r.alloc, spec.usage);
        if (!res.ok()) PrintError("release", Label(r.alloc), res.status());
      }
      Drain();
      continue;
    }
    if (next_op < ops_.size() && start_ + ops_[next_op].at <= clock_.Now()) {
      engine_->Tick();
      Drain();
      const Status s = Execute(ops_[next_op++]);
      if (!s.ok()) {
        Drain();
        return s;
      }
      continue;
    }
    engine_->Tick();
    Drain();
    // A Tick handles everything due by now; a deadline still due would make
    // this loop spin forever, so stop with the engine's bug instead.
    const std::optional<Time> after = engine_->NextDeadline();
    if (after && *after <= clock_.Now()) {
      return Internal("engine: deadline " + FormatTime(*after) +
                      " is still due after a Tick at " +
                      FormatTime(clock_.Now()) + " (offset " +
                      Offset(clock_.Now()) + "); this is a bug in qm");
    }
  }
  if (until && clock_.Now() < *until) {
    clock_.Set(*until);
    engine_->Tick();
    Drain();
  }
  Integrate(clock_.Now());
  PrintSummary();
  if (options.report == "dashboard") {
    const Snapshot snap = engine_->GetSnapshot();
    out_ << api::RenderCostDashboard(engine_->Costs(), engine_->Metrics(),
                                     &snap);
  } else if (!options.report.empty()) {
    Line(Json{{options.report, options.report == "costs"
                                   ? api::ToJson(engine_->Costs())
                                   : api::ToJson(engine_->Metrics())}}
             .dump());
  }
  if (stats) *stats = stats_;
  return Status::Ok();
}

}  // namespace

Status RunScenarioString(const std::string& yaml, const std::string& source,
                         const std::string& base_dir, std::ostream& out,
                         RunStats* stats, const RunOptions& options) {
  // YAML text is UTF-8; names read from it end up in JSON output.
  if (size_t bad = 0; !IsUtf8(yaml, &bad)) {
    const size_t line_start = yaml.rfind('\n', bad);
    return InvalidRequest(
        source + ":" +
        std::to_string(std::count(yaml.begin(), yaml.begin() + bad, '\n') + 1) +
        ":" +
        std::to_string(
            (line_start == std::string::npos ? bad : bad - line_start - 1) +
            1) +
        ": not UTF-8 text");
  }
  try {
    const YAML::Node root = YAML::Load(yaml);
    Simulation sim(source, base_dir, yaml, out);
    return sim.Run(root, stats, options);
  } catch (const YAML::Exception& e) {
    return InvalidRequest(source + ":" + std::to_string(e.mark.line + 1) + ":" +
                          std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

Status RunScenarioFile(const std::string& path, std::ostream& out,
                       RunStats* stats, const RunOptions& options) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read scenario file " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  std::string dir = ".";
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) dir = path.substr(0, slash);
  if (slash == 0) dir = "/";
  return RunScenarioString(buf.str(), path, dir, out, stats, options);
}

}  // namespace qm::sim
