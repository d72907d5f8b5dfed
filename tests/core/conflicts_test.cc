// Path locks, workflow exclusion, fencing and the conflict operations of the
// engine (docs/conflicts.md).
#include <gtest/gtest.h>

#include <string>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using std::chrono::minutes;
using testing_util::Harness;
using testing_util::Req;

Config LockConfig() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 10;  // agents
  c.allocation_limits.max_agents_per_workflow.reset();
  c.conflicts.workspace_root = "/work/repo";
  return c;
}

AllocationRequest Writes(std::string wf, std::vector<std::string> paths,
                         std::string priority = "") {
  AllocationRequest r = Req(std::move(wf), "dev", std::move(priority));
  r.exclusive_access = std::move(paths);
  r.estimated_minutes = 30;
  return r;
}

AllocationRequest Reads(std::string wf, std::vector<std::string> paths) {
  AllocationRequest r = Req(std::move(wf), "dev");
  r.shared_access = std::move(paths);
  return r;
}

std::string Grant(Harness& h, const AllocationRequest& r) {
  auto a = h.engine->Allocate(r);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (!a.ok()) return "";
  EXPECT_EQ(a->allocation.status, AllocStatus::kActive)
      << a->allocation.reason_queued;
  return a->allocation.id;
}

AllocationInfo Ask(Harness& h, const AllocationRequest& r) {
  auto a = h.engine->Allocate(r);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? a->allocation : AllocationInfo{};
}

// Whether `second` must wait while `first` is held.
bool Waits(const AllocationRequest& first, const AllocationRequest& second) {
  Harness h(LockConfig());
  Grant(h, first);
  const AllocationInfo b = Ask(h, second);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
  return b.status == AllocStatus::kQueued;
}

TEST(LockRulesTest, FollowTheDirectoryTreeAndModes) {
  // Same file, exclusive twice: serialised.
  EXPECT_TRUE(Waits(Writes("a", {"src/app.ts"}), Writes("b", {"src/app.ts"})));
  // Directory vs file, both ways.
  EXPECT_TRUE(Waits(Writes("a", {"src/"}), Writes("b", {"src/a.cc"})));
  EXPECT_TRUE(Waits(Writes("a", {"src/a.cc"}), Writes("b", {"src"})));
  EXPECT_TRUE(Waits(Writes("a", {"src/a.cc"}), Reads("b", {"src"})));
  EXPECT_TRUE(Waits(Reads("a", {"src"}), Writes("b", {"src/a.cc"})));
  // Shared locks are compatible; unrelated paths never conflict.
  EXPECT_FALSE(Waits(Reads("a", {"src"}), Reads("b", {"src/a.cc"})));
  EXPECT_FALSE(Waits(Writes("a", {"src/a.cc"}), Writes("b", {"src/b.cc"})));
  EXPECT_FALSE(Waits(Writes("a", {"src/a"}), Writes("b", {"src/ab"})));
  // Globs against paths and globs.
  EXPECT_TRUE(Waits(Writes("a", {"src/**/*.ts"}), Writes("b", {"src/x/y.ts"})));
  EXPECT_TRUE(Waits(Writes("a", {"src/x/y.ts"}), Writes("b", {"src/**/*.ts"})));
  EXPECT_FALSE(Waits(Writes("a", {"src/**/*.ts"}), Writes("b", {"lib/y.ts"})));
  EXPECT_FALSE(Waits(Writes("a", {"src/*.ts"}), Writes("b", {"src/y.cc"})));
  // Paths are compared lexically: src/y.cc could be a directory holding
  // .ts files, so a ** glob below src conflicts with it.
  EXPECT_TRUE(Waits(Writes("a", {"src/**/*.ts"}), Writes("b", {"src/y.cc"})));
  EXPECT_TRUE(Waits(Writes("a", {"src/*.ts"}), Writes("b", {"src/**/a.ts"})));
  EXPECT_FALSE(Waits(Writes("a", {"src/*.ts"}), Writes("b", {"src/*.cc"})));
  // The workspace root covers everything; "." and absolute forms normalise.
  EXPECT_TRUE(Waits(Writes("a", {"."}), Reads("b", {"docs/x.md"})));
  EXPECT_TRUE(Waits(Writes("a", {"/work/repo/src/./a.cc"}),
                    Writes("b", {"src//a.cc"})));
}

