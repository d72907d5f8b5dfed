// The PostgreSQL peer: a table of `capacity` slot rows (holder, expiry).
// Acquire is one statement, so one transaction and one commit: an UPDATE of
// the first free or expired slot that no one else has locked (SELECT ...
// FOR UPDATE SKIP LOCKED LIMIT 1, so concurrent grants do not queue on the
// same row), returning its id. Release is one UPDATE of that row, checked
// against the holder. Both are prepared statements on a connection per
// client, in autocommit; with the server's defaults (fsync on,
// synchronous_commit on) each commit's WAL is flushed before the answer.
//
// Round trips per pair: 2 (the same as qm: allocate, release).
#include <libpq-fe.h>

#include <memory>
#include <string>

#include "peers/peer.h"

namespace qm::bench {
namespace {

constexpr char kAcquireSql[] =
    "UPDATE qm_peer_slots SET holder = $1, "
    "expires_at = now() + $2::float8 * interval '1 second' "
    "WHERE id = (SELECT id FROM qm_peer_slots "
    "WHERE holder IS NULL OR expires_at <= now() "
    "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id";

constexpr char kReleaseSql[] =
    "UPDATE qm_peer_slots SET holder = NULL, expires_at = NULL "
    "WHERE id = $1::int AND holder = $2";

struct ConnFree {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnFree>;
using ResultPtr = std::unique_ptr<PGresult, ResultFree>;

std::string ErrorText(PGconn* c) {
  std::string m = PQerrorMessage(c);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

StatusOr<ConnPtr> Dial(const std::string& uri) {
  ConnPtr c(PQconnectdb(uri.c_str()));
  if (!c) return Unavailable("postgresql: out of memory connecting");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    return Unavailable("postgresql at " + uri + ": " + ErrorText(c.get()));
  }
  return c;
}

// Runs `sql` (no parameters); OK when it completed.
StatusOr<ResultPtr> Exec(PGconn* c, const char* sql) {
  ResultPtr r(PQexec(c, sql));
  const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return Internal("postgresql: " + ErrorText(c));
  }
  return r;
}

Status PrepareStatement(PGconn* c, const char* name, const char* sql) {
  ResultPtr r(PQprepare(c, name, sql, 0, nullptr));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    return Internal(std::string("postgresql: prepare ") + name + ": " +
                    ErrorText(c));
  }
  return Status::Ok();
}

class PostgresClient : public PeerClient {
 public:
  PostgresClient(ConnPtr c, const PeerOptions& o)
      : c_(std::move(c)), ttl_(std::to_string(o.ttl_seconds)) {}

  Status Prepare() {
    QM_RETURN_IF_ERROR(PrepareStatement(c_.get(), "acquire", kAcquireSql));
    return PrepareStatement(c_.get(), "release", kReleaseSql);
  }

  Status Acquire(const std::string& holder) override {
    const char* params[] = {holder.c_str(), ttl_.c_str()};
    ResultPtr r(
        PQexecPrepared(c_.get(), "acquire", 2, params, nullptr, nullptr, 0));
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      return Internal("postgresql: acquire: " + ErrorText(c_.get()));
    }
    if (PQntuples(r.get()) != 1) {
      return ResourceExhausted("postgresql: no free slot");
    }
    slot_ = PQgetvalue(r.get(), 0, 0);
    holder_ = holder;
    return Status::Ok();
  }

  Status Release() override {
    const char* params[] = {slot_.c_str(), holder_.c_str()};
    ResultPtr r(
        PQexecPrepared(c_.get(), "release", 2, params, nullptr, nullptr, 0));
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return Internal("postgresql: release: " + ErrorText(c_.get()));
    }
    if (std::string(PQcmdTuples(r.get())) != "1") {
      return NotFound("postgresql: holder " + holder_ + " was gone at release");
    }
    return Status::Ok();
  }

 private:
  ConnPtr c_;
  const std::string ttl_;
  std::string slot_;
  std::string holder_;
};

class PostgresPeer : public Peer {
 public:
  explicit PostgresPeer(PeerOptions o) : o_(std::move(o)) {}

  Status Setup() override {
    auto c = Dial(o_.addr);
    if (!c.ok()) return c.status();
    // A fresh semaphore: every slot free.
    const std::string sql =
        "SET client_min_messages = warning; "
        "DROP TABLE IF EXISTS qm_peer_slots; "
        "CREATE TABLE qm_peer_slots (id int PRIMARY KEY, holder text, "
        "expires_at timestamptz); "
        "INSERT INTO qm_peer_slots (id) SELECT generate_series(1, " +
        std::to_string(o_.capacity) + "); ANALYZE qm_peer_slots";
    auto made = Exec(c->get(), sql.c_str());
    if (!made.ok()) return made.status();
    // Read back how durable the server is.
    durability_.clear();
    for (const char* name : {"fsync", "synchronous_commit", "wal_sync_method",
                             "full_page_writes"}) {
      auto v = Exec(c->get(), (std::string("SHOW ") + name).c_str());
      if (!v.ok()) return v.status();
      if (PQntuples(v->get()) != 1) {
        return Internal(std::string("postgresql: SHOW ") + name +
                        " answered no row");
      }
      if (!durability_.empty()) durability_ += ", ";
      durability_ += name;
      durability_ += " ";
      durability_ += PQgetvalue(v->get(), 0, 0);
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<PeerClient>> Connect(int) override {
    auto c = Dial(o_.addr);
    if (!c.ok()) return c.status();
    auto client = std::make_unique<PostgresClient>(std::move(*c), o_);
    QM_RETURN_IF_ERROR(client->Prepare());
    return std::unique_ptr<PeerClient>(std::move(client));
  }

  std::string durability() const override { return durability_; }
  int round_trips_per_pair() const override { return 2; }

 private:
  const PeerOptions o_;
  std::string durability_;
};

}  // namespace

std::unique_ptr<Peer> MakePostgresPeer(const PeerOptions& options) {
  return std::make_unique<PostgresPeer>(options);
}

}  // namespace qm::bench
