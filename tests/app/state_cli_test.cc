// `qm state check|export|import`, end to end: the built binary run on
// states that the real durable engine wrote.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "qm/config.h"
#include "qm/durable_engine.h"
#include "qm/types.h"

namespace qm {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A clock the test moves by hand; safe to read from the durable engine's
// writer thread.
class TestClock : public Clock {
 public:
  Time Now() const override { return Time(Duration(ms_.load())); }
  void Advance(Duration d) { ms_ += d.count(); }

 private:
  std::atomic<int64_t> ms_{1769436000000LL};  // 2026-01-26T14:00:00Z
};

// Two coders at a time: a third request queues. (The default resources
// are kept: CheckState reloads the config from its YAML, and the loader
// adds the default resources to a list that lacks them.)
Config StateConfig() {
  Config c = Config::Defaults();
  c.per_type_limits["coder"] = 2;
  return c;
}

AllocationRequest Request(const std::string& workflow) {
  AllocationRequest r;
  r.workflow_id = workflow;
  r.agent_type = "coder";
  r.requester = "state-cli-test";
  r.product = "p";
  r.ttl = 30min;
  r.resources = {{"agents", 1}};
  return r;
}

// What the engine held when the test closed it.
struct Written {
  std::map<std::string, AllocStatus> statuses;  // by allocation id
  std::string digest;
  uint64_t snapshot_seq = 0;
  uint64_t committed_seq = 0;
  int64_t active = 0, queued = 0;
};

struct QmRun {
  int code = -1;
  std::string out, err;
  Json json() const { return Json::parse(out); }
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& l) {
  std::ofstream f(path, std::ios::binary);
  for (const std::string& line : l) f << line << '\n';
}

class StateCliTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qm-state-cli-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  // Runs the built qm with `args`. `shell_prefix` goes before it (a `cd`,
  // an environment variable); `stdin_path`, when given, is its stdin.
  QmRun Qm(const std::vector<std::string>& args,
           const std::string& shell_prefix = "",
           const std::string& stdin_path = "") {
    const std::string out = root_ + "/run-" + std::to_string(++runs_);
    std::string cmd = shell_prefix + " " + Quote(QM_BINARY);
    for (const std::string& a : args) cmd += " " + Quote(a);
    if (!stdin_path.empty()) cmd += " < " + Quote(stdin_path);
    cmd += " > " + Quote(out + ".out") + " 2> " + Quote(out + ".err");
    const int status = std::system(cmd.c_str());
    QmRun r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFile(out + ".out");
    r.err = ReadFile(out + ".err");
    return r;
  }

  DurableOptions Options(const std::string& dir) {
    DurableOptions options;
    options.store.location = dir;
    options.snapshot_every_records = 1000000;  // only explicit snapshots
    return options;
  }

  // Writes a state into `dir` with the durable engine: grants, a queued
  // request, releases and renewals, a snapshot in the middle (so the
  // journal holds records after it), then closes it.
  void WriteState(const std::string& dir, Written* w) {
    auto d = DurableEngine::Open(Options(dir), StateConfig(), &clock_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    std::vector<std::string> ids;
    for (const char* wf : {"wf1", "wf2", "wf3"}) {
      clock_.Advance(5s);
      auto a = (*d)->Allocate(Request(wf));
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      ids.push_back(a->allocation.id);
    }
    ASSERT_EQ((*d)->Get(ids[2])->status, AllocStatus::kQueued);
    clock_.Advance(1min);
    ASSERT_TRUE((*d)->Release(ids[0]).ok());  // wf3 is granted
    ASSERT_TRUE((*d)->WriteSnapshot().ok());
    for (const char* wf : {"wf4", "wf5"}) {
      clock_.Advance(5s);
      auto a = (*d)->Allocate(Request(wf));
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      ids.push_back(a->allocation.id);
    }
    clock_.Advance(10s);
    ASSERT_TRUE((*d)->Renew(ids[1], 45min).ok());
    ASSERT_TRUE((*d)->Cancel(ids[4]).ok());
    for (const std::string& id : ids) w->statuses[id] = (*d)->Get(id)->status;
    w->digest = *(*d)->StateDigest();
    const Snapshot snap = *(*d)->GetSnapshot();
    w->active = snap.active;
    w->queued = snap.queued;
    w->snapshot_seq = (*d)->StoreDescription()->snapshot_seq;
    ASSERT_TRUE((*d)->Close().ok());
    w->committed_seq = (*d)->stats().committed_seq;
    // The state is worth checking: both kinds of allocation, and records
    // after the snapshot.
    ASSERT_EQ(w->active, 2);
    ASSERT_EQ(w->queued, 1);
    ASSERT_GT(w->snapshot_seq, 1u);
    ASSERT_GE(w->committed_seq, w->snapshot_seq + 4);
  }

  // Runs `sql` on the SQLite state in `dir` behind the store's back.
  static void Sql(const std::string& dir, const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir + "/qm.db").c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << sql << ": " << (err ? err : "");
    sqlite3_free(err);
    EXPECT_GT(sqlite3_changes(db), 0) << sql;
    sqlite3_close(db);
  }

