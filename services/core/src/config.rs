//! Layered configuration: defaults, then a TOML file, then `FLEETPULSE__…` env vars.
//!
//! Every service config is a plain struct with `deny_unknown_fields`, so a
//! typo fails at startup instead of being ignored. Nested keys are separated
//! by `__` in env vars: `FLEETPULSE__KAFKA__BROKERS=host:9092` sets
//! `kafka.brokers`. Errors name the key and where its value came from.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "FLEETPULSE__";

/// A configuration that could not be loaded. Fix the config; a retry will not help.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or is unreadable.
    #[error("config file {path}: {reason}")]
    File {
        /// Path given.
        path: String,
        /// Why.
        reason: String,
    },
    /// A value is missing, mistyped or unknown (the message names the key).
    #[error("invalid config: {0}")]
    Invalid(String),
    /// Values that are fine alone but contradict each other.
    #[error("invalid config: key `{key}`: {reason}")]
    Contradiction {
        /// Dotted key path.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Implemented by service configs that have cross-field rules.
pub trait Validate {
    /// Check rules that serde cannot express.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Load `T` from its defaults, then `file` (if any), then the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "not found or not a file".into(),
            });
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__"));
    extract(fig)
}

/// Extract and validate; figment reports one error per bad key, and all of
/// them are joined so they can be fixed at once.
fn extract<T>(fig: Figment) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let cfg: T = fig.extract().map_err(|e| {
        ConfigError::Invalid(
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    cfg.validate()?;
    Ok(cfg)
}

/// Load `T` from its defaults, then a TOML document, then the environment:
/// the layers of [`load`] with the file's text given (a configuration
/// received over the network, e.g. the edge's signed control config).
pub fn load_str<T>(text: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    extract(
        Figment::from(Serialized::defaults(T::default()))
            .merge(Toml::string(text))
            .merge(Env::prefixed(ENV_PREFIX).split("__")),
    )
}

/// Load `T` from a TOML string over its defaults (tests and embedded runs).
pub fn from_toml<T>(text: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    extract(Figment::from(Serialized::defaults(T::default())).merge(Toml::string(text)))
}

/// Read a secret given either inline or as `env:NAME` / `file:/path`.
///
/// Secrets are never compiled in; configs reference where they live.
pub fn resolve_secret(key: &str, spec: &str) -> Result<Vec<u8>, ConfigError> {
    let value = read_secret(key, spec)?;
    if value.len() < 16 {
        return Err(ConfigError::Contradiction {
            key: key.to_string(),
            reason: "secret must be at least 16 bytes".into(),
        });
    }
    Ok(value.into_bytes())
}

/// Read a secret chosen by someone else (a broker password, a key
/// passphrase): `env:NAME`, `file:/path` or inline, without
/// [`resolve_secret`]'s minimum length; it must not be empty.
pub fn read_secret(key: &str, spec: &str) -> Result<String, ConfigError> {
    let bad = |reason: String| ConfigError::Contradiction {
        key: key.to_string(),
        reason,
    };
    let value = if let Some(name) = spec.strip_prefix("env:") {
        std::env::var(name).map_err(|_| bad(format!("environment variable {name} is not set")))?
    } else if let Some(path) = spec.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {path}: {e}")))?
            .trim_end()
            .to_string()
    } else {
        spec.to_string()
    };
    if value.is_empty() {
        return Err(bad("secret is empty".into()));
    }
    Ok(value)
}
