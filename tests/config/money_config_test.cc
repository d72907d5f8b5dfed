// Tests of the money keys of the configuration: pricing, the token budget
// settings, the budget calendar, product budgets, model rules with fallbacks
// and the circuit breaker; their errors with file:line:column and key path,
// and condition errors pointing at the offending character.
#include <absl/time/time.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "config/yaml_config.h"
#include "qm/config.h"
#include "qm/config_loader.h"
#include "qm/engine.h"
#include "qm/status.h"
#include "tests/config/config_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using testing_util::HaveTzdata;
using testing_util::Load;
using testing_util::LoadError;

// ---- Every new key, read. ----

// The shape of the money keys as the design writes them.
constexpr char kMoney[] = R"(pricing:
  default_model: sonnet
  estimate_output_share: 0.25
  models:
    opus:   {input_per_million: 15, output_per_million: 75, cached_input_per_million: 1.5}
    sonnet: {input_per_million: 3, output_per_million: 15}
    haiku:  {input_per_million: 0.25}
token_budgets:
  architect: 150000
  backend-engineer: 80000
  default: 50000
  multiplier: 1.5
  use_estimate_when_smaller: true
  over_budget: stop
  learning_rate: 0.3
daily_limits:
  max_tokens_total: 2000000
  max_cost_usd: 100
  alert_at_percent: [50, 80, 95]
  period: weekly
  time_zone: UTC
  week_start: sunday
  per_agent_type:
    architect: {max_tokens: 500000, max_cost_usd: 20}
    qa-engineer: {max_cost_usd: 5.5}
products:
  urgent-project: {priority: critical, token_budget_daily: 1000000, cost_budget_daily_usd: 50}
auto_model_selection:
  rules:
    - condition: "task.priority == critical"
      model: opus
      fallback_model: sonnet
    - condition: task.estimated_minutes < 30
      model: haiku
    - condition: default
      model: sonnet
circuit_breaker:
  trip_conditions: ["cost_daily_usd > daily_limits.max_cost_usd"]
  burn_rate_window: 30m
  when_tripped: {action: pause_all, notify: ceo, allow_override: true}
)";

TEST(MoneyConfigTest, EveryKeyIsRead) {
  const Config c = Load(kMoney);
  const PricingConfig& pricing = c.pricing;
  EXPECT_EQ(pricing.default_model, "sonnet");
  EXPECT_EQ(pricing.estimate_output_share, 0.25);
  ASSERT_EQ(pricing.models.size(), 3u);
  EXPECT_EQ(pricing.models.at("opus"), (ModelPrice{15, 75, 1.5}));
  EXPECT_EQ(pricing.models.at("sonnet"), (ModelPrice{3, 15, std::nullopt}));
  EXPECT_EQ(pricing.models.at("haiku"),
            (ModelPrice{0.25, std::nullopt, std::nullopt}));

  const TokenBudgetsConfig& budgets = c.token_budgets;
  EXPECT_EQ(budgets.per_type,
            (std::map<std::string, int64_t>{{"architect", 150000},
                                            {"backend-engineer", 80000}}));
  EXPECT_EQ(budgets.default_budget, 50000);
  EXPECT_EQ(budgets.multiplier, 1.5);
  EXPECT_TRUE(budgets.use_estimate_when_smaller);
  EXPECT_EQ(budgets.over_budget, OverBudgetPolicy::kStop);
  EXPECT_EQ(budgets.learning_rate, 0.3);

  const DailyLimitsConfig& limits = c.daily_limits;
  EXPECT_EQ(limits.max_tokens_total, 2000000);
  EXPECT_EQ(limits.max_cost_usd, 100.0);
  EXPECT_EQ(limits.alert_at_percent, (std::vector<double>{50, 80, 95}));
  EXPECT_EQ(limits.period, BudgetPeriod::kWeekly);
  EXPECT_EQ(limits.time_zone, "UTC");
  EXPECT_EQ(limits.week_start, 0);
  ASSERT_EQ(limits.per_agent_type.size(), 2u);
  EXPECT_EQ(limits.per_agent_type.at("architect"),
            (PeriodBudget{500000, 20.0}));
  EXPECT_EQ(limits.per_agent_type.at("qa-engineer"),
            (PeriodBudget{std::nullopt, 5.5}));

  const ProductConfig& urgent = c.products.at("urgent-project");
  EXPECT_EQ(urgent.token_budget_daily, 1000000);
  EXPECT_EQ(urgent.cost_budget_daily_usd, 50.0);

  ASSERT_EQ(c.model_rules.size(), 3u);
  EXPECT_EQ(c.model_rules[0],
            (ModelRule{"task.priority == critical", "opus", "sonnet"}));
  EXPECT_EQ(c.model_rules[1],
            (ModelRule{"task.estimated_minutes < 30", "haiku", ""}));
  EXPECT_EQ(c.model_rules[2], (ModelRule{"default", "sonnet", ""}));

  EXPECT_EQ(
      c.circuit_breaker.trip_conditions,
      std::vector<std::string>{"cost_daily_usd > daily_limits.max_cost_usd"});
  EXPECT_EQ(c.circuit_breaker.burn_rate_window, minutes(30));
}

