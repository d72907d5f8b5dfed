// The blocking HTTP/1.1 client on Boost.Beast.
//
// Every operation is started asynchronously on the client's private
// io_context and waited for with run(): the tcp_stream's expiry then bounds
// connects, writes and reads (Beast's timeouts only apply to asynchronous
// operations).
#include "server/http_client.h"

#include <poll.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <chrono>
#include <limits>
#include <optional>

#include "server/http_util.h"

namespace qm::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using SteadyClock = std::chrono::steady_clock;

constexpr int kMaxRedirects = 3;
constexpr uint64_t kMaxResponseBody = uint64_t{256} << 20;
constexpr size_t kMaxErrorBody = size_t{64} << 10;

using http_util::Lower;
using http_util::Reason;

std::string DurationText(Duration d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

struct Url {
  bool tls = false;
  std::string host;  // without brackets
  std::string port;
  std::string path;  // "" or "/..." (with the query)

  std::string HostHeader() const {
    std::string h =
        host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if ((tls && port != "443") || (!tls && port != "80")) h += ":" + port;
    return h;
  }
  // "http://127.0.0.1:7070": what error messages name.
  std::string Base() const {
    std::string h =
        host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return std::string(tls ? "https://" : "http://") + h + ":" + port;
  }
};

StatusOr<Url> ParseUrl(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidRequest("URL \"" + std::string(text) +
                          "\" is not valid: " + why);
  };
  Url url;
  std::string_view rest;
  if (text.substr(0, 7) == "http://") {
    rest = text.substr(7);
  } else if (text.substr(0, 8) == "https://") {
    url.tls = true;
    rest = text.substr(8);
  } else {
    return bad("expected http://host:port or https://host:port");
  }
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    url.path = std::string(rest.substr(slash));
    if (url.path[0] == '?') url.path.insert(0, "/");
  }
  if (authority.find('@') != std::string_view::npos) {
    return bad("user information is not supported");
  }
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("expected ':' after ']'");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.find(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) return bad("no host");
  if (port.empty()) {
    url.port = url.tls ? "443" : "80";
  } else {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return c >= '0' && c <= '9';
        })) {
      return bad("the port must be a number");
    }
    int p = std::stoi(std::string(port));
    if (p < 1 || p > 65535) return bad("the port must be from 1 to 65535");
    url.port = std::string(port);
  }
  return url;
}

