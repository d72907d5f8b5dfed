// Engine state snapshots: SaveState, Restore and StateDigest
// (docs/durability.md). A restored engine must answer every later call
// exactly as the engine it was saved from: same results, same events (every
// field), same state, byte for byte. Damaged bytes are DATA_LOSS and never
// crash; a different config is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/paths.h"
#include "core/state_codec.h"
#include "qm/engine.h"
#include "tests/core/engine_test_util.h"
#include "tests/core/random_ops.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using testing_util::RandomOps;
using testing_util::RecordingSink;
using testing_util::Req;
using testing_util::TestStart;

// ---- Everything a caller can see, as text (doubles exactly) ----

std::string Num(double d) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%a", d);
  return buf;
}
std::string Ms(Time t) { return std::to_string(t.time_since_epoch().count()); }
std::string Show(const std::optional<Time>& t) { return t ? Ms(*t) : "-"; }
std::string Show(const std::optional<double>& d) { return d ? Num(*d) : "-"; }
std::string Show(const std::optional<int64_t>& v) {
  return v ? std::to_string(*v) : "-";
}
std::string Show(const std::vector<std::string>& v) {
  std::string s = "[";
  for (const std::string& x : v) s += x + ";";
  return s + "]";
}
std::string Show(const ResourceAmounts& v) {
  std::string s = "{";
  for (const auto& [name, amount] : v) s += name + "=" + Num(amount) + ",";
  return s + "}";
}

std::string Show(const Status& s) {
  std::string out = std::string(CodeName(s.code())) + ": " + s.message();
  if (!s.details().empty()) out += " {" + s.details() + "}";
  out += Show(s.affected_resources()) + Show(s.alternatives());
  for (const auto& [k, v] : s.context()) out += " " + k + "=" + v;
  return out;
}

std::string Show(const UsageReport& u) {
  return u.report_id + "|" + Show(u.tokens) + "|" + Show(u.input_tokens) + "|" +
         Show(u.output_tokens) + "|" + Show(u.cached_input_tokens) + "|" +
         Show(u.cost_usd) + "|" + u.model + "|" +
         std::to_string(static_cast<int>(u.outcome));
}

std::string Show(const AllocationInfo& i) {
  const BudgetInfo& b = i.budget;
  std::string s =
      i.id + " " + AllocStatusName(i.status) + " wf=" + i.workflow_id +
      " req=" + i.requester + " p=" + i.product + " t=" + i.agent_type +
      " lvl=" + LevelName(i.level) + "/" + std::to_string(i.priority_value) +
      " pre=" + std::to_string(i.preemptible) + Show(i.resources) +
      " fence=" + std::to_string(i.fencing_token) + " q=" + Ms(i.queued_at) +
      " g=" + Show(i.granted_at) + " x=" + Show(i.expires_at) +
      " e=" + Show(i.ended_at) + " why=" + i.reason_queued +
      " start=" + Show(i.expected_start) + " score=" + Show(i.score) +
      " dl=" + Show(i.preempt_deadline) + " est=" + Show(i.estimated_tokens) +
      "/" + Show(i.estimated_minutes) +
      " usage=" + (i.usage ? Show(*i.usage) : "-") + " meta=" + i.metadata +
      " key=" + i.idempotency_key;
  s += " budget=" + b.model + "|" + b.model_reason + "|" + b.downgraded_from +
       "|" + Show(b.max_tokens) + "|" + Show(b.max_tokens_limit) + "|" +
       std::to_string(b.reserved_tokens) + "|" +
       std::to_string(b.reserved_tokens_left) + "|" + Num(b.reserved_usd) +
       "|" + Num(b.reserved_usd_left) + "|" + std::to_string(b.used_tokens) +
       "|" + Num(b.used_usd) + "|" + std::to_string(b.over_budget) + "|" +
       b.accuracy;
  s += " locks=";
  for (const PathLockInfo& l : i.locks) {
    s += std::string(l.path) + (l.exclusive ? "!" : "?") + ",";
  }
  s += " avoid=" + Show(i.conflict_avoidance) + " res=" + i.reservation_id +
       " warn=" + Show(i.warnings);
  return s;
}

std::string Show(const Event& e) {
  return std::to_string(e.seq) + " " + Ms(e.time) + " " +
         EventTypeName(e.type) + " " + e.allocation_id + " " +
         AllocStatusName(e.status) +
         " fence=" + std::to_string(e.fencing_token) +
         " score=" + Show(e.score) + " p=" + e.product + " t=" + e.agent_type +
         " " + LevelName(e.level) + " actor=" + e.actor + " : " + e.reason;
}

std::string Show(const ConflictInfo& c) {
  return c.id + "|" + c.type + "|" + c.severity + "|" + c.message + "|" +
         c.recommended_action + "|" + c.subject + "|" + c.holder + "|" +
         Show(c.since) + "|" + Show(c.expected_release) + "|" +
         Show(c.starts_at) + "|" + c.waiter + "|" + c.status + "|" +
         c.resolution + "|" + Ms(c.detected_at) + "|" + Show(c.resolved_at);
}

std::string Show(const ReservationInfo& r) {
  return r.id + "|" + r.workflow_id + "|" + r.product + "|" + r.agent_type +
         "|" + r.requester + "|" + LevelName(r.level) + "/" +
         std::to_string(r.priority_value) + Show(r.resources) + "|" +
         Ms(r.start_time) + "|" + std::to_string(r.duration.count()) + "|" +
         r.recurrence + "|" + Show(r.until) + "|" + r.status + "|" +
         Show(r.window_start) + "|" + Show(r.window_end) + "|" +
         Show(r.grace_ends_at) + "|" + std::to_string(r.grace_over) +
         Show(r.claimed) + Show(r.holders) + Show(r.warnings) + r.metadata;
}

std::string Show(const LockVerdict& v) {
  std::string s = v.path + "|" + std::to_string(v.token) + "|" +
                  std::to_string(v.valid) + "|" + v.holder + "|" +
                  std::to_string(v.exclusive) + "|" + v.message + "|";
  for (const auto& [h, t] : v.holders) s += h + ":" + std::to_string(t) + ",";
  return s;
}

