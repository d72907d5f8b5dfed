// End-to-end tests of the `qm` binary: `qm serve` as a process (signals,
// crash and restart) and the CLI as its client.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server/http_client.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

using testing::TempDir;

// Runs `qm` with `args`, returns its exit code and output.
struct CliRun {
  int code = -1;
  std::string out, err;
};
CliRun Qm(const std::vector<std::string>& args, const std::string& server,
          const std::string& stdin_text = "") {
  TempDir tmp;
  const std::string out_file = tmp.path() + "/out",
                    err_file = tmp.path() + "/err",
                    in_file = tmp.path() + "/in";
  if (FILE* f = fopen(in_file.c_str(), "w")) {
    fputs(stdin_text.c_str(), f);
    fclose(f);
  }
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("QM_SERVER", server.c_str(), 1);
    freopen(in_file.c_str(), "r", stdin);
    freopen(out_file.c_str(), "w", stdout);
    freopen(err_file.c_str(), "w", stderr);
    std::vector<char*> argv = {const_cast<char*>(QM_BINARY)};
    for (const std::string& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(QM_BINARY, argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CliRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& f) {
    std::string s;
    if (FILE* in = fopen(f.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, in)) > 0) s.append(buf, n);
      fclose(in);
    }
    return s;
  };
  r.out = slurp(out_file);
  r.err = slurp(err_file);
  return r;
}

// A `qm serve` child process on port 0 in `state_dir`.
class ServeProcess {
 public:
  explicit ServeProcess(const std::string& state_dir,
                        const std::string& config = "",
                        const std::vector<std::string>& extra = {}) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    err_file_ = state_dir + ".serve.err";
    std::vector<std::string> args = {QM_BINARY,     "serve",   "--listen",
                                     "127.0.0.1:0", "--state", state_dir,
                                     "--workers",   "8"};
    if (!config.empty()) args.insert(args.end(), {"--config", config});
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      freopen(err_file_.c_str(), "a", stderr);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(QM_BINARY, argv.data());
      _exit(127);
    }
    close(fds[1]);
    // The first line says where it listens.
    std::string line;
    char c;
    while (read(fds[0], &c, 1) == 1 && c != '\n') line += c;
    out_fd_ = fds[0];
    const size_t at = line.find("http");
    EXPECT_NE(at, std::string::npos) << line;
    if (at != std::string::npos) {
      url_ = line.substr(at, line.find(' ', at) - at);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits for the exit; returns the exit status.
  int Signal(int sig) {
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  std::string Err() const {
    std::string s;
    if (FILE* in = fopen(err_file_.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, in)) > 0) s.append(buf, n);
      fclose(in);
    }
    return s;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string url_, err_file_;
};

Json Call(const std::string& url, const std::string& method,
          const std::string& target, const std::string& body = "") {
  ClientOptions o;
  o.url = url;
  HttpClient c(o);
  auto r = c.Call(method, target, body, std::chrono::seconds(30));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? Json::parse(r->body, nullptr, false) : Json();
}

TEST(ServeProcessTest, CliTalksToTheServer) {
  TempDir dir;
  ServeProcess serve(dir.path());
  ASSERT_FALSE(serve.url().empty());
  CliRun a = Qm({"allocate", R"({"workflow_id": "w1", "agent_type": "coder"})"},
                serve.url());
  ASSERT_EQ(a.code, 0) << a.out << a.err;
  Json j = Json::parse(a.out);
  EXPECT_EQ(j["status"], "success");
  const std::string id = j["result"]["allocation_id"];

  CliRun s = Qm({"status"}, serve.url());
  EXPECT_EQ(s.code, 0);
  EXPECT_EQ(Json::parse(s.out)["result"]["resources"]["agents"]["allocated"],
            1.0);

  CliRun r = Qm({"release", R"({"allocation_id": ")" + id +
                                R"(", "usage": {"tokens": 10}})"},
                serve.url());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(Json::parse(r.out)["result"]["status"], "released");

  // An error envelope from the server exits 1.
  CliRun bad = Qm({"release", "alloc_404"}, serve.url());
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(Json::parse(bad.out)["error"]["code"], "NOT_FOUND");

  CliRun table = Qm({"--output", "table", "status"}, serve.url());
  EXPECT_EQ(table.code, 0);
  EXPECT_FALSE(Json::accept(table.out));
}

