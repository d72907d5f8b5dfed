// Tests of the HTTP transport (server and client) over real sockets on
// 127.0.0.1 with ports picked by the kernel.
#include "server/http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/http_client.h"

namespace qm::server {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Waits up to `limit` for `pred`.
bool WaitFor(const std::function<bool()>& pred,
             Duration limit = std::chrono::seconds(5)) {
  auto deadline = SteadyClock::now() + limit;
  while (!pred()) {
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

HttpResponse Text(std::string body, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

std::unique_ptr<HttpServer> MustStart(HttpOptions options,
                                      HttpHandler handler) {
  if (options.listen == HttpOptions().listen) options.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(std::move(options), std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  return std::move(server).value();
}

std::string UrlOf(const HttpServer& server) {
  return "http://" + server.address();
}

HttpClient ClientOf(const HttpServer& server) {
  ClientOptions o;
  o.url = UrlOf(server);
  return HttpClient(o);
}

// Responders parked by a handler, to be answered later.
class Parked {
 public:
  void Add(Responder r) {
    std::lock_guard<std::mutex> lock(mu_);
    responders_.push_back(std::move(r));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return responders_.size();
  }
  std::vector<Responder> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(responders_);
  }

 private:
  std::mutex mu_;
  std::vector<Responder> responders_;
};

// A raw TCP connection, for what HttpClient would never send.
class RawConn {
 public:
  explicit RawConn(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawConn() { Close(); }
  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool Send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n =
          ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  // Everything until the server closes (or 5 s pass).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
    return out;
  }
  // Reads until `text` has been seen (or the connection ends).
  std::string ReadUntil(const std::string& text) {
    char buf[4096];
    while (received_.find(text) == std::string::npos) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      received_.append(buf, size_t(n));
    }
    return received_;
  }
  // Whether the server closed the connection (recv returns 0) in time.
  bool ClosedByServer() {
    char buf[256];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return false;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

// --- Requests ------------------------------------------------------------

TEST(HttpServerTest, ParsesPathQueryHeadersAndPeer) {
  std::mutex mu;
  HttpRequest seen;
  auto server = MustStart({}, [&](HttpRequest req, Responder r) {
    std::lock_guard<std::mutex> lock(mu);
    seen = std::move(req);
    r.Respond(Text("ok"));
  });
  ASSERT_TRUE(server);
  ClientOptions o;
  o.url = UrlOf(*server);
  o.token = "s3cret";
  HttpClient client(o);
  const std::string target =
      "/v1/a%20b/c%2Fd?x=1&y=hello+world&z=%26%3D&flag&empty=&bad=%zz";
  auto res = client.Call("POST", target, "{\"k\":1}", Duration(0),
                         {{"X-Custom-Thing", "Value 1"}});
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");
  EXPECT_EQ(res->content_type, "text/plain");

  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, target);
  EXPECT_EQ(seen.path, "/v1/a b/c/d");
  // Split before decoding: the encoded '/' stays inside its segment.
  EXPECT_EQ(seen.segments, (std::vector<std::string>{"v1", "a b", "c/d"}));
  std::vector<std::pair<std::string, std::string>> want = {
      {"x", "1"},   {"y", "hello world"}, {"z", "&="},
      {"flag", ""}, {"empty", ""},        {"bad", "%zz"}};
  EXPECT_EQ(seen.query, want);
  ASSERT_NE(seen.Query("y"), nullptr);
  EXPECT_EQ(*seen.Query("y"), "hello world");
  EXPECT_EQ(seen.Query("nope"), nullptr);
  EXPECT_EQ(seen.Header("x-custom-thing"), "Value 1");
  EXPECT_EQ(seen.Header("authorization"), "Bearer s3cret");
  EXPECT_EQ(seen.Header("content-type"), "application/json");
  EXPECT_EQ(seen.Header("missing"), "");
  for (const auto& [name, value] : seen.headers) {
    for (char c : name) EXPECT_FALSE(c >= 'A' && c <= 'Z') << name;
  }
  EXPECT_EQ(seen.body, "{\"k\":1}");
  EXPECT_EQ(seen.remote_address, "127.0.0.1");
  EXPECT_TRUE(seen.remote_is_loopback);
}

TEST(HttpServerTest, ResponseHeadersAndStatusReachTheClient) {
  auto server = MustStart({}, [](HttpRequest, Responder r) {
    HttpResponse res;
    res.status = 404;
    res.body = "{\"status\":\"error\"}";
    res.headers = {{"X-Request-Id", "abc"}, {"Retry-After", "3"}};
    r.Respond(std::move(res));
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("GET", "/nothing");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(res->content_type, "application/json");
  EXPECT_EQ(res->body, "{\"status\":\"error\"}");
  bool found = false;
  for (const auto& [name, value] : res->headers) {
    if (name == "x-request-id" && value == "abc") found = true;
  }
  EXPECT_TRUE(found);
}

TEST(HttpServerTest, BodilessAndInvalidStatusesAreFramedCorrectly) {
  auto server = MustStart({}, [](HttpRequest req, Responder r) {
    if (req.path == "/204") return r.Respond(Text("dropped", 204));
    if (req.path == "/bad") return r.Respond(Text("?", 42));
    r.Respond(Text("fine"));
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("DELETE", "/204");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 204);
  EXPECT_EQ(res->body, "");
  res = client.Call("GET", "/bad");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 500);
  res = client.Call("GET", "/ok");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->body, "fine");
  EXPECT_EQ(server->connections(), 1u);
}

TEST(HttpServerTest, KeepAliveReusesOneConnection) {
  std::atomic<int> calls{0};
  auto server = MustStart({}, [&](HttpRequest, Responder r) {
    calls++;
    r.Respond(Text("hi"));
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  for (int i = 0; i < 10; ++i) {
    auto res = client.Call("GET", "/ping");
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    EXPECT_EQ(res->body, "hi");
    EXPECT_EQ(server->connections(), 1u);
  }
  EXPECT_EQ(calls.load(), 10);
}

TEST(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto server = MustStart({}, [](HttpRequest req, Responder r) {
    r.Respond(Text("path=" + req.path));
  });
  ASSERT_TRUE(server);
  RawConn conn(server->port());
  ASSERT_TRUE(conn.connected());
  ASSERT_TRUE(
      conn.Send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::string all = conn.ReadAll();
  size_t one = all.find("path=/one");
  size_t two = all.find("path=/two");
  ASSERT_NE(one, std::string::npos) << all;
  ASSERT_NE(two, std::string::npos) << all;
  EXPECT_LT(one, two);
}

// 200 long-polls pending at once on one I/O thread do not stop it from
// answering others; they are answered 200 ms later from another thread.
TEST(HttpServerTest, PendingLongPollsDoNotBlockTheServer) {
  constexpr int kWaiters = 200;
  Parked parked;
  HttpOptions options;
  options.io_threads = 1;
  auto server = MustStart(options, [&](HttpRequest req, Responder r) {
    if (req.path == "/wait") {
      parked.Add(std::move(r));
    } else {
      r.Respond(Text("fast"));
    }
  });
  ASSERT_TRUE(server);
  std::atomic<int> ok{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      HttpClient client = ClientOf(*server);
      auto res = client.Call("GET", "/wait");
      if (res.ok() && res->status == 200 && res->body == "late") ok++;
    });
  }
  ASSERT_TRUE(WaitFor([&] { return parked.size() == kWaiters; }));
  EXPECT_EQ(server->in_flight(), size_t{kWaiters});
  EXPECT_GE(server->connections(), size_t{kWaiters});

  HttpClient client = ClientOf(*server);
  auto start = SteadyClock::now();
  auto res = client.Call("GET", "/fast");
  auto took = SteadyClock::now() - start;
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->body, "fast");
  EXPECT_LT(took, milliseconds(500));

  std::thread answerer([&] {
    std::this_thread::sleep_for(milliseconds(200));
    for (auto& r : parked.Take()) r.Respond(Text("late"));
  });
  for (auto& t : waiters) t.join();
  answerer.join();
  EXPECT_EQ(ok.load(), kWaiters);
  EXPECT_TRUE(WaitFor([&] { return server->in_flight() == 0; }));
}

TEST(HttpServerTest, DroppedResponderAnswers500) {
  auto server = MustStart({}, [](HttpRequest, Responder) {});
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("GET", "/x");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(res->body.find("\"code\":\"INTERNAL\""), std::string::npos)
      << res->body;
  // The connection is still usable.
  res = client.Call("GET", "/y");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 500);
}

TEST(HttpServerTest, ThrowingHandlerAnswers500) {
  auto server = MustStart({}, [](HttpRequest, Responder) -> void {
    throw std::runtime_error("boom");
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("GET", "/x");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(res->body.find("boom"), std::string::npos) << res->body;
}

TEST(HttpServerTest, RespondIsExactlyOnce) {
  auto server = MustStart({}, [](HttpRequest, Responder r) {
    Responder copy = r;
    r.Respond(Text("first"));
    copy.Respond(Text("second"));
    EXPECT_EQ(copy.OpenStream()->Send("x"), false);
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  for (int i = 0; i < 3; ++i) {
    auto res = client.Call("GET", "/x");
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    EXPECT_EQ(res->body, "first");
  }
}

TEST(HttpServerTest, ConnectedTurnsFalseWhenTheClientLeaves) {
  Parked parked;
  auto server = MustStart({}, [&](HttpRequest, Responder r) {
    EXPECT_TRUE(r.connected());
    parked.Add(std::move(r));
  });
  ASSERT_TRUE(server);
  {
    RawConn conn(server->port());
    ASSERT_TRUE(conn.Send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(WaitFor([&] { return parked.size() == 1; }));
  }
  auto responders = parked.Take();
  ASSERT_EQ(responders.size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return !responders[0].connected(); }));
  EXPECT_EQ(server->in_flight(), 1u);
  responders[0].Respond(Text("nobody listens"));  // dropped silently
  EXPECT_TRUE(WaitFor([&] { return server->in_flight() == 0; }));
  EXPECT_TRUE(WaitFor([&] { return server->connections() == 0; }));
}

// --- Limits and timeouts -------------------------------------------------

std::string HookBody(int status, const Status& error) {
  return "{\"hook\":" + std::to_string(status) + ",\"code\":\"" +
         std::string(CodeName(error.code())) + "\"}";
}

TEST(HttpServerTest, TooLargeBodyIs413) {
  std::atomic<int> calls{0};
  HttpOptions options;
  options.max_body_bytes = 64;
  options.error_body = HookBody;
  auto server = MustStart(options, [&](HttpRequest, Responder r) {
    calls++;
    r.Respond(Text("ok"));
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("POST", "/big", std::string(1000, 'x'));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(res->body, "{\"hook\":413,\"code\":\"INVALID_REQUEST\"}");
  EXPECT_EQ(calls.load(), 0);
  // At the limit is fine (on a new connection: the other one was closed).
  res = client.Call("POST", "/small", std::string(64, 'x'));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
}

TEST(HttpServerTest, TooLargeHeadersAre431) {
  HttpOptions options;
  options.max_header_bytes = 1024;
  options.error_body = HookBody;
  auto server = MustStart(
      options, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto res = client.Call("GET", "/", "", Duration(0),
                         {{"X-Huge", std::string(4000, 'h')}});
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 431);
  EXPECT_EQ(res->body, "{\"hook\":431,\"code\":\"INVALID_REQUEST\"}");
}

TEST(HttpServerTest, MalformedRequestIs400WithTheDefaultBody) {
  auto server =
      MustStart({}, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
  ASSERT_TRUE(server);
  RawConn conn(server->port());
  ASSERT_TRUE(
      conn.Send("GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"));
  std::string all = conn.ReadAll();
  EXPECT_EQ(all.rfind("HTTP/1.1 400", 0), 0u) << all;
  EXPECT_NE(all.find("{\"status\":\"error\",\"error\":{\"code\":"
                     "\"INVALID_REQUEST\",\"message\":\"malformed HTTP "
                     "request"),
            std::string::npos)
      << all;
}

TEST(HttpServerTest, SlowRequestIs408ThenClosed) {
  HttpOptions options;
  options.read_timeout = milliseconds(200);
  options.error_body = HookBody;
  auto server = MustStart(
      options, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
  ASSERT_TRUE(server);
  RawConn conn(server->port());
  auto start = SteadyClock::now();
  ASSERT_TRUE(conn.Send("GET / HTTP/1.1\r\nHost: x\r\n"));  // unfinished
  std::string all = conn.ReadAll();
  auto took = SteadyClock::now() - start;
  EXPECT_EQ(all.rfind("HTTP/1.1 408", 0), 0u) << all;
  EXPECT_NE(all.find("{\"hook\":408,\"code\":\"INVALID_REQUEST\"}"),
            std::string::npos)
      << all;
  EXPECT_GE(took, milliseconds(150));
  EXPECT_LT(took, milliseconds(3000));
}

TEST(HttpServerTest, IdleConnectionsAreClosed) {
  HttpOptions options;
  options.idle_timeout = milliseconds(200);
  auto server = MustStart(
      options, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
  ASSERT_TRUE(server);
  // Silent from the start.
  RawConn silent(server->port());
  auto start = SteadyClock::now();
  EXPECT_TRUE(silent.ClosedByServer());
  EXPECT_GE(SteadyClock::now() - start, milliseconds(150));
  // Idle after a request.
  RawConn conn(server->port());
  ASSERT_TRUE(conn.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string head = conn.ReadUntil("ok");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_TRUE(conn.ClosedByServer());
  EXPECT_TRUE(WaitFor([&] { return server->connections() == 0; }));
}

TEST(HttpClientTest, ReconnectsWhenTheServerClosedTheKeptConnection) {
  HttpOptions options;
  options.idle_timeout = milliseconds(100);
  auto server = MustStart(
      options, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  ASSERT_TRUE(client.Call("POST", "/a", "{}").ok());
  ASSERT_TRUE(WaitFor([&] { return server->connections() == 0; }));
  auto res = client.Call("POST", "/b", "{}");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->body, "ok");
}

// --- Streams -------------------------------------------------------------

// Hands the streams a handler opens to the test.
class Streams {
 public:
  void Add(std::shared_ptr<Stream> s) {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(std::move(s));
    cv_.notify_all();
  }
  std::shared_ptr<Stream> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(5),
                      [&] { return !streams_.empty(); })) {
      return nullptr;
    }
    auto s = streams_.front();
    streams_.erase(streams_.begin());
    return s;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Stream>> streams_;
};

struct Event {
  std::string id, event, data;
  bool operator==(const Event& o) const {
    return id == o.id && event == o.event && data == o.data;
  }
};
std::ostream& operator<<(std::ostream& os, const Event& e) {
  return os << "{" << e.id << "," << e.event << "," << e.data << "}";
}

TEST(HttpStreamTest, EventsArriveInOrderAndSendFailsAfterDisconnect) {
  constexpr int kEvents = 100;
  Streams streams;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { streams.Add(r.OpenStream()); });
  ASSERT_TRUE(server);
  std::vector<Event> got;
  Status status;
  std::thread reader([&] {
    HttpClient client = ClientOf(*server);
    status = client.Stream("/v1/events",
                           [&](const std::string& id, const std::string& event,
                               const std::string& data) {
                             got.push_back({id, event, data});
                             return got.size() < size_t{kEvents};
                           });
  });
  auto stream = streams.Next();
  ASSERT_TRUE(stream);
  EXPECT_TRUE(stream->open());
  // A stream is an answer.
  EXPECT_TRUE(WaitFor([&] { return server->in_flight() == 0; }));
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_TRUE(stream->Send("id: " + std::to_string(i) +
                             "\nevent: tick\ndata: " + std::to_string(i) +
                             "\n\n"));
  }
  reader.join();
  EXPECT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(got.size(), size_t{kEvents});
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_EQ(got[i], (Event{std::to_string(i), "tick", std::to_string(i)}));
  }
  // The client went away: Send turns false.
  EXPECT_TRUE(WaitFor([&] { return !stream->Send("data: more\n\n"); }));
  EXPECT_FALSE(stream->open());
  EXPECT_TRUE(WaitFor([&] { return server->connections() == 0; }));
}

TEST(HttpStreamTest, ClientParsesServerSentEvents) {
  Streams streams;
  auto server = MustStart({}, [&](HttpRequest, Responder r) {
    streams.Add(r.OpenStream("text/event-stream", {{"X-Stream", "1"}}));
  });
  ASSERT_TRUE(server);
  std::vector<Event> got;
  Status status;
  std::thread reader([&] {
    HttpClient client = ClientOf(*server);
    status = client.Stream("/events",
                           [&](const std::string& id, const std::string& event,
                               const std::string& data) {
                             got.push_back({id, event, data});
                             return true;
                           });
  });
  auto stream = streams.Next();
  ASSERT_TRUE(stream);
  for (const char* piece :
       {": a comment\n\n", "id: 1\nevent: grant\ndata: first line\n",
        "data: second line\n\n", "data: no event type\r\n\r\n",
        "id: 3\ndata:nospace\n", "\n", "da", "ta: split", "\n\n",
        "event: empty\ndata\n\n", "retry: 100\nunknown: x\ndata: last\r\r"}) {
    ASSERT_TRUE(stream->Send(piece));
  }
  stream->Close();
  reader.join();
  EXPECT_TRUE(status.ok()) << status.ToString();
  std::vector<Event> want = {{"1", "grant", "first line\nsecond line"},
                             {"1", "message", "no event type"},
                             {"3", "message", "nospace"},
                             {"3", "message", "split"},
                             {"3", "empty", ""},
                             {"3", "message", "last"}};
  EXPECT_EQ(got, want);
}

TEST(HttpStreamTest, AnErrorAnswerToAStreamRequestIsAnError) {
  auto server = MustStart({}, [](HttpRequest, Responder r) {
    HttpResponse res;
    res.status = 404;
    res.body =
        "{\"status\":\"error\",\"error\":{\"code\":\"NOT_FOUND\","
        "\"message\":\"no such stream\"}}";
    r.Respond(std::move(res));
  });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  Status s = client.Stream("/nope", [](auto&, auto&, auto&) { return true; });
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("no such stream"), std::string::npos)
      << s.ToString();
}

TEST(HttpStreamTest, AClientThatDoesNotReadIsCutOff) {
  Streams streams;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { streams.Add(r.OpenStream()); });
  ASSERT_TRUE(server);
  RawConn conn(server->port());
  ASSERT_TRUE(conn.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto stream = streams.Next();
  ASSERT_TRUE(stream);
  std::string chunk(size_t{1} << 20, 'x');
  size_t sent = 0;
  while (stream->Send(chunk) && sent < (size_t{256} << 20))
    sent += chunk.size();
  EXPECT_LT(sent, size_t{256} << 20);
  EXPECT_GE(sent, size_t{8} << 20);
  EXPECT_FALSE(stream->open());
}

TEST(HttpStreamTest, StreamRequestToAStoppedServerEndsCleanly) {
  Streams streams;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { streams.Add(r.OpenStream()); });
  ASSERT_TRUE(server);
  Status status = Internal("not run");
  int events = 0;
  std::thread reader([&] {
    HttpClient client = ClientOf(*server);
    status = client.Stream(
        "/events",
        [&](const std::string&, const std::string&, const std::string&) {
          ++events;
          return true;
        });
  });
  auto stream = streams.Next();
  ASSERT_TRUE(stream);
  ASSERT_TRUE(stream->Send("data: one\n\n"));
  ASSERT_TRUE(WaitFor([&] { return server->connections() == 1; }));
  server->Stop(std::chrono::seconds(2));
  reader.join();
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(stream->Send("data: two\n\n"));
  EXPECT_FALSE(stream->open());
}

// --- Stop ----------------------------------------------------------------

TEST(HttpServerTest, StopLetsAnInFlightRequestFinishWithinGrace) {
  Parked parked;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { parked.Add(std::move(r)); });
  ASSERT_TRUE(server);
  StatusOr<HttpResponse> res = Internal("not run");
  std::thread caller([&] {
    HttpClient client = ClientOf(*server);
    res = client.Call("GET", "/slow");
  });
  ASSERT_TRUE(WaitFor([&] { return server->in_flight() == 1; }));
  RawConn idle(server->port());  // an idle connection closes at once
  ASSERT_TRUE(WaitFor([&] { return server->connections() == 2; }));
  std::thread answerer([&] {
    std::this_thread::sleep_for(milliseconds(200));
    for (auto& r : parked.Take()) r.Respond(Text("finished"));
  });
  auto start = SteadyClock::now();
  server->Stop(std::chrono::seconds(5));
  auto took = SteadyClock::now() - start;
  answerer.join();
  caller.join();
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "finished");
  EXPECT_GE(took, milliseconds(150));
  EXPECT_LT(took, milliseconds(3000));
  EXPECT_EQ(server->in_flight(), 0u);
  EXPECT_EQ(server->connections(), 0u);
  EXPECT_TRUE(idle.ClosedByServer());
}

TEST(HttpServerTest, StopGivesUpAfterGrace) {
  Parked parked;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { parked.Add(std::move(r)); });
  ASSERT_TRUE(server);
  StatusOr<HttpResponse> res = Internal("not run");
  std::thread caller([&] {
    HttpClient client = ClientOf(*server);
    res = client.Call("GET", "/never");
  });
  ASSERT_TRUE(WaitFor([&] { return server->in_flight() == 1; }));
  auto start = SteadyClock::now();
  server->Stop(milliseconds(100));
  EXPECT_LT(SteadyClock::now() - start, milliseconds(2000));
  caller.join();
  EXPECT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kUnavailable);
  // Answering after the stop is harmless.
  for (auto& r : parked.Take()) {
    EXPECT_FALSE(r.connected());
    r.Respond(Text("too late"));
  }
}

// --- Listening -----------------------------------------------------------

TEST(HttpServerTest, ListenErrors) {
  auto handler = [](HttpRequest, Responder r) { r.Respond(Text("ok")); };
  auto first = MustStart({}, handler);
  ASSERT_TRUE(first);
  EXPECT_NE(first->port(), 0);
  EXPECT_EQ(first->address(), "127.0.0.1:" + std::to_string(first->port()));

  HttpOptions taken;
  taken.listen = first->address();
  auto second = HttpServer::Start(taken, handler);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kUnavailable);
  EXPECT_NE(second.status().message().find(first->address()), std::string::npos)
      << second.status().message();
  EXPECT_NE(second.status().message().find("address already in use"),
            std::string::npos)
      << second.status().message();

  for (const char* bad : {"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000",
                          "::1:80", "127.0.0.1:-1"}) {
    HttpOptions o;
    o.listen = bad;
    auto s = HttpServer::Start(o, handler);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Code::kInvalidRequest)
        << bad << ": " << s.status().ToString();
  }
}

