#include "server/service.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "api/json_codec.h"
#include "qm/config_loader.h"
#include "server/activity.h"
#include "server/dashboard.h"
#include "server/holders.h"
#include "server/monitor_api.h"
#include "sim/yaml_json.h"

namespace qm::server {
namespace {

using api::Json;
using Steady = std::chrono::steady_clock;

// ---------------------------------------------------------------- helpers

// Runs jobs on a fixed set of threads. Jobs queue without bound (each is a
// request the transport already accepted within its limits).
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 0; i < std::max(threads, 1); ++i) {
      threads_.emplace_back([this] { Loop(); });
    }
  }
  ~WorkerPool() { Stop(); }

  // Queues `job`; false (and `job` untouched) once the pool has stopped.
  bool Post(std::function<void()>& job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }
  void Post(std::function<void()>&& job) { (void)Post(job); }

  // Runs the jobs already queued, then joins the threads.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopped_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopped_ = false;
  std::vector<std::thread> threads_;
};

// Runs callbacks at steady-clock deadlines on one thread (wait timeouts,
// monitor ticks). Callbacks must be quick: they post real work elsewhere.
class Timers {
 public:
  Timers() : thread_([this] { Loop(); }) {}
  ~Timers() { Stop(); }

  uint64_t At(Steady::time_point when, std::function<void()> fn) {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = next_id_++;
      by_time_.emplace(std::make_pair(when, id), std::move(fn));
      when_[id] = when;
    }
    cv_.notify_one();
    return id;
  }
  // False when it already ran (or is running).
  bool Cancel(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = when_.find(id);
    if (it == when_.end()) return false;
    by_time_.erase(std::make_pair(it->second, id));
    when_.erase(it);
    return true;
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopped_) {
      if (by_time_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = by_time_.begin();
      // A copy: the entry may be cancelled (erased) while this waits.
      const Steady::time_point due = first->first.first;
      if (Steady::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      std::function<void()> fn = std::move(first->second);
      when_.erase(first->first.second);
      by_time_.erase(first);
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<Steady::time_point, uint64_t>, std::function<void()>>
      by_time_;
  std::map<uint64_t, Steady::time_point> when_;
  uint64_t next_id_ = 1;
  bool stopped_ = false;
  std::thread thread_;
};

// The deepest nesting of arrays and objects in `text` (strings skipped),
// stopping early once past `limit`.
int JsonDepth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

Time WallNow() { return SystemClock::Default()->Now(); }

// Reads an optional number of seconds from `j[key]` (a number >= 0 or a
// duration text such as "30s").
Status GetSeconds(const Json& j, const std::string& key, Duration max,
                  std::optional<Duration>* out) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return {};
  auto d = api::DurationFromJson(j[key], key);
  if (!d.ok()) return d.status();
  if (d->count() < 0) {
    return InvalidRequest(key + ": must not be negative");
  }
  if (*d > max) {
    return InvalidRequest(key + ": at most " + FormatDuration(max) +
                          " (server.max_wait), got " + FormatDuration(*d));
  }
  *out = *d;
  return {};
}

Status QuerySeconds(const HttpRequest& r, const std::string& key, Duration max,
                    std::optional<Duration>* out) {
  const std::string* v = r.Query(key);
  if (!v) return {};
  Duration d;
  double seconds = 0;
  const auto [ptr, ec] =
      std::from_chars(v->data(), v->data() + v->size(), seconds);
  if (ec == std::errc() && ptr == v->data() + v->size()) {
    d = Duration(static_cast<int64_t>(seconds * 1000));
  } else if (!ParseDuration(*v, &d)) {
    return InvalidRequest(key +
                          ": must be a number of seconds or a duration "
                          "such as 30s, got \"" +
                          *v + "\"");
  }
  if (d.count() < 0) return InvalidRequest(key + ": must not be negative");
  if (d > max) {
    return InvalidRequest(key + ": at most " + FormatDuration(max) + ", got " +
                          FormatDuration(d));
  }
  *out = d;
  return {};
}

bool EventTypeFromName(std::string_view name, EventType* out) {
  for (int i = 0; i <= static_cast<int>(kLastEventType); ++i) {
    if (EventTypeName(static_cast<EventType>(i)) == name) {
      *out = static_cast<EventType>(i);
      return true;
    }
  }
  return false;
}

bool AllocStatusFromName(std::string_view name, AllocStatus* out) {
  for (int i = 0; i <= static_cast<int>(AllocStatus::kCancelled); ++i) {
    if (AllocStatusName(static_cast<AllocStatus>(i)) == name) {
      *out = static_cast<AllocStatus>(i);
      return true;
    }
  }
  return false;
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) out.push_back(s.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// Checks that `j` is an object whose keys are all in `allowed`.
Status CheckKeys(const Json& j, const std::vector<std::string>& allowed,
                 std::string_view what) {
  if (!j.is_object()) {
    return InvalidRequest(std::string(what) +
                          ": the body must be a JSON "
                          "object, got " +
                          api::JsonTypeName(j));
  }
  for (const auto& [key, value] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const std::string& a : allowed) {
        list += (list.empty() ? "" : ", ") + a;
      }
      return InvalidRequest(key + ": unknown field for " + std::string(what) +
                            " (known: " + list + ")");
    }
  }
  return {};
}

StatusOr<std::string> GetText(const Json& j, const std::string& key,
                              bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return InvalidRequest(key + ": required");
    return std::string();
  }
  if (!j[key].is_string()) {
    return InvalidRequest(key + ": must be a string, got " +
                          api::JsonTypeName(j[key]));
  }
  return j[key].get<std::string>();
}

}  // namespace

// ---------------------------------------------------------------- service

class Service::Impl {
 public:
  Impl(DurableEngine* engine, EventHub* hub, ServerMetrics* metrics,
       ServiceOptions options)
      : engine_(engine),
        hub_(hub),
        metrics_(metrics),
        options_(std::move(options)),
        started_(Steady::now()),
        pool_(options_.workers),
        async_pool_(options_.async_workers) {
    BuildRoutes();
  }

  ~Impl() { Shutdown(); }

  void Handle(HttpRequest request, Responder responder);
  void Shutdown();

  // One request on its way through a handler.
  struct Call {
    HttpRequest req;
    Responder responder{nullptr};
    std::string route;                          // the matched pattern
    std::string operation;                      // the envelope's operation
    std::map<std::string, std::string> params;  // from the path
    // Who asks: the token's name and role ("local" admin without tokens);
    // an agent's products.
    std::string who;
    Role role = Role::kAdmin;
    std::vector<std::string> products;
    Json body;  // {} for no body
    Steady::time_point start;
    std::atomic<bool> answered{false};
  };
  using CallPtr = std::shared_ptr<Call>;

  // How a handler runs: on a worker (engine calls), or on the I/O thread
  // (answers that need no engine call, streams); kRaw: on the I/O thread
  // with the body unread (a protocol of its own: /mcp). kAsync: an engine
  // call answered from its commit, so its handler never waits: it runs on
  // the I/O thread itself, which takes the engine only when it is free
  // (DurableEngine's `defer`) and otherwise hands the call to the small
  // async pool (ServiceOptions::async_workers): no thread hop per request
  // in the common case, and an event loop never waits behind a long read
  // or a snapshot. (A call handed over may be overtaken by later ones
  // that found the engine free: requests on different connections are
  // decided in no promised order.) Except for an agent's call on one
  // allocation, whose ownership check reads the engine (and waits): a
  // worker runs it.
  enum class Where { kWorker, kInline, kRaw, kAsync };
  struct Route {
    std::string method;
    std::vector<std::string> parts;  // "{id}" for a parameter
    std::string pattern;
    std::string operation;
    Where where;
    bool leader_only = false;  // a follower redirects it (OnFollowerOf)
    std::function<void(const CallPtr&)> run;
  };
  std::vector<Route> routes_;

  void BuildRoutes();

  // Answers a call once (later answers are ignored).
  void Ok(const CallPtr& c, Json result,
          std::vector<std::string> recommendations = {});
  // Answers `c` with the error and returns false, or returns true when `s`
  // is OK.
  bool Check(const CallPtr& c, const Status& s) {
    if (s.ok()) return true;
    Fail(c, s);
    return false;
  }
  // Answers `c` with `r` (its JSON form) or its error.
  template <typename T>
  void Reply(const CallPtr& c, const StatusOr<T>& r) {
    if (Check(c, r.status())) Ok(c, api::ToJson(*r));
  }
  void Fail(const CallPtr& c, const Status& s);
  void Send(const CallPtr& c, int status, std::string body,
            std::vector<std::pair<std::string, std::string>> headers = {});

  // Parses the body and runs the route (on a worker, or here when inline).
  void Dispatch(const CallPtr& c, const Route* route);
  // On a worker, for a leader-only route while this server does not lead:
  // answers 307 to the leader, or 503 with Retry-After while nobody leads;
  // runs the route here when this server leads by now, or when no leader
  // can be named (then the engine answers why it takes no change).
  void ToLeader(const CallPtr& c, const Route* route);
  // Whether `c` must be answered by the leader.
  static bool LeaderOnly(const CallPtr& c, const Route& route);

