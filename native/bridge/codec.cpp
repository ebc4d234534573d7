#include "bridge.hpp"

namespace winlayer::bridge {

void bind_codec(py::module_& m) {
    (void)m;
}

}  // namespace winlayer::bridge
