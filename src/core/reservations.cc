// Reservations: capacity booked for a future window (seed 000 `reserve`).
// See docs/conflicts.md, "Reservations".
//
// A scheduled window is an interval in the Timeline of every counter it
// books. Admission keeps room for it: a request is granted only when it
// fits beside the most any reservation books during its expected run
// (Booked). When the window opens the reservation takes its capacity into
// the counters (what running work still holds is booked as a shortfall and
// taken as it frees); allocations naming it draw from it; what nobody drew
// returns to the pool after the grace period; the window closes at its
// end, and a recurring reservation books its next window.
#include <algorithm>
#include <cmath>

#include "core/engine_impl.h"
#include "core/text.h"

namespace qm {
namespace {

constexpr Duration kDay = std::chrono::hours(24);

bool ValidResId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

const char* StateName(Reservation::State s) {
  switch (s) {
    case Reservation::State::kScheduled:
      return "scheduled";
    case Reservation::State::kOpen:
      return "open";
    case Reservation::State::kEnded:
      return "ended";
    case Reservation::State::kCancelled:
      return "cancelled";
  }
  return "scheduled";
}

}  // namespace

Time EngineImpl::RunEnd(const RequestCore& r) const {
  const Duration run =
      r.estimated_minutes
          ? Duration(static_cast<int64_t>(*r.estimated_minutes * kMsPerMinute))
          : r.ttl;
  return now_ + std::min(run, r.max_duration);
}

Milli EngineImpl::Booked(uint32_t c, Time end, uint64_t exclude) const {
  auto it = timelines_.find(c);
  if (it == timelines_.end() || it->second.empty()) return 0;
  return it->second.MaxOver(now_, std::max(end, now_ + Duration(1)), exclude);
}

Milli EngineImpl::Booked(uint32_t c, const Alloc& a) const {
  if (!HasBookings()) return 0;
  return Booked(c, RunEnd(a.req), a.locks ? a.locks->reservation : 0);
}

std::string EngineImpl::BookedText(uint32_t c, const Alloc& a) const {
  const Counter& k = counters_[c];
  const Time end = RunEnd(a.req);
  std::string who;
  std::optional<Time> from;
  auto it = timelines_.find(c);
  if (it != timelines_.end()) {
    it->second.ForEachOverlap(now_, std::max(end, now_ + Duration(1)),
                              [&](const Timeline::Interval& iv) {
                                if (a.locks && iv.id == a.locks->reservation)
                                  return;
                                auto r = reservations_.find(iv.id);
                                if (r == reservations_.end()) return;
                                if (!from || iv.start < *from) {
                                  from = iv.start;
                                  who = r->second.id;
                                }
                              });
  }
  const Milli booked = Booked(c, a);
  return CounterLabel(k) + ": " + FormatMilli(booked) + " reserved by " +
         (who.empty() ? std::string("a reservation") : who) +
         (from && *from > now_ ? " from " + FormatTime(*from) : "") +
         ", and this request is expected to run until " + FormatTime(end) +
         " (" + FormatMilli(std::max<Milli>(0, k.limit - k.used)) +
         " free now); a shorter estimated_minutes may fit before it";
}

Status EngineImpl::CheckReservationRef(const ParsedRequest& p,
                                       const std::string& prefix) const {
  if (p.reservation.empty()) return Status::Ok();
  const std::string field = prefix + "reservation_id";
  auto it = reservation_ids_.find(p.reservation);
  if (it == reservation_ids_.end()) {
    return NotFound(field + ": no reservation " + Quote(p.reservation));
  }
  const Reservation& r = reservations_.at(it->second);
  if (!r.workflow_id.empty() ? r.workflow_id != p.workflow_id
                             : r.product != p.product) {
    return Status(Code::kPermissionDenied,
                  field + ": reservation " + r.id + " is for " +
                      (r.workflow_id.empty() ? "product " + r.product
                                             : "workflow " + r.workflow_id) +
                      "; this request is of workflow " + p.workflow_id +
                      ", product " + p.product);
  }
  switch (r.state) {
    case Reservation::State::kOpen:
      return Status::Ok();
    case Reservation::State::kScheduled:
      return Conflict(field + ": reservation " + r.id + " opens at " +
                      FormatTime(r.win_start) +
                      "; allocations may draw from it from then");
    case Reservation::State::kEnded:
    case Reservation::State::kCancelled:
      return Conflict(field + ": reservation " + r.id + " is " +
                      StateName(r.state) + " (since " + FormatTime(r.ended_at) +
                      ")");
  }
  return Status::Ok();
}

void EngineImpl::PreDraw(Alloc& a) {
  if (!a.locks || a.locks->reservation == 0 || !a.locks->drawn.empty()) return;
  auto it = reservations_.find(a.locks->reservation);
  if (it == reservations_.end()) return;
  Reservation& r = it->second;
  if (r.state != Reservation::State::kOpen || r.grace_over) return;
  for (const auto& [c, m] : a.demand) {
    for (size_t i = 0; i < r.demand.size(); ++i) {
      if (r.demand[i].first != c || r.left[i] == 0) continue;
      const Milli d = std::min(m, r.left[i]);
      r.left[i] -= d;
      counters_[c].used -= d;
      a.locks->drawn.emplace_back(c, d);
    }
  }
  a.locks->drew_window = r.win_start;
}

void EngineImpl::UndoDraw(Alloc& a) {
  if (!a.locks || a.locks->drawn.empty()) return;
  Reservation& r = reservations_.at(a.locks->reservation);
  for (const auto& [c, d] : a.locks->drawn) {
    for (size_t i = 0; i < r.demand.size(); ++i) {
      if (r.demand[i].first != c) continue;
      r.left[i] += d;
      counters_[c].used += d;
    }
  }
  a.locks->drawn.clear();
}

void EngineImpl::ReturnDraw(Alloc& a) {
  if (!a.locks || a.locks->reservation == 0) return;
  auto it = reservations_.find(a.locks->reservation);
  if (it == reservations_.end()) {
    a.locks->drawn.clear();
    return;
  }
  Reservation& r = it->second;
  r.claimants.erase(a.id);
  // Back to the reservation while its window (the one drawn from) is open
  // and in grace; else it stays in the pool.
  if (r.state == Reservation::State::kOpen && !r.grace_over &&
      r.win_start == a.locks->drew_window) {
    for (const auto& [c, d] : a.locks->drawn) {
      for (size_t i = 0; i < r.demand.size(); ++i) {
        if (r.demand[i].first != c) continue;
        r.left[i] += d;
        counters_[c].used += d;
      }
    }
  }
  a.locks->drawn.clear();
}

Milli EngineImpl::FreedBy(const Alloc& v, uint32_t c) const {
  const Milli m = AmountOn(v.demand, c);
  if (!v.locks || v.locks->drawn.empty()) return m;
  auto it = reservations_.find(v.locks->reservation);
  if (it == reservations_.end()) return m;
  const Reservation& r = it->second;
  if (r.state != Reservation::State::kOpen || r.grace_over ||
      r.win_start != v.locks->drew_window) {
    return m;
  }
  Milli drawn = 0;
  for (const auto& [dc, d] : v.locks->drawn) {
    if (dc == c) drawn += d;
  }
  return std::max<Milli>(0, m - drawn);
}

Status EngineImpl::FitsBeside(const Reservation& r, Time ws, Time we) const {
  for (const auto& [c, m] : r.demand) {
    const Counter& k = counters_[c];
    Milli booked = 0;
    std::string others;
    auto it = timelines_.find(c);
    if (it != timelines_.end()) {
      booked = it->second.MaxOver(ws, we, r.num);
      it->second.ForEachOverlap(ws, we, [&](const Timeline::Interval& iv) {
        if (iv.id == r.num) return;
        auto o = reservations_.find(iv.id);
        if (o == reservations_.end()) return;
        if (others.find(o->second.id) == std::string::npos) {
          others += (others.empty() ? "" : ", ") + o->second.id;
        }
      });
    }
    // Open windows hold their capacity in the counters, not the timeline.
    for (const auto& [num, o] : reservations_) {
      if (num == r.num || o.state != Reservation::State::kOpen ||
          o.win_end <= ws || o.win_start >= we) {
        continue;
      }
      Milli held = 0;
      for (size_t i = 0; i < o.demand.size(); ++i) {
        if (o.demand[i].first != c) continue;
        held += o.grace_over ? 0 : o.demand[i].second;
      }
      if (o.grace_over) {
        for (uint64_t id : o.claimants) {
          auto it2 = allocs_.find(id);
          if (it2 == allocs_.end() || !it2->second.locks) continue;
          for (const auto& [dc, d] : it2->second.locks->drawn) {
            if (dc == c) held += d;
          }
        }
      }
      if (held > 0) {
        booked += held;
        others += (others.empty() ? "" : ", ") + o.id;
      }
    }
    if (booked + m > k.limit) {
      return ResourceExhausted(CounterLabel(k) + ": " + FormatMilli(booked) +
                               " of " + FormatMilli(k.limit) +
                               " already reserved between " + FormatTime(ws) +
                               " and " + FormatTime(we) +
                               (others.empty() ? "" : " (by " + others + ")") +
                               "; this reservation asks for " + FormatMilli(m))
          .AddAffected(k.name);
    }
  }
  return Status::Ok();
}

void EngineImpl::BookWindows(Reservation& r, bool initial) {
  const Time horizon_end = now_ + config_.reservations.horizon;
  Time s = initial ? r.start : r.booked_through + r.period;
  if (!initial && r.period.count() == 0) return;
  for (; s < horizon_end; s += r.period) {
    if (r.until && s > *r.until) break;
    if (!initial && !FitsBeside(r, s, s + r.duration).ok()) {
      // A later window that no longer fits (other reservations took the
      // capacity since) is skipped, and said so.
      EmitRes(EventType::kReservationEnded, r,
              "window at " + FormatTime(s) +
                  " skipped: it does not fit beside other reservations");
    } else {
      for (const auto& [c, m] : r.demand) {
        timelines_[c].Add(r.num, s, s + r.duration, m);
        ++bookings_;
      }
      // Allocations granted from now on are admitted beside this window.
      if (!initial) r.accepted_fence = fencing_;
    }
    r.booked_through = s;
    if (r.period.count() == 0) break;
  }
}

StatusOr<Reservation*> EngineImpl::FindRes(std::string_view id) {
  auto it = reservation_ids_.find(std::string(id));
  if (it == reservation_ids_.end()) {
    return NotFound("no reservation " + Quote(id));
  }
  return &reservations_.at(it->second);
}

void EngineImpl::EmitRes(EventType type, const Reservation& r,
                         std::string reason, const std::string& actor) {
  Event e;
  if (!NextEvent(type, std::move(reason), &e)) return;
  e.allocation_id = r.id;
  e.product = r.product;
  e.agent_type = r.agent_type;
  e.workflow_id = r.workflow_id;
  e.level = r.level;
  e.actor = actor;
  sink_->OnEvent(e);
}

StatusOr<ReservationInfo> EngineImpl::Reserve(const ReservationRequest& q) {
  OpScope op(this);
  const ReservationsConfig& cfg = config_.reservations;
  Reservation r;
  if (!q.reservation_id.empty()) {
    if (!ValidResId(q.reservation_id)) {
      return InvalidRequest(
          "reservation_id must be 1-128 letters, digits, '_', '-' or '.', "
          "got " +
          Quote(q.reservation_id));
    }
    if (reservation_ids_.count(q.reservation_id)) {
      return Conflict("reservation_id " + Quote(q.reservation_id) +
                      " is already taken");
    }
  }
  if (q.workflow_id.empty() && q.product.empty()) {
    return InvalidRequest(
        "workflow_id or product is required: who may draw from the "
        "reservation");
  }
  for (const auto& [field, value] : {std::pair<const char*, const std::string*>{
                                         "workflow_id", &q.workflow_id},
                                     {"product", &q.product},
                                     {"agent_type", &q.agent_type},
                                     {"requester", &q.requester}}) {
    if (value->size() > kMaxStringBytes || !IsUtf8(*value) ||
        std::any_of(value->begin(), value->end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })) {
      return InvalidRequest(std::string(field) +
                            " must be printable UTF-8 text of at most " +
                            std::to_string(kMaxStringBytes) + " bytes");
    }
  }
  if (q.metadata.size() > kMaxStringBytes) {
    return InvalidRequest("metadata is over " +
                          std::to_string(kMaxStringBytes) + " bytes");
  }
  r.workflow_id = q.workflow_id;
  r.product =
      q.product.empty() && q.workflow_id.empty() ? "default" : q.product;
  r.agent_type = q.agent_type;
  r.requester = q.requester;
  r.metadata = q.metadata;
  QM_RETURN_IF_ERROR(ParsePriority(q.priority, r.product, &r.level,
                                   &r.priority_value, "priority"));
  if (q.resources.empty()) {
    return InvalidRequest("resources must name at least one resource");
  }
  if (q.resources.size() > kMaxResourcesPerRequest) {
    return InvalidRequest("resources names too many resources");
  }
  Milli agents = 0;
  for (const auto& [name, amount] : q.resources) {
    const std::string field = ResourceField("", name);
    uint32_t idx = 0;
    Milli m = 0;
    QM_RETURN_IF_ERROR(ValidateAmount("", name, amount, &idx, &m));
    for (const auto& [i, x] : r.resources) {
      if (i == idx) return InvalidRequest(field + " is given twice");
    }
    if (m == 0) continue;
    if (idx == agents_resource_) agents = m;
    r.resources.emplace_back(idx, m);
  }
  if (r.resources.empty()) {
    return InvalidRequest("resources must book a positive amount of something");
  }
  if (q.duration.count() <= 0) {
    return InvalidRequest("duration must be positive");
  }
  if (q.start_time < now_) {
    return InvalidRequest("start_time " + FormatTime(q.start_time) +
                          " is in the past (now " + FormatTime(now_) + ")");
  }
  if (q.start_time + q.duration > now_ + cfg.horizon) {
    return InvalidRequest("the window ends at " +
                          FormatTime(q.start_time + q.duration) +
                          ", past reservations.horizon (" +
                          FormatDuration(cfg.horizon) + " from now)");
  }
  if (q.recurrence == "daily") {
    r.period = kDay;
  } else if (q.recurrence == "weekly") {
    r.period = 7 * kDay;
  } else if (!q.recurrence.empty()) {
    return InvalidRequest(
        "recurrence must be daily or weekly (or empty), got " +
        Quote(q.recurrence));
  }
  if (r.period.count() > 0 && q.duration > r.period) {
    return InvalidRequest("duration " + FormatDuration(q.duration) +
                          " is longer than its " + q.recurrence +
                          " period: windows would overlap");
  }
  if (q.until) {
    if (r.period.count() == 0) {
      return InvalidRequest("until needs a recurrence");
    }
    if (*q.until < q.start_time) {
      return InvalidRequest("until is before start_time");
    }
  }
  if (static_cast<int64_t>(reservations_.size()) >= cfg.max_reservations) {
    return ResourceExhausted("already " + std::to_string(reservations_.size()) +
                             " reservations (reservations.max_reservations)");
  }
  r.start = q.start_time;
  r.duration = q.duration;
  r.until = q.until;
  // The counters it books: resources, then agent-type and product slots.
  for (const auto& [idx, m] : r.resources) {
    r.demand.emplace_back(resource_counter_[idx], m);
  }
  if (agents > 0 && !r.agent_type.empty()) {
    const Milli limit = TypeLimit(r.agent_type);
    if (agents > limit) {
      return ResourceExhausted("resources.agents: " + FormatMilli(agents) +
                               " exceeds the " + r.agent_type + " limit of " +
                               FormatMilli(limit))
          .AddAffected(r.agent_type);
    }
  }
  if (agents > 0 && !r.product.empty()) {
    const Milli limit = ProductLimit(r.product);
    if (agents > limit) {
      return ResourceExhausted("resources.agents: " + FormatMilli(agents) +
                               " exceeds product " + r.product +
                               "'s max_concurrent_agents of " +
                               FormatMilli(limit))
          .AddAffected(r.product);
    }
  }
  for (const auto& [c, m] : r.demand) {
    if (m > counters_[c].limit) {
      return ResourceExhausted(CounterLabel(counters_[c]) + ": " +
                               FormatMilli(m) + " exceeds the capacity of " +
                               FormatMilli(counters_[c].limit))
          .AddAffected(counters_[c].name);
    }
  }
  // Every window booked now must fit beside the other reservations.
  r.num = next_reservation_;
  if (agents > 0 && !r.agent_type.empty()) {
    r.demand.emplace_back(types_[InternType(r.agent_type)].counter, agents);
  }
  if (agents > 0 && !r.product.empty()) {
    r.demand.emplace_back(products_[InternProduct(r.product)].counter, agents);
  }
  for (Time s = r.start;; s += r.period) {
    if (s >= now_ + cfg.horizon || (r.until && s > *r.until)) break;
    const Status fits = FitsBeside(r, s, s + r.duration);
    if (!fits.ok()) return fits;  // names it interned stay (harmless)
    if (r.period.count() == 0) break;
  }
  ++next_reservation_;
  r.id = q.reservation_id.empty() ? "res_" + std::to_string(r.num)
                                  : q.reservation_id;
  r.win_start = r.start;
  r.win_end = r.start + r.duration;
  r.left.assign(r.demand.size(), 0);
  r.shortfall.assign(r.demand.size(), 0);
  // Running work expected to overlap the first window: it keeps running.
  for (const auto& [c, m] : r.demand) {
    const Counter& k = counters_[c];
    Milli overlap = 0;
    for (auto it = k.holders.lower_bound({r.win_start + Duration(1), 0});
         it != k.holders.end(); ++it) {
      overlap += AmountOn(allocs_.at(it->second).demand, c);
    }
    if (overlap + m > k.limit) {
      r.warnings.push_back(
          "running work is expected to hold " + FormatMilli(overlap) + " of " +
          CounterLabel(k) + " at " + FormatTime(r.win_start) +
          (config_.reservations.preempt_running
               ? "; the window will preempt lower-level preemptible work "
                 "for it (reservations.preempt_running)"
               : "; the window may open short and take it as it frees"));
    }
  }
  r.accepted_fence = fencing_;
  BookWindows(r, /*initial=*/true);
  Reservation& stored = reservations_[r.num] = std::move(r);
  reservation_ids_[stored.id] = stored.num;
  std::string what;
  for (const auto& [idx, m] : stored.resources) {
    what += (what.empty() ? "" : ", ") + FormatMilli(m) + " " +
            resource_specs_[idx].name;
  }
  EmitRes(EventType::kReserved, stored,
          what + " from " + FormatTime(stored.win_start) + " to " +
              FormatTime(stored.win_end) +
              (stored.period.count() ? " (" + q.recurrence + ")" : "") +
              " for " +
              (stored.workflow_id.empty() ? "product " + stored.product
                                          : "workflow " + stored.workflow_id),
          stored.requester);
  Schedule(stored.win_start, stored.num, Timer::Kind::kResOpen,
           static_cast<uint64_t>(stored.win_start.time_since_epoch().count()));
  return ResInfo(stored);
}

