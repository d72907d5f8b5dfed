#include "server/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "qm/durable_engine.h"
#include "sys/system_probe.h"

namespace qm::server {

namespace {

using Json = nlohmann::json;

// The store's tiers (HistoryRecord::tier).
constexpr int kRawTier = 0;
constexpr int kAveragedTier = 1;
// EncodeSample's format ("v").
constexpr int kFormatVersion = 1;
// Records per ReadHistory call while loading.
constexpr size_t kLoadPage = 4096;

int64_t Ms(Time t) { return t.time_since_epoch().count(); }

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
  // The last store failure logged; cleared when a write succeeds again.
  std::string last_store_error;
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
    if (options.bucket < Duration(1)) options.bucket = Duration(1);
    Load();
  }

  // Adds `s` to the rings; the average of the bucket it closed, if any.
  // Caller holds mu.
  std::optional<Sample> Record(const Sample& s) {
    raw.push_back(s);
    while (!raw.empty() && raw.front().time < s.time - options.raw_range) {
      raw.pop_front();
    }
    return AddToBucket(s);
  }

  // Adds `s` to the bucket being filled; when `s` falls in a later bucket,
  // that one closes first: its average joins the averaged ring and is
  // returned. Caller holds mu.
  std::optional<Sample> AddToBucket(const Sample& s) {
    std::optional<Sample> closed;
    const auto b = options.bucket.count();
    if (bucket.empty()) {
      // Buckets are aligned to multiples of their length.
      bucket_start = Time(Duration(s.time.time_since_epoch().count() / b * b));
    } else if (s.time >= bucket_start + options.bucket) {
      closed = Average(bucket, bucket_start);
      averaged.push_back(*closed);
      bucket.clear();
      bucket_start = Time(Duration(s.time.time_since_epoch().count() / b * b));
      while (!averaged.empty() &&
             averaged.front().time < s.time - options.long_range) {
        averaged.pop_front();
      }
    }
    bucket.push_back(s);
    return closed;
  }

  // The stored samples of `tier` taken at `from` or later, oldest first,
  // read a page at a time. Damaged records are skipped, counted in
  // *damaged (the first one's problem in *first_damage); a failed read
  // stops there with its error in *error.
  std::vector<Sample> LoadTier(int tier, Time from, size_t* damaged,
                               std::string* first_damage, Status* error) {
    std::vector<Sample> out;
    int64_t next = Ms(from);
    for (;;) {
      StatusOr<std::vector<HistoryRecord>> page =
          engine->ReadHistory(tier, next, kLoadPage);
      if (!page.ok()) {
        if (error->ok()) *error = page.status();
        break;
      }
      size_t take = page->size();
      const bool full = take == kLoadPage;
      if (full) {
        // Records of the page's last time may go on in the next page:
        // leave them for it, which starts at that time.
        const int64_t last = page->back().time_ms;
        while (take > 0 && (*page)[take - 1].time_ms == last) --take;
        if (take == 0) {
          // A whole page of one time: keep it and go on after it.
          take = page->size();
          if (last == std::numeric_limits<int64_t>::max()) break;
          next = last + 1;
        } else {
          next = last;
        }
      }
      for (size_t i = 0; i < take; ++i) {
        const HistoryRecord& r = (*page)[i];
        StatusOr<Sample> sample =
            DecodeSample(Time(Duration(r.time_ms)), r.payload);
        if (!sample.ok()) {
          if (++*damaged == 1) {
            *first_damage = "tier " + std::to_string(tier) + " at " +
                            FormatTime(Time(Duration(r.time_ms))) + ": " +
                            sample.status().message();
          }
          continue;
        }
        out.push_back(std::move(*sample));
      }
      if (!full) break;
    }
    return out;
  }

  // Fills the rings from the store (see the constructor's contract).
  void Load() {
    const Time now = clock->Now();
    size_t damaged = 0;
    std::string first_damage;
    Status error;
    std::vector<Sample> stored_raw = LoadTier(kRawTier, now - options.raw_range,
                                              &damaged, &first_damage, &error);
    std::vector<Sample> stored_averaged =
        LoadTier(kAveragedTier, now - options.long_range, &damaged,
                 &first_damage, &error);
    if (!error.ok()) {
      std::cerr << "qm serve: monitoring: the stored usage history could not "
                   "be read (the history starts with what was read): "
                << error.ToString() << "\n";
    }
    if (damaged > 0) {
      std::cerr << "qm serve: monitoring: skipped " << damaged
                << " damaged usage history record(s) in the store (the "
                   "first: "
                << first_damage << ")\n";
    }
    std::vector<HistoryRecord> closed;
    {
      std::lock_guard<std::mutex> lock(mu);
      averaged.assign(stored_averaged.begin(), stored_averaged.end());
      raw.assign(stored_raw.begin(), stored_raw.end());
      // Raw samples after the last stored average go back into their
      // buckets; those that closed while the server was down are averaged.
      const Time averaged_until = averaged.empty()
                                      ? Time::min()
                                      : averaged.back().time + options.bucket;
      for (const Sample& s : stored_raw) {
        if (s.time < averaged_until) continue;
        if (std::optional<Sample> avg = AddToBucket(s)) {
          closed.push_back(
              HistoryRecord{kAveragedTier, Ms(avg->time), EncodeSample(*avg)});
        }
      }
    }
    // After a failed read the store's averages are unknown: storing these
    // could duplicate them.
    if (!closed.empty() && error.ok()) Persist(std::move(closed), now, true);
  }

