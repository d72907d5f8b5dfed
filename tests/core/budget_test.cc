// Token budgets, reservations, periods, alerts, the circuit breaker, model
// selection and operator overrides (issue 3), driven through the engine.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using testing_util::Harness;
using testing_util::Req;

Config MoneyConfig() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 100;  // agents
  c.pricing.models["opus"] = {15, 75, std::nullopt};
  c.pricing.models["sonnet"] = {3, 15, std::nullopt};
  c.pricing.models["haiku"] = {0.25, 1.25, std::nullopt};
  c.pricing.default_model = "sonnet";
  c.pricing.estimate_output_share = 0;  // price token counts at input rates
  c.token_budgets.per_type = {{"architect", 150000},
                              {"backend-engineer", 80000},
                              {"qa-engineer", 60000}};
  return c;
}

UsageReport Tokens(int64_t tokens, std::string id = "") {
  UsageReport u;
  u.tokens = tokens;
  u.report_id = std::move(id);
  return u;
}

int Count(const std::vector<Event>& events, EventType type) {
  int n = 0;
  for (const Event& e : events) n += e.type == type;
  return n;
}

TEST(BudgetTest, ArchitectTaskGetsItsBudgetAndReturnsTheUnusedReservation) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 2000000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("wf", "architect"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const BudgetInfo& b = a->allocation.budget;
  EXPECT_EQ(b.max_tokens, 150000);
  EXPECT_EQ(b.max_tokens_limit, 225000);  // 1.5 x
  EXPECT_EQ(b.reserved_tokens, 150000);
  EXPECT_EQ(b.model, "sonnet");
  EXPECT_EQ(h.engine->Costs().tokens_reserved, 150000);

  auto done = h.engine->Release(a->allocation.id, Tokens(120000));
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->budget.used_tokens, 120000);
  EXPECT_FALSE(done->budget.over_budget);
  const CostReport costs = h.engine->Costs();
  EXPECT_EQ(costs.tokens_used, 120000);
  EXPECT_EQ(costs.tokens_reserved, 0);
  EXPECT_NEAR(costs.cost_usd, 0.36, 1e-9);  // 120k x $3/M
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, IncrementalReportsMoveReservedToSpentAndDuplicatesCountOnce) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 1000000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("wf", "backend-engineer"));
  ASSERT_TRUE(a.ok());
  const std::string id = a->allocation.id;
  ASSERT_TRUE(h.engine->ReportUsage(id, Tokens(30000, "r1")).ok());
  ASSERT_TRUE(h.engine->ReportUsage(id, Tokens(30000, "r1")).ok());  // retry
  auto info = h.engine->Get(id);
  EXPECT_EQ(info->budget.used_tokens, 30000);
  EXPECT_EQ(info->budget.reserved_tokens_left, 50000);
  CostReport costs = h.engine->Costs();
  EXPECT_EQ(costs.tokens_used, 30000);
  EXPECT_EQ(costs.tokens_reserved, 50000);
  EXPECT_EQ(Count(h.events, EventType::kUsageReported), 1);
  ASSERT_TRUE(h.engine->Release(id, Tokens(20000, "final")).ok());
  costs = h.engine->Costs();
  EXPECT_EQ(costs.tokens_used, 50000);
  EXPECT_EQ(costs.tokens_reserved, 0);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, BadUsageReportsAreRefusedAndChangeNothing) {
  Harness h(MoneyConfig());
  auto a = h.engine->Allocate(Req("wf", "backend-engineer"));
  ASSERT_TRUE(a.ok());
  const std::string id = a->allocation.id;
  UsageReport negative;
  negative.tokens = -5;
  auto r = h.engine->ReportUsage(id, negative);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("usage.tokens"), std::string::npos);
  UsageReport mismatch;
  mismatch.tokens = 10;
  mismatch.input_tokens = 5;
  EXPECT_EQ(h.engine->ReportUsage(id, mismatch).status().code(),
            Code::kInvalidRequest);
  UsageReport bad_model = Tokens(10);
  bad_model.model = "opsu";
  r = h.engine->ReportUsage(id, bad_model);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("did you mean \"opus\""),
            std::string::npos);
  EXPECT_EQ(h.engine->ReportUsage("alloc_999", Tokens(1)).status().code(),
            Code::kNotFound);
  EXPECT_EQ(h.engine->Costs().tokens_used, 0);
  ASSERT_TRUE(h.engine->Release(id).ok());
  EXPECT_EQ(h.engine->ReportUsage(id, Tokens(1)).status().code(),
            Code::kConflict);
  EXPECT_EQ(h.engine->Costs().tokens_used, 0);
}

