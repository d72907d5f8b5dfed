// The HTTP/1.1 server of `qm serve` on Boost.Beast.
//
// Each connection is a Session on a strand of its own. A session is, at any
// time, in one phase: idle (waiting for the first byte of a request),
// reading a request, handling it (the handler's Responder has not answered
// yet), writing the answer, streaming, lingering before a close, or closed.
// While a request is handled or a stream is open, one raw read stays pending
// on the socket: it notices a client that goes away (connected() turns
// false, a stream's Send false) and keeps any pipelined bytes for later.
//
// Timeouts: the idle and read timeouts run on a per-session timer (a read
// timeout must be able to answer 408, and the tcp_stream's own timeout closes
// the socket); writes use the tcp_stream's expires_after (a client that does
// not read is dropped).
//
// Lifetimes: Core (the io_context, the handler, the counters, the session
// registry) is shared by the server and every Responder and Stream, so an
// answer given after the server stopped goes to a stopped io_context, never
// to a destroyed one. Sessions are held by their pending operations and by
// the Responder/Stream of their request; they refer to Core by a plain
// pointer (Core's io_context destroys them before Core goes).
#include "server/http.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include "server/http_util.h"

namespace qm::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// A stream whose client does not read is closed once this much waits.
constexpr size_t kMaxStreamBacklog = size_t{8} << 20;
// Bytes asked of one raw read (idle wait, disconnect watch, linger).
constexpr size_t kRawReadBytes = 4096;
// Before closing after an error answer, the rest of the request is read and
// discarded (so that the client sees the answer rather than a reset) for at
// most this long and this much.
constexpr Duration kLingerTime = std::chrono::milliseconds(500);
constexpr size_t kLingerBytes = size_t{1} << 20;

using http_util::Lower;
using http_util::Reason;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `s`; a '%' not followed by two hex digits stays as it is.
std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]);
      int lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

void SplitTarget(std::string_view target, HttpRequest* r) {
  // Absolute form ("http://host/path?q"): keep the path and query.
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.substr(0, scheme.size()) == scheme) {
      size_t slash = target.find_first_of("/?", scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/")
                                               : target.substr(slash);
      break;
    }
  }
  size_t hash = target.find('#');
  if (hash != std::string_view::npos) target = target.substr(0, hash);
  size_t q = target.find('?');
  const std::string_view raw = target.substr(0, q);
  r->path = PercentDecode(raw, /*plus_is_space=*/false);
  r->segments.clear();
  for (size_t start = 1;;) {
    const size_t slash = raw.find('/', start);
    r->segments.push_back(PercentDecode(
        raw.substr(std::min(start, raw.size()), slash == std::string_view::npos
                                                    ? std::string_view::npos
                                                    : slash - start),
        /*plus_is_space=*/false));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (q == std::string_view::npos) return;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view()
                                          : query.substr(amp + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
    r->query.emplace_back(PercentDecode(key, true), PercentDecode(value, true));
  }
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (uint8_t(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(uint8_t(c)));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

std::string DefaultErrorBody(int /*status*/, const Status& error) {
  return std::string("{\"status\":\"error\",\"error\":{\"code\":\"") +
         std::string(CodeName(error.code())) + "\",\"message\":\"" +
         JsonEscape(error.message()) + "\"}}";
}

// Header text from a handler, made safe to put on the wire.
std::string HeaderSafe(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != '\r' && c != '\n') out.push_back(c);
  }
  return out;
}

