#include "server/activity.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string_view>

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;

// The longest time_range a report looks back over.
constexpr Duration kMaxRange = std::chrono::hours(24 * 90);
// Holders listed by the resource report, biggest first.
constexpr size_t kMaxHolders = 20;
// A workflow's per-task figure this far (percent) above the other
// workflows' is worth a recommendation (seed 000 degradation_threshold).
constexpr double kNotableDifferencePercent = 25;

double Round4(double v) { return std::round(v * 1e4) / 1e4; }
double Round6(double v) { return std::round(v * 1e6) / 1e6; }
Json Rounded(const std::optional<double>& v) {
  return v ? Json(Round4(*v)) : Json(nullptr);
}
Json TimeOrNull(const std::optional<Time>& t) {
  return t ? Json(FormatTime(*t)) : Json(nullptr);
}
// A figure as JSON writes it ("2.5", "3").
std::string Number(double v) { return Json(Round4(v)).dump(); }
// "1 agent", "3 agents".
std::string Count(int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}
double Minutes(Duration d) { return static_cast<double>(d.count()) / 60000.0; }
double Seconds(Duration d) { return static_cast<double>(d.count()) / 1000.0; }
// a / b, unset when b is 0.
std::optional<double> Ratio(double a, double b) {
  if (b == 0) return std::nullopt;
  return a / b;
}

double AmountOf(const AllocationInfo& a, std::string_view resource) {
  for (const auto& [name, amount] : a.resources) {
    if (name == resource) return amount;
  }
  return 0;
}
double AgentsOf(const AllocationInfo& a) { return AmountOf(a, "agents"); }

// Whether it holds its resources now: running, or preempted and still
// within its notice.
bool Holding(const AllocationInfo& a) {
  return a.status == AllocStatus::kActive ||
         (a.status == AllocStatus::kPreempted && !a.ended_at);
}

// When its run ended: at its end, or `now` while it still holds. Unset
// when it never ran, was withdrawn from the queue (cancelled), or went
// back to the queue after a preemption (that run's end is not kept).
std::optional<Time> RunEnd(const AllocationInfo& a, Time now) {
  if (!a.granted_at || a.status == AllocStatus::kCancelled) {
    return std::nullopt;
  }
  if (a.ended_at) return *a.ended_at;
  if (Holding(a)) return now;
  return std::nullopt;
}

// How a finished allocation ended, as the reports count it.
enum class Ending {
  kNone,       // not finished
  kCompleted,  // released with outcome success
  kFailed,     // released with outcome failure
  kExpired,    // its lease ran out, or it was reclaimed
  kPreempted,  // taken back for higher-priority work
  kCancelled,  // withdrawn from the queue, or released with outcome cancelled
};

Ending EndingOf(const AllocationInfo& a) {
  if (!a.ended_at) return Ending::kNone;
  switch (a.status) {
    case AllocStatus::kReleased:
      return a.usage && a.usage->outcome == Outcome::kCancelled
                 ? Ending::kCancelled
                 : Ending::kCompleted;
    case AllocStatus::kFailed:
      return Ending::kFailed;
    case AllocStatus::kExpired:
      return Ending::kExpired;
    case AllocStatus::kPreempted:
      return Ending::kPreempted;
    case AllocStatus::kCancelled:
      return Ending::kCancelled;
    case AllocStatus::kActive:
    case AllocStatus::kQueued:
    case AllocStatus::kReserved:
      break;
  }
  return Ending::kNone;
}

// How many allocations ended each way.
struct Endings {
  int64_t completed = 0, failed = 0, expired = 0, preempted = 0, cancelled = 0;

  void Count(Ending e) {
    switch (e) {
      case Ending::kCompleted:
        ++completed;
        break;
      case Ending::kFailed:
        ++failed;
        break;
      case Ending::kExpired:
        ++expired;
        break;
      case Ending::kPreempted:
        ++preempted;
        break;
      case Ending::kCancelled:
        ++cancelled;
        break;
      case Ending::kNone:
        break;
    }
  }
};

bool Visible(const ActivityInput& in, const std::string& product) {
  if (!in.visible_products) return true;
  const std::string& p = product.empty() ? std::string("default") : product;
  return std::find(in.visible_products->begin(), in.visible_products->end(),
                   p) != in.visible_products->end();
}

// What the engine's history holds: whether it is full (so older finished
// allocations were dropped) and the end of the oldest one it still has.
struct History {
  bool full = false;
  std::optional<Time> oldest_end;
  int64_t finished = 0;

  // Whether every allocation that ended at or after `from` is still kept.
  bool CompleteFrom(Time from) const {
    return !full || (oldest_end && *oldest_end <= from);
  }
};

