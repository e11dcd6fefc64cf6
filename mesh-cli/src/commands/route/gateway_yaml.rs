//! Reading Gateway API YAML: typed access to mappings, lists and strings with the document
//! path in every error, and the `<service>-<version>` backend-name convention. Shared by the
//! route and filter readers.

use serde_norway::{Mapping, Value};

pub(super) type R<T> = Result<T, String>;

/// `reviews-v2` → (`reviews`, `v2`); any other name is a whole service.
pub(super) fn backend_name(name: &str) -> (String, String) {
    if let Some((svc, ver)) = name.rsplit_once('-')
        && ver.len() >= 2
        && ver.starts_with('v')
        && ver.as_bytes()[1].is_ascii_digit()
        && !svc.is_empty()
    {
        return (svc.to_string(), ver.to_string());
    }
    (name.to_string(), String::new())
}

pub(super) fn mapping<'a>(v: &'a Value, at: &str) -> R<&'a Mapping> {
    v.as_mapping().ok_or(format!("{at}: expected a mapping"))
}

pub(super) fn seq<'a>(v: Option<&'a Value>, at: &str) -> R<&'a [Value]> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Sequence(s)) => Ok(s),
        Some(_) => Err(format!("{at}: expected a list")),
    }
}

pub(super) fn str_at(v: &Value, key: &str, prefix: &str) -> R<String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{prefix}{key}: expected a string")),
        None => Err(format!("{prefix}{key}: missing")),
    }
}

/// Refuses any key outside `allowed`, naming its full path.
pub(super) fn only(m: &Mapping, at: &str, allowed: &[&str]) -> R<()> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !allowed.contains(&k) {
            return Err(format!(
                "{at}.{k} is not supported (supported here: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}
