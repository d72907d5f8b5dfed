// The engine made durable: every change is committed to a Store (journal +
// snapshots) before its caller gets the answer, and the state is recovered
// after a crash exactly as it was acknowledged. See docs/durability.md.
//
// How: the engine stays in memory and decides at once; each state-changing
// call is recorded as an operation (the call and its arguments, with the
// engine time it ran at) and handed to one writer thread, which commits
// everything that arrived while its previous commit was in flight in one
// transaction (group commit). A caller waits for the commit that holds its
// operation; the events the operation caused are delivered to the sink after
// that commit and before its callers are answered, in order, from the writer
// thread (so the sink must be quick and must not call back in). Snapshots of
// the whole engine state are written every `snapshot_every_records` operations
// or `snapshot_interval`, and the journal is truncated behind them. Recovery is
// the latest snapshot plus a replay of the journal after it, each operation
// at its recorded time; then what fell due while qm was down (lease
// expiries, grace periods, reservation windows) is processed at once, in
// time order, with its events.
//
// Fail-stop: when a commit fails, the operations of that batch (and every
// later one) answer the commit's error and the engine stops taking changes
// and answering reads: its memory is ahead of what is durable. Restarting
// recovers what was committed.
//
// Thread safety: every method may be called from any thread.
#ifndef QM_DURABLE_ENGINE_H_
#define QM_DURABLE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/config.h"
#include "qm/engine.h"
#include "qm/status.h"
#include "qm/store.h"
#include "qm/types.h"

namespace qm {

struct DurableOptions {
  // Where and how to store (see StoreOptions).
  StoreOptions store;

  // A snapshot is written after this many journaled operations... Default
  // 100,000.
  uint64_t snapshot_every_records = 100000;
  // ...or this long after the previous one when anything changed since.
  // Default 10 minutes.
  Duration snapshot_interval = std::chrono::minutes(10);

  // PostgreSQL: how long Open waits to become the leader (another instance
  // leads while its lease lasts). Default 15 s.
  Duration leadership_wait = std::chrono::seconds(15);

  // PostgreSQL, several servers on one database: when another instance
  // leads, Open returns at once with a follower instead of waiting. A
  // follower keeps the state warm by applying the leader's journal every
  // `tail_interval`, answers reads from it (behind the leader by up to that
  // interval), refuses changes with UNAVAILABLE, and takes over as leader
  // when the leader's lease runs out (store.leader_lease after its last
  // renewal), with every change the old leader committed. A leader that
  // another instance supersedes steps down and follows (IsLeader). Default
  // false: Open waits for the leadership, and a superseded leader stops
  // taking changes until it is reopened.
  bool follow = false;
  // Default 100 ms.
  Duration tail_interval = std::chrono::milliseconds(100);

  // Called from the writer thread after each journal commit with the time
  // the store took to make it durable (seconds) and the operations in it,
  // for metrics. Must be quick and must not call into the engine. Default
  // none.
  std::function<void(double seconds, size_t operations)> on_commit;

