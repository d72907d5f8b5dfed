#include "cli/state_cmd.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "api/base64.h"
#include "api/json_codec.h"
#include "qm/durable_engine.h"
#include "qm/store.h"

namespace qm::cli {
namespace {

using api::Json;

// The export format's version: the header's `qm_state_export`.
constexpr int kExportVersion = 1;

bool IsPostgresUri(std::string_view s) {
  return s.starts_with("postgresql://") || s.starts_with("postgres://");
}

std::string ErrnoText(int err) { return std::strerror(err); }

// NOT_FOUND when `err` says a path does not exist, else UNAVAILABLE.
Status ErrnoStatus(int err, const std::string& what) {
  std::string text = what + ": " + ErrnoText(err);
  return err == ENOENT || err == ENOTDIR ? NotFound(std::move(text))
                                         : Unavailable(std::move(text));
}

std::string FormatMs(int64_t time_ms) {
  return FormatTime(Time(Duration(time_ms)));
}

// One JSON line of an export: compact, keys in insertion order, text that
// is not UTF-8 (a path) with U+FFFD in its place rather than an exception.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Where a state command works: a state directory or a PostgreSQL database.
struct Target {
  std::string location;  // Store::Open's location
  bool is_dir = true;    // false: a PostgreSQL URI
};

// The NOT_FOUND of a state directory without a state.
Status NoState(const std::string& dir, const std::string& why) {
  return NotFound("no qm state in " + dir + " (" + why + ")")
      .AddAlternative("give the state directory with --state DIR (default " +
                      DefaultStateDir() + ")")
      .AddAlternative("give a PostgreSQL database with --store URI")
      .AddAlternative(
          "create a state from an export with `qm state import "
          "FILE --state DIR`");
}

// OK when `dir` holds a qm.db; NOT_FOUND naming `dir` otherwise. Creates
// nothing (Store::Open would create the directory and the database).
Status RequireState(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return NoState(dir, "the directory does not exist");
    }
    return ErrnoStatus(err, "cannot read state directory " + dir);
  }
  if (!S_ISDIR(st.st_mode)) return NoState(dir, "it is not a directory");
  const std::string db = dir + "/qm.db";
  if (::stat(db.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return NoState(dir, "it holds no qm.db");
    return ErrnoStatus(err, "cannot read " + db);
  }
  return Status::Ok();
}

// Store::Open on the target. Its UNAVAILABLE (a running qm holds the state
// directory; the database cannot be reached) says what to do instead.
StatusOr<std::unique_ptr<Store>> OpenStore(const Target& t) {
  StoreOptions options;
  options.location = t.location;
  auto store = Store::Open(options);
  if (!store.ok() && store.status().code() == Code::kUnavailable &&
      store.status().alternatives().empty()) {
    Status s = store.status();
    s.AddAlternative(t.is_dir ? "stop the qm that holds the state directory, "
                                "then run the command again"
                              : "check that the database can be reached, "
                                "then run the command again");
    return s;
  }
  return store;
}

// Opens the store of an existing state (check, export): NOT_FOUND, with
// nothing created, for a directory without one.
StatusOr<std::unique_ptr<Store>> OpenExisting(const Target& t) {
  if (t.is_dir) QM_RETURN_IF_ERROR(RequireState(t.location));
  return OpenStore(t);
}

int64_t CountLines(const std::string& text) {
  int64_t n = 0;
  for (const char c : text) n += c == '\n';
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

// The result of `qm state check` (and of import: the state it wrote).
Json SummaryJson(const StateSummary& s) {
  Json r;
  r["kind"] = s.store.kind;
  r["location"] = s.store.location;
  r["schema_version"] = s.store.schema_version;
  r["snapshot_seq"] = s.snapshot_seq;
  r["snapshot_time"] = FormatMs(s.snapshot_time_ms);
  r["records_replayed"] = s.records;
  r["last_seq"] = s.last_seq;
  r["last_time"] = FormatMs(s.last_time_ms);
  r["digest"] = s.digest;
  r["active"] = s.active;
  r["queued"] = s.queued;
  r["config_lines"] = CountLines(s.config_yaml);
  r["journal_bytes"] = s.store.bytes;
  return r;
}

// ---- check ----

int Check(const Output& o, const Target& t) {
  const auto t0 = std::chrono::steady_clock::now();
  StatusOr<StateSummary> summary = [&]() -> StatusOr<StateSummary> {
    auto store = OpenExisting(t);
    if (!store.ok()) return store.status();
    return CheckState(**store);
  }();
  if (!summary.ok()) {
    return o.Emit(api::ErrorEnvelope("state_check", Now(), summary.status()));
  }
  return o.Emit(api::SuccessEnvelope("state_check", Now(),
                                     SummaryJson(*summary), Since(t0)));
}

// ---- export ----

// A verified state read whole: what an export holds.
struct StateImage {
  StateSummary summary;
  SnapshotData snapshot;
  std::vector<JournalRecord> records;  // after the snapshot, in order
};

// Verifies the state (CheckState), then reads exactly what was verified:
// the snapshot and the records up to the summary's last_seq (a PostgreSQL
// leader may append more meanwhile; they are left for the next export).
StatusOr<StateImage> ReadVerified(const Target& t) {
  auto store = OpenExisting(t);
  if (!store.ok()) return store.status();
  auto summary = CheckState(**store);
  if (!summary.ok()) {
    return Status(summary.status().code(),
                  "the state does not verify, so it is not exported: " +
                      summary.status().message())
        .AddAlternative("`qm state check` describes the damage");
  }
  StateImage image;
  image.summary = std::move(*summary);
  auto snap = (*store)->LatestSnapshot();
  if (!snap.ok()) return snap.status();
  if (!snap->has_value() || (*snap)->seq != image.summary.snapshot_seq) {
    return Unavailable(
        "the state changed while it was exported (its snapshot moved on "
        "from seq " +
        std::to_string(image.summary.snapshot_seq) + "); export again");
  }
  image.snapshot = std::move(**snap);
  const uint64_t last = image.summary.last_seq;
  QM_RETURN_IF_ERROR(
      (*store)->ReadJournal(image.snapshot.seq, [&](const JournalRecord& rec) {
        if (rec.seq <= last) image.records.push_back(rec);
        return Status::Ok();
      }));
  if (image.snapshot.seq + image.records.size() != last) {
    return Internal("the journal after seq " +
                    std::to_string(image.snapshot.seq) + " holds " +
                    std::to_string(image.records.size()) +
                    " records up to seq " + std::to_string(last) +
                    ", which the check counted otherwise");
  }
  return image;
}

// The export's JSON lines (see docs/cli-state.md), each ending in '\n'.
StatusOr<std::string> ExportLines(const StateImage& image) {
  const StateSummary& s = image.summary;
  std::string out;
  Json header;
  header["qm_state_export"] = kExportVersion;
  header["kind"] = s.store.kind;
  header["location"] = s.store.location;
  header["exported_at"] = FormatTime(Now());
  header["snapshot_seq"] = s.snapshot_seq;
  header["last_seq"] = s.last_seq;
  header["digest"] = s.digest;
  out += Dump(header);
  out += '\n';

  const SnapshotData& snap = image.snapshot;
  Json sj;
  sj["seq"] = snap.seq;
  sj["time"] = FormatMs(snap.time_ms);
  sj["time_ms"] = snap.time_ms;
  sj["digest"] = snap.digest;
  sj["config"] = s.config_yaml;
  sj["payload_base64"] = api::Base64Encode(snap.payload);
  Json line;
  line["snapshot"] = std::move(sj);
  out += Dump(line);
  out += '\n';

  for (const JournalRecord& rec : image.records) {
    auto op = JournalOpName(rec.payload);
    if (!op.ok()) {
      return Status(op.status().code(), "journal record " +
                                            std::to_string(rec.seq) + ": " +
                                            op.status().message());
    }
    Json rj;
    rj["seq"] = rec.seq;
    rj["time_ms"] = rec.time_ms;
    rj["epoch"] = rec.epoch;
    rj["op"] = *op;
    rj["payload_base64"] = api::Base64Encode(rec.payload);
    Json record_line;
    record_line["record"] = std::move(rj);
    out += Dump(record_line);
    out += '\n';
  }
  return out;
}

// Replaces `path` with `data` atomically: a temporary file beside it
// (mode 0600: a state is private), written and fsynced, renamed over
// `path`, then the directory fsynced. On error `path` is unchanged and the
// temporary file is gone.
Status WriteFileAtomically(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return ErrnoStatus(errno, "cannot create a temporary file beside " + path);
  }
  auto fail = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, what);
  };
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot sync " + tmp);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "cannot rename " + tmp + " to " + path);
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || ::fsync(dfd) != 0) {
    const int err = errno;
    if (dfd >= 0) ::close(dfd);
    return ErrnoStatus(err,
                       "wrote " + path + " but cannot sync directory " + dir);
  }
  ::close(dfd);
  return Status::Ok();
}

