//! Reading variables: the raw values (file, then environment), one typed getter per kind of
//! variable, and the rules that tie several variables together. Every getter records a bad
//! value as a [`Problem`] and returns the default, so one pass finds every problem.

use std::collections::BTreeMap;
use std::time::Duration;

use super::url::check_url;
use super::{CONFIG_FILE_VAR, Problem};
use crate::key::Keys;
use crate::sealed::Keyring;
use crate::url::mask_url;
use crate::vars::{self, Number, Switch, Text};

/// A value as given, before it is checked.
pub(super) struct Raw {
    pub(super) value: String,
}

/// The raw values and the problems found so far.
pub(super) struct Reader<'a> {
    pub(super) raw: &'a BTreeMap<String, Raw>,
    pub(super) problems: Vec<Problem>,
}

impl Reader<'_> {
    /// A numeric variable, converted to the field's integer type (the bounds fit it).
    pub(super) fn number<T: TryFrom<u64> + Default>(&mut self, var: &Number) -> T {
        let n = self.checked(var);
        T::try_from(n)
            .or_else(|_| T::try_from(var.default))
            .unwrap_or_default()
    }

    /// A numeric variable of seconds or milliseconds.
    pub(super) fn duration(&mut self, var: &Number) -> Duration {
        let n = self.checked(var);
        var.duration(n)
    }

    /// The value of `var` within its bounds, or its default (and a problem).
    fn checked(&mut self, var: &Number) -> u64 {
        let Some(raw) = self.raw.get(var.name) else {
            return var.default;
        };
        match parse_number(&raw.value, var) {
            Ok(n) => n,
            Err(allowed) => {
                self.problem(var.name, raw.value.clone(), allowed);
                var.default
            }
        }
    }

    /// A text variable, trimmed; unset when empty.
    pub(super) fn text(&self, var: &Text) -> Option<String> {
        self.raw
            .get(var.name)
            .map(|r| r.value.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A switch: its `on` spelling is true, its `off` spelling (or nothing) false.
    pub(super) fn switch(&mut self, var: &Switch) -> bool {
        match self.text(&Text {
            name: var.name,
            secret: false,
        }) {
            None => false,
            Some(v) if v == var.off => false,
            Some(v) if v == var.on => true,
            Some(other) => {
                let allowed = format!("`{}` or `{}`", var.off, var.on);
                self.problem(var.name, other, allowed);
                false
            }
        }
    }

    /// A list of namespaces: unset is `None`, `off` (or `none`) an empty list.
    pub(super) fn namespaces(&mut self, var: &Text) -> Option<Vec<String>> {
        let text = self.text(var)?;
        if text == "off" || text == "none" {
            return Some(Vec::new());
        }
        let list: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
        let valid = |ns: &String| {
            !ns.is_empty()
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !list.iter().all(valid) {
            let allowed = "namespaces separated by commas (letters, digits, `_`, `-`), or `off`";
            self.problem(var.name, text, allowed);
            return None;
        }
        Some(list)
    }

    pub(super) fn redis_url(&mut self) -> Option<String> {
        let url = self.text(&vars::REDIS_URL)?;
        if let Err(allowed) = check_url(&url) {
            self.problem(vars::REDIS_URL.name, mask_url(&url), allowed);
        }
        Some(url)
    }

    pub(super) fn key_prefix(&mut self) -> String {
        let prefix = self
            .text(&vars::CACHE_KEY_PREFIX)
            .unwrap_or_else(|| "dashcache".to_owned());
        if prefix.len() > 64 || Keys::builder(prefix.clone()).build().is_err() {
            let allowed = "up to 64 ASCII letters, digits, `_`, `-`, `.` and `:`";
            self.problem(vars::CACHE_KEY_PREFIX.name, prefix.clone(), allowed);
        }
        prefix
    }

    pub(super) fn key_secret(&mut self) -> Option<String> {
        let secret = self.text(&vars::CACHE_KEY_SECRET);
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            self.problem(vars::CACHE_KEY_SECRET.name, "***", "at least 16 bytes");
        }
        secret
    }

    pub(super) fn seal_keys(&mut self) -> Option<String> {
        let spec = self.text(&vars::CACHE_SEAL_KEYS);
        if let Some(spec) = &spec
            && let Err(e) = Keyring::parse(spec)
        {
            let allowed = format!("`id:base64key[,id:base64key…]` with 32-byte keys ({e})");
            self.problem(vars::CACHE_SEAL_KEYS.name, "***", allowed);
        }
        spec
    }

    /// The client certificate and its key: both or neither.
    pub(super) fn tls_client_cert(&mut self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let cert = self.text(&vars::CACHE_TLS_CERT_FILE);
        let key = self.text(&vars::CACHE_TLS_KEY_FILE);
        match (cert, key) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (cert, _) => {
                let missing = if cert.is_some() {
                    vars::CACHE_TLS_KEY_FILE
                } else {
                    vars::CACHE_TLS_CERT_FILE
                };
                let allowed = "set with its pair: a client certificate needs its key";
                self.problem(missing.name, "(unset)", allowed);
                None
            }
        }
    }

    /// The sentinels' own credentials: a user needs its password, and both need a Sentinel
    /// URL (the credentials of any other URL are in the URL).
    pub(super) fn sentinel_credentials(
        &mut self,
        redis_url: Option<&str>,
    ) -> Option<(Option<String>, String)> {
        let username = self.text(&vars::CACHE_SENTINEL_USERNAME);
        let password = self.text(&vars::CACHE_SENTINEL_PASSWORD);
        let credentials = match (username, password) {
            (username, Some(password)) => Some((username, password)),
            (None, None) => None,
            (Some(_), None) => {
                let allowed = "set with CACHE_SENTINEL_USERNAME: a user needs its password";
                self.problem(vars::CACHE_SENTINEL_PASSWORD.name, "(unset)", allowed);
                None
            }
        };
        if credentials.is_some() && !redis_url.is_some_and(|url| url.contains("+sentinel://")) {
            let allowed = "only with a redis+sentinel:// REDIS_URL";
            self.problem(vars::CACHE_SENTINEL_PASSWORD.name, "***", allowed);
        }
        credentials
    }

    fn problem(&mut self, variable: &str, value: impl Into<String>, allowed: impl Into<String>) {
        self.problems.push(Problem {
            variable: variable.to_owned(),
            value: value.into(),
            allowed: allowed.into(),
        });
    }
}

