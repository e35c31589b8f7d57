// Named datasets: directory layout, splits, normalization constants, and fetch hints.
// Normalization constants: the per-channel statistics of each training set commonly used with
// PyTorch (e.g. https://github.com/pytorch/examples/blob/main/mnist/main.py for MNIST's
// 0.1307/0.3081).
#include "data/datasets.h"

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/shell_quote.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/preview.h"

namespace bnlab {

namespace {

namespace fs = std::filesystem;

const std::vector<std::string>& mnist_class_names() {
  static const std::vector<std::string> names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return names;
}

const std::vector<std::string>& fashion_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

// Canonical spelling of a dataset name ("cifar-10" -> "cifar10", "fashion" -> "fashion-mnist").
std::string canonical(const std::string& name) {
  if (name == "fashion" || name == "fashion_mnist" || name == "fashionmnist")
    return "fashion-mnist";
  if (name == "cifar-10" || name == "cifar_10") return "cifar10";
  if (name == "cifar-100" || name == "cifar_100") return "cifar100";
  return name;
}

// Runs `load`, turning a "not found" error into DataNotFound with the data directory, how it was
// chosen, and the command that fetches the dataset into it appended.
template <typename Load>
ImageDataset with_fetch_hint(const std::string& name, const DataDir& data_dir,
                             const std::string& subdir, Load load) {
  try {
    return load();
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.find("not found") == std::string::npos) throw;
    if (!data_dir.origin.empty()) {
      msg += "; data directory " + data_dir.path + " (" + data_dir.origin + ")";
    }
    // Absolute, so the command works from the checkout whatever directory bnlab ran in.
    std::error_code ec;
    fs::path absolute = fs::absolute(data_dir.path, ec);
    const std::string target = ec ? data_dir.path : absolute.lexically_normal().string();
    std::string hint =
        "; run: bash scripts/fetch_data.sh --data-dir " + shell_quote(target) + " " + name;
    if (name == "cifar10") hint += " (or add --cifar-from DIR_OR_TARBALL)";
    if (name == "cifar100") {
      hint =
          "; download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and extract its "
          "cifar-100-binary/ contents into " +
          (fs::path(target) / subdir).string();
    }
    hint += " (or set BNLAB_DATA / --data-dir to the directory holding " + subdir + "/)";
    throw DataNotFound(msg + hint, e.where());
  }
}

// The per-user data directory of the XDG Base Directory spec, or "" with `why` saying what was
// missing: $XDG_DATA_HOME/bnlab if XDG_DATA_HOME is absolute (relative values are to be ignored),
// else $HOME/.local/share/bnlab.
std::string xdg_data_dir(std::string& why) {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  const bool xdg_set = xdg != nullptr && xdg[0] != '\0';
  if (xdg_set && fs::path(xdg).is_absolute()) {
    why = "default: ./data not found, so $XDG_DATA_HOME/bnlab";
    return (fs::path(xdg) / "bnlab").string();
  }
  const std::string xdg_state =
      xdg_set ? "$XDG_DATA_HOME is not an absolute path" : "$XDG_DATA_HOME unset";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') {
    why = "default: ./data not found and " + xdg_state + ", so $HOME/.local/share/bnlab";
    return (fs::path(home) / ".local" / "share" / "bnlab").string();
  }
  why = "default: ./data not found, " + xdg_state + " and $HOME unset, so ./data";
  return "";
}

}  // namespace

DataDir find_data_dir(const std::string& flag) {
  if (!flag.empty()) return {flag, "from --data-dir"};
  const char* env = std::getenv("BNLAB_DATA");
  if (env != nullptr && env[0] != '\0') return {env, "from $BNLAB_DATA"};
  std::error_code ec;
  if (fs::is_directory("data", ec)) return {"data", "default: ./data exists"};
  std::string why;
  std::string dir = xdg_data_dir(why);
  return {dir.empty() ? "data" : dir, why};
}

std::string resolve_data_dir(const std::string& flag) { return find_data_dir(flag).path; }

std::vector<std::string> dataset_names() {
  return {"mnist", "fashion-mnist", "cifar10", "cifar100", "folder:PATH"};
}

std::vector<std::string> dataset_splits(const std::string& raw_name) {
  const std::string name = canonical(raw_name);
  if (name == "mnist" || name == "fashion-mnist" || name == "cifar100") return {"train", "test"};
  if (name == "cifar10") return {"train", "val", "trainval", "test", "test_first1000"};
  if (name.rfind("folder:", 0) == 0) return {"train", "val", "test", ""};
  BNLAB_FAIL("dataset: unknown dataset '", raw_name,
             "'; expected mnist, fashion-mnist, cifar10, cifar100 or folder:PATH");
}

ImageDataset load_dataset(const std::string& name, const std::string& split,
                          const std::string& data_dir) {
  return load_dataset(name, split, DataDir{data_dir, ""});
}