int Export(const Output& o, const Target& t, const std::string& file,
           std::ostream& err) {
  const auto t0 = std::chrono::steady_clock::now();
  StatusOr<StateImage> image = ReadVerified(t);
  StatusOr<std::string> lines =
      image.ok() ? ExportLines(*image) : StatusOr<std::string>(image.status());
  if (!lines.ok()) {
    return o.Emit(api::ErrorEnvelope("state_export", Now(), lines.status()));
  }
  if (file.empty()) {
    *o.out << *lines;
    o.out->flush();
    if (!*o.out) {
      err << "qm state export: writing the export to stdout failed\n";
      return kExitError;
    }
    return 0;
  }
  if (Status s = WriteFileAtomically(file, *lines); !s.ok()) {
    return o.Emit(api::ErrorEnvelope("state_export", Now(), s));
  }
  const StateSummary& s = image->summary;
  Json r;
  r["file"] = file;
  r["kind"] = s.store.kind;
  r["location"] = s.store.location;
  r["snapshot_seq"] = s.snapshot_seq;
  r["last_seq"] = s.last_seq;
  r["records"] = image->records.size();
  r["digest"] = s.digest;
  r["bytes"] = lines->size();
  return o.Emit(api::SuccessEnvelope("state_export", Now(), r, Since(t0)));
}

