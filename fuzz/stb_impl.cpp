// stb_image and stb_image_resize compiled from their headers for the fuzz build only, so the
// decoders carry the sanitizers' and libFuzzer's instrumentation. These definitions take precedence
// over Debian's libstb (which the library still links) for every call into stb_image. Same header
// version and configuration as libstb (all formats), so the fuzzed decoder is the production one.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
