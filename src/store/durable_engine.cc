#include "qm/durable_engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "core/wire.h"
#include "qm/config_loader.h"
#include "store/op_codec.h"
#include "store/store_impl.h"

namespace qm {
namespace {

using store::JournalOp;

// The snapshot payload: the config the state lives under (as YAML, every
// default filled in) and the engine's SaveState() bytes.
//   byte    kSnapshotFormatVersion
//   string  config YAML
//   string  engine state
constexpr uint8_t kSnapshotFormatVersion = 1;

std::string EncodeSnapshot(const std::string& config_yaml,
                           const std::string& state) {
  std::string out;
  out.reserve(config_yaml.size() + state.size() + 16);
  wire::Writer w(&out);
  w.Byte(kSnapshotFormatVersion);
  w.Bytes(config_yaml);
  w.Bytes(state);
  return out;
}

Status DecodeSnapshot(std::string_view payload, uint64_t seq,
                      std::string* config_yaml, std::string* state) {
  wire::Reader r(payload, 0);
  const uint8_t version = r.Byte("version");
  if (r.ok() && version != kSnapshotFormatVersion) {
    return DataLoss(
        "snapshot at seq " + std::to_string(seq) + " has format version " +
        std::to_string(version) + " (this qm reads version " +
        std::to_string(kSnapshotFormatVersion) + "; written by a newer qm?)");
  }
  r.String("config", config_yaml);
  r.String("state", state);
  if (r.ok() && !r.AtEnd()) r.Fail("end", "trailing bytes");
  if (!r.ok()) {
    return DataLoss("snapshot at seq " + std::to_string(seq) +
                    " is damaged: " + r.error());
  }
  return Status::Ok();
}

// The engine `state` (from the snapshot at `seq`) restores to, checked
// against the digest it was written with: recovery and `qm state check`
// restore the same way.
StatusOr<std::unique_ptr<Engine>> RestoreSnapshot(Config config, Clock* clock,
                                                  EventSink* sink, uint64_t seq,
                                                  const std::string& state,
                                                  const std::string& digest) {
  auto engine = Engine::Restore(std::move(config), clock, sink, state);
  if (!engine.ok()) {
    return Status(engine.status().code(), "restoring the snapshot at seq " +
                                              std::to_string(seq) + ": " +
                                              engine.status().message());
  }
  if (const std::string d = (*engine)->StateDigest(); d != digest) {
    return DataLoss("the snapshot at seq " + std::to_string(seq) +
                    " restores to state digest " + d +
                    " but was written with digest " + digest);
  }
  return engine;
}

// Replays one journaled operation at its recorded time. The engine time
// never goes back (a record's time is the clock the engine read; a later
// record cannot be earlier). A refused call was refused live as well and
// changed nothing, so its status is not needed.
// Returns the new config's YAML when the op was a config reload that took
// effect (the state lives under that config from then on), else null.
const std::string* ReplayOp(Engine& engine, ManualClock& clock,
                            const JournalOp& op) {
  clock.Set(std::max(clock.Now(), op.at));
  const Status s = store::ApplyOp(engine, op);
  const auto* reload = std::get_if<store::ReconfigureOp>(&op.op);
  return s.ok() && reload ? &reload->config_yaml : nullptr;
}

// "line N of the effective config is `a` in <a_name> and `b` in <b_name>"
// for the first line that differs between two YAML texts.
std::string FirstDifference(const std::string& a_text,
                            const std::string& b_text, const char* a_name,
                            const char* b_name) {
  size_t a = 0, b = 0;
  for (int line = 1;; ++line) {
    const size_t ea = std::min(a_text.find('\n', a), a_text.size());
    const size_t eb = std::min(b_text.find('\n', b), b_text.size());
    const std::string_view la(a_text.data() + a, ea - a);
    const std::string_view lb(b_text.data() + b, eb - b);
    if (la != lb || (ea == a_text.size()) != (eb == b_text.size())) {
      return "line " + std::to_string(line) + " of the effective config is `" +
             std::string(la) + "` in " + a_name + " and `" + std::string(lb) +
             "` in " + b_name;
    }
    if (ea == a_text.size()) return "they differ";
    a = ea + 1;
    b = eb + 1;
  }
}

// Holds the events of the operation being applied until its commit.
// Accessed under the engine mutex only.
class BufferSink final : public EventSink {
 public:
  void OnEvent(const Event& event) override {
    if (!drop_) {
      events_.push_back(event);
    } else if (keep_ != nullptr && keep_limit_ > 0) {
      keep_->push_back(event);
      if (keep_->size() > keep_limit_) keep_->pop_front();
    }
  }
  std::vector<Event> Take() { return std::exchange(events_, {}); }
  void set_drop(bool drop) { drop_ = drop; }
  // While dropping, keep the last `limit` events in `*keep` instead (the
  // recovery's replay, for the server's event history); null: none.
  void set_keep(std::deque<Event>* keep, size_t limit) {
    keep_ = keep;
    keep_limit_ = limit;
  }

 private:
  std::vector<Event> events_;
  bool drop_ = false;
  std::deque<Event>* keep_ = nullptr;
  size_t keep_limit_ = 0;
};

}  // namespace

class DurableEngineImpl {
 public:
  DurableEngineImpl(const DurableOptions& options, Config config, Clock* clock,
                    EventSink* sink)
      : options_(options),
        shown_location_(store::RedactLocation(options.store.location)),
        desired_(std::move(config)),
        real_clock_(clock != nullptr ? clock : SystemClock::Default()),
        user_sink_(sink) {}

  ~DurableEngineImpl() { (void)Close(); }

  Status Open();
  Status Close();
  static Status CheckRecordable(const Config& config, const std::string& yaml);

  // Applies a state-changing call under the engine mutex, journals `op`
  // and waits for its commit. `call(engine)` returns a Status or StatusOr.
  template <typename Op, typename Call>
  auto Mutate(Op op, Call call) -> decltype(call(std::declval<Engine&>())) {
    using R = decltype(call(std::declval<Engine&>()));
    uint64_t seq = 0, role = 0;
    std::optional<R> result;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (Status s = Usable(true, &role); !s.ok()) return s;
      JournalOp j{Advance(), std::move(op)};
      std::string payload = store::EncodeOp(j);
      result.emplace(call(*engine_));
      seq = Enqueue(j.at, std::move(payload));
    }
    if (Status s = WaitFor(seq, role); !s.ok()) return s;
    return std::move(*result);
  }

  // Mutate without waiting: applies `call` at once under the engine mutex,
  // journals `op`, and calls `done(result)` on the writer thread once the
  // commit holding it is durable (or with the failure that stopped it).
  // `done` must be quick and must not call into the engine (hand the work
  // to another thread).
  template <typename Op, typename Call>
  void MutateAsync(
      Op op, Call call,
      std::function<void(decltype(call(std::declval<Engine&>())))> done) {
    std::unique_lock<std::mutex> lock(mu_);
    MutateAsyncLocked(
        std::move(lock), [&] { return std::move(op); }, call, done);
  }

  // The same, only when the engine is free right now: false (and nothing
  // done, `done` untouched) when another thread holds it. `make_op` makes
  // the journal operation (only once the engine is held).
  template <typename MakeOp, typename Call>
  bool TryMutateAsync(
      MakeOp make_op, Call call,
      std::function<void(decltype(call(std::declval<Engine&>())))>& done) {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    MutateAsyncLocked(std::move(lock), make_op, call, done);
    return true;
  }

  // MutateAsync's work once `lock` holds mu_ (it releases it).
  template <typename MakeOp, typename Call>
  void MutateAsyncLocked(
      std::unique_lock<std::mutex> lock, MakeOp&& make_op, Call& call,
      std::function<void(decltype(call(std::declval<Engine&>())))>& done) {
    using R = decltype(call(std::declval<Engine&>()));
    if (Status s = Usable(); !s.ok()) {
      lock.unlock();
      done(R(s));
      return;
    }
    JournalOp j{Advance(), make_op()};
    std::string payload = store::EncodeOp(j);
    auto result = std::make_shared<R>(call(*engine_));
    Enqueue(j.at, std::move(payload),
            [result, done = std::move(done)](const Status& s) {
              if (s.ok()) {
                done(std::move(*result));
              } else {
                done(R(s));
              }
            });
  }