// ---- import ----

// An export file, parsed and checked line by line.
struct ExportFile {
  uint64_t last_seq = 0;  // the header's
  std::string digest;     // the header's: the state after the last record
  SnapshotData snapshot;
  std::vector<JournalRecord> records;  // after the snapshot, in order
};

// Reads the fields of one line of an export; its errors are
// INVALID_REQUEST naming the file, the line and the field (also as the
// error context's `line` and `field`).
class LineFields {
 public:
  // `file` must outlive this object.
  LineFields(const std::string& file, int line) : file_(file), line_(line) {}

  Status Error(const std::string& field, const std::string& what) const {
    Status s = InvalidRequest(file_ + " line " + std::to_string(line_) + ": " +
                              (field.empty() ? "" : field + ": ") + what);
    s.AddContext("line", std::to_string(line_));
    if (!field.empty()) s.AddContext("field", field);
    return s;
  }

  // obj[key], which must be present. `prefix` names obj in errors
  // ("record.").
  StatusOr<const Json*> Get(const Json& obj, const std::string& prefix,
                            const char* key) const {
    const auto it = obj.find(key);
    if (it == obj.end()) return Error(prefix + key, "missing");
    return &*it;
  }

  // A whole number >= `min` (up to 2^64 - 1).
  StatusOr<uint64_t> Unsigned(const Json& obj, const std::string& prefix,
                              const char* key, uint64_t min = 0) const {
    auto v = Get(obj, prefix, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_number_unsigned() || (*v)->get<uint64_t>() < min) {
      return Error(prefix + key,
                   "must be a whole number >= " + std::to_string(min) +
                       ", not " + Shown(**v));
    }
    return (*v)->get<uint64_t>();
  }