void EngineImpl::HandleReservationTimer(const Timer& t) {
  auto it = reservations_.find(t.id);
  if (it == reservations_.end()) return;
  Reservation& r = it->second;
  if (static_cast<uint64_t>(r.win_start.time_since_epoch().count()) != t.gen) {
    return;  // a window that was cancelled or passed
  }
  switch (t.kind) {
    case Timer::Kind::kResOpen:
      if (r.state == Reservation::State::kScheduled) OpenWindow(r);
      return;
    case Timer::Kind::kResGrace:
      if (r.state == Reservation::State::kOpen && !r.grace_over) EndGrace(r);
      return;
    case Timer::Kind::kResClose:
      if (r.state == Reservation::State::kOpen) CloseWindow(r, false);
      return;
    default:
      return;
  }
}

void EngineImpl::OpenWindow(Reservation& r) {
  r.state = Reservation::State::kOpen;
  r.grace_over = false;
  r.short_since = now_;
  bool short_any = false;
  std::string shortfall_text;
  for (size_t i = 0; i < r.demand.size(); ++i) {
    const auto [c, m] = r.demand[i];
    Counter& k = counters_[c];
    if (timelines_[c].Remove(r.num, r.win_start)) --bookings_;
    const Milli take = std::clamp<Milli>(k.limit - k.used, 0, m);
    k.used += take;
    r.left[i] = take;
    r.shortfall[i] = m - take;
    if (r.shortfall[i] > 0) {
      short_any = true;
      timelines_[c].Add(r.num, r.short_since, r.win_end, r.shortfall[i]);
      ++bookings_;
      shortfall_text += "; " + FormatMilli(r.shortfall[i]) + " of " +
                        CounterLabel(k) + " still held by running work";
    }
  }
  if (short_any) ++short_windows_;
  EmitRes(EventType::kReservationStarted, r,
          "window open until " + FormatTime(r.win_end) + ": claimable by " +
              (r.workflow_id.empty() ? "product " + r.product
                                     : "workflow " + r.workflow_id) +
              "; unclaimed capacity returns to the pool at " +
              FormatTime(std::min(r.win_end,
                                  now_ + config_.reservations.grace_period)) +
              shortfall_text);
  const uint64_t gen =
      static_cast<uint64_t>(r.win_start.time_since_epoch().count());
  const Time grace = r.win_start + config_.reservations.grace_period;
  if (grace < r.win_end) Schedule(grace, r.num, Timer::Kind::kResGrace, gen);
  Schedule(r.win_end, r.num, Timer::Kind::kResClose, gen);
  if (short_any && config_.reservations.preempt_running) PreemptForWindow(r);
}

