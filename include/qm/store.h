// Durable storage of the engine's journal and snapshots, behind one
// interface: an SQLite file in a state directory (the default: nothing to
// install or start) or a PostgreSQL database shared by several servers.
//
// A store keeps bytes. Each journal record is an opaque payload with a
// sequence number (1, 2, 3... without gaps), the engine time it happened at,
// the leader epoch that wrote it and a checksum; a snapshot is an opaque
// payload that stands for every record up to its `seq`, with the engine's
// state digest beside it. What a payload means is the durable engine's
// business (src/store/durable_engine.h), not the store's. Beside them a
// store keeps the server's usage history (HistoryRecord): time-stamped
// payloads by tier, outside the journal and the snapshots.
//
// Durability: Append returns OK only once the records are committed (SQLite
// WAL with synchronous=FULL by default; PostgreSQL's commit). A store never
// reports a record it has not verified: reading stops at the first record
// whose checksum fails or whose sequence number breaks the run, and says so
// (DATA_LOSS), rather than skipping it.
//
// Leadership: any number of PostgreSQL stores may open one database; exactly
// one leads at a time. Leading is a row with an epoch and a lease; every
// journal and snapshot write carries the writer's epoch and the database
// itself refuses it when the epoch is no longer the current one, so a
// paused ex-leader can never write after a new leader took over. An SQLite
// store leads from Open on (it holds the state directory's exclusive lock).
//
// Thread safety: one thread at a time calls a Store (the durable engine's
// writer thread, or a test). Implementations may run their own background
// threads (lease renewal); those never call back into the caller.
#ifndef QM_STORE_H_
#define QM_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"

namespace qm {

// SQLite's synchronous setting.
enum class SyncMode {
  // Default. An acknowledged change survives a process crash and a power
  // loss (every commit is fsynced).
  kFull,
  // May lose the last moments after a power loss, never after a process
  // crash (WAL is fsynced at checkpoints only).
  kNormal,
};

struct StoreOptions {
  // Where the state lives. Either a directory for the SQLite store (created
  // when missing; holds `qm.db` and the `qm.lock` lock file) or a
  // PostgreSQL connection URI ("postgresql://..." or "postgres://...").
  // Required: the CLI picks the default (`./var/qm`, or `$XDG_STATE_HOME/qm`).
  std::string location;

  // SQLite only. Default kFull.
  SyncMode sync = SyncMode::kFull;

  // PostgreSQL only: how long a leader's lease lasts without renewal. A
  // follower takes over at most about this long after the leader died.
  // Default 5 s.
  Duration leader_lease = Duration(5000);
  // PostgreSQL only: how often the leader renews its lease (must be well
  // under leader_lease). Default 1 s.
  Duration lease_renew_interval = Duration(1000);
  // Names this instance in the leader row and in messages; must be unique
  // among live instances (a holder takes its own lease back at once, which
  // makes a restart quick). Default "<hostname>:<pid>" ("#N" appended for
  // the second and later stores of one process).
  std::string node_id;
};

struct JournalRecord {
  uint64_t seq = 0;     // 1, 2, 3... contiguous within a store
  int64_t time_ms = 0;  // engine time of the change, ms since the epoch
  uint64_t epoch = 0;   // leader epoch that wrote it (SQLite: 1)
  std::string payload;  // opaque to the store
};

struct SnapshotData {
  uint64_t seq = 0;     // the last journal record the snapshot includes
  int64_t time_ms = 0;  // engine time of that record
  std::string digest;   // the engine's state digest, checked on recovery
  std::string payload;  // opaque to the store
};

// What a store holds, for `qm state check` and messages.
struct StoreInfo {
  std::string kind;      // "sqlite" or "postgresql"
  std::string location;  // the file path, or the URI without password
  int schema_version = 0;
  uint64_t snapshot_seq = 0;  // 0 when there is no snapshot
  uint64_t first_seq = 0;     // first journal record kept (0 when none)
  uint64_t last_seq = 0;      // last journal record kept (0 when none; the
                              // history ends at max(last_seq, snapshot_seq))
  uint64_t records = 0;       // journal records kept
  uint64_t bytes = 0;         // payload bytes of the kept records
};

// Who leads a store, as the store itself records it (PostgreSQL: the leader
// row), for redirecting changes to the leader and for /readyz.
struct LeaderInfo {
  // The leading instance's StoreOptions::node_id; "" when no instance ever
  // led.
  std::string node_id;
  uint64_t epoch = 0;  // its epoch (SQLite: 1)
  // How long its lease still lasts by the database's clock. Zero when it
  // ran out or was given up: nobody leads until a follower takes over.
  Duration lease_left{0};
};

// One entry of the usage history that the server's sampler keeps
// (src/server/sampler.h, docs/monitoring.md): a reading of the machine and
// the pool, or an average of several. It is not engine state: it is not in
// the journal or the snapshots, recovery never replays it, and `qm state
// export` leaves it behind.
struct HistoryRecord {
  int tier = 0;         // the sampler's: 0 raw samples, 1 5-minute averages
  int64_t time_ms = 0;  // when it was taken, ms since the epoch
  std::string payload;  // opaque to the store
};

// Counters since Open, for benchmarks and /metrics.
struct StoreStats {
  uint64_t commits = 0;        // Append transactions committed
  uint64_t records = 0;        // records appended
  uint64_t payload_bytes = 0;  // their payload bytes
  uint64_t snapshots = 0;      // snapshots written
};

class Store {
 public:
  // Opens (creating when missing) the store that `options.location` names,
  // migrating its schema forward. UNAVAILABLE when another process holds
  // the SQLite state directory ("state directory ... is in use by qm pid
  // N") or the database cannot be reached; DATA_LOSS when the file is not
  // a readable database; INVALID_REQUEST for a bad location.
  static StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);

