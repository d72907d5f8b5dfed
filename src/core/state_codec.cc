// The engine's state snapshots (docs/durability.md): EngineImpl::SaveState
// and LoadState, and the Engine facade's SaveState, Restore and StateDigest.
// Recovery is Restore(snapshot) followed by a replay of the operations
// journaled after it, so a restored engine must answer every later call
// exactly as the saved one would have: same results, same events.
//
// Format (primitives as in core/wire.h):
//   "QMST", a version byte (kStateFormatVersion),
//   the sections in the fixed order of `Section`, each as a tag byte, its
//     payload's length (varint) and the payload,
//   8 bytes: StateHash of everything before them, little-endian (damage
//     anywhere is DATA_LOSS before anything is decoded).
// Times are written relative to the engine's now (0 for an unset time), so
// those near it take a few bytes. Loading checks every index, count and
// enum, the ranges of values the engine does arithmetic or loops on, then
// the cross-references (Link) and finally the engine's invariants, so that
// even bytes behind a valid checksum do not make the decoder read out of
// bounds or allocate absurdly, nor leave indexes the engine would follow
// out of bounds.
//
// What is written, member by member of EngineImpl:
//   config_ (and everything Init derives from it: resource_specs_,
//     resource_index_, resource_counter_, agents_*, models_, rules_,
//     trip_conditions_, tz_, money_enabled_, budgets_ but for their alert
//     flags, global/product/type_budgets_, workspace_root_, rule_vars_):
//     not written. Restore runs Init with the config it is given; the
//     state carries a fingerprint of the config it was saved under (the
//     resource list in full, a hash per other section) and a different
//     config is refused (INVALID_REQUEST naming the section).
//   clock_, sink_, in_op_, migrate_from_: not state (in_op_ is false
//     between calls; migrate_from_ is set only inside Reconfigure).
//   memory_resource_: config-derived (Init finds the memory_gb resource).
//   system_, system_time_, memory_pressure_, health_alerts_,
//     wait_buckets_: the monitoring section (a state without it, or a
//     version 2 state without the waits, loads them empty).
//   Caches and scratch: fs_cache_, fs_time_, fs_cached_version_ and
//     fs_version_ (the fair-share cache: invalidated on load, recomputed on
//     first use), task_values_ (rule evaluation scratch). Not written.
//   Counter::holders, Lane::members, Band::lanes, active_bands_,
//     lane_index_, band_index_, type_lanes_, product_lanes_,
//     product_index_, type_index_, requester_index_, reservation_ids_,
//     LockSpec::at: indexes of written state, rebuilt on load (ordered
//     containers, or vectors whose order is creation order).
//   Alloc::lane, qkey and wait of an allocation that is not queued: stale
//     values nothing reads; only queued allocations write them (and
//     qkey.queued_ms and qkey.id are its queued_at and id).
//   allocs_: written in reverse iteration order with its bucket count, so
//     that loading rebuilds its iteration order (see SaveAllocs: parts of
//     the engine iterate it and let the order show).
//   Everything else is written as it is: timers (with their sequence
//     numbers), lock tables (in an order that rebuilds each node's
//     insertion order), timelines (likewise), maps in key order.
#include "core/state_codec.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "core/engine_impl.h"
#include "core/text.h"
#include "core/wire.h"