/// Whether `var` is a variable the settings read.
pub(super) fn is_known(var: &str) -> bool {
    vars::names().any(|name| name == var && name != CONFIG_FILE_VAR)
}

/// The flat TOML table of a settings file into `raw`; an unknown key is a problem (a typo
/// must not pass for a default).
pub(super) fn parse_file(text: &str, raw: &mut BTreeMap<String, Raw>, problems: &mut Vec<Problem>) {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem {
                variable: CONFIG_FILE_VAR.into(),
                value: "(file)".into(),
                allowed: format!("valid TOML: {}", e.message()),
            });
            return;
        }
    };
    for (key, value) in table {
        let var = key.to_ascii_uppercase();
        if !is_known(&var) {
            problems.push(Problem {
                variable: key,
                value: value.to_string(),
                allowed: "a known setting (see .env.example)".into(),
            });
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => other.to_string(),
        };
        raw.insert(var, Raw { value });
    }
}

fn parse_number(value: &str, var: &Number) -> Result<u64, String> {
    let unit = var.unit.name();
    let range = format!(
        "an integer from {} to {}{}{}",
        var.min,
        var.max,
        if unit.is_empty() { "" } else { " " },
        unit
    );
    // `1_000` reads as it does in Rust and TOML.
    let n: u64 = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| range.clone())?;
    if n < var.min || n > var.max {
        return Err(range);
    }
    Ok(n)
}
