// Future reservations: booking, admission beside them (backfill), claiming,
// grace, recurrence, cancelling, and bad input (docs/conflicts.md).
#include <gtest/gtest.h>

#include <string>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using testing_util::Harness;
using testing_util::Req;
using testing_util::TestStart;  // 14:00

Config ResConfig(double agents = 4) {
  Config c = Config::Defaults();
  c.resources[0].capacity = agents;
  c.allocation_limits.max_agents_per_workflow.reset();
  c.reservations.grace_period = minutes(15);
  return c;
}

ReservationRequest Booking(Time start, Duration duration, double agents,
                           std::string workflow = "release") {
  ReservationRequest r;
  r.workflow_id = std::move(workflow);
  r.start_time = start;
  r.duration = duration;
  r.resources = {{"agents", agents}};
  r.priority = "high";
  return r;
}

AllocationRequest Task(std::string wf, double minutes_est,
                       std::string priority = "low") {
  AllocationRequest r = Req(std::move(wf), "dev", std::move(priority));
  r.estimated_minutes = minutes_est;
  r.ttl = hours(12);  // the tests release explicitly
  return r;
}

TEST(ReservationTest, HoldsBackLongWorkAndBackfillsShortWork) {
  Harness h(ResConfig());
  h.clock.Set(TestStart() + minutes(30));  // 14:30
  auto res = h.engine->Reserve(Booking(TestStart() + hours(1), hours(2), 4));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->id, "res_1");
  EXPECT_EQ(res->status, "scheduled");
  // 60 minutes from 14:30 runs into the 15:00 window: it waits.
  auto long_task = h.engine->Allocate(Task("etl", 60));
  ASSERT_TRUE(long_task.ok());
  EXPECT_EQ(long_task->allocation.status, AllocStatus::kQueued);
  EXPECT_NE(long_task->allocation.reason_queued.find(
                "agents: 4 reserved by res_1 from 2026-01-26T15:00:00Z"),
            std::string::npos)
      << long_task->allocation.reason_queued;
  ASSERT_TRUE(long_task->allocation.expected_start);
  EXPECT_EQ(FormatTime(*long_task->allocation.expected_start),
            "2026-01-26T17:00:00Z");
  // 20 minutes finishes by 14:50: admitted (backfill).
  auto short_task = h.engine->Allocate(Task("lint", 20));
  ASSERT_TRUE(short_task.ok());
  EXPECT_EQ(short_task->allocation.status, AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();

  // 15:00: the window opens; the short task ended at 14:50.
  h.clock.Set(TestStart() + minutes(50));
  ASSERT_TRUE(h.engine->Release(short_task->allocation.id).ok());
  h.clock.Set(TestStart() + hours(1));
  h.engine->Tick();
  EXPECT_EQ(h.engine->GetReservation("res_1")->status, "open");
  Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.resources[0].reserved, 4);
  EXPECT_EQ(s.resources[0].available, 0);
  // Its workflow draws from it; others cannot take it.
  AllocationRequest claim = Task("release", 90, "high");
  claim.resources = {{"agents", 3}};
  claim.reservation_id = "res_1";
  auto claimed = h.engine->Allocate(claim);
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  EXPECT_EQ(claimed->allocation.status, AllocStatus::kActive);
  EXPECT_EQ(claimed->allocation.reservation_id, "res_1");
  EXPECT_EQ(h.engine->GetReservation("res_1")->claimed.at(0).second, 3);
  auto other = h.engine->Allocate(Task("other", 5, "critical"));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->allocation.status, AllocStatus::kQueued);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
  // 15:15: grace over: the unclaimed agent returns to the pool, and
  // nothing is booked any more beyond what the claimant holds.
  h.clock.Set(TestStart() + hours(1) + minutes(15));
  h.engine->Tick();
  EXPECT_EQ(h.StatusOf(other->allocation.id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(long_task->allocation.id), AllocStatus::kQueued) << [&] {
    std::string s;
    for (const Event& e : h.events) {
      s += FormatTime(e.time) + " " + EventTypeName(e.type) + " " +
           e.allocation_id + " " + e.reason + "\n";
    }
    return s;
  }();
  ASSERT_TRUE(h.engine->Release(other->allocation.id).ok());
  EXPECT_EQ(h.StatusOf(long_task->allocation.id), AllocStatus::kActive);
  // 17:00: the window closes.
  h.clock.Set(TestStart() + hours(3));
  h.engine->Tick();
  EXPECT_EQ(h.engine->GetReservation("res_1")->status, "ended");
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

TEST(ReservationTest, AcceptedOnlyBesideOtherReservations) {
  Harness h(ResConfig(8));
  ASSERT_TRUE(
      h.engine->Reserve(Booking(TestStart() + hours(1), hours(2), 5)).ok());
  auto clash =
      h.engine->Reserve(Booking(TestStart() + hours(2), hours(2), 4, "other"));
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), Code::kResourceExhausted);
  EXPECT_NE(clash.status().message().find("agents: 5 of 8 already reserved"),
            std::string::npos)
      << clash.status().message();
  EXPECT_NE(clash.status().message().find("res_1"), std::string::npos);
  // Back to back is fine (windows are half-open), and so is 3 beside 5.
  EXPECT_TRUE(
      h.engine->Reserve(Booking(TestStart() + hours(3), hours(1), 8, "b"))
          .ok());
  EXPECT_TRUE(
      h.engine->Reserve(Booking(TestStart() + hours(1), hours(1), 3, "c"))
          .ok());
  EXPECT_EQ(h.engine->Reservations().size(), 3u);
  // Running work is not preempted: the reservation says it may open short.
  Harness busy(ResConfig(4));
  AllocationRequest now = Task("now", 600);
  now.resources = {{"agents", 3}};
  ASSERT_EQ(busy.engine->Allocate(now)->allocation.status,
            AllocStatus::kActive);
  auto warned =
      busy.engine->Reserve(Booking(TestStart() + hours(1), hours(1), 2));
  ASSERT_TRUE(warned.ok());
  ASSERT_EQ(warned->warnings.size(), 1u);
  EXPECT_NE(warned->warnings[0].find("may open short"), std::string::npos);
}

