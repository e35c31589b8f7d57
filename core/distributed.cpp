// Communicator implementations: SingleProcess (always) and MpiWorld (with BNLAB_MPI), plus the
// SyncBN reducer that forwards BatchNorm's two collectives to a Communicator.
#include "core/distributed.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/error.h"

#ifdef BNLAB_HAVE_MPI
#include <mpi.h>
#endif

namespace bnlab {

namespace {

int64_t env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  return end && *end == '\0' ? static_cast<int64_t>(x) : -1;
}

// Forwards BatchNorm's collectives (core/ops.h BatchNormReducer) to a communicator.
class CommReducer final : public BatchNormReducer {
 public:
  explicit CommReducer(Communicator& comm) : comm_(comm) {}
  void merge_moments(double* moments, int64_t channels) override {
    comm_.merge_moments(moments, channels);
  }
  void sum(double* values, int64_t n) override { comm_.allreduce_sum(values, n); }

 private:
  Communicator& comm_;
};

#ifdef BNLAB_HAVE_MPI

// MPI counts are int: larger buffers go in chunks.
constexpr int64_t kMaxChunk = INT_MAX / 4;

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  BNLAB_FAIL("distributed: ", what, " failed: ", std::string(msg, static_cast<size_t>(len)));
}

// MPI user op over (count, mean, M2) triples. Declared non-commutative, so MPI combines in rank
// order: inout = in (lower ranks) merged with inout (higher ranks).
void merge_moments_op(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const double*>(in);
  auto* b = static_cast<double*>(inout);
  for (int i = 0; i < *len; ++i) {
    double t[3] = {a[3 * i], a[3 * i + 1], a[3 * i + 2]};
    merge_moments_into(t, b + 3 * i, 1);
    std::memcpy(b + 3 * i, t, sizeof t);
  }
}

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // FUNNELED: only the main thread calls MPI (the data loader's worker and OpenMP never do).
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
      owns_init_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as codes so they become bnlab errors with the call named, not a bare abort.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Type_contiguous(3, MPI_DOUBLE, &triple_);
    MPI_Type_commit(&triple_);
    MPI_Op_create(&merge_moments_op, /*commute=*/0, &merge_op_);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    library_ = std::string(version, static_cast<size_t>(len));
    library_ = library_.substr(0, library_.find_first_of(",\n"));
  }
  ~MpiWorld() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Op_free(&merge_op_);
    MPI_Type_free(&triple_);
    if (owns_init_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(float* data, int64_t n) override { allreduce(data, n, MPI_FLOAT); }
  void allreduce_sum(double* data, int64_t n) override { allreduce(data, n, MPI_DOUBLE); }
  void broadcast(float* data, int64_t n, int root) override { bcast(data, n, MPI_FLOAT, root); }
  void broadcast(double* data, int64_t n, int root) override { bcast(data, n, MPI_DOUBLE, root); }
  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  void merge_moments(double* moments, int64_t channels) override {
    BNLAB_CHECK(channels >= 0 && channels <= kMaxChunk, "distributed: merge_moments of ", channels,
                " channels");
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, moments, static_cast<int>(channels), triple_, merge_op_,
                            MPI_COMM_WORLD),
              "MPI_Allreduce (SyncBN statistics)");
  }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]]
  }
  std::string describe() const override {
    return "MPI (" + library_ + "), " + std::to_string(size_) + " ranks";
  }

 private:
  template <typename T>
  void allreduce(T* data, int64_t n, MPI_Datatype type) {
    for (int64_t off = 0; off < n; off += kMaxChunk) {
      int count = static_cast<int>(std::min(kMaxChunk, n - off));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + off, count, type, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
  }
  template <typename T>
  void bcast(T* data, int64_t n, MPI_Datatype type, int root) {
    for (int64_t off = 0; off < n; off += kMaxChunk) {
      int count = static_cast<int>(std::min(kMaxChunk, n - off));
      check_mpi(MPI_Bcast(data + off, count, type, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  int rank_ = 0, size_ = 1;
  bool owns_init_ = false;
  MPI_Datatype triple_;
  MPI_Op merge_op_;
  std::string library_;
};

#endif  // BNLAB_HAVE_MPI

std::once_flag world_once;
std::unique_ptr<Communicator> world_instance;

}  // namespace

void SingleProcess::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::exit(code);
}

bool mpi_built() {
#ifdef BNLAB_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool launched_as_multiple_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"})
    if (env_int(name) > 1) return true;
  return false;
}

Communicator& world() {
  std::call_once(world_once, [] {
    if (launched_as_multiple_ranks()) {
#ifdef BNLAB_HAVE_MPI
      world_instance = std::make_unique<MpiWorld>();
      if (world_instance->size() > 1) return;
      world_instance.reset();  // a launcher of one: MPI is not needed
#else
      BNLAB_FAIL("distributed: this process was launched as one of several ranks (mpirun), but ",
                 "bnlab was built without MPI; reconfigure with -DBNLAB_MPI=ON (needs ",
                 "libopenmpi-dev) or run without mpirun");
#endif
    }
    world_instance = std::make_unique<SingleProcess>();
  });
  BNLAB_CHECK(world_instance != nullptr,
              "distributed: the process group could not be created (see the first error)");
  return *world_instance;
}

void abort_job_if_distributed(int code) {
  if (world_instance && world_instance->size() > 1) world_instance->abort(code);
}

std::shared_ptr<BatchNormReducer> make_batch_norm_reducer(Communicator& comm) {
  return std::make_shared<CommReducer>(comm);
}

}  // namespace bnlab
