# QM_STATIC_DEPS: link the third-party libraries (Abseil, yaml-cpp, SQLite,
# zlib, OpenSSL) and libstdc++ statically, so that a `qm` command starts
# without the dynamic loader mapping and relocating two dozen shared
# libraries: `qm --help` went from about 5.5 ms to 2.5 ms (README,
# "Benchmarks"). The CLI is run once per agent action, so its start-up is
# on every hook's and orchestrator's path. libc, libm and libpq (loaded at
# run time, src/store/libpq_dl.cc) stay shared; so do GoogleTest and Google
# Benchmark, which only tests and benchmarks link.
#
# Include it before the find_package calls it affects (OpenSSL, SQLite3,
# ZLIB) and call qm_static_imported_targets() after them. Off under
# sanitizers (their runtimes expect the shared libstdc++).
option(QM_STATIC_DEPS
       "Link Abseil, yaml-cpp, SQLite, zlib, OpenSSL and libstdc++ statically"
       ON)
if(QM_SANITIZE)
  set(QM_STATIC_DEPS OFF)
endif()

if(QM_STATIC_DEPS)
  set(OPENSSL_USE_STATIC_LIBS TRUE)
  set(ZLIB_USE_STATIC_LIBS ON)
  find_library(SQLite3_LIBRARY NAMES libsqlite3.a sqlite3)
endif()

# libstdc++ and libgcc linked statically into executable `target` (qm,
# qm-mcp, qm_load): only those, since the test and benchmark executables
# also load GoogleTest and Google Benchmark, shared libraries built against
# the shared libstdc++ (two copies of it in one process is asking for
# trouble).
function(qm_static_runtime target)
  if(QM_STATIC_DEPS)
    target_link_options(${target} PRIVATE -static-libstdc++ -static-libgcc)
  endif()
endfunction()

# Points each imported shared library target in ARGN (and every absl::
# target) at the static archive beside its shared object. A missing
# archive is an error naming the package to install.
function(qm_static_imported_targets)
  if(NOT QM_STATIC_DEPS)
    return()
  endif()
  get_directory_property(imported IMPORTED_TARGETS)
  set(targets ${ARGN})
  foreach(t IN LISTS imported)
    if(t MATCHES "^absl::")
      list(APPEND targets ${t})
    endif()
  endforeach()
  foreach(t IN LISTS targets)
    if(NOT TARGET ${t})
      continue()
    endif()
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "INTERFACE_LIBRARY")
      continue()
    endif()
    foreach(prop IMPORTED_LOCATION IMPORTED_LOCATION_NONE
                 IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_RELWITHDEBINFO
                 IMPORTED_LOCATION_DEBUG)
      get_target_property(location ${t} ${prop})
      if(NOT location OR NOT location MATCHES "\\.so(\\.[0-9.]+)?$")
        continue()
      endif()
      string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${location}")
      if(NOT EXISTS "${archive}")
        message(FATAL_ERROR
                "QM_STATIC_DEPS: ${t} has no static archive (${archive}); "
                "install the package's -dev files, or configure with "
                "-DQM_STATIC_DEPS=OFF")
      endif()
      set_target_properties(${t} PROPERTIES ${prop} "${archive}")
    endforeach()
  endforeach()
endfunction()