TEST(ServeProcessTest, NoServerIsAClearError) {
  // A port nothing listens on: bind one, close it.
  CliRun r = Qm({"status"}, "http://127.0.0.1:1");
  EXPECT_EQ(r.code, 1);
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["error"]["code"], "UNAVAILABLE");
  const std::string msg = j["error"]["message"];
  EXPECT_NE(msg.find("no qm server at http://127.0.0.1:1"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("qm serve"), std::string::npos) << msg;
}

// SIGTERM: a client waiting for a grant is answered (still queued), the
// server flushes and exits 0; what it acknowledged is there after restart.
TEST(ServeProcessTest, SigtermAnswersWaitersAndKeepsState) {
  TempDir dir;
  std::string first;
  {
    ServeProcess serve(dir.path());
    // The default config allows 5 agents.
    for (int i = 0; i < 5; ++i) {
      Json a = Call(serve.url(), "POST", "/v1/allocations",
                    R"({"workflow_id": "w", "agent_type": "coder"})");
      if (i == 0) first = a["result"]["allocation_id"];
    }
    std::atomic<bool> done{false};
    Json waited;
    std::thread waiter([&] {
      waited =
          Call(serve.url(), "POST", "/v1/allocations",
               R"({"workflow_id": "w", "agent_type": "coder", "wait": 60})");
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_FALSE(done);
    const int status = serve.Signal(SIGTERM);
    waiter.join();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << serve.Err();
    EXPECT_EQ(waited["result"]["status"], "queued") << waited.dump();
    EXPECT_NE(serve.Err().find("journal is flushed"), std::string::npos)
        << serve.Err();
  }
  ServeProcess again(dir.path());
  Json list = Call(again.url(), "GET", "/v1/allocations?status=active");
  EXPECT_EQ(list["result"]["count"], 5);
  EXPECT_EQ(Call(again.url(), "GET", "/v1/queue")["result"]["queued"], 1);
}

// SIGKILL mid-load: every allocation whose answer the client got is there
// after the restart, and none beyond what was asked for.
TEST(ServeProcessTest, SigkillLosesNothingAcknowledged) {
  TempDir dir;
  std::vector<std::string> acked;
  std::atomic<int> sent{0};
  {
    ServeProcess serve(dir.path());
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&, t] {
        ClientOptions o;
        o.url = serve.url();
        HttpClient c(o);
        for (int i = 0; !stop; ++i) {
          ++sent;
          auto r =
              c.Call("POST", "/v1/allocations",
                     R"({"workflow_id": "w)" + std::to_string(t) +
                         R"(", "agent_type": "coder", )"
                         R"("idempotency_key": "k)" +
                         std::to_string(t) + "-" + std::to_string(i) + "\"}",
                     std::chrono::seconds(5));
          if (!r.ok()) break;
          Json j = Json::parse(r->body, nullptr, false);
          if (j.is_discarded() || j["status"] != "success") break;
          std::lock_guard<std::mutex> lock(mu);
          acked.push_back(j["result"]["allocation_id"]);
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    serve.Signal(SIGKILL);
    stop = true;
    for (auto& t : clients) t.join();
  }
  ASSERT_GT(acked.size(), 10u);
  ServeProcess again(dir.path());
  for (const std::string& id : acked) {
    Json g = Call(again.url(), "GET", "/v1/allocations/" + id);
    ASSERT_EQ(g["status"], "success") << id << " was acknowledged but lost";
  }
  Json all = Call(again.url(), "GET", "/v1/allocations?limit=10000");
  EXPECT_LE(all["result"]["count"].get<int>(), sent.load());
}