History HistoryOf(const ActivityInput& in) {
  History h;
  for (const AllocationInfo& a : in.allocations) {
    if (!a.ended_at) continue;
    ++h.finished;
    if (!h.oldest_end || *a.ended_at < *h.oldest_end) h.oldest_end = a.ended_at;
  }
  h.full = h.finished >= std::max<int64_t>(0, in.history_limit);
  return h;
}

// Adds history_complete and history_since to `out` (history_since: from
// when the history is complete; null when it is complete from the start)
// and, when incomplete, a recommendation saying what is missing.
void AddHistory(const History& h, bool complete, int64_t limit, Json* out,
                std::vector<std::string>* recommendations) {
  (*out)["history_complete"] = complete;
  (*out)["history_since"] = h.full ? TimeOrNull(h.oldest_end) : Json(nullptr);
  if (complete) return;
  recommendations->push_back(
      "The engine keeps only the last " + std::to_string(limit) +
      " finished allocations (scheduling.history_limit)" +
      (h.oldest_end ? ", the oldest of them ended " + FormatTime(*h.oldest_end)
                    : std::string()) +
      ": allocations that ended before then are not counted. Raise "
      "scheduling.history_limit to keep more.");
}

// count, mean, p50, p95 and max of `values` (nearest rank; null figures
// when there are none).
Json SpreadJson(std::vector<double> values) {
  Json j;
  j["count"] = static_cast<int64_t>(values.size());
  if (values.empty()) {
    j["mean"] = nullptr;
    j["p50"] = nullptr;
    j["p95"] = nullptr;
    j["max"] = nullptr;
    return j;
  }
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  const size_t n = values.size();
  auto rank = [&](size_t percent) {
    const size_t k = std::max<size_t>(1, (percent * n + 99) / 100);
    return values[k - 1];
  };
  j["mean"] = Round4(sum / static_cast<double>(n));
  j["p50"] = Round4(rank(50));
  j["p95"] = Round4(rank(95));
  j["max"] = Round4(values.back());
  return j;
}

std::optional<double> SuccessRate(int64_t completed, int64_t failed,
                                  int64_t expired, int64_t preempted) {
  const int64_t ran = completed + failed + expired + preempted;
  if (ran == 0) return std::nullopt;
  return 100.0 * static_cast<double>(completed) / static_cast<double>(ran);
}

// ---------------------------------------------------------------- agents

// One group of the agents report (or its totals): the pool now and, over
// [since, until], what its allocations did.
struct AgentFigures : Endings {
  double active_agents = 0;
  int64_t active_allocations = 0;
  int64_t queued = 0;
  double queued_agents = 0;

  int64_t started = 0;
  std::vector<double> wait_seconds;  // of grants in the range
  std::vector<double> run_minutes;   // of runs that ended in the range
  double agent_minutes = 0;          // inside the range
  // Reported by the tasks that ran in the range, and by those that ended
  // in it.
  int64_t tokens = 0, ended_tokens = 0;
  double cost_usd = 0, ended_cost_usd = 0;

  // Counts `a`; returns whether it belongs in the report (it holds or
  // queues now, or did something in the range).
  bool Add(const AllocationInfo& a, Time since, Time until) {
    bool seen = false;
    const double agents = AgentsOf(a);
    if (Holding(a)) {
      active_agents += agents;
      ++active_allocations;
      seen = true;
    }
    if (a.status == AllocStatus::kQueued) {
      ++queued;
      queued_agents += agents;
      seen = true;
    }
    if (a.granted_at && *a.granted_at >= since && *a.granted_at <= until) {
      ++started;
      wait_seconds.push_back(Seconds(*a.granted_at - a.queued_at));
      seen = true;
    }
    const std::optional<Time> end = RunEnd(a, until);
    if (a.ended_at && *a.ended_at >= since && *a.ended_at <= until) {
      seen = true;
      Count(EndingOf(a));
      ended_tokens += a.budget.used_tokens;
      ended_cost_usd += a.budget.used_usd;
      if (end) run_minutes.push_back(Minutes(*end - *a.granted_at));
    }
    if (end && *a.granted_at <= until && *end >= since) {
      const Time from = std::max(*a.granted_at, since);
      const Time to = std::min(*end, until);
      if (to > from) agent_minutes += Minutes(to - from) * agents;
      tokens += a.budget.used_tokens;
      cost_usd += a.budget.used_usd;
      seen = true;
    }
    return seen;
  }

