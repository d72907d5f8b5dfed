// The journal op codec: every op kind round trips with every field, the
// format's bytes stay put, damaged input of any kind is DATA_LOSS (never a
// crash), and replaying decoded ops drives an engine exactly as the direct
// calls do.
#include "store/op_codec.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "qm/clock.h"
#include "qm/config_loader.h"
#include "qm/engine.h"

namespace qm::store {
namespace {

using namespace std::chrono_literals;

Time At(int64_t ms) { return Time(Duration(ms)); }

// Doubles compare by their bits: the codec promises them bit-exact (NaN
// payloads and -0 included).
uint64_t Bits(double d) {
  uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}
#define EXPECT_SAME_DOUBLE(a, b) EXPECT_EQ(Bits(a), Bits(b))
#define EXPECT_SAME_OPT_DOUBLE(a, b)             \
  do {                                           \
    ASSERT_EQ((a).has_value(), (b).has_value()); \
    if ((a).has_value()) {                       \
      EXPECT_SAME_DOUBLE(*(a), *(b));            \
    }                                            \
  } while (0)

void ExpectSame(const ResourceAmounts& a, const ResourceAmounts& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first) << i;
    EXPECT_SAME_DOUBLE(a[i].second, b[i].second) << i;
  }
}

// Field by field, so that a field the codec dropped on both sides (encoder
// and decoder) still shows here as a value that did not survive.
void ExpectSame(const AllocationRequest& a, const AllocationRequest& b) {
  EXPECT_EQ(a.workflow_id, b.workflow_id);
  EXPECT_EQ(a.requester, b.requester);
  EXPECT_EQ(a.product, b.product);
  EXPECT_EQ(a.agent_type, b.agent_type);
  EXPECT_EQ(a.priority, b.priority);
  ExpectSame(a.resources, b.resources);
  EXPECT_EQ(a.estimated_tokens, b.estimated_tokens);
  EXPECT_SAME_OPT_DOUBLE(a.estimated_minutes, b.estimated_minutes);
  EXPECT_EQ(a.blocks, b.blocks);
  EXPECT_EQ(a.total_tasks, b.total_tasks);
  EXPECT_EQ(a.ttl, b.ttl);
  EXPECT_EQ(a.max_duration, b.max_duration);
  EXPECT_EQ(a.preemptible, b.preemptible);
  EXPECT_EQ(a.requeue_on_preempt, b.requeue_on_preempt);
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.wait_for_budget, b.wait_for_budget);
  EXPECT_EQ(a.exclusive_access, b.exclusive_access);
  EXPECT_EQ(a.shared_access, b.shared_access);
  EXPECT_EQ(a.conflict_avoidance, b.conflict_avoidance);
  EXPECT_EQ(a.reservation_id, b.reservation_id);
}

void ExpectSame(const UsageReport& a, const UsageReport& b) {
  EXPECT_EQ(a.report_id, b.report_id);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.input_tokens, b.input_tokens);
  EXPECT_EQ(a.output_tokens, b.output_tokens);
  EXPECT_EQ(a.cached_input_tokens, b.cached_input_tokens);
  EXPECT_SAME_OPT_DOUBLE(a.cost_usd, b.cost_usd);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.outcome, b.outcome);
}

void ExpectSame(const ReservationRequest& a, const ReservationRequest& b) {
  EXPECT_EQ(a.reservation_id, b.reservation_id);
  EXPECT_EQ(a.workflow_id, b.workflow_id);
  EXPECT_EQ(a.product, b.product);
  EXPECT_EQ(a.agent_type, b.agent_type);
  EXPECT_EQ(a.requester, b.requester);
  EXPECT_EQ(a.priority, b.priority);
  ExpectSame(a.resources, b.resources);
  EXPECT_EQ(a.start_time, b.start_time);
  EXPECT_EQ(a.duration, b.duration);
  EXPECT_EQ(a.recurrence, b.recurrence);
  EXPECT_EQ(a.until, b.until);
  EXPECT_EQ(a.metadata, b.metadata);
}

void ExpectSame(const Actor& a, const Actor& b) {
  EXPECT_EQ(a.who, b.who);
  EXPECT_EQ(a.why, b.why);
}

