#include "server/dashboard.h"

#include <string>

namespace qm::server {
namespace {

// Whether the comma-separated If-None-Match value names `etag` (or is *).
bool Matches(std::string_view if_none_match, std::string_view etag) {
  size_t start = 0;
  while (start < if_none_match.size()) {
    size_t comma = if_none_match.find(',', start);
    if (comma == std::string_view::npos) comma = if_none_match.size();
    std::string_view tag = if_none_match.substr(start, comma - start);
    while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
    while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);  // weak comparison
    if (tag == "*" || tag == etag) return true;
    start = comma + 1;
  }
  return false;
}

}  // namespace

const EmbeddedFile* FindDashboardFile(std::string_view path) {
  for (size_t i = 0; i < kDashboardFileCount; ++i) {
    if (kDashboardFiles[i].path == path) return &kDashboardFiles[i];
  }
  return nullptr;
}

bool WantsDashboard(const HttpRequest& request) {
  return request.Header("accept").find("text/html") != std::string_view::npos;
}

HttpResponse DashboardResponse(const HttpRequest& request,
                               std::string_view path) {
  HttpResponse r;
  const EmbeddedFile* f = FindDashboardFile(path);
  if (f == nullptr) {
    r.status = 404;
    r.content_type = "text/plain; charset=utf-8";
    r.body = "no dashboard file " + std::string(path) + "\n";
    return r;
  }
  r.content_type = std::string(f->content_type);
  r.headers = {
      {"ETag", std::string(f->etag)},
      // Kept, but revalidated each time (answered 304 while unchanged).
      {"Cache-Control", "no-cache"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
  };
  if (path.ends_with(".html")) {
    // Only this server's own scripts, styles and API.
    r.headers.emplace_back(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'");
  }
  if (Matches(request.Header("if-none-match"), f->etag)) {
    r.status = 304;
    return r;
  }
  r.body = std::string(f->body);
  return r;
}

}  // namespace qm::server
