// Random engine inputs shared by the randomised tests (invariants_test,
// state_test): a generator of requests, valid and invalid, and the small
// config they are meant for, where limits are hit all the time.
#ifndef QM_TESTS_CORE_RANDOM_OPS_H_
#define QM_TESTS_CORE_RANDOM_OPS_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "qm/config.h"
#include "qm/types.h"

namespace qm::testing_util {

// Random numbers and requests from a seed (deterministic).
class RandomOps {
 public:
  explicit RandomOps(uint64_t seed, bool locks = false)
      : rng_(seed), locks_(locks) {}

  int Int(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  AllocationRequest Request() {
    AllocationRequest r;
    r.workflow_id = "wf" + std::to_string(Int(0, 30));
    r.product = "p" + std::to_string(Int(0, 3));
    r.agent_type = "t" + std::to_string(Int(0, 5));
    static const char* kPriorities[] = {
        "critical", "high", "normal", "low", "medium", "95", "50", "10", ""};
    r.priority = kPriorities[Int(0, 8)];
    r.resources.push_back({"agents", Int(0, 3)});
    if (Chance(0.5)) r.resources.push_back({"cpu_cores", Int(0, 8) * 0.25});
    if (Chance(0.3)) r.resources.push_back({"memory_gb", Int(0, 12) * 0.5});
    if (Chance(0.2)) r.resources.push_back({"tool.bash", Int(0, 4)});
    if (Chance(0.3)) r.blocks = Int(0, 5);
    if (Chance(0.3)) r.ttl = std::chrono::minutes(Int(1, 90));
    if (Chance(0.2)) r.requeue_on_preempt = true;
    if (Chance(0.1)) r.preemptible = false;
    if (Chance(0.05)) r.idempotency_key = "k" + std::to_string(Int(0, 20));
    if (Chance(0.4)) r.estimated_tokens = Int(0, 200000);
    if (Chance(0.3)) r.estimated_minutes = Int(0, 120);
    if (Chance(0.1)) r.model = Chance(0.9) ? "haiku" : "gpt-unknown";
    if (Chance(0.1)) r.wait_for_budget = true;
    if (locks_) {
      // A small tree, so that locks meet often: directories, files, globs.
      static const char* kPaths[] = {"src",          "src/a.cc", "src/b.cc",
                                     "src/lib/x.h",  "docs",     "docs/r.md",
                                     "src/**/*.h",   "*.md",     ".",
                                     "/ws/src/a.cc", "src/*.cc", "lib"};
      for (int i = Int(0, 3); i > 0; --i) {
        const std::string p = kPaths[Int(0, 11)];
        (Chance(0.6) ? r.exclusive_access : r.shared_access).push_back(p);
      }
      if (Chance(0.1)) {
        r.conflict_avoidance.push_back("wf" + std::to_string(Int(0, 30)));
      }
      if (Chance(0.1)) r.reservation_id = "res_" + std::to_string(Int(1, 40));
      if (Chance(0.03)) r.exclusive_access.push_back("../outside");
      if (Chance(0.02)) r.shared_access.push_back(std::string("a\0b", 3));
    }
    // Make some of them invalid.
    switch (Int(0, 30)) {
      case 0:
        r.workflow_id.clear();
        break;
      case 1:
        r.resources.push_back({"cpu_cores", -1});
        break;
      case 2:
        r.resources.push_back({"memory_gb", std::nan("")});
        break;
      case 3:
        r.resources.push_back({"unknown", 1});
        break;
      case 4:
        r.priority = "urgent";
        break;
      case 5:
        r.resources = {{"agents", 1.5}};
        break;
      case 6:
        r.product = std::string(5000, 'p');
        break;
      case 7:
        r.blocks = 50;
        break;
      default:
        break;
    }
    return r;
  }

  std::mt19937_64 rng_;
  bool locks_ = false;
};

// 12 agents, three capped agent types, two capped products, at most 4
// agents per workflow and a short history.
inline Config RandomConfig() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 12;
  c.per_type_limits = {{"t0", 2}, {"t1", 3}, {"t2", 4}};
  c.products["p0"].max_concurrent_agents = 5;
  c.products["p1"].max_concurrent_agents = 8;
  c.allocation_limits.max_agents_per_workflow = 4;
  c.scheduling.history_limit = 200;
  return c;
}

// RandomConfig with everything money adds: prices, rules, per-task and
// period budgets (small enough to be hit all the time), alerts and the
// breaker, and high requests that preempt.
inline Config RandomBudgetConfig() {
  Config c = RandomConfig();
  c.pricing.models["sonnet"] = {3, 15, std::nullopt};
  c.pricing.models["haiku"] = {0.25, 1.25, std::nullopt};
  c.pricing.default_model = "sonnet";
  c.model_rules = {{"task.priority == critical", "sonnet", "haiku"},
                   {"task.estimated_minutes < 30", "haiku", ""}};
  c.token_budgets.per_type = {{"t0", 50000}, {"t1", 80000}};
  c.token_budgets.default_budget = 20000;
  c.daily_limits.max_tokens_total = 3000000;
  c.daily_limits.max_cost_usd = 8;
  c.daily_limits.alert_at_percent = {50, 90};
  c.products["p2"].token_budget_daily = 400000;
  c.products["p3"].cost_budget_daily_usd = 1;
  c.daily_limits.per_agent_type["t4"] = {300000, std::nullopt};
  c.circuit_breaker.trip_conditions = {"percent_cost_used >= 95"};
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  return c;
}

// Preemption from two levels with no grace period: victims are taken back
// at once and re-queued.
inline Config RandomEagerPreemptionConfig() {
  Config c = RandomConfig();
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  c.auto_release.grace_period = Duration(0);
  return c;
}

// For requests with locks (RandomOps(seed, true)): a workspace root,
// priority-based lock preemption, an advisory product.
inline Config RandomLockConfig() {
  Config c = RandomConfig();
  c.conflicts.workspace_root = "/ws";
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.conflicts.per_product["p3"].enforcement = LockEnforcement::kAdvisory;
  return c;
}

// For requests with locks and reservations whose windows preempt running
// work when they open short (reservations.preempt_running).
inline Config RandomPreemptingReservationConfig() {
  Config c = RandomConfig();
  c.conflicts.workspace_root = "/ws";
  c.reservations.preempt_running = true;
  return c;
}

}  // namespace qm::testing_util

#endif  // QM_TESTS_CORE_RANDOM_OPS_H_