  // Exports the state in `dir` to a file and returns its lines.
  std::vector<std::string> ExportLines(const std::string& dir) {
    const QmRun r = Qm({"state", "export", "--state", dir});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return Lines(r.out);
  }

  std::string root_;
  TestClock clock_;
  int runs_ = 0;
};

void ExpectError(const QmRun& r, const char* code, const std::string& text) {
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  ASSERT_TRUE(Json::accept(r.out)) << r.out;
  const Json j = r.json();
  EXPECT_EQ(j["status"], "error");
  EXPECT_EQ(j["error"]["code"], code) << r.out;
  const std::string message = j["error"]["message"];
  EXPECT_NE(message.find(text), std::string::npos) << message;
}

TEST_F(StateCliTest, CheckReportsTheStateTheEngineWrote) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));
  const QmRun r = Qm({"state", "check", "--state", dir});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const Json j = r.json();
  EXPECT_EQ(j["status"], "success");
  EXPECT_EQ(j["operation"], "state_check");
  const Json& s = j["result"];
  EXPECT_EQ(s["kind"], "sqlite");
  EXPECT_EQ(s["location"], dir + "/qm.db");
  EXPECT_EQ(s["schema_version"], 2);
  EXPECT_EQ(s["snapshot_seq"], w.snapshot_seq);
  EXPECT_EQ(s["last_seq"], w.committed_seq);
  EXPECT_EQ(s["records_replayed"], w.committed_seq - w.snapshot_seq);
  EXPECT_EQ(s["digest"], w.digest);
  EXPECT_EQ(s["active"], w.active);
  EXPECT_EQ(s["queued"], w.queued);
  EXPECT_GT(s["config_lines"].get<int>(), 10);
  EXPECT_FALSE(s.contains("config_yaml"));
  // The engine's time, not the wall clock's: the test started at 14:00.
  EXPECT_EQ(s["snapshot_time"], "2026-01-26T14:01:15Z");
  EXPECT_EQ(s["last_time"], "2026-01-26T14:01:35Z");

  const QmRun table =
      Qm({"--output", "table", "state", "check", "--state", dir});
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_NE(table.out.find("result.digest"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(w.digest), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find('{'), std::string::npos) << table.out;
}

TEST_F(StateCliTest, AMissingStateIsNotFoundAndNothingIsCreated) {
  const std::string missing = root_ + "/no/such/state";
  for (const char* cmd : {"check", "export"}) {
    SCOPED_TRACE(cmd);
    ExpectError(Qm({"state", cmd, "--state", missing}), "NOT_FOUND",
                "no qm state in " + missing);
    EXPECT_FALSE(fs::exists(root_ + "/no"));
  }
  // A directory without a qm.db: nothing is created in it either.
  const std::string empty = root_ + "/empty";
  fs::create_directory(empty);
  for (const char* cmd : {"check", "export"}) {
    SCOPED_TRACE(cmd);
    ExpectError(Qm({"state", cmd, "--state", empty}), "NOT_FOUND",
                "no qm state in " + empty + " (it holds no qm.db)");
  }
  ExpectError(
      Qm({"state", "export", "--state", empty, "--file", root_ + "/out.jsonl"}),
      "NOT_FOUND", "no qm state in " + empty);
  EXPECT_TRUE(fs::is_empty(empty));
  EXPECT_FALSE(fs::exists(root_ + "/out.jsonl"));
}

TEST_F(StateCliTest, TheDefaultStateDirectoryFollowsXdgStateHome) {
  // XDG_STATE_HOME set: $XDG_STATE_HOME/qm.
  const std::string xdg = root_ + "/xdg";
  ExpectError(Qm({"state", "check"}, "XDG_STATE_HOME=" + Quote(xdg)),
              "NOT_FOUND", "no qm state in " + xdg + "/qm");
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(xdg + "/qm", &w));
  const QmRun r = Qm({"state", "check"}, "XDG_STATE_HOME=" + Quote(xdg));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.json()["result"]["digest"], w.digest);
  // Unset or empty: ./var/qm.
  ExpectError(
      Qm({"state", "check"}, "cd " + Quote(root_) + " && XDG_STATE_HOME="),
      "NOT_FOUND", "no qm state in ./var/qm");
  EXPECT_FALSE(fs::exists(root_ + "/var"));
}

