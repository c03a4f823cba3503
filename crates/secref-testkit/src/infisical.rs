//! A faithful Infisical API double (universal auth, secrets v3).
