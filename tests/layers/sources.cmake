set(BNLAB_TEST_LAYERS_SOURCES
  tests/layers/test_module.cpp
  tests/layers/test_dense_conv.cpp
  tests/layers/test_batch_norm.cpp
  tests/layers/test_bn_fold.cpp
  tests/layers/test_dropout_norms.cpp
  tests/layers/test_instance_norm.cpp
)
