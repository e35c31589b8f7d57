// core/distributed.h and the SyncBN hook of batch_norm_train, in one process: the single-process
// communicator, merge_moments_into against direct two-pass moments, and batch_norm_train with a
// fake reducer that plays a second shard, whose outputs, statistics and gradients must equal the
// full batch's; plus a finite-difference check of the synced backward. The real 2-rank runs are in
// tests/mpi/ (built with BNLAB_MPI only).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/distributed.h"
#include "gradcheck.h"
#include "layers/batch_norm.h"
#include "test_util.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {

// Moments (count, mean, M2) per channel of x [N, C, *], two-pass in double.
std::vector<double> moments_of(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  std::vector<double> m(3 * static_cast<size_t>(C));
  const float* p = x.data();
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0.0, sq = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) sum += p[(n * C + c) * S + s];
    const double mean = sum / static_cast<double>(N * S);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s)
        sq += (p[(n * C + c) * S + s] - mean) * (p[(n * C + c) * S + s] - mean);
    m[3 * c] = static_cast<double>(N * S);
    m[3 * c + 1] = mean;
    m[3 * c + 2] = sq;
  }
  return m;
}

// Samples [begin, begin + count) of x along dim 0, as a new leaf.
Tensor rows(const Tensor& x, int64_t begin, int64_t count) {
  const int64_t per = x.numel() / x.size(0);
  std::vector<float> v(x.data() + begin * per, x.data() + (begin + count) * per);
  Shape shape = x.shape();
  shape[0] = count;
  return Tensor::from(v, shape);
}

// A reducer standing in for one other shard: merges that shard's fixed moments after this one's
// (this shard is rank 0) and adds that shard's fixed backward sums (sum dy, sum dy * xhat).
class OtherShard final : public BatchNormReducer {
 public:
  OtherShard(std::vector<double> moments, std::vector<double> sums)
      : moments_(std::move(moments)), sums_(std::move(sums)) {}
  void merge_moments(double* moments, int64_t channels) override {
    REQUIRE(static_cast<size_t>(3 * channels) == moments_.size());
    merge_moments_into(moments, moments_.data(), channels);
    ++merges;
  }
  void sum(double* values, int64_t n) override {
    REQUIRE(static_cast<size_t>(n) == sums_.size());
    for (int64_t i = 0; i < n; ++i) values[i] += sums_[static_cast<size_t>(i)];
    ++sums;
  }
  int merges = 0, sums = 0;

 private:
  std::vector<double> moments_, sums_;
};

// A reducer for a batch with no other shard: it changes nothing and counts its calls.
class NoOtherShard final : public BatchNormReducer {
 public:
  void merge_moments(double*, int64_t) override { ++merges; }
  void sum(double*, int64_t) override { ++sums; }
  int merges = 0, sums = 0;
};

void check_close(const std::vector<float>& a, const std::vector<float>& b, double eps) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(eps));
}

}  // namespace

TEST_CASE("distributed: the single-process communicator is rank 0 of 1 and leaves data alone") {
  SingleProcess one;
  CHECK(one.rank() == 0);
  CHECK(one.size() == 1);
  float f[2] = {1.5f, -2.0f};
  double d[1] = {3.25};
  one.allreduce_sum(f, 2);
  one.allreduce_sum(d, 1);
  one.broadcast(f, 2, 0);
  one.barrier();
  CHECK(f[0] == 1.5f);
  CHECK(f[1] == -2.0f);
  CHECK(d[0] == 3.25);
  // ctest does not launch bnlab_tests under mpirun, so the process group is this process.
  if (!launched_as_multiple_ranks()) CHECK(world().size() == 1);
}

TEST_CASE("distributed: a launch as several ranks is recognized from the launcher's environment") {
  // Saved and restored: the variables may be set if this suite itself runs under mpirun.
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* n : names) {
    if (const char* v = std::getenv(n)) saved.emplace_back(n, v);
    unsetenv(n);
  }
  CHECK_FALSE(launched_as_multiple_ranks());
  setenv("OMPI_COMM_WORLD_SIZE", "1", 1);  // mpirun -np 1: one process, no MPI needed
  CHECK_FALSE(launched_as_multiple_ranks());
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  CHECK(launched_as_multiple_ranks());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("PMI_SIZE", "4", 1);  // Slurm / MPICH
  CHECK(launched_as_multiple_ranks());
  setenv("PMI_SIZE", "x", 1);  // garbage is not a count
  CHECK_FALSE(launched_as_multiple_ranks());
  unsetenv("PMI_SIZE");
  for (auto& [n, v] : saved) setenv(n.c_str(), v.c_str(), 1);
}

