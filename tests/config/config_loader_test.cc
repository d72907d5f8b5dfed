// Tests of the YAML configuration loader: defaults, the seed 001 example, every
// class of error with its file:line:column and key path, "did you mean"
// suggestions, and the ConfigToYaml round trip.
#include "qm/config_loader.h"

#include <absl/time/time.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "qm/config.h"
#include "qm/status.h"
#include "tests/config/config_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kExamplePath[] = QM_SOURCE_DIR "/examples/resource-limits.yml";

const PriorityLevelConfig& LevelOf(const Config& c, Level level) {
  return c.levels[static_cast<int>(level)];
}

using testing_util::HaveTzdata;
using testing_util::Load;
using testing_util::LoadError;

// Equality of two configs, field by field so that a failure names the field,
// then as a whole (Config::operator==) for anything not listed here.
void ExpectSameConfig(const Config& a, const Config& b) {
  ASSERT_EQ(a.resources.size(), b.resources.size());
  for (size_t i = 0; i < a.resources.size(); ++i) {
    SCOPED_TRACE("resource " + a.resources[i].name);
    EXPECT_EQ(a.resources[i].name, b.resources[i].name);
    EXPECT_EQ(a.resources[i].capacity, b.resources[i].capacity);
    EXPECT_EQ(a.resources[i].fractional, b.resources[i].fractional);
  }
  EXPECT_EQ(a.per_type_limits, b.per_type_limits);
  for (int i = 0; i < kNumLevels; ++i) {
    SCOPED_TRACE(LevelName(static_cast<Level>(i)));
    EXPECT_EQ(a.levels[i].weight, b.levels[i].weight);
    EXPECT_EQ(a.levels[i].max_wait_minutes, b.levels[i].max_wait_minutes);
    EXPECT_EQ(a.levels[i].preempt_lower, b.levels[i].preempt_lower);
  }
  const SchedulingConfig &sa = a.scheduling, &sb = b.scheduling;
  EXPECT_EQ(sa.weights.priority, sb.weights.priority);
  EXPECT_EQ(sa.weights.wait, sb.weights.wait);
  EXPECT_EQ(sa.weights.blocking, sb.weights.blocking);
  EXPECT_EQ(sa.weights.fair_share, sb.weights.fair_share);
  EXPECT_EQ(sa.default_total_tasks, sb.default_total_tasks);
  EXPECT_EQ(sa.fair_share_half_life, sb.fair_share_half_life);
  EXPECT_EQ(sa.preemption_grace, sb.preemption_grace);
  EXPECT_EQ(sa.default_ttl, sb.default_ttl);
  EXPECT_EQ(sa.restrict_agent_types, sb.restrict_agent_types);
  EXPECT_EQ(sa.history_limit, sb.history_limit);
  ASSERT_EQ(a.products.size(), b.products.size());
  for (const auto& [name, pa] : a.products) {
    SCOPED_TRACE("product " + name);
    ASSERT_EQ(b.products.count(name), 1u);
    const ProductConfig& pb = b.products.at(name);
    EXPECT_EQ(pa.priority, pb.priority);
    EXPECT_EQ(pa.max_concurrent_agents, pb.max_concurrent_agents);
    EXPECT_EQ(pa.token_budget_daily, pb.token_budget_daily);
    EXPECT_EQ(pa.cost_budget_daily_usd, pb.cost_budget_daily_usd);
    EXPECT_EQ(pa.share, pb.share);
  }
  EXPECT_EQ(a.allocation_limits.max_cpu_per_workflow,
            b.allocation_limits.max_cpu_per_workflow);
  EXPECT_EQ(a.allocation_limits.max_memory_per_workflow,
            b.allocation_limits.max_memory_per_workflow);
  EXPECT_EQ(a.allocation_limits.max_agents_per_workflow,
            b.allocation_limits.max_agents_per_workflow);
  EXPECT_EQ(a.allocation_limits.max_duration, b.allocation_limits.max_duration);
  EXPECT_EQ(a.auto_release.on_completion, b.auto_release.on_completion);
  EXPECT_EQ(a.auto_release.on_timeout, b.auto_release.on_timeout);
  EXPECT_EQ(a.auto_release.on_failure, b.auto_release.on_failure);
  EXPECT_EQ(a.auto_release.grace_period, b.auto_release.grace_period);
  ASSERT_EQ(a.pricing.models.size(), b.pricing.models.size());
  for (const auto& [name, ma] : a.pricing.models) {
    SCOPED_TRACE("model " + name);
    ASSERT_EQ(b.pricing.models.count(name), 1u);
    const ModelPrice& mb = b.pricing.models.at(name);
    EXPECT_EQ(ma.input_per_million, mb.input_per_million);
    EXPECT_EQ(ma.output_per_million, mb.output_per_million);
    EXPECT_EQ(ma.cached_input_per_million, mb.cached_input_per_million);
  }
  EXPECT_EQ(a.pricing.default_model, b.pricing.default_model);
  EXPECT_EQ(a.pricing.estimate_output_share, b.pricing.estimate_output_share);
  EXPECT_EQ(a.token_budgets.per_type, b.token_budgets.per_type);
  EXPECT_EQ(a.token_budgets.default_budget, b.token_budgets.default_budget);
  EXPECT_EQ(a.token_budgets.multiplier, b.token_budgets.multiplier);
  EXPECT_EQ(a.token_budgets.use_estimate_when_smaller,
            b.token_budgets.use_estimate_when_smaller);
  EXPECT_EQ(a.token_budgets.over_budget, b.token_budgets.over_budget);
  EXPECT_EQ(a.token_budgets.learning_rate, b.token_budgets.learning_rate);
  EXPECT_EQ(a.daily_limits.max_tokens_total, b.daily_limits.max_tokens_total);
  EXPECT_EQ(a.daily_limits.max_cost_usd, b.daily_limits.max_cost_usd);
  EXPECT_EQ(a.daily_limits.alert_at_percent, b.daily_limits.alert_at_percent);
  EXPECT_EQ(a.daily_limits.period, b.daily_limits.period);
  EXPECT_EQ(a.daily_limits.time_zone, b.daily_limits.time_zone);
  EXPECT_EQ(a.daily_limits.week_start, b.daily_limits.week_start);
  ASSERT_EQ(a.daily_limits.per_agent_type.size(),
            b.daily_limits.per_agent_type.size());
  for (const auto& [type, ba] : a.daily_limits.per_agent_type) {
    SCOPED_TRACE("per_agent_type " + type);
    ASSERT_EQ(b.daily_limits.per_agent_type.count(type), 1u);
    EXPECT_EQ(ba.max_tokens, b.daily_limits.per_agent_type.at(type).max_tokens);
    EXPECT_EQ(ba.max_cost_usd,
              b.daily_limits.per_agent_type.at(type).max_cost_usd);
  }
  ASSERT_EQ(a.model_rules.size(), b.model_rules.size());
  for (size_t i = 0; i < a.model_rules.size(); ++i) {
    EXPECT_EQ(a.model_rules[i].condition, b.model_rules[i].condition);
    EXPECT_EQ(a.model_rules[i].model, b.model_rules[i].model);
    EXPECT_EQ(a.model_rules[i].fallback_model, b.model_rules[i].fallback_model);
  }
  EXPECT_EQ(a.circuit_breaker.trip_conditions,
            b.circuit_breaker.trip_conditions);
  EXPECT_EQ(a.circuit_breaker.burn_rate_window,
            b.circuit_breaker.burn_rate_window);
  EXPECT_EQ(a.circuit_breaker.action, b.circuit_breaker.action);
  EXPECT_EQ(a.circuit_breaker.notify, b.circuit_breaker.notify);
  EXPECT_EQ(a.circuit_breaker.allow_override, b.circuit_breaker.allow_override);
  EXPECT_EQ(a.manual_override.pause_all_agents,
            b.manual_override.pause_all_agents);
  EXPECT_EQ(a.manual_override.priority_override,
            b.manual_override.priority_override);
  EXPECT_EQ(a.optimization_targets.efficiency_threshold,
            b.optimization_targets.efficiency_threshold);
  EXPECT_EQ(a.optimization_targets.response_time_target,
            b.optimization_targets.response_time_target);
  EXPECT_EQ(a.optimization_targets.utilization_target,
            b.optimization_targets.utilization_target);
  EXPECT_EQ(a.optimization_targets.conflict_tolerance,
            b.optimization_targets.conflict_tolerance);
  EXPECT_EQ(a.monitoring_intervals.resource_check,
            b.monitoring_intervals.resource_check);
  EXPECT_EQ(a.monitoring_intervals.performance_sample,
            b.monitoring_intervals.performance_sample);
  EXPECT_EQ(a.monitoring_intervals.capacity_analysis,
            b.monitoring_intervals.capacity_analysis);
  EXPECT_EQ(a.monitoring_intervals.trend_analysis,
            b.monitoring_intervals.trend_analysis);
  EXPECT_EQ(a.monitoring, b.monitoring);
  EXPECT_TRUE(a == b) << "the configs differ in a field not compared above";
}

