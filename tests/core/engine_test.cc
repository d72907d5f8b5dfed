// Engine behaviour: the seed 001 examples, limits, queueing without
// head-of-line blocking, preemption, leases, idempotency and bad input.
#include "qm/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using namespace std::chrono_literals;
using testing_util::Harness;
using testing_util::Req;

Config Seed001Config() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 5;  // agents: max_concurrent.total
  c.per_type_limits = {{"backend-engineer", 2}, {"frontend-engineer", 2}};
  return c;
}

TEST(EngineTest, Seed001ConcurrencyExampleStartsFourAndQueuesTheThirdBackend) {
  Harness h(Seed001Config());
  std::vector<std::string> ids;
  for (const char* type :
       {"backend-engineer", "backend-engineer", "backend-engineer",
        "frontend-engineer", "frontend-engineer"}) {
    auto r = h.engine->Allocate(Req("wf", type));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ids.push_back(r->allocation.id);
  }
  EXPECT_EQ(h.StatusOf(ids[0]), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(ids[1]), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(ids[2]), AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(ids[3]), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(ids[4]), AllocStatus::kActive);
  auto queued = h.engine->Get(ids[2]);
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->reason_queued, "max backend-engineer (2) already running");
  ASSERT_TRUE(queued->expected_start.has_value());
  Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.active, 4);
  EXPECT_EQ(s.queued, 1);

  h.clock.Advance(10min);
  ASSERT_TRUE(h.engine->Release(ids[0]).ok());
  EXPECT_EQ(h.StatusOf(ids[2]), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(EngineTest, Seed001ScoringExampleScoresExactlyAndRunsTaskOneFirst) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  AllocationRequest busy = Req("busy", "any");
  busy.ttl = std::chrono::hours(3);
  auto blocker = h.engine->Allocate(busy);
  ASSERT_EQ(blocker->allocation.status, AllocStatus::kActive);
  // Queue the three tasks so that at t=120m they have waited 45, 5 and 120
  // minutes, blocking 2, 0 and 1 of 10 tasks.
  AllocationRequest t3 = Req("t3", "any", "low");
  t3.blocks = 1;
  auto r3 = h.engine->Allocate(t3);
  h.clock.Advance(75min);
  AllocationRequest t1 = Req("t1", "any", "normal");
  t1.blocks = 2;
  auto r1 = h.engine->Allocate(t1);
  h.clock.Advance(40min);
  AllocationRequest t2 = Req("t2", "any", "high");
  t2.blocks = 0;
  auto r2 = h.engine->Allocate(t2);
  h.clock.Advance(5min);
  h.engine->Tick();

  auto queue = h.engine->Queue();
  ASSERT_EQ(queue.size(), 3u);
  EXPECT_EQ(queue[0].id, r1->allocation.id);
  EXPECT_NEAR(queue[0].score, 0.515, 1e-9);
  EXPECT_EQ(queue[1].id, r2->allocation.id);
  EXPECT_NEAR(queue[1].score, 0.475, 1e-9);
  EXPECT_EQ(queue[2].id, r3->allocation.id);
  EXPECT_NEAR(queue[2].score, 0.295, 1e-9);

  h.events.clear();
  ASSERT_TRUE(h.engine->Release(blocker->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(r1->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(r2->allocation.id), AllocStatus::kQueued);
  const Event* grant = h.Find(EventType::kGranted, r1->allocation.id);
  ASSERT_NE(grant, nullptr);
  ASSERT_TRUE(grant->score.has_value());
  EXPECT_NEAR(*grant->score, 0.515, 1e-9);
}

TEST(EngineTest, LowerScoredRequestStartsOnResourcesTheHigherIsNotWaitingFor) {
  Harness h(Seed001Config());
  h.engine->Allocate(Req("a", "backend-engineer"));
  h.engine->Allocate(Req("b", "backend-engineer"));
  auto waiting = h.engine->Allocate(Req("c", "backend-engineer", "high"));
  ASSERT_EQ(waiting->allocation.status, AllocStatus::kQueued);
  // A low-priority frontend request does not need backend slots.
  auto front = h.engine->Allocate(Req("d", "frontend-engineer", "low"));
  EXPECT_EQ(front->allocation.status, AllocStatus::kActive);
}

TEST(EngineTest, LowerScoredRequestDoesNotTakeWhatAHigherOneWaitsFor) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 10;
  Harness h(c);
  AllocationRequest big = Req("big", "x", "high");
  big.resources = {{"cpu_cores", 6}};
  AllocationRequest hold = Req("hold", "x", "normal");
  hold.resources = {{"cpu_cores", 4}};
  auto held = h.engine->Allocate(hold);
  ASSERT_EQ(held->allocation.status, AllocStatus::kActive);
  auto waiting = h.engine->Allocate(big);  // needs 6 of the 4 free
  ASSERT_EQ(waiting->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(waiting->allocation.reason_queued,
            "cpu_cores: needs 6, 4 of 8 free");
  AllocationRequest small = Req("small", "x", "low");
  small.resources = {{"cpu_cores", 1}};
  auto s = h.engine->Allocate(small);
  EXPECT_EQ(s->allocation.status, AllocStatus::kQueued);
  EXPECT_NE(s->allocation.reason_queued.find("waiting behind higher-scored " +
                                             waiting->allocation.id),
            std::string::npos)
      << s->allocation.reason_queued;
  ASSERT_TRUE(h.engine->Release(held->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(waiting->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(s->allocation.id), AllocStatus::kActive);
}

TEST(EngineTest, CriticalNeverWaitsBehindLowerLevelsEvenLongWaitingOnes) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  c.levels[static_cast<int>(Level::kCritical)].preempt_lower = false;
  c.allocation_limits.max_duration = std::chrono::hours(48);
  Harness h(c);
  AllocationRequest long_run = Req("busy", "x", "critical");
  long_run.ttl = std::chrono::hours(48);
  auto busy = h.engine->Allocate(long_run);
  auto low = h.engine->Allocate(Req("low", "x", "low"));
  h.clock.Advance(24h);  // low's wait factor is now 6
  auto crit = h.engine->Allocate(Req("crit", "x", "critical"));
  ASSERT_EQ(crit->allocation.status, AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->Release(busy->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(crit->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(low->allocation.id), AllocStatus::kQueued);
}

TEST(EngineTest, PreemptsLowestPriorityMostRecentFirstAndOnlyAsManyAsNeeded) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 3;
  c.scheduling.preemption_grace = 30s;
  Harness h(c);
  auto normal = h.engine->Allocate(Req("n", "x", "normal"));
  h.clock.Advance(1min);
  auto low_old = h.engine->Allocate(Req("l1", "x", "low"));
  h.clock.Advance(1min);
  AllocationRequest lr = Req("l2", "x", "low");
  lr.requeue_on_preempt = true;
  auto low_new = h.engine->Allocate(lr);
  const Time low_new_queued = low_new->allocation.queued_at;
  h.clock.Advance(1min);
  auto crit = h.engine->Allocate(Req("c", "x", "critical"));
  ASSERT_EQ(crit->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(low_new->allocation.id), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(low_old->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(normal->allocation.id), AllocStatus::kActive);
  ASSERT_NE(h.Find(EventType::kPreemptionNotice, low_new->allocation.id),
            nullptr);
  // Within the grace period nothing is taken back.
  h.clock.Advance(29s);
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(crit->allocation.id), AllocStatus::kQueued);
  h.clock.Advance(1s);
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(crit->allocation.id), AllocStatus::kActive);
  // The victim asked to be re-queued, keeping its original queue time.
  auto victim = h.engine->Get(low_new->allocation.id);
  EXPECT_EQ(victim->status, AllocStatus::kQueued);
  EXPECT_EQ(victim->queued_at, low_new_queued);
  ASSERT_NE(h.Find(EventType::kRequeued, low_new->allocation.id), nullptr);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(EngineTest, PreemptedHolderThatReleasesEarlyHandsOverAtOnce) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  auto low = h.engine->Allocate(Req("l", "x", "low"));
  auto crit = h.engine->Allocate(Req("c", "x", "critical"));
  ASSERT_EQ(h.StatusOf(low->allocation.id), AllocStatus::kPreempted);
  auto rel = h.engine->Release(low->allocation.id);
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  EXPECT_EQ(rel->status, AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(crit->allocation.id), AllocStatus::kActive);
}

TEST(EngineTest, NoPreemptionWhenVictimsCannotMakeRoom) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 2;
  Harness h(c);
  // Only the low one may be preempted; one slot is not enough.
  auto high = h.engine->Allocate(Req("h", "x", "critical"));
  auto low = h.engine->Allocate(Req("l", "x", "low"));
  AllocationRequest two = Req("c", "x", "critical");
  two.resources = {{"agents", 2}};
  auto crit = h.engine->Allocate(two);
  EXPECT_EQ(crit->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(low->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(high->allocation.id), AllocStatus::kActive);
}

TEST(EngineTest, NonPreemptibleWorkIsNeverPreempted) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  AllocationRequest keep = Req("l", "x", "low");
  keep.preemptible = false;
  auto low = h.engine->Allocate(keep);
  auto crit = h.engine->Allocate(Req("c", "x", "critical"));
  EXPECT_EQ(crit->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(low->allocation.id), AllocStatus::kActive);
}

TEST(EngineTest, LeaseExpiresAfterTtlPlusGraceAndRenewKeepsItAlive) {
  Config c = Config::Defaults();
  c.auto_release.grace_period = 5min;
  Harness h(c);
  AllocationRequest r = Req("wf", "x");
  r.ttl = 10min;
  auto a = h.engine->Allocate(r);
  const std::string id = a->allocation.id;
  ASSERT_TRUE(a->allocation.expires_at.has_value());
  EXPECT_EQ(*a->allocation.expires_at, h.clock.Now() + 10min);
  h.clock.Advance(9min);
  ASSERT_TRUE(h.engine->Renew(id).ok());
  h.clock.Advance(10min);
  h.engine->Tick();
  EXPECT_NE(h.Find(EventType::kLeaseExpiring, id), nullptr);
  EXPECT_EQ(h.StatusOf(id), AllocStatus::kActive);  // in the grace period
  h.clock.Advance(5min);
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(id), AllocStatus::kExpired);
  EXPECT_EQ(h.engine->GetSnapshot().resources[0].allocated, 0);
  auto late = h.engine->Release(id);
  EXPECT_EQ(late.status().code(), Code::kConflict);
}

TEST(EngineTest, RenewNeverPassesMaxDuration) {
  Harness h(Config::Defaults());
  AllocationRequest r = Req("wf", "x");
  r.ttl = 30min;
  r.max_duration = 45min;
  auto a = h.engine->Allocate(r);
  h.clock.Advance(20min);
  auto renewed = h.engine->Renew(a->allocation.id);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed->expires_at, *a->allocation.granted_at + 45min);
}

