"""Low-level helpers with no dependency on the rest of the package: atomic file writing,
device and precision choice, the one config parser, and the distributed process group.

Every other sub-package may import from here; nothing here imports from them.
"""