void ExpectSameOp(const AllocateOp& a, const AllocateOp& b) {
  ExpectSame(a.request, b.request);
}
void ExpectSameOp(const AllocateBatchOp& a, const AllocateBatchOp& b) {
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (size_t i = 0; i < a.requests.size(); ++i) {
    SCOPED_TRACE("requests[" + std::to_string(i) + "]");
    ExpectSame(a.requests[i], b.requests[i]);
  }
  EXPECT_EQ(a.all_or_nothing, b.all_or_nothing);
}
void ExpectSameOp(const ReleaseOp& a, const ReleaseOp& b) {
  EXPECT_EQ(a.id, b.id);
  ExpectSame(a.usage, b.usage);
}
void ExpectSameOp(const RenewOp& a, const RenewOp& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.ttl, b.ttl);
}
void ExpectSameOp(const ReallocateOp& a, const ReallocateOp& b) {
  EXPECT_EQ(a.id, b.id);
  ExpectSame(a.resources, b.resources);
}
void ExpectSameOp(const CancelOp& a, const CancelOp& b) {
  EXPECT_EQ(a.id, b.id);
}
void ExpectSameOp(const ReportUsageOp& a, const ReportUsageOp& b) {
  EXPECT_EQ(a.id, b.id);
  ExpectSame(a.usage, b.usage);
}
void ExpectSameOp(const ExtendTokensOp& a, const ExtendTokensOp& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.max_tokens, b.max_tokens);
}
void ExpectSameOp(const PauseOp& a, const PauseOp& b) {
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const ResumeOp& a, const ResumeOp& b) {
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const PriorityOverrideOp& a, const PriorityOverrideOp& b) {
  EXPECT_EQ(a.product, b.product);
  EXPECT_EQ(a.level, b.level);
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const OverrideBreakerOp& a, const OverrideBreakerOp& b) {
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const RaiseLimitsOp& a, const RaiseLimitsOp& b) {
  EXPECT_EQ(a.max_tokens, b.max_tokens);
  EXPECT_SAME_OPT_DOUBLE(a.max_cost_usd, b.max_cost_usd);
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const ResolveConflictOp& a, const ResolveConflictOp& b) {
  EXPECT_EQ(a.conflict_id, b.conflict_id);
  EXPECT_EQ(a.strategy, b.strategy);
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const SetLockPolicyOp& a, const SetLockPolicyOp& b) {
  EXPECT_EQ(a.scope, b.scope);
  EXPECT_EQ(a.policy, b.policy);  // LockPolicy has operator==
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const ReserveOp& a, const ReserveOp& b) {
  ExpectSame(a.request, b.request);
}
void ExpectSameOp(const CancelReservationOp& a, const CancelReservationOp& b) {
  EXPECT_EQ(a.id, b.id);
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const ReconfigureOp& a, const ReconfigureOp& b) {
  EXPECT_EQ(a.config_yaml, b.config_yaml);
  ExpectSame(a.actor, b.actor);
}
void ExpectSameOp(const ReclaimOp& a, const ReclaimOp& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.reason, b.reason);
}
void ExpectSameOp(const ObserveSystemOp& a, const ObserveSystemOp& b) {
  EXPECT_EQ(a.reading, b.reading);
}
void ExpectSameOp(const TickOp&, const TickOp&) {}

void ExpectSame(const JournalOp& a, const JournalOp& b) {
  EXPECT_EQ(a.at, b.at);
  ASSERT_EQ(a.op.index(), b.op.index());
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        ExpectSameOp(x, std::get<T>(b.op));
      },
      a.op);
}

// Every field set, none to its default, with values that exercise the
// encoding: multi-byte varints, negatives, odd doubles, long and binary
// strings.
AllocationRequest FullRequest(int n = 0) {
  AllocationRequest r;
  r.workflow_id = "wf-" + std::to_string(n);
  r.requester = "orchestrator";
  r.product = "web";
  r.agent_type = "backend-engineer";
  r.priority = "high";
  r.resources = {{"agents", 2},
                 {"cpu_cores", 1.5},
                 {"memory_gb", -0.0},
                 {"tool.web", std::numeric_limits<double>::quiet_NaN()},
                 {"agents", 1e300}};
  r.estimated_tokens = 80000 + n;
  r.estimated_minutes = 12.25;
  r.blocks = 3;
  r.total_tasks = -7;  // invalid, but recorded as sent
  r.ttl = 90s;
  r.max_duration = 2h;
  r.preemptible = false;
  r.requeue_on_preempt = true;
  r.metadata = R"({"task":"build","n":1})";
  r.idempotency_key = "key-" + std::to_string(n);
  r.model = "sonnet";
  r.wait_for_budget = true;
  r.exclusive_access = {"src/a.cc", "src/b/**"};
  r.shared_access = {"docs/"};
  r.conflict_avoidance = {"wf-x", "wf-y", "wf-z"};
  r.reservation_id = "res_4";
  return r;
}

UsageReport FullUsage() {
  UsageReport u;
  u.report_id = "rep-1";
  u.tokens = 123456;
  u.input_tokens = 100000;
  u.output_tokens = 20000;
  u.cached_input_tokens = 3456;
  u.cost_usd = 0.1 + 0.2;
  u.model = "haiku";
  u.outcome = Outcome::kCancelled;
  return u;
}

ReservationRequest FullReservation() {
  ReservationRequest r;
  r.reservation_id = "nightly";
  r.workflow_id = "wf-nightly";
  r.product = "web";
  r.agent_type = "tester";
  r.requester = "ops";
  r.priority = "75";
  r.resources = {{"agents", 3}, {"cpu_cores", 2.5}};
  r.start_time = At(1'770'000'000'000);
  r.duration = 45min;
  r.recurrence = "weekly";
  r.until = At(1'780'000'000'000);
  r.metadata = "{}";
  return r;
}

Actor FullActor() { return Actor{"alice", "incident 42"}; }

// One op of every kind: with every field set (`full`), or all defaults.
std::vector<JournalOp> AllOps(bool full) {
  const Time at = full ? At(1'769'000'000'123) : Time{};
  std::vector<JournalOp> ops;
  auto add = [&](auto op) { ops.push_back(JournalOp{at, std::move(op)}); };
  if (!full) {
    add(AllocateOp{});
    add(AllocateBatchOp{});
    add(ReleaseOp{});
    add(RenewOp{});
    add(ReallocateOp{});
    add(CancelOp{});
    add(ReportUsageOp{});
    add(ExtendTokensOp{});
    add(PauseOp{});
    add(ResumeOp{});
    add(PriorityOverrideOp{});
    add(OverrideBreakerOp{});
    add(RaiseLimitsOp{});
    add(ResolveConflictOp{});
    add(SetLockPolicyOp{});
    add(ReserveOp{});
    add(CancelReservationOp{});
    add(ReconfigureOp{});
    add(ReclaimOp{});
    add(ObserveSystemOp{});
    add(TickOp{});
    return ops;
  }
  add(AllocateOp{FullRequest()});
  add(AllocateBatchOp{{FullRequest(1), AllocationRequest{}, FullRequest(2)},
                      true});
  add(ReleaseOp{"alloc_17", FullUsage()});
  add(RenewOp{"alloc_17", 45s});
  add(ReallocateOp{"alloc_17", {{"cpu_cores", 4}, {"memory_gb", 0.001}}});
  add(CancelOp{"alloc_18"});
  add(ReportUsageOp{"alloc_17", FullUsage()});
  add(ExtendTokensOp{"alloc_17", 150000});
  add(PauseOp{FullActor()});
  add(ResumeOp{Actor{"bob", "all clear"}});
  add(PriorityOverrideOp{"web", Level::kCritical, FullActor()});
  add(OverrideBreakerOp{Actor{"carol", "deadline"}});
  add(RaiseLimitsOp{5'000'000, 250.5, FullActor()});
  add(ResolveConflictOp{"conf_3", ResolveStrategy::kForceRelease, FullActor()});
  add(SetLockPolicyOp{
      "web",
      LockPolicy{LockEnforcement::kAdvisory, {"read_only_operations", "x"}},
      FullActor()});
  add(ReserveOp{FullReservation()});
  add(CancelReservationOp{"nightly", FullActor()});
  add(ReconfigureOp{"resources:\n  agents: 12\n", FullActor()});
  add(ReclaimOp{"alloc_17", "holder process 4242 exited"});
  add(ObserveSystemOp{SystemReading{0.4375, 0.921875, 0.125, 0.6, 23.5}});
  add(TickOp{});
  return ops;
}

