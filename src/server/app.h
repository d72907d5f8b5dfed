// `qm serve` put together: the durable engine (recovered from the store),
// the event hub it reports to, the API service, the HTTP transport, and a
// ticker that runs the engine's timers (lease expiries, grace periods,
// reservation windows) when they fall due.
//
// Shutdown order (Stop): stop accepting, answer pending waits, let
// in-flight requests finish within the grace period, then flush the journal
// and close the store. Nothing acknowledged is lost (it was committed
// before its answer).
//
// Thread safety: Start, Stop and the accessors from one thread.
#ifndef QM_SERVER_APP_H_
#define QM_SERVER_APP_H_

#include <iosfwd>
#include <memory>
#include <string>

#include "mcp/http_transport.h"
#include "qm/clock.h"
#include "qm/config.h"
#include "qm/durable_engine.h"
#include "qm/status.h"
#include "server/http.h"
#include "server/service.h"

namespace qm::server {

struct ServeOptions {
  HttpOptions http;  // http.listen: default 127.0.0.1:7070
  ServiceOptions service;
  // durable.store.location: an SQLite state directory or a PostgreSQL URI
  // (required).
  DurableOptions durable;
  Config config = Config::Defaults();
  // Events kept for resuming streams. Default 100,000.
  size_t event_history = 100000;
  // Whether the machine is sampled every
  // config.monitoring_intervals.resource_check (server/sampler.h): health,
  // alerts, the pressure response and /v1/monitor/system need it. Default
  // true; the sampler-overhead benchmark turns it off for its baseline.
  bool sample = true;
  // Runs the demo workload (server/demo.h) while this server leads.
  // Default false.
  bool demo = false;
  // The MCP endpoint at /mcp (sessions, idle timeout, origins: see
  // mcp/http_transport.h for the defaults). The config file's
  // server.mcp.allowed_origins (service.auth) replaces allowed_origins.
  mcp::HttpTransportOptions mcp;
  // The URL clients reach this server at (`--advertise`), for the other
  // servers on one PostgreSQL to redirect changes to while this one leads.
  // Default: http:// (https:// with TLS) and the address bound, this
  // host's name for a wildcard address.
  //
  // With a PostgreSQL store several servers share the database: Start sets
  // durable.follow (a server that finds another leading follows it: it
  // answers reads from its copy, redirects changes to the leader, and takes
  // over when the leader's lease runs out) and durable.store.node_id
  // (ServerNodeId of this URL).
  std::string advertise;
};

class App {
 public:
  // Opens the state, then listens (with PostgreSQL: listens first,
  // answering 503 until the state is open). INVALID_REQUEST for a listen
  // address that is not loopback while no auth tokens are configured (then
  // only local clients may be served) and for a malformed `advertise`; the
  // errors of DurableEngine::Open and HttpServer::Start.
  static StatusOr<std::unique_ptr<App>> Start(ServeOptions options);
  ~App();  // Stop(5 s) if still running

  std::string address() const;  // "127.0.0.1:7070"
  // "http://127.0.0.1:7070": see ServeOptions::advertise.
  const std::string& advertise_url() const;
  const RecoveryInfo& recovery() const;
  DurableEngine& engine();

  // Service::ReloadConfig: the --config file again, applied to the state.
  StatusOr<ReconfigureResult> ReloadConfig(const std::string& who);

  // Graceful shutdown; see the file comment. Returns the journal flush's
  // status.
  Status Stop(Duration grace);

  // What the machine's detection found at start (server.detect), for the
  // log; "" when it is off or found nothing.
  std::string DetectedSummary() const;

  class Impl;

 private:
  explicit App(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether `host` (of "host:port") is a loopback address or name.
bool IsLoopbackHost(const std::string& host);

// Runs `qm serve` until SIGTERM or SIGINT (graceful shutdown); SIGHUP
// reloads the --config file (App::ReloadConfig; a bad one is refused with
// its error and the running config stays). Prints where it listens to
// `out`, logs to `err`. Returns the exit code.
int RunServe(ServeOptions options, std::ostream& out, std::ostream& err);

}  // namespace qm::server

#endif  // QM_SERVER_APP_H_