  // A whole number that fits 64 signed bits.
  StatusOr<int64_t> Signed(const Json& obj, const std::string& prefix,
                           const char* key) const {
    auto v = Get(obj, prefix, key);
    if (!v.ok()) return v.status();
    const Json& j = **v;
    const bool fits =
        j.is_number_integer() &&
        (!j.is_number_unsigned() ||
         j.get<uint64_t>() <=
             static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    if (!fits) {
      return Error(prefix + key,
                   "must be a whole number (milliseconds), not " + Shown(j));
    }
    return j.get<int64_t>();
  }

  // A string; non-empty when `non_empty`.
  StatusOr<std::string> String(const Json& obj, const std::string& prefix,
                               const char* key, bool non_empty = true) const {
    auto v = Get(obj, prefix, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_string()) {
      return Error(prefix + key, "must be a string, not " + Shown(**v));
    }
    std::string s = (*v)->get<std::string>();
    if (non_empty && s.empty()) return Error(prefix + key, "must not be empty");
    return s;
  }

  // The bytes of a base64 string.
  StatusOr<std::string> Bytes(const Json& obj, const std::string& prefix,
                              const char* key) const {
    auto text = String(obj, prefix, key, /*non_empty=*/false);
    if (!text.ok()) return text.status();
    auto bytes = api::Base64Decode(*text);
    if (!bytes.ok()) return Error(prefix + key, bytes.status().message());
    return bytes;
  }

  // An informational field (not used for the import): absent, or of the
  // type it is written with. `want` is "string" or "unsigned".
  Status Informational(const Json& obj, const std::string& prefix,
                       const char* key, std::string_view want) const {
    const auto it = obj.find(key);
    if (it == obj.end()) return Status::Ok();
    if (want == "string" && !it->is_string()) {
      return Error(prefix + key, "must be a string, not " + Shown(*it));
    }
    if (want == "unsigned" && !it->is_number_unsigned()) {
      return Error(prefix + key,
                   "must be a whole number >= 0, not " + Shown(*it));
    }
    return Status::Ok();
  }

  // obj[key] as an object.
  StatusOr<const Json*> Object(const Json& obj, const char* key,
                               const std::string& what) const {
    auto v = Get(obj, "", key);
    if (!v.ok()) return Error(key, "missing: " + what);
    if (!(*v)->is_object()) {
      return Error(key, "must be an object, not " + Shown(**v));
    }
    return *v;
  }

 private:
  // `j` for an error message: its type, and its value when short.
  static std::string Shown(const Json& j) {
    std::string text = api::JsonTypeName(j);
    if (j.is_primitive() && !j.is_null()) {
      const std::string v = Dump(j);
      if (v.size() <= 40) text += " (" + v + ")";
    }
    return text;
  }

  const std::string& file_;
  int line_;
};

// nlohmann's parse error without its "[json.exception...] " prefix and its
// "line 1, " (the file's line is given already).
std::string ParseErrorText(const char* what) {
  std::string text = what;
  if (const size_t p = text.find("] "); p != std::string::npos) {
    text.erase(0, p + 2);
  }
  if (const size_t p = text.find("at line 1, "); p != std::string::npos) {
    text.erase(p + 3, 8);
  }
  return text;
}

// Parses the export `in` (named `name` in errors) and checks it line by
// line: the header (version 1), the snapshot (its seq the header's), the
// records (contiguous from the snapshot on, ending at the header's
// last_seq). INVALID_REQUEST naming the first bad line and field.
StatusOr<ExportFile> ParseExport(std::istream& in, const std::string& name) {
  ExportFile f;
  uint64_t snapshot_seq = 0;
  int line_no = 0;
  try {
    for (std::string text; std::getline(in, text);) {
      ++line_no;
      const LineFields p(name, line_no);
      if (text.find_first_not_of(" \t\r") == std::string::npos) {
        return p.Error("", "empty line (each line is one JSON object)");
      }
      Json j;
      try {
        j = Json::parse(text);
      } catch (const Json::parse_error& e) {
        return p.Error("", "not valid JSON: " + ParseErrorText(e.what()));
      }
      if (!j.is_object()) {
        return p.Error("", "must be a JSON object, not " +
                               std::string(api::JsonTypeName(j)));
      }
      if (line_no == 1) {
        const auto version = j.find("qm_state_export");
        if (version == j.end()) {
          return p.Error("qm_state_export",
                         "missing: not a qm state export (its first line is "
                         "the header {\"qm_state_export\": 1, ...})");
        }
        if (!version->is_number_integer() || *version != kExportVersion) {
          return p.Error("qm_state_export",
                         "version " + Dump(*version) +
                             " is not supported (this qm reads version " +
                             std::to_string(kExportVersion) +
                             "; written by a newer qm?)");
        }
        auto seq = p.Unsigned(j, "", "snapshot_seq", 1);
        if (!seq.ok()) return seq.status();
        snapshot_seq = *seq;
        auto last = p.Unsigned(j, "", "last_seq", snapshot_seq);
        if (!last.ok()) return last.status();
        f.last_seq = *last;
        auto digest = p.String(j, "", "digest");
        if (!digest.ok()) return digest.status();
        f.digest = std::move(*digest);
        for (const char* key : {"kind", "location", "exported_at"}) {
          QM_RETURN_IF_ERROR(p.Informational(j, "", key, "string"));
        }
        continue;
      }
      if (line_no == 2) {
        auto obj = p.Object(j, "snapshot", "line 2 is the snapshot");
        if (!obj.ok()) return obj.status();
        const Json& s = **obj;
        const std::string prefix = "snapshot.";
        auto seq = p.Unsigned(s, prefix, "seq", 1);
        if (!seq.ok()) return seq.status();
        if (*seq != snapshot_seq) {
          return p.Error("snapshot.seq",
                         "is " + std::to_string(*seq) +
                             " but the header (line 1) says snapshot_seq " +
                             std::to_string(snapshot_seq));
        }
        auto time_ms = p.Signed(s, prefix, "time_ms");
        if (!time_ms.ok()) return time_ms.status();
        auto digest = p.String(s, prefix, "digest");
        if (!digest.ok()) return digest.status();
        auto payload = p.Bytes(s, prefix, "payload_base64");
        if (!payload.ok()) return payload.status();
        for (const char* key : {"time", "config"}) {
          QM_RETURN_IF_ERROR(p.Informational(s, prefix, key, "string"));
        }
        f.snapshot.seq = *seq;
        f.snapshot.time_ms = *time_ms;
        f.snapshot.digest = std::move(*digest);
        f.snapshot.payload = std::move(*payload);
        continue;
      }
      auto obj =
          p.Object(j, "record", "every line after the snapshot is a record");
      if (!obj.ok()) return obj.status();
      const Json& r = **obj;
      const std::string prefix = "record.";
      auto seq = p.Unsigned(r, prefix, "seq", 1);
      if (!seq.ok()) return seq.status();
      const uint64_t expected = snapshot_seq + f.records.size() + 1;
      if (*seq != expected) {
        return p.Error("record.seq",
                       "is " + std::to_string(*seq) + " where " +
                           std::to_string(expected) +
                           " was expected (records follow the snapshot in "
                           "order, without gaps)");
      }
      if (*seq > f.last_seq) {
        return p.Error("record.seq", std::to_string(*seq) +
                                         " is after the header's last_seq " +
                                         std::to_string(f.last_seq));
      }
      auto time_ms = p.Signed(r, prefix, "time_ms");
      if (!time_ms.ok()) return time_ms.status();
      auto payload = p.Bytes(r, prefix, "payload_base64");
      if (!payload.ok()) return payload.status();
      QM_RETURN_IF_ERROR(p.Informational(r, prefix, "epoch", "unsigned"));
      QM_RETURN_IF_ERROR(p.Informational(r, prefix, "op", "string"));
      JournalRecord rec;
      rec.seq = *seq;
      rec.time_ms = *time_ms;
      rec.payload = std::move(*payload);
      f.records.push_back(std::move(rec));
    }
  } catch (const Json::exception& e) {
    // Not expected: every access above checks its type first.
    return Internal(name + " line " + std::to_string(line_no) + ": " +
                    e.what());
  }
  if (in.bad()) {
    return Unavailable("reading " + name + " failed after line " +
                       std::to_string(line_no));
  }
  if (line_no == 0) {
    return InvalidRequest(name + " is empty: not a qm state export");
  }
  if (line_no == 1) {
    return LineFields(name, 2).Error("snapshot",
                                     "missing: the file ends after its header");
  }
  const uint64_t last =
      f.records.empty() ? f.snapshot.seq : f.records.back().seq;
  if (last != f.last_seq) {
    return LineFields(name, line_no)
        .Error("last_seq", "the file ends at seq " + std::to_string(last) +
                               " but its header says last_seq " +
                               std::to_string(f.last_seq) + " (truncated?)");
  }
  return f;
}

// What an import is about to create in a state directory, noted before
// Store::Open creates it, so that a failed import can take it away again
// and leave the directory as it was.
class CreatedByImport {
 public:
  explicit CreatedByImport(std::string dir) : dir_(std::move(dir)) {
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    struct stat st;
    had_db_ = ::stat((dir_ + "/qm.db").c_str(), &st) == 0;
    had_lock_ = ::stat((dir_ + "/qm.lock").c_str(), &st) == 0;
    for (std::string p = dir_; !p.empty() && p != "/" && p != ".";) {
      if (::stat(p.c_str(), &st) == 0 || errno != ENOENT) break;
      new_dirs_.push_back(p);
      const size_t slash = p.rfind('/');
      p = slash == std::string::npos ? "" : p.substr(0, slash);
    }
  }