TEST(MoneyConfigTest, DefaultsOfTheNewKeys) {
  const Config c = Load("");
  EXPECT_TRUE(c.pricing.models.empty());
  EXPECT_EQ(c.pricing.default_model, "");
  EXPECT_EQ(c.pricing.estimate_output_share, 0.2);
  EXPECT_FALSE(c.token_budgets.default_budget.has_value());
  EXPECT_FALSE(c.token_budgets.use_estimate_when_smaller);
  EXPECT_EQ(c.token_budgets.over_budget, OverBudgetPolicy::kFlag);
  EXPECT_EQ(c.token_budgets.learning_rate, 0.2);
  EXPECT_EQ(c.daily_limits.period, BudgetPeriod::kDaily);
  EXPECT_EQ(c.daily_limits.time_zone, "UTC");
  EXPECT_EQ(c.daily_limits.week_start, 1);
  EXPECT_TRUE(c.daily_limits.per_agent_type.empty());
  EXPECT_EQ(c.circuit_breaker.burn_rate_window, hours(1));
}

TEST(MoneyConfigTest, RoundTrip) {
  const Config c = Load(kMoney);
  const std::string yaml = ConfigToYaml(c);
  SCOPED_TRACE(yaml);
  StatusOr<Config> again = LoadConfigString(yaml, "dump.yml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == c);
  EXPECT_EQ(ConfigToYaml(*again), yaml);
}

TEST(MoneyConfigTest, NullsUnsetOptionalValues) {
  const Config c = Load(R"(pricing:
  default_model: null
  models:
    m: {input_per_million: 1, output_per_million: ~, cached_input_per_million: null}
token_budgets: {default: null}
daily_limits:
  per_agent_type:
    architect: {max_tokens: null, max_cost_usd: ~}
    qa:
products:
  web: {cost_budget_daily_usd: null}
auto_model_selection:
  rules:
    - {condition: default, model: m, fallback_model: null}
)");
  EXPECT_EQ(c.pricing.default_model, "");
  EXPECT_EQ(c.pricing.models.at("m"),
            (ModelPrice{1, std::nullopt, std::nullopt}));
  EXPECT_FALSE(c.token_budgets.default_budget.has_value());
  EXPECT_EQ(c.daily_limits.per_agent_type.at("architect"), PeriodBudget{});
  EXPECT_EQ(c.daily_limits.per_agent_type.at("qa"), PeriodBudget{});
  EXPECT_FALSE(c.products.at("web").cost_budget_daily_usd.has_value());
  EXPECT_EQ(c.model_rules[0].fallback_model, "");
}

TEST(MoneyConfigTest, PeriodsAndWeekdays) {
  EXPECT_EQ(Load("daily_limits: {period: daily}").daily_limits.period,
            BudgetPeriod::kDaily);
  EXPECT_EQ(Load("daily_limits: {period: monthly}").daily_limits.period,
            BudgetPeriod::kMonthly);
  const std::vector<std::string> days = {"sunday",    "monday",   "tuesday",
                                         "wednesday", "thursday", "friday",
                                         "saturday"};
  for (int i = 0; i < 7; ++i) {
    SCOPED_TRACE(days[i]);
    EXPECT_EQ(WeekdayName(i), days[i]);
    EXPECT_EQ(Load("daily_limits: {week_start: " + days[i] + "}")
                  .daily_limits.week_start,
              i);
  }
  // Day names ignore case.
  EXPECT_EQ(Load("daily_limits: {week_start: Friday}").daily_limits.week_start,
            5);
  EXPECT_EQ(Load("daily_limits: {week_start: MONDAY}").daily_limits.week_start,
            1);
  EXPECT_STREQ(WeekdayName(7), "");
  EXPECT_STREQ(BudgetPeriodName(BudgetPeriod::kWeekly), "weekly");
}

TEST(MoneyConfigTest, NamedTimeZones) {
  if (!HaveTzdata()) GTEST_SKIP() << "no time zone database on this host";
  EXPECT_EQ(
      Load("daily_limits: {time_zone: Europe/Berlin}").daily_limits.time_zone,
      "Europe/Berlin");
  EXPECT_EQ(Load("daily_limits: {time_zone: America/Port-au-Prince}")
                .daily_limits.time_zone,
            "America/Port-au-Prince");
  EXPECT_EQ(Load("daily_limits: {time_zone: Etc/GMT+5}").daily_limits.time_zone,
            "Etc/GMT+5");
}

TEST(MoneyConfigTest, ModelsAreNotCheckedWithoutPrices) {
  // No price table: any model name goes (costs come from usage reports).
  const Config c = Load(R"(pricing: {default_model: gpt}
auto_model_selection:
  rules:
    - {condition: default, model: anything, fallback_model: else}
)");
  EXPECT_EQ(c.pricing.default_model, "gpt");
  EXPECT_EQ(c.model_rules[0].fallback_model, "else");
}

TEST(MoneyConfigTest, RulesMayComeBeforeThePrices) {
  const Config c = Load(R"(auto_model_selection:
  rules: [{condition: default, model: haiku}]
pricing:
  models: {haiku: {input_per_million: 0.25}}
)");
  EXPECT_EQ(c.model_rules[0].model, "haiku");
}

// ---- Bad values: position, key path, reason. ----

TEST(MoneyConfigErrorTest, BadPrices) {
  EXPECT_EQ(LoadError("pricing:\n  models:\n"
                      "    opus: {input_per_million: -15}\n"),
            "limits.yml:3:12: pricing.models.opus.input_per_million: must be "
            "a number >= 0, got \"-15\"");
  EXPECT_EQ(LoadError("pricing:\n  models:\n    opus:\n"
                      "      input_per_million: 15\n"
                      "      output_per_million: -75\n"),
            "limits.yml:5:7: pricing.models.opus.output_per_million: must be "
            "a number >= 0, got \"-75\"");
  EXPECT_EQ(LoadError("pricing:\n  models:\n    opus: {input_per_million: 1, "
                      "cached_input_per_million: .nan}\n"),
            "limits.yml:3:34: pricing.models.opus.cached_input_per_million: "
            "must be a number >= 0, got \".nan\"");
  EXPECT_THAT(LoadError("pricing: {models: {opus: {input_per_million: .inf}}}"),
              HasSubstr("pricing.models.opus.input_per_million: must be a "
                        "number >= 0, got \".inf\""));
  EXPECT_EQ(LoadError("pricing:\n  models:\n    opus: {input_per_million: "
                      "\"15\"}\n"),
            "limits.yml:3:12: pricing.models.opus.input_per_million: must be "
            "a number >= 0, got the quoted string \"15\" (write numbers "
            "without quotes)");
  EXPECT_EQ(
      LoadError("pricing:\n  models:\n    opus: {output_per_million: 75}\n"),
      "limits.yml:3:5: pricing.models.opus: missing key "
      "\"input_per_million\"");
  EXPECT_EQ(LoadError("pricing:\n  models:\n    opus: 15\n"),
            "limits.yml:3:5: pricing.models.opus: must be a mapping "
            "{input_per_million: N, output_per_million: N, "
            "cached_input_per_million: N}, got \"15\"");
  EXPECT_EQ(LoadError("pricing:\n  models: [opus]\n"),
            "limits.yml:2:3: pricing.models: must be a mapping of keys to "
            "values, got a list");
  EXPECT_EQ(LoadError("pricing:\n  estimate_output_share: 1.5\n"),
            "limits.yml:2:3: pricing.estimate_output_share: must be a number "
            "from 0 to 1, got \"1.5\"");
}

TEST(MoneyConfigErrorTest, UnknownModels) {
  constexpr char kPrices[] = R"(pricing:
  models:
    opus: {input_per_million: 15}
    sonnet: {input_per_million: 3}
)";
  EXPECT_EQ(LoadError(std::string(kPrices) + "  default_model: sonet\n"),
            "limits.yml:5:3: pricing.default_model: unknown model \"sonet\" "
            "(not in pricing.models), did you mean \"sonnet\"?");
  EXPECT_EQ(LoadError(std::string(kPrices) +
                      "auto_model_selection:\n  rules:\n"
                      "    - condition: default\n      model: opsu\n"),
            "limits.yml:8:7: auto_model_selection.rules[0].model: unknown "
            "model \"opsu\" (not in pricing.models), did you mean \"opus\"?");
  EXPECT_EQ(LoadError(std::string(kPrices) +
                      "auto_model_selection:\n  rules:\n"
                      "    - {condition: default, model: opus, "
                      "fallback_model: gpt-4}\n"),
            "limits.yml:7:41: auto_model_selection.rules[0].fallback_model: "
            "unknown model \"gpt-4\" (pricing.models has opus, sonnet)");
  // A rule before the prices is reported where the rule names the model.
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n"
                      "    - {condition: default, model: hiaku}\n" +
                      std::string(kPrices)),
            "limits.yml:3:28: auto_model_selection.rules[0].model: unknown "
            "model \"hiaku\" (pricing.models has opus, sonnet)");
  // Models are case-sensitive names.
  EXPECT_THAT(LoadError(std::string(kPrices) + "  default_model: Opus\n"),
              HasSubstr("unknown model \"Opus\" (not in pricing.models), did "
                        "you mean \"opus\"?"));
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n"
                      "    - {condition: default, model: opus, "
                      "fallback_model: [a]}\n"),
            "limits.yml:3:41: auto_model_selection.rules[0].fallback_model: "
            "must be a string, got a list");
}

