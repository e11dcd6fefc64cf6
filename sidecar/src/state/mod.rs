//! Domain model: listeners, routes, clusters, endpoints; read-mostly snapshots swapped atomically.