TEST(BudgetTest, SplitTokenCountsArePricedPerKind) {
  Harness h(MoneyConfig());
  AllocationRequest r = Req("wf", "backend-engineer");
  r.model = "opus";
  auto a = h.engine->Allocate(r);
  ASSERT_TRUE(a.ok());
  UsageReport u;
  u.input_tokens = 100000;
  u.output_tokens = 10000;
  ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, u).ok());
  // 100k x $15/M + 10k x $75/M
  EXPECT_NEAR(h.engine->Costs().cost_usd, 1.5 + 0.75, 1e-9);
  UsageReport own;
  own.tokens = 1000;
  own.cost_usd = 2.0;  // the report's own cost wins
  ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, own).ok());
  EXPECT_NEAR(h.engine->Costs().cost_usd, 4.25, 1e-9);
}

TEST(BudgetTest, ReservationsRefuseWhatTheRemainingBudgetCannotHold) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 200000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "architect"));  // reserves 150k
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(h.engine->Release(a->allocation.id, Tokens(150000)).ok());
  auto b = h.engine->Allocate(Req("b", "backend-engineer"));  // needs 80k
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kBudgetExceeded);
  bool has_left = false, has_reset = false;
  for (const auto& [k, v] : b.status().context()) {
    has_left |= k == "remaining" && v == "50,000 tokens";
    has_reset |= k == "resets_at" && v == "2026-01-27T00:00:00Z";
  }
  EXPECT_TRUE(has_left);
  EXPECT_TRUE(has_reset);
  EXPECT_FALSE(b.status().alternatives().empty());
  // A smaller estimate fits.
  AllocationRequest small = Req("c", "backend-engineer");
  small.estimated_tokens = 40000;
  EXPECT_TRUE(h.engine->Allocate(small).ok());
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, QueuesBehindReservationsThatMayComeBack) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 200000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "architect"));  // reserves 150k
  ASSERT_TRUE(a.ok());
  auto b = h.engine->Allocate(Req("b", "backend-engineer"));  // 80k
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->allocation.status, AllocStatus::kQueued);
  EXPECT_NE(b->allocation.reason_queued.find("daily token budget"),
            std::string::npos)
      << b->allocation.reason_queued;
  // The architect used only 100k: 50k of its reservation comes back and the
  // queued request fits (100k spent + 80k reserved <= 200k).
  ASSERT_TRUE(h.engine->Release(a->allocation.id, Tokens(100000)).ok());
  EXPECT_EQ(h.StatusOf(b->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, WaitForBudgetQueuesUntilTheResetWithoutBlockingOthers) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 200000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "architect"));
  ASSERT_TRUE(h.engine->Release(a->allocation.id, Tokens(150000)).ok());
  AllocationRequest big = Req("big", "backend-engineer", "critical");
  big.wait_for_budget = true;
  auto b = h.engine->Allocate(big);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(b->allocation.expected_start,
            Time(Duration(1769472000000LL)));  // 2026-01-27T00:00Z
  // A small request still fits today although the big one outranks it.
  AllocationRequest small = Req("small", "backend-engineer", "low");
  small.estimated_tokens = 10000;
  auto s = h.engine->Allocate(small);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->allocation.status, AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  h.clock.Advance(hours(10));  // past midnight UTC
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(b->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(Count(h.events, EventType::kBudgetReset), 1);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, ConcurrentAllocationsNeverOverspend) {
  // 1,000 allocations from 8 threads against a budget for 100 tasks; the
  // engine is serialised by a mutex as the server does.
  Config c = MoneyConfig();
  c.resources[0].capacity = 2000;
  c.token_budgets.per_type = {{"worker", 1000}};
  c.daily_limits.max_tokens_total = 100 * 1000;
  Harness h(c);
  std::mutex mu;
  std::atomic<int> granted{0}, refused{0}, queued{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 125; ++i) {
        std::string id;
        {
          std::lock_guard<std::mutex> lock(mu);
          auto r = h.engine->Allocate(
              Req("wf" + std::to_string(t * 1000 + i), "worker"));
          if (!r.ok()) {
            EXPECT_EQ(r.status().code(), Code::kBudgetExceeded);
            ++refused;
            continue;
          }
          if (r->allocation.status != AllocStatus::kActive) {
            ++queued;
            continue;
          }
          ++granted;
          id = r->allocation.id;
        }
        std::this_thread::yield();
        std::lock_guard<std::mutex> lock(mu);
        ASSERT_TRUE(h.engine->Release(id, Tokens(1000)).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(granted.load(), 100);
  EXPECT_EQ(granted + refused + queued, 1000);
  const CostReport costs = h.engine->Costs();
  EXPECT_LE(costs.tokens_used, 100000);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BudgetTest, AlertsFireOncePerThresholdPerPeriod) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 100;
  c.daily_limits.alert_at_percent = {50, 80, 95};
  Harness h(c);
  auto a = h.engine->Allocate(Req("wf", "backend-engineer"));
  ASSERT_TRUE(a.ok());
  auto spend = [&](double usd) {
    UsageReport u;
    u.cost_usd = usd;
    ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, u).ok());
  };
  spend(40);
  EXPECT_EQ(Count(h.events, EventType::kBudgetAlert), 0);
  spend(15);  // 55%
  EXPECT_EQ(Count(h.events, EventType::kBudgetAlert), 1);
  spend(1);
  spend(1);
  EXPECT_EQ(Count(h.events, EventType::kBudgetAlert), 1);
  spend(30);  // 87%: the 80% alert only
  EXPECT_EQ(Count(h.events, EventType::kBudgetAlert), 2);
  const CostReport costs = h.engine->Costs();
  ASSERT_EQ(costs.alerts.size(), 2u);
  EXPECT_EQ(costs.alerts[1].threshold_percent, 80);
  EXPECT_NE(costs.alerts[1].message.find("Approaching"), std::string::npos);
}

