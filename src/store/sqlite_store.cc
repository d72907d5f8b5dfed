// The SQLite store: one database file (`qm.db`, WAL mode) in a state
// directory that one process at a time holds through an flock on `qm.lock`.
//
// Layout (schema version 2):
//   schema_version(id = 1, version)          one row
//   journal(seq, time_ms, epoch, crc, payload)  seq is the rowid
//   snapshot(seq, time_ms, digest, crc, payload)  at most one row kept
//   history(id, tier, time_ms, payload)      the sampler's usage history,
//                                            indexed by (tier, time_ms)
// Every table is STRICT, so a value of the wrong type can never be stored.
//
// The database is opened in EXCLUSIVE locking mode: the flock already keeps
// other qm processes out, and holding SQLite's own lock as well keeps other
// tools from writing behind the store's back (the store caches the last
// seq). It also keeps the WAL index in process memory (no -shm file).
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <utility>

#include "store/store_impl.h"

namespace qm::store {
namespace {

// SQLite never follows another leader: it writes every record with epoch 1.
constexpr uint64_t kEpoch = 1;

// Forward migrations: kMigrations[i] takes schema version i to i + 1, in the
// same transaction as the version bump. Append only; never edit a step that
// has shipped.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the journal and the snapshot.
    "CREATE TABLE journal("
    "  seq INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  crc INTEGER NOT NULL,"
    "  payload BLOB NOT NULL) STRICT;"
    "CREATE TABLE snapshot("
    "  seq INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL,"
    "  digest TEXT NOT NULL,"
    "  crc INTEGER NOT NULL,"
    "  payload BLOB NOT NULL) STRICT;",
    // 1 -> 2: the usage history (not engine state: outside the journal and
    // the snapshot). id (the rowid) keeps records of one time in the order
    // they were appended.
    "CREATE TABLE history("
    "  id INTEGER PRIMARY KEY,"
    "  tier INTEGER NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  payload BLOB NOT NULL) STRICT;"
    "CREATE INDEX history_by_time ON history(tier, time_ms);",
};
constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

std::string ErrnoText(int err) { return std::strerror(err); }

std::string FormatMs(int64_t time_ms) {
  return FormatTime(Time(Duration(time_ms)));
}

// "record 5 is" or "records 5..9 are".
std::string RecordsAre(uint64_t first, uint64_t last) {
  return first == last ? "record " + std::to_string(first) + " is"
                       : "records " + std::to_string(first) + ".." +
                             std::to_string(last) + " are";
}

// Which qm code an SQLite result code stands for.
Code CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Code::kDataLoss;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
      return Code::kUnavailable;
    case SQLITE_TOOBIG:
      return Code::kInvalidRequest;
    default:
      return Code::kInternal;
  }
}

// Creates `dir` and its missing parents with mode 0700 (mkdir -p).
Status MakeDirectories(const std::string& dir) {
  for (size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
    const std::string prefix = dir.substr(0, end);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      const int err = errno;
      const std::string text = "cannot create state directory " + dir +
                               " (at " + prefix + "): " + ErrnoText(err);
      return err == ENOTDIR ? InvalidRequest(text) : Unavailable(text);
    }
    if (end == std::string::npos) break;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidRequest("state directory " + dir + " is not a directory");
  }
  return Status::Ok();
}

// A file descriptor, closed with its owner.
class Fd {
 public:
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// An SQLite connection, closed with its owner (after its statements: declare
// it before them).
class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { sqlite3_close(db_); }
  sqlite3* get() const { return db_; }
  sqlite3** out() { return &db_; }

 private:
  sqlite3* db_ = nullptr;
};

// A prepared statement, finalised with its owner.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }
  sqlite3_stmt* get() const { return stmt_; }
  sqlite3_stmt** out() { return &stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// Resets a statement when leaving the scope that steps it, so no read stays
// open and the next use starts afresh.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;
  ~ResetOnExit() { sqlite3_reset(stmt_); }

 private:
  sqlite3_stmt* stmt_;
};

