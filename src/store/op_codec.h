// The journal's record payload: one state-changing Engine call, with the
// engine time it ran at, in a compact versioned binary form.
//
// The engine is deterministic: from the same Config, the same calls at the
// same clock times reach the same state and emit the same events. So the
// journal records operations, and recovery loads a snapshot and replays the
// journal tail through ApplyOp, setting the clock to each op's `at` first.
// Every op carries exactly the arguments of its Engine method, every field of
// them: a field the codec dropped would be a state change lost on recovery.
//
// Format (version 1), little-endian and independent of the host:
//   byte     format version (kOpFormatVersion)
//   byte     op tag (a stable number per op kind; see op_codec.cc)
//   zigzag   at, ms since the epoch
//   ...      the op's fields, in a fixed order:
//     unsigned LEB128 varints for lengths, counts and unsigned integers;
//     zigzag varints for int64 (and Time / Duration in ms);
//     8 bytes for a double (its IEEE bits, so NaN payloads and -0 survive);
//     one byte 0/1 for a bool and for an optional's presence;
//     one byte for an enum (a fixed wire value per enumerator, not its C++
//     value, so reordering an enum cannot change what old records mean);
//     a string as its varint length and bytes; a list as its varint count
//     and elements.
// Nothing may follow the last field. Decoding checks every read against the
// input's end and every byte that has a fixed set of values, so damaged or
// truncated input is DATA_LOSS, never a crash or an over-read; a version or
// op tag this qm does not know is DATA_LOSS saying it may come from a newer
// qm. The codec records what the caller sent, invalid values included: the
// engine refuses them on replay exactly as it did live.
//
// Thread safety: free functions over values; ApplyOp needs the engine's
// owner thread, like any Engine call.
#ifndef QM_STORE_OP_CODEC_H_
#define QM_STORE_OP_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qm/clock.h"
#include "qm/config.h"
#include "qm/engine.h"
#include "qm/status.h"
#include "qm/types.h"

namespace qm::store {

// One struct per state-changing Engine method, with exactly its arguments
// (named as in engine.h).
struct AllocateOp {
  AllocationRequest request;
};
struct AllocateBatchOp {
  std::vector<AllocationRequest> requests;
  bool all_or_nothing = false;
};
struct ReleaseOp {
  std::string id;
  UsageReport usage;
};
struct RenewOp {
  std::string id;
  std::optional<Duration> ttl;
};
struct ReallocateOp {
  std::string id;
  ResourceAmounts resources;
};
struct CancelOp {
  std::string id;
};
struct ReportUsageOp {
  std::string id;
  UsageReport usage;
};
struct ExtendTokensOp {
  std::string id;
  int64_t max_tokens = 0;
};
struct PauseOp {
  Actor actor;
};
struct ResumeOp {
  Actor actor;
};
// Engine::SetPriorityOverride.
struct PriorityOverrideOp {
  std::string product;
  std::optional<Level> level;
  Actor actor;
};
struct OverrideBreakerOp {
  Actor actor;
};
struct RaiseLimitsOp {
  std::optional<int64_t> max_tokens;
  std::optional<double> max_cost_usd;
  Actor actor;
};
struct ResolveConflictOp {
  std::string conflict_id;
  ResolveStrategy strategy = ResolveStrategy::kPriorityBased;
  Actor actor;
};
struct SetLockPolicyOp {
  std::string scope;
  std::optional<LockPolicy> policy;
  Actor actor;
};
struct ReserveOp {
  ReservationRequest request;
};
struct CancelReservationOp {
  std::string id;
  Actor actor;
};
// Engine::Reclaim.
struct ReclaimOp {
  std::string id;
  std::string reason;
};
// Engine::ObserveSystem.
struct ObserveSystemOp {
  SystemReading reading;
};
// Engine::Reconfigure, with the new config as its canonical YAML (as
// ConfigToYaml writes it; the snapshot records the config the same way).
struct ReconfigureOp {
  std::string config_yaml;
  Actor actor;
};
// Engine::Tick: processing what is due at `at`, with no other call. Every
// operation does this first; the journal needs a TickOp only for a tick that
// changed something on its own (an idle tick, or one made by a call that is
// not journaled, such as CheckConflicts and VerifyLock, which also process
// what is due).
struct TickOp {};

// One state-changing call on the engine, as the journal records it.
struct JournalOp {
  Time at{};  // the engine clock when it ran (ms)
  std::variant<AllocateOp, AllocateBatchOp, ReleaseOp, RenewOp, ReallocateOp,
               CancelOp, ReportUsageOp, ExtendTokensOp, PauseOp, ResumeOp,
               PriorityOverrideOp, OverrideBreakerOp, RaiseLimitsOp,
               ResolveConflictOp, SetLockPolicyOp, ReserveOp,
               CancelReservationOp, ReconfigureOp, ReclaimOp, ObserveSystemOp,
               TickOp>
      op;
};

// The format version EncodeOp writes (the first byte of every payload).
inline constexpr uint8_t kOpFormatVersion = 1;

// The payload of `op`. Never fails: every value of every field has an
// encoding.
std::string EncodeOp(const JournalOp& op);

// The op `payload` encodes. DATA_LOSS naming the op, the field and the
// offset for truncated or damaged input, trailing bytes, or a version or op
// tag this qm does not know ("written by a newer qm?").
StatusOr<JournalOp> DecodeOp(std::string_view payload);

// Calls the Engine method `op` records, with its arguments, and returns that
// call's status (a refused call changed nothing, so replay may compare it
// with the outcome the journal saw live). The caller sets the engine's clock
// to `op.at` first. A TickOp is always OK.
Status ApplyOp(Engine& engine, const JournalOp& op);

// The op's name: "allocate", "allocate_batch", "release", "renew",
// "reallocate", "cancel", "report_usage", "extend_tokens", "pause",
// "resume", "priority_override", "override_breaker", "raise_limits",
// "resolve_conflict", "set_lock_policy", "reserve", "cancel_reservation",
// "reconfigure", "reclaim", "observe_system", "tick". For `qm state export` and
// messages.
std::string_view OpName(const JournalOp& op);

}  // namespace qm::store

#endif  // QM_STORE_OP_CODEC_H_
