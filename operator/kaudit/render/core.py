"""``render``: an AuditCollection (plus the live objects it adapts to) → everything kaudit applies."""

from __future__ import annotations

from typing import Any, Sequence

from kaudit.api.spec import DEFAULT_INSTALLER_IMAGE, AuditCollection, parse_collection
from kaudit.errors import FieldError
from kaudit.render import agent_config, policy
from kaudit.render.apiserver import apiserver_warnings
from kaudit.render.common import canonical, sha256_hex
from kaudit.render.installer import installer_objects
from kaudit.render.managed import managed_objects, managed_warnings
from kaudit.render.result import AgentPatch, Rendered
from kaudit.render.targets import kubectl_get

DEFAULT_NAMESPACE = "kaudit-system"


def render(collection: dict[str, Any], *, existing: Sequence[dict[str, Any]] = (), namespace: str = DEFAULT_NAMESPACE,
           image: str = DEFAULT_INSTALLER_IMAGE, preview: bool = False) -> Rendered:
    """Parse the AuditCollection resource ``collection`` and render it (see :func:`render_collection`)."""
    return render_collection(parse_collection(collection), existing=existing, namespace=namespace, image=image,
                             preview=preview)


def render_collection(spec: AuditCollection, *, existing: Sequence[dict[str, Any]] = (),
                      namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_INSTALLER_IMAGE,
                      preview: bool = False) -> Rendered:
    """Render every object and apply body for the parsed collection ``spec``.

    Pure: the same arguments give byte-identical results. Raises InvalidInput (with ``spec....``
    field paths) for a spec the policy engine refuses and Refused for a change kaudit will not make
    (for instance TargetNotFound when the DaemonSet/DatadogAgent to adapt is not in ``existing``).

    ``preview`` is for offline review without the live agent: the change to the user's DaemonSet or
    DatadogAgent depends on what that object already has (its pointdir mount, its tolerations), so
    instead of guessing it is left out and a warning says how to see it. The operator never previews.
    """
    document = policy.compose(policy.policy_options(spec, namespace))
    objects: list[dict[str, Any]] = [policy.policy_config_map(spec, document, namespace)]
    patches: list[dict[str, Any]] = []
    warnings: list[FieldError] = [w.under("spec.policy") for w in document.warnings]
    warnings.extend(apiserver_warnings(spec))
    if not spec.policy.audit_kaudit:
        warnings.append(policy.SELF_AUDIT_OFF_WARNING)
    steps = policy.api_server_steps(spec, namespace)
    events: list[tuple[str, str]] = []

    # Where the policy reaches the nodes. A platform whose control plane kaudit cannot reach
    # (a managed one) would render its own delivery here instead of the node installer.
    installer = installer_objects(spec, namespace=namespace, image=image) if spec.api_server.install_policy else []
    objects.extend(installer)

    agent_daemon_set: dict[str, Any] | None = None
    mode = spec.agent.mode
    if mode != "None":
        text = agent_config.agent_config_text(spec)
        config_hash = sha256_hex(text)
        config_name = agent_config.agent_config_name(spec)
        objects.append(agent_config.agent_config_map(spec, text))
        if mode == "Managed":
            service_account, agent_daemon_set = managed_objects(spec, config_name, config_hash)
            objects.extend((service_account, agent_daemon_set))
            warnings.extend(managed_warnings(spec))
            ref = spec.agent.managed.api_key_secret_ref
            steps.append(f"Make sure Secret {spec.agent.namespace}/{ref.name} exists with the Datadog API "
                         f"key under key {ref.key!r}; the agent pods wait for it.")
        elif preview and not existing:
            warnings.append(_preview_warning(spec))
        else:
            change = _agent_patch(spec, existing, config_name, config_hash)
            patches.append(change.body)
            warnings.extend(change.warnings)
            steps.append(_apply_step(change.body))
            steps.extend(change.steps)
            events.extend(change.events)
    else:
        steps.append(f"spec.agent.mode is None: have your log shipper tail {spec.api_server.log_file} on "
                     f"every control-plane node, with source {spec.logs.source!r}.")

    return Rendered(
        spec=spec,
        objects=tuple(canonical(o) for o in objects),
        patches=tuple(canonical(p) for p in patches),
        policy=document,
        api_server_flags=policy.api_server_flags(spec),
        installer=tuple(canonical(o) for o in installer),
        agent_daemon_set=canonical(agent_daemon_set) if agent_daemon_set is not None else None,
        agent_target=spec.agent.target if patches else None,
        next_steps=tuple(steps),
        warnings=tuple(warnings),
        events=tuple(events),
    )


def _agent_patch(spec: AuditCollection, existing: Sequence[dict[str, Any]], config_name: str,
                 config_hash: str) -> AgentPatch:
    # Imported for their mode only: a Managed render (the cold-start benchmark) is 2-4 % faster without them.
    if spec.agent.mode == "DaemonSet":
        from kaudit.render.daemonset import daemon_set_patch

        return daemon_set_patch(spec, existing, config_name, config_hash)
    from kaudit.render.datadogagent import datadog_agent_patch

    return datadog_agent_patch(spec, existing, config_name, config_hash)


def _preview_warning(spec: AuditCollection) -> FieldError:
    agent = spec.agent
    if agent.mode == "DaemonSet":
        path, kind, resource, name = "spec.agent.daemonSet", "DaemonSet", "daemonset", agent.daemon_set.name
    else:
        path, kind, resource, name = "spec.agent.datadogAgent", "DatadogAgent", "datadogagent", agent.datadog_agent.name
    return FieldError(path, f"the change to {kind} {agent.namespace}/{name} is not shown: it depends on what the "
                            f"live object already has; to see it, pass --existing with the output of "
                            f"'{kubectl_get(resource, agent.namespace, name)}'")


def _apply_step(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return (f"kaudit applies its change to {body['kind']} {meta['namespace']}/{meta['name']} with server-side "
            f"apply (field manager kaudit); the agent pods roll once to pick up the log configuration.")

