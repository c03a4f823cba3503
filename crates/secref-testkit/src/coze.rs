//! A faithful Coze outbound-auth double (integration credentials, project env vars).