  // ---- handlers ----
  void Allocate(const CallPtr& c);
  void AllocateBatch(const CallPtr& c);
  void ListAllocations(const CallPtr& c);
  void GetAllocation(const CallPtr& c);
  void Renew(const CallPtr& c);
  void Release(const CallPtr& c);
  void Reallocate(const CallPtr& c);
  void Cancel(const CallPtr& c);
  void ReportUsage(const CallPtr& c);
  void Extend(const CallPtr& c);
  void Queue(const CallPtr& c);
  void Status_(const CallPtr& c);
  void ResourceStatus(const CallPtr& c);
  void WorkflowUsage(const CallPtr& c);
  void Capacity(const CallPtr& c);
  void Costs(const CallPtr& c);
  void Analytics(const CallPtr& c);
  void Conflicts(const CallPtr& c);
  void CheckConflicts(const CallPtr& c);
  void ResolveConflict(const CallPtr& c);
  void PreventConflicts(const CallPtr& c);
  void VerifyLock(const CallPtr& c);
  void Reserve(const CallPtr& c);
  void Reservations(const CallPtr& c);
  void GetReservation(const CallPtr& c);
  void CancelReservation(const CallPtr& c);
  void Override(const CallPtr& c, const std::string& what);
  void Pause(const CallPtr& c) { Override(c, "pause"); }
  void Resume(const CallPtr& c) { Override(c, "resume"); }
  void OverrideBreaker(const CallPtr& c) { Override(c, "breaker"); }
  void OverridePriority(const CallPtr& c) { Override(c, "priority"); }
  void OverrideLimits(const CallPtr& c) { Override(c, "limits"); }
  void Config(const CallPtr& c);
  void ConfigReload(const CallPtr& c);
  void Events(const CallPtr& c);
  void Monitor(const CallPtr& c);
  void MonitorSystem(const CallPtr& c);
  void Health(const CallPtr& c);
  void Ready(const CallPtr& c);
  void Metrics(const CallPtr& c);
  void Index(const CallPtr& c);
  void Dashboard(const CallPtr& c);
  // Answers `c` with the embedded dashboard file (src/server/dashboard.h).
  void SendDashboard(const CallPtr& c, const std::string& file);
  void Mcp(const CallPtr& c);

  // Answers `c` with allocation `info` now, or, when it is still queued and
  // `wait` is given, once its state changes or the wait ends.
  void AnswerOrWait(const CallPtr& c, AllocationInfo info, bool replayed,
                    std::optional<Duration> wait);
  Json AllocationJson(const AllocationInfo& info, bool replayed,
                      bool with_position);
  // What the activity reports (server/activity.h) read: `snapshot`, every
  // allocation the engine still knows (listed page by page), the server's
  // time, and an agent caller's products.
  StatusOr<ActivityInput> ActivityOf(const CallPtr& c, Snapshot snapshot);
  Actor ActorOf(const CallPtr& c, const std::string& reason) const;
  StatusOr<ReconfigureResult> ReloadConfig(const std::string& who);
  static StatusOr<HolderProcess> HolderFromJson(const Json& j);
  // Authenticates the request and checks its role may use the route
  // (answering 401 / 403 / 429 and returning false when not).
  bool Authorize(const CallPtr& c);
  // Whether an agent caller may work in `product` ("" = "default"); others
  // may work in any.
  bool ProductAllowed(const CallPtr& c, const std::string& product) const;
  // PERMISSION_DENIED naming `field` when an agent caller may not work in
  // `product`.
  Status CheckProduct(const CallPtr& c, const std::string& product,
                      const std::string& field) const {
    if (ProductAllowed(c, product)) return {};
    std::string list;
    for (const std::string& p : c->products)
      list += (list.empty() ? "" : ", ") + p;
    return PermissionDenied(field + ": token \"" + c->who +
                            "\" may only work in " + list + ", not \"" +
                            (product.empty() ? "default" : product) + "\"");
  }
  // For routes on one allocation: answers 404 (and returns false) when an
  // agent caller asks about another product's allocation.
  bool OwnAllocation(const CallPtr& c);

  // Token buckets per token name (rate_limit_per_second).
  struct Bucket {
    double tokens = 0;
    Steady::time_point at;
  };
  std::mutex rate_mu_;
  std::map<std::string, Bucket> buckets_;

  DurableEngine* const engine_;
  EventHub* const hub_;
  ServerMetrics* const metrics_;
  const ServiceOptions options_;
  const Steady::time_point started_;
  WorkerPool pool_;
  WorkerPool async_pool_;
  // Hands an allocate, release or renew that found the engine busy from
  // the I/O thread to async_pool_; once that has stopped (shutting down),
  // makes it here, so the request is still answered by the engine.
  const DurableEngine::Defer defer_ = [this](std::function<void()> job) {
    if (!async_pool_.Post(job)) job();
  };
  Timers timers_;

  // Pending waits and open streams, to end them at shutdown.
  struct Wait {
    CallPtr call;
    std::string id;  // the allocation waited for
    std::atomic<uint64_t> hub_handle{0};
    std::atomic<uint64_t> timer{0};
    std::atomic<bool> done{false};
  };
  std::mutex mu_;
  std::map<Wait*, std::shared_ptr<Wait>> waits_;
  struct Watch {  // an event or monitor stream
    std::shared_ptr<Stream> stream;
    uint64_t sub = 0;                // hub subscription (event streams)
    std::atomic<uint64_t> timer{0};  // next tick (monitor, keep-alive)
    Duration every{};
  };
  std::map<Stream*, std::shared_ptr<Watch>> watches_;
  bool shut_ = false;

  // (Re)registers `w` for the next event about its allocation.
  void Arm(const std::shared_ptr<Wait>& w);
  void FinishWait(const std::shared_ptr<Wait>& w, bool timed_out);
  // Sends a keep-alive comment (event streams) or a snapshot (monitor)
  // after `delay`, then again every w->every while the stream is open.
  void ScheduleWatch(const std::shared_ptr<Watch>& w, bool monitor,
                     EventFilter filter, Duration delay);
  void EndWatch(Stream* s);
};

// The route table: the single description of the API's routes (Routes()
// reads it too).
struct RouteSpec {
  const char* method;
  const char* pattern;
  const char* operation;
  Service::Impl::Where where;
  void (Service::Impl::*run)(const Service::Impl::CallPtr&);
};

const std::vector<RouteSpec>& RouteTable() {
  using I = Service::Impl;
  constexpr auto w = I::Where::kWorker;
  constexpr auto in = I::Where::kInline;
  constexpr auto raw = I::Where::kRaw;
  constexpr auto as = I::Where::kAsync;
  static const std::vector<RouteSpec> kTable = {
      {"GET", "/", "index", in, &I::Index},
      {"GET", "/dashboard/{file}", "dashboard", in, &I::Dashboard},
      {"GET", "/healthz", "healthz", in, &I::Health},
      {"GET", "/readyz", "readyz", w, &I::Ready},
      {"GET", "/metrics", "metrics", w, &I::Metrics},
      {"POST", "/v1/allocations", "allocate", as, &I::Allocate},
      {"GET", "/v1/allocations", "list_allocations", w, &I::ListAllocations},
      {"POST", "/v1/allocations/batch", "allocate_batch", w, &I::AllocateBatch},
      {"GET", "/v1/allocations/{id}", "get_allocation", w, &I::GetAllocation},
      {"POST", "/v1/allocations/{id}/renew", "renew", as, &I::Renew},
      {"POST", "/v1/allocations/{id}/heartbeat", "renew", as, &I::Renew},
      {"POST", "/v1/allocations/{id}/release", "release", as, &I::Release},
      {"POST", "/v1/allocations/{id}/reallocate", "reallocate", w,
       &I::Reallocate},
      {"POST", "/v1/allocations/{id}/cancel", "cancel", w, &I::Cancel},
      {"POST", "/v1/allocations/{id}/usage", "report_usage", w,
       &I::ReportUsage},
      {"POST", "/v1/allocations/{id}/extend", "extend", w, &I::Extend},
      {"GET", "/v1/queue", "queue", w, &I::Queue},
      {"GET", "/v1/status", "status", w, &I::Status_},
      {"GET", "/v1/status/{resource}", "resource_status", w,
       &I::ResourceStatus},
      {"GET", "/v1/usage/{workflow_id}", "workflow_usage", w,
       &I::WorkflowUsage},
      {"GET", "/v1/capacity", "capacity", w, &I::Capacity},
      {"GET", "/v1/costs", "costs", w, &I::Costs},
      {"GET", "/v1/analytics", "analytics", w, &I::Analytics},
      {"GET", "/v1/conflicts", "conflicts", w, &I::Conflicts},
      {"POST", "/v1/conflicts/check", "check_conflicts", w, &I::CheckConflicts},
      {"POST", "/v1/conflicts/{id}/resolve", "resolve_conflicts", w,
       &I::ResolveConflict},
      {"POST", "/v1/conflicts/policy", "prevent_conflicts", w,
       &I::PreventConflicts},
      {"POST", "/v1/locks/verify", "lock_verify", w, &I::VerifyLock},
      {"POST", "/v1/reservations", "reserve", w, &I::Reserve},
      {"GET", "/v1/reservations", "reservations", w, &I::Reservations},
      {"GET", "/v1/reservations/{id}", "get_reservation", w,
       &I::GetReservation},
      {"POST", "/v1/reservations/{id}/cancel", "cancel_reservation", w,
       &I::CancelReservation},
      {"POST", "/v1/overrides/pause", "override_pause", w, &I::Pause},
      {"POST", "/v1/overrides/resume", "override_resume", w, &I::Resume},
      {"POST", "/v1/overrides/breaker", "override_breaker", w,
       &I::OverrideBreaker},
      {"POST", "/v1/overrides/priority", "override_priority", w,
       &I::OverridePriority},
      {"POST", "/v1/overrides/limits", "override_limits", w,
       &I::OverrideLimits},
      {"GET", "/v1/config", "config", w, &I::Config},
      {"POST", "/v1/config/reload", "config_reload", w, &I::ConfigReload},
      {"GET", "/v1/events", "events", in, &I::Events},
      {"GET", "/v1/monitor", "monitor", in, &I::Monitor},
      {"GET", "/v1/monitor/system", "monitor_system", w, &I::MonitorSystem},
      {"POST", "/mcp", "mcp", raw, &I::Mcp},
      {"GET", "/mcp", "mcp", raw, &I::Mcp},
      {"DELETE", "/mcp", "mcp", raw, &I::Mcp},
  };
  return kTable;
}

