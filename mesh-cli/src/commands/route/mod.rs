//! `mesh-cli route …`: set/get/list/delete against the admin API, plus Gateway API apply/export.

mod export;
mod gateway;
mod gateway_filter;
mod gateway_yaml;
mod rule;
pub mod show;
mod wait;

use std::path::Path;
use std::time::Instant;

use mesh_proto::admin::v1::{
    DeleteRouteRuleRequest, ListRequest, RouteEntry, ServiceRef, SetRouteRequest,
    SetRouteRuleRequest,
};
use serde::Serialize;
use tonic::Code;

use crate::cli::{Global, RouteCommand, RouteSetArgs};
use crate::client::{self, Admin};
use crate::error::{CliError, Result};
use crate::output::print_structured;

pub async fn run(global: &Global, cmd: RouteCommand) -> Result<()> {
    match cmd {
        RouteCommand::Set(args) => set(global, &args).await,
        RouteCommand::Get(s) => {
            let mut admin = client::connect(global).await?;
            let entry = get(&mut admin, &s.service).await?.ok_or_else(|| {
                CliError::usage(format!(
                    "service {:?} has no route (set one with `mesh-cli route set {}`)",
                    s.service, s.service
                ))
            })?;
            print_routes(global, vec![entry], false)
        }
        RouteCommand::List => {
            let mut admin = client::connect(global).await?;
            let resp = admin.client.list_routes(ListRequest {}).await;
            let mut routes = resp
                .map_err(|s| admin.error("listing routes", s))?
                .into_inner()
                .routes;
            routes.sort_by(|a, b| service_of(a).cmp(service_of(b)));
            print_routes(global, routes, true)
        }
        RouteCommand::Delete {
            service, rule_name, ..
        } => delete(global, &service, rule_name.as_deref()).await,
        RouteCommand::Apply {
            file,
            dry_run,
            wait,
            wait_timeout,
        } => {
            let wait = wait.then_some(wait_timeout);
            apply(global, &file, dry_run, wait).await
        }
        RouteCommand::Export(s) => {
            let mut admin = client::connect(global).await?;
            let entry = get(&mut admin, &s.service).await?.ok_or_else(|| {
                CliError::usage(format!("service {:?} has no route to export", s.service))
            })?;
            let route = entry.route.unwrap_or_default();
            let doc = export::export(&route).map_err(CliError::usage)?;
            print!(
                "{}",
                serde_norway::to_string(&doc)
                    .map_err(|e| CliError::server(format!("cannot encode YAML: {e}")))?
            );
            Ok(())
        }
    }
}

/// What `route set -o json` prints.
#[derive(Serialize)]
struct SetResult<'a> {
    service: &'a str,
    rule: &'a str,
    version: &'a str,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    converged_proxies: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    convergence_ms: Option<u128>,
}

async fn set(global: &Global, args: &RouteSetArgs) -> Result<()> {
    // Everything checkable locally is checked before the first call.
    let rule = rule::build(args)?;
    let rule_name = rule.name.clone();
    let mut admin = client::connect(global).await?;
    let before = if args.wait {
        wait::baseline(&mut admin).await?
    } else {
        Default::default()
    };
    let started = Instant::now();
    // The control plane merges the rule into the stored route under its lock: two operators
    // setting different rules at once both keep theirs.
    let resp = admin
        .client
        .set_route_rule(SetRouteRuleRequest {
            service: args.service.clone(),
            rule: Some(rule),
            dry_run: args.dry_run,
        })
        .await;
    let version = resp
        .map_err(|s| admin.error(&format!("route {}", args.service), s))?
        .into_inner()
        .version;
    let converged = if args.wait {
        Some(
            wait::until_acked(
                &mut admin,
                &args.service,
                &version,
                &before,
                started,
                args.wait_timeout,
            )
            .await?,
        )
    } else {
        None
    };
    let out = SetResult {
        service: &args.service,
        rule: &rule_name,
        version: &version,
        dry_run: args.dry_run,
        converged_proxies: converged.as_ref().map(|c| c.proxies),
        convergence_ms: converged.as_ref().map(|c| c.elapsed.as_millis()),
    };
    if print_structured(global.output, &out)? {
        return Ok(());
    }
    let verb = if args.dry_run {
        "validated (dry run, nothing stored)"
    } else {
        "set"
    };
    println!(
        "route {} rule {rule_name:?} {verb}: version {}",
        args.service,
        show::short(&version)
    );
    match converged {
        Some(c) if c.proxies == 0 => println!(
            "no proxy subscribes to route {} yet: nothing to wait for",
            args.service
        ),
        Some(c) => println!(
            "ACKed by {} prox{} in {:.3}s",
            c.proxies,
            if c.proxies == 1 { "y" } else { "ies" },
            c.elapsed.as_secs_f64()
        ),
        None => {}
    }
    Ok(())
}