  Json PerformanceJson(Duration range, std::optional<double> limit) const {
    const double range_minutes = Minutes(range);
    Json p;
    p["tasks_started"] = started;
    p["completed"] = completed;
    p["failed"] = failed;
    p["expired"] = expired;
    p["preempted"] = preempted;
    p["cancelled"] = cancelled;
    p["success_rate_percent"] =
        Rounded(SuccessRate(completed, failed, expired, preempted));
    p["queue_wait_seconds"] = SpreadJson(wait_seconds);
    p["run_minutes"] = SpreadJson(run_minutes);
    p["agent_minutes"] = Round4(agent_minutes);
    p["average_active_agents"] = Rounded(Ratio(agent_minutes, range_minutes));
    p["average_utilization_percent"] =
        limit && *limit > 0
            ? Rounded(Ratio(100 * agent_minutes, *limit * range_minutes))
            : Json(nullptr);
    p["tokens"] = tokens;
    p["cost_usd"] = Round6(cost_usd);
    p["tokens_per_completed_task"] = Rounded(Ratio(
        static_cast<double>(ended_tokens), static_cast<double>(completed)));
    const std::optional<double> cost_per =
        Ratio(ended_cost_usd, static_cast<double>(completed));
    p["cost_per_completed_task_usd"] =
        cost_per ? Json(Round6(*cost_per)) : Json(nullptr);
    return p;
  }
};

std::string GroupKey(const AllocationInfo& a, GroupBy g) {
  switch (g) {
    case GroupBy::kAgentType:
      return a.agent_type;
    case GroupBy::kProduct:
      return a.product.empty() ? "default" : a.product;
    case GroupBy::kWorkflow:
      return a.workflow_id;
    case GroupBy::kModel:
      return a.budget.model.empty() ? "(none)" : a.budget.model;
    case GroupBy::kRequester:
      return a.requester.empty() ? "(none)" : a.requester;
  }
  return "";
}

const ResourceUsage* FindResource(const Snapshot& s, const std::string& name) {
  for (const ResourceUsage& r : s.resources) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

ActivityReport AgentsReport(const ActivityInput& in, const StatusQuery& q) {
  const Time until = in.now;
  const Time since = until - q.range;
  struct Group {
    AgentFigures figures;
    std::optional<int64_t> limit;
    bool listed = false;  // a configured group shown even when idle
  };
  std::map<std::string, Group> groups;
  // Agent types and products come with their limits; those with a limit
  // are shown even when idle (an agent caller sees its own products only).
  if (q.group_by == GroupBy::kAgentType || q.group_by == GroupBy::kProduct) {
    const bool types = q.group_by == GroupBy::kAgentType;
    for (const GroupUsage& g :
         types ? in.snapshot.agent_types : in.snapshot.products) {
      Group& e = groups[g.name];
      e.limit = g.limit;
      e.listed = g.limit.has_value() &&
                 (!in.visible_products || (!types && Visible(in, g.name)));
    }
  }
  AgentFigures totals;
  for (const AllocationInfo& a : in.allocations) {
    if (!Visible(in, a.product)) continue;
    totals.Add(a, since, until);
    Group& g = groups[GroupKey(a, q.group_by)];
    if (g.figures.Add(a, since, until)) g.listed = true;
  }
  std::vector<std::pair<std::string, const Group*>> order;
  for (const auto& [name, g] : groups) {
    if (g.listed) order.emplace_back(name, &g);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& x, const auto& y) {
                     return x.second->figures.active_agents >
                            y.second->figures.active_agents;
                   });

  const ResourceUsage* pool = FindResource(in.snapshot, "agents");
  const std::optional<double> pool_limit =
      pool ? std::optional<double>(pool->capacity) : std::nullopt;
  ActivityReport r;
  Json& out = r.result;
  out["resource"] = "agents";
  out["time"] = FormatTime(until);
  out["time_range"] = FormatDuration(q.range);
  out["since"] = FormatTime(since);
  out["until"] = FormatTime(until);
  out["group_by"] = GroupByName(q.group_by);
  out["products"] =
      in.visible_products ? Json(*in.visible_products) : Json(nullptr);
  Json t;
  t["active_agents"] = Round4(totals.active_agents);
  t["active_allocations"] = totals.active_allocations;
  t["max_agents"] = pool ? Json(pool->capacity) : Json(nullptr);
  t["reserved_agents"] = pool ? Json(pool->reserved) : Json(nullptr);
  t["available_agents"] = pool ? Json(pool->available) : Json(nullptr);
  t["queued"] = totals.queued;
  t["queued_agents"] = Round4(totals.queued_agents);
  t["utilization_percent"] =
      pool_limit && *pool_limit > 0
          ? Json(Round4(100 * totals.active_agents / *pool_limit))
          : Json(nullptr);
  if (q.include_performance) {
    t["performance"] = totals.PerformanceJson(q.range, pool_limit);
  }
  out["totals"] = std::move(t);
  Json list = Json::array();
  for (const auto& [name, g] : order) {
    const AgentFigures& f = g->figures;
    Json e;
    e["name"] = name;
    e["active_agents"] = Round4(f.active_agents);
    e["active_allocations"] = f.active_allocations;
    e["max_agents"] = g->limit ? Json(*g->limit) : Json(nullptr);
    e["queued"] = f.queued;
    e["queued_agents"] = Round4(f.queued_agents);
    e["utilization_percent"] =
        g->limit && *g->limit > 0 ? Json(Round4(100 * f.active_agents /
                                                static_cast<double>(*g->limit)))
                                  : Json(nullptr);
    if (q.include_performance) {
      e["performance"] = f.PerformanceJson(
          q.range, g->limit
                       ? std::optional<double>(static_cast<double>(*g->limit))
                       : std::nullopt);
    }
    list.push_back(std::move(e));
    if (g->limit && f.queued > 0 &&
        f.active_agents >= static_cast<double>(*g->limit)) {
      r.recommendations.push_back(std::string(GroupByName(q.group_by)) + " " +
                                  name + ": " + std::to_string(*g->limit) +
                                  " of " + Count(*g->limit, "agent") +
                                  " busy and " + Count(f.queued, "request") +
                                  " queued; raise its limit or expect waits");
    }
  }
  out["groups"] = std::move(list);
  const History h = HistoryOf(in);
  AddHistory(h, h.CompleteFrom(since), in.history_limit, &out,
             &r.recommendations);
  return r;
}

