// Engine::Reconfigure: a config reload applied to running state (limits and
// capacities at once, resources and budgets kept by name, all or nothing).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"
#include "tests/core/random_ops.h"

namespace qm {
namespace {

using std::chrono::hours;
using testing_util::Harness;
using testing_util::Req;

Config Base(double agents = 2) {
  Config c = Config::Defaults();
  c.resources[0].capacity = agents;
  c.allocation_limits.max_agents_per_workflow.reset();
  return c;
}

AllocationRequest Long(std::string wf, std::string type = "dev",
                       std::string product = "") {
  AllocationRequest r = Req(std::move(wf), std::move(type));
  r.product = std::move(product);
  r.ttl = hours(12);
  return r;
}

std::string Granted(Harness& h, AllocationRequest r) {
  auto a = h.engine->Allocate(r);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (!a.ok()) return "";
  EXPECT_EQ(a->allocation.status, AllocStatus::kActive);
  return a->allocation.id;
}

std::string Queued(Harness& h, AllocationRequest r) {
  auto a = h.engine->Allocate(r);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (!a.ok()) return "";
  EXPECT_EQ(a->allocation.status, AllocStatus::kQueued);
  return a->allocation.id;
}

void ExpectConsistent(Harness& h, const Config& config) {
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  // The state now lives under the new config: it saves and restores there.
  const std::string state = h.engine->SaveState();
  auto restored = Engine::Restore(config, &h.clock, nullptr, state);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ((*restored)->StateDigest(), h.engine->StateDigest());
}

const Actor kOperator{"ops", "more room"};

TEST(ReconfigureTest, RaisedCapacityGrantsTheQueueAtOnce) {
  Harness h(Base(2));
  Granted(h, Long("a"));
  Granted(h, Long("b"));
  const std::string c = Queued(h, Long("c"));
  Config next = Base(3);
  auto r = h.engine->Reconfigure(next, kOperator);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->changes.size(), 1u);
  EXPECT_EQ(r->changes[0], "resources.agents.capacity: 2 -> 3");
  EXPECT_EQ(h.StatusOf(c), AllocStatus::kActive);
  auto reload = std::find_if(h.events.begin(), h.events.end(), [](auto& e) {
    return e.type == EventType::kConfigReloaded;
  });
  ASSERT_NE(reload, h.events.end());
  EXPECT_EQ(reload->actor, "ops");
  EXPECT_NE(reload->reason.find("resources.agents.capacity: 2 -> 3"),
            std::string::npos)
      << reload->reason;
  // The grant follows the reload event.
  const Event* grant = h.Find(EventType::kGranted, c);
  ASSERT_NE(grant, nullptr);
  EXPECT_GT(grant->seq, reload->seq);
  EXPECT_EQ(h.engine->GetSnapshot().resources[0].capacity, 3);
  ExpectConsistent(h, next);
}

TEST(ReconfigureTest, LimitBelowWhatIsHeldIsRefusedAndChangesNothing) {
  Harness h(Base(3));
  Granted(h, Long("a"));
  Granted(h, Long("b"));
  Granted(h, Long("c"));
  const std::string before = h.engine->StateDigest();
  const size_t events = h.events.size();
  auto r = h.engine->Reconfigure(Base(2), kOperator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kConflict);
  EXPECT_NE(r.status().message().find("agents"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("below the 3"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(h.engine->StateDigest(), before);
  EXPECT_EQ(h.events.size(), events);
  EXPECT_EQ(h.engine->config().resources[0].capacity, 3);
  // Down to exactly what is held is fine: nothing new fits.
  ASSERT_TRUE(h.engine->Reconfigure(Base(3), kOperator).ok());
  auto equal = h.engine->Reconfigure(Base(3), kOperator);
  ASSERT_TRUE(equal.ok());
  EXPECT_TRUE(equal->changes.empty());
  EXPECT_EQ(h.events.size(), events);  // no change, no event
}

TEST(ReconfigureTest, PerTypeAndProductLimitsFollowTheConfig) {
  Config c = Base(10);
  c.per_type_limits["reviewer"] = 1;
  c.products["web"].max_concurrent_agents = 1;
  Harness h(c);
  Granted(h, Long("a", "reviewer"));
  const std::string second = Queued(h, Long("b", "reviewer"));
  Granted(h, Long("c", "dev", "web"));
  const std::string web2 = Queued(h, Long("d", "dev", "web"));
  // A new product appears in the config with a limit of its own.
  c.per_type_limits["reviewer"] = 2;
  c.products["web"].max_concurrent_agents = 2;
  c.products["mobile"].max_concurrent_agents = 1;
  auto r = h.engine->Reconfigure(c, kOperator);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(h.StatusOf(second), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(web2), AllocStatus::kActive);
  Granted(h, Long("e", "dev", "mobile"));
  Queued(h, Long("f", "dev", "mobile"));
  ExpectConsistent(h, c);
}

TEST(ReconfigureTest, ResourcesAreKeptByNameAddedAndRemoved) {
  Config c = Base(4);
  Harness h(c);
  AllocationRequest with_cpu = Long("a");
  with_cpu.resources = {{"cpu_cores", 2}};
  const std::string a = Granted(h, with_cpu);
  // A resource in use cannot go.
  Config no_cpu = c;
  no_cpu.resources.erase(no_cpu.resources.begin() + 2);  // cpu_cores
  auto refused = h.engine->Reconfigure(no_cpu, kOperator);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kConflict);
  EXPECT_NE(refused.status().message().find("cpu_cores"), std::string::npos)
      << refused.status().message();
  // Removing an unused one, adding a new one and reordering: the running
  // allocation keeps its cpu_cores.
  Config next = c;
  next.resources.erase(next.resources.begin() + 4);  // storage_gb
  next.resources.insert(next.resources.begin() + 1, {"gpu", 2, false});
  std::swap(next.resources[2], next.resources[3]);
  auto r = h.engine->Reconfigure(next, kOperator);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(std::find(r->changes.begin(), r->changes.end(),
                      "resources.gpu: added, capacity 2"),
            r->changes.end());
  EXPECT_NE(std::find(r->changes.begin(), r->changes.end(),
                      "resources.storage_gb: removed"),
            r->changes.end());
  auto info = h.engine->Get(a);
  ASSERT_TRUE(info.ok());
  bool has_cpu = false;
  for (const auto& [name, amount] : info->resources) {
    if (name == "cpu_cores") has_cpu = amount == 2;
  }
  EXPECT_TRUE(has_cpu);
  AllocationRequest gpu = Long("g");
  gpu.resources = {{"gpu", 2}};
  Granted(h, gpu);
  Queued(h, gpu);
  AllocationRequest storage = Long("s");
  storage.resources = {{"storage_gb", 1}};
  EXPECT_EQ(h.engine->Allocate(storage).status().code(), Code::kInvalidRequest);
  ExpectConsistent(h, next);
  // The capacity left of cpu_cores still counts the running one.
  for (const auto& res : h.engine->GetSnapshot().resources) {
    if (res.name == "cpu_cores") {
      EXPECT_EQ(res.allocated, 2);
    }
  }
  ASSERT_TRUE(h.engine->Release(a).ok());
  ExpectConsistent(h, next);
}

TEST(ReconfigureTest, QueuedRequestForARemovedResourceBlocksTheRemoval) {
  Config c = Base(4);
  c.resources.push_back({"license", 1, false});
  Harness h(c);
  ASSERT_TRUE(h.engine->Pause(kOperator).ok());  // every request queues
  AllocationRequest lic = Long("a");
  lic.resources = {{"license", 1}};
  const std::string waiting = Queued(h, lic);
  Config without = c;
  without.resources.pop_back();
  auto r = h.engine->Reconfigure(without, kOperator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kConflict);
  EXPECT_NE(r.status().message().find(waiting), std::string::npos)
      << r.status().message();
  ASSERT_TRUE(h.engine->Cancel(waiting).ok());
  ASSERT_TRUE(h.engine->Reconfigure(without, kOperator).ok());
  ExpectConsistent(h, without);
}

Config MoneyBase() {
  Config c = Base(10);
  c.pricing.models["sonnet"] = {3, 15, std::nullopt};
  c.pricing.default_model = "sonnet";
  c.pricing.estimate_output_share = 0;
  c.daily_limits.max_tokens_total = 1000000;
  return c;
}

UsageReport Tokens(int64_t n) {
  UsageReport u;
  u.tokens = n;
  return u;
}

TEST(ReconfigureTest, BudgetsKeepTheirSpendAndNewOnesStartFromThePeriod) {
  Config c = MoneyBase();
  Harness h(c);
  AllocationRequest r = Long("a", "dev", "web");
  r.estimated_tokens = 100000;
  const std::string a = Granted(h, r);
  ASSERT_TRUE(h.engine->Release(a, Tokens(300000)).ok());
  const std::string running = Granted(h, r);  // reserves on the budget
  // Raise the global budget, add a product budget for web.
  Config next = c;
  next.daily_limits.max_tokens_total = 2000000;
  next.products["web"].token_budget_daily = 350000;
  auto result = h.engine->Reconfigure(next, kOperator);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  CostReport costs = h.engine->Costs();
  EXPECT_EQ(costs.token_limit, 2000000);
  EXPECT_EQ(costs.tokens_used, 300000);
  bool found = false;
  for (const BudgetLine& b : costs.budgets) {
    if (b.scope == "product" && b.name == "web") {
      found = true;
      EXPECT_EQ(b.token_limit, 350000);
      EXPECT_EQ(b.tokens_used, 300000);  // this period's spend of web
    }
  }
  EXPECT_TRUE(found);
  ExpectConsistent(h, next);
  // 300k spent of 350k: another 100k request of web does not fit now.
  auto over = h.engine->Allocate(r);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kBudgetExceeded);
  EXPECT_NE(over.status().message().find("product web"), std::string::npos);
  // Removing the product budget again lets it through; the running
  // allocation releases normally.
  auto back = h.engine->Reconfigure(c, kOperator);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const std::string third = Granted(h, r);
  ASSERT_TRUE(h.engine->Release(third, Tokens(0)).ok());
  ASSERT_TRUE(h.engine->Release(running, Tokens(50000)).ok());
  EXPECT_EQ(h.engine->Costs().tokens_used, 350000);
  ExpectConsistent(h, c);
}

TEST(ReconfigureTest, RaisedLimitsSurviveAReloadOfTheSameBudget) {
  Config c = MoneyBase();
  Harness h(c);
  ASSERT_TRUE(h.engine->RaiseLimits(1500000, std::nullopt, kOperator).ok());
  Config next = c;
  next.daily_limits.max_tokens_total = 1200000;
  ASSERT_TRUE(h.engine->Reconfigure(next, kOperator).ok());
  // 1.2M configured plus the 0.5M raised this period.
  EXPECT_EQ(h.engine->Costs().token_limit, 1700000);
  ExpectConsistent(h, next);
}

TEST(ReconfigureTest, ABadConfigIsRefusedAndChangesNothing) {
  Harness h(Base(2));
  Granted(h, Long("a"));
  const std::string before = h.engine->StateDigest();
  Config bad = Base(2);
  bad.resources[0].capacity = -1;
  auto r = h.engine->Reconfigure(bad, kOperator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("capacity"), std::string::npos);
  EXPECT_EQ(h.engine->StateDigest(), before);
}

TEST(ReconfigureTest, TheSameCallsGiveTheSameStateAndEvents) {
  auto run = [](Harness& h) {
    Granted(h, Long("a"));
    Granted(h, Long("b"));
    const std::string normal = Queued(h, Long("c"));
    AllocationRequest low = Long("d");
    low.priority = "low";
    const std::string favoured = Queued(h, low);
    Config next = Base(3);
    next.levels[static_cast<int>(Level::kLow)].weight = 0.9;
    auto r = h.engine->Reconfigure(next, kOperator);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    // Low now weighs more than normal: it takes the one new slot.
    EXPECT_EQ(h.StatusOf(favoured), AllocStatus::kActive);
    EXPECT_EQ(h.StatusOf(normal), AllocStatus::kQueued);
    h.clock.Advance(hours(1));
    h.engine->Tick();
  };
  Harness one(Base(2)), two(Base(2));
  run(one);
  run(two);
  EXPECT_EQ(one.engine->StateDigest(), two.engine->StateDigest());
  ASSERT_EQ(one.events.size(), two.events.size());
  for (size_t i = 0; i < one.events.size(); ++i) {
    EXPECT_EQ(one.events[i].seq, two.events[i].seq);
    EXPECT_EQ(one.events[i].reason, two.events[i].reason);
  }
}

// A random config near RandomBudgetConfig: capacities, limits, budgets,
// resources, weights and policies moved up and down.
Config RandomVariant(testing_util::RandomOps& ops) {
  Config c = testing_util::RandomBudgetConfig();
  c.resources[0].capacity = ops.Int(6, 16);
  c.per_type_limits["t0"] = ops.Int(1, 4);
  if (ops.Chance(0.5)) c.per_type_limits["t3"] = ops.Int(1, 3);
  if (ops.Chance(0.3)) c.per_type_limits.erase("t1");
  c.products["p0"].max_concurrent_agents = ops.Int(2, 8);
  c.products["p1"].share = ops.Int(1, 4);
  if (ops.Chance(0.4)) c.products["p2"].token_budget_daily.reset();
  if (ops.Chance(0.4)) c.products["p1"].cost_budget_daily_usd = ops.Int(1, 5);
  if (ops.Chance(0.3)) c.daily_limits.max_cost_usd.reset();
  c.daily_limits.max_tokens_total = ops.Int(1, 6) * 1000000;
  if (ops.Chance(0.3)) c.daily_limits.alert_at_percent = {75};
  if (ops.Chance(0.3)) c.daily_limits.per_agent_type.erase("t4");
  if (ops.Chance(0.5)) {
    c.resources.erase(std::remove_if(c.resources.begin(), c.resources.end(),
                                     [](const ResourceSpec& r) {
                                       return r.name == "tool.web";
                                     }),
                      c.resources.end());
  }
  if (ops.Chance(0.2)) {
    c.resources.erase(std::remove_if(c.resources.begin(), c.resources.end(),
                                     [](const ResourceSpec& r) {
                                       return r.name == "tool.bash";
                                     }),
                      c.resources.end());
  }
  if (ops.Chance(0.3)) c.resources.push_back({"license", 2, false});
  if (ops.Chance(0.3)) {
    c.allocation_limits.max_agents_per_workflow = ops.Int(2, 6);
  }
  c.levels[static_cast<int>(Level::kLow)].weight = ops.Int(1, 9) / 10.0;
  c.scheduling.weights.wait = ops.Int(0, 4) / 10.0;
  if (ops.Chance(0.2)) {
    c.conflicts.file_locking.enforcement = LockEnforcement::kAdvisory;
  }
  return c;
}

TEST(ReconfigureTest, RandomReloadsAmongRandomOperationsKeepEveryInvariant) {
  int applied = 0, refused = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    Harness h(testing_util::RandomBudgetConfig());
    testing_util::RandomOps ops(seed, /*locks=*/true);
    Config current = testing_util::RandomBudgetConfig();
    std::vector<std::string> ids;
    for (int step = 0; step < 1500; ++step) {
      const int kind = ops.Int(0, 99);
      if (kind < 45) {
        auto r = h.engine->Allocate(ops.Request());
        if (r.ok()) ids.push_back(r->allocation.id);
      } else if (kind < 75 && !ids.empty()) {
        UsageReport u;
        u.tokens = ops.Int(0, 100000);
        (void)h.engine->Release(ids[ops.Int(0, int(ids.size()) - 1)], u);
      } else if (kind < 85) {
        h.clock.Advance(std::chrono::minutes(ops.Int(0, 20)));
        h.engine->Tick();
      } else if (kind < 97) {
        Config next = RandomVariant(ops);
        const std::string before = h.engine->StateDigest();
        auto r = h.engine->Reconfigure(next, Actor{"fuzz", ""});
        if (r.ok()) {
          ++applied;
          current = next;
        } else {
          ++refused;
          ASSERT_EQ(r.status().code(), Code::kConflict)
              << "seed " << seed << " step " << step << ": "
              << r.status().ToString();
          ASSERT_EQ(h.engine->StateDigest(), before);
        }
      } else {
        (void)h.engine->Cancel(
            ids.empty() ? "alloc_1" : ids[ops.Int(0, int(ids.size()) - 1)]);
      }
      Status inv = h.engine->CheckInvariants();
      ASSERT_TRUE(inv.ok())
          << "seed " << seed << " step " << step << ": " << inv.ToString();
      if (step % 100 == 0) {
        auto restored =
            Engine::Restore(current, &h.clock, nullptr, h.engine->SaveState());
        ASSERT_TRUE(restored.ok()) << "seed " << seed << " step " << step
                                   << ": " << restored.status().ToString();
        ASSERT_EQ((*restored)->StateDigest(), h.engine->StateDigest());
      }
    }
  }
  // Both outcomes were exercised, many times.
  std::printf("reloads applied %d, refused %d\n", applied, refused);
  EXPECT_GT(applied, 200);
  EXPECT_GT(refused, 20);
}

}  // namespace
}  // namespace qm