// Who may use each operation of the route table (agent calls are also
// confined to the agent's products by the handlers).
enum class Access { kPublic, kRead, kAgent, kOperator, kAdmin };
Access AccessOf(std::string_view op) {
  // The dashboard's static files hold no state (the page asks for a token
  // itself, for the API).
  if (op == "healthz" || op == "readyz" || op == "dashboard") {
    return Access::kPublic;
  }
  if (op == "config_reload") return Access::kAdmin;
  if (op == "metrics" || op == "config" || op == "resolve_conflicts" ||
      op == "prevent_conflicts" || op == "reserve" ||
      op == "cancel_reservation" || op.rfind("override_", 0) == 0) {
    return Access::kOperator;
  }
  if (op == "allocate" || op == "allocate_batch" || op == "renew" ||
      op == "release" || op == "reallocate" || op == "cancel" ||
      op == "report_usage" || op == "extend" || op == "check_conflicts" ||
      op == "lock_verify") {
    return Access::kAgent;
  }
  return Access::kRead;
}

// Where each operation is answered while this server follows another
// (several servers on one PostgreSQL): reads from the follower's own copy
// (behind the leader by up to DurableOptions::tail_interval), health,
// readiness and metrics about this server; everything else by the leader
// (a 307 to it): every change, and the event stream, whose live events
// only the leader has. A new route goes to the leader unless listed here.
enum class OnFollower { kHere, kLeader };
OnFollower OnFollowerOf(std::string_view op) {
  static constexpr std::string_view kHere[] = {
      "index",         "healthz",          "readyz",
      "metrics",       "list_allocations", "get_allocation",
      "queue",         "status",           "capacity",
      "costs",         "analytics",        "conflicts",
      "reservations",  "get_reservation",  "config",
      "monitor",       "dashboard",        "resource_status",
      "workflow_usage"};
  for (std::string_view h : kHere) {
    if (op == h) return OnFollower::kHere;
  }
  return OnFollower::kLeader;
}