void EngineImpl::PreemptForWindow(Reservation& r) {
  std::vector<std::pair<uint32_t, Milli>> need;
  for (size_t i = 0; i < r.demand.size(); ++i) {
    if (r.shortfall[i] > 0)
      need.emplace_back(r.demand[i].first, r.shortfall[i]);
  }
  std::vector<Alloc*> candidates;
  std::set<uint64_t> seen;
  for (const auto& [c, s] : need) {
    for (const auto& [end, id] : counters_[c].holders) {
      Alloc& v = allocs_.at(id);
      if (v.status != AllocStatus::kActive || !v.req.preemptible ||
          v.req.level >= r.level || !seen.insert(id).second ||
          (v.locks && v.locks->reservation == r.num)) {
        continue;
      }
      candidates.push_back(&v);
    }
  }
  std::sort(candidates.begin(), candidates.end(), VictimBefore);
  for (Alloc* v : candidates) {
    bool helps = false;
    for (auto& [c, s] : need) {
      const Milli f = s > 0 ? FreedBy(*v, c) : 0;
      helps |= f > 0;
      s -= f;
    }
    if (!helps) continue;
    NoticeVictim(*v, "preempted for reservation " + r.id + " (" +
                         LevelName(r.level) +
                         "; reservations.preempt_running)");
    if (std::all_of(need.begin(), need.end(),
                    [](const auto& x) { return x.second <= 0; })) {
      break;
    }
  }
}

