// Regressions found by a second read and a fuzzer: each test is a scenario
// that once went wrong.
#include <gtest/gtest.h>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using namespace std::chrono_literals;
using testing_util::Harness;
using testing_util::Req;

AllocationRequest With(AllocationRequest r, ResourceAmounts resources) {
  r.resources = std::move(resources);
  return r;
}

// Cancelling the last queued request used to leave its claim behind, so
// all-or-nothing batches were refused "behind" a request that was gone.
TEST(RegressionTest, CancellingTheLastWaiterLeavesNoClaim) {
  Harness h(Config::Defaults());
  h.engine->Allocate(With(Req("a", "x"), {{"cpu_cores", 6}}));
  auto b = h.engine->Allocate(With(Req("b", "x"), {{"cpu_cores", 4}}));
  ASSERT_EQ(b->allocation.status, AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->Cancel(b->allocation.id).ok());
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  auto batch = h.engine->AllocateBatch(
      {With(Req("c", "x"), {{"cpu_cores", 1}})}, /*all_or_nothing=*/true);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(batch->front().allocation.status, AllocStatus::kActive);
}

// A critical request short on two resources held by two re-queueable
// victims: the first victim's release used to hand its resource back to it
// before the preemptor could use it, preempting the two forever.
TEST(RegressionTest, PreemptorGetsWhatItsVictimsFreeEvenWithZeroGrace) {
  for (Duration grace : {Duration(0), Duration(30s)}) {
    Config c = Config::Defaults();
    c.scheduling.preemption_grace = grace;
    Harness h(c);
    AllocationRequest v1 =
        With(Req("w1", "x"), {{"agents", 0}, {"tool.web", 2}});
    v1.requeue_on_preempt = true;
    v1.ttl = 5h;
    AllocationRequest v2 =
        With(Req("w2", "x"), {{"agents", 0}, {"cpu_cores", 6}});
    v2.requeue_on_preempt = true;
    v2.ttl = 5h;
    h.engine->Allocate(v1);
    h.engine->Allocate(v2);
    auto p = h.engine->Allocate(
        With(Req("wp", "x", "critical"), {{"cpu_cores", 4}, {"tool.web", 1}}));
    for (int i = 0; i < 4; ++i) {
      h.clock.Advance(30s);
      h.engine->Tick();
    }
    EXPECT_EQ(h.StatusOf(p->allocation.id), AllocStatus::kActive)
        << "grace " << FormatDuration(grace);
    EXPECT_TRUE(h.engine->CheckInvariants().ok());
  }
}

// A victim that would rank above its preemptor once re-queued (it keeps its
// old queue time) is not preempted: the two would take turns forever.
TEST(RegressionTest, NoPreemptionOfAVictimThatWouldOutrankThePreemptor) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  Harness h(c);
  AllocationRequest v = Req("w1", "x", "normal");
  v.requeue_on_preempt = true;
  v.ttl = 5h;
  auto victim = h.engine->Allocate(v);
  h.clock.Advance(60min);  // as if queued an hour ago: score 0.55 + 0.3
  auto high = h.engine->Allocate(Req("w2", "x", "high"));
  h.clock.Advance(1min);
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(victim->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.Find(EventType::kPreemptionNotice, victim->allocation.id),
            nullptr);
  EXPECT_EQ(h.StatusOf(high->allocation.id), AllocStatus::kQueued);
}

// A holder that finishes within its preemption notice is done: it is not
// put back in the queue, and a retried release answers the same.
TEST(RegressionTest, ReleaseDuringTheNoticeEndsTheAllocationForGood) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  AllocationRequest v = Req("w1", "x");
  v.requeue_on_preempt = true;
  auto victim = h.engine->Allocate(v);
  auto crit = h.engine->Allocate(Req("w2", "x", "critical"));
  auto first = h.engine->Release(victim->allocation.id);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->status, AllocStatus::kPreempted);
  auto retry = h.engine->Release(victim->allocation.id);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->status, AllocStatus::kPreempted);
  ASSERT_TRUE(h.engine->Release(crit->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(victim->allocation.id), AllocStatus::kPreempted);
  EXPECT_EQ(h.engine->GetSnapshot().active, 0);
}

// Absurd lease lengths are refused instead of overflowing the clock.
TEST(RegressionTest, HugeTtlIsRefused) {
  Harness h(Config::Defaults());
  AllocationRequest r = Req("w", "x");
  r.ttl = Duration::max();
  EXPECT_EQ(h.engine->Allocate(r).status().code(), Code::kInvalidRequest);
  auto a = h.engine->Allocate(Req("w", "x"));
  EXPECT_EQ(h.engine->Renew(a->allocation.id, Duration::max()).status().code(),
            Code::kInvalidRequest);
  EXPECT_TRUE(h.engine->Renew(a->allocation.id, 10min).ok());
}

// A refused all-or-nothing batch leaves no trace, not even the names of
// agent types and products it introduced.
TEST(RegressionTest, RefusedBatchLeavesNoTrace) {
  Config c = Config::Defaults();
  c.resources[0].capacity = 1;
  Harness h(c);
  const Snapshot before = h.engine->GetSnapshot();
  AllocationRequest a = Req("w1", "new-type");
  a.product = "new-product";
  auto r = h.engine->AllocateBatch({a, Req("w2", "other-type")}, true);
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  const Snapshot after = h.engine->GetSnapshot();
  EXPECT_EQ(after.agent_types.size(), before.agent_types.size());
  EXPECT_EQ(after.products.size(), before.products.size());
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// Names that are not UTF-8 were accepted, and every JSON rendering of the
// allocation, the snapshot or the cost report then threw.
TEST(RegressionTest, NamesAndReportTextMustBeUtf8) {
  Harness h(Config::Defaults());
  AllocationRequest bad = Req("w", "x");
  bad.product = "p\xff";
  auto r = h.engine->Allocate(bad);
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_NE(r.status().message().find("product must be UTF-8"),
            std::string::npos)
      << r.status().message();
  bad = Req("w", "x");
  bad.model = "\xc0\xaf";
  EXPECT_EQ(h.engine->Allocate(bad).status().code(), Code::kInvalidRequest);
  auto a = h.engine->Allocate(Req("w", "x"));
  ASSERT_TRUE(a.ok());
  UsageReport u;
  u.tokens = 5;
  u.report_id = "r\xff";
  auto released = h.engine->Release(a->allocation.id, u);
  EXPECT_EQ(released.status().code(), Code::kInvalidRequest);
  EXPECT_NE(released.status().message().find("usage.report_id"),
            std::string::npos);
  EXPECT_EQ(h.StatusOf(a->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

}  // namespace
}  // namespace qm
