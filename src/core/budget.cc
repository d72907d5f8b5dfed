// The money side of the engine: model selection, budget reservations and
// their reconciliation, budget periods and alerts, the circuit breaker,
// operator overrides and the cost and metrics reports. See docs/budgets.md.
//
// Units: token budgets count tokens, dollar budgets micro-USD (a price in USD
// per million tokens is exactly micro-USD per token).
#include <cmath>

#include "absl/time/civil_time.h"
#include "core/conditions.h"
#include "core/engine_impl.h"
#include "core/text.h"

namespace qm {
namespace {

constexpr int kTokens = 0, kMicro = 1;
constexpr int64_t kMaxTokenCount = 1'000'000'000'000'000;  // 1e15
constexpr double kMaxUsd = 1e9;
constexpr int64_t kMaxMicro = 1'000'000'000'000'000;  // kMaxUsd in micro-USD
// Bound of a period's totals: with every allocation's totals within
// kMaxTokenCount / kMaxMicro, no sum of spend or reservations overflows.
constexpr int64_t kMaxPeriodTotal = 1'000'000'000'000'000'000;  // 1e18
constexpr size_t kMaxReportIds = 100000;

double ToUsd(int64_t micro) { return static_cast<double>(micro) / 1e6; }
int64_t ToMicro(double usd) {
  return static_cast<int64_t>(std::llround(usd * 1e6));
}

int64_t CeilToInt(double v) {
  if (!(v > 0)) return 0;
  if (v > static_cast<double>(kMaxTokenCount)) return kMaxTokenCount;
  return static_cast<int64_t>(std::ceil(v - 1e-9));
}

absl::Time ToAbsl(Time t) {
  return absl::FromUnixMillis(t.time_since_epoch().count());
}
Time FromAbsl(absl::Time t) { return Time(Duration(absl::ToUnixMillis(t))); }

std::string Accuracy(double estimated, double actual) {
  if (estimated <= 0) return "";
  const double off = std::fabs(actual - estimated) / estimated;
  return off <= 0.10 ? "good" : off <= 0.25 ? "fair" : "poor";
}

constexpr int kNamedValue[kNumLevels] = {20, 55, 80, 95};

}  // namespace

// ---------------------------------------------------------------- set-up

Status EngineImpl::InitMoney() {
  const PricingConfig& pricing = config_.pricing;
  for (const auto& [name, price] : pricing.models) {
    auto finite = [](double v) { return std::isfinite(v) && v >= 0; };
    if (!finite(price.input_per_million) ||
        !finite(price.output_per_million.value_or(0)) ||
        !finite(price.cached_input_per_million.value_or(0))) {
      return InvalidRequest("pricing.models." + name +
                            ": prices must be finite numbers >= 0");
    }
    ModelState m;
    m.name = name;
    m.price = price;
    m.priced = true;
    const double out =
        price.output_per_million.value_or(price.input_per_million);
    const double share = pricing.estimate_output_share;
    m.blended = price.input_per_million * (1 - share) + out * share;
    models_[name] = m;
  }
  if (!(pricing.estimate_output_share >= 0 &&
        pricing.estimate_output_share <= 1)) {
    return InvalidRequest("pricing.estimate_output_share must be within 0..1");
  }
  auto check_model = [&](const std::string& field,
                         const std::string& model) -> Status {
    if (model.empty() || models_.empty() || models_.count(model)) {
      return Status::Ok();
    }
    std::vector<std::string> names;
    for (const auto& [n, m] : models_) names.push_back(n);
    std::string msg =
        field + ": model " + Quote(model) + " has no price in pricing.models";
    const std::string near = ClosestMatch(model, names);
    if (!near.empty()) msg += "; did you mean " + Quote(near) + "?";
    return InvalidRequest(msg);
  };
  QM_RETURN_IF_ERROR(
      check_model("pricing.default_model", pricing.default_model));
  for (size_t i = 0; i < config_.model_rules.size(); ++i) {
    const ModelRule& rule = config_.model_rules[i];
    const std::string field =
        "auto_model_selection.rules[" + std::to_string(i) + "]";
    auto cond = expr::Condition::Compile(rule.condition, TaskSchema());
    if (!cond.ok()) {
      return InvalidRequest(field + ".condition: " + cond.status().message());
    }
    QM_RETURN_IF_ERROR(check_model(field + ".model", rule.model));
    QM_RETURN_IF_ERROR(
        check_model(field + ".fallback_model", rule.fallback_model));
    const std::string reason =
        "rule " + std::to_string(i + 1) + ": " + rule.condition;
    rules_.push_back(
        {std::move(*cond), rule.model, rule.fallback_model, reason});
  }
  rule_vars_.assign(kNumTaskVars, false);
  for (const CompiledRule& r : rules_) {
    for (size_t v : r.condition.variables()) rule_vars_[v] = true;
  }
  task_values_.assign(kNumTaskVars, expr::Value());
  const CircuitBreakerConfig& cb = config_.circuit_breaker;
  for (size_t i = 0; i < cb.trip_conditions.size(); ++i) {
    auto cond =
        expr::Condition::Compile(cb.trip_conditions[i], BreakerSchema());
    if (!cond.ok()) {
      return InvalidRequest("circuit_breaker.trip_conditions[" +
                            std::to_string(i) +
                            "]: " + cond.status().message());
    }
    trip_conditions_.push_back(std::move(*cond));
  }
  if (cb.action != "pause_all" && cb.action != "pause_new_low_priority") {
    return InvalidRequest(
        "circuit_breaker.when_tripped.action must be pause_all or "
        "pause_new_low_priority");
  }
  if (cb.burn_rate_window.count() <= 0) {
    return InvalidRequest("circuit_breaker.burn_rate_window must be positive");
  }
  const TokenBudgetsConfig& tb = config_.token_budgets;
  if (!(tb.multiplier >= 1) || !std::isfinite(tb.multiplier)) {
    return InvalidRequest("token_budgets.multiplier must be at least 1");
  }
  if (!(tb.learning_rate > 0 && tb.learning_rate <= 1)) {
    return InvalidRequest("token_budgets.learning_rate must be within (0, 1]");
  }
  // Bounded like every token amount, so sums of reservations cannot overflow.
  for (const auto& [type, budget] : tb.per_type) {
    if (budget < 0 || budget > kMaxTokenCount) {
      return InvalidRequest("token_budgets." + type +
                            " must be a token count within 0.." +
                            FormatGrouped(kMaxTokenCount));
    }
  }
  if (tb.default_budget &&
      (*tb.default_budget < 0 || *tb.default_budget > kMaxTokenCount)) {
    return InvalidRequest(
        "token_budgets.default must be a token count within 0.." +
        FormatGrouped(kMaxTokenCount));
  }
  const DailyLimitsConfig& dl = config_.daily_limits;
  if (!absl::LoadTimeZone(dl.time_zone, &tz_)) {
    return InvalidRequest("daily_limits.time_zone: unknown time zone " +
                          Quote(dl.time_zone));
  }
  if (dl.week_start < 0 || dl.week_start > 6) {
    return InvalidRequest("daily_limits.week_start must be 0 (Sunday) to 6");
  }
  for (double p : dl.alert_at_percent) {
    if (!(p > 0 && p <= 100)) {
      return InvalidRequest(
          "daily_limits.alert_at_percent values must be within (0, 100]");
    }
  }
  // Period budgets: one counter per configured limit.
  auto add_budget = [&](BudgetState::Scope scope, const std::string& name,
                        int metric, double limit,
                        const std::string& field) -> StatusOr<uint32_t> {
    const double max =
        metric == kTokens ? static_cast<double>(kMaxTokenCount) : kMaxUsd;
    if (!std::isfinite(limit) || limit < 0 || limit > max) {
      return InvalidRequest(field + " must be a finite number within 0.." +
                            FormatNumber(max));
    }
    BudgetState b;
    b.scope = scope;
    b.metric = metric == kTokens ? BudgetState::Metric::kTokens
                                 : BudgetState::Metric::kMicroUsd;
    b.name = name;
    b.configured_limit =
        metric == kTokens ? static_cast<Milli>(limit) : ToMicro(limit);
    b.alerted.assign(dl.alert_at_percent.size(), false);
    const uint32_t idx = static_cast<uint32_t>(budgets_.size());
    b.counter = NewCounter(Counter::Kind::kBudget, "", b.configured_limit);
    counters_[b.counter].owner = idx;
    budgets_.push_back(std::move(b));
    counters_[budgets_.back().counter].name = BudgetLabel(budgets_.back());
    return idx;
  };
  // `tokens_key` and `usd_key`: the configuration keys of the two limits.
  auto add_pair = [&](BudgetState::Scope scope, const std::string& name,
                      std::optional<int64_t> tokens, std::optional<double> usd,
                      const std::string& tokens_key, const std::string& usd_key,
                      std::array<uint32_t, 2>* out) -> Status {
    if (tokens) {
      auto b = add_budget(scope, name, kTokens, static_cast<double>(*tokens),
                          tokens_key);
      if (!b.ok()) return b.status();
      (*out)[kTokens] = *b;
    }
    if (usd) {
      auto b = add_budget(scope, name, kMicro, *usd, usd_key);
      if (!b.ok()) return b.status();
      (*out)[kMicro] = *b;
    }
    return Status::Ok();
  };
  QM_RETURN_IF_ERROR(add_pair(BudgetState::Scope::kGlobal, "",
                              dl.max_tokens_total, dl.max_cost_usd,
                              "daily_limits.max_tokens_total",
                              "daily_limits.max_cost_usd", &global_budgets_));
  for (const auto& [name, product] : config_.products) {
    if (!product.token_budget_daily && !product.cost_budget_daily_usd) continue;
    std::array<uint32_t, 2> ids = {UINT32_MAX, UINT32_MAX};
    QM_RETURN_IF_ERROR(
        add_pair(BudgetState::Scope::kProduct, name, product.token_budget_daily,
                 product.cost_budget_daily_usd,
                 "products." + name + ".token_budget_daily",
                 "products." + name + ".cost_budget_daily_usd", &ids));
    product_budgets_[name] = ids;
  }
  for (const auto& [type, budget] : dl.per_agent_type) {
    if (!budget.max_tokens && !budget.max_cost_usd) continue;
    std::array<uint32_t, 2> ids = {UINT32_MAX, UINT32_MAX};
    const std::string key = "daily_limits.per_agent_type." + type;
    QM_RETURN_IF_ERROR(add_pair(
        BudgetState::Scope::kAgentType, type, budget.max_tokens,
        budget.max_cost_usd, key + ".max_tokens", key + ".max_cost_usd", &ids));
    type_budgets_[type] = ids;
  }
  money_enabled_ = !models_.empty() || !rules_.empty() ||
                   !pricing.default_model.empty() || !tb.per_type.empty() ||
                   tb.default_budget.has_value() || !budgets_.empty() ||
                   !trip_conditions_.empty();
  for (const auto& [product, level] :
       config_.manual_override.priority_override) {
    priority_overrides_[product] = level;
  }
  if (config_.manual_override.pause_all_agents) {
    paused_ = true;
    paused_by_ = "config";
    paused_reason_ = "manual_override.pause_all_agents is set";
  }
  CloseBreaker();
  StartPeriod();
  metrics_since_ = now_;
  return Status::Ok();
}

// ---------------------------------------------------------------- periods

void EngineImpl::ComputePeriod(Time t, Time* start, Time* end) const {
  const absl::CivilDay day = absl::ToCivilDay(ToAbsl(t), tz_);
  absl::CivilDay first = day, next = day + 1;
  switch (config_.daily_limits.period) {
    case BudgetPeriod::kDaily:
      break;
    case BudgetPeriod::kWeekly: {
      // absl numbers Monday 0 ... Sunday 6; the config Sunday 0 ... Saturday 6.
      const int wd = static_cast<int>(absl::GetWeekday(day));
      const int ws = (config_.daily_limits.week_start + 6) % 7;
      first = day - ((wd - ws + 7) % 7);
      next = first + 7;
      break;
    }
    case BudgetPeriod::kMonthly: {
      const absl::CivilMonth m(day);
      first = absl::CivilDay(m);
      next = absl::CivilDay(m + 1);
      break;
    }
  }
  *start = FromAbsl(absl::FromCivil(first, tz_));
  *end = FromAbsl(absl::FromCivil(next, tz_));
  if (*end <= t) *end = t + Duration(1);  // a zone without that midnight
}

void EngineImpl::StartPeriod() {
  ComputePeriod(now_, &period_start_, &period_end_);
  Schedule(period_end_, 0, Timer::Kind::kPeriodReset);
}

void EngineImpl::ResetPeriod() {
  const Time old_start = period_start_;
  for (BudgetState& b : budgets_) {
    Counter& k = counters_[b.counter];
    k.used -= k.spent;
    k.spent = 0;
    k.limit = b.configured_limit;
    std::fill(b.alerted.begin(), b.alerted.end(), false);
  }
  const int64_t tokens = period_tokens_, micro = period_micro_;
  period_tokens_ = period_micro_ = 0;
  spend_by_model_.clear();
  spend_by_product_.clear();
  spend_by_type_.clear();
  alerts_.clear();
  // Busy time of running work counts from the new period on.
  std::fill(busy_agent_ms_.begin(), busy_agent_ms_.end(), 0.0);
  tasks_completed_ = tasks_completed_tokens_ = tasks_completed_micro_ = 0;
  tasks_started_ = tasks_waited_ = 0;
  wait_ms_sum_ = wait_ms_max_ = 0;
  const bool was_open = breaker_.open;
  CloseBreaker();
  StartPeriod();
  metrics_since_ = period_start_;
  EmitOp(EventType::kBudgetReset,
         std::string(BudgetPeriodName(config_.daily_limits.period)) +
             " budget period " + FormatTime(old_start) + " ended with " +
             FormatGrouped(tokens) + " tokens and " + FormatUsd(ToUsd(micro)) +
             " spent; the next one runs to " + FormatTime(period_end_),
         "");
  if (was_open) {
    EmitOp(EventType::kCircuitClosed,
           "circuit breaker closed: a new budget period started", "");
  }
  Dispatch();
}

// ---------------------------------------------------------------- planning

const ModelState* EngineImpl::FindModel(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : &it->second;
}

int64_t EngineImpl::PriceTokens(const std::string& model,
                                int64_t tokens) const {
  const ModelState* m = FindModel(model);
  if (!m) return 0;
  return CeilToInt(static_cast<double>(tokens) * m->blended);
}

std::optional<Level> EngineImpl::PriorityOverride(
    const std::string& product) const {
  auto it = priority_overrides_.find(product);
  if (it == priority_overrides_.end()) return std::nullopt;
  return it->second;
}

StatusOr<MoneyPlan> EngineImpl::PlanMoney(const ParsedRequest& p,
                                          const std::string& prefix) const {
  MoneyPlan plan;
  if (!p.model.empty()) {
    if (!models_.empty() && !FindModel(p.model)) {
      std::vector<std::string> names;
      for (const auto& [n, m] : models_) names.push_back(n);
      std::string msg = prefix + "model: unknown model " + Quote(p.model);
      const std::string near = ClosestMatch(p.model, names);
      if (!near.empty()) msg += "; did you mean " + Quote(near) + "?";
      return InvalidRequest(msg).WithDetails("priced models: " +
                                             Join(names, ", "));
    }
    plan.model = p.model;
    plan.reason = "requested";
  }
  const CompiledRule* chosen = nullptr;
  if (plan.model.empty() && !rules_.empty()) {
    std::vector<expr::Value>& v = task_values_;
    auto set_text = [&](size_t var, const std::string& text) {
      if (!rule_vars_[var]) return;
      if (v[var] && std::holds_alternative<std::string>(*v[var])) {
        std::get<std::string>(*v[var]) = text;  // reuses its buffer
      } else {
        v[var] = text;
      }
    };
    auto set_number = [&](size_t var, std::optional<double> x) {
      if (!rule_vars_[var]) return;
      if (x) {
        v[var] = *x;
      } else {
        v[var].reset();
      }
    };
    if (rule_vars_[kTaskPriority]) v[kTaskPriority] = p.level;
    set_number(kTaskPriorityValue, p.priority_value);
    set_number(kTaskEstimatedMinutes, p.estimated_minutes);
    set_number(
        kTaskEstimatedTokens,
        p.estimated_tokens
            ? std::optional<double>(static_cast<double>(*p.estimated_tokens))
            : std::nullopt);
    set_text(kTaskProduct, p.product);
    set_text(kTaskAgentType, p.agent_type);
    set_text(kTaskWorkflowId, p.workflow_id);
    set_text(kTaskRequester, p.requester);
    if (rule_vars_[kTaskPreemptible]) v[kTaskPreemptible] = p.preemptible;
    for (size_t i = 0; i < rules_.size(); ++i) {
      if (rules_[i].condition.is_default() || rules_[i].condition.Evaluate(v)) {
        chosen = &rules_[i];
        plan.model = chosen->model;
        plan.rule = static_cast<int>(i);
        break;
      }
    }
  }
  if (plan.model.empty() && !config_.pricing.default_model.empty()) {
    plan.model = config_.pricing.default_model;
    plan.reason = "pricing.default_model";
  }
  // Tokens: the type's per-task budget, the learned estimate.
  const TokenBudgetsConfig& tb = config_.token_budgets;
  std::optional<int64_t> budget = tb.default_budget;
  if (auto it = tb.per_type.find(p.agent_type); it != tb.per_type.end()) {
    budget = it->second;
  }
  std::optional<int64_t> expected;
  if (p.estimated_tokens) {
    double ratio = 1;
    auto lit = learned_.find(p.agent_type);
    if (lit != learned_.end() && lit->second.samples > 0) {
      ratio = lit->second.token_ratio;
    }
    expected = CeilToInt(static_cast<double>(*p.estimated_tokens) * ratio);
  }
  if (budget) {
    plan.max_tokens = *budget;
    if (tb.use_estimate_when_smaller && expected && *expected < *budget) {
      plan.max_tokens = std::max<int64_t>(1, *expected);
    }
    plan.max_tokens_limit =
        CeilToInt(static_cast<double>(*budget) * tb.multiplier);
  }
  if (expected) {
    plan.tokens = plan.max_tokens_limit
                      ? std::min(*expected, *plan.max_tokens_limit)
                      : *expected;
  } else if (plan.max_tokens) {
    plan.tokens = *plan.max_tokens;
  }
  // Even an unestimated request needs a token and a micro-dollar of room, so
  // an exhausted budget admits nothing.
  plan.tokens = std::max<int64_t>(1, plan.tokens);
  plan.micro = std::max<int64_t>(1, PriceTokens(plan.model, plan.tokens));
  auto add = [&](uint32_t b) {
    if (b != UINT32_MAX) plan.budgets[plan.num_budgets++] = b;
  };
  add(global_budgets_[kTokens]);
  add(global_budgets_[kMicro]);
  for (const auto* map : {&product_budgets_, &type_budgets_}) {
    auto it = map->find(map == &product_budgets_ ? p.product : p.agent_type);
    if (it == map->end()) continue;
    for (uint32_t b : it->second) add(b);
  }
  // Budget-aware downgrade: the rule's fallback when the chosen model would
  // push a dollar budget past its limit and the fallback would not.
  if (chosen && !chosen->fallback.empty() && chosen->fallback != plan.model) {
    const int64_t fallback_micro =
        std::max<int64_t>(1, PriceTokens(chosen->fallback, plan.tokens));
    std::string crossed;
    bool fallback_fits = true;
    for (uint32_t bi : plan.Budgets()) {
      const BudgetState& b = budgets_[bi];
      if (b.metric != BudgetState::Metric::kMicroUsd) continue;
      const Counter& k = counters_[b.counter];
      if (crossed.empty() && k.used + plan.micro > k.limit) {
        crossed = BudgetLabel(b) + " would be crossed (" +
                  FormatUsd(ToUsd(k.used)) + " spent or reserved + " +
                  FormatUsd(ToUsd(plan.micro)) + " > " +
                  FormatUsd(ToUsd(k.limit)) + ")";
      }
      if (k.used + fallback_micro > k.limit) fallback_fits = false;
    }
    if (!crossed.empty() && fallback_fits) {
      plan.downgraded_from = plan.model;
      plan.downgrade_note = "downgraded from " + plan.model + " to " +
                            chosen->fallback + ": " + crossed;
      plan.model = chosen->fallback;
      plan.micro = fallback_micro;
    }
  }
  return plan;
}

Status EngineImpl::CheckMoney(const ParsedRequest& p, const MoneyPlan& plan,
                              const std::string& prefix) const {
  if (BreakerHolds(p.level)) {
    Status s(Code::kCircuitOpen,
             "circuit breaker is open since " +
                 FormatTime(breaker_.tripped_at.value_or(now_)) + " (" +
                 breaker_.condition + "): " +
                 (breaker_.action == "pause_all"
                      ? "no new work is admitted"
                      : "no new low-priority work is admitted") +
                 " until the budget period resets at " +
                 FormatTime(period_end_));
    s.AddContext("condition", breaker_.condition);
    s.AddContext("tripped_at", FormatTime(breaker_.tripped_at.value_or(now_)));
    s.AddContext("closes_at", FormatTime(period_end_));
    s.AddContext("allow_override", breaker_.allow_override ? "true" : "false");
    s.WithDetails(breaker_.allow_override
                      ? "an operator may resume for the rest of the period "
                        "or raise today's limit"
                      : "circuit_breaker.when_tripped.allow_override is "
                        "false: it closes only at the period reset");
    return s;
  }
  for (uint32_t bi : plan.Budgets()) {
    const BudgetState& b = budgets_[bi];
    const Counter& k = counters_[b.counter];
    const bool tokens = b.metric == BudgetState::Metric::kTokens;
    const int64_t need = tokens ? plan.tokens : plan.micro;
    const bool never = need > k.limit;
    if (!never && (k.spent + need <= k.limit || p.wait_for_budget)) continue;
    const Milli left = std::max<Milli>(0, k.limit - k.spent);
    Status s(Code::kBudgetExceeded,
             prefix + "the reservation of " + BudgetAmount(b, need) +
                 " does not fit the " + BudgetLabel(b) + ": " +
                 BudgetAmount(b, left) + " of " + BudgetAmount(b, k.limit) +
                 " left" +
                 (never ? " (it exceeds the whole budget)"
                        : "; it resets at " + FormatTime(period_end_)));
    s.AddContext("budget", BudgetLabel(b));
    s.AddContext("limit", BudgetAmount(b, k.limit));
    s.AddContext("spent", BudgetAmount(b, k.spent));
    s.AddContext("reserved", BudgetAmount(b, k.used - k.spent));
    s.AddContext("remaining", BudgetAmount(b, left));
    s.AddContext("requested", BudgetAmount(b, need));
    s.AddContext("resets_at", FormatTime(period_end_));
    s.WithDetails("reserved " + BudgetAmount(b, need) + " (" +
                  FormatGrouped(plan.tokens) + " tokens" +
                  (plan.model.empty() ? "" : " of " + plan.model) + ")");
    // Alternatives, each checked against every budget the request touches
    // (not only this one), so that following one is not refused in turn.
    auto refused = [&](int64_t tokens_need, int64_t micro_need, bool wait) {
      for (uint32_t bj : plan.Budgets()) {
        const BudgetState& o = budgets_[bj];
        const Counter& ok = counters_[o.counter];
        const int64_t n =
            o.metric == BudgetState::Metric::kTokens ? tokens_need : micro_need;
        if (n > ok.limit || (!wait && ok.spent + n > ok.limit)) return true;
      }
      return false;
    };
    if (!tokens) {
      // Cheaper models whose reservation fits.
      for (const auto& [name, m] : models_) {
        if (name == plan.model) continue;
        const int64_t micro =
            std::max<int64_t>(1, PriceTokens(name, plan.tokens));
        if (micro >= plan.micro ||
            refused(plan.tokens, micro, p.wait_for_budget)) {
          continue;
        }
        s.AddAlternative("use model " + name + ": reserves " +
                         FormatUsd(ToUsd(micro)) + " (send model: " + name +
                         ")");
      }
    }
    if (!p.wait_for_budget && !refused(plan.tokens, plan.micro, true)) {
      s.AddAlternative("queue until the budget resets at " +
                       FormatTime(period_end_) +
                       " (send wait_for_budget: true)");
    }
    // Without an estimate or a per-task budget the reservation is 1 token.
    if (plan.tokens > 1) {
      s.AddAlternative("send a smaller estimated_tokens");
    }
    s.AddAffected(BudgetLabel(b));
    return s;
  }
  return Status::Ok();
}

void EngineImpl::AddBudgetDemand(const MoneyPlan& plan, Demand* d) const {
  for (uint32_t bi : plan.Budgets()) {
    const BudgetState& b = budgets_[bi];
    d->emplace_back(b.counter, b.metric == BudgetState::Metric::kTokens
                                   ? plan.tokens
                                   : plan.micro);
  }
}

std::unique_ptr<AllocMoney> EngineImpl::MakeMoney(const MoneyPlan& plan) const {
  auto m = std::make_unique<AllocMoney>();
  m->model = plan.model;
  m->reason = plan.reason;
  m->rule = plan.rule;
  m->downgraded_from = plan.downgraded_from;
  m->downgrade_note = plan.downgrade_note;
  m->max_tokens = plan.max_tokens;
  m->max_tokens_limit = plan.max_tokens_limit;
  m->reserved_tokens = plan.tokens;
  m->reserved_micro = plan.micro;
  return m;
}

bool EngineImpl::WaitsForReset(const Alloc& a) const {
  for (const auto& [c, m] : a.demand) {
    const Counter& k = counters_[c];
    if (k.kind == Counter::Kind::kBudget && k.spent + m > k.limit) return true;
  }
  return false;
}

// ---------------------------------------------------------------- spend

StatusOr<std::pair<int64_t, int64_t>> EngineImpl::PriceUsage(
    const Alloc& a, const UsageReport& u, const std::string& prefix) const {
  auto count = [&](const char* name, const std::optional<int64_t>& v,
                   int64_t* sum) -> Status {
    if (!v) return Status::Ok();
    if (*v < 0 || *v > kMaxTokenCount) {
      return InvalidRequest(
          prefix + name + " must be a token count within 0.." +
          FormatGrouped(kMaxTokenCount) + ", got " + std::to_string(*v));
    }
    *sum += *v;
    return Status::Ok();
  };
  int64_t split = 0, plain = 0;
  QM_RETURN_IF_ERROR(count("input_tokens", u.input_tokens, &split));
  QM_RETURN_IF_ERROR(count("output_tokens", u.output_tokens, &split));
  QM_RETURN_IF_ERROR(
      count("cached_input_tokens", u.cached_input_tokens, &split));
  QM_RETURN_IF_ERROR(count("tokens", u.tokens, &plain));
  const bool has_split =
      u.input_tokens || u.output_tokens || u.cached_input_tokens;
  if (has_split && u.tokens && plain != split) {
    return InvalidRequest(prefix + "tokens (" + FormatGrouped(plain) +
                          ") differs from input_tokens + output_tokens + "
                          "cached_input_tokens (" +
                          FormatGrouped(split) + ")");
  }
  if (u.cost_usd && (!std::isfinite(*u.cost_usd) || *u.cost_usd < 0 ||
                     *u.cost_usd > kMaxUsd)) {
    return InvalidRequest(
        prefix + "cost_usd must be a number of dollars from 0 to " +
        FormatNumber(kMaxUsd) + ", got " + FormatNumber(*u.cost_usd));
  }
  // Both are kept with the allocation and echoed in JSON output.
  for (const auto& [name, text] :
       {std::pair<const char*, const std::string*>{"report_id", &u.report_id},
        {"model", &u.model}}) {
    if (text->size() > kMaxStringBytes || !IsUtf8(*text)) {
      return InvalidRequest(prefix + name + " must be UTF-8 text of at most " +
                            std::to_string(kMaxStringBytes) + " bytes");
    }
  }
  std::string model = u.model.empty() && a.money ? a.money->model : u.model;
  if (!u.model.empty() && !models_.empty() && !FindModel(u.model)) {
    std::vector<std::string> names;
    for (const auto& [n, m] : models_) names.push_back(n);
    std::string msg = prefix + "model: unknown model " + Quote(u.model);
    const std::string near = ClosestMatch(u.model, names);
    if (!near.empty()) msg += "; did you mean " + Quote(near) + "?";
    return InvalidRequest(msg);
  }
  const int64_t tokens = has_split ? split : plain;
  int64_t micro = 0;
  if (u.cost_usd) {
    micro = ToMicro(*u.cost_usd);
  } else if (const ModelState* m = FindModel(model)) {
    if (has_split) {
      const ModelPrice& pr = m->price;
      micro = CeilToInt(
          static_cast<double>(u.input_tokens.value_or(0)) *
              pr.input_per_million +
          static_cast<double>(u.output_tokens.value_or(0)) *
              pr.output_per_million.value_or(pr.input_per_million) +
          static_cast<double>(u.cached_input_tokens.value_or(0)) *
              pr.cached_input_per_million.value_or(pr.input_per_million));
    } else {
      micro = CeilToInt(static_cast<double>(tokens) * m->blended);
    }
  }
  return std::make_pair(tokens, micro);
}

void EngineImpl::RecordBurn(int64_t tokens, int64_t micro) {
  const int64_t minute = now_.time_since_epoch().count() / 60000;
  if (!burn_.empty() && burn_.back().first == minute) {
    burn_.back().second.first += tokens;
    burn_.back().second.second += micro;
  } else {
    burn_.push_back({minute, {tokens, micro}});
  }
  const int64_t window = std::max<int64_t>(
      1, config_.circuit_breaker.burn_rate_window.count() / 60000);
  while (!burn_.empty() && burn_.front().first <= minute - window) {
    burn_.pop_front();
  }
}

double EngineImpl::BurnRate(bool micro) const {
  const int64_t minute = now_.time_since_epoch().count() / 60000;
  const int64_t window = std::max<int64_t>(
      1, config_.circuit_breaker.burn_rate_window.count() / 60000);
  double sum = 0;
  for (const auto& [m, spend] : burn_) {
    if (m > minute - window) {
      sum += static_cast<double>(micro ? spend.second : spend.first);
    }
  }
  return sum / (static_cast<double>(window) / 60.0);
}

void EngineImpl::ApplySpend(Alloc& a, int64_t tokens, int64_t micro,
                            const std::string& model) {
  if (!a.money) a.money = std::make_unique<AllocMoney>();
  AllocMoney& m = *a.money;
  m.used_tokens += tokens;
  m.used_micro += micro;
  const int64_t new_t = m.RemainingTokens(), new_m = m.RemainingMicro();
  if (a.holding) {
    for (auto& [c, amount] : a.demand) {
      Counter& k = counters_[c];
      if (k.kind != Counter::Kind::kBudget) continue;
      const bool is_tokens =
          budgets_[k.owner].metric == BudgetState::Metric::kTokens;
      const int64_t spent = is_tokens ? tokens : micro;
      const int64_t next = is_tokens ? new_t : new_m;
      const int64_t delta = next - amount;
      k.spent += spent;
      k.used += spent + delta;
      if (a.status == AllocStatus::kPreempted) k.releasing += delta;
      amount = next;
    }
  }
  period_tokens_ += tokens;
  period_micro_ += micro;
  auto add = [&](Spend& s) {
    s.tokens += tokens;
    s.micro += micro;
  };
  const std::string& priced_as = model.empty() ? m.model : model;
  if (!priced_as.empty()) add(spend_by_model_[priced_as]);
  if (spend_by_product_.size() <= a.product) {
    spend_by_product_.resize(products_.size());
  }
  if (spend_by_type_.size() <= a.type) spend_by_type_.resize(types_.size());
  add(spend_by_product_[a.product]);
  add(spend_by_type_[a.type]);
  RecordBurn(tokens, micro);
  ++fs_version_;
}

Status EngineImpl::RecordUsage(Alloc& a, const UsageReport& u,
                               const std::string& prefix, bool may_stop,
                               bool* stopped) {
  *stopped = false;
  if (!HasSpend(u)) return Status::Ok();
  auto priced = PriceUsage(a, u, prefix);
  if (!priced.ok()) return priced.status();
  if (!u.report_id.empty()) {
    if (u.report_id.size() > kMaxStringBytes) {
      return InvalidRequest(prefix + "report_id is too long");
    }
    if (a.money &&
        std::find(a.money->report_ids.begin(), a.money->report_ids.end(),
                  u.report_id) != a.money->report_ids.end()) {
      return Status::Ok();  // a retried report: counted once
    }
  }
  const auto [tokens, micro] = *priced;
  if (tokens == 0 && micro == 0 && u.report_id.empty()) return Status::Ok();
  // Each report is bounded; so are the totals it adds to (else enough
  // reports would overflow them).
  const int64_t used_tokens = a.money ? a.money->used_tokens : 0;
  const int64_t used_micro = a.money ? a.money->used_micro : 0;
  if (tokens > kMaxTokenCount - used_tokens ||
      tokens > kMaxPeriodTotal - period_tokens_) {
    return InvalidRequest(
        prefix + "tokens: " + FormatGrouped(tokens) +
        " more tokens would bring " +
        (tokens > kMaxTokenCount - used_tokens
             ? IdText(a.id) + "'s reported total past " +
                   FormatGrouped(kMaxTokenCount)
             : "this period's total past " + FormatGrouped(kMaxPeriodTotal)));
  }
  if (micro > kMaxMicro - used_micro ||
      micro > kMaxPeriodTotal - period_micro_) {
    return InvalidRequest(
        prefix + "cost_usd: " + FormatUsd(ToUsd(micro)) + " more would bring " +
        (micro > kMaxMicro - used_micro
             ? IdText(a.id) + "'s reported cost past " + FormatUsd(kMaxUsd)
             : "this period's cost past " + FormatUsd(ToUsd(kMaxPeriodTotal))));
  }
  ApplySpend(a, tokens, micro, u.model);
  AllocMoney& m = *a.money;
  if (!u.report_id.empty() && m.report_ids.size() < kMaxReportIds) {
    m.report_ids.push_back(u.report_id);
  }
  if (sink_) {
    std::string text = "+" + FormatGrouped(tokens) + " tokens (" +
                       FormatUsd(ToUsd(micro)) + "); " +
                       FormatGrouped(m.used_tokens) + " tokens used";
    if (m.max_tokens) text += " of " + FormatGrouped(*m.max_tokens);
    Emit(EventType::kUsageReported, a, std::move(text));
  } else {
    Emit(EventType::kUsageReported, a);
  }
  CheckAlerts(&a);
  EvaluateBreaker();
  if (m.max_tokens && m.used_tokens > *m.max_tokens && !m.over_budget) {
    m.over_budget = true;
    // Only a running allocation that is not already ending is stopped: a
    // release ends it anyway, and a preempted one is leaving.
    const bool stop =
        config_.token_budgets.over_budget == OverBudgetPolicy::kStop &&
        may_stop && a.status == AllocStatus::kActive;
    Emit(EventType::kOverBudget, a,
         "used " + FormatGrouped(m.used_tokens) +
             " tokens, over its grant of " + FormatGrouped(*m.max_tokens) +
             (m.max_tokens_limit && *m.max_tokens_limit > *m.max_tokens
                  ? " (it may extend to " + FormatGrouped(*m.max_tokens_limit) +
                        ")"
                  : "") +
             (stop ? "; stopped (token_budgets.over_budget: stop)" : ""));
    *stopped = stop;
  }
  return Status::Ok();
}

void EngineImpl::OnGrantMoney(const Alloc& a) {
  ++tasks_started_;
  const double wait = static_cast<double>((now_ - a.queued_at).count());
  if (wait > 0) ++tasks_waited_;
  wait_ms_sum_ += wait;
  wait_ms_max_ = std::max(wait_ms_max_, wait);
  if (a.money && !a.money->model.empty()) {
    ++spend_by_model_[a.money->model].tasks;
  }
  if (spend_by_product_.size() <= a.product) {
    spend_by_product_.resize(products_.size());
  }
  if (spend_by_type_.size() <= a.type) spend_by_type_.resize(types_.size());
  ++spend_by_product_[a.product].tasks;
  ++spend_by_type_[a.type].tasks;
}

void EngineImpl::OnFinishMoney(Alloc& a) {
  if (a.status != AllocStatus::kReleased && a.status != AllocStatus::kFailed) {
    return;
  }
  const int64_t used_t = a.money ? a.money->used_tokens : 0;
  const int64_t used_m = a.money ? a.money->used_micro : 0;
  ++tasks_completed_;
  tasks_completed_tokens_ += used_t;
  tasks_completed_micro_ += used_m;
  if (a.status != AllocStatus::kReleased || !a.extras || !a.extras->usage) {
    return;
  }
  const UsageReport& final_report = a.extras->usage.value();
  if (final_report.outcome != Outcome::kSuccess) return;
  const bool tokens_known =
      a.req.estimated_tokens && *a.req.estimated_tokens > 0 && used_t > 0;
  const bool minutes_known =
      a.req.estimated_minutes && *a.req.estimated_minutes > 0;
  if (!tokens_known && !minutes_known) return;
  Learned& l = learned_[types_[a.type].name];
  const double rate = config_.token_budgets.learning_rate;
  bool learned = false;
  if (a.req.estimated_tokens && *a.req.estimated_tokens > 0 && used_t > 0) {
    const double est = static_cast<double>(*a.req.estimated_tokens);
    const double ratio =
        std::clamp(static_cast<double>(used_t) / est, 0.05, 20.0);
    l.token_ratio =
        l.samples == 0 ? ratio : (1 - rate) * l.token_ratio + rate * ratio;
    ++l.samples;
    l.last_est_tokens = *a.req.estimated_tokens;
    l.last_actual_tokens = used_t;
    l.accuracy = Accuracy(est, static_cast<double>(used_t));
    if (!a.money) a.money = std::make_unique<AllocMoney>();
    a.money->learned = true;  // FillBudgetInfo renders the accuracy
    learned = true;
  }
  if (a.req.estimated_minutes && *a.req.estimated_minutes > 0) {
    const double actual =
        static_cast<double>((now_ - a.granted_at).count()) / 60000.0;
    const double ratio =
        std::clamp(actual / *a.req.estimated_minutes, 0.05, 20.0);
    l.minute_ratio = l.minute_samples == 0
                         ? ratio
                         : (1 - rate) * l.minute_ratio + rate * ratio;
    ++l.minute_samples;
    l.last_est_minutes = *a.req.estimated_minutes;
    l.last_actual_minutes = actual;
    if (!learned) l.accuracy = Accuracy(*a.req.estimated_minutes, actual);
  }
}

void EngineImpl::OnRequeueMoney(Alloc& a) {
  if (!a.money) return;
  // Its next grant is admitted like a new request's: a victim that used up
  // its reservation still needs room on every budget, so an exhausted one
  // does not take it back.
  AllocMoney& m = *a.money;
  m.reserved_tokens = std::max(m.reserved_tokens, m.used_tokens + 1);
  m.reserved_micro = std::max(m.reserved_micro, m.used_micro + 1);
  for (auto& [c, amount] : a.demand) {
    const Counter& k = counters_[c];
    if (k.kind != Counter::Kind::kBudget) continue;
    amount = budgets_[k.owner].metric == BudgetState::Metric::kTokens
                 ? m.RemainingTokens()
                 : m.RemainingMicro();
  }
}

// ---------------------------------------------------------------- alerts

void EngineImpl::CheckAlerts(const Alloc* a) {
  if (budgets_.empty()) return;
  if (a) {
    for (const auto& [c, m] : a->demand) {
      if (counters_[c].kind == Counter::Kind::kBudget) {
        CheckAlert(budgets_[counters_[c].owner]);
      }
    }
    return;
  }
  for (BudgetState& b : budgets_) CheckAlert(b);
}

void EngineImpl::CheckAlert(BudgetState& b) {
  const std::vector<double>& thresholds = config_.daily_limits.alert_at_percent;
  {
    const Counter& k = counters_[b.counter];
    if (k.limit <= 0) return;
    for (size_t i = 0; i < thresholds.size() && i < b.alerted.size(); ++i) {
      if (b.alerted[i]) continue;
      if (static_cast<double>(k.spent) * 100.0 <
          thresholds[i] * static_cast<double>(k.limit)) {
        continue;
      }
      b.alerted[i] = true;
      const double pct =
          100.0 * static_cast<double>(k.spent) / static_cast<double>(k.limit);
      BudgetAlert alert;
      alert.time = now_;
      alert.budget = BudgetLabel(b);
      alert.threshold_percent = thresholds[i];
      alert.message =
          std::string(thresholds[i] >= 100 ? "Reached" : "Approaching") +
          " the " + BudgetLabel(b) + " (" + FormatNumber(thresholds[i]) +
          "%): " + BudgetAmount(b, k.spent) + " of " +
          BudgetAmount(b, k.limit) + " (" +
          FormatNumber(std::round(pct * 10) / 10) + "%)";
      alerts_.push_back(alert);
      EmitOp(EventType::kBudgetAlert, alert.message, "",
             b.scope == BudgetState::Scope::kProduct ? b.name : "");
    }
  }
}

std::vector<expr::Value> EngineImpl::BreakerValues() const {
  std::vector<expr::Value> v(kNumBreakerVars);
  const double hours_left =
      static_cast<double>(std::max<int64_t>(0, (period_end_ - now_).count())) /
      3.6e6;
  const double usd = ToUsd(period_micro_);
  const double tokens = static_cast<double>(period_tokens_);
  const double usd_rate = BurnRate(true) / 1e6, token_rate = BurnRate(false);
  v[kCostDailyUsd] = usd;
  v[kTokensDaily] = tokens;
  v[kProjectedCostDailyUsd] = usd + usd_rate * hours_left;
  v[kProjectedTokensDaily] = tokens + token_rate * hours_left;
  v[kBurnRateUsdPerHour] = usd_rate;
  v[kBurnRateTokensPerHour] = token_rate;
  if (global_budgets_[kMicro] != UINT32_MAX) {
    const double limit =
        ToUsd(counters_[budgets_[global_budgets_[kMicro]].counter].limit);
    v[kMaxCostUsd] = limit;
    if (limit > 0) v[kPercentCostUsed] = 100.0 * usd / limit;
  }
  if (global_budgets_[kTokens] != UINT32_MAX) {
    const double limit = static_cast<double>(
        counters_[budgets_[global_budgets_[kTokens]].counter].limit);
    v[kMaxTokensTotal] = limit;
    if (limit > 0) v[kPercentTokensUsed] = 100.0 * tokens / limit;
  }
  return v;
}

void EngineImpl::CloseBreaker() {
  breaker_ = BreakerState{};
  breaker_.action = config_.circuit_breaker.action;
  breaker_.allow_override = config_.circuit_breaker.allow_override;
}

void EngineImpl::EvaluateBreaker() {
  if (breaker_.open || trip_conditions_.empty()) return;
  const std::vector<expr::Value> v = BreakerValues();
  for (const expr::Condition& c : trip_conditions_) {
    if (!c.Evaluate(v)) continue;
    breaker_.open = true;
    breaker_.condition = c.text();
    breaker_.tripped_at = now_;
    breaker_.closes_at = period_end_;
    const CircuitBreakerConfig& cb = config_.circuit_breaker;
    EmitOp(EventType::kCircuitTripped,
           "circuit breaker tripped: " + c.text() + " (spent " +
               FormatUsd(ToUsd(period_micro_)) + ", " +
               FormatGrouped(period_tokens_) + " tokens this period); " +
               (cb.action == "pause_all" ? "all new work is paused"
                                         : "new low-priority work is paused") +
               " until " + FormatTime(period_end_) + "; notify " + cb.notify +
               (cb.allow_override ? "; an override may resume it" : ""),
           "");
    // Low requests can no longer start: a full pass (once the operation is
    // done) drops the claims they hold, which would otherwise keep back work
    // that may still start.
    if (cb.action != "pause_all") dispatch_at_end_ = true;
    return;
  }
}

// ---------------------------------------------------------------- output

std::string EngineImpl::BudgetLabel(const BudgetState& b) const {
  std::string label = BudgetPeriodName(config_.daily_limits.period);
  label += b.metric == BudgetState::Metric::kTokens ? " token budget"
                                                    : " cost budget";
  switch (b.scope) {
    case BudgetState::Scope::kGlobal:
      return label;
    case BudgetState::Scope::kProduct:
      return label + " of product " + b.name;
    case BudgetState::Scope::kAgentType:
      return label + " of agent type " + b.name;
  }
  return label;
}

std::string EngineImpl::BudgetAmount(const BudgetState& b, Milli amount) const {
  return b.metric == BudgetState::Metric::kTokens
             ? FormatGrouped(amount) + " tokens"
             : FormatUsd(ToUsd(amount));
}

void EngineImpl::FillBudgetInfo(const Alloc& a, BudgetInfo* out) const {
  if (!a.money) return;
  const AllocMoney& m = *a.money;
  out->model = m.model;
  out->model_reason = m.reason;
  if (m.rule >= 0 && static_cast<size_t>(m.rule) < rules_.size()) {
    out->model_reason = rules_[m.rule].reason;
  }
  if (!m.downgrade_note.empty()) {
    out->model_reason += "; " + m.downgrade_note;
  }
  out->downgraded_from = m.downgraded_from;
  out->max_tokens = m.max_tokens;
  out->max_tokens_limit = m.max_tokens_limit;
  out->reserved_tokens = m.reserved_tokens;
  out->reserved_usd = ToUsd(m.reserved_micro);
  if (a.holding) {
    out->reserved_tokens_left = m.RemainingTokens();
    out->reserved_usd_left = ToUsd(m.RemainingMicro());
  }
  out->used_tokens = m.used_tokens;
  out->used_usd = ToUsd(m.used_micro);
  out->over_budget = m.over_budget;
  if (m.learned && a.req.estimated_tokens) {
    out->accuracy = "estimated " + FormatGrouped(*a.req.estimated_tokens) +
                    ", actual " + FormatGrouped(m.used_tokens) + ": " +
                    Accuracy(static_cast<double>(*a.req.estimated_tokens),
                             static_cast<double>(m.used_tokens));
  }
}

void EngineImpl::EmitOp(EventType type, std::string reason,
                        const std::string& actor, const std::string& product) {
  Event e;
  if (!NextEvent(type, std::move(reason), &e)) return;
  e.actor = actor;
  e.product = product;
  sink_->OnEvent(e);
}

// ---------------------------------------------------------------- operations

StatusOr<AllocationInfo> EngineImpl::ReportUsage(std::string_view id,
                                                 const UsageReport& usage) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (!a.holding) {
    return Conflict(IdText(a.id) + " is " + AllocStatusName(a.status) +
                    "; usage can be reported only while it runs (send the "
                    "last report with the release)");
  }
  bool stopped = false;
  QM_RETURN_IF_ERROR(RecordUsage(a, usage, "usage.", true, &stopped));
  if (stopped && a.status == AllocStatus::kActive) {
    return Finish(a, AllocStatus::kFailed, EventType::kFailed,
                  "stopped: used " + FormatGrouped(a.money->used_tokens) +
                      " tokens, over its grant of " +
                      FormatGrouped(*a.money->max_tokens));
  }
  return Info(a);
}