  // How many of the events that the recovery's journal replay regenerates
  // (those after the snapshot it starts from, with their original seqs)
  // are kept for TakeRecoveredEvents, the last ones. Default 100,000; 0:
  // none.
  size_t recovered_events = 100000;
};

// What Open found and did.
struct RecoveryInfo {
  bool fresh = false;             // no state existed: a new one was created
  uint64_t snapshot_seq = 0;      // the snapshot recovery started from
  uint64_t replayed = 0;          // journal records replayed after it
  uint64_t last_seq = 0;          // the last record recovered
  int64_t recovered_time_ms = 0;  // engine time at the last record
  Duration took{};                // wall time of the recovery
  Duration restore_took{};        // of which restoring the snapshot
  Duration replay_took{};         // and replaying the journal after it
  // The config given differed from the state's: what its reload changed.
  std::vector<std::string> config_changes;
};

struct DurableStats {
  uint64_t operations = 0;     // operations journaled since Open
  uint64_t commits = 0;        // transactions committed since Open
  uint64_t payload_bytes = 0;  // journal payload bytes since Open
  uint64_t snapshots = 0;      // snapshots written since Open
  // Times this instance stopped leading because another took the lease
  // over (DurableOptions::follow), since Open.
  uint64_t step_downs = 0;
  uint64_t last_seq = 0;       // the last journal seq applied
  uint64_t committed_seq = 0;  // the last journal seq committed
  // Operations per commit (0 before the first commit).
  double AverageBatch() const {
    return commits == 0 ? 0 : static_cast<double>(operations) / commits;
  }
};

class DurableEngineImpl;

class DurableEngine {
 public:
  // Opens the store, becomes its leader (waiting up to
  // options.leadership_wait), and recovers the state: from the latest
  // snapshot and the journal after it, or a fresh engine under `config` when
  // the store is empty (its first snapshot is written at once). Then
  // processes what fell due while down. `clock` (null: the system clock)
  // gives the engine its time; it must not go backwards across restarts by
  // more than the state's own time (the engine time never goes back).
  // `sink` (may be null) receives the events of committed operations.
  //
  // With options.follow, when another instance leads, it returns a follower
  // (see DurableOptions::follow).
  //
  // When the state was written under a different config, it is recovered
  // under its own and then `config` is applied as a reload (Reconfigure,
  // journaled; RecoveryInfo::config_changes says what changed). A follower
  // runs under the leader's config.
  //
  // Errors: those of Store::Open; DATA_LOSS when the snapshot or the
  // journal is damaged (naming the first bad record and the last good one:
  // recovery never skips a record); the error of Reconfigure when `config`
  // cannot be applied to the state (the state is left as it was);
  // UNAVAILABLE when another instance leads.
  static StatusOr<std::unique_ptr<DurableEngine>> Open(
      const DurableOptions& options, Config config, Clock* clock = nullptr,
      EventSink* sink = nullptr);

  // Commits what is pending and stops the writer (see Close).
  ~DurableEngine();
  DurableEngine(const DurableEngine&) = delete;
  DurableEngine& operator=(const DurableEngine&) = delete;

  // ---- Changes: the contract of the Engine method of the same name,
  // answered once committed ----
  StatusOr<AllocateResult> Allocate(const AllocationRequest& request);
  StatusOr<std::vector<AllocateResult>> AllocateBatch(
      const std::vector<AllocationRequest>& requests, bool all_or_nothing);
  StatusOr<AllocationInfo> Release(std::string_view id,
                                   const UsageReport& usage = {});
  StatusOr<AllocationInfo> Renew(std::string_view id,
                                 std::optional<Duration> ttl = std::nullopt);
  StatusOr<AllocationInfo> Reallocate(std::string_view id,
                                      const ResourceAmounts& resources);
  StatusOr<AllocationInfo> Cancel(std::string_view id);

  // Hands a job to a thread that may wait (a worker pool's Post).
  using Defer = std::function<void(std::function<void()>)>;

