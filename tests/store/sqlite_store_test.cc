// The SQLite store: round trips, continuity, snapshots, the directory lock,
// damage detection, migrations, disk full and kill -9 durability.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "qm/store.h"

namespace qm {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the test temp dir, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = testing::TempDir() + "/qm-sqlite-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // The state directory the tests open (one level down, so Open creates it).
  std::string state() const { return path_ + "/state"; }
  std::string db() const { return state() + "/qm.db"; }

 private:
  std::string path_;
};

std::unique_ptr<Store> OpenOrDie(const std::string& dir,
                                 SyncMode sync = SyncMode::kFull) {
  StoreOptions options;
  options.location = dir;
  options.sync = sync;
  StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

Status OpenStatus(const std::string& dir) {
  StoreOptions options;
  options.location = dir;
  return Store::Open(options).status();
}

// The payload the tests write for `seq`: recognisable and of varying size.
std::string PayloadFor(uint64_t seq) {
  return "record-" + std::to_string(seq) + std::string(seq % 50, 'x');
}
int64_t TimeFor(uint64_t seq) {
  return 1767225600000 + static_cast<int64_t>(seq) * 10;
}

std::vector<JournalRecord> Batch(uint64_t first, uint64_t count) {
  std::vector<JournalRecord> batch(count);
  for (uint64_t i = 0; i < count; ++i) {
    batch[i].seq = first + i;
    batch[i].time_ms = TimeFor(first + i);
    batch[i].payload = PayloadFor(first + i);
  }
  return batch;
}

Status AppendRange(Store* store, uint64_t first, uint64_t count) {
  std::vector<JournalRecord> batch = Batch(first, count);
  return store->Append(&batch);
}

// Reads the journal after `after`, collecting the records visited and the
// final status.
struct ReadResult {
  std::vector<JournalRecord> records;
  Status status;
  std::vector<uint64_t> seqs() const {
    std::vector<uint64_t> out;
    for (const auto& r : records) out.push_back(r.seq);
    return out;
  }
};
ReadResult ReadAll(Store* store, uint64_t after) {
  ReadResult result;
  result.status = store->ReadJournal(after, [&](const JournalRecord& r) {
    result.records.push_back(r);
    return Status::Ok();
  });
  return result;
}

std::vector<uint64_t> Seqs(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

// Runs `sql` on the database file through a separate connection (the store
// must be closed).
void Tamper(const std::string& db, const std::string& sql) {
  sqlite3* conn = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &conn), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(conn, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "");
  sqlite3_free(error);
  sqlite3_close(conn);
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SqliteStoreTest, AppendsAndReadsBackInOrder) {
  TempDir tmp;
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->IsLeader());
  EXPECT_EQ(store->epoch(), 1u);
  EXPECT_TRUE(store->AcquireLeadership(Duration(0)).ok());

  std::vector<JournalRecord> batch = Batch(1, 3);
  batch[1].payload.clear();  // an empty payload round-trips too
  batch[2].payload = std::string("\0bin\xff", 5);
  ASSERT_TRUE(store->Append(&batch).ok());
  for (const auto& r : batch) EXPECT_EQ(r.epoch, 1u);  // set by Append
  ASSERT_TRUE(AppendRange(store.get(), 4, 7).ok());
  std::vector<JournalRecord> none;
  EXPECT_TRUE(store->Append(&none).ok());

  ReadResult all = ReadAll(store.get(), 0);
  ASSERT_TRUE(all.status.ok()) << all.status.ToString();
  ASSERT_EQ(all.seqs(), Seqs(1, 10));
  EXPECT_EQ(all.records[0].payload, PayloadFor(1));
  EXPECT_EQ(all.records[1].payload, "");
  EXPECT_EQ(all.records[2].payload, std::string("\0bin\xff", 5));
  EXPECT_EQ(all.records[9].payload, PayloadFor(10));
  EXPECT_EQ(all.records[9].time_ms, TimeFor(10));
  EXPECT_EQ(all.records[9].epoch, 1u);

  EXPECT_EQ(ReadAll(store.get(), 7).seqs(), Seqs(8, 10));
  EXPECT_TRUE(ReadAll(store.get(), 10).records.empty());
  EXPECT_TRUE(store->Check().ok());

  // The visitor's error stops the read and comes back as is.
  int visited = 0;
  const Status stop = store->ReadJournal(0, [&](const JournalRecord& r) {
    ++visited;
    return r.seq == 4 ? Conflict("enough") : Status::Ok();
  });
  EXPECT_EQ(stop.code(), Code::kConflict);
  EXPECT_EQ(visited, 4);
  // ...and leaves the store usable.
  EXPECT_EQ(ReadAll(store.get(), 0).records.size(), 10u);
}