void EngineImpl::ReleaseHold(Reservation& r) {
  bool had_short = false;
  for (size_t i = 0; i < r.demand.size(); ++i) {
    const uint32_t c = r.demand[i].first;
    counters_[c].used -= r.left[i];
    r.left[i] = 0;
    if (r.shortfall[i] > 0) {
      had_short = true;
      if (timelines_[c].Remove(r.num, r.short_since)) --bookings_;
      r.shortfall[i] = 0;
    }
  }
  if (had_short) --short_windows_;
}

void EngineImpl::EndGrace(Reservation& r) {
  r.grace_over = true;
  Milli returned = 0;
  for (Milli l : r.left) returned += l;
  ReleaseHold(r);
  if (returned > 0 || !r.claimants.empty()) {
    EmitRes(EventType::kReservationReleased, r,
            "grace period over: unclaimed capacity returned to the pool; " +
                std::to_string(r.claimants.size()) +
                " allocation(s) keep what they drew");
  }
  Dispatch();
}

void EngineImpl::CloseWindow(Reservation& r, bool cancelled) {
  ReleaseHold(r);
  r.claimants.clear();  // what they drew now belongs to the pool
  if (cancelled) {
    for (const auto& [c, m] : r.demand) {
      auto it = timelines_.find(c);
      if (it != timelines_.end()) bookings_ -= it->second.RemoveAll(r.num);
    }
    r.state = Reservation::State::kCancelled;
    r.ended_at = now_;
    Dispatch();
    return;
  }
  // The next window, if it recurs.
  BookWindows(r, /*initial=*/false);
  Time next = r.win_start + r.period;
  while (r.period.count() > 0 && (!r.until || next <= *r.until)) {
    bool booked = false;
    auto it = timelines_.find(r.demand.front().first);
    if (it != timelines_.end()) {
      it->second.ForEachOverlap(next, next + Duration(1),
                                [&](const Timeline::Interval& iv) {
                                  booked |= iv.id == r.num && iv.start == next;
                                });
    }
    if (booked) break;
    next += r.period;
    if (next > r.booked_through) break;
  }
  const bool more = r.period.count() > 0 && (!r.until || next <= *r.until) &&
                    next <= r.booked_through;
  if (more) {
    r.state = Reservation::State::kScheduled;
    r.win_start = next;
    r.win_end = next + r.duration;
    r.grace_over = false;
    Schedule(r.win_start, r.num, Timer::Kind::kResOpen,
             static_cast<uint64_t>(r.win_start.time_since_epoch().count()));
    EmitRes(EventType::kReservationEnded, r,
            "window closed; next window " + FormatTime(r.win_start) + " to " +
                FormatTime(r.win_end));
  } else {
    r.state = Reservation::State::kEnded;
    r.ended_at = now_;
    EmitRes(EventType::kReservationEnded, r, "last window closed");
  }
  Dispatch();
}