// Dumps `config`, loads the dump, and expects the same config back.
void ExpectRoundTrip(const Config& config) {
  const std::string yaml = ConfigToYaml(config);
  SCOPED_TRACE(yaml);
  StatusOr<Config> again = LoadConfigString(yaml, "dump.yml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectSameConfig(config, *again);
  EXPECT_EQ(ConfigToYaml(*again), yaml);
}

// ---- Defaults and the example. ----

TEST(ConfigLoaderTest, EmptyInputGivesDefaults) {
  for (const char* text : {"", "\n", "# only a comment\n", "---\n", "~\n"}) {
    SCOPED_TRACE(text);
    ExpectSameConfig(Load(text), Config::Defaults());
  }
}

TEST(ConfigLoaderTest, DefaultsAreTheSeedValues) {
  const Config c = Load("");
  ASSERT_NE(c.FindResource("agents"), nullptr);
  EXPECT_EQ(c.FindResource("agents")->capacity, 5);
  EXPECT_TRUE(c.FindResource("cpu_cores")->fractional);
  EXPECT_FALSE(c.FindResource("tool.bash")->fractional);
  EXPECT_EQ(LevelOf(c, Level::kCritical).weight, 1.0);
  EXPECT_TRUE(LevelOf(c, Level::kCritical).preempt_lower);
  EXPECT_EQ(LevelOf(c, Level::kLow).max_wait_minutes, 240);
  EXPECT_EQ(c.allocation_limits.max_cpu_per_workflow, 6);
  EXPECT_EQ(c.scheduling.default_ttl, minutes(30));
}

TEST(ConfigLoaderTest, ExampleFileReproducesSeed001) {
  StatusOr<Config> loaded = LoadConfigFile(kExamplePath);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const Config& c = *loaded;
  EXPECT_EQ(c.FindResource("agents")->capacity, 5);
  EXPECT_EQ(c.per_type_limits,
            (std::map<std::string, int64_t>{{"backend-engineer", 2},
                                            {"frontend-engineer", 2}}));
  EXPECT_EQ(c.token_budgets.per_type,
            (std::map<std::string, int64_t>{{"architect", 150000},
                                            {"backend-engineer", 80000},
                                            {"qa-engineer", 60000}}));
  EXPECT_EQ(c.token_budgets.multiplier, 1.5);
  EXPECT_EQ(LevelOf(c, Level::kCritical).max_wait_minutes, 0);
  EXPECT_TRUE(LevelOf(c, Level::kCritical).preempt_lower);
  EXPECT_EQ(LevelOf(c, Level::kHigh).max_wait_minutes, 15);
  EXPECT_FALSE(LevelOf(c, Level::kHigh).preempt_lower);
  EXPECT_EQ(LevelOf(c, Level::kNormal).max_wait_minutes, 60);
  EXPECT_EQ(LevelOf(c, Level::kLow).max_wait_minutes, 240);
  EXPECT_EQ(LevelOf(c, Level::kNormal).weight, 0.5);
  EXPECT_EQ(c.daily_limits.max_tokens_total, 2000000);
  EXPECT_EQ(c.daily_limits.max_cost_usd, 100.0);
  EXPECT_EQ(c.daily_limits.alert_at_percent, std::vector<double>{80});
  ASSERT_EQ(c.products.count("urgent-project"), 1u);
  const ProductConfig& urgent = c.products.at("urgent-project");
  EXPECT_EQ(urgent.priority, Level::kCritical);
  EXPECT_EQ(urgent.max_concurrent_agents, 8);
  EXPECT_EQ(urgent.token_budget_daily, 1000000);
  ASSERT_EQ(c.model_rules.size(), 3u);
  EXPECT_EQ(c.model_rules[0].condition, "task.priority == critical");
  EXPECT_EQ(c.model_rules[0].model, "opus");
  EXPECT_EQ(c.model_rules[1].condition, "task.estimated_minutes < 30");
  EXPECT_EQ(c.model_rules[1].model, "haiku");
  EXPECT_EQ(c.model_rules[2].condition, "default");
  EXPECT_EQ(c.model_rules[2].model, "sonnet");
  EXPECT_EQ(
      c.circuit_breaker.trip_conditions,
      std::vector<std::string>{"cost_daily_usd > daily_limits.max_cost_usd"});
  EXPECT_EQ(c.circuit_breaker.action, "pause_all");
  EXPECT_EQ(c.circuit_breaker.notify, "ceo");
  EXPECT_TRUE(c.circuit_breaker.allow_override);
  // The price table the example adds to the seed.
  EXPECT_EQ(c.pricing.default_model, "sonnet");
  ASSERT_EQ(c.pricing.models.size(), 3u);
  EXPECT_EQ(c.pricing.models.at("opus"), (ModelPrice{15, 75, std::nullopt}));
  EXPECT_EQ(c.pricing.models.at("sonnet"), (ModelPrice{3, 15, std::nullopt}));
  EXPECT_EQ(c.pricing.models.at("haiku"),
            (ModelPrice{0.25, 1.25, std::nullopt}));
  // What the example leaves out keeps its default.
  EXPECT_EQ(c.FindResource("cpu_cores")->capacity, 8);
  EXPECT_FALSE(c.manual_override.pause_all_agents);
}

// ---- Round trip. ----

TEST(ConfigLoaderTest, RoundTripDefaults) {
  ExpectRoundTrip(Config::Defaults());
}

TEST(ConfigLoaderTest, RoundTripExample) {
  StatusOr<Config> loaded = LoadConfigFile(kExamplePath);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectRoundTrip(*loaded);
}

TEST(ConfigLoaderTest, RoundTripEverySettingChanged) {
  // Without tzdata only UTC loads.
  const std::string zone =
      HaveTzdata() ? "America/Argentina/Buenos_Aires" : "UTC";
  const Config c = Load(R"(resources:
  cpu_cores: 12.5
  gpu: {capacity: 2}
  tokens.k: {capacity: 0.125, fractional: true}
max_concurrent:
  total: 7
  per_type: {backend-engineer: 3, "odd name: x": 1}
pricing:
  default_model: "null"
  estimate_output_share: 1
  models:
    "null": {input_per_million: 0}
    "'quoted'": {input_per_million: 15, output_per_million: 75,
                 cached_input_per_million: 1.5}
    sonnet: {input_per_million: 3.3333333333333335, output_per_million: null,
             cached_input_per_million: 0}
token_budgets: {architect: 1, default: 0, multiplier: 2.25,
                use_estimate_when_smaller: true, over_budget: stop,
                learning_rate: 0.05}
priority_levels:
  low: {max_wait_time_minutes: 0.5, preempt_lower: true, weight: 0.1}
daily_limits: {max_tokens_total: null, max_cost_usd: 0.01,
               alert_at_percent: [50, 75.5, 100], period: monthly,
               time_zone: )" +
                        zone + R"(, week_start: SATURDAY,
               per_agent_type: {architect: {max_tokens: 500000, max_cost_usd: 20},
                                "007": {}, qa: {max_cost_usd: 0}}}
products:
  "true": {priority: medium, share: 0.3333333333333333,
           cost_budget_daily_usd: 12.5}
  plain: ~
  limited: {max_concurrent_agents: 0, token_budget_daily: 9000000000,
            cost_budget_daily_usd: null}
auto_model_selection:
  rules:
    - {condition: "task.product == 'a: b # c' || task.requester in ['null', \"it's\"]",
       model: "'quoted'", fallback_model: sonnet}
    - {condition: true, model: sonnet, fallback_model: null}
    - {condition: default, model: "null", fallback_model: ""}
circuit_breaker:
  trip_conditions: ["cost_daily_usd > 1", "true",
                    "percent_cost_used >= 99.5 || tokens_daily > 1e6"]
  burn_rate_window: 15m
  when_tripped: {action: pause_new_low_priority, notify: "", allow_override: false}
manual_override:
  pause_all_agents: true
  priority_override: {p1: low, p2: high}
resource_policies:
  allocation_limits: {max_cpu_per_workflow: null, max_memory_per_workflow: 0.5,
                      max_agents_per_workflow: null, max_duration: 1d2h3m4s5ms}
  priority_weights: {high: 0.8}
  optimization_targets: {efficiency_threshold: 99.9, response_time_target: 1.5s,
                         utilization_target: 0, conflict_tolerance: 1}
  monitoring_intervals: {resource_check: 1ms, performance_sample: 59s,
                         capacity_analysis: 2d, trend_analysis: 7d}
auto_release: {on_completion: false, on_timeout: false, on_failure: false,
               grace_period: 0s}
scheduling:
  weights: {priority: 1, wait: 0, blocking: 2.5, fair_share: 1e-7}
  default_total_tasks: 1
  fair_share_half_life: 90
  preemption_grace: 0
  default_ttl: 250ms
  restrict_agent_types: true
  history_limit: 0
)");
  // Spot checks that these really are the loaded values.
  ASSERT_NE(c.FindResource("gpu"), nullptr);
  EXPECT_EQ(c.FindResource("gpu")->capacity, 2);
  EXPECT_EQ(c.circuit_breaker.trip_conditions,
            (std::vector<std::string>{
                "cost_daily_usd > 1", "true",
                "percent_cost_used >= 99.5 || tokens_daily > 1e6"}));
  EXPECT_EQ(c.model_rules[0].condition,
            "task.product == 'a: b # c' || task.requester in ['null', "
            "\"it's\"]");
  EXPECT_EQ(c.pricing.default_model, "null");
  EXPECT_EQ(c.pricing.models.at("sonnet").output_per_million, std::nullopt);
  EXPECT_EQ(c.token_budgets.over_budget, OverBudgetPolicy::kStop);
  EXPECT_EQ(c.daily_limits.week_start, 6);
  EXPECT_EQ(c.daily_limits.time_zone, zone);
  EXPECT_EQ(c.circuit_breaker.burn_rate_window, minutes(15));
  EXPECT_EQ(c.allocation_limits.max_duration,
            hours(26) + minutes(3) + seconds(4) + milliseconds(5));
  EXPECT_EQ(c.scheduling.fair_share_half_life, seconds(90));
  EXPECT_EQ(c.scheduling.weights.fair_share, 1e-7);
  ExpectRoundTrip(c);
}

