#include "cli/cli.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <sstream>

#include "api/json_codec.h"
#include "cli/output.h"
#include "cli/state_cmd.h"
#include "qm/config_loader.h"
#include "sim/simulator.h"
#include "sim/yaml_json.h"

namespace qm::cli {
namespace {

using api::Json;

// A server operation that has a simulator counterpart: its envelope name
// and the scenario operation that does the same today.
struct ServerOp {
  std::string name, help;
  std::string operation;  // the envelope's `operation`
  std::string scenario;   // "" when there is no simulator counterpart
};

// The UNIMPLEMENTED envelope of a command that needs the qm server.
int NotBuilt(const Output& o, const ServerOp& op) {
  std::string message = "`qm " + op.name +
                        "` talks to the qm server, which is not built yet "
                        "(issue 6); ";
  Status s;
  if (op.scenario.empty()) {
    s = Unimplemented(message + "`qm simulate SCENARIO` runs the engine today");
  } else {
    s = Unimplemented(message + "in a scenario, `" + op.scenario +
                      "` does the same with `qm simulate SCENARIO`");
    s.AddAlternative("in a scenario: " + op.scenario);
  }
  return o.Emit(api::ErrorEnvelope(op.operation, Now(), s));
}

// Exit 2 with `message` on the error stream: the command line itself is
// wrong, nothing was attempted.
int UsageError(std::ostream& err, const std::string& message) {
  err << message << "\nRun with --help for more information.\n";
  return 2;
}

// `qm lock verify PATH TOKEN`: the arguments are checked here, the answer
// needs the server.
int LockVerify(const Output& o, const std::string& path,
               const std::string& token, std::ostream& err) {
  if (path.empty()) {
    return UsageError(err, "qm lock verify: PATH must not be empty");
  }
  if (path.find('\0') != std::string::npos) {
    return UsageError(err, "qm lock verify: PATH must not contain a NUL byte");
  }
  uint64_t value = 0;
  const char* end = token.data() + token.size();
  const auto [ptr, ec] = std::from_chars(token.data(), end, value);
  if (token.empty() || ec != std::errc() || ptr != end || value == 0) {
    return UsageError(err,
                      "qm lock verify: TOKEN must be a positive whole number "
                      "(the fencing token of the allocation's grant), got \"" +
                          token + "\"");
  }
  return NotBuilt(
      o, {"lock verify", "", "lock_verify", "lock_verify: {path, token}"});
}

int ConfigValidate(const Output& o, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  auto c = LoadConfigFile(path);
  if (!c.ok()) {
    return o.Emit(api::ErrorEnvelope("config_validate", Now(), c.status()));
  }
  Json r;
  r["file"] = path;
  r["valid"] = true;
  r["resources"] = c->resources.size();
  r["agent_type_limits"] = c->per_type_limits.size();
  r["products"] = c->products.size();
  return o.Emit(api::SuccessEnvelope("config_validate", Now(), r, Since(t0)));
}

int ConfigShow(const Output& o, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  Config config = Config::Defaults();
  if (!path.empty()) {
    auto c = LoadConfigFile(path);
    if (!c.ok()) {
      return o.Emit(api::ErrorEnvelope("config_show", Now(), c.status()));
    }
    config = std::move(*c);
  }
  const std::string yaml = ConfigToYaml(config);
  if (o.format == "yaml") {
    *o.out << yaml;
    return 0;
  }
  Json r;
  r["source"] = path.empty() ? "defaults" : path;
  try {
    r["config"] = sim::ToJsonValue(YAML::Load(yaml));
  } catch (const YAML::Exception& e) {
    return o.Emit(
        api::ErrorEnvelope("config_show", Now(),
                           Internal(std::string("config dump: ") + e.what())));
  }
  return o.Emit(api::SuccessEnvelope("config_show", Now(), r, Since(t0)));
}

int Simulate(const Output& o, const std::string& path,
             const std::string& report, std::ostream& err) {
  const auto t0 = std::chrono::steady_clock::now();
  sim::RunStats stats;
  sim::RunOptions options;
  options.report = report;
  const Status s = sim::RunScenarioFile(path, *o.out, &stats, options);
  if (!s.ok()) {
    o.out->flush();
    return o.Emit(api::ErrorEnvelope("simulate", Now(), s));
  }
  err << "qm simulate: " << stats.events << " events, " << stats.operations
      << " operations in " << FormatDuration(Since(t0)) << "\n";
  return 0;
}

}  // namespace

int Run(int argc, const char* const* argv, std::ostream& out,
        std::ostream& err) {
  CLI::App app{
      "qm (Quartermaster): a resource manager for fleets of AI agents.\n"
      "Grants, queues or refuses allocations for agents against concurrency\n"
      "limits, priorities and fair share. Every reporting command prints a\n"
      "JSON envelope ({status, operation, timestamp, result | error, ...})\n"
      "and exits 1 on error.",
      "qm"};
  app.require_subcommand(1);
  app.fallthrough();
  Output o;
  o.out = &out;
  app.add_option("--output,-o", o.format,
                 "Output format: json (the envelope), table (for people), "
                 "or yaml (config show only: loadable YAML)")
      ->check(CLI::IsMember({"json", "table", "yaml"}))
      ->capture_default_str();

  auto* simulate = app.add_subcommand(
      "simulate",
      "Run the engine on a virtual clock through SCENARIO (YAML) and print "
      "every decision as JSON lines, then a summary. Deterministic.");
  std::string scenario;
  simulate->add_option("SCENARIO", scenario, "Scenario file (see scenarios/)")
      ->required();
  std::string report;
  simulate
      ->add_option("--report", report,
                   "After the summary, print the end-of-run report: costs "
                   "(seed 001 cost tracking, a JSON line), metrics "
                   "(utilization, cost per task, queue performance, a JSON "
                   "line) or dashboard (Markdown text for people)")
      ->check(CLI::IsMember({"costs", "metrics", "dashboard"}));

  auto* config = app.add_subcommand("config", "Validate or show configuration");
  config->require_subcommand(1);
  auto* validate = config->add_subcommand(
      "validate", "Check a config file; errors name file:line:column and key");
  std::string validate_path;
  validate->add_option("FILE", validate_path, "Config file (YAML)")->required();
  auto* show = config->add_subcommand(
      "show",
      "Print the effective config with every default filled in "
      "(--output yaml prints loadable YAML)");
  std::string show_path;
  show->add_option("--config,-c,FILE", show_path,
                   "Config file; without it, the built-in defaults");

  auto* version = app.add_subcommand("version", "Print the version");

  StateCommand state(&app);

  // Operations that need the long-running server.
  const std::vector<ServerOp> server_ops = {
      {"allocate", "Ask for an allocation", "allocate", ""},
      {"release", "Release an allocation with its usage", "release", ""},
      {"renew", "Renew (heartbeat) an allocation's lease", "renew", ""},
      {"status",
       "Show totals, availability and the queue ("
       "`status costs`: today's spend against the budgets)",
       "status", ""},
      {"usage", "Show today's token and dollar spend against the budgets",
       "usage", ""},
      {"check-conflicts",
       "Dry-run an allocation: the file, workflow, resource, reservation and "
       "budget conflicts it would meet now and within a time horizon",
       "check_conflicts",
       "check_conflicts: {request: {...}, time_horizon: 4h}"},
      {"resolve-conflicts",
       "Settle a conflict: priority_based, queue_and_serialize or "
       "force_release",
       "resolve_conflicts",
       "resolve_conflict: {conflict: conf_1, strategy: priority_based}"},
      {"prevent-conflicts",
       "Set the file-locking policy (strict or advisory) globally or for a "
       "product",
       "prevent_conflicts",
       "prevent_conflicts: {policy_type: file_locking, scope: global, "
       "enforcement: strict}"},
      {"reserve", "Book resources for a future window", "reserve",
       "reserve: {id, start, duration, resources, workflow_id}"},
      {"serve", "Run the qm server", "serve", ""},
  };
  std::vector<std::pair<CLI::App*, const ServerOp*>> server_cmds;
  for (const ServerOp& op : server_ops) {
    auto* cmd = app.add_subcommand(
        op.name,
        op.help + (op.name == "serve" ? " (not built yet)"
                                      : " (needs the qm server: not built "
                                        "yet)"));
    cmd->allow_extras();
    cmd->fallthrough(false);
    server_cmds.emplace_back(cmd, &op);
  }
  auto* lock = app.add_subcommand(
      "lock", "Path locks: `qm lock verify PATH TOKEN` checks a fencing token");
  lock->require_subcommand(1);
  auto* lock_verify = lock->add_subcommand(
      "verify",
      "Whether fencing token TOKEN still holds a lock covering PATH, for a "
      "commit or merge step to check before it writes (needs the qm server: "
      "not built yet)");
  std::string lock_path, lock_token;
  lock_verify
      ->add_option("PATH", lock_path,
                   "The path to write, relative to the workspace root or "
                   "absolute inside it")
      ->required();
  lock_verify
      ->add_option("TOKEN", lock_token,
                   "The fencing token the allocation was granted with")
      ->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::ostringstream o_err;
    const int code = app.exit(e, out, o_err);
    err << o_err.str();
    return code == 0 ? 0 : 2;
  }