void EngineImpl::TopUpReservations() {
  if (short_windows_ == 0) return;
  for (auto& [num, r] : reservations_) {
    if (r.state != Reservation::State::kOpen) continue;
    bool still_short = false, was_short = false;
    for (size_t i = 0; i < r.demand.size(); ++i) {
      if (r.shortfall[i] == 0) continue;
      was_short = true;
      const uint32_t c = r.demand[i].first;
      Counter& k = counters_[c];
      const Milli take = std::clamp<Milli>(k.limit - k.used, 0, r.shortfall[i]);
      if (take > 0) {
        k.used += take;
        r.left[i] += take;
        timelines_[c].Remove(r.num, r.short_since);
        r.shortfall[i] -= take;
        if (r.shortfall[i] > 0) {
          timelines_[c].Add(r.num, r.short_since, r.win_end, r.shortfall[i]);
        } else {
          --bookings_;
        }
      }
      still_short |= r.shortfall[i] > 0;
    }
    if (was_short && !still_short) --short_windows_;
  }
}

StatusOr<ReservationInfo> EngineImpl::CancelReservation(std::string_view id,
                                                        const Actor& actor) {
  OpScope op(this);
  auto found = FindRes(id);
  if (!found.ok()) return found.status();
  Reservation& r = **found;
  if (r.state == Reservation::State::kCancelled ||
      r.state == Reservation::State::kEnded) {
    return Conflict("reservation " + r.id + " is already " +
                    StateName(r.state));
  }
  CloseWindow(r, /*cancelled=*/true);
  EmitRes(EventType::kReservationCancelled, r,
          "cancelled" + (actor.why.empty() ? "" : ": " + actor.why) +
              "; allocations that drew from it keep running",
          actor.who);
  return ResInfo(r);
}