std::vector<std::string> SplitPath(const std::string& p) {
  std::vector<std::string> parts;
  if (p == "/") return {""};
  size_t start = 1;
  while (start <= p.size()) {
    const size_t slash = p.find('/', start);
    const size_t end = slash == std::string::npos ? p.size() : slash;
    parts.push_back(p.substr(start, end - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

void Service::Impl::BuildRoutes() {
  for (const RouteSpec& spec : RouteTable()) {
    Route r;
    r.method = spec.method;
    r.pattern = spec.pattern;
    r.parts = SplitPath(spec.pattern);
    r.operation = spec.operation;
    r.where = spec.where;
    r.leader_only = OnFollowerOf(spec.operation) == OnFollower::kLeader;
    r.run = [this, fn = spec.run](const CallPtr& c) { (this->*fn)(c); };
    routes_.push_back(std::move(r));
  }
}

void Service::Impl::Send(
    const CallPtr& c, int status, std::string body,
    std::vector<std::pair<std::string, std::string>> headers) {
  if (c->answered.exchange(true)) return;
  HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  r.body = std::move(body);
  r.body += '\n';
  // Counted before the answer leaves, so a client that scrapes /metrics
  // right after its answer sees its request.
  metrics_->ObserveRequest(
      c->route, c->req.method, status,
      std::chrono::duration<double>(Steady::now() - c->start).count());
  c->responder.Respond(std::move(r));
}

void Service::Impl::Ok(const CallPtr& c, Json result,
                       std::vector<std::string> recommendations) {
  const Duration took =
      std::chrono::duration_cast<Duration>(Steady::now() - c->start);
  Send(c, 200,
       api::SuccessEnvelope(c->operation, WallNow(), std::move(result), took,
                            std::move(recommendations))
           .dump());
}

void Service::Impl::Fail(const CallPtr& c, const Status& s) {
  metrics_->OnRefusal(c->operation, s.code());
  Send(c, Service::HttpStatusFor(s.code()),
       api::ErrorEnvelope(c->operation, WallNow(), s).dump());
}

void Service::Impl::Handle(HttpRequest request, Responder responder) {
  auto c = std::make_shared<Call>();
  c->start = Steady::now();
  c->req = std::move(request);
  c->responder = std::move(responder);
  // Segments split before decoding: an id holding an encoded '/' stays one.
  const std::vector<std::string>& parts = c->req.segments;
  const Route* found = nullptr;
  std::vector<std::string> allowed;
  for (const Route& r : routes_) {
    if (r.parts.size() != parts.size()) continue;
    bool match = true;
    std::map<std::string, std::string> params;
    for (size_t i = 0; i < parts.size() && match; ++i) {
      const std::string& want = r.parts[i];
      if (want.size() > 2 && want.front() == '{' && want.back() == '}') {
        if (parts[i].empty()) match = false;
        params[want.substr(1, want.size() - 2)] = parts[i];
      } else {
        match = want == parts[i];
      }
    }
    if (!match) continue;
    if (r.method != c->req.method) {
      allowed.push_back(r.method);
      continue;
    }
    found = &r;
    c->params = std::move(params);
    break;
  }
  if (!found) {
    c->route = "unmatched";
    c->operation = "unknown";
    if (!allowed.empty()) {
      std::string list;
      for (const std::string& m : allowed)
        list += (list.empty() ? "" : ", ") + m;
      HttpResponse r;
      r.status = 405;
      r.headers.emplace_back("Allow", list);
      r.body = api::ErrorEnvelope(
                   "unknown", WallNow(),
                   InvalidRequest(c->req.method + " is not allowed on " +
                                  c->req.path + " (allowed: " + list + ")"))
                   .dump() +
               "\n";
      c->answered = true;
      metrics_->ObserveRequest(c->route, c->req.method, 405, 0);
      c->responder.Respond(std::move(r));
      return;
    }
    Fail(c, NotFound("no route " + c->req.method + " " + c->req.path +
                     " (GET / lists the routes; the API is under /v1)"));
    return;
  }
  c->route = found->pattern;
  c->operation = found->operation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) {
      Fail(c, Unavailable("the server is shutting down; retry against its "
                          "successor"));
      return;
    }
  }
  if (!Authorize(c)) return;
  if (LeaderOnly(c, *found) && !engine_->IsLeader()) {
    // Who leads is read from the store: not on the I/O thread.
    const Route* route = found;
    pool_.Post([this, c, route] { ToLeader(c, route); });
    return;
  }
  Dispatch(c, found);
}

bool Service::Impl::LeaderOnly(const CallPtr& c, const Route& route) {
  // A waiting get is answered by the event that changes the allocation,
  // and only the leader's events are live.
  return route.leader_only ||
         (route.operation == "get_allocation" && c->req.Query("wait"));
}

void Service::Impl::ToLeader(const CallPtr& c, const Route* route) {
  StatusOr<LeaderInfo> leader = engine_->Leader();
  if (engine_->IsLeader()) {  // took over meanwhile
    Dispatch(c, route);
    return;
  }
  const std::string url = leader.ok() ? ServerUrlOf(leader->node_id) : "";
  if (leader.ok() && !url.empty() && url != options_.advertise_url &&
      leader->lease_left > Duration(0)) {
    // (Not a refusal: the request is answered, by the leader.)
    const std::string location = url + c->req.target;
    Send(c, 307,
         api::ErrorEnvelope(
             c->operation, WallNow(),
             Unavailable("this server follows the leader at " + url +
                         "; send changes there (clients that follow "
                         "redirects, such as the qm CLI, do so by "
                         "themselves)")
                 .AddContext("leader", url))
             .dump(),
         {{"Location", location}});
    return;
  }
  if (leader.ok() && leader->lease_left == Duration(0)) {
    metrics_->OnRefusal(c->operation, Code::kUnavailable);
    Send(c, 503,
         api::ErrorEnvelope(
             c->operation, WallNow(),
             Unavailable("no server leads right now: the leader's lease ran "
                         "out (it stopped or lost the database) and a "
                         "follower takes over within moments; retry in a "
                         "second"))
             .dump(),
         {{"Retry-After", "1"}});
    return;
  }
  // Who leads cannot be read, has no address, or is this server (taking
  // over just now, or stopped by a failed commit): a change is left to the
  // engine, which answers why it takes none; the event stream, which would
  // stay silent here, is refused.
  if (route->where == Where::kWorker || route->where == Where::kAsync) {
    Dispatch(c, route);
    return;
  }
  Status why =
      !leader.ok() ? Unavailable(
                         "this server follows another and cannot read who "
                         "leads: " +
                         leader.status().message())
      : url.empty()
          ? Unavailable("this server follows node " + leader->node_id +
                        ", which advertises no URL: connect to that server")
          : Unavailable("this server takes no changes now (see /readyz)");
  metrics_->OnRefusal(c->operation, Code::kUnavailable);
  Send(c, 503, api::ErrorEnvelope(c->operation, WallNow(), why).dump(),
       {{"Retry-After", "1"}});
}

void Service::Impl::Dispatch(const CallPtr& c, const Route* found) {
  if (found->where == Where::kRaw) {
    found->run(c);
    return;
  }
  if (!c->req.body.empty()) {
    if (JsonDepth(c->req.body, options_.max_json_depth) >
        options_.max_json_depth) {
      Fail(c,
           InvalidRequest("body: JSON nested deeper than " +
                          std::to_string(options_.max_json_depth) + " levels"));
      return;
    }
    c->body = Json::parse(c->req.body, nullptr, /*allow_exceptions=*/false);
    if (c->body.is_discarded()) {
      Fail(c, InvalidRequest("body: not valid JSON"));
      return;
    }
    if (!c->body.is_object()) {
      Fail(c, InvalidRequest(std::string("body: must be a JSON object, got ") +
                             api::JsonTypeName(c->body)));
      return;
    }
  } else {
    c->body = Json::object();
  }
  if (found->where == Where::kInline) {
    found->run(c);
    return;
  }
  const Route* route = found;
  const bool one_allocation =
      route->pattern.rfind("/v1/allocations/{id}", 0) == 0;
  const bool async = route->where == Where::kAsync &&
                     !(one_allocation && c->role == Role::kAgent);
  if (async) {
    route->run(c);
    return;
  }
  pool_.Post([this, route, c, one_allocation] {
    if (one_allocation && !OwnAllocation(c)) return;
    route->run(c);
  });
}

Actor Service::Impl::ActorOf(const CallPtr& c,
                             const std::string& reason) const {
  Actor a;
  a.who = c->who;
  a.why = reason;
  return a;
}

bool Service::Impl::Authorize(const CallPtr& c) {
  // GET / from a browser is the dashboard page (static, like its files).
  const Access access = c->operation == "index" && WantsDashboard(c->req)
                            ? Access::kPublic
                            : AccessOf(c->operation);
  const std::vector<TokenEntry>& tokens = options_.auth.tokens;
  if (tokens.empty()) {
    // Only local clients are served (the server also refuses to listen
    // elsewhere), each as admin.
    if (!c->req.remote_is_loopback && access != Access::kPublic) {
      Fail(c, PermissionDenied("this qm server serves loopback clients only "
                               "(no auth tokens are configured)"));
      return false;
    }
    c->who = "local:" + c->req.remote_address;
    c->role = Role::kAdmin;
    return true;
  }
  if (access == Access::kPublic) return true;
  const std::string_view header = c->req.Header("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.substr(0, kBearer.size()) != kBearer) {
    Fail(c, Unauthenticated("this server needs `Authorization: Bearer "
                            "<token>` (a token listed in server.auth.tokens)"));
    return false;
  }
  const std::string digest =
      Sha256Hex(std::string(header.substr(kBearer.size())));
  const TokenEntry* found = nullptr;
  for (const TokenEntry& t : tokens) {
    // Compared in full (not stopping at the first difference).
    unsigned char diff = t.sha256.size() != digest.size();
    for (size_t i = 0; i < std::min(t.sha256.size(), digest.size()); ++i) {
      diff |= static_cast<unsigned char>(t.sha256[i] ^ digest[i]);
    }
    if (diff == 0) found = &t;
  }
  if (!found) {
    Fail(c, Unauthenticated("unknown token (not in server.auth.tokens)"));
    return false;
  }
  c->who = found->name;
  c->role = found->role;
  c->products = found->products;
  if (options_.auth.rate_limit_per_second > 0) {
    const double rate = options_.auth.rate_limit_per_second;
    const double burst = std::max(rate, 1.0);
    std::lock_guard<std::mutex> lock(rate_mu_);
    Bucket& b = buckets_[found->name];
    const auto now = Steady::now();
    if (b.at == Steady::time_point()) b.tokens = burst;
    b.tokens = std::min(
        burst,
        b.tokens + rate * std::chrono::duration<double>(now - b.at).count());
    b.at = now;
    if (b.tokens < 1) {
      Json shown = rate;
      Fail(c, RateLimited("token \"" + found->name + "\" is over its " +
                          shown.dump() +
                          " requests per second (server.rate_limit_per_"
                          "second); retry in " +
                          std::to_string(static_cast<int>(
                              std::ceil((1 - b.tokens) / rate * 1000))) +
                          " ms"));
      return false;
    }
    b.tokens -= 1;
  }
  const bool allowed =
      access == Access::kRead || access == Access::kAgent ||
      (access == Access::kOperator && c->role != Role::kAgent) ||
      (access == Access::kAdmin && c->role == Role::kAdmin);
  if (!allowed) {
    Fail(c, PermissionDenied(std::string(c->operation) + " needs the " +
                             (access == Access::kAdmin ? "admin" : "operator") +
                             " role; token \"" + c->who + "\" is " +
                             RoleName(c->role)));
    return false;
  }
  return true;
}

bool Service::Impl::ProductAllowed(const CallPtr& c,
                                   const std::string& product) const {
  if (c->role != Role::kAgent) return true;
  const std::string p = product.empty() ? "default" : product;
  return std::find(c->products.begin(), c->products.end(), p) !=
         c->products.end();
}

bool Service::Impl::OwnAllocation(const CallPtr& c) {
  if (c->role != Role::kAgent) return true;
  const std::string& id = c->params["id"];
  auto info = engine_->Get(id);
  if (info.ok() && !ProductAllowed(c, info->product)) {
    // As if it did not exist: an agent never learns of other tenants'
    // allocations.
    Fail(c, NotFound("no allocation " + id));
    return false;
  }
  return true;
}

// ---------------------------------------------------------------- allocations

Json Service::Impl::AllocationJson(const AllocationInfo& info, bool replayed,
                                   bool with_position) {
  Json j = api::ToJson(info);
  if (replayed) j["replayed"] = true;
  if (with_position && info.status == AllocStatus::kQueued) {
    auto q = engine_->Queue();
    if (q.ok()) {
      for (size_t i = 0; i < q->size(); ++i) {
        if ((*q)[i].id == info.id) {
          j["queue_position"] = i + 1;
          j["queue_length"] = q->size();
          break;
        }
      }
    }
  }
  return j;
}

void Service::Impl::AnswerOrWait(const CallPtr& c, AllocationInfo info,
                                 bool replayed, std::optional<Duration> wait) {
  if (info.status != AllocStatus::kQueued || !wait || wait->count() == 0) {
    Ok(c, AllocationJson(info, replayed, wait.has_value()));
    return;
  }
  auto w = std::make_shared<Wait>();
  w->call = c;
  w->id = info.id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) {
      Ok(c, AllocationJson(info, replayed, true));
      return;
    }
    waits_[w.get()] = w;
  }
  Arm(w);
  std::weak_ptr<Wait> weak = w;
  w->timer = timers_.At(Steady::now() + *wait, [this, weak] {
    if (auto w = weak.lock()) pool_.Post([this, w] { FinishWait(w, true); });
  });
  // The grant may have come between the answer and the registration.
  auto now = engine_->Get(info.id);
  if (!now.ok() || now->status != AllocStatus::kQueued) FinishWait(w, false);
}

void Service::Impl::Arm(const std::shared_ptr<Wait>& w) {
  std::weak_ptr<Wait> weak = w;
  w->hub_handle = hub_->WaitFor(w->id, [this, weak](const Event& e) {
    auto w = weak.lock();
    if (!w || w->done) return;
    if (e.status == AllocStatus::kQueued) {
      Arm(w);  // still queued (re-queued, a new reason): keep waiting
      return;
    }
    pool_.Post([this, w] { FinishWait(w, false); });
  });
}

void Service::Impl::FinishWait(const std::shared_ptr<Wait>& w, bool timed_out) {
  if (w->done.exchange(true)) return;
  hub_->CancelWait(w->hub_handle);
  if (!timed_out) timers_.Cancel(w->timer);
  {
    std::lock_guard<std::mutex> lock(mu_);
    waits_.erase(w.get());
  }
  const CallPtr& c = w->call;
  auto info = engine_->Get(w->id);
  if (!Check(c, info.status())) return;
  Json j = AllocationJson(*info, false, true);
  std::vector<std::string> rec;
  if (info->status == AllocStatus::kQueued) {
    rec.push_back("Still queued: wait again with GET /v1/allocations/" +
                  info->id + "?wait=<seconds>");
  }
  Ok(c, std::move(j), std::move(rec));
}

void Service::Impl::Allocate(const CallPtr& c) {
  Json body = c->body;
  std::optional<Duration> wait;
  if (!Check(c, GetSeconds(body, "wait", options_.max_wait, &wait))) return;
  body.erase("wait");
  std::optional<HolderProcess> holder;
  if (body.contains("holder")) {
    auto h = HolderFromJson(body["holder"]);
    if (!Check(c, h.status())) return;
    holder = *h;
    body.erase("holder");
  }
  auto req = api::RequestFromJson(body);
  if (!Check(c, req.status())) return;
  if (!Check(c, CheckProduct(c, req->product, "product"))) return;
  // Answered from the commit (no thread waits for it); a request that
  // queues and asks to wait goes on on a worker.
  // The completion runs on the journal's writer thread, which must not
  // wait on the engine (a read waits for commits only that thread makes)
  // nor on the system: a grant is answered there; watching the holder
  // process, a queued request's position and waiting go to a worker.
  engine_->AllocateAsync(
      *req,
      [this, c, holder, wait](StatusOr<AllocateResult> r) {
        if (!Check(c, r.status())) return;
        const bool watch = holder && options_.holders && !r->replayed &&
                           (r->allocation.status == AllocStatus::kActive ||
                            r->allocation.status == AllocStatus::kQueued);
        const bool queued = r->allocation.status == AllocStatus::kQueued;
        if (!watch && !(queued && wait)) {
          Ok(c, AllocationJson(r->allocation, r->replayed, false));
          return;
        }
        auto result = std::make_shared<AllocateResult>(std::move(*r));
        pool_.Post([this, c, result, wait, watch, holder] {
          if (watch)
            (void)options_.holders->Watch(result->allocation.id, *holder);
          if (result->allocation.status != AllocStatus::kQueued || !wait ||
              wait->count() == 0) {
            Ok(c, AllocationJson(result->allocation, result->replayed,
                                 wait.has_value()));
            return;
          }
          AnswerOrWait(c, std::move(result->allocation), result->replayed,
                       wait);
        });
      },
      defer_);
}

