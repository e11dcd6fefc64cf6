//! Load balancers over an endpoint set: P2C/PeakEWMA, round robin, weighted round robin, ring hash.
