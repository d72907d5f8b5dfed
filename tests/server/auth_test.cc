// Tenants and auth: tokens (their SHA-256 in the config), roles, product
// confinement of agent tokens, rate limits; the `server:` config section.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "qm/config_loader.h"
#include "server/server_config.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
using testing::ClientOf;
using testing::TempDir;

constexpr const char* kTokA = "qm_agent_a_secret";
constexpr const char* kTokB = "qm_agent_b_secret";
constexpr const char* kTokOp = "qm_operator_secret";
constexpr const char* kTokAdmin = "qm_admin_secret";

ServerConfig Tokens(double rate = 0) {
  ServerConfig c;
  c.tokens = {
      {"agent-a", Sha256Hex(kTokA), Role::kAgent, {"a"}},
      {"agent-b", Sha256Hex(kTokB), Role::kAgent, {"b"}},
      {"ops", Sha256Hex(kTokOp), Role::kOperator, {}},
      {"root", Sha256Hex(kTokAdmin), Role::kAdmin, {}},
  };
  c.rate_limit_per_second = rate;
  return c;
}

class AuthTest : public ::testing::Test {
 protected:
  void Start(ServerConfig auth) {
    app_ = testing::StartApp(dir_.path(), "max_concurrent: {total: 1}\n",
                             std::move(auth));
    ASSERT_TRUE(app_);
    url_ = "http://" + app_->address();
  }
  void TearDown() override {
    if (app_) {
      EXPECT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
    }
  }
  // The answer's HTTP status and envelope.
  std::pair<int, Json> Call(const std::string& token, const std::string& method,
                            const std::string& target,
                            const std::string& body = "") {
    HttpClient c = ClientOf(url_, token);
    auto r = c.Call(method, target, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {0, Json()};
    return {r->status, Json::parse(r->body, nullptr, false)};
  }
  std::string Allocate(const std::string& token, const std::string& product) {
    auto [status, j] = Call(token, "POST", "/v1/allocations",
                            R"({"workflow_id": "w-)" + product +
                                R"(", "product": ")" + product + "\"}");
    EXPECT_EQ(status, 200) << j.dump();
    return j["result"].value("allocation_id", "");
  }

  TempDir dir_;
  std::unique_ptr<App> app_;
  std::string url_;
};

TEST_F(AuthTest, RequestsNeedAKnownToken) {
  Start(Tokens());
  auto [none, j] = Call("", "GET", "/v1/status");
  EXPECT_EQ(none, 401);
  EXPECT_EQ(j["error"]["code"], "UNAUTHENTICATED");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("Bearer"),
            std::string::npos);
  EXPECT_EQ(Call("qm_wrong", "GET", "/v1/status").first, 401);
  // Probes need none.
  HttpClient anon = ClientOf(url_);
  EXPECT_EQ(anon.Call("GET", "/healthz")->status, 200);
  EXPECT_EQ(anon.Call("GET", "/readyz")->status, 200);
  EXPECT_EQ(Call(kTokA, "GET", "/v1/status").first, 200);
}