StatusOr<AllocationInfo> EngineImpl::ExtendTokens(std::string_view id,
                                                  int64_t max_tokens) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (a.status != AllocStatus::kActive) {
    return Conflict(IdText(a.id) + " is " + AllocStatusName(a.status) +
                    "; only running allocations can extend their tokens");
  }
  if (!a.money || !a.money->max_tokens) {
    return Conflict(IdText(a.id) + " (agent type " + types_[a.type].name +
                    ") has no token budget to extend (token_budgets)");
  }
  AllocMoney& m = *a.money;
  if (max_tokens <= *m.max_tokens) {
    return InvalidRequest("max_tokens must be above the current grant of " +
                          FormatGrouped(*m.max_tokens) + ", got " +
                          FormatGrouped(max_tokens));
  }
  if (max_tokens > m.max_tokens_limit.value_or(0)) {
    return Status(Code::kBudgetExceeded,
                  "max_tokens " + FormatGrouped(max_tokens) +
                      " is over the extension limit of " +
                      FormatGrouped(m.max_tokens_limit.value_or(0)) +
                      " (token_budgets.multiplier " +
                      FormatNumber(config_.token_budgets.multiplier) +
                      " x the " + types_[a.type].name + " budget)")
        .AddContext("limit", std::to_string(m.max_tokens_limit.value_or(0)));
  }
  // Reserve what the larger grant may still spend: `need(t)` is what a
  // grant of t tokens adds to the token and the dollar budgets.
  auto need = [&](int64_t t) {
    const int64_t want_t = std::max(m.reserved_tokens, t);
    const int64_t want_m = std::max(
        m.reserved_micro, std::max<int64_t>(1, PriceTokens(m.model, want_t)));
    return std::make_pair(
        std::max<int64_t>(0, want_t - m.used_tokens) - m.RemainingTokens(),
        std::max<int64_t>(0, want_m - m.used_micro) - m.RemainingMicro());
  };
  // The first budget counter a grant of t tokens does not fit, or nullptr.
  auto short_of = [&](int64_t t) -> const Counter* {
    const auto [dt, dm] = need(t);
    for (const auto& [c, amount] : a.demand) {
      const Counter& k = counters_[c];
      if (k.kind != Counter::Kind::kBudget) continue;
      const int64_t n =
          budgets_[k.owner].metric == BudgetState::Metric::kTokens ? dt : dm;
      if (n > 0 && k.used + n > k.limit) return &k;
    }
    return nullptr;
  };
  if (const Counter* k = short_of(max_tokens)) {
    const BudgetState& b = budgets_[k->owner];
    const auto [dt, dm] = need(max_tokens);
    const int64_t n = b.metric == BudgetState::Metric::kTokens ? dt : dm;
    Status s(Code::kBudgetExceeded,
             "extending " + IdText(a.id) + " to " + FormatGrouped(max_tokens) +
                 " tokens needs " + BudgetAmount(b, n) + " more of the " +
                 BudgetLabel(b) + ", which has " +
                 BudgetAmount(b, std::max<Milli>(0, k->limit - k->used)) +
                 " unreserved");
    s.AddContext("budget", BudgetLabel(b));
    s.AddContext("resets_at", FormatTime(period_end_));
    // The largest grant that fits now (what fits only grows with less).
    int64_t lo = *m.max_tokens, hi = max_tokens;
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (short_of(mid) ? hi : lo) = mid;
    }
    if (lo > *m.max_tokens) {
      s.AddAlternative("extend to " + FormatGrouped(lo) +
                       " tokens instead: that fits now (send max_tokens: " +
                       std::to_string(lo) + ")");
    }
    s.AddAlternative(
        "try again when running work reports or releases, or after the "
        "budget resets at " +
        FormatTime(period_end_));
    return s;
  }
  const int64_t want_tokens = std::max(m.reserved_tokens, max_tokens);
  const int64_t want_micro =
      std::max(m.reserved_micro,
               std::max<int64_t>(1, PriceTokens(m.model, want_tokens)));
  const auto [dt, dm] = need(max_tokens);
  for (auto& [c, amount] : a.demand) {
    Counter& k = counters_[c];
    if (k.kind != Counter::Kind::kBudget) continue;
    const int64_t need =
        budgets_[k.owner].metric == BudgetState::Metric::kTokens ? dt : dm;
    k.used += need;
    amount += need;
  }
  m.reserved_tokens = want_tokens;
  m.reserved_micro = want_micro;
  const int64_t old = *m.max_tokens;
  m.max_tokens = max_tokens;
  if (m.used_tokens <= max_tokens) m.over_budget = false;
  Emit(EventType::kBudgetExtended, a,
       "token grant extended from " + FormatGrouped(old) + " to " +
           FormatGrouped(max_tokens));
  return Info(a);
}