std::string SecondsText(Duration d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

class SessionBase;

// What the server, its Responders and its Streams share.
struct Core : std::enable_shared_from_this<Core> {
  explicit Core(int threads) : ioc(std::max(threads, 1)) {}

  HttpOptions options;
  HttpHandler handler;
  std::atomic<size_t> connections{0};
  std::atomic<size_t> in_flight{0};
  std::atomic<bool> stopping{false};

  std::mutex mu;  // guards sessions and next_id
  std::unordered_map<uint64_t, std::weak_ptr<SessionBase>> sessions;
  uint64_t next_id = 0;

  std::unique_ptr<ssl::context> tls;  // null: plain HTTP
  // Last: destroyed first, together with the sessions its handlers hold
  // (their destructors use the members above).
  net::io_context ioc;

  std::vector<std::shared_ptr<SessionBase>> Sessions() {
    std::vector<std::shared_ptr<SessionBase>> out;
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }
};

// The strand-bound half of a connection that Responders and Streams talk
// to. The Post* functions may be called from any thread.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;

  virtual void PostResponse(HttpResponse response) = 0;
  virtual void PostBeginStream(
      std::string content_type,
      std::vector<std::pair<std::string, std::string>> headers) = 0;
  virtual void PostStreamData(std::string data) = 0;
  virtual void PostStreamClose(bool abort) = 0;
  // Server stop: `hard` closes at once; otherwise idle connections and
  // streams close and the others after their answer.
  virtual void PostShutdown(bool hard) = 0;
  // Closes the socket from a thread that is not the strand's; only once no
  // I/O thread runs.
  virtual void CloseFromOutside() = 0;

  // Set on the strand, read anywhere.
  std::atomic<bool> closed{false};
  std::atomic<bool> stream_open{false};
  std::atomic<size_t> stream_backlog{0};
};

}  // namespace

// The shared state of one request's Responder copies.
struct Responder::State {
  State(std::shared_ptr<Core> c, std::shared_ptr<SessionBase> s)
      : core(std::move(c)), session(std::move(s)) {}
  // In-process (Responder::InProcess): no connection.
  explicit State(std::function<void(HttpResponse)> d) : done(std::move(d)) {}
  ~State() {
    if (!answered.exchange(true)) {
      const Status why = Internal("the request's handler did not answer");
      HttpResponse r;
      r.status = 500;
      if (done) {
        r.body = DefaultErrorBody(500, why);
        done(std::move(r));
        return;
      }
      r.body = core->options.error_body(500, why);
      session->PostResponse(std::move(r));
    }
  }

  std::shared_ptr<Core> core;  // first: outlives the session reference
  std::shared_ptr<SessionBase> session;
  // Set for an in-process request (then core and session are null).
  std::function<void(HttpResponse)> done;
  std::atomic<bool> answered{false};
};

namespace {

class StreamImpl final : public Stream {
 public:
  StreamImpl(std::shared_ptr<Core> core, std::shared_ptr<SessionBase> session)
      : core_(std::move(core)), session_(std::move(session)) {}
  ~StreamImpl() override { Close(); }

  bool Send(std::string data) override {
    if (!session_ || closed_.load() || !session_->stream_open.load() ||
        core_->stopping.load()) {
      return false;
    }
    if (data.empty()) return true;
    size_t n = data.size();
    if (session_->stream_backlog.fetch_add(n) + n > kMaxStreamBacklog) {
      // The client does not read: give up on it.
      session_->stream_open = false;
      session_->PostStreamClose(/*abort=*/true);
      return false;
    }
    session_->PostStreamData(std::move(data));
    return true;
  }

  void Close() override {
    if (session_ && !closed_.exchange(true)) {
      session_->PostStreamClose(/*abort=*/false);
    }
  }

  bool open() const override {
    return session_ && !closed_.load() && session_->stream_open.load() &&
           !core_->stopping.load();
  }

 private:
  std::shared_ptr<Core> core_;  // first: outlives the session reference
  std::shared_ptr<SessionBase> session_;
  std::atomic<bool> closed_{false};
};

template <class S>
class Session final : public SessionBase {
 public:
  static constexpr bool kTls = !std::is_same_v<S, beast::tcp_stream>;

  template <class... Args>
  Session(Core* core, uint64_t id, std::string remote, bool loopback,
          Args&&... args)
      : core_(core),
        id_(id),
        remote_(std::move(remote)),
        loopback_(loopback),
        stream_(std::forward<Args>(args)...),
        ex_(stream_.get_executor()),
        timer_(ex_) {}

  ~Session() override {
    FinishPending();
    if (!counted_closed_) core_->connections--;
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->sessions.erase(id_);
  }

  void Run() {
    net::dispatch(ex_, [self = Self()] { self->Begin(); });
  }

