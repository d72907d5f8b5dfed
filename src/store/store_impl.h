// The concrete stores behind qm::Store::Open. Private to src/store.
#ifndef QM_STORE_STORE_IMPL_H_
#define QM_STORE_STORE_IMPL_H_

#include <memory>
#include <string_view>

#include "qm/store.h"

namespace qm::store {

// The SQLite store in the directory options.location (sqlite_store.cc).
StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const StoreOptions& options);

// The PostgreSQL store at the URI options.location (pg_store.cc).
StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const StoreOptions& options);

// Whether `location` is a PostgreSQL URI rather than a directory.
bool IsPostgresUri(std::string_view location);
// A store location fit for messages and logs: a postgresql:// URI without
// its password (neither the "user:password@" form nor the "password="
// query parameter); anything else as it is.
std::string RedactLocation(std::string_view location);

// CRC-32 (zlib) of a record's checksummed fields: seq, time, epoch and
// payload, so a record moved to another seq fails its check too.
uint32_t RecordChecksum(uint64_t seq, int64_t time_ms, uint64_t epoch,
                        std::string_view payload);

}  // namespace qm::store

#endif  // QM_STORE_STORE_IMPL_H_
