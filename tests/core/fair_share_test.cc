// Fair share across products: two products with equal shares competing for
// one pool over a long run each get half of the agent-minutes.
#include <gtest/gtest.h>

#include <map>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using namespace std::chrono_literals;
using testing_util::Harness;
using testing_util::Req;

struct Split {
  double a = 0, b = 0;
};

// Product "a" submits its whole backlog first, with tasks of `a_minutes`;
// "b" follows with tasks of `b_minutes`. Returns agent-minutes per product
// over the first `window` (both stay backlogged all along).
Split RunPool(Config c, double a_minutes, double b_minutes, Duration window) {
  Harness h(std::move(c));
  const Time start = h.clock.Now();
  std::map<std::string, Duration> run_for;
  for (const char* product : {"a", "b"}) {
    for (int i = 0; i < 400; ++i) {
      AllocationRequest r = Req(std::string(product) + std::to_string(i), "x");
      r.product = product;
      r.ttl = 24h;  // a live holder: it would heartbeat
      r.estimated_minutes = product[0] == 'a' ? a_minutes : b_minutes;
      auto res = h.engine->Allocate(r);
      EXPECT_TRUE(res.ok());
      run_for[res->allocation.id] = Duration(static_cast<int64_t>(
          (product[0] == 'a' ? a_minutes : b_minutes) * 60000));
    }
  }
  Split split;
  // Drive: release each running task when its run time is over.
  while (h.clock.Now() < start + window) {
    Time next = start + window;
    std::vector<std::string> due;
    for (const auto& [id, d] : run_for) {
      auto info = h.engine->Get(id);
      if (!info.ok() || info->status != AllocStatus::kActive) continue;
      const Time end = *info->granted_at + d;
      if (end < next) next = end;
    }
    h.clock.Set(next);
    for (const auto& [id, d] : run_for) {
      auto info = h.engine->Get(id);
      if (!info.ok() || info->status != AllocStatus::kActive) continue;
      if (*info->granted_at + d <= next) due.push_back(id);
    }
    for (const std::string& id : due) {
      auto info = h.engine->Release(id);
      EXPECT_TRUE(info.ok());
      const double minutes = std::chrono::duration<double, std::ratio<60>>(
                                 next - *info->granted_at)
                                 .count();
      (info->product == "a" ? split.a : split.b) += minutes;
    }
  }
  // Count the part of still-running tasks inside the window.
  for (const auto& [id, d] : run_for) {
    auto info = h.engine->Get(id);
    if (!info.ok() || info->status != AllocStatus::kActive) continue;
    const double minutes = std::chrono::duration<double, std::ratio<60>>(
                               start + window - *info->granted_at)
                               .count();
    (info->product == "a" ? split.a : split.b) += minutes;
  }
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
  return split;
}

Config Pool(int agents) {
  Config c = Config::Defaults();
  c.resources[0].capacity = agents;
  c.allocation_limits.max_duration = 24h;
  c.products["a"].share = 1;
  c.products["b"].share = 1;
  return c;
}

TEST(FairShareTest, EqualSharesSplitAgentMinutesEvenly) {
  const Split s = RunPool(Pool(4), 10, 10, 10h);
  const double total = s.a + s.b;
  EXPECT_NEAR(total, 4 * 600, 1);
  EXPECT_NEAR(s.a / total, 0.5, 0.05) << s.a << " vs " << s.b;
}

TEST(FairShareTest, SplitIsByAgentMinutesNotTaskCount) {
  // b's tasks are three times longer: it should run a third as many tasks
  // and still get half of the agent-minutes.
  const Split s = RunPool(Pool(4), 10, 30, 10h);
  const double total = s.a + s.b;
  EXPECT_NEAR(s.a / total, 0.5, 0.05) << s.a << " vs " << s.b;
}

TEST(FairShareTest, WithoutTheFairShareTermTheFirstProductTakesEverything) {
  Config c = Pool(4);
  c.scheduling.weights.fair_share = 0;
  const Split s = RunPool(c, 10, 10, 10h);
  EXPECT_GT(s.a / (s.a + s.b), 0.9);
}

TEST(FairShareTest, UnequalSharesSplitInProportion) {
  Config c = Pool(4);
  c.products["a"].share = 3;
  const Split s = RunPool(c, 10, 10, 10h);
  EXPECT_NEAR(s.a / (s.a + s.b), 0.75, 0.05) << s.a << " vs " << s.b;
}

}  // namespace
}  // namespace qm
