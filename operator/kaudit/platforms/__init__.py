"""Managed control planes (spec.platform): where the audit log is on no node and the provider's
own logging carries it. ``eks`` automates Amazon EKS; ``steps`` renders the manual steps of each."""
