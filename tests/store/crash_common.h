// Shared by the crash driver (crash_driver.cc) and the crash test
// (crash_test.cc): the config both open the state with, and the driver's
// clock.
#ifndef QM_TESTS_STORE_CRASH_COMMON_H_
#define QM_TESTS_STORE_CRASH_COMMON_H_

#include <chrono>
#include <cstdint>

#include "qm/clock.h"
#include "qm/config.h"

namespace qm::crash {

// Few agents, so that requests queue, preempt and wait for each other.
inline Config DriverConfig() {
  Config c = Config::Defaults();
  for (ResourceSpec& r : c.resources) {
    if (r.name == "agents") r.capacity = 6;
  }
  c.per_type_limits["coder"] = 4;
  c.scheduling.history_limit = 100000;
  return c;
}

// The wall clock shifted by a fixed offset: each round of the crash test
// runs days after the previous one, so every lease of a crashed round has
// run out when the next round starts.
class OffsetClock final : public Clock {
 public:
  explicit OffsetClock(int64_t offset_ms) : offset_(offset_ms) {}
  Time Now() const override {
    return SystemClock::Default()->Now() + Duration(offset_);
  }

 private:
  int64_t offset_;
};

}  // namespace qm::crash

#endif  // QM_TESTS_STORE_CRASH_COMMON_H_
