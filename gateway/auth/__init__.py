"""Sign-in and roles: identities (users, API keys), access tokens, the RBAC matrix, masking."""
