// The HTTP API of `qm serve` (/v1, /healthz, /readyz, /metrics), apart
// from the transport: the route table, the decoding of each operation's
// parameters, the call into the durable engine, and the answer in the
// seeds' success / error envelope (docs/api.md, docs/openapi.yaml).
//
// Engine calls that wait for their journal commit run on a pool of worker
// threads, never on the transport's event loop. Allocate, release and
// renew are answered from their commit without waiting: the event loop
// makes them itself while the engine is free (ServiceOptions::
// async_workers). A request waiting
// for a grant (allocate with `wait`, or GET /v1/allocations/{id}?wait=)
// holds no thread: it is answered by the event that changes its
// allocation, or by a timer.
//
// Several servers on one PostgreSQL: while this server follows another
// (DurableEngine::IsLeader is false), it answers reads from its warm copy
// and redirects what only the leader can do (RouteInfo::leader_only) with
// 307 and `Location: <leader URL><same target>`, or answers 503 with
// `Retry-After: 1` while no server leads (an election).
//
// Thread safety: Handle may be called from any thread.
#ifndef QM_SERVER_SERVICE_H_
#define QM_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/durable_engine.h"
#include "server/events.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/server_config.h"

namespace qm::server {

class HolderWatch;
class Sampler;

struct ServiceOptions {
  // Worker threads for engine calls that wait for their commit or read
  // the engine (each such call holds one while it waits). Default 64.
  int workers = 64;
  // Allocate, release and renew are answered from their commit and never
  // wait: the I/O thread that read one makes the engine call itself when
  // the engine is free, and hands it to these threads when another thread
  // holds it (a long read, a snapshot, the other I/O thread's call), so an
  // event loop never waits. (An agent's release or renew, whose ownership
  // check reads the engine, runs on `workers`.) Serving these calls from 2
  // threads rather than the 64 workers raised qm_load's allocations/s by
  // about 18%; making them on the I/O thread, by 22% more (README, "The
  // server"). Default 2.
  int async_workers = 2;
  // The longest `wait` an allocate or a get may ask for. Default 10 min.
  Duration max_wait = std::chrono::minutes(10);
  // How often GET /v1/monitor sends a snapshot (its `interval` parameter
  // may ask for another, from 1 s up). Default 5 s.
  Duration monitor_interval = std::chrono::seconds(5);
  // JSON request bodies nested deeper than this are refused. Default 64.
  int max_json_depth = 64;
  // The config file the server was started from, for /v1/config (""
  // when it runs on the defaults).
  std::string config_source;
  // Auth tokens and the per-token rate limit. Without tokens only loopback
  // clients are served, each as admin. With tokens every route but
  // /healthz and /readyz needs `Authorization: Bearer <token>` (401
  // without, 403 when the role may not use the route); an agent token works
  // only within its products (another product's allocation answers 404,
  // as if it did not exist).
  ServerConfig auth;
  // Journal commit latency and batch size for /metrics (may be null; must
  // outlive the service).
  const Histogram* commit_latency = nullptr;
  const Histogram* commit_batch = nullptr;
  // Watches the processes that name themselves as holders (`holder` in an
  // allocate body), so their allocations are reclaimed when they exit. May
  // be null (then `holder` is accepted and ignored); must outlive the
  // service.
  HolderWatch* holders = nullptr;
  // The time the activity reports (GET /v1/status/{resource}, GET
  // /v1/usage/{workflow_id}) are for: the clock the engine runs on. Null:
  // the system clock. Must outlive the service.
  const Clock* clock = nullptr;
  // The monitoring sampler, for GET /v1/monitor/system (may be null: that
  // route then answers UNAVAILABLE); must outlive the service.
  const Sampler* sampler = nullptr;
  // Turns a config read from the file (and the system resources that file
  // sets itself) into the one to run: the machine's detected capacities
  // for the others (src/server/capacity.h). Null: the file as it is.
  std::function<qm::Config(qm::Config, const std::vector<std::string>& fixed)>
      adjust_config;
  // Serves /mcp (POST, GET, DELETE: the MCP Streamable HTTP transport,
  // src/server/mcp_endpoint.h) once the request passed the same
  // authentication as the API (any role; what the MCP tools may then do is
  // checked call by call, as the caller). The request's body is handed
  // over unread. Null: /mcp answers 404.
  std::function<void(HttpRequest, Responder)> mcp;
  // This server's base URL as clients reach it ("http://10.0.0.5:7070"):
  // shown by /readyz, and what the other servers on one PostgreSQL
  // redirect changes to while this one leads (it is in the store's node
  // id, see ServerNodeId). "" when unknown.
  std::string advertise_url;
};

// Several servers on one PostgreSQL: each names itself in the store's
// leader row with its node id, its advertised URL followed by
// " (host:pid)" (so two processes never share one), and a follower
// redirects changes to the URL in the leader's node id.
std::string ServerNodeId(const std::string& advertise_url);
// The advertised URL in a node id made by ServerNodeId; "" when it holds
// none (a store opened by another tool).
std::string ServerUrlOf(std::string_view node_id);

class Service {
 public:
  // `engine`, `hub` and `metrics` must outlive the service.
  Service(DurableEngine* engine, EventHub* hub, ServerMetrics* metrics,
          ServiceOptions options);
  ~Service();  // Shutdown()
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Answers one request (through `responder`, possibly later).
  void Handle(HttpRequest request, Responder responder);

  // Answers a request made inside this process (the MCP endpoint calling
  // the API for its caller): the same routes, authentication, checks and
  // answers as Handle, for the identity the request carries (its
  // Authorization header and remote address). `done` gets the answer
  // once, possibly later and on another thread. Routes that stream answer
  // 501. `request` needs method, target, path and query (SetTarget), the
  // headers and the body.
  void Call(HttpRequest request, std::function<void(HttpResponse)> done);

  // Answers every pending wait with its allocation's current state, closes
  // the event streams, and stops the workers after the calls in progress.
  void Shutdown();

  // Reads the config file the server was started with (options.
  // config_source) again and applies it to the running state
  // (DurableEngine::Reconfigure), as `who`. CONFLICT when the server runs
  // on the default config (no file) or the state cannot take the new
  // config; the file's load error (INVALID_REQUEST naming FILE:LINE) when
  // it does not load. The `server` section is read at start only. Used by
  // POST /v1/config/reload and SIGHUP. Blocks until committed.
  StatusOr<ReconfigureResult> ReloadConfig(const std::string& who);

  // The routes, for docs and tests: method, pattern ("/v1/allocations/{id}")
  // and operation name (the envelope's `operation`). `leader_only`: a
  // follower does not answer it from its copy but redirects it to the
  // leader (changes, and the live event stream; also a get with `wait`).
  struct RouteInfo {
    std::string method, pattern, operation;
    bool leader_only = false;
  };
  static std::vector<RouteInfo> Routes();

  // The HTTP status for an error code (INVALID_REQUEST 400, NOT_FOUND 404,
  // CONFLICT 409, ...).
  static int HttpStatusFor(Code code);
  // The JSON error envelope for a transport-level error (HttpOptions::
  // error_body).
  static std::string TransportErrorBody(int http_status, const Status& s);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::server

#endif  // QM_SERVER_SERVICE_H_
