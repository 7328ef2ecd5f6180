// MPI process entry shared by alexnet-data-service, the worker and the MPI tests and benchmarks.
#include "comm/mpi_process.h"

#include <mpi.h>
#include <unistd.h>

#include <exception>

#include "core/error.h"
#include "core/log.h"

namespace alexnet {

int run_mpi_process(const std::string& program, int argc, char** argv,
                    const std::function<int(int, char**)>& body) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  set_process_identity(rank, host);
  int rc = 0;
  try {
    rc = body(argc, argv);
  } catch (const std::exception& e) {
    // The message names rank, host and file:line; MPI_Abort ends every rank.
    log_error(program, ": ", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
  MPI_Finalize();
  return rc;
}

}  // namespace alexnet
