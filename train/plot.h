// Plots through gnuplot (Debian's gnuplot-nox, pngcairo terminal): we write the data and a script,
// and gnuplot draws. When gnuplot is missing, the data and the script are still written and the
// result says the exact command that renders them. Public because TrainResult::plots reports each
// run's plots with it.
#pragma once

#include <string>

namespace bnlab {

/// What became of one plot.
struct PlotResult {
  bool rendered = false;  ///< `png` was drawn whole and is in place
  std::string png;        ///< the image gnuplot was asked to write
  std::string script;     ///< the .gp file beside it, which renders it again
  /// What happened, for the user: "plot: <png>", gnuplot missing, or a failed render as
  /// "warning: plot <png> not written: <reason>...".
  std::string message;
};

/// Writes a gnuplot script to `script_path` (terminal and output lines, then `body`) and runs it in
/// the script's directory. The PNG is drawn under a temporary name and put in place (with
/// write_file_atomic, so a symlink at `png_path` is followed) only when it is a complete PNG
/// (gnuplot exits 0 even when its write failed), so a failed or interrupted render never leaves a
/// half-drawn image and an older image stays as it was. A failed render is
/// not an exception, as a missing gnuplot is not: the plot is derived from data already written.
/// `png_path` must be in the script's directory; `width` and `height` are the image's pixels.
PlotResult render_gnuplot(const std::string& script_path, const std::string& body,
                          const std::string& png_path, int width = 1200, int height = 500);

/// Whether a `gnuplot` is on PATH.
bool gnuplot_available();

/// Quotes `s` for a gnuplot script: single quotes, doubled inside; control characters such as a
/// newline, which would end the command, become spaces.
std::string gnuplot_quote(const std::string& s);

}  // namespace bnlab