TEST(SqliteStoreTest, CreatesTheDirectoryPrivateWithItsFiles) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/a/b/state/";
  ASSERT_NE(OpenOrDie(dir), nullptr);
  struct stat st;
  ASSERT_EQ(::stat((tmp.path() + "/a/b/state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(fs::exists(tmp.path() + "/a/b/state/qm.db"));
  EXPECT_TRUE(fs::exists(tmp.path() + "/a/b/state/qm.lock"));

  // A file where the directory should be is a bad location.
  const std::string file = tmp.path() + "/file";
  std::ofstream(file) << "not a directory";
  EXPECT_EQ(OpenStatus(file).code(), Code::kInvalidRequest);
  EXPECT_EQ(OpenStatus(file + "/sub").code(), Code::kInvalidRequest);
}

TEST(SqliteStoreTest, RefusesBatchesThatDoNotContinueTheJournal) {
  TempDir tmp;
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(AppendRange(store.get(), 2, 1).code(), Code::kInvalidRequest);
  ASSERT_TRUE(AppendRange(store.get(), 1, 5).ok());
  EXPECT_EQ(AppendRange(store.get(), 5, 1).code(), Code::kInvalidRequest);
  EXPECT_EQ(AppendRange(store.get(), 7, 1).code(), Code::kInvalidRequest);
  std::vector<JournalRecord> holey = Batch(6, 3);
  holey[2].seq = 9;
  const Status status = store->Append(&holey);
  EXPECT_EQ(status.code(), Code::kInvalidRequest);
  EXPECT_TRUE(Contains(status.message(), "expected 8")) << status.message();
  // Nothing of the refused batches was written.
  EXPECT_EQ(ReadAll(store.get(), 0).seqs(), Seqs(1, 5));
  EXPECT_TRUE(AppendRange(store.get(), 6, 1).ok());
}

TEST(SqliteStoreTest, SnapshotReplacesTheJournalItCovers) {
  TempDir tmp;
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  auto none = store->LatestSnapshot();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(AppendRange(store.get(), 1, 10).ok());

  SnapshotData snap{6, TimeFor(6), "digest-6", std::string("state\0six", 9)};
  ASSERT_TRUE(store->WriteSnapshot(snap).ok());
  auto latest = store->LatestSnapshot();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->seq, 6u);
  EXPECT_EQ((*latest)->time_ms, TimeFor(6));
  EXPECT_EQ((*latest)->digest, "digest-6");
  EXPECT_EQ((*latest)->payload, snap.payload);

  EXPECT_EQ(ReadAll(store.get(), 6).seqs(), Seqs(7, 10));
  EXPECT_EQ(ReadAll(store.get(), 8).seqs(), Seqs(9, 10));
  // Records the snapshot replaced cannot be read from the journal.
  const ReadResult behind = ReadAll(store.get(), 3);
  EXPECT_EQ(behind.status.code(), Code::kDataLoss);
  EXPECT_TRUE(behind.records.empty());
  EXPECT_TRUE(Contains(behind.status.message(), "records 4..6"))
      << behind.status.message();

  // Beyond the journal, older than the kept snapshot, or seq 0: refused.
  EXPECT_EQ(store->WriteSnapshot({11, 0, "d", "p"}).code(),
            Code::kInvalidRequest);
  EXPECT_EQ(store->WriteSnapshot({5, 0, "d", "p"}).code(),
            Code::kInvalidRequest);
  EXPECT_EQ(store->WriteSnapshot({0, 0, "d", "p"}).code(),
            Code::kInvalidRequest);
  EXPECT_EQ(store->LatestSnapshot()->value().seq, 6u);

  // A snapshot of everything empties the journal; appending goes on.
  ASSERT_TRUE(store->WriteSnapshot({10, TimeFor(10), "digest-10", "s"}).ok());
  EXPECT_TRUE(ReadAll(store.get(), 10).records.empty());
  EXPECT_TRUE(ReadAll(store.get(), 10).status.ok());
  ASSERT_TRUE(AppendRange(store.get(), 11, 2).ok());
  EXPECT_EQ(ReadAll(store.get(), 10).seqs(), Seqs(11, 12));
  EXPECT_TRUE(store->Check().ok());
}

TEST(SqliteStoreTest, ReopenKeepsEverythingAndTheLastSeq) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 20).ok());
    ASSERT_TRUE(store->WriteSnapshot({5, TimeFor(5), "d5", "s5"}).ok());
  }
  {
    auto store = OpenOrDie(tmp.state(), SyncMode::kNormal);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(AppendRange(store.get(), 20, 1).code(), Code::kInvalidRequest);
    ASSERT_TRUE(AppendRange(store.get(), 21, 1).ok());
    EXPECT_EQ(store->LatestSnapshot()->value().payload, "s5");
    EXPECT_EQ(ReadAll(store.get(), 5).seqs(), Seqs(6, 21));
    // Then everything folds into a snapshot: the snapshot alone says where
    // the history ends.
    ASSERT_TRUE(store->WriteSnapshot({21, TimeFor(21), "d21", "s21"}).ok());
  }
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(AppendRange(store.get(), 1, 1).code(), Code::kInvalidRequest);
  EXPECT_TRUE(AppendRange(store.get(), 22, 1).ok());
  EXPECT_TRUE(store->Check().ok());
}

