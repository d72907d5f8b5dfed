#include "cli/client_cmd.h"

#include <openssl/rand.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>

#include "cli/hook_cmd.h"
#include "cli/run_cmd.h"
#include "cli/state_cmd.h"
#include "qm/config_loader.h"
#include "server/app.h"
#include "server/http_client.h"
#include "server/server_config.h"

namespace qm::cli {
namespace {

using api::Json;

// What a client command sends.
struct Request {
  std::string method, target;
  std::string body;  // JSON text or ""
  Duration timeout{0};
  // The envelope's operation when the server cannot be reached; "" = the
  // command's (ClientOp::operation).
  std::string operation{};
};

// The parts of a command line after the operation's name: an optional
// resource type or id, and an optional JSON object (the last argument that
// starts with '{').
struct Args {
  std::string subject;  // "" when none
  Json params = Json::object();
};

StatusOr<Args> ParseArgs(const std::vector<std::string>& raw,
                         const std::string& op) {
  Args a;
  bool have_json = false;
  for (const std::string& arg : raw) {
    if (!arg.empty() && arg.front() == '{') {
      if (have_json) {
        return InvalidRequest("qm " + op +
                              ": give the parameters as one JSON object");
      }
      a.params = Json::parse(arg, nullptr, false);
      if (a.params.is_discarded() || !a.params.is_object()) {
        return InvalidRequest("qm " + op +
                              ": the parameters are not a JSON object: " + arg);
      }
      have_json = true;
    } else if (a.subject.empty()) {
      a.subject = arg;
    } else {
      return InvalidRequest("qm " + op + ": unexpected argument \"" + arg +
                            "\" (usage: qm " + op +
                            " [type-or-id] ['<json params>'])");
    }
  }
  return a;
}

using server::UrlEncode;

// Takes the allocation id from the subject or from params[key] (removing
// it from the params).
StatusOr<std::string> TakeId(Args* a, const std::string& key,
                             const std::string& op) {
  std::string id = a->subject;
  if (a->params.contains(key)) {
    if (!a->params[key].is_string()) {
      return InvalidRequest(key + ": must be a string");
    }
    if (!id.empty() && id != a->params[key].get<std::string>()) {
      return InvalidRequest("qm " + op + ": two different ids given");
    }
    id = a->params[key].get<std::string>();
    a->params.erase(key);
  }
  if (id.empty()) {
    return InvalidRequest("qm " + op + ": which one? give " + key + " (qm " +
                          op + " ID, or '{\"" + key + "\": \"...\"}')");
  }
  return id;
}

std::string Body(const Json& j) { return j.empty() ? "" : j.dump(); }

// The JSON params as a query string ("?time_range=1h&include_performance=
// true"; "" for none): strings as they are, other values as JSON text.
std::string QueryOf(const Json& params) {
  std::string q;
  for (const auto& [k, v] : params.items()) {
    q += (q.empty() ? "?" : "&") + UrlEncode(k) + "=" +
         UrlEncode(v.is_string() ? v.get<std::string>() : v.dump());
  }
  return q;
}

// How each client command becomes a request.
using Builder = std::function<StatusOr<Request>(Args)>;

struct ClientOp {
  std::string name, operation, help;
  Builder build;
};

std::vector<ClientOp> ClientOps() {
  auto post_id = [](std::string op, std::string suffix) -> Builder {
    return [op, suffix](Args a) -> StatusOr<Request> {
      auto id = TakeId(&a, "allocation_id", op);
      if (!id.ok()) return id.status();
      return Request{"POST", "/v1/allocations/" + UrlEncode(*id) + suffix,
                     Body(a.params)};
    };
  };
  // POSTs the JSON params as they are to `target`.
  auto post = [](std::string target) -> Builder {
    return [target](Args a) -> StatusOr<Request> {
      if (!a.subject.empty()) {
        return InvalidRequest("give the parameters as one JSON object, not \"" +
                              a.subject + "\"");
      }
      return Request{"POST", target, Body(a.params)};
    };
  };
  auto get = [](std::string target) -> Builder {
    return [target](Args a) -> StatusOr<Request> {
      if (!a.params.empty() || !a.subject.empty()) {
        return InvalidRequest("this command takes no parameters");
      }
      return Request{"GET", target, ""};
    };
  };
  return {
      {"allocate", "allocate",
       "Ask for an allocation: qm allocate '{\"workflow_id\": \"w1\", "
       "\"agent_type\": \"coder\", \"wait\": 30}'",
       [](Args a) -> StatusOr<Request> {
         if (!a.subject.empty()) {
           return InvalidRequest(
               "qm allocate: give the request as one JSON object");
         }
         Duration timeout{0};
         if (a.params.contains("wait") && a.params["wait"].is_number()) {
           timeout = Duration(
               static_cast<int64_t>(a.params["wait"].get<double>() * 1000) +
               30000);
         }
         return Request{"POST", "/v1/allocations", Body(a.params), timeout};
       }},
      {"release", "release",
       "Release an allocation: qm release ID or '{\"allocation_id\": ..., "
       "\"usage\": {...}}'",
       post_id("release", "/release")},
      {"renew", "renew",
       "Renew (heartbeat) a lease: qm renew ID ['{\"ttl\": \"10m\"}']",
       post_id("renew", "/renew")},
      {"cancel", "cancel",
       "Cancel a queued or running allocation: qm cancel ID",
       post_id("cancel", "/cancel")},
      {"reallocate", "reallocate",
       "Change a running allocation's resources: qm reallocate ID "
       "'{\"resources\": {...}}'",
       post_id("reallocate", "/reallocate")},
      {"get", "get_allocation",
       "Show one allocation: qm get ID ['{\"wait\": 30}' waits while queued]",
       [](Args a) -> StatusOr<Request> {
         auto id = TakeId(&a, "allocation_id", "get");
         if (!id.ok()) return id.status();
         std::string target = "/v1/allocations/" + UrlEncode(*id);
         Duration timeout{0};
         if (a.params.contains("wait")) {
           if (!a.params["wait"].is_number()) {
             return InvalidRequest("wait: a number of seconds");
           }
           const double w = a.params["wait"].get<double>();
           target += "?wait=" + std::to_string(w);
           timeout = Duration(static_cast<int64_t>(w * 1000) + 30000);
         }
         return Request{"GET", target, "", timeout};
       }},
      {"list", "list_allocations",
       "List allocations: qm list ['{\"status\": \"active\", \"product\": "
       "...}']",
       [](Args a) -> StatusOr<Request> {
         return Request{"GET", "/v1/allocations" + QueryOf(a.params), ""};
       }},
      {"status", "status",
       "Totals, availability and the queue; qm status agents "
       "['{\"time_range\": \"1h\", \"group_by\": \"specialization\", "
       "\"include_performance\": true}']: the agent pool per group and what "
       "it did; qm status cpu_cores (any resource): its holders and queued "
       "demand; qm status costs: today's spend; qm status queue: the queue "
       "with scores",
       [](Args a) -> StatusOr<Request> {
         if (a.subject.empty() || a.subject == "system") {
           if (!a.params.empty()) {
             return InvalidRequest(
                 "qm status: parameters go with a resource type, e.g. qm "
                 "status agents '{\"time_range\": \"1h\"}'");
           }
           return Request{"GET", "/v1/status", ""};
         }
         if (a.subject == "costs" || a.subject == "queue") {
           if (!a.params.empty()) {
             return InvalidRequest("qm status " + a.subject +
                                   ": takes no parameters");
           }
           return Request{"GET", "/v1/" + a.subject, ""};
         }
         return Request{
             "GET",
             "/v1/status/" + UrlEncode(a.subject) + QueryOf(a.params),
             "",
             {},
             "resource_status"};
       }},
      {"usage", "costs",
       "Spend against the budgets; qm usage WORKFLOW ['{\"breakdown_by_"
       "phase\": true, \"include_efficiency\": true, \"compare_baseline\": "
       "true}']: that workflow's totals, phases, efficiency and how it "
       "compares with the others",
       [](Args a) -> StatusOr<Request> {
         if (a.subject.empty() && !a.params.contains("workflow_id")) {
           if (!a.params.empty()) {
             return InvalidRequest(
                 "qm usage: which workflow? qm usage WORKFLOW_ID '{...}' "
                 "(qm usage alone: spend against the budgets)");
           }
           return Request{"GET", "/v1/costs", ""};
         }
         auto id = TakeId(&a, "workflow_id", "usage");
         if (!id.ok()) return id.status();
         return Request{"GET",
                        "/v1/usage/" + UrlEncode(*id) + QueryOf(a.params),
                        "",
                        {},
                        "workflow_usage"};
       }},
      {"capacity", "capacity", "Capacity and availability per resource",
       get("/v1/capacity")},
      {"monitor", "monitor_system",
       "The machine, health, alerts and usage history: qm monitor system "
       "['{\"include_trends\": true, \"time_range\": \"1h\", "
       "\"detail_level\": \"full\"}']",
       [](Args a) -> StatusOr<Request> {
         if (!a.subject.empty() && a.subject != "system") {
           return InvalidRequest(
               "qm monitor: the resource type is system (qm "
               "monitor system), got \"" +
               a.subject + "\"");
         }
         return Request{"GET", "/v1/monitor/system" + QueryOf(a.params), ""};
       }},
      {"queue", "queue", "The queue, best first, with scores and reasons",
       get("/v1/queue")},
      {"analytics", "analytics",
       "Utilization, cost per task, queue performance and recommendations",
       get("/v1/analytics")},
      {"check-conflicts", "check_conflicts",
       "Dry-run an allocation: qm check-conflicts '{\"proposed_allocation\": "
       "{...}, \"time_horizon\": \"4h\"}'",
       post("/v1/conflicts/check")},
      {"resolve-conflicts", "resolve_conflicts",
       "Settle a conflict: qm resolve-conflicts '{\"conflict_id\": "
       "\"conf_1\", \"strategy\": \"priority_based\"}'",
       [](Args a) -> StatusOr<Request> {
         auto id = TakeId(&a, "conflict_id", "resolve-conflicts");
         if (!id.ok()) return id.status();
         return Request{"POST", "/v1/conflicts/" + UrlEncode(*id) + "/resolve",
                        Body(a.params)};
       }},
      {"prevent-conflicts", "prevent_conflicts",
       "Set the file-locking policy: qm prevent-conflicts '{\"policy_type\": "
       "\"file_locking\", \"scope\": \"global\", \"enforcement\": "
       "\"strict\"}'",
       post("/v1/conflicts/policy")},
      {"conflicts", "conflicts", "Open and recent conflicts",
       get("/v1/conflicts")},
      {"reserve", "reserve",
       "Book resources for a future window: qm reserve '{\"start_time\": "
       "\"+2h\", \"duration\": \"1h\", \"resources\": {\"agents\": 4}, "
       "\"workflow_id\": \"w1\"}'",
       post("/v1/reservations")},
      {"reservations", "reservations", "Reservations and their windows",
       get("/v1/reservations")},
      {"pause", "override_pause", "Pause all new grants (operator)",
       post("/v1/overrides/pause")},
      {"resume", "override_resume", "Resume grants after a pause (operator)",
       post("/v1/overrides/resume")},
  };
}

}  // namespace

struct ClientCommands::State {
  std::string server;  // --server; "" = $QM_SERVER or the default
  struct Cmd {
    CLI::App* app;
    ClientOp op;
  };
  std::vector<Cmd> cmds;
  CLI::App* lock_verify = nullptr;
  std::string lock_path, lock_token;
  CLI::App* events = nullptr;
  std::string events_filter;
  CLI::App* config_reload = nullptr;
  CLI::App* hook = nullptr;
  HookOptions hook_options;
  std::string hook_wait = "30s";
  CLI::App* token_new = nullptr;
  std::string token_name, token_role;
  std::vector<std::string> token_products;
  CLI::App* run = nullptr;
  RunOptions run_options;
  std::string run_ttl = "60s", run_max_wait;
  CLI::App* serve = nullptr;
  std::string listen = "127.0.0.1:7070", config_file, state_dir, store_uri;
  std::string tls_cert, tls_key;
  int workers = 64;
  std::string advertise, leader_lease = "4s";
  bool demo = false;