// Binds `bytes` without copying them: they must outlive the statement's
// next step.
int BindBlob(sqlite3_stmt* stmt, int index, std::string_view bytes) {
  // A null pointer would bind NULL, and an empty view's data() may be null.
  return sqlite3_bind_blob64(stmt, index, bytes.empty() ? "" : bytes.data(),
                             bytes.size(), SQLITE_STATIC);
}

// Never a null data pointer, even for an empty blob: RecordChecksum (zlib's
// crc32) takes a null buffer for "start over" and would not match.
std::string_view ColumnBlob(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  const int size = sqlite3_column_bytes(stmt, column);
  return data == nullptr ? std::string_view("", 0)
                         : std::string_view(static_cast<const char*>(data),
                                            static_cast<size_t>(size));
}

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string dir, SyncMode sync, std::string node_id)
      : dir_(std::move(dir)),
        db_path_(dir_ + "/qm.db"),
        sync_(sync),
        node_id_(std::move(node_id)) {}

  // Takes the directory's lock, opens and migrates the database, prepares
  // the statements and finds where the history ends.
  Status Open();

  Status AcquireLeadership(Duration) override { return Status::Ok(); }
  bool IsLeader() const override { return true; }
  uint64_t epoch() const override { return kEpoch; }
  Status ResignLeadership() override { return Status::Ok(); }
  // This instance, always: it holds the directory's lock.
  StatusOr<LeaderInfo> Leader() override {
    return LeaderInfo{node_id_, kEpoch, Duration::max()};
  }

  Status Append(std::vector<JournalRecord>* records) override;
  Status WriteSnapshot(const SnapshotData& snapshot) override;
  StatusOr<std::optional<SnapshotData>> LatestSnapshot() override;
  // `visit` must not call back into the store.
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
  Status LockDirectory();
  Status OpenDatabase();
  Status Migrate();
  Status PrepareStatements();

  // The connection's last error (`rc` the failed call's result), met while
  // doing `what`, with the database's path.
  Status SqlError(int rc, std::string_view what) const;
  // Runs `sql` (any number of statements; rows are discarded).
  Status Exec(const std::string& sql, std::string_view what);
  // The first column of the first row of `sql`; "" or 0 when no row.
  StatusOr<std::string> QueryText(const char* sql, std::string_view what);
  StatusOr<int64_t> QueryInt(const char* sql, std::string_view what);
  // Steps a statement to its end (one row at most) and resets it.
  Status Run(sqlite3_stmt* stmt, std::string_view what);
  // Ends the open transaction, if any, without its changes.
  void Rollback();
  // Puts synchronous=FULL back after a history append relaxed it.
  Status RestoreSync();

  const std::string dir_;
  const std::string db_path_;
  const SyncMode sync_;
  const std::string node_id_;  // options.node_id, or "<hostname>:<pid>"

  // Destroyed bottom up: statements, then the connection (which checkpoints
  // the WAL into qm.db), then the lock.
  Fd lock_;
  Connection db_;
  Statement begin_, commit_, rollback_;
  Statement insert_record_, read_journal_;
  Statement insert_snapshot_, trim_journal_, trim_snapshots_, read_snapshot_;
  Statement insert_history_, read_history_, prune_history_;

  // The last seq the store holds (a record's, or the snapshot's when it
  // swallowed the whole journal); 0 when empty.
  uint64_t last_seq_ = 0;
  // The kept snapshot's seq; 0 when none.
  uint64_t snapshot_seq_ = 0;
  // A history append relaxed synchronous and could not restore it yet:
  // journal and snapshot writes restore it first (or fail).
  bool sync_relaxed_ = false;
  StoreStats stats_;
};

Status SqliteStore::Open() {
  QM_RETURN_IF_ERROR(MakeDirectories(dir_));
  QM_RETURN_IF_ERROR(LockDirectory());
  QM_RETURN_IF_ERROR(OpenDatabase());
  QM_RETURN_IF_ERROR(Migrate());
  QM_RETURN_IF_ERROR(PrepareStatements());
  StatusOr<int64_t> journal_end =
      QueryInt("SELECT max(seq) FROM journal", "reading the journal's end");
  if (!journal_end.ok()) return journal_end.status();
  StatusOr<int64_t> snapshot =
      QueryInt("SELECT max(seq) FROM snapshot", "reading the snapshot");
  if (!snapshot.ok()) return snapshot.status();
  snapshot_seq_ = static_cast<uint64_t>(*snapshot);
  last_seq_ = std::max(static_cast<uint64_t>(*journal_end), snapshot_seq_);
  return Status::Ok();
}