TEST(EngineTest, FencingTokensIncreaseWithEveryGrant) {
  Harness h(Config::Defaults());
  auto a = h.engine->Allocate(Req("a", "x"));
  auto b = h.engine->Allocate(Req("b", "x"));
  EXPECT_GT(b->allocation.fencing_token, a->allocation.fencing_token);
  EXPECT_GT(a->allocation.fencing_token, 0u);
}

TEST(EngineTest, IdempotencyKeyReturnsTheSameAllocation) {
  Harness h(Config::Defaults());
  AllocationRequest r = Req("wf", "x");
  r.idempotency_key = "retry-1";
  auto first = h.engine->Allocate(r);
  auto second = h.engine->Allocate(r);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->replayed);
  EXPECT_EQ(first->allocation.id, second->allocation.id);
  EXPECT_EQ(h.engine->GetSnapshot().active, 1);
  r.agent_type = "other";
  auto clash = h.engine->Allocate(r);
  EXPECT_EQ(clash.status().code(), Code::kConflict);
}

TEST(EngineTest, RequestLargerThanAnyLimitIsResourceExhausted) {
  Harness h(Seed001Config());
  AllocationRequest r = Req("wf", "backend-engineer");
  r.resources = {{"agents", 3}};
  auto a = h.engine->Allocate(r);
  EXPECT_EQ(a.status().code(), Code::kResourceExhausted);
  EXPECT_NE(a.status().message().find("backend-engineer allows at most 2"),
            std::string::npos);
  r.resources = {{"agents", 1}, {"cpu_cores", 7}};  // workflow max is 6
  a = h.engine->Allocate(r);
  EXPECT_EQ(a.status().code(), Code::kResourceExhausted);
  EXPECT_NE(a.status().message().find("max_cpu_per_workflow"),
            std::string::npos);
  EXPECT_EQ(h.engine->GetSnapshot().active, 0);
}

