//! Grammar of `mesh-cli route …`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::spec::{
    self, Backends, FaultAbort, FaultDelay, KeyValue, MatchSpec, MirrorSpec, RetryOn,
};

fn service_name(s: &str) -> Result<String, String> {
    spec::name(s, "service")
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Add or replace one rule in a service's ordered rule list.
    #[command(
        after_help = "Examples:\n  mesh-cli route set reviews --to v1=90,v2=10 --wait\n  mesh-cli route set reviews --match header:x-canary=1 --to v2=100 --rule-name canary\n  mesh-cli route set reviews --match path-prefix=/api --rewrite-prefix /v2 --timeout 2s --retries 3 --retry-on 5xx,reset\n  mesh-cli route set ratings --fault-delay 100ms@10% --fault-abort 503@5%\n\nA rule with --match is placed before the first rule without matches (a catch-all), so it can be reached;\na rule with the same name is replaced in place. `--to` subsets are `version` labels of the service's\nendpoints; `svc:subset=W` sends to another service."
    )]
    Set(Box<RouteSetArgs>),
    /// Show a service's rules.
    #[command(after_help = "Example:\n  mesh-cli route get reviews -o yaml")]
    Get(ServiceArg),
    /// List every service with stored rules.
    #[command(after_help = "Example:\n  mesh-cli route list -o json")]
    List,
    /// Delete a service's rules (or one rule with --rule-name): traffic goes to all endpoints again.
    #[command(
        after_help = "Example:\n  mesh-cli route delete reviews\n  mesh-cli route delete reviews --rule-name canary"
    )]
    Delete {
        #[arg(value_parser = service_name)]
        service: String,
        /// Namespace of the service [default: default].
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Delete only this rule.
        #[arg(long)]
        rule_name: Option<String>,
    },
    /// Apply Gateway API HTTPRoute/GRPCRoute documents (the supported subset).
    #[command(
        after_help = "Example:\n  mesh-cli route apply -f httproute.yaml --wait\n\nSupported: hostnames, rules[].matches (path, headers, queryParams, method), filters\nRequestHeaderModifier, ResponseHeaderModifier, URLRewrite (ReplacePrefixMatch), RequestRedirect,\nRequestMirror, backendRefs (name, weight), timeouts.request. parentRefs are ignored.\nSubsets: a backendRef named `<service>-<version>` where the version starts with `v` and a digit\n(reviews-v2) means subset `v2` of `reviews`; any other name is the whole service.\nThe route's service is the first hostname's first label, else metadata.name."
    )]
    Apply {
        /// File with one or more YAML documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Validate on the control plane without storing.
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
        /// Block until every proxy subscribed to each applied route ACKed it; exit 4 on a NACK or timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits for all routes together.
        #[arg(long, value_name = "DURATION", value_parser = spec::duration, default_value = "30s", requires = "wait")]
        wait_timeout: Duration,
    },
    /// Print a service's rules as an HTTPRoute that `route apply` accepts.
    #[command(after_help = "Example:\n  mesh-cli route export reviews > reviews-route.yaml")]
    Export(ServiceArg),
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    #[arg(value_parser = service_name)]
    pub service: String,
    /// Namespace of the service [default: default].
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct RouteSetArgs {
    /// The service whose traffic the rule steers.
    #[arg(value_parser = service_name)]
    pub service: String,
    /// Namespace of the service [default: default].
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Weighted backends: SUBSET=WEIGHT,… summing to 100 [default: all endpoints].
    #[arg(long, value_name = "SUBSET=W,…", value_parser = spec::backends)]
    pub to: Option<Backends>,
    /// Condition (repeat to AND): path-prefix=/api, path=/x, path-regex=RE, header:k=v, header:k, method=GET, query:k=v.
    #[arg(long = "match", value_name = "COND", value_parser = spec::route_match)]
    pub matches: Vec<MatchSpec>,
    /// Whole-request timeout, like 2s.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub timeout: Option<Duration>,
    /// Retries after the first attempt.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: Option<u32>,
    /// Retry conditions: 5xx, gateway-error, reset, connect-failure, retriable-4xx, a status, grpc:<code>.
    #[arg(long, value_name = "COND,…", value_parser = spec::retry_on, requires = "retries")]
    pub retry_on: Option<RetryOn>,
    /// Timeout of each attempt.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration, requires = "retries")]
    pub per_try_timeout: Option<Duration>,
    /// Set a request header (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = spec::header_kv)]
    pub set_header: Vec<KeyValue>,
    /// Set a response header (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = spec::header_kv)]
    pub set_response_header: Vec<KeyValue>,
    /// Replace the matched path prefix (needs --match path-prefix=…).
    #[arg(long, value_name = "PREFIX")]
    pub rewrite_prefix: Option<String>,
    /// Delay a share of requests: DELAY@PERCENT, like 100ms@10%.
    #[arg(long, value_name = "DELAY@P%", value_parser = spec::fault_delay)]
    pub fault_delay: Option<FaultDelay>,
    /// Answer a share of requests with a status: STATUS@PERCENT, like 503@5%.
    #[arg(long, value_name = "STATUS@P%", value_parser = spec::fault_abort)]
    pub fault_abort: Option<FaultAbort>,
    /// Copy a share of requests to a subset (responses ignored): SUBSET=PERCENT, like v3=10%.
    #[arg(long, value_name = "SUBSET=P%", value_parser = spec::mirror)]
    pub mirror: Option<MirrorSpec>,
    /// Rule name [default: `default` without --match, else the match conditions].
    #[arg(long, value_name = "NAME")]
    pub rule_name: Option<String>,
    /// Validate on the control plane without storing.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// Block until every proxy subscribed to the route ACKed it; exit 4 on a NACK or timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration, default_value = "30s", requires = "wait")]
    pub wait_timeout: Duration,
}
