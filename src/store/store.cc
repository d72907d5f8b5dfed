#include <zlib.h>

#include <cstring>

#include "store/store_impl.h"

namespace qm {
namespace store {

bool IsPostgresUri(std::string_view location) {
  return location.starts_with("postgresql://") ||
         location.starts_with("postgres://");
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
