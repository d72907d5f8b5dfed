#include "store/libpq_dl.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace qm::store {

namespace {

LibpqApi api;
Status loaded;

void Load() {
  void* lib = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    loaded = Unavailable(
        std::string("cannot load libpq.so.5, which a PostgreSQL store needs "
                    "(Debian: apt-get install libpq5): ") +
        (why ? why : "unknown error"));
    return;
  }
  // (The names are macros here: #name is taken before they expand.)
#define QM_PQ_FUNCTION(name)                                          \
  api.name = reinterpret_cast<decltype(api.name)>(dlsym(lib, #name)); \
  if (api.name == nullptr) {                                          \
    loaded = Unavailable("libpq.so.5 has no " + std::string(#name) +  \
                         ": it is too old for this qm");              \
    return;                                                           \
  }
#include "store/libpq_functions.inc"
#undef QM_PQ_FUNCTION
  // The library stays loaded for the life of the process.
}

}  // namespace

Status LoadLibpq() {
  static std::once_flag once;
  std::call_once(once, Load);
  return loaded;
}

const LibpqApi& Libpq() { return api; }

}  // namespace qm::store
