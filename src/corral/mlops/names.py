"""How tenants share one MLflow: every experiment and registered model is stored under its tenant's name.

MLflow's names are global, corral's are per tenant (two tenants may both have ``iris``). An experiment
``train`` of tenant ``lab`` is stored as ``lab/train``, a registered model ``iris`` as ``lab.iris``;
members see and write the short names, admins the stored ones. Tenant names are lowercase letters,
digits and ``-`` (``api_models.TenantCreate``), so the prefix is never ambiguous: the tenant owning a
stored name is what stands before the first separator.
"""

from __future__ import annotations

import re

EXPERIMENT_SEPARATOR = "/"
MODEL_SEPARATOR = "."


def stored_experiment(tenant: str, name: str) -> str:
    return f"{tenant}{EXPERIMENT_SEPARATOR}{name}"


def stored_model(tenant: str, name: str) -> str:
    return f"{tenant}{MODEL_SEPARATOR}{name}"


def experiment_owner(stored: str) -> str | None:
    """The tenant of a stored experiment name; None for one no tenant owns (MLflow's ``Default``)."""
    tenant, separator, _ = stored.partition(EXPERIMENT_SEPARATOR)
    return tenant if separator and tenant else None


def model_owner(stored: str) -> str | None:
    tenant, separator, _ = stored.partition(MODEL_SEPARATOR)
    return tenant if separator and tenant else None


def shown(stored: str, tenant: str, separator: str) -> str:
    """The name a member of ``tenant`` sees for a stored name of theirs."""
    prefix = f"{tenant}{separator}"
    return stored[len(prefix) :] if stored.startswith(prefix) else stored


_NAME_CONDITION = re.compile(r"\b(name\s*(?:=|!=|LIKE|ILIKE)\s*)(['\"])", re.IGNORECASE)


def tenant_filter(tenant: str, separator: str, user_filter: str | None) -> str:
    """An MLflow search filter that matches only ``tenant``'s objects: the user's own conditions on
    ``name`` get the tenant's prefix, and a condition on the prefix is added (MLflow joins with AND)."""
    prefix = f"{tenant}{separator}"
    own = f"name LIKE '{prefix}%'"
    if not user_filter or not user_filter.strip():
        return own
    rewritten = _NAME_CONDITION.sub(lambda match: f"{match.group(1)}{match.group(2)}{prefix}", user_filter)
    return f"{own} AND {rewritten}"