TEST(ConfigLoaderTest, RoundTripFractionalAgents) {
  const Config c =
      Load("resources: {agents: {capacity: 2.5, fractional: true}}");
  EXPECT_EQ(c.FindResource("agents")->capacity, 2.5);
  ExpectRoundTrip(c);
}

TEST(ConfigLoaderTest, DumpUsesTheDocumentedKeys) {
  const std::string yaml = ConfigToYaml(Config::Defaults());
  for (const char* key : {"resources:",
                          "max_concurrent:",
                          "total: 5",
                          "token_budgets:",
                          "multiplier: 1.5",
                          "priority_levels:",
                          "max_wait_time_minutes: 240",
                          "daily_limits:",
                          "alert_at_percent: [80]",
                          "period: daily",
                          "time_zone: UTC",
                          "week_start: monday",
                          "per_agent_type: {}",
                          "pricing:",
                          "default_model: \"\"",
                          "estimate_output_share: 0.2",
                          "models: {}",
                          "default: null",
                          "use_estimate_when_smaller: false",
                          "over_budget: flag",
                          "learning_rate: 0.2",
                          "burn_rate_window: 1h",
                          "products:",
                          "auto_model_selection:",
                          "circuit_breaker:",
                          "manual_override:",
                          "resource_policies:",
                          "max_duration: 6h",
                          "auto_release:",
                          "grace_period: 5m",
                          "scheduling:",
                          "default_ttl: 30m",
                          "trend_analysis: 1d",
                          "cpu_cores: {capacity: 8, fractional: true}"}) {
    EXPECT_THAT(yaml, HasSubstr(key));
  }
}