// `qm run`: the command runs with its allocation in the environment, its
// exit code comes back, and the allocation is released with the outcome.
TEST(ServeProcessTest, RunPassesTheAllocationAndTheExitCode) {
  TempDir dir;
  ServeProcess serve(dir.path());
  const std::string out = dir.path() + "/env";
  CliRun r =
      Qm({"run", "--agent-type", "coder", "--", "sh", "-c",
          "echo $QM_ALLOCATION_ID $QM_FENCING_TOKEN > " + out + "; exit 3"},
         serve.url());
  EXPECT_EQ(r.code, 3) << r.err;
  std::string env;
  if (FILE* in = fopen(out.c_str(), "r")) {
    char buf[256];
    env = fgets(buf, sizeof buf, in) ? buf : "";
    fclose(in);
  }
  ASSERT_EQ(env.rfind("alloc_", 0), 0u) << env;
  const std::string id = env.substr(0, env.find(' '));
  Json g = Call(serve.url(), "GET", "/v1/allocations/" + id);
  EXPECT_EQ(g["result"]["usage"]["outcome"], "failure") << g.dump();
  EXPECT_NE(g["result"]["status"], "active");

  CliRun ok = Qm({"run", "--", "true"}, serve.url());
  EXPECT_EQ(ok.code, 0) << ok.err;
  CliRun missing = Qm({"run", "--", "/no/such/command"}, serve.url());
  EXPECT_EQ(missing.code, 127);
  CliRun down = Qm({"run", "--", "true"}, "http://127.0.0.1:1");
  EXPECT_EQ(down.code, 125);
  EXPECT_NE(down.err.find("no qm server"), std::string::npos) << down.err;
  EXPECT_EQ(Call(serve.url(), "GET",
                 "/v1/allocations?status=active")["result"]["count"],
            0);
}

// A `qm run` killed with SIGKILL stops renewing: its lease lapses and the
// server releases the allocation (grace period 0 here).
// `qm run` names itself as the holder: killed by SIGKILL, its allocation
// is taken back as soon as the server sees the process gone (a pidfd), far
// sooner than the 2 s lease (which also covers a holder the server cannot
// see).
TEST(ServeProcessTest, RunKilledIsReclaimedAtOnce) {
  TempDir dir;
  const std::string config = dir.path() + "/qm.yml";
  if (FILE* f = fopen(config.c_str(), "w")) {
    fputs("auto_release:\n  grace_period: 0s\n", f);
    fclose(f);
  }
  ServeProcess serve(dir.path() + "/state", config);
  ASSERT_FALSE(serve.url().empty()) << serve.Err();
  const pid_t runner = fork();
  if (runner == 0) {
    setpgid(0, 0);  // with its command, killed as one group below
    setenv("QM_SERVER", serve.url().c_str(), 1);
    freopen("/dev/null", "w", stderr);
    execl(QM_BINARY, QM_BINARY, "run", "--ttl", "2s", "--", "sleep", "30",
          nullptr);
    _exit(127);
  }
  std::string id;
  for (int i = 0; i < 100 && id.empty(); ++i) {
    Json l = Call(serve.url(), "GET", "/v1/allocations?status=active");
    if (l["result"]["count"] == 1)
      id = l["result"]["allocations"][0]["allocation_id"];
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(id.empty());
  // Renewals keep it alive past its TTL while qm run lives.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(
      Call(serve.url(), "GET", "/v1/allocations/" + id)["result"]["status"],
      "active");
  kill(-runner, SIGKILL);
  waitpid(runner, nullptr, 0);
  const auto killed = std::chrono::steady_clock::now();
  std::string status = "active";
  while (status == "active" &&
         std::chrono::steady_clock::now() - killed < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    status =
        Call(serve.url(), "GET", "/v1/allocations/" + id)["result"]["status"];
  }
  EXPECT_EQ(status, "expired");
  const auto took = std::chrono::steady_clock::now() - killed;
  EXPECT_LT(took, std::chrono::seconds(1))
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms";
}

