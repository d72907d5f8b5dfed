#include "store/op_codec.h"

#include <cstring>
#include <iterator>
#include <string>
#include <type_traits>
#include <utility>

#include "core/wire.h"
#include "qm/config_loader.h"

namespace qm::store {
namespace {

// ---- Op kinds: wire tags and names ----
//
// A tag is part of the format: never renumber or reuse one. A new op kind
// takes the next free number (older qm versions then refuse it as "written
// by a newer qm").
template <typename T>
struct OpTraits;
#define QM_OP_TRAITS(Type, tag, name)               \
  template <>                                       \
  struct OpTraits<Type> {                           \
    static constexpr uint8_t kTag = tag;            \
    static constexpr std::string_view kName = name; \
  }
QM_OP_TRAITS(AllocateOp, 1, "allocate");
QM_OP_TRAITS(AllocateBatchOp, 2, "allocate_batch");
QM_OP_TRAITS(ReleaseOp, 3, "release");
QM_OP_TRAITS(RenewOp, 4, "renew");
QM_OP_TRAITS(ReallocateOp, 5, "reallocate");
QM_OP_TRAITS(CancelOp, 6, "cancel");
QM_OP_TRAITS(ReportUsageOp, 7, "report_usage");
QM_OP_TRAITS(ExtendTokensOp, 8, "extend_tokens");
QM_OP_TRAITS(PauseOp, 9, "pause");
QM_OP_TRAITS(ResumeOp, 10, "resume");
QM_OP_TRAITS(PriorityOverrideOp, 11, "priority_override");
QM_OP_TRAITS(OverrideBreakerOp, 12, "override_breaker");
QM_OP_TRAITS(RaiseLimitsOp, 13, "raise_limits");
QM_OP_TRAITS(ResolveConflictOp, 14, "resolve_conflict");
QM_OP_TRAITS(SetLockPolicyOp, 15, "set_lock_policy");
QM_OP_TRAITS(ReserveOp, 16, "reserve");
QM_OP_TRAITS(CancelReservationOp, 17, "cancel_reservation");
QM_OP_TRAITS(TickOp, 18, "tick");
QM_OP_TRAITS(ReconfigureOp, 19, "reconfigure");
QM_OP_TRAITS(ReclaimOp, 20, "reclaim");
QM_OP_TRAITS(ObserveSystemOp, 21, "observe_system");
#undef QM_OP_TRAITS

using OpVariant = decltype(JournalOp::op);
constexpr size_t kNumOps = std::variant_size_v<OpVariant>;

template <size_t... I>
constexpr bool TagsUnique(std::index_sequence<I...>) {
  constexpr uint8_t tags[] = {
      OpTraits<std::variant_alternative_t<I, OpVariant>>::kTag...};
  for (size_t i = 0; i < sizeof...(I); ++i) {
    if (tags[i] == 0) return false;
    for (size_t j = i + 1; j < sizeof...(I); ++j) {
      if (tags[i] == tags[j]) return false;
    }
  }
  return true;
}
static_assert(TagsUnique(std::make_index_sequence<kNumOps>()),
              "op tags must be distinct and non-zero");

using wire::Reader;
using wire::Scope;
using wire::Writer;

// ---- Values: Put(writer, value) and Get(reader, field, &value) ----
//
// Get takes a pointer, so a field of a type with no Get overload does not
// compile rather than converting silently; the round-trip tests hold each
// Put to its Get.

void Put(Writer& w, const std::string& v) { w.Bytes(v); }
void Get(Reader& r, const char* f, std::string* v) { r.String(f, v); }

void Put(Writer& w, int64_t v) { w.Zigzag(v); }
void Get(Reader& r, const char* f, int64_t* v) { *v = r.Zigzag(f); }

void Put(Writer& w, double v) { w.Double(v); }
void Get(Reader& r, const char* f, double* v) { *v = r.Double(f); }

void Put(Writer& w, bool v) { w.Byte(v ? 1 : 0); }
void Get(Reader& r, const char* f, bool* v) { *v = r.Bool(f); }

void Put(Writer& w, Duration v) { w.Zigzag(v.count()); }
void Get(Reader& r, const char* f, Duration* v) { *v = Duration(r.Zigzag(f)); }

void Put(Writer& w, Time v) { w.Zigzag(v.time_since_epoch().count()); }
void Get(Reader& r, const char* f, Time* v) {
  *v = Time(Duration(r.Zigzag(f)));
}

// Enums: one byte each, a fixed wire value per enumerator. The switches
// have no default so that a new enumerator is a -Wswitch warning here;
// kValues in each Get lists the enumerators by wire value.

// Written for a value outside the enum (a caller's bug): it decodes as
// DATA_LOSS naming the field rather than as some other value.
constexpr uint8_t kBadEnum = 0xff;

[[gnu::cold, gnu::noinline]] void FailEnum(Reader& r, const char* f,
                                           const char* kind, uint8_t b) {
  r.FailAt(r.Offset() - 1, f,
           std::string("unknown ") + kind + " " + std::to_string(b) +
               " (written by a newer qm?)");
}
template <typename E, size_t N>
void GetEnum(Reader& r, const char* f, const E (&values)[N], const char* kind,
             E* v) {
  const uint8_t b = r.Byte(f);
  if (b >= N) {
    FailEnum(r, f, kind, b);
    return;
  }
  *v = values[b];
}

void Put(Writer& w, Level v) {
  switch (v) {
    case Level::kLow:
      return w.Byte(0);
    case Level::kNormal:
      return w.Byte(1);
    case Level::kHigh:
      return w.Byte(2);
    case Level::kCritical:
      return w.Byte(3);
  }
  w.Byte(kBadEnum);
}
void Get(Reader& r, const char* f, Level* v) {
  static constexpr Level kValues[] = {Level::kLow, Level::kNormal, Level::kHigh,
                                      Level::kCritical};
  GetEnum(r, f, kValues, "level", v);
}

void Put(Writer& w, Outcome v) {
  switch (v) {
    case Outcome::kSuccess:
      return w.Byte(0);
    case Outcome::kFailure:
      return w.Byte(1);
    case Outcome::kCancelled:
      return w.Byte(2);
  }
  w.Byte(kBadEnum);
}
void Get(Reader& r, const char* f, Outcome* v) {
  static constexpr Outcome kValues[] = {Outcome::kSuccess, Outcome::kFailure,
                                        Outcome::kCancelled};
  GetEnum(r, f, kValues, "outcome", v);
}

void Put(Writer& w, ResolveStrategy v) {
  switch (v) {
    case ResolveStrategy::kPriorityBased:
      return w.Byte(0);
    case ResolveStrategy::kQueueAndSerialize:
      return w.Byte(1);
    case ResolveStrategy::kForceRelease:
      return w.Byte(2);
  }
  w.Byte(kBadEnum);
}
void Get(Reader& r, const char* f, ResolveStrategy* v) {
  static constexpr ResolveStrategy kValues[] = {
      ResolveStrategy::kPriorityBased, ResolveStrategy::kQueueAndSerialize,
      ResolveStrategy::kForceRelease};
  GetEnum(r, f, kValues, "resolve strategy", v);
}

void Put(Writer& w, LockEnforcement v) {
  switch (v) {
    case LockEnforcement::kStrict:
      return w.Byte(0);
    case LockEnforcement::kAdvisory:
      return w.Byte(1);
  }
  w.Byte(kBadEnum);
}
void Get(Reader& r, const char* f, LockEnforcement* v) {
  static constexpr LockEnforcement kValues[] = {LockEnforcement::kStrict,
                                                LockEnforcement::kAdvisory};
  GetEnum(r, f, kValues, "lock enforcement", v);
}

// Resource amounts: (name, amount) in the caller's order, duplicates kept.
void Put(Writer& w, const ResourceAmounts& v) {
  w.Varint(v.size());
  for (const auto& [name, amount] : v) {
    w.Bytes(name);
    w.Double(amount);
  }
}
void Get(Reader& r, const char* f, ResourceAmounts* v) {
  const size_t n = r.Count(f, /*min_bytes=*/9);
  v->resize(n);
  for (auto& [name, amount] : *v) {
    r.String(f, &name);
    amount = r.Double(f);
  }
}

void Put(Writer& w, const std::vector<std::string>& v) {
  w.Varint(v.size());
  for (const std::string& s : v) w.Bytes(s);
}
void Get(Reader& r, const char* f, std::vector<std::string>* v) {
  const size_t n = r.Count(f, /*min_bytes=*/1);
  v->resize(n);
  for (std::string& s : *v) r.String(f, &s);
}

template <typename T>
void Put(Writer& w, const std::optional<T>& v) {
  w.Byte(v.has_value() ? 1 : 0);
  if (v.has_value()) Put(w, *v);
}
template <typename T>
void Get(Reader& r, const char* f, std::optional<T>* v) {
  if (r.Bool(f)) {
    Get(r, f, &v->emplace());
  } else {
    v->reset();
  }
}

// ---- The engine's argument types ----
//
// Each Put names every field. The structured binding at its top stops
// compiling when the type gains or loses a field: encode the new field in
// both Put and Get, and raise kOpFormatVersion (keeping the old version
// readable) so that old records still decode.

void Put(Writer& w, const AllocationRequest& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                f12, f13, f14, f15, f16, f17, f18, f19, f20,
                                f21, f22] = v;
  Put(w, v.workflow_id);
  Put(w, v.requester);
  Put(w, v.product);
  Put(w, v.agent_type);
  Put(w, v.priority);
  Put(w, v.resources);
  Put(w, v.estimated_tokens);
  Put(w, v.estimated_minutes);
  Put(w, v.blocks);
  Put(w, v.total_tasks);
  Put(w, v.ttl);
  Put(w, v.max_duration);
  Put(w, v.preemptible);
  Put(w, v.requeue_on_preempt);
  Put(w, v.metadata);
  Put(w, v.idempotency_key);
  Put(w, v.model);
  Put(w, v.wait_for_budget);
  Put(w, v.exclusive_access);
  Put(w, v.shared_access);
  Put(w, v.conflict_avoidance);
  Put(w, v.reservation_id);
}
void Get(Reader& r, AllocationRequest* v) {
  Get(r, "workflow_id", &v->workflow_id);
  Get(r, "requester", &v->requester);
  Get(r, "product", &v->product);
  Get(r, "agent_type", &v->agent_type);
  Get(r, "priority", &v->priority);
  Get(r, "resources", &v->resources);
  Get(r, "estimated_tokens", &v->estimated_tokens);
  Get(r, "estimated_minutes", &v->estimated_minutes);
  Get(r, "blocks", &v->blocks);
  Get(r, "total_tasks", &v->total_tasks);
  Get(r, "ttl", &v->ttl);
  Get(r, "max_duration", &v->max_duration);
  Get(r, "preemptible", &v->preemptible);
  Get(r, "requeue_on_preempt", &v->requeue_on_preempt);
  Get(r, "metadata", &v->metadata);
  Get(r, "idempotency_key", &v->idempotency_key);
  Get(r, "model", &v->model);
  Get(r, "wait_for_budget", &v->wait_for_budget);
  Get(r, "exclusive_access", &v->exclusive_access);
  Get(r, "shared_access", &v->shared_access);
  Get(r, "conflict_avoidance", &v->conflict_avoidance);
  Get(r, "reservation_id", &v->reservation_id);
}

void Put(Writer& w, const UsageReport& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8] = v;
  Put(w, v.report_id);
  Put(w, v.tokens);
  Put(w, v.input_tokens);
  Put(w, v.output_tokens);
  Put(w, v.cached_input_tokens);
  Put(w, v.cost_usd);
  Put(w, v.model);
  Put(w, v.outcome);
}
void Get(Reader& r, UsageReport* v) {
  Get(r, "report_id", &v->report_id);
  Get(r, "tokens", &v->tokens);
  Get(r, "input_tokens", &v->input_tokens);
  Get(r, "output_tokens", &v->output_tokens);
  Get(r, "cached_input_tokens", &v->cached_input_tokens);
  Get(r, "cost_usd", &v->cost_usd);
  Get(r, "model", &v->model);
  Get(r, "outcome", &v->outcome);
}

