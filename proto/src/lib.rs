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

/// Service names within namespaces: a service is named within its namespace, as in
/// Kubernetes. Its mesh-wide key (resource name, registry key) is `name` in the `default`
/// namespace and `name.namespace` elsewhere, so `reviews.shop` and `reviews` (=
/// `reviews.default`) are two services.
pub mod names {
    /// The namespace of a service or workload that names none.
    pub const DEFAULT_NAMESPACE: &str = "default";

    /// The mesh-wide key of service `name` in `namespace` (empty = the default one). A name
    /// that carries its namespace already (`name.ns`) keeps it: `reviews.shop` stays,
    /// `reviews.default` becomes `reviews`.
    pub fn qualified(name: &str, namespace: &str) -> String {
        let (n, ns) = name.split_once('.').unwrap_or((name, namespace));
        if ns.is_empty() || ns == DEFAULT_NAMESPACE {
            n.to_string()
        } else {
            format!("{n}.{ns}")
        }
    }

    /// The short name and namespace of a key.
    pub fn split(key: &str) -> (&str, &str) {
        key.split_once('.').unwrap_or((key, DEFAULT_NAMESPACE))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_name_a_service_within_its_namespace() {
            assert_eq!(qualified("reviews", "shop"), "reviews.shop");
            assert_eq!(qualified("reviews", "default"), "reviews");
            assert_eq!(qualified("reviews", ""), "reviews");
            assert_eq!(qualified("reviews.shop", "other"), "reviews.shop");
            assert_eq!(qualified("reviews.default", "shop"), "reviews");
            assert_eq!(split("reviews.shop"), ("reviews", "shop"));
            assert_eq!(split("reviews"), ("reviews", "default"));
        }
    }
}

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
