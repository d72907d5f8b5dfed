// The PostgreSQL store against a real server. Under ctest the `pg` fixture
// starts one (scripts/pg-test-server.sh) and its URI reaches the tests
// through the file QM_PG_URI_FILE names (or set QM_PG_TEST_URI to use
// another server); without a server every test fails. Each test works in a
// database of its own, so they run in parallel.
//
// The binary is also the child process of the leadership tests (SIGSTOP
// must freeze a leader's renewal thread too): `pg_store_test --store-child
// URI NODE` opens a store with a 1 s lease and answers commands on stdin,
// one line each (see RunStoreChild).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "qm/store.h"
#include "store/store_impl.h"

namespace qm {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr Duration kLease = 1000ms;
constexpr Duration kRenew = 200ms;

StoreOptions Options(const std::string& uri, const std::string& node) {
  StoreOptions o;
  o.location = uri;
  o.leader_lease = kLease;
  o.lease_renew_interval = kRenew;
  o.node_id = node;
  return o;
}

// Records first..first+n-1 with binary payloads of about 120 bytes.
std::vector<JournalRecord> Batch(uint64_t first, int n,
                                 const std::string& tag = "rec") {
  std::vector<JournalRecord> out;
  for (int i = 0; i < n; ++i) {
    JournalRecord r;
    r.seq = first + i;
    r.time_ms = 1'760'000'000'000 + static_cast<int64_t>(r.seq) * 10;
    r.payload =
        tag + "-" + std::to_string(r.seq) + std::string("\0\xff\x01", 3);
    r.payload.resize(120, 'x');
    out.push_back(std::move(r));
  }
  return out;
}

// Every record after `after`; the read's status in *status.
std::vector<JournalRecord> ReadAll(Store* store, uint64_t after,
                                   Status* status = nullptr) {
  std::vector<JournalRecord> out;
  Status s = store->ReadJournal(after, [&](const JournalRecord& r) {
    out.push_back(r);
    return Status::Ok();
  });
  if (status != nullptr) {
    *status = s;
  } else {
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return out;
}

std::vector<uint64_t> Seqs(const std::vector<JournalRecord>& records) {
  std::vector<uint64_t> out;
  for (const JournalRecord& r : records) out.push_back(r.seq);
  return out;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

// ---- The child process ----

// Commands, one per line; each answer is one line, "ok ..." or
// "err CODE message (details)":
//   acquire MS        AcquireLeadership(MS ms) -> "ok EPOCH"
//   leader            -> "ok 1" or "ok 0"
//   append N TAG      appends N records after the last one -> "ok LAST_SEQ"
//   resign            ResignLeadership
int RunStoreChild(const std::string& uri, const std::string& node) {
  StatusOr<std::unique_ptr<Store>> opened = Store::Open(Options(uri, node));
  if (!opened.ok()) {
    std::cout << "err " << opened.status().ToString() << std::endl;
    return 1;
  }
  std::cout << "ok ready" << std::endl;
  Store* store = opened->get();
  uint64_t next = 0;  // the next seq to append, learnt when leading
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    Status s;
    std::string answer;
    if (cmd == "acquire") {
      int64_t ms = 0;
      in >> ms;
      s = store->AcquireLeadership(Duration(ms));
      if (s.ok()) {
        StatusOr<StoreInfo> info = store->Info();
        s = info.status();
        if (s.ok()) next = std::max(info->last_seq, info->snapshot_seq) + 1;
        answer = std::to_string(store->epoch());
      }
    } else if (cmd == "leader") {
      answer = store->IsLeader() ? "1" : "0";
    } else if (cmd == "append") {
      int n = 0;
      std::string tag;
      in >> n >> tag;
      std::vector<JournalRecord> batch = Batch(next, n, tag);
      s = store->Append(&batch);
      if (s.ok()) {
        next += n;
        answer = std::to_string(next - 1);
      }
    } else if (cmd == "resign") {
      s = store->ResignLeadership();
    } else {
      s = InvalidRequest("unknown command " + cmd);
    }
    if (s.ok()) {
      std::cout << "ok " << answer << std::endl;
    } else {
      std::string text = s.ToString();
      std::replace(text.begin(), text.end(), '\n', ' ');
      std::cout << "err " << text << std::endl;
    }
  }
  return 0;
}

// A store in a child process, driven through its stdin and stdout.
class Child {
 public:
  // `mode`: "--store-child" (RunStoreChild) or "--durable-child"
  // (RunDurableChild).
  Child(const std::string& uri, const std::string& node,
        const std::string& mode = "--store-child") {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) return;
    // Built before fork: the child may only exec.
    std::vector<std::string> args = {"/proc/self/exe", mode, uri, node};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[0]);
      close(to_child[1]);
      close(from_child[0]);
      close(from_child[1]);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = to_child[1];
    out_ = from_child[0];
  }
  ~Child() {
    Kill();
    if (in_ >= 0) close(in_);
    if (out_ >= 0) close(out_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Sends one command; Answer() reads its reply.
  void Send(const std::string& command) {
    const std::string line = command + "\n";
    ASSERT_EQ(write(in_, line.data(), line.size()),
              static_cast<ssize_t>(line.size()));
  }
  // The next line the child writes ("" on timeout or exit).
  std::string Answer(Duration timeout = 20s) {
    const SteadyClock::time_point deadline = SteadyClock::now() + timeout;
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<Duration>(deadline - SteadyClock::now());
      if (left <= 0ms) return "";
      pollfd p = {out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[512];
      const ssize_t got = read(out_, chunk, sizeof chunk);
      if (got <= 0) return "";
      buffer_.append(chunk, got);
    }
  }
  std::string Ask(const std::string& command) {
    Send(command);
    return Answer();
  }
  // Asks `command` every 50 ms until the answer is `want`, for up to
  // `within`; the last answer.
  std::string AskUntil(const std::string& command, const std::string& want,
                       Duration within) {
    std::string got;
    for (auto deadline = SteadyClock::now() + within;;
         std::this_thread::sleep_for(50ms)) {
      got = Ask(command);
      if (got == want || SteadyClock::now() >= deadline) return got;
    }
  }

  void Freeze() { kill(pid_, SIGSTOP); }
  void Thaw() { kill(pid_, SIGCONT); }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    kill(pid_, SIGCONT);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string buffer_;
};

// ---- The fixture ----

// The test server's URI: $QM_PG_TEST_URI, else the first line of the file
// $QM_PG_URI_FILE (or the one the build names); "" when neither exists.
std::string ServerUri() {
  if (const char* uri = std::getenv("QM_PG_TEST_URI"); uri && *uri) {
    return uri;
  }
  const char* file = std::getenv("QM_PG_URI_FILE");
  std::ifstream in(file && *file ? file : QM_PG_URI_FILE);
  std::string uri;
  std::getline(in, uri);
  return uri;
}

// `uri` naming database `db` instead.
std::string WithDatabase(const std::string& uri, const std::string& db) {
  const size_t start = uri.find("://") + 3;
  const size_t path = uri.find_first_of("/?", start);
  if (path == std::string::npos) return uri + "/" + db;
  const size_t query = uri.find('?', path);
  return uri.substr(0, path) + "/" + db +
         (query == std::string::npos ? "" : uri.substr(query));
}

class PgStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerUri();
    ASSERT_FALSE(server_.empty())
        << "no PostgreSQL test server: run the tests through ctest (its "
           "`pg` fixture starts one), or start one with "
           "scripts/pg-test-server.sh start DIR and set QM_PG_TEST_URI";
    const testing::TestInfo* test =
        testing::UnitTest::GetInstance()->current_test_info();
    db_ = "qmt_";
    for (char c : std::string(test->name())) {
      db_ += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    db_.resize(std::min<size_t>(db_.size(), 63));
    admin_ = PQconnectdb(server_.c_str());
    ASSERT_EQ(PQstatus(admin_), CONNECTION_OK) << PQerrorMessage(admin_);
    PQsetNoticeProcessor(
        admin_, [](void*, const char*) {}, nullptr);
    AdminSql("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    AdminSql("CREATE DATABASE " + db_);
    uri_ = WithDatabase(server_, db_);
  }

  void TearDown() override {
    if (admin_ != nullptr) {
      if (!db_.empty()) {
        PQclear(PQexec(
            admin_,
            ("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)").c_str()));
      }
      PQfinish(admin_);
    }
  }

  void AdminSql(const std::string& sql) {
    PGresult* r = PQexec(admin_, sql.c_str());
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK)
        << sql << ": " << PQresultErrorMessage(r);
    PQclear(r);
  }

  // Runs `sql` in the test's database: the first value of the first row
  // ("" when none), or "ERROR SQLSTATE message".
  std::string Sql(const std::string& sql) {
    PGconn* c = PQconnectdb(uri_.c_str());
    std::string out;
    PGresult* r = PQexec(c, sql.c_str());
    const ExecStatusType status = PQresultStatus(r);
    if (status == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    } else if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      out = std::string("ERROR ") + (state ? state : "") + " " +
            PQresultErrorMessage(r);
    }
    PQclear(r);
    PQfinish(c);
    return out;
  }