  if (*simulate) return Simulate(o, scenario, report, err);
  if (*validate) return ConfigValidate(o, validate_path);
  if (*show) return ConfigShow(o, show_path);
  if (*version) {
    return o.Emit(api::SuccessEnvelope(
        "version", Now(), Json{{"version", "0.1.0"}}, Duration(0)));
  }
  if (*lock_verify) return LockVerify(o, lock_path, lock_token, err);
  if (state.chosen()) return state.Run(o, std::cin, err);
  for (const auto& [cmd, op] : server_cmds) {
    if (!*cmd) continue;
    const std::string name = cmd->get_name();
    const std::vector<std::string> extras = cmd->remaining();
    const bool costs =
        name == "usage" ||
        (name == "status" && !extras.empty() && extras[0] == "costs");
    if (costs) {
      const std::string command =
          name == "usage" ? "qm usage" : "qm status costs";
      Status s = Unimplemented(
          "`" + command +
          "` reads the spend of a running qm server, which is not built yet "
          "(issue 6); `qm simulate SCENARIO --report costs` prints the same "
          "report for a simulated run (--report dashboard for people)");
      s.AddAlternative("qm simulate SCENARIO --report costs");
      s.AddAlternative("qm simulate SCENARIO --report dashboard");
      return o.Emit(api::ErrorEnvelope(
          name == "usage" ? "usage" : "status_costs", Now(), s));
    }
    return NotBuilt(o, *op);
  }
  return 2;
}

int Main(int argc, char** argv) {
  return Run(argc, argv, std::cout, std::cerr);
}

}  // namespace qm::cli
