//! Protocol glue: protocol detection, HTTP (hyper) forwarding, opaque TCP copy.