TEST(SqliteStoreTest, SecondOpenInTheSameProcessIsRefused) {
  TempDir tmp;
  auto first = OpenOrDie(tmp.state());
  ASSERT_NE(first, nullptr);
  const Status second = OpenStatus(tmp.state());
  EXPECT_EQ(second.code(), Code::kUnavailable);
  EXPECT_EQ(second.message(),
            "state directory " + tmp.state() +
                " is in use by another qm process (pid " +
                std::to_string(::getpid()) +
                "); stop it or give another --state directory");
  first.reset();
  EXPECT_NE(OpenOrDie(tmp.state()), nullptr);
}

TEST(SqliteStoreTest, ChildProcessHoldingTheDirectoryBlocksOpen) {
  TempDir tmp;
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(release[1]);
    StoreOptions options;
    options.location = tmp.state();
    auto store = Store::Open(options);
    const char ok = store.ok() ? 'y' : 'n';
    if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
    char c;
    while (::read(release[0], &c, 1) > 0) {
    }  // until the parent closes its end
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');

  const Status blocked = OpenStatus(tmp.state());
  EXPECT_EQ(blocked.code(), Code::kUnavailable);
  EXPECT_TRUE(
      Contains(blocked.message(), "(pid " + std::to_string(child) + ")"))
      << blocked.message();

  ::close(release[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::close(ready[0]);
  EXPECT_NE(OpenOrDie(tmp.state()), nullptr);
}

TEST(SqliteStoreTest, GarbledRecordStopsTheReadAfterTheGoodPrefix) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 10).ok());
  }
  Tamper(tmp.db(), "UPDATE journal SET payload = x'00ff' WHERE seq = 7");
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  const ReadResult read = ReadAll(store.get(), 0);
  EXPECT_EQ(read.seqs(), Seqs(1, 6));
  EXPECT_EQ(read.status.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(read.status.message(),
                       "journal record 7 fails its checksum (last good "
                       "record 6 at " +
                           FormatTime(Time(Duration(TimeFor(6)))) +
                           "); recovery stops there"))
      << read.status.message();
  // Read from just before it, there is no good record to name a time for.
  EXPECT_TRUE(Contains(ReadAll(store.get(), 6).status.message(),
                       "(last good record 6)"));
  const Status check = store->Check();
  EXPECT_EQ(check.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(check.message(), "record 7")) << check.message();
}

