"""GKE and AKS: the steps that route their audit logs to Datadog, which kaudit cannot take itself.

Neither provider lets a workload in the cluster change its audit logging, and neither takes a
custom policy (facts 22): GKE writes Kubernetes audit events as Cloud Audit Logs (Admin Activity
always on; Data Access for the Kubernetes API opt-in), AKS through diagnostic settings
(``kube-audit``, or ``kube-audit-admin`` without get and list). The commands use the names a user
fills in (upper-case placeholders); status.nextSteps and ``kaudit render`` print the same text.
"""

from __future__ import annotations

from kaudit.api.spec import AuditCollection

GKE_STEPS = (
    "GKE records Kubernetes API writes as Admin Activity audit logs (always on); reads are Data Access audit "
    "logs, off by default and billed: switch them on for the Kubernetes Engine API in the project's IAM audit "
    "configuration (auditConfigs: service container.googleapis.com, log types DATA_READ and DATA_WRITE):",
    "  gcloud projects get-iam-policy PROJECT_ID --format=json > iam-policy.json",
    '  # add to iam-policy.json: "auditConfigs": [{"service": "container.googleapis.com", "auditLogConfigs": '
    '[{"logType": "DATA_READ"}, {"logType": "DATA_WRITE"}]}]',
    "  gcloud projects set-iam-policy PROJECT_ID iam-policy.json",
    "Route the cluster's audit entries to Datadog through a Log Router sink into the Pub/Sub topic your "
    "Datadog Google Cloud log collection reads (Dataflow or push subscription, as set up for the "
    "Datadog Google Cloud integration):",
    "  gcloud logging sinks create datadog-k8s-audit pubsub.googleapis.com/projects/PROJECT_ID/topics/TOPIC "
    "--log-filter='resource.type=\"k8s_cluster\" AND resource.labels.cluster_name=\"CLUSTER_NAME\" AND "
    "logName:\"cloudaudit.googleapis.com\"'",
    "  gcloud pubsub topics add-iam-policy-binding TOPIC --member=\"$(gcloud logging sinks describe "
    "datadog-k8s-audit --format='value(writerIdentity)')\" --role=roles/pubsub.publisher",
    "The entries arrive as Cloud Audit Logs (protoPayload), not audit.k8s.io Events; GKE's policy cannot "
    "be changed.",
)

AKS_STEPS = (
    "AKS sends its audit log through a diagnostic setting of the cluster: category kube-audit-admin "
    "(writes only, no get and list: far less volume) or kube-audit (everything), to the Event Hub your "
    "Datadog Azure log forwarding reads (as set up for the Datadog Azure integration):",
    "  az monitor diagnostic-settings create --name datadog-kube-audit --resource \"$(az aks show "
    "--resource-group RESOURCE_GROUP --name CLUSTER_NAME --query id --output tsv)\" --event-hub EVENT_HUB "
    "--event-hub-rule EVENT_HUB_AUTHORIZATION_RULE_ID --logs '[{\"category\": \"kube-audit-admin\", "
    "\"enabled\": true}]'",
    "Each record wraps one audit.k8s.io Event in properties.log; AKS's policy cannot be changed.",
)

_STEPS = {"GKE": GKE_STEPS, "AKS": AKS_STEPS}


def manual_steps(spec: AuditCollection) -> tuple[str, ...]:
    """The steps for ``spec.platform`` (GKE or AKS), one line each."""
    return _STEPS.get(spec.platform, ())