  // Allocate, Release and Renew without waiting for the commit: the call
  // is decided at once and `done` gets its answer on the writer thread
  // once the commit holding it is durable (or the failure that stopped
  // it). Nothing blocks while the commit is in flight, so a server need
  // not park a thread per request. `done` must be quick and must not call
  // into this engine (hand the work to another thread).
  //
  // With `defer`, the caller must not wait on the engine (an event-loop
  // thread): when another thread holds the engine right now (a long read,
  // a snapshot, a step-down, another caller's change), the call is not
  // made here but handed to `defer` as a job (holding copies of the
  // arguments) that makes it without `defer`; `done` then belongs to the
  // job (a job dropped unrun never answers). Without `defer`, the call
  // waits for the engine. Either way, a call refused before it is applied
  // (the engine closed, not leading) answers `done` at once on the thread
  // making it.
  void AllocateAsync(const AllocationRequest& request,
                     std::function<void(StatusOr<AllocateResult>)> done,
                     const Defer& defer = nullptr);
  void ReleaseAsync(std::string_view id, const UsageReport& usage,
                    std::function<void(StatusOr<AllocationInfo>)> done,
                    const Defer& defer = nullptr);
  void RenewAsync(std::string_view id, std::optional<Duration> ttl,
                  std::function<void(StatusOr<AllocationInfo>)> done,
                  const Defer& defer = nullptr);
  StatusOr<AllocationInfo> Reclaim(std::string_view id,
                                   const std::string& reason);
  Status ObserveSystem(const SystemReading& reading);
  StatusOr<AllocationInfo> ReportUsage(std::string_view id,
                                       const UsageReport& usage);
  StatusOr<AllocationInfo> ExtendTokens(std::string_view id,
                                        int64_t max_tokens);
  Status Pause(const Actor& actor);
  Status Resume(const Actor& actor);
  Status SetPriorityOverride(const std::string& product,
                             std::optional<Level> level, const Actor& actor);
  Status OverrideBreaker(const Actor& actor);
  Status RaiseLimits(std::optional<int64_t> max_tokens,
                     std::optional<double> max_cost_usd, const Actor& actor);
  StatusOr<ConflictInfo> ResolveConflict(std::string_view conflict_id,
                                         ResolveStrategy strategy,
                                         const Actor& actor);
  Status SetLockPolicy(const std::string& scope,
                       std::optional<LockPolicy> policy, const Actor& actor);
  StatusOr<ReservationInfo> Reserve(const ReservationRequest& request);
  StatusOr<ReservationInfo> CancelReservation(std::string_view id,
                                              const Actor& actor);
  // Processes what is due now (call it at NextDeadline()).
  Status Tick();
  // These change nothing but what is due now, which is journaled as a tick.
  StatusOr<ConflictReport> CheckConflicts(const AllocationRequest& request,
                                          Duration horizon);
  StatusOr<LockVerdict> VerifyLock(std::string_view path, uint64_t token);

  // ---- Reads: answered from memory once every change made before them is
  // committed (a read never shows a change that could still be lost) ----
  StatusOr<AllocationInfo> Get(std::string_view id);
  StatusOr<AllocationList> List(const AllocationFilter& filter);
  StatusOr<Snapshot> GetSnapshot();
  StatusOr<std::vector<QueueEntry>> Queue();
  StatusOr<CostReport> Costs();
  StatusOr<MetricsReport> Metrics();
  StatusOr<std::vector<ConflictInfo>> Conflicts();
  StatusOr<ReservationInfo> GetReservation(std::string_view id);
  StatusOr<std::vector<ReservationInfo>> Reservations();
  std::optional<Time> NextDeadline();
  // The engine's state digest and invariants check (tests, `qm state`).
  StatusOr<std::string> StateDigest();
  Status CheckInvariants();
  // The config the engine runs under now (Open's, or the last reload's).
  Config config() const;

  // Engine::Reconfigure, journaled like any change: a config reload. The
  // same config as now is answered at once with no change. INVALID_REQUEST
  // also when the config cannot be recorded (its YAML does not load back).
  StatusOr<ReconfigureResult> Reconfigure(const Config& config,
                                          const Actor& actor);

  // ---- Leadership (options.follow) ----

  // Whether this instance leads (takes changes). Always true without
  // `follow`, until Close or a failed commit. With `follow`, a leader that
  // another instance took the lease over from (its lease ran out while it
  // was frozen or cut off, and its next write was refused for its stale
  // epoch, or a renewal found the newer one) steps down instead of
  // stopping: the changes it had not committed are answered UNAVAILABLE
  // and dropped with its state, it reloads the new leader's state and
  // follows it (taking over again when that one's lease runs out).
  bool IsLeader() const;
  // Waits up to `timeout` for this follower to take over. UNAVAILABLE when
  // it still follows; the failure when following broke (for example the
  // journal is damaged).
  Status WaitUntilLeader(Duration timeout);
  // Whether this instance keeps up with the store. OK while it leads and
  // while a follower applies the leader's journal; while a follower cannot
  // read it (UNAVAILABLE or DEADLINE_EXCEEDED from the store: a dropped
  // connection, a restarting database), that error, retried every
  // tail_interval from the last record applied (its reads are answered
  // from the copy it has, older than usual); the failure once following
  // broke for good (a damaged journal).
  Status FollowStatus() const;