Status SqliteStore::LockDirectory() {
  const std::string path = dir_ + "/qm.lock";
  lock_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (lock_.get() < 0) {
    return Unavailable("cannot open lock file " + path + ": " +
                       ErrnoText(errno));
  }
  // flock locks belong to the open file description: a second Open in this
  // process conflicts too, and so does a forked child that still holds it.
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      return Unavailable("cannot lock " + path + ": " + ErrnoText(err));
    }
    char buf[24];
    const ssize_t n = ::pread(lock_.get(), buf, sizeof buf, 0);
    std::string pid(buf, n > 0 ? static_cast<size_t>(n) : 0);
    pid.erase(pid.find_last_not_of(" \n") + 1);
    return Unavailable("state directory " + dir_ +
                       " is in use by another qm process (pid " +
                       (pid.empty() ? "unknown" : pid) +
                       "); stop it or give another --state directory");
  }
  // For the message above only: the flock is the lock.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_.get(), 0) != 0 ||
      ::pwrite(lock_.get(), pid.data(), pid.size(), 0) !=
          static_cast<ssize_t>(pid.size())) {
    return Unavailable("cannot write lock file " + path + ": " +
                       ErrnoText(errno));
  }
  return Status::Ok();
}

Status SqliteStore::SqlError(int rc, std::string_view what) const {
  std::string message =
      db_.get() != nullptr ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
  // "disk I/O error" alone does not say whether the disk is full, gone or
  // forbidden; the system's error does.
  const int primary = rc & 0xff;
  if (db_.get() != nullptr &&
      (primary == SQLITE_IOERR || primary == SQLITE_FULL ||
       primary == SQLITE_CANTOPEN)) {
    if (const int err = sqlite3_system_errno(db_.get()); err != 0) {
      message += " (" + ErrnoText(err) + ")";
    }
  }
  return Status(CodeFor(rc),
                db_path_ + ": " + std::string(what) + ": " + message);
}

Status SqliteStore::Exec(const std::string& sql, std::string_view what) {
  const int rc =
      sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : SqlError(rc, what);
}

