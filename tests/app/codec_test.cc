// The JSON codec's money side: request and usage fields, the budget of an
// allocation, operator events, the cost and metrics reports, the dashboard
// text and the budget error envelopes.
#include <gtest/gtest.h>

#include "api/json_codec.h"

namespace qm {
namespace {

using api::Json;

Time At(const char* text) {
  Time t{};
  EXPECT_TRUE(ParseTime(text, &t)) << text;
  return t;
}

TEST(CodecTest, RequestTakesModelAndWaitForBudget) {
  auto r = api::RequestFromJson(Json{
      {"workflow_id", "w"}, {"model", "haiku"}, {"wait_for_budget", true}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->model, "haiku");
  EXPECT_TRUE(r->wait_for_budget);

  auto d = api::RequestFromJson(Json{{"workflow_id", "w"}});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->model, "");
  EXPECT_FALSE(d->wait_for_budget);
}

TEST(CodecTest, RequestMoneyFieldsOfTheWrongTypeNameTheField) {
  auto m = api::RequestFromJson(Json{{"model", 3}}, "requests[1].");
  ASSERT_EQ(m.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(m.status().message(),
            "requests[1].model must be a string, got a number");
  auto w = api::RequestFromJson(Json{{"wait_for_budget", "yes"}});
  ASSERT_EQ(w.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(w.status().message(),
            "wait_for_budget must be true or false, got a string");
  auto typo = api::RequestFromJson(Json{{"modle", "haiku"}});
  ASSERT_EQ(typo.status().code(), Code::kInvalidRequest);
  EXPECT_NE(typo.status().message().find("did you mean \"model\""),
            std::string::npos)
      << typo.status().message();
}

TEST(CodecTest, UsageTakesEveryField) {
  auto u = api::UsageFromJson(Json{{"report_id", "r-1"},
                                   {"tokens", 75000},
                                   {"input_tokens", 60000},
                                   {"output_tokens", 15000},
                                   {"cached_input_tokens", 20000},
                                   {"cost_usd", 2.25},
                                   {"model", "sonnet"},
                                   {"outcome", "failed"}});
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->report_id, "r-1");
  EXPECT_EQ(u->tokens, 75000);
  EXPECT_EQ(u->input_tokens, 60000);
  EXPECT_EQ(u->output_tokens, 15000);
  EXPECT_EQ(u->cached_input_tokens, 20000);
  EXPECT_EQ(u->cost_usd, 2.25);
  EXPECT_EQ(u->model, "sonnet");
  EXPECT_EQ(u->outcome, Outcome::kFailure);

  // And back: the set fields only.
  const Json j = api::ToJson(*u);
  EXPECT_EQ(j, Json::parse(R"j({"report_id":"r-1","tokens":75000,
      "input_tokens":60000,"output_tokens":15000,"cached_input_tokens":20000,
      "cost_usd":2.25,"model":"sonnet","outcome":"failure"})j"));
  auto again = api::UsageFromJson(j);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(api::ToJson(*again), j);

  EXPECT_EQ(api::ToJson(UsageReport{}),
            Json::parse(R"j({"outcome":"success"})j"));
  auto empty = api::UsageFromJson(Json(nullptr));
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->tokens);
}

TEST(CodecTest, NegativeOrMalformedUsageNamesTheField) {
  for (const char* field :
       {"tokens", "input_tokens", "output_tokens", "cached_input_tokens"}) {
    auto u = api::UsageFromJson(Json{{field, -5}});
    ASSERT_EQ(u.status().code(), Code::kInvalidRequest) << field;
    EXPECT_EQ(u.status().message(),
              std::string("usage.") + field + " must not be negative, got -5");
    auto frac = api::UsageFromJson(Json{{field, 1.5}});
    ASSERT_EQ(frac.status().code(), Code::kInvalidRequest) << field;
    EXPECT_EQ(frac.status().message().rfind(std::string("usage.") + field, 0),
              0u);
  }
  auto cost = api::UsageFromJson(Json{{"cost_usd", -0.5}});
  ASSERT_EQ(cost.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(cost.status().message(),
            "usage.cost_usd must be a number of dollars >= 0, got -0.5");
  auto id = api::UsageFromJson(Json{{"report_id", 7}});
  ASSERT_EQ(id.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(id.status().message(),
            "usage.report_id must be a string, got a number");
  auto typo = api::UsageFromJson(Json{{"output_tokns", 5}});
  ASSERT_EQ(typo.status().code(), Code::kInvalidRequest);
  EXPECT_NE(typo.status().message().find("did you mean \"output_tokens\""),
            std::string::npos)
      << typo.status().message();
}

TEST(CodecTest, AllocationCarriesItsBudget) {
  AllocationInfo a;
  a.id = "alloc_1";
  a.status = AllocStatus::kActive;
  EXPECT_EQ(api::ToJson(a)["budget"],
            Json::parse(R"j({"model":null,"reserved_tokens":0,
                "reserved_tokens_left":0,"reserved_usd":0,
                "reserved_usd_left":0,"used_tokens":0,"used_usd":0,
                "over_budget":false})j"));
  a.budget.model = "haiku";
  a.budget.model_reason = "rule 2: task.estimated_minutes < 30";
  a.budget.downgraded_from = "sonnet";
  a.budget.max_tokens = 80000;
  a.budget.max_tokens_limit = 120000;
  a.budget.reserved_tokens = 80000;
  a.budget.reserved_tokens_left = 5000;
  a.budget.reserved_usd = 0.1 + 0.2;  // 0.30000000000000004
  a.budget.reserved_usd_left = 0.0125;
  a.budget.used_tokens = 125000;
  a.budget.used_usd = 2.25;
  a.budget.over_budget = true;
  a.budget.accuracy = "estimated 80,000, actual 75,000: good";
  const Json b = api::ToJson(a)["budget"];
  EXPECT_EQ(b, Json::parse(R"j({"model":"haiku",
      "model_reason":"rule 2: task.estimated_minutes < 30",
      "downgraded_from":"sonnet","max_tokens":80000,"max_tokens_limit":120000,
      "reserved_tokens":80000,"reserved_tokens_left":5000,"reserved_usd":0.3,
      "reserved_usd_left":0.0125,"used_tokens":125000,"used_usd":2.25,
      "over_budget":true,
      "accuracy":"estimated 80,000, actual 75,000: good"})j"))
      << b.dump();
}

TEST(CodecTest, EventsWithoutAnAllocationLeaveAllocationFieldsOut) {
  Event e;
  e.seq = 9;
  e.time = At("2026-01-26T14:30:00Z");
  e.type = EventType::kOverride;
  e.reason = "pause: investigating spend";
  e.actor = "ceo";
  EXPECT_EQ(api::ToJson(e), Json::parse(R"j({"seq":9,
      "time":"2026-01-26T14:30:00Z","type":"override",
      "reason":"pause: investigating spend","actor":"ceo"})j"));

  Event alert;
  alert.type = EventType::kBudgetAlert;
  alert.product = "web";
  const Json j = api::ToJson(alert);
  EXPECT_EQ(j["type"], "budget_alert");
  EXPECT_EQ(j["product"], "web");
  EXPECT_FALSE(j.contains("allocation_id"));
  EXPECT_FALSE(j.contains("status"));
  EXPECT_FALSE(j.contains("priority"));
  EXPECT_FALSE(j.contains("agent_type"));

  Event usage;
  usage.type = EventType::kUsageReported;
  usage.allocation_id = "alloc_3";
  usage.status = AllocStatus::kActive;
  const Json u = api::ToJson(usage);
  EXPECT_EQ(u["type"], "usage_reported");
  EXPECT_EQ(u["allocation_id"], "alloc_3");
  EXPECT_EQ(u["status"], "active");
  EXPECT_FALSE(u.contains("actor"));
}

TEST(CodecTest, EveryEventTypeHasAName) {
  for (int t = static_cast<int>(EventType::kQueued);
       t <= static_cast<int>(EventType::kOverride); ++t) {
    EXPECT_STRNE(EventTypeName(static_cast<EventType>(t)), "unknown") << t;
  }
  EXPECT_STREQ(EventTypeName(EventType::kUsageReported), "usage_reported");
  EXPECT_STREQ(EventTypeName(EventType::kOverBudget), "over_budget");
  EXPECT_STREQ(EventTypeName(EventType::kBudgetExtended), "budget_extended");
  EXPECT_STREQ(EventTypeName(EventType::kBudgetAlert), "budget_alert");
  EXPECT_STREQ(EventTypeName(EventType::kBudgetReset), "budget_reset");
  EXPECT_STREQ(EventTypeName(EventType::kCircuitTripped), "circuit_tripped");
  EXPECT_STREQ(EventTypeName(EventType::kCircuitClosed), "circuit_closed");
  EXPECT_STREQ(EventTypeName(EventType::kOverride), "override");
}

// Seed 001's day at 80%: 1.6M of 2M tokens, $80 of $100.
CostReport SeedDay() {
  CostReport c;
  c.time = At("2026-01-26T16:00:00Z");
  c.time_zone = "UTC";
  c.period_start = At("2026-01-26T00:00:00Z");
  c.period_end = At("2026-01-27T00:00:00Z");
  c.tokens_used = 1600000;
  c.cost_usd = 80;
  c.token_limit = 2000000;
  c.cost_limit_usd = 100;
  c.percent_tokens = 80;
  c.percent_cost = 80;
  c.projected_cost_usd = 95;
  c.projected_tokens = 1900000;
  c.alerts.push_back({At("2026-01-26T14:30:00Z"), "daily token budget", 80,
                      "Approaching daily token limit (80%)"});
  c.models = {{"haiku", 5, 100000, 1.5, 0.0625},
              {"sonnet", 18, 1400000, 72.5, 0.875},
              {"opus", 2, 100000, 6, 0.0625}};
  c.products = {{"gpu-calculator", 9, 560000, 28, 0.35},
                {"it4it-dashboard", 11, 720000, 36, 0.45},
                {"tech-management-helper", 5, 320000, 16, 0.2}};
  c.breaker.action = "pause_all";
  return c;
}

TEST(CodecTest, CostReportHasTheSeedsShape) {
  const Json j = api::ToJson(SeedDay());
  EXPECT_EQ(j["date"], "2026-01-26T00:00:00Z");
  EXPECT_EQ(j["period"], "daily");
  EXPECT_EQ(j["time_zone"], "UTC");
  EXPECT_EQ(j["tokens_used"], 1600000);
  EXPECT_EQ(j["cost_usd"], 80.0);
  EXPECT_EQ(j["limits"], Json::parse(R"j({"tokens":2000000,"cost":100.0})j"));
  EXPECT_EQ(j["percent_used"], Json::parse(R"j({"tokens":80.0,"cost":80.0})j"));
  EXPECT_EQ(j["projected_eod"],
            Json::parse(R"j({"cost_usd":95.0,"tokens":1900000})j"));
  ASSERT_EQ(j["alerts_triggered"].size(), 1u);
  EXPECT_EQ(
      j["alerts_triggered"][0],
      Json::parse(
          R"j({"time":"2026-01-26T14:30:00Z","budget":"daily token budget",
                "threshold_percent":80.0,
                "message":"Approaching daily token limit (80%)"})j"));
  EXPECT_EQ(j["models"][1], Json::parse(R"j({"name":"sonnet","tasks":18,
      "tokens":1400000,"cost_usd":72.5,"token_share":0.875})j"));
  EXPECT_EQ(j["by_product"].size(), 3u);
  EXPECT_TRUE(j["by_agent_type"].is_array());
  EXPECT_EQ(j["circuit_breaker"]["open"], false);
  EXPECT_EQ(j["circuit_breaker"]["action"], "pause_all");
  EXPECT_TRUE(j["circuit_breaker"]["tripped_at"].is_null());
  EXPECT_EQ(j["paused"], false);
  EXPECT_FALSE(j.contains("paused_by"));
  EXPECT_EQ(j["priority_overrides"], Json::object());

  // Unlimited budgets are null, not zero.
  CostReport open;
  open.time_zone = "Europe/Berlin";
  const Json o = api::ToJson(open);
  EXPECT_TRUE(o["limits"]["tokens"].is_null());
  EXPECT_TRUE(o["limits"]["cost"].is_null());
  EXPECT_TRUE(o["percent_used"]["tokens"].is_null());
  EXPECT_TRUE(o["percent_used"]["cost"].is_null());
}

TEST(CodecTest, CostReportShowsBudgetsBreakerPauseAndOverrides) {
  CostReport c = SeedDay();
  BudgetLine line;
  line.scope = "product";
  line.name = "web";
  line.cost_limit_usd = 20;
  line.cost_used_usd = 10;
  line.percent_cost = 50;
  c.budgets.push_back(line);
  c.breaker.open = true;
  c.breaker.condition = "cost_daily_usd > daily_limits.max_cost_usd";
  c.breaker.tripped_at = At("2026-01-26T17:00:00Z");
  c.breaker.closes_at = At("2026-01-27T00:00:00Z");
  c.breaker.overridden = true;
  c.breaker.override_by = "ceo";
  c.breaker.override_reason = "launch day";
  c.paused = true;
  c.paused_by = "ceo";
  c.paused_reason = "investigating";
  c.priority_overrides = {{"critical-product", Level::kCritical}};
  const Json j = api::ToJson(c);
  EXPECT_EQ(j["budgets"][0], Json::parse(R"j({"scope":"product","name":"web",
      "limits":{"tokens":null,"cost":20.0},"tokens_used":0,
      "tokens_reserved":0,"cost_usd":10.0,"cost_reserved_usd":0.0,
      "percent_used":{"tokens":null,"cost":50.0}})j"))
      << j["budgets"].dump();
  EXPECT_EQ(j["circuit_breaker"], Json::parse(R"j({"open":true,
      "action":"pause_all",
      "condition":"cost_daily_usd > daily_limits.max_cost_usd",
      "tripped_at":"2026-01-26T17:00:00Z","closes_at":"2026-01-27T00:00:00Z",
      "allow_override":true,"overridden":true,"override_by":"ceo",
      "override_reason":"launch day"})j"));
  EXPECT_EQ(j["paused"], true);
  EXPECT_EQ(j["paused_by"], "ceo");
  EXPECT_EQ(j["paused_reason"], "investigating");
  EXPECT_EQ(j["priority_overrides"],
            Json::parse(R"j({"critical-product":"critical"})j"));
}

MetricsReport SeedMetrics() {
  MetricsReport m;
  m.agent_utilization = {{"backend-engineer", 0.75, 2},
                         {"qa-engineer", 0.45, 1}};
  m.tasks_completed = 20;
  m.cost_per_task = 4.5;
  m.tokens_per_task = 90000;
  m.tasks_per_dollar = 1 / 4.5;
  m.tasks_started = 20;
  m.avg_wait_minutes = 18;
  m.max_wait_minutes = 45;
  m.tasks_that_waited = 0.35;
  LearnedEstimate e;
  e.agent_type = "backend-engineer";
  e.samples = 3;
  e.token_ratio = 0.9375;
  e.last_estimated_tokens = 80000;
  e.last_actual_tokens = 75000;
  e.accuracy = "good";
  m.estimates.push_back(e);
  m.recommendations = {"Consider reducing QA agent limit (underutilized)"};
  return m;
}

TEST(CodecTest, MetricsReportHasTheSeedsShape) {
  const Json j = api::ToJson(SeedMetrics());
  EXPECT_EQ(j["agent_utilization"],
            Json::parse(R"j({"backend-engineer":0.75,"qa-engineer":0.45})j"));
  EXPECT_EQ(j["cost_efficiency"]["cost_per_task"], 4.5);
  EXPECT_EQ(j["cost_efficiency"]["tokens_per_task"], 90000.0);
  EXPECT_EQ(j["cost_efficiency"]["tasks_per_dollar"], 0.222222);
  EXPECT_EQ(j["queue_performance"]["avg_wait_time_minutes"], 18.0);
  EXPECT_EQ(j["queue_performance"]["max_wait_time_minutes"], 45.0);
  EXPECT_EQ(j["queue_performance"]["tasks_that_waited"], 0.35);
  EXPECT_EQ(j["estimates"][0], Json::parse(R"j({"agent_type":"backend-engineer",
      "samples":3,"token_ratio":0.9375,"minute_ratio":1.0,
      "last_estimated_tokens":80000,"last_actual_tokens":75000,
      "accuracy":"good"})j"));
  EXPECT_EQ(j["recommendations"][0],
            "Consider reducing QA agent limit (underutilized)");
}

TEST(CodecTest, DashboardReadsLikeTheSeed) {
  Snapshot snap;
  snap.resources.push_back({"agents", 5, 3, 0, 2, 60});
  snap.queued = 2;
  const std::string text =
      api::RenderCostDashboard(SeedDay(), SeedMetrics(), &snap);
  for (const char* want : {
           "## Resource Usage\n",
           "**Today (2026-01-26)**\n",
           "- Active: 3/5 (60% utilization)\n",
           "- Queue: 2 tasks waiting\n",
           "- Avg wait time: 18 minutes\n",
           "- Tokens used: 1,600,000 / 2,000,000 (80%) ⚠️\n",
           "- Cost: $80.00 / $100.00 (80%) ⚠️\n",
           "- Projected EOD: $95.00 (1,900,000 tokens)\n",
           "- haiku: 5 tasks, $1.50\n",
           "- sonnet: 18 tasks, $72.50\n",
           "- it4it-dashboard: 45% of tokens, $36.00\n",
           "- Cost per task: $4.50\n",
           "- Tokens per task: 90,000\n",
           "- Tasks per dollar: 0.22\n",
           "- Consider reducing QA agent limit (underutilized)\n",
       }) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
}

TEST(CodecTest, DashboardMarksOnlyWhatCrossedAThreshold) {
  CostReport c = SeedDay();
  c.percent_cost = 50;
  c.cost_usd = 50;
  std::string text = api::RenderCostDashboard(c, MetricsReport{});
  EXPECT_NE(text.find("(80%) ⚠️"), std::string::npos) << text;
  EXPECT_NE(text.find("- Cost: $50.00 / $100.00 (50%)\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("### Agents\n- Active"), std::string::npos);

  c.alerts.clear();
  c.percent_tokens = 100;
  c.breaker.open = true;
  c.breaker.condition = "tokens_daily > daily_limits.max_tokens_total";
  text = api::RenderCostDashboard(c, MetricsReport{});
  EXPECT_NE(text.find("(100%) 🛑"), std::string::npos) << text;
  EXPECT_NE(text.find("Circuit breaker: OPEN (tokens_daily > "
                      "daily_limits.max_tokens_total)"),
            std::string::npos)
      << text;

  CostReport unlimited;
  unlimited.time_zone = "Europe/Berlin";
  unlimited.period_start = At("2026-01-25T23:00:00Z");
  unlimited.tokens_used = 1234;
  text = api::RenderCostDashboard(unlimited, MetricsReport{});
  EXPECT_NE(text.find("**Today (since 2026-01-25T23:00:00Z, Europe/Berlin)**"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("- Tokens used: 1,234\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("⚠️"), std::string::npos) << text;
}

TEST(CodecTest, BudgetErrorsCarryTheEnginesDetailsAndAlternatives) {
  Status s(Code::kBudgetExceeded, "daily cost budget (global) has $0.50 left");
  s.WithDetails("reservation $1.20 for model sonnet");
  s.AddContext("budget", "daily cost (global)");
  s.AddContext("resets_at", "2026-01-27T00:00:00Z");
  s.AddAlternative("model haiku fits: reserves $0.03");
  s.AddAlternative("queue until the reset: wait_for_budget: true");
  const Json j = api::ErrorEnvelope("allocate", At("2026-01-26T14:00:00Z"), s);
  EXPECT_EQ(j["error"]["code"], "BUDGET_EXCEEDED");
  EXPECT_EQ(j["error"]["details"], "reservation $1.20 for model sonnet");
  EXPECT_EQ(j["error"]["context"],
            Json::parse(R"j({"budget":"daily cost (global)",
                "resets_at":"2026-01-27T00:00:00Z"
})j"));
  EXPECT_EQ(j["alternative_options"],
            Json::parse(R"j(["model haiku fits: reserves $0.03",
                "queue until the reset: wait_for_budget: true"])j"));
  EXPECT_FALSE(j["recovery_suggestions"].empty());

  // Without the engine's alternatives: generic ones, and no context.
  const Json g = api::ErrorEnvelope("allocate", At("2026-01-26T14:00:00Z"),
                                    Status(Code::kBudgetExceeded, "over"));
  EXPECT_FALSE(g["error"].contains("context"));
  EXPECT_FALSE(g["alternative_options"].empty());
  const Json open = api::ErrorEnvelope(
      "allocate", At("2026-01-26T14:00:00Z"),
      Status(Code::kCircuitOpen, "the circuit breaker is open"));
  EXPECT_EQ(open["error"]["code"], "CIRCUIT_OPEN");
  EXPECT_FALSE(open["recovery_suggestions"].empty());
}

}  // namespace
}  // namespace qm