TEST(LockTest, SecondWriterQueuesWithReasonThenStarts) {
  Harness h(LockConfig());
  const std::string a = Grant(h, Writes("wf1", {"src/app.ts"}));
  const AllocationInfo b = Ask(h, Writes("wf2", {"src/app.ts"}));
  ASSERT_EQ(b.status, AllocStatus::kQueued);
  EXPECT_EQ(b.reason_queued,
            "waiting for exclusive lock on src/app.ts held by " + a +
                ", expected release 2026-01-26T14:30:00Z");
  ASSERT_TRUE(b.expected_start.has_value());
  EXPECT_EQ(FormatTime(*b.expected_start), "2026-01-26T14:30:00Z");
  const Event* detected = h.Find(EventType::kConflictDetected, b.id);
  ASSERT_NE(detected, nullptr);
  EXPECT_NE(detected->reason.find("file_conflict, high"), std::string::npos)
      << detected->reason;
  // The conflict is registered, in the seed's alert shape.
  auto open = h.engine->Conflicts();
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].type, "file_conflict");
  EXPECT_EQ(open[0].severity, "high");
  EXPECT_EQ(open[0].holder, a);
  EXPECT_EQ(open[0].waiter, b.id);
  EXPECT_EQ(open[0].status, "open");
  EXPECT_FALSE(open[0].recommended_action.empty());

  h.clock.Advance(minutes(10));
  ASSERT_TRUE(h.engine->Release(a).ok());
  EXPECT_EQ(h.StatusOf(b.id), AllocStatus::kActive);
  auto after = h.engine->Conflicts();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].status, "resolved");
  EXPECT_NE(h.Find(EventType::kConflictResolved, b.id), nullptr);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(LockTest, LocksAreTakenAllOrNothing) {
  Harness h(LockConfig());
  Grant(h, Writes("wf1", {"b.txt"}));
  // Wants a.txt and b.txt; b.txt is held, so it takes neither, nor an agent.
  const AllocationInfo q = Ask(h, Writes("wf2", {"a.txt", "b.txt"}));
  ASSERT_EQ(q.status, AllocStatus::kQueued);
  const Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.resources[0].allocated, 1);  // only the holder's agent
  // A higher-priority writer of a.txt is ahead of its claim and starts.
  const std::string c = Grant(h, Writes("wf3", {"a.txt"}, "high"));
  auto v = h.engine->VerifyLock("a.txt", h.engine->Get(c)->fencing_token);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->valid);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(LockTest, QueuedWriterIsNotStarvedByLaterReaders) {
  Harness h(LockConfig());
  const std::string r1 = Grant(h, Reads("r1", {"src"}));
  const AllocationInfo w = Ask(h, Writes("w", {"src"}));
  ASSERT_EQ(w.status, AllocStatus::kQueued);
  // A later reader is compatible with r1 but waits behind the writer.
  const AllocationInfo r2 = Ask(h, Reads("r2", {"src/a.cc"}));
  ASSERT_EQ(r2.status, AllocStatus::kQueued);
  EXPECT_NE(r2.reason_queued.find("queued " + w.id + " is ahead in line"),
            std::string::npos)
      << r2.reason_queued;
  ASSERT_TRUE(h.engine->Release(r1).ok());
  EXPECT_EQ(h.StatusOf(w.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(r2.id), AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->Release(w.id).ok());
  EXPECT_EQ(h.StatusOf(r2.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(LockTest, CancellingTheClaimantAheadLetsTheNextGo) {
  Harness h(LockConfig());
  const std::string a = Grant(h, Writes("a", {"x"}));
  const AllocationInfo b = Ask(h, Writes("b", {"x"}));
  const AllocationInfo c = Ask(h, Writes("c", {"x"}));
  ASSERT_EQ(c.status, AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->Cancel(b.id).ok());
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  ASSERT_TRUE(h.engine->Release(a).ok());
  EXPECT_EQ(h.StatusOf(c.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

TEST(LockTest, ExpiredHolderLosesItsLockAndFencingTellsSo) {
  Harness h(LockConfig());
  AllocationRequest first = Writes("a", {"src/app.ts"});
  first.ttl = minutes(5);
  const std::string a = Grant(h, first);
  const uint64_t old_token = h.engine->Get(a)->fencing_token;
  const AllocationInfo b = Ask(h, Writes("b", {"src/app.ts"}));
  auto v = h.engine->VerifyLock("src/app.ts", old_token);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->valid);
  EXPECT_TRUE(v->exclusive);
  EXPECT_EQ(v->holder, a);
  // No heartbeat: lease ends at 14:05, grace 5 min, forced at 14:10.
  h.clock.Advance(minutes(11));
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(a), AllocStatus::kExpired);
  ASSERT_EQ(h.StatusOf(b.id), AllocStatus::kActive);
  const uint64_t new_token = h.engine->Get(b.id)->fencing_token;
  v = h.engine->VerifyLock("/work/repo/src/app.ts", old_token);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->valid);
  EXPECT_NE(v->message.find(a + ", expired"), std::string::npos) << v->message;
  EXPECT_NE(v->message.find("held now by " + b.id), std::string::npos)
      << v->message;
  v = h.engine->VerifyLock("src/app.ts", new_token);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->valid);
  // A directory lock covers the files below it.
  v = h.engine->VerifyLock("src/other.ts", new_token);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->valid);
  EXPECT_EQ(v->message.find("held now"), std::string::npos);
  EXPECT_FALSE(h.engine->VerifyLock("src/*.ts", new_token).ok());
  EXPECT_FALSE(h.engine->VerifyLock("../x", new_token).ok());
}

TEST(LockTest, PriorityBasedStrategyPreemptsALowerHolder) {
  Config c = LockConfig();
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  Harness h(c);
  const std::string low = Grant(h, Writes("low", {"src"}, "low"));
  const AllocationInfo crit = Ask(h, Writes("crit", {"src/a.cc"}, "critical"));
  ASSERT_EQ(crit.status, AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(low), AllocStatus::kPreempted);
  EXPECT_NE(h.Find(EventType::kPreemptionNotice, low), nullptr);
  h.clock.Advance(c.scheduling.preemption_grace);
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(crit.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(LockTest, QueueAndSerializeNeverPreempts) {
  Harness h(LockConfig());
  const std::string low = Grant(h, Writes("low", {"src"}, "low"));
  const AllocationInfo crit = Ask(h, Writes("crit", {"src/a.cc"}, "critical"));
  ASSERT_EQ(crit.status, AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(low), AllocStatus::kActive);
  auto open = h.engine->Conflicts();
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].severity, "critical");
  EXPECT_NE(open[0].recommended_action.find("priority_based"),
            std::string::npos);
}

TEST(LockTest, AdvisoryGrantsWithAWarning) {
  Config c = LockConfig();
  c.conflicts.file_locking.enforcement = LockEnforcement::kAdvisory;
  Harness h(c);
  const std::string a = Grant(h, Writes("a", {"home.nix"}));
  auto b = h.engine->Allocate(Writes("b", {"home.nix"}));
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->allocation.status, AllocStatus::kActive);
  ASSERT_EQ(b->allocation.warnings.size(), 1u);
  EXPECT_NE(b->allocation.warnings[0].find("File access conflict detected "
                                           "for home.nix"),
            std::string::npos);
  auto all = h.engine->Conflicts();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].status, "advisory");
  EXPECT_EQ(all[0].holder, a);
}