// {"pid": N, "start_time": N, "boot_id": "..."}: see holders.h.
StatusOr<HolderProcess> Service::Impl::HolderFromJson(const Json& j) {
  if (!j.is_object()) {
    return InvalidRequest(
        "holder: must be an object {pid, start_time, boot_id}");
  }
  for (const auto& [key, value] : j.items()) {
    if (key != "pid" && key != "start_time" && key != "boot_id") {
      return InvalidRequest("holder." + key +
                            ": unknown field (pid, start_time, boot_id)");
    }
  }
  HolderProcess h;
  if (!j.contains("pid") || !j["pid"].is_number_integer() ||
      j["pid"].get<int64_t>() <= 0 || j["pid"].get<int64_t>() > INT32_MAX) {
    return InvalidRequest("holder.pid: required, a process id > 0");
  }
  h.pid = j["pid"].get<int64_t>();
  if (!j.contains("start_time") || !j["start_time"].is_number_unsigned()) {
    return InvalidRequest(
        "holder.start_time: required, field 22 of /proc/<pid>/stat (a "
        "whole number >= 0)");
  }
  h.start_time = j["start_time"].get<uint64_t>();
  if (!j.contains("boot_id") || !j["boot_id"].is_string() ||
      j["boot_id"].get<std::string>().empty() ||
      j["boot_id"].get<std::string>().size() > 64) {
    return InvalidRequest(
        "holder.boot_id: required, /proc/sys/kernel/random/boot_id of the "
        "holder's host");
  }
  h.boot_id = j["boot_id"].get<std::string>();
  return h;
}

void Service::Impl::AllocateBatch(const CallPtr& c) {
  if (Status s =
          CheckKeys(c->body, {"requests", "all_or_nothing"}, "allocate_batch");
      !s.ok()) {
    Fail(c, s);
    return;
  }
  if (!c->body.contains("requests") || !c->body["requests"].is_array()) {
    Fail(c, InvalidRequest("requests: required, an array of allocation "
                           "requests"));
    return;
  }
  bool all = false;
  if (c->body.contains("all_or_nothing")) {
    if (!c->body["all_or_nothing"].is_boolean()) {
      Fail(c, InvalidRequest("all_or_nothing: must be true or false"));
      return;
    }
    all = c->body["all_or_nothing"].get<bool>();
  }
  std::vector<AllocationRequest> reqs;
  const Json& list = c->body["requests"];
  for (size_t i = 0; i < list.size(); ++i) {
    auto r =
        api::RequestFromJson(list[i], "requests[" + std::to_string(i) + "].");
    if (!Check(c, r.status())) return;
    if (!Check(c,
               CheckProduct(c, r->product,
                            "requests[" + std::to_string(i) + "].product"))) {
      return;
    }
    reqs.push_back(std::move(*r));
  }
  auto r = engine_->AllocateBatch(reqs, all);
  if (!Check(c, r.status())) return;
  Json out = Json::array();
  for (const AllocateResult& a : *r) {
    out.push_back(AllocationJson(a.allocation, a.replayed, false));
  }
  Ok(c, Json{{"allocations", std::move(out)}});
}

void Service::Impl::ListAllocations(const CallPtr& c) {
  AllocationFilter f;
  for (const auto& [key, value] : c->req.query) {
    if (key == "status") {
      for (const std::string& name : SplitComma(value)) {
        AllocStatus s;
        if (!AllocStatusFromName(name, &s)) {
          Fail(c, InvalidRequest("status: unknown allocation status \"" + name +
                                 "\" (active, queued, released, expired, "
                                 "preempted, failed, cancelled)"));
          return;
        }
        f.statuses.push_back(s);
      }
    } else if (key == "product") {
      f.product = value;
    } else if (key == "agent_type") {
      f.agent_type = value;
    } else if (key == "workflow_id") {
      f.workflow_id = value;
    } else if (key == "requester") {
      f.requester = value;
    } else if (key == "after") {
      f.after = value;
    } else if (key == "limit") {
      size_t n = 0;
      const auto [ptr, ec] =
          std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || ptr != value.data() + value.size() || n < 1 ||
          n > 10000) {
        Fail(c, InvalidRequest("limit: a whole number from 1 to 10000, got \"" +
                               value + "\""));
        return;
      }
      f.limit = n;
    } else {
      Fail(c, InvalidRequest(key +
                             ": unknown filter (status, product, agent_type, "
                             "workflow_id, requester, after, limit)"));
      return;
    }
  }
  if (c->role == Role::kAgent) {
    // An agent lists its own products' allocations only.
    if (!f.product.empty()) {
      if (!Check(c, CheckProduct(c, f.product, "product"))) return;
    } else if (c->products.size() == 1) {
      f.product = c->products[0];
    }
  }
  auto list = engine_->List(f);
  if (!Check(c, list.status())) return;
  if (c->role == Role::kAgent && f.product.empty()) {
    std::erase_if(list->allocations, [&](const AllocationInfo& a) {
      return !ProductAllowed(c, a.product);
    });
  }
  Json out = Json::array();
  for (const AllocationInfo& a : list->allocations) {
    out.push_back(api::ToJson(a));
  }
  Json r;
  r["allocations"] = std::move(out);
  r["count"] = list->allocations.size();
  r["more"] = list->more;
  if (list->more) r["next_after"] = list->allocations.back().id;
  Ok(c, std::move(r));
}

void Service::Impl::GetAllocation(const CallPtr& c) {
  std::optional<Duration> wait;
  if (!Check(c, QuerySeconds(c->req, "wait", options_.max_wait, &wait))) return;
  auto info = engine_->Get(c->params["id"]);
  if (!Check(c, info.status())) return;
  AnswerOrWait(c, std::move(*info), false, wait);
}

void Service::Impl::Renew(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"ttl"}, c->operation))) return;
  std::optional<Duration> ttl;
  if (c->body.contains("ttl") && !c->body["ttl"].is_null()) {
    auto d = api::DurationFromJson(c->body["ttl"], "ttl");
    if (!Check(c, d.status())) return;
    ttl = *d;
  }
  engine_->RenewAsync(
      c->params["id"], ttl,
      [this, c](StatusOr<AllocationInfo> r) { Reply(c, r); }, defer_);
}

void Service::Impl::Release(const CallPtr& c) {
  if (Status s =
          CheckKeys(c->body, {"usage", "force", "cleanup"}, c->operation);
      !s.ok()) {
    Fail(c, s);
    return;
  }
  for (const char* flag : {"force", "cleanup"}) {
    if (c->body.contains(flag) && !c->body[flag].is_boolean()) {
      Fail(c, InvalidRequest(std::string(flag) + ": must be true or false"));
      return;
    }
  }
  UsageReport usage;
  if (c->body.contains("usage")) {
    auto u = api::UsageFromJson(c->body["usage"]);
    if (!Check(c, u.status())) return;
    usage = std::move(*u);
  }
  engine_->ReleaseAsync(
      c->params["id"], usage,
      [this, c](StatusOr<AllocationInfo> r) { Reply(c, r); }, defer_);
}

void Service::Impl::Reallocate(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"resources"}, c->operation))) return;
  if (!c->body.contains("resources")) {
    Fail(c, InvalidRequest("resources: required, {name: amount}"));
    return;
  }
  auto amounts = api::AmountsFromJson(c->body["resources"], "resources");
  if (!Check(c, amounts.status())) return;
  Reply(c, engine_->Reallocate(c->params["id"], *amounts));
}

void Service::Impl::Cancel(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"reason"}, c->operation))) return;
  Reply(c, engine_->Cancel(c->params["id"]));
}

void Service::Impl::ReportUsage(const CallPtr& c) {
  auto u = api::UsageFromJson(c->body);
  if (!Check(c, u.status())) return;
  Reply(c, engine_->ReportUsage(c->params["id"], *u));
}

void Service::Impl::Extend(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"max_tokens"}, c->operation))) return;
  if (!c->body.contains("max_tokens") ||
      !c->body["max_tokens"].is_number_integer()) {
    Fail(c, InvalidRequest("max_tokens: required, a whole number"));
    return;
  }
  Reply(c, engine_->ExtendTokens(c->params["id"],
                                 c->body["max_tokens"].get<int64_t>()));
}

// ---------------------------------------------------------------- reports

void Service::Impl::Queue(const CallPtr& c) {
  auto q = engine_->Queue();
  if (!Check(c, q.status())) return;
  Json list = Json::array();
  for (size_t i = 0; i < q->size(); ++i) {
    // Positions count every queued request; an agent sees its own.
    if (!ProductAllowed(c, (*q)[i].product)) continue;
    Json e = api::ToJson((*q)[i]);
    e["position"] = i + 1;
    list.push_back(std::move(e));
  }
  Ok(c, Json{{"queued", q->size()}, {"queue", std::move(list)}});
}

