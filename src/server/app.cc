#include "server/app.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>

#include "server/capacity.h"
#include "server/demo.h"
#include "server/events.h"
#include "server/holders.h"
#include "server/mcp_endpoint.h"
#include "server/metrics.h"
#include "server/sampler.h"
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
    const std::string& location = options_.durable.store.location;
    const bool postgres = location.starts_with("postgresql://") ||
                          location.starts_with("postgres://");
    if (postgres) {
      // Several servers may share the database: the one that finds another
      // leading follows it. Each names itself in the leader row by the URL
      // it is reached at, which needs the port bound: listen first
      // (answering 503 until the engine is open).
      options_.durable.follow = true;
      QM_RETURN_IF_ERROR(Listen());
      options_.durable.store.node_id = ServerNodeId(advertise_url_);
    }
    // The capacities the config file leaves unset come from the machine
    // (server.detect); a state written under other ones is reloaded.
    if (options_.service.auth.detect.enabled) {
      detector_ = std::make_unique<CapacityDetector>(
          options_.service.auth.detect, postgres ? "." : location,
          options_.service.auth.detect.root);
      fixed_ = options_.service.auth.fixed_resources;
      if (auto d = detector_->Detect(); d.ok()) {
        detected_ = *d;
        options_.config = WithDetected(options_.config, *d, fixed_);
      } else {
        std::cerr << "qm serve: the machine's capacities could not be read "
                     "(the configured ones stay): "
                  << d.status().ToString() << "\n";
      }
    }
    auto engine =
        DurableEngine::Open(options_.durable, options_.config, nullptr, this);
    if (!engine.ok()) return engine.status();
    engine_ = std::move(*engine);
    // Events from before the restart that the recovery regenerated: a
    // client resuming its stream from one of them gets the rest, not a
    // reset.
    hub_.Preload(engine_->TakeRecoveredEvents());
    // SQLite: the state directory's lock is the first thing checked (its
    // message names the process in the way), then the port.
    if (!postgres) QM_RETURN_IF_ERROR(Listen());
    ServiceOptions service_options = options_.service;
    service_options.holders = holders_.get();
    {
      SamplerOptions sampling;
      sampling.interval = options_.config.monitoring_intervals.resource_check;
      sampling.root = options_.service.auth.detect.root;
      sampling.storage_path = postgres ? "." : location;
      sampler_ = std::make_unique<Sampler>(sampling, engine_.get());
      service_options.sampler = sampler_.get();
    }
    if (detector_) {
      service_options.adjust_config =
          [this](Config c, const std::vector<std::string>& fixed) {
            std::lock_guard<std::mutex> lock(detect_mu_);
            fixed_ = fixed;
            return detected_ ? WithDetected(std::move(c), *detected_, fixed)
                             : c;
          };
    }
    service_options.commit_latency = &commit_latency_;
    service_options.commit_batch = &commit_batch_;
    service_options.advertise_url = advertise_url_;
    service_options.mcp = [this](HttpRequest req, Responder r) {
      mcp_->Handle(std::move(req), std::move(r));
    };
    service_ = std::make_unique<Service>(engine_.get(), &hub_, &metrics_,
                                         std::move(service_options));
    mcp::HttpTransportOptions mcp = options_.mcp;
    if (options_.service.auth.mcp_allowed_origins) {
      mcp.allowed_origins = *options_.service.auth.mcp_allowed_origins;
    }
    if (!mcp.log) {
      mcp.log = [](const std::string& line) {
        std::cerr << "qm serve: mcp: " + line + "\n";
      };
    }
    mcp_ = std::make_unique<McpEndpoint>(service_.get(), std::move(mcp));
    serving_ = service_.get();
    ticker_ = std::thread([this] { TickLoop(); });
    if (options_.sample) sampler_->Start();
    if (options_.demo) {
      demo_ = std::make_unique<DemoWorkload>(engine_.get());
      demo_->Start();
    }
    if (detector_ && options_.service.auth.detect.interval.count() > 0) {
      follower_ = std::thread([this] { FollowMachine(); });
    }
    return {};
  }

  // Starts the HTTP server (requests are answered 503 until the service
  // is set) and works out the advertised URL.
  Status Listen() {
    const std::string& given = options_.advertise;
    if (!given.empty() &&
        ((!given.starts_with("http://") && !given.starts_with("https://")) ||
         given.find_first_of(" \t\r\n") != std::string::npos)) {
      return InvalidRequest(
          "--advertise: expected the URL clients reach this server at "
          "(http://host:port or https://host:port), got \"" +
          given + "\"");
    }
    HttpOptions http = options_.http;
    if (!http.error_body) http.error_body = &Service::TransportErrorBody;
    auto server = HttpServer::Start(http, [this](HttpRequest req, Responder r) {
      if (Service* service = serving_.load()) {
        service->Handle(std::move(req), std::move(r));
        return;
      }
      HttpResponse res;
      res.status = 503;
      res.headers.emplace_back("Retry-After", "1");
      res.body = Service::TransportErrorBody(
          503, Unavailable("qm is starting (opening the state); retry in a "
                           "second"));
      r.Respond(std::move(res));
    });
    if (!server.ok()) return server.status();
    http_ = std::move(*server);
    advertise_url_ = given;
    while (advertise_url_.size() > 8 && advertise_url_.back() == '/') {
      advertise_url_.pop_back();
    }
    if (advertise_url_.empty()) {
      // The address bound; a wildcard one by this host's name.
      std::string bound = http_->address();
      const size_t colon = bound.rfind(':');
      std::string host = bound.substr(0, colon);
      if (host == "0.0.0.0" || host == "[::]") {
        char name[256] = {};
        if (gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') {
          host = name;
        }
      }
      advertise_url_ =
          std::string(options_.http.tls_cert_file.empty() ? "http://"
                                                          : "https://") +
          host + bound.substr(colon);
    }
    return Status::Ok();
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
    if (follower_.joinable()) follower_.join();
    if (sampler_) sampler_->Stop();
    // The demo gives back what it holds while the engine still takes it.
    if (demo_) demo_->Stop();
    // Waiting clients are answered with their allocation's state first, so
    // they are not cut off; then requests in flight finish.
    if (service_) service_->Shutdown();
    // MCP tool calls end once the service has answered their waits.
    if (mcp_) mcp_->Stop(grace);
    if (http_) http_->Stop(grace);
    if (holders_) holders_->Stop();
    if (engine_) stop_status_ = engine_->Close();
    if (webhooks_) webhooks_->Stop();
    return stop_status_;
  }

  // Runs the engine's timers when they fall due (a Tick is a journaled
  // change, so it runs only when something is due), while this server
  // leads: a follower's copy gets the leader's ticks from the journal, and
  // its own timers start when it takes over.
  void TickLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    bool reported = false;
    bool followed = false;
    uint64_t step_downs = engine_->stats().step_downs;
    while (!stop_ticker_) {
      if (const uint64_t n = engine_->stats().step_downs; n != step_downs) {
        step_downs = n;
        std::cerr << "qm serve: stopped leading: another instance took the "
                     "leader lease over; following it (this server stepped "
                     "down "
                  << n << (n == 1 ? " time" : " times")
                  << " since it started)\n";
      }
      if (!engine_->IsLeader()) {
        // Following, or stopped by a failed commit: check again shortly.
        followed = true;
        cv_.wait_for(lock, std::chrono::milliseconds(100));
        continue;
      }
      if (followed) {
        followed = false;
        std::cerr << "qm serve: took over as leader (" << advertise_url_
                  << "): taking changes and running timers\n";
        reported = false;
      }
      const std::optional<Time> next = engine_->NextDeadline();
      const Time now = SystemClock::Default()->Now();
      if (next && *next <= now) {
        lock.unlock();
        Status s = engine_->Tick();
        lock.lock();
        if (!s.ok()) {
          // Fail-stop (leadership lost) or closing: the timers wait for
          // leadership again.
          if (!reported) {
            std::cerr << "qm serve: timers stopped: " << s.ToString() << "\n";
            reported = true;
          }
          cv_.wait_for(lock, std::chrono::milliseconds(100));
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

  // Looks at the machine every server.detect.interval and reloads the
  // config with its capacities when they changed (a reload that running
  // work would be over is refused and tried again at the next look).
  void FollowMachine() {
    std::unique_lock<std::mutex> lock(mu_);
    std::string refused;  // the last refusal logged, not repeated
    while (!stop_ticker_) {
      cv_.wait_for(lock, options_.service.auth.detect.interval);
      if (stop_ticker_) return;
      lock.unlock();
      auto d = detector_->Detect();
      std::optional<Config> next;
      std::string summary;
      if (d.ok()) {
        std::lock_guard<std::mutex> dl(detect_mu_);
        if (!detected_ || !(*detected_ == *d)) {
          next = WithDetected(engine_->config(), *d, fixed_);
          summary = d->summary;
        }
      }
      if (next && engine_->IsLeader()) {
        auto r = engine_->Reconfigure(
            *next, Actor{"qm", "the machine changed: " + summary});
        if (r.ok()) {
          std::lock_guard<std::mutex> dl(detect_mu_);
          detected_ = *d;
          refused.clear();
          if (!r->changes.empty()) {
            std::cerr << "qm serve: the machine changed: " << summary << "\n";
          }
        } else if (r.status().message() != refused) {
          refused = r.status().message();
          std::cerr << "qm serve: the machine changed (" << summary
                    << ") but the capacities stay for now: "
                    << r.status().ToString() << "\n";
        }
      }
      lock.lock();
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
  std::unique_ptr<Sampler> sampler_;    // reads engine_: stopped before it
  std::unique_ptr<DemoWorkload> demo_;  // likewise
  std::unique_ptr<Service> service_;
  std::unique_ptr<McpEndpoint> mcp_;        // calls service_: after it
  std::atomic<Service*> serving_{nullptr};  // service_ once it may serve
  std::string advertise_url_;               // see ServeOptions::advertise
  std::unique_ptr<HttpServer> http_;
  std::thread ticker_;
  std::thread follower_;  // FollowMachine
  std::unique_ptr<CapacityDetector> detector_;
  std::mutex detect_mu_;  // guards detected_ and fixed_
  std::optional<DetectedCapacities> detected_;
  std::vector<std::string> fixed_;
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
const std::string& App::advertise_url() const { return impl_->advertise_url_; }
const RecoveryInfo& App::recovery() const { return impl_->engine_->recovery(); }
DurableEngine& App::engine() { return *impl_->engine_; }
std::string App::DetectedSummary() const {
  std::lock_guard<std::mutex> lock(impl_->detect_mu_);
  return impl_->detected_ ? impl_->detected_->summary : "";
}
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
  const bool demo = options.demo;
  auto app = App::Start(std::move(options));
  if (!app.ok()) {
    err << "qm serve: " << app.status().ToString() << "\n";
    return 1;
  }
  const RecoveryInfo& r = (*app)->recovery();
  const bool tls = !options_tls_cert.empty();
  if (const std::string d = (*app)->DetectedSummary(); !d.empty()) {
    err << "qm serve: capacities from this machine (server.detect): " << d
        << std::endl;
  }
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
  const std::string listening =
      (tls ? "https://" : "http://") + (*app)->address();
  err << "qm serve: dashboard at " << listening << "/ ; `qm top` in a terminal"
      << (demo ? " (demo workload running: requester qm-demo)" : "")
      << std::endl;
  if ((*app)->advertise_url() != listening) {
    err << "qm serve: advertised as " << (*app)->advertise_url() << std::endl;
  }
  if (!(*app)->engine().IsLeader()) {
    auto leader = (*app)->engine().Leader();
    const std::string url = leader.ok() ? ServerUrlOf(leader->node_id) : "";
    err << "qm serve: following the leader"
        << (url.empty() ? std::string() : " at " + url)
        << ": reads are answered here, changes are redirected to the leader, "
           "and this server takes over when the leader's lease runs out"
        << std::endl;
  }
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