TEST_F(StateCliTest, AStateInUseIsUnavailable) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));
  auto d = DurableEngine::Open(Options(dir), StateConfig(), &clock_);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ExpectError(Qm({"state", "check", "--state", dir}), "UNAVAILABLE",
              "is in use by another qm process");
  ExpectError(Qm({"state", "export", "--state", dir}), "UNAVAILABLE",
              "is in use by another qm process");
}

TEST_F(StateCliTest, ADamagedStateIsDataLossAndIsNotExported) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));
  const uint64_t bad = w.snapshot_seq + 2;
  Sql(dir,
      "UPDATE journal SET payload = zeroblob(length(payload)) "
      "WHERE seq = " +
          std::to_string(bad));
  const std::string named = "journal record " + std::to_string(bad);
  ExpectError(Qm({"state", "check", "--state", dir}), "DATA_LOSS", named);

  // To stdout: one error envelope, no export line.
  const QmRun out = Qm({"state", "export", "--state", dir});
  ExpectError(out, "DATA_LOSS", named);
  EXPECT_EQ(out.out.find("qm_state_export"), std::string::npos);
  // To a file: an earlier export there stays as it was, and no temporary
  // file is left beside it.
  const std::string file = root_ + "/export.jsonl";
  WriteLines(file, {"earlier"});
  ExpectError(Qm({"state", "export", "--state", dir, "--file", file}),
              "DATA_LOSS", named);
  EXPECT_EQ(ReadFile(file), "earlier\n");
  for (const auto& e : fs::directory_iterator(root_)) {
    EXPECT_EQ(e.path().filename().string().find("export.jsonl.tmp"),
              std::string::npos)
        << e.path();
  }
}