TEST(MoneyConfigErrorTest, BadTokenBudgetSettings) {
  EXPECT_EQ(LoadError("token_budgets:\n  architect: -1\n"),
            "limits.yml:2:3: token_budgets.architect: must be a whole number "
            ">= 0, got \"-1\"");
  EXPECT_EQ(LoadError("token_budgets:\n  default: -5\n"),
            "limits.yml:2:3: token_budgets.default: must be a whole number >= "
            "0, got \"-5\"");
  EXPECT_EQ(LoadError("token_budgets:\n  default: 1.5\n"),
            "limits.yml:2:3: token_budgets.default: must be a whole number >= "
            "0, got \"1.5\"");
  EXPECT_EQ(LoadError("token_budgets:\n  over_budget: flg\n"),
            "limits.yml:2:3: token_budgets.over_budget: must be flag or stop, "
            "got \"flg\", did you mean \"flag\"?");
  EXPECT_EQ(LoadError("token_budgets:\n  over_budget: Stop\n"),
            "limits.yml:2:3: token_budgets.over_budget: must be flag or stop, "
            "got \"Stop\", did you mean \"stop\"?");
  EXPECT_EQ(LoadError("token_budgets:\n  over_budget: pause\n"),
            "limits.yml:2:3: token_budgets.over_budget: must be flag or stop, "
            "got \"pause\"");
  EXPECT_EQ(LoadError("token_budgets:\n  learning_rate: 0\n"),
            "limits.yml:2:3: token_budgets.learning_rate: must be a number > "
            "0 and <= 1, got \"0\"");
  EXPECT_EQ(LoadError("token_budgets:\n  learning_rate: 1.01\n"),
            "limits.yml:2:3: token_budgets.learning_rate: must be a number > "
            "0 and <= 1, got \"1.01\"");
  EXPECT_EQ(LoadError("token_budgets:\n  use_estimate_when_smaller: yes\n"),
            "limits.yml:2:3: token_budgets.use_estimate_when_smaller: must be "
            "true or false, got \"yes\"");
  EXPECT_EQ(
      Load("token_budgets: {learning_rate: 1}").token_budgets.learning_rate, 1);
}