namespace qm {

// How StateHash works: FNV-1a's
// xor-then-multiply over 64-bit little-endian words (the tail bytes one by
// one), with a multiplier of well-mixed bits and an xor-shift per word so
// high bits reach low ones, then murmur3's finalizer. Unseeded and the same
// on every machine (unlike absl::Hash or std::hash), about 8 times faster
// than byte-wise FNV-1a. Every step is a bijection of the running value, so
// a change confined to one word always changes the hash; the length is
// mixed in first.
uint64_t StateHash(std::string_view bytes) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ull;
  uint64_t h = 14695981039346656037ull ^ bytes.size();
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w = 0;
    for (int k = 0; k < 8; ++k) w |= static_cast<uint64_t>(p[i + k]) << (8 * k);
    h = (h ^ w) * kMul;
    h ^= h >> 32;
  }
  for (; i < bytes.size(); ++i) {
    h = (h ^ p[i]) * kMul;
    h ^= h >> 32;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

namespace {

using std::chrono::hours;

// 2 added the monitoring section and the monitoring_thresholds part of the
// config fingerprint; 3 the grant waits at the end of the monitoring
// section and the monitoring.degradation part. Older states still load
// (without them).
constexpr uint8_t kStateFormatVersion = 3;
constexpr uint8_t kOldestStateFormatVersion = 1;
// Config fingerprint parts written by each format version (index: the
// version): a state's later parts are taken to be at their defaults.
constexpr size_t kConfigPartsOf[] = {0, 16, 17, 18};
static_assert(std::size(kConfigPartsOf) == kStateFormatVersion + 1);
constexpr std::string_view kMagic = "QMST";
constexpr size_t kHeaderBytes = 5;   // magic + version
constexpr size_t kTrailerBytes = 8;  // the checksum

// The sections, in the order they are written. A tag is part of the format:
// never renumber one.
enum class Section : uint8_t {
  kConfig = 1,        // the fingerprint of the config
  kCore = 2,          // time, ids, sequence numbers, counts, passes
  kCounters = 3,      // every counter (not its holder index) and free list
  kNames = 4,         // products, agent types, requesters, workflows
  kQueue = 5,         // lanes and bands (not their members)
  kReservations = 6,  // reservations and their timelines
  kAllocs = 7,        // allocations
  kHistory = 8,       // finished allocations kept, idempotency keys
  kTimers = 9,        // the timer queue
  kMoney = 10,        // periods, spend, alerts, breaker, overrides, metrics
  kConflicts = 11,    // policies, lock tables, gates, conflicts, fencing
  // Since format version 2: a version 1 state loads with no reading, no
  // pressure and no alerts.
  kMonitoring = 12,  // the last system reading, memory pressure, alerts
};
constexpr Section kSections[] = {
    Section::kConfig, Section::kCore,      Section::kCounters,
    Section::kNames,  Section::kQueue,     Section::kReservations,
    Section::kAllocs, Section::kHistory,   Section::kTimers,
    Section::kMoney,  Section::kConflicts, Section::kMonitoring};

const char* SectionName(Section s) {
  switch (s) {
    case Section::kConfig:
      return "config";
    case Section::kCore:
      return "core";
    case Section::kCounters:
      return "counters";
    case Section::kNames:
      return "names";
    case Section::kQueue:
      return "queue";
    case Section::kReservations:
      return "reservations";
    case Section::kAllocs:
      return "allocations";
    case Section::kHistory:
      return "history";
    case Section::kTimers:
      return "timers";
    case Section::kMoney:
      return "money";
    case Section::kConflicts:
      return "conflicts";
    case Section::kMonitoring:
      return "monitoring";
  }
  return "?";
}

// ---- Writing ----

// Writes state values into one section's payload. Times are relative to
// `base` (the engine's now).
class Out {
 public:
  Out(std::string* buf, Time base) : w_(buf), base_(base) {}

  void U(uint64_t v) { w_.Varint(v); }
  void I(int64_t v) { w_.Zigzag(v); }
  void B(bool v) { w_.Byte(v ? 1 : 0); }
  void Byte(uint8_t v) { w_.Byte(v); }
  void D(double v) { w_.Double(v); }
  void S(std::string_view v) { w_.Bytes(v); }
  void Dur(Duration v) { w_.Zigzag(v.count()); }
  // 0 for the zero time (unset fields), else 1 + the zigzag of the distance
  // from base, wrapping (the one time it cannot write, base + INT64_MIN ms,
  // lies 292 million years away).
  void T(Time t) {
    if (t == Time{}) return U(0);
    const uint64_t d = static_cast<uint64_t>(t.time_since_epoch().count()) -
                       static_cast<uint64_t>(base_.time_since_epoch().count());
    U(((d << 1) ^ (0 - (d >> 63))) + 1);
  }
  // UINT32_MAX (none) as 0, else c + 1.
  void OptCounter(uint32_t c) { U(c == UINT32_MAX ? 0 : uint64_t{c} + 1); }

 private:
  wire::Writer w_;
  Time base_;
};

// ---- Reading ----

// Bounds of decoded values that the engine does arithmetic on: times and
// durations (about 285,000 years of milliseconds), amounts on counters (a
// capacity of 1e12 units is 1e15 thousandths, token and micro-USD amounts
// are at most 1e15: 2^51 leaves room), and counter totals (kUnlimited, so
// that a few of them added never overflow).
constexpr int64_t kMaxTimeMs = int64_t{1} << 53;
constexpr int64_t kMaxAmount = int64_t{1} << 51;
constexpr int64_t kMaxTotal = kUnlimited;

// Reads state values from one section's payload, checking every read
// against its end. The first problem is recorded with the field and the
// byte offset; later reads return zeros (see wire::Reader), so a loader
// runs on and the caller checks ok() once (loops stop early on failure).
class In {
 public:
  In(std::string_view bytes, size_t begin, size_t end, Time base)
      : r_(bytes.substr(0, end), begin), base_(base) {}

  wire::Reader& r() { return r_; }
  bool ok() const { return r_.ok(); }
  void set_base(Time base) { base_ = base; }

  uint64_t U(const char* f) { return r_.Varint(f); }
  int64_t I(const char* f) { return r_.Zigzag(f); }
  bool B(const char* f) { return r_.Bool(f); }
  uint8_t Byte(const char* f) { return r_.Byte(f); }
  // Every double of an engine's state is finite (a NaN score would break the
  // order of the queue, a NaN share the queue's sort).
  double D(const char* f) {
    const size_t at = r_.Offset();
    const double d = r_.Double(f);
    if (!std::isfinite(d)) {
      r_.FailAt(at, f, "not a finite number");
      return 0;
    }
    return d;
  }
  void S(const char* f, std::string* out) { r_.String(f, out); }
  std::string S(const char* f) {
    std::string s;
    r_.String(f, &s);
    return s;
  }
  // Times and durations are within kMaxTimeMs of the epoch (and zero): the
  // engine adds them up without overflow checks.
  Duration Dur(const char* f) {
    const size_t at = r_.Offset();
    const int64_t v = r_.Zigzag(f);
    if (v > kMaxTimeMs || v < -kMaxTimeMs) {
      FailValueRange(at, f, v);
      return Duration(0);
    }
    return Duration(v);
  }
  Time T(const char* f) {
    const size_t at = r_.Offset();
    const uint64_t v = r_.Varint(f);
    if (v == 0) return Time{};
    const uint64_t z = v - 1;
    const uint64_t d = (z >> 1) ^ (0 - (z & 1));
    const int64_t t = static_cast<int64_t>(
        static_cast<uint64_t>(base_.time_since_epoch().count()) + d);
    if (t > kMaxTimeMs || t < -kMaxTimeMs) {
      FailValueRange(at, f, t);
      return Time{};
    }
    return Time(Duration(t));
  }
  // An amount (Milli, tokens, micro-USD) within [lo, hi].
  int64_t Amount(const char* f, int64_t lo, int64_t hi) {
    const size_t at = r_.Offset();
    const int64_t v = r_.Zigzag(f);
    if (v < lo || v > hi) {
      FailValueRange(at, f, v);
      return 0;
    }
    return v;
  }
  size_t Count(const char* f, size_t min_bytes) {
    return r_.Count(f, min_bytes);
  }
  // An index into something of `size` elements.
  uint32_t Index(const char* f, size_t size) {
    const size_t at = r_.Offset();
    const uint64_t v = r_.Varint(f);
    if (v >= size) {
      FailRange(at, f, v, size);
      return 0;
    }
    return static_cast<uint32_t>(v);
  }
  // A counter index, or UINT32_MAX (written as 0) for none.
  uint32_t OptIndex(const char* f, size_t size) {
    const size_t at = r_.Offset();
    const uint64_t v = r_.Varint(f);
    if (v == 0) return UINT32_MAX;
    if (v - 1 >= size) {
      FailRange(at, f, v - 1, size);
      return UINT32_MAX;
    }
    return static_cast<uint32_t>(v - 1);
  }
  // Records a problem found in a value read at `offset`.
  void FailAt(size_t offset, const char* f, const std::string& what) {
    r_.FailAt(offset, f, what);
  }
  size_t Offset() const { return r_.Offset(); }

 private:
  [[gnu::cold, gnu::noinline]] void FailValueRange(size_t at, const char* f,
                                                   int64_t v) {
    r_.FailAt(at, f, "value " + std::to_string(v) + " out of range");
  }
  [[gnu::cold, gnu::noinline]] void FailRange(size_t at, const char* f,
                                              uint64_t v, size_t size) {
    r_.FailAt(at, f,
              "index " + std::to_string(v) + " out of range (" +
                  std::to_string(size) + " known)");
  }

  wire::Reader r_;
  Time base_;
};

// ---- Enums: one byte each, a fixed wire value per enumerator ----
//
// The switches have no default, so a new enumerator is a -Wswitch warning
// here; kValues in each Get lists the enumerators by wire value.

constexpr uint8_t kBadEnum = 0xff;  // a value outside the enum: refused

template <typename E, size_t N>
void GetEnum(In& in, const char* f, const E (&values)[N], const char* kind,
             E* v) {
  const size_t at = in.Offset();
  const uint8_t b = in.Byte(f);
  if (b >= N) {
    in.FailAt(at, f,
              std::string("unknown ") + kind + " " + std::to_string(b) +
                  " (written by a newer qm?)");
    return;
  }
  *v = values[b];
}

void Put(Out& o, Level v) {
  switch (v) {
    case Level::kLow:
      return o.Byte(0);
    case Level::kNormal:
      return o.Byte(1);
    case Level::kHigh:
      return o.Byte(2);
    case Level::kCritical:
      return o.Byte(3);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, Level* v) {
  static constexpr Level kValues[] = {Level::kLow, Level::kNormal, Level::kHigh,
                                      Level::kCritical};
  GetEnum(in, f, kValues, "level", v);
}

void Put(Out& o, AllocStatus v) {
  switch (v) {
    case AllocStatus::kActive:
      return o.Byte(0);
    case AllocStatus::kQueued:
      return o.Byte(1);
    case AllocStatus::kReserved:
      return o.Byte(2);
    case AllocStatus::kReleased:
      return o.Byte(3);
    case AllocStatus::kExpired:
      return o.Byte(4);
    case AllocStatus::kPreempted:
      return o.Byte(5);
    case AllocStatus::kFailed:
      return o.Byte(6);
    case AllocStatus::kCancelled:
      return o.Byte(7);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, AllocStatus* v) {
  static constexpr AllocStatus kValues[] = {
      AllocStatus::kActive,   AllocStatus::kQueued,   AllocStatus::kReserved,
      AllocStatus::kReleased, AllocStatus::kExpired,  AllocStatus::kPreempted,
      AllocStatus::kFailed,   AllocStatus::kCancelled};
  GetEnum(in, f, kValues, "allocation status", v);
}

void Put(Out& o, Counter::Kind v) {
  switch (v) {
    case Counter::Kind::kResource:
      return o.Byte(0);
    case Counter::Kind::kAgentType:
      return o.Byte(1);
    case Counter::Kind::kProduct:
      return o.Byte(2);
    case Counter::Kind::kWorkflow:
      return o.Byte(3);
    case Counter::Kind::kBudget:
      return o.Byte(4);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, Counter::Kind* v) {
  static constexpr Counter::Kind kValues[] = {
      Counter::Kind::kResource, Counter::Kind::kAgentType,
      Counter::Kind::kProduct, Counter::Kind::kWorkflow,
      Counter::Kind::kBudget};
  GetEnum(in, f, kValues, "counter kind", v);
}

void Put(Out& o, WaitReason::Kind v) {
  switch (v) {
    case WaitReason::Kind::kNone:
      return o.Byte(0);
    case WaitReason::Kind::kNoFit:
      return o.Byte(1);
    case WaitReason::Kind::kBehind:
      return o.Byte(2);
    case WaitReason::Kind::kPreempting:
      return o.Byte(3);
    case WaitReason::Kind::kYielding:
      return o.Byte(4);
    case WaitReason::Kind::kBudgetReset:
      return o.Byte(5);
    case WaitReason::Kind::kReserved:
      return o.Byte(6);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, WaitReason::Kind* v) {
  static constexpr WaitReason::Kind kValues[] = {
      WaitReason::Kind::kNone,     WaitReason::Kind::kNoFit,
      WaitReason::Kind::kBehind,   WaitReason::Kind::kPreempting,
      WaitReason::Kind::kYielding, WaitReason::Kind::kBudgetReset,
      WaitReason::Kind::kReserved};
  GetEnum(in, f, kValues, "wait reason", v);
}

void Put(Out& o, AllocLocks::Where v) {
  switch (v) {
    case AllocLocks::Where::kNone:
      return o.Byte(0);
    case AllocLocks::Where::kClaimed:
      return o.Byte(1);
    case AllocLocks::Where::kHeld:
      return o.Byte(2);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, AllocLocks::Where* v) {
  static constexpr AllocLocks::Where kValues[] = {AllocLocks::Where::kNone,
                                                  AllocLocks::Where::kClaimed,
                                                  AllocLocks::Where::kHeld};
  GetEnum(in, f, kValues, "lock table", v);
}

void Put(Out& o, AllocLocks::Gate v) {
  switch (v) {
    case AllocLocks::Gate::kNone:
      return o.Byte(0);
    case AllocLocks::Gate::kLock:
      return o.Byte(1);
    case AllocLocks::Gate::kWorkflow:
      return o.Byte(2);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, AllocLocks::Gate* v) {
  static constexpr AllocLocks::Gate kValues[] = {AllocLocks::Gate::kNone,
                                                 AllocLocks::Gate::kLock,
                                                 AllocLocks::Gate::kWorkflow};
  GetEnum(in, f, kValues, "gate", v);
}

void Put(Out& o, Timer::Kind v) {
  switch (v) {
    case Timer::Kind::kLeaseExpiry:
      return o.Byte(0);
    case Timer::Kind::kForceExpire:
      return o.Byte(1);
    case Timer::Kind::kPreemptDeadline:
      return o.Byte(2);
    case Timer::Kind::kStarvation:
      return o.Byte(3);
    case Timer::Kind::kPeriodReset:
      return o.Byte(4);
    case Timer::Kind::kResOpen:
      return o.Byte(5);
    case Timer::Kind::kResGrace:
      return o.Byte(6);
    case Timer::Kind::kResClose:
      return o.Byte(7);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, Timer::Kind* v) {
  static constexpr Timer::Kind kValues[] = {
      Timer::Kind::kLeaseExpiry,     Timer::Kind::kForceExpire,
      Timer::Kind::kPreemptDeadline, Timer::Kind::kStarvation,
      Timer::Kind::kPeriodReset,     Timer::Kind::kResOpen,
      Timer::Kind::kResGrace,        Timer::Kind::kResClose};
  GetEnum(in, f, kValues, "timer kind", v);
}

void Put(Out& o, Reservation::State v) {
  switch (v) {
    case Reservation::State::kScheduled:
      return o.Byte(0);
    case Reservation::State::kOpen:
      return o.Byte(1);
    case Reservation::State::kEnded:
      return o.Byte(2);
    case Reservation::State::kCancelled:
      return o.Byte(3);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, Reservation::State* v) {
  static constexpr Reservation::State kValues[] = {
      Reservation::State::kScheduled, Reservation::State::kOpen,
      Reservation::State::kEnded, Reservation::State::kCancelled};
  GetEnum(in, f, kValues, "reservation state", v);
}

void Put(Out& o, Outcome v) {
  switch (v) {
    case Outcome::kSuccess:
      return o.Byte(0);
    case Outcome::kFailure:
      return o.Byte(1);
    case Outcome::kCancelled:
      return o.Byte(2);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, Outcome* v) {
  static constexpr Outcome kValues[] = {Outcome::kSuccess, Outcome::kFailure,
                                        Outcome::kCancelled};
  GetEnum(in, f, kValues, "outcome", v);
}

void Put(Out& o, LockEnforcement v) {
  switch (v) {
    case LockEnforcement::kStrict:
      return o.Byte(0);
    case LockEnforcement::kAdvisory:
      return o.Byte(1);
  }
  o.Byte(kBadEnum);
}
void Get(In& in, const char* f, LockEnforcement* v) {
  static constexpr LockEnforcement kValues[] = {LockEnforcement::kStrict,
                                                LockEnforcement::kAdvisory};
  GetEnum(in, f, kValues, "lock enforcement", v);
}

// Only hashed (the config fingerprint), never read back.
void Put(Out& o, BudgetPeriod v) {
  switch (v) {
    case BudgetPeriod::kDaily:
      return o.Byte(0);
    case BudgetPeriod::kWeekly:
      return o.Byte(1);
    case BudgetPeriod::kMonthly:
      return o.Byte(2);
  }
  o.Byte(kBadEnum);
}
void Put(Out& o, OverBudgetPolicy v) {
  switch (v) {
    case OverBudgetPolicy::kFlag:
      return o.Byte(0);
    case OverBudgetPolicy::kStop:
      return o.Byte(1);
  }
  o.Byte(kBadEnum);
}
void Put(Out& o, ConflictStrategy v) {
  switch (v) {
    case ConflictStrategy::kQueueAndSerialize:
      return o.Byte(0);
    case ConflictStrategy::kPriorityBased:
      return o.Byte(1);
  }
  o.Byte(kBadEnum);
}

// AllocMoney::reason points into these static strings (budget.cc's
// PlanMoney); the state names the string. A reason missing here is written
// as kBadEnum and refused on load: add it to this list (append only).
constexpr const char* kModelReasons[] = {"", "requested",
                                         "pricing.default_model"};

uint8_t ModelReasonCode(const char* reason) {
  for (size_t i = 0; i < std::size(kModelReasons); ++i) {
    if (std::strcmp(reason, kModelReasons[i]) == 0) {
      return static_cast<uint8_t>(i);
    }
  }
  return kBadEnum;
}

// ---- Small composite values ----

void PutOptI(Out& o, const std::optional<int64_t>& v) {
  o.B(v.has_value());
  if (v) o.I(*v);
}
std::optional<int64_t> GetOptI(In& in, const char* f) {
  if (!in.B(f)) return std::nullopt;
  return in.I(f);
}
void PutOptD(Out& o, const std::optional<double>& v) {
  o.B(v.has_value());
  if (v) o.D(*v);
}
std::optional<double> GetOptD(In& in, const char* f) {
  if (!in.B(f)) return std::nullopt;
  return in.D(f);
}
void PutOptT(Out& o, const std::optional<Time>& v) {
  o.B(v.has_value());
  if (v) o.T(*v);
}
std::optional<Time> GetOptT(In& in, const char* f) {
  if (!in.B(f)) return std::nullopt;
  return in.T(f);
}

void PutStrings(Out& o, const std::vector<std::string>& v) {
  o.U(v.size());
  for (const std::string& s : v) o.S(s);
}
void GetStrings(In& in, const char* f, std::vector<std::string>* v) {
  v->resize(in.Count(f, 1));
  for (std::string& s : *v) in.S(f, &s);
}

void PutIds(Out& o, const std::vector<uint64_t>& v) {
  o.U(v.size());
  for (uint64_t id : v) o.U(id);
}
void GetIds(In& in, const char* f, std::vector<uint64_t>* v) {
  v->resize(in.Count(f, 1));
  for (uint64_t& id : *v) id = in.U(f);
}

void Put(Out& o, const UsageReport& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8] = v;
  o.S(v.report_id);
  PutOptI(o, v.tokens);
  PutOptI(o, v.input_tokens);
  PutOptI(o, v.output_tokens);
  PutOptI(o, v.cached_input_tokens);
  PutOptD(o, v.cost_usd);
  o.S(v.model);
  Put(o, v.outcome);
}
void Get(In& in, UsageReport* v) {
  in.S("usage.report_id", &v->report_id);
  v->tokens = GetOptI(in, "usage.tokens");
  v->input_tokens = GetOptI(in, "usage.input_tokens");
  v->output_tokens = GetOptI(in, "usage.output_tokens");
  v->cached_input_tokens = GetOptI(in, "usage.cached_input_tokens");
  v->cost_usd = GetOptD(in, "usage.cost_usd");
  in.S("usage.model", &v->model);
  Get(in, "usage.outcome", &v->outcome);
}

void Put(Out& o, const LockPolicy& v) {
  [[maybe_unused]] const auto& [f1, f2] = v;
  Put(o, v.enforcement);
  PutStrings(o, v.exceptions);
}
void Get(In& in, LockPolicy* v) {
  Get(in, "policy.enforcement", &v->enforcement);
  GetStrings(in, "policy.exceptions", &v->exceptions);
}

void Put(Out& o, const ConflictInfo& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                f12, f13, f14, f15] = v;
  o.S(v.id);
  o.S(v.type);
  o.S(v.severity);
  o.S(v.message);
  o.S(v.recommended_action);
  o.S(v.subject);
  o.S(v.holder);
  PutOptT(o, v.since);
  PutOptT(o, v.expected_release);
  PutOptT(o, v.starts_at);
  o.S(v.waiter);
  o.S(v.status);
  o.S(v.resolution);
  o.T(v.detected_at);
  PutOptT(o, v.resolved_at);
}
void Get(In& in, ConflictInfo* v) {
  in.S("id", &v->id);
  in.S("type", &v->type);
  in.S("severity", &v->severity);
  in.S("message", &v->message);
  in.S("recommended_action", &v->recommended_action);
  in.S("subject", &v->subject);
  in.S("holder", &v->holder);
  v->since = GetOptT(in, "since");
  v->expected_release = GetOptT(in, "expected_release");
  v->starts_at = GetOptT(in, "starts_at");
  in.S("waiter", &v->waiter);
  in.S("status", &v->status);
  in.S("resolution", &v->resolution);
  v->detected_at = in.T("detected_at");
  v->resolved_at = GetOptT(in, "resolved_at");
}

// ---- The config fingerprint ----
//
// Each section of the config is encoded (every field: the structured
// bindings stop compiling when a config struct gains or loses one) and
// hashed; the resource list is kept in full for a precise message.

void Put(Out& o, const ResourceSpec& v) {
  [[maybe_unused]] const auto& [f1, f2, f3] = v;
  o.S(v.name);
  o.D(v.capacity);
  o.B(v.fractional);
}
void Put(Out& o, const PriorityLevelConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3] = v;
  o.D(v.weight);
  o.D(v.max_wait_minutes);
  o.B(v.preempt_lower);
}
void Put(Out& o, const ScoreWeights& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  o.D(v.priority);
  o.D(v.wait);
  o.D(v.blocking);
  o.D(v.fair_share);
}
void Put(Out& o, const SchedulingConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7] = v;
  Put(o, v.weights);
  o.I(v.default_total_tasks);
  o.Dur(v.fair_share_half_life);
  o.Dur(v.preemption_grace);
  o.Dur(v.default_ttl);
  o.B(v.restrict_agent_types);
  o.I(v.history_limit);
}
void Put(Out& o, const ProductConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = v;
  o.B(v.priority.has_value());
  if (v.priority) Put(o, *v.priority);
  PutOptI(o, v.max_concurrent_agents);
  PutOptI(o, v.token_budget_daily);
  PutOptD(o, v.cost_budget_daily_usd);
  o.D(v.share);
}
void Put(Out& o, const AllocationLimits& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  PutOptD(o, v.max_cpu_per_workflow);
  PutOptD(o, v.max_memory_per_workflow);
  PutOptI(o, v.max_agents_per_workflow);
  o.Dur(v.max_duration);
}
void Put(Out& o, const AutoReleaseConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  o.B(v.on_completion);
  o.B(v.on_timeout);
  o.B(v.on_failure);
  o.Dur(v.grace_period);
}
void Put(Out& o, const ModelPrice& v) {
  [[maybe_unused]] const auto& [f1, f2, f3] = v;
  o.D(v.input_per_million);
  PutOptD(o, v.output_per_million);
  PutOptD(o, v.cached_input_per_million);
}
void Put(Out& o, const PricingConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3] = v;
  o.U(v.models.size());
  for (const auto& [name, price] : v.models) {
    o.S(name);
    Put(o, price);
  }
  o.S(v.default_model);
  o.D(v.estimate_output_share);
}
void Put(Out& o, const TokenBudgetsConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6] = v;
  o.U(v.per_type.size());
  for (const auto& [type, budget] : v.per_type) {
    o.S(type);
    o.I(budget);
  }
  PutOptI(o, v.default_budget);
  o.D(v.multiplier);
  o.B(v.use_estimate_when_smaller);
  Put(o, v.over_budget);
  o.D(v.learning_rate);
}
void Put(Out& o, const PeriodBudget& v) {
  [[maybe_unused]] const auto& [f1, f2] = v;
  PutOptI(o, v.max_tokens);
  PutOptD(o, v.max_cost_usd);
}
void Put(Out& o, const DailyLimitsConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7] = v;
  PutOptI(o, v.max_tokens_total);
  PutOptD(o, v.max_cost_usd);
  o.U(v.alert_at_percent.size());
  for (double p : v.alert_at_percent) o.D(p);
  Put(o, v.period);
  o.S(v.time_zone);
  o.I(v.week_start);
  o.U(v.per_agent_type.size());
  for (const auto& [type, budget] : v.per_agent_type) {
    o.S(type);
    Put(o, budget);
  }
}
void Put(Out& o, const ModelRule& v) {
  [[maybe_unused]] const auto& [f1, f2, f3] = v;
  o.S(v.condition);
  o.S(v.model);
  o.S(v.fallback_model);
}
void Put(Out& o, const CircuitBreakerConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = v;
  PutStrings(o, v.trip_conditions);
  o.S(v.action);
  o.S(v.notify);
  o.B(v.allow_override);
  o.Dur(v.burn_rate_window);
}
void Put(Out& o, const ManualOverrideConfig& v) {
  [[maybe_unused]] const auto& [f1, f2] = v;
  o.B(v.pause_all_agents);
  o.U(v.priority_override.size());
  for (const auto& [product, level] : v.priority_override) {
    o.S(product);
    Put(o, level);
  }
}
void Put(Out& o, const OptimizationTargets& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  o.D(v.efficiency_threshold);
  o.Dur(v.response_time_target);
  o.D(v.utilization_target);
  o.D(v.conflict_tolerance);
}
void Put(Out& o, const MonitoringIntervals& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  o.Dur(v.resource_check);
  o.Dur(v.performance_sample);
  o.Dur(v.capacity_analysis);
  o.Dur(v.trend_analysis);
}
// All but `degradation`, a part of its own (format version 3).
void Put(Out& o, const MonitoringConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7] = v;
  o.D(v.warning_threshold);
  o.D(v.critical_threshold);
  o.D(v.pressure_threshold);
  o.D(v.gc_trigger_threshold);
  o.D(v.psi_threshold);
  o.D(v.hysteresis);
}
void Put(Out& o, const MonitoringConfig::Degradation& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = v;
  o.D(v.threshold);
  o.Dur(v.min_increase);
  o.Dur(v.window);
  o.Dur(v.baseline);
  o.I(v.min_samples);
}
void Put(Out& o, const ConflictsConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = v;
  o.S(v.workspace_root);
  Put(o, v.file_locking);
  o.U(v.per_product.size());
  for (const auto& [product, policy] : v.per_product) {
    o.S(product);
    Put(o, policy);
  }
  Put(o, v.strategy);
  o.I(v.history_limit);
}
void Put(Out& o, const ReservationsConfig& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4] = v;
  o.Dur(v.horizon);
  o.Dur(v.grace_period);
  o.B(v.preempt_running);
  o.I(v.max_reservations);
}

// The hashed config sections (all but `resources`), by the configuration
// key they are known by.
struct ConfigPart {
  const char* name;
  uint64_t hash;
};
std::vector<ConfigPart> ConfigParts(const Config& c) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                f12, f13, f14, f15, f16, f17, f18] = c;
  std::vector<ConfigPart> parts;
  auto part = [&](const char* name, auto&& put) {
    std::string buf;
    Out o(&buf, Time{});
    put(o);
    parts.push_back({name, StateHash(buf)});
  };
  part("max_concurrent.per_type", [&](Out& o) {
    o.U(c.per_type_limits.size());
    for (const auto& [type, limit] : c.per_type_limits) {
      o.S(type);
      o.I(limit);
    }
  });
  part("levels", [&](Out& o) {
    for (const PriorityLevelConfig& l : c.levels) Put(o, l);
  });
  part("scheduling", [&](Out& o) { Put(o, c.scheduling); });
  part("products", [&](Out& o) {
    o.U(c.products.size());
    for (const auto& [name, p] : c.products) {
      o.S(name);
      Put(o, p);
    }
  });
  part("allocation_limits", [&](Out& o) { Put(o, c.allocation_limits); });
  part("auto_release", [&](Out& o) { Put(o, c.auto_release); });
  part("pricing", [&](Out& o) { Put(o, c.pricing); });
  part("token_budgets", [&](Out& o) { Put(o, c.token_budgets); });
  part("daily_limits", [&](Out& o) { Put(o, c.daily_limits); });
  part("auto_model_selection.rules", [&](Out& o) {
    o.U(c.model_rules.size());
    for (const ModelRule& r : c.model_rules) Put(o, r);
  });
  part("circuit_breaker", [&](Out& o) { Put(o, c.circuit_breaker); });
  part("manual_override", [&](Out& o) { Put(o, c.manual_override); });
  part("optimization_targets", [&](Out& o) { Put(o, c.optimization_targets); });
  part("monitoring", [&](Out& o) { Put(o, c.monitoring_intervals); });
  part("conflicts", [&](Out& o) { Put(o, c.conflicts); });
  part("reservations", [&](Out& o) { Put(o, c.reservations); });
  // Since format version 2 (go last: a version 1 state carries no hash for
  // it, and matches a config that leaves it at its defaults; LoadConfig).
  part("monitoring_thresholds", [&](Out& o) { Put(o, c.monitoring); });
  // Since format version 3.
  part("monitoring.degradation",
       [&](Out& o) { Put(o, c.monitoring.degradation); });
  return parts;
}