StatusOr<std::string> SqliteStore::QueryText(const char* sql,
                                             std::string_view what) {
  Statement stmt;
  int rc = sqlite3_prepare_v2(db_.get(), sql, -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return std::string();
  if (rc != SQLITE_ROW) return SqlError(rc, what);
  const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
  return std::string(text ? reinterpret_cast<const char*>(text) : "");
}

StatusOr<int64_t> SqliteStore::QueryInt(const char* sql,
                                        std::string_view what) {
  Statement stmt;
  int rc = sqlite3_prepare_v2(db_.get(), sql, -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return int64_t{0};
  if (rc != SQLITE_ROW) return SqlError(rc, what);
  return sqlite3_column_int64(stmt.get(), 0);
}

Status SqliteStore::Run(sqlite3_stmt* stmt, std::string_view what) {
  ResetOnExit reset(stmt);
  const int rc = sqlite3_step(stmt);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? Status::Ok()
                                               : SqlError(rc, what);
}

void SqliteStore::Rollback() {
  if (sqlite3_get_autocommit(db_.get()) == 0) {
    (void)Run(rollback_.get(), "rolling back");
  }
}

Status SqliteStore::OpenDatabase() {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_EXRESCODE
  flags |= SQLITE_OPEN_EXRESCODE;
#endif
  const int rc = sqlite3_open_v2(db_path_.c_str(), db_.out(), flags, nullptr);
  if (rc != SQLITE_OK) return SqlError(rc, "opening the database");
  sqlite3_extended_result_codes(db_.get(), 1);

  // EXCLUSIVE before the first access keeps the WAL index in process
  // memory. That first access also finds out whether the file is a database
  // at all (SQLITE_NOTADB: DATA_LOSS).
  QM_RETURN_IF_ERROR(
      Exec("PRAGMA locking_mode=EXCLUSIVE", "setting the locking mode"));
  StatusOr<std::string> mode =
      QueryText("PRAGMA journal_mode=WAL", "reading the database");
  if (!mode.ok()) return mode.status();
  if (*mode != "wal") {
    return Unavailable(db_path_ + ": cannot switch to WAL mode (still " +
                       *mode + ")");
  }
  return Exec(sync_ == SyncMode::kFull ? "PRAGMA synchronous=FULL"
                                       : "PRAGMA synchronous=NORMAL",
              "setting the sync mode");
}

Status SqliteStore::Migrate() {
  QM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "migrating the schema"));
  Status status = [&]() -> Status {
    QM_RETURN_IF_ERROR(
        Exec("CREATE TABLE IF NOT EXISTS schema_version("
             "  id INTEGER PRIMARY KEY CHECK (id = 1),"
             "  version INTEGER NOT NULL) STRICT",
             "migrating the schema"));
    StatusOr<int64_t> version =
        QueryInt("SELECT version FROM schema_version WHERE id = 1",
                 "reading the schema version");
    if (!version.ok()) return version.status();
    if (*version < 0) {
      return DataLoss(db_path_ + " has an invalid schema version " +
                      std::to_string(*version));
    }
    if (*version > kSchemaVersion) {
      return Unavailable(
          db_path_ + " has schema version " + std::to_string(*version) +
          ", newer than this qm knows (" + std::to_string(kSchemaVersion) +
          "); use a newer qm with this state directory");
    }
    if (*version == kSchemaVersion) return Status::Ok();
    for (int v = static_cast<int>(*version); v < kSchemaVersion; ++v) {
      QM_RETURN_IF_ERROR(
          Exec(kMigrations[v],
               "migrating the schema to version " + std::to_string(v + 1)));
    }
    QM_RETURN_IF_ERROR(
        Exec("INSERT OR REPLACE INTO schema_version(id, version) VALUES(1, " +
                 std::to_string(kSchemaVersion) + ")",
             "migrating the schema"));
    return Exec("COMMIT", "migrating the schema");
  }();
  if (sqlite3_get_autocommit(db_.get()) == 0) {
    sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return status;
}

Status SqliteStore::PrepareStatements() {
  const std::pair<Statement*, const char*> statements[] = {
      {&begin_, "BEGIN IMMEDIATE"},
      {&commit_, "COMMIT"},
      {&rollback_, "ROLLBACK"},
      {&insert_record_,
       "INSERT INTO journal(seq, time_ms, epoch, crc, payload) "
       "VALUES(?1, ?2, ?3, ?4, ?5)"},
      {&read_journal_,
       "SELECT seq, time_ms, epoch, crc, payload FROM journal "
       "WHERE seq > ?1 ORDER BY seq"},
      {&insert_snapshot_,
       "INSERT OR REPLACE INTO snapshot(seq, time_ms, digest, crc, payload) "
       "VALUES(?1, ?2, ?3, ?4, ?5)"},
      {&trim_journal_, "DELETE FROM journal WHERE seq <= ?1"},
      {&trim_snapshots_, "DELETE FROM snapshot WHERE seq < ?1"},
      {&read_snapshot_,
       "SELECT seq, time_ms, digest, crc, payload FROM snapshot "
       "ORDER BY seq DESC LIMIT 1"},
      {&insert_history_,
       "INSERT INTO history(tier, time_ms, payload) VALUES(?1, ?2, ?3)"},
      {&read_history_,
       "SELECT time_ms, payload FROM history WHERE tier = ?1 AND "
       "time_ms >= ?2 ORDER BY time_ms, id LIMIT ?3"},
      {&prune_history_, "DELETE FROM history WHERE tier = ?1 AND time_ms < ?2"},
  };
  for (const auto& [stmt, sql] : statements) {
    const int rc = sqlite3_prepare_v3(
        db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, stmt->out(), nullptr);
    if (rc != SQLITE_OK) return SqlError(rc, "preparing statements");
  }
  return Status::Ok();
}

Status SqliteStore::Append(std::vector<JournalRecord>* records) {
  if (records->empty()) return Status::Ok();
  const uint64_t first = last_seq_ + 1;
  if (records->front().seq != first) {
    return InvalidRequest("journal append must continue at seq " +
                          std::to_string(first) + ", not " +
                          std::to_string(records->front().seq));
  }
  for (size_t i = 1; i < records->size(); ++i) {
    if ((*records)[i].seq != first + i) {
      return InvalidRequest("journal batch is not contiguous: seq " +
                            std::to_string((*records)[i].seq) + " follows " +
                            std::to_string((*records)[i - 1].seq) +
                            ", expected " + std::to_string(first + i));
    }
  }
  const uint64_t last = first + records->size() - 1;
  const std::string what = "appending journal records " +
                           std::to_string(first) + ".." + std::to_string(last);
  if (sync_relaxed_) QM_RETURN_IF_ERROR(RestoreSync());
  QM_RETURN_IF_ERROR(Run(begin_.get(), what));
  sqlite3_stmt* insert = insert_record_.get();
  uint64_t bytes = 0;
  for (JournalRecord& record : *records) {
    record.epoch = kEpoch;
    sqlite3_bind_int64(insert, 1, static_cast<int64_t>(record.seq));
    sqlite3_bind_int64(insert, 2, record.time_ms);
    sqlite3_bind_int64(insert, 3, static_cast<int64_t>(record.epoch));
    sqlite3_bind_int64(insert, 4,
                       RecordChecksum(record.seq, record.time_ms, record.epoch,
                                      record.payload));
    int rc = BindBlob(insert, 5, record.payload);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(insert);
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
      Status status = SqlError(rc, what);
      sqlite3_reset(insert);
      Rollback();
      return status;
    }
    sqlite3_reset(insert);
    bytes += record.payload.size();
  }
  // A failed COMMIT (say SQLITE_FULL) leaves last_seq_ where it was, so the
  // caller may retry the same batch.
  Status status = Run(commit_.get(), what);
  if (!status.ok()) {
    Rollback();
    return status;
  }
  last_seq_ = last;
  ++stats_.commits;
  stats_.records += records->size();
  stats_.payload_bytes += bytes;
  return Status::Ok();
}

