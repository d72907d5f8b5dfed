#include "mcp/stdio.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>

namespace qm::mcp {
namespace {

// Writes whole messages, one per line, from any thread.
class Writer {
 public:
  explicit Writer(std::ostream& out) : out_(out) {}

  // False once a write has failed (the client is gone).
  bool Send(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return false;
    out_ << message << '\n';
    out_.flush();
    if (!out_) broken_ = true;
    return !broken_;
  }

  bool broken() const {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }

 private:
  std::ostream& out_;
  mutable std::mutex mu_;
  bool broken_ = false;  // guarded by mu_
};

// What the reading loop, the tool call threads and the poller share.
struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;  // running tool calls
  bool stop = false;  // end of input: the poller stops
};

}  // namespace

int ServeStdio(std::shared_ptr<McpServer> server, int in_fd, std::ostream& out,
               const std::function<void(const std::string&)>& log,
               StdioOptions options) {
  ::signal(SIGPIPE, SIG_IGN);
  auto writer = std::make_shared<Writer>(out);
  auto shared = std::make_shared<Shared>();
  auto Log = [&log](const std::string& line) {
    if (log) log(line);
  };

  std::thread poller([server, writer, shared, options] {
    std::unique_lock<std::mutex> lock(shared->mu);
    while (!shared->stop) {
      shared->cv.wait_for(lock, options.poll_interval,
                          [&] { return shared->stop; });
      if (shared->stop) break;
      lock.unlock();
      if (server->has_subscriptions()) {
        for (const std::string& m : server->PollSubscriptions()) {
          writer->Send(m);
        }
      }
      lock.lock();
    }
  });

  const size_t max = server->options().max_message_bytes;
  auto dispatch = [&](std::string line, size_t dropped) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (dropped > 0) {
      Log("skipped a message of " + std::to_string(dropped) +
          " bytes (the limit is " + std::to_string(max) + ")");
      writer->Send(JsonRpcError(
          nullptr, kInvalidRequest,
          "message too large: " + std::to_string(dropped) +
              " bytes (the limit is " + std::to_string(max) + ")"));
      return;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) return;
    if (!server->MayBlock(line)) {
      for (const std::string& m : server->Handle(line)) writer->Send(m);
      return;
    }
    {
      std::unique_lock<std::mutex> lock(shared->mu);
      shared->cv.wait(
          lock, [&] { return shared->in_flight < options.max_in_flight; });
      ++shared->in_flight;
    }
    std::thread([server, writer, shared, line = std::move(line)] {
      for (const std::string& m : server->Handle(line)) writer->Send(m);
      std::lock_guard<std::mutex> lock(shared->mu);
      --shared->in_flight;
      shared->cv.notify_all();
    }).detach();
  };

  // Reads lines; one longer than the limit (plus a '\r') is dropped as it
  // comes, counting its bytes.
  std::string line;
  size_t dropped = 0;
  char buf[64 * 1024];
  while (!writer->broken()) {
    const ssize_t n = ::read(in_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      Log(std::string("reading stdin: ") + strerror(errno));
      break;
    }
    if (n == 0) break;
    size_t i = 0;
    while (i < static_cast<size_t>(n)) {
      const char* nl = static_cast<const char*>(
          memchr(buf + i, '\n', static_cast<size_t>(n) - i));
      const size_t len =
          nl ? static_cast<size_t>(nl - (buf + i)) : static_cast<size_t>(n) - i;
      if (dropped > 0) {
        dropped += len;
      } else if (line.size() + len > max + 1) {
        dropped = line.size() + len;
        std::string().swap(line);
      } else {
        line.append(buf + i, len);
      }
      i += len;
      if (nl) {
        ++i;
        dispatch(std::move(line), dropped);
        line.clear();
        dropped = 0;
      }
    }
  }
  if (!line.empty() || dropped > 0) dispatch(std::move(line), dropped);

  {
    std::lock_guard<std::mutex> lock(shared->mu);
    shared->stop = true;
  }
  shared->cv.notify_all();
  poller.join();
  int running;
  {
    std::unique_lock<std::mutex> lock(shared->mu);
    shared->cv.wait_for(lock, options.exit_grace,
                        [&] { return shared->in_flight == 0; });
    running = shared->in_flight;
  }
  if (running > 0) {
    Log("end of input with " + std::to_string(running) +
        " tool call(s) still running; exiting without their answers");
    out.flush();
    std::fflush(nullptr);
    std::_Exit(0);
  }
  return 0;
}

}  // namespace qm::mcp
