// Text helpers shared by the run files' writers and readers (trainer.cpp, mechanism.cpp,
// ablation.cpp, study.cpp, mechanism_report.cpp): one number formatted printf-style, one CSV cell
// quoted per RFC 4180, and the reader of bnlab's own CSV files (plain cells, no quoting: the
// numbers and parameter names they hold contain no commas). Internal: not installed.
#pragma once

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io.h"

namespace bnlab::detail {

/// `v` formatted with a printf format taking one double ("%.4f", "%+.3g", ...).
inline std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

/// `s` as one CSV cell: quoted, with quotes doubled, when it holds a comma, a quote or a newline.
inline std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

/// The comma-separated cells of `line`; a trailing comma gives a trailing empty cell.
inline std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

/// make(cells) for every data line of the CSV file `path` (its first line is the header), each of
/// which must have `columns` cells. Throws naming the file and the line when one has another
/// count or make() throws (std::stod on a non-number, ...).
template <typename Row, typename Make>
std::vector<Row> read_csv_rows(const std::string& path, size_t columns, Make make) {
  std::vector<Row> rows;
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> c = split_csv_line(line);
    BNLAB_CHECK(c.size() == columns, path, ": expected ", columns, " columns in line '", line, "'");
    try {
      rows.push_back(make(c));
    } catch (const std::exception&) {
      BNLAB_FAIL(path, ": cannot read line '", line, "'");
    }
  }
  return rows;
}

}  // namespace bnlab::detail