TEST(SqliteStoreTest, RecordMovedToAnotherSeqFailsItsChecksum) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 3).ok());
  }
  // Record 3 replaced by a copy of record 2: the crc covers the seq.
  Tamper(tmp.db(),
         "UPDATE journal SET (time_ms, epoch, crc, payload) = "
         "(SELECT time_ms, epoch, crc, payload FROM journal WHERE seq = 2) "
         "WHERE seq = 3");
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  const ReadResult read = ReadAll(store.get(), 0);
  EXPECT_EQ(read.seqs(), Seqs(1, 2));
  EXPECT_EQ(read.status.code(), Code::kDataLoss);
}

TEST(SqliteStoreTest, MissingRecordIsAGap) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 10).ok());
  }
  Tamper(tmp.db(), "DELETE FROM journal WHERE seq IN (5, 6)");
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  const ReadResult read = ReadAll(store.get(), 0);
  EXPECT_EQ(read.seqs(), Seqs(1, 4));
  EXPECT_EQ(read.status.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(read.status.message(),
                       "journal records 5..6 are missing (last good record 4"))
      << read.status.message();
  EXPECT_EQ(store->Check().code(), Code::kDataLoss);

  // A journal that does not start at 1 without a snapshot is a gap too.
  store.reset();
  Tamper(tmp.db(), "DELETE FROM journal WHERE seq < 5");
  store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  const Status check = store->Check();
  EXPECT_EQ(check.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(check.message(), "records 1..6 are missing"))
      << check.message();
}

TEST(SqliteStoreTest, DamagedSnapshotIsDataLoss) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 4).ok());
    ASSERT_TRUE(store->WriteSnapshot({3, TimeFor(3), "d", "snap"}).ok());
  }
  Tamper(tmp.db(), "UPDATE snapshot SET payload = x'736e6170ff'");
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  const auto latest = store->LatestSnapshot();
  EXPECT_EQ(latest.status().code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(latest.status().message(),
                       "snapshot at seq 3 fails its checksum"))
      << latest.status().message();
  EXPECT_EQ(store->Check().code(), Code::kDataLoss);
}

TEST(SqliteStoreTest, FileThatIsNotADatabaseIsDataLoss) {
  TempDir tmp;
  fs::create_directories(tmp.state());
  {
    std::ofstream garbage(tmp.db(), std::ios::binary);
    std::mt19937 rng(7);
    for (int i = 0; i < 8192; ++i) garbage.put(static_cast<char>(rng()));
  }
  const Status status = OpenStatus(tmp.state());
  EXPECT_EQ(status.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(status.message(), tmp.db())) << status.message();
  EXPECT_TRUE(Contains(status.message(), "not a database")) << status.message();
}

TEST(SqliteStoreTest, TruncatedDatabaseIsDataLoss) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    for (uint64_t seq = 1; seq <= 400; seq += 50) {
      std::vector<JournalRecord> batch = Batch(seq, 50);
      for (auto& r : batch) r.payload.append(1000, 'p');
      ASSERT_TRUE(store->Append(&batch).ok());
    }
  }
  const auto size = fs::file_size(tmp.db());
  ASSERT_GT(size, 100000u);
  fs::resize_file(tmp.db(), size / 2);

  StoreOptions options;
  options.location = tmp.state();
  auto store = Store::Open(options);
  const Status status = store.ok() ? (*store)->Check() : store.status();
  EXPECT_EQ(status.code(), Code::kDataLoss) << status.ToString();
  EXPECT_TRUE(Contains(status.message(), tmp.db())) << status.message();
}

TEST(SqliteStoreTest, NewerSchemaVersionIsRefused) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->Info()->schema_version, 2);
  }
  Tamper(tmp.db(), "UPDATE schema_version SET version = 99");
  const Status status = OpenStatus(tmp.state());
  EXPECT_EQ(status.code(), Code::kUnavailable);
  EXPECT_TRUE(Contains(status.message(), "schema version 99, newer than"))
      << status.message();
}

