// The admission engine: the single source of truth for who may run.
//
// It holds counted resources and limits (global capacity, per agent type,
// per product, per workflow), active leases and the queue, and decides every
// grant, queueing, preemption, expiry and release. It performs no I/O and
// never reads the wall clock: time comes from the injected Clock, and every
// state change is reported, in order, to the EventSink.
//
// Thread safety: none. An Engine is owned by one thread (the server and the
// store serialise access around it).
//
// Errors: bad input is INVALID_REQUEST naming the field and changes nothing;
// a request larger than a limit can ever allow is RESOURCE_EXHAUSTED; an
// unknown allocation id is NOT_FOUND; an operation not valid in the
// allocation's current state is CONFLICT.
#ifndef QM_ENGINE_H_
#define QM_ENGINE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/config.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm {

// Receives every event synchronously, in sequence order, from inside the
// engine call that caused it. Must not call back into the engine.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnEvent(const Event& event) = 0;
};

class EngineImpl;

class Engine {
 public:
  // `clock` and `sink` (may be null) must outlive the engine. Fails with
  // INVALID_REQUEST when the config is inconsistent.
  static StatusOr<std::unique_ptr<Engine>> Create(Config config, Clock* clock,
                                                  EventSink* sink = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Grants the request now, queues it (with reason_queued and
  // expected_start), or refuses it. Preempts lower-priority work when the
  // request's level allows it.
  StatusOr<AllocateResult> Allocate(const AllocationRequest& request);

  // Validates every request first (any invalid one refuses the whole batch,
  // naming its index). With all_or_nothing, either every request is granted
  // now or none is (UNAVAILABLE naming the first that does not fit);
  // without, each is allocated as by Allocate, in order.
  StatusOr<std::vector<AllocateResult>> AllocateBatch(
      const std::vector<AllocationRequest>& requests, bool all_or_nothing);

  // Ends an active or preempted allocation with the holder's usage report
  // (outcome failure -> status failed). Frees its resources and starts
  // queued work that now fits.
  StatusOr<AllocationInfo> Release(std::string_view id,
                                   const UsageReport& usage = {});

  // Heartbeat: extends the lease by `ttl` (default: the request's ttl) from
  // now, never past the allocation's max_duration.
  StatusOr<AllocationInfo> Renew(std::string_view id,
                                 std::optional<Duration> ttl = std::nullopt);

  // Grows or shrinks an active allocation to `resources` (the new totals;
  // resources not named keep their amount). Shrinking always succeeds;
  // growing succeeds only if it fits now without jumping queued requests
  // that wait for the same resources (UNAVAILABLE otherwise).
  StatusOr<AllocationInfo> Reallocate(std::string_view id,
                                      const ResourceAmounts& resources);

  // Withdraws a queued request.
  StatusOr<AllocationInfo> Cancel(std::string_view id);

  // Takes back an allocation whose holder is known to be gone (its process
  // exited: the server saw it), without waiting for its lease to run out:
  // a running one ends as kExpired, a queued one is cancelled, each with
  // an event whose reason is "reclaimed: " + `reason`. An allocation that
  // already ended is answered as it is (reclaiming twice is harmless).
  // NOT_FOUND for an unknown id; INVALID_REQUEST for an empty reason or
  // one over 1 KiB.
  StatusOr<AllocationInfo> Reclaim(std::string_view id,
                                   const std::string& reason);

  // ---- Monitoring (docs/monitoring.md) ----

  // Takes a reading of the machine (the server's sampler gives one every
  // monitoring_intervals.resource_check) and acts on it against
  // config.monitoring: fires and clears alerts with hysteresis (kAlert
  // events; the pool's agents are read at the same time), holds new
  // requests that ask for memory while memory is under pressure (released
  // by a dispatch pass when it clears), and above gc_trigger_threshold
  // asks preemptible low-priority holders of memory to give it back
  // (kReclaimRequested, then preemption after the grace). INVALID_REQUEST
  // naming the field for a fraction outside 0..1 or a negative total;
  // nothing changes then.
  Status ObserveSystem(const SystemReading& reading);

  // ---- Money (docs/budgets.md) ----

  // Records spend of an active (or preempted, in its grace) allocation:
  // moves reserved to spent on every period budget it touches, raises
  // over_budget past its token grant (and ends it under the stop policy),
  // fires budget alerts and evaluates the circuit breaker. A report id seen
  // before for this allocation changes nothing. NOT_FOUND / CONFLICT for
  // unknown or finished allocations; INVALID_REQUEST for negative counts.
  StatusOr<AllocationInfo> ReportUsage(std::string_view id,
                                       const UsageReport& usage);

  // Raises an active allocation's token grant to `max_tokens` (at most
  // multiplier x its type's budget), reserving the difference against the
  // period budgets (BUDGET_EXCEEDED when it does not fit).
  StatusOr<AllocationInfo> ExtendTokens(std::string_view id,
                                        int64_t max_tokens);

  // Operator controls, each recorded as an `override` event with the actor.
  // Pause: no new grants (new requests queue) until Resume.
  Status Pause(const Actor& actor);
  Status Resume(const Actor& actor);
  // Every request of `product` (queued ones too) gets `level`; nullopt
  // removes the override (queued requests keep the level they have).
  Status SetPriorityOverride(const std::string& product,
                             std::optional<Level> level, const Actor& actor);
  // Breaker overrides (PERMISSION_DENIED when allow_override is false):
  // resume grants for the rest of the period despite the breaker...
  Status OverrideBreaker(const Actor& actor);
  // ...or raise the global period limits until the period resets (each
  // optional; at least one). Closes the breaker, which may trip again.
  Status RaiseLimits(std::optional<int64_t> max_tokens,
                     std::optional<double> max_cost_usd, const Actor& actor);

  // Runs the engine under `config` from now on (a config reload), keeping
  // every allocation, queued request, reservation, lock, budget spend and
  // counter. Capacities, limits, budgets, prices, weights and policies take
  // effect at once: queued requests that now fit are granted, and the new
  // limits apply to every later decision. What is kept by name: resources,
  // agent types, products and budgets (a budget added mid-period starts
  // from this period's recorded spend of its scope; a budget removed stops
  // counting, also for the allocations that reserved on it). Per-workflow
  // limits newly set apply to workflows first seen after the change.
  // Lock policies come from the new config when its `conflicts` section
  // changed (replacing prevent-conflicts changes made at run time), else
  // stay as they are. Emits one kConfigReloaded event naming the changes
  // (none when nothing changed), then the grants it caused.
  //
  // All or nothing. INVALID_REQUEST for a config Create would refuse;
  // CONFLICT, naming what is in the way, when the state cannot
  // live under it: a capacity or limit below what running allocations hold
  // now (release first, or lower it in steps), a resource removed while
  // allocations, queued requests or reservations use it, or the workspace
  // root moved while locks are held or claimed.
  StatusOr<ReconfigureResult> Reconfigure(Config config, const Actor& actor);

  // The current period's spend against its limits.
  CostReport Costs() const;
  // Utilisation, cost per task, queue performance and recommendations.
  MetricsReport Metrics() const;

  // ---- Conflicts (docs/conflicts.md) ----

  // Dry run of `request`: every file, workflow, resource, system, budget and
  // reservation conflict it would meet now, and reservations it would meet
  // within `horizon`, each with the holder and its expected release. Changes
  // nothing (beyond processing what is due, as every operation does).
  StatusOr<ConflictReport> CheckConflicts(const AllocationRequest& request,
                                          Duration horizon);
  // Registered conflicts: open and advisory ones first, then recently
  // resolved ones, newest first.
  std::vector<ConflictInfo> Conflicts() const;
  // Settles an open conflict. kPriorityBased preempts the holder (the
  // waiter's level must be above the holder's and the holder preemptible,
  // else CONFLICT); kQueueAndSerialize records that the waiter waits;
  // kForceRelease ends the holder now (an operator action: `actor.who` is
  // required). Each is recorded as a conflict_resolved or override event.
  StatusOr<ConflictInfo> ResolveConflict(std::string_view conflict_id,
                                         ResolveStrategy strategy,
                                         const Actor& actor);
  // seed 000 prevent-conflicts: sets the file-locking policy of `scope`
  // ("global" or a product name; nullopt policy removes a product's own
  // policy). Applies to requests admitted from now on and to queued ones.
  Status SetLockPolicy(const std::string& scope,
                       std::optional<LockPolicy> policy, const Actor& actor);
  // Whether the allocation with fencing token `token` still holds a lock
  // covering `path` (INVALID_REQUEST for a bad path).
  StatusOr<LockVerdict> VerifyLock(std::string_view path, uint64_t token);

  // ---- Reservations ----

  // Books capacity for a future window. Accepted only when it fits beside
  // every other reservation overlapping it (RESOURCE_EXHAUSTED naming the
  // resource otherwise); INVALID_REQUEST for a window in the past, a
  // non-positive duration or one beyond reservations.horizon.
  StatusOr<ReservationInfo> Reserve(const ReservationRequest& request);
  // Cancels a reservation (all its future occurrences). Allocations drawing
  // from it keep running.
  StatusOr<ReservationInfo> CancelReservation(std::string_view id,
                                              const Actor& actor);
  StatusOr<ReservationInfo> GetReservation(std::string_view id) const;
  // Scheduled and open reservations, by window start.
  std::vector<ReservationInfo> Reservations() const;

  // Looks up any allocation still known (active, queued, or recent history).
  StatusOr<AllocationInfo> Get(std::string_view id) const;
  // The allocations still known that match `filter`, in id order.
  // INVALID_REQUEST when filter.after is not an allocation id.
  StatusOr<AllocationList> List(const AllocationFilter& filter) const;

  // Totals, availability and utilization per resource, agent type, product.
  Snapshot GetSnapshot() const;

  // The queue, best score first, with each factor.
  std::vector<QueueEntry> Queue() const;

  // Processes everything due at clock->Now(): lease expiries, forced
  // releases after a grace period, starvation alerts. Every public
  // operation does this first; call it periodically when idle.
  void Tick();

  // The earliest future time Tick() has something to do, if any.
  std::optional<Time> NextDeadline() const;

  // ---- Durable state (docs/durability.md) ----

  // The whole state of the engine, in a versioned binary form: everything a
  // later call can observe or depend on (allocations, queue, leases and
  // timers, counters, money, locks and conflicts, reservations, overrides,
  // sequence numbers, the engine's time), not the config. Deterministic:
  // equal states give equal bytes. O(state).
  std::string SaveState() const;

  // An engine with the state SaveState() wrote, under `config` (which must
  // be the config that state was saved under). It answers every later call
  // exactly as the saved engine would have. DATA_LOSS when the bytes are
  // damaged, truncated or written by a newer qm (the message says where);
  // INVALID_REQUEST for a bad config. Emits no events.
  static StatusOr<std::unique_ptr<Engine>> Restore(Config config, Clock* clock,
                                                   EventSink* sink,
                                                   std::string_view state);

  // A digest of SaveState() (16 hex digits): engines with equal digests are
  // in the same state.
  std::string StateDigest() const;
  // The digest of SaveState() output `state` (StateDigest without saving
  // again).
  static std::string StateDigestOf(std::string_view state);

  const Config& config() const;

  // Verifies the internal invariants (capacity never exceeded at any level;
  // every active allocation counted exactly once; queue and lease indexes
  // consistent). INTERNAL naming the first violation. For tests; O(n).
  Status CheckInvariants() const;

 private:
  explicit Engine(std::unique_ptr<EngineImpl> impl);
  std::unique_ptr<EngineImpl> impl_;
};

}  // namespace qm

#endif  // QM_ENGINE_H_