void Put(Writer& w, const ReservationRequest& v) {
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11,
                                f12] = v;
  Put(w, v.reservation_id);
  Put(w, v.workflow_id);
  Put(w, v.product);
  Put(w, v.agent_type);
  Put(w, v.requester);
  Put(w, v.priority);
  Put(w, v.resources);
  Put(w, v.start_time);
  Put(w, v.duration);
  Put(w, v.recurrence);
  Put(w, v.until);
  Put(w, v.metadata);
}
void Get(Reader& r, ReservationRequest* v) {
  Get(r, "reservation_id", &v->reservation_id);
  Get(r, "workflow_id", &v->workflow_id);
  Get(r, "product", &v->product);
  Get(r, "agent_type", &v->agent_type);
  Get(r, "requester", &v->requester);
  Get(r, "priority", &v->priority);
  Get(r, "resources", &v->resources);
  Get(r, "start_time", &v->start_time);
  Get(r, "duration", &v->duration);
  Get(r, "recurrence", &v->recurrence);
  Get(r, "until", &v->until);
  Get(r, "metadata", &v->metadata);
}

void Put(Writer& w, const Actor& v) {
  [[maybe_unused]] const auto& [f1, f2] = v;
  Put(w, v.who);
  Put(w, v.why);
}
void Get(Reader& r, Actor* v) {
  Get(r, "who", &v->who);
  Get(r, "why", &v->why);
}