TEST_F(StateCliTest, ExportThenImportGivesTheSameState) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));

  // Stdout: the JSON lines themselves.
  const std::vector<std::string> lines = ExportLines(dir);
  const uint64_t records = w.committed_seq - w.snapshot_seq;
  ASSERT_EQ(lines.size(), 2 + records);
  const Json header = Json::parse(lines[0]);
  EXPECT_EQ(header["qm_state_export"], 1);
  EXPECT_EQ(header["kind"], "sqlite");
  EXPECT_EQ(header["location"], dir + "/qm.db");
  EXPECT_TRUE(header["exported_at"].is_string());
  EXPECT_EQ(header["snapshot_seq"], w.snapshot_seq);
  EXPECT_EQ(header["last_seq"], w.committed_seq);
  EXPECT_EQ(header["digest"], w.digest);
  const Json snap = Json::parse(lines[1])["snapshot"];
  EXPECT_EQ(snap["seq"], w.snapshot_seq);
  EXPECT_EQ(snap["time"], "2026-01-26T14:01:15Z");
  EXPECT_EQ(snap["time_ms"], 1769436075000LL);
  EXPECT_TRUE(snap["digest"].is_string());
  EXPECT_NE(snap["config"].get<std::string>().find("coder: 2"),
            std::string::npos)
      << snap["config"];
  EXPECT_FALSE(snap["payload_base64"].get<std::string>().empty());
  std::vector<std::string> ops;
  for (size_t i = 2; i < lines.size(); ++i) {
    const Json rec = Json::parse(lines[i])["record"];
    EXPECT_EQ(rec["seq"], w.snapshot_seq + i - 1);
    EXPECT_EQ(rec["epoch"], 1);
    EXPECT_TRUE(rec["time_ms"].is_number_integer());
    ops.push_back(rec["op"]);
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"allocate", "allocate", "renew",
                                           "cancel"}));

  // --file: the same lines, and an envelope with the counts.
  const std::string file = root_ + "/export.jsonl";
  const QmRun exported =
      Qm({"state", "export", "--state", dir, "--file", file});
  ASSERT_EQ(exported.code, 0) << exported.out;
  const Json e = exported.json();
  EXPECT_EQ(e["operation"], "state_export");
  EXPECT_EQ(e["result"]["file"], file);
  EXPECT_EQ(e["result"]["records"], records);
  EXPECT_EQ(e["result"]["last_seq"], w.committed_seq);
  EXPECT_EQ(e["result"]["digest"], w.digest);
  const std::vector<std::string> file_lines = Lines(ReadFile(file));
  ASSERT_EQ(file_lines.size(), lines.size());
  for (size_t i = 1; i < lines.size(); ++i) EXPECT_EQ(file_lines[i], lines[i]);
  EXPECT_EQ(e["result"]["bytes"], ReadFile(file).size());
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  // Import into a directory that does not exist yet.
  const std::string copy = root_ + "/new/copy";
  const QmRun imported = Qm({"state", "import", file, "--state", copy});
  ASSERT_EQ(imported.code, 0) << imported.out;
  const Json i = imported.json();
  EXPECT_EQ(i["operation"], "state_import");
  EXPECT_EQ(i["result"]["file"], file);
  EXPECT_EQ(i["result"]["records_imported"], records);
  EXPECT_EQ(i["result"]["location"], copy + "/qm.db");
  EXPECT_EQ(i["result"]["digest"], w.digest);
  EXPECT_EQ(i["result"]["last_seq"], w.committed_seq);

  const QmRun check = Qm({"state", "check", "--state", copy});
  ASSERT_EQ(check.code, 0) << check.out;
  EXPECT_EQ(check.json()["result"]["digest"], w.digest);
  EXPECT_EQ(check.json()["result"]["last_seq"], w.committed_seq);
  EXPECT_EQ(check.json()["result"]["snapshot_seq"], w.snapshot_seq);

  // From stdin too.
  const std::string copy2 = root_ + "/copy2";
  const QmRun piped = Qm({"state", "import", "-", "--state", copy2}, "", file);
  ASSERT_EQ(piped.code, 0) << piped.out;
  EXPECT_EQ(piped.json()["result"]["file"], "stdin");
  EXPECT_EQ(piped.json()["result"]["digest"], w.digest);

  // The durable engine recovers the imported state: the same allocations.
  auto d = DurableEngine::Open(Options(copy), StateConfig(), &clock_);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_FALSE((*d)->recovery().fresh);
  EXPECT_EQ((*d)->recovery().last_seq, w.committed_seq);
  EXPECT_EQ(*(*d)->StateDigest(), w.digest);
  for (const auto& [id, status] : w.statuses) {
    auto a = (*d)->Get(id);
    ASSERT_TRUE(a.ok()) << id << ": " << a.status().ToString();
    EXPECT_EQ(a->status, status) << id;
  }
  EXPECT_EQ((*d)->GetSnapshot()->active, w.active);
  EXPECT_EQ((*d)->GetSnapshot()->queued, w.queued);
}

