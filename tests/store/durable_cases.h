// The durable engine's journal and recovery tests, run against each store:
// included once by the SQLite tests (durable_engine_test.cc) and once by
// the PostgreSQL tests (pg_store_test.cc). The including file defines
// `DurableBackend`, a gtest fixture base with:
//   std::string Location();            // this test's store, fresh
//   void GarblePayload(uint64_t seq);  // overwrites a journal record's bytes
//   void DeleteRecord(uint64_t seq);   // removes a journal record
#ifndef QM_TESTS_STORE_DURABLE_CASES_H_
#define QM_TESTS_STORE_DURABLE_CASES_H_

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qm/config.h"
#include "qm/durable_engine.h"
#include "qm/engine.h"

namespace qm::durable_cases {

using namespace std::chrono_literals;

// Records events; safe to read between calls (delivery runs on the
// durable engine's writer thread).
class EventLog : public EventSink {
 public:
  void OnEvent(const Event& e) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(e);
  }
  std::vector<Event> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  size_t Count(EventType type, const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const Event& e : events_) n += e.type == type && e.allocation_id == id;
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

// A clock tests move by hand; safe across threads.
class TestClock : public Clock {
 public:
  Time Now() const override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stall_) {
        stall_ = false;
        stalled_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !stalled_; });
      }
    }
    return Time(Duration(ms_.load()));
  }
  void Set(Time t) { ms_ = t.time_since_epoch().count(); }
  void Advance(Duration d) { ms_ += d.count(); }

  // The next Now(), on whichever thread, waits until Unstall(): the durable
  // engine reads the clock with its mutex held, so a change stalled there
  // keeps the engine busy for as long as a test needs.
  void StallNextNow() {
    std::lock_guard<std::mutex> lock(mu_);
    stall_ = true;
  }
  // Waits until a Now() is stalled (false after `timeout`).
  bool WaitStalled(Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return stalled_; });
  }
  void Unstall() {
    std::lock_guard<std::mutex> lock(mu_);
    stall_ = stalled_ = false;
    cv_.notify_all();
  }

 private:
  // 2026-01-26T14:00:00Z.
  std::atomic<int64_t> ms_{1769436000000LL};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable bool stall_ = false, stalled_ = false;
};

// 8 agents. (The durable engine takes only configs a config file can
// express: resources are the defaults with capacities changed.)
inline Config WithAgents(Config c, double agents) {
  for (ResourceSpec& r : c.resources) {
    if (r.name == "agents") r.capacity = agents;
  }
  return c;
}

inline Config TestConfig() {
  Config c = WithAgents(Config::Defaults(), 8);
  c.per_type_limits["coder"] = 6;
  return c;
}

inline AllocationRequest Request(const std::string& workflow,
                                 Duration ttl = 30min) {
  AllocationRequest r;
  r.workflow_id = workflow;
  r.agent_type = "coder";
  r.requester = "durable-test";
  r.product = "p";
  r.ttl = ttl;
  r.resources = {{"agents", 1}};
  return r;
}

}  // namespace qm::durable_cases

namespace qm {
namespace {

using namespace std::chrono_literals;
using durable_cases::EventLog;
using durable_cases::Request;
using durable_cases::TestClock;
using durable_cases::TestConfig;

class DurableEngineTest : public DurableBackend {
 protected:
  void SetUp() override {
    DurableBackend::SetUp();
    options_.store.location = Location();
    options_.store.leader_lease = 1000ms;
    options_.store.lease_renew_interval = 200ms;
    options_.leadership_wait = 5000ms;
  }

  std::unique_ptr<DurableEngine> OpenEngine(Config config = TestConfig()) {
    auto d = DurableEngine::Open(options_, std::move(config), &clock_, &log_);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? std::move(*d) : nullptr;
  }

