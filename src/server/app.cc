#include "server/app.h"

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>

#include "server/events.h"
#include "server/holders.h"
#include "server/metrics.h"
#include "server/webhooks.h"

namespace qm::server {

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  return host.rfind("127.", 0) == 0;
}

class App::Impl final : public EventSink {
 public:
  explicit Impl(ServeOptions options)
      : options_(std::move(options)), hub_(options_.event_history) {}

  ~Impl() override { (void)Stop(std::chrono::seconds(5)); }

  // Counts the event for /metrics, ends the watch of a finished
  // allocation's holder, then hands it to the hub.
  void OnEvent(const Event& event) override {
    metrics_.OnEvent(event);
    if (holders_ && !event.allocation_id.empty() &&
        (event.type == EventType::kReleased ||
         event.type == EventType::kExpired ||
         event.type == EventType::kCancelled ||
         event.type == EventType::kFailed)) {
      holders_->Forget(event.allocation_id);
    }
    hub_.OnEvent(event);
  }

  // A watched holder exited: its allocation is taken back now, unless it
  // ended meanwhile (then nothing is journaled).
  void ReclaimGone(const std::string& id, const std::string& why) {
    auto a = engine_->Get(id);
    if (!a.ok() || (a->status != AllocStatus::kActive &&
                    a->status != AllocStatus::kQueued)) {
      return;
    }
    auto r = engine_->Reclaim(id, why);
    if (!r.ok() && r.status().code() != Code::kNotFound) {
      std::cerr << "qm serve: reclaiming " << id << " (" << why
                << "): " << r.status().ToString() << "\n";
    }
  }

  Status Start() {
    const std::string& listen = options_.http.listen;
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return InvalidRequest("--listen: expected host:port, got \"" + listen +
                            "\"");
    }
    const std::string host = listen.substr(0, colon);
    if (!IsLoopbackHost(host) && options_.service.auth.tokens.empty()) {
      return InvalidRequest(
          "--listen: " + listen +
          " is not a loopback address, and this server has no auth tokens "
          "configured, so it may only serve local clients (listen on "
          "127.0.0.1)");
    }
    if (!options_.service.auth.webhooks.empty()) {
      // Subscribed before the engine opens: alerts of the recovery's own
      // catch-up are sent too.
      webhooks_ = std::make_unique<WebhookSender>(
          options_.service.auth.webhooks, &hub_);
    }
    options_.durable.on_commit = [this](double seconds, size_t operations) {
      commit_latency_.Observe(seconds);
      commit_batch_.Observe(static_cast<double>(operations));
    };
    // Before the engine: its events reach OnEvent from the start.
    {
      auto holders = HolderWatch::Start(
          [this](const std::string& id, const std::string& why) {
            ReclaimGone(id, why);
          });
      if (holders.ok()) {
        holders_ = std::move(*holders);
      } else {
        std::cerr << "qm serve: holders are not watched (leases still "
                     "expire): "
                  << holders.status().ToString() << "\n";
      }
    }
    auto engine =
        DurableEngine::Open(options_.durable, options_.config, nullptr, this);
    if (!engine.ok()) return engine.status();
    engine_ = std::move(*engine);
    ServiceOptions service_options = options_.service;
    service_options.holders = holders_.get();
    service_options.commit_latency = &commit_latency_;
    service_options.commit_batch = &commit_batch_;
    service_ = std::make_unique<Service>(engine_.get(), &hub_, &metrics_,
                                         std::move(service_options));
    HttpOptions http = options_.http;
    if (!http.error_body) http.error_body = &Service::TransportErrorBody;
    Service* service = service_.get();
    auto server =
        HttpServer::Start(http, [service](HttpRequest req, Responder r) {
          service->Handle(std::move(req), std::move(r));
        });
    if (!server.ok()) {
      service_->Shutdown();
      (void)engine_->Close();
      return server.status();
    }
    http_ = std::move(*server);
    ticker_ = std::thread([this] { TickLoop(); });
    return {};
  }

  Status Stop(Duration grace) {
    if (stopped_) return stop_status_;
    stopped_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ticker_ = true;
    }
    cv_.notify_all();
    if (ticker_.joinable()) ticker_.join();
    // Waiting clients are answered with their allocation's state first, so
    // they are not cut off; then requests in flight finish.
    if (service_) service_->Shutdown();
    if (http_) http_->Stop(grace);
    if (holders_) holders_->Stop();
    if (engine_) stop_status_ = engine_->Close();
    if (webhooks_) webhooks_->Stop();
    return stop_status_;
  }

  // Runs the engine's timers when they fall due (a Tick is a journaled
  // change, so it runs only when something is due).
  void TickLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_ticker_) {
      const std::optional<Time> next = engine_->NextDeadline();
      const Time now = SystemClock::Default()->Now();
      if (next && *next <= now) {
        lock.unlock();
        Status s = engine_->Tick();
        lock.lock();
        if (!s.ok()) {
          // Fail-stop or closing: nothing more to run.
          std::cerr << "qm serve: timers stopped: " << s.ToString() << "\n";
          return;
        }
        continue;
      }
      // Wake at the deadline, and at least every 500 ms (a change may have
      // set an earlier one).
      Duration wait = std::chrono::milliseconds(500);
      if (next) wait = std::min(wait, *next - now);
      cv_.wait_for(lock, wait);
    }
  }

  ServeOptions options_;
  EventHub hub_;
  ServerMetrics metrics_;
  // Journal commits: latency (s) and operations per commit.
  Histogram commit_latency_{DefaultLatencyBounds()};
  Histogram commit_batch_{DefaultBatchBounds()};
  std::unique_ptr<WebhookSender> webhooks_;
  std::unique_ptr<DurableEngine> engine_;
  std::unique_ptr<HolderWatch> holders_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<HttpServer> http_;
  std::thread ticker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ticker_ = false;
  bool stopped_ = false;
  Status stop_status_;
};

