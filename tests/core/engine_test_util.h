// Test helpers: an engine on a manual clock that records its events.
#ifndef QM_TESTS_CORE_ENGINE_TEST_UTIL_H_
#define QM_TESTS_CORE_ENGINE_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "qm/engine.h"

namespace qm::testing_util {

class RecordingSink : public EventSink {
 public:
  explicit RecordingSink(std::vector<Event>* out) : out_(out) {}
  void OnEvent(const Event& e) override { out_->push_back(e); }

 private:
  std::vector<Event>* out_;
};

// 2026-01-26T14:00:00Z, the day of seed 001's examples.
inline Time TestStart() { return Time(Duration(1769436000000LL)); }

struct Harness {
  explicit Harness(Config config) : clock(TestStart()), sink(&events) {
    auto e = Engine::Create(std::move(config), &clock, &sink);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    engine = std::move(e).value();
  }
  AllocStatus StatusOf(const std::string& id) {
    auto a = engine->Get(id);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? a->status : AllocStatus::kCancelled;
  }
  const Event* Find(EventType type, const std::string& id) const {
    for (const Event& e : events) {
      if (e.type == type && e.allocation_id == id) return &e;
    }
    return nullptr;
  }
  ManualClock clock;
  std::vector<Event> events;
  RecordingSink sink;
  std::unique_ptr<Engine> engine;
};

inline AllocationRequest Req(std::string workflow, std::string type,
                             std::string priority = "") {
  AllocationRequest r;
  r.workflow_id = std::move(workflow);
  r.agent_type = std::move(type);
  r.priority = std::move(priority);
  r.requester = "test";
  return r;
}

}  // namespace qm::testing_util

#endif  // QM_TESTS_CORE_ENGINE_TEST_UTIL_H_
