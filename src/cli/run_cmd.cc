#include "cli/run_cmd.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <ostream>
#include <thread>

#include "api/json_codec.h"
#include "server/holders.h"
#include "server/http_client.h"

namespace qm::cli {
namespace {

using api::Json;

// The child's pid for the signal handler (0 while none runs), and whether
// a stop signal came while still queued.
std::atomic<pid_t> g_child{0};
std::atomic<int> g_stop_signal{0};

void Forward(int sig) {
  const pid_t child = g_child.load();
  if (child > 0) {
    kill(child, sig);
  } else {
    g_stop_signal = sig;
  }
}

constexpr int kForwarded[] = {SIGINT,  SIGTERM, SIGHUP,
                              SIGQUIT, SIGUSR1, SIGUSR2};

// One call to the server; the envelope, or a transport error.
StatusOr<Json> Call(server::HttpClient& c, const std::string& method,
                    const std::string& target, const std::string& body,
                    Duration timeout) {
  auto r = c.Call(method, target, body, timeout);
  if (!r.ok()) return r.status();
  Json j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("status")) {
    return Internal("the server answered HTTP " + std::to_string(r->status) +
                    " without a qm envelope");
  }
  return j;
}

std::string ErrorText(const Json& envelope) {
  const Json& e = envelope["error"];
  return e.value("code", "ERROR") + ": " + e.value("message", "");
}

StatusOr<Json> BuildRequest(const RunOptions& o) {
  Json r = Json::object();
  if (!o.request_json.empty()) {
    r = Json::parse(o.request_json, nullptr, false);
    if (r.is_discarded() || !r.is_object()) {
      return InvalidRequest("--request: not a JSON object: " + o.request_json);
    }
  }
  auto set = [&](const char* key, const std::string& v) {
    if (!v.empty()) r[key] = v;
  };
  set("workflow_id", o.workflow_id);
  set("agent_type", o.agent_type);
  set("product", o.product);
  set("priority", o.priority);
  set("requester", o.requester);
  set("model", o.model);
  if (!o.exclusive.empty()) r["exclusive_access"] = o.exclusive;
  if (!o.shared.empty()) r["shared_access"] = o.shared;
  if (o.estimated_minutes > 0) r["estimated_minutes"] = o.estimated_minutes;
  if (o.estimated_tokens > 0) r["estimated_tokens"] = o.estimated_tokens;
  if (!r.contains("ttl")) r["ttl"] = o.ttl.count() / 1000.0;
  if (!r.contains("workflow_id")) {
    // One workflow per run unless told otherwise: the command line names it.
    r["workflow_id"] = "qm-run-" + std::to_string(getpid());
  }
  return r;
}

}  // namespace