Status SqliteStore::WriteSnapshot(const SnapshotData& snapshot) {
  const uint64_t seq = snapshot.seq;
  // An empty store may start its history at any seq (qm state import).
  const bool empty = last_seq_ == 0 && snapshot_seq_ == 0;
  if (seq == 0 || (seq > last_seq_ && !empty)) {
    return InvalidRequest("snapshot seq " + std::to_string(seq) +
                          " is not a record of the journal (1.." +
                          std::to_string(last_seq_) + ")");
  }
  if (seq < snapshot_seq_) {
    return InvalidRequest("snapshot seq " + std::to_string(seq) +
                          " is older than the kept snapshot's (" +
                          std::to_string(snapshot_seq_) + ")");
  }
  const std::string what = "writing the snapshot at seq " + std::to_string(seq);
  if (sync_relaxed_) QM_RETURN_IF_ERROR(RestoreSync());
  QM_RETURN_IF_ERROR(Run(begin_.get(), what));
  sqlite3_stmt* insert = insert_snapshot_.get();
  sqlite3_bind_int64(insert, 1, static_cast<int64_t>(seq));
  sqlite3_bind_int64(insert, 2, snapshot.time_ms);
  sqlite3_bind_text64(insert, 3, snapshot.digest.data(), snapshot.digest.size(),
                      SQLITE_STATIC, SQLITE_UTF8);
  sqlite3_bind_int64(
      insert, 4, RecordChecksum(seq, snapshot.time_ms, 0, snapshot.payload));
  Status status = [&]() -> Status {
    const int rc = BindBlob(insert, 5, snapshot.payload);
    if (rc != SQLITE_OK) return SqlError(rc, what);
    QM_RETURN_IF_ERROR(Run(insert, what));
    sqlite3_bind_int64(trim_journal_.get(), 1, static_cast<int64_t>(seq));
    QM_RETURN_IF_ERROR(Run(trim_journal_.get(), what));
    sqlite3_bind_int64(trim_snapshots_.get(), 1, static_cast<int64_t>(seq));
    QM_RETURN_IF_ERROR(Run(trim_snapshots_.get(), what));
    return Run(commit_.get(), what);
  }();
  if (!status.ok()) {
    Rollback();
    return status;
  }
  snapshot_seq_ = seq;
  last_seq_ = std::max(last_seq_, seq);
  ++stats_.snapshots;
  return Status::Ok();
}

