#include "train/plot.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"
#include "core/shell_quote.h"

namespace bnlab {

bool gnuplot_available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "''";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += ' ';  // a newline would end the command mid-string (ablate --title $'a\nb')
    } else {
      out += c;
    }
  }
  return out + "'";
}

namespace {

// Why `path` is not a complete PNG ("" when it is): the signature first and the IEND chunk last.
// gnuplot's pngcairo terminal exits 0, often silently, when the image could not be written (a full
// disk, a file size limit) and leaves the truncated file, so its status alone proves nothing.
std::string png_problem(const std::string& path) {
  static const std::string kSignature("\x89PNG\r\n\x1a\n", 8);
  static const std::string kEnd("\0\0\0\0IEND\xae\x42\x60\x82", 12);
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  if (bytes.size() < kSignature.size() + kEnd.size() || bytes.compare(0, 8, kSignature) != 0 ||
      bytes.compare(bytes.size() - kEnd.size(), kEnd.size(), kEnd) != 0) {
    return "gnuplot left an incomplete PNG (" + std::to_string(bytes.size()) +
           " bytes; is the disk full?)";
  }
  return "";
}
}  // namespace

PlotResult render_gnuplot(const std::string& script_path, const std::string& body,
                          const std::string& png_path, int width, int height) {
  namespace fs = std::filesystem;
  PlotResult r;
  r.png = png_path;
  r.script = script_path;
  std::string png_name = fs::path(png_path).filename().string();
  std::string tmp_name = "." + png_name + ".tmp";
  auto script_for = [&](const std::string& output) {
    return "set terminal pngcairo size " + std::to_string(width) + "," + std::to_string(height) +
           " enhanced font 'sans,10'\nset output " + gnuplot_quote(output) + "\n" + body;
  };
  write_file_atomic(script_path, script_for(png_name));
  if (!gnuplot_available()) {
    r.message =
        "gnuplot not found; data and script written. Render with: apt-get install gnuplot-nox && "
        "cd " +
        fs::path(script_path).parent_path().string() + " && gnuplot " +
        fs::path(script_path).filename().string();
    return r;
  }
  fs::path dir = fs::path(script_path).parent_path();
  if (dir.empty()) dir = ".";
  std::string tmp_script =
      (dir / ("." + fs::path(script_path).filename().string() + ".run")).string();
  write_file_atomic(tmp_script, script_for(tmp_name));
  std::string command = "cd " + shell_quote(dir.string()) + " && gnuplot " +
                        shell_quote(fs::path(tmp_script).filename().string()) + " 2>&1";
  std::string output;
  int status = -1;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buf[512];
    while (fgets(buf, sizeof buf, pipe)) output += buf;
    status = pclose(pipe);
  }
  std::error_code ec;
  fs::remove(tmp_script, ec);
  fs::path tmp_png = dir / tmp_name;
  std::string problem;
  if (status != 0) {
    problem = "gnuplot failed";
  } else if (!fs::exists(tmp_png)) {
    problem = "gnuplot drew nothing";
  } else {
    problem = png_problem(tmp_png.string());
  }
  if (problem.empty()) {
    // Put in place by write_file_atomic, not renamed: a curves.png the user made a symlink stays
    // one (its target gets the image), and the image is on disk before it replaces the old one.
    try {
      write_file_atomic(png_path, read_file(tmp_png.string()));
      r.rendered = true;
    } catch (const Error& e) {
      problem = e.what();
    }
  }
  fs::remove(tmp_png, ec);
  while (!output.empty() && output.back() == '\n') output.pop_back();
  r.message = r.rendered ? "plot: " + png_path
                         : "warning: plot " + png_path + " not written: " + problem +
                               (output.empty() ? "" : "; gnuplot said: " + output) +
                               ". Render it again with: cd " + dir.string() + " && gnuplot " +
                               fs::path(script_path).filename().string();
  return r;
}

}  // namespace bnlab
