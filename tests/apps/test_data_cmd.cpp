// apps data: `bnlab data info` prints the size, shape and class balance of the tiny MNIST-shaped
// dataset, and `bnlab data show` writes a PNG grid (with its label sidecar).
#include <doctest/doctest.h>

#include "apps_test_util.h"

using namespace apps_test;

TEST_CASE("apps.data: info prints the dataset's size, shape and class balance") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  CliResult r = run_cli("data info --dataset mnist --data-dir " + shell_quote(dir.file("data")));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "mnist/train: 600 images [1, 28, 28], 10 classes"));
  CHECK(contains(r.output, "mean per channel"));
  CHECK(contains(r.output, "class balance"));

  CliResult test =
      run_cli("data info --dataset mnist --split test --data-dir " + shell_quote(dir.file("data")));
  CAPTURE(test.output);
  REQUIRE(test.exit_code == 0);
  CHECK(contains(test.output, "mnist/test: 200 images"));
}

TEST_CASE("apps.data: show writes a PNG grid and its label listing") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string png = dir.file("X.png");
  CliResult r = run_cli("data show --dataset mnist --data-dir " + shell_quote(dir.file("data")) +
                        " --out " + shell_quote(png));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "wrote"));
  REQUIRE(fs::exists(png));
  const std::string bytes = read_text(png);
  CHECK(bytes.size() > 8);
  CHECK(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  CHECK(contains(read_text(png + ".txt"), "64 images"));

  const std::string few = dir.file("few.png");
  CliResult sample = run_cli(
      "data show --dataset mnist --split test --count 9 --random --seed 3 "
      "--data-dir " +
      shell_quote(dir.file("data")) + " --out " + shell_quote(few));
  CAPTURE(sample.output);
  REQUIRE(sample.exit_code == 0);
  CHECK(contains(sample.output, "9 images of mnist/test"));
  CHECK(read_text(few).compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
}
