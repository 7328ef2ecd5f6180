// The entry of every MPI executable: initialise MPI, name this process in messages (rank, host), run the
// body, and on an error log it and end the whole job with MPI_Abort, so no other rank waits forever.
#pragma once

#include <functional>
#include <string>

namespace alexnet {

// Returns the body's status after MPI_Finalize; an exception from the body is logged as
// "<program>: <message>" and aborts the job with status 1.
int run_mpi_process(const std::string& program, int argc, char** argv,
                    const std::function<int(int, char**)>& body);

}  // namespace alexnet