std::string Describe(const ResourceSpec& r) {
  char capacity[32];
  std::snprintf(capacity, sizeof capacity, "%.17g", r.capacity);
  return r.name + " (capacity " + capacity +
         (r.fractional ? ", fractional)" : ")");
}

// Timers_'s heap (a protected member of std::priority_queue), to save it
// without popping a copy.
template <typename Q>
const typename Q::container_type& HeapOf(const Q& q) {
  struct Peek : Q {
    static const typename Q::container_type& Get(const Q& q) {
      return q.*&Peek::c;
    }
  };
  return Peek::Get(q);
}

// Minimum encoded sizes of list elements (for wire::Reader::Count).
constexpr size_t kMinCounterBytes = 13;
constexpr size_t kMinAllocBytes = 24;
constexpr size_t kMinTimerBytes = 5;
constexpr size_t kMinReservationBytes = 30;
constexpr size_t kMinConflictBytes = 19;

// The allocation flags word.
constexpr uint32_t kHolding = 1 << 0;
constexpr uint32_t kExpiring = 1 << 1;
constexpr uint32_t kStarvationAlerted = 1 << 2;
constexpr uint32_t kPreemptedSomeone = 1 << 3;
constexpr uint32_t kWaitForBudget = 1 << 4;
constexpr uint32_t kPreemptible = 1 << 5;
constexpr uint32_t kRequeueOnPreempt = 1 << 6;
constexpr uint32_t kHasEstimatedTokens = 1 << 7;
constexpr uint32_t kHasEstimatedMinutes = 1 << 8;
constexpr uint32_t kHasExtras = 1 << 9;
constexpr uint32_t kHasMoney = 1 << 10;
constexpr uint32_t kHasLocks = 1 << 11;
constexpr uint32_t kAllFlags = (1 << 12) - 1;

}  // namespace

// Reads and writes EngineImpl's members (a friend of it).
class StateCodec {
 public:
  static std::string Save(const EngineImpl& e);
  static Status Load(EngineImpl& e, std::string_view bytes);
  // Engine::Reconfigure: a new engine under `config` takes over `impl`'s
  // state, fitted to the new config, and runs the reload as an operation
  // (its event, a dispatch pass); then it replaces `impl`. On error `impl`
  // is untouched.
  static StatusOr<ReconfigureResult> Reconfigure(
      std::unique_ptr<EngineImpl>& impl, Config config, const Actor& actor);

 private:
  static void SaveConfig(const EngineImpl& e, Out& o);
  static void SaveCore(const EngineImpl& e, Out& o);
  static void SaveCounters(const EngineImpl& e, Out& o);
  static void SaveNames(const EngineImpl& e, Out& o);
  static void SaveQueue(const EngineImpl& e, Out& o);
  static void SaveReservations(const EngineImpl& e, Out& o);
  static void SaveAllocs(const EngineImpl& e, Out& o);
  static void SaveAlloc(const Alloc& a, Out& o);
  static void SaveHistory(const EngineImpl& e, Out& o);
  static void SaveTimers(const EngineImpl& e, Out& o);
  static void SaveMoney(const EngineImpl& e, Out& o);
  static void SaveConflicts(const EngineImpl& e, Out& o);
  static void SaveMonitoring(const EngineImpl& e, Out& o);
  static void SaveLockTable(const EngineImpl& e, const paths::LockTable& t,
                            Out& o);

  // Each loads its section; problems with the bytes are recorded in `in`.
  // LoadConfig answers a config mismatch (INVALID_REQUEST).
  static Status LoadConfig(EngineImpl& e, In& in, uint8_t version);
  static void LoadCore(EngineImpl& e, In& in);
  static void LoadCounters(EngineImpl& e, In& in);
  static void LoadNames(EngineImpl& e, In& in);
  static void LoadQueue(EngineImpl& e, In& in);
  static void LoadReservations(EngineImpl& e, In& in);
  static void LoadAllocs(EngineImpl& e, In& in);
  static void LoadAlloc(EngineImpl& e, In& in, Alloc& a);
  static void LoadHistory(EngineImpl& e, In& in);
  static void LoadTimers(EngineImpl& e, In& in);
  static void LoadMoney(EngineImpl& e, In& in);
  static void LoadConflicts(EngineImpl& e, In& in);
  static void LoadMonitoring(EngineImpl& e, In& in, uint8_t version);
  // Checks what one section's records say about another's, and rebuilds
  // the indexes; DATA_LOSS naming the first inconsistency.
  static Status Link(EngineImpl& e);
  // Reconfigure's two steps around Link: FitCounters re-points the
  // config-built counters (resources, budgets) by name, creating the new
  // ones and retiring the removed ones; FitLimits sets every limit, share,
  // policy and queue key from the new config. CONFLICT naming what is in
  // the way.
  static Status FitCounters(EngineImpl& e, const EngineImpl& old);
  static Status FitLimits(EngineImpl& e, const EngineImpl& old);
};

// ---------------------------------------------------------------- saving

std::string StateCodec::Save(const EngineImpl& e) {
  // A new member of EngineImpl must be classified at the top of this file
  // (written, rebuilt, config-derived or cache) and, if it is state, saved
  // and loaded below: this size check is the reminder (libstdc++ x86-64).
#if defined(__GLIBCXX__) && defined(__x86_64__) && !defined(_GLIBCXX_DEBUG)
  static_assert(sizeof(EngineImpl) == 4296,
                "EngineImpl changed: classify the new members in "
                "state_codec.cc (and raise kStateFormatVersion when the "
                "format changes), then update this size");
#endif
  std::string out;
  out.reserve(256 + e.allocs_.size() * 96);
  out.append(kMagic);
  out.push_back(static_cast<char>(kStateFormatVersion));
  std::string payload;
  for (const Section s : kSections) {
    payload.clear();
    Out o(&payload, e.now_);
    switch (s) {
      case Section::kConfig:
        SaveConfig(e, o);
        break;
      case Section::kCore:
        SaveCore(e, o);
        break;
      case Section::kCounters:
        SaveCounters(e, o);
        break;
      case Section::kNames:
        SaveNames(e, o);
        break;
      case Section::kQueue:
        SaveQueue(e, o);
        break;
      case Section::kReservations:
        SaveReservations(e, o);
        break;
      case Section::kAllocs:
        SaveAllocs(e, o);
        break;
      case Section::kHistory:
        SaveHistory(e, o);
        break;
      case Section::kTimers:
        SaveTimers(e, o);
        break;
      case Section::kMoney:
        SaveMoney(e, o);
        break;
      case Section::kConflicts:
        SaveConflicts(e, o);
        break;
      case Section::kMonitoring:
        SaveMonitoring(e, o);
        break;
    }
    wire::Writer w(&out);
    w.Byte(static_cast<uint8_t>(s));
    w.Bytes(payload);
  }
  const uint64_t sum = StateHash(out);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(sum >> (8 * i)));
  return out;
}

void StateCodec::SaveMonitoring(const EngineImpl& e, Out& o) {
  o.B(e.system_.has_value());
  if (e.system_) {
    const SystemReading& r = *e.system_;
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = r;
    PutOptD(o, r.cpu_utilization);
    PutOptD(o, r.memory_utilization);
    PutOptD(o, r.memory_pressure);
    PutOptD(o, r.storage_utilization);
    o.D(r.memory_total_gb);
    o.T(e.system_time_);
  }
  o.B(e.memory_pressure_);
  o.U(e.health_alerts_.size());
  for (const auto& [key, a] : e.health_alerts_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9] = a;
    o.S(a.type);
    o.S(a.resource);
    o.S(a.severity);
    o.S(a.message);
    o.S(a.recommended_action);
    o.D(a.value);
    o.D(a.threshold);
    o.T(a.since);
  }
  o.U(e.wait_buckets_.size());
  for (const EngineImpl::WaitBucket& b : e.wait_buckets_) {
    [[maybe_unused]] const auto& [f1, f2, f3] = b;
    o.I(b.minute);
    o.I(b.grants);
    o.I(b.wait_ms);
  }
}

void StateCodec::LoadMonitoring(EngineImpl& e, In& in, uint8_t version) {
  e.system_.reset();
  e.system_time_ = Time{};
  if (in.B("has_reading")) {
    SystemReading r;
    auto fraction = [&](const char* f) {
      const size_t at = in.Offset();
      std::optional<double> v = GetOptD(in, f);
      if (v && (*v < 0 || *v > 1)) {
        in.FailAt(at, f, "not a fraction from 0 to 1");
        v.reset();
      }
      return v;
    };
    r.cpu_utilization = fraction("cpu_utilization");
    r.memory_utilization = fraction("memory_utilization");
    r.memory_pressure = fraction("memory_pressure");
    r.storage_utilization = fraction("storage_utilization");
    {
      const size_t at = in.Offset();
      r.memory_total_gb = in.D("memory_total_gb");
      if (r.memory_total_gb < 0 || r.memory_total_gb > 1e9) {
        in.FailAt(at, "memory_total_gb", "not a number of GB from 0 to 1e9");
      }
    }
    e.system_ = r;
    e.system_time_ = in.T("system_time");
  }
  e.memory_pressure_ = in.B("memory_pressure");
  e.health_alerts_.clear();
  const size_t n = in.Count("alerts", 8);
  for (size_t i = 0; i < n && in.ok(); ++i) {
    Alert a;
    in.S("alert.type", &a.type);
    in.S("alert.resource", &a.resource);
    in.S("alert.severity", &a.severity);
    in.S("alert.message", &a.message);
    in.S("alert.recommended_action", &a.recommended_action);
    a.value = in.D("alert.value");
    a.threshold = in.D("alert.threshold");
    const size_t at = in.Offset();
    a.since = in.T("alert.since");
    if (!e.health_alerts_.emplace(a.type + "/" + a.resource, a).second) {
      in.FailAt(at, "alert", "a second alert " + a.type + "/" + a.resource);
    }
  }
  e.wait_buckets_.clear();
  if (version < 3) return;
  const size_t buckets = in.Count("grant_waits", 3);
  for (size_t i = 0; i < buckets && in.ok(); ++i) {
    const size_t at = in.Offset();
    EngineImpl::WaitBucket b;
    b.minute = in.I("grant_waits.minute");
    b.grants = in.I("grant_waits.grants");
    b.wait_ms = in.I("grant_waits.wait_ms");
    if (!in.ok()) break;
    // Within the caps the live engine keeps (WaitBucket), and no minute
    // after the state's time.
    const int64_t now_minute =
        e.now_.time_since_epoch().count() / (60 * 1000) + 1;
    if (b.grants < 1 || b.grants > EngineImpl::WaitBucket::kMaxGrants ||
        b.wait_ms < 0 || b.wait_ms > EngineImpl::WaitBucket::kMaxWaitMs) {
      in.FailAt(at, "grant_waits",
                "a minute with no grants, too many, or a wait out of range");
    } else if (b.minute > now_minute) {
      in.FailAt(at, "grant_waits", "a minute after the state's time");
    } else if (!e.wait_buckets_.empty() &&
               b.minute <= e.wait_buckets_.back().minute) {
      in.FailAt(at, "grant_waits", "minutes out of order");
    } else {
      e.wait_buckets_.push_back(b);
    }
  }
}

void StateCodec::SaveConfig(const EngineImpl& e, Out& o) {
  o.U(e.config_.resources.size());
  for (const ResourceSpec& r : e.config_.resources) Put(o, r);
  const std::vector<ConfigPart> parts = ConfigParts(e.config_);
  o.U(parts.size());
  for (const ConfigPart& p : parts) o.U(p.hash);
}

void StateCodec::SaveCore(const EngineImpl& e, Out& o) {
  o.I(e.now_.time_since_epoch().count());  // the base of every later time
  o.T(e.epoch_time_);
  o.T(e.last_pass_);
  o.U(e.next_id_);
  o.U(e.fencing_);
  o.U(e.event_seq_);
  o.I(e.active_count_);
  o.I(e.queued_count_);
  o.I(e.preempting_count_);
  o.I(e.queued_without_agents_);
  o.U(e.pass_epoch_);
  o.U(e.pass_serial_);
  o.B(e.relaxed_);
  o.B(e.dispatch_at_end_);
  o.U(e.timer_seq_);
}

void StateCodec::SaveCounters(const EngineImpl& e, Out& o) {
  o.U(e.counters_.size());
  for (const Counter& k : e.counters_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                  f12, f13] = k;
    Put(o, k.kind);
    o.S(k.name);
    o.I(k.limit);
    o.I(k.used);
    o.I(k.releasing);
    o.U(k.blocked_epoch);
    o.U(k.blocked_by);
    o.U(k.blocked_serial);
    o.I(k.held);
    o.U(k.owner);
    // holders: rebuilt from the allocations.
    o.B(k.in_use);
    o.I(k.spent);
  }
  o.U(e.free_counters_.size());
  for (uint32_t c : e.free_counters_) o.U(c);
}

void StateCodec::SaveNames(const EngineImpl& e, Out& o) {
  o.U(e.products_.size());
  for (const ProductState& p : e.products_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8] = p;
    o.S(p.name);
    o.I(p.running_agents);
    o.D(p.decayed);
    o.T(p.decayed_at);
    o.D(p.committed_end_sum);
    o.I(p.queued);
    o.D(p.share);
    o.U(p.counter);
  }
  o.U(e.types_.size());
  for (const TypeState& t : e.types_) {
    [[maybe_unused]] const auto& [f1, f2, f3] = t;
    o.S(t.name);
    o.U(t.counter);
    o.I(t.queued);
  }
  PutStrings(o, e.requesters_);
  // Workflows by id.
  std::vector<const std::pair<const std::string, Workflow>*> wfs;
  wfs.reserve(e.workflows_.size());
  for (const auto& entry : e.workflows_) wfs.push_back(&entry);
  std::sort(wfs.begin(), wfs.end(),
            [](const auto* x, const auto* y) { return x->first < y->first; });
  o.U(wfs.size());
  for (const auto* entry : wfs) {
    const Workflow& w = entry->second;
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = w;
    o.S(entry->first);
    o.OptCounter(w.agents);
    o.OptCounter(w.cpu);
    o.OptCounter(w.memory);
    o.I(w.refs);
    o.I(w.active);
  }
}

void StateCodec::SaveQueue(const EngineImpl& e, Out& o) {
  o.U(e.bands_.size());
  for (const Band& b : e.bands_) {
    [[maybe_unused]] const auto& [f1, f2, f3] = b;
    Put(o, b.level);
    o.U(b.product);
    // lanes: rebuilt from the lanes' members.
  }
  o.U(e.lanes_.size());
  for (const Lane& l : e.lanes_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6] = l;
    o.U(l.band);
    o.U(l.type);
    o.U(l.product);
    o.B(l.uses_agents);
    o.U(l.seen_serial);
    // members: rebuilt from the queued allocations.
  }
}