  void PostResponse(HttpResponse response) override {
    net::post(ex_, [self = Self(), r = std::move(response)]() mutable {
      self->OnResponse(std::move(r));
    });
  }
  void PostBeginStream(
      std::string content_type,
      std::vector<std::pair<std::string, std::string>> headers) override {
    net::post(ex_,
              [self = Self(), ct = std::move(content_type),
               h = std::move(headers)]() mutable { self->BeginStream(ct, h); });
  }
  void PostStreamData(std::string data) override {
    net::post(ex_, [self = Self(), d = std::move(data)]() mutable {
      self->StreamData(std::move(d));
    });
  }
  void PostStreamClose(bool abort) override {
    net::post(ex_, [self = Self(), abort] { self->StreamClose(abort); });
  }
  void PostShutdown(bool hard) override {
    net::post(ex_, [self = Self(), hard] { self->Shutdown(hard); });
  }
  void CloseFromOutside() override { Close(); }

 private:
  enum class Phase {
    kHandshake,
    kIdle,
    kReading,
    kHandling,
    kWriting,
    kStreaming,
    kLinger,
    kClosed
  };
  enum class TimerPurpose { kIdle, kRead, kLinger };

  std::shared_ptr<Session> Self() {
    return std::static_pointer_cast<Session>(shared_from_this());
  }
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }
  const HttpOptions& options() const { return core_->options; }

