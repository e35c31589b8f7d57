# Each directory under tests/ lists its own files, so parallel work on core, layers, optim and data does
# not collide in one list.
include(tests/core/sources.cmake)
include(tests/layers/sources.cmake)
include(tests/optim/sources.cmake)
include(tests/data/sources.cmake)
include(tests/train/sources.cmake)
include(tests/apps/sources.cmake)
include(tests/fuzz/sources.cmake)
set(BNLAB_TEST_SOURCES tests/main.cpp ${BNLAB_TEST_CORE_SOURCES} ${BNLAB_TEST_LAYERS_SOURCES}
    ${BNLAB_TEST_OPTIM_SOURCES} ${BNLAB_TEST_DATA_SOURCES} ${BNLAB_TEST_TRAIN_SOURCES} ${BNLAB_TEST_APPS_SOURCES}
    ${BNLAB_TEST_FUZZ_SOURCES})