TEST(EngineTest, PerWorkflowAndPerProductLimitsQueueWithReasons) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 20;
  c.allocation_limits.max_agents_per_workflow = 2;
  c.products["acme"].max_concurrent_agents = 1;
  Harness h(c);
  h.engine->Allocate(Req("wf", "x"));
  h.engine->Allocate(Req("wf", "x"));
  auto third = h.engine->Allocate(Req("wf", "x"));
  EXPECT_EQ(third->allocation.reason_queued,
            "workflow wf at max_agents_per_workflow (2)");
  AllocationRequest p = Req("other", "x");
  p.product = "acme";
  h.engine->Allocate(p);
  p.workflow_id = "other2";
  auto second_acme = h.engine->Allocate(p);
  EXPECT_EQ(second_acme->allocation.reason_queued,
            "product acme at max_concurrent_agents (1)");
}

TEST(EngineTest, FractionalCpuIsExactAndWholeUnitsAreEnforced) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 100;
  Harness h(c);
  for (int i = 0; i < 10; ++i) {
    AllocationRequest r = Req("wf" + std::to_string(i), "x");
    r.resources = {{"cpu_cores", 0.1}};
    ASSERT_EQ(h.engine->Allocate(r)->allocation.status, AllocStatus::kActive);
  }
  // 80 x 0.1 would fill 8 cores exactly; floats would drift.
  for (int i = 10; i < 80; ++i) {
    AllocationRequest r = Req("wf" + std::to_string(i), "x");
    r.resources = {{"cpu_cores", 0.1}};
    ASSERT_EQ(h.engine->Allocate(r)->allocation.status, AllocStatus::kActive)
        << i;
  }
  AllocationRequest one_more = Req("wf-last", "x");
  one_more.resources = {{"cpu_cores", 0.1}};
  EXPECT_EQ(h.engine->Allocate(one_more)->allocation.status,
            AllocStatus::kQueued);
  AllocationRequest half_agent = Req("wf-half", "x");
  half_agent.resources = {{"agents", 0.5}};
  auto bad = h.engine->Allocate(half_agent);
  EXPECT_EQ(bad.status().code(), Code::kInvalidRequest);
  EXPECT_NE(bad.status().message().find("resources.agents must be a whole"),
            std::string::npos);
}