// Every read-only view of the engine.
std::string View(const Engine& e) {
  std::string s;
  const Snapshot snap = e.GetSnapshot();
  s += "snapshot " + Ms(snap.time);
  for (const ResourceUsage& r : snap.resources) {
    s += " " + r.name + ":" + Num(r.capacity) + "/" + Num(r.allocated) + "/" +
         Num(r.reserved) + "/" + Num(r.available) + "/" +
         Num(r.utilization_percent);
  }
  for (const auto* groups : {&snap.agent_types, &snap.products}) {
    for (const GroupUsage& g : *groups) {
      s += " " + g.name + ":" + Num(g.running_agents) + "/" + Show(g.limit) +
           "/" + std::to_string(g.queued) + "/" + Num(g.decayed_agent_minutes) +
           "/" + Num(g.share);
    }
  }
  s += " " + std::to_string(snap.active) + "/" + std::to_string(snap.queued) +
       "/" + std::to_string(snap.preempting) + " oldest=" +
       (snap.oldest_wait ? std::to_string(snap.oldest_wait->count()) : "-");
  s += "\nqueue";
  for (const QueueEntry& q : e.Queue()) {
    s += " " + q.id + ":" + Num(q.score) + "/" + Num(q.priority_factor) + "/" +
         Num(q.wait_factor) + "/" + Num(q.blocking_factor) + "/" +
         Num(q.fair_share_factor) + "/" + std::to_string(q.waited.count()) +
         "/" + q.reason_queued;
  }
  const CostReport c = e.Costs();
  s += "\ncosts " + Ms(c.period_start) + "-" + Ms(c.period_end) + " " +
       std::to_string(c.tokens_used) + "/" + std::to_string(c.tokens_reserved) +
       "/" + Num(c.cost_usd) + "/" + Num(c.cost_reserved_usd) + "/" +
       Show(c.token_limit) + "/" + Show(c.cost_limit_usd) + "/" +
       Num(c.burn_rate_usd_per_hour) + "/" + Num(c.burn_rate_tokens_per_hour) +
       "/" + Num(c.projected_cost_usd) + "/" +
       std::to_string(c.projected_tokens);
  for (const BudgetAlert& a : c.alerts) {
    s += " alert " + Ms(a.time) + " " + a.budget + " " +
         Num(a.threshold_percent) + " " + a.message;
  }
  for (const auto* lines : {&c.models, &c.products, &c.agent_types}) {
    for (const SpendLine& l : *lines) {
      s += " " + l.name + ":" + std::to_string(l.tasks) + "/" +
           std::to_string(l.tokens) + "/" + Num(l.cost_usd) + "/" +
           Num(l.token_share);
    }
  }
  for (const BudgetLine& b : c.budgets) {
    s += " " + b.scope + ":" + b.name + ":" + Show(b.token_limit) + "/" +
         Show(b.cost_limit_usd) + "/" + std::to_string(b.tokens_used) + "/" +
         std::to_string(b.tokens_reserved) + "/" + Num(b.cost_used_usd) + "/" +
         Num(b.cost_reserved_usd);
  }
  const BreakerState& br = c.breaker;
  s += " breaker " + std::to_string(br.open) + br.action + br.condition +
       Show(br.tripped_at) + Show(br.closes_at) +
       std::to_string(br.overridden) + br.override_by + br.override_reason;
  s += " paused " + std::to_string(c.paused) + c.paused_by + c.paused_reason;
  for (const auto& [product, level] : c.priority_overrides) {
    s += " override " + product + "=" + LevelName(level);
  }
  const MetricsReport m = e.Metrics();
  s += "\nmetrics " + Ms(m.since) + " " + std::to_string(m.tasks_completed) +
       "/" + Num(m.cost_per_task) + "/" + Num(m.tokens_per_task) + "/" +
       Num(m.tasks_per_dollar) + "/" + std::to_string(m.tasks_started) + "/" +
       Num(m.avg_wait_minutes) + "/" + Num(m.max_wait_minutes) + "/" +
       Num(m.tasks_that_waited);
  for (const auto& u : m.agent_utilization) {
    s += " " + u.agent_type + ":" + Num(u.utilization) + "/" + Num(u.limit);
  }
  for (const LearnedEstimate& l : m.estimates) {
    s += " learned " + l.agent_type + ":" + std::to_string(l.samples) + "/" +
         Num(l.token_ratio) + "/" + Num(l.minute_ratio) + "/" + l.accuracy;
  }
  s += Show(m.recommendations);
  s += "\nconflicts";
  for (const ConflictInfo& x : e.Conflicts()) s += "\n  " + Show(x);
  s += "\nreservations";
  for (const ReservationInfo& r : e.Reservations()) s += "\n  " + Show(r);
  s += "\nnext " + Show(e.NextDeadline());
  return s;
}

// ---- Random operations, as data, for two engines ----

// What an operation answered, as text, and the allocations it created.
struct Answer {
  std::string text;
  std::vector<std::string> ids;
};

template <typename T>
std::string ShowOr(const StatusOr<T>& r,
                   const std::function<std::string(const T&)>& show) {
  return r.ok() ? "OK " + show(*r) : Show(r.status());
}

// One operation: the clock advances by `advance`, then `run` calls the
// engine. The same Op applied to two engines in the same state must give
// the same Answer.
struct Op {
  std::string what;
  Duration advance{};
  std::function<Answer(Engine&)> run;
};

// The operation mix of invariants_test's RunRandom (its `money` and `locks`
// variants), drawing allocation ids from what the engine answered.
class OpStream {
 public:
  OpStream(uint64_t seed, bool money, bool locks)
      : r_(seed, locks), money_(money), locks_(locks) {}

  void Note(const std::vector<std::string>& new_ids) {
    ids_.insert(ids_.end(), new_ids.begin(), new_ids.end());
    if (ids_.size() > 400) ids_.erase(ids_.begin(), ids_.begin() + 200);
  }

  // The next operation; `a` (the reference engine) is read for choices
  // that depend on its state (open conflicts, fencing tokens).
  Op Next(const Engine& a) {
    const int kind = r_.Int(0, 99);
    if (kind < 40) {
      AllocationRequest req = r_.Request();
      return {"allocate", {}, [req](Engine& e) {
                auto x = e.Allocate(req);
                Answer o;
                o.text = x.ok() ? "OK " + Show(x->allocation) +
                                      (x->replayed ? " replayed" : "")
                                : Show(x.status());
                if (x.ok()) o.ids.push_back(x->allocation.id);
                return o;
              }};
    }
    if (kind < 45) {
      std::vector<AllocationRequest> batch;
      for (int i = r_.Int(1, 4); i > 0; --i) batch.push_back(r_.Request());
      const bool all = r_.Chance(0.5);
      return {"batch", {}, [batch, all](Engine& e) {
                auto x = e.AllocateBatch(batch, all);
                Answer o;
                if (!x.ok()) {
                  o.text = Show(x.status());
                  return o;
                }
                o.text = "OK";
                for (const AllocateResult& a : *x) {
                  o.text += "\n  " + Show(a.allocation) +
                            (a.replayed ? " replayed" : "");
                  o.ids.push_back(a.allocation.id);
                }
                return o;
              }};
    }
    if (kind < 70 && !ids_.empty()) {
      UsageReport u;
      u.tokens = r_.Int(-2, 100000);
      u.outcome = r_.Chance(0.1) ? Outcome::kFailure : Outcome::kSuccess;
      if (r_.Chance(0.3)) u.report_id = "r" + std::to_string(r_.Int(0, 5));
      const std::string id = Pick();
      if (money_ && r_.Chance(0.5)) {
        return {"report " + id, {}, [id, u](Engine& e) {
                  return Answer{ShowInfo(e.ReportUsage(id, u)), {}};
                }};
      }
      return {"release " + id, {}, [id, u](Engine& e) {
                return Answer{ShowInfo(e.Release(id, u)), {}};
              }};
    }
    if (kind < 78 && !ids_.empty()) {
      const std::string id = Pick();
      std::optional<Duration> ttl;
      if (r_.Chance(0.3)) ttl = minutes(r_.Int(1, 60));
      return {"renew " + id, {}, [id, ttl](Engine& e) {
                return Answer{ShowInfo(e.Renew(id, ttl)), {}};
              }};
    }
    if (kind < 84 && !ids_.empty()) {
      ResourceAmounts change = {{"cpu_cores", r_.Int(-1, 8) * 0.5}};
      if (r_.Chance(0.3)) change.push_back({"agents", r_.Int(0, 3)});
      const std::string id = Pick();
      return {"reallocate " + id, {}, [id, change](Engine& e) {
                return Answer{ShowInfo(e.Reallocate(id, change)), {}};
              }};
    }
    if (kind < 90 && !ids_.empty()) {
      const std::string id = Pick();
      return {"cancel " + id, {}, [id](Engine& e) {
                return Answer{ShowInfo(e.Cancel(id)), {}};
              }};
    }
    if (locks_ && kind < 95 && !ids_.empty()) return LockOp(a);
    if (money_ && kind < 95 && !ids_.empty()) return MoneyOp();
    return {"tick", seconds(r_.Int(1, 1200)), [](Engine& e) {
              e.Tick();
              return Answer{"ticked", {}};
            }};
  }

