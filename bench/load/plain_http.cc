#include "load/plain_http.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <optional>

namespace qm::bench {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

struct PlainHttp::Impl {
  Impl(std::string url, std::chrono::milliseconds t) : timeout(t) {
    constexpr std::string_view kScheme = "http://";
    std::string_view rest = url;
    if (rest.substr(0, kScheme.size()) == kScheme) {
      rest.remove_prefix(kScheme.size());
    }
    rest = rest.substr(0, rest.find('/'));
    const size_t colon = rest.rfind(':');
    host = std::string(rest.substr(0, colon));
    port = colon == std::string_view::npos
               ? "80"
               : std::string(rest.substr(colon + 1));
    host_header = std::string(rest);
  }

  Status Connect() {
    socket.emplace(ioc);
    error_code ec;
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(host, port, ec);
    if (ec) return Unavailable("resolving " + host + ": " + ec.message());
    asio::connect(*socket, endpoints, ec);
    if (ec) {
      socket.reset();
      return Unavailable("connecting to " + host + ":" + port + ": " +
                         ec.message());
    }
    const int fd = socket->native_handle();
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = (timeout.count() % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    buffer.clear();
    return Status::Ok();
  }

  // A failed call leaves the connection in an unknown state: drop it.
  Status Failed(const char* what, const error_code& ec) {
    socket.reset();
    const std::string m =
        std::string(what) + " " + host_header + ": " + ec.message();
    if (ec == asio::error::would_block || ec == asio::error::timed_out ||
        ec == asio::error::try_again) {
      return DeadlineExceeded(m);
    }
    return Unavailable(m);
  }

  asio::io_context ioc;  // the sockets need one; it never runs
  std::optional<tcp::socket> socket;
  boost::beast::flat_buffer buffer;
  std::string host, port, host_header;
  std::chrono::milliseconds timeout;
};

PlainHttp::PlainHttp(std::string url, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(std::move(url), timeout)) {}
PlainHttp::~PlainHttp() = default;

StatusOr<PlainHttp::Answer> PlainHttp::Call(std::string_view method,
                                            std::string_view target,
                                            std::string_view body) {
  Impl& c = *impl_;
  if (!c.socket) QM_RETURN_IF_ERROR(c.Connect());
  http::request<http::string_body> req(
      http::string_to_verb({method.data(), method.size()}),
      {target.data(), target.size()}, 11);
  req.set(http::field::host, c.host_header);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body().assign(body.data(), body.size());
  req.prepare_payload();
  error_code ec;
  http::write(*c.socket, req, ec);
  if (ec) return c.Failed("writing to", ec);
  http::response<http::string_body> res;
  http::read(*c.socket, c.buffer, res, ec);
  if (ec) return c.Failed("reading from", ec);
  if (!res.keep_alive()) c.socket.reset();
  return Answer{static_cast<int>(res.result_int()), std::move(res.body())};
}

}  // namespace qm::bench