  // Answers `call(engine)` once every change before it is committed.
  template <typename Call>
  auto Read(Call call) -> StatusOr<decltype(call(std::declval<Engine&>()))> {
    using R = decltype(call(std::declval<Engine&>()));
    uint64_t seq = 0, role = 0;
    std::optional<R> result;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (Status s = Usable(/*for_change=*/false, &role); !s.ok()) return s;
      result.emplace(call(*engine_));
      seq = last_seq_;
    }
    if (Status s = WaitFor(seq, role); !s.ok()) return s;
    return std::move(*result);
  }

  Status Flush() {
    uint64_t seq, role;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::lock_guard<std::mutex> q(q_mu_);
      // Applied changes that will never commit here: nothing to wait for.
      if (stepping_down_) return step_down_why_;
      seq = last_seq_;
      role = role_;
    }
    return WaitFor(seq, role);
  }

  Status WriteSnapshotNow() {
    {
      std::lock_guard<std::mutex> q(q_mu_);
      if (!failed_.ok()) return failed_;
      if (closed_) return Unavailable("the durable engine is closed");
      if (!leading_ || stepping_down_) {
        return Unavailable("only the leader writes snapshots");
      }
      ++snapshot_requests_;
    }
    q_cv_.notify_one();
    std::unique_lock<std::mutex> q(q_mu_);
    const uint64_t want = snapshot_requests_;
    const uint64_t role = role_;
    commit_cv_.wait(q, [&] {
      return snapshots_done_ >= want || !failed_.ok() || writer_done_ ||
             role_ != role;
    });
    if (!failed_.ok()) return failed_;
    if (role_ != role) return Unavailable("this qm instance stopped leading");
    if (snapshots_done_ < want) return Unavailable("the writer stopped");
    return Status::Ok();
  }

  std::optional<Time> NextDeadline() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!engine_) return std::nullopt;
    return engine_->NextDeadline();
  }

  Config config() {
    std::lock_guard<std::mutex> lock(mu_);
    if (engine_) return engine_->config();
    return desired_;
  }

  // Engine::Reconfigure, journaled. No change (the same YAML): nothing is
  // journaled.
  StatusOr<ReconfigureResult> Reconfigure(const Config& config,
                                          const Actor& actor) {
    std::string yaml = ConfigToYaml(config);
    QM_RETURN_IF_ERROR(CheckRecordable(config, yaml));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (Status s = Usable(); !s.ok()) return s;
      if (yaml == config_yaml_) return ReconfigureResult{};
    }
    return Mutate(store::ReconfigureOp{yaml, actor},
                  [&](Engine& e) -> StatusOr<ReconfigureResult> {
                    auto r = e.Reconfigure(config, actor);
                    if (r.ok()) config_yaml_ = yaml;
                    return r;
                  });
  }
  bool IsLeader() const {
    std::lock_guard<std::mutex> q(q_mu_);
    return leading_ && failed_.ok() && !closed_;
  }
  Status FollowStatus() const {
    std::lock_guard<std::mutex> q(q_mu_);
    if (!failed_.ok()) return failed_;
    if (stepping_down_) return step_down_why_;
    if (leading_) return Status::Ok();
    return follow_error_;
  }
  Status WaitUntilLeader(Duration timeout) {
    std::unique_lock<std::mutex> q(q_mu_);
    commit_cv_.wait_for(q, timeout,
                        [&] { return leading_ || !failed_.ok() || closed_; });
    if (!failed_.ok()) return failed_;
    if (closed_) return Unavailable("the durable engine is closed");
    if (!leading_) {
      return Unavailable("still following after " + FormatDuration(timeout));
    }
    return Status::Ok();
  }
  const RecoveryInfo& recovery() const { return recovery_; }
  DurableStats stats() const {
    std::lock_guard<std::mutex> q(q_mu_);
    DurableStats s = stats_;
    s.committed_seq = committed_seq_;
    s.last_seq = enqueued_seq_;
    return s;
  }
  StatusOr<StoreInfo> StoreDescription() {
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_->Info();
  }
  // The usage history: straight to the store, never through the journal.
  Status AppendHistory(const std::vector<HistoryRecord>& records) {
    QM_RETURN_IF_ERROR(HistoryWritable());
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_->AppendHistory(records);
  }
  StatusOr<std::vector<HistoryRecord>> ReadHistory(int tier, int64_t from_ms,
                                                   size_t limit) {
    {
      std::lock_guard<std::mutex> q(q_mu_);
      if (closed_) return Unavailable("the durable engine is closed");
    }
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_->ReadHistory(tier, from_ms, limit);
  }
  Status PruneHistory(int tier, int64_t before_ms) {
    QM_RETURN_IF_ERROR(HistoryWritable());
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_->PruneHistory(tier, before_ms);
  }
  // OK while this instance leads: closed, failed or following refuse.
  Status HistoryWritable() const {
    std::lock_guard<std::mutex> q(q_mu_);
    if (closed_) return Unavailable("the durable engine is closed");
    if (!failed_.ok()) return failed_;
    if (!leading_) {
      return Unavailable(
          "not the leader: a follower does not write the usage history");
    }
    return Status::Ok();
  }
  std::vector<Event> TakeRecoveredEvents() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Event> out(recovered_events_.begin(), recovered_events_.end());
    recovered_events_.clear();
    return out;
  }

 private:
  struct Pending {
    uint64_t seq = 0;
    int64_t time_ms = 0;
    std::string payload;
    std::vector<Event> events;
    // MutateAsync's completion: called on the writer thread once the
    // record is committed (OK) or cannot be (the failure).
    std::function<void(const Status&)> done;
  };

  // Calls the completions of `pending` with `s` (outside every lock).
  static void Complete(std::deque<Pending>* pending, const Status& s) {
    for (Pending& p : *pending) {
      if (p.done) std::exchange(p.done, nullptr)(s);
    }
  }

  // Under mu_: the engine time for the next operation (never backwards).
  Time Advance() {
    const Time t = std::max(engine_clock_.Now(), real_clock_->Now());
    engine_clock_.Set(t);
    return t;
  }

  // Under mu_: an error when reads (`for_change` false) or changes are not
  // served. Sets `*role` to the role generation the call runs under (for
  // WaitFor; read in the same critical section as the checks, so a step
  // down cannot slip between them).
  Status Usable(bool for_change = true, uint64_t* role = nullptr) {
    std::lock_guard<std::mutex> q(q_mu_);
    if (role != nullptr) *role = role_;
    if (!failed_.ok()) return failed_;
    if (closed_) return Unavailable("the durable engine is closed");
    // The state may hold changes that were never committed: not even
    // reads until it is dropped (StepDown).
    if (stepping_down_) return step_down_why_;
    if (for_change && !leading_) {
      return Unavailable(
          "this qm instance follows the leader of " + shown_location_ +
          "; it takes changes once it leads (when the leader's lease runs "
          "out)");
    }
    if (!engine_) {
      return Unavailable("waiting for the leader's first snapshot");
    }
    return Status::Ok();
  }

  // Under mu_: hands the operation and its events to the writer.
  uint64_t Enqueue(Time at, std::string payload,
                   std::function<void(const Status&)> done = nullptr) {
    const uint64_t seq = ++last_seq_;
    Pending p{seq, at.time_since_epoch().count(), std::move(payload),
              sink_.Take(), std::move(done)};
    {
      std::lock_guard<std::mutex> q(q_mu_);
      if (writer_done_ && p.done) {
        // The writer is gone (closing): nothing more will commit.
        std::deque<Pending> late;
        late.push_back(std::move(p));
        Complete(&late, failed_.ok() ? Unavailable("the durable engine "
                                                   "closed before the change "
                                                   "was committed")
                                     : failed_);
        return seq;
      }
      queue_.push_back(std::move(p));
      enqueued_seq_ = seq;
    }
    q_cv_.notify_one();
    return seq;
  }

  // Waits for what was applied up to `seq` under role generation `role`
  // (Usable) to be committed. A step down ends a generation: what it
  // committed stands, the rest was dropped with its state.
  Status WaitFor(uint64_t seq, uint64_t role) {
    std::unique_lock<std::mutex> q(q_mu_);
    commit_cv_.wait(q, [&] {
      return role_ != role || committed_seq_ >= seq || !failed_.ok() ||
             writer_done_;
    });
    if (role_ != role) {
      if (role < final_committed_.size() && seq <= final_committed_[role]) {
        return Status::Ok();
      }
      return StepDownError();
    }
    if (committed_seq_ >= seq) return Status::Ok();
    if (!failed_.ok()) return failed_;
    if (stepping_down_) return StepDownError();
    return Unavailable(
        "the durable engine closed before the change was "
        "committed");
  }

  // Under q_mu_: the answer to what a step down left uncommitted.
  Status StepDownError() const {
    if (!step_down_why_.ok()) return step_down_why_;
    return Unavailable(
        "this qm instance stopped leading before the change "
        "was committed");
  }

  // Recovery steps (Open), under mu_. Recover loads the latest snapshot
  // and replays the journal after it; without a snapshot it creates a fresh
  // engine when `may_create`, else answers NOT_FOUND.
  Status Recover(bool may_create = true);
  Status CreateFresh();
  Status ReplayJournal(uint64_t after);
  // A journal record read and decoded, to apply.
  struct ReplayItem {
    uint64_t seq = 0;
    int64_t time_ms = 0;
    JournalOp op;
  };
  // Under mu_: applies `item` to the engine (it follows last_seq_).
  void ApplyRecord(const ReplayItem& item);
  // Follower: applies the journal records the leader wrote since the last
  // call (reloading from a newer snapshot when the leader truncated the
  // journal past this position). Takes mu_ only to apply what it read: the
  // store is read without it, so reads of the copy go on meanwhile (a read
  // can wait on the database for as long as a lock there lasts). Called
  // from one thread at a time (Open, then the role thread).
  Status CatchUp();
  // Reads up to kCatchUpBatch records after `after` (decoded) into
  // `*items`, under store_mu_ only; `*more` when it stopped at that limit.
  // What was read before an error stays in `*items`.
  Status ReadAfter(uint64_t after, std::vector<ReplayItem>* items, bool* more);
  // The role thread (with options_.follow): follows until it can take
  // over (FollowUntilLeading), leads until another instance takes the
  // lease over (AwaitStepDown), steps down (StepDown), and follows again;
  // until Close. `leading`: whether it starts as the leader.
  void RoleLoop(bool leading);
  // Tails the journal and takes over when it can. True once this instance
  // leads; false when closing or when following failed for good.
  bool FollowUntilLeading();
  // While leading: waits until this instance must step down (true) or
  // closes (false). Notices a takeover from a refused write
  // (SupersededBy) or, idle, from the store (Store::Superseded).
  bool AwaitStepDown();
  // After a refused write: when the store says another instance took the
  // leadership over and this one may follow, marks it stepping down
  // (changes and reads refused with the reason; the writer stops) and
  // answers true. False otherwise (the failure is the caller's to report).
  bool SupersededBy(const Status& refusal);
  // Drops the leader's state (the writer has stopped) so the role thread
  // can reload the new leader's.
  void StepDown();
  // After a catch-up (whole or partial): what is applied counts as
  // committed, and reads waiting for it go on. Takes q_mu_.
  void MarkApplied();
  // Starts the writer and journals the start's tick (and, for a fresh
  // state, its first snapshot).
  Status StartLeading();

  void WriterLoop();
  // Commits `batch` (in seq order) and delivers its events; records a
  // failure in failed_.
  bool Commit(std::deque<Pending>* batch);
  bool Snapshot();
  void Fail(const Status& s);

  const DurableOptions options_;
  const std::string shown_location_;  // options_.store.location, redacted
  // The config Open was given; the state runs under it once Open applied it.
  const Config desired_;
  std::string desired_yaml_;
  Clock* const real_clock_;
  EventSink* const user_sink_;
  // The YAML of the config the state lives under now (what snapshots
  // record): the recorded one, then each reload's. Guarded by mu_.
  std::string config_yaml_;

  // mu_ guards the engine, its clock and sink, and last_seq_. Lock order:
  // mu_ before q_mu_; store_mu_ is taken alone or innermost.
  std::mutex mu_;
  ManualClock engine_clock_;
  BufferSink sink_;
  // The events the recovery's journal replay regenerated (the last
  // options_.recovered_events of them), until TakeRecoveredEvents.
  std::deque<Event> recovered_events_;
  std::unique_ptr<Engine> engine_;
  uint64_t last_seq_ = 0;  // the last operation applied and enqueued

  std::mutex store_mu_;  // guards store_ calls
  std::unique_ptr<Store> store_;

  // q_mu_ guards the writer's queue and the commit state below.
  mutable std::mutex q_mu_;
  std::condition_variable q_cv_;       // the writer waits for work
  std::condition_variable commit_cv_;  // callers wait for commits
  std::condition_variable role_cv_;    // the role thread waits
  std::deque<Pending> queue_;
  uint64_t enqueued_seq_ = 0;
  uint64_t committed_seq_ = 0;
  uint64_t snapshot_requests_ = 0, snapshots_done_ = 0;
  uint64_t ops_since_snapshot_ = 0;
  std::chrono::steady_clock::time_point last_snapshot_;
  Status failed_;
  // A follower's last catch-up error that it retries (the store could not
  // be reached); OK while it keeps up.
  Status follow_error_;
  bool closed_ = false;
  bool stop_ = false;
  bool writer_done_ = false;
  bool leading_ = false;  // the writer runs; changes are taken
  // Another instance took the leadership over: the writer stops, and the
  // role thread drops the state (StepDown). step_down_why_ answers the
  // changes and reads refused meanwhile.
  bool stepping_down_ = false;
  Status step_down_why_;
  // Grows when this instance stops leading (StepDown): a change or read
  // applied under an older generation commits here only if it did before
  // the step down, final_committed_[generation] (WaitFor).
  uint64_t role_ = 0;
  std::vector<uint64_t> final_committed_;
  DurableStats stats_;
  std::thread writer_;
  // The role thread (options_.follow): follows, leads, steps down.
  std::thread follower_;

  RecoveryInfo recovery_;

  // ---- Who leads (several servers on one PostgreSQL) ----
 public:
  StatusOr<LeaderInfo> Leader();

 private:
  // Guards the last reading of the store's leader. Taken before store_mu_.
  std::mutex leader_mu_;
  std::optional<LeaderInfo> leader_;
  std::chrono::steady_clock::time_point leader_read_;
};