  // Removes the database files and the lock file when the import created
  // them (only while nobody else holds the directory's lock), then the
  // directories it created, deepest first, when they are empty. Best
  // effort; call it after the store is closed.
  void Undo() const {
    if (!had_db_) {
      const std::string lock = dir_ + "/qm.lock";
      const int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
      if (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
          ::unlink((dir_ + "/qm.db" + suffix).c_str());
        }
        if (!had_lock_) ::unlink(lock.c_str());
      }
      if (fd >= 0) ::close(fd);
    }
    for (const std::string& d : new_dirs_) ::rmdir(d.c_str());
  }

 private:
  std::string dir_;
  bool had_db_ = false, had_lock_ = false;
  std::vector<std::string> new_dirs_;  // deepest first
};

// Writes `f` into the target store and reads it back: ImportState (which
// verifies the state, refuses a non-empty target and writes), then
// CheckState on the target, whose digest must be the header's.
StatusOr<StateSummary> ImportInto(const Target& t, const ExportFile& f,
                                  const std::string& name) {
  auto store = OpenStore(t);
  if (!store.ok()) return store.status();
  Status s = ImportState(**store, f.snapshot, f.records);
  // A PostgreSQL server need not wait for the lease to run out; a failure
  // here only makes it wait.
  (void)(*store)->ResignLeadership();
  if (!s.ok() && s.code() == Code::kDataLoss && s.details().empty()) {
    // The verification names records by seq; say where they are.
    const int64_t offset = 2 - static_cast<int64_t>(f.snapshot.seq);
    return std::move(s).WithDetails(
        "In " + name + ", line 2 is the snapshot (seq " +
        std::to_string(f.snapshot.seq) + ") and the record of seq N is line N" +
        (offset < 0 ? " - " : " + ") + std::to_string(std::abs(offset)) + ".");
  }
  if (!s.ok()) return s;
  // A state directory is cleaned up after a failure (CreatedByImport); a
  // database keeps what was written.
  const std::string kept =
      t.is_dir ? "" : " (the imported state stays in the database)";
  auto summary = CheckState(**store);
  if (!summary.ok()) {
    return Status(summary.status().code(),
                  "the imported state does not read back: " +
                      summary.status().message() + kept);
  }
  if (summary->digest != f.digest) {
    return DataLoss("the imported state has digest " + summary->digest +
                    " but the export's header says " + f.digest +
                    ": the file was changed after it was exported" + kept);
  }
  return summary;
}

