// The durable engine on the SQLite store: the shared journal and recovery
// cases (durable_cases.h), each in a temporary state directory.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace qm {
namespace {

class DurableBackend : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qm-durable-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Location() const { return dir_; }

  void Exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/qm.db").c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << sql << ": " << (err ? err : "");
    sqlite3_free(err);
    EXPECT_GT(sqlite3_changes(db), 0) << sql;
    sqlite3_close(db);
  }
  void GarblePayload(uint64_t seq) {
    Exec("UPDATE journal SET payload = zeroblob(length(payload)) WHERE seq = " +
         std::to_string(seq));
  }
  void DeleteRecord(uint64_t seq) {
    Exec("DELETE FROM journal WHERE seq = " + std::to_string(seq));
  }

  std::string dir_;
};

}  // namespace
}  // namespace qm

#include "tests/store/durable_cases.h"

namespace qm {
namespace {

TEST_F(DurableEngineTest, ImportCopiesAStateAndDescribesTheTargetAsWritten) {
  std::string digest;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(d->Allocate(Request("wf" + std::to_string(i))).ok());
    }
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  SnapshotData snapshot;
  std::vector<JournalRecord> journal;
  StatusOr<StateSummary> source = Status(Code::kInternal, "unset");
  {
    auto store = Store::Open(options_.store);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto snap = (*store)->LatestSnapshot();
    ASSERT_TRUE(snap.ok() && snap->has_value());
    snapshot = **snap;
    ASSERT_TRUE((*store)
                    ->ReadJournal(snapshot.seq,
                                  [&](const JournalRecord& r) {
                                    journal.push_back(r);
                                    return Status::Ok();
                                  })
                    .ok());
    source = CheckState(**store);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    EXPECT_EQ(source->digest, digest);
  }
  char tmpl[] = "/tmp/qm-import-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  StoreOptions target_options;
  target_options.location = tmpl;
  {
    auto target = Store::Open(target_options);
    ASSERT_TRUE(target.ok());
    StateSummary summary;
    ASSERT_TRUE(ImportState(**target, snapshot, journal, &summary).ok());
    EXPECT_EQ(summary.digest, digest);
    EXPECT_EQ(summary.store.last_seq, source->last_seq);
    EXPECT_EQ(summary.store.snapshot_seq, snapshot.seq);
    // A second import into the now non-empty target is refused.
    EXPECT_EQ(ImportState(**target, snapshot, journal).code(), Code::kConflict);
    auto check = CheckState(**target);
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->digest, digest);
    EXPECT_EQ(check->active, 5);
  }
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace qm