// ---------------------------------------------------------------- resources

ActivityReport OneResourceReport(const ActivityInput& in,
                                 const ResourceUsage& res,
                                 const StatusQuery& q) {
  ActivityReport r;
  Json& out = r.result;
  const Time until = in.now;
  out["resource"] = res.name;
  out["time"] = FormatTime(until);
  out["capacity"] = res.capacity;
  out["allocated"] = res.allocated;
  out["reserved"] = res.reserved;
  out["available"] = res.available;
  out["utilization_percent"] = Round4(res.utilization_percent);
  std::vector<const AllocationInfo*> holders;
  int64_t queued_requests = 0;
  double queued_amount = 0, amount_minutes = 0;
  const Time since = until - q.range;
  for (const AllocationInfo& a : in.allocations) {
    if (!Visible(in, a.product)) continue;
    const double amount = AmountOf(a, res.name);
    if (amount <= 0) continue;
    if (Holding(a)) holders.push_back(&a);
    if (a.status == AllocStatus::kQueued) {
      ++queued_requests;
      queued_amount += amount;
    }
    const std::optional<Time> end = RunEnd(a, until);
    if (end) {
      const Time from = std::max(*a.granted_at, since);
      const Time to = std::min(*end, until);
      if (to > from) amount_minutes += Minutes(to - from) * amount;
    }
  }
  std::stable_sort(holders.begin(), holders.end(),
                   [&](const AllocationInfo* x, const AllocationInfo* y) {
                     return AmountOf(*x, res.name) > AmountOf(*y, res.name);
                   });
  Json list = Json::array();
  for (size_t i = 0; i < holders.size() && i < kMaxHolders; ++i) {
    const AllocationInfo& a = *holders[i];
    list.push_back({{"allocation_id", a.id},
                    {"workflow_id", a.workflow_id},
                    {"product", a.product},
                    {"agent_type", a.agent_type},
                    {"amount", AmountOf(a, res.name)},
                    {"granted_at", TimeOrNull(a.granted_at)}});
  }
  out["holders"] = std::move(list);
  out["holders_total"] = static_cast<int64_t>(holders.size());
  out["queued_demand"] = {{"requests", queued_requests},
                          {"amount", Round4(queued_amount)}};
  if (q.range_given) {
    const double range_minutes = Minutes(q.range);
    out["time_range"] = FormatDuration(q.range);
    out["since"] = FormatTime(since);
    out["until"] = FormatTime(until);
    out["average_allocated"] = Rounded(Ratio(amount_minutes, range_minutes));
    out["average_utilization_percent"] =
        res.capacity > 0
            ? Rounded(Ratio(100 * amount_minutes, res.capacity * range_minutes))
            : Json(nullptr);
    const History h = HistoryOf(in);
    AddHistory(h, h.CompleteFrom(since), in.history_limit, &out,
               &r.recommendations);
  }
  if (queued_requests > 0) {
    r.recommendations.push_back(Count(queued_requests, "queued request") +
                                " wait for " + Number(queued_amount) + " " +
                                res.name + " in all; " + Number(res.available) +
                                " available now");
  }
  return r;
}