JournalOp RoundTrip(const JournalOp& op) {
  const std::string bytes = EncodeOp(op);
  StatusOr<JournalOp> back = DecodeOp(bytes);
  EXPECT_TRUE(back.ok()) << OpName(op) << ": " << back.status().ToString();
  if (!back.ok()) return JournalOp{};
  // One encoding per value: re-encoding gives the same bytes.
  EXPECT_EQ(EncodeOp(*back), bytes) << OpName(op);
  return std::move(back).value();
}

TEST(OpCodecTest, SamplesCoverEveryOpKind) {
  for (bool full : {false, true}) {
    std::set<size_t> kinds;
    for (const JournalOp& op : AllOps(full)) kinds.insert(op.op.index());
    EXPECT_EQ(kinds.size(), std::variant_size_v<decltype(JournalOp::op)>);
  }
}

TEST(OpCodecTest, EveryOpRoundTripsWithEveryFieldSet) {
  for (const JournalOp& op : AllOps(true)) {
    SCOPED_TRACE(std::string(OpName(op)));
    JournalOp back = RoundTrip(op);
    ExpectSame(op, back);
  }
}

TEST(OpCodecTest, EveryOpRoundTripsWithDefaults) {
  for (const JournalOp& op : AllOps(false)) {
    SCOPED_TRACE(std::string(OpName(op)));
    JournalOp back = RoundTrip(op);
    ExpectSame(op, back);
  }
}

// The generic comparison above could pass if a field were lost on both
// sides and the sample happened to hold its default; these spell out the
// values the samples set.
TEST(OpCodecTest, RepresentativeFieldsSurviveExplicitly) {
  JournalOp in{At(1'769'000'000'123), AllocateOp{FullRequest(5)}};
  JournalOp out = RoundTrip(in);
  EXPECT_EQ(out.at, At(1'769'000'000'123));
  const AllocationRequest& r = std::get<AllocateOp>(out.op).request;
  EXPECT_EQ(r.workflow_id, "wf-5");
  ASSERT_EQ(r.resources.size(), 5u);
  EXPECT_EQ(r.resources[1].first, "cpu_cores");
  EXPECT_EQ(r.resources[1].second, 1.5);
  EXPECT_TRUE(std::signbit(r.resources[2].second));  // -0 stays -0
  EXPECT_TRUE(std::isnan(r.resources[3].second));
  EXPECT_EQ(r.estimated_tokens, 80005);
  EXPECT_EQ(r.estimated_minutes, 12.25);
  EXPECT_EQ(r.total_tasks, -7);
  EXPECT_EQ(r.ttl, Duration(90s));
  EXPECT_EQ(r.max_duration, Duration(2h));
  EXPECT_EQ(r.preemptible, false);  // present and false, not absent
  EXPECT_TRUE(r.requeue_on_preempt);
  EXPECT_TRUE(r.wait_for_budget);
  EXPECT_EQ(r.model, "sonnet");
  EXPECT_EQ(r.idempotency_key, "key-5");
  EXPECT_EQ(r.exclusive_access,
            (std::vector<std::string>{"src/a.cc", "src/b/**"}));
  EXPECT_EQ(r.shared_access, std::vector<std::string>{"docs/"});
  EXPECT_EQ(r.conflict_avoidance.size(), 3u);
  EXPECT_EQ(r.reservation_id, "res_4");

  JournalOp rel = RoundTrip(JournalOp{At(7), ReleaseOp{"a", FullUsage()}});
  const UsageReport& u = std::get<ReleaseOp>(rel.op).usage;
  EXPECT_EQ(u.report_id, "rep-1");
  EXPECT_EQ(u.cached_input_tokens, 3456);
  EXPECT_EQ(u.cost_usd, 0.1 + 0.2);
  EXPECT_EQ(u.outcome, Outcome::kCancelled);

  JournalOp res = RoundTrip(JournalOp{At(7), ReserveOp{FullReservation()}});
  const ReservationRequest& rr = std::get<ReserveOp>(res.op).request;
  EXPECT_EQ(rr.start_time, At(1'770'000'000'000));
  EXPECT_EQ(rr.until, At(1'780'000'000'000));
  EXPECT_EQ(rr.duration, Duration(45min));
  EXPECT_EQ(rr.recurrence, "weekly");
}