void Service::Impl::Status_(const CallPtr& c) {
  Reply(c, engine_->GetSnapshot());
}

StatusOr<ActivityInput> Service::Impl::ActivityOf(const CallPtr& c,
                                                  Snapshot snapshot) {
  ActivityInput in;
  in.snapshot = std::move(snapshot);
  AllocationFilter f;
  f.limit = 10000;
  while (true) {
    auto page = engine_->List(f);
    if (!page.ok()) return page.status();
    if (page->allocations.empty()) break;
    f.after = page->allocations.back().id;
    for (AllocationInfo& a : page->allocations) {
      in.allocations.push_back(std::move(a));
    }
    if (!page->more) break;
  }
  const Clock* clock =
      options_.clock != nullptr ? options_.clock : SystemClock::Default();
  in.now = std::max(clock->Now(), in.snapshot.time);
  in.history_limit = engine_->config().scheduling.history_limit;
  if (c->role == Role::kAgent) in.visible_products = c->products;
  return in;
}

void Service::Impl::ResourceStatus(const CallPtr& c) {
  auto snap = engine_->GetSnapshot();
  if (!Check(c, snap.status())) return;
  auto resource = ResolveResource(*snap, c->params["resource"]);
  if (!Check(c, resource.status())) return;
  auto q = ParseStatusQuery(*resource, c->req.query);
  if (!Check(c, q.status())) return;
  auto in = ActivityOf(c, std::move(*snap));
  if (!Check(c, in.status())) return;
  auto r = ResourceStatusReport(*in, *resource, *q);
  if (!Check(c, r.status())) return;
  Ok(c, std::move(r->result), std::move(r->recommendations));
}

void Service::Impl::WorkflowUsage(const CallPtr& c) {
  auto q = ParseUsageQuery(c->req.query);
  if (!Check(c, q.status())) return;
  auto snap = engine_->GetSnapshot();
  if (!Check(c, snap.status())) return;
  auto in = ActivityOf(c, std::move(*snap));
  if (!Check(c, in.status())) return;
  auto r = WorkflowUsageReport(*in, c->params["workflow_id"], *q);
  if (!Check(c, r.status())) return;
  Ok(c, std::move(r->result), std::move(r->recommendations));
}

void Service::Impl::Capacity(const CallPtr& c) {
  auto s = engine_->GetSnapshot();
  if (!Check(c, s.status())) return;
  Json j = api::ToJson(*s);
  Json out;
  out["time"] = j["time"];
  out["resources"] = j["resources"];
  out["agent_types"] = j["agent_types"];
  out["products"] = j["products"];
  Ok(c, std::move(out));
}

void Service::Impl::Costs(const CallPtr& c) { Reply(c, engine_->Costs()); }

void Service::Impl::Analytics(const CallPtr& c) {
  Reply(c, engine_->Metrics());
}

// ---------------------------------------------------------------- conflicts

void Service::Impl::Conflicts(const CallPtr& c) {
  auto r = engine_->Conflicts();
  if (!Check(c, r.status())) return;
  Json list = Json::array();
  for (const ConflictInfo& i : *r) list.push_back(api::ToJson(i));
  Ok(c, Json{{"conflicts", std::move(list)}});
}

void Service::Impl::CheckConflicts(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body,
                          {"proposed_allocation", "request", "check_future",
                           "time_horizon"},
                          c->operation)))
    return;
  const bool has_p = c->body.contains("proposed_allocation");
  const bool has_r = c->body.contains("request");
  if (has_p == has_r) {
    Fail(c, InvalidRequest("proposed_allocation: required (the allocation "
                           "request to check; `request` is accepted too, "
                           "not both)"));
    return;
  }
  Json request = c->body[has_p ? "proposed_allocation" : "request"];
  // Seed 000 names the paths `files`.
  if (request.is_object() && request.contains("files")) {
    request["exclusive_files"] = request["files"];
    request.erase("files");
  }
  Duration horizon = std::chrono::hours(4);
  if (c->body.contains("time_horizon")) {
    auto d = api::DurationFromJson(c->body["time_horizon"], "time_horizon");
    if (!Check(c, d.status())) return;
    horizon = *d;
  }
  if (c->body.contains("check_future")) {
    if (!c->body["check_future"].is_boolean()) {
      Fail(c, InvalidRequest("check_future: must be true or false"));
      return;
    }
    if (!c->body["check_future"].get<bool>()) horizon = Duration(0);
  }
  auto req = api::RequestFromJson(request,
                                  has_p ? "proposed_allocation." : "request.");
  if (!Check(c, req.status())) return;
  if (!Check(c, CheckProduct(c, req->product,
                             has_p ? "proposed_allocation.product"
                                   : "request.product"))) {
    return;
  }
  Reply(c, engine_->CheckConflicts(*req, horizon));
}

void Service::Impl::ResolveConflict(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"strategy", "reason", "notify_affected"},
                          c->operation)))
    return;
  auto name = GetText(c->body, "strategy", true);
  if (!Check(c, name.status())) return;
  ResolveStrategy strategy;
  if (!ResolveStrategyFromName(*name, &strategy)) {
    Fail(c, InvalidRequest("strategy: must be priority_based, "
                           "queue_and_serialize or force_release, got \"" +
                           *name + "\""));
    return;
  }
  auto reason = GetText(c->body, "reason", false);
  if (!Check(c, reason.status())) return;
  auto r =
      engine_->ResolveConflict(c->params["id"], strategy, ActorOf(c, *reason));
  if (!Check(c, r.status())) return;
  Ok(c, api::ToJson(*r));
}

void Service::Impl::PreventConflicts(const CallPtr& c) {
  Json body = c->body;
  std::string reason;
  if (body.contains("reason")) {
    auto r = GetText(body, "reason", false);
    if (!Check(c, r.status())) return;
    reason = *r;
    body.erase("reason");
  }
  auto change = api::LockPolicyFromJson(body);
  if (!Check(c, change.status())) return;
  Status s =
      engine_->SetLockPolicy(change->scope, change->policy, ActorOf(c, reason));
  if (!s.ok()) {
    Fail(c, s);
    return;
  }
  Json r = {{"policy_type", "file_locking"}, {"scope", change->scope}};
  if (change->policy) {
    r["enforcement"] = change->policy->enforcement == LockEnforcement::kStrict
                           ? "strict"
                           : "advisory";
  } else {
    r["enforcement"] = "inherit";
  }
  Ok(c, std::move(r));
}

void Service::Impl::VerifyLock(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"path", "token"}, c->operation))) return;
  auto path = GetText(c->body, "path", true);
  if (!Check(c, path.status())) return;
  if (!c->body.contains("token") || !c->body["token"].is_number_unsigned() ||
      c->body["token"].get<uint64_t>() == 0) {
    Fail(c, InvalidRequest("token: required, the positive fencing token of "
                           "the allocation's grant"));
    return;
  }
  Reply(c, engine_->VerifyLock(*path, c->body["token"].get<uint64_t>()));
}

// ---------------------------------------------------------------- reservations

void Service::Impl::Reserve(const CallPtr& c) {
  auto req = api::ReservationFromJson(c->body, WallNow());
  if (!Check(c, req.status())) return;
  Reply(c, engine_->Reserve(*req));
}

void Service::Impl::Reservations(const CallPtr& c) {
  auto r = engine_->Reservations();
  if (!Check(c, r.status())) return;
  Json list = Json::array();
  for (const ReservationInfo& i : *r) list.push_back(api::ToJson(i));
  Ok(c, Json{{"reservations", std::move(list)}});
}

void Service::Impl::GetReservation(const CallPtr& c) {
  Reply(c, engine_->GetReservation(c->params["id"]));
}

void Service::Impl::CancelReservation(const CallPtr& c) {
  if (!Check(c, CheckKeys(c->body, {"reason"}, c->operation))) return;
  auto reason = GetText(c->body, "reason", false);
  if (!Check(c, reason.status())) return;
  Reply(c, engine_->CancelReservation(c->params["id"], ActorOf(c, *reason)));
}

// ---------------------------------------------------------------- overrides

void Service::Impl::Override(const CallPtr& c, const std::string& what) {
  std::vector<std::string> keys = {"reason"};
  if (what == "priority") keys = {"product", "level", "reason"};
  if (what == "limits") keys = {"max_tokens", "max_cost_usd", "reason"};
  if (!Check(c, CheckKeys(c->body, keys, c->operation))) return;
  auto reason = GetText(c->body, "reason", false);
  if (!Check(c, reason.status())) return;
  const Actor actor = ActorOf(c, *reason);
  Status s;
  if (what == "pause") {
    s = engine_->Pause(actor);
  } else if (what == "resume") {
    s = engine_->Resume(actor);
  } else if (what == "breaker") {
    s = engine_->OverrideBreaker(actor);
  } else if (what == "priority") {
    auto product = GetText(c->body, "product", true);
    if (!Check(c, product.status())) return;
    std::optional<Level> level;
    if (c->body.contains("level") && !c->body["level"].is_null()) {
      Level l;
      if (!c->body["level"].is_string() ||
          !LevelFromName(c->body["level"].get<std::string>(), &l)) {
        Fail(c, InvalidRequest("level: must be critical, high, normal or low "
                               "(null removes the override)"));
        return;
      }
      level = l;
    }
    s = engine_->SetPriorityOverride(*product, level, actor);
  } else if (what == "limits") {
    std::optional<int64_t> tokens;
    std::optional<double> cost;
    if (c->body.contains("max_tokens") && !c->body["max_tokens"].is_null()) {
      if (!c->body["max_tokens"].is_number_integer()) {
        Fail(c, InvalidRequest("max_tokens: must be a whole number"));
        return;
      }
      tokens = c->body["max_tokens"].get<int64_t>();
    }
    if (c->body.contains("max_cost_usd") &&
        !c->body["max_cost_usd"].is_null()) {
      if (!c->body["max_cost_usd"].is_number()) {
        Fail(c, InvalidRequest("max_cost_usd: must be a number"));
        return;
      }
      cost = c->body["max_cost_usd"].get<double>();
    }
    s = engine_->RaiseLimits(tokens, cost, actor);
  }
  if (!s.ok()) {
    Fail(c, s);
    return;
  }
  auto costs = engine_->Costs();
  if (!Check(c, costs.status())) return;
  Json r = api::ToJson(*costs);
  Ok(c, Json{{"override", what},
             {"paused", r["paused"]},
             {"circuit_breaker", r["circuit_breaker"]},
             {"priority_overrides", r["priority_overrides"]},
             {"budgets", r["budgets"]}});
}