void Put(Writer& w, const LockPolicy& v) {
  [[maybe_unused]] const auto& [f1, f2] = v;
  Put(w, v.enforcement);
  Put(w, v.exceptions);
}
void Get(Reader& r, LockPolicy* v) {
  Get(r, "enforcement", &v->enforcement);
  Get(r, "exceptions", &v->exceptions);
}

// The shortest encoding of an AllocationRequest: one byte per field.
constexpr size_t kMinRequestBytes = 22;

// A struct argument, read under its name for errors.
template <typename T>
void GetArg(Reader& r, const char* name, T* v, int64_t index = -1) {
  Scope scope(r, name, index);
  Get(r, v);
}

// ---- The ops: PutOp, GetOp and Apply per kind ----

void PutOp(Writer& w, const AllocateOp& op) { Put(w, op.request); }
void GetOp(Reader& r, AllocateOp* op) { GetArg(r, "request", &op->request); }
Status Apply(Engine& e, const AllocateOp& op) {
  return e.Allocate(op.request).status();
}

void PutOp(Writer& w, const AllocateBatchOp& op) {
  w.Varint(op.requests.size());
  for (const AllocationRequest& req : op.requests) Put(w, req);
  Put(w, op.all_or_nothing);
}
void GetOp(Reader& r, AllocateBatchOp* op) {
  op->requests.resize(r.Count("requests", kMinRequestBytes));
  for (size_t i = 0; i < op->requests.size(); ++i) {
    GetArg(r, "requests", &op->requests[i], static_cast<int64_t>(i));
  }
  Get(r, "all_or_nothing", &op->all_or_nothing);
}
Status Apply(Engine& e, const AllocateBatchOp& op) {
  return e.AllocateBatch(op.requests, op.all_or_nothing).status();
}

