// The crash test's victim: runs a durable engine on a state directory and
// applies a random stream of operations from several threads until it is
// killed, printing one line per acknowledged change (written with a single
// write(2), so a line on stdout means the caller was answered):
//   G <id> <status> <fencing token> requeue|end
//                                     an allocation answered granted/queued
//                                     (and whether a preemption requeues it)
//   R <id>                            a release answered OK
//   C <id>                            a cancel answered OK
// Usage: qm_crash_driver DIR SEED CLOCK_OFFSET_MS
// It prints "READY" once recovery is done, and exits 2 when the state does
// not open (the error on stderr).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "qm/durable_engine.h"
#include "tests/store/crash_common.h"

namespace {

void Say(const std::string& line) {
  const std::string out = line + "\n";
  (void)!write(1, out.data(), out.size());
}

void Worker(qm::DurableEngine* d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) {
    return std::uniform_int_distribution<int>(0, n - 1)(rng);
  };
  std::vector<std::string> mine;
  for (;;) {
    const int what = pick(10);
    if (what < 5 || mine.empty()) {
      qm::AllocationRequest r;
      r.workflow_id = "wf" + std::to_string(pick(12));
      r.agent_type = pick(3) == 0 ? "coder" : "reviewer";
      r.product = "p" + std::to_string(pick(3));
      r.requester = "crash-driver";
      static const char* kLevels[] = {"critical", "high", "normal", "low"};
      r.priority = kLevels[pick(4)];
      r.resources = {{"agents", 1 + pick(2)}};
      if (pick(2) == 0) r.resources.push_back({"cpu_cores", 1 + pick(3)});
      r.ttl = std::chrono::minutes(1 + pick(60));
      r.requeue_on_preempt = pick(4) == 0;
      auto a = d->Allocate(r);
      if (!a.ok()) continue;
      const qm::AllocationInfo& info = a->allocation;
      Say("G " + info.id + " " + qm::AllocStatusName(info.status) + " " +
          std::to_string(info.fencing_token) + " " +
          (r.requeue_on_preempt ? "requeue" : "end"));
      mine.push_back(info.id);
    } else if (what < 8) {
      const size_t i = pick(static_cast<int>(mine.size()));
      const std::string id = mine[i];
      mine.erase(mine.begin() + i);
      if (d->Release(id).ok()) Say("R " + id);
    } else if (what < 9) {
      const std::string& id = mine[pick(static_cast<int>(mine.size()))];
      if (d->Cancel(id).ok()) Say("C " + id);
    } else {
      (void)d->Renew(mine[pick(static_cast<int>(mine.size()))]);
    }
    if (mine.size() > 40) mine.erase(mine.begin());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR SEED CLOCK_OFFSET_MS\n", argv[0]);
    return 1;
  }
  qm::crash::OffsetClock clock(std::atoll(argv[3]));
  qm::DurableOptions options;
  options.store.location = argv[1];
  // Snapshots now and then, so that kills land around them too.
  options.snapshot_every_records = 400;
  auto d = qm::DurableEngine::Open(options, qm::crash::DriverConfig(), &clock);
  if (!d.ok()) {
    std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
    return 2;
  }
  Say("READY");
  const uint64_t seed = std::strtoull(argv[2], nullptr, 10);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back(Worker, d->get(), seed * 16 + t);
  }
  for (auto& t : threads) t.join();
  return 0;
}
