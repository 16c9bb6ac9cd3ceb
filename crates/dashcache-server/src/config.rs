//! The service's own variables (`DASHCACHE_*`, `DATABASE_URL`), read in one place by `serve`
//! and by `config check`: what one refuses the other refuses, and a refusal names the
//! variable, the value and where it came from — a flag, the environment — not a flag the user
//! never typed.

use std::fmt;

use crate::serve::DemoData;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Environment,
    /// Nothing set it.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "flag",
            Self::Environment => "environment",
            Self::Default => "default",
        })
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// What `serve` was given on its command line (flags win over the environment).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--demo`.
    pub demo: Option<DemoData>,
    /// `--secure-cookies` (a switch: only "on" can be given).
    pub secure_cookies: bool,
    /// `--access-log`.
    pub access_log: Option<bool>,
    /// `--allowed-origin` (repeatable).
    pub allowed_origins: Vec<String>,
    /// `--database-url`.
    pub database_url: Option<String>,
}

/// The service's variables, each with its source.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `DATABASE_URL` / `--database-url`.
    pub database_url: Sourced<String>,
    /// `DASHCACHE_DEMO` / `--demo`.
    pub demo: Sourced<DemoData>,
    /// `DASHCACHE_SECURE_COOKIES` / `--secure-cookies`.
    pub secure_cookies: Sourced<bool>,
    /// `DASHCACHE_ACCESS_LOG` / `--access-log`.
    pub access_log: Sourced<bool>,
    /// `DASHCACHE_ALLOWED_ORIGINS` / `--allowed-origin`.
    pub allowed_origins: Sourced<Vec<String>>,
    /// `DASHCACHE_UPSTREAM_URL` / `--upstream-url` (checked, not parsed further).
    pub upstream_url: Sourced<Option<String>>,
    /// Whether `DASHCACHE_OPS_TOKEN` is set (its value is never kept here).
    pub ops_token_set: bool,
}

/// One refused variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable (or the flag, when a flag gave it).
    pub variable: String,
    /// The value given.
    pub value: String,
    /// Where it came from.
    pub source: Source,
    /// What is allowed.
    pub allowed: String,
}

/// Every refused variable at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in a stable order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid service configuration:")?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}={:?} (from the {}): {}",
                p.variable, p.value, p.source, p.allowed
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The default database: a SQLite file in the working directory.
pub use crate::serve::DEFAULT_DATABASE_URL;

impl ServiceConfig {
    /// Reads the process environment under `flags`.
    ///
    /// # Errors
    /// Every refused value.
    pub fn read(flags: &Flags) -> Result<Self, ConfigError> {
        Self::read_from(flags, |var| std::env::var(var).ok())
    }