  // Polls `SELECT count(*) <from>` every 10 ms until it is not "0", for up
  // to `within`; the last count.
  std::string CountWhenSome(const std::string& from, Duration within) {
    std::string n = "0";
    for (auto deadline = SteadyClock::now() + within;
         n == "0" && SteadyClock::now() < deadline;) {
      std::this_thread::sleep_for(10ms);
      n = Sql("SELECT count(*) " + from);
    }
    return n;
  }

  std::unique_ptr<Store> Open(const std::string& node) {
    StatusOr<std::unique_ptr<Store>> s = Store::Open(Options(uri_, node));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // Opens a store and makes it lead.
  std::unique_ptr<Store> OpenLeader(const std::string& node) {
    std::unique_ptr<Store> s = Open(node);
    if (s == nullptr) return nullptr;
    const Status acquired = s->AcquireLeadership(0ms);
    EXPECT_TRUE(acquired.ok()) << acquired.ToString();
    return s;
  }

  std::string server_;
  std::string db_;
  std::string uri_;
  PGconn* admin_ = nullptr;
};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- Opening ----

TEST_F(PgStoreTest, OpensAFreshDatabaseAndDescribesIt) {
  std::unique_ptr<Store> store = Open("a");
  ASSERT_NE(store, nullptr);
  StatusOr<StoreInfo> info = store->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->kind, "postgresql");
  EXPECT_EQ(info->location, uri_);
  EXPECT_EQ(info->schema_version, 2);
  EXPECT_EQ(info->snapshot_seq, 0u);
  EXPECT_EQ(info->last_seq, 0u);
  EXPECT_EQ(info->records, 0u);
  EXPECT_FALSE(store->IsLeader());
  EXPECT_EQ(store->epoch(), 0u);
  EXPECT_TRUE(store->Check().ok());
  EXPECT_EQ(Sql("SELECT version FROM qm_schema_version"), "2");
  EXPECT_EQ(Sql("SELECT epoch FROM qm_leader"), "0");
  StatusOr<std::optional<SnapshotData>> snapshot = store->LatestSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_FALSE(snapshot->has_value());

  // The server trusts every local user, so a password is accepted (and
  // ignored); the store never shows it.
  std::string with_password = uri_;
  with_password.insert(with_password.find('@'), ":s3cret");
  StatusOr<std::unique_ptr<Store>> again = Store::Open(
      Options(with_password + "?password=s3cret&sslmode=disable", "b"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  info = (*again)->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(Contains(info->location, "s3cret")) << info->location;
  EXPECT_EQ(info->location, uri_ + "?sslmode=disable");
}

TEST_F(PgStoreTest, ConcurrentOpensMigrateTheSchemaOnce) {
  constexpr int kOpeners = 6;
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      StatusOr<std::unique_ptr<Store>> s =
          Store::Open(Options(uri_, "n" + std::to_string(i)));
      EXPECT_TRUE(s.ok()) << s.status().ToString();
      if (s.ok()) ++opened;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(opened.load(), kOpeners);
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_schema_version"), "1");
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_leader"), "1");
}

TEST_F(PgStoreTest, UnreachableServerIsUnavailableAndHidesThePassword) {
  // A port nothing listens on: bound, read, released.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  const std::string uri = "postgresql://qm:s3cret@127.0.0.1:" +
                          std::to_string(ntohs(addr.sin_port)) + "/qmdb";
  StatusOr<std::unique_ptr<Store>> s = Store::Open(Options(uri, "a"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kUnavailable);
  const std::string text = s.status().ToString();
  EXPECT_TRUE(Contains(text, "database qmdb on 127.0.0.1:")) << text;
  EXPECT_FALSE(Contains(text, "s3cret")) << text;
}

TEST_F(PgStoreTest, MalformedUriOrLeaseIsInvalidRequest) {
  StatusOr<std::unique_ptr<Store>> s =
      Store::Open(Options(uri_ + "?no_such_option=1", "a"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidRequest) << s.status().ToString();
  // libpq's complaint quotes the URI; the password never shows.
  s = Store::Open(
      Options("postgresql://qm:s3cret@[::1/db?password=s3cret", "a"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidRequest);
  EXPECT_FALSE(Contains(s.status().ToString(), "s3cret"))
      << s.status().ToString();
  StoreOptions o = Options(uri_, "a");
  o.lease_renew_interval = o.leader_lease;
  s = Store::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidRequest);
}

// ---- The journal ----

TEST_F(PgStoreTest, AppendsAndReadsTheJournalBack) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->IsLeader());
  EXPECT_EQ(store->epoch(), 1u);
  std::vector<JournalRecord> first = Batch(1, 3);
  ASSERT_TRUE(store->Append(&first).ok());
  for (const JournalRecord& r : first) EXPECT_EQ(r.epoch, 1u);
  std::vector<JournalRecord> second = Batch(4, 7);
  ASSERT_TRUE(store->Append(&second).ok());
  std::vector<JournalRecord> empty;
  EXPECT_TRUE(store->Append(&empty).ok());

  std::vector<JournalRecord> all = ReadAll(store.get(), 0);
  std::vector<JournalRecord> want = Batch(1, 10);
  ASSERT_EQ(all.size(), want.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].seq, want[i].seq);
    EXPECT_EQ(all[i].time_ms, want[i].time_ms);
    EXPECT_EQ(all[i].epoch, 1u);
    EXPECT_EQ(all[i].payload, want[i].payload);
  }
  EXPECT_EQ(Seqs(ReadAll(store.get(), 7)), Range(8, 10));
  EXPECT_TRUE(ReadAll(store.get(), 10).empty());
  EXPECT_TRUE(ReadAll(store.get(), 99).empty());

  const StoreStats stats = store->stats();
  EXPECT_EQ(stats.commits, 2u);
  EXPECT_EQ(stats.records, 10u);
  EXPECT_EQ(stats.payload_bytes, 1200u);
  StatusOr<StoreInfo> info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->first_seq, 1u);
  EXPECT_EQ(info->last_seq, 10u);
  EXPECT_EQ(info->records, 10u);
  EXPECT_EQ(info->bytes, 1200u);
  EXPECT_TRUE(store->Check().ok());

  // Another instance (a follower) reads the same journal.
  std::unique_ptr<Store> follower = Open("b");
  EXPECT_EQ(Seqs(ReadAll(follower.get(), 0)), Range(1, 10));
}

