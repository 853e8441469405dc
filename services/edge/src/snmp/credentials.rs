//! SNMP credentials as configured (secret specs, optional fields) and as
//! used on the wire (resolved secrets, derived keys).

use std::sync::Arc;

use fleetpulse_core::config::ConfigError;

use super::usm::{AuthProtocol, PrivProtocol, SecurityLevel, UsmUser};
use super::SnmpVersion;

/// RFC 3414 §11.2: passwords shorter than 8 characters are not allowed
/// (net-snmp refuses them too).
const MIN_PASSWORD: usize = 8;

/// Credentials as configured, per device or per discovery range.
///
/// Passwords are secret specs (`env:NAME`, `file:/path`, or inline) and are
/// only read by [`SnmpCredentials::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnmpCredentials {
    /// Protocol version; see [`SnmpCredentials::effective_version`].
    pub version: Option<SnmpVersion>,
    /// v1/v2c community.
    pub community: String,
    /// v3 user.
    pub user: Option<String>,
    /// v3 security level; default from the passwords given.
    pub security_level: Option<SecurityLevel>,
    /// v3 authentication protocol; default `sha256`.
    pub auth_protocol: Option<AuthProtocol>,
    /// v3 authentication password (secret spec).
    pub auth_password: Option<String>,
    /// v3 privacy protocol; default `aes128`.
    pub priv_protocol: Option<PrivProtocol>,
    /// v3 privacy password (secret spec).
    pub priv_password: Option<String>,
}

/// Resolved credentials: what the client needs on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// v1 or v2c with a community.
    Community {
        /// `V1` or `V2c`.
        version: SnmpVersion,
        /// The community octets.
        community: Vec<u8>,
    },
    /// v3 with a USM user (keys derived from the passwords).
    Usm(Arc<UsmUser>),
}

impl Security {
    /// The protocol version these credentials speak.
    pub fn version(&self) -> SnmpVersion {
        match self {
            Security::Community { version, .. } => *version,
            Security::Usm(_) => SnmpVersion::V3,
        }
    }
}

fn bad(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key,
        reason: reason.into(),
    }
}

/// Read a secret spec like `fleetpulse_core::config::resolve_secret`, but
/// with SNMP's 8-character minimum instead of 16 bytes.
fn resolve_password(key: String, spec: &str) -> Result<Vec<u8>, ConfigError> {
    let value = if let Some(name) = spec.strip_prefix("env:") {
        std::env::var(name).map_err(|_| {
            bad(
                key.clone(),
                format!("environment variable {name} is not set"),
            )
        })?
    } else if let Some(path) = spec.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| bad(key.clone(), format!("cannot read {path}: {e}")))?
            .trim_end()
            .to_string()
    } else {
        spec.to_string()
    };
    if value.len() < MIN_PASSWORD {
        return Err(bad(
            key,
            format!("SNMPv3 passwords must be at least {MIN_PASSWORD} characters"),
        ));
    }
    Ok(value.into_bytes())
}

impl SnmpCredentials {
    /// `version` when set; `v3` when a `user` is set; else `default`.
    pub fn effective_version(&self, default: SnmpVersion) -> SnmpVersion {
        match (self.version, &self.user) {
            (Some(v), _) => v,
            (None, Some(_)) => SnmpVersion::V3,
            (None, None) => default,
        }
    }

    /// The security level: as configured, else the highest the passwords allow.
    pub fn effective_level(&self) -> SecurityLevel {
        self.security_level
            .unwrap_or(match (&self.auth_password, &self.priv_password) {
                (Some(_), Some(_)) => SecurityLevel::AuthPriv,
                (Some(_), None) => SecurityLevel::AuthNoPriv,
                _ => SecurityLevel::NoAuthNoPriv,
            })
    }