// --- Client --------------------------------------------------------------

TEST(HttpClientTest, NothingListeningIsUnavailableNamingTheUrl) {
  uint16_t port;
  {
    auto server =
        MustStart({}, [](HttpRequest, Responder r) { r.Respond(Text("ok")); });
    ASSERT_TRUE(server);
    port = server->port();
  }
  ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(port);
  HttpClient client(o);
  auto res = client.Call("GET", "/v1/status");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kUnavailable);
  EXPECT_EQ(res.status().message(),
            "no qm server at " + o.url + " (connection refused)");

  Status s = client.Stream("/events", [](auto&, auto&, auto&) { return true; });
  EXPECT_EQ(s.code(), Code::kUnavailable);
}

TEST(HttpClientTest, MalformedUrlIsInvalidRequest) {
  for (const char* bad :
       {"127.0.0.1:7070", "ftp://x", "http://", "http://h:x", "http://[::1"}) {
    ClientOptions o;
    o.url = bad;
    HttpClient client(o);
    auto res = client.Call("GET", "/");
    ASSERT_FALSE(res.ok()) << bad;
    EXPECT_EQ(res.status().code(), Code::kInvalidRequest) << bad;
  }
}

TEST(HttpClientTest, NoAnswerInTimeIsDeadlineExceeded) {
  Parked parked;
  auto server = MustStart(
      {}, [&](HttpRequest, Responder r) { parked.Add(std::move(r)); });
  ASSERT_TRUE(server);
  HttpClient client = ClientOf(*server);
  auto start = SteadyClock::now();
  auto res = client.Call("GET", "/slow", "", milliseconds(150));
  auto took = SteadyClock::now() - start;
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kDeadlineExceeded)
      << res.status().ToString();
  EXPECT_NE(res.status().message().find(UrlOf(*server) + "/slow"),
            std::string::npos)
      << res.status().message();
  EXPECT_GE(took, milliseconds(140));
  EXPECT_LT(took, milliseconds(2000));
  // The client's default timeout applies too.
  ClientOptions o;
  o.url = UrlOf(*server);
  o.timeout = milliseconds(100);
  HttpClient quick(o);
  res = quick.Call("GET", "/slow");
  EXPECT_EQ(res.status().code(), Code::kDeadlineExceeded)
      << res.status().ToString();
  // A stream without data for its timeout ends the same way.
  Status s = quick.Stream(
      "/events", [](auto&, auto&, auto&) { return true; }, milliseconds(100));
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded) << s.ToString();
  for (auto& r : parked.Take()) r.Respond(Text("late"));
}