TEST_F(PgStoreTest, AppendRefusesABrokenSequence) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> gap = Batch(2, 2);
  EXPECT_EQ(store->Append(&gap).code(), Code::kInvalidRequest);
  std::vector<JournalRecord> holey = Batch(1, 3);
  holey[2].seq = 4;
  EXPECT_EQ(store->Append(&holey).code(), Code::kInvalidRequest);
  std::vector<JournalRecord> good = Batch(1, 3);
  ASSERT_TRUE(store->Append(&good).ok());
  std::vector<JournalRecord> repeat = Batch(3, 1);
  const Status s = store->Append(&repeat);
  EXPECT_EQ(s.code(), Code::kInvalidRequest);
  EXPECT_TRUE(Contains(s.message(), "expected 4")) << s.ToString();
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0)), Range(1, 3));
  EXPECT_EQ(store->stats().commits, 1u);
}

TEST_F(PgStoreTest, ReadJournalStopsAtTheVisitorsError) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 5);
  ASSERT_TRUE(store->Append(&batch).ok());
  std::vector<uint64_t> seen;
  const Status s = store->ReadJournal(0, [&](const JournalRecord& r) {
    seen.push_back(r.seq);
    return r.seq == 3 ? Conflict("enough") : Status::Ok();
  });
  EXPECT_EQ(s.code(), Code::kConflict);
  EXPECT_EQ(seen, Range(1, 3));
  // The read's transaction is gone: the store writes on.
  std::vector<JournalRecord> more = Batch(6, 1);
  EXPECT_TRUE(store->Append(&more).ok());
}

TEST_F(PgStoreTest, StreamsALongJournal) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  constexpr int kBatch = 500, kBatches = 40;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<JournalRecord> batch = Batch(1 + b * kBatch, kBatch);
    ASSERT_TRUE(store->Append(&batch).ok());
  }
  uint64_t count = 0, last = 0;
  const Status s = store->ReadJournal(0, [&](const JournalRecord& r) {
    ++count;
    EXPECT_EQ(r.seq, last + 1);
    last = r.seq;
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(count, uint64_t{kBatch} * kBatches);
  EXPECT_TRUE(store->Check().ok());
}

// A reader's connection dropped between two FETCHes of its cursor: the
// read fails with UNAVAILABLE after delivering the first FETCH's records,
// each once, and the next read (on a new connection) delivers exactly the
// rest: nothing skipped, nothing twice.
TEST_F(PgStoreTest, ReadJournalDroppedBetweenFetchesResumesWhereItStopped) {
  std::unique_ptr<Store> leader = OpenLeader("a");
  ASSERT_NE(leader, nullptr);
  for (int b = 0; b < 5; ++b) {
    std::vector<JournalRecord> batch = Batch(1 + b * 500, 500);
    ASSERT_TRUE(leader->Append(&batch).ok());
  }
  const std::string tagged = uri_ +
                             (uri_.find('?') == std::string::npos ? "?" : "&") +
                             "application_name=qm-reader";
  StatusOr<std::unique_ptr<Store>> opened =
      Store::Open(Options(tagged, "reader"));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& reader = **opened;
  std::vector<uint64_t> seen;
  std::string dropped;
  const Status s = reader.ReadJournal(0, [&](const JournalRecord& r) {
    seen.push_back(r.seq);
    // The last record of the first FETCH (1,000 rows): the reader's
    // connection waits, idle in its transaction, for the next.
    if (r.seq == 1000) {
      dropped =
          Sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
              "WHERE datname = current_database() AND application_name = "
              "'qm-reader' AND state = 'idle in transaction'");
    }
    return Status::Ok();
  });
  EXPECT_EQ(dropped, "1");
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_EQ(seen, Range(1, 1000));
  Status again;
  EXPECT_EQ(Seqs(ReadAll(&reader, 1000, &again)), Range(1001, 2500));
  EXPECT_TRUE(again.ok()) << again.ToString();
}

// ---- Snapshots ----

TEST_F(PgStoreTest, SnapshotTruncatesTheJournal) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 10);
  ASSERT_TRUE(store->Append(&batch).ok());
  SnapshotData snap;
  snap.seq = 6;
  snap.time_ms = batch[5].time_ms;
  snap.digest = "digest-6";
  snap.payload = std::string("state\0\xfe", 7);
  ASSERT_TRUE(store->WriteSnapshot(snap).ok());

  StatusOr<StoreInfo> info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshot_seq, 6u);
  EXPECT_EQ(info->first_seq, 7u);
  EXPECT_EQ(info->last_seq, 10u);
  EXPECT_EQ(info->records, 4u);
  StatusOr<std::optional<SnapshotData>> got = store->LatestSnapshot();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->seq, 6u);
  EXPECT_EQ((*got)->time_ms, snap.time_ms);
  EXPECT_EQ((*got)->digest, "digest-6");
  EXPECT_EQ((*got)->payload, snap.payload);
  EXPECT_EQ(Seqs(ReadAll(store.get(), 6)), Range(7, 10));
  // Records the snapshot replaced are no longer there to read.
  Status s;
  ReadAll(store.get(), 2, &s);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s.message(), "records 3..6 are no longer kept"))
      << s.ToString();

  SnapshotData bad = snap;
  bad.seq = 11;
  EXPECT_EQ(store->WriteSnapshot(bad).code(), Code::kInvalidRequest);
  bad.seq = 5;
  EXPECT_EQ(store->WriteSnapshot(bad).code(), Code::kInvalidRequest);

  // A later snapshot replaces the first; the journal may end up empty.
  snap.seq = 10;
  snap.digest = "digest-10";
  ASSERT_TRUE(store->WriteSnapshot(snap).ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_snapshot"), "1");
  info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshot_seq, 10u);
  EXPECT_EQ(info->records, 0u);
  EXPECT_TRUE(ReadAll(store.get(), 10).empty());
  std::vector<JournalRecord> more = Batch(11, 2);
  ASSERT_TRUE(store->Append(&more).ok());
  EXPECT_EQ(Seqs(ReadAll(store.get(), 10)), Range(11, 12));
  EXPECT_EQ(store->stats().snapshots, 2u);
  EXPECT_TRUE(store->Check().ok());
}

TEST_F(PgStoreTest, ReopeningKeepsTheState) {
  {
    std::unique_ptr<Store> store = OpenLeader("a");
    ASSERT_NE(store, nullptr);
    std::vector<JournalRecord> batch = Batch(1, 5);
    ASSERT_TRUE(store->Append(&batch).ok());
    SnapshotData snap{3, batch[2].time_ms, "d3", "state-3"};
    ASSERT_TRUE(store->WriteSnapshot(snap).ok());
    std::vector<JournalRecord> more = Batch(6, 2);
    ASSERT_TRUE(store->Append(&more).ok());
    // Gone without resigning: its lease stays until it runs out.
  }
  std::unique_ptr<Store> stranger = Open("b");
  EXPECT_EQ(stranger->AcquireLeadership(0ms).code(), Code::kUnavailable);
  // The same node, restarted, takes its lease back at once.
  std::unique_ptr<Store> store = Open("a");
  ASSERT_NE(store, nullptr);
  StatusOr<StoreInfo> info = store->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshot_seq, 3u);
  EXPECT_EQ(info->first_seq, 4u);
  EXPECT_EQ(info->last_seq, 7u);
  StatusOr<std::optional<SnapshotData>> snap = store->LatestSnapshot();
  ASSERT_TRUE(snap.ok() && snap->has_value());
  EXPECT_EQ((*snap)->payload, "state-3");
  std::vector<JournalRecord> tail = ReadAll(store.get(), 3);
  EXPECT_EQ(Seqs(tail), Range(4, 7));
  ASSERT_TRUE(store->AcquireLeadership(0ms).ok());
  EXPECT_EQ(store->epoch(), 2u);
  std::vector<JournalRecord> more = Batch(8, 1);
  ASSERT_TRUE(store->Append(&more).ok());
  tail = ReadAll(store.get(), 3);
  ASSERT_EQ(Seqs(tail), Range(4, 8));
  EXPECT_EQ(tail.front().epoch, 1u);
  EXPECT_EQ(tail.back().epoch, 2u);
}

