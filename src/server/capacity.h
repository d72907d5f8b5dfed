// The machine's capacities as the config's defaults (issue 7): cpu_cores,
// memory_gb and storage_gb, when the config file does not set them, are
// what this machine has (cgroup limits included) minus configured buffers
// (server.detect), and follow the machine while the server runs (each
// change is a config reload: journaled, refused while running work would
// be over the new capacity).
//
// Thread safety: a CapacityDetector is used from one thread at a time.
#ifndef QM_SERVER_CAPACITY_H_
#define QM_SERVER_CAPACITY_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qm/config.h"
#include "qm/status.h"
#include "server/server_config.h"

namespace qm::sys {
class SystemProbe;
}

namespace qm::server {

// What detection found, per resource (empty: not detected).
struct DetectedCapacities {
  std::optional<double> cpu_cores, memory_gb, storage_gb;
  // "cpu_cores 2 (2 online cores), memory_gb 21.5 (23.5 GiB - 2 buffer),
  // ..." for logs and the reload's reason.
  std::string summary;
  bool operator==(const DetectedCapacities& o) const {
    return cpu_cores == o.cpu_cores && memory_gb == o.memory_gb &&
           storage_gb == o.storage_gb;
  }
};

class CapacityDetector {
 public:
  // `storage_path`: the directory whose filesystem storage_gb measures
  // (the state directory). `root`: "/" (tests: a fixture tree).
  CapacityDetector(DetectConfig config, std::string storage_path,
                   std::string root = "/");
  ~CapacityDetector();

  // Reads the machine. Capacities are the detected amount minus the
  // buffer, never below 0, rounded down to 0.1 (so that a few MiB of
  // drift does not count as a change). The first error of the readers
  // when nothing could be read.
  StatusOr<DetectedCapacities> Detect();

 private:
  const DetectConfig config_;
  const std::string storage_path_;
  std::unique_ptr<sys::SystemProbe> probe_;
};

// `config` with the detected capacities of the resources not in `fixed`
// (the ones the config file sets itself).
Config WithDetected(Config config, const DetectedCapacities& detected,
                    const std::vector<std::string>& fixed);

}  // namespace qm::server

#endif  // QM_SERVER_CAPACITY_H_
