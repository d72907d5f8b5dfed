// A keep-alive HTTP/1.1 client for the load generators (qm_load, and
// qm_peer_load's etcd peer): plain TCP, one request at a time, blocking
// writes and reads made straight on the socket (Boost.Beast's synchronous
// API) with the timeout set on the socket itself.
//
// It does as little per call as the peers' own client libraries (hiredis,
// libpq) do, so that the machine's cores go to the servers being compared,
// not to the load generator. server::HttpClient (the CLI's) runs an event
// loop per call for its timeouts, TLS and redirects, which cost about as
// much CPU as the server's side of the call. No TLS, no redirects.
//
// Thread safety: one thread at a time per client.
#ifndef QM_BENCH_LOAD_PLAIN_HTTP_H_
#define QM_BENCH_LOAD_PLAIN_HTTP_H_

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "qm/status.h"

namespace qm::bench {

class PlainHttp {
 public:
  // `url`: "http://host:port" or "host:port". Connects on the first call.
  // `timeout`: for connecting, and for each write and read on the socket.
  explicit PlainHttp(std::string url, std::chrono::milliseconds timeout =
                                          std::chrono::seconds(30));
  ~PlainHttp();
  PlainHttp(const PlainHttp&) = delete;
  PlainHttp& operator=(const PlainHttp&) = delete;

  struct Answer {
    int status = 0;
    std::string body;
  };

  // Sends `method target` with `body` (as application/json when not
  // empty) and reads the whole answer. UNAVAILABLE when the server cannot
  // be reached or the connection fails (the next call connects again);
  // DEADLINE_EXCEEDED when the timeout ran out. Not retried: the caller
  // counts the error.
  StatusOr<Answer> Call(std::string_view method, std::string_view target,
                        std::string_view body = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::bench

#endif  // QM_BENCH_LOAD_PLAIN_HTTP_H_