void PutOp(Writer& w, const ReleaseOp& op) {
  Put(w, op.id);
  Put(w, op.usage);
}
void GetOp(Reader& r, ReleaseOp* op) {
  Get(r, "id", &op->id);
  GetArg(r, "usage", &op->usage);
}
Status Apply(Engine& e, const ReleaseOp& op) {
  return e.Release(op.id, op.usage).status();
}

void PutOp(Writer& w, const RenewOp& op) {
  Put(w, op.id);
  Put(w, op.ttl);
}
void GetOp(Reader& r, RenewOp* op) {
  Get(r, "id", &op->id);
  Get(r, "ttl", &op->ttl);
}
Status Apply(Engine& e, const RenewOp& op) {
  return e.Renew(op.id, op.ttl).status();
}

void PutOp(Writer& w, const ReallocateOp& op) {
  Put(w, op.id);
  Put(w, op.resources);
}
void GetOp(Reader& r, ReallocateOp* op) {
  Get(r, "id", &op->id);
  Get(r, "resources", &op->resources);
}
Status Apply(Engine& e, const ReallocateOp& op) {
  return e.Reallocate(op.id, op.resources).status();
}

void PutOp(Writer& w, const CancelOp& op) { Put(w, op.id); }
void GetOp(Reader& r, CancelOp* op) { Get(r, "id", &op->id); }
Status Apply(Engine& e, const CancelOp& op) { return e.Cancel(op.id).status(); }