TEST(LockTest, PerProductPolicyAndReadOnlyException) {
  Config c = LockConfig();
  c.conflicts.per_product["docs"].enforcement = LockEnforcement::kAdvisory;
  c.conflicts.file_locking.exceptions = {"read_only_operations"};
  Harness h(c);
  Grant(h, Writes("a", {"src"}));
  // Read-only requests are exempt: no lock, no wait.
  const std::string reader = Grant(h, Reads("r", {"src/a.cc"}));
  EXPECT_TRUE(h.engine->Get(reader)->warnings.empty());
  // The docs product locks advisorily.
  AllocationRequest d = Writes("d", {"src/readme.md"});
  d.product = "docs";
  Grant(h, d);
  // Everyone else is strict.
  EXPECT_EQ(Ask(h, Writes("e", {"src/x"})).status, AllocStatus::kQueued);
}

TEST(LockTest, PreventConflictsSwitchesPolicyAndReleasesWaiters) {
  Harness h(LockConfig());
  Grant(h, Writes("a", {"x"}));
  const AllocationInfo b = Ask(h, Writes("b", {"x"}));
  ASSERT_EQ(b.status, AllocStatus::kQueued);
  LockPolicy advisory;
  advisory.enforcement = LockEnforcement::kAdvisory;
  ASSERT_TRUE(
      h.engine->SetLockPolicy("global", advisory, {"ops", "demo"}).ok());
  EXPECT_EQ(h.StatusOf(b.id), AllocStatus::kActive);
  LockPolicy bad;
  bad.exceptions = {"read_only"};
  EXPECT_EQ(h.engine->SetLockPolicy("global", bad, {}).code(),
            Code::kInvalidRequest);
  EXPECT_EQ(h.engine->SetLockPolicy("global", std::nullopt, {}).code(),
            Code::kInvalidRequest);
}

