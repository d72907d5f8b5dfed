// The PostgreSQL store: the journal, the snapshot and the leader lease in
// one database that several qm servers share (libpq's C API only).
//
// Schema (migrated forward under a transaction-scoped advisory lock, so
// several instances may open a fresh database at once):
//   qm_schema_version(version)               one row
//   qm_journal(seq, time_ms, epoch, crc, payload)
//   qm_snapshot(seq, time_ms, digest, crc, payload, epoch)
//   qm_leader(id = 1, epoch, holder, lease_until)
//   qm_history(id, tier, time_ms, epoch, payload)   (version 2) the
//     sampler's usage history, indexed by (tier, time_ms); not engine state
//
// Leadership: the leader row's epoch grows by one at every change of
// leader; the lease is measured by the database's clock. A follower takes
// the row when its lease has run out (AcquireLeadership polls), the leader
// renews it from a background thread on a connection of its own.
//
// Fencing lives in the database, not in this process: a BEFORE INSERT
// trigger on qm_journal, qm_snapshot and qm_history reads the leader row FOR
// SHARE and refuses a row whose epoch is not the current one (SQLSTATE QMF01).
// The share lock orders every write against an epoch bump: a takeover's UPDATE
// waits for the old leader's open write to commit, and a write that comes
// after the bump sees the new epoch and fails. The new leader reads the
// last seq only after its bump committed, so it continues exactly where the
// old leader stopped.
//
// A leader whose lease ran out while nobody took over may still write: the
// epoch, not the clock, is the fence, and as long as no one bumped it the
// journal has one writer. IsLeader() turns false when the lease runs out by
// this process's clock and true again if a renewal succeeds before anyone
// takes over. After ResignLeadership this instance refuses its own writes.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "store/libpq_dl.h"
#include "store/store_impl.h"

namespace qm::store {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kSchemaVersion = 2;
// pg_advisory_xact_lock key that serialises schema migrations ("qmschema").
constexpr int64_t kMigrationLockKey = 0x716d736368656d61;
// The fencing trigger's SQLSTATE.
constexpr char kFencedSqlState[] = "QMF01";
// Rows per FETCH when streaming the journal.
constexpr int kFetchRows = 1000;

// Type OIDs of the binary parameters (pg_type.h).
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kByteaArrayOid = 1001;
constexpr Oid kInt8ArrayOid = 1016;

// Migration N takes schema version N-1 to N.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE qm_journal (
  seq bigint PRIMARY KEY,
  time_ms bigint NOT NULL,
  epoch bigint NOT NULL,
  crc bigint NOT NULL,
  payload bytea NOT NULL);
CREATE TABLE qm_snapshot (
  seq bigint PRIMARY KEY,
  time_ms bigint NOT NULL,
  digest text NOT NULL,
  crc bigint NOT NULL,
  payload bytea NOT NULL,
  epoch bigint NOT NULL);
CREATE TABLE qm_leader (
  id integer PRIMARY KEY CHECK (id = 1),
  epoch bigint NOT NULL,
  holder text NOT NULL,
  lease_until timestamptz NOT NULL);
INSERT INTO qm_leader VALUES (1, 0, '', '-infinity');
CREATE FUNCTION qm_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
  leader_epoch bigint;
BEGIN
  SELECT epoch INTO leader_epoch FROM qm_leader WHERE id = 1 FOR SHARE;
  IF leader_epoch IS NULL OR NEW.epoch IS DISTINCT FROM leader_epoch
     OR NEW.epoch < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'QMF01',
      MESSAGE = format('qm fencing: %s write with epoch %s refused, the '
                       'leader epoch is %s', TG_TABLE_NAME, NEW.epoch,
                       leader_epoch);
  END IF;
  RETURN NEW;
END
$fence$;
CREATE TRIGGER qm_journal_fence BEFORE INSERT ON qm_journal
  FOR EACH ROW EXECUTE FUNCTION qm_fence();
CREATE TRIGGER qm_snapshot_fence BEFORE INSERT ON qm_snapshot
  FOR EACH ROW EXECUTE FUNCTION qm_fence();
)sql",
    // 2: the usage history, fenced like the journal. id keeps records of
    // one time in the order they were appended.
    R"sql(
CREATE TABLE qm_history (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tier integer NOT NULL,
  time_ms bigint NOT NULL,
  epoch bigint NOT NULL,
  payload bytea NOT NULL);
CREATE INDEX qm_history_by_time ON qm_history (tier, time_ms);
CREATE TRIGGER qm_history_fence BEFORE INSERT ON qm_history
  FOR EACH ROW EXECUTE FUNCTION qm_fence();
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

constexpr char kAppendSql[] =
    "INSERT INTO qm_journal (seq, time_ms, epoch, crc, payload) "
    "SELECT s, t, $3, c, p FROM unnest($1::int8[], $2::int8[], $4::int8[], "
    "$5::bytea[]) AS r(s, t, c, p)";
// Rows are inserted in the batch's order, so their ids follow it.
constexpr char kAppendHistorySql[] =
    "INSERT INTO qm_history (tier, time_ms, epoch, payload) "
    "SELECT t, m, $3, p FROM unnest($1::int8[], $2::int8[], $4::bytea[]) "
    "WITH ORDINALITY AS r(t, m, p, o) ORDER BY o";
constexpr char kReadHistorySql[] =
    "SELECT time_ms, payload FROM qm_history WHERE tier = $1 AND "
    "time_ms >= $2 ORDER BY time_ms, id LIMIT $3";