Status EngineImpl::Pause(const Actor& actor) {
  OpScope op(this);
  if (paused_) return Status::Ok();
  paused_ = true;
  paused_by_ = actor.who;
  paused_reason_ = actor.why;
  EmitOp(EventType::kOverride,
         "paused: no new grants until resumed" +
             (actor.why.empty() ? "" : " (" + actor.why + ")"),
         actor.who);
  return Status::Ok();
}

Status EngineImpl::Resume(const Actor& actor) {
  OpScope op(this);
  if (!paused_) return Status::Ok();
  paused_ = false;
  paused_by_.clear();
  paused_reason_.clear();
  EmitOp(EventType::kOverride,
         "resumed: grants start again" +
             (actor.why.empty() ? "" : " (" + actor.why + ")"),
         actor.who);
  Dispatch();
  return Status::Ok();
}

Status EngineImpl::SetPriorityOverride(const std::string& product,
                                       std::optional<Level> level,
                                       const Actor& actor) {
  OpScope op(this);
  if (product.empty() || product.size() > 256) {
    return InvalidRequest("product must be a name of 1 to 256 bytes");
  }
  if (level) {
    priority_overrides_[product] = *level;
  } else if (!priority_overrides_.erase(product)) {
    return Status::Ok();
  }
  EmitOp(EventType::kOverride,
         level ? "priority of product " + product + " set to " +
                     LevelName(*level) +
                     (actor.why.empty() ? "" : " (" + actor.why + ")")
               : "priority override of product " + product + " removed",
         actor.who, product);
  auto pit = product_index_.find(product);
  if (!level || pit == product_index_.end()) return Status::Ok();
  std::vector<uint64_t> ids;
  for (uint32_t li : product_lanes_[pit->second]) {
    if (bands_[lanes_[li].band].level == *level) continue;
    for (const QKey& k : lanes_[li].members) ids.push_back(k.id);
  }
  for (uint64_t qid : ids) {
    Alloc& a = allocs_.at(qid);
    // Its parked victims stay parked behind it: it still has to start.
    const bool preempted_someone = a.preempted_someone;
    Dequeue(a);
    a.req.level = *level;
    a.req.priority_value = kNamedValue[static_cast<int>(*level)];
    Enqueue(a);
    a.preempted_someone = preempted_someone;
  }
  if (!ids.empty()) Dispatch();
  return Status::Ok();
}