void PutOp(Writer& w, const ReportUsageOp& op) {
  Put(w, op.id);
  Put(w, op.usage);
}
void GetOp(Reader& r, ReportUsageOp* op) {
  Get(r, "id", &op->id);
  GetArg(r, "usage", &op->usage);
}
Status Apply(Engine& e, const ReportUsageOp& op) {
  return e.ReportUsage(op.id, op.usage).status();
}

void PutOp(Writer& w, const ExtendTokensOp& op) {
  Put(w, op.id);
  Put(w, op.max_tokens);
}
void GetOp(Reader& r, ExtendTokensOp* op) {
  Get(r, "id", &op->id);
  Get(r, "max_tokens", &op->max_tokens);
}
Status Apply(Engine& e, const ExtendTokensOp& op) {
  return e.ExtendTokens(op.id, op.max_tokens).status();
}

void PutOp(Writer& w, const PauseOp& op) { Put(w, op.actor); }
void GetOp(Reader& r, PauseOp* op) { GetArg(r, "actor", &op->actor); }
Status Apply(Engine& e, const PauseOp& op) { return e.Pause(op.actor); }

void PutOp(Writer& w, const ResumeOp& op) { Put(w, op.actor); }
void GetOp(Reader& r, ResumeOp* op) { GetArg(r, "actor", &op->actor); }
Status Apply(Engine& e, const ResumeOp& op) { return e.Resume(op.actor); }

void PutOp(Writer& w, const PriorityOverrideOp& op) {
  Put(w, op.product);
  Put(w, op.level);
  Put(w, op.actor);
}
void GetOp(Reader& r, PriorityOverrideOp* op) {
  Get(r, "product", &op->product);
  Get(r, "level", &op->level);
  GetArg(r, "actor", &op->actor);
}
Status Apply(Engine& e, const PriorityOverrideOp& op) {
  return e.SetPriorityOverride(op.product, op.level, op.actor);
}

void PutOp(Writer& w, const OverrideBreakerOp& op) { Put(w, op.actor); }
void GetOp(Reader& r, OverrideBreakerOp* op) { GetArg(r, "actor", &op->actor); }
Status Apply(Engine& e, const OverrideBreakerOp& op) {
  return e.OverrideBreaker(op.actor);
}