  DurableOptions options_;
  TestClock clock_;
  EventLog log_;
};

TEST_F(DurableEngineTest, AGrantSurvivesARestartWithItsTokenAndLease) {
  std::string id;
  uint64_t token = 0;
  std::string digest;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(d->recovery().fresh);
    auto a = d->Allocate(Request("wf1"));
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ASSERT_EQ(a->allocation.status, AllocStatus::kActive);
    id = a->allocation.id;
    token = a->allocation.fencing_token;
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_FALSE(d->recovery().fresh);
  auto a = d->Get(id);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status, AllocStatus::kActive);
  EXPECT_EQ(a->fencing_token, token);
  // Nothing else happened: the recovered state is the state closed.
  EXPECT_EQ(*d->StateDigest(), digest);
  // The next grant gets a new id and a larger token: nothing handed twice.
  auto b = d->Allocate(Request("wf2"));
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->allocation.id, id);
  EXPECT_GT(b->allocation.fencing_token, token);
}

TEST_F(DurableEngineTest, ReplayReachesTheSameDigestWithAndWithoutSnapshots) {
  options_.snapshot_every_records = 1000000;  // only explicit snapshots
  std::string digest;
  std::vector<std::string> ids;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 60; ++i) {
      clock_.Advance(7s);
      auto a = d->Allocate(Request("wf" + std::to_string(i % 9), 3min));
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      ids.push_back(a->allocation.id);
      // Some of these were released already: refusals are journaled too.
      if (i % 3 == 0) (void)d->Release(ids[i / 2]);
      if (i == 30) {
        ASSERT_TRUE(d->WriteSnapshot().ok());
      }
      if (i % 5 == 0) (void)d->Renew(ids[i], 10min);
    }
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  // The snapshot at op 30 covers the first part; the rest is replayed.
  EXPECT_GT(d->recovery().snapshot_seq, 1u);
  EXPECT_GT(d->recovery().replayed, 30u);
  // Recovery itself appends one tick at the restart time; with the clock
  // unchanged it changes nothing.
  EXPECT_EQ(*d->StateDigest(), digest);
  EXPECT_TRUE(d->CheckInvariants().ok());
  for (const std::string& id : ids) EXPECT_TRUE(d->Get(id).ok()) << id;
}

TEST_F(DurableEngineTest, LeasesThatRanOutWhileDownExpireAtStartInOrder) {
  std::string first, second, kept;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    first = d->Allocate(Request("wf1", 2min))->allocation.id;
    clock_.Advance(10s);
    second = d->Allocate(Request("wf2", 2min))->allocation.id;
    kept = d->Allocate(Request("wf3", 60min))->allocation.id;
    ASSERT_TRUE(d->Close().ok());
  }
  clock_.Advance(30min);  // qm was down
  const size_t before = log_.events().size();
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->Get(first)->status, AllocStatus::kExpired);
  EXPECT_EQ(d->Get(second)->status, AllocStatus::kExpired);
  EXPECT_EQ(d->Get(kept)->status, AllocStatus::kActive);
  // The expiries were announced on start, the earlier lease first, at the
  // times the leases ran out.
  std::vector<Event> events = log_.events();
  std::vector<Event> expired;
  for (size_t i = before; i < events.size(); ++i) {
    if (events[i].type == EventType::kExpired) expired.push_back(events[i]);
  }
  ASSERT_EQ(expired.size(), 2u);
  EXPECT_EQ(expired[0].allocation_id, first);
  EXPECT_EQ(expired[1].allocation_id, second);
  EXPECT_LT(expired[0].time, expired[1].time);
  EXPECT_LT(expired[1].time, clock_.Now());
  // And they are journaled: a second restart does not announce them again.
  ASSERT_TRUE(d->Close().ok());
  d.reset();
  const size_t after = log_.events().size();
  auto again = OpenEngine();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(log_.events().size(), after);
  EXPECT_EQ(again->Get(first)->status, AllocStatus::kExpired);
}