// ---- Values that are applied. ----

TEST(ConfigLoaderTest, ResourcesMergeOverDefaults) {
  const Config c = Load(R"(resources:
  cpu_cores: 4
  memory_gb: {capacity: 32, fractional: false}
  gpu: 2
  licences.ide: {capacity: 1.5, fractional: true}
)");
  EXPECT_EQ(c.FindResource("cpu_cores")->capacity, 4);
  EXPECT_TRUE(c.FindResource("cpu_cores")->fractional);  // kept its default
  EXPECT_EQ(c.FindResource("memory_gb")->capacity, 32);
  EXPECT_FALSE(c.FindResource("memory_gb")->fractional);
  EXPECT_EQ(c.FindResource("gpu")->capacity, 2);
  EXPECT_FALSE(c.FindResource("gpu")->fractional);  // custom: whole units
  EXPECT_EQ(c.FindResource("licences.ide")->capacity, 1.5);
  EXPECT_EQ(c.FindResource("tool.web")->capacity, 2);  // untouched default
  // Defaults keep their order; new resources follow in file order.
  EXPECT_EQ(c.resources.size(), Config::Defaults().resources.size() + 2);
  EXPECT_EQ(c.resources[c.resources.size() - 2].name, "gpu");
  EXPECT_EQ(c.resources.back().name, "licences.ide");
}

TEST(ConfigLoaderTest, MaxConcurrentTotalSetsAgentsCapacity) {
  EXPECT_EQ(Load("max_concurrent: {total: 9}").FindResource("agents")->capacity,
            9);
  EXPECT_EQ(Load("resources: {agents: 3}").FindResource("agents")->capacity, 3);
  // Both given and equal is fine.
  EXPECT_EQ(Load("resources: {agents: 4}\nmax_concurrent: {total: 4}")
                .FindResource("agents")
                ->capacity,
            4);
}

TEST(ConfigLoaderTest, PriorityLevelsOverrideOnlyWhatIsGiven) {
  const Config c = Load(R"(priority_levels:
  high: {max_wait_time_minutes: 5}
  medium: {weight: 0.6, preempt_lower: true}
)");
  EXPECT_EQ(LevelOf(c, Level::kHigh).max_wait_minutes, 5);
  EXPECT_EQ(LevelOf(c, Level::kHigh).weight, 0.75);
  EXPECT_EQ(LevelOf(c, Level::kNormal).weight, 0.6);
  EXPECT_TRUE(LevelOf(c, Level::kNormal).preempt_lower);
  EXPECT_EQ(LevelOf(c, Level::kNormal).max_wait_minutes, 60);
}

TEST(ConfigLoaderTest, PriorityWeightsSetLevelWeights) {
  const Config c = Load(R"(resource_policies:
  priority_weights: {critical: 0.9, medium: 0.4, low: 0}
)");
  EXPECT_EQ(LevelOf(c, Level::kCritical).weight, 0.9);
  EXPECT_EQ(LevelOf(c, Level::kHigh).weight, 0.75);
  EXPECT_EQ(LevelOf(c, Level::kNormal).weight, 0.4);
  EXPECT_EQ(LevelOf(c, Level::kLow).weight, 0);
}

TEST(ConfigLoaderTest, PriorityLevelsWeightWinsOverPriorityWeights) {
  // Whichever comes first in the file.
  for (const char* text :
       {"priority_levels: {high: {weight: 0.7}}\n"
        "resource_policies: {priority_weights: {high: 0.8, low: 0.1}}\n",
        "resource_policies: {priority_weights: {high: 0.8, low: 0.1}}\n"
        "priority_levels: {high: {weight: 0.7}}\n"}) {
    SCOPED_TRACE(text);
    const Config c = Load(text);
    EXPECT_EQ(LevelOf(c, Level::kHigh).weight, 0.7);
    EXPECT_EQ(LevelOf(c, Level::kLow).weight, 0.1);
  }
}