  std::string Url() const {
    if (!server.empty()) return server;
    const char* env = std::getenv("QM_SERVER");
    if (env != nullptr && *env != '\0') return env;
    return kDefaultServer;
  }
};

ClientCommands::ClientCommands(CLI::App* app)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  const std::string server_help = "The qm server (default: $QM_SERVER, else " +
                                  std::string(kDefaultServer) + ")";
  for (ClientOp& op : ClientOps()) {
    auto* cmd = app->add_subcommand(op.name, op.help);
    cmd->allow_extras();
    cmd->fallthrough(false);
    cmd->add_option("--server", s.server, server_help)->type_name("URL");
    s.cmds.push_back({cmd, std::move(op)});
  }

  auto* lock = app->add_subcommand(
      "lock", "Path locks: `qm lock verify PATH TOKEN` checks a fencing token");
  lock->require_subcommand(1);
  s.lock_verify = lock->add_subcommand(
      "verify",
      "Whether fencing token TOKEN still holds a lock covering PATH, for a "
      "commit or merge step to check before it writes");
  s.lock_verify
      ->add_option("PATH", s.lock_path,
                   "The path to write, relative to the workspace root or "
                   "absolute inside it")
      ->required();
  s.lock_verify
      ->add_option("TOKEN", s.lock_token,
                   "The fencing token the allocation was granted with")
      ->required();
  s.lock_verify->add_option("--server", s.server, server_help)
      ->type_name("URL");