// Deletes only while $3 is still the leader epoch (the leader row read FOR
// SHARE, as the fencing trigger does); answers the current epoch and how
// many rows went.
constexpr char kPruneHistorySql[] =
    "WITH leader AS (SELECT epoch FROM qm_leader WHERE id = 1 FOR SHARE), "
    "gone AS (DELETE FROM qm_history WHERE tier = $1 AND time_ms < $2 "
    "AND (SELECT epoch FROM leader) = $3 RETURNING 1) "
    "SELECT (SELECT epoch FROM leader), (SELECT count(*) FROM gone)";
constexpr char kAcquireSql[] =
    "UPDATE qm_leader SET epoch = epoch + 1, holder = $1, "
    "lease_until = clock_timestamp() + $2 * interval '1 millisecond' "
    "WHERE id = 1 AND (lease_until < clock_timestamp() OR holder = $1) "
    "RETURNING epoch";
constexpr char kRenewSql[] =
    "UPDATE qm_leader SET lease_until = clock_timestamp() + "
    "$2 * interval '1 millisecond' WHERE id = 1 AND epoch = $1 "
    "RETURNING epoch";

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;
struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;

void PutBe32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>(v >> shift));
  }
}
void PutBe64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>(v >> shift));
  }
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// A one-dimensional array without nulls in PostgreSQL's binary format.
class BinaryArray {
 public:
  BinaryArray(Oid element, size_t n) {
    PutBe32(&data_, 1);  // dimensions
    PutBe32(&data_, 0);  // has nulls
    PutBe32(&data_, element);
    PutBe32(&data_, static_cast<uint32_t>(n));
    PutBe32(&data_, 1);  // lower bound
  }
  void AddInt8(int64_t v) {
    PutBe32(&data_, 8);
    PutBe64(&data_, static_cast<uint64_t>(v));
  }
  void AddBytes(std::string_view v) {
    PutBe32(&data_, static_cast<uint32_t>(v.size()));
    data_.append(v);
  }
  void Reserve(size_t bytes) { data_.reserve(data_.size() + bytes); }
  std::string Take() { return std::move(data_); }

 private:
  std::string data_;
};

// The parameters of one statement, all sent in binary.
class Params {
 public:
  Params& Int8(int64_t v) {
    std::string b;
    PutBe64(&b, static_cast<uint64_t>(v));
    return Add(kInt8Oid, std::move(b));
  }
  Params& Text(std::string_view v) { return Add(kTextOid, std::string(v)); }
  Params& Bytea(std::string_view v) { return Add(kByteaOid, std::string(v)); }
  Params& Array(Oid array_type, std::string binary) {
    return Add(array_type, std::move(binary));
  }

  int size() const { return static_cast<int>(types_.size()); }
  const Oid* types() const { return types_.data(); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  Params& Add(Oid type, std::string value) {
    // A deque never moves its elements, so the pointers stay valid.
    const std::string& v = storage_.emplace_back(std::move(value));
    types_.push_back(type);
    values_.push_back(v.data());
    lengths_.push_back(static_cast<int>(v.size()));
    formats_.push_back(1);
    return *this;
  }

  std::deque<std::string> storage_;
  std::vector<Oid> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

// Column `col` of a binary result row, which the query casts to bigint.
int64_t Int8At(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) return 0;
  return static_cast<int64_t>(GetBe64(PQgetvalue(r, row, col)));
}
std::string_view BytesAt(const PGresult* r, int row, int col) {
  return std::string_view(PQgetvalue(r, row, col), PQgetlength(r, row, col));
}

// libpq's message text on one line.
std::string TrimMessage(const char* text) {
  std::string s;
  for (const char* p = text ? text : ""; *p != '\0'; ++p) {
    const bool space = *p == '\n' || *p == '\t' || *p == ' ';
    if (!space) {
      s += *p;
    } else if (!s.empty() && s.back() != ' ') {
      s += ' ';
    }
  }
  if (!s.empty() && s.back() == ' ') s.pop_back();
  if (s.starts_with("ERROR: ")) s.erase(0, 7);
  return s;
}

void IgnoreNotice(void*, const char*) {}

// "record 5 is" or "records 5..9 are".
std::string RecordsAre(uint64_t first, uint64_t last) {
  return first == last ? "record " + std::to_string(first) + " is"
                       : "records " + std::to_string(first) + ".." +
                             std::to_string(last) + " are";
}

// A snapshot's checksum covers the record fields and the digest.
uint32_t SnapshotChecksum(const SnapshotData& s, uint64_t epoch) {
  uLong crc = RecordChecksum(s.seq, s.time_ms, epoch, s.payload);
  return static_cast<uint32_t>(crc32_z(
      crc, reinterpret_cast<const Bytef*>(s.digest.data()), s.digest.size()));
}

// `text` (a libpq message, which may quote the URI) with every password
// that `uri` holds replaced by "***".
std::string HidePasswords(std::string text, std::string_view uri) {
  std::vector<std::string> secrets;
  const size_t start = uri.find("://");
  if (start != std::string_view::npos) {
    size_t authority_end = uri.find_first_of("/?#", start + 3);
    if (authority_end == std::string_view::npos) authority_end = uri.size();
    const size_t at = uri.rfind('@', authority_end);
    const size_t colon = uri.find(':', start + 3);
    if (at != std::string_view::npos && at > start && colon < at) {
      secrets.emplace_back(uri.substr(colon + 1, at - colon - 1));
    }
  }
  for (size_t pos = uri.find("password="); pos != std::string_view::npos;
       pos = uri.find("password=", pos + 1)) {
    const size_t begin = pos + 9;
    const size_t end = std::min(uri.find('&', begin), uri.size());
    secrets.emplace_back(uri.substr(begin, end - begin));
  }
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (size_t pos = text.find(secret); pos != std::string::npos;
         pos = text.find(secret, pos + 3)) {
      text.replace(pos, secret.size(), "***");
    }
  }
  return text;
}