TEST(BudgetTest, BreakerTripsPausesNewWorkAndAnOverrideResumes) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 100;
  c.circuit_breaker.trip_conditions = {
      "cost_daily_usd >= daily_limits.max_cost_usd"};
  c.resources[0].capacity = 1;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));
  AllocationRequest q = Req("q", "backend-engineer");
  q.estimated_tokens = 1000;
  auto queued = h.engine->Allocate(q);
  ASSERT_EQ(queued->allocation.status, AllocStatus::kQueued);
  UsageReport u;
  u.cost_usd = 100;
  ASSERT_TRUE(h.engine->Release(a->allocation.id, u).ok());
  EXPECT_EQ(Count(h.events, EventType::kCircuitTripped), 1);
  // Queued work stays queued; new work is refused.
  EXPECT_EQ(h.StatusOf(queued->allocation.id), AllocStatus::kQueued);
  auto refused = h.engine->Allocate(Req("n", "backend-engineer"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kCircuitOpen);
  EXPECT_TRUE(h.engine->Costs().breaker.open);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
  // The operator raises today's limit: the breaker closes, work resumes.
  ASSERT_TRUE(
      h.engine->RaiseLimits(std::nullopt, 200, {"ceo", "launch day"}).ok());
  EXPECT_EQ(Count(h.events, EventType::kCircuitClosed), 1);
  EXPECT_EQ(h.StatusOf(queued->allocation.id), AllocStatus::kActive);
  const Event& override_event = *std::find_if(
      h.events.begin(), h.events.end(),
      [](const Event& e) { return e.type == EventType::kOverride; });
  EXPECT_EQ(override_event.actor, "ceo");
  EXPECT_NE(override_event.reason.find("launch day"), std::string::npos);
  // At midnight the limit reverts to $100 and spend starts from zero.
  h.clock.Advance(hours(11));
  h.engine->Tick();
  EXPECT_NEAR(*h.engine->Costs().cost_limit_usd, 100, 1e-9);
  EXPECT_EQ(h.engine->Costs().cost_usd, 0);
}

TEST(BudgetTest, OverrideResumesForTheRestOfThePeriodOnly) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 10;
  c.circuit_breaker.trip_conditions = {"cost_daily_usd > 5"};
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));
  UsageReport u;
  u.cost_usd = 6;
  ASSERT_TRUE(h.engine->Release(a->allocation.id, u).ok());
  EXPECT_EQ(h.engine->Allocate(Req("b", "backend-engineer")).status().code(),
            Code::kCircuitOpen);
  ASSERT_TRUE(h.engine->OverrideBreaker({"ops", "investigated"}).ok());
  EXPECT_TRUE(h.engine->Allocate(Req("c", "backend-engineer")).ok());
  h.clock.Advance(hours(11));
  h.engine->Tick();
  EXPECT_FALSE(h.engine->Costs().breaker.open);
  EXPECT_FALSE(h.engine->Costs().breaker.overridden);
}

