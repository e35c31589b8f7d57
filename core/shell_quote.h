// Quoting a word for a POSIX shell, for the commands bnlab prints for people to paste (the resume
// command, the fetch hint of a missing dataset) and the ones it runs itself (gnuplot).
#pragma once

#include <string>

namespace bnlab {

/// `s` as one word of a POSIX shell command: unchanged when it is non-empty and made of letters,
/// digits and -_./=,:+@% only, else in single quotes, each ' inside written '\''.
std::string shell_quote(const std::string& s);

}  // namespace bnlab