// `qm hook` as Claude Code runs it: a subagent is allowed once granted,
// denied with the reason and expected start when no slot frees in time
// (its queued request withdrawn), released after its tool call with the
// tokens it reports; other tools get no opinion.
TEST(ServeProcessTest, HookGatesSubagents) {
  TempDir dir;
  const std::string config = dir.path() + "/qm.yml";
  if (FILE* f = fopen(config.c_str(), "w")) {
    fputs("max_concurrent: {total: 1}\n", f);
    fclose(f);
  }
  ServeProcess serve(dir.path() + "/state", config);
  ASSERT_FALSE(serve.url().empty()) << serve.Err();
  const std::vector<std::string> hook = {"hook", "--wait", "300ms",
                                         "--state-dir", dir.path() + "/hooks"};
  auto pre = [](const std::string& id) {
    return R"({"session_id": "s1", "hook_event_name": "PreToolUse",)"
           R"( "tool_name": "Task", "tool_use_id": ")" +
           id + R"(", "tool_input": {"subagent_type": "coder"}})";
  };
  CliRun first = Qm(hook, serve.url(), pre("tu1"));
  ASSERT_EQ(first.code, 0) << first.err;
  Json a = Json::parse(first.out);
  EXPECT_EQ(a["hookSpecificOutput"]["permissionDecision"], "allow");

  CliRun second = Qm(hook, serve.url(), pre("tu2"));
  Json d = Json::parse(second.out);
  EXPECT_EQ(d["hookSpecificOutput"]["permissionDecision"], "deny");
  const std::string reason =
      d["hookSpecificOutput"]["permissionDecisionReason"];
  EXPECT_NE(reason.find("expected start"), std::string::npos) << reason;
  EXPECT_EQ(Call(serve.url(), "GET", "/v1/queue")["result"]["queued"], 0);

  CliRun post = Qm(hook, serve.url(),
                   R"({"session_id": "s1", "hook_event_name": "PostToolUse",)"
                   R"( "tool_name": "Task", "tool_use_id": "tu1",)"
                   R"( "tool_response": {"totalTokens": 1234}})");
  EXPECT_EQ(post.code, 0) << post.err;
  Json list = Call(serve.url(), "GET", "/v1/allocations?status=released");
  ASSERT_EQ(list["result"]["count"], 1);
  EXPECT_EQ(list["result"]["allocations"][0]["usage"]["tokens"], 1234);
  EXPECT_EQ(list["result"]["allocations"][0]["agent_type"], "coder");

  // The slot is free again; Stop releases what the session still holds.
  EXPECT_EQ(Json::parse(Qm(hook, serve.url(), pre("tu3"))
                            .out)["hookSpecificOutput"]["permissionDecision"],
            "allow");
  Qm(hook, serve.url(), R"({"session_id": "s1", "hook_event_name": "Stop"})");
  EXPECT_EQ(Call(serve.url(), "GET",
                 "/v1/allocations?status=active")["result"]["count"],
            0);

  CliRun bash = Qm(hook, serve.url(),
                   R"({"hook_event_name": "PreToolUse", "tool_name": "Bash"})");
  EXPECT_EQ(bash.code, 0);
  EXPECT_TRUE(bash.out.empty()) << bash.out;
  CliRun garbage = Qm(hook, serve.url(), "not json");
  EXPECT_EQ(garbage.code, 2);

  // No server: allowed with a warning by default, denied on request.
  CliRun down = Qm(hook, "http://127.0.0.1:1", pre("tu4"));
  EXPECT_EQ(Json::parse(down.out)["hookSpecificOutput"]["permissionDecision"],
            "allow");
  std::vector<std::string> strict = hook;
  strict.insert(strict.end(), {"--on-error", "deny"});
  CliRun closed = Qm(strict, "http://127.0.0.1:1", pre("tu5"));
  EXPECT_EQ(Json::parse(closed.out)["hookSpecificOutput"]["permissionDecision"],
            "deny");
}

// --tls-cert / --tls-key: the server speaks HTTPS; the CLI trusts a
// self-signed certificate through $QM_CA_FILE.
TEST(ServeProcessTest, ServesHttpsWithACertificate) {
  if (std::system("openssl version >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "no openssl command";
  }
  TempDir dir;
  const std::string cert = dir.path() + "/cert.pem",
                    key = dir.path() + "/key.pem";
  const std::string make =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0);
  ServeProcess serve(dir.path() + "/state", "",
                     {"--tls-cert", cert, "--tls-key", key});
  ASSERT_EQ(serve.url().rfind("https://", 0), 0u) << serve.url();
  ClientOptions o;
  o.url = serve.url();
  o.ca_file = cert;
  HttpClient c(o);
  auto r = c.Call("GET", "/v1/status");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  setenv("QM_CA_FILE", cert.c_str(), 1);
  CliRun cli = Qm({"status"}, serve.url());
  unsetenv("QM_CA_FILE");
  EXPECT_EQ(cli.code, 0) << cli.out << cli.err;
  // Without trusting it, the CLI refuses the certificate.
  CliRun untrusted = Qm({"status"}, serve.url());
  EXPECT_EQ(untrusted.code, 1);
}

TEST(ServeProcessTest, ServeRefusesAnAddressInUse) {
  TempDir dir, dir2;
  ServeProcess serve(dir.path());
  const std::string addr = serve.url().substr(std::string("http://").size());
  CliRun r = Qm({"serve", "--listen", addr, "--state", dir2.path()}, "");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(addr), std::string::npos) << r.err;
}