TEST(ConfigLoaderTest, Seed000ResourcePoliciesLoadAsWritten) {
  // The "Default Resource Policies" block of seed 000, in YAML.
  const Config c = Load(R"(resource_policies:
  allocation_limits:
    max_cpu_per_workflow: 6
    max_memory_per_workflow: 12
    max_agents_per_workflow: 15
    max_duration: "6h"
  priority_weights:
    critical: 1.0
    high: 0.8
    medium: 0.6
    low: 0.4
  optimization_targets:
    efficiency_threshold: 80.0
    response_time_target: "1.0s"
    utilization_target: 75.0
    conflict_tolerance: 0.1
  monitoring_intervals:
    resource_check: "30s"
    performance_sample: "5m"
    capacity_analysis: "1h"
    trend_analysis: "24h"
auto_release:
  on_completion: true
  on_timeout: true
  on_failure: true
  grace_period: "5m"
)");
  EXPECT_EQ(LevelOf(c, Level::kHigh).weight, 0.8);
  EXPECT_EQ(LevelOf(c, Level::kNormal).weight, 0.6);
  EXPECT_EQ(c.allocation_limits.max_agents_per_workflow, 15);
  EXPECT_EQ(c.allocation_limits.max_duration, hours(6));
  EXPECT_EQ(c.optimization_targets.response_time_target, seconds(1));
  EXPECT_EQ(c.monitoring_intervals.trend_analysis, hours(24));
  EXPECT_EQ(c.auto_release.grace_period, minutes(5));
}

TEST(ConfigLoaderTest, NullAllocationLimitMeansNoLimit) {
  const Config c = Load(R"(resource_policies:
  allocation_limits: {max_cpu_per_workflow: null, max_agents_per_workflow: ~}
)");
  EXPECT_FALSE(c.allocation_limits.max_cpu_per_workflow.has_value());
  EXPECT_FALSE(c.allocation_limits.max_agents_per_workflow.has_value());
  EXPECT_EQ(c.allocation_limits.max_memory_per_workflow, 12);
}