Status DurableEngineImpl::Open() {
  const auto started = std::chrono::steady_clock::now();
  desired_yaml_ = ConfigToYaml(desired_);
  QM_RETURN_IF_ERROR(CheckRecordable(desired_, desired_yaml_));
  config_yaml_ = desired_yaml_;
  {
    auto store = Store::Open(options_.store);
    if (!store.ok()) return store.status();
    store_ = std::move(*store);
  }
  Status lead = store_->AcquireLeadership(
      options_.follow ? Duration(0) : options_.leadership_wait);
  if (!lead.ok() && options_.follow && lead.code() == Code::kUnavailable) {
    // Another instance leads: stay warm behind it until its lease runs out.
    Status s = CatchUp();
    if (!s.ok() && s.code() != Code::kNotFound) return s;
    follower_ = std::thread([this] { RoleLoop(/*leading=*/false); });
    recovery_.took = std::chrono::duration_cast<Duration>(
        std::chrono::steady_clock::now() - started);
    return Status::Ok();
  }
  QM_RETURN_IF_ERROR(lead);
  {
    std::lock_guard<std::mutex> lock(mu_);
    QM_RETURN_IF_ERROR(Recover());
  }
  QM_RETURN_IF_ERROR(StartLeading());
  bool changed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    changed = config_yaml_ != desired_yaml_;
  }
  if (changed) {
    // Started with an edited config: applied as a reload (journaled), or
    // refused with the reason, the state untouched.
    auto r =
        Reconfigure(desired_, Actor{"qm", "started with a changed config"});
    if (!r.ok()) {
      return Status(r.status().code(),
                    "the config given cannot be applied to the state in " +
                        shown_location_ + ": " + r.status().message() +
                        " (the state is unchanged; `qm state export` prints "
                        "the config it runs under)");
    }
    recovery_.config_changes = r->changes;
  }
  if (options_.follow) {
    // Leading now; it steps down to follow if another instance takes over.
    follower_ = std::thread([this] { RoleLoop(/*leading=*/true); });
  }
  recovery_.took = std::chrono::duration_cast<Duration>(
      std::chrono::steady_clock::now() - started);
  return Status::Ok();
}

