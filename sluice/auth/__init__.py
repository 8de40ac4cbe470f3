"""Who is calling: roles, API tokens and OIDC JWTs. The API's dependencies (sluice.api.auth) and the
`sluice token` commands use these; nothing here speaks HTTP."""