TEST(OpCodecTest, ExtremeValuesRoundTrip) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  AllocationRequest r;
  r.workflow_id = std::string("nul\0byte\xff", 9);
  r.metadata = std::string(100000, 'm');  // a multi-byte length
  r.estimated_tokens = kMin;
  r.blocks = kMax;
  r.total_tasks = 0;
  r.ttl = Duration(kMin);
  r.max_duration = Duration(kMax);
  r.estimated_minutes = -std::numeric_limits<double>::infinity();
  double nan_payload;
  const uint64_t nan_bits = 0x7ff4000000000123ULL;
  std::memcpy(&nan_payload, &nan_bits, sizeof nan_payload);
  r.resources = {{"", nan_payload},
                 {"x", std::numeric_limits<double>::denorm_min()}};
  for (int64_t at : {kMin, int64_t{-1}, int64_t{0}, kMax}) {
    JournalOp back = RoundTrip(JournalOp{At(at), AllocateOp{r}});
    EXPECT_EQ(back.at, At(at));
    ExpectSame(r, std::get<AllocateOp>(back.op).request);
  }
  JournalOp ext = RoundTrip(JournalOp{At(1), ExtendTokensOp{"a", kMin}});
  EXPECT_EQ(std::get<ExtendTokensOp>(ext.op).max_tokens, kMin);
  JournalOp raise =
      RoundTrip(JournalOp{At(1), RaiseLimitsOp{kMax, std::nullopt, Actor{}}});
  EXPECT_EQ(std::get<RaiseLimitsOp>(raise.op).max_tokens, kMax);
  EXPECT_FALSE(std::get<RaiseLimitsOp>(raise.op).max_cost_usd.has_value());
  for (Level level :
       {Level::kLow, Level::kNormal, Level::kHigh, Level::kCritical}) {
    JournalOp p =
        RoundTrip(JournalOp{At(1), PriorityOverrideOp{"p", level, Actor{}}});
    EXPECT_EQ(std::get<PriorityOverrideOp>(p.op).level, level);
  }
  for (ResolveStrategy s :
       {ResolveStrategy::kPriorityBased, ResolveStrategy::kQueueAndSerialize,
        ResolveStrategy::kForceRelease}) {
    JournalOp p =
        RoundTrip(JournalOp{At(1), ResolveConflictOp{"c", s, Actor{}}});
    EXPECT_EQ(std::get<ResolveConflictOp>(p.op).strategy, s);
  }
  for (Outcome o :
       {Outcome::kSuccess, Outcome::kFailure, Outcome::kCancelled}) {
    UsageReport u;
    u.outcome = o;
    JournalOp p = RoundTrip(JournalOp{At(1), ReportUsageOp{"a", u}});
    EXPECT_EQ(std::get<ReportUsageOp>(p.op).usage.outcome, o);
  }
  // A policy present with defaults differs from no policy.
  JournalOp pol = RoundTrip(
      JournalOp{At(1), SetLockPolicyOp{"global", LockPolicy{}, Actor{}}});
  EXPECT_TRUE(std::get<SetLockPolicyOp>(pol.op).policy.has_value());
}

TEST(OpCodecTest, OpNames) {
  std::vector<std::string> names;
  for (const JournalOp& op : AllOps(false)) names.emplace_back(OpName(op));
  EXPECT_EQ(names, (std::vector<std::string>{
                       "allocate",     "allocate_batch",     "release",
                       "renew",        "reallocate",         "cancel",
                       "report_usage", "extend_tokens",      "pause",
                       "resume",       "priority_override",  "override_breaker",
                       "raise_limits", "resolve_conflict",   "set_lock_policy",
                       "reserve",      "cancel_reservation", "reconfigure",
                       "reclaim",      "observe_system",     "tick"}));
}

// The bytes are the durable format: pin a few so an accidental change (a
// reordered field, a renumbered tag) fails here, not on someone's journal.
TEST(OpCodecTest, FormatIsStable) {
  // version 1, tag 6 (cancel), at 1000 ms = zigzag 2000 = d0 0f, "a1".
  EXPECT_EQ(EncodeOp(JournalOp{At(1000), CancelOp{"a1"}}),
            std::string("\x01\x06\xd0\x0f\x02"
                        "a1"));
  // tag 18 (tick), at -1 = zigzag 1.
  EXPECT_EQ(EncodeOp(JournalOp{At(-1), TickOp{}}), std::string("\x01\x12\x01"));
  // tag 4 (renew), at 0, "x", ttl present 30000 ms = zigzag 60000.
  EXPECT_EQ(EncodeOp(JournalOp{At(0), RenewOp{"x", 30s}}),
            std::string("\x01\x04\x00\x01x\x01\xe0\xd4\x03", 9));
  // tag 13 (raise_limits): tokens absent, cost 1.0 as IEEE little-endian,
  // actor "a" / "".
  EXPECT_EQ(EncodeOp(JournalOp{
                At(0), RaiseLimitsOp{std::nullopt, 1.0, Actor{"a", ""}}}),
            std::string("\x01\x0d\x00\x00\x01"
                        "\x00\x00\x00\x00\x00\x00\xf0\x3f"
                        "\x01"
                        "a\x00",
                        16));
  // All-default allocate: version, tag, at, then 22 one-byte fields.
  EXPECT_EQ(EncodeOp(JournalOp{At(0), AllocateOp{}}),
            std::string("\x01\x01\x00", 3) + std::string(22, '\0'));
}