 private:
  static std::string ShowInfo(const StatusOr<AllocationInfo>& x) {
    return x.ok() ? "OK " + Show(*x) : Show(x.status());
  }
  static Answer Plain(const Status& s) { return {Show(s), {}}; }

  std::string Pick() { return ids_[r_.Int(0, int(ids_.size()) - 1)]; }

  Op LockOp(const Engine& a) {
    switch (r_.Int(0, 6)) {
      case 5: {
        ReservationRequest q;
        q.workflow_id = "wf" + std::to_string(r_.Int(0, 30));
        // Relative to the clock when the operation runs (both engines'
        // clocks agree then).
        const int start_min = r_.Int(-1, 120);
        q.duration = minutes(r_.Int(0, 90));
        q.resources = {{"agents", r_.Int(0, 5)}};
        if (r_.Chance(0.3)) q.resources.push_back({"cpu_cores", 1});
        if (r_.Chance(0.3)) q.agent_type = "t" + std::to_string(r_.Int(0, 5));
        if (r_.Chance(0.2)) q.recurrence = "daily";
        q.start_time = a.GetSnapshot().time + minutes(start_min);
        return {
            "reserve", {}, [q](Engine& e) {
              auto x = e.Reserve(q);
              return Answer{x.ok() ? "OK " + Show(*x) : Show(x.status()), {}};
            }};
      }
      case 6: {
        const std::string id = "res_" + std::to_string(r_.Int(1, 40));
        return {
            "cancel reservation " + id, {}, [id](Engine& e) {
              auto x = e.CancelReservation(id, {"op", ""});
              return Answer{x.ok() ? "OK " + Show(*x) : Show(x.status()), {}};
            }};
      }
      case 0: {
        const AllocationRequest req = r_.Request();
        const Duration horizon = minutes(r_.Int(0, 60));
        return {"check conflicts", {}, [req, horizon](Engine& e) {
                  auto x = e.CheckConflicts(req, horizon);
                  if (!x.ok()) return Answer{Show(x.status()), {}};
                  std::string s = "OK " + x->outcome + "|" + x->reason;
                  for (const ConflictInfo& c : x->conflicts) {
                    s += "\n  " + Show(c);
                  }
                  return Answer{s, {}};
                }};
      }
      case 1: {
        const std::vector<ConflictInfo> all = a.Conflicts();
        if (all.empty()) break;
        static const ResolveStrategy kStrategies[] = {
            ResolveStrategy::kPriorityBased,
            ResolveStrategy::kQueueAndSerialize,
            ResolveStrategy::kForceRelease};
        const std::string id = all[r_.Int(0, int(all.size()) - 1)].id;
        const ResolveStrategy strategy = kStrategies[r_.Int(0, 2)];
        const Actor actor{r_.Chance(0.8) ? "op" : "", "test"};
        return {
            "resolve " + id, {}, [=](Engine& e) {
              auto x = e.ResolveConflict(id, strategy, actor);
              return Answer{x.ok() ? "OK " + Show(*x) : Show(x.status()), {}};
            }};
      }
      case 2: {
        LockPolicy p;
        p.enforcement = r_.Chance(0.7) ? LockEnforcement::kStrict
                                       : LockEnforcement::kAdvisory;
        if (r_.Chance(0.3)) p.exceptions = {"read_only_operations"};
        const std::string scope =
            r_.Chance(0.5) ? "global" : "p" + std::to_string(r_.Int(0, 3));
        const std::optional<LockPolicy> policy =
            r_.Chance(0.2) ? std::nullopt : std::optional(p);
        return {"lock policy " + scope, {}, [=](Engine& e) {
                  return Plain(e.SetLockPolicy(scope, policy, {"op", "test"}));
                }};
      }
      default: {
        auto got = a.Get(Pick());
        if (!got.ok()) break;
        const uint64_t token = got->fencing_token;
        return {
            "verify lock", {}, [token](Engine& e) {
              auto x = e.VerifyLock("src/a.cc", token);
              return Answer{x.ok() ? "OK " + Show(*x) : Show(x.status()), {}};
            }};
      }
    }
    return {"tick", seconds(r_.Int(1, 1200)), [](Engine& e) {
              e.Tick();
              return Answer{"ticked", {}};
            }};
  }

  Op MoneyOp() {
    const Actor actor{"op", "test"};
    switch (r_.Int(0, 6)) {
      case 0: {
        const std::string id = Pick();
        const int64_t tokens = r_.Int(-1, 150000);
        return {"extend " + id, {}, [id, tokens](Engine& e) {
                  return Answer{ShowInfo(e.ExtendTokens(id, tokens)), {}};
                }};
      }
      case 1:
        return {
            "pause", {}, [actor](Engine& e) { return Plain(e.Pause(actor)); }};
      case 3: {
        static const std::optional<Level> kLevels[] = {
            std::nullopt, Level::kLow, Level::kHigh, Level::kCritical};
        const std::string product = "p" + std::to_string(r_.Int(0, 3));
        const std::optional<Level> level = kLevels[r_.Int(0, 3)];
        return {"priority " + product, {}, [=](Engine& e) {
                  return Plain(e.SetPriorityOverride(product, level, actor));
                }};
      }
      case 4:
        return {"override breaker", {}, [actor](Engine& e) {
                  return Plain(e.OverrideBreaker(actor));
                }};
      case 5: {
        const int64_t tokens = r_.Int(-1, 5000000);
        std::optional<double> usd;
        if (r_.Chance(0.3)) usd = r_.Int(1, 20);
        return {"raise limits", {}, [=](Engine& e) {
                  return Plain(e.RaiseLimits(tokens, usd, actor));
                }};
      }
      default:
        return {"resume", {}, [actor](Engine& e) {
                  return Plain(e.Resume(actor));
                }};
    }
  }

  RandomOps r_;
  bool money_, locks_;
  std::vector<std::string> ids_;
};

// An engine on its own manual clock, recording its events.
struct Side {
  Side() : clock(TestStart()), sink(&events) {}
  ManualClock clock;
  std::vector<Event> events;
  RecordingSink sink;
  std::unique_ptr<Engine> engine;
};

std::unique_ptr<Side> Fresh(const Config& config) {
  auto s = std::make_unique<Side>();
  auto e = Engine::Create(config, &s->clock, &s->sink);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (e.ok()) s->engine = std::move(e).value();
  return s;
}

