// Small helpers shared by the HTTP server and client (http.cc,
// http_client.cc). Private to src/server.
#ifndef QM_SERVER_HTTP_UTIL_H_
#define QM_SERVER_HTTP_UTIL_H_

#include <boost/system/error_code.hpp>
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

namespace qm::server::http_util {

// `s` in lower case (ASCII), e.g. a header name.
inline std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(uint8_t(c)));
  return out;
}

// An OS or library error message as a clause: "address already in use".
inline std::string Reason(const boost::system::error_code& ec) {
  std::string m = ec.message();
  if (!m.empty()) m[0] = static_cast<char>(std::tolower(uint8_t(m[0])));
  return m;
}

}  // namespace qm::server::http_util

#endif  // QM_SERVER_HTTP_UTIL_H_
