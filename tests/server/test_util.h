// What the server tests share: a temporary directory and a `qm serve` App
// started in this process on port 0.
#ifndef QM_TESTS_SERVER_TEST_UTIL_H_
#define QM_TESTS_SERVER_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "qm/config_loader.h"
#include "server/app.h"
#include "server/http_client.h"
#include "server/server_config.h"

namespace qm::server::testing {

// A fresh directory under the system's temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "qm-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A server on `listen` with its state in `dir` under the config `yaml`
// and the auth settings `auth` (8 workers, not sampling the machine). Fails the
// test (and returns null) when it cannot start.
inline std::unique_ptr<App> StartApp(
    const std::string& dir, const std::string& yaml, ServerConfig auth = {},
    const std::string& listen = "127.0.0.1:0") {
  ServeOptions o;
  o.http.listen = listen;
  o.service.auth = std::move(auth);
  o.service.workers = 8;
  o.durable.store.location = dir;
  // Readings of the machine running the tests (its disk may be 80% full)
  // would add alerts and holds the tests do not expect; the monitoring
  // tests sample fixture trees of their own.
  o.sample = false;
  auto c = LoadConfigString(yaml, "test config");
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  if (!c.ok()) return nullptr;
  o.config = *c;
  auto app = App::Start(std::move(o));
  EXPECT_TRUE(app.ok()) << app.status().ToString();
  if (!app.ok()) return nullptr;
  return std::move(*app);
}

// A client of `url` ("http://host:port"), with a bearer token when given.
inline HttpClient ClientOf(const std::string& url,
                           const std::string& token = "") {
  ClientOptions o;
  o.url = url;
  o.token = token;
  return HttpClient(o);
}

}  // namespace qm::server::testing

#endif  // QM_TESTS_SERVER_TEST_UTIL_H_
