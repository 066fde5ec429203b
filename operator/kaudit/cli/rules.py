"""``kaudit rules``: Cloud SIEM detection rules against an audit policy (offline).

``check`` tells, per rule, whether the policy records what the rule reads; ``render`` writes
kaudit's built-in pack as Datadog API JSON or Terraform JSON. The engine (kaudit.detect) is
imported inside each command so ``kaudit --help`` stays fast.

Exit codes of ``check``: 0 every required rule is covered well enough; 1 a required rule is at or
past ``--fail-on``, or bad input; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.detect.model import Rule
    from kaudit.detect.sync import Credentials
    from kaudit.policy.loader import LoadResult
    from kaudit.policy.model import Policy

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
HELP = "check detection rules against an audit policy; render kaudit's detection pack (offline)"
FAIL_ON = ("blind", "partly-blind", "never")
FORMATS = ("table", "json")
RENDER_FORMATS = ("datadog", "terraform")
EPILOG = """\
examples:
  kaudit rules check --profile Default
  kaudit rules check --policy policy.yaml --rules my-rules.json --fail-on partly-blind
  kaudit rules check -f examples/managed.yaml
  kaudit rules render -o terraform --cluster prod-eu > kaudit-rules.tf.json
  DD_API_KEY=... DD_APP_KEY=... kaudit rules sync --cluster prod-eu --site datadoghq.eu --dry-run