// `from`'s state restored into a new engine whose clock reads the same.
std::unique_ptr<Side> Restored(const Config& config, const Side& from) {
  auto s = std::make_unique<Side>();
  s->clock.Set(from.clock.Now());
  auto e =
      Engine::Restore(config, &s->clock, &s->sink, from.engine->SaveState());
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (e.ok()) s->engine = std::move(e).value();
  return s;
}

// The events of `a` from `ea` on and those of `b` from `eb` on are the same,
// every field.
::testing::AssertionResult SameEvents(const Side& a, size_t ea, const Side& b,
                                      size_t eb) {
  if (a.events.size() - ea != b.events.size() - eb) {
    std::string s =
        "event counts differ: " + std::to_string(a.events.size() - ea) +
        " vs " + std::to_string(b.events.size() - eb) + "\noriginal:";
    for (size_t i = ea; i < a.events.size(); ++i)
      s += "\n  " + Show(a.events[i]);
    s += "\nrestored:";
    for (size_t i = eb; i < b.events.size(); ++i)
      s += "\n  " + Show(b.events[i]);
    return ::testing::AssertionFailure() << s;
  }
  for (size_t i = 0; ea + i < a.events.size(); ++i) {
    const std::string x = Show(a.events[ea + i]), y = Show(b.events[eb + i]);
    if (x != y) {
      return ::testing::AssertionFailure()
             << "event " << i << " differs:\n  original: " << x
             << "\n  restored: " << y;
    }
  }
  return ::testing::AssertionSuccess();
}

// Right after a restore: nothing emitted, the same bytes, digest and views.
::testing::AssertionResult SameAfterRestore(const Side& a, const Side& b) {
  if (!b.engine) return ::testing::AssertionFailure() << "restore failed";
  if (!b.events.empty()) {
    return ::testing::AssertionFailure()
           << "restore emitted " << b.events.size() << " events, first "
           << Show(b.events[0]);
  }
  if (b.engine->SaveState() != a.engine->SaveState()) {
    return ::testing::AssertionFailure()
           << "the restored engine saves different bytes";
  }
  if (b.engine->StateDigest() != a.engine->StateDigest()) {
    return ::testing::AssertionFailure() << "digests differ";
  }
  const std::string va = View(*a.engine), vb = View(*b.engine);
  if (va != vb) {
    return ::testing::AssertionFailure()
           << "views differ:\noriginal: " << va << "\nrestored: " << vb;
  }
  const Status inv = b.engine->CheckInvariants();
  if (!inv.ok()) return ::testing::AssertionFailure() << inv.ToString();
  return ::testing::AssertionSuccess();
}

// The features in use in an engine's state, by name.
std::set<std::string> Features(const Engine& e) {
  std::set<std::string> f;
  const Snapshot snap = e.GetSnapshot();
  if (snap.active > 0) f.insert("active");
  if (snap.queued > 0) f.insert("queued");
  if (snap.preempting > 0) f.insert("preempting");
  for (const QueueEntry& q : e.Queue()) {
    if (q.reason_queued.find(" lock on ") != std::string::npos) {
      f.insert("gated on a lock");
    }
    if (q.reason_queued.find("waiting for workflow") != std::string::npos) {
      f.insert("gated on a workflow");
    }
  }
  for (const ConflictInfo& c : e.Conflicts()) {
    f.insert(c.status + " conflict");
  }
  for (const ReservationInfo& r : e.Reservations()) {
    f.insert(r.status + " reservation");
    if (!r.holders.empty()) f.insert("claimed reservation");
  }
  const CostReport c = e.Costs();
  if (!c.alerts.empty()) f.insert("alerts");
  if (c.breaker.open) f.insert("breaker open");
  if (c.paused) f.insert("paused");
  if (!c.priority_overrides.empty()) f.insert("priority override");
  if (c.tokens_used > 0) f.insert("spend");
  return f;
}

// What RunEquivalence did: how many restores, and the features in use at
// one restore or another.
struct Run {
  int restores = 0;
  std::set<std::string> seen;
};

// Runs `steps` random operations on an engine; at random points restores
// its state into a second engine, which from then on gets the same
// operations at the same times: every answer, every event and the state
// digest after each operation must be the same (and every read-only view,
// now and then).
Run RunEquivalence(const Config& config, uint64_t seed, int steps, bool money,
                   bool locks) {
  Run run;
  auto a = Fresh(config);
  std::unique_ptr<Side> b;
  OpStream ops(seed, money, locks);
  std::mt19937_64 rng(seed * 7919 + 1);
  auto gap = [&] { return std::uniform_int_distribution<int>(20, 350)(rng); };
  int next_restore = gap();
  int& restores = run.restores;
  for (int step = 0; step < steps; ++step) {
    if (step == next_restore) {
      b = Restored(config, *a);
      const auto same = SameAfterRestore(*a, *b);
      EXPECT_TRUE(same) << "restore at step " << step;
      if (!same) return run;
      ++restores;
      next_restore = step + gap();
      const std::set<std::string> f = Features(*a->engine);
      run.seen.insert(f.begin(), f.end());
    }
    const Op op = ops.Next(*a->engine);
    a->clock.Advance(op.advance);
    const size_t ea = a->events.size();
    const Answer ra = op.run(*a->engine);
    ops.Note(ra.ids);
    if (b) {
      b->clock.Set(a->clock.Now());
      const size_t eb = b->events.size();
      const Answer rb = op.run(*b->engine);
      const std::string where = "step " + std::to_string(step) + " (" +
                                op.what + ", " + std::to_string(restores) +
                                " restores)";
      EXPECT_EQ(ra.text, rb.text) << where;
      const auto events = SameEvents(*a, ea, *b, eb);
      EXPECT_TRUE(events) << where;
      const std::string da = a->engine->StateDigest();
      const std::string db = b->engine->StateDigest();
      EXPECT_EQ(da, db) << where;
      if (step % 20 == 0) {
        EXPECT_EQ(View(*a->engine), View(*b->engine)) << where;
      }
      if (ra.text != rb.text || !events || da != db) {
        return run;  // one divergence is enough to report
      }
    }
    if (step % 100 == 0) {
      const Status inv = a->engine->CheckInvariants();
      EXPECT_TRUE(inv.ok()) << inv.ToString();
    }
  }
  return run;
}

// Restores happened, and with each of `features` in use at one of them.
void ExpectCovered(const Run& run, const std::set<std::string>& features) {
  EXPECT_GE(run.restores, 5);
  for (const std::string& f : features) {
    EXPECT_TRUE(run.seen.count(f)) << "no restore with " << f << " (saw "
                                   << ::testing::PrintToString(run.seen) << ")";
  }
}

// ---- 1. Behavioural equivalence ----

TEST(StateTest, RestoredEngineBehavesTheSamePlainConfig) {
  ExpectCovered(
      RunEquivalence(testing_util::RandomConfig(), 1, 3000, false, false),
      {"active", "queued", "preempting"});
}

TEST(StateTest, RestoredEngineBehavesTheSameWithBudgets) {
  ExpectCovered(
      RunEquivalence(testing_util::RandomBudgetConfig(), 2, 3000, true, false),
      {"active", "queued", "spend", "alerts", "paused", "priority override",
       "preempting"});
}

