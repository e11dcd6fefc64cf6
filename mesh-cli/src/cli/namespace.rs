//! SERVICE arguments resolved in their `-n/--namespace`: the control plane names a service
//! `name` in the default namespace and `name.namespace` elsewhere.

use super::{
    EndpointsArgs, EndpointsCommand, PolicyCommand, RouteCommand, ServiceArg, ServiceCommand,
};

/// A service named within a namespace, as the control plane keys it (`mesh_proto::names`):
/// `-n shop reviews` is `reviews.shop`; a SERVICE written `NAME.NAMESPACE` keeps its own.
fn key(service: &str, namespace: &str) -> String {
    mesh_proto::names::qualified(service, namespace)
}

impl RouteCommand {
    /// The command with its SERVICE resolved in its `--namespace`.
    pub fn qualified(self) -> Self {
        match self {
            RouteCommand::Set(mut a) => {
                a.service = key(&a.service, &a.namespace);
                RouteCommand::Set(a)
            }
            RouteCommand::Get(a) => RouteCommand::Get(a.qualified()),
            RouteCommand::Export(a) => RouteCommand::Export(a.qualified()),
            RouteCommand::Delete {
                service,
                namespace,
                rule_name,
            } => RouteCommand::Delete {
                service: key(&service, &namespace),
                namespace,
                rule_name,
            },
            other => other,
        }
    }
}

impl ServiceArg {
    fn qualified(mut self) -> Self {
        self.service = key(&self.service, &self.namespace);
        self
    }
}

impl PolicyCommand {
    /// The command with its SERVICE resolved in its `--namespace`.
    pub fn qualified(self) -> Self {
        match self {
            PolicyCommand::Set(mut a) => {
                a.service = key(&a.service, &a.namespace);
                PolicyCommand::Set(a)
            }
            PolicyCommand::Get { service, namespace } => PolicyCommand::Get {
                service: key(&service, &namespace),
                namespace,
            },
        }
    }
}

impl EndpointsArgs {
    /// The arguments with SERVICE resolved in `--namespace`.
    pub fn qualified(mut self) -> Self {
        self.service = self.service.map(|s| key(&s, &self.namespace));
        self.action = self.action.map(|a| match a {
            EndpointsCommand::Drain {
                service,
                namespace,
                address,
            } => EndpointsCommand::Drain {
                service: key(&service, &namespace),
                namespace,
                address,
            },
        });
        self
    }
}

impl ServiceCommand {
    /// The command with SERVICE resolved in `--namespace` where it names an existing service.
    pub fn qualified(self) -> Self {
        match self {
            ServiceCommand::Delete { service, namespace } => ServiceCommand::Delete {
                service: key(&service, &namespace),
                namespace,
            },
            other => other,
        }
    }
}
