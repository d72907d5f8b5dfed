// Engine::Reclaim: taking back an allocation whose holder is gone, at once
// (not at lease expiry), with an event that says why.
#include <gtest/gtest.h>

#include <string>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using testing_util::Harness;
using testing_util::Req;

Config TwoAgents() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 2;
  c.allocation_limits.max_agents_per_workflow.reset();
  return c;
}

AllocationRequest Long(std::string wf) {
  AllocationRequest r = Req(std::move(wf), "dev");
  r.ttl = hours(12);
  return r;
}

TEST(ReclaimTest, ARunningAllocationEndsAtOnceAndItsSlotGoesToTheQueue) {
  Harness h(TwoAgents());
  const std::string a = h.engine->Allocate(Long("a"))->allocation.id;
  h.engine->Allocate(Long("b"));
  const std::string c = h.engine->Allocate(Long("c"))->allocation.id;
  ASSERT_EQ(h.StatusOf(c), AllocStatus::kQueued);
  auto r = h.engine->Reclaim(a, "holder process 4242 exited");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, AllocStatus::kExpired);
  const Event* e = h.Find(EventType::kExpired, a);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->reason, "reclaimed: holder process 4242 exited");
  EXPECT_EQ(h.StatusOf(c), AllocStatus::kActive);
  // Twice: answered as it is, nothing more happens.
  const size_t events = h.events.size();
  auto again = h.engine->Reclaim(a, "holder process 4242 exited");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, AllocStatus::kExpired);
  EXPECT_EQ(h.events.size(), events);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(ReclaimTest, AQueuedRequestIsCancelledWithTheReason) {
  Harness h(TwoAgents());
  h.engine->Allocate(Long("a"));
  h.engine->Allocate(Long("b"));
  const std::string c = h.engine->Allocate(Long("c"))->allocation.id;
  auto r = h.engine->Reclaim(c, "holder process 7 exited");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, AllocStatus::kCancelled);
  const Event* e = h.Find(EventType::kCancelled, c);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->reason, "reclaimed: holder process 7 exited");
  EXPECT_EQ(h.engine->GetSnapshot().queued, 0);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(ReclaimTest, BadInputChangesNothing) {
  Harness h(TwoAgents());
  const std::string a = h.engine->Allocate(Long("a"))->allocation.id;
  const std::string before = h.engine->StateDigest();
  EXPECT_EQ(h.engine->Reclaim("alloc_404", "gone").status().code(),
            Code::kNotFound);
  EXPECT_EQ(h.engine->Reclaim(a, "").status().code(), Code::kInvalidRequest);
  EXPECT_EQ(h.engine->Reclaim(a, std::string(2000, 'x')).status().code(),
            Code::kInvalidRequest);
  EXPECT_EQ(h.engine->StateDigest(), before);
}

}  // namespace
}  // namespace qm
