set(BNLAB_APP_SOURCES
  apps/main.cpp
)