bool IsIpAddress(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// The error of a non-200 answer to a stream request: the envelope's code
// and message when the body is one, else a code from the HTTP status.
Status StatusFromHttp(int status, const std::string& body,
                      const std::string& what) {
  auto field = [&](std::string_view key) -> std::string {
    std::string pattern = "\"" + std::string(key) + "\":\"";
    size_t at = body.find(pattern);
    if (at == std::string::npos) return "";
    at += pattern.size();
    std::string out;
    for (size_t i = at; i < body.size() && body[i] != '"'; ++i) {
      if (body[i] == '\\' && i + 1 < body.size()) ++i;
      out.push_back(body[i]);
    }
    return out;
  };
  Code code;
  if (!CodeFromName(field("code"), &code) || code == Code::kOk) {
    switch (status) {
      case 400:
      case 413:
      case 431:
        code = Code::kInvalidRequest;
        break;
      case 401:
        code = Code::kUnauthenticated;
        break;
      case 403:
        code = Code::kPermissionDenied;
        break;
      case 429:
        code = Code::kRateLimited;
        break;
      case 504:
        code = Code::kDeadlineExceeded;
        break;
      case 404:
        code = Code::kNotFound;
        break;
      case 409:
        code = Code::kConflict;
        break;
      case 501:
        code = Code::kUnimplemented;
        break;
      case 503:
        code = Code::kUnavailable;
        break;
      default:
        code = Code::kInternal;
    }
  }
  std::string message = field("message");
  if (message.empty()) message = body.substr(0, 200);
  return Status(code, what + ": HTTP " + std::to_string(status) +
                          (message.empty() ? "" : ": " + message));
}

// Server-Sent Events, as the HTML standard parses them.
class SseParser {
 public:
  using Callback = std::function<bool(const std::string&, const std::string&,
                                      const std::string&)>;

  // Feeds bytes; false once the callback asked to stop.
  bool Feed(std::string_view bytes, const Callback& cb) {
    for (char c : bytes) {
      if (skip_lf_) {
        skip_lf_ = false;
        if (c == '\n') continue;
      }
      if (c == '\r' || c == '\n') {
        skip_lf_ = c == '\r';
        if (!Line(cb)) return false;
        line_.clear();
        continue;
      }
      line_.push_back(c);
    }
    return true;
  }

 private:
  bool Line(const Callback& cb) {
    std::string_view line = line_;
    if (first_line_) {
      first_line_ = false;
      if (line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    }
    if (line.empty()) return Dispatch(cb);
    if (line[0] == ':') return true;  // a comment
    size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
    }
    if (field == "event") {
      event_ = std::string(value);
    } else if (field == "data") {
      data_.append(value);
      data_.push_back('\n');
    } else if (field == "id") {
      if (value.find('\0') == std::string_view::npos) id_ = std::string(value);
    }
    // "retry" and unknown fields are ignored.
    return true;
  }

  bool Dispatch(const Callback& cb) {
    if (data_.empty()) {
      event_.clear();
      return true;
    }
    data_.pop_back();  // the last '\n'
    std::string event = event_.empty() ? "message" : std::move(event_);
    std::string data = std::move(data_);
    event_.clear();
    data_.clear();
    return cb(id_, event, data);
  }

  std::string line_;
  bool skip_lf_ = false;
  bool first_line_ = true;
  std::string id_;  // the last event ID: it persists across events
  std::string event_;
  std::string data_;
};

// One connection, plain or TLS.
struct Conn {
  std::unique_ptr<beast::tcp_stream> tcp;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  std::string base;  // Url::Base() it is connected to

  bool open() const { return tcp || tls; }
  beast::tcp_stream& Lowest() {
    return tls ? beast::get_lowest_layer(*tls) : *tcp;
  }
  void Reset() {
    if (open()) {
      error_code ec;
      Lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      Lowest().socket().close(ec);
    }
    tcp.reset();
    tls.reset();
    buffer.clear();
    base.clear();
  }
  // Whether a kept connection still looks usable: nothing (not even an
  // end of stream) waits to be read on it.
  bool Idle() {
    if (!open() || buffer.size() > 0) return false;
    pollfd p{Lowest().socket().native_handle(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }
};

bool Idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" ||
         method == "PUT" || method == "DELETE";
}

}  // namespace

class HttpClient::Impl {
 public:
  explicit Impl(const ClientOptions& options) : options_(options) {
    auto url = ParseUrl(options.url);
    if (url.ok()) {
      url_ = *url;
    } else {
      url_error_ = url.status();
    }
  }

  ~Impl() { conn_.Reset(); }

  StatusOr<HttpResponse> Call(
      std::string_view method, std::string_view target, std::string_view body,
      Duration timeout,
      const std::vector<std::pair<std::string, std::string>>& headers) {
    if (!url_error_.ok()) return url_error_;
    Duration limit = timeout.count() > 0 ? timeout : options_.timeout;
    auto deadline = SteadyClock::now() + limit;
    Url url = url_;
    std::string path = url.path + std::string(target);
    for (int redirects = 0;; ++redirects) {
      auto res = CallOnce(url, method, path, body, deadline, limit, headers);
      if (!res.ok() && redirects > 0) {
        // Say who sent the client there (a follower naming a leader that
        // just died, say).
        return Status(res.status().code(), res.status().message() +
                                               " (redirected there by " +
                                               url_.Base() + ")");
      }
      if (!res.ok()) return res;
      std::optional<std::pair<Url, std::string>> next;
      if (redirects < kMaxRedirects) next = Redirect(*res, url);
      if (!next) return res;
      url = std::move(next->first);
      path = std::move(next->second);
    }
  }

  Status Stream(
      std::string_view target,
      const std::function<bool(const std::string&, const std::string&,
                               const std::string&)>& on_event,
      Duration timeout,
      const std::vector<std::pair<std::string, std::string>>& headers) {
    if (!url_error_.ok()) return url_error_;
    Url url = url_;
    std::string path = url.path + std::string(target);
    Conn conn;
    for (int redirects = 0;; ++redirects) {
      auto deadline = SteadyClock::now() + options_.timeout;
      QM_RETURN_IF_ERROR(Connect(url, deadline, &conn));
      std::string what = "event stream " + url.Base() + path;
      http::request<http::string_body> req{http::verb::get, path, 11};
      Prepare(url, &req, headers);
      req.set(http::field::accept, "text/event-stream");
      req.set(http::field::cache_control, "no-cache");
      req.prepare_payload();
      conn.Lowest().expires_at(deadline);
      error_code ec = Wait([&](auto h) {
        if (conn.tls) {
          http::async_write(*conn.tls, req, h);
        } else {
          http::async_write(*conn.tcp, req, h);
        }
      });
      if (ec) return IoError(ec, url, what, options_.timeout);

      http::response_parser<http::buffer_body> parser;
      // Not boost::none: Beast 1.74 compares a Content-Length against an
      // empty limit as if it were exceeded.
      parser.body_limit(std::numeric_limits<uint64_t>::max());
      ec = Wait([&](auto h) {
        if (conn.tls) {
          http::async_read_header(*conn.tls, conn.buffer, parser, h);
        } else {
          http::async_read_header(*conn.tcp, conn.buffer, parser, h);
        }
      });
      if (ec) return IoError(ec, url, what, options_.timeout);
      int status = static_cast<int>(parser.get().result_int());

      if (status != 200) {
        std::string body;
        // The body of an error (or a redirect) is short: read it whole.
        ReadBody(&conn, parser, deadline, [&](std::string_view bytes) {
          if (body.size() < kMaxErrorBody) body.append(bytes);
          return true;
        });
        conn.Reset();
        if (redirects < kMaxRedirects) {
          HttpResponse res;
          res.status = status;
          for (const auto& f : parser.get()) {
            res.headers.emplace_back(Lower(f.name_string()),
                                     std::string(f.value()));
          }
          if (auto next = Redirect(res, url)) {
            url = std::move(next->first);
            path = std::move(next->second);
            continue;
          }
        }
        return StatusFromHttp(status, body, what);
      }

      SseParser sse;
      bool stopped = false;
      Status result = ReadBodyStatus(&conn, parser, timeout, url, what,
                                     [&](std::string_view bytes) {
                                       if (!sse.Feed(bytes, on_event)) {
                                         stopped = true;
                                         return false;
                                       }
                                       return true;
                                     });
      conn.Reset();
      if (stopped) return Status::Ok();
      return result;
    }
  }

 private:
  // Runs one asynchronous operation to its end; returns its error.
  template <class Initiate>
  error_code Wait(Initiate&& initiate) {
    error_code result;
    initiate([&result](const error_code& ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  template <class Request>
  void Prepare(
      const Url& url, Request* req,
      const std::vector<std::pair<std::string, std::string>>& headers) {
    req->set(http::field::host, url.HostHeader());
    req->set(http::field::user_agent, "qm");
    if (!options_.token.empty()) {
      req->set(http::field::authorization, "Bearer " + options_.token);
    }
    for (const auto& [name, value] : headers) req->set(name, value);
  }

  // A 307/308 with a Location to follow: the new URL and target.
  std::optional<std::pair<Url, std::string>> Redirect(const HttpResponse& res,
                                                      const Url& current) {
    if (!options_.follow_redirects || (res.status != 307 && res.status != 308))
      return std::nullopt;
    std::string location;
    for (const auto& [name, value] : res.headers) {
      if (Lower(name) == "location") {
        location = value;
        break;
      }
    }
    if (location.empty()) return std::nullopt;
    if (location[0] == '/') return std::make_pair(current, location);
    auto url = ParseUrl(location);
    if (!url.ok()) return std::nullopt;
    std::string path = url->path.empty() ? "/" : url->path;
    url->path.clear();
    return std::make_pair(*url, path);
  }

  Status IoError(const error_code& ec, const Url& url, const std::string& what,
                 Duration limit) {
    if (ec == beast::error::timeout) {
      return DeadlineExceeded("no answer from " + what + " within " +
                              DurationText(limit));
    }
    (void)url;
    return Unavailable("lost the connection to " + what + " (" + Reason(ec) +
                       ")");
  }

  Status Connect(const Url& url, SteadyClock::time_point deadline, Conn* conn) {
    conn->Reset();
    std::string base = url.Base();
    auto unavailable = [&](const std::string& why) {
      return Unavailable("no qm server at " + base + " (" + why + ")");
    };
    tcp::resolver resolver(ioc_);
    error_code ec;
    auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec)
      return unavailable("cannot resolve \"" + url.host + "\": " + Reason(ec));
    auto stream = std::make_unique<beast::tcp_stream>(ioc_);
    auto connect_deadline =
        std::min(deadline, SteadyClock::now() + options_.connect_timeout);
    stream->expires_at(connect_deadline);
    ec = Wait([&](auto h) { stream->async_connect(endpoints, h); });
    if (ec == beast::error::timeout) {
      if (connect_deadline == deadline) {
        return DeadlineExceeded("could not connect to " + base + " in time");
      }
      return unavailable("connect timed out after " +
                         DurationText(options_.connect_timeout));
    }
    if (ec) return unavailable(Reason(ec));
    stream->socket().set_option(tcp::no_delay(true), ec);
    if (!url.tls) {
      conn->tcp = std::move(stream);
      conn->base = base;
      return Status::Ok();
    }
    QM_RETURN_IF_ERROR(EnsureTlsContext());
    auto tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(
        std::move(*stream), *tls_ctx_);
    if (!IsIpAddress(url.host)) {
      SSL_set_tlsext_host_name(tls->native_handle(), url.host.c_str());
    }
    if (options_.verify_tls) {
      tls->set_verify_mode(ssl::verify_peer, ec);
      if (!ec) {
        tls->set_verify_callback(ssl::host_name_verification(url.host), ec);
      }
      if (ec) return Internal("cannot set up TLS verification: " + Reason(ec));
    }
    beast::get_lowest_layer(*tls).expires_at(deadline);
    ec = Wait(
        [&](auto h) { tls->async_handshake(ssl::stream_base::client, h); });
    if (ec == beast::error::timeout) {
      return DeadlineExceeded("TLS handshake with " + base +
                              " not done in "
                              "time");
    }
    if (ec) {
      return Unavailable("TLS handshake with " + base + " failed (" +
                         Reason(ec) + ")");
    }
    conn->tls = std::move(tls);
    conn->base = base;
    return Status::Ok();
  }

  Status EnsureTlsContext() {
    if (tls_ctx_) return Status::Ok();
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    error_code ec;
    ctx->set_options(ssl::context::default_workarounds |
                         ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                     ec);
    if (options_.verify_tls) {
      if (!options_.ca_file.empty()) {
        ctx->load_verify_file(options_.ca_file, ec);
        if (ec) {
          return InvalidRequest("TLS CA file \"" + options_.ca_file +
                                "\" cannot be used: " + Reason(ec));
        }
      } else {
        ctx->set_default_verify_paths(ec);
      }
    }
    tls_ctx_ = std::move(ctx);
    return Status::Ok();
  }

  StatusOr<HttpResponse> CallOnce(
      const Url& url, std::string_view method, const std::string& path,
      std::string_view body, SteadyClock::time_point deadline, Duration limit,
      const std::vector<std::pair<std::string, std::string>>& headers) {
    std::string what = url.Base() + path;
    bool reused = conn_.open() && conn_.base == url.Base() && conn_.Idle();
    for (int attempt = 0;; ++attempt) {
      if (!reused) QM_RETURN_IF_ERROR(Connect(url, deadline, &conn_));
      http::request<http::string_body> req;
      req.method_string(method);
      req.target(path);
      req.version(11);
      Prepare(url, &req, headers);
      if (!body.empty() && req.find(http::field::content_type) == req.end()) {
        req.set(http::field::content_type, "application/json");
      }
      req.body() = std::string(body);
      req.keep_alive(true);
      req.prepare_payload();

      conn_.Lowest().expires_at(deadline);
      error_code ec = Wait([&](auto h) {
        if (conn_.tls) {
          http::async_write(*conn_.tls, req, h);
        } else {
          http::async_write(*conn_.tcp, req, h);
        }
      });
      if (ec) {
        conn_.Reset();
        if (ec != beast::error::timeout && reused && attempt == 0) {
          reused = false;  // the kept connection was closed: once more
          continue;
        }
        return IoError(ec, url, what, limit);
      }

      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxResponseBody);
      ec = Wait([&](auto h) {
        if (conn_.tls) {
          http::async_read(*conn_.tls, conn_.buffer, parser, h);
        } else {
          http::async_read(*conn_.tcp, conn_.buffer, parser, h);
        }
      });
      if (ec) {
        conn_.Reset();
        bool closed_before_answer =
            !parser.got_some() && (ec == http::error::end_of_stream ||
                                   ec == net::error::connection_reset);
        if (closed_before_answer && reused && attempt == 0 &&
            Idempotent(method)) {
          reused = false;
          continue;
        }
        return IoError(ec, url, what, limit);
      }
      auto& m = parser.get();
      HttpResponse res;
      res.status = static_cast<int>(m.result_int());
      res.content_type = std::string(m[http::field::content_type]);
      for (const auto& f : m) {
        if (f.name() == http::field::content_type) continue;
        res.headers.emplace_back(Lower(f.name_string()),
                                 std::string(f.value()));
      }
      res.body = std::move(m.body());
      if (!m.keep_alive()) conn_.Reset();
      return res;
    }
  }

  // Reads a buffer_body message's body until done, the callback declines,
  // an error, or the deadline; returns the error (timeout as
  // beast::error::timeout).
  template <class Parser, class OnBytes>
  error_code ReadBody(Conn* conn, Parser& parser,
                      std::optional<SteadyClock::time_point> deadline,
                      OnBytes&& on_bytes, Duration idle = Duration(0)) {
    char buf[16384];
    while (!parser.is_done()) {
      parser.get().body().data = buf;
      parser.get().body().size = sizeof buf;
      if (deadline) {
        conn->Lowest().expires_at(*deadline);
      } else if (idle.count() > 0) {
        conn->Lowest().expires_after(idle);
      } else {
        conn->Lowest().expires_never();
      }
      error_code ec = Wait([&](auto h) {
        if (conn->tls) {
          http::async_read_some(*conn->tls, conn->buffer, parser, h);
        } else {
          http::async_read_some(*conn->tcp, conn->buffer, parser, h);
        }
      });
      if (ec == http::error::need_buffer) ec = {};
      size_t n = sizeof buf - parser.get().body().size;
      if (n > 0 && !on_bytes(std::string_view(buf, n))) return {};
      if (ec) return ec;
    }
    return {};
  }

  template <class Parser, class OnBytes>
  Status ReadBodyStatus(Conn* conn, Parser& parser, Duration idle,
                        const Url& url, const std::string& what,
                        OnBytes&& on_bytes) {
    error_code ec = ReadBody(conn, parser, std::nullopt, on_bytes, idle);
    if (!ec) return Status::Ok();
    if (ec == beast::error::timeout) {
      return DeadlineExceeded("no data from " + what + " for " +
                              DurationText(idle));
    }
    (void)url;
    return Unavailable("the " + what + " ended abruptly (" + Reason(ec) + ")");
  }

  ClientOptions options_;
  Url url_;
  Status url_error_;
  net::io_context ioc_{1};
  std::unique_ptr<ssl::context> tls_ctx_;
  Conn conn_;  // the kept connection of Call
};

HttpClient::HttpClient(ClientOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

HttpClient::~HttpClient() = default;

StatusOr<HttpResponse> HttpClient::Call(
    std::string_view method, std::string_view target, std::string_view body,
    Duration timeout,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  try {
    return impl_->Call(method, target, body, timeout, headers);
  } catch (const std::exception& e) {
    return Internal(std::string("HTTP client: ") + e.what());
  }
}

Status HttpClient::Stream(
    std::string_view target,
    const std::function<bool(const std::string& id, const std::string& event,
                             const std::string& data)>& on_event,
    Duration timeout,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  try {
    return impl_->Stream(target, on_event, timeout, headers);
  } catch (const std::exception& e) {
    return Internal(std::string("HTTP client: ") + e.what());
  }
}

std::string UrlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace qm::server