TEST(ConfigLoaderTest, DurationForms) {
  struct Case {
    const char* text;
    milliseconds want;
  } cases[] = {
      {"30s", seconds(30)},
      {"5m", minutes(5)},
      {"2h", hours(2)},
      {"1h30m", minutes(90)},
      {"250ms", milliseconds(250)},
      {"1d", hours(24)},
      {"90", seconds(90)},
      {"\"90\"", seconds(90)},
      {"1.5h", minutes(90)},
      {"0.25s", milliseconds(250)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(Load(std::string("scheduling: {default_ttl: ") + c.text + "}")
                  .scheduling.default_ttl,
              c.want);
  }
}

TEST(ConfigLoaderTest, AlertAtPercentTakesANumberOrAList) {
  EXPECT_EQ(Load("daily_limits: {alert_at_percent: 90}")
                .daily_limits.alert_at_percent,
            std::vector<double>{90});
  EXPECT_EQ(Load("daily_limits: {alert_at_percent: [50, 80, 100]}")
                .daily_limits.alert_at_percent,
            (std::vector<double>{50, 80, 100}));
  EXPECT_TRUE(Load("daily_limits: {alert_at_percent: []}")
                  .daily_limits.alert_at_percent.empty());
}

TEST(ConfigLoaderTest, ProductsAndOverrides) {
  const Config c = Load(R"(products:
  web: {priority: high, share: 2}
  batch:
manual_override:
  priority_override: {web: critical}
)");
  EXPECT_EQ(c.products.at("web").priority, Level::kHigh);
  EXPECT_EQ(c.products.at("web").share, 2);
  EXPECT_FALSE(c.products.at("web").max_concurrent_agents.has_value());
  EXPECT_FALSE(c.products.at("batch").priority.has_value());
  EXPECT_EQ(c.products.at("batch").share, 1);
  EXPECT_EQ(c.manual_override.priority_override.at("web"), Level::kCritical);
}

TEST(ConfigLoaderTest, EmptySectionsAreAllowed) {
  ExpectSameConfig(Load("resources:\nmax_concurrent:\nscheduling: {}\n"),
                   Config::Defaults());
}

TEST(ConfigLoaderTest, UserNamedKeysAreNotCheckedAgainstTheSchema) {
  const Config c = Load(R"(token_budgets: {totally-new-type: 5}
max_concurrent: {per_type: {some_agent: 1}}
products: {anything-goes: {}}
)");
  EXPECT_EQ(c.token_budgets.per_type.at("totally-new-type"), 5);
  EXPECT_EQ(c.per_type_limits.at("some_agent"), 1);
  EXPECT_EQ(c.products.count("anything-goes"), 1u);
}

// ---- Errors: exact position, key path and reason. ----

TEST(ConfigErrorTest, WrongTypeNamesFileLineColumnAndKey) {
  EXPECT_EQ(LoadError(R"(# Seed 001 limits.
max_concurrent:
  total: 5
  per_type:
    backend-engineer: two
)"),
            "limits.yml:5:5: max_concurrent.per_type.backend-engineer: must "
            "be a whole number >= 0, got \"two\"");
}

TEST(ConfigErrorTest, NegativeNumbers) {
  EXPECT_EQ(LoadError("max_concurrent:\n  per_type: {qa: -1}\n"),
            "limits.yml:2:14: max_concurrent.per_type.qa: must be a whole "
            "number >= 0, got \"-1\"");
  EXPECT_EQ(LoadError("resources:\n  gpu: -2\n"),
            "limits.yml:2:3: resources.gpu: must be a number >= 0, got \"-2\"");
  EXPECT_EQ(LoadError("products:\n  web:\n    share: 0\n"),
            "limits.yml:3:5: products.web.share: must be a number > 0, got "
            "\"0\"");
}

TEST(ConfigErrorTest, NanAndInfinityAreRefused) {
  EXPECT_EQ(LoadError("resources:\n  cpu_cores: .nan\n"),
            "limits.yml:2:3: resources.cpu_cores: must be a number >= 0, got "
            "\".nan\"");
  EXPECT_EQ(LoadError("resources:\n  cpu_cores: .inf\n"),
            "limits.yml:2:3: resources.cpu_cores: must be a number >= 0, got "
            "\".inf\"");
  EXPECT_THAT(LoadError("daily_limits: {max_cost_usd: inf}"),
              HasSubstr("daily_limits.max_cost_usd: must be a number >= 0"));
  EXPECT_THAT(LoadError("token_budgets: {multiplier: nan}"),
              HasSubstr("token_budgets.multiplier: must be a number >= 1"));
}

TEST(ConfigErrorTest, OutOfRangeValues) {
  EXPECT_EQ(LoadError("priority_levels:\n  high:\n    weight: 1.5\n"),
            "limits.yml:3:5: priority_levels.high.weight: must be a number "
            "from 0 to 1, got \"1.5\"");
  EXPECT_EQ(LoadError("token_budgets:\n  multiplier: 0.5\n"),
            "limits.yml:2:3: token_budgets.multiplier: must be a number >= 1, "
            "got \"0.5\"");
  EXPECT_EQ(LoadError("daily_limits:\n  alert_at_percent: [80, 120]\n"),
            "limits.yml:2:26: daily_limits.alert_at_percent[1]: must be a "
            "number > 0 and <= 100, got \"120\"");
  EXPECT_EQ(LoadError("daily_limits:\n  alert_at_percent: 0\n"),
            "limits.yml:2:3: daily_limits.alert_at_percent: must be a number "
            "> 0 and <= 100, got \"0\"");
  EXPECT_EQ(LoadError("scheduling:\n  default_total_tasks: 0\n"),
            "limits.yml:2:3: scheduling.default_total_tasks: must be a whole "
            "number >= 1, got \"0\"");
  EXPECT_THAT(LoadError("resource_policies:\n  optimization_targets:\n"
                        "    utilization_target: 101\n"),
              HasSubstr("limits.yml:3:5: resource_policies.optimization_"
                        "targets.utilization_target: must be a number from 0 "
                        "to 100"));
  EXPECT_THAT(LoadError("resources: {gpu: 1e13}"),
              HasSubstr("resources.gpu: must be at most 1000000000000"));
  EXPECT_THAT(LoadError("token_budgets: {qa: 99999999999999999999}"),
              HasSubstr("token_budgets.qa: is too large"));
}

TEST(ConfigErrorTest, WholeNumbersWhereCountsAreExpected) {
  EXPECT_EQ(LoadError("max_concurrent:\n  total: 2.5\n"),
            "limits.yml:2:3: max_concurrent.total: must be a whole number >= "
            "0, got \"2.5\"");
  EXPECT_EQ(LoadError("resources:\n  tool.bash: 1.5\n"),
            "limits.yml:2:3: resources.tool.bash: must be a whole number "
            "because \"tool.bash\" counts whole units (set fractional: true to "
            "allow parts), got \"1.5\"");
  EXPECT_THAT(LoadError("resources:\n  cpu_cores: 1.0005\n"),
              HasSubstr("limits.yml:2:3: resources.cpu_cores: must have at "
                        "most 3 decimal places"));
}

TEST(ConfigErrorTest, QuotedNumbersAndBooleansAreStrings) {
  EXPECT_EQ(LoadError("max_concurrent:\n  total: \"5\"\n"),
            "limits.yml:2:3: max_concurrent.total: must be a whole number >= "
            "0, got the quoted string \"5\" (write numbers without quotes)");
  EXPECT_EQ(LoadError("auto_release:\n  on_timeout: \"false\"\n"),
            "limits.yml:2:3: auto_release.on_timeout: must be true or false, "
            "got the quoted string \"false\" (write true or false without "
            "quotes)");
}

TEST(ConfigErrorTest, BooleansMustBeTrueOrFalse) {
  EXPECT_EQ(
      LoadError("priority_levels:\n  critical:\n    preempt_lower: yes\n"),
      "limits.yml:3:5: priority_levels.critical.preempt_lower: must be "
      "true or false, got \"yes\"");
}

TEST(ConfigErrorTest, WrongShapes) {
  EXPECT_EQ(LoadError("max_concurrent: 5\n"),
            "limits.yml:1:1: max_concurrent: must be a mapping of keys to "
            "values, got \"5\"");
  EXPECT_EQ(LoadError("resources:\n  gpu: [1, 2]\n"),
            "limits.yml:2:3: resources.gpu: must be a capacity (a number >= 0) "
            "or a mapping {capacity: N, fractional: true|false}, got a list");
  EXPECT_EQ(LoadError("circuit_breaker:\n  trip_conditions: cost > 1\n"),
            "limits.yml:2:3: circuit_breaker.trip_conditions: must be a list, "
            "got \"cost > 1\"");
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n    - opus\n"),
            "limits.yml:3:7: auto_model_selection.rules[0]: must be a mapping "
            "{condition: ..., model: ...}, got \"opus\"");
  EXPECT_EQ(LoadError("- resources\n- scheduling\n"),
            "limits.yml:1:1: the configuration must be a mapping of keys to "
            "values, got a list");
  EXPECT_EQ(LoadError("products:\n  web:\n    priority:\n      - high\n"),
            "limits.yml:3:5: products.web.priority: must be one of critical, "
            "high, normal (or medium), low, got a list");
}

TEST(ConfigErrorTest, MissingRequiredKeys) {
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n"
                      "    - condition: default\n"),
            "limits.yml:3:7: auto_model_selection.rules[0]: missing key "
            "\"model\"");
  EXPECT_EQ(LoadError("resources:\n  gpu: {fractional: true}\n"),
            "limits.yml:2:3: resources.gpu: a new resource needs a capacity");
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n"
                      "    - {condition: default, model: \"\"}\n"),
            "limits.yml:3:28: auto_model_selection.rules[0].model: must be a "
            "non-empty string");
}