// The state records its config as YAML, and recovery and the offline tools
// (`qm state check`, import) rebuild it from there: it must load back the
// same.
Status DurableEngineImpl::CheckRecordable(const Config& config,
                                          const std::string& yaml) {
  (void)config;
  auto reloaded = LoadConfigString(yaml, "the effective config");
  if (!reloaded.ok() || ConfigToYaml(*reloaded) != yaml) {
    return InvalidRequest(
        "the config cannot be recorded: its YAML form does not load back "
        "to the same config" +
        (reloaded.ok()
             ? " (" +
                   FirstDifference(yaml, ConfigToYaml(*reloaded),
                                   "the config given", "its YAML loaded back") +
                   ")"
             : ": " + reloaded.status().message()));
  }
  return Status::Ok();
}

Status DurableEngineImpl::StartLeading() {
  {
    std::lock_guard<std::mutex> q(q_mu_);
    last_snapshot_ = std::chrono::steady_clock::now();
    committed_seq_ = enqueued_seq_ = last_seq_;
    leading_ = true;
  }
  writer_ = std::thread([this] { WriterLoop(); });
  // What fell due while nobody led, with its events, in time order.
  return Mutate(store::TickOp{}, [](Engine& e) {
    e.Tick();
    return Status::Ok();
  });
}

Status DurableEngineImpl::CatchUp() {
  for (;;) {
    uint64_t from;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!engine_) {
        Status s = Recover(/*may_create=*/false);
        if (s.ok()) MarkApplied();
        return s;
      }
      from = last_seq_;
    }
    std::vector<ReplayItem> items;
    bool more = false;
    const Status read = ReadAfter(from, &items, &more);
    std::lock_guard<std::mutex> lock(mu_);
    // (Only this thread replaces the engine or moves last_seq_ while
    // following.)
    if (!engine_ || last_seq_ != from) return Status::Ok();
    sink_.set_drop(true);
    for (const ReplayItem& item : items) ApplyRecord(item);
    sink_.set_drop(false);
    if (read.code() == Code::kDataLoss) {
      // The leader may have written a snapshot and truncated the journal
      // past this follower's position: start again from that snapshot.
      StatusOr<std::optional<SnapshotData>> snap = [&] {
        std::lock_guard<std::mutex> store_lock(store_mu_);
        return store_->LatestSnapshot();
      }();
      if (!snap.ok() || !snap->has_value() || (*snap)->seq <= last_seq_) {
        MarkApplied();
        return snap.ok() ? read : snap.status();
      }
      engine_.reset();
      Status s = Recover(/*may_create=*/false);
      if (s.ok()) MarkApplied();
      return s;
    }
    // What was read before a failure is applied (last_seq_ says how far),
    // and reads may see it: the caller retries or fails.
    MarkApplied();
    if (!read.ok()) return read;
    if (!more) return Status::Ok();
  }
}

Status DurableEngineImpl::ReadAfter(uint64_t after,
                                    std::vector<ReplayItem>* items,
                                    bool* more) {
  // Enough to keep a far-behind follower's memory bounded, few enough
  // round trips for a close one (one).
  constexpr size_t kCatchUpBatch = 8192;
  *more = false;
  std::lock_guard<std::mutex> lock(store_mu_);
  Status s = store_->ReadJournal(after, [&](const JournalRecord& rec) {
    if (items->size() == kCatchUpBatch) {
      *more = true;
      return Status(Code::kConflict, "batch full");  // stops the read
    }
    auto op = store::DecodeOp(rec.payload);
    if (!op.ok()) {
      return DataLoss("journal record " + std::to_string(rec.seq) + ": " +
                      op.status().message());
    }
    items->push_back(ReplayItem{rec.seq, rec.time_ms, std::move(*op)});
    return Status::Ok();
  });
  return *more ? Status::Ok() : s;
}

void DurableEngineImpl::MarkApplied() {
  {
    std::lock_guard<std::mutex> q(q_mu_);
    committed_seq_ = enqueued_seq_ = last_seq_;
  }
  // Reads wait for committed_seq_ to reach what they saw applied.
  commit_cv_.notify_all();
}

void DurableEngineImpl::RoleLoop(bool leading) {
  for (;;) {
    if (leading) {
      if (!AwaitStepDown()) return;
      StepDown();
    }
    if (!FollowUntilLeading()) return;
    leading = true;
  }
}

bool DurableEngineImpl::FollowUntilLeading() {
  for (;;) {
    {
      std::unique_lock<std::mutex> q(q_mu_);
      role_cv_.wait_for(q, options_.tail_interval, [&] { return stop_; });
      if (stop_) return false;
    }
    Status s = CatchUp();
    if (!s.ok() && s.code() != Code::kNotFound) {
      Status failure(s.code(), "following the leader: " + s.message());
      if (s.code() != Code::kUnavailable &&
          s.code() != Code::kDeadlineExceeded) {
        Fail(failure);
        return false;
      }
      // The store could not be reached (a dropped connection, a restarting
      // database): what was applied stays, and the next round goes on from
      // the last record applied.
      std::lock_guard<std::mutex> q(q_mu_);
      follow_error_ = std::move(failure);
      continue;
    }
    {
      std::lock_guard<std::mutex> q(q_mu_);
      follow_error_ = Status::Ok();
    }
    {
      std::lock_guard<std::mutex> lock(store_mu_);
      s = store_->AcquireLeadership(Duration(0));
    }
    if (!s.ok()) continue;  // the leader still holds its lease
    // This instance leads now; the old leader can no longer write (its
    // epoch is stale), so the journal read now is complete. A read the
    // store cannot answer now is tried again for up to half the lease
    // (which the store renews meanwhile) rather than leaving a failed
    // leader that holds the lease.
    const auto give_up =
        std::chrono::steady_clock::now() + options_.store.leader_lease / 2;
    for (;;) {
      s = CatchUp();
      if (s.code() == Code::kNotFound) {
        // No snapshot yet: the store is new, and this instance creates it.
        std::lock_guard<std::mutex> lock(mu_);
        s = engine_ ? Status::Ok() : Recover(/*may_create=*/true);
      }
      if (s.ok() ||
          (s.code() != Code::kUnavailable &&
           s.code() != Code::kDeadlineExceeded) ||
          std::chrono::steady_clock::now() >= give_up) {
        break;
      }
      std::unique_lock<std::mutex> q(q_mu_);
      follow_error_ = Status(s.code(), "taking over as leader: " + s.message());
      role_cv_.wait_for(q, options_.tail_interval, [&] { return stop_; });
      if (stop_) return false;
    }
    if (s.ok()) s = StartLeading();
    if (!s.ok()) {
      {
        // Superseded again at once (the takeover's first commit refused):
        // the role loop steps down and follows again.
        std::lock_guard<std::mutex> q(q_mu_);
        if (stepping_down_) return true;
      }
      Fail(Status(s.code(), "taking over as leader: " + s.message()));
      // A failed leader takes no changes: give the lease up, so another
      // instance can take over instead of waiting for a restart.
      std::lock_guard<std::mutex> lock(store_mu_);
      (void)store_->ResignLeadership();
    }
    commit_cv_.notify_all();
    return s.ok();
  }
}

