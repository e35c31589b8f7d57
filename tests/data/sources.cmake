set(BNLAB_TEST_DATA_SOURCES
  tests/data/test_idx.cpp
  tests/data/test_cifar.cpp
  tests/data/test_image_folder.cpp
  tests/data/test_transforms.cpp
  tests/data/test_data_loader.cpp
  tests/data/test_preview.cpp
)
