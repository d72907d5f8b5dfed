// libpq, loaded at run time (dlopen) the first time a PostgreSQL store is
// opened, instead of linked: Debian's libpq brings some twenty libraries
// (Kerberos, LDAP, GnuTLS...) whose loading and start-up code every `qm`
// command would otherwise pay for, PostgreSQL or not (about 5 ms of the
// CLI's start).
//
// Include this instead of <libpq-fe.h> in the one file that calls libpq:
// the PQ* names used there become calls through the loaded table. Call
// LoadLibpq() (once is enough; it is cheap after) before any of them.
//
// Thread safety: LoadLibpq may be called from any thread; the table is
// immutable once loaded.
#ifndef QM_STORE_LIBPQ_DL_H_
#define QM_STORE_LIBPQ_DL_H_

#include <libpq-fe.h>

#include "qm/status.h"

namespace qm::store {

// The libpq functions the PostgreSQL store uses.
struct LibpqApi {
#define QM_PQ_FUNCTION(name) decltype(&::name) name;
#include "store/libpq_functions.inc"
#undef QM_PQ_FUNCTION
};

// Loads libpq.so.5 and its functions (the first call; later calls answer
// the first one's result). UNAVAILABLE naming the library and why when it
// cannot (Debian: install libpq5).
Status LoadLibpq();
// The loaded table; only after LoadLibpq() succeeded.
const LibpqApi& Libpq();

}  // namespace qm::store

#define QM_PQ_FUNCTION(name) name
#define PQstatus(...) (::qm::store::Libpq().PQstatus(__VA_ARGS__))
#define PQntuples(...) (::qm::store::Libpq().PQntuples(__VA_ARGS__))
#define PQresultStatus(...) (::qm::store::Libpq().PQresultStatus(__VA_ARGS__))
#define PQexec(...) (::qm::store::Libpq().PQexec(__VA_ARGS__))
#define PQresultErrorField(...) \
  (::qm::store::Libpq().PQresultErrorField(__VA_ARGS__))
#define PQgetvalue(...) (::qm::store::Libpq().PQgetvalue(__VA_ARGS__))
#define PQgetlength(...) (::qm::store::Libpq().PQgetlength(__VA_ARGS__))
#define PQerrorMessage(...) (::qm::store::Libpq().PQerrorMessage(__VA_ARGS__))
#define PQtransactionStatus(...) \
  (::qm::store::Libpq().PQtransactionStatus(__VA_ARGS__))
#define PQsetNoticeProcessor(...) \
  (::qm::store::Libpq().PQsetNoticeProcessor(__VA_ARGS__))
#define PQresultErrorMessage(...) \
  (::qm::store::Libpq().PQresultErrorMessage(__VA_ARGS__))
#define PQprepare(...) (::qm::store::Libpq().PQprepare(__VA_ARGS__))
#define PQgetisnull(...) (::qm::store::Libpq().PQgetisnull(__VA_ARGS__))
#define PQfreemem(...) (::qm::store::Libpq().PQfreemem(__VA_ARGS__))
#define PQfinish(...) (::qm::store::Libpq().PQfinish(__VA_ARGS__))
#define PQexecPrepared(...) (::qm::store::Libpq().PQexecPrepared(__VA_ARGS__))
#define PQexecParams(...) (::qm::store::Libpq().PQexecParams(__VA_ARGS__))
#define PQconninfoParse(...) (::qm::store::Libpq().PQconninfoParse(__VA_ARGS__))
#define PQconninfoFree(...) (::qm::store::Libpq().PQconninfoFree(__VA_ARGS__))
#define PQconnectdbParams(...) \
  (::qm::store::Libpq().PQconnectdbParams(__VA_ARGS__))
#define PQclear(...) (::qm::store::Libpq().PQclear(__VA_ARGS__))
#undef QM_PQ_FUNCTION

#endif  // QM_STORE_LIBPQ_DL_H_
