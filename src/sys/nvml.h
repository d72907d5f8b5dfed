// NVIDIA GPUs through NVML, loaded at run time with dlopen(3): no build
// dependency, and a machine without the library simply has no GPUs.
// Private to src/sys.
#ifndef QM_SYS_NVML_H_
#define QM_SYS_NVML_H_

#include <memory>
#include <string>

#include "sys/system_probe.h"

namespace qm::sys::internal {

class Nvml {
 public:
  // Opens `library` and calls nvmlInit_v2; null with *note saying why when
  // the library, one of its functions or the initialisation is missing.
  static std::unique_ptr<Nvml> Load(const std::string& library,
                                    std::string* note);
  // nvmlShutdown, dlclose.
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // Every device NVML counts; a device that does not answer is left out and
  // named in the note.
  GpuReport Read() const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

}  // namespace qm::sys::internal

#endif  // QM_SYS_NVML_H_
