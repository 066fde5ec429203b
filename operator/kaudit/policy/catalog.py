"""Facts about Kubernetes the profiles and lints rely on: verbs, built-in resources, and
which resources carry secrets.

BUILTIN_RESOURCES reflects the resources kube-apiserver 1.34 serves in its built-in API
groups (GA and beta, plus the alpha APIs a feature gate can switch on), with subresources.
Custom resources live in other groups, which the unknown-resource lint leaves alone.
"""

from __future__ import annotations

# Verbs an audit event can carry: the API verbs of resource requests, and the lower-case HTTP
# methods of non-resource requests (``/healthz``, ``/metrics``).
RESOURCE_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
NON_RESOURCE_VERBS = ("get", "post", "put", "patch", "delete", "head", "options")
KNOWN_VERBS = frozenset(RESOURCE_VERBS + NON_RESOURCE_VERBS)
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")

# Resources whose request or response bodies can hold credentials. Bodies of these never go
# into the log: the log is shipped off the cluster and read by more people than secrets are.
#   secrets                        - the purpose of the type.
#   configmaps                     - not meant for credentials, but often used for them
#                                    (connection strings, kubeconfigs, tokens in env files).
#   serviceaccounts/token          - the TokenRequest response is a live bearer token.
#   tokenreviews                   - the request body is the bearer token being checked.
# Deliberately not listed: certificatesigningrequests (a CSR and the issued certificate are
# public material; the private key never passes through the API), and pods/exec, /attach and
# /portforward (their streams are never part of an audit event).
SENSITIVE_RESOURCES: tuple[tuple[str, str], ...] = (
    ("", "secrets"),
    ("", "configmaps"),
    ("", "serviceaccounts/token"),
    ("authentication.k8s.io", "tokenreviews"),
)

_CORE = """
bindings componentstatuses configmaps endpoints events limitranges namespaces namespaces/finalize
namespaces/status nodes nodes/proxy nodes/status persistentvolumeclaims persistentvolumeclaims/status
persistentvolumes persistentvolumes/status pods pods/attach pods/binding pods/ephemeralcontainers
pods/eviction pods/exec pods/log pods/portforward pods/proxy pods/resize pods/status podtemplates
replicationcontrollers replicationcontrollers/scale replicationcontrollers/status resourcequotas
resourcequotas/status secrets serviceaccounts serviceaccounts/token services services/proxy
services/status
"""

BUILTIN_RESOURCES: dict[str, frozenset[str]] = {
    group: frozenset(names.split())
    for group, names in {
        "": _CORE,
        "admissionregistration.k8s.io": "mutatingwebhookconfigurations validatingwebhookconfigurations "
        "validatingadmissionpolicies validatingadmissionpolicies/status validatingadmissionpolicybindings "
        "mutatingadmissionpolicies mutatingadmissionpolicybindings",
        "apiextensions.k8s.io": "customresourcedefinitions customresourcedefinitions/status",
        "apiregistration.k8s.io": "apiservices apiservices/status",
        "apps": "controllerrevisions daemonsets daemonsets/status deployments deployments/scale "
        "deployments/status replicasets replicasets/scale replicasets/status statefulsets "
        "statefulsets/scale statefulsets/status",
        "authentication.k8s.io": "selfsubjectreviews tokenreviews",
        "authorization.k8s.io": "localsubjectaccessreviews selfsubjectaccessreviews selfsubjectrulesreviews "
        "subjectaccessreviews",
        "autoscaling": "horizontalpodautoscalers horizontalpodautoscalers/status",
        "batch": "cronjobs cronjobs/status jobs jobs/status",
        "certificates.k8s.io": "certificatesigningrequests certificatesigningrequests/approval "
        "certificatesigningrequests/status clustertrustbundles",
        "coordination.k8s.io": "leases leasecandidates",
        "discovery.k8s.io": "endpointslices",
        "events.k8s.io": "events",
        "flowcontrol.apiserver.k8s.io": "flowschemas flowschemas/status prioritylevelconfigurations "
        "prioritylevelconfigurations/status",
        "internal.apiserver.k8s.io": "storageversions storageversions/status",
        "networking.k8s.io": "ingressclasses ingresses ingresses/status ipaddresses networkpolicies "
        "servicecidrs servicecidrs/status",
        "node.k8s.io": "runtimeclasses",
        "policy": "poddisruptionbudgets poddisruptionbudgets/status",
        "rbac.authorization.k8s.io": "clusterrolebindings clusterroles rolebindings roles",
        "resource.k8s.io": "deviceclasses resourceclaims resourceclaims/status resourceclaimtemplates "
        "resourceslices devicetaintrules",
        "scheduling.k8s.io": "priorityclasses",
        "storage.k8s.io": "csidrivers csinodes csistoragecapacities storageclasses volumeattachments "
        "volumeattachments/status volumeattributesclasses",
        "storagemigration.k8s.io": "storageversionmigrations storageversionmigrations/status",
    }.items()
}
BUILTIN_RESOURCES_VERSION = "1.34"