ImageDataset load_dataset(const std::string& raw_name, const std::string& split,
                          const DataDir& dir_found) {
  const std::string name = canonical(raw_name);
  const std::string& data_dir = dir_found.path;
  if (name == "mnist") {
    return with_fetch_hint(name, dir_found, "mnist", [&] {
      return load_mnist_like((fs::path(data_dir) / "mnist").string(), split, name,
                             mnist_class_names());
    });
  }
  if (name == "fashion-mnist") {
    return with_fetch_hint(name, dir_found, "fashion-mnist", [&] {
      return load_mnist_like((fs::path(data_dir) / "fashion-mnist").string(), split, name,
                             fashion_class_names());
    });
  }
  if (name == "cifar10") {
    return with_fetch_hint(name, dir_found, "cifar-10", [&] {
      // Also accept the official tarball's directory name extracted straight into the data
      // directory.
      fs::path dir = fs::path(data_dir) / "cifar-10";
      std::error_code ec;
      if (!fs::is_directory(dir, ec) &&
          fs::is_directory(fs::path(data_dir) / "cifar-10-batches-bin", ec)) {
        dir = fs::path(data_dir) / "cifar-10-batches-bin";
      }
      return load_cifar10(dir.string(), split);
    });
  }
  if (name == "cifar100") {
    return with_fetch_hint(name, dir_found, "cifar-100", [&] {
      fs::path dir = fs::path(data_dir) / "cifar-100";
      std::error_code ec;
      if (!fs::is_directory(dir, ec) &&
          fs::is_directory(fs::path(data_dir) / "cifar-100-binary", ec)) {
        dir = fs::path(data_dir) / "cifar-100-binary";
      }
      return load_cifar100(dir.string(), split);
    });
  }
  if (name.rfind("folder:", 0) == 0) {
    fs::path root = name.substr(7);
    std::error_code ec;
    BNLAB_CHECK(fs::is_directory(root, ec), "dataset ", name, ": ", root.string(),
                " is not a directory");
    fs::path dir = root;
    if (!split.empty() && fs::is_directory(root / split, ec)) {
      dir = root / split;
    } else if (!split.empty() &&
               (fs::is_directory(root / "train", ec) || fs::is_directory(root / "test", ec))) {
      // PATH itself serves a split only when PATH is not divided into splits: it would read
      // PATH/train/ as a class folder, and report that class folder's missing images.
      std::string has;
      for (const char* s : {"train", "val", "test"})
        if (fs::is_directory(root / s, ec)) has += std::string(has.empty() ? "" : ", ") + s + "/";
      BNLAB_FAIL("dataset ", name, ": ", (root / split).string(), "/ is missing: ", root.string(),
                 " is divided into splits (it has ", has, "), so the ", split, " split must be ",
                 (root / split).string(), "/<class>/<image>, with the same class folders as ", has,
                 " (or put the class folders in ", root.string(),
                 " itself, one set of images for every split)");
    }
    ImageDataset data = detail::load_image_folder_without_options(dir.string());
    data.split = split;
    return data;
  }
  BNLAB_FAIL("dataset: unknown dataset '", raw_name,
             "'; expected mnist, fashion-mnist, cifar10, cifar100 or folder:PATH");
}

std::optional<NormalizeOptions> find_standard_normalization(const std::string& raw_name) {
  const std::string name = canonical(raw_name);
  if (name == "mnist") return NormalizeOptions{{0.1307f}, {0.3081f}};
  if (name == "fashion-mnist") return NormalizeOptions{{0.2860f}, {0.3530f}};
  if (name == "cifar10")
    return NormalizeOptions{{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  if (name == "cifar100")
    return NormalizeOptions{{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  return std::nullopt;
}

NormalizeOptions standard_normalization(const std::string& raw_name) {
  std::optional<NormalizeOptions> known = find_standard_normalization(raw_name);
  BNLAB_CHECK(known.has_value(), "dataset: no standard normalization for '", raw_name,
              "'; known: mnist, fashion-mnist, cifar10, cifar100 (compute others with "
              "compute_info, or training_normalization)");
  return *known;
}

NormalizeOptions training_normalization(const std::string& name, const ImageDataset& train) {
  if (std::optional<NormalizeOptions> known = find_standard_normalization(name)) return *known;
  const DatasetInfo info = compute_info(train);
  NormalizeOptions norm;
  for (size_t c = 0; c < info.mean.size(); ++c) {
    norm.mean.push_back(static_cast<float>(info.mean[c]));
    // A channel of one constant value has std 0; 1 leaves it centred instead of dividing by 0.
    norm.std.push_back(info.std[c] > 0 ? static_cast<float>(info.std[c]) : 1.0f);
  }
  return norm;
}

}  // namespace bnlab
