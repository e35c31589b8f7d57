// Image-folder loader on stb_image: a header pass (image_info on each file's bytes: format, JPEG
// tables, sizes, channel counts, unreadable files) decides the dataset shape, and refuses one over
// options.max_total_bytes, before one allocation; then a decode pass fills it (decode_into). Both
// are the code fuzz/ exercises through image_info and decode_image. Reference:
// https://github.com/nothings/stb (stb_image.h, stb_image_resize.h). libstb provides the
// implementations, so no STB_*_IMPLEMENTATION is defined here.
#include "data/image_folder.h"

#include <stb_image.h>
#include <stb_image_resize.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/io.h"

namespace bnlab {

namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

// What a directory entry named like an image is when it is not a file one can read, for the error.
// `status_ec` is what fs::status reported (a link loop, a directory it cannot search).
std::string non_file_kind(const fs::file_status& st, const std::error_code& status_ec) {
  switch (st.type()) {
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::not_found:
      return "a dangling symbolic link";
    default:
      return status_ec ? "unreadable (" + status_ec.message() + ")" : "not a regular file";
  }
}

// A class's image files in torchvision's order (make_dataset: sorted(os.walk(class_dir,
// followlinks=True)), each directory's file names sorted): the class folder and every directory
// below it, symbolic links followed, the directories in path order, each one's images by name. A
// nested folder's images belong to the class, as they do in torchvision; reading only the top level
// dropped them without a word. Unlike os.walk, which skips what it cannot list, an unreadable
// directory is an error, and so is a link back to a directory above it (os.walk follows such a
// cycle until the path is too long, listing the same images again at every level). An entry named
// like an image that is neither a file nor a directory (a FIFO, socket, device or dangling link) is
// refused by name: torchvision lists it and then blocks opening the FIFO or fails at the link.
std::vector<std::string> class_image_files(const fs::path& class_dir) {
  struct Pending {
    fs::path dir;
    std::vector<fs::path> above;  // canonical paths of class_dir .. dir's parent
  };
  std::vector<std::pair<std::string, std::vector<std::string>>> listed;  // directory, its images
  std::vector<Pending> pending{{class_dir, {}}};
  while (!pending.empty()) {
    Pending p = std::move(pending.back());
    pending.pop_back();
    std::error_code ec;
    fs::path canonical = fs::canonical(p.dir, ec);
    BNLAB_CHECK(!ec, "image_folder: cannot resolve ", p.dir.string(), ": ", ec.message());
    for (const fs::path& a : p.above)
      BNLAB_CHECK(a != canonical, "image_folder: ", p.dir.string(), " links back to ", a.string(),
                  ", a folder that contains it (a directory cycle)");
    p.above.push_back(std::move(canonical));
    std::vector<std::string> images;
    fs::directory_iterator it(p.dir, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
      // The entry's type as the listing gave it (no stat per file), links followed.
      const fs::directory_entry& entry = *it;
      std::error_code type_ec;
      if (entry.is_directory(type_ec)) {
        pending.push_back({entry.path(), p.above});
      } else if (is_image_file(entry.path())) {
        if (!entry.is_regular_file(type_ec)) {
          std::error_code status_ec;
          const fs::file_status st = fs::status(entry.path(), status_ec);
          BNLAB_FAIL("image_folder: ", entry.path().string(), " is named like an image but is ",
                     non_file_kind(st, status_ec));
        }
        images.push_back(entry.path().string());
      }
    }
    BNLAB_CHECK(!ec, "image_folder: cannot list ", p.dir.string(), ": ", ec.message());
    std::sort(images.begin(), images.end());
    listed.emplace_back(p.dir.string(), std::move(images));
  }
  std::sort(listed.begin(), listed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> files;
  for (auto& [dir, images] : listed)
    files.insert(files.end(), std::make_move_iterator(images.begin()),
                 std::make_move_iterator(images.end()));
  return files;
}

struct Entry {
  std::string path;
  int64_t label;
  int width, height, comp;
};

const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r != nullptr ? r : "unknown error";
}

// PNG, JPEG or BMP, from the signature (PNG spec 5.2; JPEG SOI marker FF D8 then a marker FF; the
// BMP file header "BM"). stb_image reads more formats (GIF, PSD, TGA, HDR, PIC, PNM) from the
// content whatever the file's name; refusing them keeps their decoders out of reach of untrusted
// folders.
enum class Format { kPng, kJpeg, kBmp };

Format check_format(const uint8_t* head, size_t n, const std::string& name) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const bool png = n >= 8 && std::memcmp(head, kPng, 8) == 0;
  const bool jpeg = n >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff;
  const bool bmp = n >= 2 && head[0] == 'B' && head[1] == 'M';
  if (png) return Format::kPng;
  if (jpeg) return Format::kJpeg;
  if (bmp) return Format::kBmp;
  std::string first;
  for (size_t i = 0; i < std::min<size_t>(n, 4); ++i) first += " " + std::to_string(head[i]);
  BNLAB_FAIL("image_folder: cannot read ", name,
             " (not a PNG, JPEG or BMP file: ", n == 0 ? "empty" : "starts with bytes" + first,
             ")");
}

