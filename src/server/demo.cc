#include "server/demo.h"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "qm/durable_engine.h"

namespace qm::server {

namespace {

constexpr const char* kRequester = "qm-demo";
constexpr std::array<const char*, 3> kProducts = {"web", "mobile", "data"};
constexpr std::array<const char*, 4> kTypes = {"architect", "backend-engineer",
                                               "frontend-engineer", "tester"};
constexpr std::array<const char*, 5> kFiles = {
    "src/api/server.ts", "src/app/App.tsx", "db/schema.sql", "docs/README.md",
    "src/api/routes.ts"};

}  // namespace

struct DemoWorkload::Impl {
  DurableEngine* engine;
  DemoOptions options;
  std::mt19937_64 rng;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;
  // Allocation id -> when the demo releases it (engine time is the
  // server's clock; these are steady-clock deadlines of the demo itself).
  std::map<std::string, std::chrono::steady_clock::time_point> running;
  int next = 1;
  bool booked = false;

  Impl(DurableEngine* e, DemoOptions o)
      : engine(e),
        options(o),
        rng(o.seed != 0 ? o.seed
                        : static_cast<uint64_t>(std::chrono::steady_clock::now()
                                                    .time_since_epoch()
                                                    .count())) {}

  double Uniform() { return std::uniform_real_distribution<>(0, 1)(rng); }
  template <typename A>
  const char* Pick(const A& a) {
    return a[static_cast<size_t>(Uniform() * a.size()) % a.size()];
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    auto next_arrival = std::chrono::steady_clock::now();
    while (!stop) {
      lock.unlock();
      if (engine->IsLeader()) {
        const auto now = std::chrono::steady_clock::now();
        // Arrivals due since the last look (a few at most per look).
        std::exponential_distribution<> gap(
            1.0 / std::max<double>(1, std::chrono::duration<double, std::milli>(
                                          options.arrival)
                                          .count()));
        for (int k = 0; k < 20 && now >= next_arrival; ++k) {
          Arrive();
          next_arrival +=
              std::chrono::milliseconds(static_cast<int64_t>(gap(rng)));
        }
        if (now >= next_arrival) next_arrival = now;
        Finish(now);
        if (!booked) Book();
      }
      lock.lock();
      cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop; });
    }
  }

  // A new request: type, product, priority and size drawn at random.
  void Arrive() {
    AllocationRequest r;
    const int n = next++;
    r.workflow_id = "demo-" + std::to_string(n % 40);
    r.requester = kRequester;
    r.product = Pick(kProducts);
    r.agent_type = Pick(kTypes);
    const double p = Uniform();
    r.priority = p < 0.05   ? "critical"
                 : p < 0.25 ? "high"
                 : p < 0.8  ? "normal"
                            : "low";
    r.estimated_tokens = 20000 + static_cast<int64_t>(Uniform() * 180000);
    r.estimated_minutes = 1 + Uniform() * 10;
    r.ttl = std::chrono::minutes(2);
    if (Uniform() < 0.3) r.resources.emplace_back("memory_gb", 1 + (n % 3));
    if (Uniform() < 0.25) r.exclusive_access.push_back(Pick(kFiles));
    auto a = engine->Allocate(r);
    if (!a.ok()) return;
    const Duration run =
        options.min_run +
        Duration(static_cast<int64_t>(
            Uniform() *
            static_cast<double>((options.max_run - options.min_run).count())));
    // Queued ones run from when they start; the demo checks at release
    // time and gives a queued one more time (or cancels it now and then).
    running[a->allocation.id] = std::chrono::steady_clock::now() + run;
  }

  // Releases what ran its course, with usage; renews what still runs.
  void Finish(std::chrono::steady_clock::time_point now) {
    for (auto it = running.begin(); it != running.end();) {
      auto info = engine->Get(it->first);
      if (!info.ok() || (info->status != AllocStatus::kActive &&
                         info->status != AllocStatus::kQueued &&
                         info->status != AllocStatus::kPreempted)) {
        it = running.erase(it);  // ended by the engine (expired, preempted)
        continue;
      }
      if (now < it->second) {
        if (info->status == AllocStatus::kActive && Uniform() < 0.1) {
          (void)engine->Renew(it->first, std::nullopt);
        }
        ++it;
        continue;
      }
      if (info->status == AllocStatus::kQueued) {
        if (Uniform() < 0.2) {
          (void)engine->Cancel(it->first);
          it = running.erase(it);
        } else {
          it->second = now + options.min_run;
          ++it;
        }
        continue;
      }
      UsageReport u;
      const int64_t est = info->budget.reserved_tokens > 0
                              ? info->budget.reserved_tokens
                              : 50000;
      u.tokens = static_cast<int64_t>(static_cast<double>(est) *
                                      (0.3 + Uniform() * 0.9));
      u.outcome = Uniform() < 0.08 ? Outcome::kFailure : Outcome::kSuccess;
      (void)engine->Release(it->first, u);
      it = running.erase(it);
    }
  }

  // One reservation ahead, so the timeline has something on it.
  void Book() {
    ReservationRequest r;
    r.product = "data";
    r.requester = kRequester;
    r.resources = {{"agents", 1}};
    r.start_time = SystemClock::Default()->Now() + std::chrono::hours(2);
    r.duration = std::chrono::hours(1);
    r.recurrence = "daily";
    r.metadata = R"({"demo": "nightly batch"})";
    (void)engine->Reserve(r);  // once, whatever the answer
    booked = true;
  }

  void ReleaseAll() {
    for (const auto& [id, due] : running) {
      auto info = engine->Get(id);
      if (!info.ok()) continue;
      if (info->status == AllocStatus::kQueued) {
        (void)engine->Cancel(id);
      } else if (info->status == AllocStatus::kActive ||
                 info->status == AllocStatus::kPreempted) {
        (void)engine->Release(id, UsageReport{});
      }
    }
    running.clear();
  }
};

DemoWorkload::DemoWorkload(DurableEngine* engine, DemoOptions options)
    : impl_(std::make_unique<Impl>(engine, options)) {}

DemoWorkload::~DemoWorkload() { Stop(); }

void DemoWorkload::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->thread.joinable()) return;
  impl_->stop = false;
  impl_->thread = std::thread([this] { impl_->Loop(); });
}

void DemoWorkload::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->thread.joinable()) return;
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
  if (impl_->engine->IsLeader()) impl_->ReleaseAll();
}

}  // namespace qm::server
