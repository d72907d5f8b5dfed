// Monitoring in the engine (Engine::ObserveSystem, docs/monitoring.md):
// the machine's readings rated against config.monitoring into health and
// alerts, and the memory pressure response. The engine decides; the
// server's sampler only reads the machine and hands the reading over, so
// the decisions are journaled and replayed like any other.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/engine_impl.h"
#include "core/text.h"
#include "qm/clock.h"

namespace qm {

namespace {

// "83%" (whole percent; "0.4%" under 1%).
std::string Percent(double fraction) {
  const double p = fraction * 100;
  if (p > 0 && p < 1) return FormatNumber(std::round(p * 10) / 10) + "%";
  return FormatNumber(std::round(p)) + "%";
}

Status CheckFraction(const char* field, const std::optional<double>& v) {
  if (v && (!std::isfinite(*v) || *v < 0 || *v > 1)) {
    return InvalidRequest(std::string(field) +
                          ": must be a fraction from 0 to 1, got " +
                          (std::isfinite(*v) ? FormatNumber(*v) : "nan/inf"));
  }
  return Status::Ok();
}

HealthStatus Worst(HealthStatus a, HealthStatus b) { return std::max(a, b); }

// What a resource's capacity_warning says and recommends.
struct AlertText {
  const char* resource;
  const char* what;  // "CPU utilization"
  const char* action;
};
constexpr AlertText kCpu{"cpu", "CPU utilization",
                         "Reduce concurrent agents (max_concurrent) or move "
                         "work to another machine"};
constexpr AlertText kStorage{"storage", "Storage utilization",
                             "Clean temporary files or move the state to a "
                             "larger disk"};
constexpr AlertText kAgents{"agents", "Agent pool utilization",
                            "Consider scaling the agent pool "
                            "(max_concurrent.total) or lowering the load"};

}  // namespace

Status ValidateMonitoringConfig(const MonitoringConfig& m) {
  struct Field {
    const char* name;
    double value;
  };
  const Field thresholds[] = {{"warning_threshold", m.warning_threshold},
                              {"critical_threshold", m.critical_threshold},
                              {"pressure_threshold", m.pressure_threshold},
                              {"gc_trigger_threshold", m.gc_trigger_threshold},
                              {"psi_threshold", m.psi_threshold}};
  for (const Field& f : thresholds) {
    if (!std::isfinite(f.value) || f.value <= 0 || f.value > 1) {
      return InvalidRequest(std::string("monitoring.") + f.name +
                            ": must be a fraction above 0 and at most 1, got " +
                            FormatNumber(f.value));
    }
  }
  if (!std::isfinite(m.hysteresis) || m.hysteresis < 0 || m.hysteresis > 0.5) {
    return InvalidRequest(
        "monitoring.hysteresis: must be a fraction from 0 to 0.5, got " +
        FormatNumber(m.hysteresis));
  }
  if (m.critical_threshold < m.warning_threshold) {
    return InvalidRequest(
        "monitoring.critical_threshold: " + FormatNumber(m.critical_threshold) +
        " must not be below warning_threshold (" +
        FormatNumber(m.warning_threshold) + ")");
  }
  if (m.gc_trigger_threshold < m.pressure_threshold) {
    return InvalidRequest("monitoring.gc_trigger_threshold: " +
                          FormatNumber(m.gc_trigger_threshold) +
                          " must not be below pressure_threshold (" +
                          FormatNumber(m.pressure_threshold) + ")");
  }
  // A figure clears at its threshold less the hysteresis: that must be
  // above 0, or it could never clear.
  for (const Field& f : thresholds) {
    if (m.hysteresis >= f.value) {
      return InvalidRequest(
          "monitoring.hysteresis: " + FormatNumber(m.hysteresis) +
          " must be below " + f.name + " (" + FormatNumber(f.value) +
          "), or what it raises could never clear");
    }
  }
  const MonitoringConfig::Degradation& d = m.degradation;
  if (!std::isfinite(d.threshold) || d.threshold <= 0 || d.threshold > 100) {
    return InvalidRequest(
        "monitoring.degradation.threshold: must be a fraction above 0 and at "
        "most 100 (0.25 = a 25% rise), got " +
        FormatNumber(d.threshold));
  }
  if (d.window < std::chrono::minutes(1)) {
    return InvalidRequest(
        "monitoring.degradation.window: must be at least 1m, got " +
        FormatDuration(d.window));
  }
  if (d.baseline < d.window || d.baseline > std::chrono::hours(24 * 7)) {
    return InvalidRequest(
        "monitoring.degradation.baseline: must be from the window (" +
        FormatDuration(d.window) + ") to 7d, got " +
        FormatDuration(d.baseline));
  }
  if (d.min_increase < Duration(0)) {
    return InvalidRequest(
        "monitoring.degradation.min_increase: must not be negative, got " +
        FormatDuration(d.min_increase));
  }
  if (d.min_samples < 1 || d.min_samples > 1000000) {
    return InvalidRequest(
        "monitoring.degradation.min_samples: must be from 1 to 1000000, got " +
        std::to_string(d.min_samples));
  }
  return Status::Ok();
}

std::string EngineImpl::PressureText() const {
  std::string figures;
  if (system_ && system_->memory_utilization) {
    figures = Percent(*system_->memory_utilization) + " of memory in use";
  }
  if (system_ && system_->memory_pressure &&
      *system_->memory_pressure >= config_.monitoring.psi_threshold) {
    figures += std::string(figures.empty() ? "" : ", ") +
               "tasks stalled on memory " + Percent(*system_->memory_pressure) +
               " of the last 10 s";
  }
  return "memory pressure (" + figures + "; pressure_threshold " +
         Percent(config_.monitoring.pressure_threshold) +
         "): requests that ask for memory_gb wait until it eases";
}

Health EngineImpl::ComputeHealth(const Snapshot& s) const {
  const MonitoringConfig& m = config_.monitoring;
  Health h;
  auto rate = [](std::optional<double> v, double warning,
                 double critical) -> std::optional<HealthStatus> {
    if (!v) return std::nullopt;
    if (*v >= critical) return HealthStatus::kCritical;
    if (*v >= warning) return HealthStatus::kWarning;
    return HealthStatus::kHealthy;
  };
  if (system_) {
    h.cpu = rate(system_->cpu_utilization, m.warning_threshold,
                 m.critical_threshold);
    h.memory = rate(system_->memory_utilization, m.pressure_threshold,
                    m.gc_trigger_threshold);
    if (system_->memory_pressure) {
      const HealthStatus psi = *system_->memory_pressure >= m.psi_threshold
                                   ? HealthStatus::kWarning
                                   : HealthStatus::kHealthy;
      h.memory = Worst(h.memory.value_or(HealthStatus::kHealthy), psi);
    }
    h.storage = rate(system_->storage_utilization, m.warning_threshold,
                     m.critical_threshold);
  }
  h.memory_pressure = memory_pressure_;
  if (memory_pressure_) {
    h.memory = Worst(h.memory.value_or(HealthStatus::kWarning),
                     HealthStatus::kWarning);
  }
  // The pool: critical while a queued request waited past its level's
  // max_wait_time_minutes (starvation), warning while it is nearly full
  // and work waits.
  for (int level = 0; level < kNumLevels; ++level) {
    const auto& w = s.oldest_wait_by_level[level];
    if (w && *w > std::chrono::duration_cast<Duration>(
                      std::chrono::duration<double, std::ratio<60>>(
                          config_.levels[level].max_wait_minutes))) {
      h.agent_pool = HealthStatus::kCritical;
    }
  }
  const Counter& agents = counters_[resource_counter_[agents_resource_]];
  if (s.queued > 0 && agents.limit > 0) {
    const double use = static_cast<double>(agents.used) / agents.limit;
    const HealthStatus pool =
        use >= m.critical_threshold  ? HealthStatus::kCritical
        : use >= m.warning_threshold ? HealthStatus::kWarning
                                     : HealthStatus::kHealthy;
    h.agent_pool = Worst(h.agent_pool, pool);
  }
  h.overall = h.agent_pool;
  for (const auto& r : {h.cpu, h.memory, h.storage}) {
    if (r) h.overall = Worst(h.overall, *r);
  }
  return h;
}

void EngineImpl::EmitAlert(const Alert& alert) {
  Event e;
  if (!NextEvent(EventType::kAlert,
                 alert.firing ? alert.message : alert.message + " (cleared)",
                 &e)) {
    return;
  }
  e.alert = alert;
  sink_->OnEvent(e);
}

void EngineImpl::ClearAlert(std::map<std::string, Alert>::iterator it,
                            std::string message) {
  Alert cleared = std::move(it->second);
  health_alerts_.erase(it);
  cleared.firing = false;
  cleared.message = std::move(message);
  EmitAlert(cleared);
}

void EngineImpl::RateAlert(const std::string& type, const std::string& resource,
                           std::optional<double> value, double warning,
                           double critical, const std::string& what,
                           const std::string& action) {
  if (!value) return;
  const double v = *value;
  const double hysteresis = config_.monitoring.hysteresis;
  const std::string key = type + "/" + resource;
  auto it = health_alerts_.find(key);
  auto text = [&](double threshold) {
    return what + " at " + Percent(v) + " (threshold " + Percent(threshold) +
           ")";
  };
  if (it == health_alerts_.end()) {
    if (v < warning) return;
    Alert a;
    a.type = type;
    a.resource = resource;
    a.severity = v >= critical ? "high" : "medium";
    a.threshold = v >= critical ? critical : warning;
    a.value = v;
    a.message = text(a.threshold);
    a.recommended_action = action;
    a.since = now_;
    health_alerts_.emplace(key, a);
    EmitAlert(a);
    return;
  }
  Alert& a = it->second;
  a.value = v;
  if (v < warning - hysteresis) {
    ClearAlert(it, what + " back to " + Percent(v) + " (threshold " +
                       Percent(warning) + ")");
    return;
  }
  const bool high =
      v >= critical || (a.severity == "high" && v >= critical - hysteresis);
  const std::string severity = high ? "high" : "medium";
  if (severity == a.severity) return;
  a.severity = severity;
  a.threshold = high ? critical : warning;
  a.message = text(a.threshold);
  EmitAlert(a);
}

void EngineImpl::ReclaimForMemory(double memory_utilization,
                                  double memory_total_gb) {
  const uint32_t memory = MemoryCounter();
  if (memory == UINT32_MAX || memory_total_gb <= 0) return;
  const MonitoringConfig& m = config_.monitoring;
  // Enough to come back under the pressure threshold, less what holders
  // already asked to give back are releasing.
  const double need_gb =
      (memory_utilization - m.pressure_threshold) * memory_total_gb -
      FromMilli(counters_[memory].releasing);
  if (need_gb <= 0) return;
  std::vector<Alloc*> candidates;
  for (auto& [id, a] : allocs_) {
    if (a.status != AllocStatus::kActive || !a.holding || !a.req.preemptible ||
        a.req.level != Level::kLow || AmountOn(a.demand, memory) <= 0) {
      continue;
    }
    candidates.push_back(&a);
  }
  std::sort(candidates.begin(), candidates.end(), VictimBefore);
  const std::string why =
      "reclaim requested: memory at " + Percent(memory_utilization) + " of " +
      FormatNumber(std::round(memory_total_gb * 10) / 10) +
      " GiB (gc_trigger_threshold " + Percent(m.gc_trigger_threshold) + ")";
  double asked = 0;
  for (Alloc* v : candidates) {
    if (asked >= need_gb) break;
    asked += FromMilli(AmountOn(v->demand, memory));
    NoticeVictim(*v, why, EventType::kReclaimRequested);
  }
}

namespace {

constexpr int64_t kMsPerMinuteInt = 60000;

int64_t MinuteOf(Time t) {
  const int64_t ms = t.time_since_epoch().count();
  return ms >= 0 ? ms / kMsPerMinuteInt : -((-ms - 1) / kMsPerMinuteInt) - 1;
}

int64_t Minutes(Duration d) {
  return (d.count() + kMsPerMinuteInt - 1) / kMsPerMinuteInt;
}

// A mean wait for people: "42s", "2m5s", "0.4s".
std::string WaitText(double ms) {
  if (ms < 10000) return FormatNumber(std::round(ms / 100) / 10) + "s";
  return FormatDuration(
      Duration(static_cast<int64_t>(std::round(ms / 1000)) * 1000));
}

}  // namespace

void EngineImpl::RecordGrantWait(Duration wait) {
  const int64_t minute = MinuteOf(now_);
  if (wait_buckets_.empty() || wait_buckets_.back().minute < minute) {
    wait_buckets_.push_back(WaitBucket{minute, 0, 0});
  }
  // Engine time never runs back, so the last bucket is this minute's.
  WaitBucket& b = wait_buckets_.back();
  if (b.grants == WaitBucket::kMaxGrants) return;
  ++b.grants;
  b.wait_ms = std::min(
      WaitBucket::kMaxWaitMs,
      b.wait_ms + std::clamp<int64_t>(wait.count(), 0, WaitBucket::kMaxWaitMs));
  const MonitoringConfig::Degradation& d = config_.monitoring.degradation;
  const int64_t keep = Minutes(d.window) + Minutes(d.baseline);
  while (!wait_buckets_.empty() &&
         wait_buckets_.front().minute <= minute - keep) {
    wait_buckets_.pop_front();
  }
}

void EngineImpl::RateDegradation() {
  const MonitoringConfig& m = config_.monitoring;
  const MonitoringConfig::Degradation& d = m.degradation;
  const int64_t now_minute = MinuteOf(now_);
  const int64_t window = Minutes(d.window);
  const int64_t baseline = Minutes(d.baseline);
  // Recent: the window's minutes up to this one; baseline: those before.
  int64_t recent_n = 0, recent_ms = 0, base_n = 0, base_ms = 0;
  for (const WaitBucket& b : wait_buckets_) {
    if (b.minute > now_minute - window) {
      recent_n += b.grants;
      recent_ms += b.wait_ms;
    } else if (b.minute > now_minute - window - baseline) {
      base_n += b.grants;
      base_ms += b.wait_ms;
    }
  }
  const std::string key = "degraded_performance/queue_wait";
  auto it = health_alerts_.find(key);
  const bool enough = recent_n >= d.min_samples && base_n >= 4 * d.min_samples;
  if (!enough) {
    // Too few grants to judge. An alert stands while work still waits;
    // with nothing queued, nothing is slow.
    if (it != health_alerts_.end() && queued_count_ == 0) {
      ClearAlert(it, "queue wait back to normal: nothing waits");
    }
    return;
  }
  const double recent = static_cast<double>(recent_ms) / recent_n;
  const double base = static_cast<double>(base_ms) / base_n;
  const double delta = recent - base;
  const double min_ms = static_cast<double>(d.min_increase.count());
  // The rise as a fraction of the baseline, taken as at least 1 s so that
  // a baseline of no wait at all gives a finite figure.
  const double rise = delta / std::max(base, 1000.0);
  // Severity goes up at +100% and +300% (or the threshold, when higher)
  // and comes down only below them less the hysteresis, so a rise
  // hovering at a step does not re-rate at every reading.
  const double to_medium = std::max(1.0, d.threshold);
  const double to_high = std::max(3.0, d.threshold);
  auto severity_of = [&](double r, const std::string& now) {
    const double h = m.hysteresis;
    if (r >= to_high || (now == "high" && r >= to_high - h)) return "high";
    if (r >= to_medium ||
        ((now == "high" || now == "medium") && r >= to_medium - h)) {
      return "medium";
    }
    return "low";
  };
  const std::string over = FormatDuration(d.window);
  const std::string before = FormatDuration(d.baseline);
  auto text = [&] {
    return "Queue wait increased by " + Percent(rise) + ": grants waited " +
           WaitText(recent) + " on average over the last " + over +
           ", against " + WaitText(base) + " over the previous " + before;
  };
  if (it == health_alerts_.end()) {
    if (rise < d.threshold || delta < min_ms) return;
    Alert a;
    a.type = "degraded_performance";
    a.resource = "queue_wait";
    a.severity = severity_of(rise, "");
    a.value = rise;
    a.threshold = d.threshold;
    a.message = text();
    a.recommended_action =
        "Monitor and investigate if it continues: qm queue says what waits "
        "and why; raise max_concurrent or lower the load";
    a.since = now_;
    health_alerts_.emplace(key, a);
    EmitAlert(a);
    return;
  }
  Alert& a = it->second;
  a.value = rise;
  // (A hysteresis above the threshold clears only at no rise at all.)
  if (rise < std::max(0.0, d.threshold - m.hysteresis) || delta < min_ms / 2) {
    ClearAlert(it, "queue wait back to normal: " + WaitText(recent) +
                       " on average over the last " + over + ", against " +
                       WaitText(base) + " before");
    return;
  }
  a.message = text();
  const std::string severity = severity_of(rise, a.severity);
  if (severity == a.severity) return;
  a.severity = severity;
  EmitAlert(a);
}

Status EngineImpl::ObserveSystem(const SystemReading& r) {
  QM_RETURN_IF_ERROR(CheckFraction("cpu_utilization", r.cpu_utilization));
  QM_RETURN_IF_ERROR(CheckFraction("memory_utilization", r.memory_utilization));
  QM_RETURN_IF_ERROR(CheckFraction("memory_pressure", r.memory_pressure));
  QM_RETURN_IF_ERROR(
      CheckFraction("storage_utilization", r.storage_utilization));
  if (!std::isfinite(r.memory_total_gb) || r.memory_total_gb < 0 ||
      r.memory_total_gb > 1e9) {
    return InvalidRequest(
        "memory_total_gb: must be a number of GB from 0 to 1e9");
  }
  OpScope op(this);
  const MonitoringConfig& m = config_.monitoring;
  system_ = r;
  system_time_ = now_;

  RateAlert("capacity_warning", kCpu.resource, r.cpu_utilization,
            m.warning_threshold, m.critical_threshold, kCpu.what, kCpu.action);
  RateAlert("capacity_warning", kStorage.resource, r.storage_utilization,
            m.warning_threshold, m.critical_threshold, kStorage.what,
            kStorage.action);
  // The pool counts as used up only while work waits for it.
  const Counter& agents = counters_[resource_counter_[agents_resource_]];
  const double pool =
      queued_count_ > 0 && agents.limit > 0
          ? static_cast<double>(agents.used) / static_cast<double>(agents.limit)
          : 0.0;
  RateAlert("capacity_warning", kAgents.resource, std::min(pool, 1.0),
            m.warning_threshold, m.critical_threshold, kAgents.what,
            kAgents.action);

  // Memory pressure: on at either threshold, off below both (less the
  // hysteresis); unknown figures leave it as it is.
  const auto& mu = r.memory_utilization;
  const auto& psi = r.memory_pressure;
  if (mu || psi) {
    const bool over =
        (mu && *mu >= m.pressure_threshold) || (psi && *psi >= m.psi_threshold);
    const bool under = (!mu || *mu < m.pressure_threshold - m.hysteresis) &&
                       (!psi || *psi < m.psi_threshold - m.hysteresis);
    const std::string key = "memory_pressure/memory";
    const bool by_use = mu && *mu >= m.pressure_threshold;
    if (!memory_pressure_ && over) {
      memory_pressure_ = true;
      Alert a;
      a.type = "memory_pressure";
      a.resource = "memory";
      a.severity = "high";
      a.value = by_use ? *mu : *psi;
      a.threshold = by_use ? m.pressure_threshold : m.psi_threshold;
      a.message = PressureText();
      a.recommended_action =
          "Release idle allocations or pause memory-intensive work; new "
          "requests that ask for memory queue until it eases";
      a.since = now_;
      health_alerts_[key] = a;
      EmitAlert(a);
      // Held requests give up the claims they had on counters, so that
      // what queues behind them is looked at again.
      Dispatch();
    } else if (memory_pressure_ && under) {
      memory_pressure_ = false;
      Alert cleared;
      if (auto it = health_alerts_.find(key); it != health_alerts_.end()) {
        cleared = it->second;
        health_alerts_.erase(it);
      }
      cleared.type = "memory_pressure";
      cleared.resource = "memory";
      cleared.firing = false;
      cleared.value = mu.value_or(psi.value_or(0));
      cleared.message =
          "memory pressure eased" +
          (mu ? ": " + Percent(*mu) + " of memory in use" : std::string()) +
          "; requests that ask for memory_gb are granted again";
      EmitAlert(cleared);
      Dispatch();
    } else if (memory_pressure_) {
      // Still on: the alert shows the latest figures (no new event).
      if (auto it = health_alerts_.find(key); it != health_alerts_.end()) {
        it->second.value = by_use ? *mu : psi.value_or(mu.value_or(0));
        it->second.message = PressureText();
      }
    }
  }
  if (mu && *mu >= m.gc_trigger_threshold) {
    ReclaimForMemory(*mu, r.memory_total_gb);
  }
  RateDegradation();
  return Status::Ok();
}

Status Engine::ObserveSystem(const SystemReading& reading) {
  return impl_->ObserveSystem(reading);
}

}  // namespace qm