void PutOp(Writer& w, const RaiseLimitsOp& op) {
  Put(w, op.max_tokens);
  Put(w, op.max_cost_usd);
  Put(w, op.actor);
}
void GetOp(Reader& r, RaiseLimitsOp* op) {
  Get(r, "max_tokens", &op->max_tokens);
  Get(r, "max_cost_usd", &op->max_cost_usd);
  GetArg(r, "actor", &op->actor);
}
Status Apply(Engine& e, const RaiseLimitsOp& op) {
  return e.RaiseLimits(op.max_tokens, op.max_cost_usd, op.actor);
}

void PutOp(Writer& w, const ResolveConflictOp& op) {
  Put(w, op.conflict_id);
  Put(w, op.strategy);
  Put(w, op.actor);
}
void GetOp(Reader& r, ResolveConflictOp* op) {
  Get(r, "conflict_id", &op->conflict_id);
  Get(r, "strategy", &op->strategy);
  GetArg(r, "actor", &op->actor);
}
Status Apply(Engine& e, const ResolveConflictOp& op) {
  return e.ResolveConflict(op.conflict_id, op.strategy, op.actor).status();
}

void PutOp(Writer& w, const SetLockPolicyOp& op) {
  Put(w, op.scope);
  w.Byte(op.policy.has_value() ? 1 : 0);
  if (op.policy.has_value()) Put(w, *op.policy);
  Put(w, op.actor);
}
void GetOp(Reader& r, SetLockPolicyOp* op) {
  Get(r, "scope", &op->scope);
  if (r.Bool("policy")) {
    GetArg(r, "policy", &op->policy.emplace());
  } else {
    op->policy.reset();
  }
  GetArg(r, "actor", &op->actor);
}
Status Apply(Engine& e, const SetLockPolicyOp& op) {
  return e.SetLockPolicy(op.scope, op.policy, op.actor);
}

void PutOp(Writer& w, const ReserveOp& op) { Put(w, op.request); }
void GetOp(Reader& r, ReserveOp* op) { GetArg(r, "request", &op->request); }
Status Apply(Engine& e, const ReserveOp& op) {
  return e.Reserve(op.request).status();
}

void PutOp(Writer& w, const CancelReservationOp& op) {
  Put(w, op.id);
  Put(w, op.actor);
}
void GetOp(Reader& r, CancelReservationOp* op) {
  Get(r, "id", &op->id);
  GetArg(r, "actor", &op->actor);
}
Status Apply(Engine& e, const CancelReservationOp& op) {
  return e.CancelReservation(op.id, op.actor).status();
}

void PutOp(Writer& w, const ReconfigureOp& op) {
  Put(w, op.config_yaml);
  Put(w, op.actor);
}
void GetOp(Reader& r, ReconfigureOp* op) {
  Get(r, "config_yaml", &op->config_yaml);
  GetArg(r, "actor", &op->actor);
}
// The YAML was written by ConfigToYaml from a config that loaded; one that
// no longer loads (a newer qm's?) is refused like any refused call.
Status Apply(Engine& e, const ReconfigureOp& op) {
  auto config = LoadConfigString(op.config_yaml, "the reloaded config");
  if (!config.ok()) return config.status();
  return e.Reconfigure(std::move(*config), op.actor).status();
}

void PutOp(Writer& w, const ReclaimOp& op) {
  Put(w, op.id);
  Put(w, op.reason);
}
void GetOp(Reader& r, ReclaimOp* op) {
  Get(r, "id", &op->id);
  Get(r, "reason", &op->reason);
}
Status Apply(Engine& e, const ReclaimOp& op) {
  return e.Reclaim(op.id, op.reason).status();
}

