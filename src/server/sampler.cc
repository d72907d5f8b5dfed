#include "server/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>

#include "qm/durable_engine.h"
#include "sys/system_probe.h"

namespace qm::server {

namespace {

// Averages `in` (samples of one bucket) into one sample stamped `time`.
Sample Average(const std::vector<Sample>& in, Time time) {
  Sample out;
  out.time = time;
  out.count = 0;
  auto avg = [&](std::optional<double> Sample::*field) {
    double sum = 0;
    int n = 0;
    for (const Sample& s : in) {
      if (!(s.*field)) continue;
      sum += *(s.*field) * s.count;
      n += s.count;
    }
    out.*field = n > 0 ? std::optional<double>(sum / n) : std::nullopt;
  };
  avg(&Sample::cpu_utilization);
  avg(&Sample::memory_utilization);
  avg(&Sample::memory_pressure);
  avg(&Sample::storage_utilization);
  double total = 0;
  for (const Sample& s : in) total += s.count;
  for (const Sample& s : in) {
    const double w = s.count / total;
    out.agents_active += s.agents_active * w;
    out.agents_limit += s.agents_limit * w;
    out.queued += s.queued * w;
    out.count += s.count;
  }
  // Running totals of the day: the last value, not an average.
  out.tokens_today = in.back().tokens_today;
  out.cost_today_usd = in.back().cost_today_usd;
  return out;
}

}  // namespace

struct Sampler::Impl {
  SamplerOptions options;
  DurableEngine* engine;
  Clock* clock;

  // One sample at a time, from the read to the record: the probe keeps the
  // previous /proc/stat sample, and readings reach the engine and the
  // rings in time order.
  std::mutex take_mu;
  sys::SystemProbe probe;

  mutable std::mutex mu;  // everything below
  std::deque<Sample> raw;
  std::deque<Sample> averaged;
  std::vector<Sample> bucket;  // raw samples of the bucket being filled
  Time bucket_start{};
  std::optional<sys::SystemInfo> latest;
  int64_t taken = 0;
  std::string last_refusal;
  bool stop = false;
  std::condition_variable cv;
  std::thread thread;

  Impl(SamplerOptions o, DurableEngine* e)
      : options(std::move(o)),
        engine(e),
        clock(options.clock ? options.clock : SystemClock::Default()),
        probe(sys::ProbeOptions{options.root}) {
    if (options.interval < std::chrono::seconds(1)) {
      options.interval = std::chrono::seconds(1);
    }
  }

  void Record(const Sample& s) {
    raw.push_back(s);
    while (!raw.empty() && raw.front().time < s.time - options.raw_range) {
      raw.pop_front();
    }
    if (bucket.empty()) {
      // Buckets are aligned to multiples of their length.
      const auto b = options.bucket.count();
      bucket_start = Time(Duration(s.time.time_since_epoch().count() / b * b));
    } else if (s.time >= bucket_start + options.bucket) {
      averaged.push_back(Average(bucket, bucket_start));
      bucket.clear();
      const auto b = options.bucket.count();
      bucket_start = Time(Duration(s.time.time_since_epoch().count() / b * b));
      while (!averaged.empty() &&
             averaged.front().time < s.time - options.long_range) {
        averaged.pop_front();
      }
    }
    bucket.push_back(s);
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      lock.unlock();
      Status s = Take();
      lock.lock();
      if (!s.ok() && s.message() != last_refusal) {
        last_refusal = s.message();
        std::cerr << "qm serve: monitoring: the machine could not be read: "
                  << s.ToString() << "\n";
      }
      cv.wait_for(lock, options.interval, [&] { return stop; });
    }
  }