TEST(WorkflowExclusionTest, WaitsUntilTheAvoidedWorkflowIsIdle) {
  Harness h(LockConfig());
  const std::string w1 = Grant(h, Req("deploy", "dev"));
  const std::string w2 = Grant(h, Req("deploy", "dev"));
  AllocationRequest r = Req("migrate", "dev");
  r.conflict_avoidance = {"deploy"};
  const AllocationInfo m = Ask(h, r);
  ASSERT_EQ(m.status, AllocStatus::kQueued);
  EXPECT_EQ(m.reason_queued,
            "waiting for workflow deploy to finish (conflict_avoidance): it "
            "has 2 active allocations");
  ASSERT_TRUE(h.engine->Release(w1).ok());
  EXPECT_EQ(h.StatusOf(m.id), AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->Release(w2).ok());
  EXPECT_EQ(h.StatusOf(m.id), AllocStatus::kActive);
  // Not symmetric: deploy may start beside a running migrate.
  Grant(h, Req("deploy", "dev"));
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(ConflictInputTest, BadPathsAreRefusedAndChangeNothing) {
  Harness h(LockConfig());
  auto refused = [&](AllocationRequest r, const std::string& field) {
    const size_t events = h.events.size();
    auto a = h.engine->Allocate(r);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), Code::kInvalidRequest);
    EXPECT_NE(a.status().message().find(field), std::string::npos)
        << a.status().message();
    EXPECT_EQ(h.events.size(), events);
  };
  refused(Writes("a", {std::string("a\0b", 3)}), "exclusive_access[0]");
  refused(Writes("a", {std::string(5000, 'x')}), "exclusive_access[0]");
  refused(Writes("a", {"ok", "../../etc/passwd"}), "exclusive_access[1]");
  refused(Writes("a", {"/etc/passwd"}), "exclusive_access[0]");
  refused(Reads("a", {""}), "shared_access[0]");
  AllocationRequest many = Req("a", "dev");
  for (int i = 0; i < 1025; ++i) {
    many.shared_access.push_back("f" + std::to_string(i));
  }
  refused(many, "shared_access");
  AllocationRequest self = Req("a", "dev");
  self.conflict_avoidance = {"a"};
  refused(self, "conflict_avoidance[0]");
  const Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.active + s.queued, 0);
  // 1,024 paths are fine.
  many.shared_access.pop_back();
  EXPECT_TRUE(h.engine->Allocate(many).ok());
}

