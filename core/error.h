// bnlab::Error and BNLAB_CHECK: the one way library code reports bad input.
//
// Library code never exits or aborts on a user's mistake; it throws an Error whose message names
// the op, what went wrong, and the shapes involved (in the style of PyTorch's TORCH_CHECK), e.g.
//   "dense: input has 784 features, layer expects 512 (input [64, 784])"
/// @file
/// bnlab::Error and BNLAB_CHECK: the one way library code reports bad input.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnlab {

/// What every bnlab function throws on bad input: the message names the op, what went wrong and
/// the shapes involved, and ends with the throwing file:line.
class Error : public std::runtime_error {
 public:
  /// An error with `message` as its what().
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// Shapes print as "[N, C, H, W]" everywhere: one helper, so messages look alike.
std::string to_string(const std::vector<int64_t>& shape);

namespace detail {

inline void stream_parts(std::ostringstream&) {}

template <typename T, typename... Rest>
void stream_parts(std::ostringstream& os, const T& first, const Rest&... rest) {
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    os << bnlab::to_string(first);
  } else {
    os << first;
  }
  stream_parts(os, rest...);
}

template <typename... Parts>
[[noreturn]] void throw_error(const char* file, int line, const Parts&... parts) {
  std::ostringstream os;
  stream_parts(os, parts...);
  os << " (" << file << ":" << line << ")";
  throw Error(os.str());
}

}  // namespace detail
}  // namespace bnlab

/// BNLAB_CHECK(cond, "op: what went wrong; expected ", a, ", got ", b): throws bnlab::Error if
/// !cond. Parts are streamed; std::vector<int64_t> shapes print as [a, b, c].
#define BNLAB_CHECK(cond, ...)                                                  \
  do {                                                                          \
    if (!(cond)) ::bnlab::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/// BNLAB_FAIL(parts...): throws bnlab::Error with the streamed parts, unconditionally.
#define BNLAB_FAIL(...) ::bnlab::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__)