TEST(EngineTest, ReallocateGrowsWithinLimitsAndShrinkFreesForTheQueue) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 10;
  Harness h(c);
  AllocationRequest r = Req("a", "x");
  r.resources = {{"cpu_cores", 2}};
  auto a = h.engine->Allocate(r);
  auto grown = h.engine->Reallocate(a->allocation.id, {{"cpu_cores", 5}});
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  AllocationRequest w = Req("b", "x");
  w.resources = {{"cpu_cores", 4}};
  auto waiting = h.engine->Allocate(w);
  ASSERT_EQ(waiting->allocation.status, AllocStatus::kQueued);
  auto too_big = h.engine->Reallocate(a->allocation.id, {{"cpu_cores", 6}});
  EXPECT_EQ(too_big.status().code(), Code::kUnavailable);
  auto shrunk = h.engine->Reallocate(a->allocation.id, {{"cpu_cores", 1}});
  ASSERT_TRUE(shrunk.ok());
  EXPECT_EQ(h.StatusOf(waiting->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(EngineTest, CancelWithdrawsOnlyQueuedRequests) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  auto a = h.engine->Allocate(Req("a", "x"));
  auto b = h.engine->Allocate(Req("b", "x"));
  EXPECT_EQ(h.engine->Cancel(a->allocation.id).status().code(),
            Code::kConflict);
  auto cancelled = h.engine->Cancel(b->allocation.id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->status, AllocStatus::kCancelled);
  EXPECT_EQ(h.engine->GetSnapshot().queued, 0);
}

TEST(EngineTest, BatchAllOrNothingGrantsAllOrNone) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 3;
  Harness h(c);
  std::vector<AllocationRequest> batch = {Req("a", "x"), Req("b", "x"),
                                          Req("c", "x"), Req("d", "x")};
  auto none = h.engine->AllocateBatch(batch, true);
  EXPECT_EQ(none.status().code(), Code::kUnavailable);
  EXPECT_NE(none.status().message().find("requests[3]"), std::string::npos);
  EXPECT_EQ(h.engine->GetSnapshot().active, 0);
  EXPECT_EQ(h.engine->GetSnapshot().queued, 0);
  batch.pop_back();
  auto all = h.engine->AllocateBatch(batch, true);
  ASSERT_TRUE(all.ok());
  for (const auto& r : *all)
    EXPECT_EQ(r.allocation.status, AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(EngineTest, BatchWithAnInvalidItemChangesNothing) {
  Harness h(Config::Defaults());
  std::vector<AllocationRequest> batch = {Req("a", "x"), Req("", "x")};
  auto r = h.engine->AllocateBatch(batch, false);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("requests[1].workflow_id"),
            std::string::npos);
  EXPECT_EQ(h.engine->GetSnapshot().active, 0);
}

TEST(EngineTest, StarvationAlertFiresOnceAfterTheLevelsMaxWait) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  AllocationRequest busy = Req("busy", "x", "critical");
  busy.ttl = std::chrono::hours(2);
  h.engine->Allocate(busy);
  auto waiting = h.engine->Allocate(Req("w", "x", "high"));  // max wait 15m
  h.clock.Advance(14min);
  h.engine->Tick();
  EXPECT_EQ(h.Find(EventType::kStarvation, waiting->allocation.id), nullptr);
  h.clock.Advance(2min);
  h.engine->Tick();
  h.clock.Advance(30min);
  h.engine->Tick();
  int alerts = 0;
  for (const Event& e : h.events) {
    alerts += e.type == EventType::kStarvation &&
              e.allocation_id == waiting->allocation.id;
  }
  EXPECT_EQ(alerts, 1);
  // The wait factor keeps rising past 1.
  auto q = h.engine->Queue();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_NEAR(q[0].wait_factor, 46.0 / 15.0, 1e-9);
}