Status EngineImpl::OverrideBreaker(const Actor& actor) {
  OpScope op(this);
  if (!config_.circuit_breaker.allow_override) {
    return Status(Code::kPermissionDenied,
                  "circuit_breaker.when_tripped.allow_override is false; the "
                  "breaker closes at the period reset (" +
                      FormatTime(period_end_) + ")");
  }
  if (!breaker_.open) return Conflict("the circuit breaker is not open");
  if (breaker_.overridden) return Status::Ok();
  breaker_.overridden = true;
  breaker_.override_by = actor.who;
  breaker_.override_reason = actor.why;
  // The period budgets still apply: say so when one is already spent.
  std::string spent;
  for (uint32_t g : global_budgets_) {
    if (g == UINT32_MAX) continue;
    const Counter& k = counters_[budgets_[g].counter];
    if (k.spent >= k.limit) {
      spent = "; the " + BudgetLabel(budgets_[g]) +
              " is spent, so it still refuses new work until its limit is "
              "raised";
    }
  }
  EmitOp(EventType::kOverride,
         "circuit breaker overridden: grants resume until the period resets "
         "at " +
             FormatTime(period_end_) +
             (actor.why.empty() ? "" : " (" + actor.why + ")") + spent,
         actor.who);
  Dispatch();
  return Status::Ok();
}