TEST(MoneyConfigErrorTest, ReservedKeyTyposAreNotAgentTypes) {
  EXPECT_EQ(LoadError("token_budgets:\n  multiplyer: 2\n"),
            "limits.yml:2:3: token_budgets.multiplyer: unknown key, did you "
            "mean \"multiplier\"? (agent types this close to a reserved key "
            "are refused)");
  EXPECT_THAT(LoadError("token_budgets:\n  Default: 5\n"),
              HasSubstr("token_budgets.Default: unknown key, did you mean "
                        "\"default\"?"));
  EXPECT_THAT(LoadError("token_budgets:\n  over_budgets: stop\n"),
              HasSubstr("token_budgets.over_budgets: unknown key, did you "
                        "mean \"over_budget\"?"));
  // Names farther away are agent types.
  EXPECT_EQ(Load("token_budgets: {defaulter: 5}")
                .token_budgets.per_type.at("defaulter"),
            5);
}

TEST(MoneyConfigErrorTest, BadBudgetCalendar) {
  EXPECT_EQ(LoadError("daily_limits:\n  period: weeky\n"),
            "limits.yml:2:3: daily_limits.period: must be one of daily, "
            "weekly, monthly, got \"weeky\", did you mean \"weekly\"?");
  EXPECT_EQ(LoadError("daily_limits:\n  period: yearly\n"),
            "limits.yml:2:3: daily_limits.period: must be one of daily, "
            "weekly, monthly, got \"yearly\"");
  EXPECT_EQ(LoadError("daily_limits:\n  week_start: mon\n"),
            "limits.yml:2:3: daily_limits.week_start: must be one of sunday, "
            "monday, tuesday, wednesday, thursday, friday, saturday, got "
            "\"mon\", did you mean \"monday\"?");
  EXPECT_EQ(LoadError("daily_limits:\n  week_start: wendsday\n"),
            "limits.yml:2:3: daily_limits.week_start: must be one of sunday, "
            "monday, tuesday, wednesday, thursday, friday, saturday, got "
            "\"wendsday\", did you mean \"wednesday\"?");
  EXPECT_EQ(LoadError("daily_limits:\n  week_start: 1\n"),
            "limits.yml:2:3: daily_limits.week_start: must be one of sunday, "
            "monday, tuesday, wednesday, thursday, friday, saturday, got "
            "\"1\"");
  // "t" and "s" begin two days each: no suggestion.
  EXPECT_THAT(LoadError("daily_limits: {week_start: t}"), EndsWith("\"t\""));
}