TEST(SqliteStoreTest, InfoAndStatsDescribeTheStore) {
  TempDir tmp;
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  auto empty = store->Info();
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->kind, "sqlite");
  EXPECT_EQ(empty->location, tmp.db());
  EXPECT_EQ(empty->schema_version, 2);
  EXPECT_EQ(empty->records, 0u);
  EXPECT_EQ(empty->first_seq, 0u);
  EXPECT_EQ(empty->last_seq, 0u);

  uint64_t bytes = 0;
  for (uint64_t seq = 1; seq <= 30; ++seq) bytes += PayloadFor(seq).size();
  for (uint64_t seq = 1; seq <= 30; seq += 10) {
    ASSERT_TRUE(AppendRange(store.get(), seq, 10).ok());
  }
  ASSERT_TRUE(store->WriteSnapshot({12, TimeFor(12), "d", "s"}).ok());
  uint64_t kept = 0;
  for (uint64_t seq = 13; seq <= 30; ++seq) kept += PayloadFor(seq).size();

  auto info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshot_seq, 12u);
  EXPECT_EQ(info->first_seq, 13u);
  EXPECT_EQ(info->last_seq, 30u);
  EXPECT_EQ(info->records, 18u);
  EXPECT_EQ(info->bytes, kept);

  const StoreStats stats = store->stats();
  EXPECT_EQ(stats.commits, 3u);
  EXPECT_EQ(stats.records, 30u);
  EXPECT_EQ(stats.payload_bytes, bytes);
  EXPECT_EQ(stats.snapshots, 1u);

  // Info describes the journal rows kept: none once a snapshot covers all.
  ASSERT_TRUE(store->WriteSnapshot({30, TimeFor(30), "d", "s"}).ok());
  info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshot_seq, 30u);
  EXPECT_EQ(info->records, 0u);
  EXPECT_EQ(info->first_seq, 0u);
  EXPECT_EQ(info->last_seq, 0u);
  EXPECT_EQ(info->bytes, 0u);
}

// Runs `body` in a forked child; returns what it wrote to the pipe it gets
// (empty means success) once it exits.
std::string InChild(const std::function<std::string()>& body) {
  int out[2];
  if (::pipe(out) != 0) return "pipe failed";
  const pid_t child = ::fork();
  if (child < 0) return "fork failed";
  if (child == 0) {
    ::close(out[0]);
    const std::string failure = body();
    const bool sent = ::write(out[1], failure.data(), failure.size()) ==
                      static_cast<ssize_t>(failure.size());
    ::_exit(sent ? 0 : 1);
  }
  ::close(out[1]);
  std::string failure;
  char buf[256];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) {
    failure.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    failure += " (child exited abnormally)";
  }
  return failure;
}

// ---- The usage history ----

std::vector<int64_t> Times(const std::vector<HistoryRecord>& records) {
  std::vector<int64_t> out;
  for (const HistoryRecord& r : records) out.push_back(r.time_ms);
  return out;
}
std::vector<std::string> Payloads(const std::vector<HistoryRecord>& records) {
  std::vector<std::string> out;
  for (const HistoryRecord& r : records) out.push_back(r.payload);
  return out;
}