  s.events = app->add_subcommand(
      "events",
      "Follow the server's events as JSON lines (Ctrl-C to stop): "
      "qm events ['types=granted,released&product=web']");
  s.events->add_option("FILTER", s.events_filter,
                       "Query filters: types, product, workflow_id, "
                       "allocation_id, after");
  s.events->add_option("--server", s.server, server_help)->type_name("URL");

  // Under `qm config` (made by cli.cc before the client commands).
  CLI::App* config = nullptr;
  for (CLI::App* sub : app->get_subcommands({})) {
    if (sub->get_name() == "config") config = sub;
  }
  if (config != nullptr) {
    s.config_reload = config->add_subcommand(
        "reload",
        "Make the server read its --config file again and apply it to the "
        "running state (as SIGHUP does); prints what changed");
    s.config_reload->add_option("--server", s.server, server_help)
        ->type_name("URL");
  }

  s.run = app->add_subcommand(
      "run",
      "Run COMMAND under an allocation: qm run [options] -- COMMAND ARGS... "
      "(waits in the queue, exports QM_ALLOCATION_ID, QM_FENCING_TOKEN, "
      "QM_MODEL, QM_MAX_TOKENS, renews the lease, forwards signals, releases "
      "at exit, and exits with the command's code; 125 when qm failed)");
  RunOptions& r = s.run_options;
  s.run->add_option("--workflow", r.workflow_id, "workflow_id");
  s.run->add_option("--agent-type", r.agent_type, "agent_type");
  s.run->add_option("--product", r.product, "product");
  s.run->add_option("--priority", r.priority,
                    "critical, high, normal, low or 0-100");
  s.run->add_option("--requester", r.requester, "requester");
  s.run->add_option("--model", r.model, "model to run on");
  s.run->add_option("--exclusive", r.exclusive,
                    "A path to lock for writing (repeatable)");
  s.run->add_option("--shared", r.shared,
                    "A path to lock for reading (repeatable)");
  s.run->add_option("--estimated-minutes", r.estimated_minutes,
                    "Expected run time (scheduling and reservations)");
  s.run->add_option("--estimated-tokens", r.estimated_tokens,
                    "Expected tokens (budgets)");
  s.run->add_option("--request", r.request_json,
                    "More request fields as a JSON object");
  s.run
      ->add_option("--ttl", s.run_ttl,
                   "Lease length (renewed every third of it); if qm run is "
                   "killed, the server releases the allocation this long "
                   "plus auto_release.grace_period after the last renewal")
      ->capture_default_str();
  s.run->add_option("--max-wait", s.run_max_wait,
                    "Give up (and cancel) after waiting this long in the "
                    "queue; default: wait as long as it takes");
  s.run->add_option("--server", s.server, server_help)->type_name("URL");
  s.run->add_option("COMMAND", r.command, "The command and its arguments")
      ->expected(-1);