TEST_F(DurableEngineTest, EventsAreDeliveredAfterTheCommitInOrder) {
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  const size_t before = log_.events().size();
  auto a = d->Allocate(Request("wf1"));
  ASSERT_TRUE(a.ok());
  // The answer comes after the commit, and the commit's events are
  // delivered before the next commit's: the grant event is there.
  ASSERT_TRUE(d->Flush().ok());
  auto r = d->Release(a->allocation.id);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(d->Flush().ok());
  std::vector<Event> events = log_.events();
  ASSERT_GT(events.size(), before + 1);
  uint64_t last = 0;
  for (const Event& e : events) {
    EXPECT_GT(e.seq, last);
    last = e.seq;
  }
  EXPECT_EQ(log_.Count(EventType::kGranted, a->allocation.id), 1u);
  EXPECT_EQ(log_.Count(EventType::kReleased, a->allocation.id), 1u);
}

TEST_F(DurableEngineTest, RefusedCallsChangeNothingAndReplayTheSame) {
  std::string digest;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    auto bad = Request("wf1");
    bad.resources = {{"agents", -1}};
    EXPECT_EQ(d->Allocate(bad).status().code(), Code::kInvalidRequest);
    EXPECT_EQ(d->Release("alloc_999").status().code(), Code::kNotFound);
    auto big = Request("wf2");
    big.resources = {{"agents", 100}};
    EXPECT_EQ(d->Allocate(big).status().code(), Code::kResourceExhausted);
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(*d->StateDigest(), digest);
}

TEST_F(DurableEngineTest, AChangedConfigIsAppliedAtOpenAsAJournaledReload) {
  Config small = TestConfig();
  small.per_type_limits["coder"] = 2;
  std::string queued;
  {
    auto d = OpenEngine(small);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(d->Allocate(Request("wf1")).ok());
    ASSERT_TRUE(d->Allocate(Request("wf2")).ok());
    auto q = d->Allocate(Request("wf3"));
    ASSERT_TRUE(q.ok());
    ASSERT_EQ(q->allocation.status, AllocStatus::kQueued);
    queued = q->allocation.id;
    ASSERT_TRUE(d->Close().ok());
  }
  // Edited config: more coders. Recovered under the recorded config, then
  // reloaded: the queued request starts.
  Config bigger = TestConfig();
  bigger.per_type_limits["coder"] = 3;
  std::string digest;
  {
    auto d = OpenEngine(bigger);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->recovery().config_changes,
              std::vector<std::string>{"max_concurrent.per_type: changed"});
    EXPECT_EQ(d->config().per_type_limits.at("coder"), 3);
    EXPECT_EQ(d->Get(queued)->status, AllocStatus::kActive);
    EXPECT_EQ(log_.Count(EventType::kConfigReloaded, ""), 1u);
    EXPECT_TRUE(d->CheckInvariants().ok());
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  // The same config again: nothing to apply, nothing changed.
  {
    auto d = OpenEngine(bigger);
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(d->recovery().config_changes.empty());
    EXPECT_EQ(*d->StateDigest(), digest);
    ASSERT_TRUE(d->Close().ok());
  }
  // Back below what runs now: refused, naming why; the state is untouched
  // and still opens under its config.
  auto refused = DurableEngine::Open(options_, small, &clock_, &log_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kConflict);
  EXPECT_NE(refused.status().message().find("coder"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("cannot be applied"),
            std::string::npos)
      << refused.status().message();
  auto again = OpenEngine(bigger);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(*again->StateDigest(), digest);
}

TEST_F(DurableEngineTest, ALiveReloadIsRecoveredFromTheJournal) {
  std::string digest;
  Config bigger = durable_cases::WithAgents(TestConfig(), 10);
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(d->Allocate(Request("wf" + std::to_string(i))).ok());
    }
    // The same config: no change, nothing journaled.
    const uint64_t before = d->stats().committed_seq;
    auto same = d->Reconfigure(TestConfig(), Actor{"ops", ""});
    ASSERT_TRUE(same.ok());
    EXPECT_TRUE(same->changes.empty());
    EXPECT_EQ(d->stats().committed_seq, before);
    // A bad one is refused and changes nothing.
    Config bad = TestConfig();
    bad.resources[0].capacity = -1;
    EXPECT_EQ(d->Reconfigure(bad, Actor{"ops", ""}).status().code(),
              Code::kInvalidRequest);
    auto r = d->Reconfigure(bigger, Actor{"ops", "two more"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->changes.size(), 1u);
    EXPECT_EQ(r->changes[0], "resources.agents.capacity: 8 -> 10");
    // Capacity 10 but 6 coders at most: agents of another type fit.
    auto other = Request("wf-x");
    other.agent_type = "reviewer";
    auto a = d->Allocate(other);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->allocation.status, AllocStatus::kActive);
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  // Recovery replays the reload from the journal, then the grant after it:
  // the state is exactly the one closed, under the new config.
  auto d = OpenEngine(bigger);
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->recovery().config_changes.empty());
  EXPECT_EQ(*d->StateDigest(), digest);
  EXPECT_EQ(d->config().resources[0].capacity, 10);
  // And a snapshot records the new config: it restores after a restart.
  ASSERT_TRUE(d->WriteSnapshot().ok());
  ASSERT_TRUE(d->Close().ok());
  d.reset();
  auto e = OpenEngine(bigger);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(*e->StateDigest(), digest);
}