// The value of `sql` (first column of the first row) on a closed store's
// database, "" when no row.
std::string QueryDb(const std::string& db, const std::string& sql) {
  sqlite3* conn = nullptr;
  std::string out;
  if (sqlite3_open(db.c_str(), &conn) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(conn, sql.c_str(), -1, &stmt, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      out = text ? reinterpret_cast<const char*>(text) : "";
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(conn);
  return out;
}

TEST(SqliteStoreTest, HistoryIsReadByTierInTimeOrderAndPruned) {
  TempDir tmp;
  const int64_t t0 = 1767225600000;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    // Out of order, two of one time, two tiers, binary payloads.
    ASSERT_TRUE(store
                    ->AppendHistory({{0, t0 + 30, "c"},
                                     {0, t0 + 10, "a"},
                                     {1, t0 + 10, "avg"},
                                     {0, t0 + 20, "b1"},
                                     {0, t0 + 20, std::string("b2\0\xff", 4)}})
                    .ok());
    ASSERT_TRUE(store->AppendHistory({}).ok());
    auto all = store->ReadHistory(0, 0, 100);
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    EXPECT_EQ(Times(*all),
              (std::vector<int64_t>{t0 + 10, t0 + 20, t0 + 20, t0 + 30}));
    EXPECT_EQ(Payloads(*all), (std::vector<std::string>{
                                  "a", "b1", std::string("b2\0\xff", 4), "c"}));
    for (const HistoryRecord& r : *all) EXPECT_EQ(r.tier, 0);
    // From a time on (inclusive), and the oldest `limit` of them.
    EXPECT_EQ(
        Payloads(*store->ReadHistory(0, t0 + 20, 100)),
        (std::vector<std::string>{"b1", std::string("b2\0\xff", 4), "c"}));
    EXPECT_EQ(Payloads(*store->ReadHistory(0, 0, 2)),
              (std::vector<std::string>{"a", "b1"}));
    EXPECT_TRUE(store->ReadHistory(0, 0, 0)->empty());
    EXPECT_EQ(Payloads(*store->ReadHistory(1, 0, 100)),
              (std::vector<std::string>{"avg"}));
    EXPECT_TRUE(store->ReadHistory(2, 0, 100)->empty());
    EXPECT_EQ(store->AppendHistory({{-1, t0, "x"}}).code(),
              Code::kInvalidRequest);

    // Pruning drops what is older than the cut, in that tier only.
    ASSERT_TRUE(store->PruneHistory(0, t0 + 20).ok());
    EXPECT_EQ(Times(*store->ReadHistory(0, 0, 100)),
              (std::vector<int64_t>{t0 + 20, t0 + 20, t0 + 30}));
    EXPECT_EQ(store->ReadHistory(1, 0, 100)->size(), 1u);

    // None of it is engine state: the journal stays empty.
    EXPECT_EQ(store->Info()->records, 0u);
    EXPECT_TRUE(ReadAll(store.get(), 0).records.empty());
    EXPECT_TRUE(store->Check().ok());
  }
  // It is durable.
  auto store = OpenOrDie(tmp.state());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Payloads(*store->ReadHistory(0, 0, 100)),
            (std::vector<std::string>{"b1", std::string("b2\0\xff", 4), "c"}));
  EXPECT_EQ(Payloads(*store->ReadHistory(1, 0, 100)),
            (std::vector<std::string>{"avg"}));
}

TEST(SqliteStoreTest, SchemaOneDatabaseMigratesAndKeepsItsJournal) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(AppendRange(store.get(), 1, 20).ok());
    ASSERT_TRUE(store->WriteSnapshot({5, TimeFor(5), "d5", "s5"}).ok());
  }
  // What a qm of schema version 1 left: no history table.
  Tamper(tmp.db(), "DROP TABLE history; UPDATE schema_version SET version = 1");
  ASSERT_EQ(QueryDb(tmp.db(), "SELECT version FROM schema_version"), "1");
  ASSERT_EQ(QueryDb(tmp.db(),
                    "SELECT count(*) FROM sqlite_schema WHERE name = "
                    "'history'"),
            "0");

  {
    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->Info()->schema_version, 2);
    // The journal and the snapshot are as they were.
    EXPECT_EQ(store->LatestSnapshot()->value().payload, "s5");
    ReadResult journal = ReadAll(store.get(), 5);
    ASSERT_TRUE(journal.status.ok()) << journal.status.ToString();
    ASSERT_EQ(journal.seqs(), Seqs(6, 20));
    EXPECT_EQ(journal.records[0].payload, PayloadFor(6));
    EXPECT_EQ(journal.records[14].time_ms, TimeFor(20));
    EXPECT_TRUE(store->Check().ok());
    EXPECT_TRUE(AppendRange(store.get(), 21, 1).ok());
    // And the history works.
    ASSERT_TRUE(store->AppendHistory({{0, TimeFor(21), "h"}}).ok());
    EXPECT_EQ(Payloads(*store->ReadHistory(0, 0, 10)),
              (std::vector<std::string>{"h"}));
  }
  EXPECT_EQ(QueryDb(tmp.db(), "SELECT version FROM schema_version"), "2");
  // STRICT, with its index.
  EXPECT_NE(
      QueryDb(tmp.db(), "SELECT sql FROM sqlite_schema WHERE name = 'history'")
          .find("STRICT"),
      std::string::npos);
  EXPECT_EQ(QueryDb(tmp.db(),
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'index' "
                    "AND tbl_name = 'history'"),
            "1");
}