// stb_image 2.27 (Debian 12's libstb) writes past the end of a 257-entry array when a JPEG DHT
// segment's 16 code-length counts add up to more than 256 (stbi__build_huffman; found by
// fuzz/fuzz_image, docs/fuzzing.md). So every DHT table is checked here first, walking the segments
// as stb reads them: a table is a class/id byte, 16 counts and their symbols, for as long as the
// segment's length lasts (stb reads zeros past the end of the data). Markers can also follow scans
// (progressive JPEGs), so entropy-coded data is stepped over to the next marker.
void check_jpeg_huffman_tables(std::string_view bytes, const std::string& name) {
  auto at = [&](size_t i) -> int { return i < bytes.size() ? static_cast<uint8_t>(bytes[i]) : 0; };
  // Which tables a DHT has defined so far, [class: 0 DC, 1 AC][id 0..3]: stb_image 2.27 mallocs its
  // decoder without zeroing it and does not track this, so a scan naming an undefined table
  // decodes with uninitialised memory (found by fuzzing; under libFuzzer it tripped stb's assertion
  // in stbi__jpeg_huff_decode, stb_image.h:2115).
  bool defined[2][4] = {};
  bool progressive = false;
  size_t i = 2;  // after SOI
  while (i + 1 < bytes.size()) {
    const int marker = at(i + 1);
    if (at(i) != 0xff || marker == 0xff) {  // entropy-coded data, or a fill byte before a marker
      ++i;
      continue;
    }
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2;  // a stuffed 0xff, TEM or RSTn: no length field
      continue;
    }
    if (marker == 0xd9) return;  // EOI
    BNLAB_CHECK(i + 4 <= bytes.size(), "image_folder: cannot read ", name,
                " (truncated JPEG: the file ends at byte ", bytes.size(),
                " inside the header of the segment at byte ", i, ")");
    const int64_t length = at(i + 2) << 8 | at(i + 3);
    BNLAB_CHECK(i + 2 + static_cast<size_t>(length) <= bytes.size(), "image_folder: cannot read ",
                name, " (truncated JPEG: the segment at byte ", i, " claims ", length,
                " bytes, the file has ", bytes.size() - i - 2, " left)");
    if (marker == 0xc2) progressive = true;
    if (marker == 0xc4) {
      int64_t left = length - 2;
      size_t p = i + 4;
      while (left > 0) {
        const int table_class = at(p) >> 4, id = at(p) & 15;
        if (table_class <= 1 && id <= 3) defined[table_class][id] = true;  // else stb refuses it
        int64_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += at(p + k);
        BNLAB_CHECK(codes <= 256, "image_folder: cannot read ", name,
                    " (corrupt JPEG: a Huffman table declares ", codes,
                    " codes, at most 256 are possible)");
        p += 17 + static_cast<size_t>(codes);
        left -= 17 + codes;
      }
    }
    if (marker == 0xda) {
      // SOS: Ns, then (component, DC table << 4 | AC table) per component, then Ss, Se, Ah/Al.
      // Baseline scans use both tables; progressive DC scans (Ss = 0) the DC table on their first
      // pass only (Ah = 0), progressive AC scans the AC table (stb_image's decode_block_prog_*).
      const int components = at(i + 4);
      const size_t after = i + 5 + 2 * static_cast<size_t>(components);
      const int ss = at(after), ah = at(after + 2) >> 4;
      const bool uses_dc = !progressive || (ss == 0 && ah == 0);
      const bool uses_ac = !progressive || ss != 0;
      for (int c = 0; c < components; ++c) {
        const int tables = at(i + 6 + 2 * static_cast<size_t>(c));
        const int dc = tables >> 4, ac = tables & 15;
        if (dc > 3 || ac > 3) continue;  // stb refuses these itself
        BNLAB_CHECK(!(uses_dc && !defined[0][dc]) && !(uses_ac && !defined[1][ac]),
                    "image_folder: cannot read ", name, " (corrupt JPEG: a scan uses ",
                    uses_dc && !defined[0][dc] ? "DC" : "AC", " Huffman table ",
                    uses_dc && !defined[0][dc] ? dc : ac,
                    ", which no DHT segment before it defines)");
      }
    }
    i += 2 + static_cast<size_t>(length);
  }
  // Every JPEG ends with EOI. stb decodes a cut one from zeros it reads past the end, or fails
  // with the reason its PNG probe left behind ("bad png sig").
  BNLAB_FAIL("image_folder: cannot read ", name, " (truncated JPEG: the file ends at byte ",
             bytes.size(), " without an end-of-image marker)");
}

