#include "cli/cli.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <sstream>

#include "api/json_codec.h"
#include "cli/client_cmd.h"
#include "cli/mcp_cmd.h"
#include "cli/output.h"
#include "cli/state_cmd.h"
#include "cli/top_cmd.h"
#include "qm/config_loader.h"
#include "sim/simulator.h"
#include "sim/yaml_json.h"

namespace qm::cli {
namespace {

using api::Json;

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

  // The commands that talk to a running server, and `qm serve`.
  ClientCommands client(&app);
  // `qm mcp`: the MCP server over stdio, for agents (docs/integrations/mcp.md).
  McpCommand mcp(&app);
  // `qm top`: a live terminal view of the server.
  TopCommand top(&app);

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
  if (state.chosen()) return state.Run(o, std::cin, err);
  if (mcp.chosen()) return mcp.Run(out, err);
  if (top.chosen()) return top.Run(out, err);
  if (client.chosen()) return client.Run(o, err);
  return 2;
}

int Main(int argc, char** argv) {
  return Run(argc, argv, std::cout, std::cerr);
}

}  // namespace qm::cli