std::string DefaultNodeId() {
  static std::atomic<int> instances{0};
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
  std::string id = std::string(host) + ":" + std::to_string(getpid());
  // Node ids must differ between live instances (a holder may take its
  // own lease back at once), also between stores of one process.
  const int n = ++instances;
  if (n > 1) id += "#" + std::to_string(n);
  return id;
}

class PgStore final : public Store {
 public:
  PgStore(StoreOptions options, std::string where)
      : options_(std::move(options)), where_(std::move(where)) {}
  ~PgStore() override { StopRenewal(); }

  Status Init();

  Status AcquireLeadership(Duration timeout) override;
  bool IsLeader() const override;
  uint64_t epoch() const override { return epoch_; }
  bool Superseded() const override { return lost_.load(); }
  Status ResignLeadership() override;
  StatusOr<LeaderInfo> Leader() override;
  Status Append(std::vector<JournalRecord>* records) override;
  Status WriteSnapshot(const SnapshotData& snapshot) override;
  StatusOr<std::optional<SnapshotData>> LatestSnapshot() override;
  Status ReadJournal(
      uint64_t after,
      const std::function<Status(const JournalRecord& record)>& visit) override;
  Status Check() override;
  StatusOr<StoreInfo> Info() override;
  StoreStats stats() const override { return stats_; }

  Status AppendHistory(const std::vector<HistoryRecord>& records) override;
  StatusOr<std::vector<HistoryRecord>> ReadHistory(int tier, int64_t from_ms,
                                                   size_t limit) override;
  Status PruneHistory(int tier, int64_t before_ms) override;

 private:
  StatusOr<Conn> Connect() const;
  // Reconnects the main connection when the server dropped it.
  Status EnsureConnected();
  // Runs `sql` on `conn`, results in binary. The error names `what` and
  // carries the SQLSTATE as context ("sqlstate").
  StatusOr<Result> Run(PGconn* conn, const char* sql, const Params& params,
                       std::string_view what) const;
  // The same on the main connection, as the named prepared statement.
  StatusOr<Result> RunPrepared(const char* name, const char* sql,
                               const Params& params, std::string_view what);
  Status Exec(const char* sql, std::string_view what);
  Status Error(PGconn* conn, const PGresult* r, std::string_view what) const;
  Status Migrate();
  // Reads the last seq and the snapshot seq from the database.
  Status LoadPositions();
  Status NotLeader(std::string why) const;
  // Whether `s` is the fencing trigger's refusal.
  static bool IsFenced(const Status& s);
  Status Fenced(const Status& refusal);
  // Rolls back an open transaction on the main connection (best effort).
  void Rollback();
  std::string DescribeLeader();

  void StartRenewal();
  void StopRenewal();
  void RenewLoop(uint64_t epoch);

  const StoreOptions options_;
  const std::string where_;  // "database D on H:P", for messages
  Conn conn_;
  std::vector<std::string> prepared_;  // on conn_, reset on reconnect

  uint64_t epoch_ = 0;
  bool resigned_ = false;
  uint64_t last_seq_ = 0;
  uint64_t snapshot_seq_ = 0;
  bool positions_stale_ = false;  // reload before the next write
  StoreStats stats_;

  // Shared with the renewal thread.
  std::atomic<bool> lost_{false};
  std::atomic<int64_t> lease_deadline_ns_{0};  // steady clock
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mu_
  std::thread renewer_;
};

int64_t SteadyNs(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             t.time_since_epoch())
      .count();
}

StatusOr<Conn> PgStore::Connect() const {
  const std::string timeout = std::to_string(
      std::max<int64_t>(2, options_.leader_lease.count() / 1000));
  // The URI comes last so that what it says wins over these defaults.
  const char* keys[] = {"connect_timeout", "application_name", "dbname",
                        nullptr};
  const char* values[] = {timeout.c_str(), "qm", options_.location.c_str(),
                          nullptr};
  Conn conn(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (conn == nullptr) {
    return Unavailable("cannot connect to PostgreSQL " + where_ +
                       ": out of memory");
  }
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Unavailable("cannot connect to PostgreSQL " + where_)
        .WithDetails(HidePasswords(TrimMessage(PQerrorMessage(conn.get())),
                                   options_.location));
  }
  PQsetNoticeProcessor(conn.get(), IgnoreNotice, nullptr);
  return conn;
}

Status PgStore::EnsureConnected() {
  if (conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK) {
    return Status::Ok();
  }
  prepared_.clear();
  StatusOr<Conn> conn = Connect();
  if (!conn.ok()) return conn.status();
  conn_ = std::move(conn).value();
  // "OK means durable": never run with asynchronous commit, whatever the
  // database's default says.
  StatusOr<Result> sync =
      Run(conn_.get(), "SHOW synchronous_commit", Params(), "read settings");
  if (!sync.ok()) return sync.status();
  if (BytesAt(sync->get(), 0, 0) == "off") {
    QM_RETURN_IF_ERROR(Exec("SET synchronous_commit = on", "set settings"));
  }
  // What the last writer did while this connection was away is unknown.
  positions_stale_ = true;
  return Status::Ok();
}