// An uncompressed BMP stores every pixel, so its header's size bounds the file's: stb_image does
// not check, and reads zeros past the end, so a 236-byte file claiming 15466501 x 4 pixels made it
// fill a 185 MB image byte by byte (found by fuzz/fuzz_image as a timeout). Headers:
// BITMAPFILEHEADER (14 bytes), then BITMAPCOREHEADER (size 12: 16-bit width and height, bit count
// at 24) or BITMAPINFOHEADER and its successors (32-bit width and height, bit count at 28,
// compression at 30). Only BI_RGB (0) and BI_BITFIELDS (3) are checked; stb refuses the compressed
// kinds itself.
void check_bmp_length(std::string_view bytes, const std::string& name) {
  auto u = [&](size_t at, int n) {
    uint32_t v = 0;
    for (int k = n - 1; k >= 0; --k)
      v = v << 8 | (at + k < bytes.size() ? static_cast<uint8_t>(bytes[at + k]) : 0u);
    return v;
  };
  if (bytes.size() < 30) return;  // too short for stb_image too; it reports that
  int64_t width = 0, height = 0, bits = 0, compression = 0;
  if (u(14, 4) == 12) {
    width = static_cast<int16_t>(u(18, 2));
    height = static_cast<int16_t>(u(20, 2));
    bits = u(24, 2);
  } else {
    width = static_cast<int32_t>(u(18, 4));
    height = static_cast<int32_t>(u(22, 4));
    bits = u(28, 2);
    compression = u(30, 4);
  }
  if (width <= 0 || height == 0 || bits <= 0 || bits > 32 || compression == 1 || compression == 2)
    return;  // not a size we can bound; stb_image validates (and refuses) these itself
  height = height < 0 ? -height : height;
  const int64_t row = (width * bits + 31) / 32 * 4;  // rows are padded to 4 bytes
  // Size limits first, so the product below cannot overflow (width and height < 2^31, row < 2^34).
  if (width > kMaxImagePixels || height > kMaxImagePixels || width > kMaxImagePixels / height)
    return;  // check_size reports it
  const int64_t need = row * height;
  BNLAB_CHECK(need <= static_cast<int64_t>(bytes.size()), "image_folder: cannot read ", name,
              " (truncated BMP: ", width, "x", height, " pixels at ", bits, " bits need ", need,
              " bytes of pixel data, the file holds ", bytes.size(), " bytes)");
}