struct BadCase {
  const char* name;
  std::function<void(AllocationRequest&)> mutate;
  const char* field;
};

TEST(EngineTest, BadRequestsNameTheFieldAndChangeNothing) {
  Config c = Config::Defaults();
  c.per_type_limits = {{"backend-engineer", 2}};
  c.scheduling.restrict_agent_types = true;
  const std::vector<BadCase> cases = {
      {"empty workflow", [](AllocationRequest& r) { r.workflow_id = ""; },
       "workflow_id"},
      {"long workflow",
       [](AllocationRequest& r) { r.workflow_id = std::string(5000, 'w'); },
       "workflow_id"},
      {"negative",
       [](AllocationRequest& r) {
         r.resources = {{"cpu_cores", -1}};
       },
       "resources.cpu_cores"},
      {"nan",
       [](AllocationRequest& r) {
         r.resources = {{"memory_gb", std::nan("")}};
       },
       "resources.memory_gb"},
      {"inf",
       [](AllocationRequest& r) {
         r.resources = {{"memory_gb", INFINITY}};
       },
       "resources.memory_gb"},
      {"unknown resource",
       [](AllocationRequest& r) {
         r.resources = {{"gpu", 1}};
       },
       "resources.gpu"},
      {"too many resources",
       [](AllocationRequest& r) {
         for (int i = 0; i < 300; ++i) r.resources.push_back({"agents", 1});
       },
       "resources"},
      {"duplicate resource",
       [](AllocationRequest& r) {
         r.resources = {{"cpu_cores", 1}, {"cpu_cores", 2}};
       },
       "resources.cpu_cores"},
      {"unknown type", [](AllocationRequest& r) { r.agent_type = "backend"; },
       "agent_type"},
      {"bad priority", [](AllocationRequest& r) { r.priority = "urgent"; },
       "priority"},
      {"priority out of range",
       [](AllocationRequest& r) { r.priority = "101"; }, "priority"},
      {"negative tokens", [](AllocationRequest& r) { r.estimated_tokens = -5; },
       "estimated_tokens"},
      {"nan minutes",
       [](AllocationRequest& r) { r.estimated_minutes = std::nan(""); },
       "estimated_minutes"},
      {"blocks over total",
       [](AllocationRequest& r) {
         r.blocks = 11;
         r.total_tasks = 10;
       },
       "blocks"},
      {"zero ttl", [](AllocationRequest& r) { r.ttl = Duration(0); }, "ttl"},
      {"control chars",
       [](AllocationRequest& r) { r.product = std::string("a\nb"); },
       "product"},
      {"long metadata",
       [](AllocationRequest& r) { r.metadata = std::string(4097, 'm'); },
       "metadata"},
  };
  Harness h(c);
  auto keep = h.engine->Allocate(Req("keep", "backend-engineer"));
  ASSERT_TRUE(keep.ok());
  const Snapshot before = h.engine->GetSnapshot();
  const size_t events_before = h.events.size();
  for (const BadCase& bc : cases) {
    AllocationRequest r = Req("wf", "backend-engineer");
    bc.mutate(r);
    auto res = h.engine->Allocate(r);
    ASSERT_FALSE(res.ok()) << bc.name;
    EXPECT_EQ(res.status().code(), Code::kInvalidRequest) << bc.name;
    EXPECT_EQ(res.status().message().rfind(bc.field, 0), 0u)
        << bc.name << ": " << res.status().message();
  }
  const Snapshot after = h.engine->GetSnapshot();
  EXPECT_EQ(after.active, before.active);
  EXPECT_EQ(after.queued, before.queued);
  EXPECT_EQ(h.events.size(), events_before);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(EngineTest, NumericPrioritiesMapToTheSeedBands) {
  Harness h(Config::Defaults());
  const std::pair<const char*, Level> cases[] = {
      {"100", Level::kCritical}, {"90", Level::kCritical},
      {"89", Level::kHigh},      {"70", Level::kHigh},
      {"69", Level::kNormal},    {"40", Level::kNormal},
      {"39", Level::kLow},       {"0", Level::kLow},
      {"medium", Level::kNormal}};
  int i = 0;
  for (const auto& [text, level] : cases) {
    AllocationRequest r = Req("wf" + std::to_string(i++), "x", text);
    r.resources = {{"agents", 0}};
    auto a = h.engine->Allocate(r);
    ASSERT_TRUE(a.ok()) << text;
    EXPECT_EQ(a->allocation.level, level) << text;
  }
}

TEST(EngineTest, UnknownIdsAreNotFoundAndMalformedIdsInvalid) {
  Harness h(Config::Defaults());
  EXPECT_EQ(h.engine->Release("alloc_999").status().code(), Code::kNotFound);
  EXPECT_EQ(h.engine->Release("nope").status().code(), Code::kInvalidRequest);
  EXPECT_EQ(h.engine->Renew("alloc_").status().code(), Code::kInvalidRequest);
}

}  // namespace
}  // namespace qm