Status EngineImpl::RaiseLimits(std::optional<int64_t> max_tokens,
                               std::optional<double> max_cost_usd,
                               const Actor& actor) {
  OpScope op(this);
  if (!config_.circuit_breaker.allow_override) {
    return Status(Code::kPermissionDenied,
                  "circuit_breaker.when_tripped.allow_override is false; "
                  "limits change only in the configuration");
  }
  if (!max_tokens && !max_cost_usd) {
    return InvalidRequest("name max_tokens, max_cost_usd or both");
  }
  if (max_tokens && (*max_tokens < 0 || *max_tokens > kMaxTokenCount)) {
    return InvalidRequest("max_tokens must be a token count from 0 to " +
                          FormatGrouped(kMaxTokenCount) + ", got " +
                          FormatGrouped(*max_tokens));
  }
  if (max_cost_usd && (!std::isfinite(*max_cost_usd) || *max_cost_usd < 0 ||
                       *max_cost_usd > kMaxUsd)) {
    return InvalidRequest(
        "max_cost_usd must be a number of dollars from 0 to " +
        FormatNumber(kMaxUsd) + ", got " + FormatNumber(*max_cost_usd));
  }
  if (max_tokens && global_budgets_[kTokens] == UINT32_MAX) {
    return InvalidRequest(
        "max_tokens: daily_limits.max_tokens_total is not set, so there is "
        "no token limit to raise");
  }
  if (max_cost_usd && global_budgets_[kMicro] == UINT32_MAX) {
    return InvalidRequest(
        "max_cost_usd: daily_limits.max_cost_usd is not set, so there is no "
        "cost limit to raise");
  }
  std::string what;
  if (max_tokens) {
    counters_[budgets_[global_budgets_[kTokens]].counter].limit = *max_tokens;
    what = FormatGrouped(*max_tokens) + " tokens";
  }
  if (max_cost_usd) {
    counters_[budgets_[global_budgets_[kMicro]].counter].limit =
        ToMicro(*max_cost_usd);
    what += (what.empty() ? "" : " and ") + FormatUsd(*max_cost_usd);
  }
  EmitOp(EventType::kOverride,
         "limits set to " + what + " until the period resets at " +
             FormatTime(period_end_) +
             (actor.why.empty() ? "" : " (" + actor.why + ")"),
         actor.who);
  if (breaker_.open) {
    CloseBreaker();
    EmitOp(EventType::kCircuitClosed,
           "circuit breaker closed: limits raised by " +
               (actor.who.empty() ? std::string("an operator") : actor.who),
           actor.who);
  }
  EvaluateBreaker();
  CheckAlerts(nullptr);
  Dispatch();
  return Status::Ok();
}