    /// Check the combination without reading secrets. `prefix` is the dotted
    /// key of the table (e.g. `devices[1]`); errors name the offending key.
    pub fn validate(&self, prefix: &str, default: SnmpVersion) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        match self.effective_version(default) {
            SnmpVersion::V1 | SnmpVersion::V2c => {
                if self.community.is_empty() {
                    return Err(bad(key("community"), "must not be empty"));
                }
                for (k, set) in [
                    ("user", self.user.is_some()),
                    ("security_level", self.security_level.is_some()),
                    ("auth_protocol", self.auth_protocol.is_some()),
                    ("auth_password", self.auth_password.is_some()),
                    ("priv_protocol", self.priv_protocol.is_some()),
                    ("priv_password", self.priv_password.is_some()),
                ] {
                    if set {
                        return Err(bad(key(k), "is an SNMPv3 setting but version is not v3"));
                    }
                }
            }
            SnmpVersion::V3 => {
                match &self.user {
                    None => return Err(bad(key("user"), "is required for SNMPv3")),
                    Some(u) if u.is_empty() || u.len() > 32 => {
                        return Err(bad(key("user"), "must be 1..=32 characters"))
                    }
                    Some(_) => {}
                }
                let level = self.effective_level();
                let needs_auth = level != SecurityLevel::NoAuthNoPriv;
                let needs_priv = level == SecurityLevel::AuthPriv;
                if needs_auth && self.auth_password.is_none() {
                    return Err(bad(
                        key("auth_password"),
                        format!("is required for security_level {level:?}"),
                    ));
                }
                if needs_priv && self.priv_password.is_none() {
                    return Err(bad(
                        key("priv_password"),
                        "is required for security_level authPriv",
                    ));
                }
                if !needs_auth && (self.auth_password.is_some() || self.auth_protocol.is_some()) {
                    return Err(bad(
                        key("auth_password"),
                        "is set but security_level is noAuthNoPriv",
                    ));
                }
                if !needs_priv && (self.priv_password.is_some() || self.priv_protocol.is_some()) {
                    return Err(bad(
                        key("priv_password"),
                        format!("is set but security_level is {level:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Validate, read the secrets and derive the keys (the 1 MiB password
    /// hash runs here, so call this once per device, not per poll).
    pub fn resolve(&self, prefix: &str, default: SnmpVersion) -> Result<Security, ConfigError> {
        self.validate(prefix, default)?;
        let version = self.effective_version(default);
        if version != SnmpVersion::V3 {
            return Ok(Security::Community {
                version,
                community: self.community.as_bytes().to_vec(),
            });
        }
        let level = self.effective_level();
        let auth_protocol = self.auth_protocol.unwrap_or(AuthProtocol::Sha256);
        let priv_protocol = self.priv_protocol.unwrap_or(PrivProtocol::Aes128);
        let auth_pw = match (&self.auth_password, level) {
            (Some(spec), SecurityLevel::AuthNoPriv | SecurityLevel::AuthPriv) => {
                Some(resolve_password(format!("{prefix}.auth_password"), spec)?)
            }
            _ => None,
        };
        let priv_pw = match (&self.priv_password, level) {
            (Some(spec), SecurityLevel::AuthPriv) => {
                Some(resolve_password(format!("{prefix}.priv_password"), spec)?)
            }
            _ => None,
        };
        let user = UsmUser::new(
            self.user.as_deref().unwrap_or_default(),
            level,
            auth_pw.as_deref().map(|p| (auth_protocol, p)),
            priv_pw.as_deref().map(|p| (priv_protocol, p)),
        );
        Ok(Security::Usm(Arc::new(user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> SnmpCredentials {
        SnmpCredentials {
            user: Some("fpuser".into()),
            auth_password: Some("authpass123".into()),
            priv_password: Some("privpass123".into()),
            ..Default::default()
        }
    }

    #[test]
    fn combos_name_the_key() {
        let ok = v3();
        assert_eq!(ok.effective_version(SnmpVersion::V2c), SnmpVersion::V3);
        assert_eq!(ok.effective_level(), SecurityLevel::AuthPriv);
        ok.validate("devices[0]", SnmpVersion::V2c).unwrap();

        let no_priv = SnmpCredentials {
            security_level: Some(SecurityLevel::AuthPriv),
            priv_password: None,
            ..v3()
        };
        let e = no_priv
            .validate("devices[1]", SnmpVersion::V2c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices[1].priv_password"), "{e}");

        let no_user = SnmpCredentials {
            version: Some(SnmpVersion::V3),
            user: None,
            ..v3()
        };
        let e = no_user
            .validate("d", SnmpVersion::V2c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.user"), "{e}");

        let v2_with_pw = SnmpCredentials {
            version: Some(SnmpVersion::V2c),
            community: "public".into(),
            ..v3()
        };
        let e = v2_with_pw
            .validate("d", SnmpVersion::V2c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.user"), "{e}");

        let priv_without_level = SnmpCredentials {
            security_level: Some(SecurityLevel::AuthNoPriv),
            ..v3()
        };
        let e = priv_without_level
            .validate("d", SnmpVersion::V2c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.priv_password"), "{e}");

        let short = SnmpCredentials {
            auth_password: Some("short".into()),
            ..v3()
        };
        let e = short
            .resolve("d", SnmpVersion::V2c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.auth_password"), "{e}");
        let e = SnmpCredentials {
            auth_password: Some("env:FP_TEST_SURELY_UNSET_VAR".into()),
            ..v3()
        }
        .resolve("d", SnmpVersion::V2c)
        .unwrap_err()
        .to_string();
        assert!(e.contains("FP_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