// Budgets on a weekly period in a zone with daylight saving, and a stop
// policy: period resets and stopped allocations across restores.
TEST(StateTest, RestoredEngineBehavesTheSameWithWeeklyBudgetsAndStop) {
  Config c = testing_util::RandomBudgetConfig();
  c.daily_limits.period = BudgetPeriod::kWeekly;
  c.daily_limits.time_zone = "Europe/Berlin";
  c.token_budgets.over_budget = OverBudgetPolicy::kStop;
  c.circuit_breaker.action = "pause_new_low_priority";
  ExpectCovered(RunEquivalence(c, 3, 2500, true, false),
                {"active", "queued", "spend", "alerts", "breaker open",
                 "paused", "priority override", "preempting"});
}

TEST(StateTest, RestoredEngineBehavesTheSameWithEagerPreemption) {
  ExpectCovered(RunEquivalence(testing_util::RandomEagerPreemptionConfig(), 4,
                               2500, false, false),
                {"active", "queued"});
}

TEST(StateTest, RestoredEngineBehavesTheSameWithLocksAndConflicts) {
  ExpectCovered(
      RunEquivalence(testing_util::RandomLockConfig(), 5, 3000, false, true),
      {"active", "queued", "preempting", "gated on a lock",
       "gated on a workflow", "open conflict", "resolved conflict",
       "advisory conflict", "open reservation", "scheduled reservation"});
}

TEST(StateTest, RestoredEngineBehavesTheSameWithPreemptingReservations) {
  ExpectCovered(
      RunEquivalence(testing_util::RandomPreemptingReservationConfig(), 6, 3000,
                     false, true),
      {"active", "queued", "gated on a lock", "open conflict",
       "open reservation", "scheduled reservation"});
}

TEST(StateTest, RestoredEngineBehavesTheSameWithEverything) {
  Config c = testing_util::RandomBudgetConfig();
  c.conflicts = testing_util::RandomLockConfig().conflicts;
  c.reservations.preempt_running = true;
  ExpectCovered(RunEquivalence(c, 7, 3000, true, true),
                {"active", "queued", "spend", "alerts", "gated on a lock",
                 "open conflict", "open reservation"});
}

// Parts of the engine iterate its allocation table (a hash map) and let the
// order show: CheckConflicts names the first of a workflow's holders that
// end at the same time, and SetLockPolicy re-claims the locks of queued
// requests in that order (which orders the claims CheckConflicts lists).
// A restored engine must iterate alike, after any history of inserts,
// erases and rehashes.
TEST(StateTest, AllocationTableOrderIsKept) {
  Config config = testing_util::RandomConfig();
  config.resources[0].capacity = 400;
  config.allocation_limits.max_agents_per_workflow.reset();
  config.per_type_limits.clear();
  config.products.clear();
  config.scheduling.history_limit = 7;
  config.conflicts.workspace_root = "/ws";
  for (int variant = 0; variant < 40; ++variant) {
    auto a = Fresh(config);
    std::vector<std::string> live;
    // Churn: a peak of allocations, most of which then end and leave the
    // history (7 kept), so the table has grown and shrunk.
    const int peak = 4 * variant + 3;
    for (int i = 0; i < peak; ++i) {
      auto r = a->engine->Allocate(Req("churn" + std::to_string(i), "x"));
      ASSERT_TRUE(r.ok());
      live.push_back(r->allocation.id);
    }
    for (int i = 0; i < peak; ++i) {
      if (i % 5 != variant % 5) {
        ASSERT_TRUE(a->engine->Release(live[i]).ok());
      }
    }
    // Holders of workflow w, all ending at the same time.
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(a->engine->Allocate(Req("w", "x")).ok());
    }
    // Queued readers of src claiming it behind a writer; then their claims
    // are dropped (exempt) and taken again, in table order.
    AllocationRequest writer = Req("writer", "x");
    writer.exclusive_access = {"src"};
    writer.ttl = hours(2);
    ASSERT_TRUE(a->engine->Allocate(writer).ok());
    for (int i = 0; i < 5; ++i) {
      AllocationRequest reader = Req("reader" + std::to_string(i), "x");
      reader.shared_access = {"src/f" + std::to_string(i)};
      ASSERT_TRUE(a->engine->Allocate(reader).ok());
    }
    ASSERT_TRUE(a->engine
                    ->SetLockPolicy("global",
                                    LockPolicy{LockEnforcement::kStrict,
                                               {"read_only_operations"}},
                                    {"op", ""})
                    .ok());
    ASSERT_TRUE(
        a->engine->SetLockPolicy("global", LockPolicy{}, {"op", ""}).ok());
    auto b = Restored(config, *a);
    ASSERT_TRUE(SameAfterRestore(*a, *b)) << "variant " << variant;
    AllocationRequest probe = Req("probe", "x");
    probe.conflict_avoidance = {"w"};
    probe.exclusive_access = {"src"};
    for (Side* s : {a.get(), b.get()}) {
      s->engine->SetLockPolicy(
          "global",
          LockPolicy{LockEnforcement::kStrict, {"read_only_operations"}},
          {"op", ""});
      s->engine->SetLockPolicy("global", LockPolicy{}, {"op", ""});
    }
    auto ra = a->engine->CheckConflicts(probe, hours(1));
    auto rb = b->engine->CheckConflicts(probe, hours(1));
    ASSERT_TRUE(ra.ok() && rb.ok());
    std::string ta, tb;
    for (const ConflictInfo& c : ra->conflicts) ta += Show(c) + "\n";
    for (const ConflictInfo& c : rb->conflicts) tb += Show(c) + "\n";
    EXPECT_EQ(ta, tb) << "variant " << variant;
    EXPECT_EQ(a->engine->StateDigest(), b->engine->StateDigest());
  }
}

// The engine saves its lock tables with ForEachLock and adds the locks
// again in that order: the copy reports conflicts and coverings in the same
// order as the original (the order on each node is the order of adding,
// which a history of adds and removes shapes).
TEST(StateTest, LockTableRebuildsInTheSameOrder) {
  paths::LockTable t;
  std::mt19937_64 rng(17);
  static const char* kPaths[] = {
      "",     "src",       "src/a.cc",   "src/b.cc", "src/lib",  "src/lib/x.h",
      "docs", "docs/r.md", "src/**/*.h", "*.md",     "src/*.cc", "lib/[ab]*"};
  struct Added {
    std::string path;
    bool exclusive;
    uint64_t owner;
  };
  std::vector<Added> added;
  for (int i = 0; i < 400; ++i) {
    if (!added.empty() && rng() % 3 == 0) {
      const size_t k = rng() % added.size();
      ASSERT_TRUE(t.Remove(added[k].path, added[k].exclusive, added[k].owner));
      added.erase(added.begin() + static_cast<std::ptrdiff_t>(k));
      continue;
    }
    Added a{kPaths[rng() % std::size(kPaths)], rng() % 2 == 0, 1 + rng() % 9};
    t.Add(a.path, a.exclusive, a.owner);
    added.push_back(a);
  }
  paths::LockTable copy;
  size_t n = 0;
  t.ForEachLock([&](const paths::LockTable::Hit& h) {
    copy.Add(h.path, h.exclusive, h.owner);
    ++n;
  });
  EXPECT_EQ(n, t.size());
  EXPECT_EQ(copy.size(), t.size());
  auto conflicts = [](const paths::LockTable& table, const std::string& path,
                      bool exclusive) {
    std::string s;
    table.ForEachConflict(
        path, exclusive, 0, [&](const paths::LockTable::Hit& h) {
          s += std::string(h.path) + "/" + std::to_string(h.owner) +
               (h.exclusive ? "!" : "?") + " ";
          return true;
        });
    table.ForEachCovering(path, [&](const paths::LockTable::Hit& h) {
      s += "cover " + std::string(h.path) + "/" + std::to_string(h.owner) + " ";
      return true;
    });
    return s;
  };
  for (const char* p : kPaths) {
    for (bool x : {false, true}) {
      EXPECT_EQ(conflicts(t, p, x), conflicts(copy, p, x)) << p;
    }
  }
}