StatusOr<std::optional<SnapshotData>> SqliteStore::LatestSnapshot() {
  sqlite3_stmt* stmt = read_snapshot_.get();
  ResetOnExit reset(stmt);
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return std::optional<SnapshotData>();
  if (rc != SQLITE_ROW) return SqlError(rc, "reading the snapshot");
  SnapshotData snapshot;
  snapshot.seq = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  snapshot.time_ms = sqlite3_column_int64(stmt, 1);
  const unsigned char* digest = sqlite3_column_text(stmt, 2);
  snapshot.digest.assign(digest ? reinterpret_cast<const char*>(digest) : "",
                         static_cast<size_t>(sqlite3_column_bytes(stmt, 2)));
  const int64_t crc = sqlite3_column_int64(stmt, 3);
  snapshot.payload = ColumnBlob(stmt, 4);
  if (crc !=
      RecordChecksum(snapshot.seq, snapshot.time_ms, 0, snapshot.payload)) {
    return DataLoss(db_path_ + ": snapshot at seq " +
                    std::to_string(snapshot.seq) + " fails its checksum");
  }
  return std::optional<SnapshotData>(std::move(snapshot));
}

Status SqliteStore::ReadJournal(
    uint64_t after,
    const std::function<Status(const JournalRecord& record)>& visit) {
  if (after < snapshot_seq_) {
    return DataLoss(db_path_ + ": journal " +
                    RecordsAre(after + 1, snapshot_seq_) +
                    " no longer kept: the snapshot at seq " +
                    std::to_string(snapshot_seq_) +
                    " replaced them; read it, then the journal after it");
  }
  sqlite3_stmt* stmt = read_journal_.get();
  ResetOnExit reset(stmt);
  sqlite3_bind_int64(stmt, 1, static_cast<int64_t>(after));
  JournalRecord record;
  uint64_t expected = after + 1;
  // "last good record N at T", for the messages below.
  auto last_good = [&] {
    const uint64_t good = expected - 1;
    if (good == 0) return std::string("no good record before it");
    std::string text = "last good record " + std::to_string(good);
    if (good > after) text += " at " + FormatMs(record.time_ms);
    return text;
  };
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const auto seq = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
    if (seq != expected) {
      return DataLoss(db_path_ + ": journal " + RecordsAre(expected, seq - 1) +
                      " missing (" + last_good() + ", next kept record " +
                      std::to_string(seq) + "); recovery stops there");
    }
    const int64_t time_ms = sqlite3_column_int64(stmt, 1);
    const auto epoch = static_cast<uint64_t>(sqlite3_column_int64(stmt, 2));
    const int64_t crc = sqlite3_column_int64(stmt, 3);
    const std::string_view payload = ColumnBlob(stmt, 4);
    if (crc != RecordChecksum(seq, time_ms, epoch, payload)) {
      return DataLoss(db_path_ + ": journal record " + std::to_string(seq) +
                      " fails its checksum (" + last_good() +
                      "); recovery stops there");
    }
    record.seq = seq;
    record.time_ms = time_ms;
    record.epoch = epoch;
    record.payload.assign(payload);
    QM_RETURN_IF_ERROR(visit(record));
    ++expected;
  }
  if (rc != SQLITE_DONE) {
    return SqlError(
        rc, "reading the journal after record " + std::to_string(expected - 1));
  }
  return Status::Ok();
}

Status SqliteStore::Check() {
  StatusOr<std::string> integrity =
      QueryText("PRAGMA integrity_check", "checking the database");
  if (!integrity.ok()) return integrity.status();
  if (*integrity != "ok") {
    return DataLoss(db_path_ +
                    " fails SQLite's integrity check: " + *integrity);
  }
  StatusOr<std::optional<SnapshotData>> snapshot = LatestSnapshot();
  if (!snapshot.ok()) return snapshot.status();
  const uint64_t from = snapshot->has_value() ? (*snapshot)->seq : 0;
  return ReadJournal(from, [](const JournalRecord&) { return Status::Ok(); });
}