/// The stored route, or None when the service has none.
async fn get(admin: &mut Admin, service: &str) -> Result<Option<RouteEntry>> {
    match admin
        .client
        .get_route(ServiceRef {
            service: service.to_string(),
        })
        .await
    {
        Ok(r) => {
            Ok(Some(r.into_inner())
                .filter(|e| e.route.as_ref().is_some_and(|r| !r.rules.is_empty())))
        }
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(admin.error(&format!("reading route {service}"), s)),
    }
}

async fn delete(global: &Global, service: &str, rule_name: Option<&str>) -> Result<()> {
    let mut admin = client::connect(global).await?;
    let Some(name) = rule_name else {
        let resp = admin
            .client
            .delete_route(ServiceRef {
                service: service.to_string(),
            })
            .await;
        let existed = resp
            .map_err(|s| admin.error(&format!("deleting route {service}"), s))?
            .into_inner()
            .existed;
        if !existed {
            return Err(CliError::usage(format!(
                "service {service:?} has no route to delete (see `mesh-cli route list`)"
            )));
        }
        println!("route {service} deleted: traffic goes to all of its endpoints");
        return Ok(());
    };
    let resp = admin
        .client
        .delete_route_rule(DeleteRouteRuleRequest {
            service: service.to_string(),
            rule: name.to_string(),
        })
        .await;
    match resp {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound => {
            return Err(CliError::usage(format!(
                "route {service} has no rule named {name:?} (see `mesh-cli route get {service}`)"
            )));
        }
        Err(s) => return Err(admin.error(&format!("route {service}"), s)),
    }
    println!("route {service} rule {name:?} deleted");
    Ok(())
}

/// Converts every document first, then validates all on the server (dry run), then stores: a bad
/// document leaves nothing half-applied. With `wait` (its timeout), waits for every stored
/// route's subscribers to ACK it, as `route set --wait` does.
async fn apply(
    global: &Global,
    file: &Path,
    dry_run: bool,
    wait: Option<std::time::Duration>,
) -> Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::usage(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let routes =
        gateway::parse(&text).map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
    if routes.is_empty() {
        return Err(CliError::usage(format!(
            "{}: no HTTPRoute or GRPCRoute documents",
            file.display()
        )));
    }
    let mut admin = client::connect(global).await?;
    for r in &routes {
        let req = SetRouteRequest {
            route: Some(r.clone()),
            dry_run: true,
            expected_version: String::new(),
        };
        let resp = admin.client.set_route(req).await;
        resp.map_err(|s| admin.error(&format!("route {}", r.service), s))?;
    }
    let before = match wait {
        Some(_) => wait::baseline(&mut admin).await?,
        None => Default::default(),
    };
    let started = Instant::now();
    let mut stored = Vec::new();
    for r in routes {
        let service = r.service.clone();
        let version = if dry_run {
            "-".to_string()
        } else {
            let resp = admin
                .client
                .set_route(SetRouteRequest {
                    route: Some(r),
                    dry_run: false,
                    expected_version: String::new(),
                })
                .await;
            resp.map_err(|s| admin.error(&format!("route {service}"), s))?
                .into_inner()
                .version
        };
        let verb = if dry_run {
            "validated (dry run)"
        } else {
            "applied"
        };
        println!("route {service} {verb}: version {}", show::short(&version));
        stored.push((service, version));
    }
    let Some(timeout) = wait else {
        return Ok(());
    };
    for (service, version) in stored {
        // One deadline for the whole file: `started` is shared, so later routes get what is left.
        let c =
            wait::until_acked(&mut admin, &service, &version, &before, started, timeout).await?;
        if c.proxies == 0 {
            println!("no proxy subscribes to route {service} yet: nothing to wait for");
            continue;
        }
        println!(
            "route {service}: ACKed by {} prox{} in {:.3}s",
            c.proxies,
            if c.proxies == 1 { "y" } else { "ies" },
            c.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn service_of(e: &RouteEntry) -> &str {
    e.route.as_ref().map_or("", |r| r.service.as_str())
}

fn print_routes(global: &Global, routes: Vec<RouteEntry>, list: bool) -> Result<()> {
    let printed = if list {
        print_structured(global.output, &routes)?
    } else {
        print_structured(global.output, &routes[0])?
    };
    if !printed {
        let rows: Vec<_> = routes
            .into_iter()
            .map(|e| (e.route.unwrap_or_default(), e.version))
            .collect();
        show::table(&rows).print();
    }
    Ok(())
}