// ---- The usage history ----

std::vector<std::string> Payloads(
    const StatusOr<std::vector<HistoryRecord>>& records) {
  std::vector<std::string> out;
  EXPECT_TRUE(records.ok()) << records.status().ToString();
  if (!records.ok()) return out;
  for (const HistoryRecord& r : *records) out.push_back(r.payload);
  return out;
}

TEST_F(PgStoreTest, HistoryIsReadByTierInTimeOrderAndPruned) {
  constexpr int64_t t0 = 1'760'000'000'000;
  std::unique_ptr<Store> follower = Open("b");
  ASSERT_NE(follower, nullptr);
  // Leader only.
  EXPECT_EQ(follower->AppendHistory({{0, t0, "x"}}).code(), Code::kUnavailable);
  EXPECT_EQ(follower->PruneHistory(0, t0).code(), Code::kUnavailable);

  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  const std::string binary("b2\0\xff", 4);
  ASSERT_TRUE(store
                  ->AppendHistory({{0, t0 + 30, "c"},
                                   {0, t0 + 10, "a"},
                                   {1, t0 + 10, "avg"},
                                   {0, t0 + 20, "b1"},
                                   {0, t0 + 20, binary}})
                  .ok());
  ASSERT_TRUE(store->AppendHistory({}).ok());
  StatusOr<std::vector<HistoryRecord>> all = store->ReadHistory(0, 0, 100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].time_ms, t0 + 10);
  EXPECT_EQ((*all)[3].time_ms, t0 + 30);
  for (const HistoryRecord& r : *all) EXPECT_EQ(r.tier, 0);
  EXPECT_EQ(Payloads(all), (std::vector<std::string>{"a", "b1", binary, "c"}));
  EXPECT_EQ(Payloads(store->ReadHistory(0, t0 + 20, 100)),
            (std::vector<std::string>{"b1", binary, "c"}));
  EXPECT_EQ(Payloads(store->ReadHistory(0, 0, 2)),
            (std::vector<std::string>{"a", "b1"}));
  EXPECT_EQ(Payloads(store->ReadHistory(1, 0, 100)),
            (std::vector<std::string>{"avg"}));
  // A follower reads it too.
  EXPECT_EQ(Payloads(follower->ReadHistory(0, t0 + 30, 100)),
            (std::vector<std::string>{"c"}));
  EXPECT_EQ(store->AppendHistory({{-1, t0, "x"}}).code(),
            Code::kInvalidRequest);

  ASSERT_TRUE(store->PruneHistory(0, t0 + 20).ok());
  EXPECT_EQ(Payloads(store->ReadHistory(0, 0, 100)),
            (std::vector<std::string>{"b1", binary, "c"}));
  EXPECT_EQ(Payloads(store->ReadHistory(1, 0, 100)),
            (std::vector<std::string>{"avg"}));
  // Not engine state: the journal stays empty.
  EXPECT_EQ(store->Info()->records, 0u);
  EXPECT_TRUE(store->Check().ok());

  // Fenced like the journal: after a takeover behind its back, neither
  // writes nor prunes of the old epoch get through.
  Sql("UPDATE qm_leader SET epoch = epoch + 1, holder = 'intruder', "
      "lease_until = clock_timestamp() + interval '1 minute'");
  const Status late = store->AppendHistory({{0, t0 + 40, "late"}});
  EXPECT_EQ(late.code(), Code::kUnavailable);
  EXPECT_EQ(late.message(), "not the leader: epoch 1 was superseded");
  EXPECT_FALSE(store->IsLeader());
  const Status prune = store->PruneHistory(0, t0 + 100);
  EXPECT_EQ(prune.code(), Code::kUnavailable) << prune.ToString();
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_history"), "4");
  EXPECT_TRUE(
      Contains(Sql("INSERT INTO qm_history (tier, time_ms, epoch, payload) "
                   "VALUES (0, 0, 1, '')"),
               "ERROR QMF01"));
}

TEST_F(PgStoreTest, SchemaOneDatabaseMigratesAndKeepsItsJournal) {
  {
    std::unique_ptr<Store> store = OpenLeader("a");
    ASSERT_NE(store, nullptr);
    std::vector<JournalRecord> batch = Batch(1, 6);
    ASSERT_TRUE(store->Append(&batch).ok());
    ASSERT_TRUE(store->WriteSnapshot({2, batch[1].time_ms, "d2", "s2"}).ok());
    ASSERT_TRUE(store->ResignLeadership().ok());
  }
  // What a qm of schema version 1 left: no history table.
  EXPECT_EQ(Sql("DROP TABLE qm_history; "
                "UPDATE qm_schema_version SET version = 1"),
            "");
  ASSERT_EQ(Sql("SELECT version FROM qm_schema_version"), "1");
  ASSERT_EQ(Sql("SELECT to_regclass('qm_history') IS NULL"), "t");

  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  StatusOr<StoreInfo> info = store->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->schema_version, 2);
  EXPECT_EQ(Sql("SELECT version FROM qm_schema_version"), "2");
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_schema_version"), "1");
  // The snapshot and the journal after it are as they were.
  StatusOr<std::optional<SnapshotData>> snap = store->LatestSnapshot();
  ASSERT_TRUE(snap.ok() && snap->has_value());
  EXPECT_EQ((*snap)->payload, "s2");
  std::vector<JournalRecord> tail = ReadAll(store.get(), 2);
  ASSERT_EQ(Seqs(tail), Range(3, 6));
  EXPECT_EQ(tail.front().payload, Batch(3, 1)[0].payload);
  EXPECT_TRUE(store->Check().ok());
  std::vector<JournalRecord> more = Batch(7, 1);
  EXPECT_TRUE(store->Append(&more).ok());
  // The history works, fenced.
  ASSERT_TRUE(store->AppendHistory({{1, 5, "h"}}).ok());
  EXPECT_EQ(Payloads(store->ReadHistory(1, 0, 10)),
            (std::vector<std::string>{"h"}));
  EXPECT_TRUE(
      Contains(Sql("INSERT INTO qm_history (tier, time_ms, epoch, payload) "
                   "VALUES (0, 0, 1, '')"),
               "ERROR QMF01"));
}

// ---- Damage ----

TEST_F(PgStoreTest, GarbledPayloadIsDataLossAfterTheGoodPrefix) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 8);
  ASSERT_TRUE(store->Append(&batch).ok());
  EXPECT_EQ(Sql("UPDATE qm_journal SET payload = 'garbled'::bytea "
                "WHERE seq = 5"),
            "");
  Status s;
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0, &s)), Range(1, 4));
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s.message(), "journal record 5 fails its checksum"))
      << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "last good record 4")) << s.ToString();
  const Status check = store->Check();
  EXPECT_EQ(check.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(check.message(), "record 5")) << check.ToString();
  // A record moved to another seq fails too.
  Sql("UPDATE qm_journal SET payload = (SELECT payload FROM qm_journal "
      "WHERE seq = 1) WHERE seq = 2");
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0, &s)), Range(1, 1));
  EXPECT_TRUE(Contains(s.message(), "journal record 2 fails")) << s.ToString();
}

TEST_F(PgStoreTest, MissingRecordsAreDataLoss) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 8);
  ASSERT_TRUE(store->Append(&batch).ok());
  Sql("DELETE FROM qm_journal WHERE seq IN (4, 5)");
  Status s;
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0, &s)), Range(1, 3));
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s.message(), "records 4..5 are missing"))
      << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "last good record 3")) << s.ToString();
  EXPECT_EQ(store->Check().code(), Code::kDataLoss);
  Sql("DELETE FROM qm_journal WHERE seq = 1");
  ReadAll(store.get(), 0, &s);
  EXPECT_TRUE(Contains(s.message(), "record 1 is missing")) << s.ToString();
}