TEST_F(DurableEngineTest, AGarbledJournalRecordStopsRecoveryThere) {
  uint64_t bad_seq = 0;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(d->Allocate(Request("wf" + std::to_string(i))).ok());
    }
    bad_seq = d->stats().committed_seq - 3;
    ASSERT_TRUE(d->Close().ok());
  }
  GarblePayload(bad_seq);
  auto d = DurableEngine::Open(options_, TestConfig(), &clock_, &log_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  const std::string& m = d.status().message();
  EXPECT_NE(m.find("last good journal record (seq " +
                   std::to_string(bad_seq - 1) + ")"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(std::to_string(bad_seq)), std::string::npos) << m;
}

TEST_F(DurableEngineTest, AMissingRecordInTheMiddleIsNeverSkipped) {
  uint64_t gone = 0;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(d->Allocate(Request("wf" + std::to_string(i))).ok());
    }
    gone = d->stats().committed_seq - 4;
    ASSERT_TRUE(d->Close().ok());
  }
  DeleteRecord(gone);
  auto d = DurableEngine::Open(options_, TestConfig(), &clock_, &log_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("(seq " + std::to_string(gone - 1) + ")"),
            std::string::npos)
      << d.status().message();
}

TEST_F(DurableEngineTest, ConcurrentCallersShareCommitsAndLoseNothing) {
  constexpr int kThreads = 16, kCycles = 60;
  // Room for every caller at once: each cycle is granted at once.
  Config config = durable_cases::WithAgents(TestConfig(), 64);
  config.allocation_limits.max_agents_per_workflow = 64;
  std::string digest;
  {
    auto d = OpenEngine(config);
    ASSERT_NE(d, nullptr);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kCycles; ++i) {
          auto r = Request("wf" + std::to_string(t));
          r.agent_type = "other";
          auto a = d->Allocate(r);
          if (!a.ok()) {
            ++failures;
            continue;
          }
          if (!d->Release(a->allocation.id).ok()) ++failures;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    DurableStats s = d->stats();
    // 2 records per cycle, plus the birth tick.
    EXPECT_EQ(s.operations, 2u * kThreads * kCycles + 1);
    EXPECT_LE(s.commits, s.operations);
    EXPECT_TRUE(d->CheckInvariants().ok());
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine(config);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(*d->StateDigest(), digest);
  // Every cycle left its allocation released.
  auto snap = d->GetSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->active, 0);
}

