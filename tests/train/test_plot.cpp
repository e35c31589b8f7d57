// render_gnuplot against a stand-in gnuplot: an image cut short (gnuplot exits 0 after a failed
// write) is reported and never renamed into place, and a complete one is. gnuplot_quote's output
// stays one string on one line.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/io.h"
#include "test_util.h"
#include "train/plot.h"

namespace fs = std::filesystem;
using bnlab::testing::ScopedEnv;
using bnlab::testing::TempDir;

namespace {

// render_gnuplot of <dir>/curves.png with a stand-in gnuplot that writes `png_escaped`.
bnlab::PlotResult render_with_fake_gnuplot(const TempDir& dir, const char* png_escaped) {
  fs::create_directories(dir.path / "bin");
  bnlab::testing::write_fake_gnuplot(dir.file("bin"), png_escaped);
  const char* old = std::getenv("PATH");
  const std::string path = dir.file("bin") + ":" + (old ? old : "/usr/bin:/bin");
  ScopedEnv scoped("PATH", path.c_str());
  return bnlab::render_gnuplot(dir.file("curves.gp"), "plot x\n", dir.file("curves.png"));
}

}  // namespace

TEST_CASE("train.plot: a PNG gnuplot left incomplete is a warning and keeps the old image") {
  TempDir dir;
  const std::string png = dir.file("curves.png");
  bnlab::write_file_atomic(png, "an older image");

  bnlab::PlotResult r = render_with_fake_gnuplot(dir, bnlab::testing::kPngSignatureEscaped);
  CAPTURE(r.message);
  CHECK_FALSE(r.rendered);
  CHECK(r.message.rfind("warning: plot " + png + " not written: ", 0) == 0);
  CHECK(r.message.find("incomplete PNG (8 bytes") != std::string::npos);
  CHECK(r.message.find("gnuplot curves.gp") != std::string::npos);  // how to render it again
  CHECK(bnlab::read_file(png) == "an older image");
  CHECK_FALSE(fs::exists(dir.path / ".curves.png.tmp"));
  CHECK(fs::exists(dir.path / "curves.gp"));
}

TEST_CASE("train.plot: a complete PNG is renamed into place") {
  TempDir dir;
  const std::string png = dir.file("curves.png");

  bnlab::PlotResult r = render_with_fake_gnuplot(dir, bnlab::testing::kPngFrameEscaped);
  CAPTURE(r.message);
  CHECK(r.rendered);
  CHECK(r.message == "plot: " + png);
  CHECK(fs::file_size(png) == 20);
  CHECK_FALSE(fs::exists(dir.path / ".curves.png.tmp"));
}

// The image is put in place like every other write: a curves.png that is a symlink (to keep plots
// elsewhere) stays one, and its target gets the image.
TEST_CASE("train.plot: a curves.png that is a symlink keeps pointing at its target") {
  TempDir dir;
  fs::create_directories(dir.path / "elsewhere");
  const std::string png = dir.file("curves.png");
  fs::create_symlink("elsewhere/curves.png", png);

  bnlab::PlotResult r = render_with_fake_gnuplot(dir, bnlab::testing::kPngFrameEscaped);
  CAPTURE(r.message);
  CHECK(r.rendered);
  CHECK(fs::is_symlink(png));
  CHECK(fs::file_size(dir.path / "elsewhere" / "curves.png") == 20);
  CHECK_FALSE(fs::exists(dir.path / ".curves.png.tmp"));
}

// A title with a newline (ablate --title) ended the gnuplot command inside the string, and the plot
// failed with a syntax error.
TEST_CASE("train.plot: gnuplot_quote keeps a string on one line") {
  CHECK(bnlab::gnuplot_quote("it's") == "'it''s'");
  CHECK(bnlab::gnuplot_quote("two\nlines\r\tand a tab") == "'two lines  and a tab'");
  CHECK(bnlab::gnuplot_quote("") == "''");
}
