# QM_JEMALLOC: qm (the server and the CLI) and the load benchmark allocate
# with jemalloc (Debian's libjemalloc-dev, which `make deps` installs)
# instead of glibc's malloc. Under load, glibc's malloc took about a fifth
# of the server's CPU (its arenas and consolidation across the I/O, writer
# and client threads); jemalloc's per-thread caches raised a separate `qm
# serve`'s allocations/s (README, "The server"). tcmalloc (gperftools) did
# as well under load but adds about 2 ms to every process start, which the
# CLI cannot afford; jemalloc adds about 0.3 ms. Linked statically with
# QM_STATIC_DEPS. Off under sanitizers, which bring their own allocator.
option(QM_JEMALLOC "Link qm and qm_load with jemalloc" ON)
if(QM_SANITIZE)
  set(QM_JEMALLOC OFF)
endif()

if(QM_JEMALLOC)
  if(QM_STATIC_DEPS)
    # The position-independent archive: the executables are PIE.
    find_library(QM_JEMALLOC_LIBRARY NAMES libjemalloc_pic.a jemalloc)
  else()
    find_library(QM_JEMALLOC_LIBRARY NAMES jemalloc)
  endif()
  if(NOT QM_JEMALLOC_LIBRARY)
    message(FATAL_ERROR
            "QM_JEMALLOC: jemalloc not found; install libjemalloc-dev (make "
            "deps does), or configure with -DQM_JEMALLOC=OFF")
  endif()
endif()

# Links `target` (an executable) with jemalloc when QM_JEMALLOC is on.
function(qm_use_jemalloc target)
  if(QM_JEMALLOC)
    target_link_libraries(${target} PRIVATE ${QM_JEMALLOC_LIBRARY}
                                            Threads::Threads ${CMAKE_DL_LIBS})
  endif()
endfunction()
