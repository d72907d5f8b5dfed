// The admission engine. See engine_impl.h for the data structures and
// docs/architecture.md for the model.
#include "qm/engine.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "core/engine_impl.h"
#include "core/text.h"

namespace qm {
namespace {

// Scores drift with time; a queue that nothing else wakes is re-examined this
// often so a request that overtook another in score can start.
constexpr Duration kRescoreInterval = std::chrono::seconds(60);
// Upper bound of holders examined for one expected_start estimate.
constexpr size_t kMaxEstimateSteps = 4096;

double Minutes(Duration d) { return d.count() / kMsPerMinute; }

}  // namespace

// ---------------------------------------------------------------- set-up

EngineImpl::EngineImpl(Config config, Clock* clock, EventSink* sink)
    : config_(std::move(config)), clock_(clock), sink_(sink) {}

Status EngineImpl::Init() {
  now_ = clock_->Now();
  epoch_time_ = now_;
  last_pass_ = now_;
  if (!config_.FindResource("agents")) {
    config_.resources.insert(config_.resources.begin(),
                             ResourceSpec{"agents", 5, false});
  }
  for (const ResourceSpec& r : config_.resources) {
    if (r.name.empty() || resource_index_.count(r.name)) {
      return InvalidRequest("resources: duplicate or empty resource name \"" +
                            r.name + "\"");
    }
    if (!std::isfinite(r.capacity) || r.capacity < 0 || r.capacity > 1e12) {
      return InvalidRequest("resources." + r.name +
                            ": capacity must be a finite number >= 0");
    }
    const uint32_t idx = static_cast<uint32_t>(resource_specs_.size());
    resource_specs_.push_back(r);
    resource_index_[r.name] = idx;
    resource_counter_.push_back(
        NewCounter(Counter::Kind::kResource, r.name, ToMilli(r.capacity)));
    counters_[resource_counter_.back()].owner = idx;
    if (r.name == "agents") {
      agents_resource_ = idx;
      agents_min_ = r.fractional ? 1 : 1000;
    }
    if (r.name == "memory_gb") memory_resource_ = idx;
  }
  for (const auto& [type, limit] : config_.per_type_limits) {
    if (limit < 0) {
      return InvalidRequest("max_concurrent.per_type." + type +
                            " must not be negative");
    }
    InternType(type);
  }
  for (const auto& [name, product] : config_.products) InternProduct(name);
  QM_RETURN_IF_ERROR(ValidateMonitoringConfig(config_.monitoring));
  QM_RETURN_IF_ERROR(InitConflicts());
  return InitMoney();
}

uint32_t EngineImpl::NewCounter(Counter::Kind kind, std::string name,
                                Milli limit) {
  uint32_t idx;
  if (!free_counters_.empty()) {
    idx = free_counters_.back();
    free_counters_.pop_back();
    counters_[idx] = Counter{};
  } else {
    idx = static_cast<uint32_t>(counters_.size());
    counters_.emplace_back();
  }
  Counter& c = counters_[idx];
  c.kind = kind;
  c.name = std::move(name);
  c.limit = limit;
  return idx;
}

void EngineImpl::FreeCounter(uint32_t c) {
  counters_[c].in_use = false;
  counters_[c].holders.clear();
  counters_[c].blocked_by = 0;
  free_counters_.push_back(c);
}

Milli EngineImpl::TypeLimit(const std::string& type) const {
  auto it = config_.per_type_limits.find(type);
  return it == config_.per_type_limits.end() ? kUnlimited : it->second * 1000;
}

Milli EngineImpl::ProductLimit(const std::string& product) const {
  auto it = config_.products.find(product);
  if (it == config_.products.end() || !it->second.max_concurrent_agents) {
    return kUnlimited;
  }
  return *it->second.max_concurrent_agents * 1000;
}

uint32_t EngineImpl::InternType(const std::string& name) {
  auto it = type_index_.find(name);
  if (it != type_index_.end()) return it->second;
  const uint32_t idx = static_cast<uint32_t>(types_.size());
  TypeState t;
  t.name = name;
  t.counter = NewCounter(Counter::Kind::kAgentType, name, TypeLimit(name));
  counters_[t.counter].owner = idx;
  types_.push_back(std::move(t));
  type_lanes_.emplace_back();
  type_index_[name] = idx;
  return idx;
}

uint32_t EngineImpl::InternProduct(const std::string& name) {
  auto it = product_index_.find(name);
  if (it != product_index_.end()) return it->second;
  const uint32_t idx = static_cast<uint32_t>(products_.size());
  ProductState p;
  p.name = name;
  p.decayed_at = now_;
  auto cfg = config_.products.find(name);
  if (cfg != config_.products.end()) p.share = cfg->second.share;
  p.counter = NewCounter(Counter::Kind::kProduct, name, ProductLimit(name));
  counters_[p.counter].owner = idx;
  products_.push_back(std::move(p));
  product_lanes_.emplace_back();
  product_index_[name] = idx;
  return idx;
}

Workflow& EngineImpl::AcquireWorkflow(const std::string& id) {
  auto [it, inserted] = workflows_.try_emplace(id);
  Workflow& wf = it->second;
  if (inserted) {
    const AllocationLimits& al = config_.allocation_limits;
    if (al.max_agents_per_workflow) {
      wf.agents = NewCounter(Counter::Kind::kWorkflow, id + "/agents",
                             *al.max_agents_per_workflow * 1000);
    }
    if (al.max_cpu_per_workflow && resource_index_.count("cpu_cores")) {
      wf.cpu = NewCounter(Counter::Kind::kWorkflow, id + "/cpu_cores",
                          ToMilli(*al.max_cpu_per_workflow));
    }
    if (al.max_memory_per_workflow && resource_index_.count("memory_gb")) {
      wf.memory = NewCounter(Counter::Kind::kWorkflow, id + "/memory_gb",
                             ToMilli(*al.max_memory_per_workflow));
    }
  }
  ++wf.refs;
  return wf;
}

void EngineImpl::ReleaseWorkflowRef(const std::string& id) {
  auto it = workflows_.find(id);
  if (it == workflows_.end()) return;
  if (--it->second.refs > 0) return;
  for (uint32_t c : {it->second.agents, it->second.cpu, it->second.memory}) {
    if (c != UINT32_MAX) FreeCounter(c);
  }
  workflows_.erase(it);
}

Demand EngineImpl::BuildDemand(const ParsedRequest& p, uint32_t product,
                               uint32_t type, const Workflow* wf,
                               size_t extra) const {
  Demand d;
  // Exactly: resources, then type, product and up to three workflow
  // counters, and `extra` (a demand lives as long as its allocation).
  size_t n = p.resources.size() + extra;
  if (p.agents > 0) n += 2 + (wf && wf->agents != UINT32_MAX);
  for (const auto& [idx, m] : p.resources) {
    const std::string& name = resource_specs_[idx].name;
    n += wf && ((name == "cpu_cores" && wf->cpu != UINT32_MAX) ||
                (name == "memory_gb" && wf->memory != UINT32_MAX));
  }
  d.reserve(n);
  Milli cpu = 0, mem = 0;
  for (const auto& [idx, m] : p.resources) {
    d.emplace_back(resource_counter_[idx], m);
    const std::string& name = resource_specs_[idx].name;
    if (name == "cpu_cores") cpu = m;
    if (name == "memory_gb") mem = m;
  }
  if (p.agents > 0) {
    d.emplace_back(types_[type].counter, p.agents);
    d.emplace_back(products_[product].counter, p.agents);
    if (wf && wf->agents != UINT32_MAX) d.emplace_back(wf->agents, p.agents);
  }
  if (wf && cpu > 0 && wf->cpu != UINT32_MAX) d.emplace_back(wf->cpu, cpu);
  if (wf && mem > 0 && wf->memory != UINT32_MAX) {
    d.emplace_back(wf->memory, mem);
  }
  return d;
}

// ---------------------------------------------------------------- time

void EngineImpl::StartOp() {
  in_op_ = true;
  ProcessTimersUpTo(clock_->Now());
}

void EngineImpl::EndOp() {
  // Timers due now (zero grace) may end holders and wake gated requests
  // again: repeat until nothing is pending.
  do {
    if (WakesPending()) dispatch_at_end_ = true;
    if (dispatch_at_end_) {
      dispatch_at_end_ = false;
      Dispatch();
    }
    if (WakesPending()) ProcessWakes();  // nobody queued: just forget them
    ProcessTimersUpTo(now_);
  } while (WakesPending() || dispatch_at_end_);
  in_op_ = false;
}

void EngineImpl::Tick() {
  StartOp();
  EndOp();
}

void EngineImpl::Schedule(Time at, uint64_t id, Timer::Kind kind,
                          uint64_t gen) {
  timers_.push(Timer{at, ++timer_seq_, id, kind, gen});
}

void EngineImpl::ProcessTimersUpTo(Time t) {
  while (!timers_.empty() && timers_.top().at <= t) {
    const Timer timer = timers_.top();
    timers_.pop();
    if (timer.at > now_) now_ = timer.at;
    HandleTimer(timer);
  }
  if (t > now_) now_ = t;
  if (queued_count_ > 0 && now_ - last_pass_ >= kRescoreInterval) Dispatch();
}

std::optional<Time> EngineImpl::NextDeadline() const {
  std::optional<Time> next;
  if (!timers_.empty()) next = timers_.top().at;
  if (queued_count_ > 0 && !AllHeld()) {
    const Time rescore = last_pass_ + kRescoreInterval;
    if (!next || rescore < *next) next = rescore;
  }
  return next;
}

void EngineImpl::HandleTimer(const Timer& t) {
  if (t.kind == Timer::Kind::kPeriodReset) {
    ResetPeriod();
    return;
  }
  if (t.kind == Timer::Kind::kResOpen || t.kind == Timer::Kind::kResGrace ||
      t.kind == Timer::Kind::kResClose) {
    HandleReservationTimer(t);
    return;
  }
  auto it = allocs_.find(t.id);
  if (it == allocs_.end()) return;
  Alloc& a = it->second;
  switch (t.kind) {
    case Timer::Kind::kLeaseExpiry: {
      if (a.status != AllocStatus::kActive || a.expires_at != t.at ||
          a.expiring) {
        return;
      }
      a.expiring = true;
      if (!config_.auto_release.on_timeout) {
        Emit(EventType::kLeaseExpiring, a,
             "lease expired; auto_release.on_timeout is off, so it keeps its "
             "resources until released");
        return;
      }
      const Time force = t.at + config_.auto_release.grace_period;
      Emit(EventType::kLeaseExpiring, a,
           ReachedMaxDuration(a)
               ? "reached its max_duration of " +
                     FormatDuration(a.req.max_duration) + "; released at " +
                     FormatTime(force) + " unless released before"
               : "lease expired without a heartbeat; released at " +
                     FormatTime(force) + " unless renewed");
      Schedule(force, a.id, Timer::Kind::kForceExpire,
               static_cast<uint64_t>(a.expires_at.time_since_epoch().count()));
      return;
    }
    case Timer::Kind::kForceExpire:
      if (a.status != AllocStatus::kActive || !a.expiring ||
          static_cast<uint64_t>(a.expires_at.time_since_epoch().count()) !=
              t.gen) {
        return;
      }
      ForceRelease(
          a, AllocStatus::kExpired, EventType::kExpired,
          ReachedMaxDuration(a)
              ? "reached its max_duration of " +
                    FormatDuration(a.req.max_duration) + " at " +
                    FormatTime(a.expires_at) + " and the grace period ended"
              : "no heartbeat: lease expired at " + FormatTime(a.expires_at) +
                    " and the grace period ended");
      return;
    case Timer::Kind::kPreemptDeadline:
      if (a.status != AllocStatus::kPreempted || !a.holding ||
          a.preempt_deadline != t.at) {
        return;
      }
      ForceRelease(a, AllocStatus::kPreempted, EventType::kPreempted,
                   "forced release: the preemption grace period ended");
      return;
    case Timer::Kind::kPeriodReset:
    case Timer::Kind::kResOpen:
    case Timer::Kind::kResGrace:
    case Timer::Kind::kResClose:
      return;
    case Timer::Kind::kStarvation: {
      if (a.status != AllocStatus::kQueued || a.queue_gen != t.gen ||
          a.starvation_alerted) {
        return;
      }
      a.starvation_alerted = true;
      const double max_wait = LevelWait(a.req.level);
      Emit(EventType::kStarvation, a,
           std::string(LevelName(a.req.level)) + " request waited " +
               FormatDuration(now_ - a.queued_at) +
               ", over its level's max "
               "wait of " +
               FormatNumber(max_wait) + " min: " + ReasonText(a));
      return;
    }
  }
}

// ---------------------------------------------------------------- scoring

double EngineImpl::LevelWait(Level l) const {
  return config_.levels[static_cast<int>(l)].max_wait_minutes;
}

double EngineImpl::StaticKey(const Alloc& a) const {
  const ScoreWeights& w = config_.scheduling.weights;
  const double lw = config_.levels[static_cast<int>(a.req.level)].weight;
  const double bf = static_cast<double>(a.req.blocks) /
                    static_cast<double>(a.req.total_tasks);
  const double m = LevelWait(a.req.level);
  double key = w.priority * lw + w.blocking * bf;
  if (m <= 0) {
    key += w.wait;
  } else {
    key -= w.wait * Minutes(a.queued_at - epoch_time_) / m;
  }
  return key;
}

double EngineImpl::Score(const Alloc& a, Time now,
                         const std::vector<double>& fs,
                         QueueEntry* parts) const {
  const ScoreWeights& w = config_.scheduling.weights;
  const double lw = config_.levels[static_cast<int>(a.req.level)].weight;
  const double m = LevelWait(a.req.level);
  const double waited = std::max(0.0, Minutes(now - a.queued_at));
  const double wf = m <= 0 ? 1.0 : waited / m;
  const double bf = static_cast<double>(a.req.blocks) /
                    static_cast<double>(a.req.total_tasks);
  const double f = a.product < fs.size() ? fs[a.product] : 0.0;
  if (parts) {
    parts->priority_factor = lw;
    parts->wait_factor = wf;
    parts->blocking_factor = bf;
    parts->fair_share_factor = f;
  }
  return w.priority * lw + w.wait * wf + w.blocking * bf + w.fair_share * f;
}

double EngineImpl::DecayedUsage(const ProductState& p, Time now) const {
  const double h = Minutes(config_.scheduling.fair_share_half_life);
  const double dt = Minutes(now - p.decayed_at);
  const double running = FromMilli(p.running_agents);
  if (h <= 0) return running * dt + p.decayed;  // no decay
  if (dt <= 0) return p.decayed;
  const double decay = std::exp2(-dt / h);
  return p.decayed * decay + running * (h / std::log(2.0)) * (1 - decay);
}

double EngineImpl::FairShareUsage(const ProductState& p, Time now) const {
  const double committed = p.committed_end_sum - FromMilli(p.running_agents) *
                                                     Minutes(now - epoch_time_);
  return DecayedUsage(p, now) + std::max(0.0, committed);
}

void EngineImpl::CountRunning(Alloc& a, int sign) {
  ProductState& p = products_[a.product];
  AccrueUsage(p, now_);
  ++fs_version_;
  p.running_agents += sign * a.req.agents;
  p.committed_end_sum +=
      sign * FromMilli(a.req.agents) * Minutes(a.expected_end - epoch_time_);
}

void EngineImpl::AccrueUsage(ProductState& p, Time now) {
  p.decayed = DecayedUsage(p, now);
  p.decayed_at = now;
}

std::vector<double> EngineImpl::FairShareTerms(Time now) const {
  std::vector<double> fs(products_.size(), 0.0);
  double share_sum = 0, usage_sum = 0;
  int active = 0;
  std::vector<double> usage(products_.size(), 0.0);
  for (size_t i = 0; i < products_.size(); ++i) {
    const ProductState& p = products_[i];
    if (p.running_agents == 0 && p.queued == 0) continue;
    ++active;
    share_sum += p.share;
    usage[i] = FairShareUsage(p, now);
    usage_sum += usage[i];
  }
  if (active < 2 || share_sum <= 0) return fs;
  for (size_t i = 0; i < products_.size(); ++i) {
    const ProductState& p = products_[i];
    if (p.running_agents == 0 && p.queued == 0) continue;
    const double s = p.share / share_sum;
    const double u = usage_sum > 0 ? usage[i] / usage_sum : s;
    fs[i] = s - u;
  }
  return fs;
}

const std::vector<double>& EngineImpl::FairShare() const {
  if (fs_cached_version_ != fs_version_ || fs_time_ != now_) {
    fs_cache_ = FairShareTerms(now_);
    fs_time_ = now_;
    fs_cached_version_ = fs_version_;
  }
  return fs_cache_;
}

// ---------------------------------------------------------------- queue

void EngineImpl::Enqueue(Alloc& a) {
  const bool uses_agents = a.req.agents > 0;
  const uint64_t lane_key = (static_cast<uint64_t>(a.req.level) << 62) |
                            (static_cast<uint64_t>(uses_agents) << 61) |
                            (static_cast<uint64_t>(a.product) << 30) | a.type;
  auto [lit, lane_new] =
      lane_index_.try_emplace(lane_key, static_cast<uint32_t>(lanes_.size()));
  if (lane_new) {
    auto [bit, band_new] =
        band_index_.try_emplace({static_cast<int>(a.req.level), a.product},
                                static_cast<uint32_t>(bands_.size()));
    if (band_new) {
      Band b;
      b.level = a.req.level;
      b.product = a.product;
      bands_.push_back(std::move(b));
    }
    Lane lane;
    lane.band = bit->second;
    lane.type = a.type;
    lane.product = a.product;
    lane.uses_agents = uses_agents;
    type_lanes_[a.type].push_back(lit->second);
    product_lanes_[a.product].push_back(lit->second);
    lanes_.push_back(std::move(lane));
  }
  const uint32_t li = lit->second;
  Lane& lane = lanes_[li];
  Band& band = bands_[lane.band];
  a.lane = li;
  a.qkey = QKey{StaticKey(a), a.queued_at.time_since_epoch().count(), a.id};
  const bool was_empty = lane.members.empty();
  std::optional<QKey> old_head;
  if (!was_empty) old_head = *lane.members.begin();
  lane.members.insert(a.qkey);
  if (was_empty || !QKeyBefore()(*old_head, a.qkey)) {
    if (old_head) band.lanes.erase({*old_head, li});
    band.lanes.insert({*lane.members.begin(), li});
  }
  active_bands_.insert(lane.band);
  ++fs_version_;
  a.status = AllocStatus::kQueued;
  ++a.queue_gen;
  ++queued_count_;
  if (a.locks) ClaimLocks(a);
  if (!uses_agents) ++queued_without_agents_;
  ++products_[a.product].queued;
  ++types_[a.type].queued;
  if (!a.starvation_alerted) {
    const double m = LevelWait(a.req.level);
    Schedule(a.queued_at + Duration(static_cast<int64_t>(
                               std::ceil(std::max(0.0, m) * kMsPerMinute))),
             a.id, Timer::Kind::kStarvation, a.queue_gen);
  }
}

void EngineImpl::Dequeue(Alloc& a) {
  Lane& lane = lanes_[a.lane];
  Band& band = bands_[lane.band];
  const bool was_head = lane.members.begin()->id == a.id;
  if (was_head) band.lanes.erase({a.qkey, a.lane});
  lane.members.erase(a.qkey);
  if (was_head && !lane.members.empty()) {
    band.lanes.insert({*lane.members.begin(), a.lane});
  }
  if (band.lanes.empty()) active_bands_.erase(lane.band);
  ++fs_version_;
  --queued_count_;
  // A request that leaves the queue claims nothing any more. (Whoever
  // removes it re-examines the counters it claimed.)
  for (const auto& [c, m] : a.demand) {
    if (Blocker(c) == a.id) counters_[c].blocked_by = 0;
  }
  if (queued_count_ == 0) ++pass_epoch_;  // nobody waits: B is empty
  if (a.preempted_someone) {
    a.preempted_someone = false;
    relaxed_ = queued_count_ > 0;  // its parked victims may start now
  }
  if (a.req.agents == 0) --queued_without_agents_;
  --products_[a.product].queued;
  --types_[a.type].queued;
  a.wait = WaitReason{};
}

// ---------------------------------------------------------------- admission

bool EngineImpl::Fits(const Demand& d) const {
  for (const auto& [c, m] : d) {
    const Counter& k = counters_[c];
    if (k.used + m > k.limit) return false;
  }
  return true;
}

uint64_t EngineImpl::Blocker(uint32_t c) const {
  const Counter& k = counters_[c];
  return k.blocked_epoch == pass_epoch_ ? k.blocked_by : 0;
}

double EngineImpl::RankScore(const QKey& k, Level level, uint32_t product,
                             const std::vector<double>& fs) const {
  const double m = LevelWait(level);
  double score = k.key;
  if (m > 0) {
    score += config_.scheduling.weights.wait * Minutes(now_ - epoch_time_) / m;
  }
  if (product < fs.size()) {
    score += config_.scheduling.weights.fair_share * fs[product];
  }
  return score;
}

bool EngineImpl::Outranks(const Alloc& x, const Alloc& y) const {
  const bool tx = NoWaitLevel(x.req.level), ty = NoWaitLevel(y.req.level);
  if (tx != ty) return tx;
  const double sx = CurrentScore(x), sy = CurrentScore(y);
  if (sx != sy) return sx > sy;
  if (x.queued_at != y.queued_at) return x.queued_at < y.queued_at;
  return x.id < y.id;
}

void EngineImpl::Block(uint32_t c, const Alloc& a) {
  Counter& k = counters_[c];
  const uint64_t current = Blocker(c);
  if (current == a.id) return;
  if (current != 0) {
    if (k.blocked_serial == pass_serial_) return;  // set earlier this pass
    auto it = allocs_.find(current);
    if (it != allocs_.end() && it->second.status == AllocStatus::kQueued &&
        Outranks(it->second, a)) {
      return;
    }
  }
  const Milli held = AmountOn(a.demand, c);
  // Taking over a claim with a smaller share lets requests that were held
  // back by the old one through: they must be looked at again.
  if (current != 0 && held < k.held && k.used + held <= k.limit) {
    relaxed_ = true;
  }
  k.blocked_epoch = pass_epoch_;
  k.blocked_by = a.id;
  k.blocked_serial = pass_serial_;
  k.held = held;
}

Milli EngineImpl::Room(uint32_t c) const {
  const Counter& k = counters_[c];
  return k.limit - k.used - (Blocker(c) != 0 ? k.held : 0);
}

void EngineImpl::Assess(const Alloc& a, uint64_t serial,
                        std::vector<uint32_t>* nofit, uint32_t* behind) const {
  nofit->clear();
  *behind = UINT32_MAX;
  const bool booked = HasBookings();
  for (const auto& [c, m] : a.demand) {
    const Counter& k = counters_[c];
    // What reservations book during its expected run is not free for it.
    const Milli r = booked ? Booked(c, a) : 0;
    if (k.used + m + r > k.limit) {
      nofit->push_back(c);
      continue;
    }
    const uint64_t b = Blocker(c);
    if (b == 0 || b == a.id || *behind != UINT32_MAX) continue;
    if (k.used + m + r + k.held <= k.limit) continue;  // room for both
    if (serial != 0 && k.blocked_serial == serial) {
      *behind = c;  // claimed earlier in this pass: it outranks `a`
      continue;
    }
    auto it = allocs_.find(b);
    if (it != allocs_.end() && it->second.status == AllocStatus::kQueued &&
        Outranks(it->second, a)) {
      *behind = c;
    }
  }
}

bool EngineImpl::Claim(const Alloc& a, const std::vector<uint32_t>& nofit) {
  for (uint32_t c : nofit) Block(c, a);
  for (uint32_t c : nofit) {
    if (Blocker(c) != a.id) return false;
  }
  return true;
}

void EngineImpl::HoldRest(const Alloc& a, const std::vector<uint32_t>& nofit) {
  for (const auto& [c, m] : a.demand) {
    if (std::find(nofit.begin(), nofit.end(), c) == nofit.end()) Block(c, a);
  }
}

uint64_t EngineImpl::ParkedBehind(const Alloc& a) const {
  if (a.preempted_by == 0) return 0;
  // Parked only until that request first starts after the preemption.
  auto it = allocs_.find(a.preempted_by);
  return it != allocs_.end() && it->second.status == AllocStatus::kQueued &&
                 it->second.fencing == a.preempted_by_fence
             ? a.preempted_by
             : 0;
}

void EngineImpl::Unpark(Alloc& a) {
  if (!a.preempted_someone) return;
  a.preempted_someone = false;
  for (auto& [id, v] : allocs_) {
    if (v.preempted_by == a.id) v.preempted_by = 0;
  }
  relaxed_ = queued_count_ > 0;  // they may start now
}

void EngineImpl::Wait(Alloc& a, const std::vector<uint32_t>& nofit) {
  a.wait = {WaitReason::Kind::kNoFit, nofit[0], AmountOn(a.demand, nofit[0]),
            0};
  if (HasBookings()) {
    const Counter& k = counters_[nofit[0]];
    if (k.used + a.wait.need <= k.limit) {
      a.wait.kind = WaitReason::Kind::kReserved;
      a.wait.other = a.id;
    }
  }
  bool short_of_budget = false;
  for (uint32_t c : nofit) {
    const Counter& k = counters_[c];
    if (k.kind != Counter::Kind::kBudget) continue;
    short_of_budget = true;
    if (k.spent + AmountOn(a.demand, c) > k.limit) {
      // Nothing but the period reset makes room: claiming would only hold
      // back requests that fit today, and so would the victims it parked.
      a.wait = {WaitReason::Kind::kBudgetReset, c, AmountOn(a.demand, c), 0};
      Unpark(a);
      return;
    }
  }
  const bool heads_all = Claim(a, nofit);
  // Preempting running work cannot give back money it already spent.
  if (heads_all && !short_of_budget &&
      config_.levels[static_cast<int>(a.req.level)].preempt_lower &&
      TryPreempt(a, nofit)) {
    HoldRest(a, nofit);
  }
}

void EngineImpl::ApplyCounters(Alloc& a, int sign) {
  for (const auto& [c, m] : a.demand) counters_[c].used += sign * m;
}

void EngineImpl::Grant(Alloc& a, std::optional<double> score) {
  a.status = AllocStatus::kActive;
  a.holding = true;
  a.expiring = false;
  a.granted_at = now_;
  // A re-granted (re-queued) allocation's queued_at is its first ask, so
  // its wait would count its earlier run: only first grants are counted.
  if (a.fencing == 0) RecordGrantWait(now_ - a.queued_at);
  // A re-granted (re-queued) allocation's old token names nobody now.
  if (a.locks && a.fencing != 0) fencing_owner_.erase(a.fencing);
  a.fencing = ++fencing_;
  a.expires_at = std::min(now_ + a.req.ttl, now_ + a.req.max_duration);
  a.expected_end = a.req.estimated_minutes
                       ? now_ + Duration(static_cast<int64_t>(
                                    *a.req.estimated_minutes * kMsPerMinute))
                       : a.expires_at;
  for (const auto& [c, m] : a.demand) {
    if (TracksHolders(c)) counters_[c].holders.insert({a.expected_end, a.id});
  }
  CountRunning(a, +1);
  ++active_count_;
  if (a.locks) {
    TakeLocks(a);
    fencing_owner_[a.fencing] = a.id;
    if (a.locks->reservation != 0) {
      auto r = reservations_.find(a.locks->reservation);
      if (r != reservations_.end()) r->second.claimants.insert(a.id);
    }
  }
  if (track_wf_active_) NoteWorkflowActive(a, +1);
  OnGrantMoney(a);
  Schedule(a.expires_at, a.id, Timer::Kind::kLeaseExpiry);
  Emit(EventType::kGranted, a, {}, score);
}

void EngineImpl::StopHolding(Alloc& a) {
  if (!a.holding) return;
  ApplyCounters(a, -1);
  if (a.locks && a.locks->reservation != 0) ReturnDraw(a);
  const bool preempted = a.status == AllocStatus::kPreempted;
  for (const auto& [c, m] : a.demand) {
    if (TracksHolders(c)) counters_[c].holders.erase({a.expected_end, a.id});
    if (preempted) counters_[c].releasing -= m;
  }
  CountRunning(a, -1);
  const Time from = std::max(a.granted_at, metrics_since_);
  if (now_ > from) {
    if (busy_agent_ms_.size() <= a.type) busy_agent_ms_.resize(types_.size());
    busy_agent_ms_[a.type] +=
        static_cast<double>((now_ - from).count()) * FromMilli(a.req.agents);
  }
  a.holding = false;
  if (preempted) {
    --preempting_count_;
  } else {
    --active_count_;
  }
  if (a.locks) {
    DropLocks(a);
    WakeGated(a.id);
  }
  if (track_wf_active_) NoteWorkflowActive(a, -1);
}

void EngineImpl::DispatchFreed(const Demand& touched) {
  TopUpReservations();  // open windows short of capacity come first
  if (queued_count_ == 0) return;
  if (WakesPending()) {
    Dispatch();  // requests gated on what ended look again, in order
    return;
  }
  std::vector<uint32_t> seeds;
  for (const auto& [c, m] : touched) {
    if (Blocker(c) != 0) seeds.push_back(c);
  }
  if (!seeds.empty()) RunPass(&seeds);
}

AllocationInfo EngineImpl::Finish(Alloc& a, AllocStatus status, EventType event,
                                  std::string reason) {
  StopHolding(a);
  if (a.locks) {
    DropLocks(a);
    CloseConflict(a,
                  std::string("the waiter ended: ") + AllocStatusName(status));
  }
  a.status = status;
  a.ended_at = now_;
  a.Extras().end_reason = reason;
  OnFinishMoney(a);
  Emit(event, a, std::move(reason));
  ReleaseWorkflowRef(a.req.workflow_id);
  const Demand freed = a.demand;
  AllocationInfo info = Info(a);
  Retire(a);  // may erase `a`
  DispatchFreed(freed);
  return info;
}

AllocationInfo EngineImpl::ForceRelease(Alloc& a, AllocStatus status,
                                        EventType event, std::string reason) {
  if (status == AllocStatus::kPreempted && a.req.requeue_on_preempt) {
    StopHolding(a);
    OnRequeueMoney(a);
    a.status = AllocStatus::kPreempted;
    Emit(event, a, reason);
    a.Extras().end_reason = std::move(reason);
    // Back to the queue with its original queued_at. What it freed goes to
    // whoever ranks first, normally the request that preempted it, so the
    // whole queue is examined in order (preemptions are rare).
    Enqueue(a);
    Emit(EventType::kRequeued, a,
         "re-queued after preemption, keeping its queue time " +
             FormatTime(a.queued_at));
    Dispatch();
    return Info(a);
  }
  return Finish(a, status, event, std::move(reason));
}

void EngineImpl::Retire(Alloc& a) {
  history_.push_back(&a);
  const size_t limit = static_cast<size_t>(
      std::max<int64_t>(0, config_.scheduling.history_limit));
  if (history_.size() <= limit) return;
  do {
    const Alloc& old = *history_.front();
    history_.pop_front();
    if (!old.idempotency_key().empty()) {
      idempotency_.erase(old.idempotency_key());
    }
    if (old.locks && old.fencing) fencing_owner_.erase(old.fencing);
    allocs_.erase(old.id);
  } while (history_.size() > limit);
  PrefetchRetirees();
}

// Once the history is full, every ending erases the oldest allocation,
// whose memory was last touched thousands of requests ago: each of its
// objects is a cache miss, and freeing them one after another stalled on
// each (about a sixth of an allocate+release with 8 locks, measured). So
// each Retire fetches ahead in stages, reading only what an earlier stage
// fetched: the node of the allocation three endings ahead, the objects the
// node two ahead points to, and the objects those point to for the next
// one. The misses then overlap other work. A hint only: it changes nothing.
void EngineImpl::PrefetchRetirees() const {
  const size_t n = history_.size();
  auto fetch = [](const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    // From the allocator's header before the object.
    for (size_t off = 0; off < bytes + 16; off += 64) {
      __builtin_prefetch(c - 16 + off);
    }
  };
  if (n > 2) fetch(history_[2], sizeof(std::pair<const uint64_t, Alloc>));
  if (n > 1) {
    const Alloc& b = *history_[1];
    if (b.extras) fetch(b.extras.get(), sizeof(AllocExtras));
    if (b.locks) fetch(b.locks.get(), sizeof(AllocLocks));
    if (b.money) fetch(b.money.get(), 0);
    if (!b.demand.empty()) fetch(b.demand.data(), 0);
  }
  if (n > 0) {
    const Alloc& c = *history_[0];
    if (c.locks && !c.locks->locks.empty()) {
      fetch(c.locks->locks.data(), 0);
      fetch(c.locks->list.begin(), 0);
    }
  }
}

WaitReason EngineImpl::Diagnose(const Demand& d, uint64_t self) const {
  WaitReason behind;
  for (const auto& [c, m] : d) {
    const Counter& k = counters_[c];
    if (k.used + m > k.limit) return {WaitReason::Kind::kNoFit, c, m, 0};
    const uint64_t b = Blocker(c);
    if (behind.kind == WaitReason::Kind::kNone && b != 0 && b != self &&
        k.used + m + k.held > k.limit) {
      behind = {WaitReason::Kind::kBehind, c, m, b};
    }
  }
  return behind;
}

void EngineImpl::Admit(Alloc& a, bool is_new) {
  if (a.locks && Gate(a)) {
    Enqueue(a);  // gated: claims its locks, no counters
    return;
  }
  if (GrantsHeld(a)) {
    Enqueue(a);  // claims nothing: the pause holds it
    return;
  }
  std::vector<uint32_t> nofit;
  uint32_t behind = UINT32_MAX;
  PreDraw(a);  // a reservation's claimant first takes from it
  Assess(a, 0, &nofit, &behind);
  if (nofit.empty() && behind == UINT32_MAX) {
    ApplyCounters(a, +1);
    Grant(a, is_new ? std::nullopt : std::optional<double>(CurrentScore(a)));
    return;
  }
  if (a.locks && !a.locks->drawn.empty()) {
    UndoDraw(a);
    Assess(a, 0, &nofit, &behind);
  }
  Enqueue(a);
  if (!nofit.empty()) {
    ++pass_serial_;
    Wait(a, nofit);
    if (relaxed_) Dispatch();
  } else {
    a.wait = {WaitReason::Kind::kBehind, behind, AmountOn(a.demand, behind),
              Blocker(behind)};
  }
}

// One dispatch pass: visits queued requests best score first (a lazy merge
// over bands; within a band, lanes by their best request; within a lane,
// requests in order) and starts every one that fits and does not need a
// counter claimed by a waiter that outranks it. See docs/architecture.md,
// "Dispatch".
void EngineImpl::RunPass(const std::vector<uint32_t>* seeds) {
  if (queued_count_ == 0) return;
  if (AllHeld()) {
    // Nothing may start: there is nothing to re-score until grants resume
    // (Resume, a breaker override and the period reset dispatch then).
    if (seeds == nullptr) last_pass_ = now_;
    return;
  }
  const bool full = seeds == nullptr;
  if (WakesPending() && ProcessWakes() && !full) {
    RunPass(nullptr);  // a request stopped being gated: look at everyone
    return;
  }
  if (full) {
    ++pass_epoch_;  // B starts empty
    last_pass_ = now_;
    relaxed_ = false;
  }
  const uint64_t serial = ++pass_serial_;
  const std::vector<double>& fs = FairShare();
  using MemberIt = decltype(Lane::members)::const_iterator;
  using BandIt = decltype(Band::lanes)::const_iterator;
  struct Cursor {
    int tier;
    double score;
    uint32_t lane;
    MemberIt it;
    bool band_head;  // full passes: visiting it pushes the band's next lane
    BandIt band_it;
  };
  // Max-heap order: higher tier, then higher score, then the earlier key.
  auto less = [](const Cursor& x, const Cursor& y) {
    if (x.tier != y.tier) return x.tier < y.tier;
    if (x.score != y.score) return x.score < y.score;
    return QKeyBefore()(*y.it, *x.it);
  };
  std::vector<Cursor> heap;
  // Lanes are scored from their keys alone (no allocation lookups).
  auto cursor = [&](uint32_t lane, MemberIt it, bool band_head,
                    BandIt band_it) {
    const Level level = bands_[lanes_[lane].band].level;
    return Cursor{NoWaitLevel(level) ? 1 : 0,
                  RankScore(*it, level, lanes_[lane].product, fs),
                  lane,
                  it,
                  band_head,
                  band_it};
  };
  auto push = [&](uint32_t lane, MemberIt it, bool band_head, BandIt band_it) {
    heap.push_back(cursor(lane, it, band_head, band_it));
    std::push_heap(heap.begin(), heap.end(), less);
  };
  // Counters whose lanes a targeted pass visits; once every one of them is
  // claimed by a request this pass visited, nothing left can start.
  std::vector<uint32_t> pass_counters;
  // Targeted passes: put every lane that touches counter `c` on the heap.
  bool escalate = false;
  auto add_lanes_of = [&](uint32_t c) {
    const Counter& k = counters_[c];
    const std::vector<uint32_t>* lanes = nullptr;
    if (k.kind == Counter::Kind::kAgentType) {
      lanes = &type_lanes_[k.owner];
    } else if (k.kind == Counter::Kind::kProduct) {
      lanes = &product_lanes_[k.owner];
    } else {
      escalate = true;  // global or workflow counter: everyone may care
      return;
    }
    pass_counters.push_back(c);
    for (uint32_t li : *lanes) {
      Lane& lane = lanes_[li];
      if (lane.members.empty() || !lane.uses_agents ||
          lane.seen_serial == serial) {
        continue;
      }
      lane.seen_serial = serial;
      heap.push_back(cursor(li, lane.members.begin(), false, BandIt()));
    }
    std::make_heap(heap.begin(), heap.end(), less);
  };
  auto all_claimed = [&] {
    for (uint32_t c : pass_counters) {
      if (counters_[c].blocked_serial != serial || Blocker(c) == 0 ||
          Room(c) >= agents_min_) {
        return false;
      }
    }
    return true;
  };
  if (full) {
    heap.reserve(active_bands_.size() * 2);
    for (uint32_t b : active_bands_) {
      const Band& band = bands_[b];
      const BandIt first = band.lanes.begin();
      push(first->second, lanes_[first->second].members.begin(), true, first);
    }
  } else {
    for (uint32_t c : *seeds) {
      counters_[c].blocked_by = 0;
      add_lanes_of(c);
    }
    if (escalate) {
      RunPass(nullptr);
      return;
    }
  }
  const uint32_t agents_counter = resource_counter_[agents_resource_];
  std::vector<std::pair<uint64_t, double>> granted;
  std::vector<uint32_t> nofit;
  while (!heap.empty() && !escalate) {
    if (counters_[agents_counter].blocked_serial == serial &&
        Blocker(agents_counter) != 0 && Room(agents_counter) < agents_min_ &&
        queued_without_agents_ == 0) {
      break;  // everything left needs an agent a better request awaits
    }
    if (!full && all_claimed()) break;
    std::pop_heap(heap.begin(), heap.end(), less);
    const Cursor cur = heap.back();
    heap.pop_back();
    const Lane& lane = lanes_[cur.lane];
    if (cur.band_head) {
      const BandIt next = std::next(cur.band_it);
      if (next != bands_[lane.band].lanes.end()) {
        push(next->second, lanes_[next->second].members.begin(), true, next);
      }
    }
    Alloc& a = allocs_.at(cur.it->id);
    if (GrantsHeld(a.req.level)) {  // the breaker holds this level: skip
      Unpark(a);                    // the lane
      continue;
    }
    if (PressureHolds(a.demand)) {
      // Held while memory is under pressure: it claims no counter (drop
      // claims left from before) and the rest of the lane goes on.
      for (const auto& [c, m] : a.demand) {
        if (Blocker(c) != a.id) continue;
        counters_[c].blocked_by = 0;
        if (!full) add_lanes_of(c);
      }
      Unpark(a);
      const MemberIt next = std::next(cur.it);
      if (next != lane.members.end()) push(cur.lane, next, false, cur.band_it);
      continue;
    }
    if (a.locks && a.locks->gate != AllocLocks::Gate::kNone) {
      // Gated while grants were held: its preemption was not considered.
      PreemptForLock(a);
    }
    if (a.locks && (a.locks->gate != AllocLocks::Gate::kNone || Gate(a))) {
      // Waits for a lock or a workflow: it claims no counter (drop claims
      // left from before it was gated) and the rest of the lane goes on.
      for (const auto& [c, m] : a.demand) {
        if (Blocker(c) != a.id) continue;
        counters_[c].blocked_by = 0;
        if (!full) add_lanes_of(c);
      }
      // A request waiting for the lock of a holder it preempted, or for a
      // workflow (whose holders it may have preempted), keeps its victims
      // parked: they would take the lock or the workflow back before it
      // starts.
      const AllocLocks& gl = *a.locks;
      auto gh = gl.gate == AllocLocks::Gate::kLock ? allocs_.find(gl.gate_on)
                                                   : allocs_.end();
      if (gl.gate != AllocLocks::Gate::kWorkflow &&
          (gh == allocs_.end() || !gh->second.holding ||
           gh->second.preempted_by != a.id)) {
        Unpark(a);
      }
      const MemberIt next = std::next(cur.it);
      if (next != lane.members.end()) push(cur.lane, next, false, cur.band_it);
      continue;
    }
    uint32_t behind = UINT32_MAX;
    if (const uint64_t p = ParkedBehind(a); p != 0) {
      a.wait = {WaitReason::Kind::kYielding,
                a.demand.empty() ? 0u : a.demand.front().first, 0, p};
      const MemberIt next = std::next(cur.it);
      if (next != lane.members.end()) push(cur.lane, next, false, cur.band_it);
      continue;
    }
    PreDraw(a);
    Assess(a, serial, &nofit, &behind);
    if ((!nofit.empty() || behind != UINT32_MAX) && a.locks &&
        !a.locks->drawn.empty()) {
      UndoDraw(a);
      Assess(a, serial, &nofit, &behind);
    }
    // The rest of the lane needs at least agents_min_ of the lane's shared
    // counters (type, product, agents): skip it when they have less room.
    auto lane_dead = [&](uint32_t c) {
      return a.req.agents > 0 &&
             (c == agents_counter || c == types_[a.type].counter ||
              c == products_[a.product].counter) &&
             Room(c) < agents_min_;
    };
    bool skip_lane = false;
    if (!nofit.empty()) {
      Wait(a, nofit);
      for (uint32_t c : nofit) skip_lane |= lane_dead(c);
    } else if (behind != UINT32_MAX) {
      a.wait = {WaitReason::Kind::kBehind, behind, AmountOn(a.demand, behind),
                Blocker(behind)};
      skip_lane = lane_dead(behind);
    } else {
      ApplyCounters(a, +1);
      // Its locks too, so later requests of this pass see them held.
      if (a.locks) TakeLocks(a);
      granted.emplace_back(a.id, Score(a, now_, fs));
      // Counters it claimed are free of it now: whoever else waits for them
      // must be looked at again.
      for (const auto& [c, m] : a.demand) {
        if (Blocker(c) != a.id) continue;
        counters_[c].blocked_by = 0;
        if (!full) add_lanes_of(c);
      }
    }
    if (!skip_lane) {
      const MemberIt next = std::next(cur.it);
      if (next != lane.members.end()) push(cur.lane, next, false, cur.band_it);
    }
  }
  for (const auto& [id, score] : granted) {
    Alloc& a = allocs_.at(id);
    Dequeue(a);
    Grant(a, score);
  }
  // A full pass rebuilds every claim in order, so it only relaxes one when
  // a request that preempted others started (its victims may go now).
  if (escalate || relaxed_) RunPass(nullptr);
}

// Chooses victims among running preemptible allocations of strictly lower
// levels (lowest level first, then lowest priority value, then most recently
// granted) until every short counter would have room, and sends them a
// preemption notice. Takes nobody when that cannot make the request fit.
bool EngineImpl::VictimBefore(const Alloc* x, const Alloc* y) {
  if (x->req.level != y->req.level) return x->req.level < y->req.level;
  if (x->req.priority_value != y->req.priority_value) {
    return x->req.priority_value < y->req.priority_value;
  }
  if (x->granted_at != y->granted_at) return x->granted_at > y->granted_at;
  return x->id > y->id;
}

bool EngineImpl::TryPreempt(Alloc& a,
                            const std::vector<uint32_t>& short_counters) {
  std::vector<std::pair<uint32_t, Milli>> shortfall;
  for (uint32_t c : short_counters) {
    const Counter& k = counters_[c];
    const Milli s =
        k.used + AmountOn(a.demand, c) + Booked(c, a) - k.limit - k.releasing;
    if (s > 0) shortfall.emplace_back(c, s);
  }
  if (shortfall.empty()) {
    a.wait = {WaitReason::Kind::kPreempting, short_counters[0],
              AmountOn(a.demand, short_counters[0]), 0};
    return true;  // earlier victims' releases will make room
  }
  // Candidates: holders of the short counters.
  std::vector<const Alloc*> candidates;
  std::set<uint64_t> seen;
  for (const auto& [c, s] : shortfall) {
    for (const auto& [end, id] : counters_[c].holders) {
      const Alloc& v = allocs_.at(id);
      // Only victims the request outranks as if they were queued (a victim
      // that would be re-queued ahead of it would just take its place back).
      if (v.status != AllocStatus::kActive || !v.req.preemptible ||
          v.req.level >= a.req.level || !seen.insert(id).second ||
          !Outranks(a, v)) {
        continue;
      }
      candidates.push_back(&v);
    }
  }
  std::sort(candidates.begin(), candidates.end(), VictimBefore);
  std::vector<const Alloc*> victims;
  for (const Alloc* v : candidates) {
    bool helps = false;
    for (auto& [c, s] : shortfall) {
      if (s <= 0) continue;
      if (FreedBy(*v, c) > 0) helps = true;
    }
    if (!helps) continue;
    victims.push_back(v);
    bool done = true;
    for (auto& [c, s] : shortfall) {
      s -= FreedBy(*v, c);
      if (s > 0) done = false;
    }
    if (done) break;
  }
  for (const auto& [c, s] : shortfall) {
    if (s > 0) return false;
  }
  for (const Alloc* cv : victims) {
    SendPreemptNotice(allocs_.at(cv->id), a, "");
  }
  a.wait = {WaitReason::Kind::kPreempting, short_counters[0],
            AmountOn(a.demand, short_counters[0]), 0};
  return true;
}

void EngineImpl::SendPreemptNotice(Alloc& v, Alloc& by,
                                   const std::string& why) {
  v.preempted_by = by.id;
  v.preempted_by_fence = by.fencing;
  by.preempted_someone = true;
  NoticeVictim(v, "preempted by " + IdText(by.id) + " (" +
                      LevelName(by.req.level) + ")" + why);
}

void EngineImpl::NoticeVictim(Alloc& v, const std::string& text,
                              EventType type) {
  v.status = AllocStatus::kPreempted;
  v.preempt_deadline = now_ + config_.scheduling.preemption_grace;
  for (const auto& [c, m] : v.demand) counters_[c].releasing += m;
  --active_count_;
  ++preempting_count_;
  Emit(type, v, text + "; release by " + FormatTime(v.preempt_deadline));
  Schedule(v.preempt_deadline, v.id, Timer::Kind::kPreemptDeadline);
}

// ---------------------------------------------------------------- operations

StatusOr<AllocateResult> EngineImpl::Allocate(const AllocationRequest& r) {
  auto batch = AllocateMany(std::span<const AllocationRequest>(&r, 1), false);
  if (!batch.ok()) return batch.status();
  return std::move(batch->front());
}

StatusOr<std::vector<AllocateResult>> EngineImpl::AllocateBatch(
    const std::vector<AllocationRequest>& requests, bool all_or_nothing) {
  return AllocateMany(requests, all_or_nothing);
}

StatusOr<std::vector<AllocateResult>> EngineImpl::AllocateMany(
    std::span<const AllocationRequest> requests, bool all_or_nothing) {
  OpScope op(this);
  const bool single = requests.size() == 1 && !all_or_nothing;
  if (requests.empty()) return InvalidRequest("requests must not be empty");
  if (requests.size() > 10000) {
    return InvalidRequest("requests holds " + std::to_string(requests.size()) +
                          " items; the limit is 10000");
  }
  // Validate everything before changing anything.
  std::vector<ParsedRequest> parsed;
  std::vector<std::optional<uint64_t>> replay(requests.size());
  std::vector<MoneyPlan> plans(MoneyEnabled() ? requests.size() : 0);
  parsed.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string prefix =
        single ? "" : "requests[" + std::to_string(i) + "].";
    auto p = Validate(requests[i], prefix);
    if (!p.ok()) return p.status();
    if (!p->idempotency_key.empty()) {
      auto it = idempotency_.find(p->idempotency_key);
      if (it != idempotency_.end()) {
        const Alloc& prior = allocs_.at(it->second);
        const RequestCore& old = prior.req;
        if (old.workflow_id != p->workflow_id ||
            products_[prior.product].name != p->product ||
            types_[prior.type].name != p->agent_type || old.level != p->level ||
            Reconstruct(prior).resources != p->resources) {
          return Conflict(prefix + "idempotency_key \"" +
                          Truncate(p->idempotency_key, 64) +
                          "\" was already used by " + IdText(it->second) +
                          " for a different request");
        }
        replay[i] = it->second;
      }
      for (size_t j = 0; j < i; ++j) {
        if (parsed[j].idempotency_key == p->idempotency_key) {
          return InvalidRequest(prefix + "idempotency_key repeats requests[" +
                                std::to_string(j) + "]");
        }
      }
    }
    if (!replay[i]) {
      QM_RETURN_IF_ERROR(CheckCanEverFit(*p, p->product, p->agent_type));
      if (MoneyEnabled()) {
        auto plan = PlanMoney(*p, prefix);
        if (!plan.ok()) return plan.status();
        QM_RETURN_IF_ERROR(CheckMoney(*p, *plan, prefix));
        plans[i] = std::move(*plan);
      }
    }
    parsed.push_back(std::move(*p));
  }
  if (all_or_nothing) {
    // Tentatively take every new request's demand; undo it all afterwards.
    // The batch is granted only if each fits on top of the ones before it
    // and none needs a counter a queued request is waiting for.
    std::vector<Demand> taken;
    std::vector<const ParsedRequest*> earlier;  // taken so far
    std::vector<std::string> workflows;
    std::string why;
    size_t failed = 0;
    const size_t known_types = types_.size(), known_products = products_.size();
    for (size_t i = 0; i < parsed.size() && why.empty(); ++i) {
      if (replay[i]) continue;
      const ParsedRequest& p = parsed[i];
      const uint32_t product = InternProduct(p.product);
      const uint32_t type = InternType(p.agent_type);
      workflows.push_back(p.workflow_id);
      Demand d = BuildDemand(p, product, type, &AcquireWorkflow(p.workflow_id),
                             MoneyEnabled() ? plans[i].num_budgets : 0);
      if (MoneyEnabled()) AddBudgetDemand(plans[i], &d);
      const WaitReason w = Diagnose(d, 0);
      const bool held = GrantsHeld(p.level);
      std::string lock_why;
      if (w.kind == WaitReason::Kind::kNone && !held) {
        lock_why = BatchLockConflict(p, earlier);
      }
      if (w.kind == WaitReason::Kind::kNone && !held && lock_why.empty() &&
          HasBookings()) {
        for (const auto& [c, m] : d) {
          const Milli b = Booked(c, RunEnd(p), 0);
          if (counters_[c].used + m + b > counters_[c].limit) {
            lock_why = CounterLabel(counters_[c]) + ": " + FormatMilli(b) +
                       " is reserved during its expected run";
            break;
          }
        }
      }
      if (!lock_why.empty() && !p.reservation.empty()) {
        lock_why += " (batches cannot draw from reservations)";
      }
      if (w.kind != WaitReason::Kind::kNone) {
        why = ReasonText(w);
        failed = i;
      } else if (!lock_why.empty()) {
        why = std::move(lock_why);
        failed = i;
      } else if (held || PressureHolds(d)) {
        why = paused_ ? "grants are paused by an operator"
              : held  ? "the circuit breaker is open"
                      : PressureText();
        failed = i;
      } else {
        for (const auto& [c, m] : d) counters_[c].used += m;
        taken.push_back(std::move(d));
        earlier.push_back(&p);
      }
    }
    for (const Demand& d : taken) {
      for (const auto& [c, m] : d) counters_[c].used -= m;
    }
    for (const std::string& wf : workflows) ReleaseWorkflowRef(wf);
    if (!why.empty()) {
      // A refused batch leaves no trace: forget names it introduced.
      while (types_.size() > known_types) {
        FreeCounter(types_.back().counter);
        type_index_.erase(types_.back().name);
        types_.pop_back();
        type_lanes_.pop_back();
      }
      while (products_.size() > known_products) {
        FreeCounter(products_.back().counter);
        product_index_.erase(products_.back().name);
        products_.pop_back();
        product_lanes_.pop_back();
      }
      return Unavailable(
          "batch does not fit now as a whole; nothing was "
          "granted: requests[" +
          std::to_string(failed) + "] (" + parsed[failed].agent_type +
          "): " + why);
    }
  }
  std::vector<AllocateResult> results;
  results.reserve(parsed.size());
  for (size_t i = 0; i < parsed.size(); ++i) {
    if (replay[i]) {
      results.push_back({Info(allocs_.at(*replay[i])), true});
      continue;
    }
    ParsedRequest& p = parsed[i];
    const uint64_t id = next_id_++;
    Alloc& a = allocs_[id];
    a.id = id;
    a.product = InternProduct(p.product);
    a.type = InternType(p.agent_type);
    auto [rit, rnew] = requester_index_.try_emplace(
        p.requester, static_cast<uint32_t>(requesters_.size()));
    if (rnew) requesters_.push_back(p.requester);
    a.requester = rit->second;
    if (!p.metadata.empty() || !p.idempotency_key.empty()) {
      a.Extras().metadata = std::move(p.metadata);
      a.Extras().idempotency_key = p.idempotency_key;
    }
    Workflow& wf = AcquireWorkflow(p.workflow_id);
    a.demand = BuildDemand(p, a.product, a.type, &wf,
                           MoneyEnabled() ? plans[i].num_budgets : 0);
    if (MoneyEnabled()) {
      AddBudgetDemand(plans[i], &a.demand);
      a.money = MakeMoney(plans[i]);
    }
    a.queued_at = now_;
    if (!p.locks.empty() || !p.avoid.empty() || !p.reservation.empty()) {
      SetupLocks(a, p);
    }
    a.req = static_cast<RequestCore&&>(p);
    if (!a.idempotency_key().empty()) idempotency_[a.idempotency_key()] = id;
    Admit(a, true);
    if (a.status == AllocStatus::kQueued) {
      Emit(EventType::kQueued, a, ReasonText(a), CurrentScore(a));
    }
    results.push_back({Info(a), false});
  }
  return results;
}