// The async calls answer after their commit, with what the blocking calls
// would have answered; many may be in flight at once from one thread; and
// after Close they answer UNAVAILABLE instead of never.
TEST_F(DurableEngineTest, AsyncCallsAnswerOnceCommitted) {
  Config config = durable_cases::WithAgents(TestConfig(), 2);
  std::string digest;
  {
    auto d = OpenEngine(config);
    ASSERT_NE(d, nullptr);
    std::mutex mu;
    std::condition_variable cv;
    std::vector<StatusOr<AllocateResult>> grants;
    std::vector<uint64_t> committed_at_answer;
    for (int i = 0; i < 3; ++i) {
      d->AllocateAsync(
          Request("wf" + std::to_string(i)), [&](StatusOr<AllocateResult> r) {
            std::lock_guard<std::mutex> lock(mu);
            grants.push_back(std::move(r));
            committed_at_answer.push_back(d->stats().committed_seq);
            cv.notify_all();
          });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return grants.size() == 3; }));
    }
    // In call order; two granted, the third queued (capacity 2).
    ASSERT_TRUE(grants[0].ok() && grants[1].ok() && grants[2].ok());
    EXPECT_EQ(grants[0]->allocation.status, AllocStatus::kActive);
    EXPECT_EQ(grants[1]->allocation.status, AllocStatus::kActive);
    EXPECT_EQ(grants[2]->allocation.status, AllocStatus::kQueued);
    // Each answer came after its own record was durable.
    const uint64_t birth = 1;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_GE(committed_at_answer[i], birth + 1 + i);
    }
    StatusOr<AllocationInfo> released = Unavailable("not yet");
    StatusOr<AllocationInfo> renewed = Unavailable("not yet");
    int answers = 0;
    d->RenewAsync(grants[1]->allocation.id, 10min,
                  [&](StatusOr<AllocationInfo> r) {
                    std::lock_guard<std::mutex> lock(mu);
                    renewed = std::move(r);
                    ++answers;
                    cv.notify_all();
                  });
    d->ReleaseAsync(grants[0]->allocation.id, UsageReport{},
                    [&](StatusOr<AllocationInfo> r) {
                      std::lock_guard<std::mutex> lock(mu);
                      released = std::move(r);
                      ++answers;
                      cv.notify_all();
                    });
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return answers == 2; }));
    }
    ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
    ASSERT_TRUE(released.ok()) << released.status().ToString();
    EXPECT_EQ(released->status, AllocStatus::kReleased);
    // The release handed the slot to the queued one.
    EXPECT_EQ(d->Get(grants[2]->allocation.id)->status, AllocStatus::kActive);
    // Refused calls answer their error, after nothing was changed.
    StatusOr<AllocationInfo> missing = AllocationInfo{};
    d->ReleaseAsync("alloc_404", UsageReport{},
                    [&](StatusOr<AllocationInfo> r) {
                      std::lock_guard<std::mutex> lock(mu);
                      missing = std::move(r);
                      cv.notify_all();
                    });
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return !missing.ok(); }));
    }
    EXPECT_EQ(missing.status().code(), Code::kNotFound);
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
    bool closed_answer = false;
    d->AllocateAsync(Request("late"), [&](StatusOr<AllocateResult> r) {
      EXPECT_EQ(r.status().code(), Code::kUnavailable);
      closed_answer = true;
    });
    EXPECT_TRUE(closed_answer);  // at once, on this thread
  }
  auto d = OpenEngine(config);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(*d->StateDigest(), digest);
}