void StateCodec::SaveReservations(const EngineImpl& e, Out& o) {
  o.U(e.next_reservation_);
  o.U(e.reservations_.size());
  for (const auto& [num, r] : e.reservations_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                  f12, f13, f14, f15, f16, f17, f18, f19, f20,
                                  f21, f22, f23, f24, f25, f26, f27] = r;
    o.U(r.num);
    o.S(r.id);
    o.S(r.workflow_id);
    o.S(r.product);
    o.S(r.agent_type);
    o.S(r.requester);
    o.S(r.metadata);
    Put(o, r.level);
    o.I(r.priority_value);
    o.U(r.resources.size());
    for (const auto& [idx, m] : r.resources) {
      o.U(idx);
      o.I(m);
    }
    o.U(r.demand.size());
    for (const auto& [c, m] : r.demand) {
      o.U(c);
      o.I(m);
    }
    o.T(r.start);
    o.Dur(r.duration);
    o.Dur(r.period);
    PutOptT(o, r.until);
    Put(o, r.state);
    o.T(r.win_start);
    o.T(r.win_end);
    o.T(r.booked_through);
    o.B(r.grace_over);
    o.U(r.left.size());
    for (Milli m : r.left) o.I(m);
    o.U(r.shortfall.size());
    for (Milli m : r.shortfall) o.I(m);
    o.T(r.short_since);
    o.U(r.claimants.size());
    for (uint64_t id : r.claimants) o.U(id);
    PutStrings(o, r.warnings);
    o.T(r.ended_at);
    o.U(r.accepted_fence);
  }
  // Timelines by counter, each interval in the tree's order (start, id,
  // end, insertion): adding them again in that order keeps the order of
  // duplicates, the one thing Remove's choice depends on.
  std::vector<uint32_t> counters;
  counters.reserve(e.timelines_.size());
  for (const auto& [c, t] : e.timelines_) counters.push_back(c);
  std::sort(counters.begin(), counters.end());
  o.U(counters.size());
  for (uint32_t c : counters) {
    const Timeline& t = e.timelines_.at(c);
    o.U(c);
    o.U(t.size());
    t.ForEachOverlap(Time::min(), Time::max(),
                     [&](const Timeline::Interval& iv) {
                       [[maybe_unused]] const auto& [f1, f2, f3, f4] = iv;
                       o.U(iv.id);
                       o.T(iv.start);
                       o.T(iv.end);
                       o.I(iv.amount);
                     });
  }
  o.I(e.bookings_);
  o.I(e.short_windows_);
  o.I(e.booking_violations_);
  o.S(e.booking_violation_);
}

// Parts of the engine iterate allocs_ (an unordered_map) and let the order
// show: SetLockPolicy re-claims the locks of queued requests in it (which
// orders the claims table, hence later gates), CheckConflicts names the
// first of equal holders, Metrics sums doubles in it. So the allocations
// are written in reverse iteration order with the table's bucket count:
// re-inserting them in that order into a table of that many buckets
// rebuilds the same iteration order (with libstdc++, where an insert goes
// to the front of its bucket, or of the whole list when the bucket was
// empty; LoadAllocs checks the bucket count it got).
void StateCodec::SaveAllocs(const EngineImpl& e, Out& o) {
  std::vector<const Alloc*> order;
  order.reserve(e.allocs_.size());
  for (const auto& [id, a] : e.allocs_) order.push_back(&a);
  o.U(e.allocs_.bucket_count());
  o.U(order.size());
  for (auto it = order.rbegin(); it != order.rend(); ++it) SaveAlloc(**it, o);
}

void StateCodec::SaveAlloc(const Alloc& a, Out& o) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                f12, f13, f14, f15, f16, f17, f18, f19, f20,
                                f21, f22, f23, f24, f25, f26, f27] = a;
  const RequestCore& q = a.req;
  [[maybe_unused]] const auto& [r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11,
                                r12, r13] = q;
  uint32_t flags = 0;
  flags |= a.holding ? kHolding : 0;
  flags |= a.expiring ? kExpiring : 0;
  flags |= a.starvation_alerted ? kStarvationAlerted : 0;
  flags |= a.preempted_someone ? kPreemptedSomeone : 0;
  flags |= q.wait_for_budget ? kWaitForBudget : 0;
  flags |= q.preemptible ? kPreemptible : 0;
  flags |= q.requeue_on_preempt ? kRequeueOnPreempt : 0;
  flags |= q.estimated_tokens ? kHasEstimatedTokens : 0;
  flags |= q.estimated_minutes ? kHasEstimatedMinutes : 0;
  flags |= a.extras ? kHasExtras : 0;
  flags |= a.money ? kHasMoney : 0;
  flags |= a.locks ? kHasLocks : 0;
  o.U(a.id);
  o.U(flags);
  Put(o, a.status);
  o.S(q.workflow_id);
  Put(o, q.level);
  o.I(q.priority_value);
  o.I(q.agents);
  if (q.estimated_tokens) o.I(*q.estimated_tokens);
  if (q.estimated_minutes) o.D(*q.estimated_minutes);
  o.I(q.blocks);
  o.I(q.total_tasks);
  o.Dur(q.ttl);
  o.Dur(q.max_duration);
  o.U(a.product);
  o.U(a.type);
  o.U(a.requester);
  o.U(a.demand.size());
  for (const auto& [c, m] : a.demand) {
    o.U(c);
    o.I(m);
  }
  o.U(a.fencing);
  o.T(a.queued_at);
  o.T(a.granted_at);
  o.T(a.expires_at);
  o.T(a.ended_at);
  o.T(a.expected_end);
  o.T(a.preempt_deadline);
  o.U(a.queue_gen);
  o.U(a.preempted_by);
  o.U(a.preempted_by_fence);
  if (a.status == AllocStatus::kQueued) {
    // Stale while not queued (nothing reads them then).
    o.U(a.lane);
    o.D(a.qkey.key);
    [[maybe_unused]] const auto& [w1, w2, w3, w4] = a.wait;
    Put(o, a.wait.kind);
    o.U(a.wait.counter);
    o.I(a.wait.need);
    o.U(a.wait.other);
  }
  if (a.extras) {
    const AllocExtras& x = *a.extras;
    [[maybe_unused]] const auto& [x1, x2, x3, x4] = x;
    o.S(x.metadata);
    o.S(x.idempotency_key);
    o.B(x.usage.has_value());
    if (x.usage) Put(o, *x.usage);
    o.S(x.end_reason);
  }
  if (a.money) {
    const AllocMoney& m = *a.money;
    [[maybe_unused]] const auto& [m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11,
                                  m12, m13, m14] = m;
    o.S(m.model);
    o.Byte(ModelReasonCode(m.reason));
    o.I(m.rule);
    o.S(m.downgraded_from);
    o.S(m.downgrade_note);
    PutOptI(o, m.max_tokens);
    PutOptI(o, m.max_tokens_limit);
    o.I(m.reserved_tokens);
    o.I(m.reserved_micro);
    o.I(m.used_tokens);
    o.I(m.used_micro);
    o.B(m.over_budget);
    PutStrings(o, m.report_ids);
    o.B(m.learned);
  }
  if (a.locks) {
    const AllocLocks& l = *a.locks;
    [[maybe_unused]] const auto& [l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11,
                                  l12, l13, l14, l15, l16, l17, l18, l19] = l;
    o.U(l.locks.size());
    for (const LockSpec& s : l.locks) {
      [[maybe_unused]] const auto& [s1, s2, s3, s4, s5, s6, s7] = s;
      o.S(s.path);
      o.B(s.exclusive);
      // hashes and prefix size: of the path; at: rebuilt with the lock
      // tables; probe: a lookup cache. (The list is rebuilt from the paths.)
    }
    PutStrings(o, l.avoid);
    o.I(l.rank_level);
    o.I(l.rank_ms);
    Put(o, l.where);
    o.B(l.exempt);
    Put(o, l.gate);
    o.U(l.gate_on);
    o.S(l.subject);
    o.S(l.other_path);
    o.B(l.own_exclusive);
    o.B(l.other_exclusive);
    o.U(l.conflict);
    o.B(l.preempt_tried);
    PutStrings(o, l.warnings);
    o.U(l.reservation);
    o.T(l.drew_window);
    o.U(l.drawn.size());
    for (const auto& [c, m] : l.drawn) {
      o.U(c);
      o.I(m);
    }
  }
}

void StateCodec::SaveHistory(const EngineImpl& e, Out& o) {
  o.U(e.history_.size());
  for (const Alloc* a : e.history_) o.U(a->id);
  std::vector<const std::pair<const std::string, uint64_t>*> keys;
  keys.reserve(e.idempotency_.size());
  for (const auto& entry : e.idempotency_) keys.push_back(&entry);
  std::sort(keys.begin(), keys.end(),
            [](const auto* x, const auto* y) { return x->first < y->first; });
  o.U(keys.size());
  for (const auto* entry : keys) {
    o.S(entry->first);
    o.U(entry->second);
  }
}

void StateCodec::SaveTimers(const EngineImpl& e, Out& o) {
  // In firing order: (at, seq) is a total order (seq is unique), so any
  // heap of the same timers pops them alike.
  std::vector<Timer> timers = HeapOf(e.timers_);
  std::sort(timers.begin(), timers.end(), [](const Timer& x, const Timer& y) {
    return x.at != y.at ? x.at < y.at : x.seq < y.seq;
  });
  o.U(timers.size());
  for (const Timer& t : timers) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = t;
    o.T(t.at);
    o.U(t.seq);
    o.U(t.id);
    Put(o, t.kind);
    o.U(t.gen);
  }
}

void StateCodec::SaveMoney(const EngineImpl& e, Out& o) {
  o.T(e.period_start_);
  o.T(e.period_end_);
  o.I(e.period_tokens_);
  o.I(e.period_micro_);
  auto put_spend = [&](const Spend& s) {
    [[maybe_unused]] const auto& [f1, f2, f3] = s;
    o.I(s.tasks);
    o.I(s.tokens);
    o.I(s.micro);
  };
  o.U(e.spend_by_model_.size());
  for (const auto& [model, s] : e.spend_by_model_) {
    o.S(model);
    put_spend(s);
  }
  o.U(e.spend_by_product_.size());
  for (const Spend& s : e.spend_by_product_) put_spend(s);
  o.U(e.spend_by_type_.size());
  for (const Spend& s : e.spend_by_type_) put_spend(s);
  o.U(e.alerts_.size());
  for (const BudgetAlert& a : e.alerts_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4] = a;
    o.T(a.time);
    o.S(a.budget);
    o.D(a.threshold_percent);
    o.S(a.message);
  }
  o.U(e.burn_.size());
  for (const auto& [minute, spend] : e.burn_) {
    o.I(minute);
    o.I(spend.first);
    o.I(spend.second);
  }
  {
    const BreakerState& b = e.breaker_;
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9] = b;
    o.B(b.open);
    o.S(b.action);
    o.S(b.condition);
    PutOptT(o, b.tripped_at);
    PutOptT(o, b.closes_at);
    o.B(b.allow_override);
    o.B(b.overridden);
    o.S(b.override_by);
    o.S(b.override_reason);
  }
  o.B(e.paused_);
  o.S(e.paused_by_);
  o.S(e.paused_reason_);
  o.U(e.priority_overrides_.size());
  for (const auto& [product, level] : e.priority_overrides_) {
    o.S(product);
    Put(o, level);
  }
  std::vector<const std::pair<const std::string, Learned>*> learned;
  learned.reserve(e.learned_.size());
  for (const auto& entry : e.learned_) learned.push_back(&entry);
  std::sort(learned.begin(), learned.end(),
            [](const auto* x, const auto* y) { return x->first < y->first; });
  o.U(learned.size());
  for (const auto* entry : learned) {
    const Learned& l = entry->second;
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9] = l;
    o.S(entry->first);
    o.I(l.samples);
    o.D(l.token_ratio);
    o.D(l.minute_ratio);
    o.I(l.minute_samples);
    PutOptI(o, l.last_est_tokens);
    PutOptI(o, l.last_actual_tokens);
    PutOptD(o, l.last_est_minutes);
    PutOptD(o, l.last_actual_minutes);
    o.S(l.accuracy);
  }
  // Of the budgets (built by Init), only the alert flags change.
  o.U(e.budgets_.size());
  for (const BudgetState& b : e.budgets_) {
    [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6] = b;
    o.U(b.alerted.size());
    for (bool x : b.alerted) o.B(x);
  }
  o.T(e.metrics_since_);
  o.U(e.busy_agent_ms_.size());
  for (double ms : e.busy_agent_ms_) o.D(ms);
  o.I(e.tasks_completed_);
  o.I(e.tasks_completed_tokens_);
  o.I(e.tasks_completed_micro_);
  o.I(e.tasks_started_);
  o.I(e.tasks_waited_);
  o.D(e.wait_ms_sum_);
  o.D(e.wait_ms_max_);
}

void StateCodec::SaveLockTable(const EngineImpl& e, const paths::LockTable& t,
                               Out& o) {
  // Each lock as (owner, index among the owner's locks), in the order that
  // rebuilds every node's insertion order. An owner's paths are distinct
  // (requests deduplicate them); owners with many locks get an index.
  constexpr size_t kScanLimit = 16;
  std::unordered_map<uint64_t, std::unordered_map<std::string_view, size_t>>
      by_path;
  o.U(t.size());
  t.ForEachLock([&](const paths::LockTable::Hit& h) {
    uint64_t index = UINT64_MAX;  // unknown: refused on load
    auto it = e.allocs_.find(h.owner);
    if (it != e.allocs_.end() && it->second.locks) {
      const std::vector<LockSpec>& locks = it->second.locks->locks;
      size_t i = locks.size();
      if (locks.size() <= kScanLimit) {
        i = 0;
        while (i < locks.size() && locks[i].path != h.path) ++i;
      } else {
        auto [paths, fresh] = by_path.try_emplace(h.owner);
        if (fresh) {
          for (size_t k = 0; k < locks.size(); ++k) {
            paths->second.emplace(locks[k].path, k);
          }
        }
        auto found = paths->second.find(h.path);
        if (found != paths->second.end()) i = found->second;
      }
      if (i < locks.size() && locks[i].exclusive == h.exclusive) index = i;
    }
    o.U(h.owner);
    o.U(index);
  });
}

void StateCodec::SaveConflicts(const EngineImpl& e, Out& o) {
  Put(o, e.global_policy_);
  o.U(e.product_policies_.size());
  for (const auto& [product, policy] : e.product_policies_) {
    o.S(product);
    Put(o, policy);
  }
  SaveLockTable(e, e.held_locks_, o);
  SaveLockTable(e, e.claimed_locks_, o);
  {
    std::vector<uint64_t> keys;
    keys.reserve(e.gated_on_.size());
    for (const auto& [on, ids] : e.gated_on_) keys.push_back(on);
    std::sort(keys.begin(), keys.end());
    o.U(keys.size());
    for (uint64_t on : keys) {
      o.U(on);
      PutIds(o, e.gated_on_.at(on));
    }
  }
  {
    std::vector<const std::string*> keys;
    keys.reserve(e.gated_on_wf_.size());
    for (const auto& [wf, ids] : e.gated_on_wf_) keys.push_back(&wf);
    std::sort(keys.begin(), keys.end(),
              [](const auto* x, const auto* y) { return *x < *y; });
    o.U(keys.size());
    for (const std::string* wf : keys) {
      o.S(*wf);
      PutIds(o, e.gated_on_wf_.at(*wf));
    }
  }
  PutIds(o, e.wakes_);
  PutStrings(o, e.wf_wakes_);
  o.I(e.gated_count_);
  o.B(e.track_wf_active_);
  o.U(e.next_conflict_);
  o.U(e.open_conflicts_.size());
  for (const auto& [n, c] : e.open_conflicts_) {
    o.U(n);
    Put(o, c);
  }
  o.U(e.resolved_conflicts_.size());
  for (const ConflictInfo& c : e.resolved_conflicts_) Put(o, c);
  std::vector<std::pair<uint64_t, uint64_t>> fencing(e.fencing_owner_.begin(),
                                                     e.fencing_owner_.end());
  std::sort(fencing.begin(), fencing.end());
  o.U(fencing.size());
  for (const auto& [token, id] : fencing) {
    o.U(token);
    o.U(id);
  }
}