// ---- 2. A state with every feature in use ----

Config FeatureConfig() {
  Config c = testing_util::RandomConfig();
  c.resources[0].capacity = 8;
  c.conflicts.workspace_root = "/ws";
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = minutes(2);
  c.pricing.models["sonnet"] = {3, 15, std::nullopt};
  c.pricing.default_model = "sonnet";
  c.token_budgets.default_budget = 20000;
  c.daily_limits.max_tokens_total = 100000;
  c.daily_limits.alert_at_percent = {30, 90};
  c.products["p2"].token_budget_daily = 60000;
  c.reservations.grace_period = minutes(15);
  return c;
}

AllocationRequest Task(const std::string& wf, const std::string& type,
                       const std::string& priority, const std::string& product,
                       std::vector<std::string> exclusive = {}) {
  AllocationRequest r = Req(wf, type, priority);
  r.product = product;
  r.exclusive_access = std::move(exclusive);
  r.ttl = hours(3);
  r.estimated_tokens = 5000;
  r.metadata = "{\"wf\":\"" + wf + "\"}";
  r.idempotency_key = "key-" + wf + "-" + type;
  return r;
}

// Builds a state with queued, active and preempted-in-grace allocations,
// scheduled and open reservations (one claimed), an open conflict, held
// and claimed locks, a priority override, raised limits, budget alerts and
// a pause; checks that each is there.
void BuildFeatureState(Side& s) {
  Engine& e = *s.engine;
  ReservationRequest later;
  later.reservation_id = "nightly";
  later.workflow_id = "release";
  later.start_time = TestStart() + hours(5);
  later.duration = hours(1);
  later.recurrence = "daily";
  later.resources = {{"agents", 1}};
  ASSERT_TRUE(e.Reserve(later).ok());
  ReservationRequest soon = later;
  soon.reservation_id = "soon";
  soon.recurrence.clear();
  soon.start_time = TestStart() + minutes(1);
  ASSERT_TRUE(e.Reserve(soon).ok());
  // The holder of src/a.cc, then a high writer that preempts it (grace).
  auto holder = e.Allocate(Task("wf1", "t3", "normal", "p0", {"src/a.cc"}));
  ASSERT_TRUE(holder.ok());
  ASSERT_EQ(holder->allocation.status, AllocStatus::kActive);
  s.clock.Advance(minutes(2));  // "soon" opens
  AllocationRequest claim = Task("release", "t4", "normal", "p1", {"docs"});
  claim.reservation_id = "soon";
  auto claimant = e.Allocate(claim);
  ASSERT_TRUE(claimant.ok()) << claimant.status().ToString();
  ASSERT_EQ(claimant->allocation.status, AllocStatus::kActive);
  auto writer = e.Allocate(Task("wf2", "t3", "high", "p0", {"src/a.cc"}));
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(writer->allocation.status, AllocStatus::kQueued);
  // t0 allows 2: the third waits.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(e.Allocate(Task("wf3-" + std::to_string(i), "t0", "low", "p2",
                                {"lib/" + std::to_string(i)}))
                    .ok());
  }
  // Spend: alerts at 30% of the global token budget.
  UsageReport u;
  u.tokens = 35000;
  ASSERT_TRUE(e.ReportUsage(claimant->allocation.id, u).ok());
  ASSERT_TRUE(e.RaiseLimits(150000, std::nullopt, {"ops", "launch day"}).ok());
  ASSERT_TRUE(e.SetPriorityOverride("p2", Level::kHigh, {"ops", "demo"}).ok());
  ASSERT_TRUE(e.SetLockPolicy("p1", LockPolicy{LockEnforcement::kAdvisory, {}},
                              {"ops", ""})
                  .ok());
  ASSERT_TRUE(e.Pause({"ops", "maintenance"}).ok());
  ASSERT_TRUE(e.Allocate(Task("wf4", "t1", "critical", "p3")).ok());
  s.clock.Advance(seconds(30));
  e.Tick();

  // Every feature is there.
  const Snapshot snap = e.GetSnapshot();
  EXPECT_GE(snap.active, 2);
  EXPECT_GE(snap.queued, 3);
  EXPECT_GE(snap.preempting, 1);
  auto h = e.Get(holder->allocation.id);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->status, AllocStatus::kPreempted);
  EXPECT_TRUE(h->preempt_deadline.has_value());
  bool open_conflict = false;
  for (const ConflictInfo& c : e.Conflicts())
    open_conflict |= c.status == "open";
  EXPECT_TRUE(open_conflict);
  bool scheduled = false, open = false;
  for (const ReservationInfo& r : e.Reservations()) {
    scheduled |= r.status == "scheduled";
    open |= r.status == "open" && !r.holders.empty();
  }
  EXPECT_TRUE(scheduled);
  EXPECT_TRUE(open);
  auto w = e.Get(writer->allocation.id);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->locks.size(), 1u);  // claimed while queued
  const CostReport c = e.Costs();
  EXPECT_FALSE(c.alerts.empty());
  EXPECT_TRUE(c.paused);
  EXPECT_EQ(c.token_limit, 150000);
  EXPECT_FALSE(c.priority_overrides.empty());
  auto v = e.VerifyLock("src/a.cc", h->fencing_token);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->valid);
  EXPECT_TRUE(e.CheckInvariants().ok());
}

