//! Flags and MESH_* environment to typed config, with defaults and validation.
