"""Checks of the deployable infra: manifests, schemas and images."""