StatusOr<ReservationInfo> EngineImpl::GetReservation(
    std::string_view id) const {
  auto it = reservation_ids_.find(std::string(id));
  if (it == reservation_ids_.end()) {
    return NotFound("no reservation " + Quote(id));
  }
  return ResInfo(reservations_.at(it->second));
}

std::vector<ReservationInfo> EngineImpl::Reservations() const {
  std::vector<ReservationInfo> out;
  for (const auto& [num, r] : reservations_) {
    if (r.state == Reservation::State::kScheduled ||
        r.state == Reservation::State::kOpen) {
      out.push_back(ResInfo(r));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const ReservationInfo& a, const ReservationInfo& b) {
              return a.window_start != b.window_start
                         ? a.window_start < b.window_start
                         : a.id < b.id;
            });
  return out;
}

ReservationInfo EngineImpl::ResInfo(const Reservation& r) const {
  ReservationInfo i;
  i.id = r.id;
  i.workflow_id = r.workflow_id;
  i.product = r.product;
  i.agent_type = r.agent_type;
  i.requester = r.requester;
  i.level = r.level;
  i.priority_value = r.priority_value;
  for (const auto& [idx, m] : r.resources) {
    i.resources.emplace_back(resource_specs_[idx].name, FromMilli(m));
  }
  i.start_time = r.start;
  i.duration = r.duration;
  i.recurrence = r.period == kDay       ? "daily"
                 : r.period == 7 * kDay ? "weekly"
                                        : "";
  i.until = r.until;
  i.status = StateName(r.state);
  if (r.state == Reservation::State::kScheduled ||
      r.state == Reservation::State::kOpen) {
    i.window_start = r.win_start;
    i.window_end = r.win_end;
  }
  if (r.state == Reservation::State::kOpen) {
    i.grace_ends_at = r.win_start + config_.reservations.grace_period;
    i.grace_over = r.grace_over;
  }
  std::vector<Milli> claimed(resource_specs_.size(), 0);
  for (uint64_t id : r.claimants) {
    auto it = allocs_.find(id);
    if (it == allocs_.end() || !it->second.locks) continue;
    i.holders.push_back(IdText(id));
    for (const auto& [c, d] : it->second.locks->drawn) {
      const Counter& k = counters_[c];
      if (k.kind == Counter::Kind::kResource) claimed[k.owner] += d;
    }
  }
  for (const auto& [idx, m] : r.resources) {
    if (claimed[idx] > 0) {
      i.claimed.emplace_back(resource_specs_[idx].name,
                             FromMilli(claimed[idx]));
    }
  }
  i.warnings = r.warnings;
  i.metadata = r.metadata;
  return i;
}

