#include "server/monitor_api.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "sys/system_probe.h"

namespace qm::server {

namespace {

using Json = nlohmann::json;

double Round2(double v) { return std::round(v * 100) / 100; }
double Gb(uint64_t bytes) {
  return Round2(static_cast<double>(bytes) / (uint64_t{1} << 30));
}
Json Percent(const std::optional<double>& fraction) {
  return fraction ? Json(Round2(*fraction * 100)) : Json(nullptr);
}

Json PressureJson(const sys::Pressure& p) {
  if (!p.available) return nullptr;
  Json j = {{"some_avg10", p.some.avg10},
            {"some_avg60", p.some.avg60},
            {"some_avg300", p.some.avg300}};
  if (p.full) {
    j["full_avg10"] = p.full->avg10;
    j["full_avg60"] = p.full->avg60;
  }
  return j;
}

Json SystemJson(const sys::SystemInfo& info, bool full) {
  const sys::CpuInfo& cpu = info.cpu;
  Json c = {
      {"online_cores", cpu.online_cores},
      {"effective_cores", Round2(cpu.effective_cores)},
      {"cgroup_quota_cores", cpu.cgroup_quota_cores
                                 ? Json(Round2(*cpu.cgroup_quota_cores))
                                 : Json(nullptr)},
      {"utilization_percent", Percent(cpu.utilisation)},
      {"load", {Round2(cpu.load1), Round2(cpu.load5), Round2(cpu.load15)}}};
  if (full) {
    Json per = Json::array();
    for (const sys::CoreUsage& u : cpu.per_core) {
      per.push_back({{"cpu", u.cpu},
                     {"utilization_percent", Round2(u.utilisation * 100)}});
    }
    c["per_core"] = std::move(per);
  }
  const sys::MemoryInfo& m = info.memory;
  Json mem = {
      {"total_gb", Gb(m.effective_total_bytes)},
      {"available_gb", Gb(m.effective_available_bytes)},
      {"utilization_percent", Percent(UsedShare(m.effective_available_bytes,
                                                m.effective_total_bytes))},
      {"swap_total_gb", Gb(m.swap_total_bytes)},
      {"swap_free_gb", Gb(m.swap_free_bytes)},
      {"cgroup_limit_gb",
       m.cgroup_limit_bytes ? Json(Gb(*m.cgroup_limit_bytes)) : Json(nullptr)}};
  Json disks = Json::array();
  for (const sys::DiskInfo& d : info.disks) {
    disks.push_back({{"path", d.path},
                     {"total_gb", Gb(d.total_bytes)},
                     {"available_gb", Gb(d.available_bytes)},
                     {"utilization_percent",
                      Percent(UsedShare(d.available_bytes, d.total_bytes))}});
  }
  Json j = {{"cpu", std::move(c)},
            {"memory", std::move(mem)},
            {"pressure",
             {{"cpu", PressureJson(info.pressure.cpu)},
              {"memory", PressureJson(info.pressure.memory)},
              {"io", PressureJson(info.pressure.io)}}},
            {"storage", std::move(disks)}};
  if (full) {
    Json gpus = Json::array();
    for (const sys::GpuInfo& g : info.gpu.gpus) {
      gpus.push_back({{"index", g.index},
                      {"name", g.name},
                      {"memory_total_gb", Gb(g.memory_total_bytes)},
                      {"memory_used_gb", Gb(g.memory_used_bytes)},
                      {"utilization_percent", g.utilisation_percent
                                                  ? Json(*g.utilisation_percent)
                                                  : Json(nullptr)}});
    }
    j["gpus"] = std::move(gpus);
    if (!info.gpu.note.empty()) j["gpu_note"] = info.gpu.note;
  }
  return j;
}

Json SampleJson(const Sample& s) {
  return {{"time", FormatTime(s.time)},
          {"cpu_utilization", Percent(s.cpu_utilization)},
          {"memory_utilization", Percent(s.memory_utilization)},
          {"memory_pressure", Percent(s.memory_pressure)},
          {"storage_utilization", Percent(s.storage_utilization)},
          {"agents_active", Round2(s.agents_active)},
          {"agents_limit", Round2(s.agents_limit)},
          {"queued", Round2(s.queued)},
          {"tokens_today", std::llround(s.tokens_today)},
          {"cost_today_usd", Round2(s.cost_today_usd)},
          {"samples", s.count}};
}

Json TrendJson(const Trend& t) {
  if (t.samples == 0) return nullptr;
  return {{"current", Round2(t.current)},
          {"min", Round2(t.min)},
          {"max", Round2(t.max)},
          {"average", Round2(t.average)},
          {"slope_per_hour", Round2(t.slope_per_hour)},
          {"direction", t.direction},
          {"samples", t.samples}};
}

std::optional<double> CpuPct(const Sample& s) {
  return s.cpu_utilization ? std::optional<double>(*s.cpu_utilization * 100)
                           : std::nullopt;
}
std::optional<double> MemPct(const Sample& s) {
  return s.memory_utilization
             ? std::optional<double>(*s.memory_utilization * 100)
             : std::nullopt;
}
std::optional<double> StoragePct(const Sample& s) {
  return s.storage_utilization
             ? std::optional<double>(*s.storage_utilization * 100)
             : std::nullopt;
}
std::optional<double> AgentsPct(const Sample& s) {
  if (s.agents_limit <= 0) return std::nullopt;
  return 100 * s.agents_active / s.agents_limit;
}
std::optional<double> Queued(const Sample& s) { return s.queued; }
std::optional<double> Cost(const Sample& s) { return s.cost_today_usd; }

}  // namespace

Json MonitorSystemResult(const Sampler& sampler, const Json& snapshot,
                         const MonitorSystemQuery& q,
                         double warning_threshold) {
  Json out;
  out["time"] = snapshot.value("time", Json(nullptr));
  out["health"] = snapshot.value("health", Json(nullptr));
  out["alerts"] = snapshot.value("alerts", Json::array());
  auto latest = sampler.Latest();
  out["system"] = latest.ok() ? SystemJson(*latest, q.full) : Json(nullptr);
  out["reading"] = snapshot.value("system", Json(nullptr));
  Json pool;
  if (snapshot.contains("resources") &&
      snapshot["resources"].contains("agents")) {
    const Json& a = snapshot["resources"]["agents"];
    pool["agents_active"] =
        a.value("allocated", 0.0) + a.value("reserved", 0.0);
    pool["agents_limit"] = a.value("total", 0.0);
  }
  if (snapshot.contains("allocations")) {
    pool["queued"] = snapshot["allocations"].value("queued", 0);
    pool["oldest_wait"] = snapshot["allocations"].value("oldest_wait", Json());
  }
  out["pool"] = std::move(pool);
  out["time_range"] = FormatDuration(q.range);
  out["sample_interval"] = FormatDuration(sampler.interval());
  const std::vector<Sample> history = sampler.History(q.range);
  Json h = Json::array();
  for (const Sample& s : history) h.push_back(SampleJson(s));
  out["history"] = std::move(h);
  if (q.include_trends) {
    const Trend agents = TrendOf(history, &AgentsPct);
    out["trends"] = {
        {"cpu_utilization", TrendJson(TrendOf(history, &CpuPct))},
        {"memory_utilization", TrendJson(TrendOf(history, &MemPct))},
        {"storage_utilization", TrendJson(TrendOf(history, &StoragePct))},
        {"agent_utilization", TrendJson(agents)},
        {"queued", TrendJson(TrendOf(history, &Queued))},
        {"cost_today_usd", TrendJson(TrendOf(history, &Cost))}};
    // Seed 000's dashboard capacity_utilization: the agent pool now, and
    // where its trend line reaches in 24 h (clamped to 0..100); null
    // without history.
    Json cap = {{"safe_threshold", Round2(warning_threshold * 100)}};
    if (agents.samples > 0) {
      cap["current"] = Round2(agents.current);
      cap["projected_24h"] =
          agents.samples > 1
              ? Json(Round2(std::clamp(
                    agents.current + 24 * agents.slope_per_hour, 0.0, 100.0)))
              : Json(nullptr);
    } else {
      cap["current"] = nullptr;
      cap["projected_24h"] = nullptr;
    }
    out["capacity_utilization"] = std::move(cap);
  }
  return out;
}

}  // namespace qm::server