  // ---- Who leads (several servers on one PostgreSQL) ----

  // The store's leader (Store::Leader: node id, epoch, lease left), read
  // from the store at most once per options.tail_interval and answered
  // from that reading in between, so a server may ask per request.
  // UNAVAILABLE when the store cannot be reached or the engine is closed.
  StatusOr<LeaderInfo> Leader();

  // ---- Usage history (the server's sampler; see Store::AppendHistory) ----

  // The Store's history methods, under the lock the writer takes for the
  // store (so a call may wait for the commit in flight, never for changes
  // still queued). Off the journal: history is not engine state, so it is
  // never replayed, snapshotted or exported. AppendHistory and PruneHistory
  // answer UNAVAILABLE unless this instance leads (IsLeader), and the
  // failure after a failed commit; ReadHistory works on a follower too.
  // All three answer UNAVAILABLE after Close.
  Status AppendHistory(const std::vector<HistoryRecord>& records);
  StatusOr<std::vector<HistoryRecord>> ReadHistory(int tier, int64_t from_ms,
                                                   size_t limit);
  Status PruneHistory(int tier, int64_t before_ms);

  // ---- Durability ----

  // Waits until every change made so far is committed; the commit error
  // after a failed commit.
  Status Flush();
  // Writes a snapshot of the current state now (after committing what is
  // pending) and truncates the journal behind it.
  Status WriteSnapshot();
  // Commits what is pending, stops the writer and, on PostgreSQL, gives up
  // leadership. Later calls answer UNAVAILABLE. Idempotent.
  Status Close();

  const RecoveryInfo& recovery() const;
  // The events the recovery regenerated by replaying the journal after its
  // snapshot (see DurableOptions::recovered_events), in seq order, once:
  // they were delivered before the restart, so a server adds them to its
  // event history (for clients resuming a stream) without sending them
  // again. Later calls return none.
  std::vector<Event> TakeRecoveredEvents();
  DurableStats stats() const;
  // The store's description (kind, location, journal extent).
  StatusOr<StoreInfo> StoreDescription();

 private:
  explicit DurableEngine(std::unique_ptr<DurableEngineImpl> impl);
  std::unique_ptr<DurableEngineImpl> impl_;
};

// ---- Offline state tools (`qm state check|export|import`) ----

// A stored state, read and verified.
struct StateSummary {
  StoreInfo store;
  uint64_t snapshot_seq = 0;
  int64_t snapshot_time_ms = 0;
  uint64_t records = 0;  // journal records after the snapshot (all replayed)
  uint64_t last_seq = 0;
  int64_t last_time_ms = 0;
  std::string digest;              // the engine's state digest after the replay
  int64_t active = 0, queued = 0;  // allocations in that state
  std::string config_yaml;         // the config the state lives under
};

// Verifies the state in `store` without changing it: Store::Check (the
// database's integrity, every record's checksum, the journal's continuity),
// the snapshot (it decodes and restores, under the config it records, to
// the digest it was written with), every journal record after it (decodes
// and replays), and the engine's invariants at the end. DATA_LOSS naming
// the first problem; CONFLICT when the store holds no state.
StatusOr<StateSummary> CheckState(Store& store);

// The op a journal record holds, by name ("allocate", "release"...), for
// listings; DATA_LOSS when it does not decode.
StatusOr<std::string> JournalOpName(std::string_view payload);

// Writes a whole state into `target`, which must be empty (CONFLICT
// otherwise), after verifying it exactly as CheckState does (nothing is
// written when it does not verify). `journal` holds the records after
// `snapshot`, in order. Takes the target's leadership for the writes.
// `summary` (optional) describes the state imported, its `store` the target
// after the writes.
Status ImportState(Store& target, const SnapshotData& snapshot,
                   const std::vector<JournalRecord>& journal,
                   StateSummary* summary = nullptr);

}  // namespace qm

#endif  // QM_DURABLE_ENGINE_H_