Status PgStore::Error(PGconn* conn, const PGresult* r,
                      std::string_view what) const {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const std::string sqlstate = state ? state : "";
  // The primary message alone: one line, without the CONTEXT trail.
  const char* primary =
      r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const std::string message = TrimMessage(primary ? primary
                                          : r     ? PQresultErrorMessage(r)
                                                  : PQerrorMessage(conn));
  const bool transient =
      PQstatus(conn) != CONNECTION_OK || sqlstate.empty() ||
      sqlstate.starts_with("08") ||  // connection exception
      sqlstate.starts_with("53") ||  // insufficient resources
      sqlstate.starts_with("57") ||  // operator intervention, timeouts
      sqlstate.starts_with("40") ||  // serialization failure, deadlock
      sqlstate == kFencedSqlState;
  Status s =
      transient
          ? Unavailable("PostgreSQL " + where_ + ": cannot " +
                        std::string(what))
          : Internal("PostgreSQL " + where_ + ": cannot " + std::string(what));
  s.WithDetails(message);
  if (!sqlstate.empty()) s.AddContext("sqlstate", sqlstate);
  return s;
}

StatusOr<Result> PgStore::Run(PGconn* conn, const char* sql,
                              const Params& params,
                              std::string_view what) const {
  Result r(PQexecParams(conn, sql, params.size(), params.types(),
                        params.values(), params.lengths(), params.formats(),
                        /*resultFormat=*/1));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return Error(conn, r.get(), what);
  }
  return r;
}

StatusOr<Result> PgStore::RunPrepared(const char* name, const char* sql,
                                      const Params& params,
                                      std::string_view what) {
  if (std::find(prepared_.begin(), prepared_.end(), name) == prepared_.end()) {
    Result r(PQprepare(conn_.get(), name, sql, params.size(), params.types()));
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return Error(conn_.get(), r.get(), what);
    }
    prepared_.push_back(name);
  }
  Result r(PQexecPrepared(conn_.get(), name, params.size(), params.values(),
                          params.lengths(), params.formats(),
                          /*resultFormat=*/1));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return Error(conn_.get(), r.get(), what);
  }
  return r;
}

Status PgStore::Exec(const char* sql, std::string_view what) {
  Result r(PQexec(conn_.get(), sql));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return Error(conn_.get(), r.get(), what);
  }
  return Status::Ok();
}

void PgStore::Rollback() {
  if (conn_ != nullptr && PQtransactionStatus(conn_.get()) != PQTRANS_IDLE &&
      PQstatus(conn_.get()) == CONNECTION_OK) {
    Result r(PQexec(conn_.get(), "ROLLBACK"));
  }
}

Status PgStore::Init() {
  QM_RETURN_IF_ERROR(EnsureConnected());
  QM_RETURN_IF_ERROR(Migrate());
  return LoadPositions();
}

Status PgStore::Migrate() {
  QM_RETURN_IF_ERROR(Exec("BEGIN", "begin the schema migration"));
  Status s = [&]() -> Status {
    StatusOr<Result> locked =
        Run(conn_.get(), "SELECT pg_advisory_xact_lock($1)",
            Params().Int8(kMigrationLockKey), "lock the schema");
    if (!locked.ok()) return locked.status();
    QM_RETURN_IF_ERROR(
        Exec("CREATE TABLE IF NOT EXISTS qm_schema_version "
             "(version integer NOT NULL)",
             "create the schema version table"));
    StatusOr<Result> version =
        Run(conn_.get(),
            "SELECT coalesce(max(version), 0)::bigint FROM qm_schema_version",
            Params(), "read the schema version");
    if (!version.ok()) return version.status();
    const int64_t current = Int8At(version->get(), 0, 0);
    if (current > kSchemaVersion) {
      return Unavailable("PostgreSQL " + where_ + " has schema version " +
                         std::to_string(current) +
                         ", newer than this qm knows (" +
                         std::to_string(kSchemaVersion) + "): upgrade qm");
    }
    if (current == kSchemaVersion) return Status::Ok();
    for (int64_t v = current + 1; v <= kSchemaVersion; ++v) {
      QM_RETURN_IF_ERROR(
          Exec(kMigrations[v - 1],
               "migrate the schema to version " + std::to_string(v)));
    }
    QM_RETURN_IF_ERROR(
        Exec("DELETE FROM qm_schema_version", "record the schema version"));
    StatusOr<Result> set =
        Run(conn_.get(), "INSERT INTO qm_schema_version VALUES ($1::int8)",
            Params().Int8(kSchemaVersion), "record the schema version");
    return set.status();
  }();
  if (!s.ok()) {
    Rollback();
    return s;
  }
  return Exec("COMMIT", "commit the schema migration");
}

Status PgStore::LoadPositions() {
  StatusOr<Result> r =
      Run(conn_.get(),
          "SELECT coalesce((SELECT max(seq) FROM qm_journal), 0), "
          "coalesce((SELECT max(seq) FROM qm_snapshot), 0)",
          Params(), "read the journal's last seq");
  if (!r.ok()) return r.status();
  snapshot_seq_ = static_cast<uint64_t>(Int8At(r->get(), 0, 1));
  last_seq_ =
      std::max(static_cast<uint64_t>(Int8At(r->get(), 0, 0)), snapshot_seq_);
  positions_stale_ = false;
  return Status::Ok();
}

// ---- Leadership ----