TEST_CASE("distributed: merge_moments_into equals the two-pass moments of the union") {
  Rng rng(3);
  SUBCASE("unequal shards") {
    Tensor x = Tensor::normal({10, 2, 3}, rng, 0.5f, 2.0f);
    std::vector<double> a = moments_of(rows(x, 0, 3)), b = moments_of(rows(x, 3, 7));
    std::vector<double> all = moments_of(x);
    merge_moments_into(a.data(), b.data(), 2);
    for (size_t i = 0; i < all.size(); ++i) CHECK(a[i] == doctest::Approx(all[i]).epsilon(1e-12));
  }
  SUBCASE("a large common offset keeps the variance (no E[x^2] - E[x]^2)") {
    Tensor x = Tensor::normal({64, 1, 4}, rng, 1e4f, 0.1f);
    std::vector<double> a = moments_of(rows(x, 0, 32)), b = moments_of(rows(x, 32, 32));
    std::vector<double> all = moments_of(x);
    merge_moments_into(a.data(), b.data(), 1);
    CHECK(a[2] == doctest::Approx(all[2]).epsilon(1e-9));
  }
  SUBCASE("an empty side is the identity") {
    std::vector<double> a = {0, 0, 0}, b = {4, 1.5, 2.0};
    merge_moments_into(a.data(), b.data(), 1);
    CHECK(a == b);
    std::vector<double> none = {0, 7, 7};
    merge_moments_into(a.data(), none.data(), 1);
    CHECK(a == b);
  }
}

TEST_CASE("ops.norm: batch_norm_train over two shards (fake reducer) equals the full batch") {
  const float eps = 1e-5f;
  Rng rng(21);
  Tensor x_full = Tensor::normal({8, 3, 2, 2}, rng, 0.3f, 1.5f).set_requires_grad();
  Tensor dy = Tensor::uniform({8, 3, 2, 2}, rng, -1.0f, 1.0f);
  Tensor g_full = param({3}, 22, 0.5f, 1.5f), b_full = param({3}, 23);
  BatchNormResult full = batch_norm_train(x_full, g_full, b_full, eps);
  full.y.backward(dy);

  // Shard A = samples 0..4 here; shard B = samples 5..7 lives in the fake reducer.
  const int64_t na = 5, nb = 3, C = 3, S = 4;
  Tensor x_b = rows(x_full, na, nb), dy_b = rows(dy, na, nb);
  std::vector<double> sums_b(2 * C, 0.0);
  {
    std::vector<double> all = moments_of(x_full);
    for (int64_t c = 0; c < C; ++c) {
      const double mean = all[3 * c + 1];
      const double rstd = 1.0 / std::sqrt(all[3 * c + 2] / all[3 * c] + eps);
      for (int64_t n = 0; n < nb; ++n)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = (n * C + c) * S + s;
          sums_b[c] += dy_b.data()[i];
          sums_b[C + c] += dy_b.data()[i] * (x_b.data()[i] - mean) * rstd;
        }
    }
  }
  auto reducer = std::make_shared<OtherShard>(moments_of(x_b), sums_b);
  Tensor x_a = rows(x_full, 0, na).set_requires_grad();
  Tensor g_a = Tensor::from(g_full.to_vector(), {3}).set_requires_grad();
  Tensor b_a = Tensor::from(b_full.to_vector(), {3}).set_requires_grad();
  BatchNormResult a = batch_norm_train(x_a, g_a, b_a, eps, reducer);
  a.y.backward(rows(dy, 0, na));
  CHECK(reducer->merges == 1);
  CHECK(reducer->sums == 1);

  CHECK(a.count == 8 * S);
  CHECK(full.count == 8 * S);
  check_close(a.mean.to_vector(), full.mean.to_vector(), 1e-6);
  check_close(a.var.to_vector(), full.var.to_vector(), 1e-6);
  check_close(a.y.to_vector(), rows(full.y, 0, na).to_vector(), 1e-5);
  check_close(x_a.grad().to_vector(), rows(x_full.grad(), 0, na).to_vector(), 1e-4);
  // dgamma/dbeta stay this shard's sums: with the other shard's they make the full batch's.
  for (int64_t c = 0; c < C; ++c) {
    CHECK(g_a.grad().data()[c] + sums_b[C + c] ==
          doctest::Approx(g_full.grad().data()[c]).epsilon(1e-5));
    CHECK(b_a.grad().data()[c] + sums_b[c] ==
          doctest::Approx(b_full.grad().data()[c]).epsilon(1e-5));
  }
}