// An agent token of product A can neither see nor touch product B's
// allocations, nor allocate in B.
TEST_F(AuthTest, AgentTokensAreConfinedToTheirProducts) {
  Start(Tokens());
  const std::string a = Allocate(kTokA, "a");
  const std::string b_queued = Allocate(kTokB, "b");  // queued: total 1

  auto [forbidden, fj] = Call(kTokA, "POST", "/v1/allocations",
                              R"({"workflow_id": "x", "product": "b"})");
  EXPECT_EQ(forbidden, 403);
  EXPECT_NE(fj["error"]["message"].get<std::string>().find("product"),
            std::string::npos);
  EXPECT_EQ(
      Call(kTokA, "POST", "/v1/allocations", R"({"workflow_id": "x"})").first,
      403);  // the default product is not theirs either

  for (const char* suffix : {"", "/release", "/renew", "/cancel"}) {
    const std::string method = *suffix ? "POST" : "GET";
    auto [status, j] = Call(kTokB, method, "/v1/allocations/" + a + suffix);
    EXPECT_EQ(status, 404) << suffix << " " << j.dump();
    EXPECT_EQ(j["error"]["code"], "NOT_FOUND");
  }
  // Still there, untouched.
  EXPECT_EQ(
      Call(kTokA, "GET", "/v1/allocations/" + a).second["result"]["status"],
      "active");

  auto [ls, list] = Call(kTokB, "GET", "/v1/allocations");
  ASSERT_EQ(ls, 200);
  ASSERT_EQ(list["result"]["allocations"].size(), 1u);
  EXPECT_EQ(list["result"]["allocations"][0]["allocation_id"], b_queued);
  EXPECT_EQ(Call(kTokB, "GET", "/v1/allocations?product=a").first, 403);
  EXPECT_EQ(Call(kTokA, "GET", "/v1/queue").second["result"]["queue"].size(),
            0u);
  EXPECT_EQ(Call(kTokB, "GET", "/v1/queue").second["result"]["queue"].size(),
            1u);

  // Events: agent B sees its product's, not A's.
  HttpClient events = ClientOf(url_, kTokB);
  std::vector<std::string> products;
  Status s = events.Stream(
      "/v1/events?after=0",
      [&](const std::string& id, const std::string&, const std::string& data) {
        if (id.empty()) return true;
        products.push_back(Json::parse(data).value("product", ""));
        return false;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(products.size(), 1u);
  EXPECT_EQ(products[0], "b");

  // The owner releases; B's request starts.
  EXPECT_EQ(Call(kTokA, "POST", "/v1/allocations/" + a + "/release").first,
            200);
  EXPECT_EQ(Call(kTokB, "GET", "/v1/allocations/" + b_queued)
                .second["result"]["status"],
            "active");
}

TEST_F(AuthTest, RolesGateOperatorAndAdminRoutes) {
  Start(Tokens());
  auto [agent, aj] =
      Call(kTokA, "POST", "/v1/overrides/pause", R"({"reason": "x"})");
  EXPECT_EQ(agent, 403);
  EXPECT_EQ(aj["error"]["code"], "PERMISSION_DENIED");
  EXPECT_NE(aj["error"]["message"].get<std::string>().find("operator"),
            std::string::npos);
  EXPECT_EQ(Call(kTokA, "GET", "/metrics").first, 403);

  auto [op, oj] = Call(kTokOp, "POST", "/v1/overrides/pause",
                       R"({"reason": "maintenance"})");
  EXPECT_EQ(op, 200) << oj.dump();
  EXPECT_EQ(oj["result"]["paused"], true);
  // The token's name is the actor.
  auto [cs, costs] = Call(kTokOp, "GET", "/v1/costs");
  EXPECT_EQ(costs["result"]["paused_by"], "ops") << costs.dump();
  EXPECT_EQ(Call(kTokOp, "POST", "/v1/overrides/resume").first, 200);
  // Operators work in any product.
  Allocate(kTokOp, "b");

  EXPECT_EQ(Call(kTokOp, "POST", "/v1/config/reload").first, 403);
  // Admins may; this server has no --config file to reload.
  EXPECT_EQ(Call(kTokAdmin, "POST", "/v1/config/reload").first, 409);
}

TEST_F(AuthTest, RateLimitPerToken) {
  Start(Tokens(/*rate=*/2));
  int limited = 0;
  std::string message;
  for (int i = 0; i < 6; ++i) {
    auto [status, j] = Call(kTokA, "GET", "/v1/status");
    if (status == 429) {
      ++limited;
      message = j["error"]["message"];
      EXPECT_EQ(j["error"]["code"], "RATE_LIMITED");
    }
  }
  EXPECT_GE(limited, 3);
  EXPECT_NE(message.find("agent-a"), std::string::npos) << message;
  // Another token has its own budget.
  EXPECT_EQ(Call(kTokB, "GET", "/v1/status").first, 200);
}

TEST(AuthStartTest, TokensAllowANonLoopbackAddress) {
  TempDir dir;
  auto app = testing::StartApp(dir.path(), "", Tokens(), "0.0.0.0:0");
  ASSERT_TRUE(app);
  EXPECT_TRUE(app->Stop(std::chrono::seconds(5)).ok());
}

TEST(ServerConfigTest, ReadsTheServerSection) {
  const std::string digest = Sha256Hex("t");
  auto c = LoadServerConfigString(
      "server:\n  rate_limit_per_second: 50\n"
      "  auth:\n    tokens:\n"
      "      - {name: bot, sha256: " +
          digest + ", role: agent, products: [web]}\n",
      "qm.yml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rate_limit_per_second, 50);
  ASSERT_EQ(c->tokens.size(), 1u);
  EXPECT_EQ(c->tokens[0].role, Role::kAgent);
  EXPECT_EQ(c->tokens[0].products, std::vector<std::string>{"web"});
  // The engine's loader leaves the section to the server.
  auto engine = LoadConfigString("server:\n  rate_limit_per_second: 50\n");
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  // No section: no tokens.
  EXPECT_TRUE(LoadServerConfigString("max_concurrent: {total: 3}\n", "x")
                  ->tokens.empty());
}

TEST(ServerConfigTest, BadEntriesNameTheKey) {
  const std::string d = Sha256Hex("t");
  const struct {
    std::string yaml;
    const char* want;
  } cases[] = {
      {"server: {auth: {tokens: [{name: a, sha256: abc, role: admin}]}}",
       "server.auth.tokens[0].sha256"},
      {"server: {auth: {tokens: [{name: a, sha256: " + d + ", role: root}]}}",
       "server.auth.tokens[0].role"},
      {"server: {auth: {tokens: [{name: a, sha256: " + d + ", role: agent}]}}",
       "server.auth.tokens[0].products"},
      {"server: {auth: {tokens: [{sha256: " + d + ", role: admin}]}}",
       "server.auth.tokens[0].name"},
      {"server: {auth: {tokens: [{name: a, sha256: " + d +
           ", role: admin}, {name: a, sha256: " + Sha256Hex("u") +
           ", role: admin}]}}",
       "server.auth.tokens[1].name"},
      {"server: {auth: {tokenz: []}}", "server.auth.tokenz"},
      {"server: {rate_limit_per_second: -1}", "server.rate_limit_per_second"},
  };
  for (const auto& c : cases) {
    auto r = LoadServerConfigString(c.yaml, "qm.yml");
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
    EXPECT_NE(r.status().message().find(c.want), std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace qm::server
