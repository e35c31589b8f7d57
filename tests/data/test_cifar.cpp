// data/cifar: CIFAR-10 and CIFAR-100 records (labels, R/G/B planes), batches concatenated in order,
// gzip, the CIFAR-10 directory protocol (train 1-4, val 5, the 1000 official test images named as
// such), and malformed files -- truncated, empty, labels out of range, over the dataset size limit
// -- rejected naming the file.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include "core/error.h"
#include "data/cifar.h"
#include "data/datasets.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

TEST_CASE("data.cifar: CIFAR-10 records become labels and R, G, B planes, files concatenated") {
  TempDir dir("cifar");
  write_bytes(dir.file("a.bin"), cifar10_file({3, 7}, 0));
  write_gzip(dir.file("b.bin"), cifar10_file({9}, 5));  // gzip, detected from the bytes
  ImageDataset d = read_cifar_batches({dir.file("a.bin"), dir.file("b.bin")}, CifarLayout::kCifar10,
                                      "c", "train");
  REQUIRE(d.size() == 3);
  CHECK(d.channels == 3);
  CHECK(d.height == 32);
  CHECK(d.width == 32);
  CHECK(d.labels == std::vector<int64_t>{3, 7, 9});
  CHECK(d.class_names[3] == "cat");
  // Record r of a file: pixel (c, p) = (r * 40 + c * 11 + p + salt) % 256, planes in R, G, B order.
  CHECK(d.image(0)[0] == 0);
  CHECK(d.image(0)[1024 + 5] == 16);                               // G plane, p = 5
  CHECK(d.image(1)[2048 + 31 * 32 + 2] == (40 + 22 + 994) % 256);  // B plane, row 31, col 2
  CHECK(d.image(2)[1023] == (1023 + 5) % 256);  // first record of the second (gzipped) file
  check_dataset(d, "test");
}

TEST_CASE("data.cifar: CIFAR-100 fine and coarse labels") {
  TempDir dir("cifar");
  std::vector<uint8_t> f;
  for (int r = 0; r < 2; ++r) {
    f.push_back(static_cast<uint8_t>(19 - r));  // coarse
    f.push_back(static_cast<uint8_t>(99 - r));  // fine
    for (int p = 0; p < 3072; ++p) f.push_back(static_cast<uint8_t>(p % 256));
  }
  write_bytes(dir.file("train.bin"), f);
  ImageDataset fine =
      read_cifar_batches({dir.file("train.bin")}, CifarLayout::kCifar100Fine, "c", "");
  ImageDataset coarse =
      read_cifar_batches({dir.file("train.bin")}, CifarLayout::kCifar100Coarse, "c", "");
  CHECK(fine.labels == std::vector<int64_t>{99, 98});
  CHECK(coarse.labels == std::vector<int64_t>{19, 18});
  CHECK(fine.num_classes() == 100);
  CHECK(coarse.num_classes() == 20);
  CHECK(fine.image(1)[300] == 300 % 256);
  CHECK(load_cifar100(dir.path.string(), "train").size() == 2);
  // A CIFAR-100 file read as CIFAR-10 is caught by its length (3074-byte records) or its labels.
  CHECK_THROWS_WITH_AS(read_cifar_batches({dir.file("train.bin")}, CifarLayout::kCifar10, "c", ""),
                       doctest::Contains("train.bin: file holds 6148 bytes, not a whole number of "
                                         "3073-byte CIFAR-10 records"),
                       Error);

  // Both labels of every record are checked, whichever is kept: a corrupt coarse label is refused
  // when the fine labels are loaded, and the other way round.
  std::vector<uint8_t> bad_coarse = f, bad_fine = f;
  bad_coarse[3074] = 20;  // record 1's coarse label
  bad_fine[1] = 100;      // record 0's fine label
  write_bytes(dir.file("bad_coarse.bin"), bad_coarse);
  write_bytes(dir.file("bad_fine.bin"), bad_fine);
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("bad_coarse.bin")}, CifarLayout::kCifar100Fine, "c", ""),
      doctest::Contains("bad_coarse.bin: record 1 has coarse label 20, but CIFAR-100 coarse labels "
                        "are 0-19"),
      Error);
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("bad_fine.bin")}, CifarLayout::kCifar100Coarse, "c", ""),
      doctest::Contains("bad_fine.bin: record 0 has fine label 100, but CIFAR-100 fine labels are "
                        "0-99"),
      Error);
}