TEST_F(PgStoreTest, DamagedSnapshotIsDataLoss) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 4);
  ASSERT_TRUE(store->Append(&batch).ok());
  ASSERT_TRUE(store->WriteSnapshot({2, batch[1].time_ms, "d2", "s2"}).ok());
  Sql("UPDATE qm_snapshot SET digest = 'forged'");
  StatusOr<std::optional<SnapshotData>> snap = store->LatestSnapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(snap.status().message(), "snapshot at seq 2"));
  EXPECT_EQ(store->Check().code(), Code::kDataLoss);
}

// ---- Leadership and fencing, in one process ----

TEST_F(PgStoreTest, WritesNeedTheLeaseAndResigningHandsItOver) {
  std::unique_ptr<Store> a = Open("node-a");
  std::unique_ptr<Store> b = Open("node-b");
  ASSERT_TRUE(a != nullptr && b != nullptr);
  std::vector<JournalRecord> batch = Batch(1, 2);
  EXPECT_EQ(a->Append(&batch).code(), Code::kUnavailable);
  EXPECT_EQ(a->WriteSnapshot({1, 0, "d", "p"}).code(), Code::kUnavailable);

  ASSERT_TRUE(a->AcquireLeadership(0ms).ok());
  ASSERT_TRUE(a->Append(&batch).ok());
  const SteadyClock::time_point start = SteadyClock::now();
  const Status refused = b->AcquireLeadership(300ms);
  EXPECT_GE(SteadyClock::now() - start, 300ms);
  EXPECT_EQ(refused.code(), Code::kUnavailable);
  EXPECT_TRUE(Contains(refused.message(), "node node-a leads with epoch 1"))
      << refused.ToString();
  EXPECT_FALSE(b->IsLeader());

  ASSERT_TRUE(a->ResignLeadership().ok());
  EXPECT_FALSE(a->IsLeader());
  const Status resigned = a->Append(&batch);
  EXPECT_EQ(resigned.code(), Code::kUnavailable);
  // No need to wait for the lease: it was given up.
  ASSERT_TRUE(b->AcquireLeadership(0ms).ok());
  EXPECT_EQ(b->epoch(), 2u);
  EXPECT_TRUE(b->IsLeader());
  std::vector<JournalRecord> next = Batch(3, 2);
  ASSERT_TRUE(b->Append(&next).ok());
  EXPECT_EQ(Seqs(ReadAll(a.get(), 0)), Range(1, 4));
}

TEST_F(PgStoreTest, TheDatabaseRefusesAStaleEpoch) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 2);
  ASSERT_TRUE(store->Append(&batch).ok());
  // Someone else takes over behind this instance's back.
  Sql("UPDATE qm_leader SET epoch = epoch + 1, holder = 'intruder', "
      "lease_until = clock_timestamp() + interval '1 minute'");
  std::vector<JournalRecord> late = Batch(3, 2);
  const Status s = store->Append(&late);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "not the leader: epoch 1 was superseded");
  EXPECT_TRUE(Contains(s.details(), "qm fencing")) << s.ToString();
  EXPECT_FALSE(store->IsLeader());
  EXPECT_EQ(store->WriteSnapshot({2, 0, "d", "p"}).code(), Code::kUnavailable);
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0)), Range(1, 2));
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_snapshot"), "0");

  // The trigger is the database's own: plain SQL is fenced the same way.
  EXPECT_TRUE(Contains(Sql("INSERT INTO qm_journal VALUES (3, 0, 1, 0, '')"),
                       "ERROR QMF01"));
  EXPECT_TRUE(
      Contains(Sql("INSERT INTO qm_snapshot VALUES (2, 0, 'd', 0, '', 1)"),
               "ERROR QMF01"));
  EXPECT_EQ(Sql("INSERT INTO qm_journal VALUES (3, 0, 2, 0, '')"), "");
}

// The race the trigger's FOR SHARE lock is for: a takeover's epoch bump
// waits for the old leader's open write to commit, and the new leader
// continues after that write.
TEST_F(PgStoreTest, EpochBumpWaitsForAnOpenWriteOfTheOldEpoch) {
  std::unique_ptr<Store> old_leader = OpenLeader("old");
  ASSERT_NE(old_leader, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 3);
  ASSERT_TRUE(old_leader->Append(&batch).ok());
  ASSERT_TRUE(old_leader->ResignLeadership().ok());  // epoch 1 still current

  // The old epoch's write, still open: it holds the leader row FOR SHARE.
  PGconn* writer = PQconnectdb(uri_.c_str());
  ASSERT_EQ(PQstatus(writer), CONNECTION_OK);
  const std::string insert4 =
      "INSERT INTO qm_journal VALUES (4, 0, 1, " +
      std::to_string(store::RecordChecksum(4, 0, 1, "p4")) +
      ", convert_to('p4', 'UTF8'))";
  PQclear(PQexec(writer, "BEGIN"));
  PGresult* r = PQexec(writer, insert4.c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
  PQclear(r);

  std::unique_ptr<Store> successor = Open("new");
  ASSERT_NE(successor, nullptr);
  std::atomic<bool> acquired{false};
  Status acquire;
  std::thread taking([&] {
    acquire = successor->AcquireLeadership(10s);
    acquired = true;
  });
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(acquired.load()) << "the bump did not wait for the write";
  PQclear(PQexec(writer, "COMMIT"));
  taking.join();
  ASSERT_TRUE(acquire.ok()) << acquire.ToString();
  EXPECT_EQ(successor->epoch(), 2u);

  // The successor saw the committed write and continues after it; the old
  // epoch can no longer write at all.
  std::vector<JournalRecord> next = Batch(5, 1);
  ASSERT_TRUE(successor->Append(&next).ok());
  r = PQexec(writer, "INSERT INTO qm_journal VALUES (6, 0, 1, 0, ''::bytea)");
  EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "QMF01");
  PQclear(r);
  PQfinish(writer);
  EXPECT_EQ(Seqs(ReadAll(successor.get(), 0)), Range(1, 5));
}

TEST_F(PgStoreTest, RenewalKeepsTheLeaseAndItRunsOutWhenTheLeaderGoes) {
  std::unique_ptr<Store> leader = OpenLeader("a");
  std::unique_ptr<Store> follower = Open("b");
  ASSERT_TRUE(leader != nullptr && follower != nullptr);
  // Well past one lease, renewed all along.
  for (int i = 0; i < 25; ++i) {
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(leader->IsLeader()) << "after " << (i + 1) * 100 << " ms";
  }
  EXPECT_EQ(follower->AcquireLeadership(0ms).code(), Code::kUnavailable);
  leader.reset();  // stops renewing, does not resign
  const SteadyClock::time_point start = SteadyClock::now();
  ASSERT_TRUE(follower->AcquireLeadership(5s).ok());
  const auto took = SteadyClock::now() - start;
  EXPECT_LT(took, kLease + 700ms);
  EXPECT_EQ(follower->epoch(), 2u);
}

