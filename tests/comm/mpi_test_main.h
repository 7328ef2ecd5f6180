// main() of the gtest programs that run under mpirun: every rank runs every test, and the program's
// status is the worst rank's, so a failure on any rank fails the job.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include "core/error.h"

namespace alexnet::testing {

// MPI (funneled threads) and this rank's identity for messages; call first in main().
inline void mpi_test_init(int* argc, char*** argv) {
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  set_process_identity(rank, "");
}

// Runs the tests, agrees on the worst result over the ranks, finalises MPI; main() returns it.
inline int mpi_test_run(int* argc, char** argv) {
  ::testing::InitGoogleTest(argc, argv);
  const int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

}  // namespace alexnet::testing
