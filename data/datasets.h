// The named datasets (mnist, fashion-mnist, cifar10, cifar100, folder:PATH): where their files live
// under a data directory, which files make up each split, their standard normalization, and errors
// that say which file is missing and the command that fetches it. A plain if-chain, no registry.
//
// The data directory (find_data_dir; scripts/fetch_data.sh picks the same one): --data-dir if
// given, else $BNLAB_DATA if set, else ./data if that directory exists (a checkout's data/), else
// the per-user $XDG_DATA_HOME/bnlab, XDG_DATA_HOME defaulting to $HOME/.local/share (XDG Base
// Directory spec, https://specifications.freedesktop.org/basedir-spec/latest/), else ./data.
// Layout (what scripts/fetch_data.sh creates):
//   <dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   <dir>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   <dir>/cifar-10/data_batch_{1..5}.bin, test_batch.bin and/or test_first1000.bin,
//                  batches.meta.txt
//   <dir>/cifar-100/{train,test}.bin, fine_label_names.txt, coarse_label_names.txt
// Splits: mnist and fashion-mnist have "train" (60000) and "test" (10000); cifar10 has "train"
// (batches 1-4), "val" (batch 5), "trainval" (1-5), "test" (test_batch.bin, or the 1000 official
// test images of test_first1000.bin, then named split "test_first1000") and "test_first1000"
// (data/cifar.h); cifar100 has "train" and "test"; "folder:PATH" reads PATH/<split>/<class>/* if
// that exists, else PATH/<class>/* (data/image_folder.h) unless PATH has train/ or test/: PATH is
// then divided into splits, and a split without its directory is an error naming it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace bnlab {

/// A data directory and how it was chosen, for messages.
struct DataDir {
  std::string path;    ///< the directory, as found ("data" for ./data)
  std::string origin;  ///< how it was chosen, e.g. "from $BNLAB_DATA"; "" if not known
};

/// The data directory: `flag` if non-empty ("from --data-dir"); else $BNLAB_DATA if set and
/// non-empty; else "data" if ./data is a directory; else $XDG_DATA_HOME/bnlab if XDG_DATA_HOME is
/// an absolute path (the spec ignores relative ones), else $HOME/.local/share/bnlab if HOME is set
/// and non-empty; else "data". Reads the environment and the working directory on each call.
DataDir find_data_dir(const std::string& flag = "");

/// find_data_dir(flag).path.
std::string resolve_data_dir(const std::string& flag = "");

/// What load_dataset throws when a dataset's files are not there (as opposed to there but
/// corrupt, which is a plain Error): callers that can do without the dataset (bnlab study skips
/// its experiments) catch this one alone.
class DataNotFound : public Error {
 public:
  using Error::Error;
};

/// Loads split `split` of dataset `name` from data_dir. Throws DataNotFound naming the missing file
/// and the command that fetches it, e.g. "mnist: data/mnist/train-images-idx3-ubyte not found (nor
/// .gz); run: bash scripts/fetch_data.sh --data-dir /abs/data mnist (or set BNLAB_DATA /
/// --data-dir to the directory holding mnist/)".
ImageDataset load_dataset(const std::string& name, const std::string& split,
                          const std::string& data_dir);

/// load_dataset from data_dir.path; a "not found" error also names the directory and how it was
/// chosen: "...; data directory /xdg/bnlab (default: ./data not found, so $XDG_DATA_HOME/bnlab);
/// run: ...".
ImageDataset load_dataset(const std::string& name, const std::string& split,
                          const DataDir& data_dir);

/// Per-channel mean/std of the training set in [0, 1] units: mnist 0.1307/0.3081, fashion-mnist
/// 0.2860/0.3530, cifar10 (0.4914, 0.4822, 0.4465)/(0.2470, 0.2435, 0.2616), cifar100
/// (0.5071, 0.4865, 0.4409)/(0.2673, 0.2564, 0.2762). Throws for other names
/// (training_normalization computes theirs).
NormalizeOptions standard_normalization(const std::string& name);

/// standard_normalization(name), or nullopt for a dataset without published constants.
std::optional<NormalizeOptions> find_standard_normalization(const std::string& name);

/// What a run trained on `train` of dataset `name` normalizes with: standard_normalization(name)
/// for the named datasets, else (folder:PATH) the per-channel mean/std of `train`'s pixels
/// (compute_info), as torchvision's constants are of the named training sets.
NormalizeOptions training_normalization(const std::string& name, const ImageDataset& train);

/// The splits load_dataset accepts for `name` (for help texts); throws for an unknown name.
std::vector<std::string> dataset_splits(const std::string& name);

/// The dataset names load_dataset knows, for help texts ("folder:PATH" is listed as is).
std::vector<std::string> dataset_names();

}  // namespace bnlab
