// apps data: `bnlab data info` prints the size, shape and class balance of the tiny MNIST-shaped
// dataset, `bnlab data show` writes a PNG grid (with its label sidecar), and without --data-dir the
// CLI finds the data in the per-user directory from any working directory.
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

// --count took up to 1 000 000, but a grid of more than about 47 500 28x28 images failed in the PNG
// encoder (its sizes are ints) after a canvas of 2.7 GB had been drawn.
TEST_CASE("apps.data: show refuses a count whose grid is too large for a PNG, with the limit") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 48000, 10);
  const std::string png = dir.file("big.png");
  CliResult r = run_cli("data show --dataset mnist --count 48000 --data-dir " +
                        shell_quote(dir.file("data")) + " --out " + shell_quote(png));
  CAPTURE(r.output);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "error: --count 48000: at most 31506 images of 28x28 fit in one PNG"));
  CHECK_FALSE(fs::exists(png));
  // A count past the split's size is no error: the test split's 10 images fit.
  CliResult all = run_cli("data show --dataset mnist --split test --count 1000000 --data-dir " +
                          shell_quote(dir.file("data")) + " --out " + shell_quote(png));
  CAPTURE(all.output);
  CHECK(all.exit_code == 0);
  CHECK(contains(all.output, "10 images of mnist/test"));
}

// A write that fails half-way (here a file size limit, which stops writes at 8 KiB with EFBIG the
// way a full disk stops them with ENOSPC, and binds root too) is an error naming the file and the
// reason; the grid drawn before stays whole and no temporary file is left.
TEST_CASE("apps.data: show reports a failed write and keeps the old grid") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string png = dir.file("grid.png");
  const std::string show = "data show --dataset mnist --data-dir " + shell_quote(dir.file("data")) +
                           " --out " + shell_quote(png);
  REQUIRE(run_cli(show).exit_code == 0);
  const std::string before = read_text(png);
  const std::string listing = read_text(png + ".txt");
  REQUIRE(before.size() > 16384);

  CliResult r = run_shell("trap '' XFSZ; ulimit -f 16; " + shell_quote(BNLAB_CLI_PATH) + " " +
                          show + " --random");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK_FALSE(contains(r.output, "wrote"));
  CHECK(contains(r.output, "cannot write " + png));
  CHECK(contains(r.output, "File too large"));
  CHECK(read_text(png) == before);
  CHECK(read_text(png + ".txt") == listing);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) entries += e.is_regular_file() ? 1 : 0;
  CHECK(entries == 2);  // grid.png and grid.png.txt: no temporary file left behind
}

// An output that cannot be written says why, not only "cannot write".
TEST_CASE("apps.data: show names the reason an output cannot be written") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string show =
      "data show --count 4 --dataset mnist --data-dir " + shell_quote(dir.file("data")) + " --out ";
  fs::create_directories(dir.path / "a_directory");
  CliResult into_directory = run_cli(show + shell_quote(dir.file("a_directory")));
  CAPTURE(into_directory.output);
  CHECK(into_directory.exit_code == 1);
  CHECK(contains(into_directory.output, "Is a directory"));
  CHECK(fs::is_directory(dir.path / "a_directory"));

  CliResult missing_parent = run_cli(show + shell_quote(dir.file("no/such/dir/g.png")));
  CAPTURE(missing_parent.output);
  CHECK(missing_parent.exit_code == 1);
  CHECK(contains(missing_parent.output, "No such file or directory"));

  CliResult empty = run_cli(show + "''");
  CAPTURE(empty.output);
  CHECK(empty.exit_code == 2);
  CHECK(contains(empty.output, "--out must name a file"));
  CHECK_FALSE(contains(empty.output, "wrote"));
}

// Without --data-dir and $BNLAB_DATA, from a directory without ./data, the CLI reads the per-user
// directory $XDG_DATA_HOME/bnlab, and a missing dataset names that directory, why it was chosen and
// the fetch command. The environment is set for the child shell only.
TEST_CASE("apps.data: the default data directory is $XDG_DATA_HOME/bnlab away from a checkout") {
  TempDir dir;
  fs::create_directories(dir.path / "work");
  const std::string xdg = dir.file("xdg");
  const std::string in_work = "cd " + shell_quote(dir.file("work")) +
                              " && env -u BNLAB_DATA XDG_DATA_HOME=" + shell_quote(xdg) + " " +
                              shell_quote(BNLAB_CLI_PATH) + " ";
  CliResult missing = run_shell(in_work + "data info --dataset mnist");
  CAPTURE(missing.output);
  CHECK(missing.exit_code == 1);
  CHECK(contains(
      missing.output,
      "data directory " + xdg + "/bnlab (default: ./data not found, so $XDG_DATA_HOME/bnlab)"));
  CHECK(contains(missing.output, "run: bash scripts/fetch_data.sh --data-dir " + xdg + "/bnlab"));

  write_tiny_mnist(xdg + "/bnlab");
  CliResult found = run_shell(in_work + "data info --dataset mnist");
  CAPTURE(found.output);
  REQUIRE(found.exit_code == 0);
  CHECK(contains(found.output, "mnist/train: 600 images"));

  // ./data in the working directory takes precedence once it exists.
  fs::create_directories(dir.path / "work" / "data");
  CliResult local = run_shell(in_work + "data info --dataset mnist");
  CAPTURE(local.output);
  CHECK(local.exit_code == 1);
  CHECK(contains(local.output, "data directory data (default: ./data exists)"));
}