TEST(MoneyConfigErrorTest, BadTimeZones) {
  if (HaveTzdata()) {
    EXPECT_EQ(LoadError("daily_limits:\n  time_zone: Europe/Berln\n"),
              "limits.yml:2:3: daily_limits.time_zone: unknown time zone "
              "\"Europe/Berln\", did you mean \"Europe/Berlin\"?");
    EXPECT_EQ(LoadError("daily_limits:\n  time_zone: europe/berlin\n"),
              "limits.yml:2:3: daily_limits.time_zone: unknown time zone "
              "\"europe/berlin\", did you mean \"Europe/Berlin\"?");
    EXPECT_EQ(LoadError("daily_limits:\n  time_zone: Mars/Olympus_Mons\n"),
              "limits.yml:2:3: daily_limits.time_zone: unknown time zone "
              "\"Mars/Olympus_Mons\" (give an IANA name such as \"UTC\" or "
              "\"Europe/Berlin\")");
  }
  // Paths, the host's zone and odd text are refused whatever the host has.
  for (const char* bad :
       {"/usr/share/zoneinfo/UTC", "../zoneinfo/UTC", "localtime", "Europe/",
        "Europe//Berlin", "UTC UTC", "Fixed/UTC+01:00:00"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(
        LoadError(std::string("daily_limits:\n  time_zone: \"") + bad + "\"\n"),
        StartsWith("limits.yml:2:3: daily_limits.time_zone: unknown time zone "
                   "\"" +
                   std::string(bad) + "\""));
  }
  EXPECT_EQ(LoadError("daily_limits:\n  time_zone: \"\"\n"),
            "limits.yml:2:3: daily_limits.time_zone: must be a non-empty "
            "string");
}

TEST(MoneyConfigErrorTest, NoTimeZoneDatabase) {
  // absl reads zones from $TZDIR, and remembers a failed name, so this uses a
  // zone no other test loads.
  const char* old = std::getenv("TZDIR");
  const std::optional<std::string> saved =
      old != nullptr ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("TZDIR", "/nonexistent/qm-test-zoneinfo", 1);
  const std::string error =
      LoadError("daily_limits:\n  time_zone: Pacific/Chatham\n");
  const Config utc = Load("daily_limits: {time_zone: UTC}");
  if (saved.has_value()) {
    ::setenv("TZDIR", saved->c_str(), 1);
  } else {
    ::unsetenv("TZDIR");
  }
  EXPECT_EQ(error,
            "limits.yml:2:3: daily_limits.time_zone: unknown time zone "
            "\"Pacific/Chatham\" (no time zone database found: install tzdata "
            "or set TZDIR; only \"UTC\" works without it)");
  EXPECT_EQ(utc.daily_limits.time_zone, "UTC");
}

TEST(MoneyConfigErrorTest, BadPeriodBudgets) {
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    architect: {max_tokens: -1}\n"),
            "limits.yml:3:17: daily_limits.per_agent_type.architect."
            "max_tokens: must be a whole number >= 0, got \"-1\"");
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    architect: {max_cost_usd: -20}\n"),
            "limits.yml:3:17: daily_limits.per_agent_type.architect."
            "max_cost_usd: must be a number >= 0, got \"-20\"");
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    architect: 500000\n"),
            "limits.yml:3:5: daily_limits.per_agent_type.architect: must be a "
            "mapping of keys to values, got \"500000\"");
  EXPECT_EQ(LoadError("daily_limits:\n  max_tokens_total: -2000000\n"),
            "limits.yml:2:3: daily_limits.max_tokens_total: must be a whole "
            "number >= 0, got \"-2000000\"");
  EXPECT_EQ(LoadError("products:\n  web:\n    cost_budget_daily_usd: -5\n"),
            "limits.yml:3:5: products.web.cost_budget_daily_usd: must be a "
            "number >= 0, got \"-5\"");
  EXPECT_EQ(LoadError("products:\n  web:\n    token_budget_daily: -5\n"),
            "limits.yml:3:5: products.web.token_budget_daily: must be a whole "
            "number >= 0, got \"-5\"");
}