// PNG chunks carry their own length (PNG spec 5.3), and stb_image 2.27 grows its buffer to an IDAT
// chunk's claimed length before reading it: a 96-byte file claiming a 1.2 GB IDAT made it allocate
// 1.2 GB (found by fuzz/fuzz_image). So every chunk, up to IEND, must be whole in the file. A file
// cut elsewhere (in a chunk's header or CRC, or before IEND) is refused here too: stb reads zeros
// past the end and reports them as an unknown chunk named by those bytes, "()" or "(IDA)".
void check_png_chunks(std::string_view bytes, const std::string& name) {
  size_t at = 8;  // after the signature
  while (at < bytes.size()) {
    BNLAB_CHECK(at + 8 <= bytes.size(), "image_folder: cannot read ", name,
                " (truncated PNG: the file ends at byte ", bytes.size(),
                " inside the header of the chunk at byte ", at, ")");
    uint32_t length = 0;
    for (size_t k = 0; k < 4; ++k) length = length << 8 | static_cast<uint8_t>(bytes[at + k]);
    const std::string type(bytes.substr(at + 4, 4));
    const size_t left = bytes.size() - (at + 8);
    BNLAB_CHECK(length <= left, "image_folder: cannot read ", name, " (truncated PNG: chunk ", type,
                " at byte ", at, " claims ", length, " bytes, the file has ", left, " left)");
    BNLAB_CHECK(left - length >= 4, "image_folder: cannot read ", name, " (truncated PNG: chunk ",
                type, " at byte ", at, " lacks its 4-byte CRC; the file ends at byte ",
                bytes.size(), ")");
    if (type == "IEND") return;
    at += 12 + static_cast<size_t>(length);  // length, type, data, CRC
  }
  BNLAB_FAIL("image_folder: cannot read ", name, " (truncated PNG: the file ends at byte ",
             bytes.size(), " without an IEND chunk)");
}

void check_size(int64_t width, int64_t height, const std::string& name) {
  // Division, not width * height: the requested size comes from the user and could overflow.
  BNLAB_CHECK(width >= 1 && height >= 1 && width <= kMaxImagePixels / height,
              "image_folder: ", name, " is ", width, "x", height, " pixels, over the limit of ",
              kMaxImagePixels, " pixels (8192x8192; corrupt header?)");
}

// Decodes `bytes` to C interleaved channels and stores C planes of H x W at chw (C * H * W bytes),
// resizing when `resize` (else the image must be W x H). `scratch` holds a resized image between
// calls, so a folder of images costs one buffer.
void decode_into(std::string_view bytes, const std::string& name, int64_t C, int64_t H, int64_t W,
                 bool resize, uint8_t* chw, std::vector<uint8_t>& scratch) {
  ImageInfo info = image_info(bytes, name);
  const std::string without_empty_idat = detail::png_without_empty_idat(bytes);
  const std::string_view stb_bytes = without_empty_idat.empty() ? bytes : without_empty_idat;
  int w = 0, h = 0, comp = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> img(
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(stb_bytes.data()),
                            static_cast<int>(stb_bytes.size()), &w, &h, &comp, static_cast<int>(C)),
      stbi_image_free);
  // What is left for stb to refuse, past image_info's checks, is corrupt (or unsupported) data.
  // stbi_load tries the PNG signature before the JPEG and BMP decoders, and its "bad png sig"
  // stays behind when they fail without a reason of their own: for them it is none.
  if (img == nullptr) {
    std::string reason = stb_reason();
    if (reason == "bad png sig" && static_cast<uint8_t>(bytes[0]) != 0x89) reason = "none given";
    BNLAB_FAIL("image_folder: cannot decode ", name,
               " (corrupt or unsupported image data; stb_image's reason: ", reason, ")");
  }
  BNLAB_CHECK(w == info.width && h == info.height, "image_folder: ", name, " decoded as ", w, "x",
              h, " but its header says ", info.width, "x", info.height);
  BNLAB_CHECK(resize || (h == H && w == W), "image_folder: ", name, " decoded as ", w, "x", h,
              ", expected ", W, "x", H);
  const uint8_t* hwc = img.get();
  if (resize && (h != H || w != W)) {
    scratch.resize(static_cast<size_t>(C * H * W));
    BNLAB_CHECK(stbir_resize_uint8(hwc, w, h, 0, scratch.data(), static_cast<int>(W),
                                   static_cast<int>(H), 0, static_cast<int>(C)) == 1,
                "image_folder: cannot resize ", name, " from ", w, "x", h, " to ", W, "x", H);
    hwc = scratch.data();
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t p = 0; p < H * W; ++p) chw[c * H * W + p] = hwc[p * C + c];
  }
}

}  // namespace

