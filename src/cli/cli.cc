#include "cli/cli.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <sstream>

#include "api/json_codec.h"
#include "qm/config_loader.h"
#include "sim/simulator.h"
#include "sim/yaml_json.h"

namespace qm::cli {
namespace {

using api::Json;

// Exit codes: 0 ok, 1 an operation failed (envelope says why), 2 usage.
constexpr int kExitError = 1;

struct Output {
  std::string format = "json";  // json | table | yaml (config show only)
  std::ostream* out;

  int Emit(const Json& envelope) const {
    if (format == "table") {
      *out << api::RenderTable(envelope);
    } else {
      *out << envelope.dump(2) << '\n';
    }
    return envelope["status"] == "success" ? 0 : kExitError;
  }
};

Time Now() { return SystemClock::Default()->Now(); }

Duration Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() -
                                              t0);
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

  // Operations that need the long-running server.
  const std::vector<std::pair<std::string, std::string>> server_ops = {
      {"allocate", "Ask for an allocation"},
      {"release", "Release an allocation with its usage"},
      {"renew", "Renew (heartbeat) an allocation's lease"},
      {"status",
       "Show totals, availability and the queue ("
       "`status costs`: today's spend against the budgets)"},
      {"usage", "Show today's token and dollar spend against the budgets"},
      {"serve", "Run the qm server"},  // help text below says it is not built
  };
  std::vector<CLI::App*> server_cmds;
  for (const auto& [name, help] : server_ops) {
    auto* cmd = app.add_subcommand(
        name,
        help + (name == "serve" ? " (not built yet)"
                                : " (needs the qm server: not built yet)"));
    cmd->allow_extras();
    cmd->fallthrough(false);
    server_cmds.push_back(cmd);
  }

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
  for (auto* cmd : server_cmds) {
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
    return o.Emit(api::ErrorEnvelope(
        name, Now(),
        Unimplemented("`qm " + name +
                      "` talks to the qm server, which is not built yet; "
                      "`qm simulate SCENARIO` runs the engine today")));
  }
  return 2;
}

int Main(int argc, char** argv) {
  return Run(argc, argv, std::cout, std::cerr);
}

}  // namespace qm::cli
