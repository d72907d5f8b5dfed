#include "server/mcp_endpoint.h"

#include <future>
#include <mutex>
#include <string>
#include <utility>

#include "api/json_codec.h"
#include "mcp/backend.h"
#include "server/service.h"

namespace qm::server {

struct McpEndpoint::Gate {
  std::mutex mu;
  Service* service = nullptr;  // guarded by mu; null once stopped
};

namespace {

// A session's way to the API: each call is a request made in-process with
// the identity of the request that opened the session.
class ServiceBackend : public mcp::Backend {
 public:
  ServiceBackend(std::shared_ptr<McpEndpoint::Gate> gate,
                 const HttpRequest& opener)
      : gate_(std::move(gate)),
        authorization_(opener.Header("authorization")),
        remote_address_(opener.remote_address),
        remote_is_loopback_(opener.remote_is_loopback) {}

  StatusOr<HttpResponse> Call(std::string_view method, std::string_view target,
                              std::string_view body,
                              Duration timeout) override {
    HttpRequest req;
    req.method = std::string(method);
    SetTarget(&req, target);
    req.body = std::string(body);
    if (!body.empty()) {
      req.headers.emplace_back("content-type", "application/json");
    }
    if (!authorization_.empty()) {
      req.headers.emplace_back("authorization", authorization_);
    }
    req.remote_address = remote_address_;
    req.remote_is_loopback = remote_is_loopback_;
    auto answer = std::make_shared<std::promise<HttpResponse>>();
    std::future<HttpResponse> done = answer->get_future();
    {
      std::lock_guard<std::mutex> lock(gate_->mu);
      if (gate_->service == nullptr) {
        return Unavailable("the qm server is stopping");
      }
      gate_->service->Call(std::move(req), [answer](HttpResponse r) {
        answer->set_value(std::move(r));
      });
    }
    const Duration limit =
        timeout.count() > 0 ? timeout : Duration(std::chrono::seconds(30));
    if (done.wait_for(limit) != std::future_status::ready) {
      return DeadlineExceeded("no answer from this server to " + req.method +
                              " " + std::string(target) + " within " +
                              std::to_string(limit.count()) + " ms");
    }
    return done.get();
  }

  std::string Describe() const override { return "this qm server"; }

 private:
  const std::shared_ptr<McpEndpoint::Gate> gate_;
  const std::string authorization_;
  const std::string remote_address_;
  const bool remote_is_loopback_;
};

}  // namespace

McpEndpoint::McpEndpoint(Service* service, mcp::HttpTransportOptions options)
    : gate_(std::make_shared<Gate>()) {
  gate_->service = service;
  options.error_body = [](int, const Status& s) {
    return api::ErrorEnvelope("mcp", SystemClock::Default()->Now(), s).dump() +
           "\n";
  };
  transport_ = std::make_unique<mcp::HttpTransport>(
      [gate = gate_](const HttpRequest& opener) {
        return std::make_shared<ServiceBackend>(gate, opener);
      },
      std::move(options));
}

McpEndpoint::~McpEndpoint() { Stop(Duration(0)); }

void McpEndpoint::Handle(HttpRequest request, Responder responder) {
  transport_->Handle(std::move(request), std::move(responder));
}

void McpEndpoint::Stop(Duration grace) {
  transport_->Stop(grace);
  std::lock_guard<std::mutex> lock(gate_->mu);
  gate_->service = nullptr;
}

size_t McpEndpoint::sessions() const { return transport_->sessions(); }

}  // namespace qm::server