StatusOr<Alloc*> EngineImpl::Find(std::string_view id) {
  auto r = static_cast<const EngineImpl*>(this)->Find(id);
  if (!r.ok()) return r.status();
  return const_cast<Alloc*>(*r);
}

StatusOr<const Alloc*> EngineImpl::Find(std::string_view id) const {
  static constexpr std::string_view kPrefix = "alloc_";
  uint64_t n = 0;
  bool ok = id.size() > kPrefix.size() && id.size() <= kPrefix.size() + 19 &&
            id.substr(0, kPrefix.size()) == kPrefix;
  if (ok) {
    for (char c : id.substr(kPrefix.size())) {
      if (c < '0' || c > '9') {
        ok = false;
        break;
      }
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
  }
  if (!ok) {
    return InvalidRequest(
        "allocation_id must look like alloc_<number>, got \"" +
        Truncate(std::string(id), 64) + "\"");
  }
  auto it = allocs_.find(n);
  if (it == allocs_.end()) {
    return NotFound("no allocation " + std::string(id) +
                    (n < next_id_ ? " (it ended and left the history)" : ""));
  }
  return &it->second;
}

ParsedRequest EngineImpl::Reconstruct(const Alloc& a) const {
  ParsedRequest p;
  static_cast<RequestCore&>(p) = a.req;
  for (const auto& [c, m] : a.demand) {
    const Counter& k = counters_[c];
    if (k.kind == Counter::Kind::kResource)
      p.resources.emplace_back(k.owner, m);
  }
  return p;
}

std::string EngineImpl::IdText(uint64_t id) {
  return "alloc_" + std::to_string(id);
}

StatusOr<AllocationInfo> EngineImpl::Release(std::string_view id,
                                             const UsageReport& usage) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (HasSpend(usage)) {
    auto priced = PriceUsage(a, usage, "usage.");
    if (!priced.ok()) return priced.status();
  }
  bool stopped = false;  // at release over-budget is only flagged
  switch (a.status) {
    case AllocStatus::kQueued:
      return Conflict(IdText(a.id) +
                      " is queued, not running; cancel it "
                      "instead");
    case AllocStatus::kReleased:
    case AllocStatus::kFailed:
      return Info(a);  // a retried release: nothing more to do
    case AllocStatus::kExpired:
      return Conflict(IdText(a.id) + " already expired at " +
                      FormatTime(a.ended_at) + "; its resources were reclaimed")
          .WithDetails(a.extras ? a.extras->end_reason : "");
    case AllocStatus::kCancelled:
      return Conflict(IdText(a.id) + " was cancelled");
    case AllocStatus::kReserved:
      return Conflict(IdText(a.id) + " is a reservation");
    case AllocStatus::kPreempted:
      if (!a.holding) {
        if (a.extras && a.extras->usage) return Info(a);  // a retried release
        return Conflict(IdText(a.id) +
                        " was preempted; its resources were "
                        "taken back")
            .WithDetails(a.extras ? a.extras->end_reason : "");
      }
      // The holder finished within its notice: it is done, not re-queued.
      QM_RETURN_IF_ERROR(RecordUsage(a, usage, "usage.", false, &stopped));
      a.Extras().usage = usage;
      return Finish(a, AllocStatus::kPreempted, EventType::kPreempted,
                    "released by the holder after the preemption notice");
    case AllocStatus::kActive:
      QM_RETURN_IF_ERROR(RecordUsage(a, usage, "usage.", false, &stopped));
      a.Extras().usage = usage;
      if (usage.outcome == Outcome::kFailure) {
        return Finish(a, AllocStatus::kFailed, EventType::kFailed,
                      "the holder reported failure");
      }
      return Finish(a, AllocStatus::kReleased, EventType::kReleased,
                    usage.outcome == Outcome::kCancelled
                        ? "cancelled by the holder"
                        : "completed");
  }
  return Internal("unknown allocation status");
}