// With `defer` (a caller that must not wait: a server's event loop), the
// async calls run at once while the engine is free; while another thread
// holds it, each is handed to `defer` as a job, changes nothing until the
// job runs, and then answers as it would have.
TEST_F(DurableEngineTest, AsyncCallsDeferWhileTheEngineIsBusy) {
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  std::vector<std::function<void()>> jobs;
  const DurableEngine::Defer defer = [&](std::function<void()> job) {
    jobs.push_back(std::move(job));
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StatusOr<AllocateResult>> grants;
  auto on_grant = [&](StatusOr<AllocateResult> r) {
    std::lock_guard<std::mutex> lock(mu);
    grants.push_back(std::move(r));
    cv.notify_all();
  };
  auto answers = [&](size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 10s, [&] { return grants.size() >= n; });
  };

  // Free: made on this thread.
  d->AllocateAsync(Request("first"), on_grant, defer);
  ASSERT_TRUE(answers(1));
  EXPECT_TRUE(jobs.empty());
  ASSERT_TRUE(grants[0].ok()) << grants[0].status().ToString();
  const std::string first = grants[0]->allocation.id;

  // Busy: a blocking allocate on another thread stalls inside the engine.
  clock_.StallNextNow();
  StatusOr<AllocateResult> blocking = Unavailable("not answered");
  std::thread holder([&] { blocking = d->Allocate(Request("holder")); });
  // A failed assertion below must not leave the holder stalled or running.
  struct Release {
    TestClock& clock;
    std::thread& thread;
    ~Release() {
      clock.Unstall();
      if (thread.joinable()) thread.join();
    }
  } release{clock_, holder};
  ASSERT_TRUE(clock_.WaitStalled(10s));
  StatusOr<AllocationInfo> renewed = Unavailable("not answered");
  StatusOr<AllocationInfo> released = Unavailable("not answered");
  d->AllocateAsync(Request("deferred"), on_grant, defer);
  d->RenewAsync(
      first, 10min,
      [&](StatusOr<AllocationInfo> r) {
        std::lock_guard<std::mutex> lock(mu);
        renewed = std::move(r);
        cv.notify_all();
      },
      defer);
  d->ReleaseAsync(
      first, UsageReport{},
      [&](StatusOr<AllocationInfo> r) {
        std::lock_guard<std::mutex> lock(mu);
        released = std::move(r);
        cv.notify_all();
      },
      defer);
  // Handed over, not made: no answer, nothing applied.
  ASSERT_EQ(jobs.size(), 3u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(grants.size(), 1u);
    EXPECT_FALSE(renewed.ok());
    EXPECT_FALSE(released.ok());
  }
  clock_.Unstall();
  holder.join();
  ASSERT_TRUE(blocking.ok()) << blocking.status().ToString();
  // The deferred allocate was not made while its job waited.
  EXPECT_EQ(d->GetSnapshot()->active, 2);
  EXPECT_EQ(d->Get(first)->status, AllocStatus::kActive);

  // The jobs make the calls (here on this thread, which may wait).
  for (auto& job : jobs) job();
  ASSERT_TRUE(answers(2));
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(
        cv.wait_for(lock, 10s, [&] { return renewed.ok() && released.ok(); }));
  }
  ASSERT_TRUE(grants[1].ok()) << grants[1].status().ToString();
  EXPECT_EQ(grants[1]->allocation.status, AllocStatus::kActive);
  EXPECT_EQ(grants[1]->allocation.workflow_id, "deferred");
  EXPECT_EQ(renewed->expires_at, clock_.Now() + 10min);
  EXPECT_EQ(released->status, AllocStatus::kReleased);
  EXPECT_EQ(d->Get(first)->status, AllocStatus::kReleased);
  EXPECT_EQ(d->Get(grants[1]->allocation.id)->status, AllocStatus::kActive);
}

TEST_F(DurableEngineTest, PeriodicSnapshotsTruncateTheJournal) {
  options_.snapshot_every_records = 50;
  std::string digest;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 120; ++i) {
      auto a = d->Allocate(Request("wf"));
      ASSERT_TRUE(a.ok());
      ASSERT_TRUE(d->Release(a->allocation.id).ok());
    }
    ASSERT_TRUE(d->Flush().ok());
    EXPECT_GE(d->stats().snapshots, 3u);
    auto info = d->StoreDescription();
    ASSERT_TRUE(info.ok());
    EXPECT_GT(info->snapshot_seq, 150u);
    EXPECT_LT(info->records, 120u);
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_LT(d->recovery().replayed, 120u);
  EXPECT_EQ(*d->StateDigest(), digest);
}

