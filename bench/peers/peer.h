// The peers of qm_peer_load: systems a user might pick instead of `qm serve`
// to hand out slots of a counting semaphore with a TTL, each driven the way
// a competent user would (bench/peers/peer_load.cc runs them; bench/peers.sh
// starts the servers and compares them with qm_load).
//
// Every peer grants a slot durably (the server has flushed it to disk
// before it answers) and releases it the same way:
//   redis       EVALSHA of a Lua script on a sorted set; release ZREM
//               (2 round trips per pair; AOF with appendfsync always)
//   postgresql  one UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
//               LOCKED) per grant; release one UPDATE (2 round trips, one
//               transaction each; fsync on, synchronous_commit on)
//   etcd        lease grant, then a txn putting a slot key with that lease
//               if it does not exist; release revokes the lease (3 round
//               trips, 3 Raft entries; default WAL fsync)
#ifndef QM_BENCH_PEERS_PEER_H_
#define QM_BENCH_PEERS_PEER_H_

#include <memory>
#include <string>

#include "qm/status.h"

namespace qm::bench {

// What the workload asks of every peer.
struct PeerOptions {
  // Where the server listens: host:port (redis, etcd) or a libpq URI
  // (postgresql).
  std::string addr;
  // Client threads, each with a connection of its own.
  int clients = 64;
  // Slots of the semaphore; at least `clients`, so a grant never waits.
  int capacity = 128;
  // Lease of each grant.
  int ttl_seconds = 60;
};

// One client's connection. Used by one thread only.
class PeerClient {
 public:
  virtual ~PeerClient() = default;
  // Takes a slot for `holder` (unique per call) with the TTL. OK only when
  // the slot is granted and durable; RESOURCE_EXHAUSTED when none is free.
  virtual Status Acquire(const std::string& holder) = 0;
  // Gives back the slot the last successful Acquire took.
  virtual Status Release() = 0;
};

// A peer system: prepared once, then connected to by each client.
class Peer {
 public:
  virtual ~Peer() = default;
  // Prepares the semaphore (loads the script, creates the slot rows...)
  // and reads the server's durability settings.
  virtual Status Setup() = 0;
  // A connection for client number `index` (0 .. clients-1).
  virtual StatusOr<std::unique_ptr<PeerClient>> Connect(int index) = 0;
  // The server's durability settings as Setup read them, e.g.
  // "appendonly yes, appendfsync always".
  virtual std::string durability() const = 0;
  // Round trips to the server per acquire + release pair.
  virtual int round_trips_per_pair() const = 0;
};

// Null when the peer was not built in (redis needs hiredis).
std::unique_ptr<Peer> MakeRedisPeer(const PeerOptions& options);
std::unique_ptr<Peer> MakePostgresPeer(const PeerOptions& options);
std::unique_ptr<Peer> MakeEtcdPeer(const PeerOptions& options);

}  // namespace qm::bench

#endif  // QM_BENCH_PEERS_PEER_H_
