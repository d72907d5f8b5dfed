// A stand-in for libnvidia-ml.so.1 with the few functions SystemProbe
// loads: two GPUs, the second of which does not report utilisation (as
// some devices answer NVML_ERROR_NOT_SUPPORTED).
#include <cstring>

namespace {

struct Device {
  const char* name;
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
  int gpu_percent;  // -1: not supported
  int memory_percent;
};

const Device kDevices[] = {
    {"Fake GPU A100", 85899345920ull, 64424509440ull, 21474836480ull, 37, 12},
    {"Fake GPU T4", 16106127360ull, 16106127360ull, 0ull, -1, -1},
};
constexpr int kNotSupported = 3;  // NVML_ERROR_NOT_SUPPORTED
constexpr int kInvalidArgument = 2;
constexpr int kUninitialized = 1;
int initialised = 0;

struct Memory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct Utilization {
  unsigned int gpu;
  unsigned int memory;
};

}  // namespace

extern "C" {

int nvmlInit_v2() {
  ++initialised;
  return 0;
}

int nvmlShutdown() {
  if (initialised == 0) return kUninitialized;
  --initialised;
  return 0;
}

int nvmlDeviceGetCount_v2(unsigned int* count) {
  if (initialised == 0) return kUninitialized;
  *count = sizeof(kDevices) / sizeof(kDevices[0]);
  return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, const Device** device) {
  if (initialised == 0) return kUninitialized;
  if (index >= sizeof(kDevices) / sizeof(kDevices[0])) return kInvalidArgument;
  *device = &kDevices[index];
  return 0;
}

int nvmlDeviceGetMemoryInfo(const Device* device, Memory* memory) {
  memory->total = device->total;
  memory->free = device->free;
  memory->used = device->used;
  return 0;
}

int nvmlDeviceGetUtilizationRates(const Device* device, Utilization* rates) {
  if (device->gpu_percent < 0) return kNotSupported;
  rates->gpu = static_cast<unsigned int>(device->gpu_percent);
  rates->memory = static_cast<unsigned int>(device->memory_percent);
  return 0;
}

int nvmlDeviceGetName(const Device* device, char* name, unsigned int length) {
  if (length == 0) return kInvalidArgument;
  std::strncpy(name, device->name, length - 1);
  name[length - 1] = '\0';
  return 0;
}

// For the tests: how many nvmlInit_v2 calls are not yet shut down.
int qm_fake_nvml_initialised() { return initialised; }

}  // extern "C"
