// How the MCP server reaches the qm server whose state its tools report and
// change: one HTTP request at a time, as the `qm` CLI does. Every figure a
// tool or resource answers comes from these answers.
//
// The stdio transport (`qm mcp`) uses HttpBackend, a client of the server
// named by --server / $QM_SERVER with $QM_TOKEN. The Streamable HTTP
// transport inside `qm serve` may plug in its own Backend (calling the
// service in-process with the caller's identity).
//
// Thread safety: Backend implementations must allow concurrent Calls.
#ifndef QM_MCP_BACKEND_H_
#define QM_MCP_BACKEND_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "qm/clock.h"
#include "qm/status.h"
#include "server/http.h"
#include "server/http_client.h"

namespace qm::mcp {

class Backend {
 public:
  virtual ~Backend() = default;

  // Sends one request to the qm server ("GET", "/v1/status", a JSON body or
  // "") and returns its whole answer; `timeout` 0 = the backend's default.
  // An HTTP error status is not an error here (the answer carries it);
  // errors are transport failures (UNAVAILABLE when the server cannot be
  // reached, DEADLINE_EXCEEDED when it does not answer in time).
  virtual StatusOr<server::HttpResponse> Call(std::string_view method,
                                              std::string_view target,
                                              std::string_view body,
                                              Duration timeout) = 0;

  // Where the server is, for messages ("http://127.0.0.1:7070").
  virtual std::string Describe() const = 0;
};

// A Backend over HTTP (HttpClient). Keeps a few idle keep-alive
// connections for reuse; each concurrent Call uses a connection of its own.
std::shared_ptr<Backend> NewHttpBackend(server::ClientOptions options);

// `backend`, with every allocate request (POST /v1/allocations) naming
// `holder` (the API's `holder` object: {"pid", "start_time", "boot_id"})
// as the process that holds the allocation, so that a server on the same
// host reclaims it as soon as that process exits. `qm mcp` names itself:
// it lives exactly as long as its client's session.
std::shared_ptr<Backend> WithHolder(std::shared_ptr<Backend> backend,
                                    nlohmann::json holder);

// The outcome of one /v1 call, unwrapped from the server's envelope.
struct ApiAnswer {
  // Whether the server answered its success envelope.
  bool ok = false;
  // On success: the envelope's `result` and `recommendations`.
  nlohmann::json result;
  nlohmann::json recommendations = nlohmann::json::array();
  // On failure: {"code", "message"} and, when the server gave them,
  // "details", "context", "recovery_suggestions", "alternative_options".
  // A transport failure is reported the same way (UNAVAILABLE, ...), as is
  // an answer that is not a qm envelope (INTERNAL).
  nlohmann::json error;
};

// Calls the /v1 route and unwraps the envelope.
ApiAnswer CallApi(Backend& backend, std::string_view method,
                  std::string_view target, const nlohmann::json& body = {},
                  Duration timeout = Duration(0));

// Unwraps an answer of `backend` (or its transport failure).
ApiAnswer Unwrap(const Backend& backend,
                 const StatusOr<server::HttpResponse>& resp);

// An error in ApiAnswer's `error` shape, made here (not by the server).
nlohmann::json MakeError(Code code, const std::string& message);

using server::UrlEncode;

}  // namespace qm::mcp

#endif  // QM_MCP_BACKEND_H_