  s.hook = app->add_subcommand(
      "hook",
      "Claude Code hook: reads a hook event on stdin and gates subagents on "
      "qm allocations (PreToolUse: allocate or deny; PostToolUse / "
      "SubagentStop / Stop: release). See docs/integrations/claude-code.md");
  s.hook->add_option("--product", s.hook_options.product,
                     "The product the subagents count against");
  s.hook
      ->add_option("--wait", s.hook_wait,
                   "How long a subagent may wait for a slot before it is "
                   "denied")
      ->capture_default_str();
  s.hook
      ->add_option("--on-error", s.hook_options.on_error,
                   "When the qm server cannot be reached: allow (with a "
                   "warning) or deny")
      ->check(CLI::IsMember({"allow", "deny"}))
      ->capture_default_str();
  s.hook->add_option("--state-dir", s.hook_options.state_dir,
                     "Where tool calls are matched to allocations (default "
                     "$XDG_RUNTIME_DIR/qm-hook, else /tmp/qm-hook-UID)");
  s.hook->add_option("--server", s.server, server_help)->type_name("URL");

  auto* token = app->add_subcommand(
      "token", "Auth tokens: `qm token new` makes one for server.auth.tokens");
  token->require_subcommand(1);
  s.token_new = token->add_subcommand(
      "new",
      "Make a random token and print it with the config entry that admits it "
      "(the config holds only its SHA-256)");
  s.token_new->add_option("--name", s.token_name, "Its name (shown as actor)")
      ->required();
  s.token_new->add_option("--role", s.token_role, "admin, operator or agent")
      ->check(CLI::IsMember({"admin", "operator", "agent"}))
      ->required();
  s.token_new->add_option("--products", s.token_products,
                          "agent: the products it may work in (repeatable)");