TEST_CASE("ops.norm: batch_norm_train with a reducer that changes nothing is bit-equal to none") {
  // Without a reducer batch_norm_train runs each channel's two passes back to back; with one, all
  // first passes, the reducer, then all second passes. The arithmetic per channel is the same, so a
  // reducer that changes nothing gives exactly the same results. The last two shapes are over the
  // OpenMP threshold, so threads split the channels.
  Rng rng(51);
  for (const Shape& shape : {Shape{6, 70}, Shape{4, 3, 5, 5}, Shape{300, 130}, Shape{8, 16, 300}}) {
    CAPTURE(shape);
    const int64_t C = shape[1];
    Tensor x = Tensor::normal(shape, rng, 0.7f, 1.3f), dy = Tensor::normal(shape, rng);
    Tensor g = Tensor::uniform({C}, rng, 0.5f, 1.5f), b = Tensor::normal({C}, rng);
    auto run = [&](const std::shared_ptr<BatchNormReducer>& reducer) {
      Tensor xi = x.clone().set_requires_grad(), gi = g.clone().set_requires_grad();
      Tensor bi = b.clone().set_requires_grad();
      BatchNormResult r = batch_norm_train(xi, gi, bi, 1e-5f, reducer);
      r.y.backward(dy);
      return std::vector<std::vector<float>>{r.y.to_vector(),       r.mean.to_vector(),
                                             r.var.to_vector(),     xi.grad().to_vector(),
                                             gi.grad().to_vector(), bi.grad().to_vector()};
    };
    auto reducer = std::make_shared<NoOtherShard>();
    CHECK(run(reducer) == run(nullptr));
    CHECK(reducer->merges == 1);
    CHECK(reducer->sums == 1);
  }
}

TEST_CASE("ops.norm: batch_norm_train with a reducer passes gradient checks") {
  // f(x, gamma, beta) = BN of x with statistics that also cover a fixed second shard; that shard's
  // outputs are not part of f, so its backward sums are zero.
  Rng rng(31);
  for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 2, 3}}) {
    CAPTURE(shape);
    Shape other = shape;
    other[0] = 3;
    Tensor x_other = Tensor::normal(other, rng, 0.4f, 1.3f);
    auto reducer =
        std::make_shared<OtherShard>(moments_of(x_other), std::vector<double>(2 * 3, 0.0));
    auto bn = [reducer](const std::vector<Tensor>& in) {
      return batch_norm_train(in[0], in[1], in[2], 1e-5f, reducer).y;
    };
    CHECK_GRADIENTS("batch_norm synced", bn,
                    {param(shape, 32), param({3}, 33, 0.5f, 1.5f), param({3}, 34)});
  }
}

TEST_CASE("layers: BatchNorm with a reducer updates running_var with the global count") {
  Rng rng(41);
  Tensor x = Tensor::normal({6, 2, 2, 2}, rng, 1.0f, 2.0f);
  Tensor x_other = Tensor::normal({2, 2, 2, 2}, rng, -1.0f, 1.0f);
  BatchNorm2d bn(BatchNormOptions{.num_features = 2});
  bn.set_reducer(std::make_shared<OtherShard>(moments_of(x_other), std::vector<double>(4, 0.0)));
  bn.forward(x);
  std::vector<double> all = moments_of(x);
  std::vector<double> o = moments_of(x_other);
  merge_moments_into(all.data(), o.data(), 2);
  for (int64_t c = 0; c < 2; ++c) {
    const double count = all[3 * c];
    CHECK(count == 32);
    CHECK(bn.running_mean().data()[c] == doctest::Approx(0.1 * all[3 * c + 1]).epsilon(1e-5));
    CHECK(bn.running_var().data()[c] ==
          doctest::Approx(0.9 + 0.1 * all[3 * c + 2] / (count - 1)).epsilon(1e-5));
  }
}
