//! Generated protocol types and gRPC stubs shared by every mesh component.

#[allow(clippy::all, clippy::pedantic)]
pub mod types {
    pub mod v1 {
        tonic::include_proto!("mesh.types.v1");
    }
}

#[allow(clippy::all, clippy::pedantic)]
pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("mesh.discovery.v1");
    }
}

#[allow(clippy::all, clippy::pedantic)]
pub mod identity {
    pub mod v1 {
        tonic::include_proto!("mesh.identity.v1");
    }
}

#[allow(clippy::all, clippy::pedantic)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("mesh.admin.v1");
    }
}

pub mod spiffe;

/// Type URLs carried on the discovery stream.
pub mod type_url {
    pub const LISTENER: &str = "mesh.types.v1.Listener";
    pub const ROUTE: &str = "mesh.types.v1.Route";
    pub const CLUSTER: &str = "mesh.types.v1.Cluster";
    pub const ENDPOINTS: &str = "mesh.types.v1.Endpoints";
    pub const AUTHORIZATION_POLICY: &str = "mesh.types.v1.AuthorizationPolicy";
    pub const RUNTIME: &str = "mesh.types.v1.Runtime";

    /// Every type, in make-before-break push order: what a route refers to is pushed before it.
    pub const ALL: [&str; 6] = [
        RUNTIME,
        CLUSTER,
        ENDPOINTS,
        LISTENER,
        AUTHORIZATION_POLICY,
        ROUTE,
    ];
}

/// Wildcard subscription name (allowed for listeners and runtime).
pub const WILDCARD: &str = "*";
