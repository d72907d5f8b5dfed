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
