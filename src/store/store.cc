#include <zlib.h>

#include <cstring>
#include <string>

#include "store/store_impl.h"

namespace qm {
namespace store {

bool IsPostgresUri(std::string_view location) {
  return location.starts_with("postgresql://") ||
         location.starts_with("postgres://");
}

std::string RedactLocation(std::string_view uri) {
  std::string out(uri);
  const size_t scheme_end = out.find("://");
  if (scheme_end == std::string::npos) return out;
  const size_t start = scheme_end + 3;
  size_t authority_end = out.find_first_of("/?#", start);
  if (authority_end == std::string::npos) authority_end = out.size();
  const size_t at = out.rfind('@', authority_end);
  if (at != std::string::npos && at >= start) {
    const size_t colon = out.find(':', start);
    if (colon < at) out.erase(colon, at - colon);
  }
  const size_t query = out.find('?');
  if (query == std::string::npos) return out;
  std::string kept;
  size_t pos = query + 1;
  while (pos <= out.size()) {
    size_t end = out.find('&', pos);
    if (end == std::string::npos) end = out.size();
    const std::string_view param(out.data() + pos, end - pos);
    if (!param.empty() && !param.starts_with("password=")) {
      if (!kept.empty()) kept += '&';
      kept += param;
    }
    pos = end + 1;
  }
  out.resize(query);
  if (!kept.empty()) out += "?" + kept;
  return out;
}

uint32_t RecordChecksum(uint64_t seq, int64_t time_ms, uint64_t epoch,
                        std::string_view payload) {
  unsigned char header[24];
  // Little-endian whatever the host, so a file moves between machines.
  const uint64_t fields[3] = {seq, static_cast<uint64_t>(time_ms), epoch};
  for (int f = 0; f < 3; ++f) {
    for (int b = 0; b < 8; ++b) {
      header[f * 8 + b] = static_cast<unsigned char>(fields[f] >> (8 * b));
    }
  }
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, header, sizeof header);
  // (zlib restarts on a null buffer: an empty payload adds nothing.)
  if (!payload.empty()) {
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(payload.data()),
                  payload.size());
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace store

StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.location.empty()) {
    return InvalidRequest(
        "store location is empty: give a state directory or a "
        "postgresql:// URI");
  }
  if (store::IsPostgresUri(options.location)) {
    return store::OpenPostgresStore(options);
  }
  return store::OpenSqliteStore(options);
}

}  // namespace qm