  void Begin() {
    if (core_->stopping) return Close();
    if constexpr (kTls) {
      phase_ = Phase::kHandshake;
      Lowest().expires_after(options().read_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = Self()](const error_code& ec) {
                                if (self->phase_ != Phase::kHandshake) return;
                                if (ec) return self->Close();
                                self->WaitForRequest();
                              });
    } else {
      WaitForRequest();
    }
  }

  // --- Timer -------------------------------------------------------------

  void ArmTimer(Duration d, TimerPurpose purpose) {
    uint64_t gen = ++timer_gen_;
    timer_purpose_ = purpose;
    timer_.expires_after(d);
    timer_.async_wait([self = Self(), gen](const error_code& ec) {
      if (ec || gen != self->timer_gen_) return;
      self->OnTimer();
    });
  }
  void CancelTimer() {
    ++timer_gen_;
    timer_.cancel();
  }
  void OnTimer() {
    switch (timer_purpose_) {
      case TimerPurpose::kIdle:
        if (phase_ == Phase::kIdle) Close();
        break;
      case TimerPurpose::kRead:
        if (phase_ == Phase::kReading) {
          // The read completes with operation_aborted and answers 408.
          read_timed_out_ = true;
          error_code ec;
          Lowest().socket().cancel(ec);
        }
        break;
      case TimerPurpose::kLinger:
        if (phase_ == Phase::kLinger) Close();
        break;
    }
  }

  // --- Reading requests --------------------------------------------------

  void WaitForRequest() {
    if (core_->stopping || shutting_down_) return Close();
    phase_ = Phase::kIdle;
    if (buffer_.size() > 0) return ReadRequest();
    ArmTimer(options().idle_timeout, TimerPurpose::kIdle);
    if (!raw_read_pending_) StartRawRead();
  }

  void StartRawRead() {
    raw_read_pending_ = true;
    Lowest().expires_never();
    stream_.async_read_some(buffer_.prepare(kRawReadBytes),
                            [self = Self()](const error_code& ec, size_t n) {
                              self->OnRawRead(ec, n);
                            });
  }

  void OnRawRead(const error_code& ec, size_t n) {
    raw_read_pending_ = false;
    if (phase_ == Phase::kClosed) return;
    if (ec) return Close();  // the client went away (or half-closed)
    buffer_.commit(n);
    switch (phase_) {
      case Phase::kIdle:
        ReadRequest();
        break;
      case Phase::kStreaming:
        buffer_.consume(buffer_.size());
        StartRawRead();
        break;
      case Phase::kLinger:
        lingered_ += buffer_.size();
        buffer_.consume(buffer_.size());
        if (lingered_ > kLingerBytes) return Close();
        StartRawRead();
        break;
      default:
        // Handling or writing: pipelined bytes wait in buffer_ for the next
        // request; stop watching.
        break;
    }
  }

  void ReadRequest() {
    phase_ = Phase::kReading;
    read_timed_out_ = false;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(options().max_header_bytes, UINT32_MAX)));
    parser_->body_limit(static_cast<uint64_t>(options().max_body_bytes));
    ArmTimer(options().read_timeout, TimerPurpose::kRead);
    Lowest().expires_never();
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = Self()](const error_code& ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(const error_code& ec) {
    if (phase_ != Phase::kReading) return;
    if (ec) return OnReadError(ec);
    auto& req = parser_->get();
    if (!parser_->is_done() &&
        beast::iequals(req[http::field::expect], "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      Lowest().expires_after(options().write_timeout);
      net::async_write(stream_, net::buffer(kContinue),
                       [self = Self()](const error_code& ec, size_t) {
                         if (self->phase_ != Phase::kReading) return;
                         if (ec) return self->Close();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    if (parser_->is_done()) return OnRead({});
    Lowest().expires_never();
    http::async_read(
        stream_, buffer_, *parser_,
        [self = Self()](const error_code& ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(const error_code& ec) {
    if (phase_ != Phase::kReading) return;
    if (ec) return OnReadError(ec);
    CancelTimer();
    Dispatch();
  }

  void OnReadError(const error_code& ec) {
    CancelTimer();
    if (read_timed_out_) {
      return SendError(408,
                       InvalidRequest("request not received within " +
                                      SecondsText(options().read_timeout)));
    }
    if (ec == http::error::header_limit) {
      return SendError(
          431, InvalidRequest("request headers larger than " +
                              std::to_string(options().max_header_bytes) +
                              " bytes"));
    }
    if (ec == http::error::body_limit) {
      return SendError(
          413,
          InvalidRequest("request body larger than " +
                         std::to_string(options().max_body_bytes) + " bytes"));
    }
    if (ec.category() ==
            http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      return SendError(400,
                       InvalidRequest("malformed HTTP request: " + Reason(ec)));
    }
    Close();  // end of stream, a socket error, or the server stopping
  }

  void Dispatch() {
    auto& m = parser_->get();
    HttpRequest r;
    r.method = std::string(m.method_string());
    r.target = std::string(m.target());
    SplitTarget(r.target, &r);
    for (const auto& field : m) {
      r.headers.emplace_back(Lower(field.name_string()),
                             std::string(field.value()));
    }
    r.body = std::move(m.body());
    r.remote_address = remote_;
    r.remote_is_loopback = loopback_;
    keep_alive_ = m.keep_alive();
    version_ = m.version();
    parser_.reset();

    phase_ = Phase::kHandling;
    request_pending_ = true;
    core_->in_flight++;
    if (buffer_.size() == 0 && !raw_read_pending_) StartRawRead();

    auto core = core_->shared_from_this();
    auto state = std::make_shared<Responder::State>(core, Self());
    Responder responder(state);
    try {
      core_->handler(std::move(r), responder);
    } catch (const std::exception& e) {
      HttpResponse res;
      res.status = 500;
      res.body = options().error_body(
          500,
          Internal(std::string("the request's handler failed: ") + e.what()));
      responder.Respond(std::move(res));
    } catch (...) {
      HttpResponse res;
      res.status = 500;
      res.body =
          options().error_body(500, Internal("the request's handler failed"));
      responder.Respond(std::move(res));
    }
  }

  // --- Answers -----------------------------------------------------------

  void FinishPending() {
    if (request_pending_) {
      request_pending_ = false;
      core_->in_flight--;
    }
  }

  void OnResponse(HttpResponse r) {
    if (phase_ != Phase::kHandling) {
      // The connection closed meanwhile: the answer has nowhere to go.
      FinishPending();
      return;
    }
    if (r.status < 200 || r.status > 999) {
      std::string what = "the request's handler answered HTTP status " +
                         std::to_string(r.status);
      r = HttpResponse();
      r.status = 500;
      r.body = options().error_body(500, Internal(std::move(what)));
    }
    // These statuses have no body (Beast refuses to frame one).
    if (r.status == 204 || r.status == 304) r.body.clear();
    auto res = std::make_unique<http::response<http::string_body>>();
    res->version(version_ == 10 ? 10 : 11);
    res->result(static_cast<unsigned>(r.status));
    res->set(http::field::server, "qm");
    if (!r.content_type.empty()) {
      res->set(http::field::content_type, HeaderSafe(r.content_type));
    }
    for (auto& [name, value] : r.headers) {
      std::string safe = HeaderSafe(name);
      if (!safe.empty()) res->insert(safe, HeaderSafe(value));
    }
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive_ && !shutting_down_ && !core_->stopping);
    res->prepare_payload();
    Write(std::move(res), /*error=*/false);
  }

  void SendError(int status, const Status& error) {
    auto res = std::make_unique<http::response<http::string_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(status));
    res->set(http::field::server, "qm");
    res->set(http::field::content_type, "application/json");
    res->body() = options().error_body(status, error);
    res->keep_alive(false);
    res->prepare_payload();
    parser_.reset();
    Write(std::move(res), /*error=*/true);
  }

  void Write(std::unique_ptr<http::response<http::string_body>> res,
             bool error) {
    phase_ = Phase::kWriting;
    res_ = std::move(res);
    Lowest().expires_after(options().write_timeout);
    http::async_write(stream_, *res_,
                      [self = Self(), error](const error_code& ec, size_t) {
                        self->OnWrite(ec, error);
                      });
  }

  void OnWrite(const error_code& ec, bool error) {
    FinishPending();
    bool keep = res_ && res_->keep_alive();
    res_.reset();
    if (phase_ != Phase::kWriting) return;
    if (ec) return Close();
    if (error || !keep || shutting_down_ || core_->stopping) return Linger();
    WaitForRequest();
  }

  // Stops sending, then reads and drops what the client still sends for a
  // little while, so that it reads the answer instead of a reset.
  void Linger() {
    phase_ = Phase::kLinger;
    error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    if (!raw_read_pending_) buffer_.consume(buffer_.size());
    lingered_ = 0;
    ArmTimer(kLingerTime, TimerPurpose::kLinger);
    if (!raw_read_pending_) StartRawRead();
  }

  // --- Streams -----------------------------------------------------------

  void BeginStream(
      const std::string& content_type,
      const std::vector<std::pair<std::string, std::string>>& headers) {
    FinishPending();
    if (phase_ != Phase::kHandling) {
      stream_open = false;
      return;
    }
    phase_ = Phase::kStreaming;
    chunked_ = version_ != 10;
    std::string head =
        version_ == 10 ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.1 200 OK\r\n";
    head += "Server: qm\r\nContent-Type: " + HeaderSafe(content_type) +
            "\r\nCache-Control: no-cache\r\n";
    for (const auto& [name, value] : headers) {
      head += HeaderSafe(name) + ": " + HeaderSafe(value) + "\r\n";
    }
    if (chunked_) head += "Transfer-Encoding: chunked\r\n";
    head += "Connection: close\r\n\r\n";
    out_.push_back({std::move(head), 0});
    // Pipelined bytes after a stream request have no meaning: drop them.
    if (!raw_read_pending_) {
      buffer_.consume(buffer_.size());
      StartRawRead();
    }
    DoStreamWrite();
    if (shutting_down_ || core_->stopping) {
      // After the data already sent to the stream (queued behind us).
      net::post(ex_, [self = Self()] { self->StreamClose(/*abort=*/false); });
    }
  }

  void StreamData(std::string data) {
    size_t n = data.size();
    if (phase_ != Phase::kStreaming || stream_closing_) {
      stream_backlog -= n;
      return;
    }
    if (chunked_) {
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", n);
      data.insert(0, size);
      data += "\r\n";
    }
    out_.push_back({std::move(data), n});
    DoStreamWrite();
  }

  void StreamClose(bool abort) {
    stream_open = false;
    if (phase_ != Phase::kStreaming || stream_closing_) return;
    if (abort) return Close();
    stream_closing_ = true;
    if (chunked_) out_.push_back({"0\r\n\r\n", 0});
    DoStreamWrite();
  }

  void DoStreamWrite() {
    if (writing_ || phase_ != Phase::kStreaming) return;
    if (out_.empty()) {
      if (stream_closing_) Close();
      return;
    }
    writing_ = true;
    batch_.clear();
    batch_.swap(out_);
    buffers_.clear();
    for (const auto& item : batch_) buffers_.push_back(net::buffer(item.first));
    Lowest().expires_after(options().write_timeout);
    net::async_write(stream_, buffers_,
                     [self = Self()](const error_code& ec, size_t) {
                       self->OnStreamWrite(ec);
                     });
  }

  void OnStreamWrite(const error_code& ec) {
    writing_ = false;
    size_t written = 0;
    for (const auto& item : batch_) written += item.second;
    stream_backlog -= written;
    batch_.clear();
    if (phase_ != Phase::kStreaming) return;
    if (ec) return Close();
    DoStreamWrite();
  }

  // --- Closing -----------------------------------------------------------

  void Shutdown(bool hard) {
    shutting_down_ = true;
    // A stream gets to write its last chunk (Stop waits a little for
    // connections to go, then closes them from outside).
    if (hard && phase_ != Phase::kStreaming) return Close();
    switch (phase_) {
      case Phase::kHandshake:
      case Phase::kIdle:
      case Phase::kReading:
      case Phase::kLinger:
        Close();
        break;
      case Phase::kStreaming:
        StreamClose(/*abort=*/false);
        break;
      default:
        break;  // closes after its answer
    }
  }

  void Close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    closed = true;
    stream_open = false;
    CancelTimer();
    error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    Lowest().close();
    // Queued stream data will not be written.
    size_t queued = 0;
    for (const auto& item : out_) queued += item.second;
    out_.clear();
    stream_backlog -= queued;
    if (!counted_closed_) {
      counted_closed_ = true;
      core_->connections--;
    }
  }

  Core* const core_;
  const uint64_t id_;
  const std::string remote_;
  const bool loopback_;
  S stream_;
  net::any_io_executor ex_;  // the connection's strand
  net::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  TimerPurpose timer_purpose_ = TimerPurpose::kIdle;

  Phase phase_ = Phase::kIdle;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool raw_read_pending_ = false;
  bool read_timed_out_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool request_pending_ = false;  // counted in core_->in_flight
  bool shutting_down_ = false;
  bool counted_closed_ = false;
  size_t lingered_ = 0;
  std::unique_ptr<http::response<http::string_body>> res_;

  // Stream output: (wire bytes, payload bytes counted in stream_backlog).
  std::vector<std::pair<std::string, size_t>> out_, batch_;
  std::vector<net::const_buffer> buffers_;
  bool writing_ = false;
  bool chunked_ = true;
  bool stream_closing_ = false;
};

// "host:port" -> endpoint; host may be an IPv4 or bracketed IPv6 literal,
// empty (all interfaces), or a name to resolve.
StatusOr<tcp::endpoint> ParseListen(const std::string& listen,
                                    net::io_context& ioc) {
  auto bad = [&](const std::string& why) {
    return InvalidRequest("listen address \"" + listen +
                          "\" is not valid: " + why);
  };
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return bad("expected host:port");
  std::string host = listen.substr(0, colon);
  std::string port_text = listen.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("the port must be a number from 0 to 65535");
  }
  int port = std::stoi(port_text);
  if (port > 65535) return bad("the port must be a number from 0 to 65535");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return bad("an IPv6 address must be in brackets ([::1]:7070)");
  }
  if (host.empty()) return tcp::endpoint(tcp::v4(), uint16_t(port));
  error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (!ec) return tcp::endpoint(addr, uint16_t(port));
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, port_text, ec);
  if (ec || results.empty()) {
    return bad("cannot resolve host \"" + host + "\"" +
               (ec ? ": " + Reason(ec) : ""));
  }
  return tcp::endpoint(results.begin()->endpoint().address(), uint16_t(port));
}

std::string FormatEndpoint(const tcp::endpoint& ep) {
  auto addr = ep.address();
  std::string host = addr.to_string();
  if (addr.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

Status FileReadable(const std::string& what, const std::string& file) {
  std::ifstream in(file);
  if (!in) {
    return InvalidRequest(what + " \"" + file + "\" cannot be read");
  }
  return Status::Ok();
}

}  // namespace

// --- HttpRequest, Responder ------------------------------------------------

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

const std::string* HttpRequest::Query(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) return &value;
  }
  return nullptr;
}