// The usage history goes straight to the store: not journaled, not in the
// state, kept across a restart; refused once the engine is closed.
TEST_F(DurableEngineTest, UsageHistoryIsKeptOffTheJournal) {
  std::string digest;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(d->Allocate(Request("wf")).ok());
    const uint64_t ops = d->stats().operations;
    const uint64_t last = d->stats().last_seq;
    const uint64_t records = d->StoreDescription()->records;
    digest = *d->StateDigest();
    ASSERT_TRUE(d->AppendHistory(
                     {{0, 1000, "raw-1"}, {0, 2000, "raw-2"}, {1, 0, "avg-0"}})
                    .ok());
    ASSERT_TRUE(d->PruneHistory(0, 1500).ok());
    auto read = d->ReadHistory(0, 0, 10);
    ASSERT_TRUE(read.ok()) << read.status().ToString();
    ASSERT_EQ(read->size(), 1u);
    EXPECT_EQ((*read)[0].payload, "raw-2");
    EXPECT_EQ((*read)[0].time_ms, 2000);
    ASSERT_TRUE(d->Flush().ok());
    EXPECT_EQ(d->stats().operations, ops);
    EXPECT_EQ(d->stats().last_seq, last);
    EXPECT_EQ(d->StoreDescription()->records, records);
    EXPECT_EQ(*d->StateDigest(), digest);
    ASSERT_TRUE(d->Close().ok());
    EXPECT_EQ(d->AppendHistory({{0, 3000, "late"}}).code(), Code::kUnavailable);
    EXPECT_EQ(d->ReadHistory(0, 0, 10).status().code(), Code::kUnavailable);
    EXPECT_EQ(d->PruneHistory(0, 0).code(), Code::kUnavailable);
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(*d->StateDigest(), digest);
  auto raw = d->ReadHistory(0, 0, 10);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  ASSERT_EQ(raw->size(), 1u);
  EXPECT_EQ((*raw)[0].payload, "raw-2");
  auto averaged = d->ReadHistory(1, 0, 10);
  ASSERT_TRUE(averaged.ok());
  ASSERT_EQ(averaged->size(), 1u);
  EXPECT_EQ((*averaged)[0].payload, "avg-0");
}

TEST_F(DurableEngineTest, ClosedEngineAnswersUnavailable) {
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(d->Allocate(Request("wf")).status().code(), Code::kUnavailable);
  EXPECT_EQ(d->Get("alloc_1").status().code(), Code::kUnavailable);
  EXPECT_TRUE(d->Close().ok());  // idempotent
}

// The machine's readings are journaled: a restart (and a follower)
// replays the same alerts, pressure hold and reclaims.
TEST_F(DurableEngineTest, SystemReadingsReplayToTheSameState) {
  options_.snapshot_every_records = 1000000;
  std::string digest, held;
  {
    auto d = OpenEngine();
    ASSERT_NE(d, nullptr);
    for (int i = 0; i < 4; ++i) {
      AllocationRequest r = Request("low" + std::to_string(i));
      r.priority = "low";
      r.resources = {{"memory_gb", 2}};
      ASSERT_TRUE(d->Allocate(r).ok());
      clock_.Advance(1s);
    }
    for (double m : {0.5, 0.85, 0.95, 0.9, 0.7}) {
      SystemReading reading;
      reading.memory_utilization = m;
      reading.cpu_utilization = m;
      reading.memory_total_gb = 16;
      ASSERT_TRUE(d->ObserveSystem(reading).ok());
      if (m == 0.85) {
        AllocationRequest r = Request("held");
        r.resources = {{"memory_gb", 1}};
        auto a = d->Allocate(r);
        ASSERT_TRUE(a.ok()) << a.status().ToString();
        EXPECT_EQ(a->allocation.status, AllocStatus::kQueued);
        held = a->allocation.id;
      }
      clock_.Advance(30s);
    }
    SystemReading bad;
    bad.cpu_utilization = 2;  // refused, journaled as refused
    EXPECT_EQ(d->ObserveSystem(bad).code(), Code::kInvalidRequest);
    // Due timers (the reclaimed holders' deadlines) run now, as the
    // recovery's own tick would run them at this time.
    ASSERT_TRUE(d->Tick().ok());
    auto s = d->GetSnapshot();
    ASSERT_TRUE(s.ok());
    EXPECT_FALSE(s->health.memory_pressure);
    digest = *d->StateDigest();
    ASSERT_TRUE(d->Close().ok());
  }
  auto d = OpenEngine();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(*d->StateDigest(), digest);
  auto a = d->Get(held);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, AllocStatus::kActive);  // granted when it eased
  int reclaims = 0;
  for (const Event& e : log_.events()) {
    reclaims += e.type == EventType::kReclaimRequested;
  }
  EXPECT_GT(reclaims, 0);
}

}  // namespace
}  // namespace qm

#endif  // QM_TESTS_STORE_DURABLE_CASES_H_
