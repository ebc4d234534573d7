// Shared pieces of the pybind11 bridge (hcs_bridge.cpp and native/bridge/*.cpp):
// argument conversion and the per-area binders. No layer logic lives here.
#pragma once

#include <pybind11/pybind11.h>

namespace winlayer::bridge {

namespace py = pybind11;

// Raises the Python exception for the C++ exception currently being handled.
void register_error_translator();

}  // namespace winlayer::bridge