// ---------------------------------------------------------------- reports

CostReport EngineImpl::Costs() const {
  CostReport r;
  r.time = now_;
  r.period = config_.daily_limits.period;
  r.time_zone = config_.daily_limits.time_zone;
  r.period_start = period_start_;
  r.period_end = period_end_;
  r.tokens_used = period_tokens_;
  r.cost_usd = ToUsd(period_micro_);
  for (const BudgetState& b : budgets_) {
    const Counter& k = counters_[b.counter];
    BudgetLine line;
    line.scope = b.scope == BudgetState::Scope::kGlobal    ? "global"
                 : b.scope == BudgetState::Scope::kProduct ? "product"
                                                           : "agent_type";
    line.name = b.name;
    const double pct =
        k.limit > 0 ? 100.0 * static_cast<double>(k.spent) / k.limit : 100.0;
    if (b.metric == BudgetState::Metric::kTokens) {
      line.token_limit = k.limit;
      line.tokens_used = k.spent;
      line.tokens_reserved = k.used - k.spent;
      line.percent_tokens = pct;
    } else {
      line.cost_limit_usd = ToUsd(k.limit);
      line.cost_used_usd = ToUsd(k.spent);
      line.cost_reserved_usd = ToUsd(k.used - k.spent);
      line.percent_cost = pct;
    }
    // One line per scope: merge the token and cost budgets of a name.
    auto same = std::find_if(
        r.budgets.begin(), r.budgets.end(), [&](const BudgetLine& l) {
          return l.scope == line.scope && l.name == line.name;
        });
    if (same == r.budgets.end()) {
      r.budgets.push_back(line);
    } else if (line.token_limit) {
      same->token_limit = line.token_limit;
      same->tokens_used = line.tokens_used;
      same->tokens_reserved = line.tokens_reserved;
      same->percent_tokens = line.percent_tokens;
    } else {
      same->cost_limit_usd = line.cost_limit_usd;
      same->cost_used_usd = line.cost_used_usd;
      same->cost_reserved_usd = line.cost_reserved_usd;
      same->percent_cost = line.percent_cost;
    }
    if (b.scope == BudgetState::Scope::kGlobal) {
      if (b.metric == BudgetState::Metric::kTokens) {
        r.token_limit = k.limit;
        r.tokens_reserved = k.used - k.spent;
        r.percent_tokens = pct;
      } else {
        r.cost_limit_usd = ToUsd(k.limit);
        r.cost_reserved_usd = ToUsd(k.used - k.spent);
        r.percent_cost = pct;
      }
    }
  }
  if (!r.token_limit || !r.cost_limit_usd) {
    // Without a global budget, what running work still holds in reserve.
    int64_t tokens = 0, micro = 0;
    for (const auto& [id, a] : allocs_) {
      if (!a.holding || !a.money) continue;
      tokens += a.money->RemainingTokens();
      micro += a.money->RemainingMicro();
    }
    if (!r.token_limit) r.tokens_reserved = tokens;
    if (!r.cost_limit_usd) r.cost_reserved_usd = ToUsd(micro);
  }
  r.burn_rate_usd_per_hour = BurnRate(true) / 1e6;
  r.burn_rate_tokens_per_hour = BurnRate(false);
  const double hours_left =
      static_cast<double>(std::max<int64_t>(0, (period_end_ - now_).count())) /
      3.6e6;
  r.projected_cost_usd = r.cost_usd + r.burn_rate_usd_per_hour * hours_left;
  r.projected_tokens = static_cast<int64_t>(
      std::llround(static_cast<double>(r.tokens_used) +
                   r.burn_rate_tokens_per_hour * hours_left));
  r.alerts = alerts_;
  auto lines = [&](const std::map<std::string, Spend>& map) {
    std::vector<SpendLine> out;
    for (const auto& [name, s] : map) {
      SpendLine l;
      l.name = name;
      l.tasks = s.tasks;
      l.tokens = s.tokens;
      l.cost_usd = ToUsd(s.micro);
      l.token_share = period_tokens_ > 0
                          ? static_cast<double>(s.tokens) /
                                static_cast<double>(period_tokens_)
                          : 0;
      out.push_back(l);
    }
    return out;
  };
  r.models = lines(spend_by_model_);
  std::map<std::string, Spend> by_product, by_type;
  for (size_t i = 0; i < spend_by_product_.size(); ++i) {
    const Spend& s = spend_by_product_[i];
    if (s.tasks || s.tokens || s.micro) by_product[products_[i].name] = s;
  }
  for (size_t i = 0; i < spend_by_type_.size(); ++i) {
    const Spend& s = spend_by_type_[i];
    if (s.tasks || s.tokens || s.micro) by_type[types_[i].name] = s;
  }
  r.products = lines(by_product);
  r.agent_types = lines(by_type);
  r.breaker = breaker_;
  if (r.breaker.open) r.breaker.closes_at = period_end_;
  r.paused = paused_;
  r.paused_by = paused_by_;
  r.paused_reason = paused_reason_;
  for (const auto& [product, level] : priority_overrides_) {
    r.priority_overrides.emplace_back(product, level);
  }
  return r;
}