// A request as the scenarios and the CLI make them, and a heavy one with
// long ids, three resources and an estimate of each kind.
AllocationRequest TypicalRequest() {
  AllocationRequest r;
  r.workflow_id = "incident-42";
  r.requester = "orchestrator";
  r.agent_type = "backend";
  r.priority = "critical";
  r.exclusive_access = {"src/payments/charge.ts"};
  r.estimated_minutes = 20;
  r.idempotency_key = "req-8f14e45f";
  return r;
}
AllocationRequest HeavyRequest() {
  AllocationRequest r;
  r.workflow_id = "wf-2026-01-26-build-17";
  r.requester = "orchestrator";
  r.product = "web";
  r.agent_type = "backend-engineer";
  r.priority = "high";
  r.resources = {{"agents", 1}, {"cpu_cores", 2}, {"memory_gb", 4}};
  r.estimated_tokens = 80000;
  r.estimated_minutes = 25;
  r.ttl = 30min;
  r.idempotency_key = "req-8f14e45fceea167a";
  r.exclusive_access = {"src/api/handlers.cc"};
  return r;
}
UsageReport TypicalUsage() {
  UsageReport u;
  u.report_id = "final";
  u.input_tokens = 61234;
  u.output_tokens = 9876;
  return u;
}

TEST(OpCodecTest, TypicalSizesAreSmall) {
  const Time at = At(1'769'000'000'123);
  const size_t typical = EncodeOp({at, AllocateOp{TypicalRequest()}}).size();
  const size_t heavy = EncodeOp({at, AllocateOp{HeavyRequest()}}).size();
  const size_t release =
      EncodeOp({at, ReleaseOp{"alloc_123456", TypicalUsage()}}).size();
  EXPECT_LT(typical, 128u);
  EXPECT_LT(heavy, 200u);
  EXPECT_LT(release, 64u);
  std::printf("allocate: typical %zu bytes, heavy %zu bytes; release %zu\n",
              typical, heavy, release);
}

TEST(OpCodecTest, EveryTruncationIsDataLoss) {
  for (bool full : {true, false}) {
    for (const JournalOp& op : AllOps(full)) {
      const std::string bytes = EncodeOp(op);
      for (size_t n = 0; n < bytes.size(); ++n) {
        StatusOr<JournalOp> got = DecodeOp(std::string_view(bytes.data(), n));
        ASSERT_FALSE(got.ok()) << OpName(op) << " prefix " << n;
        EXPECT_EQ(got.status().code(), Code::kDataLoss)
            << OpName(op) << " prefix " << n << ": " << got.status().ToString();
        EXPECT_FALSE(got.status().message().empty());
      }
    }
  }
}

TEST(OpCodecTest, TruncationNamesTheFieldAndOffset) {
  const std::string bytes =
      EncodeOp(JournalOp{At(0), ReleaseOp{"alloc_1", UsageReport{}}});
  StatusOr<JournalOp> got =
      DecodeOp(std::string_view(bytes.data(), bytes.size() - 1));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kDataLoss);
  const std::string& m = got.status().message();
  EXPECT_NE(m.find("release"), std::string::npos) << m;
  EXPECT_NE(m.find("usage.outcome"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find("at byte " + std::to_string(bytes.size() - 1)),
            std::string::npos)
      << m;

  // In a batch, the request's index.
  const std::string batch = EncodeOp(JournalOp{
      At(0), AllocateBatchOp{{AllocationRequest{}, FullRequest()}, false}});
  got = DecodeOp(std::string_view(batch.data(), batch.size() - 3));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("requests[1].reservation_id"),
            std::string::npos)
      << got.status().message();
}

TEST(OpCodecTest, NewerVersionIsDataLoss) {
  std::string bytes = EncodeOp(JournalOp{At(5), CancelOp{"a"}});
  bytes[0] = 2;
  StatusOr<JournalOp> got = DecodeOp(bytes);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kDataLoss);
  EXPECT_NE(got.status().message().find("format version 2"), std::string::npos);
  EXPECT_NE(got.status().message().find("newer qm"), std::string::npos)
      << got.status().message();

  bytes[0] = 0;
  got = DecodeOp(bytes);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kDataLoss);
  EXPECT_NE(got.status().message().find("damaged"), std::string::npos)
      << got.status().message();
}

TEST(OpCodecTest, UnknownTagIsDataLoss) {
  for (uint8_t tag : {0, 22, 99, 255}) {
    std::string bytes = EncodeOp(JournalOp{At(5), CancelOp{"a"}});
    bytes[1] = static_cast<char>(tag);
    StatusOr<JournalOp> got = DecodeOp(bytes);
    ASSERT_FALSE(got.ok()) << int{tag};
    EXPECT_EQ(got.status().code(), Code::kDataLoss);
    EXPECT_NE(
        got.status().message().find("unknown op tag " + std::to_string(tag)),
        std::string::npos)
        << got.status().message();
    EXPECT_NE(got.status().message().find("newer qm"), std::string::npos);
  }
}

TEST(OpCodecTest, DamagedValuesAreDataLoss) {
  auto expect_loss = [](const std::string& bytes, const std::string& text) {
    StatusOr<JournalOp> got = DecodeOp(bytes);
    ASSERT_FALSE(got.ok()) << text;
    EXPECT_EQ(got.status().code(), Code::kDataLoss);
    EXPECT_NE(got.status().message().find(text), std::string::npos)
        << got.status().message();
  };
  const std::string cancel = EncodeOp(JournalOp{At(0), CancelOp{"a"}});
  expect_loss(cancel + "x", "1 unexpected trailing bytes");
  // A presence byte that is neither 0 nor 1.
  std::string renew = EncodeOp(JournalOp{At(0), RenewOp{"a", 1s}});
  renew[5] = 2;
  expect_loss(renew, "ttl at byte 5: bad boolean byte 2");
  // An enum value no qm writes.
  std::string prio =
      EncodeOp(JournalOp{At(0), PriorityOverrideOp{"p", Level::kHigh, {}}});
  prio[6] = 9;
  expect_loss(prio, "level at byte 6: unknown level 9");
  // A varint longer than 64 bits, and one padded with a zero byte.
  expect_loss(std::string("\x01\x12") + std::string(10, '\xff') + '\x01',
              "at at byte 2: varint overflows 64 bits");
  expect_loss(std::string("\x01\x12\x80\x00", 4), "overlong varint");
  // Counts and lengths far beyond the input are refused before anything is
  // allocated for them.
  expect_loss(std::string("\x01\x02\x00\xff\xff\xff\xff\xff\xff\x01", 10),
              "requests at byte 3: truncated: list of");
  expect_loss(std::string("\x01\x06\x00\xff\xff\xff\xff\x0f", 8),
              "id at byte 3: truncated: string of");
  expect_loss("", "empty");
  expect_loss("\x01", "truncated after its version byte");
}