StatusOr<AllocationInfo> EngineImpl::Renew(std::string_view id,
                                           std::optional<Duration> ttl) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (ttl && (ttl->count() <= 0 || *ttl > kMaxTtl)) {
    return InvalidRequest("ttl must be positive and at most " +
                          FormatDuration(kMaxTtl));
  }
  if (a.status != AllocStatus::kActive) {
    return Conflict(IdText(a.id) + " is " + AllocStatusName(a.status) +
                    "; only active allocations can be renewed");
  }
  const Time cap = a.granted_at + a.req.max_duration;
  const Time next = std::min(now_ + ttl.value_or(a.req.ttl), cap);
  if (next <= now_) {
    return Conflict(IdText(a.id) + " reached its max_duration of " +
                    FormatDuration(a.req.max_duration) + "; release it");
  }
  a.expires_at = next;
  a.expiring = false;
  if (!a.req.estimated_minutes) {
    for (const auto& [c, m] : a.demand) {
      if (!TracksHolders(c)) continue;
      counters_[c].holders.erase({a.expected_end, a.id});
      counters_[c].holders.insert({next, a.id});
    }
    CountRunning(a, -1);
    a.expected_end = next;
    CountRunning(a, +1);
  }
  Schedule(next, a.id, Timer::Kind::kLeaseExpiry);
  Emit(EventType::kRenewed, a, "lease extended to " + FormatTime(next));
  return Info(a);
}