// Token counts and dollar amounts beyond what the engine accepts (it keeps
// them in 64-bit integers) used to load, so `qm config validate` passed a
// file the engine then refused without a position, or, for per-task token
// budgets, accepted and overflowed.
TEST(MoneyConfigErrorTest, BudgetsBeyondTheEnginesBoundsAreRefused) {
  EXPECT_EQ(LoadError("token_budgets:\n  architect: 9000000000000000000\n"),
            "limits.yml:2:3: token_budgets.architect: must be at most "
            "1000000000000000, got \"9000000000000000000\"");
  EXPECT_EQ(LoadError("token_budgets:\n  default: 1000000000000001\n"),
            "limits.yml:2:3: token_budgets.default: must be at most "
            "1000000000000000, got \"1000000000000001\"");
  EXPECT_EQ(LoadError("daily_limits:\n  max_tokens_total: 2000000000000000\n"),
            "limits.yml:2:3: daily_limits.max_tokens_total: must be at most "
            "1000000000000000, got \"2000000000000000\"");
  EXPECT_EQ(LoadError("daily_limits:\n  max_cost_usd: 1e12\n"),
            "limits.yml:2:3: daily_limits.max_cost_usd: must be at most "
            "1000000000, got \"1e12\"");
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    qa: {max_tokens: 2e15}\n"),
            "limits.yml:3:10: daily_limits.per_agent_type.qa.max_tokens: "
            "must be a whole number >= 0, got \"2e15\"");
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    qa: {max_cost_usd: 1000000001}\n"),
            "limits.yml:3:10: daily_limits.per_agent_type.qa.max_cost_usd: "
            "must be at most 1000000000, got \"1000000001\"");
  EXPECT_EQ(LoadError("products:\n  web:\n    token_budget_daily: "
                      "1000000000000001\n"),
            "limits.yml:3:5: products.web.token_budget_daily: must be at most "
            "1000000000000000, got \"1000000000000001\"");
  EXPECT_EQ(LoadError("products:\n  web:\n    cost_budget_daily_usd: 2e9\n"),
            "limits.yml:3:5: products.web.cost_budget_daily_usd: must be at "
            "most 1000000000, got \"2e9\"");
  // The bounds themselves load, and the engine takes them.
  const Config c = Load(
      "token_budgets: {architect: 1000000000000000}\n"
      "daily_limits: {max_tokens_total: 1000000000000000, max_cost_usd: "
      "1000000000}\n");
  EXPECT_EQ(c.token_budgets.per_type.at("architect"), 1000000000000000);
  EXPECT_EQ(c.daily_limits.max_cost_usd, 1e9);
  ManualClock clock;
  auto engine = Engine::Create(c, &clock);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
}

// A name that is not UTF-8 (here a model's) loaded, and `qm config show`
// then aborted writing it as JSON.
TEST(MoneyConfigErrorTest, TextThatIsNotUtf8IsRefused) {
  EXPECT_EQ(LoadError("pricing:\n  models:\n    \"s\xff\": "
                      "{input_per_million: 1}\n"),
            "limits.yml:3:7: not UTF-8 text");
}

TEST(MoneyConfigErrorTest, BadBurnRateWindow) {
  EXPECT_EQ(LoadError("circuit_breaker:\n  burn_rate_window: 0s\n"),
            "limits.yml:2:3: circuit_breaker.burn_rate_window: must be longer "
            "than 0s, got \"0s\"");
  EXPECT_THAT(LoadError("circuit_breaker:\n  burn_rate_window: an hour\n"),
              HasSubstr("limits.yml:2:3: circuit_breaker.burn_rate_window: "
                        "must be a duration"));
  EXPECT_EQ(Load("circuit_breaker: {burn_rate_window: 90}")
                .circuit_breaker.burn_rate_window,
            std::chrono::seconds(90));
}

TEST(MoneyConfigErrorTest, UnknownKeysSuggestTheNearestKey) {
  EXPECT_EQ(LoadError("pricng: {}\n"),
            "limits.yml:1:1: pricng: unknown key, did you mean \"pricing\"?");
  EXPECT_EQ(LoadError("pricing:\n  model: {}\n"),
            "limits.yml:2:3: pricing.model: unknown key, did you mean "
            "\"models\"?");
  EXPECT_EQ(
      LoadError("pricing:\n  models:\n"
                "    opus: {input_per_million: 1, output_per_milion: 2}\n"),
      "limits.yml:3:34: pricing.models.opus.output_per_milion: unknown "
      "key, did you mean \"output_per_million\"?");
  EXPECT_EQ(LoadError("daily_limits:\n  timezone: UTC\n"),
            "limits.yml:2:3: daily_limits.timezone: unknown key, did you mean "
            "\"time_zone\"?");
  EXPECT_EQ(LoadError("daily_limits:\n  per_agent_type:\n"
                      "    qa: {max_token: 5}\n"),
            "limits.yml:3:10: daily_limits.per_agent_type.qa.max_token: "
            "unknown key, did you mean \"max_tokens\"?");
  EXPECT_EQ(LoadError("products:\n  web:\n    cost_budget_daily_us: 5\n"),
            "limits.yml:3:5: products.web.cost_budget_daily_us: unknown key, "
            "did you mean \"cost_budget_daily_usd\"?");
  EXPECT_EQ(
      LoadError("auto_model_selection:\n  rules:\n"
                "    - {condition: default, model: a, fallback_modle: b}\n"),
      "limits.yml:3:38: auto_model_selection.rules[0].fallback_modle: "
      "unknown key, did you mean \"fallback_model\"?");
  EXPECT_EQ(LoadError("circuit_breaker:\n  burn_rate_windw: 1h\n"),
            "limits.yml:2:3: circuit_breaker.burn_rate_windw: unknown key, did "
            "you mean \"burn_rate_window\"?");
  // A key of another section names where it belongs.
  EXPECT_EQ(LoadError("daily_limits: {learning_rate: 0.5}\n"),
            "limits.yml:1:16: daily_limits.learning_rate: unknown key here, "
            "did you mean \"token_budgets.learning_rate\"?");
  EXPECT_EQ(LoadError("default_model: opus\n"),
            "limits.yml:1:1: default_model: unknown key here, did you mean "
            "\"pricing.default_model\"?");
}

