//! Admin HTTP server: /ready /live /metrics /config_dump /clusters /drain /logging.