StatusOr<AllocationInfo> EngineImpl::Reallocate(
    std::string_view id, const ResourceAmounts& resources) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (resources.empty()) return InvalidRequest("resources must not be empty");
  if (resources.size() > kMaxResourcesPerRequest) {
    return InvalidRequest("resources names too many resources (limit " +
                          std::to_string(kMaxResourcesPerRequest) + ")");
  }
  ParsedRequest next = Reconstruct(a);
  std::vector<bool> seen(resource_specs_.size(), false);
  for (const auto& [name, amount] : resources) {
    const std::string field = ResourceField("", name);
    uint32_t idx = 0;
    Milli m = 0;
    QM_RETURN_IF_ERROR(ValidateAmount("", name, amount, &idx, &m));
    if (seen[idx]) return InvalidRequest(field + " is given twice");
    seen[idx] = true;
    auto it = std::find_if(next.resources.begin(), next.resources.end(),
                           [&](const auto& e) { return e.first == idx; });
    if (it != next.resources.end()) {
      if (m == 0) {
        next.resources.erase(it);
      } else {
        it->second = m;
      }
    } else if (m > 0) {
      next.resources.emplace_back(idx, m);
    }
    if (idx == agents_resource_) next.agents = m;
  }
  if (a.status != AllocStatus::kActive) {
    return Conflict(IdText(a.id) + " is " + AllocStatusName(a.status) +
                    "; only active allocations can be reallocated");
  }
  QM_RETURN_IF_ERROR(
      CheckCanEverFit(next, products_[a.product].name, types_[a.type].name));
  auto wit = workflows_.find(a.req.workflow_id);
  Demand demand = BuildDemand(next, a.product, a.type,
                              wit == workflows_.end() ? nullptr : &wit->second);
  for (const auto& [c, m] : a.demand) {  // reservations stay as they are
    if (counters_[c].kind == Counter::Kind::kBudget) demand.emplace_back(c, m);
  }
  Demand freed;
  for (const auto& [c, m] : demand) {
    const Milli delta = m - AmountOn(a.demand, c);
    const Counter& k = counters_[c];
    if (delta <= 0) continue;
    if (k.used + delta > k.limit) {
      return Unavailable("cannot grow " + IdText(a.id) +
                         " now: " + CounterLabel(k) + " has " +
                         FormatMilli(k.limit - k.used) + " free, needs " +
                         FormatMilli(delta))
          .AddAffected(k.name);
    }
    if (const Milli b =
            Booked(c, a.expected_end, a.locks ? a.locks->reservation : 0);
        b > 0 && k.used + delta + b > k.limit) {
      return Unavailable("cannot grow " + IdText(a.id) +
                         " now: " + FormatMilli(b) + " of " + CounterLabel(k) +
                         " is reserved before its expected end " +
                         FormatTime(a.expected_end))
          .AddAffected(k.name);
    }
    if (queued_count_ > 0 && Blocker(c) != 0) {
      return Unavailable("cannot grow " + IdText(a.id) +
                         " now: queued requests are waiting for " +
                         CounterLabel(k))
          .AddAffected(k.name);
    }
  }
  for (const auto& [c, m] : a.demand) {
    if (AmountOn(demand, c) < m) freed.emplace_back(c, m - AmountOn(demand, c));
  }
  ApplyCounters(a, -1);
  for (const auto& [c, m] : a.demand) {
    if (TracksHolders(c)) counters_[c].holders.erase({a.expected_end, a.id});
  }
  CountRunning(a, -1);
  a.req = static_cast<RequestCore&&>(next);
  CountRunning(a, +1);
  a.demand = demand;
  ApplyCounters(a, +1);
  for (const auto& [c, m] : a.demand) {
    if (TracksHolders(c)) counters_[c].holders.insert({a.expected_end, a.id});
  }
  Emit(EventType::kReallocated, a, "resources changed");
  DispatchFreed(freed);
  return Info(a);
}