TEST_F(PgStoreTest, ReconnectsAfterTheServerDropsTheConnections) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  std::vector<JournalRecord> batch = Batch(1, 3);
  ASSERT_TRUE(store->Append(&batch).ok());
  std::this_thread::sleep_for(kRenew * 2);  // the renewer has connected
  // Both of the store's connections: the main one and the renewer's.
  EXPECT_EQ(Sql("SELECT count(pg_terminate_backend(pid)) FROM "
                "pg_stat_activity WHERE datname = current_database() AND "
                "application_name = 'qm'"),
            "2");
  std::vector<JournalRecord> more = Batch(4, 3);
  const Status lost = store->Append(&more);
  EXPECT_EQ(lost.code(), Code::kUnavailable) << lost.ToString();
  EXPECT_TRUE(Contains(lost.message(), "database " + db_)) << lost.ToString();
  // The next call reconnects; the renewer does so by itself.
  ASSERT_TRUE(store->Append(&more).ok());
  std::this_thread::sleep_for(kRenew * 3);
  EXPECT_TRUE(store->IsLeader());
  EXPECT_EQ(Sql("SELECT count(*) FROM pg_stat_activity WHERE "
                "datname = current_database() AND application_name = 'qm'"),
            "2");
  EXPECT_EQ(Seqs(ReadAll(store.get(), 0)), Range(1, 6));
}

// ---- Leadership across processes ----

// "ok X" -> X; fails the test on anything else.
std::string Ok(const std::string& answer) {
  EXPECT_TRUE(answer.starts_with("ok ")) << answer;
  return answer.size() > 3 ? answer.substr(3) : "";
}

TEST_F(PgStoreTest, ElectsOneLeaderAndFencesItWhenFrozen) {
  Open("setup");  // the schema, so the children race only for the lease
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < 3; ++i) {
    children.push_back(
        std::make_unique<Child>(uri_, "child-" + std::to_string(i)));
  }
  for (auto& c : children) ASSERT_EQ(c->Answer(), "ok ready");
  for (auto& c : children) c->Send("acquire 0");
  int leader = -1;
  for (int i = 0; i < 3; ++i) {
    const std::string answer = children[i]->Answer();
    if (answer == "ok 1") {
      EXPECT_EQ(leader, -1) << "two leaders";
      leader = i;
    } else {
      EXPECT_TRUE(answer.starts_with("err UNAVAILABLE: not the leader"))
          << answer;
    }
  }
  ASSERT_NE(leader, -1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(children[i]->Ask("leader"), i == leader ? "ok 1" : "ok 0");
  }
  Child& old_leader = *children[leader];
  Child& successor = *children[(leader + 1) % 3];
  Child& bystander = *children[(leader + 2) % 3];
  EXPECT_EQ(Ok(old_leader.Ask("append 5 first")), "5");

  // Frozen, renewal thread and all: the lease runs out by the database's
  // clock and the successor takes over with the next epoch.
  old_leader.Freeze();
  const SteadyClock::time_point frozen = SteadyClock::now();
  EXPECT_EQ(successor.Ask("acquire 5000"), "ok 2");
  const auto took = SteadyClock::now() - frozen;
  EXPECT_LT(took, kLease + 700ms);
  EXPECT_TRUE(bystander.Ask("acquire 0").starts_with("err UNAVAILABLE"));
  EXPECT_EQ(Ok(successor.Ask("append 3 second")), "8");

  // Thawed, the old leader still believes in epoch 1 until it writes: the
  // database refuses, and nothing of the batch lands.
  old_leader.Thaw();
  const std::string refused = old_leader.Ask("append 2 stale");
  EXPECT_TRUE(refused.starts_with(
      "err UNAVAILABLE: not the leader: epoch 1 was superseded"))
      << refused;
  EXPECT_TRUE(Contains(refused, "qm fencing")) << refused;
  EXPECT_EQ(old_leader.Ask("leader"), "ok 0");
  EXPECT_EQ(Ok(successor.Ask("append 1 third")), "9");

  std::unique_ptr<Store> reader = Open("reader");
  std::vector<JournalRecord> all = ReadAll(reader.get(), 0);
  ASSERT_EQ(Seqs(all), Range(1, 9));
  for (const JournalRecord& r : all) {
    EXPECT_FALSE(r.payload.starts_with("stale")) << r.seq;
    EXPECT_EQ(r.epoch, r.seq <= 5 ? 1u : 2u) << r.seq;
  }
  EXPECT_EQ(Sql("SELECT epoch FROM qm_leader"), "2");
}

TEST_F(PgStoreTest, FollowerTakesOverWhenTheLeaderDies) {
  std::unique_ptr<Store> follower = Open("follower");
  ASSERT_NE(follower, nullptr);
  Child leader(uri_, "leader");
  ASSERT_EQ(leader.Answer(), "ok ready");
  ASSERT_EQ(leader.Ask("acquire 0"), "ok 1");
  // The follower tails the journal while the leader writes.
  uint64_t seen = 0;
  std::vector<JournalRecord> tailed;
  for (int b = 1; b <= 10; ++b) {
    ASSERT_EQ(Ok(leader.Ask("append 64 lead")), std::to_string(64 * b));
    std::vector<JournalRecord> got = ReadAll(follower.get(), seen);
    if (!got.empty()) seen = got.back().seq;
    tailed.insert(tailed.end(), got.begin(), got.end());
  }
  leader.Kill();
  EXPECT_FALSE(follower->IsLeader());
  const SteadyClock::time_point start = SteadyClock::now();
  ASSERT_TRUE(follower->AcquireLeadership(5s).ok());
  EXPECT_LT(SteadyClock::now() - start, kLease + 700ms);
  EXPECT_EQ(follower->epoch(), 2u);
  std::vector<JournalRecord> rest = ReadAll(follower.get(), seen);
  tailed.insert(tailed.end(), rest.begin(), rest.end());
  // Every acknowledged record, and the follower continues the seq.
  ASSERT_EQ(Seqs(tailed), Range(1, 640));
  std::vector<JournalRecord> next = Batch(641, 64, "follow");
  ASSERT_TRUE(follower->Append(&next).ok());
  EXPECT_EQ(Seqs(ReadAll(follower.get(), 600)), Range(601, 704));
}

TEST_F(PgStoreTest, LapsedLeaderWritesWhileNobodyTookOver) {
  Child leader(uri_, "leader");
  ASSERT_EQ(leader.Answer(), "ok ready");
  ASSERT_EQ(leader.Ask("acquire 0"), "ok 1");
  EXPECT_EQ(Ok(leader.Ask("append 2 before")), "2");
  leader.Freeze();
  std::this_thread::sleep_for(kLease + 300ms);
  leader.Thaw();
  // The lease ran out but the epoch is still the current one: the write is
  // safe and accepted, and renewal brings the lease back.
  EXPECT_EQ(Ok(leader.Ask("append 2 after")), "4");
  const SteadyClock::time_point deadline = SteadyClock::now() + 2s;
  while (leader.Ask("leader") != "ok 1" && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(leader.Ask("leader"), "ok 1");
  std::unique_ptr<Store> reader = Open("reader");
  EXPECT_EQ(Seqs(ReadAll(reader.get(), 0)), Range(1, 4));
}

// ---- Figures ----

// Not a benchmark with assertions: the commit rate of the hot path (64
// records of 120 bytes per Append) against the test server, printed.
TEST_F(PgStoreTest, AppendThroughputOf64RecordBatches) {
  std::unique_ptr<Store> store = OpenLeader("a");
  ASSERT_NE(store, nullptr);
  const char* seconds_env = std::getenv("QM_PG_BENCH_SECONDS");
  const Duration run = Duration(
      static_cast<int64_t>(1000 * (seconds_env ? std::atof(seconds_env) : 1)));
  uint64_t next = 1;
  int commits = 0;
  const SteadyClock::time_point start = SteadyClock::now();
  while (SteadyClock::now() - start < run) {
    std::vector<JournalRecord> batch = Batch(next, 64);
    ASSERT_TRUE(store->Append(&batch).ok());
    next += 64;
    ++commits;
  }
  const double secs =
      std::chrono::duration<double>(SteadyClock::now() - start).count();
  std::printf(
      "PostgreSQL Append: %d commits of 64 x 120 B in %.2f s: "
      "%.0f commits/s, %.0f records/s\n",
      commits, secs, commits / secs, commits * 64 / secs);
  RecordProperty("commits_per_second", static_cast<int>(commits / secs));
  EXPECT_EQ(store->stats().commits, static_cast<uint64_t>(commits));
}

// The durable engine's journal and recovery cases on PostgreSQL.
class DurableBackend : public PgStoreTest {
 protected:
  std::string Location() const { return uri_; }
  void GarblePayload(uint64_t seq) {
    EXPECT_EQ(Sql("UPDATE qm_journal SET payload = decode(repeat('00', "
                  "length(payload)), 'hex') WHERE seq = " +
                  std::to_string(seq)),
              "");
  }
  void DeleteRecord(uint64_t seq) {
    EXPECT_EQ(Sql("DELETE FROM qm_journal WHERE seq = " + std::to_string(seq)),
              "");
  }
};

}  // namespace
}  // namespace qm