bool DurableEngineImpl::AwaitStepDown() {
  std::unique_lock<std::mutex> q(q_mu_);
  for (;;) {
    if (stop_ || !failed_.ok()) return false;
    if (stepping_down_) return true;
    role_cv_.wait_for(q, options_.tail_interval);
    if (stop_ || stepping_down_ || !failed_.ok()) continue;
    // Idle, the leader writes nothing that could be refused: the store's
    // lease renewals tell that another instance took over.
    q.unlock();
    const bool superseded = store_->Superseded();
    q.lock();
    if (superseded && !stepping_down_ && !stop_ && failed_.ok()) {
      q.unlock();
      (void)SupersededBy(
          Unavailable("the lease renewal found a newer leader epoch"));
      q.lock();
    }
  }
}

bool DurableEngineImpl::SupersededBy(const Status& refusal) {
  if (!options_.follow || !store_->Superseded()) return false;
  {
    std::lock_guard<std::mutex> q(q_mu_);
    if (!failed_.ok() || closed_) return false;
    if (!stepping_down_) {
      stepping_down_ = true;
      leading_ = false;
      // (Whether the refused write reached the database is not always
      // known: a connection can drop once the epoch has moved on.)
      step_down_why_ = Unavailable(
          "this qm instance lost the leadership of " + shown_location_ +
          ": another instance took the lease over (" + refusal.message() +
          "). A change it had not confirmed may not have been made: ask the "
          "new leader (a retried allocate with the same idempotency_key is "
          "never granted twice). It follows the new leader now: send changes "
          "there");
    }
  }
  q_cv_.notify_all();  // the writer stops
  role_cv_.notify_all();
  commit_cv_.notify_all();
  return true;
}

void DurableEngineImpl::StepDown() {
  // The writer stopped at the refusal, answering what was queued.
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    // What the writer had not committed is in this state but not in the
    // store: drop it all; the role thread reloads the new leader's.
    engine_.reset();
    last_seq_ = 0;
    std::lock_guard<std::mutex> q(q_mu_);
    // The generation ends: its callers still waiting learn from what it
    // committed (WaitFor).
    final_committed_.resize(role_ + 1, 0);
    final_committed_[role_] = committed_seq_;
    ++role_;
    queue_.clear();
    committed_seq_ = enqueued_seq_ = 0;
    writer_done_ = false;
    stepping_down_ = false;
    follow_error_ = step_down_why_;
    ++stats_.step_downs;
  }
  commit_cv_.notify_all();
}

Status DurableEngineImpl::Recover(bool may_create) {
  StatusOr<std::optional<SnapshotData>> snap = [&] {
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_->LatestSnapshot();
  }();
  if (!snap.ok()) return snap.status();
  if (!snap->has_value()) {
    if (!may_create) {
      return NotFound("the leader has not written the first snapshot yet");
    }
    StatusOr<StoreInfo> info = [&] {
      std::lock_guard<std::mutex> lock(store_mu_);
      return store_->Info();
    }();
    if (!info.ok()) return info.status();
    if (info->last_seq != 0) {
      return DataLoss("the journal in " + info->location +
                      " holds records up to seq " +
                      std::to_string(info->last_seq) +
                      " but there is no snapshot to start them from");
    }
    return CreateFresh();
  }
  const SnapshotData& s = **snap;
  std::string stored_yaml, state;
  QM_RETURN_IF_ERROR(DecodeSnapshot(s.payload, s.seq, &stored_yaml, &state));
  // The state lives under the config it recorded; a different one given to
  // Open is applied after recovery, as a reload (Open).
  auto recorded = LoadConfigString(stored_yaml, "the config in the snapshot");
  if (!recorded.ok()) {
    return DataLoss("the config in the snapshot at seq " +
                    std::to_string(s.seq) +
                    " does not load: " + recorded.status().message());
  }
  config_yaml_ = stored_yaml;
  engine_clock_.Set(Time(Duration(s.time_ms)));
  sink_.set_drop(true);
  recovered_events_.clear();
  const auto restore_start = std::chrono::steady_clock::now();
  auto engine = RestoreSnapshot(std::move(*recorded), &engine_clock_, &sink_,
                                s.seq, state, s.digest);
  if (!engine.ok()) {
    sink_.set_drop(false);
    return engine.status();
  }
  engine_ = std::move(*engine);
  recovery_.snapshot_seq = last_seq_ = s.seq;
  recovery_.recovered_time_ms = s.time_ms;
  const auto replay_start = std::chrono::steady_clock::now();
  recovery_.restore_took =
      std::chrono::duration_cast<Duration>(replay_start - restore_start);
  sink_.set_keep(&recovered_events_, options_.recovered_events);
  Status replay = ReplayJournal(s.seq);
  sink_.set_keep(nullptr, 0);
  recovery_.replay_took = std::chrono::duration_cast<Duration>(
      std::chrono::steady_clock::now() - replay_start);
  sink_.set_drop(false);
  recovery_.last_seq = last_seq_;
  return replay;
}

// The state's birth: a new engine, written at once as the first snapshot
// (seq 1, an empty store's first), so that the state and its config exist
// before any change is journaled. A crash before that commit leaves the
// store empty: the next start is a fresh one again.
Status DurableEngineImpl::CreateFresh() {
  recovery_.fresh = true;
  engine_clock_.Set(real_clock_->Now());
  auto engine = Engine::Create(desired_, &engine_clock_, &sink_);
  if (!engine.ok()) return engine.status();
  engine_ = std::move(*engine);
  const std::string state = engine_->SaveState();
  SnapshotData birth;
  birth.seq = 1;
  birth.time_ms = engine_clock_.Now().time_since_epoch().count();
  birth.digest = Engine::StateDigestOf(state);
  birth.payload = EncodeSnapshot(config_yaml_, state);
  {
    std::lock_guard<std::mutex> lock(store_mu_);
    QM_RETURN_IF_ERROR(store_->WriteSnapshot(birth));
  }
  last_seq_ = 1;
  recovery_.snapshot_seq = recovery_.last_seq = 1;
  recovery_.recovered_time_ms = birth.time_ms;
  return Status::Ok();
}

void DurableEngineImpl::ApplyRecord(const ReplayItem& item) {
  if (const std::string* yaml = ReplayOp(*engine_, engine_clock_, item.op)) {
    config_yaml_ = *yaml;
  }
  last_seq_ = item.seq;
  recovery_.recovered_time_ms = item.time_ms;
  ++recovery_.replayed;
}

// Reading and decoding run on a thread of their own, a batch ahead of the
// engine applying the records, so the two overlap on a second core. Records
// are applied in order; at the first bad one the reader stops, and
// everything before it is applied first.
Status DurableEngineImpl::ReplayJournal(uint64_t after) {
  using Item = ReplayItem;
  constexpr size_t kBatch = 512, kMaxBatches = 8;
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::vector<Item>> ready;
  bool reading = true;
  Status read_status;

  std::lock_guard<std::mutex> store_lock(store_mu_);
  std::thread reader([&] {
    std::vector<Item> batch;
    batch.reserve(kBatch);
    auto hand_over = [&] {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return ready.size() < kMaxBatches; });
      ready.push_back(std::exchange(batch, {}));
      batch.reserve(kBatch);
      cv.notify_all();
    };
    Status st = store_->ReadJournal(after, [&](const JournalRecord& rec) {
      auto op = store::DecodeOp(rec.payload);
      if (!op.ok()) {
        return DataLoss("journal record " + std::to_string(rec.seq) + ": " +
                        op.status().message());
      }
      batch.push_back(Item{rec.seq, rec.time_ms, std::move(*op)});
      if (batch.size() == kBatch) hand_over();
      return Status::Ok();
    });
    if (!batch.empty()) hand_over();
    std::lock_guard<std::mutex> lock(m);
    read_status = st;
    reading = false;
    cv.notify_all();
  });

  for (;;) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return !ready.empty() || !reading; });
      if (ready.empty()) break;
      batch = std::move(ready.front());
      ready.pop_front();
      cv.notify_all();
    }
    for (const Item& item : batch) ApplyRecord(item);
  }
  reader.join();
  if (!read_status.ok()) {
    return Status(read_status.code(),
                  "recovery stopped at the last good journal record (seq " +
                      std::to_string(last_seq_) +
                      "): " + read_status.message() +
                      ". Nothing after it was applied; `qm state check` "
                      "describes the damage");
  }
  return Status::Ok();
}

