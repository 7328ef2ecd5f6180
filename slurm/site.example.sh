# Site settings for slurm/alexnet.sbatch: copy to slurm/site.sh and edit. Sourced by bash before the
# launch; every variable exported here reaches alexnet-launch, which passes NCCL_*, UCX_*, ALEXNET_*,
# PATH, LD_LIBRARY_PATH and OMP_* on to the ranks (Open MPI reads OMPI_MCA_* itself).
# shellcheck shell=bash

# Modules that provide Open MPI 4.1, CUDA, cuDNN, NCCL, HDF5 (names differ per site).
# module purge
# module load gcc/12 openmpi/4.1 cuda/12.4 cudnn nccl hdf5

# Paths: where the build, the config, the dataset and the checkpoints live (shared file systems; every
# node must see the same paths).
export ALEXNET_BIN=${ALEXNET_BIN:-$PWD/build/bin}
export ALEXNET_CONFIG=${ALEXNET_CONFIG:-$PWD/configs/alexnet.yaml}
# export ALEXNET_DATA_ROOT=/scratch/datasets/imagenet
# export ALEXNET_CHECKPOINT_DIR=/scratch/$USER/alexnet/checkpoints

# Ranks: worker ranks per node (each drives parallel.devices_per_rank GPUs); keep
# --ntasks-per-node = WORKERS_PER_NODE + 1 (the node's data service).
export WORKERS_PER_NODE=${WORKERS_PER_NODE:-4}

# Network: Open MPI's TCP transports and out-of-band channel, and NCCL, on the fast interface.
# export OMPI_MCA_btl_tcp_if_include=ib0
# export OMPI_MCA_oob_tcp_if_include=ib0
# export OMPI_MCA_pml=ucx
# export UCX_NET_DEVICES=mlx5_0:1
# export NCCL_SOCKET_IFNAME=ib0
# export NCCL_IB_HCA=mlx5
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

# HDF5 file locking fails on some parallel file systems (Lustre, NFS without locks).
export HDF5_USE_FILE_LOCKING=FALSE

# Requeue limit for checkpoint-and-requeue near the time limit.
export ALEXNET_MAX_REQUEUES=${ALEXNET_MAX_REQUEUES:-50}
