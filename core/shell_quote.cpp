#include "core/shell_quote.h"

#include <cctype>
#include <string_view>

namespace bnlab {

std::string shell_quote(const std::string& s) {
  bool safe = !s.empty();
  for (char c : s) {
    safe &= std::isalnum(static_cast<unsigned char>(c)) != 0 ||
            std::string_view("-_./=,:+@%").find(c) != std::string_view::npos;
  }
  if (safe) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace bnlab