MetricsReport EngineImpl::Metrics() const {
  MetricsReport r;
  r.time = now_;
  r.since = metrics_since_;
  const double span = static_cast<double>((now_ - metrics_since_).count());
  std::vector<double> busy = busy_agent_ms_;
  busy.resize(types_.size());
  for (const auto& [id, a] : allocs_) {
    if (!a.holding) continue;
    const Time from = std::max(a.granted_at, metrics_since_);
    busy[a.type] += static_cast<double>((now_ - from).count()) *
                    (static_cast<double>(a.req.agents) / 1000.0);
  }
  const double total_agents =
      static_cast<double>(
          counters_[resource_counter_[agents_resource_]].limit) /
      1000.0;
  for (const TypeState& t : types_) {
    const double limit_milli = static_cast<double>(counters_[t.counter].limit);
    const double limit = limit_milli >= static_cast<double>(kUnlimited)
                             ? total_agents
                             : limit_milli / 1000.0;
    MetricsReport::TypeUtilization u;
    u.agent_type = t.name;
    u.limit = limit;
    const double b = busy[&t - types_.data()];
    u.utilization = span > 0 && limit > 0 ? b / (limit * span) : 0;
    if (b == 0 && t.queued == 0 && !config_.per_type_limits.count(t.name)) {
      continue;  // a type nobody used this period
    }
    r.agent_utilization.push_back(u);
  }
  std::sort(
      r.agent_utilization.begin(), r.agent_utilization.end(),
      [](const auto& x, const auto& y) { return x.agent_type < y.agent_type; });
  r.tasks_completed = tasks_completed_;
  if (tasks_completed_ > 0) {
    r.cost_per_task = ToUsd(tasks_completed_micro_) / tasks_completed_;
    r.tokens_per_task =
        static_cast<double>(tasks_completed_tokens_) / tasks_completed_;
  }
  if (tasks_completed_micro_ > 0) {
    r.tasks_per_dollar = tasks_completed_ / ToUsd(tasks_completed_micro_);
  }
  r.tasks_started = tasks_started_;
  if (tasks_started_ > 0) {
    r.avg_wait_minutes = wait_ms_sum_ / tasks_started_ / 60000.0;
    r.tasks_that_waited = static_cast<double>(tasks_waited_) /
                          static_cast<double>(tasks_started_);
  }
  r.max_wait_minutes = wait_ms_max_ / 60000.0;
  for (const auto& [type, l] : learned_) {
    LearnedEstimate e;
    e.agent_type = type;
    e.samples = l.samples;
    e.token_ratio = l.token_ratio;
    e.minute_ratio = l.minute_ratio;
    e.last_estimated_tokens = l.last_est_tokens;
    e.last_actual_tokens = l.last_actual_tokens;
    e.last_estimated_minutes = l.last_est_minutes;
    e.last_actual_minutes = l.last_actual_minutes;
    e.accuracy = l.accuracy;
    r.estimates.push_back(e);
  }
  std::sort(
      r.estimates.begin(), r.estimates.end(),
      [](const auto& x, const auto& y) { return x.agent_type < y.agent_type; });
  // Plain recommendations from the figures above.
  const double target = config_.optimization_targets.utilization_target / 100;
  const bool enough_time = span >= 30 * 60000.0;
  for (const auto& u : r.agent_utilization) {
    const std::string pct = FormatNumber(std::round(u.utilization * 100)) + "%";
    if (!enough_time) break;
    if (u.utilization < target * 0.6) {
      r.recommendations.push_back("Consider reducing the " + u.agent_type +
                                  " limit (" + pct + " busy: underutilized)");
    } else if (u.utilization > 0.95) {
      r.recommendations.push_back(
          u.agent_type + " agents are saturated (" + pct +
          " busy): raise the limit if the queue waits too long");
    } else {
      r.recommendations.push_back(
          u.agent_type + " agents at good utilization (" + pct + " busy)");
    }
  }
  const double normal_wait =
      config_.levels[static_cast<int>(Level::kNormal)].max_wait_minutes;
  if (tasks_started_ > 0) {
    if (r.avg_wait_minutes > normal_wait / 2) {
      r.recommendations.push_back(
          "Queue wait times are long (average " +
          FormatNumber(std::round(r.avg_wait_minutes)) +
          " min): raise concurrency limits or spread work over the day");
    } else {
      r.recommendations.push_back("Queue wait times acceptable (average " +
                                  FormatNumber(std::round(r.avg_wait_minutes)) +
                                  " min)");
    }
  }
  for (const auto& e : r.estimates) {
    if (e.samples >= 3 && (e.token_ratio > 1.25 || e.token_ratio < 0.8)) {
      r.recommendations.push_back(
          e.agent_type + " estimates are off: actual tokens run at " +
          FormatNumber(std::round(e.token_ratio * 100) / 100) +
          "x the estimate (reservations already use this ratio)");
    }
  }
  if (period_micro_ > 0 && global_budgets_[kMicro] != UINT32_MAX) {
    const CostReport c = Costs();
    if (c.cost_limit_usd && c.projected_cost_usd > *c.cost_limit_usd) {
      r.recommendations.push_back(
          "Projected spend " + FormatUsd(c.projected_cost_usd) +
          " exceeds the " + BudgetPeriodName(config_.daily_limits.period) +
          " limit of " + FormatUsd(*c.cost_limit_usd) +
          ": use cheaper models for routine tasks");
    }
  }
  return r;
}

}  // namespace qm
