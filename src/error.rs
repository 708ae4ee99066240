//! Errors of the core: configuration rejections and pick failures.

use std::fmt;

/// Why a configuration document was rejected. The `Display` text is what the
/// controller gets back (HTTP 400 body, C ABI error text); it names the backend and
/// the field at fault wherever there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document is larger than [`crate::MAX_CONFIG_BYTES`].
    #[error("configuration is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The document is empty (zero bytes or only whitespace).
    #[error("configuration is empty: expected a JSON array of backends")]
    Empty,

    /// A bug: compiling the configuration panicked (on a background thread).
    #[error("internal error while compiling the configuration: {0}")]
    Internal(String),
    /// The document is not valid UTF-8.
    #[error("configuration is not valid UTF-8 (first bad byte at offset {offset})")]
    Utf8 { offset: usize },
    /// The document is not well-formed JSON, or not an array at the top level.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A backend has a field of the wrong type or an invalid value.
    #[error("backend {backend}: field `{field}`: {reason}")]
    Field {
        /// The backend's name in quotes, or its position (`#3`) when it has no usable name.
        backend: String,
        field: String,
        reason: String,
    },
    /// Two backends share a name.
    #[error("backend {0:?}: duplicate backend name")]
    DuplicateBackend(String),
    /// A servers document (`POST /configuration/servers`) is empty.
    #[error("servers configuration is empty: expected a JSON object with \"certificates\" and \"servers\"")]
    ServersEmpty,
    /// A servers document is not well-formed JSON, or not of the expected shape.
    #[error("invalid servers JSON: {0}")]
    ServersJson(String),
    /// A certificate of a servers document cannot be used: wrong type, PEM that does
    /// not parse, no certificate, no private key, a key that does not match.
    #[error("certificate {uid:?}: {reason}")]
    Certificate { uid: String, reason: String },
    /// A hostname of a servers document is invalid or refers to no certificate.
    #[error("server {hostname:?}: {reason}")]
    Server { hostname: String, reason: String },
}

impl ConfigError {
    pub(crate) fn field(backend: &BackendLabel<'_>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Field { backend: backend.to_string(), field: field.into(), reason: reason.into() }
    }
}

/// How an error message names a backend: by name when it has one, else by position.
pub(crate) enum BackendLabel<'a> {
    Name(&'a str),
    Index(usize),
}

impl fmt::Display for BackendLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Debug: quoted, with control characters (a NUL would cut the text short
            // for a C caller), quotes and backslashes escaped.
            BackendLabel::Name(n) => write!(f, "{n:?}"),
            BackendLabel::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// Why a pick produced no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No backend of that name in the configuration in force.
    #[error("unknown backend")]
    UnknownBackend,
    /// The backend exists but has no endpoint.
    #[error("backend has no endpoints")]
    NoEndpoints,
}