// Random damage never crashes, never reads out of bounds (run under ASan),
// and anything that still decodes is a canonical encoding of what it
// decoded to.
TEST(OpCodecTest, RandomDamageNeverCrashes) {
  std::mt19937_64 rng(20260126);
  std::vector<std::string> valid;
  for (bool full : {true, false}) {
    for (const JournalOp& op : AllOps(full)) valid.push_back(EncodeOp(op));
  }
  int decoded = 0, refused = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string bytes = valid[rng() % valid.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % bytes.size();
      if (rng() % 2 == 0) {
        bytes[at] = static_cast<char>(bytes[at] ^ (1u << (rng() % 8)));
      } else {
        bytes[at] = static_cast<char>(rng());
      }
    }
    if (rng() % 8 == 0) bytes.resize(rng() % (bytes.size() + 1));
    StatusOr<JournalOp> got = DecodeOp(bytes);
    if (got.ok()) {
      ++decoded;
      EXPECT_EQ(EncodeOp(*got), bytes);
    } else {
      ++refused;
      EXPECT_EQ(got.status().code(), Code::kDataLoss);
    }
  }
  // Pure noise, too.
  for (int round = 0; round < 20000; ++round) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (!bytes.empty() && rng() % 2 == 0) bytes[0] = 1;
    StatusOr<JournalOp> got = DecodeOp(bytes);
    if (got.ok()) {
      EXPECT_EQ(EncodeOp(*got), bytes);
    } else {
      EXPECT_EQ(got.status().code(), Code::kDataLoss);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);  // flips inside strings and doubles still decode
}

// ---- Replay through a real engine ----

// Every event, as its comparable fields.
class Recorder : public EventSink {
 public:
  void OnEvent(const Event& e) override {
    lines.push_back(std::to_string(e.seq) + " " +
                    std::to_string(e.time.time_since_epoch().count()) + " " +
                    EventTypeName(e.type) + " " + e.allocation_id + " " +
                    AllocStatusName(e.status) + " " +
                    std::to_string(e.fencing_token) + " " + e.reason + " " +
                    e.actor);
  }
  std::vector<std::string> lines;
};

// An engine on its own manual clock, recording its events.
struct Node {
  Node() {
    auto e = Engine::Create(Config::Defaults(), &clock, &events);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    engine = std::move(e).value();
  }
  ManualClock clock{At(1'769'000'000'000)};
  Recorder events;
  std::unique_ptr<Engine> engine;
};

void ExpectSameAllocation(const Engine& a, const Engine& b,
                          const std::string& id) {
  SCOPED_TRACE(id);
  StatusOr<AllocationInfo> x = a.Get(id), y = b.Get(id);
  ASSERT_EQ(x.ok(), y.ok());
  if (!x.ok()) {
    EXPECT_EQ(x.status().code(), y.status().code());
    return;
  }
  EXPECT_EQ(x->status, y->status);
  EXPECT_EQ(x->workflow_id, y->workflow_id);
  EXPECT_EQ(x->level, y->level);
  EXPECT_EQ(x->fencing_token, y->fencing_token);
  ExpectSame(x->resources, y->resources);
  EXPECT_EQ(x->queued_at, y->queued_at);
  EXPECT_EQ(x->granted_at, y->granted_at);
  EXPECT_EQ(x->expires_at, y->expires_at);
  EXPECT_EQ(x->ended_at, y->ended_at);
  EXPECT_EQ(x->reason_queued, y->reason_queued);
  EXPECT_EQ(x->usage.has_value(), y->usage.has_value());
  if (x->usage && y->usage) ExpectSame(*x->usage, *y->usage);
  EXPECT_EQ(x->metadata, y->metadata);
  EXPECT_EQ(x->budget.used_tokens, y->budget.used_tokens);
}

AllocationRequest Req(const std::string& wf, double agents) {
  AllocationRequest r;
  r.workflow_id = wf;
  r.agent_type = "coder";
  r.resources = {{"agents", agents}};
  r.metadata = "{\"wf\":\"" + wf + "\"}";
  return r;
}

UsageReport Usage(const std::string& report_id, int64_t tokens) {
  UsageReport u;
  u.report_id = report_id;
  u.tokens = tokens;
  return u;
}

ReservationRequest Reservation(const std::string& wf, Time start,
                               Duration duration) {
  ReservationRequest r;
  r.workflow_id = wf;
  r.resources = {{"agents", 1}};
  r.start_time = start;
  r.duration = duration;
  return r;
}