// ---------------------------------------------------------------- loading

Status StateCodec::Load(EngineImpl& e, std::string_view bytes) {
  const std::string size = std::to_string(bytes.size()) + " bytes";
  if (bytes.size() < kHeaderBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return DataLoss("not an engine state (" + size +
                    "): it does not start with \"QMST\"");
  }
  const uint8_t version = static_cast<uint8_t>(bytes[kMagic.size()]);
  if (version < kOldestStateFormatVersion || version > kStateFormatVersion) {
    if (version > kStateFormatVersion) {
      return DataLoss("engine state has format version " +
                      std::to_string(version) + ", newer than the " +
                      std::to_string(kStateFormatVersion) +
                      " this qm reads: written by a newer qm (or damaged)");
    }
    return DataLoss("engine state has format version " +
                    std::to_string(version) +
                    ", which no qm writes: the state is damaged");
  }
  if (bytes.size() < kHeaderBytes + kTrailerBytes) {
    return DataLoss("engine state is truncated (" + size +
                    "): no room for its checksum");
  }
  const size_t end = bytes.size() - kTrailerBytes;
  uint64_t stored = 0;
  for (size_t i = 0; i < 8; ++i) {
    stored |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[end + i]))
              << (8 * i);
  }
  if (StateHash(bytes.substr(0, end)) != stored) {
    return DataLoss("engine state checksum mismatch (" + size +
                    "): the bytes are damaged or truncated");
  }
  const std::string damaged = "damaged engine state (" + size + "): ";
  size_t pos = kHeaderBytes;
  Time base = e.now_;
  for (const Section s : kSections) {
    if (s == Section::kMonitoring && version < 2) break;
    wire::Reader head(bytes.substr(0, end), pos);
    const uint8_t tag = head.Byte("section tag");
    const size_t length_at = head.Offset();
    const uint64_t length = head.Varint("section length");
    if (head.ok() && tag != static_cast<uint8_t>(s)) {
      head.FailAt(pos, "section tag",
                  "expected section " + std::to_string(static_cast<int>(s)) +
                      " (" + SectionName(s) + "), found " +
                      std::to_string(tag));
    }
    if (head.ok() && length > head.left()) {
      head.FailAt(length_at, "section length",
                  std::string("section ") + SectionName(s) + " of " +
                      std::to_string(length) + " bytes with " +
                      std::to_string(head.left()) + " left");
    }
    if (!head.ok()) return DataLoss(damaged + head.error());
    const size_t begin = head.Offset();
    In in(bytes, begin, begin + static_cast<size_t>(length), base);
    {
      wire::Scope scope(in.r(), SectionName(s));
      switch (s) {
        case Section::kConfig:
          QM_RETURN_IF_ERROR(LoadConfig(e, in, version));
          break;
        case Section::kCore:
          LoadCore(e, in);
          base = e.now_;
          break;
        case Section::kCounters:
          LoadCounters(e, in);
          break;
        case Section::kNames:
          LoadNames(e, in);
          break;
        case Section::kQueue:
          LoadQueue(e, in);
          break;
        case Section::kReservations:
          LoadReservations(e, in);
          break;
        case Section::kAllocs:
          LoadAllocs(e, in);
          break;
        case Section::kHistory:
          LoadHistory(e, in);
          break;
        case Section::kTimers:
          LoadTimers(e, in);
          break;
        case Section::kMoney:
          LoadMoney(e, in);
          break;
        case Section::kConflicts:
          LoadConflicts(e, in);
          break;
        case Section::kMonitoring:
          LoadMonitoring(e, in, version);
          break;
      }
      if (in.ok() && !in.r().AtEnd()) {
        in.r().Fail("after the last field",
                    std::to_string(in.r().left()) +
                        " unexpected bytes at the end of the section");
      }
    }
    if (!in.ok()) return DataLoss(damaged + in.r().error());
    pos = begin + static_cast<size_t>(length);
  }
  if (pos != end) {
    return DataLoss(damaged + std::to_string(end - pos) +
                    " unexpected bytes after the last section, at byte " +
                    std::to_string(pos));
  }
  if (e.migrate_from_) QM_RETURN_IF_ERROR(FitCounters(e, *e.migrate_from_));
  QM_RETURN_IF_ERROR(Link(e));
  if (e.migrate_from_) {
    QM_RETURN_IF_ERROR(FitLimits(e, *e.migrate_from_));
    // Lanes in their new key order. The invariants hold once the reload's
    // dispatch pass has run (a request may fit now): Reconfigure checks.
    return Link(e);
  }
  const Status inv = e.CheckInvariants();
  if (!inv.ok()) {
    return DataLoss("engine state is inconsistent (" + size +
                    "): " + inv.message());
  }
  return Status::Ok();
}

Status StateCodec::LoadConfig(EngineImpl& e, In& in, uint8_t version) {
  const std::string prefix =
      "the engine state was saved under a different configuration: ";
  const std::string remedy =
      " (restore it with the configuration it was saved under)";
  const std::vector<ResourceSpec>& mine = e.config_.resources;
  std::vector<ResourceSpec> saved(in.Count("resources", 10));
  for (ResourceSpec& r : saved) {
    in.S("resources.name", &r.name);
    r.capacity = in.D("resources.capacity");
    r.fractional = in.B("resources.fractional");
  }
  std::vector<uint64_t> hashes(in.Count("parts", 1));
  for (uint64_t& h : hashes) h = in.U("parts");
  if (!in.ok()) return Status::Ok();         // the caller reports the damage
  if (e.migrate_from_) return Status::Ok();  // Reconfigure fits it
  if (saved != mine) {
    auto list = [](const std::vector<ResourceSpec>& v) {
      std::string s;
      for (const ResourceSpec& r : v) s += (s.empty() ? "" : ", ") + r.name;
      return s;
    };
    if (saved.size() != mine.size()) {
      return InvalidRequest(
          prefix + "it has " + std::to_string(saved.size()) + " resources (" +
          list(saved) + "), the configuration " + std::to_string(mine.size()) +
          " (" + list(mine) + ")" + remedy);
    }
    for (size_t i = 0; i < saved.size(); ++i) {
      if (saved[i] == mine[i]) continue;
      return InvalidRequest(prefix + "resource " + std::to_string(i) + " is " +
                            Describe(saved[i]) + " in the state, " +
                            Describe(mine[i]) + " in the configuration" +
                            remedy);
    }
  }
  const std::vector<ConfigPart> parts = ConfigParts(e.config_);
  if (version < kStateFormatVersion &&
      hashes.size() == kConfigPartsOf[version]) {
    // Saved before the later parts existed: under their defaults.
    const std::vector<ConfigPart> defaults = ConfigParts(Config::Defaults());
    for (size_t i = hashes.size(); i < parts.size(); ++i) {
      if (parts[i].hash != defaults[i].hash) {
        return InvalidRequest(prefix + "section " + parts[i].name + " differs" +
                              remedy);
      }
    }
    for (size_t i = hashes.size(); i < parts.size(); ++i) {
      hashes.push_back(parts[i].hash);
    }
  }
  if (hashes.size() != parts.size()) {
    return InvalidRequest(prefix + "it has " + std::to_string(hashes.size()) +
                          " configuration sections, this qm " +
                          std::to_string(parts.size()) + remedy);
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (hashes[i] != parts[i].hash) {
      return InvalidRequest(prefix + "section " + parts[i].name + " differs" +
                            remedy);
    }
  }
  return Status::Ok();
}

void StateCodec::LoadCore(EngineImpl& e, In& in) {
  e.now_ = Time(Duration(in.Amount("now", -kMaxTimeMs, kMaxTimeMs)));
  in.set_base(e.now_);
  e.epoch_time_ = in.T("epoch_time");
  e.last_pass_ = in.T("last_pass");
  e.next_id_ = in.U("next_id");
  e.fencing_ = in.U("fencing");
  e.event_seq_ = in.U("event_seq");
  e.active_count_ = in.I("active_count");
  e.queued_count_ = in.I("queued_count");
  e.preempting_count_ = in.I("preempting_count");
  e.queued_without_agents_ = in.I("queued_without_agents");
  e.pass_epoch_ = in.U("pass_epoch");
  e.pass_serial_ = in.U("pass_serial");
  e.relaxed_ = in.B("relaxed");
  e.dispatch_at_end_ = in.B("dispatch_at_end");
  e.timer_seq_ = in.U("timer_seq");
  // The fair-share cache: recomputed on first use.
  e.fs_cache_.clear();
  e.fs_time_ = Time{};
  e.fs_cached_version_ = UINT64_MAX;
}

void StateCodec::LoadCounters(EngineImpl& e, In& in) {
  const size_t n = in.Count("counters", kMinCounterBytes);
  if (n > UINT32_MAX - 1) {
    in.FailAt(in.Offset(), "counters", "too many counters");
    return;
  }
  e.counters_.assign(n, Counter{});
  for (size_t i = 0; i < n && in.ok(); ++i) {
    wire::Scope scope(in.r(), "counters", static_cast<int64_t>(i));
    Counter& k = e.counters_[i];
    Get(in, "kind", &k.kind);
    in.S("name", &k.name);
    k.limit = in.Amount("limit", 0, kMaxTotal);
    k.used = in.Amount("used", -kMaxTotal, kMaxTotal);
    k.releasing = in.Amount("releasing", -kMaxTotal, kMaxTotal);
    k.blocked_epoch = in.U("blocked_epoch");
    k.blocked_by = in.U("blocked_by");
    k.blocked_serial = in.U("blocked_serial");
    k.held = in.Amount("held", -kMaxTotal, kMaxTotal);
    const size_t owner_at = in.Offset();
    const uint64_t owner = in.U("owner");
    if (owner > UINT32_MAX) in.FailAt(owner_at, "owner", "not a 32-bit index");
    k.owner = static_cast<uint32_t>(owner);
    k.in_use = in.B("in_use");
    k.spent = in.Amount("spent", -kMaxTotal, kMaxTotal);
  }
  e.free_counters_.resize(in.Count("free_counters", 1));
  for (uint32_t& c : e.free_counters_) {
    c = in.Index("free_counters", e.counters_.size());
  }
  // The config-built counters (resources, budgets) are found by owner and
  // name: where Init put them, or elsewhere after a Reconfigure. (A
  // Reconfigure fits them itself: FitCounters.)
  if (!in.ok() || e.migrate_from_) return;
  std::fill(e.resource_counter_.begin(), e.resource_counter_.end(), UINT32_MAX);
  for (BudgetState& b : e.budgets_) b.counter = UINT32_MAX;
  for (size_t c = 0; c < n; ++c) {
    const Counter& k = e.counters_[c];
    if (!k.in_use) continue;
    if (k.kind == Counter::Kind::kResource &&
        k.owner < e.resource_specs_.size() &&
        e.resource_specs_[k.owner].name == k.name &&
        e.resource_counter_[k.owner] == UINT32_MAX) {
      e.resource_counter_[k.owner] = static_cast<uint32_t>(c);
    } else if (k.kind == Counter::Kind::kBudget &&
               k.owner < e.budgets_.size() &&
               e.budgets_[k.owner].counter == UINT32_MAX &&
               e.BudgetLabel(e.budgets_[k.owner]) == k.name) {
      e.budgets_[k.owner].counter = static_cast<uint32_t>(c);
    }
  }
  for (size_t i = 0; i < e.resource_counter_.size(); ++i) {
    if (e.resource_counter_[i] == UINT32_MAX) {
      in.FailAt(in.Offset(), "counters",
                "resource " + e.resource_specs_[i].name + " has no counter");
      return;
    }
  }
  for (size_t i = 0; i < e.budgets_.size(); ++i) {
    if (e.budgets_[i].counter == UINT32_MAX) {
      in.FailAt(in.Offset(), "counters",
                e.BudgetLabel(e.budgets_[i]) + " has no counter");
      return;
    }
  }
}

void StateCodec::LoadNames(EngineImpl& e, In& in) {
  const size_t counters = e.counters_.size();
  e.products_.assign(in.Count("products", 10), ProductState{});
  for (size_t i = 0; i < e.products_.size() && in.ok(); ++i) {
    wire::Scope scope(in.r(), "products", static_cast<int64_t>(i));
    ProductState& p = e.products_[i];
    in.S("name", &p.name);
    p.running_agents = in.I("running_agents");
    p.decayed = in.D("decayed");
    p.decayed_at = in.T("decayed_at");
    p.committed_end_sum = in.D("committed_end_sum");
    p.queued = in.I("queued");
    const size_t share_at = in.Offset();
    p.share = in.D("share");
    // Set from the config when the product was first named.
    auto cfg = e.config_.products.find(p.name);
    if (in.ok() && !e.migrate_from_ &&
        p.share !=
            (cfg == e.config_.products.end() ? 1.0 : cfg->second.share)) {
      in.FailAt(share_at, "share", "differs from the configured share");
    }
    p.counter = in.Index("counter", counters);
  }
  e.types_.assign(in.Count("types", 3), TypeState{});
  for (size_t i = 0; i < e.types_.size() && in.ok(); ++i) {
    wire::Scope scope(in.r(), "types", static_cast<int64_t>(i));
    TypeState& t = e.types_[i];
    in.S("name", &t.name);
    t.counter = in.Index("counter", counters);
    t.queued = in.I("queued");
  }
  GetStrings(in, "requesters", &e.requesters_);
  e.workflows_.clear();
  const size_t nw = in.Count("workflows", 6);
  for (size_t i = 0; i < nw && in.ok(); ++i) {
    wire::Scope scope(in.r(), "workflows", static_cast<int64_t>(i));
    const size_t at = in.Offset();
    std::string id = in.S("id");
    Workflow w;
    w.agents = in.OptIndex("agents", counters);
    w.cpu = in.OptIndex("cpu", counters);
    w.memory = in.OptIndex("memory", counters);
    w.refs = in.I("refs");
    w.active = in.I("active");
    if (!e.workflows_.emplace(std::move(id), w).second) {
      in.FailAt(at, "id", "repeats a workflow");
    }
  }
}

void StateCodec::LoadQueue(EngineImpl& e, In& in) {
  e.bands_.assign(in.Count("bands", 2), Band{});
  for (size_t i = 0; i < e.bands_.size() && in.ok(); ++i) {
    wire::Scope scope(in.r(), "bands", static_cast<int64_t>(i));
    Get(in, "level", &e.bands_[i].level);
    e.bands_[i].product = in.Index("product", e.products_.size());
  }
  e.lanes_.assign(in.Count("lanes", 5), Lane{});
  for (size_t i = 0; i < e.lanes_.size() && in.ok(); ++i) {
    wire::Scope scope(in.r(), "lanes", static_cast<int64_t>(i));
    Lane& l = e.lanes_[i];
    l.band = in.Index("band", e.bands_.size());
    l.type = in.Index("type", e.types_.size());
    const size_t at = in.Offset();
    l.product = in.Index("product", e.products_.size());
    l.uses_agents = in.B("uses_agents");
    l.seen_serial = in.U("seen_serial");
    if (in.ok() && e.bands_[l.band].product != l.product) {
      in.FailAt(at, "product", "differs from its band's");
    }
  }
}