exit codes (check): 0 covered; 1 a required rule is at or past --fail-on, or bad input; 2 usage
exit codes (sync): 0 in sync (or planned, with --dry-run); 1 a conflict, Datadog refused, or bad input; 2 usage
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("rules", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))
    _register_check(sub)
    _register_render(sub)
    _register_sync(sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    from kaudit.cli import missing_command

    return missing_command(parser, "check, render, sync")


def _register_check(subparsers: Subparsers) -> None:
    from kaudit.cli.shared import version_argument
    from kaudit.policy.document import PROFILES

    parser = subparsers.add_parser(
        "check", help="whether a policy records what each detection rule reads",
        description="For each rule (kaudit's pack, or the rules in --rules): fires, partly-blind or blind "
                    "under the policy, naming the policy rule and level that decide it. Rules tagged "
                    "kaudit:optional are reported but never fail the check.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="audit policy file (audit.k8s.io/v1 Policy)")
    source.add_argument("--profile", choices=PROFILES, help="a built-in profile, with its default options")
    source.add_argument("-f", "--collection", metavar="FILE",
                        help="an AuditCollection: its policy as the operator composes it, and its spec.detection "
                             "pack rules (without --rules)")
    parser.add_argument("--namespace", metavar="NS", default=os.environ.get("POD_NAMESPACE") or "kaudit-system",
                        help="with -f: the operator's namespace, which the self-audit rules name (default kaudit-system)")
    parser.add_argument("--rules", metavar="FILE", nargs="+", action="extend",
                        help="Datadog API JSON or Terraform JSON (.tf.json) rule files (default: kaudit's pack)")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="blind",
                        help="exit 1 when a required rule is blind (default), also when partly blind, or never")
    version_argument(parser)
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    parser.set_defaults(func=run_check)


def _register_render(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="write kaudit's detection pack as Datadog API JSON or Terraform JSON",
        description="Print the built-in pack as a JSON list of Datadog rule create payloads (datadog) or as "
                    "datadog_security_monitoring_rule resources in Terraform's JSON syntax (terraform, a "
                    ".tf.json file).")
    parser.add_argument("-o", "--output", choices=RENDER_FORMATS, default="datadog", help="format (default datadog)")
    parser.add_argument("--cluster", metavar="NAME", default="",
                        help="scope every query to kube_cluster_name:NAME and name the rules after it")
    parser.set_defaults(func=run_render)


def _register_sync(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "sync", help="keep detection rules in Datadog (create, repair drift, delete), or show the plan",
        description="Make the rules of one owner in the Datadog organisation exactly the given rules (kaudit's "
                    "pack by default): missing ones are created, drifted ones put back, ones no longer given "
                    "deleted. Only rules tagged managed-by:kaudit and kaudit-owner:OWNER are ever changed. "
                    "Keys: DD_API_KEY and DD_APP_KEY (the Datadog client's variables).")
    parser.add_argument("--rules", metavar="FILE", nargs="+", action="extend",
                        help="Datadog API JSON or Terraform JSON (.tf.json) rule files (default: kaudit's pack)")
    parser.add_argument("--cluster", metavar="NAME", default="",
                        help="scope every query to kube_cluster_name:NAME and name the rules after it")
    parser.add_argument("--owner", metavar="NAME", default="",
                        help="the owner tag of this set of rules (default: the --cluster name); one syncer per owner")
    parser.add_argument("--site", metavar="SITE", default=None,
                        help="Datadog site: datadoghq.com (the default, unless DD_SITE), datadoghq.eu, ...")
    parser.add_argument("--api-url", metavar="URL", default="",
                        help="the API's base URL instead of the site's (a proxy, or a test server)")
    parser.add_argument("--dry-run", action="store_true", help="read the rules in Datadog and print the plan; write nothing")
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    parser.set_defaults(func=run_sync)


def _load_policy(args: argparse.Namespace) -> tuple[Policy, str]:
    """(Policy, description) from --policy or --profile; a file is read as every policy command reads it."""
    from kaudit.cli.shared import check_file, check_kubernetes_version, print_findings
    from kaudit.documents import check_stdin_once, display_name
    from kaudit.policy import PolicyOptions, compose_policy, load_policy

    check_kubernetes_version(args)
    check_stdin_once([("--policy", args.policy), ("-f", getattr(args, "collection", None))]
                     + [("--rules", path) for path in args.rules or ()])
    if getattr(args, "collection", None):
        return _collection_policy(args)
    if args.profile:
        document = compose_policy(PolicyOptions(profile=args.profile, kubernetes_version=args.kubernetes_version))
        return _composed(load_policy(document.text, args.kubernetes_version)), f"profile {args.profile}"
    checked = check_file(args.policy, args.kubernetes_version)
    if checked.errors:
        raise InvalidInput(error.in_file(display_name(args.policy)) for error in checked.errors)
    print_findings(display_name(args.policy), [], checked.warnings)  # the lint verdict every command gives
    return checked.result.policy, args.policy


def _collection_policy(args: argparse.Namespace) -> tuple[Policy, str]:
    """(Policy, description) of an AuditCollection's policy, composed as the operator composes it."""
    from kaudit.cli.render import read_collection
    from kaudit.documents import display_name
    from kaudit.policy import load_policy
    from kaudit.render.policy import recording_policy

    collection = read_collection(args.collection)
    document = recording_policy(collection, args.namespace)
    where = display_name(args.collection)
    if document is None:
        raise InvalidInput([FieldError("spec.platform", f"{collection.platform}: kaudit does not know the audit "
                                                        "policy this provider applies; check the rules on logs it "
                                                        "recorded ('kaudit policy simulate --detections')", file=where)])
    args.collection_detection = collection.detection
    which = f"{collection.platform}'s own policy" if collection.platform != "SelfManaged" else "policy"
    return _composed(load_policy(document.text)), \
        f"AuditCollection {collection.name} ({where}), {which} {document.short_hash}"


def _composed(result: LoadResult) -> Policy:
    """A policy kaudit composed: it always loads (kept as a guard, not a code path users see)."""
    if result.policy is None:
        raise InvalidInput(list(result.errors))
    return result.policy


def _collection_rules(args: argparse.Namespace) -> list[Rule]:
    """The rules of ``-f``'s spec.detection: its pack rules; its ConfigMap is in the cluster."""
    from kaudit.detect.pack import pack_rules
    from kaudit.detect.required import pack_required

    detection = getattr(args, "collection_detection", None)
    if detection is None:
        return pack_rules()
    if detection.config_map is not None:
        raise InvalidInput([FieldError("spec.detection.configMapRef", f"ConfigMap {detection.config_map.name} is in "
                                       "the cluster: give its rules with --rules")])
    return pack_required(detection)


def load_detection_rules(paths: list[str] | None) -> list[Rule]:
    from kaudit.detect.loaders import load_rules_text
    from kaudit.detect.pack import pack_rules
    from kaudit.documents import MAX_RULE_FILE_BYTES, display_name, read_bytes

    if not paths:
        return pack_rules()
    rules, errors = [], []
    for path in paths:
        try:
            rules.extend(load_rules_text(read_bytes(path, limit=MAX_RULE_FILE_BYTES), display_name(path)))
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput(errors)
    return rules


def run_check(args: argparse.Namespace) -> int:
    from kaudit.detect.coverage import check
    from kaudit.detect.report import coverage_document, coverage_table, failing

    policy, description = _load_policy(args)
    rules = load_detection_rules(args.rules) if args.rules or not args.collection else _collection_rules(args)
    results = check(policy, rules)
    document = coverage_document(results, description)
    if args.output == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(coverage_table(document))
    bad = failing(results, args.fail_on)
    if bad:
        names = ", ".join(r.rule.name for r in bad)
        print(f"error: {len(bad)} required rule(s) {args.fail_on} or worse under {description}: {names}",
              file=sys.stderr)
        return 1
    return 0


def run_render(args: argparse.Namespace) -> int:
    from kaudit.detect.pack import pack_rules
    from kaudit.detect.render import for_cluster, render_api, render_terraform

    if args.cluster and not all(c.isalnum() or c in "-_." for c in args.cluster):
        raise InvalidInput([FieldError("--cluster", "letters, digits, '-', '_' and '.' only (a tag value)")])
    rules = [for_cluster(rule, args.cluster) for rule in pack_rules()]
    sys.stdout.write(render_terraform(rules) if args.output == "terraform" else render_api(rules))
    return 0


def _sync_settings(args: argparse.Namespace) -> tuple[str, str, Credentials]:
    """(owner, site, credentials) from the arguments and the environment; one line per problem."""
    import os

    from kaudit.detect.sync import SITES, Credentials, check_tag_value

    errors = []
    owner = args.owner or args.cluster
    if not owner:
        errors.append(FieldError("--owner", "is required without --cluster (the owner tag of the synced rules)"))
    for flag, value in (("--owner", owner), ("--cluster", args.cluster)):
        problem = value and check_tag_value(value)
        if problem:
            errors.append(FieldError(flag, problem))
    site = args.site or os.environ.get("DD_SITE") or SITES[0]
    if site not in SITES:
        errors.append(FieldError("--site" if args.site else "DD_SITE",
                                 f"unsupported value {site!r}: supported values: {', '.join(SITES)}"))
    keys = {name: os.environ.get(name, "").strip() for name in ("DD_API_KEY", "DD_APP_KEY")}
    missing = [name for name, value in keys.items() if not value]
    if missing:
        errors.append(FieldError(" and ".join(missing), "not set (the Datadog API and application keys)"))
    if errors:
        raise InvalidInput(errors)
    return owner, site, Credentials(keys["DD_API_KEY"], keys["DD_APP_KEY"])


def run_sync(args: argparse.Namespace) -> int:
    from kaudit.detect.sync import CONFLICT, DatadogRulesApi, plan_document, plan_lines, sync

    rules = load_detection_rules(args.rules)  # bad files are named before missing keys
    owner, site, credentials = _sync_settings(args)
    api = DatadogRulesApi(credentials, site=site, url=args.api_url)
    try:
        result = sync(api, rules, owner, args.cluster, dry_run=args.dry_run)
    except ValueError as exc:
        raise InvalidInput([FieldError("--rules", str(exc))]) from None
    finally:
        api.close()
    if args.output == "json":
        sys.stdout.write(json.dumps(plan_document(result), indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in plan_lines(result)))
    conflicts = result.plan.of(CONFLICT)
    if conflicts:
        print(f"error: {len(conflicts)} rule(s) not synced, their name is taken: "
              f"{', '.join(a.name for a in conflicts)}", file=sys.stderr)
        return 1
    return 0