TEST(BudgetTest, OverridesAreRefusedWhenTheConfigForbidsThem) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 10;
  c.circuit_breaker.allow_override = false;
  Harness h(c);
  EXPECT_EQ(h.engine->OverrideBreaker({"x", ""}).code(),
            Code::kPermissionDenied);
  EXPECT_EQ(h.engine->RaiseLimits(std::nullopt, 20, {"x", ""}).code(),
            Code::kPermissionDenied);
}

TEST(BudgetTest, BurnRateProjectsEndOfDaySpend) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 100;
  c.circuit_breaker.trip_conditions = {
      "projected_cost_daily_usd > daily_limits.max_cost_usd"};
  Harness h(c);  // 14:00Z: 10 hours left in the day
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));
  UsageReport u;
  u.cost_usd = 5;
  ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, u).ok());
  // $5 in the last hour -> $5 + 10 x $5 = $55 projected: fine.
  EXPECT_NEAR(h.engine->Costs().projected_cost_usd, 55, 1e-6);
  EXPECT_FALSE(h.engine->Costs().breaker.open);
  u.cost_usd = 5;
  u.report_id = "second";
  ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, u).ok());
  // $10/h -> $10 + $100: over the limit.
  EXPECT_TRUE(h.engine->Costs().breaker.open);
}

TEST(BudgetTest, PeriodsFollowTheConfiguredTimeZone) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 1000000;
  c.daily_limits.time_zone = "America/New_York";
  Harness h(c);  // 2026-01-26T14:00Z = 09:00 in New York
  const CostReport r = h.engine->Costs();
  EXPECT_EQ(FormatTime(r.period_start), "2026-01-26T05:00:00Z");
  EXPECT_EQ(FormatTime(r.period_end), "2026-01-27T05:00:00Z");
  c.daily_limits.period = BudgetPeriod::kWeekly;
  Harness weekly(c);  // Monday 2026-01-26
  EXPECT_EQ(FormatTime(weekly.engine->Costs().period_end),
            "2026-02-02T05:00:00Z");
  c.daily_limits.period = BudgetPeriod::kMonthly;
  Harness monthly(c);
  EXPECT_EQ(FormatTime(monthly.engine->Costs().period_start),
            "2026-01-01T05:00:00Z");
  EXPECT_EQ(FormatTime(monthly.engine->Costs().period_end),
            "2026-02-01T05:00:00Z");
  c.daily_limits.time_zone = "Mars/Olympus";
  ManualClock clock;
  EXPECT_EQ(Engine::Create(c, &clock).status().code(), Code::kInvalidRequest);
}

TEST(BudgetTest, OverBudgetIsFlaggedOrStopped) {
  Config c = MoneyConfig();
  Harness flag(c);
  auto a = flag.engine->Allocate(Req("a", "qa-engineer"));
  auto r = flag.engine->ReportUsage(a->allocation.id, Tokens(61000));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->budget.over_budget);
  EXPECT_EQ(r->status, AllocStatus::kActive);
  EXPECT_EQ(Count(flag.events, EventType::kOverBudget), 1);
  // Extending clears the flag; beyond 1.5x is refused.
  EXPECT_EQ(flag.engine->ExtendTokens(a->allocation.id, 95000).status().code(),
            Code::kBudgetExceeded);
  auto ext = flag.engine->ExtendTokens(a->allocation.id, 90000);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  EXPECT_FALSE(ext->budget.over_budget);
  EXPECT_EQ(ext->budget.max_tokens, 90000);

  c.token_budgets.over_budget = OverBudgetPolicy::kStop;
  Harness stop(c);
  auto b = stop.engine->Allocate(Req("b", "qa-engineer"));
  auto s = stop.engine->ReportUsage(b->allocation.id, Tokens(61000));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->status, AllocStatus::kFailed);
  EXPECT_TRUE(stop.engine->CheckInvariants().ok());
}

TEST(BudgetTest, LearnsHowGoodEstimatesAre) {
  Config c = MoneyConfig();
  Harness h(c);
  AllocationRequest r = Req("wf", "backend-engineer");
  r.estimated_tokens = 80000;
  r.estimated_minutes = 90;
  r.ttl = hours(2);
  auto a = h.engine->Allocate(r);
  EXPECT_EQ(a->allocation.budget.reserved_tokens, 80000);
  h.clock.Advance(minutes(85));
  auto done = h.engine->Release(a->allocation.id, Tokens(75000));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->budget.accuracy, "estimated 80,000, actual 75,000: good");
  const MetricsReport m = h.engine->Metrics();
  ASSERT_EQ(m.estimates.size(), 1u);
  EXPECT_NEAR(m.estimates[0].token_ratio, 75000.0 / 80000, 1e-9);
  EXPECT_NEAR(m.estimates[0].minute_ratio, 85.0 / 90, 1e-9);
  // The next reservation uses the learned ratio.
  auto b = h.engine->Allocate(r);
  EXPECT_EQ(b->allocation.budget.reserved_tokens, 75000);
  // Capped by multiplier x budget however large the estimate.
  r.estimated_tokens = 10000000;
  auto big = h.engine->Allocate(r);
  EXPECT_EQ(big->allocation.budget.reserved_tokens, 120000);
}