void DurableEngineImpl::WriterLoop() {
  std::unique_lock<std::mutex> q(q_mu_);
  for (;;) {
    const auto interval = options_.snapshot_interval;
    const bool woke = q_cv_.wait_for(q, interval, [&] {
      return !queue_.empty() || stop_ || stepping_down_ ||
             snapshot_requests_ > snapshots_done_;
    });
    (void)woke;
    if (!failed_.ok() || stepping_down_) break;
    const bool snapshot_due =
        snapshot_requests_ > snapshots_done_ ||
        ops_since_snapshot_ >= options_.snapshot_every_records ||
        (ops_since_snapshot_ > 0 &&
         std::chrono::steady_clock::now() - last_snapshot_ >= interval);
    if (snapshot_due && !stop_) {
      const uint64_t want = snapshot_requests_;
      q.unlock();
      const bool ok = Snapshot();
      q.lock();
      if (!ok) break;
      snapshots_done_ = std::max(snapshots_done_, want);
      commit_cv_.notify_all();
      continue;
    }
    if (queue_.empty()) {
      if (stop_) break;
      continue;
    }
    std::deque<Pending> batch;
    batch.swap(queue_);
    q.unlock();
    const bool ok = Commit(&batch);
    q.lock();
    if (!ok) break;
  }
  writer_done_ = true;
  // What will never commit now answers why.
  std::deque<Pending> left;
  left.swap(queue_);
  const Status why =
      !failed_.ok()    ? failed_
      : stepping_down_ ? step_down_why_
                       : Unavailable(
                             "the durable engine closed before the change was "
                             "committed");
  q.unlock();
  commit_cv_.notify_all();
  Complete(&left, why);
}

bool DurableEngineImpl::Commit(std::deque<Pending>* batch) {
  if (batch->empty()) return true;
  std::vector<JournalRecord> records;
  records.reserve(batch->size());
  uint64_t bytes = 0;
  for (Pending& p : *batch) {
    bytes += p.payload.size();
    records.push_back(JournalRecord{p.seq, p.time_ms, 0, std::move(p.payload)});
  }
  Status s;
  const auto started = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(store_mu_);
    s = store_->Append(&records);
  }
  if (s.ok() && options_.on_commit) {
    options_.on_commit(std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - started)
                           .count(),
                       records.size());
  }
  if (!s.ok()) {
    if (!SupersededBy(s)) {
      Fail(Status(s.code(), "a change could not be made durable (" +
                                s.message() +
                                "); qm stopped taking changes: restart it to "
                                "recover what was committed"));
    }
    Status failed;
    {
      std::lock_guard<std::mutex> q(q_mu_);
      failed = failed_.ok() ? StepDownError() : failed_;
    }
    Complete(batch, failed);
    return false;
  }
  // The events first: a caller answered has its events delivered already.
  if (user_sink_ != nullptr) {
    for (const Pending& p : *batch) {
      for (const Event& e : p.events) user_sink_->OnEvent(e);
    }
  }
  {
    std::lock_guard<std::mutex> q(q_mu_);
    committed_seq_ = batch->back().seq;
    stats_.operations += batch->size();
    stats_.commits += 1;
    stats_.payload_bytes += bytes;
    ops_since_snapshot_ += batch->size();
  }
  commit_cv_.notify_all();
  Complete(batch, Status::Ok());
  return true;
}

bool DurableEngineImpl::Snapshot() {
  SnapshotData snap;
  std::deque<Pending> batch;
  std::string state;
  {
    // Changes wait only while the state is copied.
    std::lock_guard<std::mutex> lock(mu_);
    state = engine_->SaveState();
    snap.seq = last_seq_;
    snap.time_ms = engine_clock_.Now().time_since_epoch().count();
    std::lock_guard<std::mutex> q(q_mu_);
    batch.swap(queue_);
  }
  snap.digest = Engine::StateDigestOf(state);
  snap.payload = EncodeSnapshot(config_yaml_, state);
  if (!Commit(&batch)) return false;
  Status s;
  {
    std::lock_guard<std::mutex> lock(store_mu_);
    s = store_->WriteSnapshot(snap);
  }
  if (!s.ok()) {
    if (!SupersededBy(s)) {
      Fail(Status(s.code(), "writing a snapshot failed (" + s.message() +
                                "); qm stopped taking changes: restart it to "
                                "recover what was committed"));
    }
    return false;
  }
  std::lock_guard<std::mutex> q(q_mu_);
  ++stats_.snapshots;
  ops_since_snapshot_ = 0;
  last_snapshot_ = std::chrono::steady_clock::now();
  return true;
}

void DurableEngineImpl::Fail(const Status& s) {
  {
    std::lock_guard<std::mutex> q(q_mu_);
    if (failed_.ok()) failed_ = s;
  }
  commit_cv_.notify_all();
}

Status DurableEngineImpl::Close() {
  {
    std::lock_guard<std::mutex> q(q_mu_);
    if (closed_) return failed_;
    closed_ = true;
    stop_ = true;
  }
  q_cv_.notify_all();
  role_cv_.notify_all();
  if (follower_.joinable() &&
      follower_.get_id() != std::this_thread::get_id()) {
    follower_.join();
  }
  if (writer_.joinable()) writer_.join();
  Status result;
  {
    std::lock_guard<std::mutex> q(q_mu_);
    writer_done_ = true;
    result = failed_;
  }
  commit_cv_.notify_all();
  if (store_) {
    std::lock_guard<std::mutex> lock(store_mu_);
    Status s = store_->ResignLeadership();
    if (result.ok()) result = s;
  }
  return result;
}

// ---- Offline state tools ----

namespace {

// Restores `snapshot` under the config it records and replays `next`'s
// records after it; fills the summary's state fields.
Status VerifyState(
    const SnapshotData& snapshot,
    const std::function<Status(
        const std::function<Status(const JournalRecord&)>&)>& for_each_record,
    StateSummary* out) {
  std::string yaml, state;
  QM_RETURN_IF_ERROR(
      DecodeSnapshot(snapshot.payload, snapshot.seq, &yaml, &state));
  auto config = LoadConfigString(yaml, "the config in the snapshot");
  if (!config.ok()) {
    return DataLoss("the config in the snapshot at seq " +
                    std::to_string(snapshot.seq) +
                    " does not load: " + config.status().message());
  }
  ManualClock clock(Time(Duration(snapshot.time_ms)));
  auto engine = RestoreSnapshot(std::move(*config), &clock, nullptr,
                                snapshot.seq, state, snapshot.digest);
  if (!engine.ok()) return engine.status();
  out->snapshot_seq = out->last_seq = snapshot.seq;
  out->snapshot_time_ms = out->last_time_ms = snapshot.time_ms;
  out->config_yaml = yaml;
  uint64_t expect = snapshot.seq + 1;
  Status s = for_each_record([&](const JournalRecord& rec) -> Status {
    if (rec.seq != expect) {
      return DataLoss("journal record " + std::to_string(rec.seq) +
                      " follows " + std::to_string(expect - 1) +
                      ": records are missing");
    }
    auto op = store::DecodeOp(rec.payload);
    if (!op.ok()) {
      return DataLoss("journal record " + std::to_string(rec.seq) + ": " +
                      op.status().message());
    }
    if (const std::string* yaml = ReplayOp(**engine, clock, *op)) {
      out->config_yaml = *yaml;
    }
    ++expect;
    ++out->records;
    out->last_seq = rec.seq;
    out->last_time_ms = rec.time_ms;
    return Status::Ok();
  });
  if (!s.ok()) {
    return Status(s.code(), s.message() + " (the last good record is seq " +
                                std::to_string(out->last_seq) + ")");
  }
  if (Status inv = (*engine)->CheckInvariants(); !inv.ok()) {
    return DataLoss("the state after replaying to seq " +
                    std::to_string(out->last_seq) +
                    " breaks an invariant: " + inv.message());
  }
  out->digest = (*engine)->StateDigest();
  const Snapshot snap = (*engine)->GetSnapshot();
  out->active = snap.active;
  out->queued = snap.queued;
  return Status::Ok();
}

}  // namespace