Responder::Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}

Responder Responder::InProcess(std::function<void(HttpResponse)> done) {
  return Responder(std::make_shared<State>(std::move(done)));
}

void SetTarget(HttpRequest* r, std::string_view target) {
  r->target = std::string(target);
  r->path.clear();
  r->query.clear();
  SplitTarget(target, r);
}

void Responder::Respond(HttpResponse response) const {
  if (!state_ || state_->answered.exchange(true)) return;
  if (state_->done) {
    state_->done(std::move(response));
    return;
  }
  state_->session->PostResponse(std::move(response));
}

std::shared_ptr<Stream> Responder::OpenStream(
    std::string content_type,
    std::vector<std::pair<std::string, std::string>> headers) const {
  if (!state_ || state_->answered.exchange(true)) {
    return std::make_shared<StreamImpl>(nullptr, nullptr);
  }
  if (state_->done) {
    HttpResponse r;
    r.status = 501;
    r.body = DefaultErrorBody(
        501, Unimplemented("an event stream cannot be opened by a request "
                           "made inside the server"));
    state_->done(std::move(r));
    return std::make_shared<StreamImpl>(nullptr, nullptr);
  }
  auto& session = state_->session;
  session->stream_open = !session->closed.load();
  session->PostBeginStream(std::move(content_type), std::move(headers));
  return std::make_shared<StreamImpl>(state_->core, session);
}