TEST_CASE("data.cifar: truncated, empty and mislabelled files are rejected naming the file") {
  TempDir dir("cifar");
  std::vector<uint8_t> f = cifar10_file({1, 2, 3});
  f.resize(f.size() - 100);
  write_bytes(dir.file("data_batch_1.bin"), f);
  write_gzip(dir.file("data_batch_2.bin"), f);
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("data_batch_1.bin")}, CifarLayout::kCifar10, "cifar10", "train"),
      doctest::Contains("data_batch_1.bin: file holds 9119 bytes, not a whole number of 3073-byte "
                        "CIFAR-10 records (2 records and 2973 bytes left over"),
      Error);
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("data_batch_2.bin")}, CifarLayout::kCifar10, "cifar10", "train"),
      doctest::Contains("data_batch_2.bin: file holds 9119 bytes of data, not a whole number of "
                        "3073-byte CIFAR-10 records"),
      Error);
  write_bytes(dir.file("empty.bin"), {});
  CHECK_THROWS_WITH_AS(read_cifar_batches({dir.file("empty.bin")}, CifarLayout::kCifar10, "c", ""),
                       doctest::Contains("empty.bin: file holds 0 bytes"), Error);
  write_bytes(dir.file("labels.bin"), cifar10_file({1, 2, 10}));
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("labels.bin")}, CifarLayout::kCifar10, "c", ""),
      doctest::Contains("labels.bin: record 2 has label 10, but CIFAR-10 labels are 0-9"), Error);
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("missing.bin")}, CifarLayout::kCifar10, "c", ""),
      doctest::Contains("missing.bin: cannot open"), Error);
}

TEST_CASE("data.cifar: a split over BNLAB_MAX_DATASET_BYTES is refused, plain or gzip") {
  // A CIFAR batch has no header to check, so the limit bounds the data itself: a plain file by its
  // length before anything is allocated, a gzip file as soon as it inflates past the limit (one
  // 512-record chunk at most), the split's earlier batches counted too.
  TempDir dir("cifar");
  write_bytes(dir.file("a.bin"), cifar10_file({1, 2}));    // 6146 bytes
  write_gzip(dir.file("b.bin"), cifar10_file({3, 4}, 7));  // 6146 bytes inflated
  const std::string a = dir.file("a.bin"), b = dir.file("b.bin");
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "10000");
    CHECK(read_cifar_batches({a}, CifarLayout::kCifar10, "c", "").size() == 2);
    CHECK(read_cifar_batches({b}, CifarLayout::kCifar10, "c", "").size() == 2);
    const std::string limit =
        ", over the dataset size limit of 10000 bytes (9.8 KiB, from "
        "BNLAB_MAX_DATASET_BYTES=10000); set BNLAB_MAX_DATASET_BYTES to raise it";
    CHECK_THROWS_WITH_AS(
        read_cifar_batches({a, b}, CifarLayout::kCifar10, "c", ""),
        doctest::Contains((b +
                           ": inflates to at least 6146 bytes of data (12292 with the batches "
                           "before it)" +
                           limit)
                              .c_str()),
        Error);
    CHECK_THROWS_WITH_AS(
        read_cifar_batches({b, a}, CifarLayout::kCifar10, "c", ""),
        doctest::Contains(
            (a + ": file holds 6146 bytes of data (12292 with the batches before it)" + limit)
                .c_str()),
        Error);
  }
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "5000");
    CHECK_THROWS_WITH_AS(
        read_cifar_batches({a}, CifarLayout::kCifar10, "c", ""),
        doctest::Contains((a + ": file holds 6146 bytes of data, over the dataset size limit of "
                               "5000 bytes (4.9 KiB, from BNLAB_MAX_DATASET_BYTES=5000)")
                              .c_str()),
        Error);
  }
  // A gzip bomb of 2000 blank records (6 MB of zeros in a few KB) under a 1 MiB limit: refused
  // after the first chunk of 512 records, not after inflating all of it.
  write_gzip(dir.file("bomb.bin"), std::vector<uint8_t>(size_t{2000} * 3073, 0), "wb9");
  ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "1M");
  CHECK_THROWS_WITH_AS(
      read_cifar_batches({dir.file("bomb.bin")}, CifarLayout::kCifar10, "c", ""),
      doctest::Contains((dir.file("bomb.bin") +
                         ": inflates to at least 1573376 bytes of data, over the dataset size "
                         "limit of 1048576 bytes (1.0 MiB, from BNLAB_MAX_DATASET_BYTES=1M)")
                            .c_str()),
      Error);
}