void StateCodec::LoadReservations(EngineImpl& e, In& in) {
  const size_t counters = e.counters_.size();
  e.next_reservation_ = in.U("next_reservation");
  e.reservations_.clear();
  const size_t n = in.Count("reservations", kMinReservationBytes);
  for (size_t i = 0; i < n && in.ok(); ++i) {
    wire::Scope scope(in.r(), "reservations", static_cast<int64_t>(i));
    Reservation r;
    const size_t num_at = in.Offset();
    r.num = in.U("num");
    in.S("id", &r.id);
    in.S("workflow_id", &r.workflow_id);
    in.S("product", &r.product);
    in.S("agent_type", &r.agent_type);
    in.S("requester", &r.requester);
    in.S("metadata", &r.metadata);
    Get(in, "level", &r.level);
    r.priority_value = static_cast<int>(in.I("priority_value"));
    r.resources.resize(in.Count("resources", 2));
    for (auto& [idx, m] : r.resources) {
      idx = in.Index("resources", e.resource_specs_.size());
      m = in.Amount("resources", 0, kMaxAmount);
    }
    r.demand.resize(in.Count("demand", 2));
    for (auto& [c, m] : r.demand) {
      c = in.Index("demand", counters);
      m = in.Amount("demand", 0, kMaxAmount);
    }
    r.start = in.T("start");
    r.duration = in.Dur("duration");
    r.period = in.Dur("period");
    r.until = GetOptT(in, "until");
    Get(in, "state", &r.state);
    r.win_start = in.T("win_start");
    r.win_end = in.T("win_end");
    r.booked_through = in.T("booked_through");
    r.grace_over = in.B("grace_over");
    const size_t left_at = in.Offset();
    r.left.resize(in.Count("left", 1));
    for (Milli& m : r.left) m = in.Amount("left", 0, kMaxAmount);
    r.shortfall.resize(in.Count("shortfall", 1));
    for (Milli& m : r.shortfall) m = in.Amount("shortfall", 0, kMaxAmount);
    if (in.ok() && (r.left.size() != r.demand.size() ||
                    r.shortfall.size() != r.demand.size())) {
      in.FailAt(left_at, "left", "is not one entry per demand entry");
    }
    r.short_since = in.T("short_since");
    const size_t nc = in.Count("claimants", 1);
    for (size_t k = 0; k < nc && in.ok(); ++k) {
      r.claimants.insert(r.claimants.end(), in.U("claimants"));
    }
    GetStrings(in, "warnings", &r.warnings);
    r.ended_at = in.T("ended_at");
    r.accepted_fence = in.U("accepted_fence");
    if (!in.ok()) break;
    // What Reserve accepts and the windows it books: the engine's loops
    // over windows count on it.
    constexpr Duration kDay = hours(24);
    const bool once = r.period.count() == 0;
    auto aligned = [&](Time t) {
      return once ? t == r.start
                  : t >= r.start && (t - r.start) % r.period == Duration(0);
    };
    if ((!once && r.period != kDay && r.period != 7 * kDay) ||
        r.duration.count() <= 0 || (!once && r.duration > r.period) ||
        r.win_end != r.win_start + r.duration || !aligned(r.win_start) ||
        !aligned(r.booked_through)) {
      in.FailAt(num_at, "windows",
                "reservation " + r.id + " has windows Reserve never books");
      break;
    }
    const uint64_t num = r.num;
    if (num == 0 || !e.reservations_.emplace(num, std::move(r)).second) {
      in.FailAt(num_at, "num", "zero or repeated");
    }
  }
  e.timelines_.clear();
  const size_t nt = in.Count("timelines", 2);
  for (size_t i = 0; i < nt && in.ok(); ++i) {
    wire::Scope scope(in.r(), "timelines", static_cast<int64_t>(i));
    const size_t at = in.Offset();
    const uint32_t c = in.Index("counter", counters);
    if (!in.ok()) break;
    auto [it, fresh] = e.timelines_.try_emplace(c);
    if (!fresh) {
      in.FailAt(at, "counter", "repeats a timeline");
      break;
    }
    const size_t ni = in.Count("intervals", 4);
    for (size_t k = 0; k < ni && in.ok(); ++k) {
      const size_t iv_at = in.Offset();
      const uint64_t id = in.U("intervals.id");
      const Time start = in.T("intervals.start");
      const Time end = in.T("intervals.end");
      const int64_t amount = in.Amount("intervals.amount", 1, kMaxAmount);
      if (!in.ok()) break;
      if (!e.reservations_.count(id) || start >= end || amount <= 0) {
        in.FailAt(iv_at, "intervals",
                  "not a booking of a known reservation (id " +
                      std::to_string(id) + ")");
        break;
      }
      it->second.Add(id, start, end, amount);
    }
  }
  e.bookings_ = in.I("bookings");
  e.short_windows_ = in.I("short_windows");
  e.booking_violations_ = in.I("booking_violations");
  in.S("booking_violation", &e.booking_violation_);
}

void StateCodec::LoadAllocs(EngineImpl& e, In& in) {
  const size_t buckets_at = in.Offset();
  const uint64_t buckets = in.U("bucket_count");
  const size_t n = in.Count("allocations", kMinAllocBytes);
  if (!in.ok()) return;
  // A table never has more buckets than about twice the most allocations
  // it held, which next_id bounds.
  if (buckets > 3 * std::min<uint64_t>(e.next_id_, uint64_t{1} << 40) + 64 ||
      buckets > (uint64_t{1} << 31)) {
    in.FailAt(buckets_at, "bucket_count",
              std::to_string(buckets) + " buckets for ids below " +
                  std::to_string(e.next_id_));
    return;
  }
  e.allocs_.clear();
  if (buckets > e.allocs_.bucket_count()) {
    e.allocs_.rehash(static_cast<size_t>(buckets));
  }
  for (size_t i = 0; i < n && in.ok(); ++i) {
    wire::Scope scope(in.r(), "allocations", static_cast<int64_t>(i));
    const size_t at = in.Offset();
    const uint64_t id = in.U("id");
    if (!in.ok()) break;
    if (id == 0 || id >= e.next_id_) {
      in.FailAt(at, "id",
                "alloc_" + std::to_string(id) + " is not below next_id " +
                    std::to_string(e.next_id_));
      break;
    }
    auto [it, fresh] = e.allocs_.try_emplace(id);
    if (!fresh) {
      in.FailAt(at, "id", "alloc_" + std::to_string(id) + " repeats");
      break;
    }
    it->second.id = id;
    LoadAlloc(e, in, it->second);
  }
}

void StateCodec::LoadAlloc(EngineImpl& e, In& in, Alloc& a) {
  const size_t counters = e.counters_.size();
  const size_t flags_at = in.Offset();
  const uint64_t flags = in.U("flags");
  if (flags & ~uint64_t{kAllFlags}) {
    in.FailAt(flags_at, "flags", "unknown flags (written by a newer qm?)");
    return;
  }
  RequestCore& q = a.req;
  a.holding = flags & kHolding;
  a.expiring = flags & kExpiring;
  a.starvation_alerted = flags & kStarvationAlerted;
  a.preempted_someone = flags & kPreemptedSomeone;
  q.wait_for_budget = flags & kWaitForBudget;
  q.preemptible = flags & kPreemptible;
  q.requeue_on_preempt = flags & kRequeueOnPreempt;
  Get(in, "status", &a.status);
  in.S("workflow_id", &q.workflow_id);
  Get(in, "level", &q.level);
  q.priority_value = static_cast<int>(in.I("priority_value"));
  q.agents = in.Amount("agents", 0, kMaxAmount);
  if (flags & kHasEstimatedTokens) {
    q.estimated_tokens = in.Amount("estimated_tokens", 0, INT64_MAX);
  }
  const size_t minutes_at = in.Offset();
  if (flags & kHasEstimatedMinutes) {
    q.estimated_minutes = in.D("estimated_minutes");
    if (in.ok() &&
        !(*q.estimated_minutes >= 0 && *q.estimated_minutes <= 1e7)) {
      in.FailAt(minutes_at, "estimated_minutes", "out of range");
    }
  }
  const size_t tasks_at = in.Offset();
  q.blocks = in.I("blocks");
  q.total_tasks = in.I("total_tasks");
  if (in.ok() &&
      (q.total_tasks < 1 || q.blocks < 0 || q.blocks > q.total_tasks)) {
    in.FailAt(tasks_at, "blocks", "not within 0..total_tasks");
  }
  q.ttl = in.Dur("ttl");
  q.max_duration = in.Dur("max_duration");
  a.product = in.Index("product", e.products_.size());
  a.type = in.Index("type", e.types_.size());
  a.requester = in.Index("requester", e.requesters_.size());
  a.demand.resize(in.Count("demand", 2));
  for (auto& [c, m] : a.demand) {
    c = in.Index("demand", counters);
    m = in.Amount("demand", 0, kMaxAmount);
  }
  a.fencing = in.U("fencing");
  a.queued_at = in.T("queued_at");
  a.granted_at = in.T("granted_at");
  a.expires_at = in.T("expires_at");
  a.ended_at = in.T("ended_at");
  a.expected_end = in.T("expected_end");
  a.preempt_deadline = in.T("preempt_deadline");
  a.queue_gen = in.U("queue_gen");
  a.preempted_by = in.U("preempted_by");
  a.preempted_by_fence = in.U("preempted_by_fence");
  if (a.status == AllocStatus::kQueued) {
    const size_t lane_at = in.Offset();
    a.lane = in.Index("lane", e.lanes_.size());
    a.qkey = QKey{in.D("qkey"), a.queued_at.time_since_epoch().count(), a.id};
    Get(in, "wait.kind", &a.wait.kind);
    a.wait.counter = in.Index("wait.counter", counters);
    a.wait.need = in.I("wait.need");
    a.wait.other = in.U("wait.other");
    if (in.ok()) {
      const Lane& l = e.lanes_[a.lane];
      if (l.type != a.type || l.product != a.product ||
          l.uses_agents != (q.agents > 0) ||
          e.bands_[l.band].level != q.level) {
        in.FailAt(lane_at, "lane",
                  "lane " + std::to_string(a.lane) +
                      " is not of the request's level, product and type");
      }
    }
  }
  if (flags & kHasExtras) {
    AllocExtras& x = a.Extras();
    in.S("metadata", &x.metadata);
    in.S("idempotency_key", &x.idempotency_key);
    if (in.B("usage")) Get(in, &x.usage.emplace());
    in.S("end_reason", &x.end_reason);
  }
  if (flags & kHasMoney) {
    a.money = std::make_unique<AllocMoney>();
    AllocMoney& m = *a.money;
    in.S("money.model", &m.model);
    const size_t reason_at = in.Offset();
    const uint8_t reason = in.Byte("money.reason");
    if (reason < std::size(kModelReasons)) {
      m.reason = kModelReasons[reason];
    } else {
      in.FailAt(reason_at, "money.reason",
                "unknown model reason " + std::to_string(reason) +
                    " (written by a newer qm?)");
    }
    m.rule = static_cast<int>(in.I("money.rule"));
    in.S("money.downgraded_from", &m.downgraded_from);
    in.S("money.downgrade_note", &m.downgrade_note);
    m.max_tokens = GetOptI(in, "money.max_tokens");
    m.max_tokens_limit = GetOptI(in, "money.max_tokens_limit");
    m.reserved_tokens = in.Amount("money.reserved_tokens", 0, kMaxTotal);
    m.reserved_micro = in.Amount("money.reserved_micro", 0, kMaxTotal);
    m.used_tokens = in.Amount("money.used_tokens", 0, kMaxTotal);
    m.used_micro = in.Amount("money.used_micro", 0, kMaxTotal);
    m.over_budget = in.B("money.over_budget");
    GetStrings(in, "money.report_ids", &m.report_ids);
    m.learned = in.B("money.learned");
  }
  if (flags & kHasLocks) {
    a.locks = std::make_unique<AllocLocks>();
    AllocLocks& l = *a.locks;
    // The paths go into one buffer (LockSpec::path views it).
    std::vector<std::string> texts(in.Count("locks", 2));
    l.locks.resize(texts.size());
    size_t total = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      in.S("locks.path", &texts[i]);
      total += texts[i].size();
      l.locks[i].exclusive = in.B("locks.exclusive");
    }
    // (The root, "", is shown as ".".)
    auto text = std::make_unique_for_overwrite<char[]>(total + texts.size());
    std::vector<PathLockInfo> shown(texts.size());
    char* at = text.get();
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string_view show =
          texts[i].empty() ? std::string_view(".") : texts[i];
      std::copy(show.begin(), show.end(), at);
      l.locks[i].path = std::string_view(at, texts[i].size());
      l.locks[i].set_key(paths::LockTable::Key(l.locks[i].path));
      shown[i] = {std::string_view(at, show.size()), l.locks[i].exclusive};
      at += show.size();
    }
    l.list = PathLockList::Adopt(std::move(text), std::move(shown));
    GetStrings(in, "locks.avoid", &l.avoid);
    l.rank_level = static_cast<int>(in.I("locks.rank_level"));
    l.rank_ms = in.Amount("locks.rank_ms", -kMaxTimeMs, kMaxTimeMs);
    Get(in, "locks.where", &l.where);
    l.exempt = in.B("locks.exempt");
    Get(in, "locks.gate", &l.gate);
    l.gate_on = in.U("locks.gate_on");
    in.S("locks.subject", &l.subject);
    in.S("locks.other_path", &l.other_path);
    l.own_exclusive = in.B("locks.own_exclusive");
    l.other_exclusive = in.B("locks.other_exclusive");
    l.conflict = in.U("locks.conflict");
    l.preempt_tried = in.B("locks.preempt_tried");
    GetStrings(in, "locks.warnings", &l.warnings);
    const size_t res_at = in.Offset();
    l.reservation = in.U("locks.reservation");
    if (in.ok() && l.reservation != 0 &&
        !e.reservations_.count(l.reservation)) {
      in.FailAt(res_at, "locks.reservation",
                "no reservation " + std::to_string(l.reservation));
    }
    l.drew_window = in.T("locks.drew_window");
    l.drawn.resize(in.Count("locks.drawn", 2));
    for (auto& [c, m] : l.drawn) {
      c = in.Index("locks.drawn", counters);
      m = in.Amount("locks.drawn", 0, kMaxAmount);
    }
    if (in.ok() && !l.drawn.empty() && l.reservation == 0) {
      in.FailAt(res_at, "locks.drawn", "drawn from no reservation");
    }
  }
}

void StateCodec::LoadHistory(EngineImpl& e, In& in) {
  e.history_.clear();
  const size_t n = in.Count("history", 1);
  // Retire erases what the history names: each entry must be an ended
  // allocation, named once.
  absl::flat_hash_set<uint64_t> seen;
  for (size_t i = 0; i < n && in.ok(); ++i) {
    const size_t at = in.Offset();
    const uint64_t id = in.U("history");
    if (!in.ok()) break;
    auto it = e.allocs_.find(id);
    if (it == e.allocs_.end() || !it->second.Ended()) {
      in.FailAt(at, "history",
                "alloc_" + std::to_string(id) + " has not ended");
    } else if (!seen.insert(id).second) {
      in.FailAt(at, "history",
                "alloc_" + std::to_string(id) + " is named twice");
    } else {
      e.history_.push_back(&it->second);
    }
  }
  e.idempotency_.clear();
  const size_t nk = in.Count("idempotency", 2);
  for (size_t i = 0; i < nk && in.ok(); ++i) {
    const size_t at = in.Offset();
    std::string key = in.S("idempotency.key");
    const uint64_t id = in.U("idempotency.id");
    if (!in.ok()) break;
    auto it = e.allocs_.find(id);
    if (it == e.allocs_.end() || it->second.idempotency_key() != key ||
        !e.idempotency_.emplace(std::move(key), id).second) {
      in.FailAt(at, "idempotency",
                "a key of no allocation (alloc_" + std::to_string(id) + ")");
    }
  }
}

void StateCodec::LoadTimers(EngineImpl& e, In& in) {
  std::vector<Timer> timers(in.Count("timers", kMinTimerBytes));
  for (size_t i = 0; i < timers.size() && in.ok(); ++i) {
    Timer& t = timers[i];
    t.at = in.T("timers.at");
    t.seq = in.U("timers.seq");
    t.id = in.U("timers.id");
    Get(in, "timers.kind", &t.kind);
    t.gen = in.U("timers.gen");
  }
  if (!in.ok()) return;
  e.timers_ = decltype(e.timers_)(std::greater<Timer>(), std::move(timers));
}