bool Responder::connected() const {
  if (state_ && state_->done) return true;
  return state_ && !state_->session->closed.load() &&
         !state_->core->stopping.load();
}

// --- HttpServer --------------------------------------------------------------

class HttpServer::Impl {
 public:
  explicit Impl(std::shared_ptr<Core> core)
      : core_(std::move(core)),
        acceptor_(net::make_strand(core_->ioc)),
        retry_timer_(acceptor_.get_executor()),
        work_(net::make_work_guard(core_->ioc)) {}

  ~Impl() { Stop(Duration(0)); }

  Status Listen(const tcp::endpoint& endpoint) {
    const std::string& listen = core_->options.listen;
    auto fail = [&](const error_code& ec) {
      error_code ignored;
      acceptor_.close(ignored);
      return Unavailable("cannot listen on " + listen + ": " + Reason(ec));
    };
    error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (ec) return fail(ec);
    acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (ec) return fail(ec);
    acceptor_.bind(endpoint, ec);
    if (ec) return fail(ec);
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return fail(ec);
    bound_ = acceptor_.local_endpoint(ec);
    if (ec) return fail(ec);
    return Status::Ok();
  }

  void StartThreads() {
    DoAccept();
    int n = std::max(core_->options.io_threads, 1);
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([core = core_.get()] {
        for (;;) {
          try {
            core->ioc.run();
            return;
          } catch (...) {
            // A handler threw past its own guard: keep serving.
          }
        }
      });
    }
  }

  void Stop(Duration grace) {
    if (stopped_) return;
    stopped_ = true;
    core_->stopping = true;
    using Clock = std::chrono::steady_clock;

    // Stop accepting at once.
    std::promise<void> closed;
    net::post(acceptor_.get_executor(), [this, &closed] {
      error_code ec;
      acceptor_.close(ec);
      retry_timer_.cancel();
      closed.set_value();
    });
    if (!threads_.empty()) closed.get_future().wait();

    // Idle connections and streams close now, the others after their
    // answer, which may take up to `grace`.
    for (auto& s : core_->Sessions()) s->PostShutdown(/*hard=*/false);
    auto deadline = Clock::now() + grace;
    while (core_->in_flight > 0 && Clock::now() < deadline &&
           !threads_.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& s : core_->Sessions()) s->PostShutdown(/*hard=*/true);
    auto close_deadline = Clock::now() + std::chrono::seconds(1);
    while (core_->connections > 0 && Clock::now() < close_deadline &&
           !threads_.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    work_.reset();
    core_->ioc.stop();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    threads_.clear();
    // No I/O thread runs any more: close what is left from here.
    for (auto& s : core_->Sessions()) s->CloseFromOutside();
  }

  std::string address() const { return FormatEndpoint(bound_); }
  uint16_t port() const { return bound_.port(); }
  Core& core() { return *core_; }

 private:
  void DoAccept() {
    acceptor_.async_accept(net::make_strand(core_->ioc),
                           [this](const error_code& ec, tcp::socket socket) {
                             OnAccept(ec, std::move(socket));
                           });
  }

  void OnAccept(const error_code& ec, tcp::socket socket) {
    if (!acceptor_.is_open() || core_->stopping) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly.
      retry_timer_.expires_after(std::chrono::milliseconds(20));
      retry_timer_.async_wait([this](const error_code& ec) {
        if (!ec) DoAccept();
      });
      return;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    tcp::endpoint remote = socket.remote_endpoint(ignored);
    auto addr = remote.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
      addr = net::ip::make_address_v4(net::ip::v4_mapped, addr.to_v6());
    }
    bool loopback = addr.is_loopback();
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      id = ++core_->next_id;
    }
    core_->connections++;
    if (core_->tls) {
      auto s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
          core_.get(), id, addr.to_string(), loopback, std::move(socket),
          *core_->tls);
      Register(id, s);
      s->Run();
    } else {
      auto s = std::make_shared<Session<beast::tcp_stream>>(
          core_.get(), id, addr.to_string(), loopback, std::move(socket));
      Register(id, s);
      s->Run();
    }
    DoAccept();
  }

  void Register(uint64_t id, const std::shared_ptr<SessionBase>& s) {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->sessions[id] = s;
  }

  std::shared_ptr<Core> core_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  tcp::endpoint bound_;
  bool stopped_ = false;
};

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpOptions options,
                                                        HttpHandler handler) {
  try {
    if (!handler) return InvalidRequest("HttpServer needs a handler");
    if (!options.error_body) options.error_body = DefaultErrorBody;
    auto core = std::make_shared<Core>(options.io_threads);
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
        return InvalidRequest(
            "TLS needs both a certificate file and a private key file");
      }
      QM_RETURN_IF_ERROR(
          FileReadable("TLS certificate file", options.tls_cert_file));
      QM_RETURN_IF_ERROR(
          FileReadable("TLS private key file", options.tls_key_file));
      auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
      ctx->set_options(ssl::context::default_workarounds |
                       ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
      error_code ec;
      ctx->use_certificate_chain_file(options.tls_cert_file, ec);
      if (ec) {
        return InvalidRequest(
            "TLS certificate file \"" + options.tls_cert_file +
            "\" is not a usable PEM certificate: " + Reason(ec));
      }
      ctx->use_private_key_file(options.tls_key_file, ssl::context::pem, ec);
      if (ec) {
        return InvalidRequest("TLS private key file \"" + options.tls_key_file +
                              "\" is not a usable PEM key for the "
                              "certificate: " +
                              Reason(ec));
      }
      core->tls = std::move(ctx);
    }
    auto endpoint = ParseListen(options.listen, core->ioc);
    if (!endpoint.ok()) return endpoint.status();
    core->options = std::move(options);
    core->handler = std::move(handler);

    auto impl = std::make_unique<Impl>(core);
    QM_RETURN_IF_ERROR(impl->Listen(*endpoint));
    impl->StartThreads();
    return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
  } catch (const std::exception& e) {
    return Internal(std::string("cannot start the HTTP server: ") + e.what());
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;

std::string HttpServer::address() const { return impl_->address(); }
uint16_t HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop(Duration grace) { impl_->Stop(grace); }
size_t HttpServer::connections() const { return impl_->core().connections; }
size_t HttpServer::in_flight() const { return impl_->core().in_flight; }

}  // namespace qm::server