TEST_CASE("data.cifar: CIFAR-10 directory protocol and names") {
  TempDir dir("cifar");
  fs::path root = dir.path / "cifar-10";
  fs::create_directories(root);
  for (int b = 1; b <= 5; ++b) {
    write_bytes((root / ("data_batch_" + std::to_string(b) + ".bin")).string(),
                cifar10_file({static_cast<uint8_t>(b), static_cast<uint8_t>(b)}, b));
  }
  write_bytes((root / "test_first1000.bin").string(), cifar10_file({0, 0, 0}));
  write_bytes((root / "batches.meta.txt").string(),
              {'a',  '\n', 'b',  '\n', 'c',  '\n', 'd',  '\n', 'e',  '\n', 'f',
               '\n', 'g',  '\n', 'h',  '\n', 'i',  '\n', 'j',  '\r', '\n', '\n'});
  const std::string data_dir = dir.path.string();

  ImageDataset train = load_dataset("cifar10", "train", data_dir);
  CHECK(train.size() == 8);
  CHECK(train.labels == std::vector<int64_t>{1, 1, 2, 2, 3, 3, 4, 4});
  CHECK(train.class_names[9] == "j");
  ImageDataset val = load_dataset("cifar-10", "val", data_dir);
  CHECK(val.labels == std::vector<int64_t>{5, 5});
  CHECK(load_dataset("cifar10", "trainval", data_dir).size() == 10);
  // Without test_batch.bin, "test" is the 1000-image official subset, and says so.
  ImageDataset test = load_dataset("cifar10", "test", data_dir);
  CHECK(test.split == "test_first1000");
  CHECK(test.title() == "cifar10/test_first1000");
  CHECK(test.size() == 3);
  // With the full test batch, "test" is the whole of it.
  write_bytes((root / "test_batch.bin").string(), cifar10_file({6, 6, 6, 6}));
  CHECK(load_dataset("cifar10", "test", data_dir).split == "test");
  CHECK(load_dataset("cifar10", "test", data_dir).size() == 4);

  fs::remove(root / "data_batch_3.bin");
  const std::string missing = (root / "data_batch_3.bin").string() + " not found";
  CHECK_THROWS_WITH_AS(load_dataset("cifar10", "train", data_dir),
                       doctest::Contains(missing.c_str()), Error);
  CHECK_THROWS_WITH_AS(load_dataset("cifar10", "train", data_dir),
                       doctest::Contains("run: bash scripts/fetch_data.sh"), Error);
  CHECK_THROWS_WITH_AS(load_dataset("cifar10", "holdout", data_dir),
                       doctest::Contains("unknown split 'holdout'"), Error);
  CHECK(dataset_splits("cifar10").size() == 5);
}

TEST_CASE("data.cifar: class names with control bytes or bytes outside UTF-8 are kept printable") {
  // batches.meta.txt may hold any bytes; an escape sequence printed by `eval` reached the terminal,
  // and a byte outside UTF-8 made `eval --json` fail (nlohmann's dump refuses it).
  TempDir dir("cifar");
  fs::path root = dir.path / "cifar-10";
  fs::create_directories(root);
  for (int b = 1; b <= 5; ++b)
    write_bytes((root / ("data_batch_" + std::to_string(b) + ".bin")).string(),
                cifar10_file({static_cast<uint8_t>(b)}, b));
  std::string meta = "\x1b[31mred\ncaf\xe9\nna\xc3\xafve\n";
  for (char c = 'd'; c <= 'j'; ++c) meta += std::string(1, c) + "\n";
  write_bytes((root / "batches.meta.txt").string(), std::vector<uint8_t>(meta.begin(), meta.end()));
  ImageDataset train = load_dataset("cifar10", "train", dir.path.string());
  REQUIRE(train.class_names.size() == 10);
  CHECK(train.class_names[0] == "\\x1B[31mred");
  CHECK(train.class_names[1] == "caf\\xE9");
  CHECK(train.class_names[2] == "na\xc3\xafve");  // valid UTF-8 is kept
}

// A FIFO named batches.meta.txt made `bnlab data info --dataset cifar10` wait forever for a
// writer; a directory named data_batch_1.bin was "not found", with a fetch command.
TEST_CASE("data.cifar: a FIFO or directory in place of a data file is refused naming it") {
  TempDir dir("cifar");
  fs::path root = dir.path / "cifar-10";
  fs::create_directories(root / "data_batch_1.bin");
  for (int b = 2; b <= 5; ++b) {
    write_bytes((root / ("data_batch_" + std::to_string(b) + ".bin")).string(),
                cifar10_file({static_cast<uint8_t>(b)}, b));
  }
  const std::string data_dir = dir.path.string();
  const std::string batch = (root / "data_batch_1.bin").string();
  CHECK_THROWS_WITH_AS(
      load_dataset("cifar10", "train", data_dir),
      doctest::Contains(("cifar10: " + batch + " is a directory, expected a data file").c_str()),
      Error);
  CHECK(load_dataset("cifar10", "val", data_dir).size() == 1);

  const std::string meta = (root / "batches.meta.txt").string();
  REQUIRE(::mkfifo(meta.c_str(), 0600) == 0);
  CHECK(refused_in_child([&] { load_dataset("cifar10", "val", data_dir); },
                         meta + ": is a FIFO, expected a text file of class names"));
}

// A batch behind a symlink loop was "not found", with a command to fetch the dataset again.
TEST_CASE("data.cifar: a symlink loop in place of a batch is reported, not called missing") {
  TempDir dir("cifar");
  fs::path root = dir.path / "cifar-10";
  fs::create_directories(root);
  for (int b = 1; b <= 4; ++b) {
    write_bytes((root / ("data_batch_" + std::to_string(b) + ".bin")).string(),
                cifar10_file({static_cast<uint8_t>(b)}, b));
  }
  const std::string batch = (root / "data_batch_5.bin").string();
  fs::create_symlink("data_batch_5.bin", batch);  // itself
  std::string message = "no error";
  try {
    load_dataset("cifar10", "val", dir.path.string());
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK_MESSAGE(message.find(batch + ": cannot access (Too many levels of symbolic links)") !=
                    std::string::npos,
                message);
  CHECK(message.find("not found") == std::string::npos);
  CHECK(message.find("fetch_data.sh") == std::string::npos);
  CHECK(load_dataset("cifar10", "train", dir.path.string()).size() == 4);
}