StatusOr<AllocationInfo> EngineImpl::Cancel(std::string_view id) {
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (a.status == AllocStatus::kCancelled) return Info(a);
  if (a.status != AllocStatus::kQueued) {
    return Conflict(IdText(a.id) + " is " + AllocStatusName(a.status) +
                    "; only queued requests can be cancelled (release a "
                    "running one)");
  }
  return CancelQueued(a, "cancelled while queued");
}

AllocationInfo EngineImpl::CancelQueued(Alloc& a, std::string reason) {
  std::vector<uint32_t> blocked;
  for (const auto& [c, m] : a.demand) {
    if (Blocker(c) == a.id) blocked.push_back(c);
  }
  Dequeue(a);
  if (a.locks) {
    DropLocks(a);
    CloseConflict(a, "the waiter was cancelled");
    WakeGated(a.id);
  }
  a.status = AllocStatus::kCancelled;
  a.ended_at = now_;
  Emit(EventType::kCancelled, a, std::move(reason));
  ReleaseWorkflowRef(a.req.workflow_id);
  AllocationInfo info = Info(a);
  Retire(a);
  if (WakesPending() && queued_count_ > 0) {
    Dispatch();
  } else if (!blocked.empty() && queued_count_ > 0) {
    RunPass(&blocked);
  }
  if (relaxed_) Dispatch();
  return info;
}