int Import(const Output& o, const Target& t, const std::string& file,
           std::istream& in) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string name = file == "-" ? "stdin" : file;
  StatusOr<ExportFile> parsed = [&]() -> StatusOr<ExportFile> {
    if (file == "-") return ParseExport(in, name);
    std::ifstream f(file, std::ios::binary);
    if (!f) return ErrnoStatus(errno, "cannot open " + file);
    return ParseExport(f, name);
  }();
  if (!parsed.ok()) {
    return o.Emit(api::ErrorEnvelope("state_import", Now(), parsed.status()));
  }
  std::optional<CreatedByImport> created;
  if (t.is_dir) created.emplace(t.location);
  StatusOr<StateSummary> summary = ImportInto(t, *parsed, name);
  if (!summary.ok()) {
    if (created) created->Undo();
    return o.Emit(api::ErrorEnvelope("state_import", Now(), summary.status()));
  }
  Json r;
  r["file"] = name;
  r["records_imported"] = parsed->records.size();
  r.update(SummaryJson(*summary));
  return o.Emit(api::SuccessEnvelope("state_import", Now(), r, Since(t0)));
}

// Adds --state and --store to a `qm state` subcommand.
void AddTargetOptions(CLI::App* cmd, std::string* state_dir,
                      std::string* store_uri) {
  auto* state =
      cmd->add_option("--state", *state_dir,
                      "SQLite state directory (default: $XDG_STATE_HOME/qm "
                      "when XDG_STATE_HOME is set and non-empty, else "
                      "./var/qm; currently " +
                          DefaultStateDir() + ")")
          ->type_name("DIR")
          ->check([](const std::string& v) -> std::string {
            if (v.empty()) return "--state must not be empty";
            if (IsPostgresUri(v)) {
              return "--state takes a directory; give a PostgreSQL URI with "
                     "--store";
            }
            return "";
          });
  cmd->add_option("--store", *store_uri,
                  "PostgreSQL database URI (postgresql://... or "
                  "postgres://...) instead of a state directory")
      ->type_name("URI")
      ->excludes(state)
      ->check([](const std::string& v) -> std::string {
        return IsPostgresUri(v) ? ""
                                : "--store takes a PostgreSQL URI "
                                  "(postgresql://... or postgres://...); "
                                  "give a state directory with --state";
      });
}

}  // namespace

