#include "qm/config_loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/yaml_config.h"
#include "core/text.h"

namespace qm {
namespace {

std::string Where(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null()) return source + ": ";
  return source + ":" + std::to_string(mark.line + 1) + ":" +
         std::to_string(mark.column + 1) + ": ";
}

// ---- Writing. ----

// Writes a name or string, quoted when a YAML reader would otherwise take it
// for a number, boolean or null (a product called "true", an agent type
// "007").
void EmitString(YAML::Emitter& out, const std::string& text) {
  static const char* const kReserved[] = {
      "true", "True", "TRUE", "false", "False", "FALSE", "yes",  "Yes", "YES",
      "no",   "No",   "NO",   "on",    "On",    "ON",    "off",  "Off", "OFF",
      "y",    "Y",    "n",    "N",     "null",  "Null",  "NULL", "~",   ""};
  bool quote = false;
  for (const char* reserved : kReserved) quote |= text == reserved;
  double number;
  const char* end = text.data() + text.size();
  const char* begin = text.data() + (!text.empty() && text[0] == '+');
  const auto [ptr, ec] = std::from_chars(begin, end, number);
  quote |= !text.empty() && ptr == end && ec != std::errc::invalid_argument;
  quote |= !text.empty() && (text[0] == '.' || text.find("inf") != text.npos ||
                             text.find("nan") != text.npos);
  if (quote) out << YAML::DoubleQuoted;
  out << text;
}

void EmitNumber(YAML::Emitter& out, double value) {
  out << FormatNumber(value);
}

void EmitDuration(YAML::Emitter& out, Duration value) {
  out << FormatDuration(value);
}

template <typename T>
void EmitOptionalInt(YAML::Emitter& out, const std::optional<T>& value) {
  if (value.has_value()) {
    out << std::to_string(*value);
  } else {
    out << YAML::Null;
  }
}

void EmitOptionalNumber(YAML::Emitter& out,
                        const std::optional<double>& value) {
  if (value.has_value()) {
    EmitNumber(out, *value);
  } else {
    out << YAML::Null;
  }
}

// `agents` is written as max_concurrent.total (its place in seed 001) unless
// that cannot express it: a fractional or non-whole agents capacity.
bool AgentsAsTotal(const Config& config) {
  const ResourceSpec* agents = config.FindResource("agents");
  return agents != nullptr && !agents->fractional &&
         agents->capacity == std::floor(agents->capacity);
}

void EmitResources(YAML::Emitter& out, const Config& config) {
  const bool agents_as_total = AgentsAsTotal(config);
  out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
  for (const ResourceSpec& r : config.resources) {
    if (r.name == "agents" && agents_as_total) continue;
    out << YAML::Key;
    EmitString(out, r.name);
    out << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
        << "capacity" << YAML::Value;
    EmitNumber(out, r.capacity);
    out << YAML::Key << "fractional" << YAML::Value << r.fractional
        << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::Key << "max_concurrent" << YAML::Value << YAML::BeginMap;
  if (agents_as_total) {
    out << YAML::Key << "total" << YAML::Value
        << FormatNumber(config.FindResource("agents")->capacity);
  }
  out << YAML::Key << "per_type" << YAML::Value;
  if (config.per_type_limits.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [type, limit] : config.per_type_limits) {
    out << YAML::Key;
    EmitString(out, type);
    out << YAML::Value << std::to_string(limit);
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitLevels(YAML::Emitter& out, const Config& config) {
  out << YAML::Key << "priority_levels" << YAML::Value << YAML::BeginMap;
  for (int i = kNumLevels - 1; i >= 0; --i) {
    const PriorityLevelConfig& level = config.levels[i];
    out << YAML::Key << LevelName(static_cast<Level>(i)) << YAML::Value
        << YAML::BeginMap << YAML::Key << "max_wait_time_minutes"
        << YAML::Value;
    EmitNumber(out, level.max_wait_minutes);
    out << YAML::Key << "preempt_lower" << YAML::Value << level.preempt_lower
        << YAML::Key << "weight" << YAML::Value;
    EmitNumber(out, level.weight);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

void EmitProducts(YAML::Emitter& out, const Config& config) {
  out << YAML::Key << "products" << YAML::Value;
  if (config.products.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, product] : config.products) {
    out << YAML::Key;
    EmitString(out, name);
    out << YAML::Value << YAML::BeginMap << YAML::Key << "priority"
        << YAML::Value;
    if (product.priority.has_value()) {
      out << LevelName(*product.priority);
    } else {
      out << YAML::Null;
    }
    out << YAML::Key << "max_concurrent_agents" << YAML::Value;
    EmitOptionalInt(out, product.max_concurrent_agents);
    out << YAML::Key << "token_budget_daily" << YAML::Value;
    EmitOptionalInt(out, product.token_budget_daily);
    out << YAML::Key << "cost_budget_daily_usd" << YAML::Value;
    EmitOptionalNumber(out, product.cost_budget_daily_usd);
    out << YAML::Key << "share" << YAML::Value;
    EmitNumber(out, product.share);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

void EmitPricing(YAML::Emitter& out, const Config& config) {
  const PricingConfig& pricing = config.pricing;
  out << YAML::Key << "pricing" << YAML::Value << YAML::BeginMap << YAML::Key
      << "default_model" << YAML::Value;
  EmitString(out, pricing.default_model);
  out << YAML::Key << "estimate_output_share" << YAML::Value;
  EmitNumber(out, pricing.estimate_output_share);
  out << YAML::Key << "models" << YAML::Value;
  if (pricing.models.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, price] : pricing.models) {
    out << YAML::Key;
    EmitString(out, name);
    out << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
        << "input_per_million" << YAML::Value;
    EmitNumber(out, price.input_per_million);
    out << YAML::Key << "output_per_million" << YAML::Value;
    EmitOptionalNumber(out, price.output_per_million);
    out << YAML::Key << "cached_input_per_million" << YAML::Value;
    EmitOptionalNumber(out, price.cached_input_per_million);
    out << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitBudgets(YAML::Emitter& out, const Config& config) {
  const TokenBudgetsConfig& budgets = config.token_budgets;
  out << YAML::Key << "token_budgets" << YAML::Value << YAML::BeginMap;
  for (const auto& [type, tokens] : budgets.per_type) {
    out << YAML::Key;
    EmitString(out, type);
    out << YAML::Value << std::to_string(tokens);
  }
  out << YAML::Key << "default" << YAML::Value;
  EmitOptionalInt(out, budgets.default_budget);
  out << YAML::Key << "multiplier" << YAML::Value;
  EmitNumber(out, budgets.multiplier);
  out << YAML::Key << "use_estimate_when_smaller" << YAML::Value
      << budgets.use_estimate_when_smaller << YAML::Key << "over_budget"
      << YAML::Value
      << (budgets.over_budget == OverBudgetPolicy::kStop ? "stop" : "flag")
      << YAML::Key << "learning_rate" << YAML::Value;
  EmitNumber(out, budgets.learning_rate);
  out << YAML::EndMap;
}

void EmitDailyLimits(YAML::Emitter& out, const Config& config) {
  const DailyLimitsConfig& daily = config.daily_limits;
  out << YAML::Key << "daily_limits" << YAML::Value << YAML::BeginMap
      << YAML::Key << "max_tokens_total" << YAML::Value;
  EmitOptionalInt(out, daily.max_tokens_total);
  out << YAML::Key << "max_cost_usd" << YAML::Value;
  EmitOptionalNumber(out, daily.max_cost_usd);
  out << YAML::Key << "alert_at_percent" << YAML::Value << YAML::Flow
      << YAML::BeginSeq;
  for (double percent : daily.alert_at_percent) EmitNumber(out, percent);
  out << YAML::EndSeq << YAML::Key << "period" << YAML::Value
      << BudgetPeriodName(daily.period) << YAML::Key << "time_zone"
      << YAML::Value;
  EmitString(out, daily.time_zone);
  out << YAML::Key << "week_start" << YAML::Value
      << WeekdayName(daily.week_start) << YAML::Key << "per_agent_type"
      << YAML::Value;
  if (daily.per_agent_type.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [type, budget] : daily.per_agent_type) {
    out << YAML::Key;
    EmitString(out, type);
    out << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
        << "max_tokens" << YAML::Value;
    EmitOptionalInt(out, budget.max_tokens);
    out << YAML::Key << "max_cost_usd" << YAML::Value;
    EmitOptionalNumber(out, budget.max_cost_usd);
    out << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitControls(YAML::Emitter& out, const Config& config) {
  out << YAML::Key << "auto_model_selection" << YAML::Value << YAML::BeginMap
      << YAML::Key << "rules" << YAML::Value;
  if (config.model_rules.empty()) out << YAML::Flow;
  out << YAML::BeginSeq;
  for (const ModelRule& rule : config.model_rules) {
    out << YAML::BeginMap << YAML::Key << "condition" << YAML::Value
        << YAML::DoubleQuoted << rule.condition << YAML::Key << "model"
        << YAML::Value << YAML::DoubleQuoted << rule.model << YAML::Key
        << "fallback_model" << YAML::Value << YAML::DoubleQuoted
        << rule.fallback_model << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;

  const CircuitBreakerConfig& breaker = config.circuit_breaker;
  out << YAML::Key << "circuit_breaker" << YAML::Value << YAML::BeginMap
      << YAML::Key << "trip_conditions" << YAML::Value;
  if (breaker.trip_conditions.empty()) out << YAML::Flow;
  out << YAML::BeginSeq;
  for (const std::string& condition : breaker.trip_conditions) {
    out << YAML::DoubleQuoted << condition;
  }
  out << YAML::EndSeq << YAML::Key << "burn_rate_window" << YAML::Value;
  EmitDuration(out, breaker.burn_rate_window);
  out << YAML::Key << "when_tripped" << YAML::Value << YAML::BeginMap
      << YAML::Key << "action" << YAML::Value << breaker.action << YAML::Key
      << "notify" << YAML::Value << YAML::DoubleQuoted << breaker.notify
      << YAML::Key << "allow_override" << YAML::Value << breaker.allow_override
      << YAML::EndMap << YAML::EndMap;

  const ManualOverrideConfig& manual = config.manual_override;
  out << YAML::Key << "manual_override" << YAML::Value << YAML::BeginMap
      << YAML::Key << "pause_all_agents" << YAML::Value
      << manual.pause_all_agents << YAML::Key << "priority_override"
      << YAML::Value;
  if (manual.priority_override.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [product, level] : manual.priority_override) {
    out << YAML::Key;
    EmitString(out, product);
    out << YAML::Value << LevelName(level);
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitPolicies(YAML::Emitter& out, const Config& config) {
  const AllocationLimits& limits = config.allocation_limits;
  const OptimizationTargets& targets = config.optimization_targets;
  const MonitoringIntervals& intervals = config.monitoring_intervals;
  out << YAML::Key << "resource_policies" << YAML::Value << YAML::BeginMap;

  out << YAML::Key << "allocation_limits" << YAML::Value << YAML::BeginMap
      << YAML::Key << "max_cpu_per_workflow" << YAML::Value;
  EmitOptionalNumber(out, limits.max_cpu_per_workflow);
  out << YAML::Key << "max_memory_per_workflow" << YAML::Value;
  EmitOptionalNumber(out, limits.max_memory_per_workflow);
  out << YAML::Key << "max_agents_per_workflow" << YAML::Value;
  EmitOptionalInt(out, limits.max_agents_per_workflow);
  out << YAML::Key << "max_duration" << YAML::Value;
  EmitDuration(out, limits.max_duration);
  out << YAML::EndMap;

  // The level weights are written once, under priority_levels (which wins
  // over priority_weights), so that editing the dump has no hidden trap.
  out << YAML::Key << "optimization_targets" << YAML::Value << YAML::BeginMap
      << YAML::Key << "efficiency_threshold" << YAML::Value;
  EmitNumber(out, targets.efficiency_threshold);
  out << YAML::Key << "response_time_target" << YAML::Value;
  EmitDuration(out, targets.response_time_target);
  out << YAML::Key << "utilization_target" << YAML::Value;
  EmitNumber(out, targets.utilization_target);
  out << YAML::Key << "conflict_tolerance" << YAML::Value;
  EmitNumber(out, targets.conflict_tolerance);
  out << YAML::EndMap;

  out << YAML::Key << "monitoring_intervals" << YAML::Value << YAML::BeginMap
      << YAML::Key << "resource_check" << YAML::Value;
  EmitDuration(out, intervals.resource_check);
  out << YAML::Key << "performance_sample" << YAML::Value;
  EmitDuration(out, intervals.performance_sample);
  out << YAML::Key << "capacity_analysis" << YAML::Value;
  EmitDuration(out, intervals.capacity_analysis);
  out << YAML::Key << "trend_analysis" << YAML::Value;
  EmitDuration(out, intervals.trend_analysis);
  out << YAML::EndMap;

  out << YAML::EndMap;
}

void EmitLifecycle(YAML::Emitter& out, const Config& config) {
  const AutoReleaseConfig& release = config.auto_release;
  out << YAML::Key << "auto_release" << YAML::Value << YAML::BeginMap
      << YAML::Key << "on_completion" << YAML::Value << release.on_completion
      << YAML::Key << "on_timeout" << YAML::Value << release.on_timeout
      << YAML::Key << "on_failure" << YAML::Value << release.on_failure
      << YAML::Key << "grace_period" << YAML::Value;
  EmitDuration(out, release.grace_period);
  out << YAML::EndMap;

  const SchedulingConfig& scheduling = config.scheduling;
  out << YAML::Key << "scheduling" << YAML::Value << YAML::BeginMap << YAML::Key
      << "weights" << YAML::Value << YAML::BeginMap << YAML::Key << "priority"
      << YAML::Value;
  EmitNumber(out, scheduling.weights.priority);
  out << YAML::Key << "wait" << YAML::Value;
  EmitNumber(out, scheduling.weights.wait);
  out << YAML::Key << "blocking" << YAML::Value;
  EmitNumber(out, scheduling.weights.blocking);
  out << YAML::Key << "fair_share" << YAML::Value;
  EmitNumber(out, scheduling.weights.fair_share);
  out << YAML::EndMap << YAML::Key << "default_total_tasks" << YAML::Value
      << std::to_string(scheduling.default_total_tasks) << YAML::Key
      << "fair_share_half_life" << YAML::Value;
  EmitDuration(out, scheduling.fair_share_half_life);
  out << YAML::Key << "preemption_grace" << YAML::Value;
  EmitDuration(out, scheduling.preemption_grace);
  out << YAML::Key << "default_ttl" << YAML::Value;
  EmitDuration(out, scheduling.default_ttl);
  out << YAML::Key << "restrict_agent_types" << YAML::Value
      << scheduling.restrict_agent_types << YAML::Key << "history_limit"
      << YAML::Value << std::to_string(scheduling.history_limit)
      << YAML::EndMap;
}

void EmitLockPolicy(YAML::Emitter& out, const LockPolicy& policy) {
  out << YAML::Key << "enforcement" << YAML::Value
      << LockEnforcementName(policy.enforcement) << YAML::Key << "exceptions"
      << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& exception : policy.exceptions) {
    EmitString(out, exception);
  }
  out << YAML::EndSeq;
}

void EmitConflicts(YAML::Emitter& out, const Config& config) {
  const ConflictsConfig& conflicts = config.conflicts;
  out << YAML::Key << "conflicts" << YAML::Value << YAML::BeginMap << YAML::Key
      << "workspace_root" << YAML::Value;
  EmitString(out, conflicts.workspace_root);
  out << YAML::Key << "strategy" << YAML::Value
      << ConflictStrategyName(conflicts.strategy) << YAML::Key
      << "history_limit" << YAML::Value
      << std::to_string(conflicts.history_limit) << YAML::Key << "file_locking"
      << YAML::Value << YAML::BeginMap;
  EmitLockPolicy(out, conflicts.file_locking);
  out << YAML::Key << "per_product" << YAML::Value;
  if (conflicts.per_product.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [product, policy] : conflicts.per_product) {
    out << YAML::Key;
    EmitString(out, product);
    out << YAML::Value << YAML::Flow << YAML::BeginMap;
    EmitLockPolicy(out, policy);
    out << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap << YAML::EndMap;

  const ReservationsConfig& reservations = config.reservations;
  out << YAML::Key << "reservations" << YAML::Value << YAML::BeginMap
      << YAML::Key << "horizon" << YAML::Value;
  EmitDuration(out, reservations.horizon);
  out << YAML::Key << "grace_period" << YAML::Value;
  EmitDuration(out, reservations.grace_period);
  out << YAML::Key << "preempt_running" << YAML::Value
      << reservations.preempt_running << YAML::Key << "max_reservations"
      << YAML::Value << std::to_string(reservations.max_reservations)
      << YAML::EndMap;

  const MonitoringConfig& m = config.monitoring;
  out << YAML::Key << "monitoring" << YAML::Value << YAML::BeginMap;
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"warning_threshold",
                                       m.warning_threshold},
        {"critical_threshold", m.critical_threshold},
        {"pressure_threshold", m.pressure_threshold},
        {"gc_trigger_threshold", m.gc_trigger_threshold},
        {"psi_threshold", m.psi_threshold},
        {"hysteresis", m.hysteresis}}) {
    out << YAML::Key << key << YAML::Value;
    EmitNumber(out, value);
  }
  const MonitoringConfig::Degradation& d = m.degradation;
  out << YAML::Key << "degradation" << YAML::Value << YAML::BeginMap
      << YAML::Key << "threshold" << YAML::Value;
  EmitNumber(out, d.threshold);
  out << YAML::Key << "min_increase" << YAML::Value;
  EmitDuration(out, d.min_increase);
  out << YAML::Key << "window" << YAML::Value;
  EmitDuration(out, d.window);
  out << YAML::Key << "baseline" << YAML::Value;
  EmitDuration(out, d.baseline);
  out << YAML::Key << "min_samples" << YAML::Value
      << std::to_string(d.min_samples) << YAML::EndMap;
  out << YAML::EndMap;
}

// LoadConfigString's work; `base_dir` as ConfigFromYamlNode takes it.
StatusOr<Config> LoadConfigText(const std::string& yaml,
                                const std::string& source,
                                const std::string& base_dir) {
  // YAML text is UTF-8; names read from it end up in JSON output.
  if (size_t bad = 0; !IsUtf8(yaml, &bad)) {
    const size_t line_start = yaml.rfind('\n', bad);
    YAML::Mark mark;
    mark.line =
        static_cast<int>(std::count(yaml.begin(), yaml.begin() + bad, '\n'));
    mark.column = static_cast<int>(
        line_start == std::string::npos ? bad : bad - line_start - 1);
    return InvalidRequest(Where(source, mark) + "not UTF-8 text");
  }
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(yaml);
  } catch (const YAML::Exception& e) {
    return InvalidRequest(Where(source, e.mark) +
                          "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    return Internal(source + ": reading the configuration failed: " + e.what());
  } catch (...) {
    return Internal(source + ": reading the configuration failed");
  }
  // Empty documents (a lone "---", a file of comments) carry no settings.
  const YAML::Node* config = nullptr;
  for (const YAML::Node& document : documents) {
    if (document.IsNull()) continue;
    if (config != nullptr) {
      return InvalidRequest(Where(source, document.Mark()) +
                            "a second YAML document; a config file holds one "
                            "(remove the \"---\" line above it)");
    }
    config = &document;
  }
  if (config == nullptr) return Config::Defaults();
  return ConfigFromYamlNode(*config, source, yaml, base_dir);
}

}  // namespace

StatusOr<Config> LoadConfigString(const std::string& yaml,
                                  const std::string& source) {
  // Text with no file: a relative workspace root has nothing to be relative
  // to.
  return LoadConfigText(yaml, source, "");
}

StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return NotFound("cannot read config file \"" + path +
                    "\": it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound("cannot read config file \"" + path +
                    "\": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return NotFound("cannot read config file \"" + path +
                    "\": " + std::strerror(errno));
  }
  // A relative workspace root is relative to the file's own directory.
  std::filesystem::path dir = std::filesystem::absolute(path, ec).parent_path();
  if (ec) {
    return NotFound("cannot read config file \"" + path +
                    "\": " + ec.message());
  }
  return LoadConfigText(text.str(), path, dir.string());
}

std::string ConfigToYaml(const Config& config) {
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  out << YAML::BeginMap;
  EmitResources(out, config);
  EmitPricing(out, config);
  EmitBudgets(out, config);
  EmitLevels(out, config);
  EmitDailyLimits(out, config);
  EmitProducts(out, config);
  EmitControls(out, config);
  EmitPolicies(out, config);
  EmitLifecycle(out, config);
  EmitConflicts(out, config);
  out << YAML::EndMap;
  return "# Quartermaster configuration: every setting, defaults filled in.\n"
         "# Keys and rules: docs/configuration.md.\n" +
         std::string(out.c_str()) + "\n";
}

}  // namespace qm
