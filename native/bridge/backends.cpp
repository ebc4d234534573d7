#include "bridge.hpp"

namespace winlayer::bridge {

void bind_backends(py::module_& m) {
    (void)m;
}

}  // namespace winlayer::bridge
