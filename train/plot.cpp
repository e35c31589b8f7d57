#include "train/plot.h"

#include <cstdlib>
#include <filesystem>

#include "core/io.h"

namespace bnlab {

bool gnuplot_available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
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
  if (status == 0 && fs::exists(tmp_png)) {
    fs::rename(tmp_png, png_path, ec);
    r.rendered = !ec;
  }
  fs::remove(tmp_png, ec);
  r.message = r.rendered ? "plot: " + png_path : "gnuplot failed on " + script_path + ": " + output;
  return r;
}

}  // namespace bnlab
