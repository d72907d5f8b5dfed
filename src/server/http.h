// The HTTP transport of `qm serve`: an asynchronous HTTP/1.1 server on
// Boost.Beast (kept out of this header so that only http.cc pays for it).
//
// Connections cost no thread while they are idle, waiting for an answer
// that comes later (a long-poll allocate), or streaming events: each lives
// on the I/O threads' event loop, and a handler answers when it is ready,
// from any thread.
//
// Limits enforced here, before any handler runs: request headers over
// `max_header_bytes` (431), bodies over `max_body_bytes` (413), a request
// not fully read within `read_timeout` (408, then closed), a keep-alive
// connection idle for `idle_timeout` (closed). Malformed HTTP gets 400.
// These answers carry the JSON error envelope made by `error_body`.
//
// Thread safety: Start/Stop from one thread; Responder and Stream may be
// used from any thread.
#ifndef QM_SERVER_HTTP_H_
#define QM_SERVER_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"

namespace qm::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query as sent ("/v1/queue?limit=5")
  std::string path;    // the target's path, percent-decoded
  // The path's segments after the leading '/' ("/" has one, empty): split
  // at each '/' before decoding, then each decoded, so an encoded "%2F"
  // stays inside its segment ("/v1/usage/team%2Fwf" has 3: the id is
  // "team/wf"). Routes match on these.
  std::vector<std::string> segments;
  // The query's parameters in order, percent-decoded ('+' is a space).
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  std::string remote_address;  // the peer's IP address
  bool remote_is_loopback = false;

  // The first header named `name` (lower-case), or "".
  std::string_view Header(std::string_view name) const;
  // The first query parameter named `name`, or nullptr.
  const std::string* Query(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones
  std::string body;
};

// An event stream (Server-Sent Events, or any chunked stream) opened by a
// handler. Send queues data for the client in order; it returns false once
// the client is gone or the server stops (then the owner should drop it).
// A stream closes when the last reference to it goes away, or at Close.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual bool Send(std::string data) = 0;
  virtual void Close() = 0;
  // Whether the client is still connected and the server running.
  virtual bool open() const = 0;
};

// Completes one request. Exactly one of Respond or OpenStream must be
// called, once, from any thread (a Responder dropped without either
// answers 500). Copyable: copies refer to the same request.
class Responder {
 public:
  struct State;
  explicit Responder(std::shared_ptr<State> state);
  void Respond(HttpResponse response) const;
  // Answers 200 with `content_type` and no length, and keeps the connection
  // for data sent through the returned stream.
  std::shared_ptr<Stream> OpenStream(
      std::string content_type = "text/event-stream",
      std::vector<std::pair<std::string, std::string>> headers = {}) const;
  // Whether the client is still connected (a waiting handler may give up).
  bool connected() const;

  // A Responder for a request made inside the process rather than read
  // from a connection (the MCP endpoint calling the API as its caller):
  // `done` gets the answer once, on the answering thread. Such a request
  // cannot stream: OpenStream answers 501 and returns a closed stream.
  static Responder InProcess(std::function<void(HttpResponse)> done);

 private:
  std::shared_ptr<State> state_;
};

// Sets `r`'s target and, from it, its path and query as the server reads
// them off the wire (percent-decoded; '+' is a space in the query). For
// requests made inside the process.
void SetTarget(HttpRequest* r, std::string_view target);

// Called on an I/O thread for every complete request; must not block (hand
// slow work to another thread and answer through the responder from there).
using HttpHandler = std::function<void(HttpRequest, Responder)>;

struct HttpOptions {
  // "host:port" to listen on; port 0 picks a free one. Default
  // 127.0.0.1:7070.
  std::string listen = "127.0.0.1:7070";
  // Event-loop threads. Default 2.
  int io_threads = 2;
  // Default 1 MiB.
  size_t max_body_bytes = size_t{1} << 20;
  // Default 16 KiB.
  size_t max_header_bytes = size_t{16} << 10;
  // Time to receive a whole request once its first byte came. Default 10 s.
  Duration read_timeout = std::chrono::seconds(10);
  // Time a keep-alive connection may sit idle between requests. Default
  // 120 s.
  Duration idle_timeout = std::chrono::seconds(120);
  // Time to write an answer (a client that does not read is dropped).
  // Default 30 s.
  Duration write_timeout = std::chrono::seconds(30);
  // The body of an error answered by the transport itself: (HTTP status,
  // error) -> JSON text. Default: a minimal {"status":"error",...}.
  std::function<std::string(int, const Status&)> error_body;
  // TLS: PEM certificate chain and private key files; both empty = plain
  // HTTP.
  std::string tls_cert_file, tls_key_file;
};

class HttpServer {
 public:
  // Binds and starts serving. INVALID_REQUEST for a malformed address;
  // UNAVAILABLE when it cannot be bound (naming the address and the
  // reason).
  static StatusOr<std::unique_ptr<HttpServer>> Start(HttpOptions options,
                                                     HttpHandler handler);
  ~HttpServer();  // Stop(0) if still running

  // The address actually bound ("127.0.0.1:41234").
  std::string address() const;
  uint16_t port() const;

  // Stops accepting, lets requests in flight finish for up to `grace`
  // (streams are closed at once), then closes every connection and joins
  // the I/O threads.
  void Stop(Duration grace);

  // Connections open now, and requests whose answer is pending.
  size_t connections() const;
  size_t in_flight() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::server

#endif  // QM_SERVER_HTTP_H_