TEST(StateTest, EveryFeatureRoundTrips) {
  const Config config = FeatureConfig();
  auto a = Fresh(config);
  BuildFeatureState(*a);
  if (HasFatalFailure()) return;
  auto b = Restored(config, *a);
  ASSERT_TRUE(SameAfterRestore(*a, *b));
  // A restored engine restores again to the same bytes.
  auto c = Restored(config, *b);
  ASSERT_TRUE(SameAfterRestore(*b, *c));
  // Then both live on: resume, the preempted holder's grace ends (the
  // writer takes the lock), the open window closes, the nightly one opens,
  // work releases, the period resets.
  std::vector<Op> script;
  auto step = [&](std::string what, Duration advance,
                  std::function<Answer(Engine&)> run) {
    script.push_back({std::move(what), advance, std::move(run)});
  };
  step("resume", {}, [](Engine& e) {
    return Answer{Show(e.Resume({"ops", "done"})), {}};
  });
  step("tick", minutes(3), [](Engine& e) {
    e.Tick();
    return Answer{"", {}};
  });
  for (int i = 1; i <= 9; ++i) {
    const std::string id = "alloc_" + std::to_string(i);
    step("get " + id, {}, [id](Engine& e) {
      auto x = e.Get(id);
      return Answer{x.ok() ? Show(*x) : Show(x.status()), {}};
    });
  }
  step("release alloc_2", {}, [](Engine& e) {
    UsageReport u;
    u.tokens = 12000;
    auto x = e.Release("alloc_2", u);
    return Answer{x.ok() ? Show(*x) : Show(x.status()), {}};
  });
  step("tick", hours(5), [](Engine& e) {
    e.Tick();
    return Answer{"", {}};
  });
  step("allocate", {}, [](Engine& e) {
    AllocationRequest r = Task("release", "t4", "normal", "p1");
    r.reservation_id = "nightly";
    auto x = e.Allocate(r);
    return Answer{x.ok() ? Show(x->allocation) : Show(x.status()), {}};
  });
  step("tick", hours(20), [](Engine& e) {
    e.Tick();
    return Answer{"", {}};
  });
  for (const Op& op : script) {
    a->clock.Advance(op.advance);
    b->clock.Set(a->clock.Now());
    const size_t ea = a->events.size(), eb = b->events.size();
    EXPECT_EQ(op.run(*a->engine).text, op.run(*b->engine).text) << op.what;
    EXPECT_TRUE(SameEvents(*a, ea, *b, eb)) << op.what;
    EXPECT_EQ(a->engine->StateDigest(), b->engine->StateDigest()) << op.what;
    EXPECT_EQ(View(*a->engine), View(*b->engine)) << op.what;
  }
  // The script went through grace ends, windows and a period reset.
  bool reset = false, forced = false, window = false;
  for (const Event& ev : b->events) {
    reset |= ev.type == EventType::kBudgetReset;
    forced |= ev.type == EventType::kPreempted;
    window |= ev.type == EventType::kReservationStarted;
  }
  EXPECT_TRUE(reset);
  EXPECT_TRUE(forced);
  EXPECT_TRUE(window);
}

// ---- 3. Damage ----

// The format's trailer (StateHash in state_codec.cc): re-seals bytes
// changed on purpose, so that the decoder itself meets the damage.
std::string Reseal(std::string body) {
  const uint64_t h = StateHash(body);
  for (int k = 0; k < 8; ++k) body.push_back(static_cast<char>(h >> (8 * k)));
  return body;
}
std::string Body(const std::string& state) {
  return state.substr(0, state.size() - 8);
}

// Restores `bytes`: DATA_LOSS, or (`may_decode`) a refusal of the config or
// an engine that passes its invariants. Never a crash (the sanitizer build
// runs this too).
::testing::AssertionResult Damaged(const Config& config,
                                   const std::string& bytes, bool may_decode) {
  ManualClock clock(TestStart());
  std::vector<Event> events;
  RecordingSink sink(&events);
  auto r = Engine::Restore(config, &clock, &sink, bytes);
  if (!events.empty()) return ::testing::AssertionFailure() << "events";
  if (!r.ok() && r.status().code() == Code::kDataLoss) {
    if (r.status().message().empty()) {
      return ::testing::AssertionFailure() << "DATA_LOSS without a message";
    }
    return ::testing::AssertionSuccess();
  }
  if (!may_decode) {
    return ::testing::AssertionFailure()
           << "expected DATA_LOSS, got "
           << (r.ok() ? "OK" : r.status().ToString());
  }
  if (!r.ok()) {
    if (r.status().code() == Code::kInvalidRequest &&
        r.status().message().find("different configuration") !=
            std::string::npos) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << r.status().ToString();
  }
  const Status inv = (*r)->CheckInvariants();
  if (!inv.ok()) return ::testing::AssertionFailure() << inv.ToString();
  // What decoded is an engine that goes on working.
  Engine& e = **r;
  View(e);
  for (int i = 0; i < 12; ++i) {
    AllocationRequest req = Req("after" + std::to_string(i % 3), "t0");
    req.exclusive_access = {"src/a.cc"};
    req.conflict_avoidance = {"wf1"};
    (void)e.Allocate(req);
    (void)e.Release("alloc_" + std::to_string(i));
    (void)e.Cancel("alloc_" + std::to_string(i + 2));
    (void)e.Renew("alloc_" + std::to_string(i + 1));
    (void)e.CheckConflicts(req, hours(1));
    for (const ConflictInfo& c : e.Conflicts()) {
      if (c.status == "open") {
        (void)e.ResolveConflict(c.id, ResolveStrategy::kForceRelease,
                                {"op", ""});
        break;
      }
    }
    clock.Advance(minutes(7 * i + 1));
    e.Tick();
  }
  (void)e.SetLockPolicy("global", LockPolicy{}, {"op", ""});
  (void)e.Resume({"op", ""});
  clock.Advance(hours(30));
  e.Tick();
  View(e);
  return ::testing::AssertionSuccess();
}

std::string FeatureState(const Config& config) {
  auto a = Fresh(config);
  BuildFeatureState(*a);
  return a->engine->SaveState();
}

TEST(StateTest, EveryTruncationIsDataLoss) {
  const Config config = FeatureConfig();
  const std::string state = FeatureState(config);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_GT(state.size(), 1000u);
  for (size_t n = 0; n < state.size(); ++n) {
    ASSERT_TRUE(Damaged(config, state.substr(0, n), false)) << "cut at " << n;
  }
}

TEST(StateTest, ResealedTruncationsOfTheBodyAreDataLoss) {
  const Config config = FeatureConfig();
  const std::string body = Body(FeatureState(config));
  ASSERT_FALSE(HasFatalFailure());
  for (size_t n = 0; n < body.size(); ++n) {
    ASSERT_TRUE(Damaged(config, Reseal(body.substr(0, n)), false))
        << "body cut at " << n;
  }
  // And one byte too many.
  EXPECT_TRUE(Damaged(config, Reseal(body + "x"), false));
}

TEST(StateTest, FlippedBytesAreDataLossOrStillConsistent) {
  const Config config = FeatureConfig();
  const std::string state = FeatureState(config);
  ASSERT_FALSE(HasFatalFailure());
  std::mt19937_64 rng(99);
  // Any flip: the checksum catches it.
  for (size_t i = 0; i < state.size(); i += 3) {
    std::string bad = state;
    bad[i] = static_cast<char>(bad[i] ^ (1 << (i % 8)));
    ASSERT_TRUE(Damaged(config, bad, false)) << "flip at " << i;
  }
  // Flips behind a valid checksum: every byte of the body, then random
  // ones; the decoder refuses (DATA_LOSS), or what it decodes is a
  // consistent engine.
  const std::string body = Body(state);
  for (size_t i = 0; i < body.size(); ++i) {
    std::string bad = body;
    bad[i] = static_cast<char>(bad[i] ^ (1 + (i * 37) % 255));
    ASSERT_TRUE(Damaged(config, Reseal(bad), true)) << "resealed flip at " << i;
  }
  for (int k = 0; k < 3000; ++k) {
    std::string bad = body;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bad[rng() % bad.size()] = static_cast<char>(rng());
    }
    ASSERT_TRUE(Damaged(config, Reseal(bad), true)) << "random flips " << k;
  }
}

