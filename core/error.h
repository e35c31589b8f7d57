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
#include <utility>
#include <vector>

namespace bnlab {

/// What every bnlab function throws on bad input: the message names the op, what went wrong and
/// the shapes involved. The throwing source file:line is kept apart, in where(): users read the
/// message; a developer asks for the location (`bnlab --debug`, BNLAB_DEBUG=1, or a debug build).
class Error : public std::runtime_error {
 public:
  /// An error with `message` as its what() and no source location.
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  /// An error with `message` as its what(), thrown at `where` ("file:line").
  Error(const std::string& message, std::string where)
      : std::runtime_error(message), where_(std::move(where)) {}
  /// The throwing source location as "file:line", or "" when unknown.
  const std::string& where() const { return where_; }

 private:
  std::string where_;
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
  throw Error(os.str(), std::string(file) + ":" + std::to_string(line));
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