int RunUnderAllocation(const RunOptions& o, std::ostream& err) {
  if (o.command.empty()) {
    err << "qm run: no command given (qm run [options] -- COMMAND ARGS...)\n";
    return 2;
  }
  auto request = BuildRequest(o);
  if (!request.ok()) {
    err << "qm run: " << request.status().message() << "\n";
    return 2;
  }
  const server::ClientOptions& co = o.client;
  server::HttpClient client(co);

  // Signals that arrive while queued cancel the request; while the command
  // runs, they go to it.
  struct sigaction sa {};
  sa.sa_handler = Forward;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : kForwarded) sigaction(sig, &sa, nullptr);

  // ---- allocate, waiting in the queue
  const auto started = std::chrono::steady_clock::now();
  // Each call waits up to 15 s (or what is left of --max-wait), so the
  // position is reported as it moves and a stop signal is seen.
  auto chunk = [&] {
    Duration d = std::chrono::seconds(15);
    if (o.max_wait.count() > 0) {
      const auto spent = std::chrono::duration_cast<Duration>(
          std::chrono::steady_clock::now() - started);
      d = std::clamp(o.max_wait - spent, Duration(1), d);
    }
    return d;
  };
  Json body = *request;
  // Names this process as the holder: a server on this host takes the
  // allocation back as soon as this process is gone (even by SIGKILL),
  // not only when its lease runs out.
  if (auto self = server::SelfHolderJson(); self.ok()) {
    body["holder"] = Json::parse(*self);
  }
  Duration wait = chunk();
  body["wait"] = wait.count() / 1000.0;
  auto answer = Call(client, "POST", "/v1/allocations", body.dump(),
                     wait + std::chrono::seconds(30));
  std::string id;
  int last_position = -1;
  while (true) {
    if (!answer.ok()) {
      err << "qm run: " << answer.status().message()
          << (answer.status().code() == Code::kUnavailable
                  ? " (start one with `qm serve`)"
                  : "")
          << "\n";
      return kRunExitQmFailed;
    }
    if ((*answer)["status"] != "success") {
      err << "qm run: refused: " << ErrorText(*answer) << "\n";
      return kRunExitQmFailed;
    }
    const Json& a = (*answer)["result"];
    id = a.value("allocation_id", "");
    const std::string status = a.value("status", "");
    if (status == "active") break;
    if (status != "queued") {
      err << "qm run: allocation " << id << " is " << status << "\n";
      return kRunExitQmFailed;
    }
    const int position = a.value("queue_position", 0);
    if (position != last_position) {
      err << "qm run: " << id << " queued at position " << position;
      if (a.contains("expected_start") && !a["expected_start"].is_null()) {
        err << ", expected start " << a["expected_start"].get<std::string>();
      }
      if (a.contains("reason_queued")) {
        err << " (" << a["reason_queued"].get<std::string>() << ")";
      }
      err << std::endl;
      last_position = position;
    }
    const bool gave_up =
        o.max_wait.count() > 0 &&
        std::chrono::steady_clock::now() - started >= o.max_wait;
    if (g_stop_signal != 0 || gave_up) {
      (void)Call(client, "POST", "/v1/allocations/" + id + "/cancel", "",
                 std::chrono::seconds(10));
      err << "qm run: " << (gave_up ? "gave up waiting" : "interrupted")
          << "; cancelled " << id << "\n";
      return gave_up ? kRunExitQmFailed : 128 + g_stop_signal.load();
    }
    wait = chunk();
    answer = Call(client, "GET",
                  "/v1/allocations/" + id +
                      "?wait=" + std::to_string(wait.count() / 1000.0),
                  "", wait + std::chrono::seconds(30));
  }
  const Json& granted = (*answer)["result"];
  const Json& budget = granted["budget"];

  // ---- run the command
  const pid_t child = fork();
  if (child < 0) {
    err << "qm run: fork: " << std::strerror(errno) << "\n";
    (void)Call(client, "POST", "/v1/allocations/" + id + "/release",
               R"({"usage": {"outcome": "failure"}})",
               std::chrono::seconds(10));
    return kRunExitQmFailed;
  }
  if (child == 0) {
    for (int sig : kForwarded) signal(sig, SIG_DFL);
    setenv("QM_ALLOCATION_ID", id.c_str(), 1);
    setenv("QM_FENCING_TOKEN",
           std::to_string(granted.value("fencing_token", uint64_t{0})).c_str(),
           1);
    if (budget.contains("model") && budget["model"].is_string()) {
      setenv("QM_MODEL", budget["model"].get<std::string>().c_str(), 1);
    }
    if (budget.contains("max_tokens")) {
      setenv("QM_MAX_TOKENS", budget["max_tokens"].dump().c_str(), 1);
    }
    setenv("QM_SERVER", o.client.url.c_str(), 1);
    std::vector<char*> argv;
    for (const std::string& a : o.command) {
      argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    const std::string msg = "qm run: cannot run " + o.command[0] + ": " +
                            std::strerror(errno) + "\n";
    (void)!write(2, msg.data(), msg.size());
    _exit(kRunExitCannotRun);
  }
  g_child = child;
  if (g_stop_signal != 0) kill(child, g_stop_signal.load());

  // ---- heartbeat while it runs
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread heartbeat([&] {
    server::HttpClient hb(co);
    const Duration every = std::max(o.ttl / 3, Duration(200));
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, every, [&] { return done; })) {
      lock.unlock();
      auto r = Call(hb, "POST", "/v1/allocations/" + id + "/renew", "",
                    std::chrono::seconds(10));
      if (r.ok() && (*r)["status"] != "success") {
        err << "qm run: renewing " << id << " failed: " << ErrorText(*r)
            << "\n";
      }
      lock.lock();
    }
  });
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  heartbeat.join();

  int code;
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    code = 128 + WTERMSIG(status);
  } else {
    code = kRunExitQmFailed;
  }
  Json usage = {{"usage", {{"outcome", code == 0 ? "success" : "failure"}}}};
  auto released = Call(client, "POST", "/v1/allocations/" + id + "/release",
                       usage.dump(), std::chrono::seconds(30));
  if (!released.ok() || (*released)["status"] != "success") {
    err << "qm run: releasing " << id << " failed: "
        << (released.ok() ? ErrorText(*released) : released.status().message())
        << " (the lease lapses by itself)\n";
  }
  return code;
}

}  // namespace qm::cli
