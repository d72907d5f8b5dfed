// The command line: envelopes, exit codes, help.
#include "cli/cli.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace qm {
namespace {

using Json = nlohmann::json;

struct Result {
  int code;
  std::string out, err;
};

Result Qm(std::vector<std::string> args) {
  args.insert(args.begin(), "qm");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code =
      cli::Run(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

std::string Example() {
  return std::string(QM_SOURCE_DIR) + "/examples/resource-limits.yml";
}

TEST(CliTest, ConfigValidateReportsSuccessInTheEnvelope) {
  const Result r = Qm({"config", "validate", Example()});
  ASSERT_EQ(r.code, 0) << r.out;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["status"], "success");
  EXPECT_EQ(j["operation"], "config_validate");
  EXPECT_TRUE(j["result"]["valid"].get<bool>());
  EXPECT_TRUE(j.contains("timestamp"));
  EXPECT_TRUE(j["metrics"].contains("execution_time"));
  EXPECT_TRUE(j.contains("recommendations"));
}

TEST(CliTest, ConfigValidateErrorsExitNonZeroWithTheErrorEnvelope) {
  const std::string path = testing::TempDir() + "/bad-limits.yml";
  {
    std::ofstream f(path);
    f << "max_concurrent:\n  total: 5\n  per_tipe: {a: 1}\n";
  }
  const Result r = Qm({"config", "validate", path});
  EXPECT_EQ(r.code, 1);
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["status"], "error");
  EXPECT_EQ(j["error"]["code"], "INVALID_REQUEST");
  const std::string msg = j["error"]["message"];
  EXPECT_NE(msg.find(path + ":3:3: max_concurrent.per_tipe"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("per_type"), std::string::npos) << msg;
  EXPECT_FALSE(j["recovery_suggestions"].empty());
  std::remove(path.c_str());
}

TEST(CliTest, MissingConfigIsNotFound) {
  const Result r = Qm({"config", "validate", "/nonexistent/limits.yml"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(Json::parse(r.out)["error"]["code"], "NOT_FOUND");
}

TEST(CliTest, ConfigShowFillsInDefaults) {
  const Result r = Qm({"config", "show"});
  ASSERT_EQ(r.code, 0) << r.out;
  const Json j = Json::parse(r.out);
  const Json& c = j["result"]["config"];
  EXPECT_EQ(c["max_concurrent"]["total"], 5);
  EXPECT_EQ(c["priority_levels"]["high"]["max_wait_time_minutes"], 15);
  const Result yaml =
      Qm({"config", "show", "--config", Example(), "--output", "yaml"});
  ASSERT_EQ(yaml.code, 0);
  EXPECT_NE(yaml.out.find("backend-engineer: 2"), std::string::npos)
      << yaml.out;
}

TEST(CliTest, TableOutputIsForPeople) {
  const Result r = Qm({"--output", "table", "config", "validate", Example()});
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("result.valid"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('{'), std::string::npos) << r.out;
}

TEST(CliTest, SimulatePrintsJsonLinesAndASummary) {
  const Result r = Qm({"simulate", std::string(QM_SOURCE_DIR) +
                                       "/scenarios/seed001_concurrency.yaml"});
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream in(r.out);
  std::string line, last;
  int lines = 0;
  while (std::getline(in, line)) {
    EXPECT_TRUE(Json::accept(line)) << line;
    last = line;
    ++lines;
  }
  EXPECT_GT(lines, 5);
  EXPECT_TRUE(Json::parse(last).contains("summary"));
}

// Client commands with no server to talk to: each says so in its own
// envelope (exit 1), naming the URL and how to start one. (Against a real
// server: tests/server/serve_process_test.cc.)
TEST(CliTest, ClientCommandsWithoutAServerSaySoClearly) {
  setenv("QM_SERVER", "http://127.0.0.1:1", 1);
  const struct {
    std::vector<std::string> args;
    const char* operation;
  } cases[] = {
      {{"allocate", R"({"workflow_id": "x"})"}, "allocate"},
      {{"release", "alloc_1"}, "release"},
      {{"status"}, "status"},
      {{"status", "costs"}, "status"},
      {{"usage"}, "costs"},
      {{"check-conflicts", R"({"proposed_allocation": {}})"},
       "check_conflicts"},
      {{"resolve-conflicts", R"({"conflict_id": "conf_1"})"},
       "resolve_conflicts"},
      {{"prevent-conflicts", R"({"policy_type": "file_locking"})"},
       "prevent_conflicts"},
      {{"reserve", R"({"start_time": "2026-01-26T15:00:00Z"})"}, "reserve"},
      {{"lock", "verify", "src/app.ts", "42"}, "lock_verify"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.operation);
    const Result r = Qm(c.args);
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    const Json j = Json::parse(r.out);
    EXPECT_EQ(j["operation"], c.operation);
    EXPECT_EQ(j["error"]["code"], "UNAVAILABLE");
    const std::string msg = j["error"]["message"];
    EXPECT_NE(msg.find("no qm server at http://127.0.0.1:1"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("qm serve"), std::string::npos) << msg;
  }
  // --server wins over $QM_SERVER.
  const Result r = Qm({"status", "--server", "http://127.0.0.1:2"});
  EXPECT_NE(Json::parse(r.out)["error"]["message"].get<std::string>().find(
                "127.0.0.1:2"),
            std::string::npos);
  // A request the CLI can see is incomplete is refused before sending.
  const Result no_id = Qm({"release"});
  EXPECT_EQ(no_id.code, 1);
  EXPECT_EQ(Json::parse(no_id.out)["error"]["code"], "INVALID_REQUEST");
  unsetenv("QM_SERVER");
  const Result help = Qm({"--help"});
  for (const char* name :
       {"serve", "allocate", "release", "check-conflicts", "resolve-conflicts",
        "prevent-conflicts", "reserve", "lock", "events"}) {
    EXPECT_NE(help.out.find(name), std::string::npos) << name;
  }
}

TEST(CliTest, LockVerifyChecksItsArgumentsFirst) {
  setenv("QM_SERVER", "http://127.0.0.1:1", 1);
  const Result ok = Qm({"lock", "verify", "/work/repo/src/app.ts", "7"});
  EXPECT_EQ(ok.code, 1);
  EXPECT_EQ(Json::parse(ok.out)["error"]["code"], "UNAVAILABLE");
  unsetenv("QM_SERVER");

  const struct {
    std::vector<std::string> args;
    const char* err;  // "" when CLI11 words the usage error
  } bad[] = {
      {{"lock", "verify", "", "7"}, "qm lock verify: PATH must not be empty"},
      {{"lock", "verify", "src/app.ts", "abc"},
       "qm lock verify: TOKEN must be a positive whole number"},
      {{"lock", "verify", "src/app.ts", "0"},
       "qm lock verify: TOKEN must be a positive whole number"},
      {{"lock", "verify", "src/app.ts", "1.5"},
       "qm lock verify: TOKEN must be a positive whole number"},
      {{"lock", "verify", "src/app.ts", "99999999999999999999999"},
       "qm lock verify: TOKEN must be a positive whole number"},
      {{"lock", "verify", "src/app.ts"}, ""},
      {{"lock", "verify"}, ""},
      {{"lock"}, ""},
  };
  for (const auto& c : bad) {
    const Result r = Qm(c.args);
    EXPECT_EQ(r.code, 2) << r.out << r.err;
    EXPECT_EQ(r.out.find("\"status\""), std::string::npos) << r.out;
    if (*c.err != '\0') {
      EXPECT_NE(r.err.find(c.err), std::string::npos) << r.err;
    }
  }
}

TEST(CliTest, SimulateReportFollowsTheSummary) {
  const std::string scenario =
      std::string(QM_SOURCE_DIR) + "/scenarios/seed001_concurrency.yaml";
  const Result r = Qm({"simulate", scenario, "--report", "costs"});
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream in(r.out);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), 2u);
  EXPECT_TRUE(Json::parse(lines[lines.size() - 2]).contains("summary"));
  const Json costs = Json::parse(lines.back());
  EXPECT_TRUE(costs["costs"].contains("tokens_used")) << lines.back();

  const Result dash = Qm({"simulate", scenario, "--report", "dashboard"});
  ASSERT_EQ(dash.code, 0) << dash.out;
  EXPECT_NE(dash.out.find("## Resource Usage"), std::string::npos);

  EXPECT_EQ(Qm({"simulate", scenario, "--report", "bogus"}).code, 2);
}

TEST(CliTest, HelpAndUsageErrors) {
  const Result help = Qm({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("simulate"), std::string::npos);
  const Result bad = Qm({"no-such-command"});
  EXPECT_EQ(bad.code, 2);
}

}  // namespace
}  // namespace qm

namespace qm {
namespace {

// The built binary, end to end: exit status and output stream.
TEST(QmBinaryTest, ExitStatusFollowsTheEnvelope) {
  const std::string qm = QM_BINARY;
  const std::string ok = qm + " config validate " + std::string(QM_SOURCE_DIR) +
                         "/examples/resource-limits.yml > /dev/null";
  EXPECT_EQ(std::system(ok.c_str()), 0);
  const std::string bad = qm + " config validate /nonexistent.yml > /dev/null";
  const int status = std::system(bad.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string usage = qm + " --no-such-flag > /dev/null 2>&1";
  const int usage_status = std::system(usage.c_str());
  ASSERT_TRUE(WIFEXITED(usage_status));
  EXPECT_EQ(WEXITSTATUS(usage_status), 2);
}

}  // namespace
}  // namespace qm
