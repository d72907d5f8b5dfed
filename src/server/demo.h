// `qm serve --demo`: a made-up fleet working against this server's own
// state, so a newcomer sees the dashboard and `qm top` move (issue 7).
//
// Agents of four types in three products ask for slots at random
// intervals with random priorities, some for memory or for a file another
// agent writes, run for a few seconds to a minute, report tokens, and
// release (a few fail, a few are cancelled while queued); a nightly-style
// reservation is booked ahead. Every figure it makes is a real allocation
// of the engine, marked with requester "qm-demo": it goes through
// admission, budgets and locks like any other, and is journaled. Runs only
// while this server leads.
//
// Thread safety: Start/Stop from one thread.
#ifndef QM_SERVER_DEMO_H_
#define QM_SERVER_DEMO_H_

#include <memory>

#include "qm/clock.h"

namespace qm {
class DurableEngine;
}

namespace qm::server {

struct DemoOptions {
  // Mean time between new requests. Default 1.5 s.
  Duration arrival = std::chrono::milliseconds(1500);
  // Run times are drawn from [min_run, max_run]. Defaults 5 s and 60 s.
  Duration min_run = std::chrono::seconds(5);
  Duration max_run = std::chrono::seconds(60);
  // Seed of the workload's random choices (0: from the clock).
  uint64_t seed = 0;
};

class DemoWorkload {
 public:
  // `engine` must outlive the workload.
  DemoWorkload(DurableEngine* engine, DemoOptions options = {});
  ~DemoWorkload();  // Stop()
  DemoWorkload(const DemoWorkload&) = delete;
  DemoWorkload& operator=(const DemoWorkload&) = delete;

  void Start();
  // Stops and releases what it still holds.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::server

#endif  // QM_SERVER_DEMO_H_