// --out through a symlink writes the link's target and puts the label listing beside the target;
// the link stays a link.
TEST_CASE("apps.data: show --out through a symlink writes its target and lists labels beside it") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  fs::create_directories(dir.path / "grids");
  const std::string link = dir.file("grid_link.png");
  fs::create_symlink("grids/grid.png", link);
  CliResult r = run_cli("data show --count 4 --dataset mnist --data-dir " +
                        shell_quote(dir.file("data")) + " --out " + shell_quote(link));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::is_symlink(link));
  CHECK(read_text(dir.file("grids/grid.png")).compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  CHECK(contains(read_text(dir.file("grids/grid.png.txt")), "4 images"));
  CHECK_FALSE(fs::exists(link + ".txt"));
  CHECK(contains(r.output, "grid.png.txt)"));
}

// A stream is written into, never replaced, and gets the PNG alone: no "/dev/null.txt", and with
// --out /dev/stdout the note goes to stderr so that stdout carries exactly the PNG a file gets.
// Each stream is first reached through a link in the temporary directory: if the CLI replaced its
// target again, only that link would be lost, and the REQUIREs stop the test before the real
// /dev/null or /dev/stdout is named (as root, the old CLI renamed a PNG over them).
TEST_CASE(
    "apps.data: show --out into /dev/null or /dev/stdout writes into it and replaces nothing") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string show = shell_quote(BNLAB_CLI_PATH) + " data show --count 4 --dataset mnist " +
                           "--data-dir " + shell_quote(dir.file("data")) + " --out ";
  const std::string file = dir.file("file.png");
  REQUIRE(run_shell(show + shell_quote(file)).exit_code == 0);
  const std::string png = read_text(file);

  const std::string null_link = dir.file("null_link.png");
  fs::create_symlink("/dev/null", null_link);
  CliResult via_link = run_shell(show + shell_quote(null_link));
  CAPTURE(via_link.output);
  CHECK(via_link.exit_code == 0);
  REQUIRE(fs::is_symlink(null_link));
  REQUIRE(fs::is_character_file("/dev/null"));
  CHECK(contains(via_link.output, "no label listing"));
  CHECK_FALSE(fs::exists(null_link + ".txt"));

  CliResult null = run_shell(show + "/dev/null");
  CAPTURE(null.output);
  CHECK(null.exit_code == 0);
  CHECK(fs::is_character_file("/dev/null"));

  // stdout a regular file (`> out.png`), through a link to /dev/stdout, then a pipe (`| cat`).
  const std::string stdout_link = dir.file("stdout_link.png");
  fs::create_symlink("/dev/stdout", stdout_link);
  const std::string redirected = dir.file("redirected.png");
  const std::string err = dir.file("err.txt");
  // In braces: run_shell's trailing 2>&1 would otherwise send stderr into the PNG as well.
  CliResult to_file = run_shell("{ " + show + shell_quote(stdout_link) + " > " +
                                shell_quote(redirected) + " 2> " + shell_quote(err) + "; }");
  CAPTURE(to_file.output);
  CHECK(to_file.exit_code == 0);
  REQUIRE(fs::is_symlink(stdout_link));
  REQUIRE(fs::is_symlink("/dev/stdout"));
  CHECK(read_text(redirected) == png);
  CHECK(contains(read_text(err), "wrote " + stdout_link));

  const std::string piped = dir.file("piped.png");
  CliResult to_pipe =
      run_shell(show + "/dev/stdout 2> " + shell_quote(err) + " | cat > " + shell_quote(piped));
  CAPTURE(to_pipe.output);
  CHECK(to_pipe.exit_code == 0);
  CHECK(fs::is_symlink("/dev/stdout"));
  CHECK(read_text(piped) == png);
  CHECK(contains(read_text(err), "no label listing"));
}
