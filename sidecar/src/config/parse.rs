//! Raw strings (flags over environment) and the per-value parsers that type them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{Invalid, Setting, TcpForward};

/// A setting's raw values and where they came from (`--flag` or `MESH_VAR`).
pub(super) struct RawValue {
    origin: String,
    values: Vec<String>,
}

pub(super) type Raw = HashMap<&'static str, RawValue>;

/// Collects each setting's raw value: from the arguments when given there, else from `env`.
/// clap only splits the command line here; every value is typed by [`Reader`].
pub(super) fn raw_values(
    settings: &[Setting],
    args: impl IntoIterator<Item = String>,
    env: &HashMap<String, String>,
) -> Result<Raw, clap::Error> {
    let mut cmd = clap::Command::new("mesh-sidecar")
        .about("The mesh sidecar proxy")
        .version(env!("CARGO_PKG_VERSION"));
    for s in settings {
        let arg = clap::Arg::new(s.flag)
            .long(s.flag)
            .value_name("VALUE")
            // "-1" is a (bad) value to report, not an unknown flag.
            .allow_hyphen_values(true)
            .help(format!("{} [env: {}]", s.help, s.env));
        let arg = if s.repeated {
            arg.action(clap::ArgAction::Append)
        } else {
            arg.action(clap::ArgAction::Set)
        };
        cmd = cmd.arg(arg);
    }
    let matches = cmd.try_get_matches_from(args)?;

    let mut raw = Raw::new();
    for s in settings {
        let from_flag = matches
            .get_many::<String>(s.flag)
            .map(|v| v.cloned().collect::<Vec<_>>());
        let value = match from_flag {
            Some(values) => RawValue {
                origin: format!("--{}", s.flag),
                values,
            },
            None => match env.get(s.env) {
                Some(v) => RawValue {
                    origin: s.env.to_string(),
                    values: if s.repeated {
                        split_list(v).map(String::from).collect()
                    } else {
                        vec![v.clone()]
                    },
                },
                None => continue,
            },
        };
        raw.insert(s.flag, value);
    }
    Ok(raw)
}

/// Types raw values, remembering every failure instead of stopping at the first.
pub(super) struct Reader<'a> {
    raw: &'a Raw,
    errors: Vec<Invalid>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(raw: &'a Raw) -> Self {
        Self {
            raw,
            errors: Vec::new(),
        }
    }

    /// The setting's value, or `default` when unset (or invalid: the error is recorded).
    pub(super) fn value<T>(
        &mut self,
        flag: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        self.optional(flag, parse).unwrap_or(default)
    }

    pub(super) fn optional<T>(
        &mut self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw.get(flag)?;
        // Non-repeated settings hold one value (the last flag wins, as with most CLIs).
        let value = raw.values.last()?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.errors.push(Invalid {
                    origin: raw.origin.clone(),
                    value: value.clone(),
                    reason,
                });
                None
            }
        }
    }

    pub(super) fn required<T>(
        &mut self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        if !self.raw.contains_key(flag) {
            let env = super::SETTINGS
                .iter()
                .find(|s| s.flag == flag)
                .map_or("", |s| s.env);
            self.errors.push(Invalid {
                origin: format!("--{flag}"),
                value: String::new(),
                reason: format!("required (flag --{flag} or env {env})"),
            });
            return None;
        }
        self.optional(flag, parse)
    }

    /// Every value of a repeatable setting, each typed on its own.
    pub(super) fn each<T>(
        &mut self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let Some(raw) = self.raw.get(flag) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(raw.values.len());
        for value in &raw.values {
            match parse(value) {
                Ok(v) => out.push(v),
                Err(reason) => self.errors.push(Invalid {
                    origin: raw.origin.clone(),
                    value: value.clone(),
                    reason,
                }),
            }
        }
        out
    }

    pub(super) fn finish(self) -> Vec<Invalid> {
        self.errors
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

// === value parsers ===

pub(super) fn nonempty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

/// A DNS-1123 label: what Kubernetes allows for service and namespace names, so every name is
/// valid in a SPIFFE ID, a Host header and a metric label.
pub(super) fn name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected a DNS label: 1-63 of a-z, 0-9, '-', not starting or ending with '-'".into())
    }
}

pub(super) fn names(s: &str) -> Result<Vec<String>, String> {
    split_list(s)
        .map(|n| name(n).map_err(|e| format!("{n:?}: {e}")))
        .collect()
}

pub(super) fn trust_domain(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected a trust domain such as cluster.local (a-z, 0-9, '-', '.', '_')".into())
    }
}

/// `http://host:port`, as tonic's endpoint takes it. TLS to the control plane comes with the
/// identity work; until then `https://` is refused here rather than failing at every connect.
pub(super) fn url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err("the URL has no host".into());
    }
    Ok(s.to_string())
}

pub(super) fn labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in split_list(s) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} given twice"));
        }
    }
    Ok(out)
}

pub(super) fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

pub(super) fn ports(s: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for p in split_list(s) {
        let p = port(p)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected ip:port (port 0 = any free port)".into())
}

/// The address peers dial: a concrete IP, never the unspecified one.
pub(super) fn advertise_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.trim().parse().map_err(|_| "expected an IP address")?;
    if ip.is_unspecified() {
        return Err("peers cannot dial the unspecified address; give this host's IP".into());
    }
    Ok(ip)
}

pub(super) fn bounded(s: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected an integer in {min}..={max}")),
    }
}

pub(super) fn millis(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let range = || {
        format!(
            "expected milliseconds in {}..={}",
            min.as_millis(),
            max.as_millis()
        )
    };
    let ms: u64 = s.trim().parse().map_err(|_| range())?;
    let d = Duration::from_millis(ms);
    if d < min || d > max {
        return Err(range());
    }
    Ok(d)
}

pub(super) fn path(s: &str) -> Result<PathBuf, String> {
    nonempty(s).map(PathBuf::from)
}

/// `LISTEN_ADDR=service:port`, e.g. `127.0.0.1:7000=db:5432`.
pub(super) fn tcp_forward(s: &str) -> Result<TcpForward, String> {
    let shape = "expected LISTEN_ADDR=service:port, e.g. 127.0.0.1:7000=db:5432";
    let (listen, target) = s.trim().split_once('=').ok_or(shape)?;
    let listen = socket_addr(listen)?;
    let (service, p) = target.rsplit_once(':').ok_or(shape)?;
    Ok(TcpForward {
        listen,
        service: name(service)?,
        port: port(p)?,
    })
}

/// Checked here so a typo fails at start-up, not silently at the first reload.
pub(super) fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s.trim())
        .map(|_| s.trim().to_string())
        .map_err(|e| format!("bad tracing filter: {e}"))
}

/// A URL, or nothing when empty (the feature is off).
pub(super) fn optional_url(s: &str) -> Result<Option<String>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    url(s).map(Some)
}

/// A ratio within 0..=1.
pub(super) fn ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number within 0..=1".into()),
    }
}

/// `stdout`, `off` or a file path.
pub(super) fn access_log(s: &str) -> Result<super::AccessLogDest, String> {
    Ok(match s.trim() {
        "" => return Err("expected stdout, off or a path".into()),
        "stdout" | "-" => super::AccessLogDest::Stdout,
        "off" => super::AccessLogDest::Off,
        p => super::AccessLogDest::File(PathBuf::from(p)),
    })
}