StatusOr<StateSummary> CheckState(Store& store) {
  StateSummary summary;
  auto info = store.Info();
  if (!info.ok()) return info.status();
  summary.store = *info;
  QM_RETURN_IF_ERROR(store.Check());
  auto snap = store.LatestSnapshot();
  if (!snap.ok()) return snap.status();
  if (!snap->has_value()) {
    return Conflict("there is no qm state in " + info->location +
                    " (no snapshot: it was never opened by qm)");
  }
  QM_RETURN_IF_ERROR(VerifyState(
      **snap,
      [&](const std::function<Status(const JournalRecord&)>& visit) {
        return store.ReadJournal((*snap)->seq, visit);
      },
      &summary));
  return summary;
}

StatusOr<std::string> JournalOpName(std::string_view payload) {
  auto op = store::DecodeOp(payload);
  if (!op.ok()) return op.status();
  return std::string(store::OpName(*op));
}

Status ImportState(Store& target, const SnapshotData& snapshot,
                   const std::vector<JournalRecord>& journal,
                   StateSummary* summary) {
  StateSummary local;
  StateSummary* out = summary != nullptr ? summary : &local;
  QM_RETURN_IF_ERROR(VerifyState(
      snapshot,
      [&](const std::function<Status(const JournalRecord&)>& visit) {
        for (const JournalRecord& rec : journal) {
          QM_RETURN_IF_ERROR(visit(rec));
        }
        return Status::Ok();
      },
      out));
  auto info = target.Info();
  if (!info.ok()) return info.status();
  if (info->snapshot_seq != 0 || info->last_seq != 0) {
    return Conflict(
        "the target " + info->location +
        " already holds a qm state (up to seq " +
        std::to_string(std::max(info->snapshot_seq, info->last_seq)) +
        "); import only into an empty store");
  }
  QM_RETURN_IF_ERROR(target.AcquireLeadership(Duration(5000)));
  QM_RETURN_IF_ERROR(target.WriteSnapshot(snapshot));
  constexpr size_t kBatch = 5000;
  for (size_t i = 0; i < journal.size(); i += kBatch) {
    std::vector<JournalRecord> batch(
        journal.begin() + i,
        journal.begin() + std::min(journal.size(), i + kBatch));
    QM_RETURN_IF_ERROR(target.Append(&batch));
  }
  // The target as written.
  info = target.Info();
  if (!info.ok()) return info.status();
  out->store = *info;
  return Status::Ok();
}

// ---- DurableEngine ----

DurableEngine::DurableEngine(std::unique_ptr<DurableEngineImpl> impl)
    : impl_(std::move(impl)) {}
DurableEngine::~DurableEngine() = default;

StatusOr<std::unique_ptr<DurableEngine>> DurableEngine::Open(
    const DurableOptions& options, Config config, Clock* clock,
    EventSink* sink) {
  auto impl = std::make_unique<DurableEngineImpl>(options, std::move(config),
                                                  clock, sink);
  QM_RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<DurableEngine>(new DurableEngine(std::move(impl)));
}

StatusOr<AllocateResult> DurableEngine::Allocate(const AllocationRequest& r) {
  return impl_->Mutate(store::AllocateOp{r},
                       [&](Engine& e) { return e.Allocate(r); });
}
StatusOr<std::vector<AllocateResult>> DurableEngine::AllocateBatch(
    const std::vector<AllocationRequest>& r, bool all_or_nothing) {
  return impl_->Mutate(
      store::AllocateBatchOp{r, all_or_nothing},
      [&](Engine& e) { return e.AllocateBatch(r, all_or_nothing); });
}
StatusOr<AllocationInfo> DurableEngine::Release(std::string_view id,
                                                const UsageReport& usage) {
  return impl_->Mutate(store::ReleaseOp{std::string(id), usage},
                       [&](Engine& e) { return e.Release(id, usage); });
}
void DurableEngine::AllocateAsync(
    const AllocationRequest& r,
    std::function<void(StatusOr<AllocateResult>)> done, const Defer& defer) {
  auto call = [&](Engine& e) { return e.Allocate(r); };
  if (!defer) {
    impl_->MutateAsync(store::AllocateOp{r}, call, std::move(done));
  } else if (!impl_->TryMutateAsync([&] { return store::AllocateOp{r}; }, call,
                                    done)) {
    defer([this, r, done = std::move(done)]() mutable {
      AllocateAsync(r, std::move(done));
    });
  }
}
void DurableEngine::ReleaseAsync(
    std::string_view id, const UsageReport& usage,
    std::function<void(StatusOr<AllocationInfo>)> done, const Defer& defer) {
  auto call = [&](Engine& e) { return e.Release(id, usage); };
  if (!defer) {
    impl_->MutateAsync(store::ReleaseOp{std::string(id), usage}, call,
                       std::move(done));
  } else if (!impl_->TryMutateAsync(
                 [&] {
                   return store::ReleaseOp{std::string(id), usage};
                 },
                 call, done)) {
    defer(
        [this, id = std::string(id), usage, done = std::move(done)]() mutable {
          ReleaseAsync(id, usage, std::move(done));
        });
  }
}
void DurableEngine::RenewAsync(
    std::string_view id, std::optional<Duration> ttl,
    std::function<void(StatusOr<AllocationInfo>)> done, const Defer& defer) {
  auto call = [&](Engine& e) { return e.Renew(id, ttl); };
  if (!defer) {
    impl_->MutateAsync(store::RenewOp{std::string(id), ttl}, call,
                       std::move(done));
  } else if (!impl_->TryMutateAsync(
                 [&] {
                   return store::RenewOp{std::string(id), ttl};
                 },
                 call, done)) {
    defer([this, id = std::string(id), ttl, done = std::move(done)]() mutable {
      RenewAsync(id, ttl, std::move(done));
    });
  }
}
StatusOr<AllocationInfo> DurableEngine::Renew(std::string_view id,
                                              std::optional<Duration> ttl) {
  return impl_->Mutate(store::RenewOp{std::string(id), ttl},
                       [&](Engine& e) { return e.Renew(id, ttl); });
}
StatusOr<AllocationInfo> DurableEngine::Reallocate(
    std::string_view id, const ResourceAmounts& resources) {
  return impl_->Mutate(store::ReallocateOp{std::string(id), resources},
                       [&](Engine& e) { return e.Reallocate(id, resources); });
}
StatusOr<AllocationInfo> DurableEngine::Reclaim(std::string_view id,
                                                const std::string& reason) {
  return impl_->Mutate(store::ReclaimOp{std::string(id), reason},
                       [&](Engine& e) { return e.Reclaim(id, reason); });
}
Status DurableEngine::ObserveSystem(const SystemReading& reading) {
  return impl_->Mutate(store::ObserveSystemOp{reading},
                       [&](Engine& e) { return e.ObserveSystem(reading); });
}
StatusOr<AllocationInfo> DurableEngine::Cancel(std::string_view id) {
  return impl_->Mutate(store::CancelOp{std::string(id)},
                       [&](Engine& e) { return e.Cancel(id); });
}
StatusOr<AllocationInfo> DurableEngine::ReportUsage(std::string_view id,
                                                    const UsageReport& usage) {
  return impl_->Mutate(store::ReportUsageOp{std::string(id), usage},
                       [&](Engine& e) { return e.ReportUsage(id, usage); });
}
StatusOr<AllocationInfo> DurableEngine::ExtendTokens(std::string_view id,
                                                     int64_t max_tokens) {
  return impl_->Mutate(
      store::ExtendTokensOp{std::string(id), max_tokens},
      [&](Engine& e) { return e.ExtendTokens(id, max_tokens); });
}
Status DurableEngine::Pause(const Actor& actor) {
  return impl_->Mutate(store::PauseOp{actor},
                       [&](Engine& e) { return e.Pause(actor); });
}
Status DurableEngine::Resume(const Actor& actor) {
  return impl_->Mutate(store::ResumeOp{actor},
                       [&](Engine& e) { return e.Resume(actor); });
}
Status DurableEngine::SetPriorityOverride(const std::string& product,
                                          std::optional<Level> level,
                                          const Actor& actor) {
  return impl_->Mutate(
      store::PriorityOverrideOp{product, level, actor},
      [&](Engine& e) { return e.SetPriorityOverride(product, level, actor); });
}
Status DurableEngine::OverrideBreaker(const Actor& actor) {
  return impl_->Mutate(store::OverrideBreakerOp{actor},
                       [&](Engine& e) { return e.OverrideBreaker(actor); });
}
Status DurableEngine::RaiseLimits(std::optional<int64_t> max_tokens,
                                  std::optional<double> max_cost_usd,
                                  const Actor& actor) {
  return impl_->Mutate(store::RaiseLimitsOp{max_tokens, max_cost_usd, actor},
                       [&](Engine& e) {
                         return e.RaiseLimits(max_tokens, max_cost_usd, actor);
                       });
}
StatusOr<ConflictInfo> DurableEngine::ResolveConflict(
    std::string_view conflict_id, ResolveStrategy strategy,
    const Actor& actor) {
  return impl_->Mutate(
      store::ResolveConflictOp{std::string(conflict_id), strategy, actor},
      [&](Engine& e) {
        return e.ResolveConflict(conflict_id, strategy, actor);
      });
}
Status DurableEngine::SetLockPolicy(const std::string& scope,
                                    std::optional<LockPolicy> policy,
                                    const Actor& actor) {
  return impl_->Mutate(
      store::SetLockPolicyOp{scope, policy, actor},
      [&](Engine& e) { return e.SetLockPolicy(scope, policy, actor); });
}
StatusOr<ReservationInfo> DurableEngine::Reserve(
    const ReservationRequest& request) {
  return impl_->Mutate(store::ReserveOp{request},
                       [&](Engine& e) { return e.Reserve(request); });
}
StatusOr<ReservationInfo> DurableEngine::CancelReservation(std::string_view id,
                                                           const Actor& actor) {
  return impl_->Mutate(
      store::CancelReservationOp{std::string(id), actor},
      [&](Engine& e) { return e.CancelReservation(id, actor); });
}
Status DurableEngine::Tick() {
  return impl_->Mutate(store::TickOp{}, [](Engine& e) {
    e.Tick();
    return Status::Ok();
  });
}
// CheckConflicts and VerifyLock process what is due (as a tick does) and
// change nothing else, so the journal records them as ticks.
StatusOr<ConflictReport> DurableEngine::CheckConflicts(
    const AllocationRequest& request, Duration horizon) {
  return impl_->Mutate(store::TickOp{}, [&](Engine& e) {
    return e.CheckConflicts(request, horizon);
  });
}
StatusOr<LockVerdict> DurableEngine::VerifyLock(std::string_view path,
                                                uint64_t token) {
  return impl_->Mutate(store::TickOp{},
                       [&](Engine& e) { return e.VerifyLock(path, token); });
}

