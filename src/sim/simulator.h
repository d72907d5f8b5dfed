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
//                                      # (an inline config's relative
//                                      # workspace_root is, too)
//   timeline:                          # non-decreasing `at` offsets
//     - at: 0m
//       allocate: {id: b1, agent_type: backend-engineer, run_for: 30m, ...}
//       count: 3                       # optional: b1-1, b1-2, b1-3
//     - at: 30m
//       release: b1                    # or {id: b1, tokens: 75000, ...}
//   Other operations: allocate_batch {all_or_nothing, requests: [...]},
//   renew (id or {id, ttl}), reallocate {id, resources}, cancel id,
//   queue {} (prints scores), snapshot {}, advance {}.
//   Money operations (docs/budgets.md):
//     usage: {id, report_id, tokens, input_tokens, output_tokens,
//             cached_input_tokens, cost_usd, model}   spend while running;
//             prints {"op":"usage","id","budget":{...}} after its events
//     extend: {id, max_tokens}        raise the grant; prints the budget too
//     pause: {by, reason}             operator: no new grants...
//     resume: {by, reason}            ...until resumed
//     priority_override: {product, level, by, reason}  (level null clears)
//     breaker_override: {by, reason}  resume despite the tripped breaker
//     raise_limits: {max_tokens, max_cost_usd, by, reason}  for the period
//     costs: {}      prints {"t","costs":{...}} (seed 001 "Cost tracking")
//     metrics: {}    prints {"t","metrics":{...}} ("Metrics & Optimization")
//     dashboard: {}  prints {"t","dashboard":"<Markdown text>"}
//   Conflict operations (docs/conflicts.md); request fields as allocate's:
//     check_conflicts: {request: {...allocate fields...}, time_horizon: 4h}
//       or seed 000's {proposed_allocation: {workflow_id, resources,
//       files: [...]}, check_future: true, time_horizon: "4h"} (`files` are
//       exclusive_access paths; check_future: false means now only; no
//       time_horizon means now only). A dry run: prints
//       {"t","op":"check_conflicts","result":{...conflict report...}}
//     resolve_conflict: {conflict: conf_1 | waiter: <allocation id>,
//       strategy: priority_based|queue_and_serialize|force_release, by,
//       reason}   `waiter` picks the open conflict holding that allocation
//       back; prints {"t","op","result":{...the conflict...}}
//     prevent_conflicts: {policy_type: file_locking, scope: global|<product>,
//       enforcement: strict|advisory|inherit, exceptions, by, reason}
//       sets the lock policy (`inherit`, or null, drops a product's own
//       policy so the global one applies); prints the policy set
//     lock_verify: {path, token} or {path, id}   whether the fencing token
//       (`id`: that allocation's current one) still holds the path; prints
//       {"t","op","result":{...verdict...}}
//     conflicts: {}  prints {"t","conflicts":[...]}: open ones first
//   Reservations:
//     reserve: {id, start, duration, resources, workflow_id | product,
//       agent_type, requester, priority, recurrence, until, metadata}
//       `start` (and `until`) is an offset from the scenario start like
//       `at`, or a UTC time; prints {"t","op","id","result":{...}}. `id`
//       names the reservation in this scenario: cancel_reservation: <id>
//       (or {id, by, reason}) and allocate specs with `reservation: <id>`
//       (its reservation_id) refer to it
//     reservations: {}  prints {"t","reservations":[...]}
//   Operator actions print through their `override` events. An operation
//   the engine refuses prints {"t","op","id","error":{code, message, ...}}
//   (budget and breaker errors add details, context, alternative_options)
//   and the run goes on.
//   `allocate` specs take every request field (model, wait_for_budget,
//   exclusive_access...) plus `id`, `run_for`, `usage` (the release's usage
//   report, with the fields above and `outcome`) and `reservation` (a
//   reservation's scenario id).
//   expect {id, status, reason_contains, model, over_budget, used_tokens,
//   warnings} checks an allocation (`warnings`: how many advisory-lock
//   warnings it was granted with); expect {costs: {cost_usd, tokens_used,
//   breaker_open, paused, alerts}} checks the cost report (`alerts`: how
//   many fired this period; numbers within 1e-6 relative); expect
//   {conflicts: {open, advisory, resolved}} counts the conflicts listed with
//   each status. A failed expectation stops the run with CONFLICT.
//   Reservation events print {"t","event","id","reservation",...} with the
//   reservation's scenario id.
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

struct RunOptions {
  // A report printed after the summary: "costs" or "metrics" (a JSON line
  // {"costs": {...}} / {"metrics": {...}}), "dashboard" (the Markdown text
  // of api::RenderCostDashboard, not JSON), or "" for none. Anything else
  // is INVALID_REQUEST before the run starts.
  std::string report;
};

// Runs the scenario file at `path`, writing JSON lines to `out`.
// INVALID_REQUEST (with file:line:column) for a malformed scenario,
// NOT_FOUND for a missing file, CONFLICT for a failed `expect`.
Status RunScenarioFile(const std::string& path, std::ostream& out,
                       RunStats* stats = nullptr,
                       const RunOptions& options = {});

// Same, from text. `source` names it in errors; relative config paths are
// resolved against `base_dir`.
Status RunScenarioString(const std::string& yaml, const std::string& source,
                         const std::string& base_dir, std::ostream& out,
                         RunStats* stats = nullptr,
                         const RunOptions& options = {});

}  // namespace qm::sim

#endif  // QM_SIM_SIMULATOR_H_