StatusOr<std::unique_ptr<App>> App::Start(ServeOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  QM_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<App>(new App(std::move(impl)));
}

App::App(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
App::~App() = default;

std::string App::address() const { return impl_->http_->address(); }
const RecoveryInfo& App::recovery() const { return impl_->engine_->recovery(); }
DurableEngine& App::engine() { return *impl_->engine_; }
StatusOr<ReconfigureResult> App::ReloadConfig(const std::string& who) {
  return impl_->service_->ReloadConfig(who);
}
Status App::Stop(Duration grace) { return impl_->Stop(grace); }

int RunServe(ServeOptions options, std::ostream& out, std::ostream& err) {
  // The signals are taken by sigwait below: block them before any thread
  // starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const std::string where = options.durable.store.location;
  const std::string options_tls_cert = options.http.tls_cert_file;
  auto app = App::Start(std::move(options));
  if (!app.ok()) {
    err << "qm serve: " << app.status().ToString() << "\n";
    return 1;
  }
  const RecoveryInfo& r = (*app)->recovery();
  const bool tls = !options_tls_cert.empty();
  if (!r.config_changes.empty()) {
    err << "qm serve: the config differs from the one the state was written "
           "under; applied as a reload:";
    for (const std::string& change : r.config_changes) {
      err << " " << change << ";";
    }
    err << std::endl;
  }
  out << "qm serve: listening on " << (tls ? "https://" : "http://")
      << (*app)->address() << " (state " << where << ", "
      << (r.fresh ? std::string("new")
                  : "recovered " + std::to_string(r.replayed) +
                        " journal records after snapshot " +
                        std::to_string(r.snapshot_seq))
      << ")" << std::endl;
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      auto r = (*app)->ReloadConfig("SIGHUP");
      if (!r.ok()) {
        err << "qm serve: SIGHUP: " << r.status().ToString() << std::endl;
      } else if (r->changes.empty()) {
        err << "qm serve: SIGHUP: the config is unchanged" << std::endl;
      } else {
        err << "qm serve: SIGHUP: config reloaded:";
        for (const std::string& change : r->changes)
          err << " " << change << ";";
        err << std::endl;
      }
      continue;
    }
    err << "qm serve: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
        << ": shutting down (finishing requests in flight)" << std::endl;
    break;
  }
  Status s = (*app)->Stop(std::chrono::seconds(10));
  if (!s.ok()) {
    err << "qm serve: the journal did not flush: " << s.ToString() << "\n";
    return 1;
  }
  err << "qm serve: stopped; the journal is flushed" << std::endl;
  return 0;
}

}  // namespace qm::server
