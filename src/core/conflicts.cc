// Conflict prevention inside the engine: path locks (held and claimed),
// gating of queued requests on locks and on workflows they avoid, the
// conflict registry and the conflict operations (check, resolve, prevent,
// verify). See docs/conflicts.md for the model.
//
// A queued request whose lock conflicts with a held lock, or with the claim
// of a queued request ahead of it in lock order, is *gated*: it stays in
// its lane but dispatch skips it and it claims no counter. It is looked at
// again when what it waits for moves (the holder stops holding, the
// claimant leaves the queue, the workflow's last allocation ends).
#include <algorithm>
#include <set>

#include "core/engine_impl.h"
#include "core/text.h"

namespace qm {
namespace {

constexpr const char* kReadOnly = "read_only_operations";

std::string ShowPath(std::string_view p) {
  return p.empty() ? std::string(".") : std::string(p);
}
const char* Mode(bool exclusive) { return exclusive ? "exclusive" : "shared"; }
// With its article: "an exclusive", "a shared".
std::string AMode(bool exclusive) {
  return exclusive ? "an exclusive" : "a shared";
}
std::string ConflictId(uint64_t n) { return "conf_" + std::to_string(n); }

// The system resources (machine capacity) as opposed to pools and slots.
bool IsSystemResource(const std::string& name) {
  return name == "cpu_cores" || name == "memory_gb" || name == "storage_gb" ||
         name.rfind("gpu", 0) == 0;
}

Status CheckExceptions(const LockPolicy& p, const std::string& field) {
  for (const std::string& e : p.exceptions) {
    if (e != kReadOnly) {
      return InvalidRequest(field + ": unknown exception " + Quote(e) +
                            " (known: " + kReadOnly + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

Status EngineImpl::InitConflicts() {
  const ConflictsConfig& c = config_.conflicts;
  if (!c.workspace_root.empty()) {
    auto root =
        paths::NormalizeRoot(c.workspace_root, "conflicts.workspace_root");
    if (!root.ok()) return root.status();
    workspace_root_ = *root;
  }
  QM_RETURN_IF_ERROR(
      CheckExceptions(c.file_locking, "conflicts.file_locking.exceptions"));
  for (const auto& [product, policy] : c.per_product) {
    QM_RETURN_IF_ERROR(CheckExceptions(
        policy,
        "conflicts.file_locking.per_product." + product + ".exceptions"));
  }
  if (c.history_limit < 0) {
    return InvalidRequest("conflicts.history_limit must not be negative");
  }
  if (config_.reservations.horizon.count() <= 0) {
    return InvalidRequest("reservations.horizon must be positive");
  }
  global_policy_ = c.file_locking;
  product_policies_ = c.per_product;
  return Status::Ok();
}

const LockPolicy& EngineImpl::PolicyFor(uint32_t product) const {
  return PolicyFor(products_[product].name);
}

const LockPolicy& EngineImpl::PolicyFor(const std::string& product) const {
  if (!product_policies_.empty()) {
    auto it = product_policies_.find(product);
    if (it != product_policies_.end()) return it->second;
  }
  return global_policy_;
}

bool EngineImpl::Exempt(const std::vector<LockSpec>& locks,
                        const LockPolicy& policy) {
  if (std::find(policy.exceptions.begin(), policy.exceptions.end(),
                kReadOnly) == policy.exceptions.end()) {
    return false;
  }
  return std::none_of(locks.begin(), locks.end(),
                      [](const LockSpec& l) { return l.exclusive; });
}

void EngineImpl::RememberConflict(ConflictInfo c) {
  resolved_conflicts_.push_back(std::move(c));
  while (static_cast<int64_t>(resolved_conflicts_.size()) >
         config_.conflicts.history_limit) {
    resolved_conflicts_.pop_front();
  }
}

void EngineImpl::SetupLocks(Alloc& a, ParsedRequest& p) {
  auto l = std::make_unique<AllocLocks>();
  l->locks = std::move(p.locks);
  l->list = std::move(p.lock_list);
  l->avoid = std::move(p.avoid);
  l->rank_level = static_cast<int>(p.level);
  l->rank_ms = a.queued_at.time_since_epoch().count();
  l->exempt = Exempt(l->locks, PolicyFor(a.product));
  if (!p.reservation.empty()) {
    l->reservation = reservation_ids_.at(p.reservation);
  }
  if (!l->avoid.empty() && !track_wf_active_) {
    // From now on every grant and release keeps its workflow's count.
    track_wf_active_ = true;
    for (const auto& [id, x] : allocs_) {
      if (!x.holding) continue;
      auto it = workflows_.find(x.req.workflow_id);
      if (it != workflows_.end()) ++it->second.active;
    }
  }
  a.locks = std::move(l);
}

void EngineImpl::NoteWorkflowActive(const Alloc& a, int sign) {
  auto it = workflows_.find(a.req.workflow_id);
  if (it == workflows_.end()) return;
  it->second.active += sign;
  if (it->second.active == 0 && gated_on_wf_.count(a.req.workflow_id)) {
    wf_wakes_.push_back(a.req.workflow_id);
  }
}

bool EngineImpl::LockAhead(const AllocLocks& x, uint64_t xid,
                           const AllocLocks& y, uint64_t yid) {
  if (x.rank_level != y.rank_level) return x.rank_level > y.rank_level;
  if (x.rank_ms != y.rank_ms) return x.rank_ms < y.rank_ms;
  return xid < yid;
}

EngineImpl::GateFind EngineImpl::FindGate(const Alloc& a) const {
  GateFind g;
  const AllocLocks& l = *a.locks;
  for (const std::string& w : l.avoid) {
    auto it = workflows_.find(w);
    if (it != workflows_.end() && it->second.active > 0) {
      g.kind = AllocLocks::Gate::kWorkflow;
      g.subject = w;
      return g;
    }
  }
  if (l.exempt || l.locks.empty() ||
      PolicyFor(a.product).enforcement != LockEnforcement::kStrict) {
    return g;
  }
  // Claimants ahead in lock order come first, and of those the nearest:
  // waiters on one file form a chain, each gated on the one just ahead, so
  // a release wakes one waiter, not all of them.
  if (claimed_locks_.size() != 0) {
    const AllocLocks* near = nullptr;
    uint64_t near_id = 0;
    const LockSpec* own = nullptr;
    std::string_view other;
    bool other_exclusive = false;
    for (const LockSpec& lock : l.locks) {
      claimed_locks_.ForEachConflict(
          lock.path, lock.exclusive, a.id, [&](const paths::LockTable::Hit& h) {
            auto it = allocs_.find(h.owner);
            if (it == allocs_.end() || !it->second.locks) return true;
            const AllocLocks& o = *it->second.locks;
            if (!LockAhead(o, h.owner, l, a.id)) return true;
            if (near && !LockAhead(*near, near_id, o, h.owner)) return true;
            near = &o;
            near_id = h.owner;
            own = &lock;
            other = h.path;  // valid: the table does not change here
            other_exclusive = h.exclusive;
            return true;
          });
    }
    if (near) {
      return {AllocLocks::Gate::kLock, near_id,        std::string(own->path),
              std::string(other),      own->exclusive, other_exclusive};
    }
  }
  if (l.locks.size() > 1 && held_locks_.size() != 0) {
    for (const LockSpec& lock : l.locks) held_locks_.Prefetch(lock.key());
  }
  for (const LockSpec& lock : l.locks) {
    held_locks_.ForEachConflict(
        lock.key(), lock.exclusive, a.id,
        [&](const paths::LockTable::Hit& h) {
          g = {AllocLocks::Gate::kLock, h.owner,        std::string(lock.path),
               std::string(h.path),     lock.exclusive, h.exclusive};
          return false;
        },
        &lock.probe);
    if (g.kind != AllocLocks::Gate::kNone) return g;
  }
  return g;
}

bool EngineImpl::Gate(Alloc& a) {
  AllocLocks& l = *a.locks;
  const GateFind g = FindGate(a);
  if (g.kind == AllocLocks::Gate::kNone) {
    if (l.gate != AllocLocks::Gate::kNone) {
      const std::string was =
          l.gate == AllocLocks::Gate::kWorkflow
              ? "workflow " + l.subject + " has no active allocation left"
              : IdText(l.gate_on) + " no longer holds or claims " +
                    ShowPath(l.other_path);
      l.gate = AllocLocks::Gate::kNone;
      --gated_count_;
      CloseConflict(a, was);
    }
    return false;
  }
  const bool same = l.gate == g.kind && l.gate_on == g.on &&
                    l.subject == g.subject && l.other_path == g.other_path;
  if (l.gate == AllocLocks::Gate::kNone) ++gated_count_;
  l.gate = g.kind;
  l.gate_on = g.on;
  l.subject = g.subject;
  l.other_path = g.other_path;
  l.own_exclusive = g.own_exclusive;
  l.other_exclusive = g.other_exclusive;
  if (g.kind == AllocLocks::Gate::kLock) {
    gated_on_[g.on].push_back(a.id);
  } else {
    gated_on_wf_[g.subject].push_back(a.id);
  }
  if (same) return true;
  if (l.conflict != 0) {
    CloseConflict(a, "it now waits for " + (g.kind == AllocLocks::Gate::kLock
                                                ? IdText(g.on)
                                                : "workflow " + g.subject));
  }
  OpenConflict(a, g);
  l.preempt_tried = false;
  PreemptForLock(a);
  return true;
}

bool EngineImpl::PreemptDue(const Alloc& a) const {
  const AllocLocks& l = *a.locks;
  if (l.gate != AllocLocks::Gate::kLock || l.preempt_tried ||
      config_.conflicts.strategy != ConflictStrategy::kPriorityBased ||
      !config_.levels[static_cast<int>(a.req.level)].preempt_lower ||
      GrantsHeld(a)) {
    return false;
  }
  auto it = allocs_.find(l.gate_on);
  return it != allocs_.end() && it->second.holding;
}

void EngineImpl::PreemptForLock(Alloc& a) {
  // priority_based: the first in line (gated on a holder, not on a claimant
  // ahead) takes the lock from lower-level preemptible holders. Tried once
  // per gate, and again once grants are no longer held (pause, breaker).
  if (!PreemptDue(a)) return;
  AllocLocks& l = *a.locks;
  l.preempt_tried = true;
  // Each holder with the first of its locks in the way.
  std::vector<std::pair<uint64_t, std::string>> holders;
  bool all_lower = true;
  for (const LockSpec& lock : l.locks) {
    held_locks_.ForEachConflict(
        lock.path, lock.exclusive, a.id, [&](const paths::LockTable::Hit& h) {
          const Alloc& v = allocs_.at(h.owner);
          // An advisory holder re-queued by the preemption would take its
          // lock straight back (advisory requests are never gated).
          if (!v.req.preemptible || v.req.level >= a.req.level ||
              PolicyFor(v.product).enforcement != LockEnforcement::kStrict) {
            all_lower = false;
            return false;
          }
          if (v.status == AllocStatus::kActive &&
              std::none_of(holders.begin(), holders.end(),
                           [&](const auto& x) { return x.first == h.owner; })) {
            holders.emplace_back(h.owner, std::string(Mode(h.exclusive)) +
                                              " lock on " + ShowPath(h.path) +
                                              " (" + IdText(a.id) + " wants " +
                                              ShowPath(lock.path) + ")");
          }
          return true;
        });
    if (!all_lower) return;
  }
  for (const auto& [id, what] : holders) {
    SendPreemptNotice(
        allocs_.at(id), a,
        " to free its " + what + "; conflicts.strategy priority_based");
  }
}

void EngineImpl::ClaimLocks(Alloc& a) {
  AllocLocks& l = *a.locks;
  if (l.exempt || l.where != AllocLocks::Where::kNone) return;
  for (LockSpec& lock : l.locks) {
    lock.at = claimed_locks_.Add(lock.key(), lock.exclusive, a.id);
  }
  l.where = AllocLocks::Where::kClaimed;
}

void EngineImpl::TakeLocks(Alloc& a) {
  AllocLocks& l = *a.locks;
  if (l.exempt || l.where == AllocLocks::Where::kHeld) return;
  if (l.where == AllocLocks::Where::kClaimed) {
    for (const LockSpec& lock : l.locks) {
      claimed_locks_.Remove(lock.at, lock.path, lock.exclusive, a.id);
    }
  }
  if (PolicyFor(a.product).enforcement == LockEnforcement::kAdvisory) {
    RecordAdvisory(a);
  }
  for (LockSpec& lock : l.locks) {
    lock.at = held_locks_.Add(lock.key(), lock.exclusive, a.id, &lock.probe);
  }
  l.where = AllocLocks::Where::kHeld;
}

void EngineImpl::DropLocks(Alloc& a) {
  AllocLocks& l = *a.locks;
  paths::LockTable* table = l.where == AllocLocks::Where::kHeld ? &held_locks_
                            : l.where == AllocLocks::Where::kClaimed
                                ? &claimed_locks_
                                : nullptr;
  if (table) {
    for (LockSpec& lock : l.locks) {
      table->Remove(lock.at, lock.path, lock.exclusive, a.id);
      lock.at = nullptr;
    }
  }
  l.where = AllocLocks::Where::kNone;
  if (l.gate != AllocLocks::Gate::kNone) {
    // Leave no stale entry behind in what it waited for.
    std::vector<uint64_t>* list = nullptr;
    if (l.gate == AllocLocks::Gate::kLock) {
      auto it = gated_on_.find(l.gate_on);
      if (it != gated_on_.end()) list = &it->second;
    } else {
      auto it = gated_on_wf_.find(l.subject);
      if (it != gated_on_wf_.end()) list = &it->second;
    }
    if (list)
      list->erase(std::remove(list->begin(), list->end(), a.id), list->end());
    l.gate = AllocLocks::Gate::kNone;
    --gated_count_;
  }
}

void EngineImpl::WakeGated(uint64_t id) {
  if (gated_on_.count(id)) wakes_.push_back(id);
}

bool EngineImpl::ProcessWakes() {
  // (blocker id or 0, workflow, gated request)
  struct Woken {
    uint64_t on;
    std::string wf;
    uint64_t id;
  };
  std::vector<Woken> woken;
  for (uint64_t b : wakes_) {
    auto it = gated_on_.find(b);
    if (it == gated_on_.end()) continue;
    for (uint64_t id : it->second) woken.push_back({b, {}, id});
    gated_on_.erase(it);
  }
  for (const std::string& w : wf_wakes_) {
    auto it = gated_on_wf_.find(w);
    if (it == gated_on_wf_.end()) continue;
    for (uint64_t id : it->second) woken.push_back({0, w, id});
    gated_on_wf_.erase(it);
  }
  wakes_.clear();
  wf_wakes_.clear();
  bool any = false;
  for (const Woken& w : woken) {
    auto it = allocs_.find(w.id);
    if (it == allocs_.end()) continue;
    Alloc& a = it->second;
    if (a.status != AllocStatus::kQueued || !a.locks) continue;
    const AllocLocks& l = *a.locks;
    // Entries left from an earlier gate are stale.
    const bool current =
        w.on != 0 ? l.gate == AllocLocks::Gate::kLock && l.gate_on == w.on
                  : l.gate == AllocLocks::Gate::kWorkflow && l.subject == w.wf;
    if (!current) continue;
    if (!Gate(a)) any = true;
  }
  return any;
}

Time EngineImpl::ExpectedEnd(const Alloc& h) const {
  if (h.status == AllocStatus::kPreempted && h.holding) {
    return h.preempt_deadline;
  }
  return std::min(h.expected_end, h.expires_at);
}

std::string EngineImpl::ConflictSeverity(const GateFind& g,
                                         const Alloc& waiter) const {
  if (waiter.req.level == Level::kCritical) return "critical";
  if (g.kind == AllocLocks::Gate::kLock && g.own_exclusive &&
      g.other_exclusive) {
    return "high";
  }
  return "medium";
}

uint64_t EngineImpl::OpenConflict(Alloc& waiter, const GateFind& g) {
  const uint64_t n = next_conflict_++;
  ConflictInfo c;
  c.id = ConflictId(n);
  c.waiter = IdText(waiter.id);
  c.detected_at = now_;
  c.severity = ConflictSeverity(g, waiter);
  if (g.kind == AllocLocks::Gate::kWorkflow) {
    c.type = "workflow_conflict";
    c.subject = g.subject;
    const int64_t active = workflows_.at(g.subject).active;
    c.message = "Workflow conflict: " + c.waiter + " avoids workflow " +
                g.subject + ", which has " + std::to_string(active) +
                " active allocation" + (active == 1 ? "" : "s");
    c.recommended_action =
        "Wait until workflow " + g.subject +
        " finishes (conflict_avoidance), or cancel and ask again without it";
  } else {
    const Alloc& h = allocs_.at(g.on);
    c.type = "file_conflict";
    c.subject = ShowPath(g.subject);
    c.holder = IdText(h.id);
    std::string other =
        AMode(g.other_exclusive) + " lock on " + ShowPath(g.other_path);
    if (h.holding) {
      c.since = h.granted_at;
      c.expected_release = ExpectedEnd(h);
      c.message = "File access conflict detected for " + c.subject + ": " +
                  c.waiter + " wants " + AMode(g.own_exclusive) + " lock; " +
                  c.holder + " holds " + other;
      const bool can_preempt =
          h.req.preemptible && h.req.level < waiter.req.level;
      c.recommended_action =
          can_preempt
              ? "Resolve with priority_based to preempt " + c.holder + " (" +
                    LevelName(h.req.level) + "), or wait: expected release " +
                    FormatTime(*c.expected_release)
              : "Wait (queue_and_serialize): " + c.holder +
                    " is expected to release it at " +
                    FormatTime(*c.expected_release);
    } else {
      c.since = h.queued_at;
      c.message = "File access conflict detected for " + c.subject + ": " +
                  c.waiter + " wants " + AMode(g.own_exclusive) +
                  " lock; queued " + c.holder + " is ahead in line with " +
                  other;
      c.recommended_action =
          "Wait: " + c.holder + " takes the lock first (queue_and_serialize)";
    }
  }
  Emit(EventType::kConflictDetected, waiter,
       c.id + " (" + c.type + ", " + c.severity + "): " + c.message);
  open_conflicts_.emplace(n, std::move(c));
  waiter.locks->conflict = n;
  return n;
}

void EngineImpl::CloseConflict(Alloc& a, const std::string& resolution) {
  if (!a.locks || a.locks->conflict == 0) return;
  auto it = open_conflicts_.find(a.locks->conflict);
  a.locks->conflict = 0;
  if (it == open_conflicts_.end()) return;
  ConflictInfo c = std::move(it->second);
  open_conflicts_.erase(it);
  c.status = "resolved";
  c.resolution =
      c.resolution.empty() ? resolution : c.resolution + "; " + resolution;
  c.resolved_at = now_;
  Emit(EventType::kConflictResolved, a, c.id + " resolved: " + resolution);
  RememberConflict(std::move(c));
}

void EngineImpl::RecordAdvisory(Alloc& a) {
  AllocLocks& l = *a.locks;
  std::set<std::pair<uint64_t, std::string_view>> seen;
  for (const LockSpec& lock : l.locks) {
    held_locks_.ForEachConflict(
        lock.path, lock.exclusive, a.id, [&](const paths::LockTable::Hit& h) {
          if (!seen.insert({h.owner, lock.path}).second) return true;
          const Alloc& o = allocs_.at(h.owner);
          ConflictInfo c;
          c.id = ConflictId(next_conflict_++);
          c.type = "file_conflict";
          c.severity = lock.exclusive && h.exclusive ? "high" : "medium";
          c.subject = ShowPath(lock.path);
          c.holder = IdText(o.id);
          c.waiter = IdText(a.id);
          c.since = o.granted_at;
          c.expected_release = ExpectedEnd(o);
          c.message = "File access conflict detected for " + c.subject + ": " +
                      c.waiter + " was granted " + AMode(lock.exclusive) +
                      " lock beside " + c.holder + "'s " + Mode(h.exclusive) +
                      " lock on " + ShowPath(h.path) + " (advisory locking)";
          c.recommended_action =
              "Coordinate the two writers or merge carefully; set "
              "file_locking enforcement to strict to serialise them";
          c.status = "advisory";
          c.resolution = "granted despite the conflict (advisory locking)";
          c.detected_at = now_;
          c.resolved_at = now_;
          l.warnings.push_back(c.id + ": " + c.message);
          Emit(EventType::kConflictDetected, a,
               c.id + " (" + c.type + ", " + c.severity + "): " + c.message);
          RememberConflict(std::move(c));
          return l.warnings.size() < 64;  // enough to act on
        });
  }
}

std::string EngineImpl::GateText(const Alloc& a) const {
  const AllocLocks& l = *a.locks;
  if (l.gate == AllocLocks::Gate::kWorkflow) {
    auto it = workflows_.find(l.subject);
    const int64_t n = it == workflows_.end() ? 0 : it->second.active;
    return "waiting for workflow " + l.subject +
           " to finish (conflict_avoidance): it has " + std::to_string(n) +
           " active allocation" + (n == 1 ? "" : "s");
  }
  std::string text = std::string("waiting for ") + Mode(l.own_exclusive) +
                     " lock on " + ShowPath(l.subject);
  const std::string other = l.other_path == l.subject
                                ? std::string()
                                : std::string(" (") + Mode(l.other_exclusive) +
                                      " lock on " + ShowPath(l.other_path) +
                                      ")";
  auto it = allocs_.find(l.gate_on);
  if (it == allocs_.end()) return text;
  const Alloc& h = it->second;
  if (h.holding) {
    if (h.status == AllocStatus::kPreempted) {
      return text + " held by " + IdText(h.id) + other +
             ", preempted: released by " + FormatTime(h.preempt_deadline);
    }
    return text + " held by " + IdText(h.id) + other + ", expected release " +
           FormatTime(ExpectedEnd(h));
  }
  return text + ": queued " + IdText(h.id) + " is ahead in line" + other;
}

std::string EngineImpl::BatchLockConflict(
    const ParsedRequest& p,
    const std::vector<const ParsedRequest*>& earlier) const {
  for (const std::string& w : p.avoid) {
    auto it = workflows_.find(w);
    if (it != workflows_.end() && it->second.active > 0) {
      return "workflow " + w + " has active allocations (conflict_avoidance)";
    }
    for (const ParsedRequest* e : earlier) {
      if (e->workflow_id == w) {
        return "it avoids workflow " + w + ", which the batch also starts";
      }
    }
  }
  if (p.locks.empty()) return "";
  const LockPolicy& pol = PolicyFor(p.product);
  if (pol.enforcement != LockEnforcement::kStrict || Exempt(p.locks, pol)) {
    return "";
  }
  AllocLocks self;
  self.rank_level = static_cast<int>(p.level);
  self.rank_ms = now_.time_since_epoch().count();
  std::string why;
  for (const LockSpec& lock : p.locks) {
    held_locks_.ForEachConflict(
        lock.path, lock.exclusive, 0, [&](const paths::LockTable::Hit& h) {
          why = std::string(Mode(lock.exclusive)) + " lock on " +
                ShowPath(lock.path) + " conflicts with " + IdText(h.owner) +
                "'s " + Mode(h.exclusive) + " lock on " + ShowPath(h.path);
          return false;
        });
    if (!why.empty()) return why;
    claimed_locks_.ForEachConflict(
        lock.path, lock.exclusive, 0, [&](const paths::LockTable::Hit& h) {
          auto it = allocs_.find(h.owner);
          if (it == allocs_.end() || !it->second.locks ||
              !LockAhead(*it->second.locks, h.owner, self, next_id_)) {
            return true;
          }
          why = std::string(Mode(lock.exclusive)) + " lock on " +
                ShowPath(lock.path) + ": queued " + IdText(h.owner) +
                " is ahead in line for " + ShowPath(h.path);
          return false;
        });
    if (!why.empty()) return why;
    for (const ParsedRequest* e : earlier) {
      for (const LockSpec& o : e->locks) {
        if ((lock.exclusive || o.exclusive) &&
            paths::Overlap(lock.path, o.path)) {
          return std::string(Mode(lock.exclusive)) + " lock on " +
                 ShowPath(lock.path) +
                 " conflicts with another request of the batch (" +
                 Mode(o.exclusive) + " lock on " + ShowPath(o.path) + ")";
        }
      }
    }
  }
  return "";
}

// ---------------------------------------------------------------- operations

std::vector<ConflictInfo> EngineImpl::Conflicts() const {
  std::vector<ConflictInfo> out;
  out.reserve(open_conflicts_.size() + resolved_conflicts_.size());
  for (const auto& [n, c] : open_conflicts_) out.push_back(c);
  for (auto it = resolved_conflicts_.rbegin(); it != resolved_conflicts_.rend();
       ++it) {
    out.push_back(*it);
  }
  return out;
}

ConflictInfo* EngineImpl::FindConflict(std::string_view id) {
  static constexpr std::string_view kPrefix = "conf_";
  if (id.substr(0, kPrefix.size()) != kPrefix) return nullptr;
  uint64_t n = 0;
  const std::string_view digits = id.substr(kPrefix.size());
  if (digits.empty() || digits.size() > 19) return nullptr;
  for (char c : digits) {
    if (c < '0' || c > '9') return nullptr;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  auto it = open_conflicts_.find(n);
  return it == open_conflicts_.end() ? nullptr : &it->second;
}

StatusOr<ConflictInfo> EngineImpl::ResolveConflict(std::string_view id,
                                                   ResolveStrategy strategy,
                                                   const Actor& actor) {
  OpScope op(this);
  ConflictInfo* c = FindConflict(id);
  if (c == nullptr) {
    for (const ConflictInfo& r : resolved_conflicts_) {
      if (r.id == id) {
        return Conflict("conflict " + std::string(id) + " is already " +
                        r.status + ": " + r.resolution);
      }
    }
    return NotFound("no open conflict " + Quote(id) +
                    " (see the conflicts listing)");
  }
  auto waiter = Find(c->waiter);
  if (!waiter.ok() || (*waiter)->status != AllocStatus::kQueued ||
      !(*waiter)->locks) {
    return Internal("conflict " + c->id + " has no queued waiter");
  }
  Alloc& w = **waiter;
  const std::string name = ResolveStrategyName(strategy);
  const std::string who = actor.who.empty() ? "" : " by " + actor.who;
  const std::string why = actor.why.empty() ? "" : ": " + actor.why;
  // The allocations holding what the waiter needs.
  std::vector<uint64_t> holders;
  if (c->type == "workflow_conflict") {
    for (const auto& [aid, x] : allocs_) {
      if (x.holding && x.req.workflow_id == c->subject) holders.push_back(aid);
    }
    std::sort(holders.begin(), holders.end());
  } else {
    const uint64_t h = w.locks->gate_on;
    if (allocs_.count(h) && allocs_.at(h).holding) holders.push_back(h);
  }
  if (strategy == ResolveStrategy::kQueueAndSerialize) {
    c->resolution = name + " chosen" + who + why + ": " + c->waiter +
                    " waits for " +
                    (c->holder.empty() ? c->subject : c->holder);
    EmitOp(EventType::kOverride,
           "conflict " + c->id + ": " + name + " (" + c->waiter +
               " waits its turn)" + why,
           actor.who);
    return *c;
  }
  if (holders.empty()) {
    return Conflict(
        "conflict " + c->id + ": " + c->holder +
        " is queued, not running; there is nothing to " +
        (strategy == ResolveStrategy::kForceRelease ? "release" : "preempt") +
        " (it takes the lock first because it is ahead in line)");
  }
  if (strategy == ResolveStrategy::kPriorityBased) {
    for (uint64_t h : holders) {
      const Alloc& v = allocs_.at(h);
      if (v.status == AllocStatus::kPreempted) continue;
      if (!v.req.preemptible) {
        return Conflict("conflict " + c->id + ": " + IdText(h) +
                        " is not preemptible; priority_based cannot take its "
                        "lock (force_release is the operator's option)");
      }
      if (v.req.level >= w.req.level) {
        return Conflict("conflict " + c->id + ": " + c->waiter + " (" +
                        LevelName(w.req.level) + ") does not outrank " +
                        IdText(h) + " (" + LevelName(v.req.level) +
                        "); priority_based preempts only lower levels");
      }
    }
    c->resolution = name + who + why + ": preempting " + c->holder;
    EmitOp(EventType::kOverride, "conflict " + c->id + ": priority_based" + why,
           actor.who);
    for (uint64_t h : holders) {
      Alloc& v = allocs_.at(h);
      if (v.status == AllocStatus::kActive) {
        SendPreemptNotice(v, w, " to resolve " + c->id);
      }
    }
    return *c;
  }
  // force_release: an operator ends the holders now.
  if (actor.who.empty()) {
    return Status(Code::kPermissionDenied,
                  "force_release is an operator action: name the operator "
                  "(by) who forces the release");
  }
  ConflictInfo result = *c;
  result.resolution = name + who + why + ": released " + c->holder;
  c->resolution = result.resolution;
  EmitOp(EventType::kOverride, "conflict " + c->id + ": force_release" + why,
         actor.who);
  for (uint64_t h : holders) {
    auto it = allocs_.find(h);
    if (it == allocs_.end() || !it->second.holding) continue;
    ForceRelease(it->second, AllocStatus::kPreempted, EventType::kPreempted,
                 "force-released by operator " + actor.who + " to resolve " +
                     result.id + why);
  }
  // The waiter is looked at again now; report how the conflict stands.
  if (WakesPending()) Dispatch();
  for (const ConflictInfo& r : resolved_conflicts_) {
    if (r.id == result.id) return r;
  }
  if (ConflictInfo* still = FindConflict(result.id)) return *still;
  return result;
}

Status EngineImpl::SetLockPolicy(const std::string& scope,
                                 std::optional<LockPolicy> policy,
                                 const Actor& actor) {
  OpScope op(this);
  if (scope.empty()) {
    return InvalidRequest("scope must be \"global\" or a product name");
  }
  if (policy) QM_RETURN_IF_ERROR(CheckExceptions(*policy, "exceptions"));
  if (scope == "global") {
    if (!policy) {
      return InvalidRequest(
          "scope global needs a policy (only a product's own policy can be "
          "removed)");
    }
    global_policy_ = *policy;
  } else if (policy) {
    product_policies_[scope] = *policy;
  } else {
    product_policies_.erase(scope);
  }
  std::string reason =
      "file_locking policy for " + scope + ": " +
      (policy
           ? std::string(LockEnforcementName(policy->enforcement)) +
                 (policy->exceptions.empty()
                      ? ""
                      : " (exceptions: " + Join(policy->exceptions, ", ") + ")")
           : "the global policy");
  if (!actor.why.empty()) reason += ": " + actor.why;
  EmitOp(EventType::kOverride, std::move(reason), actor.who,
         scope == "global" ? "" : scope);
  // Queued requests follow the new policy: exemptions, then their gates.
  for (auto& [id, a] : allocs_) {
    if (a.status != AllocStatus::kQueued || !a.locks) continue;
    AllocLocks& l = *a.locks;
    const bool exempt = Exempt(l.locks, PolicyFor(a.product));
    if (exempt != l.exempt) {
      if (l.where == AllocLocks::Where::kClaimed) {
        for (LockSpec& lock : l.locks) {
          claimed_locks_.Remove(lock.at, lock.path, lock.exclusive, a.id);
          lock.at = nullptr;
        }
        l.where = AllocLocks::Where::kNone;
      }
      l.exempt = exempt;
      ClaimLocks(a);
    }
    if (l.gate != AllocLocks::Gate::kNone) {
      if (l.gate == AllocLocks::Gate::kLock) {
        wakes_.push_back(l.gate_on);
      } else {
        wf_wakes_.push_back(l.subject);
      }
    }
  }
  std::sort(wakes_.begin(), wakes_.end());
  wakes_.erase(std::unique(wakes_.begin(), wakes_.end()), wakes_.end());
  std::sort(wf_wakes_.begin(), wf_wakes_.end());
  wf_wakes_.erase(std::unique(wf_wakes_.begin(), wf_wakes_.end()),
                  wf_wakes_.end());
  Dispatch();
  return Status::Ok();
}

StatusOr<LockVerdict> EngineImpl::VerifyLock(std::string_view path,
                                             uint64_t token) {
  OpScope op(this);
  auto norm = paths::Normalize(workspace_root_, path, "path");
  if (!norm.ok()) return norm.status();
  if (paths::IsGlob(*norm)) {
    return InvalidRequest("path " + Quote(path) +
                          " is a glob; verify a plain path");
  }
  if (token == 0) return InvalidRequest("token must be a positive integer");
  LockVerdict v;
  v.path = ShowPath(*norm);
  v.token = token;
  std::set<uint64_t> seen;
  bool exclusive = false;
  held_locks_.ForEachCovering(*norm, [&](const paths::LockTable::Hit& h) {
    const Alloc& a = allocs_.at(h.owner);
    if (seen.insert(h.owner).second) {
      v.holders.emplace_back(IdText(h.owner), a.fencing);
    }
    if (a.fencing == token) {
      v.valid = true;
      exclusive |= h.exclusive;
    }
    return true;
  });
  std::sort(v.holders.begin(), v.holders.end());
  auto owner = fencing_owner_.find(token);
  if (owner != fencing_owner_.end() && !allocs_.count(owner->second)) {
    owner = fencing_owner_.end();
  }
  const std::string who =
      owner == fencing_owner_.end() ? "" : IdText(owner->second);
  if (v.valid) {
    v.holder = who;
    v.exclusive = exclusive;
    v.message = "token " + std::to_string(token) + " (" + who + ") holds " +
                (exclusive ? "an exclusive" : "a shared") + " lock covering " +
                v.path + (exclusive ? "" : ": reading only, not writing");
    return v;
  }
  std::string current;
  for (const auto& [id, t] : v.holders) {
    current += (current.empty() ? "" : ", ") + id + " (token " +
               std::to_string(t) + ")";
  }
  if (owner == fencing_owner_.end()) {
    v.message = "no allocation with locks has token " + std::to_string(token);
  } else {
    const Alloc& a = allocs_.at(owner->second);
    v.message = "token " + std::to_string(token) + " (" + who + ", " +
                AllocStatusName(a.status) + ") holds no lock covering " +
                v.path;
    if (!a.holding && a.status != AllocStatus::kActive) {
      v.message += ": it ended at " + FormatTime(a.ended_at);
    }
  }
  v.message +=
      current.empty() ? "; nobody holds it now" : "; held now by " + current;
  return v;
}

StatusOr<ConflictReport> EngineImpl::CheckConflicts(const AllocationRequest& r,
                                                    Duration horizon) {
  OpScope op(this);
  if (horizon.count() < 0 || horizon > config_.reservations.horizon) {
    return InvalidRequest("time_horizon must be between 0 and " +
                          FormatDuration(config_.reservations.horizon) +
                          " (reservations.horizon)");
  }
  auto parsed = Validate(r, "");
  if (!parsed.ok()) return parsed.status();
  const ParsedRequest& p = *parsed;
  ConflictReport rep;
  rep.time = now_;
  rep.horizon = horizon;
  Status refuse = CheckCanEverFit(p, p.product, p.agent_type);
  MoneyPlan plan;
  if (refuse.ok() && MoneyEnabled()) {
    auto pl = PlanMoney(p, "");
    if (!pl.ok()) {
      refuse = pl.status();
    } else {
      plan = std::move(*pl);
      refuse = CheckMoney(p, plan, "");
    }
  }
  auto add = [&](ConflictInfo c) {
    c.status = "open";
    c.detected_at = now_;
    rep.conflicts.push_back(std::move(c));
  };
  bool waits = false;
  // Files.
  const LockPolicy& pol = PolicyFor(p.product);
  const bool advisory = pol.enforcement == LockEnforcement::kAdvisory;
  const bool exempt = Exempt(p.locks, pol);
  AllocLocks self;
  self.rank_level = static_cast<int>(p.level);
  self.rank_ms = now_.time_since_epoch().count();
  size_t listed = 0;
  constexpr size_t kMaxListed = 100;
  for (const LockSpec& lock : p.locks) {
    if (exempt) break;
    auto visit = [&](const paths::LockTable::Hit& h, bool held) {
      const Alloc& o = allocs_.at(h.owner);
      if (!held &&
          (!o.locks || !LockAhead(*o.locks, h.owner, self, next_id_))) {
        return true;
      }
      ConflictInfo c;
      c.type = "file_conflict";
      c.severity = advisory                        ? "low"
                   : p.level == Level::kCritical   ? "critical"
                   : lock.exclusive && h.exclusive ? "high"
                                                   : "medium";
      c.subject = ShowPath(lock.path);
      c.holder = IdText(o.id);
      c.message = "File access conflict detected for " + c.subject + ": " +
                  (held ? "" : "queued ") + c.holder +
                  (held ? " holds " : " is ahead in line for ") +
                  AMode(h.exclusive) + " lock on " + ShowPath(h.path);
      if (held) {
        c.since = o.granted_at;
        c.expected_release = ExpectedEnd(o);
      } else {
        c.since = o.queued_at;
      }
      if (advisory) {
        c.recommended_action =
            "It would be granted with a warning (advisory locking); "
            "coordinate the writers";
      } else if (held && o.req.preemptible && o.req.level < p.level) {
        waits = true;
        c.recommended_action = "Resolve with priority_based to preempt " +
                               c.holder + " (" + LevelName(o.req.level) +
                               "), or wait for its release";
      } else {
        waits = true;
        c.recommended_action =
            held ? "Wait (queue_and_serialize): expected release " +
                       FormatTime(*c.expected_release)
                 : "Wait: " + c.holder + " takes the lock first";
      }
      add(std::move(c));
      return ++listed < kMaxListed;
    };
    held_locks_.ForEachConflict(
        lock.path, lock.exclusive, 0,
        [&](const paths::LockTable::Hit& h) { return visit(h, true); });
    if (!advisory) {
      claimed_locks_.ForEachConflict(
          lock.path, lock.exclusive, 0,
          [&](const paths::LockTable::Hit& h) { return visit(h, false); });
    }
    if (listed >= kMaxListed) break;
  }
  // Workflows it avoids.
  for (const std::string& w : p.avoid) {
    auto it = workflows_.find(w);
    if (it == workflows_.end()) continue;
    ConflictInfo c;
    std::optional<Time> last;
    int64_t n = 0;
    for (const auto& [id, x] : allocs_) {
      if (!x.holding || x.req.workflow_id != w) continue;
      ++n;
      const Time end = ExpectedEnd(x);
      if (!last || end > *last) {
        last = end;
        c.holder = IdText(id);
        c.since = x.granted_at;
      }
    }
    if (n == 0) continue;
    waits = true;
    c.type = "workflow_conflict";
    c.severity = "medium";
    c.subject = w;
    c.expected_release = last;
    c.message = "Workflow conflict: workflow " + w + " has " +
                std::to_string(n) + " active allocation" + (n == 1 ? "" : "s") +
                " (conflict_avoidance)";
    c.recommended_action = "Wait until it finishes: expected by " +
                           FormatTime(*last) + " (" + c.holder +
                           " is the last expected to end)";
    add(std::move(c));
  }
  // Counted resources, slots and budgets: what does not fit now.
  auto counter_conflict = [&](uint32_t ci, Milli need) {
    const Counter& k = counters_[ci];
    if (k.used + need <= k.limit) return;
    waits = true;
    ConflictInfo c;
    const bool system =
        k.kind == Counter::Kind::kResource && IsSystemResource(k.name);
    c.type = k.kind == Counter::Kind::kBudget ? "budget_conflict"
             : system                         ? "system_conflict"
                                              : "resource_conflict";
    c.severity = need > k.limit ? "high" : "medium";
    c.subject = CounterLabel(k);
    WaitReason w{WaitReason::Kind::kNoFit, ci, need, 0};
    c.message = ReasonText(w);
    Milli shortfall = k.used + need - k.limit, freed = 0;
    size_t steps = 0;
    for (const auto& [end, id] : k.holders) {
      if (++steps > 1000) break;
      const Alloc& h = allocs_.at(id);
      if (c.holder.empty()) {
        c.holder = IdText(id);
        c.since = h.granted_at;
      }
      freed += AmountOn(h.demand, ci);
      if (freed >= shortfall) {
        c.expected_release = std::max(ExpectedEnd(h), now_);
        break;
      }
    }
    c.recommended_action =
        c.expected_release ? "Queue: enough is expected to free by " +
                                 FormatTime(*c.expected_release)
        : k.kind == Counter::Kind::kBudget
            ? "Queue until running work reports or releases, or lower "
              "the estimate"
            : "Queue, or ask for less";
    add(std::move(c));
  };
  // Reservations booked during its expected run that leave it no room.
  auto reservation_conflict = [&](uint32_t ci, Milli need) {
    if (!HasBookings()) return;
    const Counter& k = counters_[ci];
    const Time end = RunEnd(p);
    const Milli booked = Booked(ci, end, 0);
    if (booked == 0 || k.used + need > k.limit ||
        k.used + need + booked <= k.limit) {
      return;
    }
    waits = true;
    ConflictInfo c;
    c.type = "reservation_conflict";
    c.severity = "medium";
    c.subject = CounterLabel(k);
    timelines_.at(ci).ForEachOverlap(
        now_, std::max(end, now_ + Duration(1)),
        [&](const Timeline::Interval& iv) {
          auto r = reservations_.find(iv.id);
          if (r == reservations_.end() || !c.holder.empty()) return;
          c.holder = r->second.id;
          c.starts_at = iv.start;
          c.expected_release = iv.end;
        });
    c.message = CounterLabel(k) + ": " + FormatMilli(booked) + " reserved by " +
                c.holder +
                (c.starts_at && *c.starts_at > now_
                     ? " from " + FormatTime(*c.starts_at)
                     : "") +
                ", during the request's expected run until " + FormatTime(end);
    c.recommended_action =
        "Queue until the reservation ends, or ask for a shorter run "
        "(estimated_minutes) that finishes before it starts";
    add(std::move(c));
  };
  if (refuse.ok()) {
    for (const auto& [idx, m] : p.resources) {
      counter_conflict(resource_counter_[idx], m);
      reservation_conflict(resource_counter_[idx], m);
    }
    if (p.agents > 0) {
      if (auto t = type_index_.find(p.agent_type); t != type_index_.end()) {
        counter_conflict(types_[t->second].counter, p.agents);
      }
      if (auto q = product_index_.find(p.product); q != product_index_.end()) {
        counter_conflict(products_[q->second].counter, p.agents);
      }
      auto wf = workflows_.find(p.workflow_id);
      if (wf != workflows_.end() && wf->second.agents != UINT32_MAX) {
        counter_conflict(wf->second.agents, p.agents);
      }
    }
    if (MoneyEnabled()) {
      Demand d;
      AddBudgetDemand(plan, &d);
      for (const auto& [ci, m] : d) counter_conflict(ci, m);
    }
  } else {
    ConflictInfo c;
    const bool money = refuse.code() == Code::kBudgetExceeded ||
                       refuse.code() == Code::kCircuitOpen;
    c.type = money ? "budget_conflict" : "resource_conflict";
    c.severity = "high";
    c.subject = refuse.affected_resources().empty()
                    ? std::string(CodeName(refuse.code()))
                    : refuse.affected_resources().front();
    c.message = refuse.message();
    c.recommended_action = refuse.alternatives().empty()
                               ? "Ask for less"
                               : refuse.alternatives().front();
    add(std::move(c));
  }
  if (!refuse.ok()) {
    rep.outcome = "refuse";
    rep.reason = std::string(CodeName(refuse.code())) + ": " + refuse.message();
  } else if (GrantsHeld(p.level)) {
    rep.outcome = "queue";
    rep.reason = paused_ ? "grants are paused by an operator"
                         : "the circuit breaker is open";
  } else if (memory_pressure_ &&
             std::any_of(p.resources.begin(), p.resources.end(),
                         [&](const auto& r) {
                           return r.first == memory_resource_ && r.second > 0;
                         })) {
    rep.outcome = "queue";
    rep.reason = PressureText();
  } else if (waits) {
    rep.outcome = "queue";
    rep.reason = rep.conflicts.front().message;
    for (const ConflictInfo& c : rep.conflicts) {
      if (c.severity != "low") {
        rep.reason = c.message;
        break;
      }
    }
  } else {
    rep.outcome = "grant";
  }
  return rep;
}

Status EngineImpl::CheckLockInvariants() const {
  size_t held = 0, claimed = 0;
  int64_t gated = 0;
  for (const auto& [id, a] : allocs_) {
    if (!a.locks) continue;
    const AllocLocks& l = *a.locks;
    const size_t n = l.exempt ? 0 : l.locks.size();
    const bool queued = a.status == AllocStatus::kQueued;
    if (a.holding) {
      if (l.where != AllocLocks::Where::kHeld && n > 0) {
        return Internal(IdText(id) + " holds resources but not its locks");
      }
      held += n;
    } else if (queued) {
      if (l.where != AllocLocks::Where::kClaimed && n > 0) {
        return Internal(IdText(id) + " is queued without claiming its locks");
      }
      claimed += n;
    } else if (l.where != AllocLocks::Where::kNone) {
      return Internal(IdText(id) + " ended but still has locks recorded");
    }
    if (l.gate != AllocLocks::Gate::kNone) {
      if (!queued) return Internal(IdText(id) + " is gated but not queued");
      ++gated;
      // What it waits for must still be there to wake it.
      bool live = false;
      if (l.gate == AllocLocks::Gate::kLock) {
        auto it = allocs_.find(l.gate_on);
        live =
            it != allocs_.end() &&
            (it->second.holding || it->second.status == AllocStatus::kQueued);
        auto g = gated_on_.find(l.gate_on);
        live = live && g != gated_on_.end() &&
               std::find(g->second.begin(), g->second.end(), id) !=
                   g->second.end();
      } else {
        auto it = workflows_.find(l.subject);
        live = it != workflows_.end() && it->second.active > 0;
        auto g = gated_on_wf_.find(l.subject);
        live = live && g != gated_on_wf_.end() &&
               std::find(g->second.begin(), g->second.end(), id) !=
                   g->second.end();
      }
      if (!live) {
        return Internal(IdText(id) + " is gated on " +
                        (l.gate == AllocLocks::Gate::kLock
                             ? IdText(l.gate_on)
                             : "workflow " + l.subject) +
                        ", which will never wake it");
      }
    }
    if (!a.holding || n == 0 ||
        PolicyFor(a.product).enforcement != LockEnforcement::kStrict) {
      continue;
    }
    for (const LockSpec& lock : l.locks) {
      std::string bad;
      held_locks_.ForEachConflict(
          lock.path, lock.exclusive, id, [&](const paths::LockTable::Hit& h) {
            const Alloc& o = allocs_.at(h.owner);
            if (PolicyFor(o.product).enforcement != LockEnforcement::kStrict) {
              return true;
            }
            // Unless the later of the two was granted with a warning under
            // an advisory policy that has changed since.
            if (!l.warnings.empty() ||
                (o.locks && !o.locks->warnings.empty())) {
              return true;
            }
            bad = IdText(id) + " and " + IdText(h.owner) +
                  " hold conflicting locks on " + ShowPath(lock.path) +
                  " and " + ShowPath(h.path);
            return false;
          });
      if (!bad.empty()) return Internal(bad);
    }
  }
  if (held != held_locks_.size()) {
    return Internal("held lock table has " +
                    std::to_string(held_locks_.size()) + " locks, holders " +
                    std::to_string(held));
  }
  if (claimed != claimed_locks_.size()) {
    return Internal("claimed lock table has " +
                    std::to_string(claimed_locks_.size()) +
                    " locks, queued requests " + std::to_string(claimed));
  }
  if (gated != gated_count_) {
    return Internal("gated count " + std::to_string(gated_count_) +
                    ", gated requests " + std::to_string(gated));
  }
  return CheckReservationInvariants();
}

}  // namespace qm
