// The simulator's money operations: usage reports, token extensions,
// operator overrides, the cost and metrics reports and the dashboard, and
// their expectations and errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "sim/simulator.h"
#include "tests/app/sim_test_util.h"

namespace qm {
namespace {

using Json = nlohmann::json;
using sim_test::Find;
using sim_test::FindAll;
using sim_test::RunYaml;
using sim_test::SimRun;

// A day with a $10 and 100,000-token budget, an alert at 80% and a breaker
// on the dollar limit.
constexpr char kConfig[] =
    "config:\n"
    "  max_concurrent: {total: 5}\n"
    "  daily_limits: {max_tokens_total: 100000, max_cost_usd: 10,\n"
    "                 alert_at_percent: 80}\n"
    "  circuit_breaker:\n"
    "    trip_conditions: [\"cost_daily_usd > daily_limits.max_cost_usd\"]\n"
    "    when_tripped: {action: pause_all, notify: ceo, allow_override: "
    "true}\n";

TEST(SimMoneyTest, UsageIsReportedOnceAndShowsInTheCosts) {
  const SimRun r = RunYaml(std::string(kConfig) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    allocate: {id: a, estimated_tokens: 1000}\n"
                           "  - at: 1m\n"
                           "    usage: {id: a, report_id: r1, tokens: 1000, "
                           "cost_usd: 2.5}\n"
                           "  - at: 2m\n"
                           "    usage: {id: a, report_id: r1, tokens: 1000, "
                           "cost_usd: 2.5}\n"
                           "  - at: 3m\n"
                           "    expect: {id: a, status: active, used_tokens: "
                           "1000, over_budget: false}\n"
                           "  - at: 3m\n"
                           "    expect: {costs: {cost_usd: 2.5, tokens_used: "
                           "1000, alerts: 0, breaker_open: false, paused: "
                           "false}}\n"
                           "  - at: 4m\n"
                           "    costs: {}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const auto usage = FindAll(r.lines, "op", "usage");
  ASSERT_EQ(usage.size(), 2u) << r.text;
  EXPECT_EQ((*usage[0])["id"], "a");
  EXPECT_EQ((*usage[0])["budget"]["used_tokens"], 1000);
  EXPECT_EQ((*usage[0])["budget"]["used_usd"], 2.5);
  EXPECT_EQ((*usage[1])["budget"]["used_tokens"], 1000);  // a retry
  EXPECT_NE(Find(r.lines, "event", "usage_reported"), nullptr) << r.text;
  const Json* costs = nullptr;
  for (const Json& l : r.lines) {
    if (l.contains("costs") && l.contains("t") && !l.contains("expect")) {
      costs = &l;
    }
  }
  ASSERT_NE(costs, nullptr) << r.text;
  EXPECT_EQ((*costs)["t"], "4m");
  EXPECT_EQ((*costs)["costs"]["tokens_used"], 1000);
  EXPECT_EQ((*costs)["costs"]["cost_usd"], 2.5);
  EXPECT_EQ((*costs)["costs"]["limits"]["tokens"], 100000);
  const Json* ok = Find(r.lines, "expect", "ok");
  ASSERT_NE(ok, nullptr);
  const Json& summary = r.lines.back()["summary"];
  EXPECT_EQ(summary["spend"]["tokens_used"], 1000) << summary.dump();
}

TEST(SimMoneyTest, AlertBreakerAndOverrideArePrinted) {
  const SimRun r =
      RunYaml(std::string(kConfig) +
              "timeline:\n"
              "  - at: 0m\n"
              "    allocate: {id: a, ttl: 4h}\n"
              "  - at: 30m\n"
              "    usage: {id: a, report_id: r1, tokens: 5000, cost_usd: 8.5}\n"
              "  - at: 31m\n"
              "    expect: {costs: {alerts: 1, breaker_open: false}}\n"
              "  - at: 1h\n"
              "    usage: {id: a, report_id: r2, tokens: 5000, cost_usd: 2}\n"
              "  - at: 1h\n"
              "    expect: {costs: {cost_usd: 10.5, breaker_open: true}}\n"
              "  - at: 1h5m\n"
              "    breaker_override: {by: ceo, reason: launch day}\n"
              "  - at: 1h6m\n"
              "    dashboard: {}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const auto alerts = FindAll(r.lines, "event", "budget_alert");
  ASSERT_EQ(alerts.size(), 1u) << r.text;
  EXPECT_FALSE(alerts[0]->contains("id")) << alerts[0]->dump();
  EXPECT_FALSE(alerts[0]->contains("status"));
  const Json* tripped = Find(r.lines, "event", "circuit_tripped");
  ASSERT_NE(tripped, nullptr) << r.text;
  EXPECT_EQ((*tripped)["t"], "1h");
  const Json* override = Find(r.lines, "event", "override");
  ASSERT_NE(override, nullptr) << r.text;
  EXPECT_EQ((*override)["actor"], "ceo");
  EXPECT_EQ((*override)["t"], "1h5m");
  const Json* dash = nullptr;
  for (const Json& l : r.lines) {
    if (l.contains("dashboard")) dash = &l;
  }
  ASSERT_NE(dash, nullptr) << r.text;
  const std::string text = (*dash)["dashboard"];
  EXPECT_NE(text.find("## Resource Usage"), std::string::npos) << text;
  EXPECT_NE(text.find("- Cost: $10.50 / $10.00 (105%)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("Circuit breaker: OPEN"), std::string::npos) << text;
}

TEST(SimMoneyTest, OperatorControlsPrintTheirEvents) {
  const SimRun r = RunYaml(std::string(kConfig) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    pause: {by: ceo, reason: investigating}\n"
                           "  - at: 0m\n"
                           "    expect: {costs: {paused: true}}\n"
                           "  - at: 1m\n"
                           "    allocate: {id: a}\n"
                           "  - at: 1m\n"
                           "    expect: {id: a, status: queued}\n"
                           "  - at: 2m\n"
                           "    resume: {by: ceo, reason: all clear}\n"
                           "  - at: 2m\n"
                           "    expect: {id: a, status: active}\n"
                           "  - at: 3m\n"
                           "    priority_override: {product: web, level: "
                           "critical, by: ceo, reason: launch}\n"
                           "  - at: 4m\n"
                           "    priority_override: {product: web, level: null, "
                           "by: ceo}\n"
                           "  - at: 5m\n"
                           "    raise_limits: {max_cost_usd: 20, by: ceo, "
                           "reason: approved}\n"
                           "  - at: 6m\n"
                           "    metrics: {}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const auto overrides = FindAll(r.lines, "event", "override");
  ASSERT_EQ(overrides.size(), 5u) << r.text;
  for (const Json* o : overrides) {
    EXPECT_EQ((*o)["actor"], "ceo") << o->dump();
    EXPECT_FALSE(o->contains("id")) << o->dump();
  }
  EXPECT_EQ((*overrides[0])["t"], "0s");
  EXPECT_EQ((*overrides[4])["t"], "5m");
  const Json* metrics = nullptr;
  for (const Json& l : r.lines) {
    if (l.contains("metrics")) metrics = &l;
  }
  ASSERT_NE(metrics, nullptr) << r.text;
  EXPECT_TRUE((*metrics)["metrics"].contains("agent_utilization"));
  EXPECT_TRUE((*metrics)["metrics"].contains("cost_efficiency"));
  EXPECT_TRUE((*metrics)["metrics"].contains("queue_performance"));
}

TEST(SimMoneyTest, RefusedMoneyOperationsArePrintedAndTheRunGoesOn) {
  const SimRun r = RunYaml(std::string(kConfig) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    allocate: {id: a, run_for: 5m}\n"
                           "  - at: 1m\n"
                           "    usage: {id: a, tokens: -5}\n"
                           "  - at: 10m\n"
                           "    usage: {id: a, tokens: 5}\n"
                           "  - at: 11m\n"
                           "    extend: {id: a, max_tokens: 5000}\n"
                           "  - at: 12m\n"
                           "    allocate: {id: b, run_for: 1m}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  EXPECT_NE(r.text.find("{\"t\":\"1m\",\"op\":\"usage\",\"id\":\"a\","
                        "\"error\":{\"code\":\"INVALID_REQUEST\","
                        "\"message\":\"usage.tokens must not be negative"),
            std::string::npos)
      << r.text;
  const auto errors = FindAll(r.lines, "op", "usage");
  ASSERT_EQ(errors.size(), 2u) << r.text;
  EXPECT_TRUE((*errors[1]).contains("error")) << r.text;  // a is released
  const Json* extend = Find(r.lines, "op", "extend");
  ASSERT_NE(extend, nullptr) << r.text;
  EXPECT_TRUE(extend->contains("error"));
  const Json* b = nullptr;
  for (const Json& l : r.lines) {
    if (l.value("event", "") == "released" && l.value("id", "") == "b") b = &l;
  }
  EXPECT_NE(b, nullptr) << r.text;
}

TEST(SimMoneyTest, AllocateSpecsTakeModelAndUsageFields) {
  const SimRun r = RunYaml(
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: a, model: sonnet, wait_for_budget: true,\n"
      "               run_for: 10m, usage: {report_id: final,\n"
      "               input_tokens: 60000, output_tokens: 15000,\n"
      "               cost_usd: 2.25, model: sonnet}}\n"
      "  - at: 20m\n"
      "    expect: {id: a, status: released, used_tokens: 75000}\n"
      "  - at: 20m\n"
      "    expect: {costs: {cost_usd: 2.25, tokens_used: 75000}}\n",
      sim::RunOptions{"costs"});
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  // --report costs: the last line, after the summary.
  ASSERT_GE(r.lines.size(), 2u);
  EXPECT_TRUE(r.lines[r.lines.size() - 2].contains("summary"));
  const Json& costs = r.lines.back();
  ASSERT_TRUE(costs.contains("costs")) << costs.dump();
  EXPECT_EQ(costs["costs"]["tokens_used"], 75000);
  EXPECT_EQ(costs["costs"]["cost_usd"], 2.25);
}

TEST(SimMoneyTest, ReportOptionPrintsMetricsOrTheDashboard) {
  const std::string yaml =
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: a, run_for: 10m, usage: {tokens: 1000}}\n";
  const SimRun m = RunYaml(yaml, sim::RunOptions{"metrics"});
  ASSERT_TRUE(m.status.ok()) << m.status.ToString();
  EXPECT_TRUE(m.lines.back().contains("metrics")) << m.text;
  const SimRun d = RunYaml(yaml, sim::RunOptions{"dashboard"});
  ASSERT_TRUE(d.status.ok()) << d.status.ToString();
  EXPECT_NE(d.text.find("\n## Resource Usage\n"), std::string::npos) << d.text;
  const SimRun bad = RunYaml(yaml, sim::RunOptions{"cost"});
  EXPECT_EQ(bad.status.code(), Code::kInvalidRequest);
  EXPECT_TRUE(bad.text.empty());
}

TEST(SimMoneyTest, FailedCostExpectationStopsWithConflict) {
  const SimRun r = RunYaml(std::string(kConfig) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    allocate: {id: a}\n"
                           "  - at: 1m\n"
                           "    usage: {id: a, tokens: 10, cost_usd: 1}\n"
                           "  - at: 2m\n"
                           "    expect: {costs: {cost_usd: 2}}\n");
  EXPECT_EQ(r.status.code(), Code::kConflict);
  EXPECT_NE(r.status.message().find(
                "s.yaml:14:22: expect: costs.cost_usd is 1 at 2m, expected 2"),
            std::string::npos)
      << r.status.message();
  const SimRun m = RunYaml(
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: a}\n"
      "  - at: 0m\n"
      "    expect: {id: a, model: opus}\n");
  EXPECT_EQ(m.status.code(), Code::kConflict);
  EXPECT_NE(m.status.message().find("expect: a model is \"\" at 0s, expected "
                                    "\"opus\""),
            std::string::npos)
      << m.status.message();
}

TEST(SimMoneyTest, MalformedMoneyOperationsNameTheirPosition) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"timeline:\n  - at: 0m\n    pause: {by: ceo, resaon: x}\n",
       "s.yaml:3:22: pause.resaon: unknown key"},
      {"timeline:\n  - at: 0m\n    priority_override: {product: web, "
       "level: urgent}\n",
       "s.yaml:3:46: priority_override.level: must be critical"},
      {"timeline:\n  - at: 0m\n    priority_override: {level: high}\n",
       "s.yaml:3:24: priority_override: needs {product, level}"},
      {"timeline:\n  - at: 0m\n    raise_limits: {max_tokens: lots}\n",
       "s.yaml:3:32: raise_limits.max_tokens: must be a whole number"},
      {"timeline:\n  - at: 0m\n    allocate: {id: a}\n  - at: 0m\n"
       "    extend: {id: a}\n",
       "s.yaml:5:13: extend: needs {id, max_tokens}"},
      {"timeline:\n  - at: 0m\n    usage: {id: nobody, tokens: 5}\n",
       "s.yaml:3:12: usage: no allocation with id \"nobody\""},
      {"timeline:\n  - at: 0m\n    expect: {costs: {cost: 5}}\n",
       "s.yaml:3:22: expect.costs.cost: unknown key"},
      {"timeline:\n  - at: 0m\n    costs: {x: 1}\n",
       "s.yaml:3:13: costs.x: unknown key"},
      {"timeline:\n  - at: 0m\n    metric: {}\n",
       "s.yaml:3:5: metric: unknown timeline key; did you mean \"metrics\"?"},
  };
  for (const Case& c : cases) {
    std::ostringstream out;
    const Status s = sim::RunScenarioString(c.yaml, "s.yaml", ".", out);
    EXPECT_EQ(s.code(), Code::kInvalidRequest) << c.yaml << s.ToString();
    EXPECT_EQ(s.message().rfind(c.expect, 0), 0u) << s.message();
  }
}

TEST(SimMoneyTest, ModelSelectionTokenBudgetsAndExtensions) {
  const SimRun r = RunYaml(
      "config:\n"
      "  pricing:\n"
      "    default_model: sonnet\n"
      "    models:\n"
      "      opus: {input_per_million: 15, output_per_million: 75}\n"
      "      sonnet: {input_per_million: 3, output_per_million: 15}\n"
      "      haiku: {input_per_million: 0.25, output_per_million: 1.25}\n"
      "  token_budgets: {architect: 150000, backend-engineer: 80000}\n"
      "  auto_model_selection:\n"
      "    rules:\n"
      "      - {condition: \"task.priority == critical\", model: opus}\n"
      "      - {condition: \"task.estimated_minutes < 30\", model: haiku}\n"
      "      - {condition: default, model: sonnet}\n"
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: arch, agent_type: architect, priority: critical,\n"
      "               estimated_tokens: 150000, run_for: 2h,\n"
      "               usage: {report_id: final, input_tokens: 100000,\n"
      "                       output_tokens: 20000}}\n"
      "  - at: 0m\n"
      "    allocate: {id: quick, agent_type: backend-engineer, ttl: 4h,\n"
      "               estimated_minutes: 5, estimated_tokens: 10000}\n"
      "  - at: 1m\n"
      "    expect: {id: arch, model: opus}\n"
      "  - at: 1m\n"
      "    expect: {id: quick, model: haiku}\n"
      "  - at: 10m\n"
      "    usage: {id: quick, report_id: q1, tokens: 90000}\n"
      "  - at: 11m\n"
      "    expect: {id: quick, over_budget: true, used_tokens: 90000}\n"
      "  - at: 12m\n"
      "    extend: {id: quick, max_tokens: 120000}\n"
      "  - at: 13m\n"
      "    extend: {id: quick, max_tokens: 200000}\n"
      "  - at: 3h\n"
      "    expect: {id: arch, status: released, used_tokens: 120000}\n"
      "  - at: 3h\n"
      "    expect: {costs: {tokens_used: 210000, cost_usd: 3.0405}}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const Json* usage = Find(r.lines, "op", "usage");
  ASSERT_NE(usage, nullptr) << r.text;
  const Json& b = (*usage)["budget"];
  EXPECT_EQ(b["model"], "haiku");
  EXPECT_EQ(b["model_reason"], "rule 2: task.estimated_minutes < 30");
  EXPECT_EQ(b["max_tokens"], 80000);
  EXPECT_EQ(b["max_tokens_limit"], 120000);
  EXPECT_EQ(b["over_budget"], true);
  EXPECT_NE(Find(r.lines, "event", "over_budget"), nullptr) << r.text;
  const auto extends = FindAll(r.lines, "op", "extend");
  ASSERT_EQ(extends.size(), 2u) << r.text;
  EXPECT_EQ((*extends[0])["budget"]["max_tokens"], 120000);
  EXPECT_TRUE(extends[1]->contains("error")) << extends[1]->dump();
  EXPECT_NE(Find(r.lines, "event", "budget_extended"), nullptr) << r.text;
}

TEST(SimMoneyTest, MoneyScenarioIsByteIdentical) {
  const std::string yaml = std::string(kConfig) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    allocate: {id: a, run_for: 1h, usage: "
                           "{tokens: 50000, cost_usd: 6}}\n"
                           "    count: 3\n"
                           "  - at: 30m\n"
                           "    costs: {}\n"
                           "  - at: 2h\n"
                           "    dashboard: {}\n";
  const SimRun one = RunYaml(yaml), two = RunYaml(yaml);
  ASSERT_TRUE(one.status.ok()) << one.status.ToString();
  EXPECT_EQ(one.text, two.text);
}

// A refused extension printed no alternatives of its own, and a report
// over the dollar bound of a report said only "must be >= 0".
TEST(SimMoneyTest, RefusedExtensionsAndReportsSayWhatWouldWork) {
  const SimRun r = RunYaml(
      "config:\n"
      "  token_budgets: {worker: 80000}\n"
      "  daily_limits: {max_tokens_total: 100000}\n"
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: a, agent_type: worker, run_for: 30m}\n"
      "  - at: 1m\n"
      "    extend: {id: a, max_tokens: 110000}\n"
      "  - at: 2m\n"
      "    usage: {id: a, cost_usd: 2000000000}\n"
      "  - at: 3m\n"
      "    extend: {id: a, max_tokens: 100000}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const auto extends = FindAll(r.lines, "op", "extend");
  ASSERT_EQ(extends.size(), 2u) << r.text;
  const Json& refused = *extends[0];
  ASSERT_TRUE(refused.contains("error")) << r.text;
  EXPECT_EQ(refused["error"]["code"], "BUDGET_EXCEEDED");
  ASSERT_TRUE(refused.contains("alternative_options")) << r.text;
  EXPECT_NE(refused["alternative_options"][0].get<std::string>().find(
                "extend to 100,000 tokens"),
            std::string::npos)
      << r.text;
  EXPECT_EQ((*extends[1])["budget"]["max_tokens"], 100000) << r.text;
  const Json* usage = Find(r.lines, "op", "usage");
  ASSERT_NE(usage, nullptr) << r.text;
  EXPECT_EQ((*usage)["error"]["message"],
            "usage.cost_usd must be a number of dollars from 0 to "
            "1000000000, got 2000000000")
      << r.text;
}

// A scenario with bytes that are not UTF-8 in a name ran, then aborted
// printing that name in JSON.
TEST(SimMoneyTest, ScenarioTextMustBeUtf8) {
  const SimRun r = RunYaml(
      "timeline:\n"
      "  - at: 0m\n"
      "    allocate: {id: a, product: \"p\xff\", run_for: 10m}\n"
      "  - at: 1m\n"
      "    costs: {}\n");
  EXPECT_EQ(r.status.code(), Code::kInvalidRequest);
  EXPECT_EQ(r.status.message(), "s.yaml:3:34: not UTF-8 text");
}

}  // namespace
}  // namespace qm