  Status Take() {
    std::lock_guard<std::mutex> take(take_mu);
    StatusOr<sys::SystemInfo> info = probe.Detect({options.storage_path});
    if (!info.ok()) return info.status();
    Sample s;
    s.time = clock->Now();
    SystemReading r;
    if (info->cpu.utilisation) r.cpu_utilization = *info->cpu.utilisation;
    const sys::MemoryInfo& m = info->memory;
    r.memory_utilization =
        UsedShare(m.effective_available_bytes, m.effective_total_bytes);
    r.memory_total_gb =
        static_cast<double>(m.effective_total_bytes) / (uint64_t{1} << 30);
    if (info->pressure.memory.available) {
      r.memory_pressure =
          std::clamp(info->pressure.memory.some.avg10 / 100, 0.0, 1.0);
    }
    if (!info->disks.empty()) {
      r.storage_utilization =
          UsedShare(info->disks[0].available_bytes, info->disks[0].total_bytes);
    }
    s.cpu_utilization = r.cpu_utilization;
    s.memory_utilization = r.memory_utilization;
    s.memory_pressure = r.memory_pressure;
    s.storage_utilization = r.storage_utilization;
    if (engine->IsLeader()) {
      Status observed = engine->ObserveSystem(r);
      if (!observed.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (observed.message() != last_refusal) {
          last_refusal = observed.message();
          std::cerr << "qm serve: monitoring: the engine did not take the "
                       "reading: "
                    << observed.ToString() << "\n";
        }
      }
    }
    if (auto snap = engine->GetSnapshot(); snap.ok()) {
      for (const ResourceUsage& u : snap->resources) {
        if (u.name != "agents") continue;
        s.agents_active = u.allocated + u.reserved;
        s.agents_limit = u.capacity;
      }
      s.queued = static_cast<double>(snap->queued);
    }
    if (auto costs = engine->Costs(); costs.ok()) {
      s.tokens_today = static_cast<double>(costs->tokens_used);
      s.cost_today_usd = costs->cost_usd;
    }
    std::lock_guard<std::mutex> lock(mu);
    latest = std::move(*info);
    Record(s);
    ++taken;
    return Status::Ok();
  }
};

Sampler::Sampler(SamplerOptions options, DurableEngine* engine)
    : impl_(std::make_unique<Impl>(std::move(options), engine)) {}

Sampler::~Sampler() { Stop(); }

void Sampler::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->thread.joinable()) return;
  impl_->stop = false;
  impl_->thread = std::thread([this] { impl_->Loop(); });
}

void Sampler::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Status Sampler::SampleOnce() { return impl_->Take(); }

std::vector<Sample> Sampler::History(Duration range) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Time now = impl_->clock->Now();
  const Time from = now - range;
  std::vector<Sample> out;
  if (range <= impl_->options.raw_range) {
    for (const Sample& s : impl_->raw) {
      if (s.time >= from) out.push_back(s);
    }
    return out;
  }
  for (const Sample& s : impl_->averaged) {
    if (s.time >= from) out.push_back(s);
  }
  if (!impl_->bucket.empty()) {
    out.push_back(Average(impl_->bucket, impl_->bucket_start));
  }
  return out;
}

StatusOr<sys::SystemInfo> Sampler::Latest() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->latest) {
    return NotFound(
        "no reading of the machine yet (the first is taken at "
        "start)");
  }
  return *impl_->latest;
}

Duration Sampler::interval() const { return impl_->options.interval; }

int64_t Sampler::samples_taken() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->taken;
}

std::optional<double> UsedShare(uint64_t available, uint64_t total) {
  if (total == 0) return std::nullopt;
  return std::clamp(
      1.0 - static_cast<double>(available) / static_cast<double>(total), 0.0,
      1.0);
}

Trend TrendOf(const std::vector<Sample>& samples,
              std::optional<double> (*get)(const Sample&)) {
  Trend t;
  double sx = 0, sy = 0, sxx = 0, sxy = 0, span_hours = 0;
  const Time t0 = samples.empty() ? Time{} : samples.front().time;
  for (const Sample& s : samples) {
    const std::optional<double> v = get(s);
    if (!v) continue;
    const double x =
        std::chrono::duration<double, std::ratio<3600>>(s.time - t0).count();
    if (t.samples == 0) {
      t.min = t.max = *v;
    }
    t.min = std::min(t.min, *v);
    t.max = std::max(t.max, *v);
    t.current = *v;
    span_hours = x;
    sx += x;
    sy += *v;
    sxx += x * x;
    sxy += x * *v;
    ++t.samples;
  }
  if (t.samples == 0) {
    t.direction = "unknown";
    return t;
  }
  const double n = t.samples;
  t.average = sy / n;
  const double den = n * sxx - sx * sx;
  t.slope_per_hour = den > 1e-12 ? (n * sxy - sx * sy) / den : 0;
  // Judged by the change the fitted line makes over the samples' span, so
  // a few seconds of noise do not read as a trend.
  const double change = t.slope_per_hour * span_hours;
  t.direction = std::abs(change) < 1 ? "steady"
                : change > 0         ? "rising"
                                     : "falling";
  return t;
}

}  // namespace qm::server