// ---------------------------------------------------------------- usage

// Totals of a set of one workflow's allocations (all of them, one agent
// type, one phase, or only the finished ones).
struct Tally : Endings {
  int64_t allocations = 0;
  std::map<AllocStatus, int64_t> by_status;
  int64_t active_now = 0, queued_now = 0;
  double active_agents = 0;
  bool open = false;  // some allocation has not finished
  std::optional<Time> first_queued, first_started, last_ended;
  double agent_minutes = 0;
  int64_t tokens = 0;
  double cost_usd = 0;
  double wait_seconds = 0;  // of the allocations that were granted
  int64_t waits = 0;
  double run_minutes = 0;  // of the runs with a known end
  int64_t runs = 0;
  // Estimate against actual, over completed tasks that have both.
  int64_t token_estimates = 0;
  double estimated_tokens = 0, actual_tokens = 0;
  int64_t minute_estimates = 0;
  double estimated_minutes = 0, actual_minutes = 0;

  void Add(const AllocationInfo& a, Time now) {
    ++allocations;
    ++by_status[a.status];
    Count(EndingOf(a));
    if (Holding(a)) {
      ++active_now;
      active_agents += AgentsOf(a);
    }
    if (a.status == AllocStatus::kQueued) ++queued_now;
    if (!a.ended_at) open = true;
    if (!first_queued || a.queued_at < *first_queued)
      first_queued = a.queued_at;
    if (a.granted_at && (!first_started || *a.granted_at < *first_started)) {
      first_started = a.granted_at;
    }
    if (a.ended_at && (!last_ended || *a.ended_at > *last_ended)) {
      last_ended = a.ended_at;
    }
    tokens += a.budget.used_tokens;
    cost_usd += a.budget.used_usd;
    if (a.granted_at) {
      wait_seconds += Seconds(*a.granted_at - a.queued_at);
      ++waits;
    }
    const std::optional<Time> end = RunEnd(a, now);
    if (end) {
      const double minutes = Minutes(*end - *a.granted_at);
      agent_minutes += minutes * AgentsOf(a);
      run_minutes += minutes;
      ++runs;
      if (EndingOf(a) == Ending::kCompleted) {
        if (a.estimated_tokens && a.budget.used_tokens > 0) {
          ++token_estimates;
          estimated_tokens += static_cast<double>(*a.estimated_tokens);
          actual_tokens += static_cast<double>(a.budget.used_tokens);
        }
        if (a.estimated_minutes) {
          ++minute_estimates;
          estimated_minutes += *a.estimated_minutes;
          actual_minutes += minutes;
        }
      }
    }
  }

  // From the first request to the last end, or to now while something is
  // still open; SpanMinutes from the first start instead.
  std::optional<double> WallMinutes(Time now) const {
    if (!first_queued) return std::nullopt;
    const Time end = open || !last_ended ? now : *last_ended;
    // `now` is the server's clock, the times the engine's: never negative.
    return Minutes(std::max(end, *first_queued) - *first_queued);
  }
  std::optional<double> SpanMinutes(Time now) const {
    if (!first_started) return std::nullopt;
    const Time end = open || !last_ended ? now : *last_ended;
    return Minutes(std::max(end, *first_started) - *first_started);
  }
  std::optional<double> SuccessRatePercent() const {
    return SuccessRate(completed, failed, expired, preempted);
  }

  // The figures every tally shows.
  void Fill(Json* j, Time now) const {
    Json& o = *j;
    o["allocations"] = allocations;
    Json statuses;
    for (AllocStatus s :
         {AllocStatus::kActive, AllocStatus::kQueued, AllocStatus::kReleased,
          AllocStatus::kExpired, AllocStatus::kPreempted, AllocStatus::kFailed,
          AllocStatus::kCancelled}) {
      auto it = by_status.find(s);
      statuses[AllocStatusName(s)] = it == by_status.end() ? 0 : it->second;
    }
    o["by_status"] = std::move(statuses);
    o["completed"] = completed;
    o["active_now"] = active_now;
    o["queued_now"] = queued_now;
    o["active_agents"] = Round4(active_agents);
    o["first_queued_at"] = TimeOrNull(first_queued);
    o["started_at"] = TimeOrNull(first_started);
    o["last_ended_at"] = TimeOrNull(last_ended);
    o["finished"] = !open;
    o["wall_minutes"] = Rounded(WallMinutes(now));
    o["span_minutes"] = Rounded(SpanMinutes(now));
    o["agent_minutes"] = Round4(agent_minutes);
    o["tokens"] = tokens;
    o["cost_usd"] = Round6(cost_usd);
    o["queue_wait_seconds_mean"] =
        Rounded(Ratio(wait_seconds, static_cast<double>(waits)));
  }
};

