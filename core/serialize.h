// Checkpoints in the safetensors format, and load_into, the validated copy behind load_state_dict.
//
// Format (https://github.com/huggingface/safetensors, "Format" in its README):
//   bytes [0, 8)        N, the header length, as a little-endian u64
//   bytes [8, 8 + N)    a UTF-8 JSON object ("__metadata__" is optional, strings to strings):
//                         {"__metadata__": {"k": "v"},
//                          "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}
//   bytes [8 + N, EOF)  the data buffer: little-endian, row-major; [begin, end) is relative to its
//                       start, and the tensors' ranges tile it exactly
// Any file we write loads with Python's safetensors.torch.load_file, and any valid safetensors file
// of the supported dtypes loads here.
//
// What we write: the reference writer's bytes (safetensors/src/tensor.rs, prepare and serialize),
// except for the order of the tensors.
//   - Header: compact JSON, "__metadata__" first (omitted when empty), then one entry per tensor
//     with its keys in the order dtype, shape, data_offsets; padded with spaces to a multiple of
//     8 bytes, so the data buffer starts 8-byte aligned.
//   - Order: the reference sorts the tensors by dtype (largest alignment first), then by name, in
//     both the header and the data buffer. We list the header entries in the order given (the
//     model's state-dict order) and lay out the data with the 8-byte dtypes (I64) first, then the
//     4-byte ones (F32), each group in the order given: grouping by size is what keeps every tensor
//     naturally aligned in the file, for zero-copy (mmap) readers. Readers locate tensors only by
//     data_offsets, so both orders are equally valid.
//
// What we load (the whole header is validated against the file before any tensor is allocated):
//   - F32 as is; I64 converted to float, only if every value is exactly representable as a float;
//     F64 rounded to the nearest float (what PyTorch's .float() does), rejecting finite values
//     beyond the float range. Loaded F64 tensors come back as DType::F32. Other dtypes (F16, BF16,
//     I32, ...) are rejected with the dtype named.
//   - Tensors come back in header order. Unknown fields inside a tensor entry are ignored, as the
//     reference does. What the reference rejects is rejected (gaps, overlaps, trailing bytes, a
//     header over 100 MB, ...), and so are duplicate keys, which JSON parsers collapse silently.
// Every error is a bnlab::Error that starts "safetensors: <file>: " and names the offending tensor.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// On-disk element type. In memory every tensor is float32; I64 is for integer buffers such as
/// BatchNorm's num_batches_tracked, which PyTorch stores as int64 and expects back as int64.
enum class DType { F32, I64 };

/// One entry of a state dict or a safetensors file.
struct NamedTensor {
  std::string name;          ///< e.g. "fc.weight"
  Tensor tensor;             ///< the values (float32 in memory)
  DType dtype = DType::F32;  ///< I64: the float values must be integers; they are written as int64
};

/// Free-form string pairs stored under "__metadata__" (e.g. {"format": "pt"}, the epoch).
using Metadata = std::map<std::string, std::string>;

/// The bytes of a safetensors file holding `tensors`. Names must be unique and not "__metadata__";
/// tensors must be defined; I64 tensors must hold integers.
std::string encode_safetensors(const std::vector<NamedTensor>& tensors,
                               const Metadata& metadata = {});

/// encode_safetensors written with write_file_atomic: an interrupted save keeps the old file.
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const Metadata& metadata = {});

/// The content of a safetensors file, as load_safetensors returns it.
struct SafetensorsFile {
  /// in header order, each with its own freshly allocated storage
  std::vector<NamedTensor> tensors;
  Metadata metadata;  ///< the "__metadata__" pairs (empty if none)
};

/// Parses and validates the bytes of a safetensors file; `name_for_errors` (usually the path)
/// starts every error message.
SafetensorsFile decode_safetensors(std::string_view bytes, const std::string& name_for_errors);

/// read_file + decode_safetensors.
SafetensorsFile load_safetensors(const std::string& path);

/// Copies `loaded` into `targets` by name, the core of Module::load_state_dict. Checks first:
///   - with `strict`, every target name must be in `loaded` (all missing names are listed in one
///     message) and every loaded name must be a target (all unexpected names are listed);
///     strict=false, as in PyTorch, skips both (a missing target keeps its value);
///   - shapes must match per name, e.g.
///     "load_state_dict: size mismatch for 1.weight: checkpoint has [10, 100], model has [10, 50]";
///   - a target of DType::I64 is a count (BatchNorm's num_batches_tracked): its loaded values must
///     be non-negative integers in int64 range;
///   - a target named in `non_negative` (BatchNorm's running_var) must get no negative value and
///     no NaN, e.g. "load_state_dict: 1.running_var must not be negative or NaN; checkpoint has
///     -0.5 at index 3";
/// and all problems found are reported together, one line each. Only when there are none is any
/// data copied, so a failed load leaves every target unchanged. Copies data only (no autograd,
/// grads untouched); the loaded entries' dtype fields are ignored, as both sides hold floats.
void load_into(const std::vector<NamedTensor>& loaded, const std::vector<NamedTensor>& targets,
               bool strict, const std::set<std::string>& non_negative = {});

}  // namespace bnlab
