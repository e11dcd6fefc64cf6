//! The discovery stream client: subscribe on demand, apply, ACK/NACK, snapshot file.