TEST(SqliteStoreTest, DiskFullFailsTheBatchAndKeepsTheLastSeq) {
  TempDir tmp;
  // RLIMIT_FSIZE stands in for a full disk: writes past it fail. In a child,
  // so the limit stays there.
  const std::string failure = InChild([&]() -> std::string {
    ::signal(SIGXFSZ, SIG_IGN);
    StoreOptions options;
    options.location = tmp.state();
    auto store = Store::Open(options);
    if (!store.ok()) return store.status().ToString();
    if (!AppendRange(store->get(), 1, 10).ok()) return "first append failed";
    struct rlimit limit;
    ::getrlimit(RLIMIT_FSIZE, &limit);
    const rlimit saved = limit;
    limit.rlim_cur = 256 * 1024;
    ::setrlimit(RLIMIT_FSIZE, &limit);
    uint64_t next = 11;
    Status full;
    while (full.ok() && next < 100000) {
      std::vector<JournalRecord> batch = Batch(next, 16);
      for (auto& r : batch) r.payload.append(4000, 'f');
      full = (*store)->Append(&batch);
      if (full.ok()) next += 16;
    }
    if (full.code() != Code::kUnavailable) {
      return "expected UNAVAILABLE, got " + full.ToString();
    }
    if (full.message().find("qm.db") == std::string::npos) {
      return "message lacks the path: " + full.message();
    }
    // The failed batch did not move the journal's end...
    const Status skip = AppendRange(store->get(), next + 16, 1);
    if (skip.code() != Code::kInvalidRequest) {
      return "seq moved past the failed batch: " + skip.ToString();
    }
    // ...so once there is room again, the same seqs go in.
    ::setrlimit(RLIMIT_FSIZE, &saved);
    const Status retry = AppendRange(store->get(), next, 16);
    if (!retry.ok()) return "retry failed: " + retry.ToString();
    const Status check = (*store)->Check();
    if (!check.ok()) return "check failed: " + check.ToString();
    return "";
  });
  EXPECT_EQ(failure, "");
}