StatusOr<AllocationInfo> EngineImpl::Reclaim(std::string_view id,
                                             const std::string& reason) {
  if (reason.empty() || reason.size() > 1024) {
    return InvalidRequest("reason must be 1 to 1024 bytes");
  }
  OpScope op(this);
  auto found = Find(id);
  if (!found.ok()) return found.status();
  Alloc& a = **found;
  if (a.status == AllocStatus::kQueued) {
    return CancelQueued(a, "reclaimed: " + reason);
  }
  if (!a.holding) return Info(a);
  return Finish(a, AllocStatus::kExpired, EventType::kExpired,
                "reclaimed: " + reason);
}

StatusOr<AllocationInfo> EngineImpl::Get(std::string_view id) const {
  auto found = Find(id);
  if (!found.ok()) return found.status();
  return Info(**found);
}

StatusOr<AllocationList> EngineImpl::List(const AllocationFilter& f) const {
  uint64_t after = 0;
  if (!f.after.empty()) {
    constexpr std::string_view kPrefix = "alloc_";
    const std::string_view rest = std::string_view(f.after).substr(
        std::min(f.after.size(), kPrefix.size()));
    const auto [ptr, ec] =
        std::from_chars(rest.data(), rest.data() + rest.size(), after);
    if (f.after.rfind(kPrefix, 0) != 0 || rest.empty() || ec != std::errc() ||
        ptr != rest.data() + rest.size()) {
      return InvalidRequest("after: " + Quote(f.after) +
                            " is not an allocation id (alloc_<n>)");
    }
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, a] : allocs_) {
    if (id <= after) continue;
    if (!f.statuses.empty() && std::find(f.statuses.begin(), f.statuses.end(),
                                         a.status) == f.statuses.end()) {
      continue;
    }
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  AllocationList out;
  for (const uint64_t id : ids) {
    AllocationInfo i = Info(allocs_.at(id));
    if ((!f.product.empty() && i.product != f.product) ||
        (!f.agent_type.empty() && i.agent_type != f.agent_type) ||
        (!f.workflow_id.empty() && i.workflow_id != f.workflow_id) ||
        (!f.requester.empty() && i.requester != f.requester)) {
      continue;
    }
    if (out.allocations.size() == f.limit) {
      out.more = true;
      break;
    }
    out.allocations.push_back(std::move(i));
  }
  return out;
}

// ---------------------------------------------------------------- reports

std::string EngineImpl::CounterLabel(const Counter& c) const {
  switch (c.kind) {
    case Counter::Kind::kResource:
      return c.name;
    case Counter::Kind::kAgentType:
      return c.name + " agent slots";
    case Counter::Kind::kProduct:
      return "product " + c.name + " agent slots";
    case Counter::Kind::kWorkflow:
      return "workflow " + c.name;
    case Counter::Kind::kBudget:
      return c.name;
  }
  return c.name;
}

std::string EngineImpl::ReasonText(const Alloc& a) const {
  if (a.status != AllocStatus::kQueued) return "";
  if (paused_) {
    return "grants are paused" +
           (paused_by_.empty() ? std::string() : " by " + paused_by_) +
           (paused_reason_.empty() ? std::string() : ": " + paused_reason_);
  }
  if (a.locks && a.locks->gate != AllocLocks::Gate::kNone) {
    return GateText(a);
  }
  if (GrantsHeld(a.req.level)) {
    return "circuit breaker is open (" + breaker_.condition +
           "); it closes at " + FormatTime(period_end_);
  }
  if (PressureHolds(a.demand)) return PressureText();
  return ReasonText(a.wait);
}

