//! Domain model: listeners, routes, clusters, endpoints; read-mostly snapshots swapped atomically.

mod cluster;
pub mod convert;
mod endpoint;
mod handle;
mod limiter;
mod policy;
mod route;
mod snapshot;

use std::sync::Arc;

pub use cluster::{
    CircuitBreakers, Cluster, HashKey, HashOn, HealthCheck, LbPolicy, OutlierDetection, Protocol,
    RetryBudget,
};
pub use convert::ConvertError;
pub use endpoint::{Endpoint, EndpointState, Endpoints};
pub use handle::StateHandle;
pub use limiter::Gcra;
pub use policy::{
    AuthorizationPolicy, AuthzAction, AuthzRule, Listener, Runtime, SourceMatch, TlsMode,
};
pub use route::{
    Fault, HeaderMatch, HeaderOp, Mirror, PathMatch, QueryMatch, RateLimit, Redirect, RetryOn,
    RetryPolicy, Route, RouteMatch, RouteRule, ValueMatch, WeightedBackend,
};
pub use snapshot::{FastHasher, NameMap, ResourceKind, Snapshot};

/// Names (services, labels, subsets) are shared, never copied: cloning is one atomic increment.
pub type Name = Arc<str>;