    /// Reads `env` (a lookup, for tests) under `flags`.
    ///
    /// # Errors
    /// Every refused value.
    pub fn read_from(
        flags: &Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |variable: &str, value: &str, source: Source, allowed: &str| {
            problems.push(Problem {
                variable: variable.to_owned(),
                value: value.to_owned(),
                source,
                allowed: allowed.to_owned(),
            });
        };
        let from_env = |var: &str| env(var).filter(|v| !v.trim().is_empty());

        let database_url = match (&flags.database_url, from_env("DATABASE_URL")) {
            (Some(url), _) => sourced(url.clone(), Source::Flag),
            (None, Some(url)) => sourced(url, Source::Environment),
            (None, None) => sourced(DEFAULT_DATABASE_URL.to_owned(), Source::Default),
        };
        if !(database_url.value.starts_with("sqlite:")
            || database_url.value.starts_with("postgres://")
            || database_url.value.starts_with("postgresql://"))
        {
            let variable = name_of("DATABASE_URL", "--database-url", database_url.source);
            bad(
                variable,
                &dashcache::url::mask_url(&database_url.value),
                database_url.source,
                "sqlite://<file>?mode=rwc or postgres://[user[:password]@]host[:port]/<database>",
            );
        }

        let demo = match (flags.demo, from_env("DASHCACHE_DEMO")) {
            (Some(demo), _) => sourced(demo, Source::Flag),
            (None, Some(text)) => match text.trim() {
                "auto" => sourced(DemoData::Auto, Source::Environment),
                "yes" => sourced(DemoData::Yes, Source::Environment),
                "no" => sourced(DemoData::No, Source::Environment),
                _ => {
                    bad(
                        "DASHCACHE_DEMO",
                        &text,
                        Source::Environment,
                        "`auto`, `yes` or `no`",
                    );
                    sourced(DemoData::Auto, Source::Environment)
                }
            },
            (None, None) => sourced(DemoData::Auto, Source::Default),
        };

        let secure_cookies = match (flags.secure_cookies, from_env("DASHCACHE_SECURE_COOKIES")) {
            (true, _) => sourced(true, Source::Flag),
            (false, Some(text)) => match switch(&text) {
                Some(on) => sourced(on, Source::Environment),
                None => {
                    bad(
                        "DASHCACHE_SECURE_COOKIES",
                        &text,
                        Source::Environment,
                        "`true` or `false` (also `on`/`off`, `yes`/`no`, `1`/`0`)",
                    );
                    sourced(false, Source::Environment)
                }
            },
            (false, None) => sourced(false, Source::Default),
        };

        let access_log = match (flags.access_log, from_env("DASHCACHE_ACCESS_LOG")) {
            (Some(on), _) => sourced(on, Source::Flag),
            (None, Some(text)) => match switch(&text) {
                Some(on) => sourced(on, Source::Environment),
                None => {
                    bad(
                        "DASHCACHE_ACCESS_LOG",
                        &text,
                        Source::Environment,
                        "`on` or `off`",
                    );
                    sourced(true, Source::Environment)
                }
            },
            (None, None) => sourced(true, Source::Default),
        };

        let allowed_origins = if flags.allowed_origins.is_empty() {
            match from_env("DASHCACHE_ALLOWED_ORIGINS") {
                Some(text) => sourced(split_list(&text), Source::Environment),
                None => sourced(Vec::new(), Source::Default),
            }
        } else {
            sourced(
                flags
                    .allowed_origins
                    .iter()
                    .flat_map(|o| split_list(o))
                    .collect(),
                Source::Flag,
            )
        };
        for origin in &allowed_origins.value {
            if !is_origin(origin) {
                let variable = name_of(
                    "DASHCACHE_ALLOWED_ORIGINS",
                    "--allowed-origin",
                    allowed_origins.source,
                );
                bad(
                    variable,
                    origin,
                    allowed_origins.source,
                    "origins as browsers send them: http(s)://host[:port], no path",
                );
            }
        }

        let upstream_url = match from_env("DASHCACHE_UPSTREAM_URL") {
            Some(url) => {
                if !is_origin(url.trim_end_matches('/')) {
                    bad(
                        "DASHCACHE_UPSTREAM_URL",
                        &url,
                        Source::Environment,
                        "http(s)://host:port",
                    );
                }
                sourced(Some(url), Source::Environment)
            }
            None => sourced(None, Source::Default),
        };

        let ops_token_set = from_env("DASHCACHE_OPS_TOKEN").is_some();

        if problems.is_empty() {
            Ok(Self {
                database_url,
                demo,
                secure_cookies,
                access_log,
                allowed_origins,
                upstream_url,
                ops_token_set,
            })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// One `VARIABLE=value (source)` line per variable, secrets and passwords masked.
    pub fn lines(&self) -> Vec<String> {
        let demo = match self.demo.value {
            DemoData::Auto => "auto",
            DemoData::Yes => "yes",
            DemoData::No => "no",
        };
        let on = |b: bool| if b { "on" } else { "off" };
        vec![
            format!(
                "DATABASE_URL={} ({})",
                dashcache::url::mask_url(&self.database_url.value),
                self.database_url.source
            ),
            format!("DASHCACHE_DEMO={demo} ({})", self.demo.source),
            format!(
                "DASHCACHE_SECURE_COOKIES={} ({})",
                on(self.secure_cookies.value),
                self.secure_cookies.source
            ),
            format!(
                "DASHCACHE_ACCESS_LOG={} ({})",
                on(self.access_log.value),
                self.access_log.source
            ),
            format!(
                "DASHCACHE_ALLOWED_ORIGINS={} ({})",
                if self.allowed_origins.value.is_empty() {
                    "(none)".to_owned()
                } else {
                    self.allowed_origins.value.join(",")
                },
                self.allowed_origins.source
            ),
            format!(
                "DASHCACHE_UPSTREAM_URL={} ({})",
                self.upstream_url
                    .value
                    .as_deref()
                    .unwrap_or("(unset: one runs in-process)"),
                self.upstream_url.source
            ),
            format!(
                "DASHCACHE_OPS_TOKEN={}",
                if self.ops_token_set { "***" } else { "(unset)" }
            ),
        ]
    }
}

fn sourced<T>(value: T, source: Source) -> Sourced<T> {
    Sourced { value, source }
}

/// The variable's name, or the flag's when a flag gave the value.
fn name_of<'a>(variable: &'a str, flag: &'a str, source: Source) -> &'a str {
    if source == Source::Flag {
        flag
    } else {
        variable
    }
}

/// A boolean as people write one; `None` for anything else.
fn switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// `http(s)://host[:port]` with nothing after.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn a_bad_value_names_the_variable_and_where_it_came_from() {
        let err = ServiceConfig::read_from(
            &Flags::default(),
            env(&[
                ("DASHCACHE_ACCESS_LOG", "maybe"),
                ("DASHCACHE_DEMO", "perhaps"),
                ("DASHCACHE_SECURE_COOKIES", "maybe"),
                ("DASHCACHE_ALLOWED_ORIGINS", "https://ok.example,ftp://no"),
            ]),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        for var in [
            "DASHCACHE_ACCESS_LOG=\"maybe\" (from the environment)",
            "DASHCACHE_DEMO=\"perhaps\"",
            "DASHCACHE_SECURE_COOKIES=\"maybe\"",
            "DASHCACHE_ALLOWED_ORIGINS=\"ftp://no\"",
        ] {
            assert!(err.contains(var), "{var} in {err}");
        }
        // A flag wins, and is named as a flag.
        let flags = Flags {
            access_log: Some(false),
            ..Flags::default()
        };
        let config = ServiceConfig::read_from(&flags, env(&[("DASHCACHE_ACCESS_LOG", "on")]));
        assert_eq!(
            config.ok().map(|c| c.access_log),
            Some(Sourced {
                value: false,
                source: Source::Flag
            })
        );
    }

    #[test]
    fn the_defaults_need_nothing_and_show_no_secret() {
        let config = ServiceConfig::read_from(
            &Flags::default(),
            env(&[
                ("DASHCACHE_OPS_TOKEN", "a-secret-token"),
                ("DATABASE_URL", "postgres://app:pw@db/x"),
            ]),
        );
        let lines = config.map(|c| c.lines().join("\n")).unwrap_or_default();
        assert!(lines.contains("DASHCACHE_OPS_TOKEN=***"), "{lines}");
        assert!(
            lines.contains("postgres://app:***@db/x (environment)"),
            "{lines}"
        );
        assert!(
            !lines.contains("a-secret-token") && !lines.contains(":pw@"),
            "{lines}"
        );
    }
}