std::string DefaultStateDir() {
  const char* xdg = std::getenv("XDG_STATE_HOME");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/qm";
  return "./var/qm";
}

StateCommand::StateCommand(CLI::App* app) {
  auto* state = app->add_subcommand(
      "state",
      "Check, export or import the durable state, offline (no qm may be "
      "running on it)");
  state->footer(
      "The state is an SQLite state directory (--state DIR; default: "
      "$XDG_STATE_HOME/qm when XDG_STATE_HOME is set and non-empty, else "
      "./var/qm; currently " +
      DefaultStateDir() +
      ") or a PostgreSQL database (--store URI). See docs/cli-state.md.");
  state->require_subcommand(1);

  check_ = state->add_subcommand(
      "check",
      "Verify the state: the database, every record's checksum, the "
      "snapshot's digest, a replay of the journal and the engine's "
      "invariants. Prints what it holds");
  AddTargetOptions(check_, &state_dir_, &store_uri_);

  export_ = state->add_subcommand(
      "export",
      "Verify the state, then write it as JSON lines (a header, the "
      "snapshot, every journal record after it) to stdout or --file");
  AddTargetOptions(export_, &state_dir_, &store_uri_);
  export_
      ->add_option("--file,-f", export_file_,
                   "Write the export here (atomically: a temporary file "
                   "renamed into place) and print an envelope; default: the "
                   "JSON lines to stdout")
      ->type_name("FILE");

  import_ = state->add_subcommand(
      "import",
      "Write an export into an empty state (a fresh directory is created), "
      "after checking every line and verifying the state; nothing is "
      "written when anything is wrong");
  AddTargetOptions(import_, &state_dir_, &store_uri_);
  import_
      ->add_option("FILE", import_file_,
                   "The export (from `qm state export`); - for stdin")
      ->required();
}

bool StateCommand::chosen() const { return *check_ || *export_ || *import_; }

int StateCommand::Run(const Output& o, std::istream& in,
                      std::ostream& err) const {
  Target t;
  if (!store_uri_.empty()) {
    t.location = store_uri_;
    t.is_dir = false;
  } else {
    t.location = state_dir_.empty() ? DefaultStateDir() : state_dir_;
  }
  if (*check_) return Check(o, t);
  if (*export_) return Export(o, t, export_file_, err);
  return Import(o, t, import_file_, in);
}

}  // namespace qm::cli