// The per-task figures compare_baseline sets side by side.
struct PerTask {
  std::optional<double> tokens_per_completed_task, cost_per_completed_task_usd,
      success_rate_percent, run_minutes_mean, queue_wait_seconds_mean;

  static PerTask Of(const Tally& t) {
    PerTask p;
    const double done = static_cast<double>(t.completed);
    p.tokens_per_completed_task = Ratio(static_cast<double>(t.tokens), done);
    p.cost_per_completed_task_usd = Ratio(t.cost_usd, done);
    p.success_rate_percent = t.SuccessRatePercent();
    p.run_minutes_mean = Ratio(t.run_minutes, static_cast<double>(t.runs));
    p.queue_wait_seconds_mean =
        Ratio(t.wait_seconds, static_cast<double>(t.waits));
    return p;
  }
  // (name, figure) in the order they are shown.
  std::vector<std::pair<const char*, std::optional<double>>> Figures() const {
    return {{"tokens_per_completed_task", tokens_per_completed_task},
            {"cost_per_completed_task_usd", cost_per_completed_task_usd},
            {"success_rate_percent", success_rate_percent},
            {"run_minutes_mean", run_minutes_mean},
            {"queue_wait_seconds_mean", queue_wait_seconds_mean}};
  }
  void Fill(Json* j) const {
    for (const auto& [name, v] : Figures()) {
      (*j)[name] = std::string_view(name) == "cost_per_completed_task_usd"
                       ? (v ? Json(Round6(*v)) : Json(nullptr))
                       : Rounded(v);
    }
  }
};

// A task's phase: metadata.phase when its metadata is a JSON object whose
// `phase` is a string, else its agent type. Returns {name, source}.
std::pair<std::string, std::string> PhaseOf(const AllocationInfo& a) {
  if (!a.metadata.empty()) {
    const Json m = Json::parse(a.metadata, nullptr, /*allow_exceptions=*/false);
    if (m.is_object()) {
      auto it = m.find("phase");
      if (it != m.end() && it->is_string()) {
        return {it->get<std::string>(), "metadata.phase"};
      }
    }
  }
  return {a.agent_type, "agent_type"};
}

Json EstimateJson(int64_t tasks, double estimated, double actual) {
  return {{"tasks", tasks},
          {"estimated", Round4(estimated)},
          {"actual", Round4(actual)},
          {"actual_to_estimated", Rounded(Ratio(actual, estimated))}};
}

}  // namespace

const char* GroupByName(GroupBy g) {
  switch (g) {
    case GroupBy::kAgentType:
      return "agent_type";
    case GroupBy::kProduct:
      return "product";
    case GroupBy::kWorkflow:
      return "workflow";
    case GroupBy::kModel:
      return "model";
    case GroupBy::kRequester:
      return "requester";
  }
  return "agent_type";
}

namespace {

// Reads "true" or "false".
StatusOr<bool> ParseBool(const std::string& key, const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  return InvalidRequest(key + ": true or false, got \"" + value + "\"");
}

// Refuses a parameter not in `known` or given twice.
Status CheckParams(const QueryParams& params,
                   const std::vector<std::string>& known,
                   const std::string& what) {
  std::set<std::string> seen;
  for (const auto& [key, value] : params) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      return InvalidRequest(key + ": unknown parameter for " + what + " (" +
                            (list.empty() ? "it takes none" : list) + ")");
    }
    if (!seen.insert(key).second) {
      return InvalidRequest(key + ": given twice");
    }
  }
  return {};
}

}  // namespace

