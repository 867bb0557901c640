"""Adapters that run pgdm inside other frameworks (``pgdm.integrations.ray``: Ray Data)."""
