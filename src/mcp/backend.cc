#include "mcp/backend.h"

#include <cctype>
#include <mutex>
#include <utility>
#include <vector>

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

class HttpBackend : public Backend {
 public:
  explicit HttpBackend(server::ClientOptions options)
      : options_(std::move(options)) {}

  StatusOr<server::HttpResponse> Call(std::string_view method,
                                      std::string_view target,
                                      std::string_view body,
                                      Duration timeout) override {
    std::unique_ptr<server::HttpClient> client = Take();
    auto r = client->Call(method, target, body, timeout);
    // A client whose call failed may hold a broken connection: drop it.
    if (r.ok()) Give(std::move(client));
    return r;
  }

  std::string Describe() const override { return options_.url; }

 private:
  // At most this many idle connections are kept.
  static constexpr size_t kMaxIdle = 4;

  std::unique_ptr<server::HttpClient> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    return std::make_unique<server::HttpClient>(options_);
  }

  void Give(std::unique_ptr<server::HttpClient> c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
  }

  const server::ClientOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<server::HttpClient>> idle_;  // guarded by mu_
};

class HolderBackend : public Backend {
 public:
  HolderBackend(std::shared_ptr<Backend> inner, Json holder)
      : inner_(std::move(inner)), holder_(std::move(holder)) {}

  StatusOr<server::HttpResponse> Call(std::string_view method,
                                      std::string_view target,
                                      std::string_view body,
                                      Duration timeout) override {
    if (method != "POST" || target != "/v1/allocations") {
      return inner_->Call(method, target, body, timeout);
    }
    Json j = body.empty() ? Json::object()
                          : Json::parse(body, nullptr, /*allow_exceptions=*/
                                        false);
    // A body that is not an object goes as it is: the server refuses it.
    if (!j.is_object()) return inner_->Call(method, target, body, timeout);
    j["holder"] = holder_;
    return inner_->Call(method, target,
                        j.dump(-1, ' ', false, Json::error_handler_t::replace),
                        timeout);
  }

  std::string Describe() const override { return inner_->Describe(); }

 private:
  const std::shared_ptr<Backend> inner_;
  const Json holder_;
};

}  // namespace

std::shared_ptr<Backend> NewHttpBackend(server::ClientOptions options) {
  return std::make_shared<HttpBackend>(std::move(options));
}

std::shared_ptr<Backend> WithHolder(std::shared_ptr<Backend> backend,
                                    Json holder) {
  return std::make_shared<HolderBackend>(std::move(backend), std::move(holder));
}

Json MakeError(Code code, const std::string& message) {
  return Json{{"code", std::string(CodeName(code))}, {"message", message}};
}

ApiAnswer CallApi(Backend& backend, std::string_view method,
                  std::string_view target, const Json& body, Duration timeout) {
  const std::string text =
      body.is_null() || (body.is_object() && body.empty())
          ? std::string()
          : body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return Unwrap(backend, backend.Call(method, target, text, timeout));
}

ApiAnswer Unwrap(const Backend& backend,
                 const StatusOr<server::HttpResponse>& resp) {
  ApiAnswer a;
  if (!resp.ok()) {
    std::string message = resp.status().message();
    if (resp.status().code() == Code::kUnavailable) {
      message +=
          ": start one with `qm serve`, or point --server / $QM_SERVER at one";
    }
    a.error = MakeError(resp.status().code(), message);
    return a;
  }
  Json j = Json::parse(resp->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("status") ||
      !j["status"].is_string()) {
    a.error =
        MakeError(Code::kInternal,
                  "the server at " + backend.Describe() + " answered HTTP " +
                      std::to_string(resp->status) +
                      " without a qm envelope: " + resp->body.substr(0, 200));
    return a;
  }
  if (j["status"] == "success") {
    a.ok = true;
    a.result = j.contains("result") ? j["result"] : Json::object();
    if (j.contains("recommendations") && j["recommendations"].is_array()) {
      a.recommendations = j["recommendations"];
    }
    return a;
  }
  const Json& e = j.contains("error") && j["error"].is_object()
                      ? j["error"]
                      : Json::object();
  a.error = Json::object();
  a.error["code"] = e.contains("code") && e["code"].is_string()
                        ? e["code"]
                        : Json("INTERNAL");
  a.error["message"] = e.contains("message") && e["message"].is_string()
                           ? e["message"]
                           : Json(
                                 "the server answered an error without a "
                                 "message (HTTP " +
                                 std::to_string(resp->status) + ")");
  if (e.contains("details") && e["details"].is_string() &&
      !e["details"].get_ref<const std::string&>().empty()) {
    a.error["details"] = e["details"];
  }
  if (e.contains("context") && e["context"].is_object() &&
      !e["context"].empty()) {
    a.error["context"] = e["context"];
  }
  for (const char* key : {"recovery_suggestions", "alternative_options"}) {
    if (j.contains(key) && j[key].is_array() && !j[key].empty()) {
      a.error[key] = j[key];
    }
  }
  return a;
}

}  // namespace qm::mcp