bool PgStore::IsLeader() const {
  if (epoch_ == 0 || resigned_ || lost_.load()) return false;
  return SteadyNs(SteadyClock::now()) < lease_deadline_ns_.load();
}

Status PgStore::AcquireLeadership(Duration timeout) {
  if (IsLeader()) return Status::Ok();
  StopRenewal();
  QM_RETURN_IF_ERROR(EnsureConnected());
  const Duration poll =
      std::clamp(options_.leader_lease / 10, Duration(10), Duration(500));
  const SteadyClock::time_point deadline = SteadyClock::now() + timeout;
  for (;;) {
    const SteadyClock::time_point start = SteadyClock::now();
    StatusOr<Result> r = RunPrepared(
        "qm_acquire", kAcquireSql,
        Params().Text(options_.node_id).Int8(options_.leader_lease.count()),
        "take the leader lease");
    if (!r.ok()) return r.status();
    if (PQntuples(r->get()) == 1) {
      epoch_ = static_cast<uint64_t>(Int8At(r->get(), 0, 0));
      resigned_ = false;
      lost_ = false;
      lease_deadline_ns_ = SteadyNs(start + options_.leader_lease);
      break;
    }
    const SteadyClock::time_point now = SteadyClock::now();
    if (now >= deadline) {
      return Unavailable("not the leader: " + DescribeLeader())
          .AddContext("node", options_.node_id);
    }
    std::this_thread::sleep_for(
        std::min<SteadyClock::duration>(poll, deadline - now));
  }
  StartRenewal();
  // The bump above waited for the previous leader's last write to commit;
  // continue after it. On failure the next write retries.
  positions_stale_ = true;
  const Status loaded = LoadPositions();
  (void)loaded;
  return Status::Ok();
}

StatusOr<LeaderInfo> PgStore::Leader() {
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r =
      Run(conn_.get(),
          // (A given-up lease is '-infinity', which older servers cannot
          // subtract from.)
          "SELECT holder, epoch, CASE WHEN lease_until <= clock_timestamp() "
          "THEN 0 ELSE ceil(extract(epoch FROM lease_until - "
          "clock_timestamp()) * 1000) END::bigint FROM qm_leader WHERE id = 1",
          Params(), "read the leader row");
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) != 1) {
    return DataLoss("PostgreSQL " + where_ + " has no leader row");
  }
  LeaderInfo info;
  info.node_id = BytesAt(r->get(), 0, 0);
  info.epoch = static_cast<uint64_t>(Int8At(r->get(), 0, 1));
  info.lease_left = Duration(Int8At(r->get(), 0, 2));
  return info;
}

std::string PgStore::DescribeLeader() {
  StatusOr<LeaderInfo> leader = Leader();
  if (!leader.ok()) return "another instance leads";
  return "node " + leader->node_id + " leads with epoch " +
         std::to_string(leader->epoch) + " (lease left " +
         std::to_string(leader->lease_left.count()) + " ms)";
}

Status PgStore::ResignLeadership() {
  StopRenewal();
  if (epoch_ == 0 || resigned_) return Status::Ok();
  resigned_ = true;
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r = Run(conn_.get(),
                           "UPDATE qm_leader SET lease_until = '-infinity' "
                           "WHERE id = 1 AND epoch = $1",
                           Params().Int8(static_cast<int64_t>(epoch_)),
                           "give up the leader lease");
  return r.status();
}

void PgStore::StartRenewal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  renewer_ = std::thread([this, epoch = epoch_] { RenewLoop(epoch); });
}

void PgStore::StopRenewal() {
  if (!renewer_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  renewer_.join();
}

void PgStore::RenewLoop(uint64_t epoch) {
  Conn conn;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_ && !lost_.load()) {
    wake_.wait_for(lock, options_.lease_renew_interval, [&] { return stop_; });
    if (stop_) break;
    lock.unlock();
    const SteadyClock::time_point start = SteadyClock::now();
    if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
      StatusOr<Conn> c = Connect();
      if (c.ok()) {
        conn = std::move(c).value();
        // A renewal stuck behind a lock is no use once the lease is gone.
        const std::string timeout =
            "SET statement_timeout = " +
            std::to_string(options_.leader_lease.count());
        Result r(PQexec(conn.get(), timeout.c_str()));
      }
    }
    if (conn != nullptr && PQstatus(conn.get()) == CONNECTION_OK) {
      StatusOr<Result> r = Run(conn.get(), kRenewSql,
                               Params()
                                   .Int8(static_cast<int64_t>(epoch))
                                   .Int8(options_.leader_lease.count()),
                               "renew the leader lease");
      if (r.ok() && PQntuples(r->get()) == 1) {
        lease_deadline_ns_ = SteadyNs(start + options_.leader_lease);
      } else if (r.ok()) {
        lost_ = true;  // a newer epoch took over
      }
      // On an error the lease runs out by itself unless a retry succeeds.
    }
    lock.lock();
  }
}

// ---- Writing ----

Status PgStore::NotLeader(std::string why) const {
  return Unavailable("not the leader: " + why)
      .AddContext("node", options_.node_id);
}

bool PgStore::IsFenced(const Status& s) {
  for (const auto& [key, value] : s.context()) {
    if (key == "sqlstate" && value == kFencedSqlState) return true;
  }
  return false;
}

Status PgStore::Fenced(const Status& refusal) {
  lost_ = true;
  return NotLeader("epoch " + std::to_string(epoch_) + " was superseded")
      .WithDetails(refusal.details())
      .AddContext("sqlstate", kFencedSqlState);
}