TEST(CheckConflictsTest, DryRunNamesHoldersAndChangesNothing) {
  Harness h(LockConfig());
  const std::string a = Grant(h, Writes("a", {"home.nix"}));
  AllocationRequest big = Req("big", "dev");
  big.resources = {{"agents", 9}};
  const std::string big_id = Grant(h, big);
  AllocationRequest p = Writes("p", {"home.nix", "flake.nix"});
  p.resources = {{"agents", 2}};
  p.conflict_avoidance = {"big"};
  const size_t events = h.events.size();
  auto rep = h.engine->CheckConflicts(p, std::chrono::hours(4));
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(h.events.size(), events);
  EXPECT_EQ(rep->outcome, "queue");
  std::set<std::string> types;
  for (const ConflictInfo& c : rep->conflicts) {
    types.insert(c.type);
    EXPECT_TRUE(c.id.empty());
    EXPECT_FALSE(c.severity.empty());
    EXPECT_FALSE(c.recommended_action.empty());
    if (c.type == "file_conflict") {
      EXPECT_EQ(c.subject, "home.nix");
      EXPECT_EQ(c.holder, a);
      ASSERT_TRUE(c.since && c.expected_release);
      EXPECT_EQ(FormatTime(*c.expected_release), "2026-01-26T14:30:00Z");
    }
  }
  EXPECT_EQ(types, (std::set<std::string>{"file_conflict", "workflow_conflict",
                                          "resource_conflict"}));
  const Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.active, 2);
  EXPECT_EQ(s.queued, 0);
  EXPECT_TRUE(h.engine->Conflicts().empty());
  // Nothing in the way: grant.
  ASSERT_TRUE(h.engine->Release(big_id).ok());
  rep = h.engine->CheckConflicts(Writes("q", {"other"}), minutes(0));
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->outcome, "grant");
  EXPECT_TRUE(rep->conflicts.empty());
  // More than exists: refuse.
  AllocationRequest huge = Req("h", "dev");
  huge.resources = {{"agents", 50}};
  rep = h.engine->CheckConflicts(huge, minutes(0));
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->outcome, "refuse");
}

TEST(ResolveConflictTest, Strategies) {
  Harness h(LockConfig());
  const std::string low = Grant(h, Writes("low", {"x"}, "low"));
  const AllocationInfo high = Ask(h, Writes("high", {"x"}, "high"));
  const std::string id = h.engine->Conflicts().at(0).id;
  EXPECT_EQ(id, "conf_1");
  // queue_and_serialize: recorded, still waiting.
  auto r = h.engine->ResolveConflict(id, ResolveStrategy::kQueueAndSerialize,
                                     {"ops", ""});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "open");
  EXPECT_EQ(h.StatusOf(high.id), AllocStatus::kQueued);
  // force_release needs an operator.
  EXPECT_EQ(h.engine->ResolveConflict(id, ResolveStrategy::kForceRelease, {})
                .status()
                .code(),
            Code::kPermissionDenied);
  // priority_based preempts the low holder with grace.
  r = h.engine->ResolveConflict(id, ResolveStrategy::kPriorityBased,
                                {"ops", "release train"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(h.StatusOf(low), AllocStatus::kPreempted);
  h.clock.Advance(std::chrono::seconds(30));
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(high.id), AllocStatus::kActive);
  EXPECT_EQ(h.engine->ResolveConflict(id, ResolveStrategy::kPriorityBased, {})
                .status()
                .code(),
            Code::kConflict);
  EXPECT_EQ(
      h.engine->ResolveConflict("conf_99", ResolveStrategy::kPriorityBased, {})
          .status()
          .code(),
      Code::kNotFound);
}