TEST(HttpClientTest, FollowsRedirects) {
  std::mutex mu;
  HttpRequest seen;
  auto target = MustStart({}, [&](HttpRequest req, Responder r) {
    std::lock_guard<std::mutex> lock(mu);
    seen = req;
    r.Respond(Text("leader here"));
  });
  ASSERT_TRUE(target);
  std::string leader = UrlOf(*target);
  auto follower = MustStart({}, [&](HttpRequest req, Responder r) {
    HttpResponse res = Text("go to the leader", 307);
    res.headers = {{"Location", leader + req.target}};
    r.Respond(std::move(res));
  });
  ASSERT_TRUE(follower);
  std::atomic<int> loops{0};
  auto loop = MustStart({}, [&](HttpRequest req, Responder r) {
    loops++;
    HttpResponse res = Text("again", 308);
    res.headers = {{"Location", req.path}};
    r.Respond(std::move(res));
  });
  ASSERT_TRUE(loop);

  HttpClient client = ClientOf(*follower);
  auto res = client.Call("POST", "/v1/allocations?wait=1", "{\"a\":1}");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "leader here");
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen.method, "POST");
    EXPECT_EQ(seen.target, "/v1/allocations?wait=1");
    EXPECT_EQ(seen.body, "{\"a\":1}");
  }

  HttpClient looping = ClientOf(*loop);
  res = looping.Call("GET", "/x");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 308);
  EXPECT_EQ(loops.load(), 4);  // the call and 3 redirects

  ClientOptions o;
  o.url = UrlOf(*follower);
  o.follow_redirects = false;
  HttpClient stay(o);
  res = stay.Call("GET", "/x");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 307);
}