Status PgStore::Append(std::vector<JournalRecord>* records) {
  if (records->empty()) return Status::Ok();
  if (epoch_ == 0) return NotLeader("this instance never acquired the lease");
  if (resigned_) return NotLeader("this instance resigned");
  QM_RETURN_IF_ERROR(EnsureConnected());
  if (positions_stale_) QM_RETURN_IF_ERROR(LoadPositions());
  for (size_t i = 0; i < records->size(); ++i) {
    const uint64_t want = last_seq_ + 1 + i;
    if ((*records)[i].seq != want) {
      return InvalidRequest(
          "journal record seq " + std::to_string((*records)[i].seq) +
          " does not continue the journal: expected " + std::to_string(want));
    }
  }
  const size_t n = records->size();
  BinaryArray seqs(kInt8Oid, n), times(kInt8Oid, n), crcs(kInt8Oid, n),
      payloads(kByteaOid, n);
  size_t bytes = 0;
  for (const JournalRecord& r : *records) bytes += r.payload.size() + 4;
  payloads.Reserve(bytes);
  for (JournalRecord& r : *records) {
    r.epoch = epoch_;
    seqs.AddInt8(static_cast<int64_t>(r.seq));
    times.AddInt8(r.time_ms);
    crcs.AddInt8(RecordChecksum(r.seq, r.time_ms, r.epoch, r.payload));
    payloads.AddBytes(r.payload);
  }
  Params params;
  params.Array(kInt8ArrayOid, seqs.Take())
      .Array(kInt8ArrayOid, times.Take())
      .Int8(static_cast<int64_t>(epoch_))
      .Array(kInt8ArrayOid, crcs.Take())
      .Array(kByteaArrayOid, payloads.Take());
  // One statement is one transaction: committed (and flushed) on return.
  StatusOr<Result> r =
      RunPrepared("qm_append", kAppendSql, params, "append to the journal");
  if (!r.ok()) {
    if (IsFenced(r.status())) return Fenced(r.status());
    // The commit may or may not have happened.
    positions_stale_ = true;
    return r.status();
  }
  last_seq_ += n;
  ++stats_.commits;
  stats_.records += n;
  for (const JournalRecord& rec : *records) {
    stats_.payload_bytes += rec.payload.size();
  }
  return Status::Ok();
}

Status PgStore::WriteSnapshot(const SnapshotData& snapshot) {
  if (epoch_ == 0) return NotLeader("this instance never acquired the lease");
  if (resigned_) return NotLeader("this instance resigned");
  QM_RETURN_IF_ERROR(EnsureConnected());
  if (positions_stale_) QM_RETURN_IF_ERROR(LoadPositions());
  // An empty store may start its history at any seq (qm state import).
  const bool empty = last_seq_ == 0 && snapshot_seq_ == 0;
  if (snapshot.seq == 0 || (snapshot.seq > last_seq_ && !empty)) {
    return InvalidRequest("snapshot seq " + std::to_string(snapshot.seq) +
                          " is not a journal record: the last is " +
                          std::to_string(last_seq_));
  }
  if (snapshot.seq < snapshot_seq_) {
    return InvalidRequest("snapshot seq " + std::to_string(snapshot.seq) +
                          " is older than the stored snapshot at " +
                          std::to_string(snapshot_seq_));
  }
  const int64_t seq = static_cast<int64_t>(snapshot.seq);
  QM_RETURN_IF_ERROR(Exec("BEGIN", "begin the snapshot"));
  Status s = [&]() -> Status {
    // The insert's fencing trigger decides for the whole transaction.
    StatusOr<Result> r =
        Run(conn_.get(), "DELETE FROM qm_snapshot WHERE seq <= $1",
            Params().Int8(seq), "replace the snapshot");
    if (!r.ok()) return r.status();
    r = Run(conn_.get(),
            "INSERT INTO qm_snapshot (seq, time_ms, digest, crc, payload, "
            "epoch) VALUES ($1, $2, $3, $4, $5, $6)",
            Params()
                .Int8(seq)
                .Int8(snapshot.time_ms)
                .Text(snapshot.digest)
                .Int8(SnapshotChecksum(snapshot, epoch_))
                .Bytea(snapshot.payload)
                .Int8(static_cast<int64_t>(epoch_)),
            "write the snapshot");
    if (!r.ok()) return r.status();
    r = Run(conn_.get(), "DELETE FROM qm_journal WHERE seq <= $1",
            Params().Int8(seq), "truncate the journal");
    return r.status();
  }();
  if (!s.ok()) {
    Rollback();
    if (IsFenced(s)) return Fenced(s);
    return s;
  }
  s = Exec("COMMIT", "commit the snapshot");
  if (!s.ok()) {
    positions_stale_ = true;
    return s;
  }
  snapshot_seq_ = snapshot.seq;
  last_seq_ = std::max(last_seq_, snapshot.seq);
  ++stats_.snapshots;
  return Status::Ok();
}

// ---- Usage history ----