void PutOp(Writer& w, const ObserveSystemOp& op) {
  const SystemReading& r = op.reading;
  [[maybe_unused]] const auto& [f1, f2, f3, f4, f5] = r;
  Put(w, r.cpu_utilization);
  Put(w, r.memory_utilization);
  Put(w, r.memory_pressure);
  Put(w, r.storage_utilization);
  Put(w, r.memory_total_gb);
}
void GetOp(Reader& r, ObserveSystemOp* op) {
  SystemReading& s = op->reading;
  Get(r, "cpu_utilization", &s.cpu_utilization);
  Get(r, "memory_utilization", &s.memory_utilization);
  Get(r, "memory_pressure", &s.memory_pressure);
  Get(r, "storage_utilization", &s.storage_utilization);
  Get(r, "memory_total_gb", &s.memory_total_gb);
}
Status Apply(Engine& e, const ObserveSystemOp& op) {
  return e.ObserveSystem(op.reading);
}

void PutOp(Writer&, const TickOp&) {}
void GetOp(Reader&, TickOp*) {}
Status Apply(Engine& e, const TickOp&) {
  e.Tick();
  return Status::Ok();
}

// Decodes the body of the op kind with wire tag `tag` into `op`; false when
// no kind has that tag.
template <size_t... I>
bool GetBody(uint8_t tag, Reader& r, OpVariant* op, std::index_sequence<I...>) {
  return (... ||
          (OpTraits<std::variant_alternative_t<I, OpVariant>>::kTag == tag &&
           (GetOp(r, &op->template emplace<I>()), true)));
}

template <size_t... I>
std::string_view NameOfTag(uint8_t tag, std::index_sequence<I...>) {
  std::string_view name;
  (void)(... ||
         (OpTraits<std::variant_alternative_t<I, OpVariant>>::kTag == tag &&
          (name = OpTraits<std::variant_alternative_t<I, OpVariant>>::kName,
           true)));
  return name;
}

}  // namespace

std::string EncodeOp(const JournalOp& op) {
  std::string out;
  out.reserve(128);
  Writer w(&out);
  w.Byte(kOpFormatVersion);
  std::visit(
      [&](const auto& o) {
        w.Byte(OpTraits<std::decay_t<decltype(o)>>::kTag);
        Put(w, op.at);
        PutOp(w, o);
      },
      op.op);
  return out;
}

StatusOr<JournalOp> DecodeOp(std::string_view payload) {
  if (payload.empty()) return DataLoss("journal op is empty (0 bytes)");
  const uint8_t version = static_cast<uint8_t>(payload[0]);
  if (version != kOpFormatVersion) {
    if (version > kOpFormatVersion) {
      return DataLoss("journal op has format version " +
                      std::to_string(version) + ", newer than the " +
                      std::to_string(kOpFormatVersion) +
                      " this qm reads: written by a newer qm (or damaged)");
    }
    return DataLoss("journal op has format version " + std::to_string(version) +
                    ", which no qm writes: the record is damaged");
  }
  if (payload.size() < 2) {
    return DataLoss("journal op is truncated after its version byte");
  }
  const uint8_t tag = static_cast<uint8_t>(payload[1]);
  const std::string_view name =
      NameOfTag(tag, std::make_index_sequence<kNumOps>());
  if (name.empty()) {
    return DataLoss("journal op has unknown op tag " + std::to_string(tag) +
                    " (format version " + std::to_string(version) +
                    "): written by a newer qm (or damaged)");
  }
  JournalOp op;
  Reader r(payload, 2);
  Get(r, "at", &op.at);
  GetBody(tag, r, &op.op, std::make_index_sequence<kNumOps>());
  if (r.ok() && !r.AtEnd()) {
    r.Fail("after the last field",
           std::to_string(r.left()) + " unexpected trailing bytes");
  }
  if (!r.ok()) {
    return DataLoss("damaged journal op " + std::string(name) + " (" +
                    std::to_string(payload.size()) + " bytes): " + r.error());
  }
  return op;
}

Status ApplyOp(Engine& engine, const JournalOp& op) {
  return std::visit([&](const auto& o) { return Apply(engine, o); }, op.op);
}

std::string_view OpName(const JournalOp& op) {
  return std::visit(
      [](const auto& o) { return OpTraits<std::decay_t<decltype(o)>>::kName; },
      op.op);
}

}  // namespace qm::store