TEST(ResolveConflictTest, ForceReleaseAndRefusals) {
  Harness h(LockConfig());
  const std::string holder = Grant(h, Writes("a", {"x"}, "high"));
  const AllocationInfo w = Ask(h, Writes("b", {"x"}, "low"));
  const std::string id = h.engine->Conflicts().at(0).id;
  // A low waiter cannot preempt a high holder.
  EXPECT_EQ(h.engine->ResolveConflict(id, ResolveStrategy::kPriorityBased, {})
                .status()
                .code(),
            Code::kConflict);
  auto r = h.engine->ResolveConflict(id, ResolveStrategy::kForceRelease,
                                     {"alice", "stuck agent"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "resolved");
  EXPECT_EQ(h.StatusOf(holder), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(w.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(BatchLockTest, AllOrNothingRefusesConflictingMembers) {
  Harness h(LockConfig());
  std::vector<AllocationRequest> batch = {Writes("a", {"src"}),
                                          Writes("b", {"src/a.cc"})};
  auto r = h.engine->AllocateBatch(batch, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_NE(r.status().message().find("another request of the batch"),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(h.engine->GetSnapshot().active, 0);
  batch[1] = Writes("b", {"lib"});
  r = h.engine->AllocateBatch(batch, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(h.engine->GetSnapshot().active, 2);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// Found by review: two advisory holders re-queued by priority_based
// preemption took the lock back in turn forever (with zero grace the
// operation never returned).
TEST(LockReviewTest, PriorityBasedSkipsAdvisoryHoldersAndTerminates) {
  Config c = LockConfig();
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  c.conflicts.per_product["adv"].enforcement = LockEnforcement::kAdvisory;
  Harness h(c);
  for (const char* wf : {"a", "b"}) {
    AllocationRequest r = Writes(wf, {"src"}, "low");
    r.product = "adv";
    r.requeue_on_preempt = true;
    ASSERT_EQ(Ask(h, r).status, AllocStatus::kActive);
  }
  AllocationRequest w = Writes("w", {"src/a.cc"}, "high");
  w.product = "strict";
  EXPECT_EQ(Ask(h, w).status, AllocStatus::kQueued);
  for (int i = 0; i < 5; ++i) {
    h.clock.Advance(std::chrono::seconds(31));
    h.engine->Tick();
  }
  int notices = 0;
  for (const Event& e : h.events) {
    notices += e.type == EventType::kPreemptionNotice;
  }
  EXPECT_EQ(notices, 0);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// Found by review: an old token of a re-granted allocation that later left
// the history made VerifyLock throw.
TEST(LockReviewTest, VerifyLockWithStaleTokenOfRequeuedAllocation) {
  Config c = LockConfig();
  c.resources[0].capacity = 1;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  c.scheduling.history_limit = 1;
  Harness h(c);
  AllocationRequest low = Writes("a", {"src/a.cc"}, "low");
  low.requeue_on_preempt = true;
  const AllocationInfo v = Ask(h, low);
  const uint64_t first_token = v.fencing_token;
  const AllocationInfo p = Ask(h, Req("b", "dev", "high"));
  ASSERT_TRUE(h.engine->Release(p.id).ok());  // the victim is re-granted
  ASSERT_TRUE(h.engine->Release(v.id).ok());
  const AllocationInfo x = Ask(h, Req("c", "dev"));
  ASSERT_TRUE(h.engine->Release(x.id).ok());  // the victim left the history
  auto verdict = h.engine->VerifyLock("src/a.cc", first_token);
  ASSERT_TRUE(verdict.ok());
  EXPECT_FALSE(verdict->valid);
}

// Found by review: lock preemption ran while grants were paused.
TEST(LockReviewTest, NoLockPreemptionWhilePaused) {
  Config c = LockConfig();
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  c.scheduling.preemption_grace = Duration(0);
  Harness h(c);
  const std::string low = Grant(h, Writes("a", {"src/a.cc"}, "low"));
  ASSERT_TRUE(h.engine->Pause({"op", "maintenance"}).ok());
  ASSERT_TRUE(h.engine->Allocate(Writes("w", {"src/a.cc"}, "high")).ok());
  EXPECT_EQ(h.Find(EventType::kPreemptionNotice, low), nullptr);
  EXPECT_EQ(h.StatusOf(low), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

// The preemption notice names the victim's own lock.
TEST(LockReviewTest, PreemptionNoticeNamesTheHoldersLock) {
  Config c = LockConfig();
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  Harness h(c);
  const std::string low = Grant(h, Writes("a", {"src"}, "low"));
  Ask(h, Writes("w", {"src/a.cc"}, "high"));
  const Event* e = h.Find(EventType::kPreemptionNotice, low);
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->reason.find("to free its exclusive lock on src (alloc_2 wants "
                           "src/a.cc)"),
            std::string::npos)
      << e->reason;
}

// Cancelled waiters leave nothing behind in what they waited for.
TEST(LockReviewTest, CancelledWaitersAreForgotten) {
  Harness h(LockConfig());
  const std::string a = Grant(h, Writes("a", {"x"}));
  for (int i = 0; i < 50; ++i) {
    const AllocationInfo w = Ask(h, Writes("w" + std::to_string(i), {"x"}));
    ASSERT_TRUE(h.engine->Cancel(w.id).ok());
  }
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  ASSERT_TRUE(h.engine->Release(a).ok());
  EXPECT_EQ(h.engine->GetSnapshot().queued, 0);
}

// Once grants resume, a waiter gated during the pause preempts the
// lower-level holder as priority_based says.
TEST(LockReviewTest, LockPreemptionHappensOnceGrantsResume) {
  Config c = LockConfig();
  c.conflicts.strategy = ConflictStrategy::kPriorityBased;
  c.levels[static_cast<int>(Level::kHigh)].preempt_lower = true;
  Harness h(c);
  const std::string low = Grant(h, Writes("a", {"src/a.cc"}, "low"));
  ASSERT_TRUE(h.engine->Pause({"op", "maintenance"}).ok());
  const AllocationInfo w = Ask(h, Writes("w", {"src/a.cc"}, "high"));
  EXPECT_EQ(h.Find(EventType::kPreemptionNotice, low), nullptr);
  ASSERT_TRUE(h.engine->Resume({"op", ""}).ok());
  EXPECT_NE(h.Find(EventType::kPreemptionNotice, low), nullptr);
  EXPECT_EQ(h.StatusOf(low), AllocStatus::kPreempted);
  h.clock.Advance(std::chrono::seconds(31));
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(w.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

// Writers queued on one file form a chain: each waits for the one just
// ahead, so a release wakes one waiter and re-registers no conflicts; they
// start one by one in order.
TEST(LockReviewTest, WaitersOnOneFileFormAChain) {
  Config c = LockConfig();
  c.resources[0].capacity = 1000;
  Harness h(c);
  std::string holder = Grant(h, Writes("h", {"src/app.ts"}));
  std::vector<std::string> waiters;
  for (int i = 0; i < 200; ++i) {
    const AllocationInfo w =
        Ask(h, Writes("w" + std::to_string(i), {"src/app.ts"}));
    ASSERT_EQ(w.status, AllocStatus::kQueued);
    waiters.push_back(w.id);
  }
  // Each names the one ahead of it.
  const std::string reason = h.engine->Get(waiters[5])->reason_queued;
  EXPECT_NE(reason.find("queued " + waiters[4] + " is ahead in line"),
            std::string::npos)
      << reason;
  for (size_t i = 0; i < waiters.size(); ++i) {
    const size_t before = h.events.size();
    ASSERT_TRUE(h.engine->Release(holder).ok());
    ASSERT_EQ(h.StatusOf(waiters[i]), AllocStatus::kActive) << i;
    // The release, the grant and the one conflict it closes: the waiters
    // behind keep their gates and conflicts (no event per waiter).
    size_t detected = 0, resolved = 0;
    for (size_t e = before; e < h.events.size(); ++e) {
      detected += h.events[e].type == EventType::kConflictDetected;
      resolved += h.events[e].type == EventType::kConflictResolved;
    }
    EXPECT_EQ(resolved, 1u) << i;
    EXPECT_EQ(detected, 0u) << i;
    if (i + 1 < waiters.size()) {
      EXPECT_EQ(h.StatusOf(waiters[i + 1]), AllocStatus::kQueued);
    }
    holder = waiters[i];
  }
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

// priority_based on a workflow conflict: the avoided workflow's holders are
// preempted, and those that re-queue do not start again before the waiter
// (which would keep the workflow busy and the waiter waiting).
TEST(LockReviewTest, WorkflowPreemptionIsNotUndoneByRequeuedVictims) {
  Harness h(LockConfig());
  std::vector<std::string> victims;
  for (int i = 0; i < 2; ++i) {
    AllocationRequest r = Req("busy", "dev", "low");
    r.requeue_on_preempt = true;
    victims.push_back(Grant(h, r));
  }
  AllocationRequest w = Req("release", "dev", "high");
  w.conflict_avoidance = {"busy"};
  const AllocationInfo waiter = Ask(h, w);
  ASSERT_EQ(waiter.status, AllocStatus::kQueued);
  const std::string id = h.engine->Conflicts().at(0).id;
  ASSERT_TRUE(
      h.engine
          ->ResolveConflict(id, ResolveStrategy::kPriorityBased, {"ops", ""})
          .ok());
  for (int step = 0; step < 4; ++step) {
    h.clock.Advance(std::chrono::seconds(20));
    h.engine->Tick();
  }
  EXPECT_EQ(h.StatusOf(waiter.id), AllocStatus::kActive)
      << h.engine->Get(waiter.id)->reason_queued;
  // (The victims may run again beside it: exclusion binds the waiter only.)
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

}  // namespace
}  // namespace qm