void StateCodec::LoadMoney(EngineImpl& e, In& in) {
  e.period_start_ = in.T("period_start");
  e.period_end_ = in.T("period_end");
  e.period_tokens_ = in.Amount("period_tokens", 0, kMaxTotal);
  e.period_micro_ = in.Amount("period_micro", 0, kMaxTotal);
  auto get_spend = [&](Spend* s) {
    s->tasks = in.I("spend.tasks");
    s->tokens = in.Amount("spend.tokens", 0, kMaxTotal);
    s->micro = in.Amount("spend.micro", 0, kMaxTotal);
  };
  e.spend_by_model_.clear();
  const size_t nm = in.Count("spend_by_model", 4);
  for (size_t i = 0; i < nm && in.ok(); ++i) {
    std::string model = in.S("spend_by_model");
    get_spend(&e.spend_by_model_[std::move(model)]);
  }
  const size_t products_at = in.Offset();
  e.spend_by_product_.assign(in.Count("spend_by_product", 3), Spend{});
  for (Spend& s : e.spend_by_product_) get_spend(&s);
  if (in.ok() && e.spend_by_product_.size() > e.products_.size()) {
    in.FailAt(products_at, "spend_by_product", "more entries than products");
  }
  const size_t types_at = in.Offset();
  e.spend_by_type_.assign(in.Count("spend_by_type", 3), Spend{});
  for (Spend& s : e.spend_by_type_) get_spend(&s);
  if (in.ok() && e.spend_by_type_.size() > e.types_.size()) {
    in.FailAt(types_at, "spend_by_type", "more entries than agent types");
  }
  e.alerts_.assign(in.Count("alerts", 11), BudgetAlert{});
  for (BudgetAlert& a : e.alerts_) {
    a.time = in.T("alerts.time");
    in.S("alerts.budget", &a.budget);
    a.threshold_percent = in.D("alerts.threshold_percent");
    in.S("alerts.message", &a.message);
  }
  e.burn_.clear();
  const size_t nb = in.Count("burn", 3);
  for (size_t i = 0; i < nb && in.ok(); ++i) {
    const int64_t minute = in.Amount("burn.minute", -kMaxTimeMs, kMaxTimeMs);
    const int64_t tokens = in.Amount("burn.tokens", 0, kMaxTotal);
    const int64_t micro = in.Amount("burn.micro", 0, kMaxTotal);
    e.burn_.push_back({minute, {tokens, micro}});
  }
  {
    BreakerState& b = e.breaker_;
    b.open = in.B("breaker.open");
    in.S("breaker.action", &b.action);
    in.S("breaker.condition", &b.condition);
    b.tripped_at = GetOptT(in, "breaker.tripped_at");
    b.closes_at = GetOptT(in, "breaker.closes_at");
    b.allow_override = in.B("breaker.allow_override");
    b.overridden = in.B("breaker.overridden");
    in.S("breaker.override_by", &b.override_by);
    in.S("breaker.override_reason", &b.override_reason);
  }
  e.paused_ = in.B("paused");
  in.S("paused_by", &e.paused_by_);
  in.S("paused_reason", &e.paused_reason_);
  e.priority_overrides_.clear();
  const size_t no = in.Count("priority_overrides", 2);
  for (size_t i = 0; i < no && in.ok(); ++i) {
    std::string product = in.S("priority_overrides.product");
    Level level = Level::kNormal;
    Get(in, "priority_overrides.level", &level);
    e.priority_overrides_[std::move(product)] = level;
  }
  e.learned_.clear();
  const size_t nl = in.Count("learned", 31);
  for (size_t i = 0; i < nl && in.ok(); ++i) {
    wire::Scope scope(in.r(), "learned", static_cast<int64_t>(i));
    Learned& l = e.learned_[in.S("type")];
    l.samples = in.I("samples");
    l.token_ratio = in.D("token_ratio");
    l.minute_ratio = in.D("minute_ratio");
    l.minute_samples = in.I("minute_samples");
    l.last_est_tokens = GetOptI(in, "last_est_tokens");
    l.last_actual_tokens = GetOptI(in, "last_actual_tokens");
    l.last_est_minutes = GetOptD(in, "last_est_minutes");
    l.last_actual_minutes = GetOptD(in, "last_actual_minutes");
    in.S("accuracy", &l.accuracy);
  }
  const size_t budgets_at = in.Offset();
  const size_t nbud = in.Count("budgets", 1);
  if (e.migrate_from_) {
    // The old engine's budgets: FitCounters takes their flags from it.
    for (size_t i = 0; i < nbud && in.ok(); ++i) {
      const size_t na = in.Count("budgets.alerted", 1);
      for (size_t k = 0; k < na; ++k) in.B("budgets.alerted");
    }
  } else if (in.ok() && nbud != e.budgets_.size()) {
    in.FailAt(budgets_at, "budgets",
              std::to_string(nbud) + " budgets, the config has " +
                  std::to_string(e.budgets_.size()));
    return;
  }
  for (size_t i = 0; !e.migrate_from_ && i < nbud && in.ok(); ++i) {
    std::vector<bool>& alerted = e.budgets_[i].alerted;
    const size_t at = in.Offset();
    const size_t na = in.Count("budgets.alerted", 1);
    if (in.ok() && na != alerted.size()) {
      in.FailAt(at, "budgets.alerted", "not one flag per alert threshold");
      return;
    }
    for (size_t k = 0; k < na; ++k) alerted[k] = in.B("budgets.alerted");
  }
  e.metrics_since_ = in.T("metrics_since");
  const size_t busy_at = in.Offset();
  e.busy_agent_ms_.assign(in.Count("busy_agent_ms", 8), 0.0);
  for (double& ms : e.busy_agent_ms_) ms = in.D("busy_agent_ms");
  if (in.ok() && e.busy_agent_ms_.size() > e.types_.size()) {
    in.FailAt(busy_at, "busy_agent_ms", "more entries than agent types");
  }
  e.tasks_completed_ = in.I("tasks_completed");
  e.tasks_completed_tokens_ = in.Amount("tasks_completed_tokens", 0, kMaxTotal);
  e.tasks_completed_micro_ = in.Amount("tasks_completed_micro", 0, kMaxTotal);
  e.tasks_started_ = in.I("tasks_started");
  e.tasks_waited_ = in.I("tasks_waited");
  e.wait_ms_sum_ = in.D("wait_ms_sum");
  e.wait_ms_max_ = in.D("wait_ms_max");
}

void StateCodec::LoadConflicts(EngineImpl& e, In& in) {
  Get(in, &e.global_policy_);
  e.product_policies_.clear();
  const size_t np = in.Count("product_policies", 3);
  for (size_t i = 0; i < np && in.ok(); ++i) {
    std::string product = in.S("product_policies.product");
    Get(in, &e.product_policies_[std::move(product)]);
  }
  // The tables of a freshly Init()ed engine are empty (LockTable cannot be
  // reassigned): the locks are added to them.
  assert(e.held_locks_.size() == 0 && e.claimed_locks_.size() == 0);
  auto load_table = [&](const char* field, AllocLocks::Where where,
                        paths::LockTable& t) {
    const size_t n = in.Count(field, 2);
    for (size_t i = 0; i < n && in.ok(); ++i) {
      const size_t at = in.Offset();
      const uint64_t owner = in.U(field);
      const uint64_t index = in.U(field);
      if (!in.ok()) return;
      auto it = e.allocs_.find(owner);
      LockSpec* lock = nullptr;
      if (it != e.allocs_.end() && it->second.locks &&
          it->second.locks->where == where &&
          index < it->second.locks->locks.size()) {
        lock = &it->second.locks->locks[index];
      }
      if (lock == nullptr || lock->at != nullptr) {
        in.FailAt(at, field,
                  "lock " + std::to_string(index) + " of alloc_" +
                      std::to_string(owner) +
                      " is not one recorded there (or repeats)");
        return;
      }
      lock->at = t.Add(lock->path, lock->exclusive, owner);
    }
  };
  load_table("held_locks", AllocLocks::Where::kHeld, e.held_locks_);
  load_table("claimed_locks", AllocLocks::Where::kClaimed, e.claimed_locks_);
  e.gated_on_.clear();
  const size_t ng = in.Count("gated_on", 2);
  for (size_t i = 0; i < ng && in.ok(); ++i) {
    const uint64_t on = in.U("gated_on");
    GetIds(in, "gated_on", &e.gated_on_[on]);
  }
  e.gated_on_wf_.clear();
  const size_t ngw = in.Count("gated_on_wf", 2);
  for (size_t i = 0; i < ngw && in.ok(); ++i) {
    std::string wf = in.S("gated_on_wf");
    GetIds(in, "gated_on_wf", &e.gated_on_wf_[std::move(wf)]);
  }
  GetIds(in, "wakes", &e.wakes_);
  GetStrings(in, "wf_wakes", &e.wf_wakes_);
  e.gated_count_ = in.I("gated_count");
  e.track_wf_active_ = in.B("track_wf_active");
  e.next_conflict_ = in.U("next_conflict");
  e.open_conflicts_.clear();
  const size_t no = in.Count("open_conflicts", 1 + kMinConflictBytes);
  for (size_t i = 0; i < no && in.ok(); ++i) {
    wire::Scope scope(in.r(), "open_conflicts", static_cast<int64_t>(i));
    const uint64_t n = in.U("num");
    Get(in, &e.open_conflicts_[n]);
  }
  e.resolved_conflicts_.clear();
  const size_t nr = in.Count("resolved_conflicts", kMinConflictBytes);
  for (size_t i = 0; i < nr && in.ok(); ++i) {
    wire::Scope scope(in.r(), "resolved_conflicts", static_cast<int64_t>(i));
    Get(in, &e.resolved_conflicts_.emplace_back());
  }
  e.fencing_owner_.clear();
  const size_t nf = in.Count("fencing_owner", 2);
  for (size_t i = 0; i < nf && in.ok(); ++i) {
    const uint64_t token = in.U("fencing_owner.token");
    e.fencing_owner_[token] = in.U("fencing_owner.id");
  }
}

Status StateCodec::Link(EngineImpl& e) {
  auto bad = [](const std::string& what) {
    return DataLoss("engine state is inconsistent: " + what);
  };
  const size_t nc = e.counters_.size();
  // Counters name their owners, and the owners their counters.
  size_t unused = 0;
  for (size_t c = 0; c < nc; ++c) {
    const Counter& k = e.counters_[c];
    if (!k.in_use) {
      ++unused;
      continue;
    }
    const std::string name = "counter " + std::to_string(c);
    switch (k.kind) {
      case Counter::Kind::kResource:
        if (k.owner >= e.resource_counter_.size() ||
            e.resource_counter_[k.owner] != c) {
          return bad(name + " is no resource's");
        }
        break;
      case Counter::Kind::kAgentType:
        if (k.owner >= e.types_.size() || e.types_[k.owner].counter != c) {
          return bad(name + " is no agent type's");
        }
        break;
      case Counter::Kind::kProduct:
        if (k.owner >= e.products_.size() ||
            e.products_[k.owner].counter != c) {
          return bad(name + " is no product's");
        }
        break;
      case Counter::Kind::kBudget:
        if (k.owner >= e.budgets_.size() || e.budgets_[k.owner].counter != c) {
          return bad(name + " is no budget's");
        }
        break;
      case Counter::Kind::kWorkflow:
        break;
    }
  }
  {
    std::vector<bool> freed(nc, false);
    for (uint32_t c : e.free_counters_) {
      if (e.counters_[c].in_use || freed[c]) {
        return bad("free counter " + std::to_string(c) +
                   " is in use or listed twice");
      }
      freed[c] = true;
    }
    if (e.free_counters_.size() != unused) {
      return bad("unused counters are missing from the free list");
    }
  }
  auto counter_of = [&](uint32_t c, Counter::Kind kind) {
    return c < nc && e.counters_[c].in_use && e.counters_[c].kind == kind;
  };
  e.type_index_.clear();
  for (size_t i = 0; i < e.types_.size(); ++i) {
    const TypeState& t = e.types_[i];
    if (!counter_of(t.counter, Counter::Kind::kAgentType) ||
        e.counters_[t.counter].owner != i ||
        !e.type_index_.emplace(t.name, static_cast<uint32_t>(i)).second) {
      return bad("agent type " + std::to_string(i) +
                 " repeats a name or has no counter");
    }
  }
  e.product_index_.clear();
  for (size_t i = 0; i < e.products_.size(); ++i) {
    const ProductState& p = e.products_[i];
    if (!counter_of(p.counter, Counter::Kind::kProduct) ||
        e.counters_[p.counter].owner != i ||
        !e.product_index_.emplace(p.name, static_cast<uint32_t>(i)).second) {
      return bad("product " + std::to_string(i) +
                 " repeats a name or has no counter");
    }
  }
  e.requester_index_.clear();
  for (size_t i = 0; i < e.requesters_.size(); ++i) {
    if (!e.requester_index_.emplace(e.requesters_[i], static_cast<uint32_t>(i))
             .second) {
      return bad("requester " + std::to_string(i) + " repeats a name");
    }
  }
  for (const auto& [id, w] : e.workflows_) {
    for (uint32_t c : {w.agents, w.cpu, w.memory}) {
      if (c != UINT32_MAX && !counter_of(c, Counter::Kind::kWorkflow)) {
        return bad("workflow " + id + " names counter " + std::to_string(c) +
                   ", no workflow counter in use");
      }
    }
  }
  // Lanes and bands: their indexes, in creation (index) order.
  e.lane_index_.clear();
  e.band_index_.clear();
  e.type_lanes_.assign(e.types_.size(), {});
  e.product_lanes_.assign(e.products_.size(), {});
  for (size_t b = 0; b < e.bands_.size(); ++b) {
    const Band& band = e.bands_[b];
    if (!e.band_index_
             .emplace(
                 std::make_pair(static_cast<int>(band.level), band.product),
                 static_cast<uint32_t>(b))
             .second) {
      return bad("band " + std::to_string(b) + " repeats another");
    }
  }
  for (size_t li = 0; li < e.lanes_.size(); ++li) {
    const Lane& lane = e.lanes_[li];
    const uint64_t key =
        (static_cast<uint64_t>(e.bands_[lane.band].level) << 62) |
        (static_cast<uint64_t>(lane.uses_agents) << 61) |
        (static_cast<uint64_t>(lane.product) << 30) | lane.type;
    if (!e.lane_index_.emplace(key, static_cast<uint32_t>(li)).second) {
      return bad("lane " + std::to_string(li) + " repeats another");
    }
    e.type_lanes_[lane.type].push_back(static_cast<uint32_t>(li));
    e.product_lanes_[lane.product].push_back(static_cast<uint32_t>(li));
  }
  // Allocations: demands name counters in use; lane members and counter
  // holders come from them. Both are filled from sorted runs (a B-tree
  // appends a sorted run cheaply).
  std::vector<std::vector<QKey>> members(e.lanes_.size());
  std::vector<uint32_t> holder_count(nc, 0);
  for (const auto& [id, a] : e.allocs_) {
    // (A finished allocation's demand may name counters freed since.)
    const bool live = a.holding || a.status == AllocStatus::kQueued;
    for (const auto& [c, m] : a.demand) {
      if (live && !e.counters_[c].in_use) {
        return bad("alloc_" + std::to_string(id) + " uses unused counter " +
                   std::to_string(c));
      }
      if (a.holding && e.TracksHolders(c)) ++holder_count[c];
    }
    if (a.status == AllocStatus::kQueued) members[a.lane].push_back(a.qkey);
    // Locks recorded in a table are all there (LoadConflicts placed them).
    if (a.locks && a.locks->where != AllocLocks::Where::kNone) {
      for (const LockSpec& l : a.locks->locks) {
        if (l.at == nullptr) {
          return bad("alloc_" + std::to_string(id) +
                     " has a lock missing from its lock table");
        }
      }
    }
  }
  std::vector<std::vector<std::pair<Time, uint64_t>>> holders(nc);
  for (size_t c = 0; c < nc; ++c) holders[c].reserve(holder_count[c]);
  for (const auto& [id, a] : e.allocs_) {
    if (!a.holding) continue;
    for (const auto& [c, m] : a.demand) {
      if (e.TracksHolders(c)) holders[c].emplace_back(a.expected_end, id);
    }
  }
  for (size_t c = 0; c < nc; ++c) {
    std::vector<std::pair<Time, uint64_t>>& h = holders[c];
    std::sort(h.begin(), h.end());
    if (std::adjacent_find(h.begin(), h.end()) != h.end()) {
      return bad("an allocation names counter " + std::to_string(c) +
                 " twice in its demand");
    }
    e.counters_[c].holders.clear();
    e.counters_[c].holders.insert(h.begin(), h.end());
  }
  e.active_bands_.clear();
  for (Band& band : e.bands_) band.lanes.clear();  // (Reconfigure links twice)
  for (size_t li = 0; li < e.lanes_.size(); ++li) {
    std::vector<QKey>& m = members[li];
    std::sort(m.begin(), m.end(), QKeyBefore());
    Lane& lane = e.lanes_[li];
    lane.members.clear();
    lane.members.insert(m.begin(), m.end());
    Band& band = e.bands_[lane.band];
    if (!m.empty()) {
      band.lanes.insert({*lane.members.begin(), static_cast<uint32_t>(li)});
      e.active_bands_.insert(lane.band);
    }
  }
  // Reservations by id.
  e.reservation_ids_.clear();
  for (const auto& [num, r] : e.reservations_) {
    if (!e.reservation_ids_.emplace(r.id, num).second) {
      return bad("reservation id " + r.id + " repeats");
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- reload

namespace {

// A budget's identity across configs.
bool SameBudget(const BudgetState& a, const BudgetState& b) {
  return a.scope == b.scope && a.metric == b.metric && a.name == b.name;
}

// The lines Reconfigure reports: resources one by one, the other sections
// by name.
std::vector<std::string> DescribeChanges(const Config& before,
                                         const Config& after) {
  std::vector<std::string> out;
  auto find = [](const std::vector<ResourceSpec>& v, const std::string& n) {
    return std::find_if(v.begin(), v.end(),
                        [&](const ResourceSpec& r) { return r.name == n; });
  };
  for (const ResourceSpec& r : after.resources) {
    auto it = find(before.resources, r.name);
    if (it == before.resources.end()) {
      out.push_back("resources." + r.name + ": added, capacity " +
                    FormatNumber(r.capacity));
    } else if (it->capacity != r.capacity) {
      out.push_back("resources." + r.name +
                    ".capacity: " + FormatNumber(it->capacity) + " -> " +
                    FormatNumber(r.capacity));
    } else if (it->fractional != r.fractional) {
      out.push_back("resources." + r.name + ".fractional: " +
                    (r.fractional ? "false -> true" : "true -> false"));
    }
  }
  for (const ResourceSpec& r : before.resources) {
    if (find(after.resources, r.name) == after.resources.end()) {
      out.push_back("resources." + r.name + ": removed");
    }
  }
  const std::vector<ConfigPart> a = ConfigParts(before);
  const std::vector<ConfigPart> b = ConfigParts(after);
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i].hash != b[i].hash)
      out.push_back(std::string(b[i].name) + ": changed");
  }
  return out;
}

}  // namespace