StatusOr<AllocationInfo> DurableEngine::Get(std::string_view id) {
  auto r = impl_->Read([&](Engine& e) { return e.Get(id); });
  if (!r.ok()) return r.status();
  return std::move(*r);
}

StatusOr<AllocationList> DurableEngine::List(const AllocationFilter& filter) {
  auto r = impl_->Read([&](Engine& e) { return e.List(filter); });
  if (!r.ok()) return r.status();
  return std::move(*r);
}
StatusOr<Snapshot> DurableEngine::GetSnapshot() {
  return impl_->Read([](Engine& e) { return e.GetSnapshot(); });
}
StatusOr<std::vector<QueueEntry>> DurableEngine::Queue() {
  return impl_->Read([](Engine& e) { return e.Queue(); });
}
StatusOr<CostReport> DurableEngine::Costs() {
  return impl_->Read([](Engine& e) { return e.Costs(); });
}
StatusOr<MetricsReport> DurableEngine::Metrics() {
  return impl_->Read([](Engine& e) { return e.Metrics(); });
}
StatusOr<std::vector<ConflictInfo>> DurableEngine::Conflicts() {
  return impl_->Read([](Engine& e) { return e.Conflicts(); });
}
StatusOr<ReservationInfo> DurableEngine::GetReservation(std::string_view id) {
  auto r = impl_->Read([&](Engine& e) { return e.GetReservation(id); });
  if (!r.ok()) return r.status();
  return std::move(*r);
}
StatusOr<std::vector<ReservationInfo>> DurableEngine::Reservations() {
  return impl_->Read([](Engine& e) { return e.Reservations(); });
}
std::optional<Time> DurableEngine::NextDeadline() {
  return impl_->NextDeadline();
}
StatusOr<std::string> DurableEngine::StateDigest() {
  return impl_->Read([](Engine& e) { return e.StateDigest(); });
}
Status DurableEngine::CheckInvariants() {
  // (Wrapped: a StatusOr cannot hold a Status.)
  auto r = impl_->Read(
      [](Engine& e) { return std::make_optional(e.CheckInvariants()); });
  if (!r.ok()) return r.status();
  return **r;
}
Config DurableEngine::config() const { return impl_->config(); }
StatusOr<ReconfigureResult> DurableEngine::Reconfigure(const Config& config,
                                                       const Actor& actor) {
  return impl_->Reconfigure(config, actor);
}
bool DurableEngine::IsLeader() const { return impl_->IsLeader(); }
Status DurableEngine::FollowStatus() const { return impl_->FollowStatus(); }
Status DurableEngine::WaitUntilLeader(Duration timeout) {
  return impl_->WaitUntilLeader(timeout);
}
Status DurableEngine::Flush() { return impl_->Flush(); }
Status DurableEngine::WriteSnapshot() { return impl_->WriteSnapshotNow(); }
Status DurableEngine::Close() { return impl_->Close(); }

Status DurableEngine::AppendHistory(const std::vector<HistoryRecord>& records) {
  return impl_->AppendHistory(records);
}
StatusOr<std::vector<HistoryRecord>> DurableEngine::ReadHistory(int tier,
                                                                int64_t from_ms,
                                                                size_t limit) {
  return impl_->ReadHistory(tier, from_ms, limit);
}
Status DurableEngine::PruneHistory(int tier, int64_t before_ms) {
  return impl_->PruneHistory(tier, before_ms);
}

std::vector<Event> DurableEngine::TakeRecoveredEvents() {
  return impl_->TakeRecoveredEvents();
}
const RecoveryInfo& DurableEngine::recovery() const {
  return impl_->recovery();
}
DurableStats DurableEngine::stats() const { return impl_->stats(); }
StatusOr<StoreInfo> DurableEngine::StoreDescription() {
  return impl_->StoreDescription();
}

// ---- Who leads (several servers on one PostgreSQL) ----

StatusOr<LeaderInfo> DurableEngineImpl::Leader() {
  {
    std::lock_guard<std::mutex> q(q_mu_);
    if (closed_) return Unavailable("the durable engine is closed");
  }
  std::lock_guard<std::mutex> lock(leader_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (leader_ && now - leader_read_ < options_.tail_interval) {
    // The lease kept running down since the reading.
    LeaderInfo info = *leader_;
    info.lease_left = std::max(
        Duration(0), info.lease_left - std::chrono::duration_cast<Duration>(
                                           now - leader_read_));
    return info;
  }
  StatusOr<LeaderInfo> read = [&] {
    std::lock_guard<std::mutex> store_lock(store_mu_);
    return store_->Leader();
  }();
  if (!read.ok()) return read.status();
  leader_ = *read;
  leader_read_ = now;
  return read;
}

StatusOr<LeaderInfo> DurableEngine::Leader() { return impl_->Leader(); }

}  // namespace qm