// The same calls made directly on one engine and replayed from their
// encodings on another give the same statuses, allocations and events.
TEST(OpCodecTest, ApplyOpReplaysAsTheDirectCallsDo) {
  Node live, replay;
  // The live side: direct calls, each journaled as it is made.
  std::vector<std::string> journal;
  std::vector<Code> live_codes;
  auto record = [&](JournalOp op, const Status& s) {
    journal.push_back(EncodeOp(op));
    live_codes.push_back(s.code());
  };
  const Time t0 = live.clock.Now();

  AllocationRequest big = Req("wf-big", 4);
  big.ttl = 10min;
  auto a1 = live.engine->Allocate(big);
  ASSERT_TRUE(a1.ok()) << a1.status().ToString();
  EXPECT_EQ(a1->allocation.status, AllocStatus::kActive);
  record({t0, AllocateOp{big}}, a1.status());

  live.clock.Set(t0 + 1s);
  AllocationRequest two = Req("wf-two", 2);
  auto a2 = live.engine->Allocate(two);
  ASSERT_TRUE(a2.ok());
  EXPECT_EQ(a2->allocation.status, AllocStatus::kQueued);
  record({t0 + 1s, AllocateOp{two}}, a2.status());

  live.clock.Set(t0 + 2s);
  AllocationRequest three = Req("wf-three", 1);
  three.idempotency_key = "k3";
  auto a3 = live.engine->Allocate(three);
  ASSERT_TRUE(a3.ok());
  // Queued: the earlier request claims the agents it waits for.
  EXPECT_EQ(a3->allocation.status, AllocStatus::kQueued);
  record({t0 + 2s, AllocateOp{three}}, a3.status());

  live.clock.Set(t0 + 3s);
  auto c2 = live.engine->Cancel(a2->allocation.id);
  ASSERT_TRUE(c2.ok()) << c2.status().ToString();
  record({t0 + 3s, CancelOp{a2->allocation.id}}, c2.status());
  EXPECT_EQ(live.engine->Get(a3->allocation.id)->status, AllocStatus::kActive);

  live.clock.Set(t0 + 4s);
  auto renew = live.engine->Renew(a1->allocation.id, 20min);
  ASSERT_TRUE(renew.ok());
  record({t0 + 4s, RenewOp{a1->allocation.id, 20min}}, renew.status());

  live.clock.Set(t0 + 5s);
  UsageReport usage;
  usage.report_id = "r1";
  usage.tokens = 5000;
  auto rel = live.engine->Release(a3->allocation.id, usage);
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  record({t0 + 5s, ReleaseOp{a3->allocation.id, usage}}, rel.status());

  // Refused calls replay as the same refusals.
  live.clock.Set(t0 + 6s);
  auto missing = live.engine->Release("alloc_999", {});
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  record({t0 + 6s, ReleaseOp{"alloc_999", {}}}, missing.status());
  auto again = live.engine->Cancel(a2->allocation.id);
  record({t0 + 6s, CancelOp{a2->allocation.id}}, again.status());

  // The lease of a1 runs out; a tick alone expires it after the grace.
  live.clock.Set(t0 + 4s + 20min + 6min);
  live.engine->Tick();
  record({live.clock.Now(), TickOp{}}, Status::Ok());

  // The replay side: decode each record, set the clock, apply.
  ASSERT_EQ(journal.size(), live_codes.size());
  for (size_t i = 0; i < journal.size(); ++i) {
    StatusOr<JournalOp> op = DecodeOp(journal[i]);
    ASSERT_TRUE(op.ok()) << op.status().ToString();
    replay.clock.Set(op->at);
    const Status s = ApplyOp(*replay.engine, *op);
    EXPECT_EQ(s.code(), live_codes[i])
        << i << " " << OpName(*op) << ": " << s.ToString();
  }

  for (const std::string& id : {a1->allocation.id, a2->allocation.id,
                                a3->allocation.id, std::string("alloc_999")}) {
    ExpectSameAllocation(*live.engine, *replay.engine, id);
  }
  EXPECT_EQ(live.engine->Get(a1->allocation.id)->status, AllocStatus::kExpired);
  EXPECT_EQ(live.events.lines, replay.events.lines);
  EXPECT_GT(live.events.lines.size(), 6u);
  const Snapshot x = live.engine->GetSnapshot(),
                 y = replay.engine->GetSnapshot();
  EXPECT_EQ(x.active, y.active);
  EXPECT_EQ(x.queued, y.queued);
  EXPECT_TRUE(replay.engine->CheckInvariants().ok());
}

// Operator and batch ops reach the engine too (their effects show in
// events and reports).
// The default config with 9 agents, as the journal records a reload.
std::string ReloadedYaml() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 9;
  return ConfigToYaml(c);
}