Status EngineImpl::CheckReservationInvariants() const {
  int64_t intervals = 0, short_windows = 0;
  for (const auto& [c, t] : timelines_) intervals += t.size();
  if (intervals != bookings_) {
    return Internal("timelines hold " + std::to_string(intervals) +
                    " bookings, counted " + std::to_string(bookings_));
  }
  std::set<uint32_t> counters;
  for (const auto& [num, r] : reservations_) {
    bool is_short = false;
    for (size_t i = 0; i < r.demand.size(); ++i) {
      if (r.left[i] < 0 || r.shortfall[i] < 0 ||
          r.left[i] + r.shortfall[i] > r.demand[i].second) {
        return Internal("reservation " + r.id + " holds " +
                        FormatMilli(r.left[i]) + " and lacks " +
                        FormatMilli(r.shortfall[i]) + " of " +
                        FormatMilli(r.demand[i].second));
      }
      if (r.state != Reservation::State::kOpen &&
          (r.left[i] != 0 || r.shortfall[i] != 0)) {
        return Internal("reservation " + r.id + " is " + StateName(r.state) +
                        " but holds capacity");
      }
      is_short |= r.shortfall[i] > 0;
      counters.insert(r.demand[i].first);
    }
    short_windows += is_short;
  }
  if (short_windows != short_windows_) {
    return Internal("short window count is off");
  }
  // At the start of every booking (and now), allocations granted after the
  // bookings there were accepted, plus what is booked and held, fit.
  for (uint32_t c : counters) {
    const Counter& k = counters_[c];
    std::vector<Time> points = {now_};
    auto tl = timelines_.find(c);
    if (tl != timelines_.end()) {
      tl->second.ForEachOverlap(now_, Time::max() - kDay,
                                [&](const Timeline::Interval& iv) {
                                  if (iv.start > now_) {
                                    points.push_back(iv.start);
                                  }
                                });
    }
    for (Time t : points) {
      uint64_t fence = 0;
      Milli booked = 0, held = 0;
      if (tl != timelines_.end()) {
        tl->second.ForEachOverlap(
            t, t + Duration(1), [&](const Timeline::Interval& iv) {
              booked += iv.amount;
              fence = std::max(fence, reservations_.at(iv.id).accepted_fence);
            });
      }
      for (const auto& [num, r] : reservations_) {
        if (r.state != Reservation::State::kOpen || r.win_end <= t) continue;
        held += AmountOn(Demand(r.demand.begin(), r.demand.end()), c) > 0
                    ? r.left[std::find_if(
                                 r.demand.begin(), r.demand.end(),
                                 [&](const auto& e) { return e.first == c; }) -
                             r.demand.begin()]
                    : 0;
        fence = std::max(fence, r.accepted_fence);
      }
      Milli running = 0;
      for (auto it = k.holders.upper_bound({t, UINT64_MAX});
           it != k.holders.end(); ++it) {
        const Alloc& h = allocs_.at(it->second);
        if (h.fencing > fence) running += AmountOn(h.demand, c);
      }
      if (running + booked + held > k.limit) {
        return Internal(
            "at " + FormatTime(t) + " " + CounterLabel(k) + " has " +
            FormatMilli(running) + " granted after its reservations, " +
            FormatMilli(booked) + " booked and " + FormatMilli(held) +
            " held by open windows, over the limit " + FormatMilli(k.limit));
      }
    }
  }
  return Status::Ok();
}

}  // namespace qm