TEST(BudgetTest, PauseQueuesNewWorkAndResumeStartsIt) {
  Harness h(MoneyConfig());
  ASSERT_TRUE(h.engine->Pause({"ceo", "audit"}).ok());
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->allocation.status, AllocStatus::kQueued);
  EXPECT_NE(a->allocation.reason_queued.find("paused by ceo"),
            std::string::npos);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
  ASSERT_TRUE(h.engine->Resume({"ceo", ""}).ok());
  EXPECT_EQ(h.StatusOf(a->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(Count(h.events, EventType::kOverride), 2);
}

TEST(BudgetTest, PriorityOverrideRelevelsQueuedAndNewRequests) {
  Config c = MoneyConfig();
  c.resources[0].capacity = 1;
  Harness h(c);
  auto running = h.engine->Allocate(Req("r", "x", "normal"));
  AllocationRequest other = Req("o", "x", "high");
  auto o = h.engine->Allocate(other);
  AllocationRequest mine = Req("m", "x", "low");
  mine.product = "urgent";
  auto m = h.engine->Allocate(mine);
  ASSERT_EQ(m->allocation.status, AllocStatus::kQueued);
  ASSERT_TRUE(h.engine
                  ->SetPriorityOverride("urgent", Level::kCritical,
                                        {"ceo", "demo tomorrow"})
                  .ok());
  EXPECT_EQ(h.engine->Get(m->allocation.id)->level, Level::kCritical);
  ASSERT_TRUE(h.engine->Release(running->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(m->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(o->allocation.id), AllocStatus::kQueued);
  mine.workflow_id = "m2";
  EXPECT_EQ(h.engine->Allocate(mine)->allocation.level, Level::kCritical);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// Seed 001 "Auto Model Selection", with its price examples (opus $15/M,
// haiku $0.25/M).
Config SeedRules() {
  Config c = MoneyConfig();
  c.model_rules = {{"task.priority == critical", "opus", ""},
                   {"task.estimated_minutes < 30", "haiku", ""},
                   {"default", "sonnet", ""}};
  return c;
}

TEST(ModelSelectionTest, CriticalTasksGetOpus) {
  Harness h(SeedRules());
  AllocationRequest r = Req("design", "architect", "critical");
  r.estimated_minutes = 120;
  auto a = h.engine->Allocate(r);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->allocation.budget.model, "opus");
  EXPECT_EQ(a->allocation.budget.model_reason,
            "rule 1: task.priority == critical");
}

TEST(ModelSelectionTest, QuickTasksGetHaiku) {
  Harness h(SeedRules());
  AllocationRequest r = Req("typo", "backend-engineer");
  r.estimated_minutes = 5;
  auto a = h.engine->Allocate(r);
  EXPECT_EQ(a->allocation.budget.model, "haiku");
  EXPECT_EQ(a->allocation.budget.model_reason,
            "rule 2: task.estimated_minutes < 30");
}

TEST(ModelSelectionTest, EverythingElseGetsTheDefaultRule) {
  Harness h(SeedRules());
  AllocationRequest r = Req("feature", "backend-engineer");
  r.estimated_minutes = 90;
  EXPECT_EQ(h.engine->Allocate(r)->allocation.budget.model, "sonnet");
  // No estimate: `task.estimated_minutes < 30` is false, not an error.
  r.workflow_id = "unestimated";
  r.estimated_minutes.reset();
  EXPECT_EQ(h.engine->Allocate(r)->allocation.budget.model, "sonnet");
}

TEST(ModelSelectionTest, ProductRuleFromTheSeedConfigurationExample) {
  Config c = SeedRules();
  c.model_rules.insert(c.model_rules.begin(),
                       {"task.product == urgent-project", "opus", ""});
  Harness h(c);
  AllocationRequest r = Req("x", "backend-engineer");
  r.product = "urgent-project";
  r.estimated_minutes = 5;
  EXPECT_EQ(h.engine->Allocate(r)->allocation.budget.model, "opus");
  r.product = "other";
  r.workflow_id = "y";
  EXPECT_EQ(h.engine->Allocate(r)->allocation.budget.model, "haiku");
}

TEST(ModelSelectionTest, SeedCostComparisonFixTypoInReadme) {
  // "Fix typo in README" (5 minutes), 100K tokens: opus $1.50, haiku
  // $0.025, savings $1.475 (the seed rounds to $1.48, 98%).
  Harness h(SeedRules());
  AllocationRequest r = Req("typo", "backend-engineer");
  r.estimated_minutes = 5;
  r.estimated_tokens = 100000;
  auto haiku = h.engine->Allocate(r);
  EXPECT_EQ(haiku->allocation.budget.model, "haiku");
  EXPECT_NEAR(haiku->allocation.budget.reserved_usd, 0.025, 1e-9);
  r.workflow_id = "typo-opus";
  r.model = "opus";
  auto opus = h.engine->Allocate(r);
  EXPECT_EQ(opus->allocation.budget.model_reason, "requested");
  EXPECT_NEAR(opus->allocation.budget.reserved_usd, 1.50, 1e-9);
  const double saving = opus->allocation.budget.reserved_usd -
                        haiku->allocation.budget.reserved_usd;
  EXPECT_NEAR(saving, 1.475, 1e-9);
  EXPECT_EQ(static_cast<int>(
                saving / opus->allocation.budget.reserved_usd * 100 + 0.5),
            98);
}

TEST(ModelSelectionTest, FallbackModelWhenTheProductBudgetWouldBeCrossed) {
  Config c = SeedRules();
  c.model_rules[0].fallback_model = "sonnet";
  c.products["web"].cost_budget_daily_usd = 2.0;
  Harness h(c);
  AllocationRequest r = Req("a", "architect", "critical");
  r.product = "web";
  r.estimated_tokens = 100000;  // opus $1.50, sonnet $0.30
  auto first = h.engine->Allocate(r);
  EXPECT_EQ(first->allocation.budget.model, "opus");
  EXPECT_TRUE(first->allocation.budget.downgraded_from.empty());
  r.workflow_id = "b";
  auto second = h.engine->Allocate(r);  // $1.50 + $1.50 > $2: downgrade
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->allocation.budget.model, "sonnet");
  EXPECT_EQ(second->allocation.budget.downgraded_from, "opus");
  EXPECT_NE(second->allocation.budget.model_reason.find("downgraded"),
            std::string::npos);
}

TEST(ModelSelectionTest, BudgetExceededListsACheaperModel) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 1.0;
  Harness h(c);
  AllocationRequest r = Req("a", "backend-engineer");
  r.model = "opus";
  r.estimated_tokens = 100000;  // $1.50 > $1
  auto a = h.engine->Allocate(r);
  ASSERT_EQ(a.status().code(), Code::kBudgetExceeded);
  bool haiku = false;
  for (const std::string& alt : a.status().alternatives()) {
    haiku |= alt.find("use model haiku") != std::string::npos;
  }
  EXPECT_TRUE(haiku);
  r.model = "opsu";
  EXPECT_EQ(h.engine->Allocate(r).status().code(), Code::kInvalidRequest);
}

// ---- Regressions found by a second read and a fuzzer. ----

bool HasAlternative(const Status& s, const std::string& text) {
  for (const std::string& alt : s.alternatives()) {
    if (alt.find(text) != std::string::npos) return true;
  }
  return false;
}

// Token budgets were unbounded: two reservations of 9e18 tokens overflowed
// the report of what running work holds.
TEST(BudgetRegressionTest, TokenBudgetsAreBounded) {
  ManualClock clock(testing_util::TestStart());
  Config c = MoneyConfig();
  c.token_budgets.per_type["huge"] = 9000000000000000000;
  auto e = Engine::Create(c, &clock);
  ASSERT_EQ(e.status().code(), Code::kInvalidRequest);
  EXPECT_NE(e.status().message().find("token_budgets.huge"), std::string::npos)
      << e.status().message();
  c = MoneyConfig();
  c.token_budgets.default_budget = -1;
  e = Engine::Create(c, &clock);
  ASSERT_EQ(e.status().code(), Code::kInvalidRequest);
  EXPECT_NE(e.status().message().find("token_budgets.default"),
            std::string::npos);
  // Period limits name their configuration keys.
  c = MoneyConfig();
  c.products["web"].cost_budget_daily_usd = 2e9;
  e = Engine::Create(c, &clock);
  ASSERT_EQ(e.status().code(), Code::kInvalidRequest);
  EXPECT_NE(e.status().message().find("products.web.cost_budget_daily_usd"),
            std::string::npos)
      << e.status().message();
}

// Nothing bounded an allocation's reported totals: a few thousand maximal
// reports overflowed them (and the period's totals).
TEST(BudgetRegressionTest, ReportedTotalsAreBounded) {
  Harness h(MoneyConfig());
  auto a = h.engine->Allocate(Req("wf", "architect"));
  ASSERT_TRUE(a.ok());
  const std::string id = a->allocation.id;
  UsageReport split;
  split.input_tokens = split.output_tokens = split.cached_input_tokens =
      1000000000000000;
  auto r = h.engine->ReportUsage(id, split);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("usage.tokens"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(h.engine->Costs().tokens_used, 0);
  ASSERT_TRUE(h.engine->ReportUsage(id, Tokens(1000000000000000)).ok());
  r = h.engine->ReportUsage(id, Tokens(1));
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(h.engine->Costs().tokens_used, 1000000000000000);
  UsageReport dollars;
  dollars.cost_usd = 2e9;
  r = h.engine->ReportUsage(id, dollars);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("usage.cost_usd"), std::string::npos);
  EXPECT_NE(r.status().message().find("1000000000"), std::string::npos)
      << r.status().message();
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// A preempted victim that had used up its reservation went back to the
// queue reserving nothing, and restarted on a budget with nothing left.
TEST(BudgetRegressionTest, RequeuedVictimDoesNotRestartOnASpentBudget) {
  Config c = MoneyConfig();
  c.resources[0].capacity = 1;
  c.daily_limits.max_tokens_total = 200000;
  c.levels[static_cast<int>(Level::kCritical)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  Harness h(c);
  AllocationRequest victim = Req("v", "backend-engineer", "low");
  victim.requeue_on_preempt = true;
  auto v = h.engine->Allocate(victim);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(h.engine->ReportUsage(v->allocation.id, Tokens(100000)).ok());
  AllocationRequest critical = Req("c", "backend-engineer", "critical");
  critical.estimated_tokens = 50000;
  auto p = h.engine->Allocate(critical);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(h.StatusOf(p->allocation.id), AllocStatus::kActive);
  ASSERT_EQ(h.StatusOf(v->allocation.id), AllocStatus::kQueued);
  // The preemptor spends the rest of the budget and finishes.
  ASSERT_TRUE(h.engine->Release(p->allocation.id, Tokens(100000)).ok());
  EXPECT_EQ(h.engine->Costs().tokens_used, 200000);
  auto info = h.engine->Get(v->allocation.id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->status, AllocStatus::kQueued);
  EXPECT_NE(info->reason_queued.find("waits for the reset"), std::string::npos)
      << info->reason_queued;
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  h.clock.Advance(hours(10));  // past midnight UTC
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(v->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// A victim re-queued behind a preemptor that then could not fit its budget
// before the reset waited for it all day, next to an idle agent.
TEST(BudgetRegressionTest, VictimsDoNotWaitForAPreemptorWaitingForTheReset) {
  Config c = MoneyConfig();
  c.resources[0].capacity = 2;
  c.daily_limits.max_tokens_total = 300000;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  Harness h(c);
  auto w = h.engine->Allocate(Req("w", "backend-engineer", "normal"));
  AllocationRequest victim = Req("v", "backend-engineer", "low");
  victim.requeue_on_preempt = true;
  victim.estimated_tokens = 10000;
  auto v = h.engine->Allocate(victim);
  ASSERT_EQ(v->allocation.status, AllocStatus::kActive);
  AllocationRequest high = Req("r", "backend-engineer", "high");
  high.preemptible = false;
  auto r = h.engine->Allocate(high);  // preempts v
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(h.StatusOf(v->allocation.id), AllocStatus::kPreempted);
  // Spend leaves 50,000 tokens: r (80,000) waits for the reset, v (10,000)
  // still fits.
  ASSERT_TRUE(h.engine->ReportUsage(w->allocation.id, Tokens(250000)).ok());
  h.clock.Advance(std::chrono::seconds(31));  // the notice ends
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(r->allocation.id), AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(v->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

// When the breaker paused low-priority work, the claims of queued low
// requests stayed, and kept back a normal request that fitted until the
// next re-scoring.
TEST(BudgetRegressionTest, BreakerDropsTheClaimsOfRequestsItHolds) {
  Config c = MoneyConfig();
  c.per_type_limits["w"] = 2;
  c.daily_limits.max_cost_usd = 100;
  c.circuit_breaker.trip_conditions = {"cost_daily_usd >= 50"};
  c.circuit_breaker.action = "pause_new_low_priority";
  c.levels[static_cast<int>(Level::kLow)].max_wait_minutes = 0;
  Harness h(c);
  auto running = h.engine->Allocate(Req("r", "w", "high"));
  ASSERT_TRUE(running.ok());
  AllocationRequest two = Req("l", "w", "low");
  two.resources = {{"agents", 2}};
  auto low = h.engine->Allocate(two);  // claims the w slots
  ASSERT_EQ(low->allocation.status, AllocStatus::kQueued);
  UsageReport u;
  u.cost_usd = 60;
  ASSERT_TRUE(h.engine->ReportUsage(running->allocation.id, u).ok());
  ASSERT_TRUE(h.engine->Costs().breaker.open);
  auto normal = h.engine->Allocate(Req("n", "w", "normal"));
  ASSERT_TRUE(normal.ok()) << normal.status().ToString();
  EXPECT_EQ(normal->allocation.status, AllocStatus::kActive)
      << normal->allocation.reason_queued;
  EXPECT_EQ(h.StatusOf(low->allocation.id), AllocStatus::kQueued);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// BUDGET_EXCEEDED offered a cheaper model that another budget of the
// request refused, and the wait_for_budget queue for a request that exceeds
// a whole budget.
TEST(BudgetRegressionTest, BudgetExceededOffersOnlyAlternativesThatWork) {
  Config c = MoneyConfig();
  c.daily_limits.max_cost_usd = 0.1;
  c.products["p"].token_budget_daily = 10000;
  Harness h(c);
  AllocationRequest r = Req("a", "backend-engineer");
  r.product = "p";
  r.model = "opus";  // 80,000 tokens: too many for p, too dear for $0.10
  auto a = h.engine->Allocate(r);
  ASSERT_EQ(a.status().code(), Code::kBudgetExceeded);
  EXPECT_FALSE(HasAlternative(a.status(), "use model"));
  EXPECT_FALSE(HasAlternative(a.status(), "wait_for_budget"));
  EXPECT_TRUE(HasAlternative(a.status(), "smaller estimated_tokens"));
  // Every model offered is admitted.
  c.products["p"].token_budget_daily = 100000;
  Harness h2(c);
  a = h2.engine->Allocate(r);
  ASSERT_EQ(a.status().code(), Code::kBudgetExceeded);
  int offered = 0;
  for (const auto& [name, price] : c.pricing.models) {
    if (!HasAlternative(a.status(), "use model " + name + ":")) continue;
    ++offered;
    AllocationRequest other = r;
    other.model = name;
    other.workflow_id = "b-" + name;
    EXPECT_TRUE(h2.engine->Allocate(other).ok()) << name;
  }
  EXPECT_EQ(offered, 1);  // haiku: $0.02
}

// An extension that did not fit got no alternative of its own, so the
// response envelope offered the wait_for_budget queue, which only requests
// have.
TEST(BudgetRegressionTest, RefusedExtensionSaysWhatFits) {
  Config c = MoneyConfig();
  c.daily_limits.max_tokens_total = 100000;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));  // 80,000
  ASSERT_TRUE(a.ok());
  const std::string id = a->allocation.id;
  const CostReport before = h.engine->Costs();
  auto r = h.engine->ExtendTokens(id, 110000);
  ASSERT_EQ(r.status().code(), Code::kBudgetExceeded);
  EXPECT_TRUE(HasAlternative(r.status(), "extend to 100,000 tokens"))
      << ::testing::PrintToString(r.status().alternatives());
  EXPECT_EQ(h.engine->Costs().tokens_reserved, before.tokens_reserved);
  auto ok = h.engine->ExtendTokens(id, 100000);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->budget.max_tokens, 100000);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// A report priced as another model was counted as spend of the granted one.
TEST(BudgetRegressionTest, SpendCountsForTheModelItWasPricedAs) {
  Harness h(MoneyConfig());
  auto a = h.engine->Allocate(Req("a", "backend-engineer"));  // sonnet
  ASSERT_TRUE(a.ok());
  UsageReport u = Tokens(100000);
  u.model = "haiku";
  ASSERT_TRUE(h.engine->ReportUsage(a->allocation.id, u).ok());
  const CostReport costs = h.engine->Costs();
  EXPECT_NEAR(costs.cost_usd, 0.025, 1e-9);
  for (const SpendLine& l : costs.models) {
    if (l.name == "haiku") {
      EXPECT_EQ(l.tokens, 100000);
      EXPECT_NEAR(l.cost_usd, 0.025, 1e-9);
    } else {
      EXPECT_EQ(l.tokens, 0) << l.name;
    }
  }
}

}  // namespace
}  // namespace qm