TEST(StateTest, GarbageIsDataLoss) {
  const Config config = FeatureConfig();
  std::mt19937_64 rng(5);
  EXPECT_TRUE(Damaged(config, "", false));
  EXPECT_TRUE(Damaged(config, "QMST", false));
  EXPECT_TRUE(Damaged(config, Reseal("QMST\x01"), false));
  EXPECT_TRUE(Damaged(config, Reseal("QMST\x02"), false));
  EXPECT_TRUE(Damaged(config, std::string(64, '\0'), false));
  for (int k = 0; k < 2000; ++k) {
    std::string junk(rng() % 300, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    ASSERT_TRUE(Damaged(config, junk, false));
    // Behind a valid header and checksum the decoder meets it.
    ASSERT_TRUE(Damaged(config, Reseal("QMST\x01" + junk), false)) << k;
    ASSERT_TRUE(Damaged(config, Reseal("QMST\x02" + junk), false)) << k;
    ASSERT_TRUE(Damaged(config, Reseal("QMST\x03" + junk), false)) << k;
  }
}

TEST(StateTest, NewerFormatIsDataLossSayingSo) {
  const Config config = FeatureConfig();
  std::string state = FeatureState(config);
  ASSERT_FALSE(HasFatalFailure());
  state[4] = 4;
  ManualClock clock(TestStart());
  auto r = Engine::Restore(config, &clock, nullptr, state);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_NE(r.status().message().find("newer qm"), std::string::npos)
      << r.status().message();
}

TEST(StateTest, DamageMessagesNameTheSectionAndByte) {
  const Config config = FeatureConfig();
  const std::string state = FeatureState(config);
  ASSERT_FALSE(HasFatalFailure());
  ManualClock clock(TestStart());
  std::string bad = state;
  bad[state.size() / 2] ^= 0x40;
  auto r = Engine::Restore(config, &clock, nullptr, bad);
  ASSERT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos);
  // A truncated body behind a valid checksum: the field and its byte.
  auto cut = Engine::Restore(config, &clock, nullptr,
                             Reseal(Body(state).substr(0, state.size() / 2)));
  ASSERT_EQ(cut.status().code(), Code::kDataLoss);
  EXPECT_NE(cut.status().message().find(" at byte "), std::string::npos)
      << cut.status().message();
}

TEST(StateTest, RestoreUnderADifferentConfigIsRefused) {
  const Config config = FeatureConfig();
  const std::string state = FeatureState(config);
  ASSERT_FALSE(HasFatalFailure());
  auto refused = [&](const Config& other) {
    ManualClock clock(TestStart());
    auto r = Engine::Restore(other, &clock, nullptr, state);
    EXPECT_FALSE(r.ok());
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
    }
    return r.ok() ? std::string() : r.status().message();
  };
  Config capacity = config;
  capacity.resources[0].capacity = 9;
  EXPECT_NE(refused(capacity).find(
                "resource 0 is agents (capacity 8) in the state, agents "
                "(capacity 9) in the configuration"),
            std::string::npos)
      << refused(capacity);
  Config more = config;
  more.resources.push_back({"gpu", 2, false});
  EXPECT_NE(refused(more).find("it has 9 resources"), std::string::npos)
      << refused(more);
  Config budget = config;
  budget.daily_limits.max_tokens_total = 200000;
  EXPECT_NE(refused(budget).find("section daily_limits differs"),
            std::string::npos)
      << refused(budget);
  Config weights = config;
  weights.scheduling.weights.wait = 0.31;
  EXPECT_NE(refused(weights).find("section scheduling differs"),
            std::string::npos);
  Config types = config;
  types.per_type_limits["t0"] = 3;
  EXPECT_NE(refused(types).find("section max_concurrent.per_type differs"),
            std::string::npos);
  // A config that is bad in itself is refused as such.
  Config bad = config;
  bad.resources[1].capacity = -1;
  ManualClock clock(TestStart());
  auto r = Engine::Restore(bad, &clock, nullptr, state);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("capacity"), std::string::npos);
  // The same config restores.
  auto ok = Engine::Restore(config, &clock, nullptr, state);
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

// ---- 4. Events and sequence numbers ----

TEST(StateTest, RestoreEmitsNothingAndSequenceNumbersContinue) {
  const Config config = testing_util::RandomConfig();
  auto a = Fresh(config);
  for (int i = 0; i < 14; ++i) {
    ASSERT_TRUE(a->engine->Allocate(Req("wf" + std::to_string(i), "t0")).ok());
  }
  ASSERT_TRUE(a->engine->Release("alloc_1").ok());
  ASSERT_FALSE(a->events.empty());
  const uint64_t last = a->events.back().seq;
  auto b = Restored(config, *a);
  ASSERT_TRUE(b->engine);
  EXPECT_TRUE(b->events.empty());
  // The next operation on each emits the same events, numbered on from the
  // original's last.
  const size_t ea = a->events.size();
  ASSERT_TRUE(a->engine->Release("alloc_2").ok());
  ASSERT_TRUE(b->engine->Release("alloc_2").ok());
  ASSERT_FALSE(b->events.empty());
  EXPECT_EQ(b->events.front().seq, last + 1);
  EXPECT_TRUE(SameEvents(*a, ea, *b, 0));
  // An engine without a sink numbers its events all the same: its restored
  // copy continues where a recording one would.
  ManualClock quiet_clock(TestStart());
  auto quiet = Engine::Create(config, &quiet_clock, nullptr);
  ASSERT_TRUE(quiet.ok());
  for (int i = 0; i < 14; ++i) {
    ASSERT_TRUE((*quiet)->Allocate(Req("wf" + std::to_string(i), "t0")).ok());
  }
  ASSERT_TRUE((*quiet)->Release("alloc_1").ok());
  std::vector<Event> events;
  RecordingSink sink(&events);
  auto loud =
      Engine::Restore(config, &quiet_clock, &sink, (*quiet)->SaveState());
  ASSERT_TRUE(loud.ok());
  ASSERT_TRUE((*loud)->Release("alloc_2").ok());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().seq, last + 1);
}

// ---- Determinism of the bytes and the digest ----

TEST(StateTest, EqualHistoriesGiveEqualBytesAndDigests) {
  const Config config = FeatureConfig();
  auto a = Fresh(config);
  auto b = Fresh(config);
  BuildFeatureState(*a);
  BuildFeatureState(*b);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(a->engine->SaveState() == b->engine->SaveState());
  const std::string digest = a->engine->StateDigest();
  EXPECT_EQ(digest, b->engine->StateDigest());
  ASSERT_EQ(digest.size(), 16u);
  EXPECT_EQ(digest.find_first_not_of("0123456789abcdef"), std::string::npos);
  // Reading does not change the state; any change changes the digest.
  View(*a->engine);
  EXPECT_EQ(a->engine->StateDigest(), digest);
  a->clock.Advance(seconds(1));
  a->engine->Tick();
  EXPECT_NE(a->engine->StateDigest(), digest);
}

// The state of a fresh engine is small and restores.
TEST(StateTest, FreshEngineRoundTrips) {
  const Config config = Config::Defaults();
  auto a = Fresh(config);
  const std::string state = a->engine->SaveState();
  EXPECT_LT(state.size(), 2000u);
  auto b = Restored(config, *a);
  EXPECT_TRUE(SameAfterRestore(*a, *b));
}

}  // namespace
}  // namespace qm

namespace qm {
namespace {

// The hash is part of the stored format (every snapshot's checksum): a
// change to it makes every stored state unreadable, so its values are fixed.
TEST(StateHashTest, ValuesAreFixedByTheFormat) {
  EXPECT_EQ(StateHash(""), 17280346270528514342u);
  EXPECT_EQ(StateHash("Quartermaster state, 31 bytes.."),
            11465130385688262886u);
}

}  // namespace
}  // namespace qm
