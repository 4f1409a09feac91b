"""AWS: EC2 GPU instances (boto3 is imported only when a call is made)."""

from gpujobs.providers.aws.provider import AwsProvider, AwsTimings

__all__ = ["AwsProvider", "AwsTimings"]