StatusOr<StatusQuery> ParseStatusQuery(const std::string& resource,
                                       const QueryParams& params) {
  const bool agents = resource == "agents";
  QM_RETURN_IF_ERROR(
      CheckParams(params,
                  agents ? std::vector<std::string>{"time_range", "group_by",
                                                    "include_performance"}
                         : std::vector<std::string>{"time_range"},
                  "status " + resource));
  StatusQuery q;
  for (const auto& [key, value] : params) {
    if (key == "time_range") {
      Duration d{};
      if (!ParseDuration(value, &d) || d <= Duration(0) || d > kMaxRange) {
        return InvalidRequest(
            "time_range: a duration such as 15m, 1h, 24h or 7d (up to 90d), "
            "got \"" +
            value + "\"");
      }
      q.range = d;
      q.range_given = true;
    } else if (key == "group_by") {
      if (value == "agent_type" || value == "specialization") {
        q.group_by = GroupBy::kAgentType;
      } else if (value == "product") {
        q.group_by = GroupBy::kProduct;
      } else if (value == "workflow" || value == "workflow_id") {
        q.group_by = GroupBy::kWorkflow;
      } else if (value == "model") {
        q.group_by = GroupBy::kModel;
      } else if (value == "requester") {
        q.group_by = GroupBy::kRequester;
      } else {
        return InvalidRequest(
            "group_by: agent_type (or specialization), product, workflow, "
            "model or requester, got \"" +
            value + "\"");
      }
    } else if (key == "include_performance") {
      auto b = ParseBool(key, value);
      if (!b.ok()) return b.status();
      q.include_performance = *b;
    }
  }
  return q;
}

StatusOr<UsageQuery> ParseUsageQuery(const QueryParams& params) {
  QM_RETURN_IF_ERROR(CheckParams(
      params, {"breakdown_by_phase", "include_efficiency", "compare_baseline"},
      "usage"));
  UsageQuery q;
  for (const auto& [key, value] : params) {
    auto b = ParseBool(key, value);
    if (!b.ok()) return b.status();
    if (key == "breakdown_by_phase") q.breakdown_by_phase = *b;
    if (key == "include_efficiency") q.include_efficiency = *b;
    if (key == "compare_baseline") q.compare_baseline = *b;
  }
  return q;
}

StatusOr<std::string> ResolveResource(const Snapshot& snapshot,
                                      const std::string& name) {
  if (FindResource(snapshot, name) != nullptr) return name;
  static const std::pair<const char*, const char*> kShort[] = {
      {"cpu", "cpu_cores"}, {"memory", "memory_gb"}, {"storage", "storage_gb"}};
  for (const auto& [short_name, full] : kShort) {
    if (name == short_name && FindResource(snapshot, full) != nullptr) {
      return std::string(full);
    }
  }
  std::string known;
  for (const ResourceUsage& u : snapshot.resources) {
    known += (known.empty() ? "" : ", ") + u.name;
  }
  return NotFound("no resource \"" + name + "\" (known: " + known +
                  "; GET /v1/status shows them all)")
      .AddAffected(name);
}

StatusOr<ActivityReport> ResourceStatusReport(const ActivityInput& in,
                                              const std::string& resource,
                                              const StatusQuery& query) {
  auto name = ResolveResource(in.snapshot, resource);
  if (!name.ok()) return name.status();
  if (*name == "agents") return AgentsReport(in, query);
  return OneResourceReport(in, *FindResource(in.snapshot, *name), query);
}

