// Random operations, valid and invalid, with the engine's invariants checked
// after every one: capacity never exceeded at any level, every active
// allocation counted once, queue and lease indexes consistent; and a refused
// operation changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"
#include "tests/core/random_ops.h"

namespace qm {
namespace {

using testing_util::Harness;
using testing_util::RandomConfig;
using testing_util::RandomOps;

struct Fingerprint {
  int64_t active, queued, preempting;
  std::vector<double> allocated;
  size_t events;
  int64_t tokens_used, tokens_reserved;
  double cost_used;
  bool operator==(const Fingerprint&) const = default;
};

Fingerprint Take(const Harness& h) {
  Snapshot s = h.engine->GetSnapshot();
  const CostReport c = h.engine->Costs();
  Fingerprint f{s.active,        s.queued,      s.preempting,      {},
                h.events.size(), c.tokens_used, c.tokens_reserved, c.cost_usd};
  for (const auto& r : s.resources) f.allocated.push_back(r.allocated);
  return f;
}

// Applies `ops` random operations and checks everything after each.
// `money`: also report usage, extend grants, pause, resume, override
// priorities and the breaker.
// `locks`: requests take path locks and avoid workflows, and conflict
// operations (check, resolve, policy changes, lock verification) run too.
void RunRandom(const Config& c, int ops_count, uint64_t seed, int* refused,
               int* accepted, bool money = false, bool locks = false) {
  Harness h(c);
  RandomOps ops(seed, locks);
  std::vector<std::string> ids;
  std::vector<std::string> recent;  // for failure messages
  int refused_count = 0, granted_or_queued = 0;
  for (int step = 0; step < ops_count; ++step) {
    const Fingerprint before = Take(h);
    Status status;
    const int kind = ops.Int(0, 99);
    const size_t events_before = h.events.size();
    if (kind < 40) {
      auto r = h.engine->Allocate(ops.Request());
      status = r.status();
      if (r.ok()) {
        ids.push_back(r->allocation.id);
        ++granted_or_queued;
      }
    } else if (kind < 45) {
      std::vector<AllocationRequest> batch;
      for (int i = ops.Int(1, 4); i > 0; --i) batch.push_back(ops.Request());
      auto r = h.engine->AllocateBatch(batch, ops.Chance(0.5));
      status = r.status();
      if (r.ok()) {
        for (const auto& a : *r) ids.push_back(a.allocation.id);
      }
    } else if (kind < 70 && !ids.empty()) {
      UsageReport u;
      u.tokens = ops.Int(-2, 100000);
      u.outcome = ops.Chance(0.1) ? Outcome::kFailure : Outcome::kSuccess;
      if (ops.Chance(0.3)) u.report_id = "r" + std::to_string(ops.Int(0, 5));
      const std::string& id = ids[ops.Int(0, int(ids.size()) - 1)];
      status = money && ops.Chance(0.5) ? h.engine->ReportUsage(id, u).status()
                                        : h.engine->Release(id, u).status();
    } else if (kind < 78 && !ids.empty()) {
      status = h.engine->Renew(ids[ops.Int(0, int(ids.size()) - 1)]).status();
    } else if (kind < 84 && !ids.empty()) {
      ResourceAmounts change = {{"cpu_cores", ops.Int(-1, 8) * 0.5}};
      if (ops.Chance(0.3)) change.push_back({"agents", ops.Int(0, 3)});
      status =
          h.engine->Reallocate(ids[ops.Int(0, int(ids.size()) - 1)], change)
              .status();
    } else if (kind < 90 && !ids.empty()) {
      status = h.engine->Cancel(ids[ops.Int(0, int(ids.size()) - 1)]).status();
    } else if (locks && kind < 95 && !ids.empty()) {
      switch (ops.Int(0, 6)) {
        case 5: {
          ReservationRequest q;
          q.workflow_id = "wf" + std::to_string(ops.Int(0, 30));
          q.start_time = h.clock.Now() + std::chrono::minutes(ops.Int(-1, 120));
          q.duration = std::chrono::minutes(ops.Int(0, 90));
          q.resources = {{"agents", ops.Int(0, 5)}};
          if (ops.Chance(0.3)) q.resources.push_back({"cpu_cores", 1});
          if (ops.Chance(0.3))
            q.agent_type = "t" + std::to_string(ops.Int(0, 5));
          if (ops.Chance(0.2)) q.recurrence = "daily";
          status = h.engine->Reserve(q).status();
          break;
        }
        case 6:
          status = h.engine
                       ->CancelReservation(
                           "res_" + std::to_string(ops.Int(1, 40)), {"op", ""})
                       .status();
          break;
        case 0: {
          auto r = h.engine->CheckConflicts(
              ops.Request(), std::chrono::minutes(ops.Int(0, 60)));
          status = r.status();
          if (r.ok()) {
            EXPECT_EQ(h.events.size(), events_before);
          }
          break;
        }
        case 1: {
          const std::vector<ConflictInfo> all = h.engine->Conflicts();
          if (all.empty()) break;
          static const ResolveStrategy kStrategies[] = {
              ResolveStrategy::kPriorityBased,
              ResolveStrategy::kQueueAndSerialize,
              ResolveStrategy::kForceRelease};
          status =
              h.engine
                  ->ResolveConflict(all[ops.Int(0, int(all.size()) - 1)].id,
                                    kStrategies[ops.Int(0, 2)],
                                    {ops.Chance(0.8) ? "op" : "", "test"})
                  .status();
          break;
        }
        case 2: {
          LockPolicy p;
          p.enforcement = ops.Chance(0.7) ? LockEnforcement::kStrict
                                          : LockEnforcement::kAdvisory;
          if (ops.Chance(0.3)) p.exceptions = {"read_only_operations"};
          const std::string scope =
              ops.Chance(0.5) ? "global" : "p" + std::to_string(ops.Int(0, 3));
          status = h.engine->SetLockPolicy(
              scope, ops.Chance(0.2) ? std::nullopt : std::optional(p),
              {"op", "test"});
          break;
        }
        default: {
          auto a = h.engine->Get(ids[ops.Int(0, int(ids.size()) - 1)]);
          if (!a.ok()) break;
          auto v = h.engine->VerifyLock("src/a.cc", a->fencing_token + 0);
          status = v.status();
          break;
        }
      }
    } else if (money && kind < 95 && !ids.empty()) {
      const Actor actor{"op", "test"};
      switch (ops.Int(0, 6)) {
        case 0:
          status = h.engine
                       ->ExtendTokens(ids[ops.Int(0, int(ids.size()) - 1)],
                                      ops.Int(-1, 150000))
                       .status();
          break;
        case 1:
          status = h.engine->Pause(actor);
          break;
        case 2:
          status = h.engine->Resume(actor);
          break;
        case 3: {
          static const std::optional<Level> kLevels[] = {
              std::nullopt, Level::kLow, Level::kHigh, Level::kCritical};
          status =
              h.engine->SetPriorityOverride("p" + std::to_string(ops.Int(0, 3)),
                                            kLevels[ops.Int(0, 3)], actor);
          break;
        }
        case 4:
          status = h.engine->OverrideBreaker(actor);
          break;
        case 5:
          status =
              h.engine->RaiseLimits(ops.Int(-1, 5000000), std::nullopt, actor);
          break;
        default:
          status = h.engine->Resume(actor);
          break;
      }
    } else {
      h.clock.Advance(std::chrono::seconds(ops.Int(1, 1200)));
      h.engine->Tick();
    }
    if (status.code() == Code::kInvalidRequest) {
      ++refused_count;
      ASSERT_TRUE(Take(h) == before)
          << "step " << step
          << ": a refused operation changed state: " << status.ToString();
    }
    std::string what =
        "op " + std::to_string(kind) + " -> " + status.ToString() + "; events:";
    for (size_t e = events_before; e < h.events.size(); ++e) {
      what += std::string(" ") + EventTypeName(h.events[e].type) + " " +
              h.events[e].allocation_id;
    }
    recent.push_back(what);
    if (recent.size() > 12) recent.erase(recent.begin());
    const Status inv = h.engine->CheckInvariants();
    ASSERT_TRUE(inv.ok()) << "step " << step << ": " << inv.ToString()
                          << "\nlast operations:\n  "
                          << ::testing::PrintToString(recent);
    if (ids.size() > 400) ids.erase(ids.begin(), ids.begin() + 200);
  }
  *refused = refused_count;
  *accepted = granted_or_queued;
}

TEST(InvariantsTest, HundredThousandRandomOperationsKeepEveryInvariant) {
  int refused = 0, accepted = 0;
  RunRandom(RandomConfig(), 100000, 20260126, &refused, &accepted);
  // The run exercised both paths.
  EXPECT_GT(refused, 1000);
  EXPECT_GT(accepted, 10000);
}

// Everything money adds: prices, rules, per-task and period budgets (small
// enough to be hit all the time), alerts, the breaker, usage reports,
// extensions, pauses, priority overrides and period resets.
TEST(InvariantsTest, RandomOperationsWithBudgetsKeepEveryInvariant) {
  const Config c = testing_util::RandomBudgetConfig();
  int refused = 0, accepted = 0;
  RunRandom(c, 40000, 11, &refused, &accepted, /*money=*/true);
  EXPECT_GT(accepted, 5000);
}

// Preemption from two levels with no grace period: victims are taken back
// at once and re-queued, the hardest case for ordering and liveness.
TEST(InvariantsTest, RandomOperationsWithEagerPreemptionKeepEveryInvariant) {
  const Config c = testing_util::RandomEagerPreemptionConfig();
  int refused = 0, accepted = 0;
  RunRandom(c, 50000, 7, &refused, &accepted);
  EXPECT_GT(accepted, 5000);
}

// Path locks, globs, workflow exclusion, reservations (one-off and daily,
// claimed and cancelled) and the conflict operations, with priority-based
// lock preemption: no two strict holders ever hold conflicting locks, no
// gated request waits for something that cannot wake it, and nothing
// granted after a reservation was accepted runs into what it booked.
TEST(InvariantsTest, RandomOperationsWithLocksKeepEveryInvariant) {
  const Config c = testing_util::RandomLockConfig();
  int refused = 0, accepted = 0;
  RunRandom(c, 20000, 4, &refused, &accepted, /*money=*/false,
            /*locks=*/true);
  EXPECT_GT(accepted, 3000);
  EXPECT_GT(refused, 500);
}

// The same with reservations.preempt_running: windows that open short
// preempt running work.
TEST(InvariantsTest, RandomOperationsWithPreemptingReservations) {
  const Config c = testing_util::RandomPreemptingReservationConfig();
  int refused = 0, accepted = 0;
  RunRandom(c, 8000, 5, &refused, &accepted, /*money=*/false,
            /*locks=*/true);
  EXPECT_GT(accepted, 1000);
}

}  // namespace
}  // namespace qm