TEST(ConfigErrorTest, BadLevelNames) {
  EXPECT_EQ(LoadError("products:\n  web:\n    priority: critcal\n"),
            "limits.yml:3:5: products.web.priority: must be one of critical, "
            "high, normal (or medium), low, got \"critcal\", did you mean "
            "\"critical\"?");
  EXPECT_EQ(LoadError("manual_override:\n  priority_override:\n"
                      "    web: urgent\n"),
            "limits.yml:3:5: manual_override.priority_override.web: must be "
            "one of critical, high, normal (or medium), low, got \"urgent\"");
  EXPECT_EQ(LoadError("priority_levels:\n  urgent: {}\n"),
            "limits.yml:2:3: priority_levels.urgent: unknown key, expected "
            "one of: critical, high, normal, medium, low");
  EXPECT_EQ(LoadError("priority_levels:\n  High: {}\n"),
            "limits.yml:2:3: priority_levels.High: unknown key, did you mean "
            "\"high\"?");
}

TEST(ConfigErrorTest, MediumAndNormalTogether) {
  EXPECT_EQ(LoadError("priority_levels:\n  normal: {weight: 0.5}\n"
                      "  medium: {weight: 0.6}\n"),
            "limits.yml:3:3: priority_levels.medium: \"medium\" and \"normal\" "
            "name the same level; the other one is given at line 2, column 3");
  EXPECT_THAT(LoadError("resource_policies:\n  priority_weights:\n"
                        "    medium: 0.6\n    normal: 0.5\n"),
              HasSubstr("limits.yml:4:5: resource_policies.priority_weights."
                        "normal: \"medium\" and \"normal\" name the same"));
}

TEST(ConfigErrorTest, BadDurations) {
  EXPECT_EQ(LoadError("scheduling:\n  default_ttl: 5 minutes\n"),
            "limits.yml:2:3: scheduling.default_ttl: must be a duration such "
            "as \"30s\", \"5m\", \"1h30m\", \"250ms\", \"1d\" or a whole "
            "number of seconds, got \"5 minutes\"");
  EXPECT_EQ(LoadError("scheduling:\n  default_ttl: 0s\n"),
            "limits.yml:2:3: scheduling.default_ttl: must be longer than 0s, "
            "got \"0s\"");
  for (const char* bad : {"-5s", "1.5", "5x", "1.0001s", "h", "9999999999h",
                          "99999999999999", "[1m]"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(
        LoadError(std::string("auto_release: {grace_period: ") + bad + "}"),
        HasSubstr("auto_release.grace_period: must be a duration"));
  }
  // Zero is a fine grace period, not a fine interval.
  EXPECT_EQ(Load("auto_release: {grace_period: 0}").auto_release.grace_period,
            milliseconds(0));
  EXPECT_THAT(LoadError("resource_policies:\n  monitoring_intervals:\n"
                        "    resource_check: 0s\n"),
              HasSubstr("limits.yml:3:5: resource_policies.monitoring_"
                        "intervals.resource_check: must be longer than 0s"));
}

TEST(ConfigErrorTest, BadResourceNames) {
  EXPECT_EQ(LoadError("resources:\n  GPU: 2\n"),
            "limits.yml:2:3: resources.GPU: resource names may use only a-z, "
            "0-9, '_', '.' and '-' and at most 64 characters");
  EXPECT_THAT(LoadError("resources:\n  " + std::string(65, 'a') + ": 1\n"),
              HasSubstr("resource names may use only"));
  EXPECT_TRUE(
      LoadError("resources:\n  " + std::string(64, 'a') + ": 1\n").empty());
  EXPECT_THAT(LoadError("resources:\n  \"a b\": 1\n"),
              HasSubstr("resources.a b: resource names"));
}

TEST(ConfigErrorTest, TotalAndAgentsDisagree) {
  EXPECT_EQ(LoadError(R"(resources:
  agents: 4
max_concurrent:
  total: 6
)"),
            "limits.yml:4:3: max_concurrent.total: 6 disagrees with "
            "resources.agents (4, at line 2, column 3); both set the number of "
            "agents running at once, so give one of them or make them equal");
}

TEST(ConfigErrorTest, CircuitBreakerAction) {
  EXPECT_EQ(LoadError("circuit_breaker:\n  when_tripped:\n"
                      "    action: pause-all\n"),
            "limits.yml:3:5: circuit_breaker.when_tripped.action: must be "
            "pause_all or pause_new_low_priority, got \"pause-all\", did you "
            "mean \"pause_all\"?");
}

TEST(ConfigErrorTest, RestrictAgentTypesNeedsTypes) {
  EXPECT_EQ(LoadError("scheduling:\n  restrict_agent_types: true\n"),
            "limits.yml:2:3: scheduling.restrict_agent_types: is true but "
            "max_concurrent.per_type names no agent types, so every request "
            "would be refused; list the agent types there or set this to "
            "false");
  EXPECT_TRUE(Load("scheduling: {restrict_agent_types: true}\n"
                   "max_concurrent: {per_type: {qa: 1}}\n")
                  .scheduling.restrict_agent_types);
}

TEST(ConfigErrorTest, DuplicateKeys) {
  EXPECT_EQ(LoadError("max_concurrent:\n  total: 5\n  total: 6\n"),
            "limits.yml:3:3: max_concurrent.total: duplicate key, first given "
            "at line 2, column 3");
  EXPECT_EQ(LoadError("products:\n  web: {}\n  web: {}\n"),
            "limits.yml:3:3: products.web: duplicate key, first given at line "
            "2, column 3");
}

TEST(ConfigErrorTest, KeysMustBeNames) {
  EXPECT_EQ(LoadError("products:\n  ? [a, b]\n  : {}\n"),
            "limits.yml:2:5: products: keys must be non-empty names, got a "
            "list");
}

// ---- Unknown keys and suggestions. ----

TEST(ConfigErrorTest, UnknownTopLevelKeySuggestsTheNearestKey) {
  EXPECT_EQ(LoadError("max_concurent:\n  total: 5\n"),
            "limits.yml:1:1: max_concurent: unknown key, did you mean "
            "\"max_concurrent\"?");
  EXPECT_EQ(LoadError("Resources: {}\n"),
            "limits.yml:1:1: Resources: unknown key, did you mean "
            "\"resources\"?");
}

TEST(ConfigErrorTest, UnknownNestedKeysAtEveryLevel) {
  EXPECT_EQ(LoadError("scheduling:\n  defualt_ttl: 5m\n"),
            "limits.yml:2:3: scheduling.defualt_ttl: unknown key, did you "
            "mean \"default_ttl\"?");
  EXPECT_EQ(LoadError("scheduling:\n  weights:\n    fairshare: 0.1\n"),
            "limits.yml:3:5: scheduling.weights.fairshare: unknown key, did "
            "you mean \"fair_share\"?");
  EXPECT_EQ(LoadError("priority_levels:\n  low:\n    max_wait_minutes: 5\n"),
            "limits.yml:3:5: priority_levels.low.max_wait_minutes: unknown "
            "key, did you mean \"max_wait_time_minutes\"?");
  EXPECT_EQ(LoadError("products:\n  web:\n    max_agents: 2\n"),
            "limits.yml:3:5: products.web.max_agents: unknown key, did you "
            "mean \"max_concurrent_agents\"?");
  EXPECT_EQ(LoadError("resources:\n  gpu: {capacty: 2}\n"),
            "limits.yml:2:9: resources.gpu.capacty: unknown key, did you mean "
            "\"capacity\"?");
  EXPECT_EQ(LoadError("auto_model_selection:\n  rules:\n"
                      "    - {condition: default, modle: opus}\n"),
            "limits.yml:3:28: auto_model_selection.rules[0].modle: unknown "
            "key, did you mean \"model\"?");
  EXPECT_EQ(LoadError("circuit_breaker:\n  when_tripped:\n    notfy: ceo\n"),
            "limits.yml:3:5: circuit_breaker.when_tripped.notfy: unknown key, "
            "did you mean \"notify\"?");
  EXPECT_EQ(LoadError("resource_policies:\n  allocation_limits:\n"
                      "    max_cpu: 4\n"),
            "limits.yml:3:5: resource_policies.allocation_limits.max_cpu: "
            "unknown key, did you mean \"max_cpu_per_workflow\"?");
}

TEST(ConfigErrorTest, KeyInTheWrongSectionNamesWhereItBelongs) {
  EXPECT_EQ(LoadError("priority_weights: {high: 0.8}\n"),
            "limits.yml:1:1: priority_weights: unknown key here, did you mean "
            "\"resource_policies.priority_weights\"?");
  EXPECT_EQ(LoadError("rules:\n  - {condition: default, model: sonnet}\n"),
            "limits.yml:1:1: rules: unknown key here, did you mean "
            "\"auto_model_selection.rules\"?");
  EXPECT_EQ(LoadError("scheduling:\n  grace_period: 1m\n"),
            "limits.yml:2:3: scheduling.grace_period: unknown key here, did "
            "you mean \"auto_release.grace_period\" or "
            "\"reservations.grace_period\"?");
}

TEST(ConfigErrorTest, UnknownKeyWithoutNearMatchListsTheValidKeys) {
  EXPECT_EQ(LoadError("auto_release:\n  whenever: true\n"),
            "limits.yml:2:3: auto_release.whenever: unknown key, expected one "
            "of: on_completion, on_timeout, on_failure, grace_period");
  // agent_types is not a key (per_type limits list the known types).
  EXPECT_THAT(LoadError("agent_types: [qa]\n"),
              StartsWith("limits.yml:1:1: agent_types: unknown key"));
}

// ---- Syntax errors, documents, files. ----

TEST(ConfigErrorTest, YamlSyntaxErrorHasItsPosition) {
  // The text after "YAML syntax error: " is yaml-cpp's.
  EXPECT_THAT(LoadError("max_concurrent:\n  total: 5\n per_type: {}\n"),
              StartsWith("limits.yml:3:2: YAML syntax error: "));
  EXPECT_THAT(LoadError("scheduling: {default_ttl: 5m\n"),
              StartsWith("limits.yml:2:1: YAML syntax error: "));
  EXPECT_THAT(LoadError("resources:\n\tgpu: 1\n"), StartsWith("limits.yml:2:"));
}

TEST(ConfigErrorTest, OnlyOneDocument) {
  EXPECT_EQ(LoadError("max_concurrent: {total: 5}\n---\nresources: {}\n"),
            "limits.yml:3:1: a second YAML document; a config file holds one "
            "(remove the \"---\" line above it)");
  // Empty documents around the config are harmless.
  EXPECT_EQ(Load("---\nmax_concurrent: {total: 3}\n---\n")
                .FindResource("agents")
                ->capacity,
            3);
}

TEST(ConfigFileTest, MissingFileIsNotFound) {
  const std::string path = "/nonexistent/dir/limits.yml";
  StatusOr<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), Code::kNotFound);
  EXPECT_EQ(config.status().message(),
            "cannot read config file \"/nonexistent/dir/limits.yml\": No such "
            "file or directory");
}

