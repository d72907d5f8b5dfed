#include "sys/nvml.h"

#include <dlfcn.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace qm::sys::internal {
namespace {

// The few NVML declarations used, from nvml.h (stable C ABI). nvmlReturn_t
// is an enum: 0 is NVML_SUCCESS.
using NvmlReturn = int;
struct NvmlDeviceSt;
using NvmlDevice = NvmlDeviceSt*;
struct NvmlMemory {  // nvmlMemory_t (v1)
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu;
  unsigned int memory;
};
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr unsigned int kNameBufferSize = 96;  // NVML_DEVICE_NAME_V2_...

using InitFn = NvmlReturn (*)();
using GetCountFn = NvmlReturn (*)(unsigned int*);
using GetHandleFn = NvmlReturn (*)(unsigned int, NvmlDevice*);
using GetMemoryFn = NvmlReturn (*)(NvmlDevice, NvmlMemory*);
using GetUtilizationFn = NvmlReturn (*)(NvmlDevice, NvmlUtilization*);
using GetNameFn = NvmlReturn (*)(NvmlDevice, char*, unsigned int);
using ShutdownFn = NvmlReturn (*)();

std::string Failed(const char* function, NvmlReturn code) {
  return std::string(function) + " failed (NVML error " + std::to_string(code) +
         ")";
}

}  // namespace

struct Nvml::Api {
  void* handle = nullptr;
  InitFn init = nullptr;
  GetCountFn get_count = nullptr;
  GetHandleFn get_handle = nullptr;
  GetMemoryFn get_memory = nullptr;
  GetUtilizationFn get_utilization = nullptr;
  GetNameFn get_name = nullptr;
  ShutdownFn shutdown = nullptr;
};

std::unique_ptr<Nvml> Nvml::Load(const std::string& library,
                                 std::string* note) {
  auto api = std::make_unique<Api>();
  api->handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->handle == nullptr) {
    const char* error = dlerror();
    *note = error != nullptr ? error : library + ": cannot be loaded";
    return nullptr;
  }
  bool missing = false;
  auto bind = [&](const char* name, auto* fn) {
    void* symbol = dlsym(api->handle, name);
    if (symbol == nullptr && !missing) {
      missing = true;
      *note = library + ": no function " + name;
    }
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(symbol);
  };
  bind("nvmlInit_v2", &api->init);
  bind("nvmlDeviceGetCount_v2", &api->get_count);
  bind("nvmlDeviceGetHandleByIndex_v2", &api->get_handle);
  bind("nvmlDeviceGetMemoryInfo", &api->get_memory);
  bind("nvmlDeviceGetUtilizationRates", &api->get_utilization);
  bind("nvmlDeviceGetName", &api->get_name);
  bind("nvmlShutdown", &api->shutdown);
  if (missing) {
    dlclose(api->handle);
    return nullptr;
  }
  if (const NvmlReturn r = api->init(); r != kNvmlSuccess) {
    *note = library + ": " + Failed("nvmlInit_v2", r);
    dlclose(api->handle);
    return nullptr;
  }
  note->clear();
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  dlclose(api_->handle);
}

GpuReport Nvml::Read() const {
  GpuReport report;
  auto skip = [&](unsigned int index, const char* function, NvmlReturn r) {
    if (!report.note.empty()) report.note += "; ";
    report.note += "GPU " + std::to_string(index) + ": " + Failed(function, r);
  };
  unsigned int count = 0;
  if (const NvmlReturn r = api_->get_count(&count); r != kNvmlSuccess) {
    report.note = Failed("nvmlDeviceGetCount_v2", r);
    return report;
  }
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (const NvmlReturn r = api_->get_handle(i, &device); r != kNvmlSuccess) {
      skip(i, "nvmlDeviceGetHandleByIndex_v2", r);
      continue;
    }
    NvmlMemory memory = {};
    if (const NvmlReturn r = api_->get_memory(device, &memory);
        r != kNvmlSuccess) {
      skip(i, "nvmlDeviceGetMemoryInfo", r);
      continue;
    }
    GpuInfo gpu;
    gpu.index = static_cast<int>(i);
    char name[kNameBufferSize] = {};
    if (api_->get_name(device, name, kNameBufferSize) == kNvmlSuccess) {
      name[kNameBufferSize - 1] = '\0';
      gpu.name = name;
    }
    gpu.memory_total_bytes = memory.total;
    gpu.memory_used_bytes = memory.used;
    gpu.memory_free_bytes = memory.free;
    // Not every device reports utilisation (NVML_ERROR_NOT_SUPPORTED).
    NvmlUtilization utilization = {};
    if (api_->get_utilization(device, &utilization) == kNvmlSuccess) {
      gpu.utilisation_percent = static_cast<int>(utilization.gpu);
      gpu.memory_utilisation_percent = static_cast<int>(utilization.memory);
    }
    report.gpus.push_back(std::move(gpu));
  }
  return report;
}

}  // namespace qm::sys::internal
