// Base images for get_base_images, layer GUIDs for name_to_guid, and the image checks of
// process_base_image / process_utility_image.
//
// A base image is a folder `<base images dir>/<folder>/` with `Files/` and `image.json`:
//   {"Name": "servercore", "Version": "10.0.20348.1", "CreatedTime": "2024-01-01T00:00:00Z",
//    "Size": 1234}
// Name and Version are required; CreatedTime defaults to the folder's modification time,
// Size to 0. Folders without image.json are not images and are skipped.
#pragma once

#include <string>

namespace winlayer::portable {

constexpr const char* kImageFile = "image.json";

// HCS's shape: {"Images":[{"Name","Version","Path","Size","CreatedTime"}, ...]}.
std::string list_base_images(const std::string& base_images_dir);

// A name-based UUID (RFC 9562 version 8, SHA-256 of a fixed namespace and the UTF-8
// name), lowercase 8-4-4-4-12. Deterministic: the same name gives the same GUID.
std::string layer_guid(const std::string& name);

// Throw Error::os(ENOENT) naming the first missing path.
void check_base_image(const std::string& layer_path);
void check_utility_image(const std::string& utility_vm_path);

std::string json_quote(const std::string& s);

}  // namespace winlayer::portable
