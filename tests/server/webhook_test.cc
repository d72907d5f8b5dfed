// Webhooks: events POSTed to configured URLs as they happen, retried when
// the receiver fails.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server/http.h"
#include "server/server_config.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
using testing::ClientOf;
using testing::TempDir;

// An HTTP receiver that records the bodies POSTed to it, failing the first
// `fail_first` requests with 503.
class Receiver {
 public:
  explicit Receiver(int fail_first = 0) : fail_left_(fail_first) {
    HttpOptions o;
    o.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(o, [this](HttpRequest req, Responder r) {
      HttpResponse resp;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++requests_;
        if (fail_left_ > 0) {
          --fail_left_;
          resp.status = 503;
        } else {
          bodies_.push_back(Json::parse(req.body, nullptr, false));
          paths_.push_back(req.target);
        }
      }
      cv_.notify_all();
      r.Respond(std::move(resp));
    });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }
  std::string url(const std::string& path) const {
    return "http://" + server_->address() + path;
  }
  // Waits up to `timeout` for `n` recorded bodies; returns them.
  std::vector<Json> WaitFor(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return bodies_.size() >= n; });
    return bodies_;
  }
  int requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::vector<std::string> paths() {
    std::lock_guard<std::mutex> lock(mu_);
    return paths_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int fail_left_;
  int requests_ = 0;
  std::vector<Json> bodies_;
  std::vector<std::string> paths_;
  std::unique_ptr<HttpServer> server_;
};

TEST(WebhookTest, MatchingEventsArePostedAndRetried) {
  Receiver receiver(/*fail_first=*/1);
  TempDir dir;
  ServerConfig auth;
  auth.webhooks = {{receiver.url("/hooks/qm?src=test"), {"granted"}, "web", 3}};
  auto app = testing::StartApp(dir.path(), "", auth);
  ASSERT_TRUE(app);
  HttpClient c = ClientOf("http://" + app->address());
  ASSERT_EQ(c.Call("POST", "/v1/allocations",
                   R"({"workflow_id": "w", "product": "web"})")
                ->status,
            200);
  // Another product's grant is not for this webhook.
  ASSERT_EQ(c.Call("POST", "/v1/allocations",
                   R"({"workflow_id": "w", "product": "api"})")
                ->status,
            200);
  const std::vector<Json> got =
      receiver.WaitFor(1, std::chrono::milliseconds(5000));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["type"], "granted");
  EXPECT_EQ(got[0]["product"], "web");
  EXPECT_EQ(receiver.paths()[0], "/hooks/qm?src=test");
  // The first attempt failed with 503; the retry delivered it.
  EXPECT_EQ(receiver.requests(), 2);
  EXPECT_TRUE(app->Stop(std::chrono::seconds(5)).ok());
}

TEST(WebhookTest, ConfigNamesBadEntriesAndDefaultsToAlerts) {
  auto c = LoadServerConfigString(
      "server:\n  webhooks:\n    - url: http://localhost:9/x\n", "qm.yml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->webhooks.size(), 1u);
  EXPECT_EQ(c->webhooks[0].types, DefaultAlertTypes());
  EXPECT_EQ(c->webhooks[0].retries, 5);
  for (const auto& [yaml, want] :
       std::vector<std::pair<std::string, std::string>>{
           {"server: {webhooks: [{url: ftp://x}]}", "server.webhooks[0].url"},
           {"server: {webhooks: [{url: http://x, types: [granted, nope]}]}",
            "server.webhooks[0].types"},
           {"server: {webhooks: [{url: http://x, retries: 99}]}",
            "server.webhooks[0].retries"},
           {"server: {webhooks: [{url: http://x, secret: 1}]}",
            "server.webhooks[0].secret"}}) {
    auto r = LoadServerConfigString(yaml, "qm.yml");
    ASSERT_FALSE(r.ok()) << yaml;
    EXPECT_NE(r.status().message().find(want), std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace qm::server