Status PgStore::AppendHistory(const std::vector<HistoryRecord>& records) {
  if (records.empty()) return Status::Ok();
  for (const HistoryRecord& r : records) {
    if (r.tier < 0) {
      return InvalidRequest("history tier " + std::to_string(r.tier) +
                            " is negative");
    }
  }
  if (epoch_ == 0) return NotLeader("this instance never acquired the lease");
  if (resigned_) return NotLeader("this instance resigned");
  QM_RETURN_IF_ERROR(EnsureConnected());
  const size_t n = records.size();
  BinaryArray tiers(kInt8Oid, n), times(kInt8Oid, n), payloads(kByteaOid, n);
  for (const HistoryRecord& r : records) {
    tiers.AddInt8(r.tier);
    times.AddInt8(r.time_ms);
    payloads.AddBytes(r.payload);
  }
  Params params;
  params.Array(kInt8ArrayOid, tiers.Take())
      .Array(kInt8ArrayOid, times.Take())
      .Int8(static_cast<int64_t>(epoch_))
      .Array(kByteaArrayOid, payloads.Take());
  // One statement is one transaction: all the rows or none.
  StatusOr<Result> r = RunPrepared("qm_append_history", kAppendHistorySql,
                                   params, "append to the usage history");
  if (!r.ok()) {
    if (IsFenced(r.status())) return Fenced(r.status());
    return r.status();
  }
  return Status::Ok();
}

StatusOr<std::vector<HistoryRecord>> PgStore::ReadHistory(int tier,
                                                          int64_t from_ms,
                                                          size_t limit) {
  std::vector<HistoryRecord> out;
  if (limit == 0) return out;
  QM_RETURN_IF_ERROR(EnsureConnected());
  const int64_t max_rows = static_cast<int64_t>(std::min<uint64_t>(
      limit, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
  StatusOr<Result> r =
      RunPrepared("qm_read_history", kReadHistorySql,
                  Params().Int8(tier).Int8(from_ms).Int8(max_rows),
                  "read the usage history");
  if (!r.ok()) return r.status();
  const PGresult* res = r->get();
  const int rows = PQntuples(res);
  out.reserve(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    HistoryRecord& record = out.emplace_back();
    record.tier = tier;
    record.time_ms = Int8At(res, i, 0);
    record.payload.assign(BytesAt(res, i, 1));
  }
  return out;
}

Status PgStore::PruneHistory(int tier, int64_t before_ms) {
  if (epoch_ == 0) return NotLeader("this instance never acquired the lease");
  if (resigned_) return NotLeader("this instance resigned");
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r = Run(
      conn_.get(), kPruneHistorySql,
      Params().Int8(tier).Int8(before_ms).Int8(static_cast<int64_t>(epoch_)),
      "prune the usage history");
  if (!r.ok()) return r.status();
  const uint64_t current = static_cast<uint64_t>(Int8At(r->get(), 0, 0));
  if (current != epoch_) {
    lost_ = true;
    return NotLeader("epoch " + std::to_string(epoch_) + " was superseded by " +
                     std::to_string(current))
        .AddContext("sqlstate", kFencedSqlState);
  }
  return Status::Ok();
}

// ---- Reading ----

StatusOr<std::optional<SnapshotData>> PgStore::LatestSnapshot() {
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r =
      Run(conn_.get(),
          "SELECT seq, time_ms, digest, crc, payload, epoch FROM qm_snapshot "
          "ORDER BY seq DESC LIMIT 1",
          Params(), "read the snapshot");
  if (!r.ok()) return r.status();
  if (PQntuples(r->get()) == 0) return std::optional<SnapshotData>();
  const PGresult* res = r->get();
  SnapshotData s;
  s.seq = static_cast<uint64_t>(Int8At(res, 0, 0));
  s.time_ms = Int8At(res, 0, 1);
  s.digest = BytesAt(res, 0, 2);
  const int64_t crc = Int8At(res, 0, 3);
  s.payload = BytesAt(res, 0, 4);
  const uint64_t epoch = static_cast<uint64_t>(Int8At(res, 0, 5));
  if (crc != SnapshotChecksum(s, epoch)) {
    return DataLoss("PostgreSQL " + where_ + ": snapshot at seq " +
                    std::to_string(s.seq) + " fails its checksum");
  }
  return std::optional<SnapshotData>(std::move(s));
}

Status PgStore::ReadJournal(
    uint64_t after,
    const std::function<Status(const JournalRecord& record)>& visit) {
  QM_RETURN_IF_ERROR(EnsureConnected());
  // A cursor in one read-only transaction: one consistent view, fetched
  // kFetchRows at a time so a long journal never sits in memory.
  QM_RETURN_IF_ERROR(Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                          "begin reading the journal"));
  Status s = [&]() -> Status {
    StatusOr<Result> r =
        Run(conn_.get(), "SELECT coalesce(max(seq), 0) FROM qm_snapshot",
            Params(), "read the snapshot's seq");
    if (!r.ok()) return r.status();
    const uint64_t snapshot_seq = static_cast<uint64_t>(Int8At(r->get(), 0, 0));
    if (after < snapshot_seq) {
      return DataLoss("PostgreSQL " + where_ + ": journal " +
                      RecordsAre(after + 1, snapshot_seq) +
                      " no longer kept: the snapshot at seq " +
                      std::to_string(snapshot_seq) +
                      " replaced them; read it, then the journal after it");
    }
    r = Run(conn_.get(),
            "DECLARE qm_read NO SCROLL CURSOR FOR SELECT seq, time_ms, "
            "epoch, crc, payload FROM qm_journal WHERE seq > $1 ORDER BY seq",
            Params().Int8(static_cast<int64_t>(after)), "read the journal");
    if (!r.ok()) return r.status();
    const std::string fetch =
        "FETCH " + std::to_string(kFetchRows) + " FROM qm_read";
    JournalRecord rec;
    uint64_t expected = after + 1;
    auto last_good = [&] {
      const uint64_t good = expected - 1;
      if (good == 0) return std::string("no good record before it");
      return "last good record " + std::to_string(good);
    };
    for (;;) {
      r = Run(conn_.get(), fetch.c_str(), Params(), "read the journal");
      if (!r.ok()) return r.status();
      const PGresult* res = r->get();
      const int rows = PQntuples(res);
      if (rows == 0) return Status::Ok();
      for (int i = 0; i < rows; ++i) {
        const uint64_t seq = static_cast<uint64_t>(Int8At(res, i, 0));
        if (seq != expected) {
          return DataLoss("PostgreSQL " + where_ + ": journal " +
                          RecordsAre(expected, seq - 1) + " missing (" +
                          last_good() + ", next kept record " +
                          std::to_string(seq) + "); recovery stops there")
              .AddContext("seq", std::to_string(expected));
        }
        rec.seq = seq;
        rec.time_ms = Int8At(res, i, 1);
        rec.epoch = static_cast<uint64_t>(Int8At(res, i, 2));
        const int64_t crc = Int8At(res, i, 3);
        const std::string_view payload = BytesAt(res, i, 4);
        if (crc != RecordChecksum(seq, rec.time_ms, rec.epoch, payload)) {
          return DataLoss("PostgreSQL " + where_ + ": journal record " +
                          std::to_string(seq) + " fails its checksum (" +
                          last_good() + "); recovery stops there")
              .AddContext("seq", std::to_string(seq));
        }
        rec.payload.assign(payload);
        QM_RETURN_IF_ERROR(visit(rec));
        ++expected;
      }
    }
  }();
  Rollback();
  return s;
}

Status PgStore::Check() {
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r =
      Run(conn_.get(),
          "SELECT (SELECT count(*) FROM qm_leader WHERE id = 1), "
          "(SELECT count(*) FROM qm_snapshot)",
          Params(), "check the leader row");
  if (!r.ok()) return r.status();
  if (Int8At(r->get(), 0, 0) != 1) {
    return DataLoss("PostgreSQL " + where_ + " has no leader row");
  }
  if (Int8At(r->get(), 0, 1) > 1) {
    return DataLoss("PostgreSQL " + where_ + " holds " +
                    std::to_string(Int8At(r->get(), 0, 1)) +
                    " snapshots, not at most one");
  }
  StatusOr<std::optional<SnapshotData>> snapshot = LatestSnapshot();
  if (!snapshot.ok()) return snapshot.status();
  const uint64_t from = snapshot->has_value() ? (*snapshot)->seq : 0;
  // PostgreSQL has no cheap whole-database check like SQLite's; reading
  // every record makes the server verify each page it reads (when the
  // cluster has data checksums) and this store verify each record.
  return ReadJournal(from, [](const JournalRecord&) { return Status::Ok(); });
}

StatusOr<StoreInfo> PgStore::Info() {
  QM_RETURN_IF_ERROR(EnsureConnected());
  StatusOr<Result> r = Run(
      conn_.get(),
      "SELECT (SELECT coalesce(max(version), 0)::bigint FROM "
      "qm_schema_version), (SELECT coalesce(max(seq), 0) FROM qm_snapshot), "
      "coalesce(min(seq), 0), coalesce(max(seq), 0), count(*), "
      "coalesce(sum(octet_length(payload)), 0)::bigint FROM qm_journal",
      Params(), "read the store's summary");
  if (!r.ok()) return r.status();
  const PGresult* res = r->get();
  StoreInfo info;
  info.kind = "postgresql";
  info.location = RedactLocation(options_.location);
  info.schema_version = static_cast<int>(Int8At(res, 0, 0));
  info.snapshot_seq = static_cast<uint64_t>(Int8At(res, 0, 1));
  info.first_seq = static_cast<uint64_t>(Int8At(res, 0, 2));
  info.last_seq = static_cast<uint64_t>(Int8At(res, 0, 3));
  info.records = static_cast<uint64_t>(Int8At(res, 0, 4));
  info.bytes = static_cast<uint64_t>(Int8At(res, 0, 5));
  return info;
}

}  // namespace