TEST(ReservationTest, BadInputIsRefusedAndChangesNothing) {
  Harness h(ResConfig());
  auto refused = [&](ReservationRequest r, const std::string& text) {
    const size_t events = h.events.size();
    auto got = h.engine->Reserve(r);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), Code::kInvalidRequest);
    EXPECT_NE(got.status().message().find(text), std::string::npos)
        << got.status().message();
    EXPECT_EQ(h.events.size(), events);
    EXPECT_TRUE(h.engine->Reservations().empty());
  };
  refused(Booking(TestStart() - minutes(1), hours(1), 1), "in the past");
  refused(Booking(TestStart() + hours(1), Duration(0), 1),
          "duration must be positive");
  refused(Booking(TestStart() + hours(1), -hours(1), 1),
          "duration must be positive");
  refused(Booking(TestStart() + hours(24 * 31), hours(1), 1),
          "reservations.horizon");
  ReservationRequest r = Booking(TestStart() + hours(1), hours(1), 1);
  r.recurrence = "hourly";
  refused(r, "recurrence");
  r = Booking(TestStart() + hours(1), hours(25), 1);
  r.recurrence = "daily";
  refused(r, "windows would overlap");
  r = Booking(TestStart() + hours(1), hours(1), 1, "");
  refused(r, "workflow_id or product");
  r = Booking(TestStart() + hours(1), hours(1), -1);
  refused(r, "resources.agents");
  r = Booking(TestStart() + hours(1), hours(1), 1);
  r.reservation_id = "bad id!";
  refused(r, "reservation_id");
  // Larger than the pool can ever hold.
  auto big = h.engine->Reserve(Booking(TestStart() + hours(1), hours(1), 9));
  EXPECT_EQ(big.status().code(), Code::kResourceExhausted);
}

TEST(ReservationTest, ClaimsAreChecked) {
  Harness h(ResConfig());
  ReservationRequest b = Booking(TestStart() + hours(1), hours(1), 2);
  b.reservation_id = "nightly";
  ASSERT_TRUE(h.engine->Reserve(b).ok());
  AllocationRequest early = Task("release", 10);
  early.reservation_id = "nightly";
  auto r = h.engine->Allocate(early);
  EXPECT_EQ(r.status().code(), Code::kConflict);
  EXPECT_NE(r.status().message().find("opens at 2026-01-26T15:00:00Z"),
            std::string::npos);
  h.clock.Set(TestStart() + hours(1));
  AllocationRequest stranger = Task("intruder", 10);
  stranger.reservation_id = "nightly";
  EXPECT_EQ(h.engine->Allocate(stranger).status().code(),
            Code::kPermissionDenied);
  stranger.reservation_id = "nope";
  EXPECT_EQ(h.engine->Allocate(stranger).status().code(), Code::kNotFound);
  EXPECT_TRUE(h.engine->Allocate(early).ok());
}