StatusOr<ActivityReport> WorkflowUsageReport(const ActivityInput& in,
                                             const std::string& workflow_id,
                                             const UsageQuery& q) {
  const Time now = in.now;
  Tally total, finished;
  std::map<std::string, Tally> types;
  struct Phase {
    std::string name, source;
    Tally tally;
  };
  std::map<std::pair<std::string, std::string>, Phase> phases;
  // The other workflows' finished allocations, for compare_baseline.
  Tally baseline;
  std::set<std::string> baseline_workflows;
  for (const AllocationInfo& a : in.allocations) {
    if (!Visible(in, a.product)) continue;
    if (a.workflow_id != workflow_id) {
      if (a.ended_at) {
        baseline.Add(a, now);
        baseline_workflows.insert(a.workflow_id);
      }
      continue;
    }
    total.Add(a, now);
    if (a.ended_at) finished.Add(a, now);
    types[a.agent_type].Add(a, now);
    auto [name, source] = PhaseOf(a);
    Phase& p = phases[{source, name}];
    p.name = name;
    p.source = source;
    p.tally.Add(a, now);
  }
  if (total.allocations == 0) {
    return NotFound(
        "no allocation of workflow \"" + workflow_id +
        "\" is known: the engine keeps the active and queued allocations "
        "and the last " +
        std::to_string(in.history_limit) +
        " finished ones (scheduling.history_limit)");
  }
  ActivityReport r;
  Json& out = r.result;
  out["workflow_id"] = workflow_id;
  out["time"] = FormatTime(now);
  Json totals;
  total.Fill(&totals, now);
  out["totals"] = std::move(totals);
  Json by_type = Json::array();
  for (const auto& [name, t] : types) {
    Json e;
    e["agent_type"] = name;
    t.Fill(&e, now);
    by_type.push_back(std::move(e));
  }
  out["agent_types"] = std::move(by_type);

  if (q.breakdown_by_phase) {
    std::vector<const Phase*> order;
    for (const auto& [key, p] : phases) order.push_back(&p);
    // By first start; phases that never started last, by first request.
    std::stable_sort(
        order.begin(), order.end(), [](const Phase* x, const Phase* y) {
          const auto& a = x->tally;
          const auto& b = y->tally;
          if (a.first_started.has_value() != b.first_started.has_value()) {
            return a.first_started.has_value();
          }
          if (a.first_started && *a.first_started != *b.first_started) {
            return *a.first_started < *b.first_started;
          }
          return *a.first_queued < *b.first_queued;
        });
    Json list = Json::array();
    for (const Phase* p : order) {
      Json e;
      e["phase"] = p->name;
      e["source"] = p->source;
      p->tally.Fill(&e, now);
      list.push_back(std::move(e));
    }
    out["phases"] = std::move(list);
  }

  if (q.include_efficiency) {
    // Spend per completed task counts the finished tasks' spend (failures
    // included: what a success costs); running tasks have not finished
    // spending.
    const PerTask per = PerTask::Of(finished);
    Json e;
    e["completed"] = total.completed;
    e["tokens_per_completed_task"] = Rounded(per.tokens_per_completed_task);
    e["cost_per_completed_task_usd"] =
        per.cost_per_completed_task_usd
            ? Json(Round6(*per.cost_per_completed_task_usd))
            : Json(nullptr);
    e["success_rate_percent"] = Rounded(per.success_rate_percent);
    e["estimate_accuracy"] = {
        {"tokens", EstimateJson(total.token_estimates, total.estimated_tokens,
                                total.actual_tokens)},
        {"minutes",
         EstimateJson(total.minute_estimates, total.estimated_minutes,
                      total.actual_minutes)}};
    const std::optional<double> wall = total.WallMinutes(now);
    e["parallelism"] =
        wall ? Rounded(Ratio(total.agent_minutes, *wall)) : Json(nullptr);
    e["wait_share_percent"] = Rounded(Ratio(
        100 * total.wait_seconds, total.wait_seconds + 60 * total.run_minutes));
    out["efficiency"] = std::move(e);
  }

  if (q.compare_baseline) {
    const PerTask mine = PerTask::Of(finished);
    const PerTask base = PerTask::Of(baseline);
    Json c;
    c["basis"] =
        "finished allocations in the engine's retained history; tokens and "
        "cost per completed task count every finished task's spend";
    Json w;
    w["allocations"] = finished.allocations;
    mine.Fill(&w);
    c["workflow"] = std::move(w);
    Json diff;
    if (baseline.allocations > 0) {
      Json b;
      b["allocations"] = baseline.allocations;
      b["workflows"] = static_cast<int64_t>(baseline_workflows.size());
      base.Fill(&b);
      c["baseline"] = std::move(b);
    } else {
      c["baseline"] = nullptr;
    }
    const auto mf = mine.Figures();
    const auto bf = base.Figures();
    for (size_t i = 0; i < mf.size(); ++i) {
      const auto& [name, v] = mf[i];
      const std::optional<double>& b = bf[i].second;
      std::optional<double> d;
      if (v && b && *b != 0) d = 100 * (*v - *b) / *b;
      diff[name] = Rounded(d);
      const std::string_view n(name);
      if (d && *d > kNotableDifferencePercent &&
          (n == "tokens_per_completed_task" ||
           n == "cost_per_completed_task_usd" || n == "run_minutes_mean")) {
        r.recommendations.push_back(
            workflow_id + ": " + std::string(name) + " is " +
            std::to_string(static_cast<int64_t>(std::lround(*d))) +
            "% above the other workflows' (" +
            Count(baseline.allocations, "finished allocation") + " of " +
            Count(static_cast<int64_t>(baseline_workflows.size()), "workflow") +
            ")");
      }
    }
    c["difference_percent"] = std::move(diff);
    if (baseline.allocations == 0) {
      c["message"] =
          "no baseline: no other workflow's finished allocations are kept "
          "(the engine keeps the last " +
          std::to_string(in.history_limit) + " finished ones)";
    } else if (finished.allocations == 0) {
      c["message"] =
          "nothing to compare yet: this workflow has no finished "
          "allocations";
    } else {
      c["message"] = "compared with " +
                     Count(baseline.allocations, "finished allocation") +
                     " of " +
                     Count(static_cast<int64_t>(baseline_workflows.size()),
                           "other workflow");
    }
    out["baseline_comparison"] = std::move(c);
  }

  const History h = HistoryOf(in);
  AddHistory(h, !h.full, in.history_limit, &out, &r.recommendations);
  return r;
}

}  // namespace qm::server