// ---- Conditions: compiled at load, errors at the offending character. ----

// The error of a one-rule config whose condition is written `condition`
// (the YAML text after "condition: ", on line 3 from column 18).
std::string RuleError(const std::string& condition) {
  return LoadError("auto_model_selection:\n  rules:\n    - condition: " +
                   condition + "\n      model: opus\n");
}

TEST(ConditionErrorTest, PlainScalar) {
  // "task.prio" starts at column 18, the first character of the scalar.
  EXPECT_THAT(RuleError("task.prio == high"),
              StartsWith("limits.yml:3:18: auto_model_selection.rules[0]."
                         "condition: unknown variable \"task.prio\""));
  // "critcal" is at offset 17 of the condition: column 18 + 17.
  EXPECT_EQ(RuleError("task.priority == critcal"),
            "limits.yml:3:35: auto_model_selection.rules[0].condition: "
            "unknown priority level \"critcal\", did you mean \"critical\"?");
  // An error at the end points just past the last character.
  EXPECT_EQ(RuleError("task.priority =="),
            "limits.yml:3:34: auto_model_selection.rules[0].condition: "
            "expected an operand, got end of condition");
}

TEST(ConditionErrorTest, DoubleQuotedScalar) {
  // The mark is the opening quote: one column further.
  EXPECT_EQ(RuleError("\"task.priority == critcal\""),
            "limits.yml:3:36: auto_model_selection.rules[0].condition: "
            "unknown priority level \"critcal\", did you mean \"critical\"?");
  // Escapes take more source than value: \" is one character of the value.
  EXPECT_THAT(RuleError("\"task.product == \\\"x\\\" && task.prio == high\""),
              StartsWith("limits.yml:3:44: auto_model_selection.rules[0]."
                         "condition: unknown variable \"task.prio\""));
  // \u00e9 is 6 characters of source for 2 bytes of value; the error is at
  // its backslash, offset 16 of the value.
  EXPECT_EQ(RuleError("\"task.product == \\u00e9\""),
            "limits.yml:3:35: auto_model_selection.rules[0].condition: "
            "unexpected non-ASCII character");
  // At the end: the closing quote.
  EXPECT_EQ(RuleError("\"task.priority ==\""),
            "limits.yml:3:35: auto_model_selection.rules[0].condition: "
            "expected an operand, got end of condition");
}

TEST(ConditionErrorTest, SingleQuotedScalar) {
  EXPECT_EQ(RuleError("'task.priority == critcal'"),
            "limits.yml:3:36: auto_model_selection.rules[0].condition: "
            "unknown priority level \"critcal\", did you mean \"critical\"?");
  // '' is one quote of the value.
  EXPECT_THAT(RuleError("'task.product == ''x'' && task.prio == high'"),
              StartsWith("limits.yml:3:44: auto_model_selection.rules[0]."
                         "condition: unknown variable \"task.prio\""));
}

TEST(ConditionErrorTest, FlowSequenceItems) {
  // The second item's quote is at column 43.
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions: "
                      "[\"cost_daily_usd > 1\", \"cost_dayly_usd > 1\"]\n"),
            "limits.yml:2:44: circuit_breaker.trip_conditions[1]: unknown "
            "variable \"cost_dayly_usd\", did you mean \"cost_daily_usd\"?");
  // The second item starts at column 41; its second ">" is at offset 14.
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions: "
                      "[cost_daily_usd > 1, tokens_daily >> 1]\n"),
            "limits.yml:2:55: circuit_breaker.trip_conditions[1]: expected an "
            "operand, got \">\"");
}

TEST(ConditionErrorTest, ScalarsOverSeveralLines) {
  // A plain scalar folded over two lines: the error is on the second.
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions:\n"
                      "    - cost_daily_usd > 1 &&\n"
                      "      tokens_dayly > 5\n"),
            "limits.yml:4:7: circuit_breaker.trip_conditions[0]: unknown "
            "variable \"tokens_dayly\", did you mean \"tokens_daily\"?");
  // A double-quoted one with an empty line (read as a newline) in between.
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions:\n"
                      "    - \"cost_daily_usd > 1 &&\n\n"
                      "       tokens_dayly > 5\"\n"),
            "limits.yml:5:8: circuit_breaker.trip_conditions[0]: unknown "
            "variable \"tokens_dayly\", did you mean \"tokens_daily\"?");
  // An escaped line break joins the lines without a space; the error is at
  // the start of "tokens_", offset 22, on the first line.
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions:\n"
                      "    - \"cost_daily_usd > 1 && tokens_\\\n"
                      "       dayly > 5\"\n"),
            "limits.yml:3:30: circuit_breaker.trip_conditions[0]: unknown "
            "variable \"tokens_dayly\", did you mean \"tokens_daily\"?");
}

