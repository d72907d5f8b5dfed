// /mcp on `qm serve`: the MCP Streamable HTTP transport (mcp/http_transport.h)
// whose sessions call this server's API in-process (Service::Call) as the
// caller that opened them: the same bearer token (or, without tokens, the
// same loopback client), so the API's own checks decide what each tool
// may do (an agent token's tools see and touch only its products). No
// rule of who may do what is repeated here.
//
// Requests reach Handle through the service's /mcp route, after its
// authentication (401 without a valid token when tokens are configured,
// 403 for a non-loopback client without them). Transport refusals carry
// the API's error envelope (operation "mcp").
//
// Thread safety: Handle from any thread; Stop once, before the service is
// destroyed.
#ifndef QM_SERVER_MCP_ENDPOINT_H_
#define QM_SERVER_MCP_ENDPOINT_H_

#include <memory>

#include "mcp/http_transport.h"
#include "qm/clock.h"
#include "server/http.h"

namespace qm::server {

class Service;

class McpEndpoint {
 public:
  // `service` must stay valid until Stop returns. `options.error_body` is
  // replaced by the API's envelope.
  McpEndpoint(Service* service, mcp::HttpTransportOptions options);
  ~McpEndpoint();  // Stop(0)
  McpEndpoint(const McpEndpoint&) = delete;
  McpEndpoint& operator=(const McpEndpoint&) = delete;

  // For ServiceOptions::mcp.
  void Handle(HttpRequest request, Responder responder);

  // Stops the transport (HttpTransport::Stop) and cuts the sessions off
  // the service: calls they make afterwards fail with UNAVAILABLE. Call
  // after Service::Shutdown (which answers the waits a running tool call
  // may be in). Idempotent.
  void Stop(Duration grace);

  size_t sessions() const;

  // The service as sessions reach it; shared with their backends.
  struct Gate;

 private:
  std::shared_ptr<Gate> gate_;
  std::unique_ptr<mcp::HttpTransport> transport_;
};

}  // namespace qm::server

#endif  // QM_SERVER_MCP_ENDPOINT_H_