// Config reload: SIGHUP and POST /v1/config/reload read the --config file
// again and apply it to the running state; a bad file or one the state
// cannot take is refused and the running config stays; a restart with an
// edited file applies it too.
TEST(ServeProcessTest, ConfigReloadBySighupByApiAndAtRestart) {
  TempDir dir;
  const std::string file = dir.path() + ".limits.yml";
  auto write = [&](const std::string& yaml) { std::ofstream(file) << yaml; };
  write("max_concurrent:\n  total: 1\n");
  std::string queued;
  {
    ServeProcess serve(dir.path(), file);
    ASSERT_FALSE(serve.url().empty());
    Json a = Call(serve.url(), "POST", "/v1/allocations",
                  R"({"workflow_id": "w1"})");
    ASSERT_EQ(a["result"]["status"], "active") << a.dump();
    Json b = Call(serve.url(), "POST", "/v1/allocations",
                  R"({"workflow_id": "w2"})");
    ASSERT_EQ(b["result"]["status"], "queued") << b.dump();
    queued = b["result"]["allocation_id"];

    // SIGHUP with a bigger total: the queued one starts.
    write("max_concurrent:\n  total: 2\n");
    ASSERT_EQ(kill(serve.pid(), SIGHUP), 0);
    Json got;
    for (int i = 0; i < 100; ++i) {
      got = Call(serve.url(), "GET", "/v1/allocations/" + queued);
      if (got["result"]["status"] == "active") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(got["result"]["status"], "active") << got.dump();
    // (The grant is answered before the signal handler logs.)
    for (int i = 0; i < 100; ++i) {
      if (serve.Err().find("config reloaded") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_NE(serve.Err().find("SIGHUP: config reloaded: "
                               "resources.agents.capacity: 1 -> 2"),
              std::string::npos)
        << serve.Err();

    // A file that does not load: refused with its error, nothing changes.
    write("max_concurrent:\n  total: two\n");
    Json bad = Call(serve.url(), "POST", "/v1/config/reload");
    EXPECT_EQ(bad["error"]["code"], "INVALID_REQUEST") << bad.dump();
    EXPECT_NE(bad["error"]["message"].get<std::string>().find(file),
              std::string::npos)
        << bad.dump();
    // Below what runs now: refused, naming the resource.
    write("max_concurrent:\n  total: 1\n");
    Json low = Call(serve.url(), "POST", "/v1/config/reload");
    EXPECT_EQ(low["error"]["code"], "CONFLICT") << low.dump();
    EXPECT_NE(low["error"]["message"].get<std::string>().find("agents"),
              std::string::npos)
        << low.dump();
    Json cfg = Call(serve.url(), "GET", "/v1/config");
    EXPECT_EQ(cfg["result"]["config"]["max_concurrent"]["total"], 2)
        << cfg.dump();
    // The same file again, from the CLI: unchanged.
    write("max_concurrent:\n  total: 2\n");
    CliRun same = Qm({"config", "reload"}, serve.url());
    EXPECT_EQ(same.code, 0) << same.out << same.err;
    Json j = Json::parse(same.out, nullptr, false);
    EXPECT_EQ(j["status"], "success") << same.out;
    EXPECT_EQ(j["result"]["changed"], false) << same.out;
    EXPECT_EQ(serve.Signal(SIGTERM), 0);
  }
  // Restart with an edited file: applied at start, logged.
  write("max_concurrent:\n  total: 3\n");
  ServeProcess again(dir.path(), file);
  ASSERT_FALSE(again.url().empty());
  Json cfg = Call(again.url(), "GET", "/v1/config");
  EXPECT_EQ(cfg["result"]["config"]["max_concurrent"]["total"], 3)
      << cfg.dump();
  EXPECT_EQ(
      Call(again.url(), "GET", "/v1/allocations/" + queued)["result"]["status"],
      "active");
  EXPECT_NE(again.Err().find("applied as a reload"), std::string::npos)
      << again.Err();
}

TEST(ServeProcessTest, ReloadWithoutAConfigFileSaysSo) {
  TempDir dir;
  ServeProcess serve(dir.path());
  Json r = Call(serve.url(), "POST", "/v1/config/reload");
  EXPECT_EQ(r["error"]["code"], "CONFLICT") << r.dump();
  EXPECT_NE(r["error"]["message"].get<std::string>().find("--config"),
            std::string::npos)
      << r.dump();
}

}  // namespace
}  // namespace qm::server