  virtual ~Store() = default;

  // ---- Leadership (PostgreSQL; an SQLite store always leads) ----

  // Waits up to `timeout` for the leader lease: takes it when no leader
  // holds a live lease, bumping the epoch. UNAVAILABLE when another
  // instance still leads at the end of the wait.
  virtual Status AcquireLeadership(Duration timeout) = 0;
  // Whether this instance believes it leads (its lease has not run out by
  // its own clock). Advisory: the database's acceptance of a write is the
  // authority (a write can be refused while this says true, and a leader
  // whose lease lapsed with nobody taking over may still write).
  virtual bool IsLeader() const = 0;
  // Whether another instance took the leadership over from this one since
  // it last acquired it: a write was refused for a stale epoch, or a lease
  // renewal found a newer one. Its writes will all be refused; it can only
  // follow (and AcquireLeadership again once that leader's lease runs out).
  // Thread safe. An SQLite store is never superseded.
  virtual bool Superseded() const { return false; }
  // The epoch this instance leads (or last led) with; 0 before leading.
  virtual uint64_t epoch() const = 0;
  // Gives leadership up at once (graceful shutdown), so a follower need not
  // wait for the lease to run out.
  virtual Status ResignLeadership() = 0;
  // Reads who leads now (any instance, leading or not). An SQLite store
  // names itself, with a lease that never runs out. UNAVAILABLE when the
  // database cannot be reached.
  virtual StatusOr<LeaderInfo> Leader() = 0;

  // ---- Writing (leader only) ----

  // Appends `records` in one transaction. Their seqs must continue the
  // journal exactly (INVALID_REQUEST otherwise); each record's epoch is set
  // to this instance's. OK means durable. UNAVAILABLE when this instance no
  // longer leads (the database refused the stale epoch): nothing of the
  // batch was written.
  virtual Status Append(std::vector<JournalRecord>* records) = 0;

  // Stores `snapshot` and, in the same transaction, deletes every journal
  // record with seq <= snapshot.seq and any older snapshot. The snapshot's
  // seq must be at most the last appended record, except on an empty store
  // (no journal, no snapshot: `qm state import`), where it may start the
  // history at any seq and the journal continues after it.
  virtual Status WriteSnapshot(const SnapshotData& snapshot) = 0;

  // ---- Usage history (not engine state; see HistoryRecord) ----

  // Appends `records` (any tiers, any order; several may share a time) in
  // one transaction: all of them or none. OK means committed; SQLite
  // commits history without an fsync of its own (synchronous=NORMAL for
  // that transaction), so it survives a process crash at once and a power
  // loss from the next journal commit or checkpoint on (a sample a second
  // must not cost an fsync a second). Leader only, fenced like the
  // journal: on PostgreSQL every row carries this instance's epoch and the
  // database refuses it when that is no longer the current one, so a
  // paused ex-leader cannot slip its machine's readings in among the new
  // leader's. UNAVAILABLE when this instance does not lead (or no longer
  // does) or the database cannot be reached; INVALID_REQUEST for a
  // negative tier.
  virtual Status AppendHistory(const std::vector<HistoryRecord>& records) = 0;

  // The records of `tier` taken at `from_ms` or later, oldest first
  // (records of one time in the order they were appended), at most `limit`
  // of them: the oldest ones (read on from the last one's time to page).
  // Any instance, leading or not. Payloads come back as stored: checking
  // them is the reader's business.
  virtual StatusOr<std::vector<HistoryRecord>> ReadHistory(int tier,
                                                           int64_t from_ms,
                                                           size_t limit) = 0;

  // Deletes the records of `tier` taken before `before_ms`. Leader only
  // (PostgreSQL: refused with UNAVAILABLE, nothing deleted, when the
  // database's leader epoch is no longer this instance's).
  virtual Status PruneHistory(int tier, int64_t before_ms) = 0;

  // ---- Reading ----

  // The latest snapshot, or nullopt when there is none. DATA_LOSS when it
  // is damaged.
  virtual StatusOr<std::optional<SnapshotData>> LatestSnapshot() = 0;

  // Calls `visit` with every journal record whose seq > `after`, in order
  // (the payload view is valid during the call only). Stops early when
  // `visit` returns an error, and returns that error. DATA_LOSS, after
  // visiting every good record before it, at the first record whose
  // checksum fails or whose seq does not follow its predecessor (or
  // `after`), naming that seq and the last good one. Followers call it
  // repeatedly with their last seen seq to tail the journal.
  virtual Status ReadJournal(
      uint64_t after,
      const std::function<Status(const JournalRecord& record)>& visit) = 0;

  // Full verification: the database's own integrity check, every record's
  // checksum, the journal's continuity from the snapshot on. DATA_LOSS
  // naming the first problem. (The snapshot digest is checked by the
  // durable engine, which can decode it.)
  virtual Status Check() = 0;

  virtual StatusOr<StoreInfo> Info() = 0;
  virtual StoreStats stats() const = 0;
};

}  // namespace qm

#endif  // QM_STORE_H_
