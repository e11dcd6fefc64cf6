//! Names from the app (an authority, a `Host` header): which service they name, within the
//! caller's namespace (`mesh_proto::names`), and whether they can name anything at all. Pure
//! functions, shared by the outbound listener and the observer.

use std::borrow::Cow;

/// The service (its mesh-wide key, `mesh_proto::names`) named by an authority or host: port
/// stripped, lower-cased; a short name is a service of `local_ns` (the caller's namespace, as
/// Kubernetes DNS resolves it); `name.ns`, `name.ns.svc` and `name.ns.svc.<trust-domain>`
/// name the service `name` of namespace `ns`. Other dotted names (external hosts) are
/// returned whole.
pub fn service_name<'a>(authority: &'a str, local_ns: &str) -> Cow<'a, str> {
    let host = strip_port(authority).trim_end_matches('.');
    let host: Cow<'a, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let Some((first, rest)) = host.split_once('.') else {
        if local_ns == mesh_proto::names::DEFAULT_NAMESPACE
            || host.parse::<std::net::IpAddr>().is_ok()
        {
            return host;
        }
        return Cow::Owned(format!("{host}.{local_ns}"));
    };
    let mut labels = rest.split('.');
    let ns = labels.next().unwrap_or_default();
    let is_mesh_suffix = match labels.next() {
        None => true,
        Some("svc") => true,
        Some(_) => false,
    };
    if !is_mesh_suffix || host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    let key_len = if ns == mesh_proto::names::DEFAULT_NAMESPACE {
        first.len()
    } else {
        first.len() + 1 + ns.len()
    };
    match host {
        Cow::Borrowed(h) => Cow::Borrowed(&h[..key_len]),
        Cow::Owned(ref h) => Cow::Owned(h[..key_len].to_owned()),
    }
}

/// Whether `name` (from [`service_name`]) can name anything: DNS labels of 1–63 letters,
/// digits, `-` or `_`, at most 253 bytes in all, or an IP address. Anything else (`Host: .`,
/// an empty label, 300 bytes) is refused with `bad-request` before it is looked up, so one
/// request from the app can never put a name on the discovery stream that cannot exist.
pub fn valid_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The port of an authority, if any.
pub fn port_of(authority: &str) -> Option<u16> {
    let host = strip_port(authority);
    authority.get(host.len() + 1..)?.parse().ok()
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_authorities() {
        let d = "default";
        assert_eq!(service_name("reviews", d), "reviews");
        assert_eq!(service_name("reviews:9080", d), "reviews");
        assert_eq!(service_name("Reviews.Default:80", d), "reviews");
        assert_eq!(service_name("reviews.default.svc", d), "reviews");
        assert_eq!(
            service_name("reviews.default.svc.cluster.local", d),
            "reviews"
        );
        assert_eq!(service_name("www.example.com", d), "www.example.com");
        assert_eq!(service_name("[::1]:80", d), "::1");
        // Names are scoped by namespace: the short name resolves within the caller's.
        assert_eq!(service_name("reviews", "shop"), "reviews.shop");
        assert_eq!(service_name("reviews:9080", "shop"), "reviews.shop");
        assert_eq!(service_name("reviews.shop", d), "reviews.shop");
        assert_eq!(
            service_name("reviews.shop.svc.cluster.local", d),
            "reviews.shop"
        );
        assert_eq!(service_name("reviews.default", "shop"), "reviews");
        assert_eq!(service_name("10.0.0.1:80", "shop"), "10.0.0.1");
        for bad in [".", "", "a..b", &"x".repeat(300), "a b", "a%b", "x/y"] {
            assert!(!valid_name(&service_name(bad, d)), "{bad:?}");
        }
        for good in ["reviews", "reviews.shop", "10.0.0.1", "[::1]:80", "a-b_c.d"] {
            assert!(valid_name(&service_name(good, d)), "{good:?}");
        }
        assert_eq!(port_of("reviews:9080"), Some(9080));
        assert_eq!(port_of("reviews"), None);
    }
}