std::string EngineImpl::ReasonText(const WaitReason& w) const {
  if (w.kind == WaitReason::Kind::kNone) return "waiting for the next dispatch";
  const Counter& c = counters_[w.counter];
  switch (w.kind) {
    case WaitReason::Kind::kNone:
      break;
    case WaitReason::Kind::kBehind: {
      auto it = allocs_.find(w.other);
      if (it == allocs_.end() || it->second.status != AllocStatus::kQueued) {
        return "waiting for " + CounterLabel(c) +
               " claimed by a higher-scored request";
      }
      return "waiting behind higher-scored " + IdText(w.other) + " for " +
             CounterLabel(c);
    }
    case WaitReason::Kind::kYielding:
      return "preempted by " + IdText(w.other) +
             "; waits for it to start before starting again";
    case WaitReason::Kind::kPreempting:
      return "preempting lower-priority work on " + CounterLabel(c) +
             "; starts when it is released";
    case WaitReason::Kind::kReserved: {
      auto it = allocs_.find(w.other);
      if (it == allocs_.end()) return CounterLabel(c) + " is reserved";
      return BookedText(w.counter, it->second);
    }
    case WaitReason::Kind::kBudgetReset: {
      const BudgetState& b = budgets_[c.owner];
      return "the " + BudgetLabel(b) + " has " +
             BudgetAmount(b, std::max<Milli>(0, c.limit - c.spent)) +
             " left, needs " + BudgetAmount(b, w.need) +
             "; waits for the reset at " + FormatTime(period_end_);
    }
    case WaitReason::Kind::kNoFit:
      switch (c.kind) {
        case Counter::Kind::kAgentType:
          return "max " + c.name + " (" + FormatMilli(c.limit) +
                 ") already running";
        case Counter::Kind::kProduct:
          return "product " + c.name + " at max_concurrent_agents (" +
                 FormatMilli(c.limit) + ")";
        case Counter::Kind::kWorkflow: {
          const auto slash = c.name.rfind('/');
          const std::string res = c.name.substr(slash + 1);
          const std::string key = res == "agents" ? "max_agents_per_workflow"
                                  : res == "cpu_cores"
                                      ? "max_cpu_per_workflow"
                                      : "max_memory_per_workflow";
          return "workflow " + c.name.substr(0, slash) + " at " + key + " (" +
                 FormatMilli(c.limit) + ")";
        }
        case Counter::Kind::kBudget: {
          const BudgetState& b = budgets_[c.owner];
          return "the " + BudgetLabel(b) + " has " +
                 BudgetAmount(b, std::max<Milli>(0, c.limit - c.used)) +
                 " unreserved, needs " + BudgetAmount(b, w.need) +
                 "; waits for running work to report or release";
        }
        case Counter::Kind::kResource:
          if (c.name == "agents") {
            return "all " + FormatMilli(c.limit) + " agents in use";
          }
          return c.name + ": needs " + FormatMilli(w.need) + ", " +
                 FormatMilli(std::max<Milli>(0, c.limit - c.used)) + " of " +
                 FormatMilli(c.limit) + " free";
      }
  }
  return "";
}

std::optional<Time> EngineImpl::ExpectedStart(const Alloc& a) const {
  if (a.status != AllocStatus::kQueued) return std::nullopt;
  if (paused_ || PressureHolds(a.demand)) return std::nullopt;
  if (GrantsHeld(a) || a.wait.kind == WaitReason::Kind::kBudgetReset) {
    return period_end_;
  }
  if (a.locks && a.locks->gate == AllocLocks::Gate::kLock) {
    auto it = allocs_.find(a.locks->gate_on);
    if (it != allocs_.end() && it->second.holding) {
      return std::max(ExpectedEnd(it->second), now_);
    }
    return std::nullopt;
  }
  if (a.locks && a.locks->gate == AllocLocks::Gate::kWorkflow) {
    return std::nullopt;
  }
  if (a.wait.kind == WaitReason::Kind::kNone) return now_;
  if (a.wait.kind == WaitReason::Kind::kReserved) {
    // Once the reservations it would run into are over.
    std::optional<Time> last;
    auto it = timelines_.find(a.wait.counter);
    if (it != timelines_.end()) {
      it->second.ForEachOverlap(now_,
                                std::max(RunEnd(a.req), now_ + Duration(1)),
                                [&](const Timeline::Interval& iv) {
                                  if (!last || iv.end > *last) last = iv.end;
                                });
    }
    return last;
  }
  const Counter& c = counters_[a.wait.counter];
  const Milli need = AmountOn(a.demand, a.wait.counter);
  Milli shortfall = c.used + need - c.limit;
  if (shortfall <= 0) shortfall = need;
  Milli freed = 0;
  size_t steps = 0;
  for (const auto& [end, id] : c.holders) {
    if (++steps > kMaxEstimateSteps) break;
    const Alloc& h = allocs_.at(id);
    freed += AmountOn(h.demand, a.wait.counter);
    if (freed >= shortfall) {
      Time t = h.status == AllocStatus::kPreempted ? h.preempt_deadline : end;
      return std::max(t, now_);
    }
  }
  return std::nullopt;
}

AllocationInfo EngineImpl::Info(const Alloc& a) const {
  AllocationInfo i;
  i.id = IdText(a.id);
  i.status = a.status;
  i.workflow_id = a.req.workflow_id;
  i.requester = requesters_[a.requester];
  i.product = products_[a.product].name;
  i.agent_type = types_[a.type].name;
  i.level = a.req.level;
  i.priority_value = a.req.priority_value;
  i.preemptible = a.req.preemptible;
  i.resources.reserve(a.demand.size());
  for (const auto& [c, m] : a.demand) {
    const Counter& k = counters_[c];
    if (k.kind != Counter::Kind::kResource) continue;
    i.resources.emplace_back(resource_specs_[k.owner].name, FromMilli(m));
  }
  i.fencing_token = a.fencing;
  i.queued_at = a.queued_at;
  if (a.fencing) {
    i.granted_at = a.granted_at;
  }
  if (a.holding) i.expires_at = a.expires_at;
  if (a.status != AllocStatus::kActive && a.status != AllocStatus::kQueued &&
      !a.holding) {
    i.ended_at = a.ended_at;
  }
  if (a.status == AllocStatus::kQueued) {
    i.reason_queued = ReasonText(a);
    i.expected_start = ExpectedStart(a);
    i.score = CurrentScore(a);
  }
  if (a.status == AllocStatus::kPreempted && a.holding) {
    i.preempt_deadline = a.preempt_deadline;
  }
  i.estimated_tokens = a.req.estimated_tokens;
  i.estimated_minutes = a.req.estimated_minutes;
  FillBudgetInfo(a, &i.budget);
  if (a.locks) {
    i.locks = a.locks->list;
    i.conflict_avoidance = a.locks->avoid;
    i.warnings = a.locks->warnings;
    if (a.locks->reservation != 0) {
      auto r = reservations_.find(a.locks->reservation);
      if (r != reservations_.end()) i.reservation_id = r->second.id;
    }
  }
  if (a.extras) {
    i.usage = a.extras->usage;
    i.metadata = a.extras->metadata;
    i.idempotency_key = a.extras->idempotency_key;
  }
  return i;
}

bool EngineImpl::NextEvent(EventType type, std::string reason, Event* e) {
  ++event_seq_;
  if (!sink_) return false;
  e->seq = event_seq_;
  e->time = now_;
  e->type = type;
  e->reason = std::move(reason);
  return true;
}

void EngineImpl::Emit(EventType type, const Alloc& a, std::string reason,
                      std::optional<double> score) {
  Event e;
  if (!NextEvent(type, std::move(reason), &e)) return;
  e.allocation_id = IdText(a.id);
  e.status = a.status;
  e.fencing_token = a.fencing;
  e.score = score;
  e.product = products_[a.product].name;
  e.agent_type = types_[a.type].name;
  e.workflow_id = a.req.workflow_id;
  e.level = a.req.level;
  sink_->OnEvent(e);
}

Snapshot EngineImpl::GetSnapshot() const {
  Snapshot s;
  s.time = now_;
  for (size_t i = 0; i < resource_specs_.size(); ++i) {
    const Counter& c = counters_[resource_counter_[i]];
    ResourceUsage r;
    r.name = resource_specs_[i].name;
    Milli held = 0;  // by open reservation windows, not yet drawn
    for (const auto& [num, res] : reservations_) {
      if (res.state != Reservation::State::kOpen) continue;
      for (size_t k = 0; k < res.demand.size(); ++k) {
        if (res.demand[k].first == resource_counter_[i]) held += res.left[k];
      }
    }
    r.capacity = FromMilli(c.limit);
    r.allocated = FromMilli(c.used - held);
    r.reserved = FromMilli(held);
    r.available = FromMilli(std::max<Milli>(0, c.limit - c.used));
    r.utilization_percent =
        c.limit > 0 ? 100.0 * static_cast<double>(c.used) / c.limit : 0;
    s.resources.push_back(r);
  }
  for (const TypeState& t : types_) {
    const Counter& c = counters_[t.counter];
    GroupUsage g;
    g.name = t.name;
    g.running_agents = FromMilli(c.used);
    if (c.limit < kUnlimited) g.limit = c.limit / 1000;
    g.queued = t.queued;
    s.agent_types.push_back(g);
  }
  double share_sum = 0;
  for (const ProductState& p : products_) share_sum += p.share;
  for (const ProductState& p : products_) {
    const Counter& c = counters_[p.counter];
    GroupUsage g;
    g.name = p.name;
    g.running_agents = FromMilli(c.used);
    if (c.limit < kUnlimited) g.limit = c.limit / 1000;
    g.queued = p.queued;
    g.decayed_agent_minutes = DecayedUsage(p, now_);
    g.share = share_sum > 0 ? p.share / share_sum : 0;
    s.products.push_back(g);
  }
  auto by_name = [](const GroupUsage& x, const GroupUsage& y) {
    return x.name < y.name;
  };
  std::sort(s.agent_types.begin(), s.agent_types.end(), by_name);
  std::sort(s.products.begin(), s.products.end(), by_name);
  s.active = active_count_;
  s.queued = queued_count_;
  s.preempting = preempting_count_;
  std::array<std::optional<Time>, kNumLevels> oldest;
  for (const Lane& lane : lanes_) {
    if (lane.members.empty()) continue;
    const int level = static_cast<int>(bands_[lane.band].level);
    s.queued_by_level[level] += static_cast<int64_t>(lane.members.size());
    for (const QKey& k : lane.members) {
      const Time q{Duration(k.queued_ms)};
      if (!oldest[level] || q < *oldest[level]) oldest[level] = q;
    }
  }
  for (int level = 0; level < kNumLevels; ++level) {
    if (!oldest[level]) continue;
    s.oldest_wait_by_level[level] = now_ - *oldest[level];
    if (!s.oldest_wait || *s.oldest_wait_by_level[level] > *s.oldest_wait) {
      s.oldest_wait = s.oldest_wait_by_level[level];
    }
  }
  s.system = system_;
  if (system_) s.system_time = system_time_;
  s.health = ComputeHealth(s);
  for (const auto& [key, alert] : health_alerts_) s.alerts.push_back(alert);
  return s;
}

std::vector<QueueEntry> EngineImpl::Queue() const {
  const std::vector<double> fs = FairShareTerms(now_);
  std::vector<QueueEntry> out;
  out.reserve(static_cast<size_t>(queued_count_));
  for (const Lane& lane : lanes_) {
    for (const QKey& k : lane.members) {
      const Alloc& a = allocs_.at(k.id);
      QueueEntry e;
      e.id = IdText(a.id);
      e.level = a.req.level;
      e.product = products_[a.product].name;
      e.agent_type = types_[a.type].name;
      e.score = Score(a, now_, fs, &e);
      e.waited = now_ - a.queued_at;
      e.reason_queued = ReasonText(a);
      out.push_back(std::move(e));
    }
  }
  std::sort(out.begin(), out.end(),
            [&](const QueueEntry& x, const QueueEntry& y) {
              const bool tx = NoWaitLevel(x.level), ty = NoWaitLevel(y.level);
              if (tx != ty) return tx;
              if (x.score != y.score) return x.score > y.score;
              return x.waited > y.waited;
            });
  return out;
}