TEST(ReservationTest, RecursDailyAndCancels) {
  Harness h(ResConfig());
  ReservationRequest b = Booking(TestStart() + hours(1), hours(1), 2);
  b.recurrence = "daily";
  auto res = h.engine->Reserve(b);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  // The next day, 15:00-16:00 is booked too: a long task cannot run into it.
  h.clock.Set(TestStart() + hours(20));  // 10:00 next day
  h.engine->Tick();
  auto info = h.engine->GetReservation(res->id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->status, "scheduled");
  EXPECT_EQ(FormatTime(*info->window_start), "2026-01-27T15:00:00Z");
  AllocationRequest big = Task("big", 360);
  big.resources = {{"agents", 3}};
  EXPECT_EQ(h.engine->Allocate(big)->allocation.status, AllocStatus::kQueued);
  auto cancelled = h.engine->CancelReservation(res->id, {"ops", "no release"});
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->status, "cancelled");
  EXPECT_TRUE(h.engine->Reservations().empty());
  EXPECT_NE(h.Find(EventType::kReservationCancelled, res->id), nullptr);
  EXPECT_EQ(h.engine->GetSnapshot().active, 1);  // the big task started
  EXPECT_EQ(h.engine->CancelReservation(res->id, {}).status().code(),
            Code::kConflict);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

TEST(ReservationTest, WindowOpeningShortTakesCapacityAsItFrees) {
  Harness h(ResConfig());
  AllocationRequest running = Task("running", 600);
  running.resources = {{"agents", 3}};
  auto holder = h.engine->Allocate(running);
  ASSERT_EQ(holder->allocation.status, AllocStatus::kActive);
  ASSERT_TRUE(
      h.engine->Reserve(Booking(TestStart() + hours(1), hours(2), 3)).ok());
  h.clock.Set(TestStart() + hours(1));
  h.engine->Tick();
  // It holds the one free agent; the other two are booked as they free.
  EXPECT_EQ(h.engine->GetSnapshot().resources[0].reserved, 1);
  ASSERT_TRUE(h.engine->Release(holder->allocation.id).ok());
  EXPECT_EQ(h.engine->GetSnapshot().resources[0].reserved, 3);
  // One agent is free beside the 3 it holds; two are not.
  AllocationRequest two = Task("other", 5, "critical");
  two.resources = {{"agents", 2}};
  EXPECT_EQ(h.engine->Allocate(two)->allocation.status, AllocStatus::kQueued);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

// reservations.preempt_running: a window that opens short preempts
// lower-level preemptible work (least important first, only as much as it
// needs, with grace) and takes the capacity as it is released; higher-level
// and non-preemptible work keeps running.
TEST(ReservationTest, PreemptRunningMakesRoomAtTheStart) {
  Config c = ResConfig(4);
  c.reservations.preempt_running = true;
  c.scheduling.preemption_grace = std::chrono::seconds(30);
  Harness h(c);
  AllocationRequest low = Task("low", 600, "low");
  low.resources = {{"agents", 2}};
  AllocationRequest lower = Task("lower", 600, "20");  // low, below 40
  lower.resources = {{"agents", 1}};
  AllocationRequest pinned = Task("pinned", 600, "low");
  pinned.preemptible = false;
  const std::string a = h.engine->Allocate(low)->allocation.id;
  const std::string b = h.engine->Allocate(lower)->allocation.id;
  const std::string p = h.engine->Allocate(pinned)->allocation.id;
  auto res = h.engine->Reserve(Booking(TestStart() + hours(1), hours(2), 2));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  ASSERT_EQ(res->warnings.size(), 1u);
  EXPECT_NE(res->warnings[0].find("will preempt"), std::string::npos);
  h.clock.Set(TestStart() + hours(1));
  h.engine->Tick();
  // Short by 2: the lowest priority (1 agent) first, then the other low.
  EXPECT_EQ(h.StatusOf(b), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(a), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(p), AllocStatus::kActive);
  const Event* notice = h.Find(EventType::kPreemptionNotice, b);
  ASSERT_NE(notice, nullptr);
  EXPECT_NE(notice->reason.find("reservation res_1"), std::string::npos)
      << notice->reason;
  h.clock.Advance(std::chrono::seconds(31));
  h.engine->Tick();
  EXPECT_EQ(h.engine->GetSnapshot().resources[0].reserved, 2);
  EXPECT_TRUE(h.engine->CheckInvariants().ok())
      << h.engine->CheckInvariants().ToString();
}

}  // namespace
}  // namespace qm
