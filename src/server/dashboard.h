// The live dashboard of `qm serve`: the static page under web/dashboard/
// (HTML, CSS, vanilla JavaScript; no framework, no CDN), embedded in the
// binary at build time by cmake/embed_files.cmake and served at GET / (to
// browsers: requests whose Accept names text/html) and GET /dashboard/FILE.
// The page itself reads everything it shows from the API (/v1/status, the
// event and monitor streams, ...); these files hold no state and no secret,
// so they are served without a token (docs/monitoring.md, "Dashboard").
#ifndef QM_SERVER_DASHBOARD_H_
#define QM_SERVER_DASHBOARD_H_

#include <cstddef>
#include <string_view>

#include "server/http.h"

namespace qm::server {

// One embedded file: its path under web/dashboard/ ("app.js"), content
// type, bytes, and a strong ETag (quoted) derived from its content.
struct EmbeddedFile {
  std::string_view path;
  std::string_view content_type;
  std::string_view body;
  std::string_view etag;
};

// The generated table (dashboard_assets.cc in the build directory).
extern const EmbeddedFile kDashboardFiles[];
extern const size_t kDashboardFileCount;

// The embedded file at `path` ("index.html"), or nullptr.
const EmbeddedFile* FindDashboardFile(std::string_view path);

// Whether a GET / wants the page rather than the JSON list of routes: its
// Accept header names text/html (browsers do; curl and the CLI do not).
bool WantsDashboard(const HttpRequest& request);

// The answer to a GET of embedded file `path`: 200 with its content type,
// ETag and `Cache-Control: no-cache` (the browser revalidates, so a new
// build is seen at once), 304 when If-None-Match names its ETag, 404 (a
// short text) when there is no such file. Security headers keep the page
// from being framed or sniffed.
HttpResponse DashboardResponse(const HttpRequest& request,
                               std::string_view path);

}  // namespace qm::server

#endif  // QM_SERVER_DASHBOARD_H_