// --- TLS -----------------------------------------------------------------

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "openssl is not on PATH";
    }
    char tmpl[] = "/tmp/qm-http-tls-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cert_ = dir_ + "/cert.pem";
    key_ = dir_ + "/key.pem";
    std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        "-nodes -days 2 -subj /CN=localhost -addext "
        "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
        key_ + " -out " + cert_ + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  void TearDown() override {
    if (!dir_.empty()) {
      std::system(("rm -rf " + dir_).c_str());
    }
  }
  std::string dir_, cert_, key_;
};

TEST_F(TlsTest, RoundTrip) {
  HttpOptions options;
  options.tls_cert_file = cert_;
  options.tls_key_file = key_;
  Streams streams;
  auto server = MustStart(options, [&](HttpRequest req, Responder r) {
    if (req.path == "/events") {
      streams.Add(r.OpenStream());
      return;
    }
    r.Respond(Text("secure " + req.body));
  });
  ASSERT_TRUE(server);
  std::string url = "https://" + server->address();

  ClientOptions o;
  o.url = url;
  o.ca_file = cert_;
  HttpClient client(o);
  for (int i = 0; i < 3; ++i) {
    auto res = client.Call("POST", "/x", "hello");
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    EXPECT_EQ(res->body, "secure hello");
  }
  EXPECT_EQ(server->connections(), 1u);

  std::vector<std::string> data;
  std::thread reader([&] {
    HttpClient c(o);
    Status s = c.Stream("/events", [&](auto&, auto&, const std::string& d) {
      data.push_back(d);
      return data.size() < 2;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
  });
  auto stream = streams.Next();
  ASSERT_TRUE(stream);
  stream->Send("data: a\n\n");
  stream->Send("data: b\n\n");
  reader.join();
  EXPECT_EQ(data, (std::vector<std::string>{"a", "b"}));

  // Not trusted without the CA (the system's CAs do not know it).
  ClientOptions untrusted;
  untrusted.url = url;
  HttpClient refused(untrusted);
  auto res = refused.Call("GET", "/x");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kUnavailable);
  EXPECT_NE(res.status().message().find("TLS"), std::string::npos)
      << res.status().message();
  // Unless verification is off.
  untrusted.verify_tls = false;
  HttpClient lax(untrusted);
  res = lax.Call("GET", "/x");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);

  // A plain HTTP client gets nowhere (and does not hang).
  ClientOptions plain;
  plain.url = "http://" + server->address();
  plain.timeout = milliseconds(2000);
  HttpClient wrong(plain);
  EXPECT_FALSE(wrong.Call("GET", "/x").ok());
}

TEST_F(TlsTest, BadCertificateOrKeyFilesAreInvalidRequest) {
  auto handler = [](HttpRequest, Responder r) { r.Respond(Text("ok")); };
  std::string garbage = dir_ + "/garbage.pem";
  std::ofstream(garbage) << "not a certificate\n";
  struct Case {
    std::string cert, key, named;
  };
  for (const Case& c :
       {Case{dir_ + "/missing.pem", key_, "missing.pem"},
        Case{garbage, key_, "garbage.pem"}, Case{cert_, garbage, "garbage.pem"},
        Case{cert_, "", "key"}}) {
    HttpOptions options;
    options.listen = "127.0.0.1:0";
    options.tls_cert_file = c.cert;
    options.tls_key_file = c.key;
    auto s = HttpServer::Start(options, handler);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), Code::kInvalidRequest);
    EXPECT_NE(s.status().message().find(c.named), std::string::npos)
        << s.status().message();
  }
}

}  // namespace
}  // namespace qm::server
