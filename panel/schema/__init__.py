"""One declarative definition per resource, from which API bodies, the OpenAPI document,
forms, the manifest loader and CLI options are derived (pure: no web, database or network)."""