TEST_F(StateCliTest, AMalformedImportIsRefusedNamingTheLineAndWritesNothing) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));
  const std::vector<std::string> good = ExportLines(dir);
  ASSERT_GE(good.size(), 5u);

  // Edits line `n` (1-based) of the good export as JSON.
  auto edit = [&](size_t n, const std::function<void(Json&)>& change) {
    std::vector<std::string> l = good;
    Json j = Json::parse(l[n - 1]);
    change(j);
    l[n - 1] = j.dump();
    return l;
  };
  std::vector<std::string> swapped = good;
  std::swap(swapped[2], swapped[3]);
  std::vector<std::string> truncated = good;
  truncated.pop_back();
  std::vector<std::string> bad_json = good;
  bad_json[2] = R"({"record": {"seq": 1,)";
  const struct {
    const char* name;
    std::vector<std::string> lines;
    int line;
    std::string text;
  } cases[] = {
      {"bad JSON", bad_json, 3, "line 3: not valid JSON"},
      {"bad base64",
       edit(4, [](Json& j) { j["record"]["payload_base64"] = "AAA*"; }), 4,
       "line 4: record.payload_base64: base64 text has '*' at offset 3"},
      {"missing field", edit(3, [](Json& j) { j["record"].erase("time_ms"); }),
       3, "line 3: record.time_ms: missing"},
      {"ill-typed field", edit(2, [](Json& j) { j["snapshot"]["seq"] = "7"; }),
       2, "line 2: snapshot.seq: must be a whole number >= 1, not a string"},
      {"version 2", edit(1, [](Json& j) { j["qm_state_export"] = 2; }), 1,
       "line 1: qm_state_export: version 2 is not supported"},
      {"no header",
       {good.begin() + 1, good.end()},
       1,
       "line 1: qm_state_export: missing"},
      {"out of order", swapped, 3, "line 3: record.seq: is "},
      {"truncated", truncated, static_cast<int>(truncated.size()),
       "line " + std::to_string(truncated.size()) +
           ": last_seq: the file ends at seq " +
           std::to_string(w.committed_seq - 1) + " but its header says"},
      {"ill-typed informational field",
       edit(5, [](Json& j) { j["record"]["op"] = 5; }), 5,
       "line 5: record.op: must be a string, not a number (5)"},
      {"record as snapshot",
       {good[0], good[2]},
       2,
       "line 2: snapshot: missing"},
  };
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string file = root_ + "/bad-" + std::to_string(++n) + ".jsonl";
    WriteLines(file, c.lines);
    const std::string target = root_ + "/target-" + std::to_string(n);
    const QmRun r = Qm({"state", "import", file, "--state", target});
    ExpectError(r, "INVALID_REQUEST", file + " " + c.text);
    if (Json::accept(r.out)) {
      EXPECT_EQ(r.json()["error"]["context"]["line"], std::to_string(c.line));
    }
    EXPECT_FALSE(fs::exists(target));
    ExpectError(Qm({"state", "check", "--state", target}), "NOT_FOUND",
                "no qm state in " + target);
  }
  // The lines are fine but the state does not verify (a record's payload
  // is not an operation): nothing stays behind, not even the directory.
  const std::string file = root_ + "/garbage.jsonl";
  WriteLines(file,
             edit(3, [](Json& j) { j["record"]["payload_base64"] = "AAAA"; }));
  const std::string target = root_ + "/fresh/state";
  ExpectError(Qm({"state", "import", file, "--state", target}), "DATA_LOSS",
              "journal record " + std::to_string(w.snapshot_seq + 1));
  EXPECT_FALSE(fs::exists(root_ + "/fresh"));
  // In a directory that existed: it stays, empty.
  fs::create_directory(root_ + "/kept");
  ExpectError(Qm({"state", "import", file, "--state", root_ + "/kept"}),
              "DATA_LOSS", "journal record");
  EXPECT_TRUE(fs::is_empty(root_ + "/kept"));
  // A header whose digest is not the state's: the file was edited. The
  // state was written and read back before that showed; it is removed.
  WriteLines(file, edit(1, [](Json& j) { j["digest"] = "0123456789abcdef"; }));
  ExpectError(Qm({"state", "import", file, "--state", target}), "DATA_LOSS",
              "but the export's header says 0123456789abcdef");
  EXPECT_FALSE(fs::exists(root_ + "/fresh"));
}

TEST_F(StateCliTest, ImportIntoANonEmptyStateIsAConflict) {
  const std::string dir = root_ + "/state";
  Written w;
  ASSERT_NO_FATAL_FAILURE(WriteState(dir, &w));
  const std::string file = root_ + "/export.jsonl";
  ASSERT_EQ(Qm({"state", "export", "--state", dir, "--file", file}).code, 0);
  const std::string other = root_ + "/other";
  ASSERT_EQ(Qm({"state", "import", file, "--state", other}).code, 0);
  ExpectError(Qm({"state", "import", file, "--state", other}), "CONFLICT",
              "already holds a qm state");
  ExpectError(Qm({"state", "import", file, "--state", dir}), "CONFLICT",
              "already holds a qm state");
  // Both are untouched.
  for (const std::string& d : {dir, other}) {
    const QmRun r = Qm({"state", "check", "--state", d});
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.json()["result"]["digest"], w.digest);
  }
}

TEST_F(StateCliTest, HelpNamesTheDefaultStateDirectory) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"state", "--help"},
        std::vector<std::string>{"state", "check", "--help"},
        std::vector<std::string>{"state", "import", "--help"}}) {
    const QmRun r = Qm(args, "XDG_STATE_HOME=");
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("$XDG_STATE_HOME/qm"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("./var/qm"), std::string::npos) << r.out;
  }
  EXPECT_NE(Qm({"--help"}).out.find("state"), std::string::npos);
  // Usage errors: exit 2, no envelope.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"state"},
        std::vector<std::string>{"state", "check", "--state", root_, "--store",
                                 "postgresql://localhost/qm"},
        std::vector<std::string>{"state", "check", "--store", root_},
        std::vector<std::string>{"state", "check", "--state",
                                 "postgres://localhost/qm"},
        std::vector<std::string>{"state", "import"}}) {
    const QmRun r = Qm(args);
    EXPECT_EQ(r.code, 2) << args.back() << ": " << r.out << r.err;
    EXPECT_EQ(r.out.find("\"status\""), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace qm
