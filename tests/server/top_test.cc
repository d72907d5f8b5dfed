// `qm top --once` (src/cli/top_cmd.cc) against a real server (the App on
// SQLite in a temporary directory, HTTP on port 0) with a small workload:
// the frame it prints shows the figures GET /v1/status and /v1/costs give.
// Also the dashboard's static files (src/server/dashboard.h) as served.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "server/app.h"
#include "server/http_client.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::json;
using testing::ClientOf;
using testing::StartApp;
using testing::TempDir;

constexpr const char* kConfig = R"(
max_concurrent:
  total: 3
  per_type:
    coder: 2
pricing:
  default_model: sonnet
  models:
    sonnet: {input_per_million: 3, output_per_million: 15}
daily_limits:
  max_tokens_total: 2000000
  max_cost_usd: 100
)";

// Runs `command` and returns its stdout and exit code.
std::pair<std::string, int> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {"", -1};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

class TopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    app_ = StartApp(dir_.path(), kConfig);
    ASSERT_TRUE(app_);
    url_ = "http://" + app_->address();
  }

  Json Call(const std::string& method, const std::string& target,
            const std::string& body = "") {
    HttpClient client = ClientOf(url_);
    auto r = client.Call(method, target, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    Json j = Json::parse(r->body, nullptr, false);
    EXPECT_EQ(j.value("status", ""), "success") << target << ": " << r->body;
    return j["result"];
  }

  std::string Allocate(const std::string& workflow, const std::string& type,
                       const std::string& product) {
    Json a = Call("POST", "/v1/allocations",
                  R"({"workflow_id": ")" + workflow + R"(", "agent_type": ")" +
                      type + R"(", "product": ")" + product + R"("})");
    return a.value("allocation_id", "");
  }

  TempDir dir_;
  std::unique_ptr<App> app_;
  std::string url_;
};

TEST_F(TopTest, OnceShowsTheServersFigures) {
  const std::string a1 = Allocate("w1", "coder", "web");
  Allocate("w2", "coder", "web");
  const std::string queued = Allocate("w3", "coder", "api");  // coder: 2 max
  Allocate("w4", "reviewer", "api");
  Call(
      "POST", "/v1/allocations/" + a1 + "/usage",
      R"({"report_id": "r1", "input_tokens": 100000, "output_tokens": 20000})");

  const Json status = Call("GET", "/v1/status");
  const Json costs = Call("GET", "/v1/costs");
  ASSERT_EQ(status["resources"]["agents"]["allocated"].get<double>(), 3);
  ASSERT_EQ(status["allocations"]["queued"].get<int>(), 1);
  ASSERT_EQ(costs["tokens_used"].get<int64_t>(), 120000);

  auto [out, code] = RunCommand("COLUMNS=160 '" + std::string(QM_BINARY) +
                                "' top --once --server " + url_ + " 2>&1");
  ASSERT_EQ(code, 0) << out;
  SCOPED_TRACE(out);
  // No escapes when not on a terminal.
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  // Agents active / limit and the queue, as /v1/status says.
  EXPECT_NE(out.find("Agents  3/3 active"), std::string::npos);
  EXPECT_NE(out.find("queued 1"), std::string::npos);
  EXPECT_NE(out.find("allocations 3"), std::string::npos);
  // Today's tokens and cost against the limits, as /v1/costs says:
  // 100k input at $3/M + 20k output at $15/M = $0.60.
  EXPECT_NE(out.find("tokens 120,000 / 2,000,000"), std::string::npos);
  EXPECT_NE(out.find("cost $0.600 / $100.00"), std::string::npos);
  // Per type and per product: running, limit, queued.
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(coder +2 +2 +1)")));
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(reviewer +1 +- +0)")));
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(web +2 +- +0)")));
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(api +1 +- +1)")));
  // The queued request with its reason, and the active allocations.
  EXPECT_NE(out.find("Queue (1)"), std::string::npos);
  EXPECT_TRUE(std::regex_search(
      out, std::regex("1 +" + queued + " +api +coder +normal +[0-9.]+")));
  EXPECT_NE(out.find("max coder (2) already running"), std::string::npos);
  EXPECT_NE(out.find("Allocations (3 active)"), std::string::npos);
  EXPECT_TRUE(std::regex_search(
      out, std::regex(a1 + " +w1 +web +coder +normal +sonnet +120,000")));
  // Health, when the server reports it.
  if (status.contains("health") && status["health"].is_object()) {
    EXPECT_NE(out.find("health " +
                       status["health"]["overall_status"].get<std::string>()),
              std::string::npos);
  }

  // Paused shows in the title.
  Call("POST", "/v1/overrides/pause", R"({"reason": "test"})");
  auto [paused, pcode] = RunCommand("'" + std::string(QM_BINARY) +
                                    "' top --once --server " + url_ + " 2>&1");
  EXPECT_EQ(pcode, 0);
  EXPECT_NE(paused.find("PAUSED"), std::string::npos) << paused;
}

TEST_F(TopTest, OnceWithoutAServerFails) {
  auto [out, code] =
      RunCommand("'" + std::string(QM_BINARY) +
                 "' top --once --server http://127.0.0.1:1 2>&1");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("no qm server"), std::string::npos) << out;
}

// The dashboard: the page to browsers at GET /, the route list to others,
// its files with their types and ETags, 304 on revalidation, 404 for others.
TEST_F(TopTest, DashboardIsServed) {
  HttpClient client = ClientOf(url_);
  auto page = client.Call("GET", "/", "", Duration(0),
                          {{"Accept", "text/html,application/xhtml+xml"}});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->content_type.rfind("text/html", 0), 0u);
  EXPECT_NE(page->body.find("/dashboard/app.js"), std::string::npos);
  auto list = client.Call("GET", "/");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->content_type.rfind("application/json", 0), 0u);

  auto js = client.Call("GET", "/dashboard/app.js");
  ASSERT_TRUE(js.ok());
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->content_type.rfind("text/javascript", 0), 0u);
  std::string etag, cache;
  for (const auto& [k, v] : js->headers) {
    if (k == "etag") etag = v;
    if (k == "cache-control") cache = v;
  }
  EXPECT_FALSE(etag.empty());
  EXPECT_EQ(cache, "no-cache");
  auto again = client.Call("GET", "/dashboard/app.js", "", Duration(0),
                           {{"If-None-Match", etag}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 304);
  EXPECT_TRUE(again->body.empty());
  auto css = client.Call("GET", "/dashboard/style.css");
  ASSERT_TRUE(css.ok());
  EXPECT_EQ(css->content_type.rfind("text/css", 0), 0u);
  auto missing = client.Call("GET", "/dashboard/nope.js");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

}  // namespace
}  // namespace qm::server
