"""Amazon EKS: the cluster's audit log type, a CloudWatch Logs subscription filter to the Datadog
Forwarder or a Firehose stream, the Lambda permission, and whether events arrive (docs/eks.md).

- ``spec``: ``spec.eks`` parsed into :class:`~kaudit.platforms.eks.spec.EksSpec`;
- ``aws``: the AWS calls (:class:`~kaudit.platforms.eks.aws.EksCloud`) and botocore's errors as kaudit's;
- ``plan``: pure decisions from what was observed;
- ``reconcile``: observe, act, report; ``release`` on delete.
"""