TEST(OpCodecTest, ApplyOpReachesEveryEngineMethod) {
  Node live, replay;
  const Time t0 = live.clock.Now();
  std::vector<JournalOp> ops = {
      {t0, PauseOp{Actor{"alice", "maintenance"}}},
      {t0, AllocateBatchOp{{Req("b1", 1), Req("b2", 1)}, false}},
      {t0 + 1s, ResumeOp{Actor{"alice", "done"}}},
      {t0 + 1s, PriorityOverrideOp{"web", Level::kHigh, Actor{"bob", "x"}}},
      {t0 + 1s,
       SetLockPolicyOp{"global", LockPolicy{LockEnforcement::kAdvisory, {}},
                       Actor{"bob", "y"}}},
      {t0 + 2s, ReallocateOp{"alloc_1", {{"agents", 2}}}},
      {t0 + 2s, ReportUsageOp{"alloc_1", Usage("u1", 10)}},
      {t0 + 2s, ExtendTokensOp{"alloc_1", 1000}},
      {t0 + 2s, RaiseLimitsOp{1000000, std::nullopt, Actor{"c", "z"}}},
      {t0 + 2s, OverrideBreakerOp{Actor{"c", "z"}}},
      {t0 + 2s, ResolveConflictOp{"conf_1", ResolveStrategy::kForceRelease,
                                  Actor{"c", "z"}}},
      {t0 + 3s, ReserveOp{Reservation("wf-r", t0 + 1h, 30min)}},
      {t0 + 4s, CancelReservationOp{"res_1", Actor{"c", "z"}}},
      {t0 + 4s, ReconfigureOp{ReloadedYaml(), Actor{"ops", "bigger"}}},
      {t0 + 4s, ReclaimOp{"alloc_2", "holder process 99 exited"}},
      {t0 + 4s, ObserveSystemOp{SystemReading{0.9, 0.95, 0.2, 0.5, 16}}},
      {t0 + 4s, ObserveSystemOp{SystemReading{1.5, {}, {}, {}, 0}}},
      {t0 + 5s, TickOp{}},
  };
  std::vector<Code> live_codes;
  // Live: the direct calls.
  for (const JournalOp& op : ops) {
    live.clock.Set(op.at);
    Status s = std::visit(
        [&](const auto& o) -> Status {
          using T = std::decay_t<decltype(o)>;
          Engine& e = *live.engine;
          if constexpr (std::is_same_v<T, PauseOp>) return e.Pause(o.actor);
          if constexpr (std::is_same_v<T, ResumeOp>) return e.Resume(o.actor);
          if constexpr (std::is_same_v<T, AllocateBatchOp>)
            return e.AllocateBatch(o.requests, o.all_or_nothing).status();
          if constexpr (std::is_same_v<T, PriorityOverrideOp>)
            return e.SetPriorityOverride(o.product, o.level, o.actor);
          if constexpr (std::is_same_v<T, SetLockPolicyOp>)
            return e.SetLockPolicy(o.scope, o.policy, o.actor);
          if constexpr (std::is_same_v<T, ReallocateOp>)
            return e.Reallocate(o.id, o.resources).status();
          if constexpr (std::is_same_v<T, ReportUsageOp>)
            return e.ReportUsage(o.id, o.usage).status();
          if constexpr (std::is_same_v<T, ExtendTokensOp>)
            return e.ExtendTokens(o.id, o.max_tokens).status();
          if constexpr (std::is_same_v<T, RaiseLimitsOp>)
            return e.RaiseLimits(o.max_tokens, o.max_cost_usd, o.actor);
          if constexpr (std::is_same_v<T, OverrideBreakerOp>)
            return e.OverrideBreaker(o.actor);
          if constexpr (std::is_same_v<T, ResolveConflictOp>)
            return e.ResolveConflict(o.conflict_id, o.strategy, o.actor)
                .status();
          if constexpr (std::is_same_v<T, ReserveOp>)
            return e.Reserve(o.request).status();
          if constexpr (std::is_same_v<T, CancelReservationOp>)
            return e.CancelReservation(o.id, o.actor).status();
          if constexpr (std::is_same_v<T, ReclaimOp>)
            return e.Reclaim(o.id, o.reason).status();
          if constexpr (std::is_same_v<T, ObserveSystemOp>)
            return e.ObserveSystem(o.reading);
          if constexpr (std::is_same_v<T, ReconfigureOp>) {
            auto config = LoadConfigString(o.config_yaml, "test");
            EXPECT_TRUE(config.ok()) << config.status().ToString();
            return e.Reconfigure(*config, o.actor).status();
          }
          if constexpr (std::is_same_v<T, TickOp>) {
            e.Tick();
            return Status::Ok();
          }
          ADD_FAILURE() << "no direct call for " << OpName(op);
          return Status::Ok();
        },
        op.op);
    live_codes.push_back(s.code());
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    StatusOr<JournalOp> op = DecodeOp(EncodeOp(ops[i]));
    ASSERT_TRUE(op.ok());
    replay.clock.Set(op->at);
    EXPECT_EQ(ApplyOp(*replay.engine, *op).code(), live_codes[i])
        << OpName(*op);
  }
  EXPECT_EQ(live.events.lines, replay.events.lines);
  // The pause, the resume, the override and the reservation happened.
  auto has = [&](const std::string& text) {
    for (const std::string& l : replay.events.lines) {
      if (l.find(text) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("override")) << testing::PrintToString(replay.events.lines);
  EXPECT_TRUE(has("reservation_cancelled"))
      << testing::PrintToString(replay.events.lines);
  EXPECT_TRUE(has("reclaimed: holder process 99 exited"))
      << testing::PrintToString(replay.events.lines);
  EXPECT_TRUE(has("config_reloaded"))
      << testing::PrintToString(replay.events.lines);
  EXPECT_EQ(replay.engine->config().resources[0].capacity, 9);
  EXPECT_EQ(live.engine->Costs().paused, replay.engine->Costs().paused);
  EXPECT_FALSE(replay.engine->Costs().paused);
  ExpectSameAllocation(*live.engine, *replay.engine, "alloc_1");
  ExpectSameAllocation(*live.engine, *replay.engine, "alloc_2");
}

// Not a test: prints encode and decode speed. Run with
// --gtest_also_run_disabled_tests --gtest_filter='*Speed*' on an optimised
// build.
TEST(OpCodecTest, DISABLED_Speed) {
  const JournalOp ops[] = {
      {At(1'769'000'000'123), AllocateOp{TypicalRequest()}},
      {At(1'769'000'000'123), AllocateOp{HeavyRequest()}},
      {At(1'769'000'900'456), ReleaseOp{"alloc_123456", TypicalUsage()}}};
  constexpr int kN = 1'000'000;
  for (const JournalOp& op : ops) {
    const std::string bytes = EncodeOp(op);
    size_t sink = 0;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kN; ++i) sink += EncodeOp(op).size();
    auto mid = std::chrono::steady_clock::now();
    for (int i = 0; i < kN; ++i) {
      StatusOr<JournalOp> got = DecodeOp(bytes);
      sink += got->op.index();
    }
    auto end = std::chrono::steady_clock::now();
    using ns = std::chrono::duration<double, std::nano>;
    std::printf("%s: %zu bytes, encode %.0f ns/op, decode %.0f ns/op (%zu)\n",
                std::string(OpName(op)).c_str(), bytes.size(),
                ns(mid - start).count() / kN, ns(end - mid).count() / kN, sink);
  }
}

}  // namespace
}  // namespace qm::store
