// The stdio transport end to end: the qm-mcp binary (what `qm mcp` runs) in
// a child process against a real server in this one, driven over pipes.
// Only protocol messages on stdout, logs on stderr; a waiting allocate does
// not hold up other messages; oversized and malformed lines are answered
// and serving goes on; subscriptions notify; end of input exits 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/mcp/mcp_test_util.h"

namespace qm::mcp::testing {
namespace {

// qm-mcp in a child process with its stdin, stdout and stderr on pipes.
class Child {
 public:
  explicit Child(const std::string& server_url) {
    signal(SIGPIPE, SIG_IGN);
    // The environment, made before fork (only exec-safe calls after it).
    std::vector<std::string> env = {"QM_SERVER=" + server_url};
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string v = *e;
      if (v.rfind("QM_SERVER=", 0) != 0 && v.rfind("QM_TOKEN=", 0) != 0) {
        env.push_back(v);
      }
    }
    std::vector<char*> envp;
    for (std::string& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    char* argv[] = {const_cast<char*>(QM_MCP_BINARY), nullptr};
    int in[2], out[2], err[2];
    if (pipe(in) != 0 || pipe(out) != 0 || pipe(err) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
      execve(QM_MCP_BINARY, argv, envp.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in_ = in[1];
    out_reader_ = std::thread([this, fd = out[0]] { Read(fd, &out_lines_); });
    err_reader_ = std::thread([this, fd = err[0]] { Read(fd, &err_lines_); });
  }
  ~Child() {
    CloseInput();
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
  }

  bool started() const { return pid_ > 0; }

  // SIGKILL, as a client that goes away (or a crash) ends it; waits for it.
  void Kill() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }

  // Writes all of `text` (from a thread of its own when large, so the
  // child's answers cannot fill the pipe while we block).
  void Write(const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = write(in_, text.data() + done, text.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  void Send(const Json& msg) { Write(msg.dump() + "\n"); }
  void CloseInput() {
    if (in_ >= 0) close(in_);
    in_ = -1;
  }

  // The next stdout line, or nullopt after `timeout`.
  std::optional<std::string> NextLine(
      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !out_lines_.empty(); })) {
      return std::nullopt;
    }
    std::string l = std::move(out_lines_.front());
    out_lines_.pop_front();
    return l;
  }
  // The next stdout message, parsed (null when none comes).
  Json Next(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::optional<std::string> l = NextLine(timeout);
    if (!l) return Json();
    Json j = Json::parse(*l, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON on stdout: " << *l;
    return j;
  }
  // The next message that is not a notification.
  Json NextResponse() {
    for (;;) {
      Json j = Next();
      if (j.is_null() || j.contains("id")) return j;
    }
  }

  // Waits for the exit; its exit code (-1 when killed or after `timeout`).
  int Wait(std::chrono::seconds timeout = std::chrono::seconds(20)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  std::string Stderr() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    for (const std::string& l : err_lines_) s += l + "\n";
    return s;
  }

 private:
  void Read(int fd, std::deque<std::string>* lines) {
    std::string partial;
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      partial.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = partial.find('\n')) != std::string::npos) {
        std::lock_guard<std::mutex> lock(mu_);
        lines->push_back(partial.substr(0, nl));
        partial.erase(0, nl + 1);
        cv_.notify_all();
      }
    }
    if (!partial.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      lines->push_back(partial + "<no newline>");
      cv_.notify_all();
    }
    close(fd);
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int in_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> out_lines_, err_lines_;
  std::thread out_reader_, err_reader_;
};

class StdioTest : public McpTest {
 protected:
  void InitializeChild(Child& c) {
    c.Send(
        Request(0, "initialize",
                {{"protocolVersion", "2025-06-18"},
                 {"capabilities", Json::object()},
                 {"clientInfo", {{"name", "stdio_test"}, {"version", "1"}}}}));
    Json r = c.NextResponse();
    ASSERT_EQ(r["result"]["protocolVersion"], "2025-06-18") << r.dump();
    c.Send(Json{{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
  }
};

TEST_F(StdioTest, ServesAndExitsZeroAtEndOfInput) {
  Child c(url_);
  ASSERT_TRUE(c.started());
  InitializeChild(c);
  c.Send(Request(1, "tools/list"));
  Json tools = c.NextResponse();
  EXPECT_EQ(tools["id"], 1);
  EXPECT_EQ(tools["result"]["tools"].size(), 8u);

  c.Send(Request(2, "tools/call",
                 {{"name", "resource_allocate"},
                  {"arguments", {{"requirements", Coder("w")}}}}));
  Json a = c.NextResponse();
  ASSERT_EQ(a["id"], 2);
  EXPECT_EQ(a["result"]["structuredContent"]["status"], "active") << a.dump();

  // A CRLF line, blank lines, then end of input.
  c.Write("\r\n\n" + Request(3, "ping").dump() + "\r\n");
  Json p = c.NextResponse();
  EXPECT_EQ(p["id"], 3);
  EXPECT_EQ(p["result"], Json::object());
  c.CloseInput();
  EXPECT_EQ(c.Wait(), 0);
  EXPECT_FALSE(c.NextLine(std::chrono::milliseconds(200)).has_value());
  EXPECT_NE(c.Stderr().find("qm mcp: serving MCP on stdio"), std::string::npos)
      << c.Stderr();
}

TEST_F(StdioTest, OversizedAndMalformedLinesAreAnsweredAndServingGoesOn) {
  Child c(url_);
  ASSERT_TRUE(c.started());
  InitializeChild(c);
  // 6 MiB in one line, written from a thread (the pipe holds 64 KiB).
  std::string huge = R"({"jsonrpc": "2.0", "id": 1, "method": "ping", "x": ")" +
                     std::string(6 << 20, 'z') + "\"}\n";
  std::thread writer([&] {
    c.Write(huge);
    c.Write("{oops\n");
    c.Send(Request(2, "ping"));
  });
  Json big = c.NextResponse();
  EXPECT_EQ(big["error"]["code"], kInvalidRequest) << big.dump();
  EXPECT_TRUE(big["id"].is_null());
  EXPECT_NE(big["error"]["message"].get<std::string>().find("too large"),
            std::string::npos);
  Json bad = c.NextResponse();
  EXPECT_EQ(bad["error"]["code"], kParseError) << bad.dump();
  Json ping = c.NextResponse();
  EXPECT_EQ(ping["id"], 2);
  EXPECT_EQ(ping["result"], Json::object());
  writer.join();
  c.CloseInput();
  EXPECT_EQ(c.Wait(), 0);
  EXPECT_NE(c.Stderr().find("skipped a message"), std::string::npos)
      << c.Stderr();
}

TEST_F(StdioTest, AWaitingAllocateDoesNotHoldUpOtherMessages) {
  // Both slots taken, so the allocate waits.
  std::string held;
  for (int i = 0; i < 2; ++i) {
    Json a = Api("POST", "/v1/allocations",
                 R"({"workflow_id": "h", "agent_type": "coder"})");
    held = a["result"]["allocation_id"];
  }
  Child c(url_);
  ASSERT_TRUE(c.started());
  InitializeChild(c);
  c.Send(Request(
      "wait", "tools/call",
      {{"name", "resource_allocate"},
       {"arguments", {{"requirements", Coder("w")}, {"timeout", 30}}}}));
  c.Send(Request("ping", "ping"));
  Json first = c.NextResponse();
  EXPECT_EQ(first["id"], "ping") << first.dump();
  Api("POST", "/v1/allocations/" + held + "/release");
  Json granted = c.NextResponse();
  EXPECT_EQ(granted["id"], "wait");
  EXPECT_EQ(granted["result"]["structuredContent"]["status"], "active")
      << granted.dump();
  c.CloseInput();
  EXPECT_EQ(c.Wait(), 0);
}

TEST_F(StdioTest, SubscriptionsNotifyOnStdout) {
  Child c(url_);
  ASSERT_TRUE(c.started());
  InitializeChild(c);
  c.Send(Request(1, "resources/subscribe", {{"uri", "qm://status"}}));
  EXPECT_EQ(c.NextResponse()["result"], Json::object());
  Api("POST", "/v1/allocations",
      R"({"workflow_id": "s", "agent_type": "coder"})");
  Json n = c.Next(std::chrono::seconds(10));
  EXPECT_EQ(n["method"], "notifications/resources/updated") << n.dump();
  EXPECT_EQ(n["params"]["uri"], "qm://status");
  c.CloseInput();
  EXPECT_EQ(c.Wait(), 0);
}

// `qm mcp` names itself as the holder of what it allocates, so when its
// process goes (its client is gone: the client ends it, or it is killed)
// the server takes the allocation back at once instead of when its lease
// (10 minutes here) runs out.
TEST_F(StdioTest, AllocationsAreReclaimedWhenQmMcpIsKilled) {
  Child c(url_);
  ASSERT_TRUE(c.started());
  InitializeChild(c);
  Json req = Coder("k");
  req["ttl_seconds"] = 600;
  c.Send(Request(
      1, "tools/call",
      {{"name", "resource_allocate"}, {"arguments", {{"requirements", req}}}}));
  Json a = c.NextResponse();
  ASSERT_EQ(a["result"]["structuredContent"]["status"], "active") << a.dump();
  const std::string id = a["result"]["structuredContent"]["allocation_id"];
  auto status = [&] {
    return Api("GET", "/v1/allocations/" + id)["result"].value("status", "?");
  };
  // Held while the process lives.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(status(), "active");

  c.Kill();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (status() == "active" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status(), "expired");
  EXPECT_EQ(
      Api("GET", "/v1/status")["result"]["resources"]["agents"]["allocated"],
      0);
}

}  // namespace
}  // namespace qm::mcp::testing