  // Appends `records` to the stored history while this server leads, and
  // with `prune` drops what fell out of each tier's range at `now`. A
  // failure is logged once (until a write succeeds again); the rings in
  // memory are not affected. Caller holds take_mu (or is the constructor),
  // not mu.
  void Persist(std::vector<HistoryRecord> records, Time now, bool prune) {
    if (!engine->IsLeader()) return;
    Status s = engine->AppendHistory(records);
    if (s.ok() && prune) {
      s = engine->PruneHistory(kRawTier, Ms(now - options.raw_range));
    }
    if (s.ok() && prune) {
      s = engine->PruneHistory(kAveragedTier, Ms(now - options.long_range));
    }
    std::lock_guard<std::mutex> lock(mu);
    if (s.ok()) {
      last_store_error.clear();
      return;
    }
    if (s.message() == last_store_error) return;
    last_store_error = s.message();
    std::cerr << "qm serve: monitoring: the usage history could not be "
                 "stored (it goes on in memory): "
              << s.ToString() << "\n";
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
    std::vector<HistoryRecord> records;
    {
      std::lock_guard<std::mutex> lock(mu);
      latest = std::move(*info);
      if (std::optional<Sample> closed = Record(s)) {
        records.push_back(HistoryRecord{kAveragedTier, Ms(closed->time),
                                        EncodeSample(*closed)});
      }
      ++taken;
    }
    // Pruned when a bucket closes: every few minutes, not every sample.
    const bool prune = !records.empty();
    records.push_back(HistoryRecord{kRawTier, Ms(s.time), EncodeSample(s)});
    Persist(std::move(records), s.time, prune);
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

std::string EncodeSample(const Sample& sample) {
  Json j = Json::object();
  j["v"] = kFormatVersion;
  // Non-finite figures have no JSON form: an unset figure is left out, a
  // pool figure stored as 0.
  auto optional = [&](const char* key, const std::optional<double>& v) {
    if (v && std::isfinite(*v)) j[key] = *v;
  };
  auto number = [&](const char* key, double v) {
    j[key] = std::isfinite(v) ? v : 0.0;
  };
  optional("cpu", sample.cpu_utilization);
  optional("mem", sample.memory_utilization);
  optional("psi", sample.memory_pressure);
  optional("disk", sample.storage_utilization);
  number("agents", sample.agents_active);
  number("limit", sample.agents_limit);
  number("queued", sample.queued);
  number("tokens", sample.tokens_today);
  number("cost", sample.cost_today_usd);
  j["n"] = sample.count;
  return j.dump();
}

StatusOr<Sample> DecodeSample(Time time, std::string_view payload) {
  // nlohmann throws only on misuse; caught here all the same, so a damaged
  // record can never take the server down.
  try {
    const Json j = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return DataLoss("history record is not JSON");
    if (!j.is_object()) {
      return DataLoss("history record is not a JSON object");
    }
    const auto version = j.find("v");
    if (version == j.end() || !version->is_number_integer() ||
        version->get<int64_t>() != kFormatVersion) {
      return DataLoss("history record has no format version " +
                      std::to_string(kFormatVersion) +
                      (version == j.end()
                           ? std::string()
                           : " (it says " + version->dump() + ")"));
    }
    Sample s;
    s.time = time;
    Status problem;
    auto read = [&](const char* key, bool required) -> std::optional<double> {
      const auto it = j.find(key);
      if (it == j.end()) {
        if (required && problem.ok()) {
          problem =
              DataLoss(std::string("history record lacks \"") + key + "\"");
        }
        return std::nullopt;
      }
      if (!it->is_number() || !std::isfinite(it->get<double>())) {
        if (problem.ok()) {
          problem = DataLoss(std::string("history record's \"") + key +
                             "\" is not a number");
        }
        return std::nullopt;
      }
      return it->get<double>();
    };
    s.cpu_utilization = read("cpu", false);
    s.memory_utilization = read("mem", false);
    s.memory_pressure = read("psi", false);
    s.storage_utilization = read("disk", false);
    s.agents_active = read("agents", true).value_or(0);
    s.agents_limit = read("limit", true).value_or(0);
    s.queued = read("queued", true).value_or(0);
    s.tokens_today = read("tokens", true).value_or(0);
    s.cost_today_usd = read("cost", true).value_or(0);
    if (!problem.ok()) return problem;
    const auto count = j.find("n");
    if (count == j.end() || !count->is_number_integer() ||
        count->get<int64_t>() < 1 ||
        count->get<int64_t>() > std::numeric_limits<int>::max()) {
      return DataLoss("history record's \"n\" is not a count of 1 or more");
    }
    s.count = static_cast<int>(count->get<int64_t>());
    return s;
  } catch (const std::exception& e) {
    return DataLoss(std::string("history record does not decode: ") + e.what());
  }
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