// ---------------------------------------------------------------- config

void Service::Impl::Config(const CallPtr& c) {
  const std::string yaml = ConfigToYaml(engine_->config());
  Json r;
  r["source"] =
      options_.config_source.empty() ? "defaults" : options_.config_source;
  try {
    r["config"] = sim::ToJsonValue(YAML::Load(yaml));
  } catch (const YAML::Exception& e) {
    Fail(c, Internal(std::string("config dump: ") + e.what()));
    return;
  }
  Ok(c, std::move(r));
}

void Service::Impl::ConfigReload(const CallPtr& c) {
  auto r = ReloadConfig(c->who);
  if (!r.ok()) {
    Fail(c, r.status());
    return;
  }
  Json out;
  out["source"] = options_.config_source;
  out["changed"] = !r->changes.empty();
  out["changes"] = r->changes;
  out["server_section"] =
      "read at start only: restart qm serve to apply changes to it";
  Ok(c, std::move(out));
}

StatusOr<ReconfigureResult> Service::Impl::ReloadConfig(
    const std::string& who) {
  if (options_.config_source.empty()) {
    return Conflict(
        "this server runs on the default config (it was started without "
        "--config), so there is no file to reload: restart it with "
        "--config FILE");
  }
  auto config = LoadConfigFile(options_.config_source);
  if (!config.ok()) {
    return Status(config.status().code(),
                  "the config was not reloaded (the running one stays): " +
                      config.status().message());
  }
  qm::Config next = std::move(*config);
  if (options_.adjust_config) {
    auto file = LoadServerConfigFile(options_.config_source);
    if (!file.ok()) {
      return Status(file.status().code(),
                    "the config was not reloaded (the running one stays): " +
                        file.status().message());
    }
    next = options_.adjust_config(std::move(next), file->fixed_resources);
  }
  return engine_->Reconfigure(
      next, Actor{who, "config reloaded from " + options_.config_source});
}

// ---------------------------------------------------------------- streams

void Service::Impl::EndWatch(Stream* s) {
  std::shared_ptr<Watch> w;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = watches_.find(s);
    if (it == watches_.end()) return;
    w = it->second;
    watches_.erase(it);
  }
  if (w->sub) hub_->Unsubscribe(w->sub);
  if (w->timer) timers_.Cancel(w->timer);
  w->stream->Close();
}

namespace {

std::string SseEvent(const Event& e) {
  return "id: " + std::to_string(e.seq) + "\nevent: " + EventTypeName(e.type) +
         "\ndata: " + api::ToJson(e).dump() + "\n\n";
}

}  // namespace

void Service::Impl::ScheduleWatch(const std::shared_ptr<Watch>& w, bool monitor,
                                  EventFilter filter, Duration delay) {
  std::weak_ptr<Watch> weak = w;
  w->timer = timers_.At(Steady::now() + delay, [this, weak, monitor, filter] {
    auto w = weak.lock();
    if (!w) return;
    if (!w->stream->open()) {
      pool_.Post([this, w] { EndWatch(w->stream.get()); });
      return;
    }
    if (!monitor) {
      // A comment keeps proxies and idle timeouts from closing the
      // stream.
      if (!w->stream->Send(": keep-alive\n\n")) {
        pool_.Post([this, w] { EndWatch(w->stream.get()); });
        return;
      }
      ScheduleWatch(w, false, filter, w->every);
      return;
    }
    pool_.Post([this, w, filter] {
      auto s = engine_->GetSnapshot();
      if (!s.ok()) {
        EndWatch(w->stream.get());
        return;
      }
      Json j = api::ToJson(*s);
      if (!filter.product.empty() && j.contains("products")) {
        // `products` is keyed by name: keep the one asked for.
        Json kept = Json::object();
        if (j["products"].contains(filter.product)) {
          kept[filter.product] = j["products"][filter.product];
        }
        j["products"] = std::move(kept);
      }
      if (!w->stream->Send("event: snapshot\ndata: " + j.dump() + "\n\n")) {
        EndWatch(w->stream.get());
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (!shut_ && watches_.count(w->stream.get())) {
        ScheduleWatch(w, true, filter, w->every);
      }
    });
  });
}

void Service::Impl::Events(const CallPtr& c) {
  EventFilter filter;
  for (const auto& [key, value] : c->req.query) {
    if (key == "types" || key == "type") {
      for (const std::string& name : SplitComma(value)) {
        EventType t;
        if (!EventTypeFromName(name, &t)) {
          Fail(c, InvalidRequest(key + ": unknown event type \"" + name +
                                 "\" (granted, queued, released, ...; see "
                                 "docs/api.md)"));
          return;
        }
        filter.types.push_back(t);
      }
    } else if (key == "product") {
      filter.product = value;
    } else if (key == "workflow_id" || key == "workflow") {
      filter.workflow_id = value;
    } else if (key == "allocation_id" || key == "allocation") {
      filter.allocation_id = value;
    } else if (key == "after") {
      // handled below
    } else {
      Fail(c, InvalidRequest(key +
                             ": unknown filter (types, product, workflow_id, "
                             "allocation_id, after)"));
      return;
    }
  }
  if (c->role == Role::kAgent) {
    if (!filter.product.empty() &&
        !Check(c, CheckProduct(c, filter.product, "product"))) {
      return;
    }
    filter.visible_products = c->products;
  }
  // Resume point: Last-Event-ID (what browsers send on reconnect) or
  // ?after=.
  uint64_t after = 0;
  bool replay = false;
  std::string from(c->req.Header("last-event-id"));
  std::string from_field = "Last-Event-ID";
  if (const std::string* a = c->req.Query("after")) {
    from = *a;
    from_field = "after";
  }
  if (!from.empty()) {
    const auto [ptr, ec] =
        std::from_chars(from.data(), from.data() + from.size(), after);
    if (ec != std::errc() || ptr != from.data() + from.size()) {
      Fail(c, InvalidRequest(from_field +
                             ": must be an event seq (a whole number), got \"" +
                             from + "\""));
      return;
    }
    replay = true;
  }
  auto stream = c->responder.OpenStream(
      "text/event-stream",
      {{"Cache-Control", "no-store"}, {"X-Accel-Buffering", "no"}});
  c->answered = true;
  metrics_->ObserveRequest(c->route, c->req.method, 200, 0);
  auto w = std::make_shared<Watch>();
  w->stream = stream;
  w->every = std::chrono::seconds(15);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) {
      stream->Close();
      return;
    }
    watches_[stream.get()] = w;
  }
  // The stream opens with its reconnection delay and, when events were
  // lost since the client's last one, a `reset` event saying so.
  std::weak_ptr<Stream> weak = stream;
  const EventHub::Subscription sub = hub_->Subscribe(
      after, replay, filter,
      [weak](const Event& e) {
        auto s = weak.lock();
        return s && s->Send(SseEvent(e));
      },
      [&](const EventHub::Subscription& found) {
        stream->Send("retry: 1000\n\n");
        if (!found.gap) return;
        Json gap = {
            {"after", after},
            {"oldest_kept", found.oldest},
            {"message", "events after " + std::to_string(after) +
                            " are no longer kept by this server (they came "
                            "before its last snapshot when it restarted, or "
                            "are older than its history); read the current "
                            "state with GET /v1/allocations"}};
        stream->Send("event: reset\ndata: " + gap.dump() + "\n\n");
      });
  if (sub.id == 0) {
    EndWatch(stream.get());
    return;
  }
  w->sub = sub.id;
  ScheduleWatch(w, false, filter, w->every);
}

void Service::Impl::Monitor(const CallPtr& c) {
  EventFilter filter;
  Duration every = options_.monitor_interval;
  for (const auto& [key, value] : c->req.query) {
    if (key == "interval") {
      std::optional<Duration> d;
      if (Status s =
              QuerySeconds(c->req, "interval", std::chrono::hours(1), &d);
          !s.ok()) {
        Fail(c, s);
        return;
      }
      if (*d < std::chrono::seconds(1)) {
        Fail(c, InvalidRequest("interval: at least 1s"));
        return;
      }
      every = *d;
    } else if (key == "product") {
      filter.product = value;
    } else {
      Fail(c, InvalidRequest(key + ": unknown parameter (interval, product)"));
      return;
    }
  }
  auto stream = c->responder.OpenStream(
      "text/event-stream",
      {{"Cache-Control", "no-store"}, {"X-Accel-Buffering", "no"}});
  c->answered = true;
  metrics_->ObserveRequest(c->route, c->req.method, 200, 0);
  auto w = std::make_shared<Watch>();
  w->stream = stream;
  w->every = every;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) {
      stream->Close();
      return;
    }
    watches_[stream.get()] = w;
  }
  // The first snapshot at once, then one per interval.
  ScheduleWatch(w, true, filter, Duration(0));
}