TEST(ConfigFileTest, DirectoryIsNotFound) {
  StatusOr<Config> config = LoadConfigFile(QM_SOURCE_DIR "/examples");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), Code::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("it is a directory"));
}

// A file in the test's temporary directory, removed at the end.
class TempFile {
 public:
  explicit TempFile(const std::string& text)
      : path_((std::filesystem::temp_directory_path() /
               ("qm_config_test_" + std::to_string(::getpid()) + ".yml"))
                  .string()) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigFileTest, ErrorsInAFileNameThePath) {
  TempFile file("max_concurrent:\n  total: -1\n");
  StatusOr<Config> config = LoadConfigFile(file.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(config.status().message(),
            file.path() +
                ":2:3: max_concurrent.total: must be a whole number >= 0, got "
                "\"-1\"");
}

TEST(ConfigFileTest, EmptyFileGivesDefaults) {
  TempFile file("");
  StatusOr<Config> config = LoadConfigFile(file.path());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ExpectSameConfig(*config, Config::Defaults());
}

TEST(ConfigErrorTest, HostileInputNeverThrows) {
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  for (const std::string& text :
       {std::string("\x01\x02\xff\xfe", 4), std::string("a: b\0c: d", 9),
        std::string("*alias\n"), std::string("&a [*a]\n"), deep,
        std::string("resources: &r {gpu: 1}\nproducts: *r\n"),
        std::string("? !!binary aGk=\n: 1\n"), std::string("'unterminated")}) {
    StatusOr<Config> config = LoadConfigString(text, "x.yml");
    if (!config.ok()) {
      EXPECT_THAT(config.status().message(), StartsWith("x.yml:"));
    }
  }
}

}  // namespace
}  // namespace qm
