//! Domain types of the control plane: validated configuration and registry entries, free of
//! any wire (proto/tonic) type so they can be stored, compared and hashed on their own terms.

mod authz;
mod cluster;
mod endpoint;
mod route;
mod runtime;

pub use authz::{AuthzAction, AuthzPolicy, AuthzRule};
pub use cluster::{
    CircuitBreakers, ClusterPolicy, HashKey, HashOn, HealthCheck, LbPolicy, OutlierDetection,
    Protocol, RetryBudget, TlsMode,
};
pub use endpoint::{Endpoint, EndpointSource, EndpointState, ProxyNode, ServiceDecl};
pub use route::{
    Backend, Fault, HeaderOp, HeaderOpKind, Mirror, PathMatch, RateLimit, Redirect, RetryPolicy,
    Route, RouteMatch, RouteRule, ValueMatch, ValueMatchKind,
};
pub use runtime::{ListenerConfig, Runtime};