void Service::Impl::MonitorSystem(const CallPtr& c) {
  if (options_.sampler == nullptr) {
    Fail(c, Unavailable("this server does not sample the machine"));
    return;
  }
  MonitorSystemQuery q;
  for (const auto& [key, value] : c->req.query) {
    if (key == "time_range") {
      std::optional<Duration> d;
      if (Status s = QuerySeconds(c->req, "time_range",
                                  std::chrono::hours(24 * 90), &d);
          !s.ok()) {
        Fail(c, s);
        return;
      }
      if (*d <= Duration(0)) {
        Fail(c, InvalidRequest("time_range: must be positive, such as 1h"));
        return;
      }
      q.range = *d;
    } else if (key == "include_trends") {
      if (value != "true" && value != "false") {
        Fail(c, InvalidRequest("include_trends: true or false, got \"" + value +
                               "\""));
        return;
      }
      q.include_trends = value == "true";
    } else if (key == "detail_level") {
      if (value != "basic" && value != "full") {
        Fail(c, InvalidRequest("detail_level: basic or full, got \"" + value +
                               "\""));
        return;
      }
      q.full = value == "full";
    } else if (key == "export_format") {
      if (value != "json") {
        Fail(c, InvalidRequest("export_format: only json here (Prometheus "
                               "text is at /metrics), got \"" +
                               value + "\""));
        return;
      }
    } else {
      Fail(c, InvalidRequest(key +
                             ": unknown parameter (time_range, include_trends, "
                             "detail_level, export_format)"));
      return;
    }
  }
  auto snap = engine_->GetSnapshot();
  if (!Check(c, snap.status())) return;
  Ok(c, MonitorSystemResult(*options_.sampler, api::ToJson(*snap), q,
                            engine_->config().monitoring.warning_threshold));
}

// ---------------------------------------------------------------- health

void Service::Impl::Health(const CallPtr& c) {
  Send(c, 200, Json{{"status", "ok"}}.dump());
}

// Ready when the state is open and served: this server leads, or follows
// the leader with a warm copy (a failed engine, or a follower still
// waiting for the leader's first snapshot, is not ready).
void Service::Impl::Ready(const CallPtr& c) {
  Json r;
  const bool leader = engine_->IsLeader();
  // Asked first: a follower that cannot read the leader's journal may hold
  // the engine while it tries, and the probe below would wait for it.
  const Status following = engine_->FollowStatus();
  if (!leader && !following.ok()) {
    r["store"] = following.message();
    r["role"] = "follower";
    if (!options_.advertise_url.empty()) r["node"] = options_.advertise_url;
    r["leader"] = nullptr;
    r["following"] = following.message();
    r["ready"] = false;
    Send(c, 503, r.dump());
    return;
  }
  auto probe = engine_->GetSnapshot();
  r["store"] = probe.ok() ? "open" : probe.status().message();
  r["role"] = leader ? "leader" : "follower";
  if (!options_.advertise_url.empty()) r["node"] = options_.advertise_url;
  // Health is detail: a server whose machine is critical still serves.
  if (probe.ok()) r["health"] = api::ToJson(*probe)["health"];
  // Who takes changes: this server, or the leader's advertised URL (null
  // while nobody leads).
  Json leader_url = nullptr;
  if (leader && !options_.advertise_url.empty()) {
    leader_url = options_.advertise_url;
  } else if (!leader) {
    auto l = engine_->Leader();
    if (l.ok() && l->lease_left > Duration(0) &&
        !ServerUrlOf(l->node_id).empty()) {
      leader_url = ServerUrlOf(l->node_id);
    }
  }
  r["leader"] = std::move(leader_url);
  if (!leader) r["following"] = "ok";
  const bool ready = probe.ok();
  r["ready"] = ready;
  Send(c, ready ? 200 : 503, r.dump());
}

void Service::Impl::Metrics(const CallPtr& c) {
  MetricsInputs in;
  auto s = engine_->GetSnapshot();
  auto costs = engine_->Costs();
  if (!s.ok() || !costs.ok()) {
    Fail(c, !s.ok() ? s.status() : costs.status());
    return;
  }
  in.snapshot = std::move(*s);
  in.costs = std::move(*costs);
  in.journal = engine_->stats();
  in.commit_latency = options_.commit_latency;
  in.commit_batch = options_.commit_batch;
  in.leader = engine_->IsLeader();
  in.uptime_seconds =
      std::chrono::duration<double>(Steady::now() - started_).count();
  if (c->answered.exchange(true)) return;
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_->Render(in);
  metrics_->ObserveRequest(
      c->route, c->req.method, 200,
      std::chrono::duration<double>(Steady::now() - c->start).count());
  c->responder.Respond(std::move(r));
}

// A browser (Accept: text/html) gets the dashboard page; other clients the
// list of routes.
void Service::Impl::Index(const CallPtr& c) {
  if (WantsDashboard(c->req)) {
    SendDashboard(c, "index.html");
    return;
  }
  Json routes = Json::array();
  for (const RouteInfo& r : Service::Routes()) {
    routes.push_back(Json{
        {"method", r.method}, {"path", r.pattern}, {"operation", r.operation}});
  }
  Ok(c, Json{{"name", "qm"},
             {"version", "0.1.0"},
             {"docs", "docs/api.md, docs/openapi.yaml"},
             {"routes", std::move(routes)}});
}

// The MCP endpoint answers by itself, in its protocol (its requests are
// not in the per-route metrics).
void Service::Impl::Mcp(const CallPtr& c) {
  if (!options_.mcp) {
    Fail(c, NotFound("this server does not serve MCP at /mcp"));
    return;
  }
  c->answered = true;
  options_.mcp(std::move(c->req), c->responder);
}

void Service::Impl::Dashboard(const CallPtr& c) {
  SendDashboard(c, c->params["file"]);
}

void Service::Impl::SendDashboard(const CallPtr& c, const std::string& file) {
  if (FindDashboardFile(file) == nullptr) {
    Fail(c, NotFound("no dashboard file " + file + " (the page is at GET /)"));
    return;
  }
  if (c->answered.exchange(true)) return;
  HttpResponse r = DashboardResponse(c->req, file);
  metrics_->ObserveRequest(
      c->route, c->req.method, r.status,
      std::chrono::duration<double>(Steady::now() - c->start).count());
  c->responder.Respond(std::move(r));
}

void Service::Impl::Shutdown() {
  std::vector<std::shared_ptr<Wait>> waits;
  std::vector<Stream*> streams;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) return;
    shut_ = true;
    for (auto& [p, w] : waits_) waits.push_back(w);
    for (auto& [s, w] : watches_) streams.push_back(s);
  }
  timers_.Stop();
  for (auto& w : waits) FinishWait(w, true);
  for (Stream* s : streams) EndWatch(s);
  // Workers may hand a change on to the async pool (a follower forwarding
  // it): they stop first. An I/O thread that finds the engine busy after
  // this makes the call itself (defer_).
  pool_.Stop();
  async_pool_.Stop();
}

// ---------------------------------------------------------------- Service

Service::Service(DurableEngine* engine, EventHub* hub, ServerMetrics* metrics,
                 ServiceOptions options)
    : impl_(std::make_unique<Impl>(engine, hub, metrics, std::move(options))) {}
Service::~Service() = default;

void Service::Handle(HttpRequest request, Responder responder) {
  impl_->Handle(std::move(request), std::move(responder));
}

void Service::Call(HttpRequest request,
                   std::function<void(HttpResponse)> done) {
  impl_->Handle(std::move(request), Responder::InProcess(std::move(done)));
}

void Service::Shutdown() { impl_->Shutdown(); }

StatusOr<ReconfigureResult> Service::ReloadConfig(const std::string& who) {
  return impl_->ReloadConfig(who);
}

std::vector<Service::RouteInfo> Service::Routes() {
  std::vector<RouteInfo> out;
  for (const RouteSpec& r : RouteTable()) {
    out.push_back({r.method, r.pattern, r.operation,
                   OnFollowerOf(r.operation) == OnFollower::kLeader});
  }
  return out;
}

std::string ServerNodeId(const std::string& advertise_url) {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
  return advertise_url + " (" + host + ":" + std::to_string(getpid()) + ")";
}

std::string ServerUrlOf(std::string_view node_id) {
  if (!node_id.starts_with("http://") && !node_id.starts_with("https://")) {
    return "";
  }
  return std::string(node_id.substr(0, node_id.find(' ')));
}

int Service::HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidRequest:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kConflict:
      return 409;
    case Code::kResourceExhausted:
    case Code::kBudgetExceeded:
      return 422;
    case Code::kRateLimited:
      return 429;
    case Code::kUnimplemented:
      return 501;
    case Code::kCircuitOpen:
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    case Code::kInternal:
    case Code::kDataLoss:
      return 500;
  }
  return 500;
}

std::string Service::TransportErrorBody(int http_status, const Status& s) {
  (void)http_status;
  return api::ErrorEnvelope("http", WallNow(), s).dump() + "\n";
}

}  // namespace qm::server