TEST(ConditionErrorTest, BlockScalarsPointAtTheirStart) {
  EXPECT_THAT(RuleError(">-\n        task.prio == high"),
              StartsWith("limits.yml:3:18: auto_model_selection.rules[0]."
                         "condition: unknown variable \"task.prio\""));
  EXPECT_THAT(RuleError("|\n        task.priority == critcal"),
              StartsWith("limits.yml:3:18: auto_model_selection.rules[0]."
                         "condition: unknown priority level"));
}

TEST(ConditionErrorTest, TagsAnchorsByteOrderMarkAndCrlf) {
  EXPECT_EQ(RuleError("!!str task.priority == critcal"),
            "limits.yml:3:41: auto_model_selection.rules[0].condition: "
            "unknown priority level \"critcal\", did you mean \"critical\"?");
  EXPECT_EQ(RuleError("&c \"task.priority == critcal\""),
            "limits.yml:3:39: auto_model_selection.rules[0].condition: "
            "unknown priority level \"critcal\", did you mean \"critical\"?");
  EXPECT_EQ(LoadError("\xEF\xBB\xBF"
                      "circuit_breaker:\r\n  trip_conditions:\r\n"
                      "    - \"cost_daily_usd > x\"\r\n"),
            "limits.yml:3:23: circuit_breaker.trip_conditions[0]: cannot "
            "compare number with string");
}

TEST(ConditionErrorTest, TypeAndSyntaxErrors) {
  EXPECT_THAT(RuleError("task.priority > 5"),
              StartsWith("limits.yml:3:32: auto_model_selection.rules[0]."
                         "condition: cannot compare level with number"));
  EXPECT_THAT(RuleError("task.priority == high and task.preemptible"),
              StartsWith("limits.yml:3:40: auto_model_selection.rules[0]."
                         "condition: unexpected \"and\", did you mean "
                         "\"&&\"?"));
  EXPECT_EQ(RuleError("\"\""),
            "limits.yml:3:7: auto_model_selection.rules[0].condition: must be "
            "a non-empty string");
}

TEST(ConditionErrorTest, DefaultIsNotATripCondition) {
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions: [default]\n"),
            "limits.yml:2:21: circuit_breaker.trip_conditions[0]: \"default\" "
            "is for auto_model_selection rules; a trip condition compares "
            "spend, e.g. \"cost_daily_usd > daily_limits.max_cost_usd\"");
}

TEST(ConditionErrorTest, RuleVariablesAreNotBreakerVariables) {
  EXPECT_THAT(LoadError("circuit_breaker:\n  trip_conditions:\n"
                        "    - task.priority == critical\n"),
              StartsWith("limits.yml:3:7: circuit_breaker.trip_conditions[0]: "
                         "unknown variable \"task.priority\""));
  EXPECT_THAT(RuleError("cost_daily_usd > 5"),
              StartsWith("limits.yml:3:18: auto_model_selection.rules[0]."
                         "condition: unknown variable"));
}

// A config embedded in a scenario, read with and without the document text:
// without it the columns are still right for one-line plain and quoted
// conditions without escapes.
TEST(ConditionErrorTest, EmbeddedConfig) {
  struct Case {
    std::string scenario;
    std::string want;
  } cases[] = {
      {"name: x\nconfig:\n  auto_model_selection:\n    rules:\n"
       "      - {condition: task.priority == critcal, model: opus}\n",
       "s.yaml:5:38: auto_model_selection.rules[0].condition: unknown "
       "priority level"},
      {"name: x\nconfig:\n  auto_model_selection:\n    rules:\n"
       "      - {condition: \"task.priority == critcal\", model: opus}\n",
       "s.yaml:5:39: auto_model_selection.rules[0].condition: unknown "
       "priority level"},
      {"name: x\nconfig:\n  circuit_breaker:\n"
       "    trip_conditions: ['cost_daily_usd > x']\n",
       "s.yaml:4:39: circuit_breaker.trip_conditions[0]: cannot compare"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scenario);
    const YAML::Node doc = YAML::Load(c.scenario);
    for (const bool with_text : {false, true}) {
      SCOPED_TRACE(with_text);
      StatusOr<Config> config = ConfigFromYamlNode(
          doc["config"], "s.yaml",
          with_text ? std::string_view(c.scenario) : std::string_view());
      ASSERT_FALSE(config.ok());
      EXPECT_THAT(config.status().message(), StartsWith(c.want));
    }
  }
}

}  // namespace
}  // namespace qm