StatusOr<std::unique_ptr<Store>> OpenPostgresStore(
    const StoreOptions& options) {
  QM_RETURN_IF_ERROR(LoadLibpq());
  const std::string shown = RedactLocation(options.location);
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(options.location.c_str(), &error);
  if (parsed == nullptr) {
    Status s = InvalidRequest("bad PostgreSQL URI " + shown);
    if (error != nullptr) {
      s.WithDetails(HidePasswords(TrimMessage(error), options.location));
      PQfreemem(error);
    }
    return s;
  }
  std::string host, port, dbname, user;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view key = o->keyword;
    if (key == "host" || (key == "hostaddr" && host.empty())) host = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
  }
  PQconninfoFree(parsed);
  if (dbname.empty()) dbname = user.empty() ? "(default)" : user;
  if (host.empty()) host = "localhost";
  const std::string where =
      "database " + dbname + " on " + host + (port.empty() ? "" : ":" + port);
  if (options.leader_lease <= Duration(0) ||
      options.lease_renew_interval <= Duration(0) ||
      options.lease_renew_interval >= options.leader_lease) {
    return InvalidRequest(
        "lease_renew_interval must be positive and under leader_lease");
  }
  StoreOptions opts = options;
  if (opts.node_id.empty()) opts.node_id = DefaultNodeId();
  auto store = std::make_unique<PgStore>(std::move(opts), where);
  QM_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace qm::store
