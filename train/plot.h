// Plots through gnuplot (Debian's gnuplot-nox, pngcairo terminal): we write the data and a script,
// and gnuplot draws. When gnuplot is missing, the data and the script are still written and the
// result says the exact command that renders them.
#pragma once

#include <string>

namespace bnlab {

struct PlotResult {
  bool rendered = false;
  std::string png;      // the image gnuplot was asked to write
  std::string script;   // the .gp file
  std::string message;  // what happened, for the user
};

// Writes a gnuplot script to `script_path` (terminal and output lines, then `body`) and runs it in
// the script's directory. The PNG is drawn under a temporary name and renamed into place, so a
// failed or interrupted render never leaves a half-drawn image. `png_path` must be in the script's
// directory.
PlotResult render_gnuplot(const std::string& script_path, const std::string& body,
                          const std::string& png_path, int width = 1200, int height = 500);

bool gnuplot_available();

// Quotes a string for a gnuplot script (single quotes, doubled inside).
std::string gnuplot_quote(const std::string& s);

}  // namespace bnlab
