// A small blocking HTTP/1.1 client on Boost.Beast, for the `qm` CLI, `qm
// run`, `qm hook`, the end-to-end tests and the load generator: one
// keep-alive connection to one server, plus reading an event stream.
//
// Errors: UNAVAILABLE when the server cannot be reached (the message names
// the URL: "no qm server at http://127.0.0.1:7070 (connection refused)"),
// DEADLINE_EXCEEDED when the answer does not come within the timeout,
// INVALID_REQUEST for a malformed URL. An HTTP error status is not an
// error here: the response carries it.
//
// Thread safety: one HttpClient per thread.
#ifndef QM_SERVER_HTTP_CLIENT_H_
#define QM_SERVER_HTTP_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"
#include "server/http.h"

namespace qm::server {

// "a/b c" -> "a%2Fb%20c": percent-encodes everything but the unreserved
// characters (RFC 3986), for ids and query values in request targets.
std::string UrlEncode(std::string_view s);

struct ClientOptions {
  // "http://host:port" (https:// when the server has TLS). Default
  // http://127.0.0.1:7070.
  std::string url = "http://127.0.0.1:7070";
  // Sent as "Authorization: Bearer <token>" when not empty.
  std::string token;
  // Time to connect. Default 2 s.
  Duration connect_timeout = std::chrono::seconds(2);
  // Time for a whole answer (requests may raise it, e.g. a waiting
  // allocate). Default 30 s.
  Duration timeout = std::chrono::seconds(30);
  // Follow 307/308 redirects with the same method, body and headers (a
  // follower among several servers on one PostgreSQL names its leader so).
  // Default true, at most 3 hops within the one timeout.
  bool follow_redirects = true;
  // https:// only: verify the server's certificate (and that it names the
  // URL's host) against `ca_file` (PEM), or the system's CAs when empty.
  // Turning verification off is for tests with self-signed certificates.
  bool verify_tls = true;
  std::string ca_file;
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request ("/v1/allocations", a JSON body or "") and returns
  // the whole answer. Reuses the connection when the server keeps it open;
  // reconnects once if a kept connection turns out closed before anything
  // was sent. `timeout` 0 = the client's default.
  StatusOr<HttpResponse> Call(
      std::string_view method, std::string_view target,
      std::string_view body = "", Duration timeout = Duration(0),
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  // Opens `target` as an event stream (Server-Sent Events) on a connection
  // of its own and calls `on_event(id, event, data)` for each event until
  // it returns false, the server ends the stream, or `timeout` passes
  // without data (0 = no limit). OK when stopped by the callback or ended
  // by the server. As the SSE spec has it, `event` is "message" when the
  // event names no type, and `id` is the last id seen (it carries over to
  // later events). A non-200 answer is an error (the envelope's code when
  // the body is one).
  Status Stream(
      std::string_view target,
      const std::function<bool(const std::string& id, const std::string& event,
                               const std::string& data)>& on_event,
      Duration timeout = Duration(0),
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  const ClientOptions& options() const { return options_; }

  class Impl;

 private:
  ClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::server

#endif  // QM_SERVER_HTTP_CLIENT_H_