Status StateCodec::FitCounters(EngineImpl& e, const EngineImpl& old) {
  const size_t nc = e.counters_.size();
  // Counters that stop being used; their references go first.
  std::vector<bool> retire(nc, false);
  std::vector<std::string> retired_name(nc);

  // Resources, by name. `old.resource_counter_` indexes e.counters_ too:
  // they were loaded from old's state.
  std::vector<uint32_t> old_to_new(old.resource_specs_.size(), UINT32_MAX);
  std::vector<uint32_t> counter_of(e.resource_specs_.size(), UINT32_MAX);
  for (size_t j = 0; j < e.resource_specs_.size(); ++j) {
    for (size_t i = 0; i < old.resource_specs_.size(); ++i) {
      if (old.resource_specs_[i].name == e.resource_specs_[j].name) {
        old_to_new[i] = static_cast<uint32_t>(j);
        counter_of[j] = old.resource_counter_[i];
      }
    }
  }
  for (size_t i = 0; i < old.resource_specs_.size(); ++i) {
    if (old_to_new[i] != UINT32_MAX) continue;
    const uint32_t c = old.resource_counter_[i];
    const Counter& k = e.counters_[c];
    const std::string& name = old.resource_specs_[i].name;
    if (k.used != 0 || k.releasing != 0) {
      return Conflict("resource " + name +
                      " is not in the new config, but running allocations "
                      "hold " +
                      FormatMilli(k.used + k.releasing) +
                      " of it: release them first, or keep " + name);
    }
    retire[c] = true;
    retired_name[c] = "resource " + name;
  }
  // Budgets, by scope, metric and name; the old budget's counter carries
  // over with its spend. A removed one is retired.
  std::vector<bool> budget_kept(old.budgets_.size(), false);
  for (size_t j = 0; j < e.budgets_.size(); ++j) {
    BudgetState& b = e.budgets_[j];
    bool found = false;
    for (size_t i = 0; i < old.budgets_.size() && !found; ++i) {
      const BudgetState& o = old.budgets_[i];
      if (!SameBudget(o, b)) continue;
      found = true;
      budget_kept[i] = true;
      b.counter = o.counter;
      if (b.alerted.size() == o.alerted.size()) b.alerted = o.alerted;
    }
    if (!found) b.counter = UINT32_MAX;  // made below, once retired are free
  }
  for (size_t i = 0; i < old.budgets_.size(); ++i) {
    if (budget_kept[i]) continue;
    retire[old.budgets_[i].counter] = true;
    retired_name[old.budgets_[i].counter] = old.BudgetLabel(old.budgets_[i]);
  }

  // Nothing live may still need a retired resource: queued requests and
  // reservations ask for it by counter. (Retired budgets are simply dropped
  // from demands: the budget no longer limits anything.)
  for (const auto& [id, a] : e.allocs_) {
    if (!a.holding && a.status != AllocStatus::kQueued) continue;
    for (const auto& [c, m] : a.demand) {
      if (retire[c] && e.counters_[c].kind == Counter::Kind::kResource) {
        return Conflict(retired_name[c] +
                        " is not in the new config, but queued request " +
                        EngineImpl::IdText(id) +
                        " asks for it: cancel it first, or keep the resource");
      }
    }
  }
  for (const auto& [num, r] : e.reservations_) {
    if (r.state == Reservation::State::kEnded ||
        r.state == Reservation::State::kCancelled) {
      continue;
    }
    for (const auto& [c, m] : r.demand) {
      if (retire[c] && e.counters_[c].kind == Counter::Kind::kResource) {
        return Conflict(retired_name[c] +
                        " is not in the new config, but reservation " + r.id +
                        " books it: cancel it first, or keep the resource");
      }
    }
  }
  auto strip = [&](Demand& d) {
    d.erase(std::remove_if(d.begin(), d.end(),
                           [&](const auto& cm) { return retire[cm.first]; }),
            d.end());
  };
  for (auto& [id, a] : e.allocs_) {
    strip(a.demand);
    if (a.wait.counter < nc && retire[a.wait.counter]) a.wait = WaitReason{};
  }
  for (auto& [num, r] : e.reservations_) {
    for (size_t i = 0; i < r.demand.size();) {
      if (retire[r.demand[i].first]) {
        r.demand.erase(r.demand.begin() + static_cast<ptrdiff_t>(i));
        if (i < r.left.size())
          r.left.erase(r.left.begin() + static_cast<ptrdiff_t>(i));
        if (i < r.shortfall.size()) {
          r.shortfall.erase(r.shortfall.begin() + static_cast<ptrdiff_t>(i));
        }
      } else {
        ++i;
      }
    }
    // Resource indexes follow the new list (every one is kept: checked).
    for (auto& [idx, m] : r.resources) {
      if (idx < old_to_new.size() && old_to_new[idx] != UINT32_MAX) {
        idx = old_to_new[idx];
      }
    }
  }
  for (size_t c = 0; c < nc; ++c) {
    if (!retire[c]) continue;
    e.timelines_.erase(static_cast<uint32_t>(c));
    e.FreeCounter(static_cast<uint32_t>(c));
  }

  // The new config's resources and budgets on their counters.
  e.resource_counter_.assign(e.resource_specs_.size(), UINT32_MAX);
  for (size_t j = 0; j < e.resource_specs_.size(); ++j) {
    const ResourceSpec& r = e.resource_specs_[j];
    uint32_t c = counter_of[j];
    if (c == UINT32_MAX) {
      c = e.NewCounter(Counter::Kind::kResource, r.name, ToMilli(r.capacity));
    }
    e.counters_[c].owner = static_cast<uint32_t>(j);
    e.resource_counter_[j] = c;
  }
  for (size_t j = 0; j < e.budgets_.size(); ++j) {
    BudgetState& b = e.budgets_[j];
    if (b.counter == UINT32_MAX) {
      // New this period: it starts from what its scope spent so far (the
      // allocations running now reserved nothing on it).
      const Spend* spend = nullptr;
      Spend global{0, e.period_tokens_, e.period_micro_};
      if (b.scope == BudgetState::Scope::kGlobal) {
        spend = &global;
      } else if (b.scope == BudgetState::Scope::kProduct) {
        for (size_t p = 0; p < e.products_.size(); ++p) {
          if (e.products_[p].name == b.name && p < e.spend_by_product_.size()) {
            spend = &e.spend_by_product_[p];
          }
        }
      } else {
        for (size_t t = 0; t < e.types_.size(); ++t) {
          if (e.types_[t].name == b.name && t < e.spend_by_type_.size()) {
            spend = &e.spend_by_type_[t];
          }
        }
      }
      b.counter = e.NewCounter(Counter::Kind::kBudget, "", b.configured_limit);
      Counter& k = e.counters_[b.counter];
      if (spend) {
        k.spent = b.metric == BudgetState::Metric::kTokens ? spend->tokens
                                                           : spend->micro;
        k.used = k.spent;
      }
    }
    e.counters_[b.counter].owner = static_cast<uint32_t>(j);
    e.counters_[b.counter].name = e.BudgetLabel(b);
  }
  return Status::Ok();
}

Status StateCodec::FitLimits(EngineImpl& e, const EngineImpl& old) {
  // Budgets: the new configured limit, plus what RaiseLimits added this
  // period to the old one.
  for (BudgetState& b : e.budgets_) {
    Counter& k = e.counters_[b.counter];
    Milli raised = 0;
    for (const BudgetState& o : old.budgets_) {
      if (SameBudget(o, b)) {
        raised = std::max<Milli>(
            0, old.counters_[o.counter].limit - o.configured_limit);
      }
    }
    k.limit = b.configured_limit + raised;
  }
  for (size_t j = 0; j < e.resource_specs_.size(); ++j) {
    e.counters_[e.resource_counter_[j]].limit =
        ToMilli(e.resource_specs_[j].capacity);
  }
  for (const auto& [type, limit] : e.config_.per_type_limits)
    e.InternType(type);
  for (const TypeState& t : e.types_) {
    e.counters_[t.counter].limit = e.TypeLimit(t.name);
  }
  for (const auto& [name, product] : e.config_.products) e.InternProduct(name);
  for (ProductState& p : e.products_) {
    e.counters_[p.counter].limit = e.ProductLimit(p.name);
    auto cfg = e.config_.products.find(p.name);
    p.share = cfg == e.config_.products.end() ? 1.0 : cfg->second.share;
  }
  const AllocationLimits& al = e.config_.allocation_limits;
  for (const auto& [id, w] : e.workflows_) {
    if (w.agents != UINT32_MAX) {
      e.counters_[w.agents].limit = al.max_agents_per_workflow
                                        ? *al.max_agents_per_workflow * 1000
                                        : kUnlimited;
    }
    if (w.cpu != UINT32_MAX) {
      e.counters_[w.cpu].limit = al.max_cpu_per_workflow
                                     ? ToMilli(*al.max_cpu_per_workflow)
                                     : kUnlimited;
    }
    if (w.memory != UINT32_MAX) {
      e.counters_[w.memory].limit = al.max_memory_per_workflow
                                        ? ToMilli(*al.max_memory_per_workflow)
                                        : kUnlimited;
    }
  }
  // A limit below what is held now would leave the engine over it: refused
  // (a budget may be overspent, as usage beyond a reservation is a fact).
  for (const Counter& k : e.counters_) {
    if (!k.in_use || k.kind == Counter::Kind::kBudget) continue;
    if (k.used + k.releasing > k.limit) {
      const char* what = k.kind == Counter::Kind::kResource    ? "resource "
                         : k.kind == Counter::Kind::kAgentType ? "agent type "
                         : k.kind == Counter::Kind::kProduct   ? "product "
                                                               : "workflow ";
      return Conflict("the new limit of " + std::string(what) + k.name + " (" +
                      FormatMilli(k.limit) + ") is below the " +
                      FormatMilli(k.used + k.releasing) +
                      " that running allocations hold: release some first, "
                      "or lower it once they have ended");
    }
  }
  // Lock policies: from the new config when its conflicts section changed.
  if (old.workspace_root_ != e.workspace_root_ &&
      (e.held_locks_.size() != 0 || e.claimed_locks_.size() != 0)) {
    return Conflict(
        "conflicts.workspace_root moves from " + Quote(old.workspace_root_) +
        " to " + Quote(e.workspace_root_) + " while " +
        std::to_string(e.held_locks_.size() + e.claimed_locks_.size()) +
        " path locks are held or claimed under it: release them "
        "first");
  }
  const std::vector<ConfigPart> before = ConfigParts(old.config_);
  const std::vector<ConfigPart> after = ConfigParts(e.config_);
  for (size_t i = 0; i < before.size() && i < after.size(); ++i) {
    if (std::string_view(after[i].name) == "conflicts" &&
        before[i].hash != after[i].hash) {
      e.global_policy_ = e.config_.conflicts.file_locking;
      e.product_policies_ = e.config_.conflicts.per_product;
    }
  }
  // Queue order inside a lane comes from the levels' weights and the
  // scoring weights, which may have changed.
  for (auto& [id, a] : e.allocs_) {
    if (a.status == AllocStatus::kQueued) a.qkey.key = e.StaticKey(a);
  }
  e.fs_cache_.clear();
  e.fs_cached_version_ = UINT64_MAX;
  return Status::Ok();
}

StatusOr<ReconfigureResult> StateCodec::Reconfigure(
    std::unique_ptr<EngineImpl>& impl, Config config, const Actor& actor) {
  auto fresh = std::make_unique<EngineImpl>(std::move(config), impl->clock_,
                                            impl->sink_);
  QM_RETURN_IF_ERROR(fresh->Init());
  EngineImpl& next = *fresh;
  const EngineImpl& old = *impl;
  ReconfigureResult result;
  result.changes = DescribeChanges(old.config_, next.config_);
  const std::string state = old.SaveState();
  next.migrate_from_ = &old;
  Status s = Load(next, state);
  next.migrate_from_ = nullptr;
  if (!s.ok()) {
    // A state the old engine itself saved always decodes; what can fail is
    // fitting it (CONFLICT), or a bug (then the invariants say where).
    return s.code() == Code::kConflict
               ? s
               : Internal("reloading the config failed: " + s.message());
  }
  if (result.changes.empty()) return result;  // the old engine stays
  // The reload's events are held back until the new engine checks out, so
  // a failed reload tells nobody anything.
  struct Held final : EventSink {
    void OnEvent(const Event& event) override { events.push_back(event); }
    std::vector<Event> events;
  } held;
  EventSink* const sink = next.sink_;
  next.sink_ = &held;
  {
    EngineImpl::OpScope op(&next);
    std::string reason = "config reloaded: ";
    for (size_t i = 0; i < result.changes.size(); ++i) {
      reason += (i ? "; " : "") + result.changes[i];
    }
    if (!actor.why.empty()) reason += " (" + actor.why + ")";
    next.EmitOp(EventType::kConfigReloaded, std::move(reason), actor.who);
    next.Dispatch();
  }
  next.sink_ = sink;
  const Status inv = next.CheckInvariants();
  if (!inv.ok()) {
    return Internal(
        "reloading the config failed: the engine would be "
        "inconsistent: " +
        inv.message());
  }
  if (sink) {
    for (const Event& event : held.events) sink->OnEvent(event);
  }
  impl = std::move(fresh);
  return result;
}

// ---------------------------------------------------------------- facade

std::string EngineImpl::SaveState() const { return StateCodec::Save(*this); }

Status EngineImpl::LoadState(std::string_view state) {
  return StateCodec::Load(*this, state);
}

std::string Engine::SaveState() const { return impl_->SaveState(); }

StatusOr<std::unique_ptr<Engine>> Engine::Restore(Config config, Clock* clock,
                                                  EventSink* sink,
                                                  std::string_view state) {
  if (!clock) clock = SystemClock::Default();
  auto impl = std::make_unique<EngineImpl>(std::move(config), clock, sink);
  QM_RETURN_IF_ERROR(impl->Init());
  QM_RETURN_IF_ERROR(impl->LoadState(state));
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

StatusOr<ReconfigureResult> Engine::Reconfigure(Config config,
                                                const Actor& actor) {
  return StateCodec::Reconfigure(impl_, std::move(config), actor);
}

std::string Engine::StateDigest() const {
  return StateDigestOf(impl_->SaveState());
}

std::string Engine::StateDigestOf(std::string_view state) {
  const uint64_t h = StateHash(state);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 0; i < 16; ++i) out[i] = kHex[(h >> (60 - 4 * i)) & 0xf];
  return out;
}

}  // namespace qm
