// The Streamable HTTP transport of MCP (revision 2025-06-18, and 2025-03-26
// clients): one endpoint (`/mcp` on `qm serve`) that takes each JSON-RPC
// message as a POST and offers a GET event stream for what the server
// sends by itself. Each session is an McpServer of its own, whose Backend
// the owner makes from the request that opened it (for `qm serve`: the API
// called in-process as that caller).
//
// Protocol, as this transport serves it:
// - POST: one JSON-RPC message (a batch array under 2025-03-26). An
//   `initialize` request without `Mcp-Session-Id` opens a session: its
//   answer carries the new `Mcp-Session-Id`. Every other POST needs that
//   header (400 without it; 404 for a session that ended, expired or
//   belongs to another caller). A body holding a request is answered 200
//   `application/json` with the JSON-RPC response (errors of the message
//   itself, such as -32601, are JSON-RPC errors inside that 200); one
//   holding only notifications or responses is answered 202 with no body,
//   or 400 when it cannot be taken (not JSON, malformed). `Accept` must
//   allow application/json (406) and `Content-Type` be application/json
//   (415), when they are given.
// - `MCP-Protocol-Version`: when present on a request of a session, it
//   must be the version the session agreed at initialize (400 otherwise:
//   unsupported, malformed or another one); when absent the session's
//   version is assumed (the spec's fallback for clients that predate the
//   header, 2025-03-26 ones).
// - GET (Accept allowing text/event-stream, else 406): the session's
//   event stream (`text/event-stream`): notifications/resources/updated
//   for subscribed resources (`data:` lines, one JSON-RPC message per
//   event, no ids: nothing is replayed), and a `: keep-alive` comment
//   every `keepalive`. One stream per session: a new GET replaces the
//   previous stream (closing it), so a client that reconnects is not
//   refused while its old connection is still being noticed as gone.
// - DELETE: ends the session; answered once its allocations are given
//   back (see below) with 200 and {"session_id", "released", "cancelled"}.
// - `Origin`: a request carrying one that is not on `allowed_origins` is
//   refused with 403 before anything else (DNS-rebinding protection);
//   requests without Origin (clients that are not browsers) pass.
//
// Allocations: the allocations a session obtained with resource_allocate
// that are still active or queued when the session ends (DELETE, or idle
// expiry) are released (active) or cancelled (queued), as that session's
// caller: an MCP client over HTTP has no process the server could watch,
// and the session is what lives as long as the client's use of them. A
// server that stops does not end sessions: their allocations stay, covered
// by their leases (sessions themselves are not kept across a restart; the
// client gets 404 and initializes again).
//
// Threads: Handle never blocks (it runs on the HTTP server's I/O thread).
// Messages holding a request run on a thread of their own (a waiting
// resource_allocate holds its thread up to its timeout), at most
// `max_in_flight` at once over all sessions (more are answered 503 with
// Retry-After); notifications are handled in place (they only change the
// session's memory). One more thread polls subscriptions, sends
// keep-alives and expires idle sessions.
//
// Errors of the transport itself (403, 400, 404, 405, 406, 415, 503) carry
// the body made by `error_body`.
//
// Thread safety: Handle may be called from any thread, concurrently.
#ifndef QM_MCP_HTTP_TRANSPORT_H_
#define QM_MCP_HTTP_TRANSPORT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"
#include "server/http.h"

namespace qm::mcp {

class Backend;

// http://localhost:*, http://127.0.0.1:*, http://[::1]:* and their
// https:// forms: pages served from this machine.
std::vector<std::string> DefaultAllowedOrigins();

// Whether `origin` ("http://localhost:3000", as browsers send it) is on
// `allowed`: entries are exact origins ("https://app.example.com"),
// origins with any port ("http://localhost:*", which also matches no
// port), or "*" (any origin: turns the check off). Scheme and host compare
// without regard to case.
bool OriginAllowed(std::string_view origin,
                   const std::vector<std::string>& allowed);

struct HttpTransportOptions {
  // Sessions open at once; an initialize beyond them is answered 503.
  // Default 100.
  size_t max_sessions = 100;
  // A session ends (as at DELETE) once it has had no request in progress
  // and no open GET stream for this long. Default 30 min.
  Duration idle_timeout = std::chrono::minutes(30);
  // Messages holding a request handled at once, over all sessions (each
  // holds a thread while it runs). Default 64.
  int max_in_flight = 64;
  // See OriginAllowed. Default DefaultAllowedOrigins().
  std::vector<std::string> allowed_origins = DefaultAllowedOrigins();
  // How often subscribed resources of sessions with an open GET stream are
  // read (and idle sessions looked for). Default 1 s.
  Duration poll_interval = std::chrono::seconds(1);
  // A comment on every open GET stream this often (keeps proxies from
  // closing it, and finds clients that went away). Default 15 s.
  Duration keepalive = std::chrono::seconds(15);
  // serverInfo.version of each session's McpServer.
  std::string version = "0.1.0";
  // The body of a refusal by the transport: (HTTP status, error) -> JSON
  // text. Default: a JSON-RPC error without id ({"jsonrpc": "2.0", "id":
  // null, "error": {"code": -32000, "message": ...}}).
  std::function<std::string(int, const Status&)> error_body;
  // Where to log (sessions ended, allocations given back, what could not
  // be); null = nowhere. Called from any thread.
  std::function<void(const std::string&)> log;
};

class HttpTransport {
 public:
  // Makes the backend of a new session from the request that opens it
  // (its caller: Authorization header, remote address). Called on the
  // thread of Handle; must not block.
  using BackendFactory =
      std::function<std::shared_ptr<Backend>(const server::HttpRequest&)>;

  HttpTransport(BackendFactory backend_for, HttpTransportOptions options);
  ~HttpTransport();  // Stop(0)
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Serves one request to the endpoint (see the file comment). A session
  // is bound to the Authorization header of the request that opened it:
  // requests with another one do not find it (404).
  void Handle(server::HttpRequest request, server::Responder responder);

  // Refuses new requests (503), closes the event streams, and waits up to
  // `grace` for the messages being handled. Sessions are dropped without
  // giving back their allocations (see the file comment). Idempotent.
  void Stop(Duration grace);

  // Sessions open now.
  size_t sessions() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace qm::mcp

#endif  // QM_MCP_HTTP_TRANSPORT_H_