Status SqliteStore::AppendHistory(const std::vector<HistoryRecord>& records) {
  if (records.empty()) return Status::Ok();
  for (const HistoryRecord& record : records) {
    if (record.tier < 0) {
      return InvalidRequest("history tier " + std::to_string(record.tier) +
                            " is negative");
    }
  }
  const std::string what = "appending " + std::to_string(records.size()) +
                           " usage history record(s)";
  // A sample every second must not cost an fsync every second: under
  // kFull the history commits with synchronous=NORMAL (safe against a
  // process crash, not a power loss, until the next journal commit's fsync
  // or checkpoint covers it); the journal's setting is back before anything
  // else runs.
  const bool relax = sync_ == SyncMode::kFull;
  if (relax) {
    sync_relaxed_ = true;
    QM_RETURN_IF_ERROR(Exec("PRAGMA synchronous=NORMAL", what));
  }
  Status status = Run(begin_.get(), what);
  if (status.ok())
    status = [&]() -> Status {
      sqlite3_stmt* insert = insert_history_.get();
      for (const HistoryRecord& record : records) {
        sqlite3_bind_int64(insert, 1, record.tier);
        sqlite3_bind_int64(insert, 2, record.time_ms);
        const int rc = BindBlob(insert, 3, record.payload);
        if (rc != SQLITE_OK) {
          sqlite3_reset(insert);
          return SqlError(rc, what);
        }
        QM_RETURN_IF_ERROR(Run(insert, what));
      }
      return Run(commit_.get(), what);
    }();
  if (!status.ok()) Rollback();
  if (relax) {
    const Status restored = RestoreSync();
    if (status.ok()) status = restored;
  }
  return status;
}

Status SqliteStore::RestoreSync() {
  QM_RETURN_IF_ERROR(
      Exec("PRAGMA synchronous=FULL", "restoring the sync mode"));
  sync_relaxed_ = false;
  return Status::Ok();
}

StatusOr<std::vector<HistoryRecord>> SqliteStore::ReadHistory(int tier,
                                                              int64_t from_ms,
                                                              size_t limit) {
  std::vector<HistoryRecord> out;
  if (limit == 0) return out;
  sqlite3_stmt* stmt = read_history_.get();
  ResetOnExit reset(stmt);
  sqlite3_bind_int64(stmt, 1, tier);
  sqlite3_bind_int64(stmt, 2, from_ms);
  sqlite3_bind_int64(
      stmt, 3,
      static_cast<int64_t>(std::min<uint64_t>(
          limit, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    HistoryRecord& record = out.emplace_back();
    record.tier = tier;
    record.time_ms = sqlite3_column_int64(stmt, 0);
    record.payload.assign(ColumnBlob(stmt, 1));
  }
  if (rc != SQLITE_DONE) return SqlError(rc, "reading the usage history");
  return out;
}

Status SqliteStore::PruneHistory(int tier, int64_t before_ms) {
  sqlite3_bind_int64(prune_history_.get(), 1, tier);
  sqlite3_bind_int64(prune_history_.get(), 2, before_ms);
  return Run(prune_history_.get(), "pruning the usage history");
}

StatusOr<StoreInfo> SqliteStore::Info() {
  Statement stmt;
  int rc = sqlite3_prepare_v2(
      db_.get(),
      "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0), count(*),"
      "       coalesce(sum(length(payload)), 0) FROM journal",
      -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return SqlError(rc, "reading the journal's figures");
  StoreInfo info;
  info.kind = "sqlite";
  info.location = db_path_;
  info.schema_version = kSchemaVersion;
  info.snapshot_seq = snapshot_seq_;
  info.first_seq = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 0));
  info.last_seq = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 1));
  info.records = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 2));
  info.bytes = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 3));
  return info;
}

}  // namespace

StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const StoreOptions& options) {
  std::string dir = options.location;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::string node_id = options.node_id;
  if (node_id.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
    node_id = std::string(host) + ":" + std::to_string(::getpid());
  }
  auto store = std::make_unique<SqliteStore>(std::move(dir), options.sync,
                                             std::move(node_id));
  QM_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace qm::store