Status EngineImpl::CheckInvariants() const {
  std::vector<Milli> used(counters_.size(), 0), releasing(counters_.size(), 0);
  for (size_t c = 0; c < counters_.size(); ++c) {
    if (counters_[c].kind == Counter::Kind::kBudget)
      used[c] = counters_[c].spent;
  }
  for (const auto& [num, r] : reservations_) {
    if (r.state != Reservation::State::kOpen) continue;
    for (size_t k = 0; k < r.demand.size(); ++k) {
      used[r.demand[k].first] += r.left[k];
    }
  }
  // Retire erases what the history names: ended allocations, each once.
  absl::flat_hash_set<const Alloc*> live, retirees;
  for (const auto& [id, a] : allocs_) live.insert(&a);
  for (const Alloc* a : history_) {
    if (!live.count(a)) {
      return Internal("the history names an allocation that is gone");
    }
    if (!a->Ended()) {
      return Internal("the history names " + IdText(a->id) +
                      ", which has not ended");
    }
    if (!retirees.insert(a).second) {
      return Internal("the history names " + IdText(a->id) + " twice");
    }
  }
  int64_t active = 0, queued = 0, preempting = 0;
  for (const auto& [id, a] : allocs_) {
    if (a.id != id)
      return Internal("allocation key mismatch for " + IdText(id));
    if (a.holding) {
      if (a.status != AllocStatus::kActive &&
          a.status != AllocStatus::kPreempted) {
        return Internal(IdText(id) + " holds resources while " +
                        AllocStatusName(a.status));
      }
      for (const auto& [c, m] : a.demand) {
        used[c] += m;
        if (a.status == AllocStatus::kPreempted) releasing[c] += m;
        if (TracksHolders(c) &&
            !counters_[c].holders.count({a.expected_end, id})) {
          return Internal(IdText(id) + " missing from holders of " +
                          counters_[c].name);
        }
      }
      (a.status == AllocStatus::kActive ? active : preempting)++;
    } else if (a.status == AllocStatus::kActive) {
      return Internal(IdText(id) + " is active but holds nothing");
    }
    if (a.status == AllocStatus::kQueued) {
      ++queued;
      const Lane& lane = lanes_[a.lane];
      auto it = lane.members.find(a.qkey);
      if (it == lane.members.end() || it->id != id) {
        return Internal(IdText(id) + " is queued but not in its lane");
      }
    }
  }
  for (size_t c = 0; c < counters_.size(); ++c) {
    const Counter& k = counters_[c];
    if (!k.in_use) continue;
    if (k.used != used[c]) {
      return Internal("counter " + k.name + " says " + FormatMilli(k.used) +
                      " used, allocations hold " + FormatMilli(used[c]));
    }
    // A budget may be overspent (usage beyond a reservation is a fact).
    if (k.used > k.limit && k.kind != Counter::Kind::kBudget) {
      return Internal("counter " + k.name + " over its limit: " +
                      FormatMilli(k.used) + " > " + FormatMilli(k.limit));
    }
    if (k.used < 0) return Internal("counter " + k.name + " negative");
    if (k.releasing != releasing[c]) {
      return Internal("counter " + k.name + " releasing mismatch");
    }
    for (const auto& [end, id] : k.holders) {
      auto it = allocs_.find(id);
      if (it == allocs_.end() || !it->second.holding) {
        return Internal("stale holder " + IdText(id) + " on " + k.name);
      }
    }
  }
  if (active != active_count_ || queued != queued_count_ ||
      preempting != preempting_count_) {
    return Internal(
        "status counts drifted: active " + std::to_string(active_count_) +
        " vs " + std::to_string(active) + ", queued " +
        std::to_string(queued_count_) + " vs " + std::to_string(queued));
  }
  int64_t lane_members = 0;
  for (size_t li = 0; li < lanes_.size(); ++li) {
    const Lane& lane = lanes_[li];
    lane_members += static_cast<int64_t>(lane.members.size());
    const Band& band = bands_[lane.band];
    if (!lane.members.empty() &&
        !band.lanes.count({*lane.members.begin(), static_cast<uint32_t>(li)})) {
      return Internal("band index misses the head of a lane");
    }
  }
  if (lane_members != queued_count_) {
    return Internal("lanes hold " + std::to_string(lane_members) +
                    " requests, " + std::to_string(queued_count_) + " queued");
  }
  for (size_t b = 0; b < bands_.size(); ++b) {
    if (bands_[b].lanes.empty() == active_bands_.count(b)) {
      return Internal("active band set out of date");
    }
  }
  for (const auto& [key, id] : idempotency_) {
    if (!allocs_.count(id)) return Internal("idempotency key to a lost id");
  }
  // The blocked set: every blocker is a queued request, and every queued
  // request is held back by a claim: another waiter claims one of its
  // counters, or it does not fit on a claimed counter. (An unheld request
  // would wait with nothing to wake it: it should have started, or its
  // wait went unrecorded.)
  for (size_t c = 0; c < counters_.size(); ++c) {
    if (!counters_[c].in_use) continue;
    const uint64_t b = Blocker(static_cast<uint32_t>(c));
    if (b == 0) continue;
    auto it = allocs_.find(b);
    if (it == allocs_.end() || it->second.status != AllocStatus::kQueued) {
      return Internal("counter " + counters_[c].name + " is claimed by " +
                      IdText(b) + ", which is not queued");
    }
  }
  for (const Lane& lane : lanes_) {
    for (const QKey& k : lane.members) {
      const Alloc& a = allocs_.at(k.id);
      bool held = ParkedBehind(a) != 0 || GrantsHeld(a) || WaitsForReset(a) ||
                  (a.locks && a.locks->gate != AllocLocks::Gate::kNone),
           fits = true;
      for (const auto& [c, m] : a.demand) {
        const Counter& cnt = counters_[c];
        const uint64_t b = Blocker(c);
        const Milli booked = Booked(c, a);
        if (cnt.used + m + booked > cnt.limit) {
          fits = false;
          // Bookings end at known times: a dispatch pass then.
          held |= b != 0 || cnt.used + m <= cnt.limit;
        } else {
          held |= b != 0 && b != a.id &&
                  cnt.used + m + booked + cnt.held > cnt.limit;
        }
      }
      if (!held) {
        std::string where;
        for (const auto& [c, m] : a.demand) {
          const Counter& cnt = counters_[c];
          where += " " + cnt.name + "(" + FormatMilli(cnt.used) + "+" +
                   FormatMilli(m) + "/" + FormatMilli(cnt.limit) + ")";
        }
        return Internal(
            IdText(a.id) + (fits ? " fits" : " does not fit") +
            " and no claim holds it back, yet it is queued:" + where);
      }
    }
  }
  return CheckLockInvariants();
}

// ---------------------------------------------------------------- facade

Engine::Engine(std::unique_ptr<EngineImpl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

StatusOr<std::unique_ptr<Engine>> Engine::Create(Config config, Clock* clock,
                                                 EventSink* sink) {
  if (!clock) clock = SystemClock::Default();
  auto impl = std::make_unique<EngineImpl>(std::move(config), clock, sink);
  QM_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

StatusOr<AllocateResult> Engine::Allocate(const AllocationRequest& r) {
  return impl_->Allocate(r);
}
StatusOr<std::vector<AllocateResult>> Engine::AllocateBatch(
    const std::vector<AllocationRequest>& r, bool all_or_nothing) {
  return impl_->AllocateBatch(r, all_or_nothing);
}
StatusOr<AllocationInfo> Engine::Release(std::string_view id,
                                         const UsageReport& usage) {
  return impl_->Release(id, usage);
}
StatusOr<AllocationInfo> Engine::Renew(std::string_view id,
                                       std::optional<Duration> ttl) {
  return impl_->Renew(id, ttl);
}
StatusOr<AllocationInfo> Engine::Reallocate(std::string_view id,
                                            const ResourceAmounts& r) {
  return impl_->Reallocate(id, r);
}
StatusOr<AllocationInfo> Engine::Cancel(std::string_view id) {
  return impl_->Cancel(id);
}
StatusOr<AllocationInfo> Engine::Reclaim(std::string_view id,
                                         const std::string& reason) {
  return impl_->Reclaim(id, reason);
}
StatusOr<AllocationInfo> Engine::Get(std::string_view id) const {
  return impl_->Get(id);
}
StatusOr<AllocationList> Engine::List(const AllocationFilter& filter) const {
  return impl_->List(filter);
}
Snapshot Engine::GetSnapshot() const { return impl_->GetSnapshot(); }
StatusOr<AllocationInfo> Engine::ReportUsage(std::string_view id,
                                             const UsageReport& usage) {
  return impl_->ReportUsage(id, usage);
}
StatusOr<AllocationInfo> Engine::ExtendTokens(std::string_view id,
                                              int64_t max_tokens) {
  return impl_->ExtendTokens(id, max_tokens);
}
Status Engine::Pause(const Actor& actor) { return impl_->Pause(actor); }
Status Engine::Resume(const Actor& actor) { return impl_->Resume(actor); }
Status Engine::SetPriorityOverride(const std::string& product,
                                   std::optional<Level> level,
                                   const Actor& actor) {
  return impl_->SetPriorityOverride(product, level, actor);
}
Status Engine::OverrideBreaker(const Actor& actor) {
  return impl_->OverrideBreaker(actor);
}
Status Engine::RaiseLimits(std::optional<int64_t> max_tokens,
                           std::optional<double> max_cost_usd,
                           const Actor& actor) {
  return impl_->RaiseLimits(max_tokens, max_cost_usd, actor);
}
StatusOr<ConflictReport> Engine::CheckConflicts(const AllocationRequest& r,
                                                Duration horizon) {
  return impl_->CheckConflicts(r, horizon);
}
std::vector<ConflictInfo> Engine::Conflicts() const {
  return impl_->Conflicts();
}
StatusOr<ConflictInfo> Engine::ResolveConflict(std::string_view conflict_id,
                                               ResolveStrategy strategy,
                                               const Actor& actor) {
  return impl_->ResolveConflict(conflict_id, strategy, actor);
}
Status Engine::SetLockPolicy(const std::string& scope,
                             std::optional<LockPolicy> policy,
                             const Actor& actor) {
  return impl_->SetLockPolicy(scope, std::move(policy), actor);
}
StatusOr<LockVerdict> Engine::VerifyLock(std::string_view path,
                                         uint64_t token) {
  return impl_->VerifyLock(path, token);
}
StatusOr<ReservationInfo> Engine::Reserve(const ReservationRequest& r) {
  return impl_->Reserve(r);
}
StatusOr<ReservationInfo> Engine::CancelReservation(std::string_view id,
                                                    const Actor& actor) {
  return impl_->CancelReservation(id, actor);
}
StatusOr<ReservationInfo> Engine::GetReservation(std::string_view id) const {
  return impl_->GetReservation(id);
}
std::vector<ReservationInfo> Engine::Reservations() const {
  return impl_->Reservations();
}
CostReport Engine::Costs() const { return impl_->Costs(); }
MetricsReport Engine::Metrics() const { return impl_->Metrics(); }
std::vector<QueueEntry> Engine::Queue() const { return impl_->Queue(); }
void Engine::Tick() { impl_->Tick(); }
std::optional<Time> Engine::NextDeadline() const {
  return impl_->NextDeadline();
}
const Config& Engine::config() const { return impl_->config(); }
Status Engine::CheckInvariants() const { return impl_->CheckInvariants(); }

}  // namespace qm