namespace detail {

// stb_image 2.27 reads each IDAT chunk with stbi__getn(s, z->idata + ioff, c.length)
// (stbi__parse_png_file, stb_image.h:5130 in Debian 12's copy) and only allocates z->idata once a
// chunk has data, so a zero-length first IDAT makes stbi__getn call memcpy(NULL, src, 0)
// (stb_image.h:1663; found by fuzz/fuzz_image as a UBSan report). A null pointer is undefined
// behaviour even with a length of zero (C11 7.24.1p2), which an optimizer may act on. A
// zero-length IDAT carries no data -- the image data is the concatenation of the IDAT chunks'
// contents (PNG spec, 11.2.4) -- so stb gets a copy of the bytes without such chunks, and decodes
// exactly what it would have. Returns "" (no copy is made) when there is none: the common case.
// The first chunk is left alone: stb refuses an IDAT there ("first not IHDR") before reading it.
// The walk is check_png_chunks's, which image_info runs first, so every chunk up to IEND fits in
// the file.
std::string png_without_empty_idat(std::string_view bytes) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kPng, 8) != 0) return "";
  auto length_at = [&](size_t at) {
    uint32_t length = 0;
    for (size_t k = 0; k < 4; ++k) length = length << 8 | static_cast<uint8_t>(bytes[at + k]);
    return length;
  };
  auto empty_idat_at = [&](size_t at) {
    return length_at(at) == 0 && bytes.substr(at + 4, 4) == "IDAT";
  };
  std::string out;
  size_t copied = 0;  // bytes before this offset are in out (once out is in use)
  for (size_t at = 8; at + 8 <= bytes.size();) {
    const size_t next = at + 12 + length_at(at);  // length, type, data, CRC
    if (at > 8 && empty_idat_at(at)) {
      if (out.empty()) out.reserve(bytes.size());
      out.append(bytes.substr(copied, at - copied));
      copied = std::min(next, bytes.size());
    }
    if (bytes.substr(at + 4, 4) == "IEND") break;
    at = next;
  }
  if (out.empty()) return "";
  out.append(bytes.substr(copied));
  return out;
}

}  // namespace detail

ImageInfo image_info(std::string_view bytes, const std::string& name_for_errors) {
  const Format format =
      check_format(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name_for_errors);
  if (format == Format::kJpeg) check_jpeg_huffman_tables(bytes, name_for_errors);
  BNLAB_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), "image_folder: ", name_for_errors,
              " is ", bytes.size(), " bytes, too large for stb_image (2 GiB limit)");
  int w = 0, h = 0, comp = 0;
  const bool known = stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                                           static_cast<int>(bytes.size()), &w, &h, &comp) == 1;
  // The chunks after the size, which says more about a file than that it ends early; stbi_info
  // reads a PNG no further than the chunk that gives it (never into IDAT data). A PNG it cannot
  // read may be one cut short, which its reason would not say.
  if (!known && format == Format::kPng) check_png_chunks(bytes, name_for_errors);
  BNLAB_CHECK(known, "image_folder: cannot read ", name_for_errors, " (", stb_reason(), ")");
  check_size(w, h, name_for_errors);
  if (format == Format::kPng) check_png_chunks(bytes, name_for_errors);
  if (format == Format::kBmp) check_bmp_length(bytes, name_for_errors);
  return {w, h, comp};
}

