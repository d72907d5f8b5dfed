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

TEST(CliTest, ServerOperationsSayTheyAreNotBuiltYet) {
  const Result r = Qm({"allocate", "--workflow", "x"});
  EXPECT_EQ(r.code, 1);
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["error"]["code"], "UNIMPLEMENTED");
}

TEST(CliTest, SpendReportsNeedTheServerAndPointToTheSimulator) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"usage"},
        std::vector<std::string>{"status", "costs"}}) {
    const Result r = Qm(args);
    EXPECT_EQ(r.code, 1);
    const Json j = Json::parse(r.out);
    EXPECT_EQ(j["error"]["code"], "UNIMPLEMENTED");
    const std::string msg = j["error"]["message"];
    EXPECT_NE(msg.find("running qm server"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qm simulate SCENARIO --report costs"),
              std::string::npos)
        << msg;
    EXPECT_EQ(j["alternative_options"][0],
              "qm simulate SCENARIO --report costs");
  }
  const Json plain = Json::parse(Qm({"status"}).out);
  EXPECT_EQ(plain["operation"], "status");
}

TEST(CliTest, ConflictOperationsNeedTheServerAndPointToTheSimulator) {
  const struct {
    std::vector<std::string> args;
    const char* operation;
    const char* scenario_op;
  } cases[] = {
      {{"check-conflicts", R"({"proposed_allocation": {}})"},
       "check_conflicts",
       "check_conflicts:"},
      {{"resolve-conflicts", "--conflict", "conf_1"},
       "resolve_conflicts",
       "resolve_conflict:"},
      {{"prevent-conflicts"}, "prevent_conflicts", "prevent_conflicts:"},
      {{"reserve", R"({"start_time": "2026-01-26T15:00:00Z"})"},
       "reserve",
       "reserve:"},
      {{"lock", "verify", "src/app.ts", "42"}, "lock_verify", "lock_verify:"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.operation);
    const Result r = Qm(c.args);
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    const Json j = Json::parse(r.out);
    EXPECT_EQ(j["operation"], c.operation);
    EXPECT_EQ(j["error"]["code"], "UNIMPLEMENTED");
    const std::string msg = j["error"]["message"];
    EXPECT_NE(msg.find("qm server"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.scenario_op), std::string::npos) << msg;
    ASSERT_EQ(j["alternative_options"].size(), 1u) << r.out;
    EXPECT_EQ(j["alternative_options"][0].get<std::string>().rfind(
                  std::string("in a scenario: ") + c.scenario_op, 0),
              0u)
        << r.out;
  }
  const Result help = Qm({"--help"});
  for (const char* name : {"check-conflicts", "resolve-conflicts",
                           "prevent-conflicts", "reserve", "lock"}) {
    EXPECT_NE(help.out.find(name), std::string::npos) << name;
  }
}

TEST(CliTest, LockVerifyChecksItsArgumentsFirst) {
  const Result ok = Qm({"lock", "verify", "/work/repo/src/app.ts", "7"});
  EXPECT_EQ(ok.code, 1);
  EXPECT_EQ(Json::parse(ok.out)["alternative_options"][0],
            "in a scenario: lock_verify: {path, token}");

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