  s.serve = app->add_subcommand(
      "serve",
      "Run the qm server: the HTTP API every orchestrator, agent wrapper and "
      "operator talks to (SIGTERM/SIGINT stop it gracefully)");
  s.serve
      ->add_option("--listen", s.listen,
                   "host:port to listen on (loopback only without auth "
                   "tokens)")
      ->capture_default_str();
  s.serve->add_option("--config,-c", s.config_file,
                      "Config file (YAML); without it, the built-in defaults");
  auto* state = s.serve
                    ->add_option("--state", s.state_dir,
                                 "SQLite state directory (default: "
                                 "$XDG_STATE_HOME/qm, else ./var/qm)")
                    ->type_name("DIR");
  s.serve
      ->add_option("--store", s.store_uri,
                   "PostgreSQL URI (postgresql://...) instead of a state "
                   "directory")
      ->type_name("URI")
      ->excludes(state);
  auto* cert = s.serve->add_option(
      "--tls-cert", s.tls_cert,
      "PEM certificate chain: serve HTTPS (with --tls-key)");
  auto* key = s.serve->add_option("--tls-key", s.tls_key,
                                  "PEM private key of --tls-cert");
  cert->needs(key);
  key->needs(cert);
  s.serve
      ->add_option("--workers", s.workers,
                   "Threads for engine calls that wait for their journal "
                   "commit or read the engine (allocate, release and renew "
                   "run on 2 threads of their own: they never wait)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  s.serve
      ->add_option("--advertise", s.advertise,
                   "With --store: the URL clients reach this server at, "
                   "which the other servers on the database redirect changes "
                   "to while this one leads (default: http(s):// and the "
                   "address bound)")
      ->type_name("URL");
  s.serve
      ->add_option("--leader-lease", s.leader_lease,
                   "With --store: how long the leader's lease lasts without "
                   "renewal (renewed every quarter of it); a follower takes "
                   "over at most this long after the leader died")
      ->type_name("DURATION")
      ->capture_default_str();
  s.serve->add_flag(
      "--demo", s.demo,
      "Run a made-up fleet against this server's state (requester "
      "\"qm-demo\": agents of four types in three products asking, "
      "queueing, reporting tokens and releasing) so the dashboard and `qm "
      "top` move; use a state of its own (make demo)");
}

ClientCommands::~ClientCommands() = default;

bool ClientCommands::chosen() const {
  const State& s = *state_;
  if (*s.lock_verify || *s.events || *s.serve || *s.run || *s.token_new ||
      *s.hook || (s.config_reload && *s.config_reload)) {
    return true;
  }
  for (const auto& c : s.cmds) {
    if (*c.app) return true;
  }
  return false;
}

namespace {

// How to reach the server at `url`: the bearer token from $QM_TOKEN, and
// for https:// a CA file from $QM_CA_FILE (else the system's CAs).
server::ClientOptions ClientOptionsFor(const std::string& url) {
  server::ClientOptions options;
  options.url = url;
  if (const char* token = std::getenv("QM_TOKEN")) options.token = token;
  if (const char* ca = std::getenv("QM_CA_FILE")) options.ca_file = ca;
  return options;
}

// Sends `r` and prints the server's envelope; a transport failure becomes
// an error envelope of `operation`.
int Send(const Output& o, const std::string& url, const std::string& operation,
         const Request& r) {
  server::HttpClient client(ClientOptionsFor(url));
  auto resp = client.Call(r.method, r.target, r.body, r.timeout);
  if (!resp.ok()) {
    Status s = resp.status();
    if (s.code() == Code::kUnavailable) {
      s = Unavailable(s.message() +
                      ": start one with `qm serve`, or point "
                      "--server / $QM_SERVER at one");
    }
    return o.Emit(api::ErrorEnvelope(operation, Now(), s));
  }
  Json j = Json::parse(resp->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("status")) {
    return o.Emit(api::ErrorEnvelope(
        operation, Now(),
        Internal("the server at " + url + " answered HTTP " +
                 std::to_string(resp->status) +
                 " without a qm envelope: " + resp->body.substr(0, 200))));
  }
  return o.Emit(j);
}

}  // namespace

int ClientCommands::Run(const Output& o, std::ostream& err) const {
  const State& s = *state_;
  if (*s.serve) {
    server::ServeOptions options;
    options.http.listen = s.listen;
    options.http.tls_cert_file = s.tls_cert;
    options.http.tls_key_file = s.tls_key;
    options.service.workers = s.workers;
    options.advertise = s.advertise;
    options.demo = s.demo;
    Duration lease{};
    if (!ParseDuration(s.leader_lease, &lease) ||
        lease < std::chrono::seconds(1) || lease > std::chrono::minutes(10)) {
      err << "qm serve: --leader-lease must be a duration from 1s to 10m "
             "(e.g. 4s), got \""
          << s.leader_lease << "\"\n";
      return 2;
    }
    options.durable.store.leader_lease = lease;
    options.durable.store.lease_renew_interval = lease / 4;
    if (!s.config_file.empty()) {
      auto c = LoadConfigFile(s.config_file);
      if (!c.ok()) {
        err << "qm serve: " << c.status().ToString() << "\n";
        return kExitError;
      }
      options.config = std::move(*c);
      options.service.config_source = s.config_file;
      auto sc = server::LoadServerConfigFile(s.config_file);
      if (!sc.ok()) {
        err << "qm serve: " << sc.status().ToString() << "\n";
        return kExitError;
      }
      options.service.auth = std::move(*sc);
    }
    options.durable.store.location =
        !s.store_uri.empty()
            ? s.store_uri
            : (s.state_dir.empty() ? DefaultStateDir() : s.state_dir);
    return server::RunServe(std::move(options), *o.out, err);
  }
  if (*s.hook) {
    HookOptions h = s.hook_options;
    h.client = ClientOptionsFor(s.Url());
    if (!ParseDuration(s.hook_wait, &h.wait)) {
      err << "qm hook: --wait must be a duration (e.g. 30s), got \""
          << s.hook_wait << "\"\n";
      return 2;
    }
    return RunHook(h, std::cin, *o.out, err);
  }
  if (*s.token_new) {
    if (s.token_role == "agent" && s.token_products.empty()) {
      err << "qm token new: an agent token needs --products (the products "
             "it may work in)\n";
      return 2;
    }
    std::string bytes(24, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()),
                   static_cast<int>(bytes.size())) != 1) {
      err << "qm token new: no randomness available\n";
      return kExitError;
    }
    static const char* kHex = "0123456789abcdef";
    std::string token = "qm_";
    for (unsigned char b : bytes) {
      token += kHex[b >> 4];
      token += kHex[b & 15];
    }
    *o.out << "# The token (give it to its user; it is not stored anywhere):\n"
           << "#   " << token << "\n"
           << "# Add this entry under server.auth.tokens in the config:\n"
           << "- name: " << s.token_name << "\n"
           << "  sha256: " << server::Sha256Hex(token) << "\n"
           << "  role: " << s.token_role << "\n";
    if (!s.token_products.empty()) {
      *o.out << "  products: [";
      for (size_t i = 0; i < s.token_products.size(); ++i) {
        *o.out << (i ? ", " : "") << s.token_products[i];
      }
      *o.out << "]\n";
    }
    return 0;
  }
  if (*s.run) {
    RunOptions r = s.run_options;
    r.client = ClientOptionsFor(s.Url());
    if (!ParseDuration(s.run_ttl, &r.ttl) || r.ttl < std::chrono::seconds(1)) {
      err << "qm run: --ttl must be a duration of at least 1s (e.g. 60s, "
             "5m), got \""
          << s.run_ttl << "\"\n";
      return 2;
    }
    if (!s.run_max_wait.empty() &&
        !ParseDuration(s.run_max_wait, &r.max_wait)) {
      err << "qm run: --max-wait must be a duration (e.g. 30s, 10m), got \""
          << s.run_max_wait << "\"\n";
      return 2;
    }
    return RunUnderAllocation(r, err);
  }
  if (s.config_reload && *s.config_reload) {
    return Send(
        o, s.Url(), "config_reload",
        Request{"POST", "/v1/config/reload", "", std::chrono::seconds(60)});
  }
  if (*s.lock_verify) {
    if (s.lock_path.empty() || s.lock_path.find('\0') != std::string::npos) {
      err << "qm lock verify: PATH must not be "
          << (s.lock_path.empty() ? "empty" : "contain a NUL byte")
          << "\nRun with --help for more information.\n";
      return 2;
    }
    Json body = {{"path", s.lock_path}};
    uint64_t token = 0;
    const char* end = s.lock_token.data() + s.lock_token.size();
    const auto [ptr, ec] = std::from_chars(s.lock_token.data(), end, token);
    if (s.lock_token.empty() || ec != std::errc() || ptr != end || token == 0) {
      err << "qm lock verify: TOKEN must be a positive whole number (the "
             "fencing token of the allocation's grant), got \""
          << s.lock_token << "\"\nRun with --help for more information.\n";
      return 2;
    }
    body["token"] = token;
    return Send(o, s.Url(), "lock_verify",
                {"POST", "/v1/locks/verify", body.dump()});
  }
  if (*s.events) {
    server::HttpClient client(ClientOptionsFor(s.Url()));
    std::string target = "/v1/events";
    if (!s.events_filter.empty()) {
      target += (s.events_filter.front() == '?' ? "" : "?") + s.events_filter;
    }
    Status st =
        client.Stream(target, [&](const std::string&, const std::string& event,
                                  const std::string& data) {
          if (event == "reset" || !data.empty()) *o.out << data << std::endl;
          return true;
        });
    if (!st.ok()) {
      if (st.code() == Code::kUnavailable) {
        st = Unavailable(st.message() + ": start one with `qm serve`");
      }
      return o.Emit(api::ErrorEnvelope("events", Now(), st));
    }
    return 0;
  }
  for (const auto& c : s.cmds) {
    if (!*c.app) continue;
    auto args = ParseArgs(c.app->remaining(), c.op.name);
    if (!args.ok()) {
      err << args.status().message()
          << "\nRun with --help for more "
             "information.\n";
      return 2;
    }
    auto req = c.op.build(std::move(*args));
    if (!req.ok()) {
      return o.Emit(api::ErrorEnvelope(c.op.operation, Now(), req.status()));
    }
    return Send(o, s.Url(),
                req->operation.empty() ? c.op.operation : req->operation, *req);
  }
  return 2;
}

}  // namespace qm::cli
