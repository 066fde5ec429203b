"""``kaudit render``: print what kaudit would apply for an AuditCollection, offline."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.api.spec import AuditCollection
    from kaudit.cli import Subparsers

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
HELP = "print the objects kaudit would apply for an AuditCollection (offline, no cluster needed)"
DESCRIPTION = """\
Render an AuditCollection into the Kubernetes objects kaudit applies: the audit policy
ConfigMap, the policy installer, the agent's log configuration and, depending on
spec.agent.mode, an agent DaemonSet of kaudit's own (Managed) or a server-side-apply body for
your existing agent DaemonSet (DaemonSet) or DatadogAgent resource (DatadogAgent). The output
starts with the kube-apiserver flags you must set, as comments. Nothing is sent to a cluster.

In DaemonSet and DatadogAgent modes kaudit adapts its change to what your agent already has,
so pass the live object with --existing (kubectl get daemonset -n datadog datadog-agent -o yaml).
Without --existing, the objects kaudit owns are printed and the change to your agent is left
out, with a warning saying so.
"""
EPILOG = """\
examples:
  kaudit render -f examples/managed.yaml
  kaudit render -f examples/daemonset.yaml --existing examples/existing/datadog-agent-daemonset.yaml
  kubectl get datadogagent -n datadog datadog -o yaml | kaudit render -f examples/datadogagent.yaml --existing -
  kaudit render -f examples/managed.yaml | kubectl apply --server-side --field-manager=kaudit --dry-run=server -f -

Apply the output with server-side apply (as above): the bodies for your own DaemonSet or
DatadogAgent name only what kaudit adds, which client-side apply would reject as incomplete.
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help=HELP, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="the AuditCollection to render (YAML or JSON; '-' reads standard input)")
    parser.add_argument("--existing", action="append", default=[], metavar="FILE",
                        help="a file with the live agent DaemonSet or DatadogAgent kaudit should adapt to: "
                             "'kubectl get ... -o yaml' output (a List is fine) or 'helm get manifest' / "
                             "'helm template' output (many kinds); kaudit picks the one spec.agent names; "
                             "repeat for more files")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                        help="yaml (default): documents with the kube-apiserver flags and next steps as a "
                             "comment header; json: a v1 List, with flags and steps on standard error")
    parser.add_argument("--namespace", metavar="NS", default=os.environ.get("POD_NAMESPACE") or "kaudit-system",
                        help="namespace the operator runs in, where the policy ConfigMap and installer go "
                             "(default: $POD_NAMESPACE or kaudit-system)")
    parser.add_argument("--image", metavar="IMAGE", default=None,
                        help="kaudit image for the policy installer (default: kaudit/kaudit:<this version>)")
    parser.set_defaults(func=run)


def _documents(path: str) -> list[Any]:
    """The non-empty documents of ``path`` (``-``: standard input), read within kaudit's limits."""
    from kaudit.documents import load

    return [document.data for document in load(path)]


def read_collection(path: str) -> AuditCollection:
    """The one AuditCollection in ``path``, parsed; its problems are errors naming the file, line and field."""
    from kaudit.api.spec import parse_collection
    from kaudit.documents import display_name, load

    name = display_name(path)
    documents = load(path)
    if len(documents) != 1:
        found = f"found {len(documents)}" if documents else "the file is empty"
        raise InvalidInput([FieldError("", f"expected one AuditCollection document, {found}", file=name)])
    [document] = documents
    if document.duplicates:
        raise InvalidInput(document.duplicate_errors(name))
    try:
        return parse_collection(document.data)
    except InvalidInput as exc:
        raise InvalidInput(document.locate(error, name) for error in exc.errors) from None


def _option_errors(args: argparse.Namespace) -> list[FieldError]:
    from kaudit.api.spec import dns_label_problem, image_problem

    from kaudit.documents import check_stdin_once

    errors = []
    try:
        check_stdin_once([("-f", args.filename)] + [("--existing", path) for path in args.existing])
    except InvalidInput as exc:
        errors.extend(exc.errors)
    problem = dns_label_problem(args.namespace)
    if problem:
        errors.append(FieldError("--namespace", f'Invalid value: "{args.namespace}": {problem}'))
    problem = image_problem(args.image) if args.image is not None else None
    if problem or args.image == "":
        errors.append(FieldError("--image", f'Invalid value: "{args.image}": {problem or "must not be empty"}'))
    return errors


def _existing(spec: AuditCollection, sources: list[tuple[str, list[Any]]]) -> list[Any]:
    """The live agent object the collection names, picked out of files that may hold many objects
    (``helm template`` or ``helm get manifest`` output, ``kubectl get ds -o yaml`` Lists)."""
    from kaudit.render.targets import pick_target

    target = spec.agent.target if sources else None
    if target is None:
        return [doc for _, docs in sources for doc in docs]
    return [pick_target(sources, target)]


def run(args: argparse.Namespace) -> int:
    from kaudit.api.spec import DEFAULT_INSTALLER_IMAGE
    from kaudit.render import render_collection
    from kaudit.render.apiserver import snippet_yaml, static_pod_changes
    from kaudit.render.output import header_lines, to_json, to_yaml

    errors = _option_errors(args)
    if errors:
        raise InvalidInput(errors)
    spec = read_collection(args.filename)
    if spec.managed_platform:
        sys.stdout.write(_platform_output(spec, args.output))
        return 0
    sources = [(path, _documents(path)) for path in args.existing]
    rendered = render_collection(spec, existing=_existing(spec, sources), namespace=args.namespace,
                                 image=args.image or DEFAULT_INSTALLER_IMAGE, preview=not args.existing)
    title = f"Rendered by kaudit render for AuditCollection {spec.name!r} (agent mode {spec.agent.mode})."
    static_pod = snippet_yaml(static_pod_changes(spec))
    if args.output == "json":
        sys.stdout.write(to_json(rendered))
        for line in header_lines(rendered, title, static_pod):
            print(f"# {line}".rstrip(), file=sys.stderr)
    else:
        sys.stdout.write(to_yaml(rendered, title, static_pod))
    return 0


def _platform_output(spec: AuditCollection, output: str) -> str:
    """A managed platform has no Kubernetes object to render: EKS's AWS commands, Terraform and IAM
    policy, or GKE's and AKS's steps (json: the same as one object)."""
    import json

    if spec.eks is not None:
        from kaudit.platforms.eks.render import render_eks, render_text

        if output == "yaml":
            return render_text(spec.name, spec.eks)
        rendered = render_eks(spec.name, spec.eks)
        data: dict[str, Any] = {"platform": spec.platform,
                                "commands": [{"why": c.why, "argv": list(c.argv)} for c in rendered.commands],
                                "terraform": rendered.terraform,
                                "iamPolicy": rendered.iam_policy(),
                                "permissions": [{"action": p.action, "resource": p.resource, "why": p.why}
                                                for p in rendered.permissions]}
        return json.dumps(data, indent=2) + "\n"
    from kaudit.platforms.steps import manual_steps

    steps = manual_steps(spec)
    if output == "json":
        return json.dumps({"platform": spec.platform, "steps": list(steps)}, indent=2) + "\n"
    # a shell script: the commands (indented in status.nextSteps) as they are, the prose as comments
    lines = [f"Platform {spec.platform}: kaudit renders no Kubernetes object; the steps to take:", *steps]
    return "".join(f"{line.strip()}\n" if line.startswith("  ") else f"# {line}\n" for line in lines)
