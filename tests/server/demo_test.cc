// `qm serve --demo`: the made-up fleet makes real allocations (granted,
// queued, released with usage) that the API shows, and gives back what it
// holds when the server stops.
#include "server/demo.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "tests/server/test_util.h"

namespace qm::server {
namespace {

TEST(DemoTest, TheFleetMovesThroughTheEngine) {
  testing::TempDir dir;
  auto app = testing::StartApp(dir.path(), "resources:\n  agents: 3\n");
  ASSERT_NE(app, nullptr);
  DemoOptions o;
  o.arrival = std::chrono::milliseconds(50);
  o.min_run = std::chrono::milliseconds(100);
  o.max_run = std::chrono::milliseconds(400);
  o.seed = 7;
  DemoWorkload demo(&app->engine(), o);
  demo.Start();
  std::set<AllocStatus> seen;
  int demo_allocations = 0;
  auto moved = [&] {
    return seen.count(AllocStatus::kActive) &&
           seen.count(AllocStatus::kQueued) &&
           (seen.count(AllocStatus::kReleased) ||
            seen.count(AllocStatus::kFailed)) &&
           demo_allocations > 5;
  };
  for (int i = 0; i < 100 && !moved(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    AllocationFilter f;
    f.requester = "qm-demo";
    f.limit = 1000;
    auto list = app->engine().List(f);
    ASSERT_TRUE(list.ok());
    demo_allocations = static_cast<int>(list->allocations.size());
    for (const AllocationInfo& a : list->allocations) seen.insert(a.status);
  }
  // Granted, queued (3 agents for a fleet) and released with usage.
  EXPECT_TRUE(seen.count(AllocStatus::kActive));
  EXPECT_TRUE(seen.count(AllocStatus::kQueued));
  EXPECT_TRUE(seen.count(AllocStatus::kReleased) ||
              seen.count(AllocStatus::kFailed));
  EXPECT_GT(demo_allocations, 5);
  auto costs = app->engine().Costs();
  ASSERT_TRUE(costs.ok());
  EXPECT_GT(costs->tokens_used, 0);
  demo.Stop();
  // Nothing of the demo's still holds or waits.
  auto snap = app->engine().GetSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->active, 0);
  EXPECT_EQ(snap->queued, 0);
  EXPECT_TRUE(app->engine().CheckInvariants().ok());
}

}  // namespace
}  // namespace qm::server