// kill -9 at random moments while a child appends (and now and then
// snapshots): every acknowledged record must survive, contiguous and intact.
TEST(SqliteStoreTest, KilledWriterLosesNoAcknowledgedRecord) {
  TempDir tmp;
  std::mt19937 rng(20260126);
  uint64_t acked = 0;
  for (int round = 0; round < 10; ++round) {
    const SyncMode sync = round % 2 == 0 ? SyncMode::kFull : SyncMode::kNormal;
    int acks[2];
    ASSERT_EQ(::pipe(acks), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(acks[0]);
      StoreOptions options;
      options.location = tmp.state();
      options.sync = sync;
      auto opened = Store::Open(options);
      if (!opened.ok()) ::_exit(2);
      Store* store = opened->get();
      std::mt19937 child_rng(static_cast<unsigned>(::getpid()));
      uint64_t next = 1;
      if (auto info = store->Info(); info.ok()) {
        next = std::max(info->last_seq, info->snapshot_seq) + 1;
      }
      for (int batches = 0;; ++batches) {
        const uint64_t count = 1 + child_rng() % 64;
        if (!AppendRange(store, next, count).ok()) ::_exit(3);
        next += count;
        if (batches % 40 == 39 &&
            !store
                 ->WriteSnapshot(
                     {next - 1 - child_rng() % count, 0, "digest", "snapshot"})
                 .ok()) {
          ::_exit(4);
        }
        const uint64_t last = next - 1;
        if (::write(acks[1], &last, sizeof last) != sizeof last) ::_exit(5);
      }
    }
    ::close(acks[1]);
    // Let it run for a random number of acknowledged batches, then a
    // random moment more, so the kill lands anywhere in a transaction.
    const int wait_acks = 1 + static_cast<int>(rng() % 60);
    uint64_t last = 0;
    for (int i = 0; i < wait_acks; ++i) {
      if (::read(acks[0], &last, sizeof last) != sizeof last) break;
      acked = std::max(acked, last);
    }
    const auto delay = std::chrono::microseconds(rng() % 3000);
    const auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
    }
    ::kill(child, SIGKILL);
    while (::read(acks[0], &last, sizeof last) == sizeof last) {
      acked = std::max(acked, last);
    }
    ::close(acks[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited " << status;

    auto store = OpenOrDie(tmp.state());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Check().ok()) << store->Check().ToString();
    auto snapshot = store->LatestSnapshot();
    ASSERT_TRUE(snapshot.ok());
    const uint64_t from = snapshot->has_value() ? (*snapshot)->seq : 0;
    uint64_t seen = from;
    const Status read = store->ReadJournal(from, [&](const JournalRecord& r) {
      if (r.payload != PayloadFor(r.seq) || r.time_ms != TimeFor(r.seq)) {
        return DataLoss("wrong content at " + std::to_string(r.seq));
      }
      seen = r.seq;
      return Status::Ok();
    });
    ASSERT_TRUE(read.ok()) << read.ToString();
    EXPECT_GE(seen, acked) << "round " << round;
  }
  EXPECT_GT(acked, 0u);
}

// Throughput figures, not assertions: run with
//   store_test --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
TEST(SqliteStoreTest, DISABLED_Throughput) {
  TempDir tmp;
  {
    auto store = OpenOrDie(tmp.state(), SyncMode::kFull);
    ASSERT_NE(store, nullptr);
    const int commits = 500;
    std::vector<std::vector<JournalRecord>> batches;
    for (int c = 0; c < commits; ++c) {
      std::vector<JournalRecord> batch(64);
      for (int i = 0; i < 64; ++i) {
        batch[i].seq = 1 + c * 64 + i;
        batch[i].time_ms = TimeFor(batch[i].seq);
        batch[i].payload = std::string(120, 'a' + i % 26);
      }
      batches.push_back(std::move(batch));
    }
    const auto start = std::chrono::steady_clock::now();
    for (auto& batch : batches) ASSERT_TRUE(store->Append(&batch).ok());
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    std::printf(
        "append, synchronous=FULL, 64 x 120 B batches: %d commits in "
        "%.3f s = %.0f commits/s, %.0f records/s\n",
        commits, s, commits / s, commits * 64 / s);
  }
  TempDir big;
  const uint64_t n = 1000000;
  {
    auto store = OpenOrDie(big.state(), SyncMode::kNormal);
    ASSERT_NE(store, nullptr);
    for (uint64_t seq = 1; seq <= n; seq += 10000) {
      std::vector<JournalRecord> batch(10000);
      for (uint64_t i = 0; i < 10000; ++i) {
        batch[i].seq = seq + i;
        batch[i].time_ms = TimeFor(seq + i);
        batch[i].payload = std::string(100, 'r');
      }
      ASSERT_TRUE(store->Append(&batch).ok());
    }
  }
  auto store = OpenOrDie(big.state());  // a fresh open, as recovery would
  ASSERT_NE(store, nullptr);
  uint64_t count = 0, bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(store
                  ->ReadJournal(0,
                                [&](const JournalRecord& r) {
                                  ++count;
                                  bytes += r.payload.size();
                                  return Status::Ok();
                                })
                  .ok());
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_EQ(count, n);
  std::printf(
      "ReadJournal: %llu records (%llu payload bytes) in %.3f s = "
      "%.2f M records/s\n",
      static_cast<unsigned long long>(count),
      static_cast<unsigned long long>(bytes), s, count / s / 1e6);
}

}  // namespace
}  // namespace qm
