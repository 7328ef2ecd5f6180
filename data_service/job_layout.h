// Who is who in an MPMD job (`mpirun -np D alexnet-data-service : -np W alexnet-worker`): every rank
// learns the roles and host names of all ranks, the worker communicator, and which service serves
// which workers (by default the services of a node serve that node's workers).
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace alexnet {

enum class JobRole : int { kService = 0, kWorker = 1 };
const char* job_role_name(JobRole role);

struct RankInfo {
  JobRole role = JobRole::kWorker;
  std::string host;
};

// The mapping computed from every rank's role and host (a pure function, the same on every rank).
struct Assignment {
  std::vector<int> services;            // world ranks of the services; service index = position
  std::vector<int> workers;             // world ranks of the workers; worker index = position
  std::vector<int> service_of_worker;   // per worker index: its service's index
  std::vector<int> services_on_host;    // per service index: services on that service's host
  bool by_node = true;                  // false: a node with workers has no service, so workers were
                                        // spread evenly over all services
};
// When every node that runs workers runs at least one service, each node's workers are split evenly
// (contiguous runs in worker order) among that node's services; otherwise worker i goes to service
// floor(i * D / W). Errors: no service or no worker rank in the job.
Assignment assign_workers(const std::vector<RankInfo>& ranks);

// This rank's view of the job. Creating it is collective over MPI_COMM_WORLD; it owns two communicators.
class JobLayout {
 public:
  static JobLayout create(JobRole role);
  JobLayout(JobLayout&& other) noexcept;
  JobLayout& operator=(JobLayout&&) = delete;
  JobLayout(const JobLayout&) = delete;
  ~JobLayout();

  JobRole role() const { return role_; }
  int world_rank() const { return world_rank_; }
  int world_size() const { return static_cast<int>(ranks_.size()); }
  const std::string& host_of(int world_rank) const { return ranks_.at(world_rank).host; }
  const Assignment& assignment() const { return assignment_; }
  int index() const { return index_; }  // among the workers, or among the services
  int num_workers() const { return static_cast<int>(assignment_.workers.size()); }
  int num_services() const { return static_cast<int>(assignment_.services.size()); }
  // Workers only: world rank of the service that feeds this worker.
  int service_rank() const;
  // Services only: the worker indices this service serves (ascending), and services on this host.
  std::vector<int> served_workers() const;
  int services_on_host() const;

  // Workers only (or services only): for the gradient allreduce, rank = worker index.
  MPI_Comm role_comm() const { return role_comm_; }
  // A duplicate of MPI_COMM_WORLD that carries only data-service traffic.
  MPI_Comm data_comm() const { return data_comm_; }

  // "worker 1 (rank 3, host n07)"
  std::string name_of(int world_rank) const;
  // One line per service: which workers it serves.
  std::string describe() const;

 private:
  JobLayout() = default;
  JobRole role_ = JobRole::kWorker;
  int world_rank_ = -1;
  int index_ = -1;
  std::vector<RankInfo> ranks_;
  Assignment assignment_;
  MPI_Comm role_comm_ = MPI_COMM_NULL;
  MPI_Comm data_comm_ = MPI_COMM_NULL;
};

// Checks an MPI return code; the error names the call and MPI's message.
void check_mpi(int rc, const char* what);

}  // namespace alexnet