#include "tests/store/durable_cases.h"

namespace qm {
namespace {

DurableOptions DurableOpts(const std::string& uri, const std::string& node,
                           bool follow) {
  DurableOptions o;
  o.store = Options(uri, node);
  o.follow = follow;
  o.tail_interval = 50ms;
  o.leadership_wait = 5000ms;
  return o;
}

// A durable engine leading in a child process (so that it can be frozen and
// killed), driven through stdin: "alloc WF" answers "ok ID TOKEN STATUS"
// or "err STATUS"; "get ID" answers "ok WORKFLOW" or "err STATUS";
// "leader" answers "ok yes" or "ok no". With `follow`, it is opened with
// DurableOptions::follow (it steps down when superseded).
int RunDurableChild(const std::string& uri, const std::string& node,
                    bool follow) {
  auto d = DurableEngine::Open(DurableOpts(uri, node, follow),
                               durable_cases::TestConfig());
  if (!d.ok()) {
    std::cout << "err " << d.status().ToString() << std::endl;
    return 1;
  }
  std::cout << "ok ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd, arg;
    in >> cmd >> arg;
    if (cmd == "leader") {
      std::cout << ((*d)->IsLeader() ? "ok yes" : "ok no") << std::endl;
      continue;
    }
    if (cmd == "get") {
      auto g = (*d)->Get(arg);
      std::cout << (g.ok() ? "ok " + g->workflow_id
                           : "err " + g.status().ToString())
                << std::endl;
      continue;
    }
    if (cmd != "alloc") {
      std::cout << "err unknown command" << std::endl;
      continue;
    }
    auto a = (*d)->Allocate(durable_cases::Request(arg));
    if (a.ok()) {
      std::cout << "ok " << a->allocation.id << " "
                << a->allocation.fencing_token << " "
                << AllocStatusName(a->allocation.status) << std::endl;
    } else {
      std::string text = a.status().ToString();
      std::replace(text.begin(), text.end(), '\n', ' ');
      std::cout << "err " << text << std::endl;
    }
  }
  return 0;
}

// Polls until `d` (a follower) knows allocation `id`.
bool Knows(DurableEngine& d, const std::string& id, Duration within) {
  const auto deadline = SteadyClock::now() + within;
  while (SteadyClock::now() < deadline) {
    if (d.Get(id).ok()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// The usage history through durable engines on one database: the leader
// writes it, a follower reads it and is refused writes.
TEST_F(PgStoreTest, DurableFollowerReadsTheHistoryButDoesNotWriteIt) {
  auto l = DurableEngine::Open(DurableOpts(uri_, "leader", false),
                               durable_cases::TestConfig());
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  DurableEngine& leader = **l;
  ASSERT_TRUE(leader.AppendHistory({{0, 100, "a"}, {1, 0, "avg"}}).ok());
  auto f = DurableEngine::Open(DurableOpts(uri_, "follower", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& follower = **f;
  ASSERT_FALSE(follower.IsLeader());
  auto read = follower.ReadHistory(0, 0, 10);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].payload, "a");
  EXPECT_EQ(follower.AppendHistory({{0, 200, "b"}}).code(), Code::kUnavailable);
  EXPECT_EQ(follower.PruneHistory(0, 1000).code(), Code::kUnavailable);
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_history"), "2");
  ASSERT_TRUE(leader.PruneHistory(0, 1000).ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM qm_history"), "1");
}

TEST_F(PgStoreTest, DurableFollowerTakesOverWhenTheLeaderIsKilled) {
  Child leader(uri_, "leader", "--durable-child");
  ASSERT_EQ(leader.Answer(), "ok ready");
  // id -> (token, status) as acknowledged (some queue: 8 agents).
  std::vector<std::tuple<std::string, uint64_t, std::string>> acked;
  auto alloc = [&](const std::string& wf) {
    std::istringstream a(leader.Ask("alloc " + wf));
    std::string ok, id, status;
    uint64_t token = 0;
    a >> ok >> id >> token >> status;
    EXPECT_EQ(ok, "ok");
    acked.emplace_back(id, token, status);
  };
  for (int i = 0; i < 12; ++i) alloc("wf" + std::to_string(i % 5));
  auto f = DurableEngine::Open(DurableOpts(uri_, "follower", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& follower = **f;
  EXPECT_FALSE(follower.IsLeader());
  EXPECT_EQ(follower.Allocate(durable_cases::Request("x")).status().code(),
            Code::kUnavailable);
  // Warm: it applies the leader's journal as it goes.
  ASSERT_TRUE(Knows(follower, std::get<0>(acked.back()), 3s));
  alloc("wf9");  // and one the follower may not have seen yet

  leader.Kill();
  const auto died = SteadyClock::now();
  ASSERT_TRUE(follower.WaitUntilLeader(5s).ok());
  const auto took = SteadyClock::now() - died;
  EXPECT_LT(took, kLease + 1000ms);
  uint64_t max_token = 0;
  for (const auto& [id, token, status] : acked) {
    auto a = follower.Get(id);
    ASSERT_TRUE(a.ok()) << id << ": " << a.status().ToString();
    EXPECT_EQ(AllocStatusName(a->status), status) << id;
    EXPECT_EQ(a->fencing_token, token) << id;
    max_token = std::max(max_token, token);
  }
  // The new leader takes changes: a release starts the first queued
  // request, with a token above every token the old leader handed out.
  std::string first_active, first_queued;
  for (const auto& [id, token, status] : acked) {
    if (status == "active" && first_active.empty()) first_active = id;
    if (status == "queued" && first_queued.empty()) first_queued = id;
  }
  ASSERT_FALSE(first_queued.empty());
  ASSERT_TRUE(follower.Release(first_active).ok());
  auto next = follower.Get(first_queued);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->status, AllocStatus::kActive);
  EXPECT_GT(next->fencing_token, max_token);
  EXPECT_TRUE(follower.CheckInvariants().ok());
  RecordProperty(
      "takeover_ms",
      static_cast<int>(std::chrono::duration_cast<Duration>(took).count()));
}

// A follower whose read of the journal fails (here: its connection is
// dropped while the read waits on a lock) keeps following: it says so in
// FollowStatus, retries, and goes on from the last record applied once
// reads work again.
TEST_F(PgStoreTest, DurableFollowerRetriesReadsThatFail) {
  auto l = DurableEngine::Open(DurableOpts(uri_, "leader", false),
                               durable_cases::TestConfig());
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  DurableEngine& leader = **l;
  const std::string tagged = uri_ +
                             (uri_.find('?') == std::string::npos ? "?" : "&") +
                             "application_name=qm-follower";
  auto f = DurableEngine::Open(DurableOpts(tagged, "follower", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& follower = **f;
  auto first = leader.Allocate(durable_cases::Request("a"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(Knows(follower, first->allocation.id, 3s));
  EXPECT_TRUE(follower.FollowStatus().ok());

  // The journal locked for a while; once the follower's read waits on the
  // lock, its connection is dropped under it.
  auto locked = std::async(std::launch::async, [&] {
    return Sql(
        "BEGIN; LOCK TABLE qm_journal IN ACCESS EXCLUSIVE MODE; "
        "SELECT pg_sleep(1.5); COMMIT;");
  });
  const std::string follower_waits =
      "FROM pg_stat_activity WHERE datname = current_database() AND "
      "application_name = 'qm-follower' AND wait_event_type = 'Lock'";
  ASSERT_EQ(CountWhenSome(follower_waits, 1s), "1");
  // The store is read without the engine's mutex: the follower answers
  // from its copy while its read waits on the database.
  auto read = std::async(std::launch::async,
                         [&] { return follower.Get(first->allocation.id); });
  EXPECT_EQ(read.wait_for(500ms), std::future_status::ready);
  EXPECT_EQ(Sql("SELECT count(pg_terminate_backend(pid)) " + follower_waits),
            "1");
  ASSERT_TRUE(read.get().ok());
  Status seen;
  for (int i = 0; i < 100 && seen.ok(); ++i) {
    std::this_thread::sleep_for(5ms);
    seen = follower.FollowStatus();
  }
  EXPECT_EQ(seen.code(), Code::kUnavailable) << seen.ToString();
  EXPECT_TRUE(Contains(seen.message(), "following the leader"))
      << seen.ToString();
  EXPECT_EQ(locked.get(), "");

  auto second = leader.Allocate(durable_cases::Request("b"));
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(Knows(follower, second->allocation.id, 3s))
      << follower.FollowStatus().ToString();
  EXPECT_TRUE(follower.FollowStatus().ok())
      << follower.FollowStatus().ToString();
  EXPECT_EQ(follower.WaitUntilLeader(0ms).code(), Code::kUnavailable);
  EXPECT_TRUE(follower.CheckInvariants().ok());
}

TEST_F(PgStoreTest, DurableLeaderFrozenPastItsLeaseIsFenced) {
  Child leader(uri_, "leader", "--durable-child");
  ASSERT_EQ(leader.Answer(), "ok ready");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(leader.Ask("alloc wf" + std::to_string(i)).starts_with("ok "));
  }
  auto f = DurableEngine::Open(DurableOpts(uri_, "follower", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& follower = **f;
  ASSERT_TRUE(Knows(follower, "alloc_3", 3s));

  leader.Freeze();
  ASSERT_TRUE(follower.WaitUntilLeader(5s).ok());
  auto mine = follower.Allocate(durable_cases::Request("new-leader"));
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->allocation.id, "alloc_4");

  // Thawed, the old leader grants alloc_4 in its own memory too, but its
  // commit is refused (stale epoch): the caller gets an error, never a
  // grant, and it takes no change after.
  leader.Thaw();
  const std::string refused = leader.Ask("alloc stale");
  EXPECT_TRUE(refused.starts_with("err UNAVAILABLE")) << refused;
  EXPECT_TRUE(leader.Ask("alloc stale2").starts_with("err ")) << refused;
  auto a4 = follower.Get("alloc_4");
  ASSERT_TRUE(a4.ok());
  EXPECT_EQ(a4->workflow_id, "new-leader");
  EXPECT_EQ(a4->fencing_token, mine->allocation.fencing_token);
}

// With `follow`, a superseded leader steps down instead of stopping: it
// refuses the change it could not commit, drops the state holding it,
// follows the new leader, and takes over again when that one resigns.
TEST_F(PgStoreTest, DurableSupersededLeaderStepsDownAndFollows) {
  const std::string tagged = uri_ +
                             (uri_.find('?') == std::string::npos ? "?" : "&") +
                             "application_name=qm-old";
  Child old_leader(tagged, "old", "--durable-follow-child");
  ASSERT_EQ(old_leader.Answer(), "ok ready");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        old_leader.Ask("alloc wf" + std::to_string(i)).starts_with("ok "));
  }
  auto f = DurableEngine::Open(DurableOpts(uri_, "new", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& next = **f;
  ASSERT_TRUE(Knows(next, "alloc_3", 3s));
  // Once its lease renewal has a connection of its own (the first after a
  // renewal interval):
  const std::string renewal =
      "FROM pg_stat_activity WHERE application_name = 'qm-old' AND "
      "query LIKE 'UPDATE qm_leader SET lease_until%'";
  ASSERT_EQ(CountWhenSome(renewal, 2s), "1");
  old_leader.Freeze();
  ASSERT_TRUE(next.WaitUntilLeader(5s).ok());
  auto mine = next.Allocate(durable_cases::Request("new-leader"));
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_EQ(mine->allocation.id, "alloc_4");
  // Its lease renewal's connection is cut while it is frozen: thawed, that
  // renewal fails and waits a round to reconnect, so its next write (not
  // the renewal) is what tells it that it lost the lease.
  EXPECT_EQ(Sql("SELECT count(pg_terminate_backend(pid)) " + renewal), "1");

  // Thawed, the old leader still believes it leads: it grants alloc_4 in
  // its own memory, its commit is refused, and it says why.
  old_leader.Thaw();
  EXPECT_EQ(old_leader.Ask("leader"), "ok yes");
  const std::string refused = old_leader.Ask("alloc stale");
  EXPECT_TRUE(
      refused.starts_with("err UNAVAILABLE: this qm instance lost "
                          "the leadership"))
      << refused;
  // It follows now: it reads the new leader's alloc_4, not its own.
  EXPECT_EQ(old_leader.AskUntil("get alloc_4", "ok new-leader", 5s),
            "ok new-leader");
  EXPECT_EQ(old_leader.Ask("leader"), "ok no");
  EXPECT_TRUE(old_leader.Ask("alloc while-following")
                  .starts_with("err UNAVAILABLE: this qm instance follows"));

  // The new leader resigns: the old one takes over again, with everything.
  ASSERT_TRUE(next.Close().ok());
  ASSERT_EQ(old_leader.AskUntil("leader", "ok yes", 10s), "ok yes");
  const std::string again = old_leader.Ask("alloc again");
  EXPECT_TRUE(again.starts_with("ok alloc_5 ")) << again;
  EXPECT_EQ(old_leader.Ask("get alloc_4"), "ok new-leader");
  EXPECT_EQ(old_leader.Ask("get alloc_1"), "ok wf0");
}

// An idle superseded leader writes nothing that could be refused: its next
// lease renewal tells it, and it steps down all the same.
TEST_F(PgStoreTest, DurableIdleSupersededLeaderStepsDown) {
  Child old_leader(uri_, "old", "--durable-follow-child");
  ASSERT_EQ(old_leader.Answer(), "ok ready");
  ASSERT_TRUE(old_leader.Ask("alloc wf0").starts_with("ok alloc_1 "));
  auto f = DurableEngine::Open(DurableOpts(uri_, "new", true),
                               durable_cases::TestConfig());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  DurableEngine& next = **f;
  old_leader.Freeze();
  ASSERT_TRUE(next.WaitUntilLeader(5s).ok());
  ASSERT_TRUE(next.Allocate(durable_cases::Request("new-leader")).ok());
  old_leader.Thaw();
  EXPECT_EQ(old_leader.AskUntil("get alloc_2", "ok new-leader", 5s),
            "ok new-leader");
  EXPECT_EQ(old_leader.Ask("leader"), "ok no");
}

}  // namespace
}  // namespace qm

int main(int argc, char** argv) {
  if (argc == 4 && std::string_view(argv[1]) == "--store-child") {
    return qm::RunStoreChild(argv[2], argv[3]);
  }
  if (argc == 4 && std::string_view(argv[1]) == "--durable-child") {
    return qm::RunDurableChild(argv[2], argv[3], false);
  }
  if (argc == 4 && std::string_view(argv[1]) == "--durable-follow-child") {
    return qm::RunDurableChild(argv[2], argv[3], true);
  }

  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
