// Role discovery and the service-to-worker mapping of an MPMD job.
#include "data_service/job_layout.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.h"

namespace alexnet {

const char* job_role_name(JobRole role) { return role == JobRole::kService ? "data service" : "worker"; }

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  ALEXNET_FAIL(what, " failed: ", std::string(text, static_cast<size_t>(len)));
}

Assignment assign_workers(const std::vector<RankInfo>& ranks) {
  Assignment a;
  for (size_t r = 0; r < ranks.size(); ++r)
    (ranks[r].role == JobRole::kService ? a.services : a.workers).push_back(static_cast<int>(r));
  ALEXNET_CHECK(!a.services.empty(), "the job has no alexnet-data-service rank; start one per node, e.g. "
                "mpirun -np 1 alexnet-data-service --config C : -np W alexnet-worker --config C");
  ALEXNET_CHECK(!a.workers.empty(), "the job has no alexnet-worker rank");
  const int D = static_cast<int>(a.services.size()), W = static_cast<int>(a.workers.size());

  std::map<std::string, std::vector<int>> services_of_host, workers_of_host;  // indices
  for (int s = 0; s < D; ++s) services_of_host[ranks[a.services[s]].host].push_back(s);
  for (int w = 0; w < W; ++w) workers_of_host[ranks[a.workers[w]].host].push_back(w);
  a.services_on_host.resize(D);
  for (int s = 0; s < D; ++s) a.services_on_host[s] = static_cast<int>(services_of_host[ranks[a.services[s]].host].size());

  a.by_node = std::all_of(workers_of_host.begin(), workers_of_host.end(),
                          [&](const auto& hw) { return services_of_host.count(hw.first) > 0; });
  a.service_of_worker.assign(W, -1);
  if (a.by_node) {
    for (const auto& [host, workers] : workers_of_host) {
      const std::vector<int>& services = services_of_host[host];
      const int64_t m = static_cast<int64_t>(workers.size()), s = static_cast<int64_t>(services.size());
      for (int64_t k = 0; k < m; ++k) a.service_of_worker[workers[k]] = services[k * s / m];
    }
  } else {
    for (int w = 0; w < W; ++w) a.service_of_worker[w] = static_cast<int>(static_cast<int64_t>(w) * D / W);
  }
  return a;
}

JobLayout JobLayout::create(JobRole role) {
  JobLayout l;
  l.role_ = role;
  int size = 0;
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &l.world_rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");

  // Each rank contributes its role and host name (fixed-size records, so one Allgather does it).
  constexpr int kHost = 256;
  std::vector<char> mine(kHost + 1, 0), all(static_cast<size_t>(kHost + 1) * size, 0);
  mine[0] = static_cast<char>(role);
  char host[kHost] = {0};
  gethostname(host, kHost - 1);
  std::memcpy(mine.data() + 1, host, kHost);
  check_mpi(MPI_Allgather(mine.data(), kHost + 1, MPI_CHAR, all.data(), kHost + 1, MPI_CHAR, MPI_COMM_WORLD),
            "MPI_Allgather of roles and host names");
  l.ranks_.resize(size);
  for (int r = 0; r < size; ++r) {
    const char* rec = all.data() + static_cast<size_t>(r) * (kHost + 1);
    l.ranks_[r].role = static_cast<JobRole>(rec[0]);
    l.ranks_[r].host = std::string(rec + 1, strnlen(rec + 1, kHost));
  }
  // Every rank computes the same assignment; an error (no services) is raised on every rank alike.
  l.assignment_ = assign_workers(l.ranks_);
  const std::vector<int>& same = role == JobRole::kService ? l.assignment_.services : l.assignment_.workers;
  l.index_ = static_cast<int>(std::find(same.begin(), same.end(), l.world_rank_) - same.begin());

  check_mpi(MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(role), l.world_rank_, &l.role_comm_),
            "MPI_Comm_split by role");
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &l.data_comm_), "MPI_Comm_dup for the data communicator");
  // Errors on the data communicator come back as codes, so check_mpi can name the call.
  check_mpi(MPI_Comm_set_errhandler(l.data_comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  return l;
}

JobLayout::JobLayout(JobLayout&& o) noexcept
    : role_(o.role_), world_rank_(o.world_rank_), index_(o.index_), ranks_(std::move(o.ranks_)),
      assignment_(std::move(o.assignment_)), role_comm_(o.role_comm_), data_comm_(o.data_comm_) {
  o.role_comm_ = MPI_COMM_NULL;
  o.data_comm_ = MPI_COMM_NULL;
}

JobLayout::~JobLayout() {
  int finalized = 1;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (role_comm_ != MPI_COMM_NULL) MPI_Comm_free(&role_comm_);
  if (data_comm_ != MPI_COMM_NULL) MPI_Comm_free(&data_comm_);
}

int JobLayout::service_rank() const {
  ALEXNET_ASSERT(role_ == JobRole::kWorker, "service_rank() on a service");
  return assignment_.services[assignment_.service_of_worker[index_]];
}

std::vector<int> JobLayout::served_workers() const {
  ALEXNET_ASSERT(role_ == JobRole::kService, "served_workers() on a worker");
  std::vector<int> out;
  for (int w = 0; w < num_workers(); ++w)
    if (assignment_.service_of_worker[w] == index_) out.push_back(w);
  return out;
}

int JobLayout::services_on_host() const {
  ALEXNET_ASSERT(role_ == JobRole::kService, "services_on_host() on a worker");
  return assignment_.services_on_host[index_];
}

std::string JobLayout::name_of(int world_rank) const {
  const RankInfo& r = ranks_.at(world_rank);
  const std::vector<int>& same = r.role == JobRole::kService ? assignment_.services : assignment_.workers;
  const auto idx = std::find(same.begin(), same.end(), world_rank) - same.begin();
  return str_cat(job_role_name(r.role), " ", idx, " (rank ", world_rank, ", host ", r.host, ")");
}

std::string JobLayout::describe() const {
  std::string out;
  for (int s = 0; s < num_services(); ++s) {
    out += str_cat(out.empty() ? "" : "; ", name_of(assignment_.services[s]), " serves");
    int served = 0;
    for (int w = 0; w < num_workers(); ++w)
      if (assignment_.service_of_worker[w] == s)
        out += str_cat(served++ ? ", worker " : " worker ", w, " (rank ", assignment_.workers[w], ")");
    if (served == 0) out += " no worker";
  }
  if (!assignment_.by_node) out += "; a node with workers has no service, so workers are spread over all services";
  return out;
}

}  // namespace alexnet
