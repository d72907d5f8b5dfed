// The deterministic simulator: runs the real engine on a virtual clock
// through a scenario (a config plus a timeline of operations) and prints
// every decision as a JSON line, then a summary. The same scenario always
// gives byte-identical output.
//
// Scenario (YAML):
//   name: seed001-concurrency          # optional
//   start: 2026-01-26T14:00:00Z        # optional virtual start time
//   until: 10h                         # optional: run to this offset
//   config: {...} | path/to/limits.yml # inline, or relative to the scenario
//   timeline:                          # non-decreasing `at` offsets
//     - at: 0m
//       allocate: {id: b1, agent_type: backend-engineer, run_for: 30m, ...}
//       count: 3                       # optional: b1-1, b1-2, b1-3
//     - at: 30m
//       release: b1                    # or {id: b1, tokens: 75000, ...}
//   Other operations: allocate_batch {all_or_nothing, requests: [...]},
//   renew (id or {id, ttl}), reallocate {id, resources}, cancel id,
//   queue {} (prints scores), snapshot {}, advance {}, and
//   expect {id, status, reason_contains} (a failed expectation stops the run
//   with an error).
//   `run_for` releases the allocation that long after its grant, with the
//   optional `usage` object of the allocate spec. Such a task is taken to
//   heartbeat: without an explicit `ttl` its lease is a minute longer than
//   its run. Give a `ttl` shorter than `run_for` to model a holder that dies.
#ifndef QM_SIM_SIMULATOR_H_
#define QM_SIM_SIMULATOR_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "qm/status.h"

namespace qm::sim {

struct RunStats {
  uint64_t events = 0;      // engine events printed
  uint64_t operations = 0;  // timeline operations and automatic releases
};

// Runs the scenario file at `path`, writing JSON lines to `out`.
// INVALID_REQUEST (with file:line:column) for a malformed scenario,
// NOT_FOUND for a missing file, CONFLICT for a failed `expect`.
Status RunScenarioFile(const std::string& path, std::ostream& out,
                       RunStats* stats = nullptr);

// Same, from text. `source` names it in errors; relative config paths are
// resolved against `base_dir`.
Status RunScenarioString(const std::string& yaml, const std::string& source,
                         const std::string& base_dir, std::ostream& out,
                         RunStats* stats = nullptr);

}  // namespace qm::sim

#endif  // QM_SIM_SIMULATOR_H_