DecodedImage decode_image(std::string_view bytes, const std::string& name_for_errors,
                          int64_t channels, int64_t height, int64_t width) {
  BNLAB_CHECK(channels == 1 || channels == 3, "image_folder: channels must be 1 or 3, got ",
              channels);
  BNLAB_CHECK((height == 0) == (width == 0) && height >= 0 && width >= 0,
              "image_folder: give both height and width (or neither), got ", height, "x", width);
  const bool resize = height > 0;
  if (resize) check_size(width, height, "the requested size");
  ImageInfo info = image_info(bytes, name_for_errors);
  DecodedImage out;
  out.channels = channels;
  out.height = resize ? height : info.height;
  out.width = resize ? width : info.width;
  out.pixels.resize(static_cast<size_t>(out.channels * out.height * out.width));
  std::vector<uint8_t> scratch;
  decode_into(bytes, name_for_errors, out.channels, out.height, out.width, resize,
              out.pixels.data(), scratch);
  return out;
}

namespace {

// `option_hints`: whether an error may suggest an ImageFolderOptions setting. load_image_folder's
// callers can set one; load_dataset's, among them the CLI's users of --dataset folder:PATH, cannot.
ImageDataset load_folder(const std::string& root_str, const ImageFolderOptions& options,
                         bool option_hints) {
  const fs::path root(root_str);
  std::error_code ec;
  // Type none: stat failed other than "not found" (a link loop, a folder it may not search).
  const fs::file_status root_status = fs::status(root, ec);
  BNLAB_CHECK(root_status.type() != fs::file_type::none, "image_folder: cannot access ", root_str,
              ": ", ec.message());
  BNLAB_CHECK(fs::is_directory(root_status), "image_folder: ", root_str,
              " not found or not a directory");
  BNLAB_CHECK(options.channels == 0 || options.channels == 1 || options.channels == 3,
              "image_folder: channels must be 0 (auto), 1 or 3, got ", options.channels);
  BNLAB_CHECK(
      (options.height == 0) == (options.width == 0) && options.height >= 0 && options.width >= 0,
      "image_folder: give both height and width (or neither), got ", options.height, "x",
      options.width);
  if (options.height > 0) check_size(options.width, options.height, "the requested size");
  BNLAB_CHECK(options.max_total_bytes > 0, "image_folder: max_total_bytes must be > 0, got ",
              options.max_total_bytes);

  // Classes: sub-directories sorted by name. The error_code overloads, as in class_image_files:
  // the throwing ones let a bare std::filesystem error out, without the image_folder context. An
  // entry whose type cannot be told (a link loop) is refused: it may be a class folder.
  std::vector<std::string> classes;
  fs::directory_iterator it(root, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    const fs::file_status st = it->status(type_ec);
    BNLAB_CHECK(st.type() != fs::file_type::none, "image_folder: cannot access ",
                it->path().string(), ": ", type_ec.message());
    if (fs::is_directory(st)) classes.push_back(it->path().filename().string());
  }
  BNLAB_CHECK(!ec, "image_folder: cannot list ", root_str, ": ", ec.message());
  std::sort(classes.begin(), classes.end());
  BNLAB_CHECK(!classes.empty(), "image_folder: ", root_str,
              " has no class sub-directories (expected root/<class>/<image>.png|jpg|bmp)");

  // Every class's image files, so an empty class is reported before any image is read. An empty
  // class would be a label no image has: torchvision's ImageFolder raises FileNotFoundError for it
  // unless allow_empty=True, and so do we.
  std::vector<std::vector<std::string>> class_files(classes.size());
  for (size_t k = 0; k < classes.size(); ++k) {
    std::vector<std::string>& files = class_files[k];
    files = class_image_files(root / classes[k]);
    BNLAB_CHECK(!files.empty() || options.allow_empty, "image_folder: class folder ",
                (root / classes[k]).string(),
                " holds no .png/.jpg/.jpeg/.bmp images; every class sub-directory needs at least "
                "one (",
                option_hints ? "remove the folder, or set ImageFolderOptions::allow_empty to keep "
                               "it as a class without images"
                             : "add images to it, or remove it",
                ")");
  }

  // Header pass: every image's size and channel count, without decoding pixels. Each file is read
  // whole, so bounded first: stb_image takes at most INT_MAX bytes (image_info refuses more).
  const auto file_limit = static_cast<size_t>(INT_MAX);
  std::vector<Entry> entries;
  for (size_t k = 0; k < classes.size(); ++k) {
    for (const std::string& f : class_files[k]) {
      // The whole file, not stbi_info on the path: stb parses JPEG tables even for the header, and
      // image_info checks them first (check_jpeg_huffman_tables).
      ImageInfo info = image_info(read_file(f, file_limit), f);
      Entry e{f, static_cast<int64_t>(k), static_cast<int>(info.width),
              static_cast<int>(info.height), static_cast<int>(info.channels)};
      entries.push_back(e);
    }
  }
  BNLAB_CHECK(!entries.empty(), "image_folder: ", root_str,
              " holds no .png/.jpg/.jpeg/.bmp images in its class directories");

  int64_t C = options.channels;
  if (C == 0) {
    bool all_gray =
        std::all_of(entries.begin(), entries.end(), [](const Entry& e) { return e.comp <= 2; });
    C = all_gray ? 1 : 3;
  }
  int64_t H = options.height, W = options.width;
  const bool resize = H > 0;
  if (!resize) {
    H = entries[0].height;
    W = entries[0].width;
    for (const Entry& e : entries) {
      BNLAB_CHECK(e.height == H && e.width == W, "image_folder: ", e.path, " is ", e.width, "x",
                  e.height, " but ", entries[0].path, " is ", W, "x", H,
                  option_hints ? "; give a fixed size (height, width) to resize every image"
                               : "; every image of a folder dataset needs the same size");
    }
  }

  // The decoded dataset's size is known now, before one pixel is decoded: refuse it here rather
  // than let a few small files (a 65 KB PNG can hold 8192 x 8192 pixels) claim gigabytes. Each
  // factor is bounded (C <= 3, H * W <= kMaxImagePixels, fewer entries than files), so the product
  // fits in int64.
  const int64_t CHW = C * H * W;
  const int64_t total = static_cast<int64_t>(entries.size()) * CHW;
  BNLAB_CHECK(total <= options.max_total_bytes, "image_folder: ", root_str, " holds ",
              entries.size(), " images of ", C, "x", H, "x", W, " (C x H x W), ", total,
              " bytes decoded, over the limit of ", options.max_total_bytes, " bytes (",
              option_hints ? "ImageFolderOptions::max_total_bytes: raise it, or give a smaller "
                             "height and width to resize to"
                           : "use fewer or smaller images",
              ")");

  ImageDataset out;
  out.name = printable_name(root.filename().empty() ? root.parent_path().filename().string()
                                                    : root.filename().string());
  out.channels = C;
  out.height = H;
  out.width = W;
  for (const std::string& name : classes) out.class_names.push_back(printable_name(name));
  out.pixels.resize(entries.size() * static_cast<size_t>(CHW));
  out.labels.resize(entries.size());

  // Decode pass: each file's bytes through decode_into (stb converts to C interleaved channels,
  // HWC; we store planes, CHW).
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    decode_into(read_file(e.path, file_limit), e.path, C, H, W, resize,
                out.pixels.data() + i * static_cast<size_t>(CHW), scratch);
    out.labels[i] = e.label;
  }
  return out;
}

}  // namespace

ImageDataset load_image_folder(const std::string& root, const ImageFolderOptions& options) {
  return load_folder(root, options, /*option_hints=*/true);
}

namespace detail {

ImageDataset load_image_folder_without_options(const std::string& root) {
  return load_folder(root, {}, /*option_hints=*/false);
}

}  // namespace detail

}  // namespace bnlab
